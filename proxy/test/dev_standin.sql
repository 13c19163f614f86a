-- dev_standin.sql -- DEVELOPMENT STAND-IN ONLY.
--
-- A tiny plain-SQL imitation of the recsys extension's SQL API, used to develop
-- the HTTP proxy before the real extension was built.  It is NOT the
-- extension and is NOT used by proxy/test/integration.sh (which creates the
-- real extension).  Signatures follow the issue text:
--   recsys_recommend(int[], int) -> (user_id, product_id, score, rank, source)
--   recsys_similar_items(int, int) -> (product_id, similarity, rank)
--   recsys_user_history(int, int) -> (product_id, weight, last_event)
--   views recsys_models, recsys_evaluations; recsys_train()
-- Load:  psql -f proxy/test/dev_standin.sql   (drops and recreates its objects)
\set ON_ERROR_STOP on
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS standin CASCADE;
DROP VIEW IF EXISTS recsys_models, recsys_evaluations;
DROP FUNCTION IF EXISTS recsys_recommend(int[], int), recsys_similar_items(int, int),
  recsys_user_history(int, int), recsys_train();
CREATE SCHEMA standin;

CREATE TABLE IF NOT EXISTS products (
    product_id int PRIMARY KEY, product_name text NOT NULL,
    category text NOT NULL, price numeric(10,2) NOT NULL);
INSERT INTO products
SELECT p, (ARRAY['Acme','Nordic','Urban','Zenith'])[1 + p % 4] || ' Item ' || p,
       (ARRAY['books','garden','toys','kitchen','sports'])[1 + p % 5],
       round((5 + (p * 37) % 200)::numeric + 0.99, 2)
FROM generate_series(1, 200) p ON CONFLICT DO NOTHING;

CREATE TABLE standin.events AS
SELECT u AS user_id, 1 + ((u * 7 + k * k * 13 + (u % 5) * 40) % 200) AS product_id,
       1.0::float8 + (k % 3) AS weight, now() - make_interval(hours => u + k) AS at
FROM generate_series(1, 500) u, generate_series(1, 8) k;
CREATE INDEX ON standin.events (user_id);

CREATE TABLE standin.models (
    model_id bigserial PRIMARY KEY, created_at timestamptz DEFAULT now(), active bool DEFAULT false,
    users bigint, items bigint, interactions_used bigint, interactions_ignored bigint,
    neighbor_pairs bigint, neighbors int, seconds float8, source_relation text);
CREATE TABLE standin.sim (product_id int, other int, similarity float8);
CREATE TABLE standin.evals (evaluated_at timestamptz, k int, test_days int, cutoff timestamptz,
    users_evaluated bigint, "precision" float8, recall float8, ndcg float8, hit_rate float8,
    map float8, coverage float8, pop_precision float8, pop_recall float8);

CREATE VIEW recsys_models AS SELECT * FROM standin.models;
CREATE VIEW recsys_evaluations AS SELECT * FROM standin.evals;

CREATE FUNCTION recsys_train() RETURNS SETOF recsys_models LANGUAGE plpgsql AS $$
BEGIN
  TRUNCATE standin.sim;
  INSERT INTO standin.sim
  SELECT product_id, other, similarity FROM (
    SELECT a.product_id, b.product_id AS other, count(*)::float8 / 8 AS similarity,
           row_number() OVER (PARTITION BY a.product_id ORDER BY count(*) DESC, b.product_id) AS rn
    FROM (SELECT DISTINCT user_id, product_id FROM standin.events) a
    JOIN (SELECT DISTINCT user_id, product_id FROM standin.events) b
      ON a.user_id = b.user_id AND a.product_id <> b.product_id
    GROUP BY 1, 2) s WHERE rn <= 20;
  UPDATE standin.models SET active = false;
  INSERT INTO standin.models (active, users, items, interactions_used, interactions_ignored,
                              neighbor_pairs, neighbors, seconds, source_relation)
  SELECT true, 500, 200, (SELECT count(*) FROM standin.events), 0,
         (SELECT count(*) FROM standin.sim), 20, 0.05, 'standin.events';
  DELETE FROM standin.evals;
  INSERT INTO standin.evals
  SELECT now(), k, 14, now() - interval '14 days', 480, 0.3 / sqrt(k), 0.05 * sqrt(k), 0.2, 0.1 * k ^ 0.5,
         0.12, 0.4, 0.1 / sqrt(k), 0.02 * sqrt(k) FROM unnest(ARRAY[1,5,10,20]) k;
  RETURN QUERY SELECT * FROM recsys_models WHERE active;
