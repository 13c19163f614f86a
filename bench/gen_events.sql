-- gen_events.sql - the benchmark's event log, seeded, generated inside PostgreSQL.
--
--   psql -v events=10000000 -f bench/gen_events.sql
--   psql -v events=200000 -v users=18880 -v products=7071 -v seed=7 -f bench/gen_events.sql
--   psql -v events=10000000 -v user_skew=2.6 -f bench/gen_events.sql   (heavier users)
--
-- Creates (drops first) the table interactions(user_id int, product_id int,
-- event_type text, event_time timestamptz) that recsys reads by default, with
-- EXACTLY :events rows, and a covering index on user_id (recommending reads a
-- user's history through it as an index-only scan: the deployment docs/sql.md
-- recommends).  Set-based: generate_series and hash functions, no
-- random() and no row-by-row loop; 10M events take about 3 minutes on the
-- project's 2-core machine.
--
-- Determinism: every draw is hashint8extended(key, seed-derived salt), so the
-- log is a function of (events, users, products, seed) alone: the same rows on
-- every machine, whatever the plan or parallelism; timestamps end at a fixed
-- instant (2026-01-01 00:00 UTC), not at now().
--
-- Defaults scale with :events so that 10M events give the reference log of
-- the issue (944k users, 50k products):
--   users    = 0.0944 * events          (ids 1..users; ~2% of them draw no event)
--   products = 50000 * sqrt(events / 10M) (the catalogue grows slower than traffic:
--              200k -> 7,071, 1M -> 15,811, 10M -> 50,000)
--
-- The model of the log:
--   * Visits.  A visit is one user looking at one product: a view, then a click
--     with probability 0.30, an add_to_cart given a click 0.35, a purchase given
--     a cart 0.55, each strictly later (1.46 events per visit on average).
--     Visits are laid end to end and the log is cut after exactly :events events.
--   * Users.  The visit's user is 1 + floor(users * x^s), x uniform, s =
--     :user_skew (default 1.6): activity is skewed (with 1.6 user 1 is the
--     most active, density ~ u^-0.375; in general u^(1/s - 1)), mean ~10.6
--     events per user, a long tail of users with a single visit.
--   * Products, Zipf popularity.  Products are split into clusters of ~50
--     (product p is in cluster (p-1) % C).  Each user has one taste cluster
--     (a hash of the user id); 65% of visits pick a product of that cluster,
--     35% pick from the whole catalogue.  Both picks are Zipf with exponent 1
--     over the ranks (rank r drawn as floor((n+1)^x) - 1, P(r) ~ 1/(r+1)):
--     globally product r+1 has rank r; in cluster c, the product of rank r is
--     c + 1 + C*r.  So low ids are the popular ones, globally and per cluster.
--   * Time.  Visits are uniform over the 180 days before 2026-01-01 UTC; the
--     click comes 5-300 s after the view, the cart 20-1800 s after the click,
--     the purchase 60-7200 s after the cart (whole seconds).

\set ON_ERROR_STOP on
\if :{?events}
\else
  \set events 200000
\endif
\if :{?users}
\else
  SELECT greatest(1, round(0.0944 * :events))::int AS users \gset
\endif
\if :{?products}
\else
  SELECT greatest(50, round(50000 * sqrt(:events / 1e7)))::int AS products \gset
\endif
\if :{?seed}
\else
  \set seed 1
\endif
\if :{?user_skew}
\else
  \set user_skew 1.6
\endif

SET client_min_messages = warning;

-- u01(key, salt): uniform in [0, 1), a pure function of (key, salt); simple
-- immutable SQL, so the planner inlines it.
CREATE OR REPLACE FUNCTION pg_temp.u01(k bigint, salt bigint) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS 'SELECT (hashint8extended(k, salt) & 4503599627370495)::float8 / 4503599627370496.0';

DROP TABLE IF EXISTS interactions CASCADE;
DROP TABLE IF EXISTS pg_temp.gen_params, pg_temp.gen_visits;

