-- Shop-shaped sources (issue #7): any relation mapped with recsys_set_source,
-- user and item ids of other types (int/int through a view, bigint/text in a
-- table, uuid/bigint in a partitioned table), a value column, a negative
-- weight, weight-0 events that only mark items as seen, and decay.  Each
-- result is compared with an independent plain-SQL computation of the same
-- formulas over the same log (pg_temp.ref_*): every check prints its
-- mismatches, so the expected output is the empty result.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE SCHEMA retail;
RESET client_min_messages;

-- The log: 40 customers, 15 products, purchases with a quantity, cancels of
-- a quantity, views (weight 0: seen, nothing else) and wishlist entries (no
-- weight at all).  Deterministic.
CREATE TABLE retail.base (uid int, iid int, action text, ts timestamptz, qty int);
INSERT INTO retail.base
SELECT u, 1 + (u * 7 + k * k * 3) % 15,
       (ARRAY['purchase', 'purchase', 'purchase', 'view', 'cancel', 'wishlist'])[1 + (u + k * 5) % 6],
       timestamptz '2026-01-01' + make_interval(days => (u * 13 + k * 29) % 120, secs => u * 60 + k),
       CASE WHEN (u + k) % 4 = 0 THEN NULL ELSE 1 + (u * k) % 3 END
  FROM generate_series(1, 40) u, generate_series(1, 9) k;
-- A few rows recsys must ignore: NULL keys and time.
INSERT INTO retail.base VALUES (NULL, 1, 'purchase', '2026-02-01', 1), (1, NULL, 'purchase', '2026-02-01', 1),
                             (1, 2, 'purchase', NULL, 1);
UPDATE recsys.event_weights SET weight = 0 WHERE event_type = 'view';
INSERT INTO recsys.event_weights VALUES ('cancel', -5);

-- The three typed relations over it.
CREATE VIEW retail.events_int AS SELECT uid AS customer, iid AS item, action, ts, qty FROM retail.base;
CREATE TABLE retail.events_bt AS
SELECT (9000000000 + uid)::bigint AS customer_id, ('SKU-' || iid)::varchar(12) AS sku, action, ts, qty
  FROM retail.base;
CREATE TABLE retail.events_ub (who uuid, what bigint, kind text, at timestamp, n numeric)
    PARTITION BY LIST (kind);
CREATE TABLE retail.events_ub_buy PARTITION OF retail.events_ub FOR VALUES IN ('purchase', 'cancel');
CREATE TABLE retail.events_ub_other PARTITION OF retail.events_ub DEFAULT;
SET TimeZone = 'UTC';
INSERT INTO retail.events_ub
SELECT md5(uid::text)::uuid, iid * 10000000000::bigint, action, ts AT TIME ZONE 'UTC', qty FROM retail.base;

-- The reference: w(u,i) = sum weight * coalesce(value, 1) (* 2^(-age/h)
-- with a half-life h days, age from the newest weighted event); cells with
-- w > 0; cosine similarities; scores sum_i w(u,i) sim(i,j) over the
-- history, every item with an event excluded.
CREATE FUNCTION pg_temp.ref_w(h float8, t_ref timestamptz)
RETURNS TABLE (uid int, iid int, w float8) LANGUAGE sql AS $$
    SELECT b.uid, b.iid,
           sum(w.weight * coalesce(b.qty, 1) *
               CASE WHEN h IS NULL THEN 1 ELSE 2 ^ (-(extract(epoch FROM t_ref - b.ts) / 86400) / h) END)
      FROM retail.base b JOIN recsys.event_weights w ON w.event_type = b.action AND w.weight <> 0
     WHERE b.uid IS NOT NULL AND b.iid IS NOT NULL AND b.ts IS NOT NULL
     GROUP BY 1, 2
$$;
CREATE FUNCTION pg_temp.ref_newest() RETURNS timestamptz LANGUAGE sql AS $$
    SELECT max(b.ts) FROM retail.base b JOIN recsys.event_weights w ON w.event_type = b.action AND w.weight <> 0
     WHERE b.uid IS NOT NULL AND b.iid IS NOT NULL
$$;
CREATE FUNCTION pg_temp.ref_sim(h float8)
RETURNS TABLE (i int, j int, sim float8) LANGUAGE sql AS $$
    WITH c AS (SELECT * FROM pg_temp.ref_w(h, pg_temp.ref_newest()) WHERE w > 0),
         n AS (SELECT iid, sqrt(sum(w * w)) AS norm FROM c GROUP BY 1)
    SELECT a.iid, b.iid, sum(a.w * b.w) / (na.norm * nb.norm)
      FROM c a JOIN c b ON a.uid = b.uid AND a.iid <> b.iid
      JOIN n na ON na.iid = a.iid JOIN n nb ON nb.iid = b.iid
     GROUP BY a.iid, b.iid, na.norm, nb.norm
    HAVING sum(a.w * b.w) > 0
$$;
-- Scores at call time: the history with decay from now().
CREATE FUNCTION pg_temp.ref_scores(h float8, exclude_seen boolean)
RETURNS TABLE (uid int, iid int, score float8) LANGUAGE sql AS $$
    WITH hist AS (SELECT * FROM pg_temp.ref_w(h, now()) WHERE w > 0),
         seen AS (SELECT DISTINCT b.uid, b.iid FROM retail.base b
                   WHERE b.uid IS NOT NULL AND b.iid IS NOT NULL AND b.ts IS NOT NULL)
    SELECT hist.uid, s.j, sum(hist.w * s.sim)
      FROM hist JOIN pg_temp.ref_sim(h) s ON s.i = hist.iid
     WHERE NOT (exclude_seen AND EXISTS (SELECT 1 FROM seen WHERE seen.uid = hist.uid AND seen.iid = s.j))
     GROUP BY 1, 2
    HAVING sum(hist.w * s.sim) > 0
$$;

-- 1. int/int through a view, value column quantity.
SELECT * FROM recsys_set_source('retail.events_int', 'customer', 'item', 'action', 'ts', 'qty');
SELECT users, items, interactions_used, interactions_ignored FROM recsys_train(neighbors => 0);
-- The counts: used = rows with keys, time and a weighted type (not view
-- nor wishlist); ignored = the rest.
SELECT count(*) FILTER (WHERE action IN ('purchase', 'cancel') AND uid IS NOT NULL AND iid IS NOT NULL AND ts IS NOT NULL) AS used,
       count(*) FILTER (WHERE NOT (action IN ('purchase', 'cancel') AND uid IS NOT NULL AND iid IS NOT NULL AND ts IS NOT NULL)) AS ignored
  FROM retail.base;
-- Neighbours: recsys vs the reference, both ways.
CREATE TEMP TABLE got_sim AS
SELECT i.iid AS i, s.product_id AS j, s.similarity AS sim
  FROM generate_series(1, 15) i(iid), recsys_similar_items(i.iid, 100) s;
SELECT 'missing' AS what, r.* FROM pg_temp.ref_sim(NULL) r
 WHERE NOT EXISTS (SELECT 1 FROM got_sim g WHERE g.i = r.i AND g.j = r.j AND abs(g.sim - r.sim) < 1e-9)
UNION ALL
SELECT 'extra', g.* FROM got_sim g
 WHERE NOT EXISTS (SELECT 1 FROM pg_temp.ref_sim(NULL) r WHERE g.i = r.i AND g.j = r.j);
SELECT count(*) > 50 AS enough_pairs FROM got_sim;
-- Recommendations: every cf row equals the reference score; no reference
-- candidate is missing (top_n 100 lists every candidate); seen items never.
CREATE TEMP TABLE got_rec AS
SELECT user_id AS uid, product_id AS iid, score, source FROM recsys_recommend(ARRAY(SELECT generate_series(1, 41)), 100);
SELECT 'missing' AS what, r.* FROM pg_temp.ref_scores(NULL, true) r
 WHERE NOT EXISTS (SELECT 1 FROM got_rec g WHERE g.uid = r.uid AND g.iid = r.iid AND g.source = 'cf'
                      AND abs(g.score - r.score) < 1e-9)
UNION ALL
SELECT 'extra cf', g.uid, g.iid, g.score FROM got_rec g
 WHERE g.source = 'cf' AND NOT EXISTS (SELECT 1 FROM pg_temp.ref_scores(NULL, true) r WHERE g.uid = r.uid AND g.iid = r.iid)
UNION ALL
SELECT 'seen recommended', g.uid, g.iid, g.score FROM got_rec g
 WHERE EXISTS (SELECT 1 FROM retail.base b WHERE b.uid = g.uid AND b.iid = g.iid AND b.ts IS NOT NULL);
-- Items with only views, cancels or wishlist entries are seen: user 41 has none.
SELECT count(*) AS cf_rows, count(DISTINCT uid) AS users FROM got_rec WHERE source = 'cf';
-- exclude_seen => false: the repurchase candidates come back, scored alike.
SELECT 'missing' AS what, r.* FROM pg_temp.ref_scores(NULL, false) r
 WHERE NOT EXISTS (SELECT 1 FROM recsys_recommend(ARRAY[r.uid], 100, exclude_seen => false) g
                    WHERE g.product_id = r.iid AND g.source = 'cf' AND abs(g.score - r.score) < 1e-9);
-- The history as recommending sees it: weighted events only, w(u,i) summed.
SELECT 'history differs' AS what, h.* FROM recsys_user_history(3, 100) h
  FULL JOIN (SELECT * FROM pg_temp.ref_w(NULL, now()) WHERE uid = 3) r ON r.iid = h.product_id
 WHERE h.product_id IS NULL OR r.iid IS NULL OR abs(h.weight - r.w) > 1e-9;
-- The old call keeps working unchanged.
SELECT count(*) FROM recsys_recommend(ARRAY[10, 25, 42], 5);

-- 2. bigint customers and varchar SKUs, in a table.
SELECT * FROM recsys_set_source('retail.events_bt', 'customer_id', 'sku', 'action', 'ts', 'qty');
\df recsys_recommend
SELECT users, items, interactions_used FROM recsys_train(neighbors => 0);
SELECT * FROM recsys_recommend(ARRAY[9000000010]::bigint[], 3);
SELECT 'missing' AS what, r.* FROM pg_temp.ref_scores(NULL, true) r
 WHERE NOT EXISTS (SELECT 1 FROM recsys_recommend(ARRAY[9000000000 + r.uid], 100) g
                    WHERE g.product_id = 'SKU-' || r.iid AND g.source = 'cf' AND abs(g.score - r.score) < 1e-9)
UNION ALL
SELECT 'extra cf', g.user_id - 9000000000, substr(g.product_id, 5)::int, g.score
  FROM recsys_recommend(ARRAY(SELECT 9000000000 + generate_series(1, 40)), 100) g
 WHERE g.source = 'cf' AND NOT EXISTS (SELECT 1 FROM pg_temp.ref_scores(NULL, true) r
                                        WHERE g.user_id = 9000000000 + r.uid AND g.product_id = 'SKU-' || r.iid);
SELECT 'sim differs' AS what, r.* FROM pg_temp.ref_sim(NULL) r
 WHERE NOT EXISTS (SELECT 1 FROM recsys_similar_items('SKU-' || r.i, 100) s
                    WHERE s.product_id = 'SKU-' || r.j AND abs(s.similarity - r.sim) < 1e-9);
SELECT count(*) AS unknown_sku_neighbours FROM recsys_similar_items('SKU-999', 5);
SELECT product_id, round(weight::numeric, 6) AS weight FROM recsys_user_history(9000000003, 3);
-- Integer ids no longer resolve: the functions take bigint and text.
SELECT * FROM recsys_similar_items(3, 5);

-- 3. uuid customers and bigint products in a partitioned table, numeric
-- values, timestamp times; with a half-life of 30 days.
SELECT * FROM recsys_set_source('retail.events_ub', 'who', 'what', 'kind', 'at', 'n');
UPDATE recsys.config SET half_life_days = 30;
SELECT users, items, interactions_used FROM recsys_train(neighbors => 0);
SELECT settings->'half_life_days' AS half_life, settings->>'user_type' AS user_type,
       settings->>'item_type' AS item_type, settings->>'value_column' AS value_column
  FROM recsys_models WHERE active;
SELECT 'sim differs' AS what, r.* FROM pg_temp.ref_sim(30) r
 WHERE NOT EXISTS (SELECT 1 FROM recsys_similar_items(r.i * 10000000000::bigint, 100) s
                    WHERE s.product_id = r.j * 10000000000::bigint AND abs(s.similarity - r.sim) < 1e-9);
SELECT 'missing' AS what, r.* FROM pg_temp.ref_scores(30, true) r
 WHERE NOT EXISTS (SELECT 1 FROM recsys_recommend(ARRAY[md5(r.uid::text)::uuid], 100) g
                    WHERE g.product_id = r.iid * 10000000000::bigint AND g.source = 'cf'
                      AND abs(g.score - r.score) < 1e-9 * greatest(1, r.score));
-- Editing the weights affects the next training only: serving keeps the
-- model's (the reference is taken before the edit).
CREATE TEMP TABLE ref_before AS SELECT * FROM pg_temp.ref_scores(30, true) WHERE uid = 3;
UPDATE recsys.event_weights SET weight = 50 WHERE event_type = 'cancel';
SELECT 'differs after a live edit' AS what, r.* FROM ref_before r
 WHERE NOT EXISTS (SELECT 1 FROM recsys_recommend(ARRAY[md5('3')::uuid], 100) g
                    WHERE g.product_id = r.iid * 10000000000::bigint AND g.source = 'cf'
                      AND abs(g.score - r.score) < 1e-9 * greatest(1, r.score));
SELECT count(*) > 0 AS user_3_has_cf FROM ref_before;
UPDATE recsys.event_weights SET weight = -5 WHERE event_type = 'cancel';
UPDATE recsys.config SET half_life_days = NULL;

-- Bad mappings: errors name the column, its type and what is allowed.
SELECT * FROM recsys_set_source('retail.events_bt', 'customer', 'sku', 'action', 'ts');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_set_source('retail.events_bt', 'customer_id', 'ts', 'action', 'ts');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_set_source('retail.events_bt', 'customer_id', 'sku', 'action', 'ts', 'sku');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_set_source('retail.events_bt', 'customer_id', 'sku', 'qty', 'ts');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_set_source('retail.nope', 'a', 'b', 'c', 'd');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_set_source('retail.events_bt', NULL, 'sku', 'action', 'ts');
\echo :LAST_ERROR_SQLSTATE
CREATE SEQUENCE retail.seq;
SELECT * FROM recsys_set_source('retail.seq', 'a', 'b', 'c', 'd');
\echo :LAST_ERROR_SQLSTATE
-- A key that does not fit: bigint ids mapped while the serving functions
-- take integer ones.
SELECT * FROM recsys_set_source('retail.events_int', 'customer', 'item', 'action', 'ts', 'qty');
CREATE TABLE retail.events_big AS SELECT (customer + 3000000000)::bigint AS customer, item, action, ts, qty
  FROM retail.events_int;
SELECT * FROM recsys_train(source => 'retail.events_big');
\echo :LAST_ERROR_SQLSTATE
-- The active model's types must be the functions': after remapping to
-- text SKUs without retraining, serving says so.
SELECT user_type, item_type FROM recsys_set_source('retail.events_bt', 'customer_id', 'sku', 'action', 'ts', 'qty');
SELECT users FROM recsys_train(neighbors => 0, source => 'retail.events_bt');
SELECT user_type, item_type FROM recsys_set_source('retail.events_int', 'customer', 'item', 'action', 'ts', 'qty');
DO $$
BEGIN
    PERFORM * FROM recsys_recommend(ARRAY[1], 5);
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE '% %', SQLSTATE, regexp_replace(SQLERRM, 'model [0-9]+', 'model N');
END $$;
-- The matrix view still aggregates in SQL: what it would compute differently
-- from training is refused (0A000), not answered.  Evaluation reads as
-- training does (the mapping with a value column, below).
SELECT count(*) FROM recsys_user_item_matrix;
\echo :LAST_ERROR_SQLSTATE
SELECT users_evaluated, model_items FROM recsys_evaluate(5, test_days => 30);
SELECT user_type FROM recsys_set_source('retail.events_int', 'customer', 'item', 'action', 'ts');
SELECT count(*) FROM recsys_user_item_matrix;
\echo :LAST_ERROR_SQLSTATE
-- Not for PUBLIC.
SELECT has_function_privilege('public', 'recsys_set_source(regclass, name, name, name, name, name)', 'EXECUTE') AS public_may_map;

-- Evaluation reads a mapped source in one scan as training does: the same
-- log under int/int, bigint/varchar and uuid/bigint keys gives the same
-- model's metrics (to 12 digits: the users are numbered in their keys' order,
-- which orders the sums).  The popularity baseline ranks equally popular
-- items by their key: bigint products keep the integers' order, varchar
-- SKUs sort 'SKU-10' before 'SKU-2', so only that mapping's differs.
CREATE TEMP TABLE mapped_evals (keys text, users bigint, p numeric, r numeric, ndcg numeric, pop_p numeric,
                                items bigint);
