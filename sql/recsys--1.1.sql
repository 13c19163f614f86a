-- recsys 1.1: item-to-item collaborative filtering inside PostgreSQL.
\echo Use "CREATE EXTENSION recsys" to load this file. \quit

-- Everything the extension stores lives in schema recsys; the functions a
-- user calls live in the extension's schema (public by default), so that
-- SELECT * FROM recsys_recommend(...) works with the default search_path.
CREATE SCHEMA recsys;
COMMENT ON SCHEMA recsys IS 'storage and internals of the recsys extension';

------------------------------------------------------------------------------
-- Configuration the DBA edits (kept by pg_dump)

CREATE TABLE recsys.event_weights (
    event_type text PRIMARY KEY,
    weight double precision NOT NULL
        CHECK (weight >= 0 AND weight < 'Infinity'::double precision)
);
COMMENT ON TABLE recsys.event_weights IS
    'weight of each event type in w(u,i); types not listed, or with weight 0, are ignored';
INSERT INTO recsys.event_weights VALUES
    ('view', 1), ('click', 2), ('add_to_cart', 3), ('purchase', 5);

CREATE TABLE recsys.config (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    source_relation text NOT NULL DEFAULT 'interactions',
    neighbors integer NOT NULL DEFAULT 50 CHECK (neighbors BETWEEN 0 AND 100000),
    keep_models integer NOT NULL DEFAULT 3 CHECK (keep_models BETWEEN 1 AND 100)
);
COMMENT ON TABLE recsys.config IS
    'one row: the events relation training reads, the default neighbour count, how many models to keep';
INSERT INTO recsys.config DEFAULT VALUES;

-- pg_dump dumps both tables whole; on restore CREATE EXTENSION has already
-- inserted the seed rows, so the dumped rows replace them instead of clashing.
CREATE FUNCTION recsys.upsert_on_restore() RETURNS trigger
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
CREATE TRIGGER upsert_on_restore BEFORE INSERT ON recsys.event_weights
    FOR EACH ROW EXECUTE FUNCTION recsys.upsert_on_restore();
CREATE TRIGGER upsert_on_restore BEFORE INSERT ON recsys.config
    FOR EACH ROW EXECUTE FUNCTION recsys.upsert_on_restore();

SELECT pg_catalog.pg_extension_config_dump('recsys.event_weights', '');
SELECT pg_catalog.pg_extension_config_dump('recsys.config', '');

------------------------------------------------------------------------------
-- Models (written only by recsys_train)

CREATE TABLE recsys.models (
    model_id bigint PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    source_relation text NOT NULL,
    neighbors integer NOT NULL,
    users bigint NOT NULL,
    items bigint NOT NULL,
    cells bigint NOT NULL,
    interactions_used bigint NOT NULL,
    interactions_ignored bigint NOT NULL,
    ignored_null bigint NOT NULL,
    ignored_type bigint NOT NULL,
    neighbor_pairs bigint NOT NULL,
    seconds double precision NOT NULL,
    -- What the model was trained with (recsys.settings_snapshot()): serving
    -- uses these, not the live configuration.
    settings jsonb NOT NULL DEFAULT '{}'
);
CREATE SEQUENCE recsys.model_id_seq OWNED BY recsys.models.model_id;

-- The one active model.  Training replaces this row in its transaction, so
-- the switch is atomic at commit and readers never wait.
CREATE TABLE recsys.active_model (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    model_id bigint NOT NULL REFERENCES recsys.models
);

-- Each item's kept neighbours, similarity descending then id ascending.
CREATE TABLE recsys.neighbors (
    model_id bigint NOT NULL,
    item_id integer NOT NULL,
    neighbor_ids integer[] NOT NULL,
    sims double precision[] NOT NULL,
    PRIMARY KEY (model_id, item_id)
);

-- Every item of a model by distinct users descending, then id ascending.
CREATE TABLE recsys.popularity (
    model_id bigint NOT NULL,
    rank integer NOT NULL,
    item_id integer NOT NULL,
    users integer NOT NULL,
    PRIMARY KEY (model_id, rank)
);

