-- demo_data.sql - generate a realistic demo shop for the recsys extension.
--
--   psql -v users=3000 -v products=1000 -v days=180 -v seed=42 \
--        -v events_per_user=25 -f scripts/demo_data.sql
--
-- Every variable is optional (defaults below).  The script is idempotent: it
-- drops and recreates users, products, interactions and orders in the current
-- schema.  It is set-based (generate_series, no row-by-row loops): the default
-- size (~75k events) takes a few seconds, 1M events (users=100000
-- products=10000 events_per_user=10) well under a minute.
--
-- Determinism: every random draw is a hash of (seed, row key, draw number)
-- (hashint8extended), not random(), so the data do not depend on plans, scan
-- order or parallelism.  Given the variables, users, products and the events
-- (user, product, type, order) are always the same; only the timestamps move
-- with now() (events end at now()), and with them the UTC days that group
-- purchases into orders.  setseed() is called too, for anything a user adds
-- with random().
--
-- What is in it:
--   * users: ages 18-80 (bell shaped), genders, skewed city list, signups up
--     to ~3 years back, some of them inside the event window;
--   * products: ten categories with readable names (brand + adjective + noun),
--     category-dependent prices, grouped in "taste clusters" of ~40 products
--     of one category; popularity is skewed (power law) inside each cluster
--     and across clusters;
--   * interactions: each user has a main cluster and, for ~45% of users, a
--     second one; ~88% of views fall in the user's clusters, the rest explore
--     the catalogue by global popularity.  Funnel view -> click ->
--     add_to_cart -> purchase for the same (user, product), each step with a
--     lower probability and a strictly later timestamp.  ~4% of users never
--     interact (cold start);
--   * orders: one order per user and UTC day with purchases; order_date = the
--     last purchase of that day, total_amount = sum of the prices of the
--     purchase events of that day (one unit per purchase event).
--
-- scripts/demo_data_check.sql verifies these invariants.

\set ON_ERROR_STOP on
\if :{?users}
\else
  \set users 3000
\endif
\if :{?products}
\else
  \set products 1000
\endif
\if :{?days}
\else
  \set days 180
\endif
\if :{?seed}
\else
  \set seed 42
\endif
\if :{?events_per_user}
\else
  \set events_per_user 25
\endif

\echo demo_data: users=:users products=:products days=:days seed=:seed events_per_user=:events_per_user

SET client_min_messages = warning;
SELECT setseed(sin(:seed)) \g /dev/null

-- u01(key, salt): uniform in [0, 1), a pure function of (key, salt).
-- Simple immutable SQL, so the planner inlines it.
CREATE OR REPLACE FUNCTION pg_temp.u01(k bigint, salt bigint) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS 'SELECT (hashint8extended(k, salt) & 4503599627370495)::float8 / 4503599627370496.0';

DROP TABLE IF EXISTS interactions, orders, products, users CASCADE;

-- Generation parameters (one row).  clusters: ~40 products each, at least one
-- per category when the catalogue allows it.
CREATE TEMP TABLE demo_params AS
SELECT :users::int                                  AS n_users,
       :products::int                               AS n_products,
       :days::int                                   AS n_days,
       (:seed)::bigint * 1000                       AS salt,
       greatest(:events_per_user::float8, 1)        AS events_per_user,
       greatest(1, least(:products::int,
                         greatest(10, :products::int / 40)))  AS n_clusters,
       now()                                        AS t_end,
       now() - make_interval(days => :days::int)    AS t_start;

-- Category vocabulary: 10 categories x 8 adjectives x 8 nouns, price range.
CREATE TEMP TABLE demo_categories (
    cat_no int PRIMARY KEY, category text, adjectives text[], nouns text[],
    price_lo numeric, price_hi numeric);
