-- The training-runs log (recsys_training_runs): every training and
-- evaluation, also failed, cancelled and rolled-back ones, written outside
-- the caller's transaction; and the progress view once nothing runs.
\set SHOW_CONTEXT never
SELECT coalesce(max(run_id), 0) AS last_run FROM recsys_training_runs \gset
CREATE TABLE runs_events (user_id int, product_id int, event_type text, event_time timestamptz);
-- 7 rows: 6 usable on items 10, 11, 12; one of an unweighted type.
INSERT INTO runs_events VALUES
    (1, 10, 'view', '2024-01-01'), (1, 11, 'click', '2024-01-02'), (2, 10, 'view', '2024-01-01'),
    (2, 12, 'purchase', '2024-01-03'), (3, 11, 'view', '2024-01-02'), (3, 12, 'view', '2024-01-04'),
    (3, 13, 'unweighted', '2024-01-04');

-- A successful run: the model it made, every source row read, every item
-- done, the settings it used, who and where.
SELECT model_id AS m1 FROM recsys_train(neighbors => 5, source => 'runs_events') \gset
SELECT kind, status, model_id = :m1 AS its_model, phase, rows_read, items_done, items_total,
       sqlstate, error, settings->>'source' AS source, settings->'neighbors' AS neighbors,
       settings->'weights'->'purchase' AS purchase_weight,
       username = session_user AS who, pid = pg_backend_pid() AS here,
       finished_at >= started_at AS ordered, seconds >= 0 AS timed
  FROM recsys_training_runs WHERE run_id > :last_run;

-- A successful training whose transaction rolls back: 'running' (awaiting
-- commit) inside it, 'rolled back' after.
BEGIN;
SELECT model_id AS m2 FROM recsys_train(source => 'runs_events') \gset
SELECT status, phase FROM recsys_training_runs WHERE model_id = :m2;
ROLLBACK;
SELECT kind, status, phase, rows_read, sqlstate FROM recsys_training_runs WHERE model_id = :m2;
SELECT model_id = :m1 AS first_still_active FROM recsys_models WHERE active;

-- Failed runs stay visible after the error, with SQLSTATE, message and the
-- phase they reached; the previous model keeps serving.
CREATE TABLE runs_empty (LIKE runs_events);
INSERT INTO runs_empty VALUES (1, 10, 'unweighted', '2024-01-01'), (NULL, 10, 'view', '2024-01-01');
SELECT * FROM recsys_train(source => 'runs_empty');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_train(source => 'no_such_relation');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_evaluate(k => 0, source => 'runs_events');
\echo :LAST_ERROR_SQLSTATE
SELECT kind, status, model_id, phase, rows_read, sqlstate, error, settings->>'source' AS source,
       finished_at IS NOT NULL AS finished
  FROM recsys_training_runs WHERE run_id > :last_run AND status = 'failed' ORDER BY run_id;
SELECT model_id = :m1 AS first_still_active FROM recsys_models WHERE active;

-- A successful evaluation: logged as 'evaluate', no model.  The cutoff is a
-- day before the last event: 2024-01-03.  One scan reads the 7 rows: the 4
-- usable ones before it, the 2 test touches from it on, (2,12) and (3,12),
-- and the unweighted one; it scores both users.
SELECT users_evaluated FROM recsys_evaluate(k => 2, test_days => 1, source => 'runs_events');
SELECT kind, status, model_id, phase, rows_read, items_done, items_total, sqlstate
  FROM recsys_training_runs WHERE run_id > :last_run AND kind = 'evaluate' AND status = 'succeeded';

-- A run cancelled by statement_timeout: 'cancelled' with 57014.  300k
-- events keep it busy well past the timeout.
CREATE TABLE runs_big AS
  SELECT (g % 20000) AS user_id, ((g::bigint * 7919) % 3000)::int AS product_id, 'view'::text AS event_type,
         timestamptz '2024-01-01' + g * interval '1 second' AS event_time
    FROM generate_series(1, 300000) g;
SET statement_timeout = '30ms';
SELECT * FROM recsys_train(source => 'runs_big', neighbors => 0);
\echo :LAST_ERROR_SQLSTATE
RESET statement_timeout;
SELECT kind, status, model_id, sqlstate, error, phase IS NOT NULL AS has_phase, finished_at IS NOT NULL AS finished
  FROM recsys_training_runs WHERE run_id > :last_run AND status = 'cancelled';
SELECT model_id = :m1 AS first_still_active FROM recsys_models WHERE active;

-- Every run of this file, in order.
SELECT kind, status FROM recsys_training_runs WHERE run_id > :last_run ORDER BY run_id;

-- Nothing runs now: no progress row for this session.
SELECT count(*) AS progress_rows FROM recsys_progress WHERE pid = pg_backend_pid();

-- Retention: finished runs older than config.run_log_days go when a run ends.
SELECT run_log_days FROM recsys.config;
UPDATE recsys.training_runs SET started_at = started_at - interval '3 days', finished_at = finished_at - interval '3 days'
 WHERE run_id = :last_run + 1;
UPDATE recsys.config SET run_log_days = 2;
SELECT count(*) AS old_runs FROM recsys_training_runs WHERE run_id = :last_run + 1;
SELECT model_id AS m3 FROM recsys_train(source => 'runs_events') \gset
SELECT count(*) AS old_runs FROM recsys_training_runs WHERE run_id = :last_run + 1;
SELECT count(*) AS recent_runs FROM recsys_training_runs WHERE run_id > :last_run + 1;
UPDATE recsys.config SET run_log_days = DEFAULT;

-- The log is not writable through the view, and its writer is internal.
SELECT has_function_privilege('public', 'recsys.run_log_write(jsonb, boolean)', 'EXECUTE') AS public_can_write;

DROP TABLE runs_events, runs_empty, runs_big;