CREATE TABLE recsys.evaluations (
    evaluation_id bigserial PRIMARY KEY,
    evaluated_at timestamptz NOT NULL DEFAULT now(),
    source_relation text NOT NULL,
    k integer NOT NULL,
    test_days integer NOT NULL,
    neighbors integer NOT NULL,
    cutoff timestamptz NOT NULL,
    users_evaluated bigint NOT NULL,
    "precision" double precision NOT NULL,
    recall double precision NOT NULL,
    ndcg double precision NOT NULL,
    hit_rate double precision NOT NULL,
    map double precision NOT NULL,
    coverage double precision NOT NULL,
    pop_precision double precision NOT NULL,
    pop_recall double precision NOT NULL,
    model_items bigint NOT NULL,
    seconds double precision NOT NULL
);

------------------------------------------------------------------------------
-- Internals

-- Checks that a relation can feed training and returns it; errors name what
-- is missing.
CREATE FUNCTION recsys.check_source(source text) RETURNS regclass
LANGUAGE plpgsql STABLE AS $$
DECLARE
    rel regclass;
    missing text[];
    col record;
BEGIN
    IF source IS NULL OR btrim(source) = '' THEN
        RAISE EXCEPTION 'recsys source relation is not set'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'UPDATE recsys.config SET source_relation = ''interactions''';
    END IF;
    rel := pg_catalog.to_regclass(source);
    IF rel IS NULL THEN
        RAISE EXCEPTION 'relation "%" does not exist', source
            USING ERRCODE = 'undefined_table',
                  HINT = 'Create it, pass source => ''schema.table'', or set recsys.config.source_relation to your events relation.';
    END IF;
    SELECT array_agg(c ORDER BY ord) INTO missing
      FROM unnest(ARRAY['user_id', 'product_id', 'event_type', 'event_time']) WITH ORDINALITY AS r(c, ord)
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid = rel AND a.attname = r.c AND a.attnum > 0 AND NOT a.attisdropped);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'relation "%" lacks column(s) %', rel, array_to_string(missing, ', ')
            USING ERRCODE = 'undefined_column',
                  DETAIL = 'recsys needs user_id, product_id (integer types), event_type (text) and event_time (timestamp).';
    END IF;
    FOR col IN
        SELECT a.attname, a.atttypid::regtype AS typ,
               CASE a.attname
                   WHEN 'event_type' THEN a.atttypid IN ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype, 'name'::regtype)
                   WHEN 'event_time' THEN a.atttypid IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype)
                   ELSE a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
               END AS ok
          FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = rel AND a.attname IN ('user_id', 'product_id', 'event_type', 'event_time')
           AND a.attnum > 0 AND NOT a.attisdropped
    LOOP
        IF NOT col.ok THEN
            RAISE EXCEPTION 'column "%" of relation "%" has type %, which recsys cannot use', col.attname, rel, col.typ
                USING ERRCODE = 'datatype_mismatch',
                      DETAIL = 'recsys needs user_id, product_id (smallint, integer or bigint), event_type (text) and event_time (timestamptz, timestamp or date).';
        END IF;
    END LOOP;
    RETURN rel;
END $$;

-- A relation's schema-qualified name, independent of search_path.
CREATE FUNCTION recsys.qualified_name(rel regclass) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT format('%I.%I', n.nspname, c.relname)
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = rel
$$;

-- The settings a training or evaluation runs with, as recorded with its
-- model and in its run log: the source, the neighbour count, every event
-- type's weight, the similarity method.
CREATE FUNCTION recsys.settings_snapshot(rel regclass, neighbors integer) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.jsonb_build_object(
        'source', recsys.qualified_name(rel),
        'neighbors', neighbors,
        'weights', (SELECT COALESCE(pg_catalog.jsonb_object_agg(w.event_type, w.weight), '{}')
                      FROM recsys.event_weights w),
        'similarity_method', pg_catalog.current_setting('recsys.similarity_method', true))
$$;