END $$;

CREATE FUNCTION standin.check(top_n int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF top_n IS NULL THEN RAISE EXCEPTION 'top_n must not be NULL' USING ERRCODE = '22004'; END IF;
  IF top_n < 1 OR top_n > 1000 THEN
    RAISE EXCEPTION 'top_n must be between 1 and 1000' USING ERRCODE = '22023'; END IF;
  IF NOT EXISTS (SELECT 1 FROM standin.models WHERE active) THEN
    RAISE EXCEPTION 'recsys: no model has been trained yet' USING ERRCODE = '55000',
      HINT = 'run SELECT recsys_train()'; END IF;
END $$;

CREATE FUNCTION recsys_recommend(user_ids int[], top_n int)
RETURNS TABLE (user_id int, product_id int, score float8, rank int, source text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
  IF user_ids IS NULL THEN RAISE EXCEPTION 'user_ids must not be NULL' USING ERRCODE = '22004'; END IF;
  PERFORM standin.check(top_n);
  IF cardinality(user_ids) > 10000 THEN
    RAISE EXCEPTION 'too many user ids' USING ERRCODE = '54000'; END IF;
  RETURN QUERY
  WITH u AS (SELECT DISTINCT x AS uid FROM unnest(user_ids) x WHERE x IS NOT NULL),
  cf AS (
    SELECT u.uid, s.other AS pid, sum(e.weight * s.similarity) AS sc
    FROM u JOIN standin.events e ON e.user_id = u.uid
    JOIN standin.sim s ON s.product_id = e.product_id
    WHERE NOT EXISTS (SELECT 1 FROM standin.events h WHERE h.user_id = u.uid AND h.product_id = s.other)
    GROUP BY 1, 2),
  pop AS (SELECT e.product_id AS pid, count(DISTINCT e.user_id)::float8 AS sc
          FROM standin.events e GROUP BY 1),
  cand AS (
    SELECT cf.uid, cf.pid, cf.sc, 'cf'::text AS src, 0 AS tier FROM cf
    UNION ALL
    SELECT u.uid, pop.pid, pop.sc, 'popular', 1 FROM u CROSS JOIN pop
    WHERE NOT EXISTS (SELECT 1 FROM standin.events h WHERE h.user_id = u.uid AND h.product_id = pop.pid)),
  ranked AS (
    SELECT DISTINCT ON (c.uid, c.pid) c.* FROM cand c ORDER BY c.uid, c.pid, c.tier),
  numbered AS (
    SELECT r.*, row_number() OVER (PARTITION BY r.uid ORDER BY r.tier, r.sc DESC, r.pid) AS rk FROM ranked r)
  SELECT n.uid, n.pid, n.sc, n.rk::int, n.src FROM numbered n WHERE n.rk <= top_n ORDER BY n.uid, n.rk;
END $$;

CREATE FUNCTION recsys_similar_items(int, top_n int)
RETURNS TABLE (product_id int, similarity float8, rank int)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE pid int := $1;
BEGIN
  IF pid IS NULL THEN RAISE EXCEPTION 'product_id must not be NULL' USING ERRCODE = '22004'; END IF;
  PERFORM standin.check(top_n);
  RETURN QUERY SELECT s.other, s.similarity,
      (row_number() OVER (ORDER BY s.similarity DESC, s.other))::int
    FROM standin.sim s WHERE s.product_id = pid ORDER BY 3 LIMIT top_n;
END $$;

CREATE FUNCTION recsys_user_history(user_id int, max_items int)
RETURNS TABLE (product_id int, weight float8, last_event timestamptz)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE uid int := user_id;
BEGIN
  IF uid IS NULL OR max_items IS NULL THEN
    RAISE EXCEPTION 'arguments must not be NULL' USING ERRCODE = '22004'; END IF;
  RETURN QUERY SELECT e.product_id, sum(e.weight), max(e.at) FROM standin.events e
    WHERE e.user_id = uid GROUP BY 1 ORDER BY 3 DESC, 1 LIMIT max_items;
END $$;
