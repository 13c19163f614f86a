-- Attacks on recsys by a role that can create objects in public (mallory):
-- shadowing operators and functions, a view that runs mallory's code, and
-- calling the internals.  Each attack records what ran, as whom, in
-- public.trapped; every check below expects nothing there.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE ROLE mallory;
CREATE ROLE recsys_reader;
GRANT CREATE, USAGE ON SCHEMA public TO mallory;
RESET client_min_messages;
CREATE TABLE public.trapped (who text, superuser boolean, what text);
GRANT INSERT, SELECT ON public.trapped TO PUBLIC;

SET ROLE mallory;
-- Records the call (as whoever runs it) and answers like the real thing.
CREATE FUNCTION public.trap(what text) RETURNS boolean LANGUAGE sql AS $$
    INSERT INTO public.trapped
    SELECT current_user, (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user), what;
    SELECT true
$$;
CREATE FUNCTION public.t_ge(float8, int4) RETURNS boolean LANGUAGE sql AS
    'SELECT public.trap(''>=(float8,int4)'') AND pg_catalog.float8ge($1, $2::float8)';
CREATE FUNCTION public.t_gt(float8, int4) RETURNS boolean LANGUAGE sql AS
    'SELECT public.trap(''>(float8,int4)'') AND pg_catalog.float8gt($1, $2::float8)';
CREATE FUNCTION public.t_gt8(float8, float8) RETURNS boolean LANGUAGE sql AS
    'SELECT public.trap(''>(float8,float8)'') AND pg_catalog.float8gt($1, $2)';
CREATE FUNCTION public.t_eq4(int4, int4) RETURNS boolean LANGUAGE sql AS
    'SELECT public.trap(''=(int4,int4)'') AND pg_catalog.int4eq($1, $2)';
CREATE FUNCTION public.t_eq8(int8, int8) RETURNS boolean LANGUAGE sql AS
    'SELECT public.trap(''=(int8,int8)'') AND pg_catalog.int8eq($1, $2)';
CREATE FUNCTION public.t_eqt(text, text) RETURNS boolean LANGUAGE sql AS
    'SELECT public.trap(''=(text,text)'') AND pg_catalog.texteq($1, $2)';
CREATE FUNCTION public.t_lt(timestamptz, timestamptz) RETURNS boolean LANGUAGE sql AS
    'SELECT public.trap(''<(timestamptz,timestamptz)'') AND pg_catalog.timestamptz_lt($1, $2)';
CREATE OPERATOR public.>= (LEFTARG = float8, RIGHTARG = int4, FUNCTION = public.t_ge);
CREATE OPERATOR public.> (LEFTARG = float8, RIGHTARG = int4, FUNCTION = public.t_gt);
CREATE OPERATOR public.> (LEFTARG = float8, RIGHTARG = float8, FUNCTION = public.t_gt8);
CREATE OPERATOR public.= (LEFTARG = int4, RIGHTARG = int4, FUNCTION = public.t_eq4);
CREATE OPERATOR public.= (LEFTARG = int8, RIGHTARG = int8, FUNCTION = public.t_eq8);
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.t_eqt);
CREATE OPERATOR public.< (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = public.t_lt);
-- Shadowing functions recsys calls.
CREATE FUNCTION public.unnest(anyarray) RETURNS SETOF anyelement LANGUAGE sql AS
    'SELECT x FROM pg_catalog.unnest($1) x WHERE public.trap(''unnest'')';
CREATE FUNCTION public.to_regclass(text) RETURNS regclass LANGUAGE sql AS
    'SELECT pg_catalog.to_regclass($1) WHERE public.trap(''to_regclass'')';
CREATE FUNCTION public.parse_ident(text, boolean DEFAULT true) RETURNS text[] LANGUAGE sql AS
    'SELECT pg_catalog.parse_ident($1, $2) WHERE public.trap(''parse_ident'')';
CREATE FUNCTION public.t_sum(float8, float8) RETURNS float8 LANGUAGE sql AS
    'SELECT CASE WHEN public.trap(''sum(float8)'') THEN pg_catalog.float8pl($1, $2) END';
CREATE AGGREGATE public.sum(float8) (SFUNC = public.t_sum, STYPE = float8);
RESET ROLE;

-- 1. At install: CREATE EXTENSION with mallory's operators in public.
-- 1.0's weights CHECK constraint bound public.>=(float8, int4): a superuser
-- editing the weights ran mallory's code.  The upgrade to 1.1 rebinds it,
-- and 1.1 binds nothing there.
DROP EXTENSION recsys;
CREATE EXTENSION recsys VERSION '1.0';
INSERT INTO recsys.event_weights VALUES ('like', 4);
SELECT DISTINCT who, superuser, what FROM public.trapped;
DELETE FROM recsys.event_weights WHERE event_type = 'like';
ALTER EXTENSION recsys UPDATE TO '1.1';
TRUNCATE public.trapped;
INSERT INTO recsys.event_weights VALUES ('like', 4);
SELECT count(*) AS trapped_after_upgrade FROM public.trapped;
DROP EXTENSION recsys;
CREATE EXTENSION recsys;
INSERT INTO recsys.event_weights VALUES ('like', 4);
UPDATE recsys.event_weights SET weight = 1 WHERE event_type = 'like';
DELETE FROM recsys.event_weights WHERE event_type = 'like';
SELECT count(*) AS trapped_at_install FROM public.trapped;

