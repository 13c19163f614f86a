-- reference.sql - an independent, plain-SQL computation of what the recsys
-- extension computes (no extension function is used), to compare its C++
-- output with.
--
--   psql -v rel=retail_interactions -v k=50 -v top_n=10 -v test_days=3 \
--        [-v rec_users='{17850,12680}'] [-v cutoff='2011-12-06 12:50+00'] \
--        [-v eval=0] [-v tie_digits=12] [-v timing=1] -f scripts/reference.sql
--
-- Variables (all optional):
--   rel        relation with (user_id, product_id, event_type, event_time);
--              default interactions.  Inserted as is: may be schema-qualified.
--   k          neighbours kept per item, 0 = all                (default 50)
--   top_n      list length, for ref_recs and for the evaluation (default 10)
--   test_days  evaluation cutoff = max(event_time) - test_days days (default 3)
--   cutoff     a timestamptz literal; overrides test_days
--   rec_users  int[] literal of the users to recommend for (ref_recs);
--              default: every distinct non-NULL user_id of rel
--   eval       0 skips the evaluation (ref_eval, ref_eval_recs)
--   timing     set it to print each statement's time
--   tie_digits 0 (default): rank similarities and scores on the raw
--              doubles, like the C++ core (sim = dot / (|w_i| * |w_j|), score
--              summed over the history in ascending item order, so the doubles
--              are the core's own).  N > 0: rank on the value rounded to N
--              significant digits (then id asc), i.e. values equal in exact
--              arithmetic tie even when their doubles differ in the last bit
--              (e.g. 3/(a*15) vs 1/(a*5)); 12 is a good choice.  On purchase
--              only data (all weights 5) such ties are common and the two
--              modes give different top-K / top-N boundaries.
--
-- Produces (regular tables in the current schema, dropped and recreated):
--   ref_sim(item_id, neighbor_id, sim)        top-K neighbours, model on all events
--   ref_popular(product_id, users, rank)      model popularity, all events
--   ref_scores(user_id, product_id, score)    every cf candidate score (> 0) of
--                                             the rec_users (for tie checks)
--   ref_recs(user_id, product_id, score, rank, source)
--   ref_eval  one row: users_evaluated, precision, recall, ndcg, hit_rate,
--             map, coverage, pop_precision, pop_recall, plus model_items,
--             model_users, train_cells, test_touches, cutoff, k, neighbors
--   ref_eval_recs(user_id, product_id, score, rank, source) lists of the
--             evaluated users (pre-cutoff model and history)
--
-- Semantics:
--   weights view 1, click 2, add_to_cart 3, purchase 5; other event types
--   and rows with a NULL user_id/product_id/event_time are ignored;
--   w(u,i) = sum of u's weights on i.
--   sim(i,j) = sum_u w(u,i) w(u,j) / (|w_i| |w_j|), i <> j, > 0; top K per
--   item by sim desc, neighbour id asc.
--   score(u,j) = sum_{i in history(u)} w(u,i) sim_K(i,j), history excluded,
--   top_n by score desc, id asc; the remaining slots get the most popular
--   model items (distinct users desc, id asc) not in history and not listed
--   (source 'popular', score = distinct users).
--   Evaluation: model and history from event_time < cutoff; relevant(u) =
--   distinct items with a known-type event at or after the cutoff that are
--   not in u's history; evaluated users have >= 1 cell before and >= 1
--   relevant item; precision = hits/k, recall = hits/|rel|, ndcg binary,
--   AP / min(k, |rel|), coverage = distinct recommended / model items;
--   popularity baseline = top k popular items not in history.
--
-- Internally everything is computed for two "phases" at once: ph 0 = model on
-- all events (ref_sim, ref_recs), ph 1 = model on events before the cutoff
-- (evaluation).

\set ON_ERROR_STOP on
\if :{?rel}
\else
  \set rel interactions
\endif
\if :{?k}
\else
  \set k 50
\endif
\if :{?top_n}
\else
  \set top_n 10
\endif
\if :{?test_days}
\else
  \set test_days 3
\endif
\if :{?eval}
\else
  \set eval 1
\endif
\if :{?tie_digits}
\else
  \set tie_digits 0
\endif

SET client_min_messages = warning;
SET work_mem = '256MB';
\timing off
\if :{?timing}
\timing on
\endif

DROP TABLE IF EXISTS ref_sim, ref_popular, ref_scores, ref_recs, ref_eval, ref_eval_recs;
DROP FUNCTION IF EXISTS pg_temp.tie_key(float8, int);
DROP TABLE IF EXISTS pg_temp.ref_events, pg_temp.ref_params, pg_temp.ref_cells,
    pg_temp.ref_norms, pg_temp.ref_sim_ph, pg_temp.ref_pop, pg_temp.ref_req,
    pg_temp.ref_hist, pg_temp.ref_scores_ph, pg_temp.ref_cf, pg_temp.ref_lists,
    pg_temp.ref_rel, pg_temp.ref_eval_users;

-- Ranking key: x rounded to :tie_digits significant digits (x > 0).
CREATE FUNCTION pg_temp.tie_key(x float8, digits int) RETURNS float8
LANGUAGE sql IMMUTABLE
AS 'SELECT CASE WHEN digits > 0 AND x > 0
                THEN round(x::numeric, digits - 1 - floor(log(x))::int)::float8
                ELSE x END';

-- Valid, weighted events.
CREATE TEMP TABLE ref_events AS
SELECT user_id::int AS user_id, product_id::int AS item_id, event_time,
       CASE event_type WHEN 'view' THEN 1 WHEN 'click' THEN 2
                       WHEN 'add_to_cart' THEN 3 WHEN 'purchase' THEN 5 END::float8 AS wt
FROM :rel
WHERE user_id IS NOT NULL AND product_id IS NOT NULL AND event_time IS NOT NULL
  AND event_type IN ('view', 'click', 'add_to_cart', 'purchase');

CREATE TEMP TABLE ref_params AS
SELECT :k::int AS k, :top_n::int AS top_n, (:eval)::int <> 0 AS do_eval,
\if :{?cutoff}
       :'cutoff'::timestamptz AS cutoff
\else
       (SELECT max(event_time) FROM ref_events) - make_interval(days => :test_days::int) AS cutoff
\endif
;

-- Cells w(u, i) > 0 per phase.
CREATE TEMP TABLE ref_cells AS
SELECT 0 AS ph, user_id, item_id, sum(wt) AS w
FROM ref_events GROUP BY user_id, item_id
UNION ALL
SELECT 1, e.user_id, e.item_id, sum(e.wt)
FROM ref_events e, ref_params p
WHERE p.do_eval AND e.event_time < p.cutoff
GROUP BY e.user_id, e.item_id;
DELETE FROM ref_cells WHERE NOT w > 0;
CREATE INDEX ON ref_cells (ph, user_id, item_id);
ANALYZE ref_cells;

CREATE TEMP TABLE ref_norms AS
SELECT ph, item_id, sqrt(sum(w * w)) AS nrm
FROM ref_cells GROUP BY ph, item_id;
CREATE UNIQUE INDEX ON ref_norms (ph, item_id);
ANALYZE ref_norms;

-- Cosine similarity, top K per item.  Dot products are computed once per
-- unordered pair (they are sums of products of the integer weights, so exact)
-- and used in both directions.
CREATE TEMP TABLE ref_sim_ph AS
WITH dots AS (
    SELECT a.ph, a.item_id AS i, b.item_id AS j, sum(a.w * b.w) AS dot
    FROM ref_cells a
    JOIN ref_cells b ON b.ph = a.ph AND b.user_id = a.user_id AND b.item_id > a.item_id
    GROUP BY a.ph, a.item_id, b.item_id),
sims AS (
    SELECT d.ph, d.i, d.j, d.dot / (ni.nrm * nj.nrm) AS sim
    FROM dots d
    JOIN ref_norms ni ON ni.ph = d.ph AND ni.item_id = d.i
    JOIN ref_norms nj ON nj.ph = d.ph AND nj.item_id = d.j),
both_ways AS (
    SELECT ph, i AS item_id, j AS neighbor_id, sim FROM sims WHERE sim > 0
    UNION ALL
    SELECT ph, j, i, sim FROM sims WHERE sim > 0)
SELECT ph, item_id, neighbor_id, sim
FROM (SELECT b.*,
             row_number() OVER (PARTITION BY ph, item_id
                                ORDER BY pg_temp.tie_key(sim, :tie_digits) DESC, neighbor_id) AS rn
      FROM both_ways b) s, ref_params p
WHERE p.k = 0 OR s.rn <= p.k;
CREATE INDEX ON ref_sim_ph (ph, item_id);
ANALYZE ref_sim_ph;

-- Popularity: distinct users per model item.
CREATE TEMP TABLE ref_pop AS
SELECT ph, item_id, n_users,
       row_number() OVER (PARTITION BY ph ORDER BY n_users DESC, item_id) AS prank
FROM (SELECT ph, item_id, count(DISTINCT user_id) AS n_users
      FROM ref_cells GROUP BY ph, item_id) c;
CREATE INDEX ON ref_pop (ph, prank);
ANALYZE ref_pop;

-- Evaluation sets: relevant items and evaluated users (ph 1).
CREATE TEMP TABLE ref_rel AS
SELECT DISTINCT e.user_id, e.item_id
FROM ref_events e, ref_params p
WHERE p.do_eval AND e.event_time >= p.cutoff;
CREATE TEMP TABLE ref_eval_users AS
SELECT r.user_id, count(*) FILTER (WHERE c.item_id IS NULL) AS n_rel
FROM ref_rel r
LEFT JOIN ref_cells c ON c.ph = 1 AND c.user_id = r.user_id AND c.item_id = r.item_id
WHERE EXISTS (SELECT 1 FROM ref_cells h WHERE h.ph = 1 AND h.user_id = r.user_id)
GROUP BY r.user_id
HAVING count(*) FILTER (WHERE c.item_id IS NULL) > 0;
DELETE FROM ref_rel r
WHERE EXISTS (SELECT 1 FROM ref_cells c WHERE c.ph = 1 AND c.user_id = r.user_id AND c.item_id = r.item_id);
CREATE INDEX ON ref_rel (user_id, item_id);
ANALYZE ref_rel;
ANALYZE ref_eval_users;

-- Users to recommend for, per phase.
CREATE TEMP TABLE ref_req AS
\if :{?rec_users}
SELECT DISTINCT 0 AS ph, u AS user_id FROM unnest(:'rec_users'::int[]) AS u WHERE u IS NOT NULL
\else
SELECT DISTINCT 0 AS ph, user_id::int AS user_id FROM :rel WHERE user_id IS NOT NULL
\endif
UNION ALL
SELECT 1, user_id FROM ref_eval_users;
ANALYZE ref_req;

-- Their history (cells of the phase).
CREATE TEMP TABLE ref_hist AS
SELECT c.ph, c.user_id, c.item_id, c.w
FROM ref_cells c JOIN ref_req r ON r.ph = c.ph AND r.user_id = c.user_id;
CREATE INDEX ON ref_hist (ph, user_id, item_id);
ANALYZE ref_hist;

-- Every cf candidate's score.  Summed in ascending history item order, so the
-- result does not depend on the plan (and the doubles are those of a plain
-- left-to-right sum over the history sorted by item).
CREATE TEMP TABLE ref_scores_ph AS
SELECT h.ph, h.user_id, s.neighbor_id AS item_id, sum(h.w * s.sim ORDER BY h.item_id) AS score
FROM ref_hist h
JOIN ref_sim_ph s ON s.ph = h.ph AND s.item_id = h.item_id
WHERE NOT EXISTS (SELECT 1 FROM ref_hist x
                  WHERE x.ph = h.ph AND x.user_id = h.user_id AND x.item_id = s.neighbor_id)
GROUP BY h.ph, h.user_id, s.neighbor_id
HAVING sum(h.w * s.sim ORDER BY h.item_id) > 0;

-- Top N cf items.
CREATE TEMP TABLE ref_cf AS
SELECT s.ph, s.user_id, s.item_id, s.score, s.rnk
FROM (SELECT *, row_number() OVER (PARTITION BY ph, user_id
                                   ORDER BY pg_temp.tie_key(score, :tie_digits) DESC, item_id) AS rnk
      FROM ref_scores_ph) s, ref_params p
WHERE s.rnk <= p.top_n;
CREATE INDEX ON ref_cf (ph, user_id, item_id);
ANALYZE ref_cf;

-- Lists: cf first, then popular fill.
CREATE TEMP TABLE ref_lists AS
SELECT ph, user_id, item_id, score, rnk::int AS rnk, 'cf'::text AS source FROM ref_cf
UNION ALL
SELECT r.ph, r.user_id, f.item_id, f.n_users::float8,
       (r.n_cf + row_number() OVER (PARTITION BY r.ph, r.user_id ORDER BY f.prank))::int,
       'popular'
FROM (SELECT q.ph, q.user_id,
             (SELECT count(*) FROM ref_cf c WHERE c.ph = q.ph AND c.user_id = q.user_id) AS n_cf
      FROM ref_req q) r
CROSS JOIN ref_params p
CROSS JOIN LATERAL (
    SELECT pp.item_id, pp.n_users, pp.prank
    FROM ref_pop pp
    WHERE pp.ph = r.ph
      AND NOT EXISTS (SELECT 1 FROM ref_hist x
                      WHERE x.ph = r.ph AND x.user_id = r.user_id AND x.item_id = pp.item_id)
      AND NOT EXISTS (SELECT 1 FROM ref_cf c
                      WHERE c.ph = r.ph AND c.user_id = r.user_id AND c.item_id = pp.item_id)
    ORDER BY pp.prank
    LIMIT greatest(p.top_n - r.n_cf, 0)) f;
CREATE INDEX ON ref_lists (ph, user_id, item_id);
ANALYZE ref_lists;

-- ------------------------------------------------------------- outputs --
CREATE TABLE ref_sim AS
SELECT item_id, neighbor_id, sim FROM ref_sim_ph WHERE ph = 0
ORDER BY item_id, pg_temp.tie_key(sim, :tie_digits) DESC, neighbor_id;

CREATE TABLE ref_popular AS
SELECT item_id AS product_id, n_users AS users, prank::int AS rank
FROM ref_pop WHERE ph = 0 ORDER BY prank;

CREATE TABLE ref_scores AS
SELECT user_id, item_id AS product_id, score FROM ref_scores_ph WHERE ph = 0
ORDER BY user_id, pg_temp.tie_key(score, :tie_digits) DESC, item_id;

CREATE TABLE ref_recs AS
SELECT user_id, item_id AS product_id, score, rnk AS rank, source
FROM ref_lists WHERE ph = 0 ORDER BY user_id, rnk;

CREATE TABLE ref_eval_recs AS
SELECT user_id, item_id AS product_id, score, rnk AS rank, source
FROM ref_lists WHERE ph = 1 ORDER BY user_id, rnk;

CREATE TABLE ref_eval AS
WITH params AS (SELECT * FROM ref_params),
hits AS (
    SELECT l.user_id, l.rnk,
           (r.item_id IS NOT NULL)::int AS hit,
           sum((r.item_id IS NOT NULL)::int) OVER (PARTITION BY l.user_id ORDER BY l.rnk) AS cum_hits
    FROM ref_lists l
    LEFT JOIN ref_rel r ON r.user_id = l.user_id AND r.item_id = l.item_id
    WHERE l.ph = 1),
per_hit AS (
    SELECT user_id,
           sum(hit) AS hits,
           sum(CASE WHEN hit = 1 THEN 1.0 / (ln(rnk + 1.0::float8) / ln(2.0::float8)) ELSE 0 END) AS dcg,
           sum(CASE WHEN hit = 1 THEN cum_hits::float8 / rnk ELSE 0 END) AS ap_sum
    FROM hits GROUP BY user_id),
pop_hits AS (
    SELECT u.user_id, count(r.item_id) AS hits
    FROM ref_eval_users u
    CROSS JOIN params p
    CROSS JOIN LATERAL (
        SELECT pp.item_id FROM ref_pop pp
        WHERE pp.ph = 1
          AND NOT EXISTS (SELECT 1 FROM ref_hist x
                          WHERE x.ph = 1 AND x.user_id = u.user_id AND x.item_id = pp.item_id)
        ORDER BY pp.prank LIMIT p.top_n) t
    LEFT JOIN ref_rel r ON r.user_id = u.user_id AND r.item_id = t.item_id
    GROUP BY u.user_id),
per_user AS (
    SELECT u.user_id, u.n_rel,
           coalesce(h.hits, 0)::float8 AS hits,
           coalesce(h.dcg, 0) AS dcg,
           coalesce(h.ap_sum, 0) AS ap_sum,
           (SELECT sum(1.0 / (ln(r + 1.0::float8) / ln(2.0::float8)))
            FROM generate_series(1, least(p.top_n::bigint, u.n_rel)) r) AS idcg,
           least(p.top_n::bigint, u.n_rel)::float8 AS denom,
           coalesce(ph.hits, 0)::float8 AS pop_hits
    FROM ref_eval_users u
    CROSS JOIN params p
    LEFT JOIN per_hit h ON h.user_id = u.user_id
    LEFT JOIN pop_hits ph ON ph.user_id = u.user_id)
SELECT (SELECT count(*) FROM per_user)                                   AS users_evaluated,
       coalesce(avg(pu.hits / p.top_n), 0)                               AS precision,
       coalesce(avg(pu.hits / pu.n_rel), 0)                              AS recall,
       coalesce(avg(pu.dcg / pu.idcg), 0)                                AS ndcg,
       coalesce(avg((pu.hits > 0)::int::float8), 0)                      AS hit_rate,
       coalesce(avg(pu.ap_sum / pu.denom), 0)                            AS map,
       coalesce((SELECT count(DISTINCT item_id) FROM ref_lists WHERE ph = 1)::float8
                / nullif((SELECT count(DISTINCT item_id) FROM ref_cells WHERE ph = 1), 0), 0)
                                                                         AS coverage,
       coalesce(avg(pu.pop_hits / p.top_n), 0)                           AS pop_precision,
       coalesce(avg(pu.pop_hits / pu.n_rel), 0)                          AS pop_recall,
       (SELECT count(DISTINCT item_id) FROM ref_cells WHERE ph = 1)      AS model_items,
       (SELECT count(DISTINCT user_id) FROM ref_cells WHERE ph = 1)      AS model_users,
       (SELECT count(*) FROM ref_cells WHERE ph = 1)                     AS train_cells,
       (SELECT count(*) FROM (SELECT DISTINCT e.user_id, e.item_id FROM ref_events e
                              WHERE e.event_time >= p.cutoff) t)         AS test_touches,
       p.cutoff, p.top_n AS k, p.k AS neighbors
FROM params p
LEFT JOIN per_user pu ON true
WHERE p.do_eval
GROUP BY p.cutoff, p.top_n, p.k;

RESET client_min_messages;

SELECT (SELECT count(*) FROM ref_sim)                     AS sim_pairs,
       (SELECT count(DISTINCT item_id) FROM ref_sim)      AS items_with_neighbors,
       (SELECT count(DISTINCT user_id) FROM ref_recs)     AS rec_users,
       (SELECT count(*) FROM ref_recs)                    AS rec_rows,
       (SELECT count(*) FROM ref_recs WHERE source = 'cf') AS cf_rows;
\if :eval
\x on
SELECT * FROM ref_eval;
\x off
\endif
