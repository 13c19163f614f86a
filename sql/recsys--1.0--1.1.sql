-- recsys 1.0 -> 1.1: ALTER EXTENSION recsys UPDATE TO '1.1'.
\echo Use "ALTER EXTENSION recsys UPDATE TO '1.1'" to load this file. \quit

-- Every change to the SQL surface made in recsys--1.1.sql is made here too,
-- one section per change, in the order of the install script.  The upgrade
-- test (test/upgrade_test.sh) compares the catalog an update leaves with the
-- one a fresh 1.1 install leaves, so a change made in one file only fails CI.

-- Models record their settings.  A 1.0 model's settings were not recorded:
-- the upgrade fills in the configuration as it stands, marked as such.
ALTER TABLE recsys.models ADD COLUMN settings jsonb NOT NULL DEFAULT '{}';

CREATE FUNCTION recsys.settings_snapshot(rel regclass, neighbors integer) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.jsonb_build_object(
        'source', recsys.qualified_name(rel),
        'neighbors', neighbors,
        'weights', (SELECT COALESCE(pg_catalog.jsonb_object_agg(w.event_type, w.weight), '{}')
                      FROM recsys.event_weights w),
        'similarity_method', pg_catalog.current_setting('recsys.similarity_method', true))
$$;

UPDATE recsys.models m
   SET settings = pg_catalog.jsonb_build_object(
           'source', m.source_relation, 'neighbors', m.neighbors,
           'weights', (SELECT COALESCE(pg_catalog.jsonb_object_agg(w.event_type, w.weight), '{}')
                         FROM recsys.event_weights w),
           'recorded_at_upgrade', true);

-- Training-runs log and progress: the run-log table and its views, the
-- background-worker writer, the progress record.  recsys_train() and
-- recsys_evaluate() call recsys.run_begin/run_end (their new bodies are in
-- recsys--1.1.sql).  The restore trigger also carries the new column
-- config.run_log_days.
CREATE OR REPLACE FUNCTION recsys.upsert_on_restore() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'event_weights' THEN
        UPDATE recsys.event_weights SET weight = NEW.weight WHERE event_type = NEW.event_type;
    ELSE
        UPDATE recsys.config SET source_relation = NEW.source_relation,
               neighbors = NEW.neighbors, keep_models = NEW.keep_models,
               run_log_days = NEW.run_log_days
         WHERE singleton = NEW.singleton;
    END IF;
    IF FOUND THEN
        RETURN NULL;   -- the existing row now holds the new values
    END IF;
    RETURN NEW;
END $$;
-- How many days of finished runs the log keeps (the worker deletes older ones).
ALTER TABLE recsys.config ADD COLUMN run_log_days integer NOT NULL DEFAULT 30
    CHECK (run_log_days BETWEEN 1 AND 36500);

CREATE SEQUENCE recsys.training_run_id_seq;
CREATE TABLE recsys.training_runs (
    run_id bigint PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('train', 'evaluate')),
    -- As recorded; the view derives 'terminated' and 'rolled back'.
    status text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled', 'rolled back')),
    model_id bigint,
    started_at timestamptz NOT NULL,
    finished_at timestamptz,
    phase text,
    rows_read bigint,
    items_done bigint,
    items_total bigint,
    sqlstate text,
    error text,
    settings jsonb,
    username name,
    pid integer,
    backend_start timestamptz,   -- with pid: which backend ran it
    xid xid8                     -- a succeeded run's transaction, until known committed or aborted
);
CREATE INDEX training_runs_started_at ON recsys.training_runs (started_at);
COMMENT ON TABLE recsys.training_runs IS
    'one row per training or evaluation, written outside the caller''s transaction; read recsys_training_runs';
-- Kept by pg_dump with the sequence, so run ids go on after a restore.
SELECT pg_catalog.pg_extension_config_dump('recsys.training_runs', '');
SELECT pg_catalog.pg_extension_config_dump('recsys.training_run_id_seq', '');

