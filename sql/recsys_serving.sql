-- Serving that shops can use (issue #8): per-call filters (include_items,
-- exclude_items), the recommendable items (recsys_set_recommendable),
-- baskets (recsys_recommend_for_items), explanations (recsys_explain) and
-- bounded work.  Scores are compared with values computed by hand on a tiny
-- log (below), written as SQL expressions; each check prints whether the
-- result is the hand value.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE SCHEMA store;
RESET client_min_messages;

-- Keep what earlier tests configured, to restore it at the end.
CREATE TEMP TABLE saved_weights AS SELECT * FROM recsys.event_weights;
CREATE TEMP TABLE saved_similarity AS SELECT * FROM recsys.similarity_config;
CREATE TEMP TABLE saved_config AS SELECT neighbors, half_life_days FROM recsys.config;

-- The log: 4 users, 6 items, every event a 'buy' of weight 1, so w(u,i) = 1
-- and sim(i,j) = |U_i & U_j| / sqrt(|U_i| |U_j|) (cosine, no shrink):
--   u1: 1 2 3    u2: 1 2 4    u3: 2 3 5    u4: 1 4 6
--   U_1 = {1,2,4}  U_2 = {1,2,3}  U_3 = {1,3}  U_4 = {2,4}  U_5 = {3}  U_6 = {4}
--   sim(1,2) = 2/3   sim(1,3) = 1/sqrt6  sim(1,4) = 2/sqrt6  sim(1,6) = 1/sqrt3
--   sim(2,3) = 2/sqrt6  sim(2,4) = 1/sqrt6  sim(2,5) = 1/sqrt3
--   sim(3,5) = 1/sqrt2  sim(4,6) = 1/sqrt2  (the other pairs share no user)
--   popularity (distinct users): 1: 3, 2: 3, 3: 2, 4: 2, 5: 1, 6: 1
-- So u1 (history 1 2 3): score(5) = 1/sqrt3 + 1/sqrt2 = 1.2845,
--   score(4) = 2/sqrt6 + 1/sqrt6 = 1.2247, score(6) = 1/sqrt3 = 0.5774;
-- u4 (history 1 4 6): score(2) = 2/3 + 1/sqrt6 = 1.0749, score(3) = 1/sqrt6,
--   5 shares no user with 1, 4 or 6.
CREATE TABLE store.events (user_id int, product_id int, event_type text, event_time timestamptz);
INSERT INTO store.events
SELECT u, i, 'buy', timestamptz '2026-01-01' + (u * 10 + i) * interval '1 hour'
  FROM (VALUES (1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 4), (3, 2), (3, 3), (3, 5),
               (4, 1), (4, 4), (4, 6)) v(u, i);
DELETE FROM recsys.event_weights;
INSERT INTO recsys.event_weights VALUES ('buy', 1);
UPDATE recsys.similarity_config SET weighting = 'weights', similarity = 'cosine', shrink = 0,
       alpha = NULL, beta = NULL, k1 = NULL, b = NULL;
UPDATE recsys.config SET neighbors = 50, half_life_days = NULL;
SELECT source_relation, user_type, item_type FROM recsys_set_source('store.events', 'user_id', 'product_id',
                                                                     'event_type', 'event_time');
SELECT users, items FROM recsys_train();

-- The hand values.
CREATE TEMP TABLE hand (user_id int, product_id int, score float8, source text);
INSERT INTO hand VALUES
    (1, 5, 1 / sqrt(3) + 1 / sqrt(2), 'cf'), (1, 4, 3 / sqrt(6), 'cf'), (1, 6, 1 / sqrt(3), 'cf'),
    (4, 2, 2.0 / 3 + 1 / sqrt(6), 'cf'), (4, 3, 1 / sqrt(6), 'cf'), (4, 5, 1, 'popular'),
    (99, 1, 3, 'popular'), (99, 2, 3, 'popular'), (99, 3, 2, 'popular');
-- Rows against their hand values; a row missing on either side shows NULLs.
CREATE FUNCTION pg_temp.matches(got float8, want float8) RETURNS boolean LANGUAGE sql AS
    'SELECT abs(got - want) < 1e-12';

