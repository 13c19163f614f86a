\set SHOW_CONTEXT never
-- The DBA's configuration tables are extension config tables: pg_dump keeps
-- their rows, and restoring them over the seeded rows replaces, not clashes.
SELECT unnest(extconfig)::regclass AS config_table FROM pg_extension WHERE extname = 'recsys' ORDER BY 1;

-- What a restore does: insert the dumped rows after CREATE EXTENSION seeded.
INSERT INTO recsys.event_weights VALUES ('view', 1.5), ('like', 4);
SELECT * FROM recsys.event_weights ORDER BY event_type;
INSERT INTO recsys.config VALUES (true, 'interactions', 20, 5);
SELECT source_relation, neighbors, keep_models FROM recsys.config;

-- Put the defaults back.
DELETE FROM recsys.event_weights WHERE event_type = 'like';
UPDATE recsys.event_weights SET weight = 1 WHERE event_type = 'view';
UPDATE recsys.config SET neighbors = 50, keep_models = 3;

-- Pointing training at another relation through the persistent setting.
CREATE SCHEMA shop;
CREATE TABLE shop.events AS SELECT * FROM interactions WHERE user_id IN (1, 2);
UPDATE recsys.config SET source_relation = 'shop.events';
SELECT users, items FROM recsys_train();
SELECT source_relation FROM recsys_models WHERE active;
-- Recommending reads history from the model's relation: u3 is unknown there.
SELECT user_id, product_id, source FROM recsys_recommend(ARRAY[3], 2);
UPDATE recsys.config SET source_relation = 'interactions';
SELECT users, items FROM recsys_train();
SELECT source_relation FROM recsys_models WHERE active;

-- A role without privileges gets a permission error, not a crash; with the
-- grants docs/operations.md lists, it can recommend but not train.
CREATE ROLE recsys_app;
SET ROLE recsys_app;
SELECT * FROM recsys_recommend(ARRAY[1], 2);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
GRANT USAGE ON SCHEMA recsys TO recsys_app;
GRANT SELECT ON ALL TABLES IN SCHEMA recsys TO recsys_app;
GRANT SELECT ON interactions TO recsys_app;
SET ROLE recsys_app;
SELECT user_id, product_id, source FROM recsys_recommend(ARRAY[1], 2);
SELECT product_id FROM recsys_similar_items(10, 1);
SELECT * FROM recsys_train();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
REVOKE ALL ON ALL TABLES IN SCHEMA recsys FROM recsys_app;
REVOKE ALL ON SCHEMA recsys FROM recsys_app;
REVOKE ALL ON interactions FROM recsys_app;
DROP ROLE recsys_app;