-- Upserts one row of recsys.training_runs (given as jsonb) from a background
-- worker, waiting for it; final = false inserts a start row unless the run is
-- already there.  With no free worker slot the row is written in the
-- caller's transaction, with a WARNING.  Takes values only, never SQL text.
CREATE FUNCTION recsys.run_log_write(entry jsonb, final boolean) RETURNS boolean
AS 'MODULE_PATHNAME', 'recsys_run_log_write' LANGUAGE C VOLATILE STRICT;

-- This backend's progress record: claimed by progress_start, advanced by the
-- C code (rows read, items done) and by progress_phase, released by
-- progress_stop or at transaction end.  Shared with other sessions only with
-- shared_preload_libraries = 'recsys'.
CREATE FUNCTION recsys.progress_start(run_id bigint, kind text) RETURNS void
AS 'MODULE_PATHNAME', 'recsys_progress_start' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION recsys.progress_phase(phase text, rel regclass DEFAULT NULL) RETURNS void
AS 'MODULE_PATHNAME', 'recsys_progress_phase' LANGUAGE C VOLATILE;
CREATE FUNCTION recsys.progress_stop() RETURNS void
AS 'MODULE_PATHNAME', 'recsys_progress_stop' LANGUAGE C VOLATILE;
CREATE FUNCTION recsys.progress_local(OUT phase text, OUT rows_read bigint,
                                      OUT items_done bigint, OUT items_total bigint)
RETURNS record AS 'MODULE_PATHNAME', 'recsys_progress_local' LANGUAGE C VOLATILE;
-- Every backend's progress record (no rows without shared_preload_libraries).
CREATE FUNCTION recsys.progress_slots(OUT pid integer, OUT run_id bigint, OUT kind text, OUT phase text,
                                      OUT relid oid, OUT rows_read bigint, OUT items_done bigint,
                                      OUT items_total bigint, OUT started_at timestamptz)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'recsys_progress_slots' LANGUAGE C VOLATILE;

-- Whether the backend that started a run is still that backend.  SECURITY
-- DEFINER so that the view sees other roles' backend_start (pg_stat_activity
-- hides it); it reveals a boolean only.
CREATE FUNCTION recsys.backend_alive(pid integer, started timestamptz) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_get_activity(pid) a
                    WHERE a.backend_start OPERATOR(pg_catalog.=) started)
$$;

