-- Reading on two threads (issue #9): with max_parallel_maintenance_workers
-- > 0 and a log of at least 100k rows (ANALYZE's count), the scan runs on
-- the backend and the summing on a second thread.  The model, the
-- evaluation and the errors must be those of one thread, bit for bit
-- (max_parallel_maintenance_workers = 0).  (DEBUG1 says which way a read
-- went; its lines carry timings, so they are not shown here.)
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE SCHEMA pipe;
RESET client_min_messages;
-- 150k events: text users, integer items, four event types, a value.
CREATE TABLE pipe.ev (uid text, iid int, kind text, ts timestamptz, v float8);
INSERT INTO pipe.ev
SELECT 'u' || (g * 7919 % 12007), 1 + (g * 31 + (g / 7) * (g / 7)) % 1499,
       (ARRAY['view', 'view', 'add_to_cart', 'purchase'])[1 + (g * 13) % 4],
       timestamptz '2026-01-01' + make_interval(secs => (g::bigint * 104729) % 15552000), 1 + g % 3
  FROM generate_series(1, 150000) g;
ANALYZE pipe.ev;
SELECT user_type, item_type FROM recsys_set_source('pipe.ev', 'uid', 'iid', 'kind', 'ts', 'v');
SET maintenance_work_mem = '64MB';
CREATE TEMP TABLE pipe_models (workers int, users bigint, items bigint, nb text);
CREATE FUNCTION pg_temp.model_md5() RETURNS text LANGUAGE sql AS $$
  SELECT md5(string_agg(nb.item_id || ':' || nb.neighbor_ids::text || ':' || nb.sims::text, ',' ORDER BY nb.item_id))
    FROM recsys.neighbors nb JOIN recsys.active_model a USING (model_id) $$;
SET max_parallel_maintenance_workers = 0;
INSERT INTO pipe_models SELECT 0, users, items, pg_temp.model_md5() FROM recsys_train();
SET max_parallel_maintenance_workers = 2;
INSERT INTO pipe_models SELECT 2, users, items, pg_temp.model_md5() FROM recsys_train();
SELECT workers, users, items, nb = (SELECT nb FROM pipe_models WHERE workers = 0) AS same_model
  FROM pipe_models ORDER BY workers;
-- Training in memory stores the model while its similarity pass runs on a
-- second thread (recsys::SteppedTraining).  A trigger a DBA put on
-- recsys.neighbors sends its rows through the executor instead (the pass is
-- finished first): the same model, every row seen by the trigger.
CREATE TABLE pipe.nbr_audit (item_id int);
CREATE FUNCTION pipe.audit_nbr() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO pipe.nbr_audit VALUES (NEW.item_id);
  RETURN NEW;
END $$;
CREATE TRIGGER audit AFTER INSERT ON recsys.neighbors FOR EACH ROW EXECUTE FUNCTION pipe.audit_nbr();
INSERT INTO pipe_models SELECT 3, users, items, pg_temp.model_md5() FROM recsys_train();
DROP TRIGGER audit ON recsys.neighbors;
SELECT nb = (SELECT nb FROM pipe_models WHERE workers = 0) AS same_model_through_trigger,
       (SELECT count(*) FROM pipe.nbr_audit) =
       (SELECT count(*) FROM recsys.neighbors JOIN recsys.active_model USING (model_id)) AS every_row_seen
  FROM pipe_models WHERE workers = 3;
-- An error while the pass runs on its second thread (here from a trigger on
-- recsys.popularity, written first): the training fails with it, the thread
-- is stopped with the transaction, and the model before stays active.
CREATE FUNCTION pipe.no_popularity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'no popularity today';
END $$;
CREATE TRIGGER refuse BEFORE INSERT ON recsys.popularity FOR EACH ROW EXECUTE FUNCTION pipe.no_popularity();
SELECT model_id AS model_before FROM recsys.active_model \gset
SELECT users FROM recsys_train();
DROP TRIGGER refuse ON recsys.popularity;
SELECT model_id = :model_before AS model_before_active FROM recsys.active_model;
SELECT count(*) > 0 AS recommends FROM recsys_recommend(ARRAY['u1', 'u2']::text[], 5);
-- Evaluation (one scan finding the cutoff): the same row.
CREATE TEMP TABLE pipe_eval AS
SELECT 0 AS workers, e.* FROM recsys_evaluate(10, settings => NULL) e WHERE false;
SET max_parallel_maintenance_workers = 0;
INSERT INTO pipe_eval SELECT 0, e.* FROM recsys_evaluate(10) e;
SET max_parallel_maintenance_workers = 2;
INSERT INTO pipe_eval SELECT 2, e.* FROM recsys_evaluate(10) e;
SELECT count(*) AS evaluations, count(DISTINCT (users_evaluated, users_without_history, precision, precision_lo,
                                                 precision_hi)) AS distinct_rows
  FROM pipe_eval;
-- A plain table is read with its columns listed in their places, so the
-- scan hands its own slot over (no projection), and a row without NULLs is
-- read straight from its heap tuple (issue #9).  The same events in a table
-- whose columns are in another order, among columns recsys does not read,
-- with a varchar event type, NULL values in some rows and NULLs in a column
-- after the mapped ones in others (those rows go through the slot): the
-- same model and evaluation as through a view of it (a projection of the
-- five mapped columns, as any view), and after a column is dropped (the
-- query of the five columns).
CREATE TABLE pipe.shuffled (note text, v float8, ts timestamptz, pad int, kind varchar(20), iid int, uid text,
                            tail text);
INSERT INTO pipe.shuffled
SELECT 'n' || iid % 5, CASE WHEN iid % 97 = 0 THEN NULL ELSE v END, ts, iid * 3, kind, iid, uid,
       CASE WHEN iid % 2 = 0 THEN repeat('x', iid % 50) END
  FROM pipe.ev;
CREATE VIEW pipe.shuffled_v AS SELECT uid, iid, kind, ts, v FROM pipe.shuffled;
CREATE TEMP TABLE pipe_place (src text, users bigint, items bigint, nb text);
SELECT user_type, item_type FROM recsys_set_source('pipe.shuffled', 'uid', 'iid', 'kind', 'ts', 'v');
INSERT INTO pipe_place SELECT 'table', users, items, pg_temp.model_md5() FROM recsys_train();
CREATE TEMP TABLE pipe_place_eval AS SELECT 'table' AS src, e.* FROM recsys_evaluate(10) e;
SELECT user_type, item_type FROM recsys_set_source('pipe.shuffled_v', 'uid', 'iid', 'kind', 'ts', 'v');
INSERT INTO pipe_place SELECT 'view', users, items, pg_temp.model_md5() FROM recsys_train();
INSERT INTO pipe_place_eval SELECT 'view', e.* FROM recsys_evaluate(10) e;
ALTER TABLE pipe.shuffled DROP COLUMN note;
SELECT user_type, item_type FROM recsys_set_source('pipe.shuffled', 'uid', 'iid', 'kind', 'ts', 'v');
INSERT INTO pipe_place SELECT 'dropped column', users, items, pg_temp.model_md5() FROM recsys_train();
-- A partitioned table whose partitions differ: one as the parent, one with
-- its columns in another order and a dropped column (its rows come through
-- a projection, the other's in place).
CREATE TABLE pipe.parted (uid text, iid int, kind varchar(20), ts timestamptz, v float8) PARTITION BY RANGE (iid);
CREATE TABLE pipe.parted_lo PARTITION OF pipe.parted FOR VALUES FROM (MINVALUE) TO (700);
CREATE TABLE pipe.parted_hi (junk int, v float8, ts timestamptz, kind varchar(20), iid int, uid text);
ALTER TABLE pipe.parted_hi DROP COLUMN junk;
ALTER TABLE pipe.parted ATTACH PARTITION pipe.parted_hi FOR VALUES FROM (700) TO (MAXVALUE);
INSERT INTO pipe.parted SELECT uid, iid, kind, ts, v FROM pipe.shuffled;
SELECT user_type, item_type FROM recsys_set_source('pipe.parted', 'uid', 'iid', 'kind', 'ts', 'v');
INSERT INTO pipe_place SELECT 'partitioned', users, items, pg_temp.model_md5() FROM recsys_train();
SELECT src, users, items, nb = (SELECT nb FROM pipe_place WHERE src = 'view') AS same_model,
       nb = (SELECT nb FROM pipe_models WHERE workers = 0) AS as_pipe_ev
  FROM pipe_place ORDER BY src;
SELECT count(*) AS evaluations, count(DISTINCT (users_evaluated, users_without_history, precision, precision_lo,
                                                 precision_hi, recall, ndcg, model_items)) AS distinct_rows
  FROM pipe_place_eval;
SELECT user_type, item_type FROM recsys_set_source('pipe.ev', 'uid', 'iid', 'kind', 'ts', 'v');
-- A value that is not finite, in the middle of the log: the same error
-- (the same user and item) either way.
UPDATE pipe.ev SET v = 'Infinity' WHERE ctid = (SELECT ctid FROM pipe.ev WHERE kind = 'purchase' OFFSET 20000 LIMIT 1);
SET max_parallel_maintenance_workers = 0;
SELECT users FROM recsys_train();
\echo :LAST_ERROR_SQLSTATE
SET max_parallel_maintenance_workers = 2;
SELECT users FROM recsys_train();
\echo :LAST_ERROR_SQLSTATE
RESET max_parallel_maintenance_workers;
RESET maintenance_work_mem;
-- Back to the default source.
SELECT user_type, item_type FROM recsys_set_source('public.interactions', 'user_id', 'product_id', 'event_type',
                                                   'event_time');
DROP SCHEMA pipe CASCADE;