-- Refuses weights the DBA may have forced in past the CHECK constraint.
CREATE FUNCTION recsys.check_weights() RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    bad record;
BEGIN
    SELECT * INTO bad FROM recsys.event_weights
     WHERE weight IS NULL OR weight < 0 OR weight = 'NaN' OR weight = 'Infinity' LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'event weight % for event type "%" is not usable', coalesce(bad.weight::text, 'NULL'), bad.event_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Weights must be finite and >= 0; set 0 to ignore an event type: UPDATE recsys.event_weights SET weight = 0 WHERE event_type = ...';
    END IF;
END $$;

-- The weighted events of a relation as SQL text: one row per usable event,
-- (user_id int, product_id int, event_time timestamptz, weight float8).
-- `cond` is an extra condition on the raw columns (alias s), or NULL.
CREATE FUNCTION recsys.events_sql(rel regclass, cond text DEFAULT NULL) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT format(
        'SELECT s.user_id::int4 AS user_id, s.product_id::int4 AS product_id, '
        's.event_time::timestamptz AS event_time, w.weight '
        'FROM %s s JOIN recsys.event_weights w ON w.event_type = s.event_type::text '
        'WHERE s.user_id IS NOT NULL AND s.product_id IS NOT NULL AND s.event_time IS NOT NULL '
        'AND w.weight > 0%s',
        rel, CASE WHEN cond IS NULL THEN '' ELSE ' AND (' || cond || ')' END)
$$;

-- The weighted user-item matrix as SQL text: w(u,i) = sum of the weights of
-- u's events on i, one row per cell with the number of events summed.  The
-- rows it ignores come out in two more rows with a NULL user_id, so that one
-- scan also counts them: product_id -1 for rows with a NULL user, product or
-- time, -2 for rows whose event type has no positive weight.
CREATE FUNCTION recsys.matrix_sql(rel regclass, cond text DEFAULT NULL) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT format(
        'SELECT user_id, product_id, sum(weight) AS weight, count(*) AS events FROM ('
        'SELECT CASE WHEN ok THEN uid END AS user_id, '
        'CASE WHEN ok THEN pid WHEN nullkey THEN -1 ELSE -2 END AS product_id, '
        'CASE WHEN ok THEN weight END AS weight FROM ('
        'SELECT s.user_id::int4 AS uid, s.product_id::int4 AS pid, w.weight, '
        '(s.user_id IS NULL OR s.product_id IS NULL OR s.event_time IS NULL) AS nullkey, '
        '(s.user_id IS NOT NULL AND s.product_id IS NOT NULL AND s.event_time IS NOT NULL '
        'AND coalesce(w.weight, 0) > 0) AS ok '
        'FROM %s s LEFT JOIN recsys.event_weights w ON w.event_type = s.event_type::text%s) r) e '
        'GROUP BY user_id, product_id',
        rel, CASE WHEN cond IS NULL THEN '' ELSE ' WHERE (' || cond || ')' END)
$$;

-- Training's C++ half: reads the matrix, computes the neighbours and the
-- popularity list, and writes them under model_id.
CREATE FUNCTION recsys.train_store(model_id bigint, matrix_sql text, neighbors integer,
                                   OUT users bigint, OUT items bigint, OUT cells bigint, OUT pairs bigint,
                                   OUT events bigint, OUT ignored_null bigint, OUT ignored_type bigint)
RETURNS record AS 'MODULE_PATHNAME', 'recsys_train_store' LANGUAGE C VOLATILE;

-- Bytes training needs at its peak for a matrix of this shape, besides the
-- aggregation's work_mem (docs/operations.md).
CREATE FUNCTION recsys.train_memory(cells bigint, users bigint, items bigint, neighbors integer DEFAULT 50)
RETURNS bigint AS 'MODULE_PATHNAME', 'recsys_train_memory' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Evaluation's C++ half: trains on before_sql's cells, scores against after_sql's touches.
CREATE FUNCTION recsys.evaluate_core(before_sql text, after_sql text, k integer, neighbors integer,
                                     OUT users_evaluated bigint, OUT "precision" double precision,
                                     OUT recall double precision, OUT ndcg double precision,
                                     OUT hit_rate double precision, OUT map double precision,
                                     OUT coverage double precision, OUT pop_precision double precision,
                                     OUT pop_recall double precision, OUT model_items bigint)
