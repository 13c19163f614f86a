-- recsys 1.0 -> 1.1: ALTER EXTENSION recsys UPDATE TO '1.1'.
\echo Use "ALTER EXTENSION recsys UPDATE TO '1.1'" to load this file. \quit

-- Every change to the SQL surface made in recsys--1.1.sql is made here too,
-- one section per change, in the order of the install script.  The upgrade
-- test (test/upgrade_test.sh) compares the catalog an update leaves with the
-- one a fresh 1.1 install leaves, so a change made in one file only fails CI.

-- Like the install script, this one resolves no name through the caller's
-- search_path (SET LOCAL: restored when the update ends).
SET LOCAL search_path = pg_catalog, pg_temp;

-- Models record their settings.  A 1.0 model's settings were not recorded:
-- the upgrade fills in the configuration as it stands, marked as such.
ALTER TABLE recsys.models ADD COLUMN settings jsonb NOT NULL DEFAULT '{}';

-- The mapping part of a training's settings (issue #7): the columns of
-- recsys.config, the id types of the serving functions (the model's ids are
-- of these types) and the half-life.  rel is the relation they apply to
-- (recsys.check_source checks them against it).  Never raises: the run log
-- records it after failures too.
CREATE FUNCTION recsys.source_settings(rel regclass) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    cfg recsys.config;
BEGIN
    SELECT * INTO cfg FROM recsys.config;
    RETURN pg_catalog.jsonb_build_object(
        'user_column', cfg.user_column, 'item_column', cfg.item_column, 'event_column', cfg.event_column,
        'time_column', cfg.time_column, 'value_column', cfg.value_column,
        'user_type', cfg.user_type, 'item_type', cfg.item_type, 'half_life_days', cfg.half_life_days);
END $$;

CREATE FUNCTION recsys.settings_snapshot(rel regclass, neighbors integer) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.jsonb_build_object(
        'source', recsys.qualified_name(rel),
        'neighbors', neighbors,
        'weights', (SELECT COALESCE(pg_catalog.jsonb_object_agg(w.event_type, w.weight), '{}')
                      FROM recsys.event_weights w),
        'similarity_method', pg_catalog.current_setting('recsys.similarity_method', true))
        OPERATOR(pg_catalog.||) recsys.source_settings(rel)
$$;

UPDATE recsys.models m
   SET settings = pg_catalog.jsonb_build_object(
           'source', m.source_relation, 'neighbors', m.neighbors,
           'weights', (SELECT COALESCE(pg_catalog.jsonb_object_agg(w.event_type, w.weight), '{}')
                         FROM recsys.event_weights w),
           'recorded_at_upgrade', true);

------------------------------------------------------------------------------
-- Model lifecycle: recsys_activate, recsys_pin, retention that keeps
-- pinned models, the models' settings in recsys_models, model ids never
-- reused, evaluations in dumps.

-- Pinned models.  Added after settings, as in recsys--1.1.sql: recsys_train
-- inserts into recsys.models by position.
ALTER TABLE recsys.models ADD COLUMN pinned boolean NOT NULL DEFAULT false;

-- Model ids: 1.0 counted from 1, so a DROP and CREATE EXTENSION reused them.
-- From here on they continue from the clock in microseconds, as a fresh
-- install starts (never below an id already handed out).
SELECT pg_catalog.setval('recsys.model_id_seq',
    GREATEST(pg_catalog.trunc(EXTRACT(epoch FROM pg_catalog.clock_timestamp()) * 1000000)::bigint,
             (SELECT s.last_value + 1 FROM recsys.model_id_seq s)), false);

-- Evaluations are dumped by pg_dump from now on.
SELECT pg_catalog.pg_extension_config_dump('recsys.evaluations', '');
SELECT pg_catalog.pg_extension_config_dump('recsys.evaluations_evaluation_id_seq', '');

-- Training within maintenance_work_mem in passes: the plan it follows.
-- How training a matrix of this shape proceeds within budget_kb kilobytes
-- (NULL: maintenance_work_mem): in memory (passes = 0), in passes over the
-- matrix spilled to disk, or refused (passes NULL); docs/operations.md.
CREATE FUNCTION recsys.train_plan(cells bigint, users bigint, items bigint, neighbors integer DEFAULT 50,
                                  budget_kb bigint DEFAULT NULL,
                                  OUT in_memory bigint, OUT minimum bigint, OUT passes bigint,
                                  OUT items_per_pass bigint)
RETURNS record AS 'MODULE_PATHNAME', 'recsys_train_plan' LANGUAGE C STABLE PARALLEL SAFE;

