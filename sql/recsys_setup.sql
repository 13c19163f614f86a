-- Installs the extension and the shop's tables as the demo creates them.
CREATE EXTENSION recsys;
CREATE TABLE interactions (user_id int, product_id int, event_type text, event_time timestamptz);
CREATE INDEX ON interactions (user_id);
-- Seeded weights.
SELECT * FROM recsys.event_weights ORDER BY weight;
-- Default configuration.
SELECT source_relation, neighbors, keep_models FROM recsys.config;
-- Nothing trained yet.
SELECT count(*) FROM recsys_models;
-- Before any training: a clear error with a hint (SQLSTATE 55000).
\set SHOW_CONTEXT never
SELECT * FROM recsys_recommend(ARRAY[1], 5);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_similar_items(1, 5);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_user_history(1, 5);
\echo :LAST_ERROR_SQLSTATE
-- Training an empty relation fails clearly and creates no model.
SELECT * FROM recsys_train();
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM recsys_models;