INSERT INTO demo_categories VALUES
 (0, 'Electronics',
  '{Wireless,Smart,Portable,Compact,Digital,Noise-Cancelling,Rechargeable,Ultra-Slim}',
  '{Headphones,Speaker,Charger,Smartwatch,Webcam,Keyboard,Mouse,Power Bank}', 9, 400),
 (1, 'Books',
  '{Illustrated,Complete,Pocket,Annotated,Bestselling,Classic,Modern,Essential}',
  '{Cookbook,Novel,Atlas,Guide,Biography,Anthology,Workbook,Dictionary}', 6, 60),
 (2, 'Home & Kitchen',
  '{Stainless,Ceramic,Non-Stick,Bamboo,Cast-Iron,Glass,Modular,Classic}',
  '{Frying Pan,Kettle,Knife Set,Blender,Cutting Board,Teapot,Storage Jar,Toaster}', 8, 250),
 (3, 'Sports',
  '{Lightweight,Pro,Breathable,Foldable,Adjustable,Heavy-Duty,Waterproof,Trail}',
  '{Yoga Mat,Dumbbell,Running Shoes,Water Bottle,Tennis Racket,Backpack,Jump Rope,Helmet}', 7, 300),
 (4, 'Toys',
  '{Wooden,Magnetic,Colourful,Musical,Glow-in-the-Dark,Educational,Giant,Mini}',
  '{Puzzle,Building Blocks,Train Set,Plush Bear,Kite,Board Game,Robot,Doll House}', 5, 120),
 (5, 'Beauty',
  '{Organic,Hydrating,Gentle,Radiant,Herbal,Vegan,Matte,Soothing}',
  '{Face Cream,Shampoo,Lip Balm,Serum,Body Lotion,Face Mask,Perfume,Nail Polish}', 4, 90),
 (6, 'Clothing',
  '{Slim-Fit,Cotton,Woollen,Vintage,Oversized,Linen,Casual,Striped}',
  '{T-Shirt,Jeans,Sweater,Jacket,Scarf,Dress,Hoodie,Socks}', 6, 180),
 (7, 'Grocery',
  '{Organic,Roasted,Spicy,Sweet,Wholegrain,Smoked,Fair-Trade,Gluten-Free}',
  '{Coffee Beans,Green Tea,Olive Oil,Pasta,Granola,Honey,Dark Chocolate,Almonds}', 2, 40),
 (8, 'Garden',
  '{Solar,Ergonomic,Weatherproof,Self-Watering,Hanging,Galvanised,Telescopic,Eco}',
  '{Lantern,Pruning Shears,Planter,Hose,Bird Feeder,Rake,Seed Kit,Garden Gloves}', 5, 220),
 (9, 'Pet Supplies',
  '{Chewable,Orthopedic,Reflective,Interactive,Grain-Free,Washable,Cosy,Automatic}',
  '{Dog Bed,Cat Tree,Leash,Pet Food,Scratching Post,Feeder,Chew Toy,Litter Box}', 3, 150);

-- ---------------------------------------------------------------- products --
-- Product p (1-based) belongs to cluster (p-1) % C and has rank (p-1) / C
-- inside it (rank 0 = most popular); cluster c has category c % 10.
CREATE TABLE products (
    product_id   int PRIMARY KEY,
    product_name text NOT NULL,
    category     text NOT NULL,
    price        numeric(10,2) NOT NULL
);

INSERT INTO products
SELECT p,
       (ARRAY['Acme','Nordic','Urban','Zenith','Kestrel','Maple','Orbit','Lumen',
              'Harbor','Atlas','Pioneer','Vivid'])[1 + floor(12 * pg_temp.u01(p, dp.salt + 1))::int]
         || ' ' || c.adjectives[1 + floor(8 * pg_temp.u01(p, dp.salt + 2))::int]
         || ' ' || c.nouns[1 + floor(8 * pg_temp.u01(p, dp.salt + 3))::int],
       c.category,
       -- log-uniform between the category's bounds, ending in .99 or .49
       greatest(c.price_lo,
                floor(exp(ln(c.price_lo::float8) + (ln(c.price_hi::float8) - ln(c.price_lo::float8))
                          * pg_temp.u01(p, dp.salt + 4)))::numeric
                + CASE WHEN pg_temp.u01(p, dp.salt + 5) < 0.7 THEN 0.99 ELSE 0.49 END)::numeric(10,2)