-- 1.0 bound the weights CHECK constraint's operators through the
-- installer's search_path: bind them again, to pg_catalog's.  Weights may be
-- negative from 1.1 on (refunds, dislikes: issue #7).
ALTER TABLE recsys.event_weights DROP CONSTRAINT event_weights_weight_check;
ALTER TABLE recsys.event_weights ADD CONSTRAINT event_weights_weight_check
    CHECK (weight > '-Infinity'::double precision AND weight < 'Infinity'::double precision);
COMMENT ON TABLE recsys.event_weights IS
    'weight of each event type in w(u,i), negative for refunds or dislikes; types not listed, or with weight 0, add nothing';

-- One reading path in C (src/pg_source.cpp): no function builds or takes
-- SQL text any more, and the events relation is read as its owner.
DROP FUNCTION recsys.train_store(bigint, text, integer);
CREATE FUNCTION recsys.train_store(model_id bigint, source regclass, neighbors integer, settings jsonb,
                                   OUT users bigint, OUT items bigint, OUT cells bigint, OUT pairs bigint,
                                   OUT events bigint, OUT ignored_null bigint, OUT ignored_type bigint)
RETURNS record AS 'MODULE_PATHNAME', 'recsys_train_store' LANGUAGE C VOLATILE;

DROP FUNCTION recsys.evaluate_core(text, text, integer, integer);
CREATE FUNCTION recsys.evaluate_core(source regclass, settings jsonb, test_days integer, k integer,
                                     neighbors integer, count_repeats boolean,
                                     OUT users_evaluated bigint, OUT "precision" double precision,
                                     OUT recall double precision, OUT ndcg double precision,
                                     OUT hit_rate double precision, OUT map double precision,
                                     OUT coverage double precision, OUT pop_precision double precision,
                                     OUT pop_recall double precision, OUT model_items bigint,
                                     OUT cutoff timestamptz, OUT users_without_history bigint,
                                     OUT precision_lo double precision, OUT precision_hi double precision,
                                     OUT recall_lo double precision, OUT recall_hi double precision,
                                     OUT ndcg_lo double precision, OUT ndcg_hi double precision)
RETURNS record AS 'MODULE_PATHNAME', 'recsys_evaluate_core' LANGUAGE C VOLATILE;

-- The serving functions are C, and call no internals (which PUBLIC can no
-- longer execute).
CREATE OR REPLACE FUNCTION @extschema@.recsys_similar_items(product_id integer, top_n integer DEFAULT 10)
RETURNS TABLE (product_id integer, similarity double precision, rank integer)
AS 'MODULE_PATHNAME', 'recsys_similar_items' LANGUAGE C STABLE;
CREATE OR REPLACE FUNCTION @extschema@.recsys_user_history(user_id integer, max_items integer DEFAULT 20)
RETURNS TABLE (product_id integer, weight double precision, last_event timestamptz)
AS 'MODULE_PATHNAME', 'recsys_user_history' LANGUAGE C STABLE;

DROP VIEW @extschema@.recsys_user_item_matrix;
DROP FUNCTION recsys.user_item_matrix();
CREATE FUNCTION @extschema@.recsys_user_item_matrix()
RETURNS TABLE (user_id integer, product_id integer, weight double precision, events bigint)
AS 'MODULE_PATHNAME', 'recsys_user_item_matrix' LANGUAGE C STABLE;
CREATE VIEW @extschema@.recsys_user_item_matrix AS SELECT * FROM @extschema@.recsys_user_item_matrix();

DROP FUNCTION recsys.similar_items(integer, integer);
DROP FUNCTION recsys.check_id_and_limit(integer, text, integer, text);
DROP FUNCTION recsys.active();
DROP FUNCTION recsys.events_sql(regclass, text);
DROP FUNCTION recsys.matrix_sql(regclass, text);

-- Model lifecycle: rollback to a kept model, pinning, retention.
-- recsys_activate and recsys_pin take training's SHARE ROW EXCLUSIVE lock on
-- recsys.active_model, so they serialise with training (whose retention
-- cannot drop a model between their check and their change) while readers,
-- which take no conflicting lock, see the old state or the new one at commit.

-- A kept model by id; errors say what is wrong and where to look.
CREATE FUNCTION recsys.kept_model(id bigint) RETURNS recsys.models
LANGUAGE plpgsql STABLE AS $$
DECLARE
    m recsys.models;
BEGIN
    IF id IS NULL THEN
        RAISE EXCEPTION 'model_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO m FROM recsys.models mo WHERE mo.model_id = id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'recsys model % does not exist', id
            USING ERRCODE = 'undefined_object',
                  DETAIL = 'It was never trained, or retention dropped it (recsys.config.keep_models).',
                  HINT = 'SELECT model_id, created_at, active, pinned FROM recsys_models lists the kept models.';
    END IF;
    RETURN m;
END $$;

-- Retention: drops every model but the newest `keep` models that are not
-- pinned, the pinned ones and the active one; returns the ids dropped.
-- Callers hold the lock above.
CREATE FUNCTION recsys.drop_old_models(keep integer) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    dropped bigint[];
    seqscan text;
BEGIN
    WITH gone AS (
        DELETE FROM recsys.models m
         WHERE m.model_id IN (SELECT k.model_id FROM recsys.models k WHERE NOT k.pinned
                               ORDER BY k.model_id DESC OFFSET keep)
           AND NOT EXISTS (SELECT 1 FROM recsys.active_model a WHERE a.model_id = m.model_id)
        RETURNING m.model_id)
    SELECT pg_catalog.array_agg(g.model_id) INTO dropped FROM gone g;
    IF dropped IS NOT NULL THEN
        -- The dropped models' rows through the primary keys: the planner's
        -- sequential scan reads every kept model's rows too, at 2-3x the CPU
        -- (docs/benchmarks.md, "Training's fixed costs").  For these two
        -- statements only.
        seqscan := pg_catalog.current_setting('enable_seqscan');
        PERFORM pg_catalog.set_config('enable_seqscan', 'off', true);
        DELETE FROM recsys.neighbors nb WHERE nb.model_id = ANY (dropped);
        DELETE FROM recsys.popularity p WHERE p.model_id = ANY (dropped);
        PERFORM pg_catalog.set_config('enable_seqscan', seqscan, true);
    END IF;
    RETURN dropped;
END $$;

-- recsys_activate's body (the public function below only renames).
CREATE FUNCTION recsys.activate(id bigint)
RETURNS TABLE (model_id bigint, previous_model_id bigint, created_at timestamptz,
               source_relation text, settings jsonb)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    m recsys.models;
    prev bigint;
BEGIN
    LOCK TABLE recsys.active_model IN SHARE ROW EXCLUSIVE MODE;
    m := recsys.kept_model(id);
    IF pg_catalog.to_regclass(m.source_relation) IS NULL THEN
        RAISE EXCEPTION 'relation "%", which recsys model % was trained on, does not exist', m.source_relation, m.model_id
            USING ERRCODE = 'undefined_table',
                  HINT = 'Recommending reads users'' history from it: restore it, or activate or train another model.';
    END IF;
    SELECT a.model_id INTO prev FROM recsys.active_model a;
    INSERT INTO recsys.active_model VALUES (true, m.model_id)
        ON CONFLICT (singleton) DO UPDATE SET model_id = EXCLUDED.model_id;
    RETURN QUERY SELECT m.model_id, prev, m.created_at, m.source_relation, m.settings;
END $$;

CREATE FUNCTION @extschema@.recsys_activate(model_id bigint)
RETURNS TABLE (model_id bigint, previous_model_id bigint, created_at timestamptz,
               source_relation text, settings jsonb)
LANGUAGE sql VOLATILE AS $$
    SELECT * FROM recsys.activate($1)
$$;
COMMENT ON FUNCTION @extschema@.recsys_activate(bigint) IS
    'makes a kept model the active one, atomically at commit (rollback to an earlier model)';

-- recsys_pin's body (the public function below only renames).
CREATE FUNCTION recsys.pin(id bigint, pin boolean)
RETURNS TABLE (model_id bigint, pinned boolean, active boolean)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    m recsys.models;
BEGIN
    IF pin IS NULL THEN
        RAISE EXCEPTION 'pinned must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    LOCK TABLE recsys.active_model IN SHARE ROW EXCLUSIVE MODE;
    m := recsys.kept_model(id);
    UPDATE recsys.models mo SET pinned = pin WHERE mo.model_id = m.model_id;
    RETURN QUERY SELECT m.model_id, pin,
                        EXISTS (SELECT 1 FROM recsys.active_model a WHERE a.model_id = m.model_id);
END $$;

CREATE FUNCTION @extschema@.recsys_pin(model_id bigint, pinned boolean DEFAULT true)
RETURNS TABLE (model_id bigint, pinned boolean, active boolean)
LANGUAGE sql VOLATILE AS $$
    SELECT * FROM recsys.pin($1, $2)
$$;
COMMENT ON FUNCTION @extschema@.recsys_pin(bigint, boolean) IS
    'pins a kept model so that retention never drops it, or unpins it (pinned => false)';

-- recsys_models gains settings and pinned at the end; CREATE OR REPLACE keeps
-- the grants a DBA gave on the view.
CREATE OR REPLACE VIEW @extschema@.recsys_models AS
    SELECT m.model_id, m.created_at, (a.model_id IS NOT NULL) AS active, m.users, m.items,
           m.interactions_used, m.interactions_ignored, m.neighbor_pairs, m.neighbors,
           m.seconds, m.source_relation, m.cells, m.ignored_null, m.ignored_type,
           m.settings, m.pinned
      FROM recsys.models m LEFT JOIN recsys.active_model a USING (model_id)
     ORDER BY m.model_id DESC;

-- Training-runs log and progress: the run-log table and its views, the
-- background-worker writer, the progress record.  recsys_train() and
-- recsys_evaluate() call recsys.run_begin/run_end (their new bodies are in
-- recsys--1.1.sql).  The restore trigger also carries the new column
-- config.run_log_days.
CREATE OR REPLACE FUNCTION recsys.upsert_on_restore() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- The dumped row replaces the seed row whatever columns the table has.
    IF TG_TABLE_NAME = 'event_weights' THEN
        DELETE FROM recsys.event_weights WHERE event_type = NEW.event_type;
    ELSE
        DELETE FROM recsys.config WHERE singleton = NEW.singleton;
        -- The serving functions take the restored source's id types.
        PERFORM recsys.create_serving_functions(NEW.user_type, NEW.item_type);
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

------------------------------------------------------------------------------
-- Model settings and tuning: the weighting and similarity a model is trained
-- with (docs/sql.md "Model settings"), and recsys_tune().

-- The configured model settings (one row): what recsys_train() and
-- recsys_evaluate() use unless their settings argument overrides them.  A
-- NULL parameter takes its default; the neighbour count is recsys.config's.
CREATE TABLE recsys.similarity_config (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    weighting text NOT NULL DEFAULT 'weights'
        CHECK (weighting IN ('weights', 'binary', 'tfidf', 'bm25')),
    similarity text NOT NULL DEFAULT 'cosine'
        CHECK (similarity IN ('cosine', 'asymmetric_cosine', 'rp3beta', 'jaccard')),
    shrink double precision NOT NULL DEFAULT 0
        CHECK (shrink >= 0 AND shrink < 'Infinity'::double precision),
    alpha double precision CHECK (alpha >= 0 AND alpha < 'Infinity'::double precision),
    beta double precision CHECK (beta >= 0 AND beta < 'Infinity'::double precision),
    k1 double precision CHECK (k1 >= 0 AND k1 < 'Infinity'::double precision),
    b double precision CHECK (b >= 0 AND b <= 1)
);
COMMENT ON TABLE recsys.similarity_config IS
    'one row: the matrix weighting, similarity and their parameters the next training uses (NULL: the default)';
INSERT INTO recsys.similarity_config DEFAULT VALUES;

-- As recsys.config: on restore the dumped row replaces the seed row.
CREATE FUNCTION recsys.similarity_config_on_restore() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE recsys.similarity_config
       SET weighting = NEW.weighting, similarity = NEW.similarity, shrink = NEW.shrink,
           alpha = NEW.alpha, beta = NEW.beta, k1 = NEW.k1, b = NEW.b
     WHERE singleton = NEW.singleton;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER upsert_on_restore BEFORE INSERT ON recsys.similarity_config
    FOR EACH ROW EXECUTE FUNCTION recsys.similarity_config_on_restore();
SELECT pg_catalog.pg_extension_config_dump('recsys.similarity_config', '');

-- Checks an evaluation's list length and test window (22023; 22004 for NULL).
CREATE FUNCTION recsys.check_split(k integer, test_days integer, max_days integer, hint text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF k IS NULL OR k < 1 OR k > 1000 THEN
        RAISE EXCEPTION 'k must be between 1 and 1000, not %', coalesce(k::text, 'NULL')
            USING ERRCODE = CASE WHEN k IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END;
    END IF;
    IF test_days IS NULL OR test_days < 1 OR test_days > max_days THEN
        RAISE EXCEPTION 'test_days must be between 1 and %, not %', max_days, coalesce(test_days::text, 'NULL')
            USING ERRCODE = CASE WHEN test_days IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
                  HINT = hint;
    END IF;
END $$;

-- The model settings of a jsonb object checked by the core, with every
-- parameter they read and its default filled in.
CREATE FUNCTION recsys.resolve_settings(settings jsonb) RETURNS jsonb
AS 'MODULE_PATHNAME', 'recsys_resolve_settings' LANGUAGE C IMMUTABLE STRICT;

-- The model settings a training or evaluation runs with: the configured
-- ones with `overrides` applied, checked, defaults filled in.  Overriding
-- the weighting drops the configured k1 and b; overriding the similarity
-- drops the configured shrink, alpha and beta.
CREATE FUNCTION recsys.model_settings(overrides jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    c recsys.similarity_config;
    s jsonb;
    o jsonb := coalesce(overrides, '{}');
    bad text;
BEGIN
    IF jsonb_typeof(o) <> 'object' THEN
        RAISE EXCEPTION 'model settings must be a JSON object, not %', jsonb_typeof(o)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example ''{"weighting": "tfidf", "shrink": 200}''.';
    END IF;
    SELECT string_agg(format('"%s"', key), ', ' ORDER BY key) INTO bad
      FROM jsonb_object_keys(o) AS key
     WHERE key NOT IN ('weighting', 'similarity', 'shrink', 'alpha', 'beta', 'k1', 'b', 'neighbors');
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'unknown model setting %', bad
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The model settings are weighting, similarity, shrink, alpha, beta, k1, b and neighbors.';
    END IF;
    SELECT * INTO c FROM recsys.similarity_config;
    s := jsonb_build_object('weighting', c.weighting, 'similarity', c.similarity, 'shrink', c.shrink,
                            'alpha', c.alpha, 'beta', c.beta, 'k1', c.k1, 'b', c.b);
    IF o ? 'weighting' THEN
        s := s - 'k1' - 'b';
    END IF;
    IF o ? 'similarity' THEN
        s := s - 'shrink' - 'alpha' - 'beta';
    END IF;
    RETURN recsys.resolve_settings(jsonb_strip_nulls(s || (o - 'neighbors')));
END $$;

-- The candidates recsys_tune() tries by default, in order (core_tune.cpp).
CREATE FUNCTION recsys.tune_grid() RETURNS jsonb
AS 'MODULE_PATHNAME', 'recsys_tune_grid' LANGUAGE C IMMUTABLE;

-- Tuning's C++ half: reads one time split of source once -- the test split
-- of recsys_evaluate, or with validation the same moved back by test_days
-- inside the training period -- and evaluates each candidate on it, within
-- the budget; one row per candidate tried, `best` the highest nDCG.
CREATE FUNCTION recsys.tune_core(source regclass, settings jsonb, candidates jsonb, test_days integer,
                                 validation boolean, k integer, count_repeats boolean,
                                 max_configs integer, max_seconds double precision)
RETURNS TABLE (trial integer, trial_settings jsonb, best boolean, users_evaluated bigint,
               users_without_history bigint,
               "precision" double precision, precision_lo double precision, precision_hi double precision,
               recall double precision, recall_lo double precision, recall_hi double precision,
               ndcg double precision, ndcg_lo double precision, ndcg_hi double precision,
               hit_rate double precision, map double precision, coverage double precision,
               pop_precision double precision, pop_recall double precision, model_items bigint,
               cutoff timestamptz, seconds double precision)
AS 'MODULE_PATHNAME', 'recsys_tune_core' LANGUAGE C VOLATILE;

CREATE FUNCTION @extschema@.recsys_tune(k integer DEFAULT 10, test_days integer DEFAULT 30,
                                        apply boolean DEFAULT false, max_configs integer DEFAULT 12,
                                        max_seconds double precision DEFAULT NULL,
                                        candidates jsonb DEFAULT NULL, count_repeats boolean DEFAULT false,
                                        source text DEFAULT NULL)
RETURNS TABLE (stage text, label text, trial integer, chosen boolean, settings jsonb,
               ndcg double precision, ndcg_lo double precision, ndcg_hi double precision,
               "precision" double precision, precision_lo double precision, precision_hi double precision,
               recall double precision, recall_lo double precision, recall_hi double precision,
               users_evaluated bigint, users_without_history bigint, cutoff timestamptz,
               seconds double precision, evaluation_id bigint)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_variable
DECLARE
    t0 timestamptz := clock_timestamp();
    cfg recsys.config;
    rel regclass;
    base jsonb;
    cands jsonb;
    st text;
    r record;
    pop record;
    eid bigint;
    pop_id bigint;
    best jsonb;
    dflt constant jsonb := '{"weighting": "weights", "similarity": "cosine", "shrink": 0, "neighbors": 50}';
    same boolean := false;
    cr boolean := coalesce(count_repeats, false);
    -- The run log, as in recsys_train (logged as an evaluation).
    run_id bigint := nextval('recsys.training_run_id_seq');
BEGIN
    BEGIN
    PERFORM recsys.run_begin(run_id, 'evaluate', t0);
    PERFORM recsys.progress_phase('checking');
    PERFORM recsys.check_split(k, test_days, 18250, 'The test window is the last test_days days before the newest event, '
                                                    'the validation window the test_days days before it.');
    IF max_configs < 1 THEN
        RAISE EXCEPTION 'max_configs must be at least 1, not %', max_configs USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT (max_seconds > 0) THEN
        RAISE EXCEPTION 'max_seconds must be positive, not %', max_seconds USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO cfg FROM recsys.config;
    rel := recsys.check_source(coalesce(source, cfg.source_relation));
    PERFORM recsys.check_weights();
    base := recsys.settings_snapshot(rel, cfg.neighbors);
    IF candidates IS NULL THEN
        cands := recsys.tune_grid();
    ELSIF jsonb_typeof(candidates) <> 'array' OR jsonb_array_length(candidates) = 0 THEN
        RAISE EXCEPTION 'candidates must be a non-empty JSON array of model settings'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example ''[{"weighting": "binary", "shrink": 50}, {"weighting": "tfidf", "shrink": 200}]''.';
    ELSE
        -- Each candidate completed from the configuration, as recsys_train
        -- would complete it.
        SELECT jsonb_agg(recsys.model_settings(c.value) || jsonb_build_object('neighbors',
                   coalesce((c.value ->> 'neighbors')::integer, cfg.neighbors)) ORDER BY c.ord)
          INTO cands FROM jsonb_array_elements(candidates) WITH ORDINALITY AS c(value, ord);
    END IF;
    FOREACH st IN ARRAY ARRAY['validation', 'test'] LOOP
        IF st = 'test' THEN
            -- The chosen setting and the 1.0 defaults, once each, on the test window.
            same := best = dflt;
            cands := CASE WHEN same THEN jsonb_build_array(best) ELSE jsonb_build_array(best, dflt) END;
        END IF;
        PERFORM recsys.progress_phase('reading', rel);
        FOR r IN SELECT * FROM recsys.tune_core(rel, base, cands, test_days, st = 'validation', k, cr,
                                                CASE WHEN st = 'validation' THEN max_configs END,
                                                CASE WHEN st = 'validation' THEN max_seconds END) LOOP
            INSERT INTO recsys.evaluations (source_relation, k, test_days, neighbors, cutoff, users_evaluated,
                                            "precision", recall, ndcg, hit_rate, map, coverage,
                                            pop_precision, pop_recall, model_items, seconds,
                                            users_without_history, precision_lo, precision_hi, recall_lo,
                                            recall_hi, ndcg_lo, ndcg_hi, count_repeats, settings, tune_stage, run_id)
            VALUES (recsys.qualified_name(rel), k, test_days, (r.trial_settings ->> 'neighbors')::integer, r.cutoff,
                    r.users_evaluated, r."precision", r.recall, r.ndcg, r.hit_rate, r.map, r.coverage,
                    r.pop_precision, r.pop_recall, r.model_items, r.seconds,
                    r.users_without_history, r.precision_lo, r.precision_hi, r.recall_lo, r.recall_hi,
                    r.ndcg_lo, r.ndcg_hi, cr, base || r.trial_settings, st, run_id)
            RETURNING recsys.evaluations.evaluation_id INTO eid;
            IF st = 'validation' AND r.best THEN
                best := r.trial_settings;
            END IF;
            RETURN QUERY SELECT st, CASE WHEN st = 'validation' THEN 'candidate' WHEN r.trial = 1 THEN 'tuned' ELSE 'default' END,
                                r.trial, CASE WHEN st = 'validation' THEN r.best ELSE r.trial = 1 END, r.trial_settings,
                                r.ndcg, r.ndcg_lo, r.ndcg_hi, r."precision", r.precision_lo, r.precision_hi,
                                r.recall, r.recall_lo, r.recall_hi, r.users_evaluated, r.users_without_history,
                                r.cutoff, r.seconds, eid;
            IF st = 'test' AND r.trial = 1 THEN
                IF same THEN
                    RETURN QUERY SELECT st, 'default', r.trial, false, r.trial_settings,
                                        r.ndcg, r.ndcg_lo, r.ndcg_hi, r."precision", r.precision_lo, r.precision_hi,
                                        r.recall, r.recall_lo, r.recall_hi, r.users_evaluated, r.users_without_history,
                                        r.cutoff, r.seconds, eid;
                END IF;
                pop := r;
                pop_id := eid;
            END IF;
        END LOOP;
        IF st = 'test' THEN
            -- Popularity on the same users (recsys_evaluate's baseline).
            RETURN QUERY SELECT st, 'popularity', NULL::integer, false, '{"popularity": true}'::jsonb,
                                NULL::float8, NULL::float8, NULL::float8, pop.pop_precision, NULL::float8, NULL::float8,
                                pop.pop_recall, NULL::float8, NULL::float8, pop.users_evaluated, pop.users_without_history,
                                pop.cutoff, NULL::float8, pop_id;
        END IF;
        IF st = 'validation' AND best IS NULL THEN
            RAISE EXCEPTION 'recsys_tune: no user to evaluate in the validation window of %', rel
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = format('The validation window is the %s days before the test window (the last %s days); no user active in it was also active before it.', test_days, test_days),
                      HINT = 'Choose a test_days that leaves history before both windows.';
        END IF;
    END LOOP;
    IF coalesce(apply, false) THEN
        UPDATE recsys.similarity_config
           SET weighting = best ->> 'weighting', similarity = best ->> 'similarity',
               shrink = coalesce((best ->> 'shrink')::float8, 0), alpha = (best ->> 'alpha')::float8,
               beta = (best ->> 'beta')::float8, k1 = (best ->> 'k1')::float8, b = (best ->> 'b')::float8;
        UPDATE recsys.config SET neighbors = (best ->> 'neighbors')::integer;
        RAISE NOTICE 'recsys_tune: the next recsys_train() uses %', best;
    END IF;
    EXCEPTION WHEN query_canceled OR OTHERS THEN
        PERFORM recsys.run_end(run_id, 'evaluate', t0, NULL, SQLSTATE, SQLERRM, coalesce(base, '{}'));
        RAISE;
    END;
    PERFORM recsys.run_end(run_id, 'evaluate', t0, NULL, NULL, NULL, base || jsonb_build_object('tuned', best));
END $$;
COMMENT ON FUNCTION @extschema@.recsys_tune(integer, integer, boolean, integer, double precision, jsonb, boolean, text) IS
    'searches the model settings on a validation window by nDCG@k, tests the choice against the defaults and popularity';

-- Model settings and tuning: evaluations gain the users without history,
-- the bootstrap CIs, count_repeats, the settings, and recsys_tune's stage
-- and run (at the end, as in recsys--1.1.sql); the view shows them last.
ALTER TABLE recsys.evaluations
    ADD COLUMN users_without_history bigint,
    ADD COLUMN precision_lo double precision,
    ADD COLUMN precision_hi double precision,
    ADD COLUMN recall_lo double precision,
    ADD COLUMN recall_hi double precision,
    ADD COLUMN ndcg_lo double precision,
    ADD COLUMN ndcg_hi double precision,
    ADD COLUMN count_repeats boolean NOT NULL DEFAULT false,
    ADD COLUMN settings jsonb,
    ADD COLUMN tune_stage text CHECK (tune_stage IN ('validation', 'test')),
    ADD COLUMN run_id bigint;
CREATE OR REPLACE VIEW @extschema@.recsys_evaluations AS
    SELECT evaluated_at, k, test_days, cutoff, users_evaluated, "precision", recall, ndcg,
           hit_rate, map, coverage, pop_precision, pop_recall, neighbors, source_relation,
           model_items, seconds, evaluation_id,
           users_without_history, precision_lo, precision_hi, recall_lo, recall_hi, ndcg_lo, ndcg_hi,
           count_repeats, settings, tune_stage, run_id
      FROM recsys.evaluations ORDER BY evaluation_id DESC;

-- Functions whose bodies changed in 1.1, as in recsys--1.1.sql.
CREATE OR REPLACE FUNCTION recsys.check_source(source text) RETURNS regclass
LANGUAGE plpgsql STABLE AS $$
DECLARE
    rel regclass;
    parts text[];
    cfg recsys.config;
    t record;
    col record;
BEGIN
    IF source IS NULL OR btrim(source) = '' THEN
        RAISE EXCEPTION 'recsys source relation is not set'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'UPDATE recsys.config SET source_relation = ''public.interactions''';
    END IF;
    parts := parse_ident(source);
    IF array_length(parts, 1) = 1 THEN
        parts := ARRAY[(SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                         WHERE e.extname = 'recsys')] || parts;
    END IF;
    IF array_length(parts, 1) <> 2 THEN
        RAISE EXCEPTION 'source relation name "%" is not of the form schema.relation', source
            USING ERRCODE = 'invalid_name';
    END IF;
    rel := to_regclass(format('%I.%I', parts[1], parts[2]));
    IF rel IS NULL THEN
        RAISE EXCEPTION 'relation "%" does not exist', format('%I.%I', parts[1], parts[2])
            USING ERRCODE = 'undefined_table',
                  DETAIL = format('It is the events relation named by %s.',
                                  CASE WHEN source IS NOT DISTINCT FROM (SELECT c.source_relation FROM recsys.config c)
                                       THEN 'recsys.config.source_relation' ELSE 'the source argument' END),
                  HINT = 'Create it, pass source => ''schema.table'', or set recsys.config.source_relation to your events relation.';
    END IF;
    -- The configured columns must be there, of usable types, with ids the
    -- serving functions can take (integer columns of any width for integer
    -- or bigint ids: a value that does not fit is an error when read).
    SELECT * INTO cfg FROM recsys.config;
    t := recsys.check_mapping(rel, cfg.user_column, cfg.item_column, cfg.event_column, cfg.time_column,
                              cfg.value_column);
    FOR col IN
        SELECT * FROM (VALUES ('user', cfg.user_column, t.user_type, cfg.user_type),
                              ('item', cfg.item_column, t.item_type, cfg.item_type)) AS v(what, name, has, served)
    LOOP
        IF col.has IS DISTINCT FROM col.served
           AND NOT (col.has IN ('integer', 'bigint') AND col.served IN ('integer', 'bigint')) THEN
            RAISE EXCEPTION 'column "%" of relation "%" holds % ids, but the serving functions take % % ids',
                            col.name, rel, col.has, col.served, col.what
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'SELECT recsys_set_source(...) maps the relation and recreates the serving functions with its id types.';
        END IF;
    END LOOP;
    RETURN rel;
END $$;

DROP FUNCTION @extschema@.recsys_train(integer, text);
CREATE FUNCTION @extschema@.recsys_train(neighbors integer DEFAULT NULL, source text DEFAULT NULL,
                                         settings jsonb DEFAULT NULL)
RETURNS TABLE (model_id bigint, users bigint, items bigint, interactions_used bigint,
               interactions_ignored bigint, neighbor_pairs bigint, seconds double precision)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    t0 timestamptz := clock_timestamp();
    cfg recsys.config;
    rel regclass;
    k integer;
    snap jsonb;
    n_null bigint; n_type bigint; n_used bigint;
    id bigint;
    r record;
    secs double precision;
    -- The run log (recsys_training_runs): the body below runs in a block
    -- whose failure, cancel included, is logged and re-raised.
    run_id bigint := nextval('recsys.training_run_id_seq');
BEGIN
    BEGIN
    PERFORM recsys.run_begin(run_id, 'train', t0);
    PERFORM recsys.progress_phase('checking');
    -- One training at a time; readers take no conflicting lock.
    LOCK TABLE recsys.active_model IN SHARE ROW EXCLUSIVE MODE;
    SELECT * INTO cfg FROM recsys.config;
    k := coalesce(neighbors, (recsys_train.settings OPERATOR(pg_catalog.->>) 'neighbors')::integer, cfg.neighbors);
    IF k < 0 THEN
        RAISE EXCEPTION 'neighbors must be >= 0, not %', k
            USING ERRCODE = 'invalid_parameter_value', HINT = '0 keeps every neighbour with a positive similarity.';
    END IF;
    rel := recsys.check_source(coalesce(source, cfg.source_relation));
    PERFORM recsys.check_weights();

    snap := recsys.settings_snapshot(rel, k) || recsys.model_settings(recsys_train.settings);
    id := nextval('recsys.model_id_seq');
    PERFORM recsys.progress_phase('reading', rel);
    r := recsys.train_store(id, rel, k, snap);
    PERFORM recsys.progress_phase('checking');
    n_used := r.events;
    n_null := r.ignored_null;
    n_type := r.ignored_type;
    IF n_used = 0 THEN
        RAISE EXCEPTION 'relation "%" has no usable interactions', rel
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('%s rows with a NULL user, product or time; %s rows of event types without a positive weight.', n_null, n_type),
                  HINT = 'Event types are weighted by recsys.event_weights; the previous model, if any, keeps serving.';
    END IF;
    secs := extract(epoch FROM clock_timestamp() - t0);
    INSERT INTO recsys.models VALUES (id, now(), recsys.qualified_name(rel), k, r.users, r.items, r.cells,
                                      n_used, n_null + n_type, n_null, n_type, r.pairs, secs, snap);
    INSERT INTO recsys.active_model VALUES (true, id)
        ON CONFLICT (singleton) DO UPDATE SET model_id = EXCLUDED.model_id;

    -- Retention: keep the newest keep_models models that are not pinned,
    -- every pinned model besides them, and the active one always.
    PERFORM recsys.drop_old_models(cfg.keep_models);

    RETURN QUERY SELECT id, r.users, r.items, n_used, n_null + n_type, r.pairs, secs;
    EXCEPTION WHEN query_canceled OR OTHERS THEN
        PERFORM recsys.run_end(run_id, 'train', t0, NULL, SQLSTATE, SQLERRM, coalesce(snap, recsys.settings_snapshot(rel, k)));
        RAISE;
    END;
    PERFORM recsys.run_end(run_id, 'train', t0, id, NULL, NULL, snap);
END $$;
COMMENT ON FUNCTION @extschema@.recsys_train(integer, text, jsonb) IS
    'trains a new item-to-item model from the events relation and makes it active at commit';

DROP FUNCTION @extschema@.recsys_evaluate(integer, integer, integer, text);
CREATE FUNCTION @extschema@.recsys_evaluate(k integer, test_days integer DEFAULT 30,
                                            neighbors integer DEFAULT NULL, source text DEFAULT NULL,
                                            count_repeats boolean DEFAULT false, settings jsonb DEFAULT NULL)
RETURNS TABLE (users_evaluated bigint, users_without_history bigint,
               "precision" double precision, precision_lo double precision, precision_hi double precision,
               recall double precision, recall_lo double precision, recall_hi double precision,
               ndcg double precision, ndcg_lo double precision, ndcg_hi double precision,
               hit_rate double precision, map double precision,
               coverage double precision, cutoff timestamptz,
               pop_precision double precision, pop_recall double precision,
               model_items bigint, seconds double precision)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    t0 timestamptz := clock_timestamp();
    cfg recsys.config;
    rel regclass;
    nb integer;
    snap jsonb;
    r record;
    secs double precision;
    -- The run log, as in recsys_train.
    run_id bigint := nextval('recsys.training_run_id_seq');
BEGIN
    BEGIN
    PERFORM recsys.run_begin(run_id, 'evaluate', t0);
    PERFORM recsys.progress_phase('checking');
    PERFORM recsys.check_split(k, test_days, 36500, 'The test window is the last test_days days before the newest event.');
    SELECT * INTO cfg FROM recsys.config;
    nb := coalesce(neighbors, (recsys_evaluate.settings OPERATOR(pg_catalog.->>) 'neighbors')::integer, cfg.neighbors);
    IF nb < 0 THEN
        RAISE EXCEPTION 'neighbors must be >= 0, not %', nb USING ERRCODE = 'invalid_parameter_value';
    END IF;
    rel := recsys.check_source(coalesce(source, cfg.source_relation));
    PERFORM recsys.check_weights();
    snap := recsys.settings_snapshot(rel, nb) || recsys.model_settings(recsys_evaluate.settings);
    PERFORM recsys.progress_phase('reading', rel);
    r := recsys.evaluate_core(rel, snap, test_days, k, nb, coalesce(recsys_evaluate.count_repeats, false));
    secs := extract(epoch FROM clock_timestamp() - t0);
    INSERT INTO recsys.evaluations (source_relation, k, test_days, neighbors, cutoff, users_evaluated,
                                    "precision", recall, ndcg, hit_rate, map, coverage,
                                    pop_precision, pop_recall, model_items, seconds,
                                    users_without_history, precision_lo, precision_hi, recall_lo, recall_hi,
                                    ndcg_lo, ndcg_hi, count_repeats, settings, run_id)
    VALUES (recsys.qualified_name(rel), k, test_days, nb, r.cutoff, r.users_evaluated, r."precision", r.recall,
            r.ndcg, r.hit_rate, r.map, r.coverage, r.pop_precision, r.pop_recall, r.model_items, secs,
            r.users_without_history, r.precision_lo, r.precision_hi, r.recall_lo, r.recall_hi,
            r.ndcg_lo, r.ndcg_hi, coalesce(recsys_evaluate.count_repeats, false), snap, run_id);
    RETURN QUERY SELECT r.users_evaluated, r.users_without_history, r."precision", r.precision_lo, r.precision_hi,
                        r.recall, r.recall_lo, r.recall_hi, r.ndcg, r.ndcg_lo, r.ndcg_hi, r.hit_rate, r.map,
                        r.coverage, r.cutoff, r.pop_precision, r.pop_recall, r.model_items, secs;
    EXCEPTION WHEN query_canceled OR OTHERS THEN
        PERFORM recsys.run_end(run_id, 'evaluate', t0, NULL, SQLSTATE, SQLERRM, coalesce(snap, recsys.settings_snapshot(rel, nb)));
        RAISE;
    END;
    PERFORM recsys.run_end(run_id, 'evaluate', t0, NULL, NULL, NULL, snap);
END $$;
COMMENT ON FUNCTION @extschema@.recsys_evaluate(integer, integer, integer, text, boolean, jsonb) IS
    'time-split offline evaluation on a separate model; the active model is not touched';

-- Weights may be negative (issue #7).
CREATE OR REPLACE FUNCTION recsys.check_weights() RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    bad record;
BEGIN
    SELECT * INTO bad FROM recsys.event_weights
     WHERE weight IS NULL OR weight = 'NaN' OR weight = 'Infinity' OR weight = '-Infinity' LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'event weight % for event type "%" is not usable', coalesce(bad.weight::text, 'NULL'), bad.event_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Weights must be finite (negative for refunds or dislikes); set 0 to ignore an event type: UPDATE recsys.event_weights SET weight = 0 WHERE event_type = ...';
    END IF;
END $$;

------------------------------------------------------------------------------
-- Source mapping (issue #7): any events relation, any id types, a value
-- column, negative weights, time decay.  recsys_set_source() maps the
-- relation's columns (kept in recsys.config, so pg_dump keeps them); training
-- records the mapping with the model; the serving functions take and return
-- ids in the source's types: recsys.create_serving_functions() (re)creates
-- them with those types whenever they change (docs/sql.md, "Id types").

ALTER TABLE recsys.config ADD COLUMN user_column name NOT NULL DEFAULT 'user_id';
ALTER TABLE recsys.config ADD COLUMN item_column name NOT NULL DEFAULT 'product_id';
ALTER TABLE recsys.config ADD COLUMN event_column name NOT NULL DEFAULT 'event_type';
ALTER TABLE recsys.config ADD COLUMN time_column name NOT NULL DEFAULT 'event_time';
ALTER TABLE recsys.config ADD COLUMN value_column name;
ALTER TABLE recsys.config ADD COLUMN half_life_days double precision
    CHECK (half_life_days > 0 AND half_life_days < 'Infinity'::double precision);
-- The id types the serving functions have now ('integer', 'bigint', 'text'
-- or 'uuid'): a restore recreates them from here (recsys.upsert_on_restore).
ALTER TABLE recsys.config ADD COLUMN user_type text NOT NULL DEFAULT 'integer';
ALTER TABLE recsys.config ADD COLUMN item_type text NOT NULL DEFAULT 'integer';

-- The item keys of a model whose item ids are not integers: training gives
-- them dense indices, which recsys.neighbors and recsys.popularity store.
-- (Integer item ids are their own index: no rows here.)
CREATE TABLE recsys.item_keys (
    -- Deferred: training writes the keys before the models row.
    model_id bigint NOT NULL REFERENCES recsys.models ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    item_id integer NOT NULL,
    item_key text NOT NULL,
    PRIMARY KEY (model_id, item_id),
    UNIQUE (model_id, item_key)
);

-- The type the serving functions use for a column type: smallint and
-- integer ids are served as integer, varchar ones as text; NULL for a type
-- recsys cannot use as an id.
CREATE FUNCTION recsys.serving_type(t regtype) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE t WHEN 'pg_catalog.int2'::pg_catalog.regtype THEN 'integer'
                  WHEN 'pg_catalog.int4'::pg_catalog.regtype THEN 'integer'
                  WHEN 'pg_catalog.int8'::pg_catalog.regtype THEN 'bigint'
                  WHEN 'pg_catalog.text'::pg_catalog.regtype THEN 'text'
                  WHEN 'pg_catalog.varchar'::pg_catalog.regtype THEN 'text'
                  WHEN 'pg_catalog.uuid'::pg_catalog.regtype THEN 'uuid' END
$$;

-- Checks a mapping of rel's columns and returns the served id types.
-- Errors name the column, its type and what is allowed.
CREATE FUNCTION recsys.check_mapping(rel regclass, user_column name, item_column name, event_column name,
                                     time_column name, value_column name,
                                     OUT user_type text, OUT item_type text)
RETURNS record LANGUAGE plpgsql STABLE AS $$
DECLARE
    c record;
    typ regtype;
    ok boolean;
BEGIN
    IF rel IS NULL THEN
        RAISE EXCEPTION 'relation must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF (SELECT k.relkind FROM pg_catalog.pg_class k WHERE k.oid OPERATOR(pg_catalog.=) rel)
       NOT IN ('r', 'v', 'm', 'p', 'f') THEN
        RAISE EXCEPTION '"%" is not a table, view, materialized view or partitioned table', rel
            USING ERRCODE = 'wrong_object_type';
    END IF;
    FOR c IN
        SELECT * FROM (VALUES
            (1, 'user_column', user_column, 'smallint, integer, bigint, text, varchar or uuid'),
            (2, 'item_column', item_column, 'smallint, integer, bigint, text, varchar or uuid'),
            (3, 'event_column', event_column, 'text, varchar, char or name'),
            (4, 'time_column', time_column, 'timestamptz, timestamp or date'),
            (5, 'value_column', value_column, 'smallint, integer, bigint, real, double precision or numeric'))
            AS v(ord, arg, col, allowed)
        ORDER BY v.ord
    LOOP
        CONTINUE WHEN c.ord OPERATOR(pg_catalog.=) 5 AND c.col IS NULL;
        IF c.col IS NULL THEN
            RAISE EXCEPTION '% must not be NULL', c.arg USING ERRCODE = 'null_value_not_allowed';
        END IF;
        -- A domain counts as its base type.
        SELECT CASE WHEN t.typtype OPERATOR(pg_catalog.=) 'd' THEN t.typbasetype ELSE t.oid END::regtype INTO typ
          FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) a.atttypid
         WHERE a.attrelid OPERATOR(pg_catalog.=) rel AND a.attname OPERATOR(pg_catalog.=) c.col
           AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'column "%" of relation "%" does not exist', c.col, rel
                USING ERRCODE = 'undefined_column',
                      DETAIL = format('It is the %s of the mapping, which must be of type %s.', c.arg, c.allowed),
                      HINT = 'SELECT recsys_set_source(relation, user_column, item_column, event_column, time_column[, value_column]) maps your columns.';
        END IF;
        ok := CASE c.ord
                  WHEN 1 THEN recsys.serving_type(typ) IS NOT NULL
                  WHEN 2 THEN recsys.serving_type(typ) IS NOT NULL
                  WHEN 3 THEN typ IN ('pg_catalog.text'::regtype, 'pg_catalog.varchar'::regtype,
                                      'pg_catalog.bpchar'::regtype, 'pg_catalog.name'::regtype)
                  WHEN 4 THEN typ IN ('pg_catalog.timestamptz'::regtype, 'pg_catalog.timestamp'::regtype,
                                      'pg_catalog.date'::regtype)
                  ELSE typ IN ('pg_catalog.int2'::regtype, 'pg_catalog.int4'::regtype, 'pg_catalog.int8'::regtype,
                               'pg_catalog.float4'::regtype, 'pg_catalog.float8'::regtype,
                               'pg_catalog.numeric'::regtype)
              END;
        IF NOT ok THEN
            RAISE EXCEPTION 'column "%" of relation "%" has type %, which recsys cannot use as the %',
                            c.col, rel, typ, c.arg
                USING ERRCODE = 'datatype_mismatch',
                      DETAIL = format('The %s must be of type %s.', c.arg, c.allowed);
        END IF;
        IF c.ord OPERATOR(pg_catalog.=) 1 THEN
            user_type := recsys.serving_type(typ);
        ELSIF c.ord OPERATOR(pg_catalog.=) 2 THEN
            item_type := recsys.serving_type(typ);
        END IF;
    END LOOP;
END $$;

-- (Re)creates recsys_recommend, recsys_similar_items, recsys_user_history,
-- recsys_recommend_for_items and recsys_explain in the extension's schema with ids of the given types, unless they have
-- them already.  Outside the extension's scripts the caller must own the
-- extension (the functions stay its members); the grants on the old
-- functions go to the new ones.  The type names come from a fixed list.
CREATE FUNCTION recsys.create_serving_functions(user_type text, item_type text, in_script boolean DEFAULT false)
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    nsp oid := (SELECT e.extnamespace FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'recsys');
    sch text := pg_catalog.quote_ident((SELECT n.nspname FROM pg_catalog.pg_namespace n
                                         WHERE n.oid OPERATOR(pg_catalog.=) nsp));
    f record;
    g record;
    acls jsonb := '{}';
    defs text[];
    names text[] := ARRAY['recsys_recommend', 'recsys_similar_items', 'recsys_user_history',
                          'recsys_recommend_for_items', 'recsys_explain'];
    sig text;
BEGIN
    IF user_type IS NULL OR item_type IS NULL
       OR NOT (user_type OPERATOR(pg_catalog.=) ANY (ARRAY['integer', 'bigint', 'text', 'uuid']))
       OR NOT (item_type OPERATOR(pg_catalog.=) ANY (ARRAY['integer', 'bigint', 'text', 'uuid'])) THEN
        RAISE EXCEPTION 'id types must be integer, bigint, text or uuid, not % and %', user_type, item_type
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
                WHERE p.pronamespace OPERATOR(pg_catalog.=) nsp AND p.proname OPERATOR(pg_catalog.=) 'recsys_recommend'
                  AND p.pronargs OPERATOR(pg_catalog.=) 5
                  AND p.proargtypes[0] OPERATOR(pg_catalog.=) pg_catalog.format('%s[]', user_type)::regtype
                  AND p.proallargtypes[7] OPERATOR(pg_catalog.=) item_type::regtype) THEN
        RETURN false;
    END IF;
    FOR f IN
        SELECT p.oid::regprocedure AS sig, p.proname::text AS name, p.proacl
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace OPERATOR(pg_catalog.=) nsp AND p.proname OPERATOR(pg_catalog.=) ANY (names)
    LOOP
        acls := acls OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(f.name, f.proacl::text);
        IF NOT in_script THEN
            EXECUTE pg_catalog.format('ALTER EXTENSION recsys DROP FUNCTION %s', f.sig);
        END IF;
        EXECUTE pg_catalog.format('DROP FUNCTION %s', f.sig);
    END LOOP;
    defs := ARRAY[
        pg_catalog.format('%s.recsys_recommend(user_ids %s[], top_n integer, exclude_seen boolean DEFAULT true, '
                          'include_items %s[] DEFAULT NULL, exclude_items %s[] DEFAULT NULL) '
                          'RETURNS TABLE (user_id %s, product_id %s, score double precision, rank integer, source text) '
                          'AS %L, ''recsys_recommend'' LANGUAGE C STABLE PARALLEL RESTRICTED',
                          sch, user_type, item_type, item_type, user_type, item_type, 'MODULE_PATHNAME'),
        pg_catalog.format('%s.recsys_similar_items(product_id %s, top_n integer DEFAULT 10) '
                          'RETURNS TABLE (product_id %s, similarity double precision, rank integer) '
                          'AS %L, ''recsys_similar_items'' LANGUAGE C STABLE',
                          sch, item_type, item_type, 'MODULE_PATHNAME'),
        pg_catalog.format('%s.recsys_user_history(user_id %s, max_items integer DEFAULT 20) '
                          'RETURNS TABLE (product_id %s, weight double precision, last_event timestamptz) '
                          'AS %L, ''recsys_user_history'' LANGUAGE C STABLE',
                          sch, user_type, item_type, 'MODULE_PATHNAME'),
        pg_catalog.format('%s.recsys_recommend_for_items(item_ids %s[], top_n integer, '
                          'weights double precision[] DEFAULT NULL, include_items %s[] DEFAULT NULL, '
                          'exclude_items %s[] DEFAULT NULL) '
                          'RETURNS TABLE (product_id %s, score double precision, rank integer, source text) '
                          'AS %L, ''recsys_recommend_for_items'' LANGUAGE C STABLE PARALLEL RESTRICTED',
                          sch, item_type, item_type, item_type, item_type, 'MODULE_PATHNAME'),
        pg_catalog.format('%s.recsys_explain(user_id %s, product_id %s) '
                          'RETURNS TABLE (history_item %s, weight double precision, similarity double precision, '
                          'contribution double precision, source text) '
                          'AS %L, ''recsys_explain'' LANGUAGE C STABLE',
                          sch, user_type, item_type, item_type, 'MODULE_PATHNAME')];
    FOR g IN
        SELECT * FROM ROWS FROM (pg_catalog.unnest(names), pg_catalog.unnest(defs), pg_catalog.unnest(
            ARRAY['top_n recommendations for each user, from the active model and the users'' current history; '
                  'exclude_seen => false lets items the user has events on be recommended again; '
                  'include_items and exclude_items filter the candidates before the top_n are chosen',
                  'the active model''s stored neighbours of a product, most similar first',
                  'a user''s history as recommending sees it: w(u,i) and the latest event, newest first',
                  'top_n recommendations for a basket or session: the given items as the history, weight 1 each '
                  'or the given weights; filters as in recsys_recommend',
                  'why recsys_recommend scores a product for a user: one row per history item, '
                  'contribution = weight * similarity, summing to the score; the popularity when it is fill']),
            pg_catalog.unnest(ARRAY[pg_catalog.format('%s[], integer, boolean, %s[], %s[]', user_type, item_type, item_type),
                                    pg_catalog.format('%s, integer', item_type),
                                    pg_catalog.format('%s, integer', user_type),
                                    pg_catalog.format('%s[], integer, double precision[], %s[], %s[]',
                                                      item_type, item_type, item_type),
                                    pg_catalog.format('%s, %s', user_type, item_type)])) AS d(name, def, comment, args)
    LOOP
        EXECUTE 'CREATE FUNCTION ' OPERATOR(pg_catalog.||) g.def
                OPERATOR(pg_catalog.||) ' SET search_path = pg_catalog, recsys, pg_temp';
        sig := pg_catalog.format('%s.%s(%s)', sch, g.name, g.args);
        EXECUTE pg_catalog.format('COMMENT ON FUNCTION %s IS %L', sig, g.comment);
        IF NOT in_script THEN
            EXECUTE pg_catalog.format('ALTER EXTENSION recsys ADD FUNCTION %s', sig);
        END IF;
        -- The old function's grants (a NULL ACL is the default: PUBLIC may execute).
        IF acls OPERATOR(pg_catalog.->>) g.name IS NOT NULL THEN
            EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', sig);
            FOR f IN
                SELECT DISTINCT a.grantee
                  FROM pg_catalog.aclexplode((acls OPERATOR(pg_catalog.->>) g.name)::aclitem[]) a
                 WHERE a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
            LOOP
                EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s', sig,
                    CASE WHEN f.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
                         ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(f.grantee)) END);
            END LOOP;
        END IF;
    END LOOP;
    UPDATE recsys.config SET user_type = create_serving_functions.user_type,
                             item_type = create_serving_functions.item_type;
    RETURN true;
END $$;

-- The serving functions of a fresh install, or of 1.0's (integer ids).
SELECT recsys.create_serving_functions('integer', 'integer', true);

CREATE FUNCTION @extschema@.recsys_set_source(relation regclass, user_column name, item_column name,
                                              event_column name, time_column name, value_column name DEFAULT NULL)
RETURNS TABLE (source_relation text, user_type text, item_type text, serving_functions_recreated boolean)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    t record;
    recreated boolean;
BEGIN
    t := recsys.check_mapping(relation, user_column, item_column, event_column, time_column, value_column);
    UPDATE recsys.config c
       SET source_relation = recsys.qualified_name(relation), user_column = recsys_set_source.user_column,
           item_column = recsys_set_source.item_column, event_column = recsys_set_source.event_column,
           time_column = recsys_set_source.time_column, value_column = recsys_set_source.value_column;
    recreated := recsys.create_serving_functions(t.user_type, t.item_type);
    RETURN QUERY SELECT recsys.qualified_name(relation), t.user_type, t.item_type, recreated;
END $$;
COMMENT ON FUNCTION @extschema@.recsys_set_source(regclass, name, name, name, name, name) IS
    'maps the events relation''s columns for training and serving; recreates the serving functions with its id types';
REVOKE ALL ON FUNCTION @extschema@.recsys_set_source(regclass, name, name, name, name, name) FROM PUBLIC;

------------------------------------------------------------------------------
-- Serving filters (issue #8): the recommendable items, a relation or view
-- every recommendation is filtered by (recsys_set_recommendable); per-call
-- include_items and exclude_items, baskets (recsys_recommend_for_items) and
-- explanations (recsys_explain) are in the serving functions above.

-- The relation of recommendable items and its item id column (NULL: every
-- item), read at each recommendation as its owner, for callers that may SELECT it.
ALTER TABLE recsys.config ADD COLUMN recommendable_relation text;
ALTER TABLE recsys.config ADD COLUMN recommendable_column name;

-- No index by item on recsys.popularity: each training would enter every
-- item at a random place in it (docs/benchmarks.md).  recsys_explain finds
-- one item's popularity in the backend's popularity cache, or walks the
-- model's list in rank order.

CREATE FUNCTION @extschema@.recsys_set_recommendable(relation regclass, item_column name DEFAULT 'product_id')
RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    typ regtype;
    want text := (SELECT c.item_type FROM recsys.config c);
BEGIN
    IF relation IS NULL THEN
        UPDATE recsys.config SET recommendable_relation = NULL, recommendable_column = NULL;
        RETURN NULL;
    END IF;
    IF item_column IS NULL THEN
        RAISE EXCEPTION 'item_column must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF (SELECT k.relkind FROM pg_catalog.pg_class k WHERE k.oid OPERATOR(pg_catalog.=) relation)
       NOT IN ('r', 'v', 'm', 'p', 'f') THEN
        RAISE EXCEPTION '"%" is not a table, view, materialized view or partitioned table', relation
            USING ERRCODE = 'wrong_object_type';
    END IF;
    -- A domain counts as its base type.
    SELECT CASE WHEN t.typtype OPERATOR(pg_catalog.=) 'd' THEN t.typbasetype ELSE t.oid END::regtype INTO typ
      FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) a.atttypid
     WHERE a.attrelid OPERATOR(pg_catalog.=) relation AND a.attname OPERATOR(pg_catalog.=) item_column
       AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" of relation "%" does not exist', item_column, relation
            USING ERRCODE = 'undefined_column',
                  HINT = 'SELECT recsys_set_recommendable(relation, item_column) names the column of item ids.';
    END IF;
    IF recsys.serving_type(typ) IS DISTINCT FROM want THEN
        RAISE EXCEPTION 'column "%" of relation "%" has type %, but the item ids are of type %',
                        item_column, relation, typ, want
            USING ERRCODE = 'datatype_mismatch',
                  DETAIL = 'The recommendable items'' column must have the type of the source''s item ids.';
    END IF;
    UPDATE recsys.config SET recommendable_relation = recsys.qualified_name(relation),
                             recommendable_column = recsys_set_recommendable.item_column;
    RETURN recsys.qualified_name(relation);
END $$;
COMMENT ON FUNCTION @extschema@.recsys_set_recommendable(regclass, name) IS
    'restricts every recommendation to the items of a relation or view (NULL: every item); read as its owner, for callers that may SELECT it';
REVOKE ALL ON FUNCTION @extschema@.recsys_set_recommendable(regclass, name) FROM PUBLIC;

------------------------------------------------------------------------------
-- Hardening: keep this block last, identical in the install script and in
-- every upgrade script, so it covers every function the extension has.
--
-- Every function runs with search_path = pg_catalog, recsys, pg_temp:
-- nothing it runs resolves a name in a schema the caller (or anyone who can
-- create objects in public) controls.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT d.objid::regprocedure
          FROM pg_depend d
         WHERE d.classid = 'pg_proc'::regclass
           AND d.refclassid = 'pg_extension'::regclass
           AND d.refobjid = (SELECT e.oid FROM pg_extension e WHERE e.extname = 'recsys')
           AND d.deptype = 'e'
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, recsys, pg_temp', f);
    END LOOP;
END $$;
-- Internals, training, and changing what is served are not for PUBLIC: the
-- roles that do them get the grants docs/operations.md lists.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA recsys FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.recsys_train(integer, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.recsys_evaluate(integer, integer, integer, text, boolean, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.recsys_tune(integer, integer, boolean, integer, double precision, jsonb, boolean, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.recsys_activate(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.recsys_pin(bigint, boolean) FROM PUBLIC;