RETURNS record AS 'MODULE_PATHNAME', 'recsys_evaluate_core' LANGUAGE C VOLATILE;

-- The active model's id and source; errors with a hint when there is none.
CREATE FUNCTION recsys.active() RETURNS recsys.models
LANGUAGE plpgsql STABLE AS $$
DECLARE
    m recsys.models;
BEGIN
    SELECT mo.* INTO m FROM recsys.active_model a JOIN recsys.models mo USING (model_id);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no recsys model has been trained yet'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Run SELECT * FROM recsys_train(); first.';
    END IF;
    RETURN m;
END $$;

------------------------------------------------------------------------------
-- The SQL interface

CREATE FUNCTION @extschema@.recsys_train(neighbors integer DEFAULT NULL, source text DEFAULT NULL)
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
    k := coalesce(neighbors, cfg.neighbors);
    IF k < 0 THEN
        RAISE EXCEPTION 'neighbors must be >= 0, not %', k
            USING ERRCODE = 'invalid_parameter_value', HINT = '0 keeps every neighbour with a positive similarity.';
    END IF;
    rel := recsys.check_source(coalesce(source, cfg.source_relation));
    PERFORM recsys.check_weights();

    id := nextval('recsys.model_id_seq');
    PERFORM recsys.progress_phase('reading', rel);
    r := recsys.train_store(id, recsys.matrix_sql(rel), k);
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
                                      n_used, n_null + n_type, n_null, n_type, r.pairs, secs,
                                      recsys.settings_snapshot(rel, k));
    INSERT INTO recsys.active_model VALUES (true, id)
        ON CONFLICT (singleton) DO UPDATE SET model_id = EXCLUDED.model_id;

    -- Keep the newest keep_models models (the active one always).
    DELETE FROM recsys.neighbors nb WHERE nb.model_id IN (
        SELECT m.model_id FROM recsys.models m ORDER BY m.model_id DESC OFFSET cfg.keep_models);
    DELETE FROM recsys.popularity p WHERE p.model_id IN (
        SELECT m.model_id FROM recsys.models m ORDER BY m.model_id DESC OFFSET cfg.keep_models);
    DELETE FROM recsys.models m WHERE m.model_id IN (
        SELECT m2.model_id FROM recsys.models m2 ORDER BY m2.model_id DESC OFFSET cfg.keep_models);

    RETURN QUERY SELECT id, r.users, r.items, n_used, n_null + n_type, r.pairs, secs;
    EXCEPTION WHEN query_canceled OR OTHERS THEN
        PERFORM recsys.run_end(run_id, 'train', t0, NULL, SQLSTATE, SQLERRM, recsys.settings_snapshot(rel, k));
        RAISE;
    END;
    PERFORM recsys.run_end(run_id, 'train', t0, id, NULL, NULL, recsys.settings_snapshot(rel, k));
END $$;
COMMENT ON FUNCTION @extschema@.recsys_train(integer, text) IS
    'trains a new item-to-item model from the events relation and makes it active at commit';

CREATE FUNCTION @extschema@.recsys_recommend(user_ids integer[], top_n integer)
RETURNS TABLE (user_id integer, product_id integer, score double precision, rank integer, source text)
AS 'MODULE_PATHNAME', 'recsys_recommend' LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.recsys_recommend(integer[], integer) IS
    'top_n recommendations for each user, from the active model and the users'' current history';

