-- load_quality_data.sql - load the Amazon Grocery 5-core and MovieLens small
-- logs (shared data sets, never copied into the repository) for
-- docs/quality.md.  Online Retail has its own loader (load_online_retail.sql).
--
--   psql -v datadir=/path/to/shared/data -f scripts/load_quality_data.sql
--
-- Creates (dropping them first) grocery_interactions and
-- movielens_interactions (user_id int, product_id int, event_type text,
-- event_time timestamptz): every review / every rating is one interaction,
-- the ids as the files have them.  Gives the event types 'review' and
-- 'rating' the weight 1 in recsys.event_weights (a rating's value is not
-- used: any rating counts as an interaction, as in the issue's protocol).
\set ON_ERROR_STOP on
\if :{?datadir}
\else
  \echo 'load_quality_data.sql: pass -v datadir=/path/to/shared/data'
  \quit
\endif
SET client_min_messages = warning;
DROP TABLE IF EXISTS grocery_interactions, movielens_interactions;
DROP TABLE IF EXISTS pg_temp.quality_stage;
CREATE TEMP TABLE quality_stage (user_id int, item_id int, event_type text, ts bigint, event_time timestamptz,
                                 rating numeric);

\set grocery_csv :datadir '/amazon_grocery_5core/interactions.csv'
\set movielens_csv :datadir '/movielens_latest_small/interactions.csv'
-- \copy does not expand psql variables itself: build the command, then run it.
\set copy_cmd '\\copy quality_stage (user_id, item_id, event_type, ts, event_time) FROM ' :'grocery_csv' ' WITH (FORMAT csv, HEADER true)'
:copy_cmd
CREATE TABLE grocery_interactions AS
    SELECT user_id, item_id AS product_id, event_type, event_time FROM quality_stage;
TRUNCATE quality_stage;
\set copy_cmd '\\copy quality_stage FROM ' :'movielens_csv' ' WITH (FORMAT csv, HEADER true)'
:copy_cmd
CREATE TABLE movielens_interactions AS
    SELECT user_id, item_id AS product_id, event_type, event_time FROM quality_stage;
DROP TABLE quality_stage;
INSERT INTO recsys.event_weights VALUES ('review', 1), ('rating', 1)
    ON CONFLICT (event_type) DO UPDATE SET weight = EXCLUDED.weight;
ANALYZE grocery_interactions, movielens_interactions;
SELECT 'grocery_interactions' AS relation, count(*) AS events, count(DISTINCT user_id) AS users,
       count(DISTINCT product_id) AS products, min(event_time), max(event_time) FROM grocery_interactions
UNION ALL
SELECT 'movielens_interactions', count(*), count(DISTINCT user_id), count(DISTINCT product_id),
       min(event_time), max(event_time) FROM movielens_interactions;
