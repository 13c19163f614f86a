-- recsys_evaluate on a hand-worked split.  The pre-cutoff events are the
-- semantics test's log (same model, same history); the post-cutoff events:
--   u1 purchases 12, views 10, views 14  -> relevant {12, 14} (10 is history)
--   u3 views 10                          -> relevant {10}
--   u4 clicks 10                         -> relevant {10}
--   u5 views 10 (no history before)      -> not evaluated
--   u2 has nothing after                 -> not evaluated
-- max(event_time) = 2024-02-10, test_days 30 -> cutoff 2024-01-11.
\set SHOW_CONTEXT never
CREATE TABLE eval_events AS SELECT * FROM interactions WHERE user_id BETWEEN 1 AND 4;
INSERT INTO eval_events VALUES
  (1, 12, 'purchase', '2024-02-01 10:00+00'),
  (1, 10, 'view',     '2024-02-01 10:01+00'),
  (1, 14, 'view',     '2024-02-02 10:00+00'),
  (3, 10, 'view',     '2024-02-05 10:00+00'),
  (4, 10, 'click',    '2024-02-10 00:00+00'),
  (5, 10, 'view',     '2024-02-06 10:00+00');

-- k = 2, recommendations from the pre-cutoff model (see recsys_semantics):
--   u1: [12 cf, 13 cf]  hits {12} at rank 1
--       P = 1/2, R = 1/2, DCG = 1, IDCG = 1 + 1/log2(3) = 1.630930,
--       nDCG = 0.613147, AP = (1/1) / min(2,2) = 0.5, hit
--   u3: [10 cf, 14 pop] hit 10 at rank 1: P = 1/2, R = 1, nDCG = 1, AP = 1
--   u4: [11 pop, 10 pop] hit 10 at rank 2: P = 1/2, R = 1,
--       nDCG = (1/log2 3) / 1 = 0.630930, AP = (1/2) / 1 = 0.5
-- Means over 3 users: precision 0.5, recall 2.5/3 = 0.833333,
--   ndcg (0.613147 + 1 + 0.630930)/3 = 0.748026, hit_rate 1, map 2/3 = 0.666667.
-- coverage: {12,13,10,14,11} = 5 of the model's 5 items = 1.
-- Popularity baseline (11, 10, 12, 13, 14 minus history, first 2):
--   u1: [12, 13] -> 1 hit: P 1/2, R 1/2;  u3: [10, 14] -> P 1/2, R 1;
--   u4: [11, 10] -> P 1/2, R 1  => pop_precision 0.5, pop_recall 0.833333.
SELECT users_evaluated, round("precision"::numeric, 6) AS "precision", round(recall::numeric, 6) AS recall,
       round(ndcg::numeric, 6) AS ndcg, round(hit_rate::numeric, 6) AS hit_rate, round(map::numeric, 6) AS map,
       round(coverage::numeric, 6) AS coverage, cutoff AT TIME ZONE 'UTC' AS cutoff_utc,
       round(pop_precision::numeric, 6) AS pop_precision, round(pop_recall::numeric, 6) AS pop_recall, model_items
  FROM recsys_evaluate(2, test_days => 30, source => 'eval_events');

-- k = 1: u1 [12] hit; u3 [10] hit; u4 [11] miss.
--   precision 2/3, recall (1/2 + 1 + 0)/3 = 0.5, ndcg (1 + 1 + 0)/3, hit_rate 2/3,
--   map (1 + 1 + 0)/3 (min(k,|rel|) = 1); coverage {12, 10, 11} = 3/5.
--   Popularity: u1 [12] hit, u3 [10] hit, u4 [11] miss -> 2/3 and 0.5.
SELECT users_evaluated, round("precision"::numeric, 6) AS "precision", round(recall::numeric, 6) AS recall,
       round(ndcg::numeric, 6) AS ndcg, round(hit_rate::numeric, 6) AS hit_rate, round(map::numeric, 6) AS map,
       round(coverage::numeric, 6) AS coverage,
       round(pop_precision::numeric, 6) AS pop_precision, round(pop_recall::numeric, 6) AS pop_recall
  FROM recsys_evaluate(1, test_days => 30, source => 'eval_events');