-- Checks an (id, list length) argument pair: neither NULL (22004), the
-- length in 1..1000 (22023).
CREATE FUNCTION recsys.check_id_and_limit(id integer, id_name text, n integer, n_name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF id IS NULL OR n IS NULL THEN
        RAISE EXCEPTION '% and % must not be NULL', id_name, n_name USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF n < 1 OR n > 1000 THEN
        RAISE EXCEPTION '% must be between 1 and 1000, not %', n_name, n USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- recsys_similar_items' body (plpgsql cannot name an input and an output
-- column alike, so the public function below only renames).
CREATE FUNCTION recsys.similar_items(item integer, top_n integer)
RETURNS TABLE (neighbor_id integer, similarity double precision, neighbor_rank integer)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    m recsys.models;
BEGIN
    PERFORM recsys.check_id_and_limit(item, 'product_id', top_n, 'top_n');
    m := recsys.active();
    RETURN QUERY
        SELECT n.id, n.sim, n.ord::integer
          FROM recsys.neighbors nb,
               unnest(nb.neighbor_ids, nb.sims) WITH ORDINALITY AS n(id, sim, ord)
         WHERE nb.model_id = m.model_id AND nb.item_id = item AND n.ord <= top_n
         ORDER BY n.ord;
END $$;

CREATE FUNCTION @extschema@.recsys_similar_items(product_id integer, top_n integer DEFAULT 10)
RETURNS TABLE (product_id integer, similarity double precision, rank integer)
LANGUAGE sql STABLE AS $$
    SELECT * FROM recsys.similar_items($1, $2)
$$;
COMMENT ON FUNCTION @extschema@.recsys_similar_items(integer, integer) IS
    'the active model''s stored neighbours of a product, most similar first';

CREATE FUNCTION @extschema@.recsys_user_history(user_id integer, max_items integer DEFAULT 20)
RETURNS TABLE (product_id integer, weight double precision, last_event timestamptz)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
    m recsys.models;
BEGIN
    PERFORM recsys.check_id_and_limit(user_id, 'user_id', max_items, 'max_items');
    m := recsys.active();
    RETURN QUERY EXECUTE
        'SELECT product_id, sum(weight), max(event_time) FROM ('
        || recsys.events_sql(m.source_relation::regclass, 's.user_id = $1')
        || ') e GROUP BY product_id ORDER BY max(event_time) DESC, product_id LIMIT $2'
        USING user_id, max_items;
END $$;
COMMENT ON FUNCTION @extschema@.recsys_user_history(integer, integer) IS
    'a user''s history as recommending sees it: w(u,i) and the latest event, newest first';

CREATE FUNCTION @extschema@.recsys_evaluate(k integer, test_days integer DEFAULT 30,
                                            neighbors integer DEFAULT NULL, source text DEFAULT NULL)
