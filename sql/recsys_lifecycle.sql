-- The model lifecycle: what recsys_models shows of each model, rolling back
-- with recsys_activate(), pinning, retention, ids never reused.  Runs on the
-- log of recsys_semantics (u1's list with K = 50: 12 cf 3.605536, 13 cf
-- 1.333333, 14 popular; with K = 1 u1's neighbours are all in its history).
\set SHOW_CONTEXT never

-- recsys_models: the 1.0 columns in their order, then settings and pinned.
SELECT string_agg(attname, ', ' ORDER BY attnum) FROM pg_attribute
 WHERE attrelid = 'recsys_models'::regclass AND attnum > 0;
SELECT settings, pinned FROM recsys_models WHERE active;
SELECT model_id AS m50 FROM recsys_models WHERE active \gset

-- A model trained with K = 1 becomes active; recsys_activate() rolls back.
SELECT model_id AS m1 FROM recsys_train(neighbors => 1) \gset
SELECT settings->'neighbors' AS neighbors, model_id = :m1 AS is_m1 FROM recsys_models WHERE active;
SELECT product_id, round(score::numeric, 6) AS score, source FROM recsys_recommend(ARRAY[1], 3);
SELECT model_id = :m50 AS activated, previous_model_id = :m1 AS previous_was_m1,
       source_relation, settings->'neighbors' AS neighbors
  FROM recsys_activate(:m50);
SELECT model_id = :m50 AS m50_active FROM recsys_models WHERE active;
SELECT product_id, round(score::numeric, 6) AS score, source FROM recsys_recommend(ARRAY[1], 3);
SELECT product_id, round(similarity::numeric, 6) AS similarity FROM recsys_similar_items(11, 2);
-- Activating the active model changes nothing.
SELECT model_id = :m50 AS same, previous_model_id = :m50 AS previous_same FROM recsys_activate(:m50);
-- An activation rolled back leaves the previous model active.
BEGIN;
SELECT model_id = :m1 AS activated FROM recsys_activate(:m1);
SELECT model_id = :m1 AS sees_m1 FROM recsys_models WHERE active;
ROLLBACK;
SELECT model_id = :m50 AS m50_still_active FROM recsys_models WHERE active;

-- Bad ids: NULL (22004), unknown (42704 with a hint), a model whose
-- relation is gone (42P01: recommending could not read histories).
SELECT * FROM recsys_activate(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_activate(-1);
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE gone_events AS SELECT * FROM interactions;
SELECT model_id AS mgone FROM recsys_train(source => 'gone_events') \gset
SELECT model_id = :m50 AS m50 FROM recsys_activate(:m50);
DROP TABLE gone_events;
\set VERBOSITY sqlstate
SELECT * FROM recsys_activate(:mgone);
\set VERBOSITY default
SELECT model_id = :m50 AS m50_still_active FROM recsys_models WHERE active;

-- Pinning: bad arguments, then pinned models outlive retention and do not
-- count against keep_models.
SELECT * FROM recsys_pin(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_pin(-1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_pin(:m1, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT model_id = :m1 AS m1, pinned, active FROM recsys_pin(:m1);
SELECT model_id = :m50 AS m50, pinned, active FROM recsys_pin(:m50, pinned => true);
SELECT model_id = :m1 AS is_m1, pinned FROM recsys_models WHERE pinned ORDER BY model_id;
UPDATE recsys.config SET keep_models = 2;
SELECT model_id AS t1 FROM recsys_train() \gset
SELECT model_id AS t2 FROM recsys_train() \gset
SELECT model_id AS t3 FROM recsys_train() \gset
-- Kept: the two pinned ones and the two newest others (t3 active, t2).
SELECT CASE model_id WHEN :m50 THEN 'm50' WHEN :m1 THEN 'm1' WHEN :t1 THEN 't1' WHEN :t2 THEN 't2'
                     WHEN :t3 THEN 't3' ELSE 'other' END AS model, active, pinned
  FROM recsys_models ORDER BY model_id;
SELECT count(DISTINCT model_id) AS with_neighbours FROM recsys.neighbors;
SELECT count(DISTINCT model_id) AS with_popularity FROM recsys.popularity;
-- A pinned old model serves as it did.
SELECT model_id = :m1 AS m1 FROM recsys_activate(:m1);
SELECT product_id, round(score::numeric, 6) AS score, source FROM recsys_recommend(ARRAY[1], 3);
-- Retention never drops the active model, pinned or not: unpin m1 (active)
-- and run retention with keep_models 1: t3 stays as the newest unpinned
-- model, m1 as the active one, m50 as pinned; t2 goes.
SELECT model_id = :m1 AS m1, pinned, active FROM recsys_pin(:m1, false);
SELECT cardinality(recsys.drop_old_models(1)) AS dropped;
SELECT CASE model_id WHEN :m50 THEN 'm50' WHEN :m1 THEN 'm1' WHEN :t3 THEN 't3' ELSE 'other' END AS model,
       active, pinned
  FROM recsys_models ORDER BY model_id;
-- Unpinned and no longer active, m1 goes at the next training; m50 stays.
SELECT model_id AS t4 FROM recsys_train() \gset
SELECT CASE model_id WHEN :m50 THEN 'm50' WHEN :t3 THEN 't3' WHEN :t4 THEN 't4' ELSE 'other' END AS model,
       active, pinned
  FROM recsys_models ORDER BY model_id;
\set VERBOSITY sqlstate
SELECT * FROM recsys_activate(:m1);
\set VERBOSITY default
UPDATE recsys.config SET keep_models = 3;

-- Model ids are never reused, even across DROP and CREATE EXTENSION (the
-- proxy caches by model id), and stay exact in JSON (< 2^53).
SELECT max(model_id) AS before_drop FROM recsys_models \gset
DROP EXTENSION recsys;
CREATE EXTENSION recsys;
SELECT model_id > :before_drop AS larger_than_every_earlier_id, model_id < 2::numeric ^ 53 AS exact_in_json
  FROM recsys_train();