-- Model settings, 1.1: u5 has a touch after the cutoff but no history: one
-- user without history.  The 95% bootstrap CI (1000 resamples, seed 1) of
-- k = 1's per-user precisions {1, 1, 0}: a resample's mean is 0 with
-- probability 1/27 (3.7% > 2.5%) and 1 with probability 8/27, so the CI is
-- [0, 1]; the same call gives the same CI.
SELECT users_evaluated, users_without_history, precision_lo, precision_hi,
       round(ndcg_lo::numeric, 6) <= round(ndcg::numeric, 6) AND ndcg <= ndcg_hi AS ndcg_in_ci
  FROM recsys_evaluate(1, test_days => 30, source => 'eval_events');
SELECT count(DISTINCT (precision_lo, precision_hi, recall_lo, recall_hi, ndcg_lo, ndcg_hi)) AS distinct_cis
  FROM recsys.evaluations WHERE source_relation = 'public.eval_events' AND k = 1;

-- A test window holding everything: nobody has history before the cutoff,
-- a clear error (55000) naming the cutoff, and nothing is recorded.
SELECT users_evaluated, "precision", recall, coverage
  FROM recsys_evaluate(5, test_days => 36500, source => 'eval_events');
\echo :LAST_ERROR_SQLSTATE

-- An event at infinity has no cutoff before it (22008), and says so
-- instead of failing inside generated SQL.
CREATE TABLE eval_infinite AS SELECT * FROM eval_events;
INSERT INTO eval_infinite VALUES (1, 10, 'view', 'infinity');
SELECT users_evaluated FROM recsys_evaluate(5, source => 'eval_infinite');
\echo :LAST_ERROR_SQLSTATE
DROP TABLE eval_infinite;

-- Evaluation never touches the active model and records each run.
SELECT count(*) AS models, bool_or(source_relation = 'public.eval_events') AS eval_model_stored FROM recsys_models;
SELECT k, test_days, users_evaluated, round("precision"::numeric, 6) AS "precision", source_relation
  FROM recsys_evaluations ORDER BY evaluated_at, k DESC;