RETURNS TABLE (users_evaluated bigint, "precision" double precision, recall double precision,
               ndcg double precision, hit_rate double precision, map double precision,
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
    cut timestamptz;
    cut_lit text;
    r record;
    secs double precision;
    -- The run log, as in recsys_train.
    run_id bigint := nextval('recsys.training_run_id_seq');
BEGIN
    BEGIN
    PERFORM recsys.run_begin(run_id, 'evaluate', t0);
    PERFORM recsys.progress_phase('checking');
    IF k IS NULL OR k < 1 OR k > 1000 THEN
        RAISE EXCEPTION 'k must be between 1 and 1000, not %', coalesce(k::text, 'NULL')
            USING ERRCODE = CASE WHEN k IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END;
    END IF;
    IF test_days IS NULL OR test_days < 1 THEN
        RAISE EXCEPTION 'test_days must be at least 1, not %', coalesce(test_days::text, 'NULL')
            USING ERRCODE = CASE WHEN test_days IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END;
    END IF;
    SELECT * INTO cfg FROM recsys.config;
    nb := coalesce(neighbors, cfg.neighbors);
    IF nb < 0 THEN
        RAISE EXCEPTION 'neighbors must be >= 0, not %', nb USING ERRCODE = 'invalid_parameter_value';
    END IF;
    rel := recsys.check_source(coalesce(source, cfg.source_relation));
    PERFORM recsys.check_weights();
    PERFORM recsys.progress_phase('cutoff', rel);
    EXECUTE 'SELECT max(event_time) - make_interval(days => $1) FROM (' || recsys.events_sql(rel) || ') e'
        INTO cut USING test_days;
    IF cut IS NULL THEN
        RAISE EXCEPTION 'relation "%" has no usable interactions', rel
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Event types are weighted by recsys.event_weights.';
    END IF;
    -- The cutoff as an ISO literal, whatever DateStyle says.
    cut_lit := quote_literal(to_char(cut AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00');
    PERFORM recsys.progress_phase('reading');
    r := recsys.evaluate_core(
        recsys.matrix_sql(rel, format('s.event_time < %s::timestamptz', cut_lit)),
        'SELECT DISTINCT user_id, product_id FROM ('
            || recsys.events_sql(rel, format('s.event_time >= %s::timestamptz', cut_lit)) || ') e',
        k, nb);
    secs := extract(epoch FROM clock_timestamp() - t0);
    INSERT INTO recsys.evaluations (source_relation, k, test_days, neighbors, cutoff, users_evaluated,
                                    "precision", recall, ndcg, hit_rate, map, coverage,
                                    pop_precision, pop_recall, model_items, seconds)
    VALUES (recsys.qualified_name(rel), k, test_days, nb, cut, r.users_evaluated, r."precision", r.recall, r.ndcg,
            r.hit_rate, r.map, r.coverage, r.pop_precision, r.pop_recall, r.model_items, secs);
    RETURN QUERY SELECT r.users_evaluated, r."precision", r.recall, r.ndcg, r.hit_rate, r.map,
                        r.coverage, cut, r.pop_precision, r.pop_recall, r.model_items, secs;
    EXCEPTION WHEN query_canceled OR OTHERS THEN
        PERFORM recsys.run_end(run_id, 'evaluate', t0, NULL, SQLSTATE, SQLERRM, recsys.settings_snapshot(rel, nb));
        RAISE;
    END;
    PERFORM recsys.run_end(run_id, 'evaluate', t0, NULL, NULL, NULL, recsys.settings_snapshot(rel, nb));
END $$;
COMMENT ON FUNCTION @extschema@.recsys_evaluate(integer, integer, integer, text) IS
    'time-split offline evaluation on a separate model; the active model is not touched';

CREATE VIEW @extschema@.recsys_models AS
    SELECT m.model_id, m.created_at, (a.model_id IS NOT NULL) AS active, m.users, m.items,
           m.interactions_used, m.interactions_ignored, m.neighbor_pairs, m.neighbors,
           m.seconds, m.source_relation, m.cells, m.ignored_null, m.ignored_type
      FROM recsys.models m LEFT JOIN recsys.active_model a USING (model_id)
     ORDER BY m.model_id DESC;

CREATE VIEW @extschema@.recsys_evaluations AS
    SELECT evaluated_at, k, test_days, cutoff, users_evaluated, "precision", recall, ndcg,
           hit_rate, map, coverage, pop_precision, pop_recall, neighbors, source_relation,
           model_items, seconds, evaluation_id
      FROM recsys.evaluations ORDER BY evaluation_id DESC;

-- The weighted user-item matrix of the configured events relation.
CREATE FUNCTION recsys.user_item_matrix()
RETURNS TABLE (user_id integer, product_id integer, weight double precision, events bigint)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY EXECUTE 'SELECT * FROM (' || recsys.matrix_sql(
        recsys.check_source((SELECT c.source_relation FROM recsys.config c))) || ') m WHERE user_id IS NOT NULL';
END $$;
CREATE VIEW @extschema@.recsys_user_item_matrix AS SELECT * FROM recsys.user_item_matrix();

------------------------------------------------------------------------------
-- Training-runs log and progress (docs/operations.md, "Monitoring")
--
-- Every recsys_train() and recsys_evaluate() call gets a row in
-- recsys.training_runs.  The row is written by a dynamic background worker
-- in a transaction of its own (recsys.run_log_write), so it survives the
-- caller's ROLLBACK: 'running' at the start, the outcome at the end.  The
-- view derives what a row alone cannot say: a 'running' row whose backend is
-- gone was 'terminated'; a 'succeeded' row whose transaction aborted was
-- 'rolled back'.

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