SELECT user_type FROM recsys_set_source('retail.events_int', 'customer', 'item', 'action', 'ts', 'qty');
INSERT INTO mapped_evals SELECT 'int/int', users_evaluated, round(precision::numeric, 12), round(recall::numeric, 12),
       round(ndcg::numeric, 12), round(pop_precision::numeric, 12), model_items FROM recsys_evaluate(3, test_days => 30);
SELECT user_type FROM recsys_set_source('retail.events_bt', 'customer_id', 'sku', 'action', 'ts', 'qty');
INSERT INTO mapped_evals SELECT 'bigint/varchar', users_evaluated, round(precision::numeric, 12), round(recall::numeric, 12),
       round(ndcg::numeric, 12), round(pop_precision::numeric, 12), model_items FROM recsys_evaluate(3, test_days => 30);
SELECT user_type FROM recsys_set_source('retail.events_ub', 'who', 'what', 'kind', 'at', 'n');
INSERT INTO mapped_evals SELECT 'uuid/bigint', users_evaluated, round(precision::numeric, 12), round(recall::numeric, 12),
       round(ndcg::numeric, 12), round(pop_precision::numeric, 12), model_items FROM recsys_evaluate(3, test_days => 30);
SELECT keys, users, items, p, r, ndcg, pop_p, (p, r, ndcg) = (SELECT p, r, ndcg FROM mapped_evals WHERE keys = 'int/int')
       AS same_as_int FROM mapped_evals ORDER BY keys;
