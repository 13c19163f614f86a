-- Training within maintenance_work_mem: beyond it the cells spill to disk
-- and the similarities are computed in passes, giving the very model an
-- unlimited budget gives; refused only below the least workable budget, with
-- that budget as the hint, before any of training's own work.
\set SHOW_CONTEXT never
-- 40000 events, 4000 users, 1000 products (skewed), weights from 3 event types.
CREATE TABLE events_passes AS
  SELECT (g % 4000) AS user_id,
         ((hashint4(g) & 1023) * (hashint4(g * 7) & 1023) / 1024) % 1000 AS product_id,
         (ARRAY['view', 'click', 'purchase'])[1 + (hashint4(g * 13) & 3) % 3] AS event_type,
         timestamptz '2024-01-01' + g * interval '1 minute' AS event_time
    FROM generate_series(1, 40000) g;
SELECT count(*) AS cells, count(DISTINCT user_id) AS users, count(DISTINCT product_id) AS items
  FROM (SELECT DISTINCT user_id, product_id FROM events_passes) c \gset
-- The plan at the minimum budget, 1MB: in passes, not refused.
SELECT in_memory > 1024 * 1024 AS over_1mb, minimum <= 1024 * 1024 AS passes_fit, passes > 1 AS many_passes,
       passes = ceil(:items / items_per_pass::numeric) AS passes_cover_items
  FROM recsys.train_plan(:cells, :users, :items, 50, 1024);
-- With a large budget: in memory.
SELECT passes FROM recsys.train_plan(:cells, :users, :items, 50, 1024 * 1024);

-- Large budget: in memory, no NOTICE.
SET maintenance_work_mem = '1GB';
SELECT model_id AS big_model FROM recsys_train(source => 'events_passes') \gset
-- The minimum budget: a NOTICE with the figures, then the same model.
SET maintenance_work_mem = '1MB';
SELECT model_id AS small_model, users, items FROM recsys_train(source => 'events_passes') \gset
SELECT :small_model > :big_model AS newer, :users = :'users' AS same_users, :items = :'items' AS same_items;
-- Every neighbour row identical (ids, order, similarities to the last bit).
SELECT count(*) AS items_with_neighbors,
       count(*) FILTER (WHERE a.neighbor_ids = b.neighbor_ids AND a.sims = b.sims) AS identical,
       count(*) FILTER (WHERE a.item_id IS NULL OR b.item_id IS NULL) AS missing
  FROM (SELECT * FROM recsys.neighbors WHERE model_id = :big_model) a
  FULL JOIN (SELECT * FROM recsys.neighbors WHERE model_id = :small_model) b USING (item_id);
SELECT (SELECT array_agg(item_id || ':' || users ORDER BY rank) FROM recsys.popularity WHERE model_id = :big_model) =
       (SELECT array_agg(item_id || ':' || users ORDER BY rank) FROM recsys.popularity WHERE model_id = :small_model)
       AS same_popularity;
SELECT a.users = b.users AND a.items = b.items AND a.cells = b.cells AND a.neighbor_pairs = b.neighbor_pairs
       AS same_counts
  FROM recsys_models a, recsys_models b WHERE a.model_id = :big_model AND b.model_id = :small_model;
-- K = 3 too (K = 0 would keep up to 990 neighbours per item: 12MB, refused at 1MB).
SET maintenance_work_mem = '1GB';
SELECT model_id AS big0 FROM recsys_train(neighbors => 3, source => 'events_passes') \gset
SET maintenance_work_mem = '1MB';
SET client_min_messages = warning;
SELECT model_id AS small0 FROM recsys_train(neighbors => 3, source => 'events_passes') \gset
RESET client_min_messages;
SELECT count(*) AS rows, count(*) FILTER (WHERE a.neighbor_ids = b.neighbor_ids AND a.sims = b.sims) AS identical
  FROM (SELECT * FROM recsys.neighbors WHERE model_id = :big0) a
  FULL JOIN (SELECT * FROM recsys.neighbors WHERE model_id = :small0) b USING (item_id);