FROM demo_params dp
CROSS JOIN generate_series(1, dp.n_products) AS p
JOIN demo_categories c ON c.cat_no = ((p - 1) % dp.n_clusters) % 10;

-- ------------------------------------------------------------------- users --
CREATE TABLE users (
    user_id     int PRIMARY KEY,
    age         int,
    gender      text,
    city        text,
    signup_date date
);

INSERT INTO users
SELECT u,
       -- mean of three uniforms (bell shaped), skewed young: 18..79, median ~42
       18 + floor(62 * ((pg_temp.u01(u, dp.salt + 11) + pg_temp.u01(u, dp.salt + 12)
                         + pg_temp.u01(u, dp.salt + 13)) / 3) ^ 1.3)::int,
       CASE WHEN g < 0.50 THEN 'female' WHEN g < 0.97 THEN 'male' ELSE 'other' END,
       (ARRAY['London','Berlin','Paris','Madrid','Rome','Amsterdam','Vienna','Warsaw',
              'Prague','Stockholm','Lisbon','Dublin','Brussels','Copenhagen','Helsinki',
              'Oslo','Zurich','Athens','Budapest','Munich'])
         [1 + floor(20 * pg_temp.u01(u, dp.salt + 15) ^ 2)::int],
       -- up to ~3 years before now; ~15% sign up inside the event window
       (dp.t_end AT TIME ZONE 'UTC')::date - 1
         - floor((dp.n_days + 900) * pg_temp.u01(u, dp.salt + 16) ^ 0.8)::int
FROM demo_params dp
CROSS JOIN generate_series(1, dp.n_users) AS u
CROSS JOIN LATERAL (SELECT pg_temp.u01(u, dp.salt + 14) AS g) gg;

-- Per-user behaviour: clusters, number of views, active window.
CREATE TEMP TABLE demo_user_profile AS
SELECT u.user_id,
       floor(dp.n_clusters * pg_temp.u01(u.user_id, dp.salt + 21) ^ 1.5)::int AS c1,
       CASE WHEN pg_temp.u01(u.user_id, dp.salt + 22) < 0.45 AND dp.n_clusters > 1
            THEN ((floor(dp.n_clusters * pg_temp.u01(u.user_id, dp.salt + 21) ^ 1.5)::int
                   + 1 + floor((dp.n_clusters - 1) * pg_temp.u01(u.user_id, dp.salt + 23))::int)
                  % dp.n_clusters)
       END AS c2,
       w.t0,
       CASE WHEN pg_temp.u01(u.user_id, dp.salt + 24) < 0.04 THEN 0   -- never active
            -- heavy tailed (mean ~ events_per_user / 1.45 views), fewer for
            -- users that signed up recently
            ELSE 1 + floor((dp.events_per_user / 1.45 - 0.5) * 3
                           * pg_temp.u01(u.user_id, dp.salt + 25) ^ 2
                           * (0.3 + 0.7 * least(1.0, ((dp.t_end AT TIME ZONE 'UTC')::date
                                                       - u.signup_date)::float8 / dp.n_days)))::int
       END AS n_views
FROM users u
CROSS JOIN demo_params dp
CROSS JOIN LATERAL (SELECT greatest(dp.t_start,
                                    (u.signup_date::timestamp AT TIME ZONE 'UTC')) AS t0) w;

-- ------------------------------------------------------------ interactions --
CREATE TABLE interactions (
    user_id    int,
    product_id int,
    event_type text,
    event_time timestamptz
);