SELECT user_type FROM recsys_set_source('retail.events_int', 'customer', 'item', 'action', 'ts', 'qty');

-- Ties follow the keys, not the rows' physical order (issue #9): six
-- customers each bought 'A' and one of 'x1'..'x6', so A's six neighbours tie
-- (cosine 1/sqrt(6) each) and keeping 3 keeps the three smallest keys; the
-- popularity ranking's ties are broken the same way.  The same log stored in
-- two physical orders trains the same model, row for row.
CREATE TABLE retail.tie_fwd (cust bigint, sku text, action text, ts timestamptz);
INSERT INTO retail.tie_fwd
SELECT 100 + u, s, 'purchase', timestamptz '2026-01-01' + make_interval(secs => u)
  FROM generate_series(1, 6) u, LATERAL (VALUES ('A'), ('x' || u)) v(s)
 ORDER BY u, s;
CREATE TABLE retail.tie_rev AS SELECT * FROM retail.tie_fwd ORDER BY cust DESC, sku DESC;
SELECT (SELECT array_agg(sku) FROM (SELECT sku FROM retail.tie_fwd LIMIT 3) f) AS fwd_first_rows,
       (SELECT array_agg(sku) FROM (SELECT sku FROM retail.tie_rev LIMIT 3) r) AS rev_first_rows;