-- Model settings other than 1.0's: the passes gather the weighting's and the
-- similarity's statistics and give the in-memory model too (TF-IDF with
-- shrinkage; binary RP3beta), recorded with its settings.
SET maintenance_work_mem = '1GB';
SELECT model_id AS big_tfidf FROM recsys_train(source => 'events_passes',
    settings => '{"weighting": "tfidf", "shrink": 20, "neighbors": 10}') \gset
SET maintenance_work_mem = '1MB';
SET client_min_messages = warning;
SELECT model_id AS small_tfidf FROM recsys_train(source => 'events_passes',
    settings => '{"weighting": "tfidf", "shrink": 20, "neighbors": 10}') \gset
RESET client_min_messages;
-- (At 1MB the users are read in parts, which numbers them differently: the
-- dot products are summed in another order, so these similarities agree to
-- 1e-12 rather than to the last bit, and neighbours whose similarities tie
-- to that precision may swap places.  The default weights, small integers,
-- sum exactly in any order.)
SELECT count(*) AS rows,
       count(*) FILTER (WHERE cardinality(a.sims) = cardinality(b.sims)
                          AND (SELECT bool_and(abs(x - y) <= 1e-12 * abs(x)) FROM unnest(a.sims, b.sims) u(x, y)))
         AS sims_equal_to_1e12
  FROM (SELECT * FROM recsys.neighbors WHERE model_id = :big_tfidf) a
  FULL JOIN (SELECT * FROM recsys.neighbors WHERE model_id = :small_tfidf) b USING (item_id);
SET maintenance_work_mem = '1GB';
SELECT model_id AS big_rp3 FROM recsys_train(source => 'events_passes',
    settings => '{"weighting": "binary", "similarity": "rp3beta", "alpha": 0.5, "beta": 0.3, "neighbors": 10}') \gset
SET maintenance_work_mem = '1MB';
SET client_min_messages = warning;
SELECT model_id AS small_rp3 FROM recsys_train(source => 'events_passes',
    settings => '{"weighting": "binary", "similarity": "rp3beta", "alpha": 0.5, "beta": 0.3, "neighbors": 10}') \gset
RESET client_min_messages;
SELECT count(*) AS rows,
       count(*) FILTER (WHERE cardinality(a.sims) = cardinality(b.sims)
                          AND (SELECT bool_and(abs(x - y) <= 1e-12 * abs(x)) FROM unnest(a.sims, b.sims) u(x, y)))
         AS sims_equal_to_1e12
  FROM (SELECT * FROM recsys.neighbors WHERE model_id = :big_rp3) a
  FULL JOIN (SELECT * FROM recsys.neighbors WHERE model_id = :small_rp3) b USING (item_id);
SELECT settings ->> 'similarity' AS similarity, settings ->> 'weighting' AS weighting FROM recsys_models WHERE active;
RESET maintenance_work_mem;

-- Few cells (no run spilled while reading) but over budget in memory: the
-- buffer becomes one run, and the passes give the same model again.
CREATE TABLE events_unspilled AS
  SELECT g % 3000 AS user_id, (hashint4(g) & 65535) % 1000 AS product_id, 'view'::text AS event_type,
         timestamptz '2024-01-01' + g * interval '1 minute' AS event_time
    FROM generate_series(1, 15000) g;
SET maintenance_work_mem = '1GB';
SELECT model_id AS big1 FROM recsys_train(source => 'events_unspilled') \gset
SET maintenance_work_mem = '1MB';
SELECT model_id AS small1 FROM recsys_train(source => 'events_unspilled') \gset
SELECT count(*) AS rows, count(*) FILTER (WHERE a.neighbor_ids = b.neighbor_ids AND a.sims = b.sims) AS identical
  FROM (SELECT * FROM recsys.neighbors WHERE model_id = :big1) a
  FULL JOIN (SELECT * FROM recsys.neighbors WHERE model_id = :small1) b USING (item_id);
DROP TABLE events_unspilled;

