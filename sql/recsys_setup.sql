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