-- pg_xact_status(), or NULL where it cannot tell (an xid from before a
-- dump and restore may lie in this cluster's future).
CREATE FUNCTION recsys.xact_state(x xid8) RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN pg_catalog.pg_xact_status(x);
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END $$;

-- A run's start: claims the progress record and logs a 'running' row.
CREATE FUNCTION recsys.run_begin(run_id bigint, kind text, started timestamptz) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM recsys.progress_start(run_id, kind);
    PERFORM recsys.run_log_write(pg_catalog.jsonb_build_object(
        'run_id', run_id, 'kind', kind, 'status', 'running', 'started_at', started,
        'phase', 'starting', 'username', pg_catalog.session_user(), 'pid', pg_catalog.pg_backend_pid(),
        'backend_start', (SELECT a.backend_start FROM pg_catalog.pg_stat_get_activity(pg_catalog.pg_backend_pid()) a)),
        false);
END $$;

-- A run's end: logs the outcome with the phase reached and the counters, and
-- releases the progress record.  sqlstate NULL means success; a success
-- records the transaction id, so that the view can tell a later rollback.
CREATE FUNCTION recsys.run_end(run_id bigint, kind text, started timestamptz, model_id bigint,
                               sqlstate text, error text, settings jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    p record;
BEGIN
    p := recsys.progress_local();
    PERFORM recsys.progress_stop();
    PERFORM recsys.run_log_write(pg_catalog.jsonb_build_object(
        'run_id', run_id, 'kind', kind,
        'status', CASE WHEN sqlstate IS NULL THEN 'succeeded'
                       WHEN sqlstate OPERATOR(pg_catalog.=) '57014' THEN 'cancelled' ELSE 'failed' END,
        'model_id', model_id, 'started_at', started, 'finished_at', pg_catalog.clock_timestamp(),
        'phase', CASE WHEN sqlstate IS NULL THEN 'done' ELSE p.phase END,
        'rows_read', p.rows_read, 'items_done', p.items_done, 'items_total', p.items_total,
        'sqlstate', sqlstate, 'error', error, 'settings', settings,
        'username', pg_catalog.session_user(), 'pid', pg_catalog.pg_backend_pid(),
        'backend_start', (SELECT a.backend_start FROM pg_catalog.pg_stat_get_activity(pg_catalog.pg_backend_pid()) a),
        'xid', CASE WHEN sqlstate IS NULL THEN pg_catalog.pg_current_xact_id() END),
        true);
END $$;

-- The writers are internal: only the extension's own functions call them.
REVOKE EXECUTE ON FUNCTION recsys.run_log_write(jsonb, boolean), recsys.progress_start(bigint, text),
    recsys.progress_phase(text, regclass), recsys.progress_stop(), recsys.progress_local(),
    recsys.run_begin(bigint, text, timestamptz),
    recsys.run_end(bigint, text, timestamptz, bigint, text, text, jsonb) FROM PUBLIC;

CREATE VIEW @extschema@.recsys_training_runs AS
    SELECT r.run_id, r.kind, s.status, r.model_id, r.started_at, r.finished_at,
           pg_catalog.date_part('epoch', coalesce(r.finished_at,
               CASE WHEN s.status OPERATOR(pg_catalog.=) 'running' THEN pg_catalog.clock_timestamp() END)
               OPERATOR(pg_catalog.-) r.started_at) AS seconds,
           CASE WHEN s.status OPERATOR(pg_catalog.=) 'running' AND r.status OPERATOR(pg_catalog.=) 'succeeded'
                THEN 'awaiting commit' ELSE r.phase END AS phase,
           r.rows_read, r.sqlstate, r.error, r.settings, r.username, r.pid,
           r.items_done, r.items_total, r.backend_start
      FROM recsys.training_runs r,
           LATERAL (SELECT CASE
               WHEN r.status OPERATOR(pg_catalog.=) 'running' THEN
                   CASE WHEN recsys.backend_alive(r.pid, r.backend_start) THEN 'running' ELSE 'terminated' END
               WHEN r.status OPERATOR(pg_catalog.=) 'succeeded' AND r.xid IS NOT NULL THEN
                   CASE recsys.xact_state(r.xid) WHEN 'aborted' THEN 'rolled back'
                                                 WHEN 'in progress' THEN 'running' ELSE 'succeeded' END
               ELSE r.status END AS status) s
     ORDER BY r.run_id DESC;
COMMENT ON VIEW @extschema@.recsys_training_runs IS
    'every training and evaluation, also failed, cancelled, terminated and rolled-back ones';

-- Runs in progress: the live counters with shared_preload_libraries =
-- 'recsys', else the run log's running rows (counters NULL).
CREATE VIEW @extschema@.recsys_progress AS
    SELECT coalesce(p.pid, l.pid) AS pid, run_id,
           coalesce(p.kind, l.kind) AS kind, coalesce(p.phase, l.phase) AS phase,
           p.rows_read,
           (SELECT CASE WHEN c.reltuples OPERATOR(pg_catalog.>=) 0 THEN c.reltuples::bigint END
              FROM pg_catalog.pg_class c
             WHERE c.oid OPERATOR(pg_catalog.=) coalesce(p.relid,
                       pg_catalog.to_regclass(l.settings OPERATOR(pg_catalog.->>) 'source'))) AS rows_estimate,
           p.items_done, p.items_total,
           coalesce(p.started_at, l.started_at) AS started_at,
           pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()
               OPERATOR(pg_catalog.-) coalesce(p.started_at, l.started_at)) AS seconds
      FROM recsys.progress_slots() p
           FULL JOIN (SELECT t.run_id, t.pid, t.kind, t.phase, t.settings, t.started_at
                        FROM @extschema@.recsys_training_runs t
                       WHERE t.status OPERATOR(pg_catalog.=) 'running' AND t.finished_at IS NULL) l USING (run_id)
     ORDER BY run_id;
COMMENT ON VIEW @extschema@.recsys_progress IS
    'trainings and evaluations running now: phase, rows read, items done (live with shared_preload_libraries = ''recsys'')';