-- 2. At every entry point, called by a superuser whose search_path puts
-- public first: the shadows match exactly and would win, were any name
-- resolved through it.
SET search_path = public, pg_catalog;
SELECT users, items, interactions_used FROM recsys_train();
SELECT count(*) AS recommended FROM recsys_recommend(ARRAY[1, 2, 3], 3);
SELECT count(*) AS similar FROM recsys_similar_items(10, 5);
SELECT count(*) AS history FROM recsys_user_history(1, 5);
SELECT count(*) AS cells FROM recsys_user_item_matrix;
SELECT users_evaluated FROM recsys_evaluate(1, test_days => 30, source => 'eval_events');
SELECT count(*) AS models FROM recsys_models;
RESET search_path;
SELECT count(*) AS trapped_at_call FROM public.trapped;

-- Every function of the extension pins its search_path...
SELECT p.oid::regprocedure AS unpinned
  FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
 WHERE d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'recsys')
   AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, recsys, pg_temp'], false);
-- ...and nothing in schema recsys, nor training, is executable by PUBLIC.
SELECT p.oid::regprocedure AS public_executable
  FROM pg_proc p
 WHERE (p.pronamespace = 'recsys'::regnamespace
        OR p.oid IN ('recsys_train(integer, text, jsonb)'::regprocedure,
                     'recsys_evaluate(integer, integer, integer, text, boolean, jsonb)'::regprocedure,
                     'recsys_tune(integer, integer, boolean, integer, double precision, jsonb, boolean, text)'::regprocedure))
   AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a
                                     WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'));