-- 1. Unfiltered, as before: top 3 for u1, u4 and an unknown user.
SELECT r.user_id, r.product_id, r.rank, r.source, pg_temp.matches(r.score, h.score) AS as_by_hand
  FROM recsys_recommend(ARRAY[1, 4, 99], 3) r
  FULL JOIN hand h ON (h.user_id, h.product_id, h.source) = (r.user_id, r.product_id, r.source)
 ORDER BY h.user_id, r.rank;
-- The two- and three-argument calls of 1.0 still work.
SELECT count(*) FROM recsys_recommend(ARRAY[1], 3);
SELECT count(*) FROM recsys_recommend(ARRAY[1], 3, false);

-- The neighbour cache (recsys.neighbor_cache_size) keeps the lists this
-- session has read, per model.  A model trained on another log is served
-- from the next call on: without u3, U_1 = {1,2,4}, U_2 = {1,2}, U_3 = {1},
-- U_4 = {2,4}, U_6 = {4} and 5 has no user, so for u1 (history 1 2 3)
-- score(4) = 2/sqrt6 + 1/2 and score(6) = 1/sqrt3, and no fill is left
-- (1, 2, 3 are history, 4 and 6 listed, 5 not in the model).
-- The popularity list is cached per model as well: the unknown user's fill
-- among 2..6 is 2 (3 users), then 3 (2 users, ranked before 4).
SELECT product_id, score, source FROM recsys_recommend(ARRAY[99], 2, include_items => ARRAY[2, 3, 4, 5, 6])
 ORDER BY rank;
SELECT model_id AS first_model FROM recsys.active_model \gset
SELECT pinned FROM recsys_pin(:first_model);   -- kept whatever retention drops
CREATE TEMP TABLE u3_events AS SELECT * FROM store.events WHERE user_id = 3;
DELETE FROM store.events WHERE user_id = 3;
SELECT users, items FROM recsys_train();
SELECT r.product_id, r.rank, r.source, pg_temp.matches(r.score, h.score) AS as_by_hand
  FROM recsys_recommend(ARRAY[1], 3) r
  FULL JOIN (VALUES (4, 2 / sqrt(6) + 0.5), (6, 1 / sqrt(3))) h(product_id, score) USING (product_id)
 ORDER BY r.rank;
-- ... and read again for this model: without u3, 2 and 4 have 2 users each.
SELECT product_id, score, source FROM recsys_recommend(ARRAY[99], 2, include_items => ARRAY[2, 3, 4, 5, 6])
 ORDER BY rank;
-- Back to the first model (an id this session cached before): its values.
INSERT INTO store.events SELECT * FROM u3_events;
SELECT count(*) AS activated FROM recsys_activate(:first_model);
SELECT pinned FROM recsys_pin(:first_model, false);
SELECT r.product_id, r.rank, r.source, pg_temp.matches(r.score, h.score) AS as_by_hand
  FROM recsys_recommend(ARRAY[1], 3) r
  JOIN hand h ON (h.user_id, h.product_id, h.source) = (r.user_id, r.product_id, r.source)
 ORDER BY r.rank;
-- Served without the cache, every list is the same.
CREATE TEMP TABLE cached AS SELECT * FROM recsys_recommend(ARRAY[1, 2, 3, 4, 99], 6);
SET recsys.neighbor_cache_size = 0;
SELECT count(*) AS rows, count(c.*) AS same_as_cached
  FROM recsys_recommend(ARRAY[1, 2, 3, 4, 99], 6) r
  LEFT JOIN cached c ON (c.user_id, c.product_id, c.score, c.rank, c.source)
                      = (r.user_id, r.product_id, r.score, r.rank, r.source);
RESET recsys.neighbor_cache_size;
-- So is every filtered list (the fill walks only the allowed items' entries
-- of the cached popularity list; without the cache, it reads the list).
CREATE TEMP TABLE cached_f AS
  SELECT * FROM recsys_recommend(ARRAY[1, 2, 3, 4, 99], 6, include_items => ARRAY[1, 3, 5, 6, 7]);
