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

-- recsys_train: records the model's settings (see above) and keeps pinned
-- models (retention moved to recsys.drop_old_models()).
CREATE OR REPLACE FUNCTION @extschema@.recsys_train(neighbors integer DEFAULT NULL, source text DEFAULT NULL)
RETURNS TABLE (model_id bigint, users bigint, items bigint, interactions_used bigint,
               interactions_ignored bigint, neighbor_pairs bigint, seconds double precision)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    t0 timestamptz := clock_timestamp();
    cfg recsys.config;
    rel regclass;
    k integer;
    n_null bigint; n_type bigint; n_used bigint;
    id bigint;
    r record;
    secs double precision;
BEGIN
    -- One training at a time; readers take no conflicting lock.
    LOCK TABLE recsys.active_model IN SHARE ROW EXCLUSIVE MODE;
    SELECT * INTO cfg FROM recsys.config;
    k := coalesce(neighbors, cfg.neighbors);
    IF k < 0 THEN
        RAISE EXCEPTION 'neighbors must be >= 0, not %', k
            USING ERRCODE = 'invalid_parameter_value', HINT = '0 keeps every neighbour with a positive similarity.';
    END IF;
    rel := recsys.check_source(coalesce(source, cfg.source_relation));
    PERFORM recsys.check_weights();

    id := nextval('recsys.model_id_seq');
    r := recsys.train_store(id, recsys.matrix_sql(rel), k);
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
                                      n_used, n_null + n_type, n_null, n_type, r.pairs, secs,
                                      recsys.settings_snapshot(rel, k));
    INSERT INTO recsys.active_model VALUES (true, id)
        ON CONFLICT (singleton) DO UPDATE SET model_id = EXCLUDED.model_id;

    -- Retention: keep the newest keep_models models that are not pinned,
    -- every pinned model besides them, and the active one always.
    PERFORM recsys.drop_old_models(cfg.keep_models);

    RETURN QUERY SELECT id, r.users, r.items, n_used, n_null + n_type, r.pairs, secs;
END $$;

------------------------------------------------------------------------------
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
BEGIN
    WITH gone AS (
        DELETE FROM recsys.models m
         WHERE m.model_id IN (SELECT k.model_id FROM recsys.models k WHERE NOT k.pinned
                               ORDER BY k.model_id DESC OFFSET keep)
           AND NOT EXISTS (SELECT 1 FROM recsys.active_model a WHERE a.model_id = m.model_id)
        RETURNING m.model_id)
    SELECT pg_catalog.array_agg(g.model_id) INTO dropped FROM gone g;
    DELETE FROM recsys.neighbors nb WHERE nb.model_id = ANY (dropped);
    DELETE FROM recsys.popularity p WHERE p.model_id = ANY (dropped);
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
