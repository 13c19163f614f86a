-- Model settings and recsys_tune (docs/sql.md "Model settings", "recsys_tune").
--
-- A small log: 30 users, 12 products, 21 days; the newest event is
-- 2024-01-22 00:00, so with test_days 3 the test window starts 2024-01-19
-- and the validation window 2024-01-16.  One event lies a microsecond
-- before the test window, so that the relation of the events before the test
-- window has its newest event there (see the second method below).
\set SHOW_CONTEXT never
CREATE TABLE tune_events (user_id int, product_id int, event_type text, event_time timestamptz);
INSERT INTO tune_events
SELECT u, 1 + (u * 7 + d * 3 + (u * d) % 5) % 12,
       CASE WHEN (u + d) % 3 = 0 THEN 'view' ELSE 'purchase' END,
       '2024-01-01 00:00+00'::timestamptz + d * interval '1 day' + u * interval '1 minute'
  FROM generate_series(1, 30) u, generate_series(0, 20) d
 WHERE (u * 13 + d * 7) % 4 = 0;
INSERT INTO tune_events VALUES (1, 1, 'purchase', '2024-01-22 00:00+00'),
                               (2, 2, 'purchase', '2024-01-18 23:59:59.999999+00');

-- 1. Each similarity against the same formula in plain SQL (docs/sql.md),
-- on every pair of the model (K = 0 keeps all).  w(u,i) sums the event
-- weights (view 1, purchase 5); x is the weighted matrix.
CREATE TABLE tune_ref AS
WITH m AS (SELECT e.user_id AS u, e.product_id AS i, sum(w.weight) AS w
             FROM tune_events e JOIN recsys.event_weights w USING (event_type)
            WHERE w.weight > 0 GROUP BY 1, 2),
     n_items AS (SELECT count(DISTINCT i)::float8 AS n FROM m),
     iu AS (SELECT i, count(*) AS n FROM m GROUP BY i),            -- |U_i|
     ui AS (SELECT u, count(*) AS n FROM m GROUP BY u),            -- |I_u|
     idf AS (SELECT u, greatest(0, ln((SELECT n FROM n_items) / (1 + n))) AS idf FROM ui),
     co AS (SELECT a.i, b.i AS j, a.u FROM m a JOIN m b ON a.u = b.u AND a.i <> b.i),
     tf AS (SELECT i, sqrt(sum(idf.idf ^ 2)) AS norm FROM m JOIN idf USING (u) GROUP BY i)
-- binary, cosine, shrink 2: |U_i & U_j| / (sqrt|U_i| sqrt|U_j| + 2)
SELECT 'binary' AS method, co.i, co.j, count(*) / (sqrt(x.n) * sqrt(y.n) + 2) AS sim
  FROM co JOIN iu x ON x.i = co.i JOIN iu y ON y.i = co.j GROUP BY co.i, co.j, x.n, y.n
UNION ALL
-- tfidf, cosine, shrink 5: x(u,i) = idf(u) = max(0, ln(N / (1 + |I_u|)))
SELECT 'tfidf', co.i, co.j, sum(idf.idf ^ 2) / (x.norm * y.norm + 5)
  FROM co JOIN idf USING (u) JOIN tf x ON x.i = co.i JOIN tf y ON y.i = co.j GROUP BY co.i, co.j, x.norm, y.norm
UNION ALL
-- jaccard, shrink 1: |U_i & U_j| / (|U_i| + |U_j| - |U_i & U_j| + 1)
SELECT 'jaccard', co.i, co.j, count(*) / (x.n + y.n - count(*) + 1.0)
  FROM co JOIN iu x ON x.i = co.i JOIN iu y ON y.i = co.j GROUP BY co.i, co.j, x.n, y.n
UNION ALL
-- binary rp3beta, alpha 0.5, beta 0.3:
--   sum_u (1/|U_i|)^0.5 (1/|I_u|)^0.5 / |U_j|^0.3
SELECT 'rp3beta', co.i, co.j, sum((1.0 / x.n) ^ 0.5 * (1.0 / ui.n) ^ 0.5) / y.n ^ 0.3
  FROM co JOIN ui USING (u) JOIN iu x ON x.i = co.i JOIN iu y ON y.i = co.j GROUP BY co.i, co.j, x.n, y.n;
DELETE FROM tune_ref WHERE NOT sim > 0;

