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