SET recsys.neighbor_cache_size = 0;
SELECT count(*) AS rows, count(c.*) AS same_as_cached
  FROM recsys_recommend(ARRAY[1, 2, 3, 4, 99], 6, include_items => ARRAY[1, 3, 5, 6, 7]) r
  LEFT JOIN cached_f c ON (c.user_id, c.product_id, c.score, c.rank, c.source)
                        = (r.user_id, r.product_id, r.score, r.rank, r.source);
RESET recsys.neighbor_cache_size;

-- 2. The attribute pattern: products of a category in a price range.
CREATE TABLE store.products (product_id int PRIMARY KEY, category text, price numeric, in_stock boolean);
INSERT INTO store.products VALUES
    (1, 'Books', 45, true), (2, 'Books', 28, false), (3, 'Games', 9, true),
    (4, 'Books', 22, true), (5, 'Games', 12, true), (6, 'Books', 15, true);
-- Unfiltered, u1's top 2 are 5 and 4: no 6.
SELECT product_id, source FROM recsys_recommend(ARRAY[1], 2) ORDER BY rank;
-- Books at 10..30 are 2, 4 and 6; 2 is u1's history, so the top 2 are 4 and
-- 6, both from collaborative filtering, chosen among the allowed items.
SELECT r.product_id, r.rank, r.source, pg_temp.matches(r.score, h.score) AS as_by_hand
  FROM recsys_recommend(ARRAY[1], 2,
         include_items => ARRAY(SELECT product_id FROM store.products
                                 WHERE category = 'Books' AND price BETWEEN 10 AND 30)) r
  LEFT JOIN hand h ON (h.user_id, h.product_id) = (r.user_id, r.product_id)
 ORDER BY r.rank;
-- With more room than allowed candidates, nothing else is added: the fill
-- is filtered too (1, 2, 3 are history; 4 and 6 listed; 5 is a game).
SELECT product_id, source FROM recsys_recommend(ARRAY[1], 5,
         include_items => ARRAY(SELECT product_id FROM store.products
                                 WHERE category = 'Books' AND price BETWEEN 10 AND 30)) ORDER BY rank;
-- exclude_items: u1 without 5 -> 4, 6.
SELECT product_id, source FROM recsys_recommend(ARRAY[1], 2, exclude_items => ARRAY[5]) ORDER BY rank;
-- Both, and an unknown user: the popularity fill among the allowed items.
SELECT user_id, product_id, score, source
  FROM recsys_recommend(ARRAY[99, 4], 3, include_items => ARRAY[2, 3, 5, 6, 1000], exclude_items => ARRAY[3])
 ORDER BY user_id, rank;
-- An empty include list allows nothing; an empty exclude list denies nothing.
SELECT count(*) FROM recsys_recommend(ARRAY[1, 99], 3, include_items => '{}');
SELECT count(*) FROM recsys_recommend(ARRAY[1, 99], 3, exclude_items => '{}');
-- exclude_seen => false with a filter: history items may come back if allowed.
SELECT product_id, source FROM recsys_recommend(ARRAY[1], 3, false, include_items => ARRAY[1, 6]) ORDER BY rank;

-- 3. Recommendable items: a view of the products in stock (2 is not).
CREATE VIEW store.in_stock AS SELECT product_id FROM store.products WHERE in_stock;
SELECT recsys_set_recommendable('store.in_stock');
SELECT recommendable_relation, recommendable_column FROM recsys.config;
-- u4 loses 2 from collaborative filtering; the unknown user loses it from
-- the popularity fill (1, 3, 4 instead of 1, 2, 3).
SELECT user_id, product_id, score, source FROM recsys_recommend(ARRAY[4, 99], 3) ORDER BY user_id, rank;
-- With include_items: both apply.
SELECT user_id, product_id, source FROM recsys_recommend(ARRAY[99], 3, include_items => ARRAY[2, 4, 6])
 ORDER BY rank;