CREATE FUNCTION pg_temp.compare(m text) RETURNS TABLE (method text, pairs bigint, missing bigint, same boolean)
LANGUAGE sql AS $$
    WITH got AS (SELECT n.item_id AS i, t.j, t.sim
                   FROM recsys.neighbors n, unnest(n.neighbor_ids, n.sims) AS t(j, sim)
                  WHERE n.model_id = (SELECT model_id FROM recsys.active_model)),
         ref AS (SELECT i, j, sim FROM tune_ref r WHERE r.method = m)
    SELECT m, count(*), count(*) FILTER (WHERE got.sim IS NULL OR ref.sim IS NULL),
           coalesce(max(abs(got.sim - ref.sim) / ref.sim) < 1e-12, false)
      FROM got FULL JOIN ref USING (i, j)
$$;

SELECT users, items FROM recsys_train(source => 'tune_events',
    settings => '{"weighting": "binary", "shrink": 2, "neighbors": 0}');
SELECT * FROM pg_temp.compare('binary');
SELECT count(*) FROM recsys_train(source => 'tune_events',
    settings => '{"weighting": "tfidf", "shrink": 5, "neighbors": 0}');
SELECT * FROM pg_temp.compare('tfidf');
SELECT count(*) FROM recsys_train(source => 'tune_events',
    settings => '{"weighting": "binary", "similarity": "jaccard", "shrink": 1, "neighbors": 0}');
SELECT * FROM pg_temp.compare('jaccard');
SELECT count(*) FROM recsys_train(source => 'tune_events',
    settings => '{"weighting": "binary", "similarity": "rp3beta", "alpha": 0.5, "beta": 0.3, "neighbors": 0}');
SELECT * FROM pg_temp.compare('rp3beta');
-- The model records the settings it was trained with, defaults filled in
-- (besides the source's mapping, which recsys_source tests).
SELECT settings - ARRAY['source', 'weights', 'similarity_method', 'user_column', 'item_column', 'event_column', 'time_column', 'value_column', 'user_type', 'item_type', 'half_life_days'] AS settings FROM recsys_models WHERE active;

-- 2. Settings: the configuration, overrides, defaults, bad input.
SELECT recsys.resolve_settings('{"weighting": "bm25"}');
SELECT recsys.resolve_settings('{"similarity": "asymmetric_cosine", "shrink": 10}');
UPDATE recsys.similarity_config SET similarity = 'rp3beta', alpha = 0.8;
SELECT recsys.model_settings(NULL);
-- Overriding the similarity drops the configured alpha; the weighting stays.
SELECT recsys.model_settings('{"similarity": "cosine", "shrink": 20}');
UPDATE recsys.similarity_config SET similarity = 'cosine', alpha = NULL;
SELECT recsys.model_settings('{"weighting": "tfidf", "shrink": 3}');
SELECT recsys.model_settings('{"wieghting": "tfidf"}');
\echo :LAST_ERROR_SQLSTATE
SELECT recsys.model_settings('{"weighting": "tf-idf"}');
\echo :LAST_ERROR_SQLSTATE
SELECT recsys.model_settings('{"alpha": 0.5}');
\echo :LAST_ERROR_SQLSTATE
SELECT recsys.model_settings('{"shrink": "big"}');
\echo :LAST_ERROR_SQLSTATE
SELECT recsys.model_settings('[1]');
\echo :LAST_ERROR_SQLSTATE
UPDATE recsys.similarity_config SET weighting = 'tfidf-ish';
\echo :LAST_ERROR_SQLSTATE

-- 3. recsys_tune on three candidates (k = 5, test_days = 3).  Its progress
-- NOTICEs carry timings: not shown here.
SET client_min_messages = warning;
CREATE TABLE tuned AS
SELECT * FROM recsys_tune(5, 3, candidates => '[{"weighting": "binary", "shrink": 2},
                                                 {"weighting": "tfidf", "shrink": 5, "neighbors": 10},
                                                 {"weighting": "binary", "similarity": "jaccard"}]',
                          source => 'tune_events');
-- Validation trials have no CI (nDCG alone chooses); the test rows have.
SELECT stage, label, trial, chosen, settings, users_evaluated, users_without_history,
       cutoff AT TIME ZONE 'UTC' AS cutoff_utc, ndcg_lo <= ndcg AND ndcg <= ndcg_hi AS ndcg_in_ci
  FROM tuned ORDER BY stage = 'test', trial, label;