CREATE TEMP TABLE gen_params AS
SELECT :events::bigint                              AS n_events,
       :users::int                                  AS n_users,
       :products::int                               AS n_products,
       greatest(1, :products::int / 50)             AS n_clusters,
       (:seed)::bigint * 1000003                    AS salt,
       (:user_skew)::float8                         AS user_skew,
       timestamptz '2026-01-01 00:00:00+00'         AS t_end;

-- Enough visits for :events events (1.46 per visit on average; 1.3 leaves a
-- margin of many standard deviations), with their lengths and the position of
-- their first event in the log.
CREATE TEMP TABLE gen_visits AS
SELECT v, len, sum(len) OVER (ORDER BY v ROWS UNBOUNDED PRECEDING) - len AS start
FROM gen_params gp
CROSS JOIN generate_series(0, ceil(gp.n_events / 1.3)::bigint) AS v
CROSS JOIN LATERAL (
    SELECT 1 + CASE WHEN pg_temp.u01(v, gp.salt + 1) >= 0.30 THEN 0
                    WHEN pg_temp.u01(v, gp.salt + 2) >= 0.35 THEN 1
                    WHEN pg_temp.u01(v, gp.salt + 3) >= 0.55 THEN 2
                    ELSE 3 END AS len) l;

DO $$
BEGIN
    IF (SELECT max(start + len) FROM pg_temp.gen_visits) < (SELECT n_events FROM pg_temp.gen_params) THEN
        RAISE EXCEPTION 'gen_events: too few visits generated';
    END IF;
END $$;

CREATE UNLOGGED TABLE interactions (
    user_id    int,
    product_id int,
    event_type text,
    event_time timestamptz
);

INSERT INTO interactions (user_id, product_id, event_type, event_time)
SELECT w.user_id, w.product_id, (ARRAY['view', 'click', 'add_to_cart', 'purchase'])[k + 1],
       w.tv + CASE k WHEN 0 THEN interval '0'
                     WHEN 1 THEN w.dc
                     WHEN 2 THEN w.dc + w.da
                     ELSE w.dc + w.da + w.dp END
FROM gen_params gp
JOIN gen_visits gv ON gv.start < gp.n_events
CROSS JOIN LATERAL (
    SELECT 1 + floor(gp.n_users * pg_temp.u01(gv.v, gp.salt + 11) ^ gp.user_skew)::int AS user_id OFFSET 0) uu
CROSS JOIN LATERAL (
    SELECT floor(gp.n_clusters * pg_temp.u01(uu.user_id, gp.salt + 12))::int AS c OFFSET 0) cc
CROSS JOIN LATERAL (
    SELECT uu.user_id,
           CASE WHEN pg_temp.u01(gv.v, gp.salt + 13) < 0.65
                THEN cc.c + 1 + gp.n_clusters *
                     least(nc.n - 1, floor(exp(pg_temp.u01(gv.v, gp.salt + 14) * ln(nc.n + 1.0)))::int - 1)
                ELSE 1 + least(gp.n_products - 1,
                               floor(exp(pg_temp.u01(gv.v, gp.salt + 15) * ln(gp.n_products + 1.0)))::int - 1)
           END AS product_id,
           date_trunc('second', gp.t_end - interval '3 hours'
                      - interval '180 days' * pg_temp.u01(gv.v, gp.salt + 16)) AS tv,
           make_interval(secs => 5 + floor(296 * pg_temp.u01(gv.v, gp.salt + 17))) AS dc,
           make_interval(secs => 20 + floor(1781 * pg_temp.u01(gv.v, gp.salt + 18))) AS da,
           make_interval(secs => 60 + floor(7141 * pg_temp.u01(gv.v, gp.salt + 19))) AS dp
    FROM (SELECT (gp.n_products - cc.c - 1) / gp.n_clusters + 1 AS n OFFSET 0) nc OFFSET 0) w
CROSS JOIN LATERAL generate_series(0, gv.len - 1) AS k
WHERE gv.start + k < gp.n_events;

CREATE INDEX interactions_user_id_idx ON interactions (user_id)
    INCLUDE (product_id, event_type, event_time);
VACUUM ANALYZE interactions;
DROP TABLE pg_temp.gen_visits, pg_temp.gen_params;
RESET client_min_messages;
