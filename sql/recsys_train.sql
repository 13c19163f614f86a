-- Training's transactional behaviour: the models view, the atomic switch,
-- rollback and cancellation keep the previous model, old models are pruned.
\set SHOW_CONTEXT never
SELECT model_id AS active_before FROM recsys_models WHERE active \gset

-- The models view: exactly one active model, the newest.
SELECT count(*) FILTER (WHERE active) AS active_models,
       bool_and(active = (model_id = (SELECT max(model_id) FROM recsys_models))) AS newest_is_active
  FROM recsys_models;
SELECT users, items, interactions_used, interactions_ignored, ignored_null, ignored_type,
       neighbor_pairs, neighbors, cells, source_relation, seconds >= 0 AS timed
  FROM recsys_models WHERE active;

-- A training rolled back leaves the previous model active.
BEGIN;
SELECT model_id > :active_before AS new_model FROM recsys_train();
SELECT model_id > :active_before AS sees_own_model FROM recsys_models WHERE active;
ROLLBACK;
SELECT model_id = :active_before AS previous_still_active FROM recsys_models WHERE active;

-- A training cancelled by statement_timeout stops (57014) and leaves the
-- previous model active.  300k events keep it busy long enough.
CREATE TABLE big_events AS
  SELECT (g % 20000) AS user_id, ((g::bigint * 7919) % 3000)::int AS product_id, 'view'::text AS event_type,
         timestamptz '2024-01-01' + g * interval '1 second' AS event_time
    FROM generate_series(1, 300000) g;
SET statement_timeout = '30ms';
SELECT * FROM recsys_train(source => 'big_events', neighbors => 0);
\echo :LAST_ERROR_SQLSTATE
RESET statement_timeout;
SELECT model_id = :active_before AS previous_still_active FROM recsys_models WHERE active;
DROP TABLE big_events;

-- keep_models: only the newest N models are stored.
UPDATE recsys.config SET keep_models = 2;
SELECT count(*) > 0 AS trained FROM recsys_train();
SELECT count(*) > 0 AS trained FROM recsys_train();
SELECT count(*) > 0 AS trained FROM recsys_train();
SELECT count(*) AS models FROM recsys_models;
SELECT count(DISTINCT model_id) AS models_with_neighbours FROM recsys.neighbors;
SELECT count(DISTINCT model_id) AS models_with_popularity FROM recsys.popularity;
UPDATE recsys.config SET keep_models = 3;

-- The configured neighbour count is the default.
UPDATE recsys.config SET neighbors = 1;
SELECT neighbor_pairs FROM recsys_train();
UPDATE recsys.config SET neighbors = 50;
SELECT neighbor_pairs FROM recsys_train();