-- One row per view with its funnel outcome, then unnested into 1-4 events.
-- View times leave 3 hours before now() so the whole funnel (< 2h40) fits.
WITH views AS (
    SELECT up.user_id, key, x, c,
           up.t0 + (dp.t_end - interval '3 hours' - up.t0) * pg_temp.u01(key, dp.salt + 32) AS tv,
           CASE WHEN c IS NULL   -- explore: global popularity
                THEN 1 + floor(dp.n_products * pg_temp.u01(key, dp.salt + 33) ^ 2.5)::int
                ELSE c + 1 + dp.n_clusters * floor(((dp.n_products - c - 1) / dp.n_clusters + 1)
                                                   * pg_temp.u01(key, dp.salt + 34) ^ 2.2)::int
           END AS product_id
    FROM demo_params dp
    CROSS JOIN demo_user_profile up
    CROSS JOIN LATERAL generate_series(1, up.n_views) AS s
    CROSS JOIN LATERAL (SELECT (up.user_id::bigint << 20) + s AS key) k
    CROSS JOIN LATERAL (SELECT pg_temp.u01(key, dp.salt + 31) AS x) xx
    CROSS JOIN LATERAL (SELECT CASE WHEN x < 0.12 THEN NULL
                                    WHEN up.c2 IS NOT NULL AND x < 0.42 THEN up.c2
                                    ELSE up.c1 END AS c) cc
), funnel AS MATERIALIZED (
    SELECT v.*,
           -- click: more likely inside the user's own clusters
           pg_temp.u01(key, dp.salt + 41) < CASE WHEN c IS NULL THEN 0.15 ELSE 0.32 END AS clicked,
           pg_temp.u01(key, dp.salt + 42) < 0.35 AS carted,      -- given click
           pg_temp.u01(key, dp.salt + 43) < 0.55 AS purchased,   -- given cart
           tv + make_interval(secs => 5 + floor(295 * pg_temp.u01(key, dp.salt + 44))) AS tc,
           make_interval(secs => 20 + floor(1780 * pg_temp.u01(key, dp.salt + 45))) AS dc,
           make_interval(secs => 60 + floor(7140 * pg_temp.u01(key, dp.salt + 46))) AS dp_
    FROM views v CROSS JOIN demo_params dp
)
INSERT INTO interactions (user_id, product_id, event_type, event_time)
SELECT f.user_id, f.product_id, e.event_type, date_trunc('second', e.event_time)
FROM funnel f
CROSS JOIN LATERAL (VALUES
    ('view',        f.tv,               true),
    ('click',       f.tc,               f.clicked),
    ('add_to_cart', f.tc + f.dc,        f.clicked AND f.carted),
    ('purchase',    f.tc + f.dc + f.dp_, f.clicked AND f.carted AND f.purchased)
) AS e(event_type, event_time, happened)
WHERE e.happened
ORDER BY f.user_id, e.event_time;

CREATE INDEX interactions_user_id_idx ON interactions (user_id);

-- ------------------------------------------------------------------ orders --
CREATE TABLE orders (
    order_id     int PRIMARY KEY,
    user_id      int,
    order_date   timestamptz,
    total_amount numeric(12,2)
);

INSERT INTO orders
SELECT row_number() OVER (ORDER BY min(i.event_time), i.user_id)::int,
       i.user_id,
       max(i.event_time),
       sum(p.price)
FROM interactions i
JOIN products p USING (product_id)
WHERE i.event_type = 'purchase'
GROUP BY i.user_id, (i.event_time AT TIME ZONE 'UTC')::date;

CREATE INDEX orders_user_id_idx ON orders (user_id);

ANALYZE users;
ANALYZE products;
ANALYZE interactions;
ANALYZE orders;

RESET client_min_messages;

SELECT (SELECT count(*) FROM users)    AS users,
       (SELECT count(*) FROM products) AS products,
       (SELECT count(*) FROM interactions) AS events,
       (SELECT count(*) FROM orders)   AS orders;
SELECT event_type, count(*) AS events, count(DISTINCT user_id) AS users
FROM interactions GROUP BY event_type ORDER BY events DESC;