-- One scan finds the cutoff (pg_read.cpp): the newest usable event is found
-- while the events are read, those near it held back until the cutoff is
-- known.  The same log stored in three physical orders (scattered, in time
-- order: every event held on arrival and released as the newest advances,
-- newest first) gives the same row as the two-step read (the cutoff by
-- SOURCE_MAX_TIME, then the events split at it), which a view whose event
-- type has a nondeterministic collation forces (the scan stops at its first
-- row: SOURCE_MAX_TIME's = would compare with that collation).  150,000
-- events, enough for the held events to be swept several times.
CREATE FUNCTION pg_temp.h(g int, salt int) RETURNS int LANGUAGE sql IMMUTABLE
AS 'SELECT abs(pg_catalog.hashint8(g::bigint * 8 + salt) % 1000000007)';
CREATE COLLATION eval_ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE eval_scattered AS
SELECT u AS user_id,
       CASE WHEN pg_temp.h(g, 1) % 4 = 0 THEN 1 + pg_temp.h(g, 2) % 300 ELSE 1 + (u % 30) * 10 + pg_temp.h(g, 3) % 10 END AS product_id,
       (ARRAY['view', 'view', 'view', 'click', 'purchase'])[1 + pg_temp.h(g, 4) % 5] AS event_type,
       timestamptz '2024-03-01 00:00+00' - pg_temp.h(g, 5) % (60 * 86400) * interval '1 second' AS event_time
  FROM generate_series(1, 150000) g, LATERAL (SELECT 1 + pg_temp.h(g, 0) % 20000 AS u) x;
CREATE TABLE eval_in_order AS SELECT * FROM eval_scattered ORDER BY event_time, user_id, product_id, event_type;
CREATE TABLE eval_newest_first AS SELECT * FROM eval_scattered ORDER BY event_time DESC, user_id, product_id, event_type;
CREATE VIEW eval_two_step AS
SELECT user_id, product_id, event_type COLLATE eval_ci AS event_type, event_time FROM eval_scattered;
CREATE TEMP TABLE eval_orders AS
SELECT s, e.* FROM unnest(ARRAY['eval_scattered', 'eval_in_order', 'eval_newest_first', 'eval_two_step']) s,
       LATERAL recsys_evaluate(10, test_days => 7, source => s) e;
SELECT count(DISTINCT (users_evaluated, users_without_history, "precision", precision_lo, precision_hi, recall,
                       recall_lo, recall_hi, ndcg, ndcg_lo, ndcg_hi, hit_rate, map, coverage, cutoff,
                       pop_precision, pop_recall, model_items)) AS distinct_rows, count(*) AS runs
  FROM eval_orders;
SELECT users_evaluated, users_without_history, round("precision"::numeric, 6) AS "precision",
       round(recall::numeric, 6) AS recall, round(ndcg::numeric, 6) AS ndcg, cutoff AT TIME ZONE 'UTC' AS cutoff_utc,
       model_items
  FROM eval_orders WHERE s = 'eval_two_step';

-- Where a cell's sum depends on the order of its events, the one-scan read
-- sums them in the scan's order, as the two-step read does: only integer
-- weights of at most 2^16, with no value column and no decay, are summed in
-- any order (pg_read.cpp, order_free).  One cell of a product of its own,
-- three events in this physical order, after the rest: +a and -a long
-- before the cutoff around a small one held back near it (after hold_from,
-- before the cutoff).  In scan order (a + s) - a = 0, and the product is
-- not in the model; summing the two released events first would leave s
-- and add it.  Once with weights 1 and 2^-60, once with 2^53 and 1
-- (2^53 + 1 rounds to 2^53), once with a value column; each against the
-- forced two-step read.
INSERT INTO recsys.event_weights VALUES
    ('plus', 1), ('minus', -1), ('tiny', power(2, -60)), ('big', power(2, 53)), ('unbig', -power(2, 53));
CREATE TABLE eval_sums AS SELECT e.*, 1.0::float8 AS amount FROM eval_scattered e;
CREATE TABLE eval_sums_big AS SELECT * FROM eval_sums;
CREATE TABLE eval_sums_value AS SELECT * FROM eval_sums;
INSERT INTO eval_sums VALUES
    (7, 9001, 'plus', timestamptz '2024-03-01 00:00+00' - interval '30 days', 1),
    (7, 9001, 'tiny', timestamptz '2024-03-01 00:00+00' - interval '8 days', 1),
    (7, 9001, 'minus', timestamptz '2024-03-01 00:00+00' - interval '30 days', 1);
INSERT INTO eval_sums_big VALUES
    (7, 9001, 'big', timestamptz '2024-03-01 00:00+00' - interval '30 days', 1),
    (7, 9001, 'view', timestamptz '2024-03-01 00:00+00' - interval '8 days', 1),
    (7, 9001, 'unbig', timestamptz '2024-03-01 00:00+00' - interval '30 days', 1);
INSERT INTO eval_sums_value VALUES
    (7, 9001, 'view', timestamptz '2024-03-01 00:00+00' - interval '30 days', 1),
    (7, 9001, 'view', timestamptz '2024-03-01 00:00+00' - interval '8 days', power(2, -60)),
    (7, 9001, 'view', timestamptz '2024-03-01 00:00+00' - interval '30 days', -1);
CREATE VIEW eval_sums_two_step AS
SELECT user_id, product_id, event_type COLLATE eval_ci AS event_type, event_time, amount FROM eval_sums;
CREATE VIEW eval_sums_big_two_step AS
SELECT user_id, product_id, event_type COLLATE eval_ci AS event_type, event_time, amount FROM eval_sums_big;
CREATE VIEW eval_sums_value_two_step AS
SELECT user_id, product_id, event_type COLLATE eval_ci AS event_type, event_time, amount FROM eval_sums_value;
CREATE TEMP TABLE eval_sum_orders (s text, model_items bigint, users_evaluated bigint, "precision" float8);
INSERT INTO eval_sum_orders
SELECT s, e.model_items, e.users_evaluated, e."precision"
  FROM unnest(ARRAY['eval_sums', 'eval_sums_two_step', 'eval_sums_big', 'eval_sums_big_two_step']) s,
       LATERAL recsys_evaluate(10, test_days => 7, source => s) e;
SELECT user_type, item_type FROM recsys_set_source('public.eval_sums_value', 'user_id', 'product_id', 'event_type', 'event_time', 'amount');
INSERT INTO eval_sum_orders
SELECT 'eval_sums_value', model_items, users_evaluated, "precision" FROM recsys_evaluate(10, test_days => 7);
SELECT user_type, item_type FROM recsys_set_source('public.eval_sums_value_two_step', 'user_id', 'product_id', 'event_type', 'event_time', 'amount');
INSERT INTO eval_sum_orders
SELECT 'eval_sums_value_two_step', model_items, users_evaluated, "precision" FROM recsys_evaluate(10, test_days => 7);
SELECT user_type, item_type FROM recsys_set_source('public.interactions', 'user_id', 'product_id', 'event_type', 'event_time');
-- The product of its own is in no model (the scattered log's model holds
-- 300 products), and each pair of rows is the same.
SELECT s, model_items, users_evaluated, round("precision"::numeric, 6) AS "precision" FROM eval_sum_orders ORDER BY s;
DROP VIEW eval_sums_two_step, eval_sums_big_two_step, eval_sums_value_two_step;
DROP TABLE eval_sums, eval_sums_big, eval_sums_value;
DELETE FROM recsys.event_weights WHERE event_type IN ('plus', 'minus', 'tiny', 'big', 'unbig');

-- Negative weights, time decay and count_repeats: dislikes of existing
-- cells at any time, and the newest event of all a dislike by a new user of
-- a new product (it is not the newest usable event, and after the cutoff
-- with a weight <= 0 it must not reach the dictionaries); a purchase at the
-- cutoff itself (a test touch).
INSERT INTO recsys.event_weights VALUES ('dislike', -2);
UPDATE recsys.config SET half_life_days = 10;
CREATE TEMP TABLE eval_more AS
SELECT user_id, product_id, 'dislike' AS event_type, event_time + interval '1 hour' AS event_time
  FROM eval_scattered WHERE (user_id + product_id) % 9 = 0
UNION ALL SELECT 20001, 301, 'dislike', timestamptz '2024-03-05 00:00+00'
UNION ALL SELECT 1, 5, 'purchase', (SELECT max(event_time) - interval '7 days' FROM eval_scattered);
INSERT INTO eval_scattered SELECT * FROM eval_more;
INSERT INTO eval_in_order SELECT * FROM eval_more;
INSERT INTO eval_newest_first SELECT * FROM eval_more ORDER BY event_time DESC;
CREATE TEMP TABLE eval_weighted AS
SELECT s, e.* FROM unnest(ARRAY['eval_scattered', 'eval_in_order', 'eval_newest_first', 'eval_two_step']) s,
       LATERAL recsys_evaluate(10, test_days => 7, source => s, count_repeats => true) e;
SELECT count(DISTINCT (users_evaluated, users_without_history, "precision", precision_lo, precision_hi, recall,
                       recall_lo, recall_hi, ndcg, ndcg_lo, ndcg_hi, hit_rate, map, coverage, cutoff,
                       pop_precision, pop_recall, model_items)) AS distinct_rows, count(*) AS runs
  FROM eval_weighted;
SELECT users_evaluated, users_without_history, round("precision"::numeric, 6) AS "precision",
       cutoff AT TIME ZONE 'UTC' AS cutoff_utc, model_items
  FROM eval_weighted WHERE s = 'eval_two_step';

-- Under a small maintenance_work_mem the aggregation outgrows its budget:
-- the scan gives way to the two-step read, which reads the users in parts
-- (their numbering depends on where the aggregation overflowed, so one scan
-- could not give the same sums): the same row as the forced two-step read.
-- How many parts follows from the row estimate (analyzed, the table is read
-- in 16 parts, the view in 8), and the test users are numbered in key order
-- whatever the parts: the same row as in memory, in one part, too (the
-- means are sums over the users, and the bootstrap draws users by number).
ANALYZE eval_in_order, eval_scattered;
SET maintenance_work_mem = '3MB';
CREATE TEMP TABLE eval_parts AS
SELECT s, e.* FROM unnest(ARRAY['eval_in_order', 'eval_two_step']) s,
       LATERAL recsys_evaluate(10, test_days => 2, source => s) e;
RESET maintenance_work_mem;
INSERT INTO eval_parts SELECT 'in memory', e.* FROM recsys_evaluate(10, test_days => 2, source => 'eval_in_order') e;
SELECT count(DISTINCT (users_evaluated, users_without_history, "precision", precision_lo, precision_hi, recall,
                       recall_lo, recall_hi, ndcg, ndcg_lo, ndcg_hi, hit_rate, map, coverage, cutoff,
                       pop_precision, pop_recall, model_items)) AS distinct_rows, count(*) AS runs
  FROM eval_parts;
UPDATE recsys.config SET half_life_days = NULL;
DELETE FROM recsys.event_weights WHERE event_type = 'dislike';

-- Text keys (held with their bytes, compacted at each sweep), in time order.
CREATE TABLE eval_text AS
SELECT 'u' || user_id AS who, 'p' || product_id AS what, event_type AS kind, event_time AS at
  FROM eval_in_order WHERE event_type <> 'dislike';
CREATE VIEW eval_text_two_step AS SELECT who, what, kind COLLATE eval_ci AS kind, at FROM eval_text;
SELECT user_type, item_type FROM recsys_set_source('public.eval_text', 'who', 'what', 'kind', 'at');
CREATE TEMP TABLE eval_keys AS
SELECT s, e.* FROM unnest(ARRAY['eval_text', 'eval_text_two_step']) s,
       LATERAL recsys_evaluate(10, test_days => 7, source => s) e;
-- In parts, the test users' byte keys order them as in memory.
SET maintenance_work_mem = '3MB';
INSERT INTO eval_keys SELECT 'in parts', e.* FROM recsys_evaluate(10, test_days => 7, source => 'eval_text') e;
RESET maintenance_work_mem;
SELECT count(DISTINCT (users_evaluated, users_without_history, "precision", precision_lo, precision_hi, recall,
                       recall_lo, recall_hi, ndcg, ndcg_lo, ndcg_hi, hit_rate, map, coverage, cutoff,
                       pop_precision, pop_recall, model_items)) AS distinct_rows, count(*) AS runs,
       min(users_evaluated) = (SELECT users_evaluated FROM eval_orders WHERE s = 'eval_two_step') AS same_users
  FROM eval_keys;
SELECT user_type, item_type FROM recsys_set_source('public.interactions', 'user_id', 'product_id', 'event_type', 'event_time');
DROP VIEW eval_two_step, eval_text_two_step;
DROP TABLE eval_scattered, eval_in_order, eval_newest_first, eval_text;
DROP COLLATION eval_ci;