-- Stock changes are seen at the next call.
UPDATE store.products SET in_stock = true WHERE product_id = 2;
SELECT product_id FROM recsys_recommend(ARRAY[99], 3) ORDER BY rank;
UPDATE store.products SET in_stock = false WHERE product_id = 2;
-- The items are read in each call's snapshot (the query is prepared once per
-- backend): every change is seen by the next call, in the session that made
-- it and inside its transaction.  The unknown user gets the popularity
-- order 1, 2, 3, 4, 5, 6 among the items of store.shelf.
CREATE TABLE store.shelf (product_id int);
INSERT INTO store.shelf VALUES (1), (3), (5);
SELECT recsys_set_recommendable('store.shelf');
SELECT array_agg(product_id ORDER BY rank) AS shelf_135 FROM recsys_recommend(ARRAY[99], 3);
INSERT INTO store.shelf VALUES (2);
SELECT array_agg(product_id ORDER BY rank) AS shelf_1235 FROM recsys_recommend(ARRAY[99], 3);
DELETE FROM store.shelf WHERE product_id = 1;
SELECT array_agg(product_id ORDER BY rank) AS shelf_235 FROM recsys_recommend(ARRAY[99], 3);
UPDATE store.shelf SET product_id = 6 WHERE product_id = 5;
SELECT array_agg(product_id ORDER BY rank) AS shelf_236 FROM recsys_recommend(ARRAY[99], 3);
BEGIN;
DELETE FROM store.shelf;
SELECT count(*) AS empty_shelf FROM recsys_recommend(ARRAY[99], 3);
ROLLBACK;
SELECT array_agg(product_id ORDER BY rank) AS shelf_236 FROM recsys_recommend(ARRAY[99], 3);
-- Another relation of the same name, the column in another place.
DROP TABLE store.shelf;
CREATE TABLE store.shelf (sku text, product_id int);
INSERT INTO store.shelf VALUES ('x', 4), ('y', NULL);
SELECT array_agg(product_id ORDER BY rank) AS shelf_4 FROM recsys_recommend(ARRAY[99], 3);
-- Another relation: the view again (1, 3, 4 as above).
SELECT recsys_set_recommendable('store.in_stock');
SELECT array_agg(product_id ORDER BY rank) AS in_stock FROM recsys_recommend(ARRAY[99], 3);
DROP TABLE store.shelf;
-- Baskets are filtered too: basket {1} -> 2 (2/3), 4, 6, 3 without 2.
SELECT product_id, source FROM recsys_recommend_for_items(ARRAY[1], 5) ORDER BY rank;
-- Similar items are not: they describe the model, not what to show.
SELECT product_id FROM recsys_similar_items(1, 2) ORDER BY rank;
-- NULL clears it.
SELECT recsys_set_recommendable(NULL) IS NULL AS cleared;
SELECT recommendable_relation, recommendable_column FROM recsys.config;
SELECT product_id FROM recsys_recommend(ARRAY[99], 3) ORDER BY rank;
-- Bad input (the error names the column, type and what to do).
SELECT recsys_set_recommendable('store.in_stock', 'sku');
\echo :LAST_ERROR_SQLSTATE
SELECT recsys_set_recommendable('store.products', 'category');
\echo :LAST_ERROR_SQLSTATE
SELECT recsys_set_recommendable('store.products', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT recsys_set_recommendable('store.no_such_relation');
\echo :LAST_ERROR_SQLSTATE
CREATE SEQUENCE store.seq;
SELECT recsys_set_recommendable('store.seq');
\echo :LAST_ERROR_SQLSTATE
-- Renamed or dropped after it was configured: a clear error at the call.
SELECT recsys_set_recommendable('store.in_stock', 'product_id');
ALTER VIEW store.in_stock RENAME COLUMN product_id TO pid;
SELECT count(*) FROM recsys_recommend(ARRAY[1], 3);
\echo :LAST_ERROR_SQLSTATE
ALTER VIEW store.in_stock RENAME TO gone;
SELECT count(*) FROM recsys_recommend(ARRAY[1], 3);
\echo :LAST_ERROR_SQLSTATE
ALTER VIEW store.gone RENAME TO in_stock;
ALTER VIEW store.in_stock RENAME COLUMN pid TO product_id;
SELECT count(*) FROM recsys_recommend(ARRAY[1], 3);
SELECT recsys_set_recommendable(NULL) IS NULL AS cleared;

-- 4. Baskets: the given items as the history, weight 1 each.  Basket
-- {1, 2, 3} is u1's history: the same rows and scores.
SELECT count(*) AS rows, count(*) FILTER (WHERE b.score = r.score AND b.rank = r.rank AND b.source = r.source)
       AS same_as_u1
  FROM recsys_recommend_for_items(ARRAY[3, 1, 2], 5) b
  FULL JOIN recsys_recommend(ARRAY[1], 5) r USING (product_id);
-- Weights: {1: 2, 2: 1, 3: 1} -> 4: 2*2/sqrt6 + 1/sqrt6, 5: 1/sqrt3 + 1/sqrt2, 6: 2/sqrt3.
SELECT b.product_id, b.rank, b.source, pg_temp.matches(b.score, h.score) AS as_by_hand
  FROM recsys_recommend_for_items(ARRAY[1, 2, 3], 5, ARRAY[2, 1, 1]) b
  FULL JOIN (VALUES (4, 5 / sqrt(6)), (5, 1 / sqrt(3) + 1 / sqrt(2)), (6, 2 / sqrt(3))) h(product_id, score)
       USING (product_id)
 ORDER BY b.rank;
-- A repeated item counts twice, like a weight of 2.
SELECT count(*) FILTER (WHERE a.score = b.score) AS same
  FROM recsys_recommend_for_items(ARRAY[1, 1, 2, 3], 5) a
  JOIN recsys_recommend_for_items(ARRAY[1, 2, 3], 5, ARRAY[2, 1, 1]) b USING (product_id, rank);
-- Unknown items are ignored; a basket of unknown items gets the popularity fill.
SELECT count(*) AS same_as_u1 FROM recsys_recommend_for_items(ARRAY[1, 2, 3, 1000], 3) b
  JOIN recsys_recommend(ARRAY[1], 3) r USING (product_id, score, rank, source);
SELECT product_id, score, source FROM recsys_recommend_for_items(ARRAY[1000, 1001], 3) ORDER BY rank;
-- The given items are excluded, and the filters apply.
SELECT b.product_id, b.source, pg_temp.matches(b.score, h.score) AS as_by_hand
  FROM recsys_recommend_for_items(ARRAY[1], 4, include_items => ARRAY[1, 2, 3, 6], exclude_items => ARRAY[2]) b
  LEFT JOIN (VALUES (6, 1 / sqrt(3)), (3, 1 / sqrt(6))) h(product_id, score) USING (product_id)
 ORDER BY b.rank;

-- 5. Explanations: one row per history item, contribution = weight *
-- similarity.  u1 and 5: 2 (1/sqrt3) and 3 (1/sqrt2).
SELECT e.history_item, e.weight, e.source, pg_temp.matches(e.similarity, h.sim) AS sim_by_hand,
       e.contribution = e.weight * e.similarity AS w_times_sim
  FROM recsys_explain(1, 5) e
  FULL JOIN (VALUES (2, 1 / sqrt(3)), (3, 1 / sqrt(2))) h(history_item, sim) USING (history_item)
 ORDER BY history_item;
-- For every row recsys_recommend gives users 1-4 and an unknown user, the
-- contributions sum to its score exactly (added in the same order), with the
-- same source.
SELECT count(*) AS rows,
       count(*) FILTER (WHERE x.total = r.score AND x.source = r.source) AS sums_to_score
  FROM recsys_recommend(ARRAY[1, 2, 3, 4, 99], 6) r,
       LATERAL (SELECT sum(e.contribution) AS total, min(e.source) AS source
                  FROM recsys_explain(r.user_id, r.product_id) e) x;
-- A popularity item: one row, the popularity, no history item.
SELECT * FROM recsys_explain(4, 5);
SELECT * FROM recsys_explain(99, 1);
-- The same two read from the table, not the backend's popularity cache.
SET recsys.neighbor_cache_size = 0;
SELECT * FROM recsys_explain(4, 5);
SELECT * FROM recsys_explain(99, 1);
RESET recsys.neighbor_cache_size;
-- A product the model does not know: no rows.
SELECT count(*) FROM recsys_explain(1, 1000);

-- 6. Bad input, each new argument (SQLSTATE after each).
SELECT * FROM recsys_recommend(ARRAY[1], 3, include_items => ARRAY[4, NULL]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_recommend(ARRAY[1], 3, exclude_items => ARRAY[NULL::int]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_recommend(ARRAY[1], 3, include_items => ARRAY[[4, 5], [6, 1]]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_recommend(ARRAY[1], 3, exclude_items => ARRAY[[4, 5], [6, 1]]);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM recsys_recommend(ARRAY[1], 3, include_items => ARRAY(SELECT generate_series(1, 1000000)));
SELECT * FROM recsys_recommend(ARRAY[1], 3, include_items => ARRAY(SELECT generate_series(1, 1000001)));
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_recommend(ARRAY[1], 3, exclude_items => ARRAY(SELECT generate_series(1, 1000001)));
\echo :LAST_ERROR_SQLSTATE
-- Rows per call: user ids x top_n at most 100000.
SELECT count(*) FROM recsys_recommend(ARRAY(SELECT generate_series(1, 100)), 1000);
SELECT * FROM recsys_recommend(ARRAY(SELECT generate_series(1, 101)), 1000);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_recommend_for_items(NULL, 3);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_recommend_for_items(ARRAY[1], NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_recommend_for_items(ARRAY[1], 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_recommend_for_items(ARRAY[1], 1001);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_recommend_for_items(ARRAY[1, NULL], 3);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_recommend_for_items(ARRAY[1, 2], 3, ARRAY[1]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_recommend_for_items(ARRAY[1, 2], 3, ARRAY[1, NULL]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_recommend_for_items(ARRAY[1, 2], 3, ARRAY[1, 0]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_recommend_for_items(ARRAY[1, 2], 3, ARRAY[1, -2]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_recommend_for_items(ARRAY[1, 2], 3, ARRAY[1, 'NaN']::float8[]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_recommend_for_items(ARRAY[1, 2], 3, ARRAY[1, 'Infinity']::float8[]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_recommend_for_items(ARRAY[1], 3, include_items => ARRAY[NULL::int]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_recommend_for_items(ARRAY[1], 3, exclude_items => ARRAY[NULL::int]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_recommend_for_items(ARRAY(SELECT generate_series(1, 10001)), 3);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM recsys_recommend_for_items('{}', 3);
SELECT * FROM recsys_explain(NULL, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM recsys_explain(1, NULL);
\echo :LAST_ERROR_SQLSTATE

-- 7. Security.
SET client_min_messages = warning;
CREATE ROLE serving_owner;
CREATE ROLE serving_reader;
CREATE ROLE serving_mallory;
RESET client_min_messages;
CREATE TABLE public.serving_trapped (who text, superuser boolean, what text);
GRANT INSERT, SELECT ON public.serving_trapped TO PUBLIC;
GRANT USAGE ON SCHEMA store TO serving_owner, serving_reader, serving_mallory;
GRANT SELECT ON store.products TO serving_owner;
CREATE SCHEMA owners AUTHORIZATION serving_owner;
GRANT USAGE ON SCHEMA owners TO serving_reader;
-- A view of recommendable items owned by another role, whose code records
-- who runs it.
SET ROLE serving_owner;
CREATE FUNCTION owners.serving_spy() RETURNS boolean LANGUAGE sql VOLATILE AS $$
    INSERT INTO public.serving_trapped
    SELECT current_user, (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user), 'view';
    SELECT true
$$;
CREATE VIEW owners.stock AS SELECT product_id FROM store.products WHERE in_stock AND owners.serving_spy();
RESET ROLE;
SELECT recsys_set_recommendable('owners.stock');
-- Only the extension's owner (or whom it grants) may configure it.
SELECT has_function_privilege('public', 'recsys_set_recommendable(regclass, name)', 'EXECUTE') AS public_may_set;
SET ROLE serving_mallory;
SELECT recsys_set_recommendable(NULL);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- A reader with the documented grants and the events, but not the view: 42501.
GRANT USAGE ON SCHEMA recsys TO serving_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA recsys TO serving_reader;
GRANT SELECT ON store.events TO serving_reader;
SET ROLE serving_reader;
SELECT count(*) FROM recsys_recommend(ARRAY[1], 3);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM recsys_recommend_for_items(ARRAY[1], 3);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- With SELECT on the view: it is read as its owner, in a restricted
-- operation, whoever calls (the superuser here too).
GRANT SELECT ON owners.stock TO serving_reader;
SET ROLE serving_reader;
SELECT product_id FROM recsys_recommend(ARRAY[99], 3) ORDER BY rank;
RESET ROLE;
SELECT product_id FROM recsys_recommend(ARRAY[99], 3) ORDER BY rank;
SELECT DISTINCT who, superuser, what FROM public.serving_trapped;
TRUNCATE public.serving_trapped;
-- The view's code cannot do what only its caller could.
SET ROLE serving_owner;
CREATE OR REPLACE FUNCTION owners.serving_spy() RETURNS boolean LANGUAGE plpgsql VOLATILE AS
    $$ BEGIN ALTER ROLE serving_owner SUPERUSER; RETURN true; END $$;
RESET ROLE;
SELECT count(*) FROM recsys_recommend(ARRAY[99], 3);
\echo :LAST_ERROR_SQLSTATE
SELECT rolsuper AS owner_is_superuser FROM pg_roles WHERE rolname = 'serving_owner';
SELECT recsys_set_recommendable(NULL) IS NULL AS cleared;
-- search_path attack: = operators and functions in a schema put before
-- pg_catalog's in the caller's search_path are never called.
CREATE SCHEMA evil AUTHORIZATION serving_mallory;
SET ROLE serving_mallory;
CREATE FUNCTION evil.trap(what text) RETURNS boolean LANGUAGE sql AS $$
    INSERT INTO public.serving_trapped
    SELECT current_user, (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user), what;
    SELECT true
$$;
CREATE FUNCTION evil.eq4(int4, int4) RETURNS boolean LANGUAGE sql AS
    'SELECT evil.trap(''=(int4,int4)'') AND pg_catalog.int4eq($1, $2)';
CREATE FUNCTION evil.eq8(int8, int8) RETURNS boolean LANGUAGE sql AS
    'SELECT evil.trap(''=(int8,int8)'') AND pg_catalog.int8eq($1, $2)';
CREATE FUNCTION evil.eqt(text, text) RETURNS boolean LANGUAGE sql AS
    'SELECT evil.trap(''=(text,text)'') AND pg_catalog.texteq($1, $2)';
CREATE FUNCTION evil.gt4(int4, int4) RETURNS boolean LANGUAGE sql AS
    'SELECT evil.trap(''>(int4,int4)'') AND pg_catalog.int4gt($1, $2)';
CREATE FUNCTION evil.unnest(anyarray) RETURNS SETOF anyelement LANGUAGE sql AS
    'SELECT evil.trap(''unnest''); SELECT x FROM pg_catalog.unnest($1) x';
CREATE OPERATOR evil.= (LEFTARG = int4, RIGHTARG = int4, FUNCTION = evil.eq4);
CREATE OPERATOR evil.= (LEFTARG = int8, RIGHTARG = int8, FUNCTION = evil.eq8);
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.eqt);
CREATE OPERATOR evil.> (LEFTARG = int4, RIGHTARG = int4, FUNCTION = evil.gt4);
RESET ROLE;
SELECT recsys_set_recommendable('store.in_stock');
SET search_path = evil, pg_catalog, public;
SELECT count(*) FROM recsys_recommend(ARRAY[1, 4, 99], 3, include_items => ARRAY[2, 3, 4, 5, 6],
                                      exclude_items => ARRAY[6]);
SELECT count(*) FROM recsys_recommend_for_items(ARRAY[1, 2], 3, ARRAY[1, 2], ARRAY[3, 4, 5, 6], ARRAY[6]);
SELECT count(*) FROM recsys_explain(1, 5);
SELECT count(*) FROM recsys_explain(4, 5);
RESET search_path;
SELECT recsys_set_recommendable(NULL) IS NULL AS cleared;
SELECT count(*) AS trapped FROM public.serving_trapped;

-- 8. Typed ids: bigint users and text items (the same log).
CREATE TABLE store.events_txt AS
SELECT (9000000000 + user_id)::bigint AS customer, 'SKU-' || product_id AS sku, event_type, event_time
  FROM store.events;
CREATE TABLE store.skus AS SELECT 'SKU-' || product_id AS sku, category, price, in_stock FROM store.products;
SELECT user_type, item_type, serving_functions_recreated
  FROM recsys_set_source('store.events_txt', 'customer', 'sku', 'event_type', 'event_time');
\df recsys_recommend_for_items
\df recsys_explain
SELECT users, items FROM recsys_train();
-- The attribute pattern with text ids: Books at 10..30 for u1 -> SKU-4, SKU-6.
SELECT r.product_id, r.source, pg_temp.matches(r.score, h.score) AS as_by_hand
  FROM recsys_recommend(ARRAY[9000000001], 2,
         include_items => ARRAY(SELECT sku FROM store.skus WHERE category = 'Books' AND price BETWEEN 10 AND 30)) r
  LEFT JOIN hand h ON h.user_id = 1 AND 'SKU-' || h.product_id = r.product_id
 ORDER BY r.rank;
SELECT product_id, source FROM recsys_recommend(ARRAY[9000000001], 2, exclude_items => ARRAY['SKU-5', 'nope'])
 ORDER BY rank;
-- Recommendable items of text ids; an integer column no longer fits.
SELECT recsys_set_recommendable('store.in_stock');
\echo :LAST_ERROR_SQLSTATE
CREATE VIEW store.skus_in_stock AS SELECT sku FROM store.skus WHERE in_stock;
SELECT recsys_set_recommendable('store.skus_in_stock', 'sku');
SELECT user_id, product_id, source FROM recsys_recommend(ARRAY[9000000004], 3) ORDER BY rank;
SELECT product_id, source FROM recsys_recommend_for_items(ARRAY['SKU-1'], 5) ORDER BY rank;
SELECT recsys_set_recommendable(NULL) IS NULL AS cleared;
SELECT e.history_item, e.source, pg_temp.matches(e.contribution, h.c) AS as_by_hand
  FROM recsys_explain(9000000001, 'SKU-5') e
  FULL JOIN (VALUES ('SKU-2', 1 / sqrt(3)), ('SKU-3', 1 / sqrt(2))) h(history_item, c) USING (history_item)
 ORDER BY history_item;
SELECT count(*) AS rows,
       count(*) FILTER (WHERE x.total = r.score AND x.source = r.source) AS sums_to_score
  FROM recsys_recommend(ARRAY[9000000001, 9000000002, 9000000003, 9000000004], 6) r,
       LATERAL (SELECT sum(e.contribution) AS total, min(e.source) AS source
                  FROM recsys_explain(r.user_id, r.product_id) e) x;
SELECT * FROM recsys_recommend(ARRAY[9000000001], 3, include_items => ARRAY['SKU-1', NULL]);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM recsys_explain(9000000001, 'SKU-1000');

-- Back to the seed's mapping and configuration for the tests that follow.
SELECT user_type, item_type FROM recsys_set_source('public.interactions', 'user_id', 'product_id', 'event_type',
                                                   'event_time');
DELETE FROM recsys.event_weights;
INSERT INTO recsys.event_weights SELECT * FROM saved_weights;
UPDATE recsys.similarity_config c SET weighting = s.weighting, similarity = s.similarity, shrink = s.shrink,
       alpha = s.alpha, beta = s.beta, k1 = s.k1, b = s.b FROM saved_similarity s;
UPDATE recsys.config c SET neighbors = s.neighbors, half_life_days = s.half_life_days FROM saved_config s;
SET client_min_messages = warning;
DROP SCHEMA store, owners, evil CASCADE;
DROP TABLE public.serving_trapped;
DROP OWNED BY serving_owner, serving_reader, serving_mallory;
DROP ROLE serving_owner, serving_reader, serving_mallory;
RESET client_min_messages;
