-- recipe_online_retail.sql - UCI Online Retail as a shop has it (docs/sql.md,
-- "Loading real logs"): numeric customer ids, text stock codes, purchases and
-- cancels with their quantity.  test/source_realdata_test.sh runs it.
--
--   cd /path/to/shared/data && psql -f /path/to/recsys/scripts/recipe_online_retail.sql
CREATE TABLE retail_log (customer_id int, stock_code text, action text, epoch bigint, event_time timestamptz,
                         invoice_no text, quantity int, unit_price numeric, country text);
\copy retail_log FROM 'online_retail_uci_tail/interactions.csv' WITH (FORMAT csv, HEADER true)
-- A cancel's quantity is negative in the log: the view gives the quantity,
-- the weight says it counts against the product.
CREATE VIEW retail_events AS
    SELECT customer_id, stock_code, action, event_time, abs(quantity) AS quantity FROM retail_log;
UPDATE recsys.event_weights SET weight = 1 WHERE event_type = 'purchase';
INSERT INTO recsys.event_weights VALUES ('cancel', -1);
SELECT * FROM recsys_set_source('retail_events', 'customer_id', 'stock_code', 'action', 'event_time', 'quantity');
SELECT users, items, interactions_used, interactions_ignored FROM recsys_train();