-- The chosen one has the highest validation nDCG (ties: the earlier one).
SELECT trial FROM tuned WHERE stage = 'validation' ORDER BY ndcg DESC, trial LIMIT 1;
SELECT trial FROM tuned WHERE stage = 'validation' AND chosen;

-- Second method, validation: recsys_evaluate on the events before the test
-- window.  Its newest event is 2024-01-18 23:59:59.999999, so its cutoff is
-- a microsecond before the validation window's, and no event lies between.
CREATE TABLE tune_trunc AS SELECT * FROM tune_events WHERE event_time < '2024-01-19 00:00+00';
SELECT t.trial, t.users_evaluated = e.users_evaluated AS same_users,
       abs(t.ndcg - e.ndcg) < 1e-12 AND abs(t."precision" - e."precision") < 1e-12
       AND abs(t.recall - e.recall) < 1e-12 AS same
  FROM tuned t CROSS JOIN LATERAL recsys_evaluate(5, 3, source => 'tune_trunc', settings => t.settings) e
 WHERE t.stage = 'validation' ORDER BY t.trial;
-- Test: the chosen setting, the 1.0 defaults and popularity are
-- recsys_evaluate's figures on the whole log.
SELECT t.label, abs(t."precision" - CASE WHEN t.label = 'popularity' THEN e.pop_precision ELSE e."precision" END) < 1e-12
       AND (t.label = 'popularity' OR (abs(t.ndcg - e.ndcg) < 1e-12 AND t.ndcg_lo = e.ndcg_lo
                                       AND t.precision_hi = e.precision_hi)) AS same
  FROM tuned t CROSS JOIN LATERAL recsys_evaluate(5, 3, source => 'tune_events',
           settings => CASE WHEN t.label = 'popularity' THEN NULL ELSE t.settings END) e
 WHERE t.stage = 'test' ORDER BY t.label;
-- Every trial is kept with its settings.
SELECT tune_stage, count(*), bool_and(settings ? 'weighting' AND settings ? 'source') AS with_settings
  FROM recsys_evaluations WHERE tune_stage IS NOT NULL GROUP BY tune_stage ORDER BY tune_stage;

-- 4. The budget: one configuration, or a time limit that allows one.
SELECT count(*) FILTER (WHERE stage = 'validation') AS tried
  FROM recsys_tune(5, 3, max_configs => 1, source => 'tune_events');
SELECT count(*) FILTER (WHERE stage = 'validation') AS tried
  FROM recsys_tune(5, 3, max_seconds => 1e-6, source => 'tune_events');
-- The default grid: 12 candidates, the 1.0 defaults first.
SELECT jsonb_array_length(recsys.tune_grid()) AS candidates, recsys.tune_grid() -> 0 AS first;

-- 5. apply => true: the chosen settings become the configuration, and the
-- next training records them.
SELECT settings AS chosen FROM recsys_tune(5, 3, apply => true, max_configs => 3, source => 'tune_events')
 WHERE stage = 'validation' AND chosen \gset
SELECT weighting, similarity, shrink, alpha, beta, k1, b FROM recsys.similarity_config;
SELECT neighbors FROM recsys.config;
SELECT count(*) FROM recsys_train(source => 'tune_events');
SELECT (settings - ARRAY['source', 'weights', 'similarity_method', 'user_column', 'item_column', 'event_column', 'time_column', 'value_column', 'user_type', 'item_type', 'half_life_days']) = :'chosen'::jsonb AS trained_with_chosen
  FROM recsys_models WHERE active;

-- 6. Bad input.
SELECT count(*) FROM recsys_tune(5, 3, candidates => '{}', source => 'tune_events');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM recsys_tune(5, 3, candidates => '[{"similarity": "cosine", "alpha": 0.5}]', source => 'tune_events');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM recsys_tune(5, 3, max_configs => 0, source => 'tune_events');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM recsys_tune(5, 20, source => 'tune_events');
\echo :LAST_ERROR_SQLSTATE

-- Back to the defaults for the tests that follow.
RESET client_min_messages;
UPDATE recsys.similarity_config SET weighting = 'weights', similarity = 'cosine', shrink = 0,
       alpha = NULL, beta = NULL, k1 = NULL, b = NULL;
UPDATE recsys.config SET neighbors = 50;
DROP TABLE tune_events, tune_ref, tune_trunc, tuned;