-- Below the least workable budget: refused (54000) with a hint naming that
-- budget; setting exactly the hinted value then trains.  3000 products with
-- K = 50 need more than 1MB even one item per pass (the 12 bytes per stored
-- neighbour alone are 1.8MB).  The temporary file the refused run spilled to
-- is closed: after a first refused run (which opens every relation file
-- training touches), five more leave no more descriptors open than before
-- (PostgreSQL may close relation files meanwhile, never a leaked spill file;
-- test/cancel_test.sh checks the spill files by name after cancels).
CREATE TABLE events_refused WITH (autovacuum_enabled = off) AS
  SELECT g % 5000 AS user_id, (hashint4(g) & 65535) % 3000 AS product_id, 'view'::text AS event_type,
         timestamptz '2024-01-01' + g * interval '1 minute' AS event_time
    FROM generate_series(1, 40000) g;
CREATE FUNCTION pg_temp.open_fds() RETURNS bigint LANGUAGE sql AS
  $$ SELECT count(*) FROM pg_catalog.pg_ls_dir('/proc/self/fd') $$;
SELECT model_id AS before_refused FROM recsys_models WHERE active \gset
SET maintenance_work_mem = '1MB';
SELECT * FROM recsys_train(source => 'events_refused');
\echo :LAST_ERROR_SQLSTATE
SELECT pg_temp.open_fds() AS fds_before \gset
DO $$
BEGIN
    FOR i IN 1..5 LOOP
        BEGIN
            PERFORM * FROM recsys_train(source => 'events_refused');
        EXCEPTION WHEN program_limit_exceeded THEN NULL;
        END;
    END LOOP;
END $$;
SELECT pg_temp.open_fds() <= :fds_before AS no_file_left_open;
SELECT model_id = :before_refused AS previous_model_serves FROM recsys_models WHERE active;
-- The refused run read its 40000 rows once, in one scan, however small the
-- budget (issue #9: the users' parts come from temporary files).
SELECT status, rows_read, phase FROM recsys_training_runs ORDER BY run_id DESC LIMIT 1;
-- With ANALYZE's statistics (autovacuum's, here ANALYZE's) the refusal comes
-- before the heavy reading: the statistics say the products may be too many,
-- recsys counts them (a light scan) and refuses with the same least budget,
-- having read no event into the matrix (rows_read 0 in the run log).
ANALYZE events_refused;
SELECT * FROM recsys_train(source => 'events_refused');
\echo :LAST_ERROR_SQLSTATE
SELECT status, rows_read, phase FROM recsys_training_runs ORDER BY run_id DESC LIMIT 1;
-- The same for evaluation.
SELECT * FROM recsys_evaluate(5, test_days => 1, source => 'events_refused');
\echo :LAST_ERROR_SQLSTATE
DO $$
DECLARE
    hint text;
    mb text;
BEGIN
    BEGIN
        PERFORM * FROM recsys_train(source => 'events_refused');
    EXCEPTION WHEN program_limit_exceeded THEN
        GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
    END;
    mb := substring(hint FROM 'maintenance_work_mem = ''([0-9]+MB)''');
    PERFORM set_config('maintenance_work_mem', mb, false);
    RAISE NOTICE 'hinted: %', mb;
END $$;
SET client_min_messages = warning;
SELECT items, neighbor_pairs > 0 AS trained FROM recsys_train(source => 'events_refused');
RESET client_min_messages;
-- One MB less is refused again: the hint is the least budget in whole MB.
SELECT (pg_catalog.current_setting('maintenance_work_mem')::text ~ '^[0-9]+MB$') AS in_mb;
SELECT set_config('maintenance_work_mem',
                  (pg_catalog.regexp_replace(pg_catalog.current_setting('maintenance_work_mem'), 'MB$', '')::int - 1) || 'MB',
                  false) IS NOT NULL AS lowered;
SELECT * FROM recsys_train(source => 'events_refused');
\echo :LAST_ERROR_SQLSTATE

RESET maintenance_work_mem;
DROP TABLE events_passes, events_refused;