-- 3. The internals refuse an unprivileged caller (42501).
SET ROLE mallory;
SELECT * FROM recsys.train_store(1, 'interactions', 50, '{"weights": {"view": 1}}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys.evaluate_core('interactions', '{"weights": {"view": 1}}', 30, 5, 50);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_train();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- 4. A source owned by mallory: a view that calls mallory's code.  Training
-- by a superuser and serving to another role read it as its owner (mallory)
-- in a security-restricted operation: mallory's code never gets their rights.
GRANT SELECT ON interactions TO mallory;
SET ROLE mallory;
CREATE FUNCTION public.spy() RETURNS boolean LANGUAGE sql VOLATILE AS
    'SELECT public.trap(''spy'')';
CREATE VIEW public.mallory_events AS
    SELECT user_id, product_id, event_type, event_time FROM public.interactions WHERE public.spy();
RESET ROLE;
SELECT users, items FROM recsys_train(source => 'mallory_events');
SELECT DISTINCT who, superuser, what FROM public.trapped;
TRUNCATE public.trapped;
-- A reader with the documented grants, and SELECT on the source.
GRANT USAGE ON SCHEMA recsys TO recsys_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA recsys TO recsys_reader;
GRANT SELECT ON public.mallory_events TO recsys_reader;
SET ROLE recsys_reader;
SELECT count(*) AS recommended FROM recsys_recommend(ARRAY[1, 2], 3);
SELECT count(*) AS history FROM recsys_user_history(1, 5);
RESET ROLE;
SELECT DISTINCT who, superuser, what FROM public.trapped;
TRUNCATE public.trapped;
-- Without SELECT on the source, the reader gets a clear 42501, not its rows.
REVOKE SELECT ON public.mallory_events FROM recsys_reader;
SET ROLE recsys_reader;
SELECT count(*) FROM recsys_user_history(1, 5);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- mallory's view cannot do what only its caller could: in a restricted
-- operation even a superuser's training runs it as mallory.
SET ROLE mallory;
CREATE OR REPLACE FUNCTION public.spy() RETURNS boolean LANGUAGE plpgsql VOLATILE AS
    $$ BEGIN ALTER ROLE mallory SUPERUSER; RETURN true; END $$;
RESET ROLE;
SELECT users FROM recsys_train(source => 'mallory_events');
\echo :LAST_ERROR_SQLSTATE
SELECT rolsuper AS mallory_is_superuser FROM pg_roles WHERE rolname = 'mallory';

-- 5. History is read from the model's stored, schema-qualified relation,
-- whatever the caller's search_path, also through the kept plans.
SELECT users FROM recsys_train();
SELECT product_id, weight FROM recsys_user_history(1, 5) ORDER BY product_id;
CREATE SCHEMA other;
CREATE TABLE other.interactions (user_id int, product_id int, event_type text, event_time timestamptz);
INSERT INTO other.interactions VALUES (1, 14, 'purchase', now()), (1, 13, 'purchase', now());
SET search_path = other, public;
SELECT product_id, weight FROM recsys_user_history(1, 5) ORDER BY product_id;
SELECT user_id, product_id, rank FROM recsys_recommend(ARRAY[1], 2);
RESET search_path;
SELECT user_id, product_id, rank FROM recsys_recommend(ARRAY[1], 2);

-- 6. A source dropped or renamed after training: a clear error naming the
-- model and what to do (42P01), and the model rows stay.
-- (Model ids start from the clock; fix the next one for the messages below.)
SELECT setval('recsys.model_id_seq', 1000, false) > 0 AS next_id_fixed;
CREATE TABLE public.short_lived AS SELECT * FROM public.interactions;
SELECT users FROM recsys_train(source => 'short_lived');
ALTER TABLE public.short_lived RENAME TO renamed_events;
SELECT count(*) FROM recsys_recommend(ARRAY[1], 2);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM recsys_user_history(1, 2);
\echo :LAST_ERROR_SQLSTATE
DROP TABLE public.renamed_events;
UPDATE recsys.config SET source_relation = 'public.gone';
SELECT users FROM recsys_train();
\echo :LAST_ERROR_SQLSTATE
UPDATE recsys.config SET source_relation = 'interactions';
SELECT users FROM recsys_train();

-- The read sizes its cell table from the newest model of the source, which
-- it looks up in recsys.models with the caller's rights.  A role that may
-- evaluate but not read recsys.models gets the same evaluation (its table
-- grows as it goes), not a permission error from that lookup.
CREATE ROLE recsys_evaluator;
GRANT USAGE ON SCHEMA recsys TO recsys_evaluator;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA recsys TO recsys_evaluator;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA recsys TO recsys_evaluator;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA recsys TO recsys_evaluator;
REVOKE SELECT ON recsys.models FROM recsys_evaluator;
GRANT EXECUTE ON FUNCTION recsys_evaluate(integer, integer, integer, text, boolean, jsonb) TO recsys_evaluator;
GRANT SELECT ON interactions TO recsys_evaluator;
SELECT has_table_privilege('recsys_evaluator', 'recsys.models', 'SELECT') AS evaluator_reads_models,
       (SELECT count(*) > 0 FROM recsys.models m WHERE m.source_relation = 'public.interactions') AS model_to_size_from;
SELECT users_evaluated AS ev_users, "precision" AS ev_p, recall AS ev_r, ndcg AS ev_n,
       precision_lo AS ev_lo, precision_hi AS ev_hi
FROM recsys_evaluate(5, test_days => 4) \gset
SET ROLE recsys_evaluator;
SELECT users_evaluated = :ev_users AS same_users, "precision" = :ev_p AS same_precision,
       recall = :ev_r AS same_recall, ndcg = :ev_n AS same_ndcg,
       precision_lo = :ev_lo AND precision_hi = :ev_hi AS same_interval
FROM recsys_evaluate(5, test_days => 4);
RESET ROLE;
REVOKE ALL ON ALL TABLES IN SCHEMA recsys FROM recsys_evaluator;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA recsys FROM recsys_evaluator;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA recsys FROM recsys_evaluator;
REVOKE ALL ON FUNCTION recsys_evaluate(integer, integer, integer, text, boolean, jsonb) FROM recsys_evaluator;
REVOKE ALL ON SCHEMA recsys FROM recsys_evaluator;
REVOKE ALL ON interactions FROM recsys_evaluator;
DROP ROLE recsys_evaluator;

-- Clean up.
SELECT count(*) AS trapped_total FROM public.trapped;
DROP SCHEMA other CASCADE;
DROP VIEW public.mallory_events;
DROP FUNCTION public.spy();
DROP OPERATOR public.>= (float8, int4);
DROP OPERATOR public.> (float8, int4);
DROP OPERATOR public.> (float8, float8);
DROP OPERATOR public.= (int4, int4);
DROP OPERATOR public.= (int8, int8);
DROP OPERATOR public.= (text, text);
DROP OPERATOR public.< (timestamptz, timestamptz);
DROP FUNCTION public.t_ge(float8, int4), public.t_gt(float8, int4), public.t_gt8(float8, float8),
              public.t_eq4(int4, int4), public.t_eq8(int8, int8), public.t_eqt(text, text),
              public.t_lt(timestamptz, timestamptz);
DROP AGGREGATE public.sum(float8);
DROP FUNCTION public.unnest(anyarray), public.to_regclass(text), public.parse_ident(text, boolean),
              public.t_sum(float8, float8);
DROP FUNCTION public.trap(text);
DROP TABLE public.trapped;
REVOKE ALL ON SCHEMA public FROM mallory;
REVOKE ALL ON interactions FROM mallory;
REVOKE ALL ON ALL TABLES IN SCHEMA recsys FROM recsys_reader;
REVOKE ALL ON SCHEMA recsys FROM recsys_reader;
DROP ROLE mallory;
DROP ROLE recsys_reader;