SELECT user_type, item_type FROM recsys_set_source('retail.tie_fwd', 'cust', 'sku', 'action', 'ts');
SELECT users, items FROM recsys_train(neighbors => 3);
CREATE TEMP TABLE tie_fwd_model AS
SELECT k.item_key, n.neighbor_ids, n.sims,
       ARRAY(SELECT k2.item_key FROM unnest(n.neighbor_ids) WITH ORDINALITY AS x(id, o)
               JOIN recsys.item_keys k2 ON k2.model_id = n.model_id AND k2.item_id = x.id ORDER BY x.o) AS neighbor_keys
  FROM recsys.neighbors n JOIN recsys.item_keys k ON k.model_id = n.model_id AND k.item_id = n.item_id
 WHERE n.model_id = (SELECT a.model_id FROM recsys.active_model a);
CREATE TEMP TABLE tie_fwd_pop AS
SELECT p.rank, k.item_key FROM recsys.popularity p JOIN recsys.item_keys k USING (model_id, item_id)
 WHERE p.model_id = (SELECT a.model_id FROM recsys.active_model a);
SELECT product_id, round(similarity::numeric, 6) AS similarity FROM recsys_similar_items('A', 10);
SELECT user_type, item_type FROM recsys_set_source('retail.tie_rev', 'cust', 'sku', 'action', 'ts');
SELECT users, items FROM recsys_train(neighbors => 3);
SELECT product_id, round(similarity::numeric, 6) AS similarity FROM recsys_similar_items('A', 10);
-- Item by item, the two models' neighbour lists (as keys) and similarities
-- are identical, and so is the popularity ranking: no row printed.
SELECT 'differs' AS what, f.item_key, f.neighbor_keys, r.neighbor_keys
  FROM tie_fwd_model f
  FULL JOIN (SELECT k.item_key, n.sims,
                    ARRAY(SELECT k2.item_key FROM unnest(n.neighbor_ids) WITH ORDINALITY AS x(id, o)
                            JOIN recsys.item_keys k2 ON k2.model_id = n.model_id AND k2.item_id = x.id
                           ORDER BY x.o) AS neighbor_keys
               FROM recsys.neighbors n JOIN recsys.item_keys k ON k.model_id = n.model_id AND k.item_id = n.item_id
              WHERE n.model_id = (SELECT a.model_id FROM recsys.active_model a)) r USING (item_key)
 WHERE f.neighbor_keys IS DISTINCT FROM r.neighbor_keys OR f.sims IS DISTINCT FROM r.sims
