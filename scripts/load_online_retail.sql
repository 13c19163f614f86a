-- load_online_retail.sql - load the UCI Online Retail tail (shared data set,
-- never copied into the repository) as purchases for the recommender.
--
--   psql -v datadir=/path/to/shared/data -f scripts/load_online_retail.sql
--
-- Reads :datadir/online_retail_uci_tail/interactions.csv (and items.csv for
-- the descriptions, when present) with psql's \copy, so the file only has to
-- be readable by the client.  Creates (dropping them first):
--   retail_items(product_id int, stock_code text, description text)
--       product_id = dense_rank() over the stock code (text order, "C" collation)
--   retail_interactions(user_id int, product_id int, event_type text, event_time timestamptz)
--       only event_type = 'purchase' rows, one row per invoice line, non-product
--       codes (POST, DOT, M, D, C2, CRUK, BANK CHARGES) left out.

\set ON_ERROR_STOP on
\if :{?datadir}
\else
  \echo 'load_online_retail.sql: pass -v datadir=/path/to/shared/data'
  \quit
\endif

SET client_min_messages = warning;
DROP TABLE IF EXISTS retail_interactions, retail_items;
DROP TABLE IF EXISTS pg_temp.retail_stage, pg_temp.retail_item_desc;

CREATE TEMP TABLE retail_stage (
    user_id    text,
    item_id    text,
    event_type text,
    ts         bigint,
    event_time timestamptz,
    invoice_no text,
    quantity   int,
    unit_price numeric,
    country    text
);
CREATE TEMP TABLE retail_item_desc (item_id text, description text);

\set retail_csv :datadir '/online_retail_uci_tail/interactions.csv'
\set items_csv  :datadir '/online_retail_uci_tail/items.csv'
\echo loading :retail_csv
-- \copy does not expand psql variables itself: build the command, then run it.
\set copy_cmd '\\copy retail_stage FROM ' :'retail_csv' ' WITH (FORMAT csv, HEADER true)'
:copy_cmd
\set copy_cmd '\\copy retail_item_desc FROM ' :'items_csv' ' WITH (FORMAT csv, HEADER true)'
:copy_cmd

CREATE TABLE retail_items (
    product_id  int PRIMARY KEY,
    stock_code  text NOT NULL UNIQUE,
    description text
);

-- Non-product codes: postage, dotcom postage, manual, discount, carriage,
-- charity, bank charges.  (The full UCI year also has AMAZONFEE, S, B, PADS;
-- they do not occur in this tail.)
INSERT INTO retail_items (product_id, stock_code, description)
SELECT dense_rank() OVER (ORDER BY c.code COLLATE "C")::int, c.code, d.description
FROM (SELECT DISTINCT btrim(item_id) AS code
      FROM retail_stage
      WHERE event_type = 'purchase'
        AND btrim(item_id) <> ''
        AND upper(btrim(item_id)) NOT IN ('POST', 'DOT', 'M', 'D', 'C2', 'CRUK',
                                          'BANK CHARGES')) c
LEFT JOIN retail_item_desc d ON d.item_id = c.code;

CREATE TABLE retail_interactions (
    user_id    int,
    product_id int,
    event_type text,
    event_time timestamptz
);

INSERT INTO retail_interactions (user_id, product_id, event_type, event_time)
SELECT s.user_id::int, i.product_id, 'purchase', s.event_time
FROM retail_stage s
JOIN retail_items i ON i.stock_code = btrim(s.item_id)
WHERE s.event_type = 'purchase'
  AND s.user_id ~ '^[0-9]+$'
ORDER BY s.event_time, s.user_id::int, i.product_id;

CREATE INDEX retail_interactions_user_id_idx ON retail_interactions (user_id);
ANALYZE retail_items;
ANALYZE retail_interactions;
RESET client_min_messages;

SELECT (SELECT count(*) FROM retail_stage)                       AS csv_rows,
       count(*)                                                  AS purchases,
       count(DISTINCT user_id)                                   AS users,
       count(DISTINCT product_id)                                AS products,
       count(DISTINCT (user_id, product_id))                     AS user_item_pairs,
       min(event_time)                                           AS first_event,
       max(event_time)                                           AS last_event
FROM retail_interactions;