UNION ALL
SELECT 'popularity differs', f.item_key, NULL, NULL
  FROM tie_fwd_pop f
  FULL JOIN (SELECT p.rank, k.item_key FROM recsys.popularity p JOIN recsys.item_keys k USING (model_id, item_id)
              WHERE p.model_id = (SELECT a.model_id FROM recsys.active_model a)) r USING (rank)
 WHERE f.item_key IS DISTINCT FROM r.item_key;
SELECT rank, item_key FROM tie_fwd_pop ORDER BY rank LIMIT 3;

-- Every read of the source runs with synchronize_seqscans off: a synchronized
-- scan of a large table starts where another scan of it is, and a read in
-- parts numbers the users in the rows' order.  A view that yields its rows
-- only with the setting off gives the whole model (the same neighbour lists
-- as the table's), serving reads it the same way, and the caller's own
-- setting is back afterwards.
CREATE VIEW retail.tie_sync AS
SELECT * FROM retail.tie_rev WHERE pg_catalog.current_setting('synchronize_seqscans') = 'off';
SELECT user_type, item_type FROM recsys_set_source('retail.tie_sync', 'cust', 'sku', 'action', 'ts');
SELECT users, items FROM recsys_train(neighbors => 3);
SELECT product_id, round(similarity::numeric, 6) AS similarity FROM recsys_similar_items('A', 10);
SELECT DISTINCT source FROM recsys_recommend(ARRAY(SELECT cust FROM retail.tie_rev ORDER BY cust LIMIT 1), 3);
SHOW synchronize_seqscans;

-- Back to the seed's mapping for the tests that follow.
SELECT * FROM recsys_set_source('public.interactions', 'user_id', 'product_id', 'event_type', 'event_time');
UPDATE recsys.event_weights SET weight = 1 WHERE event_type = 'view';
DELETE FROM recsys.event_weights WHERE event_type = 'cancel';
SET client_min_messages = warning;
DROP SCHEMA retail CASCADE;
RESET client_min_messages;
