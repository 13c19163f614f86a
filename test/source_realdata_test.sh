#!/usr/bin/env bash
# source_realdata_test.sh - the docs' recipes for real logs (issue #7) load
# and train as written, and recsys's results equal a plain-SQL computation
# of the same formulas on the same files:
#   UCI Online Retail (scripts/recipe_online_retail.sql): numeric customers,
#     text stock codes, purchase (weight 1) and cancel (weight -1) with the
#     quantity as value; every item's neighbours (K = 50, compared rank by
#     rank, and pair by pair), then with every neighbour kept, the
#     recommendations of every 25th customer (score by rank and pair by pair,
#     nothing they have an event on);
#   MovieLens (scripts/recipe_movielens.sql): the rating as value; the
#     neighbours of the 30 most rated movies (K = 20) and five users' history.
#
#   PGHOST=... PGPORT=... PGUSER=... test/source_realdata_test.sh [shared_data_dir]
# Makes its own databases (recsys_src_retail, recsys_src_ml) and drops them.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
datadir=${1:-"$here/../../shared/data"}
if [ ! -r "$datadir/online_retail_uci_tail/interactions.csv" ] || [ ! -r "$datadir/movielens_latest_small/interactions.csv" ]; then
    echo "FAIL: no shared data under $datadir (pass it as \$1)"; exit 2
fi
datadir=$(cd "$datadir" && pwd)
R=recsys_src_retail M=recsys_src_ml
cleanup() { psql -qX -d postgres -c "DROP DATABASE IF EXISTS $R" -c "DROP DATABASE IF EXISTS $M" >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
psql -qX -d postgres -c "CREATE DATABASE $R" -c "CREATE DATABASE $M" >/dev/null || exit 2
fails=0
check() {   # check NAME DB SQL: passes when the query returns no row
    local out
    out=$(psql -qXAt -v ON_ERROR_STOP=1 -d "$2" -c "$3" 2>&1)
    if [ $? -eq 0 ] && [ -z "$out" ]; then echo "ok: $1"; else echo "FAIL: $1"; echo "$out" | head -10; fails=$((fails + 1)); fi
}
value() { psql -qXAt -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }

# --- UCI Online Retail ------------------------------------------------------
psql -qX -v ON_ERROR_STOP=1 -d $R -c "CREATE EXTENSION recsys" >/dev/null || exit 2
out=$(cd "$datadir" && psql -qXAt -v ON_ERROR_STOP=1 -d $R -f "$repo/scripts/recipe_online_retail.sql" 2>&1) \
    || { echo "FAIL: the Online Retail recipe: $out"; exit 1; }
echo "ok: the Online Retail recipe loads and trains (source | users | items | used | ignored): $(echo "$out" | tr '\n' ' ')"
psql -qX -v ON_ERROR_STOP=1 -d $R >/dev/null <<'SQL'
-- The reference, straight from the log: w = sum(+-1 * |quantity|).
CREATE TABLE ref_w AS
SELECT customer_id AS u, stock_code AS i,
       sum(CASE action WHEN 'purchase' THEN 1 WHEN 'cancel' THEN -1 END * abs(quantity))::float8 AS w
  FROM retail_log WHERE action IN ('purchase', 'cancel') AND customer_id IS NOT NULL AND stock_code IS NOT NULL
 GROUP BY 1, 2;
CREATE TABLE ref_norm AS SELECT i, sqrt(sum(w * w)) AS norm FROM ref_w WHERE w > 0 GROUP BY 1;
CREATE TABLE ref_sim AS
SELECT a.i, b.i AS j, sum(a.w * b.w) / (na.norm * nb.norm) AS sim
  FROM ref_w a JOIN ref_w b ON a.u = b.u AND a.i <> b.i AND a.w > 0 AND b.w > 0
  JOIN ref_norm na ON na.i = a.i JOIN ref_norm nb ON nb.i = b.i
 GROUP BY a.i, b.i, na.norm, nb.norm;
CREATE INDEX ON ref_sim (i);
CREATE TABLE got_sim AS
SELECT n.i, s.product_id AS j, s.similarity AS sim, s.rank
  FROM (SELECT DISTINCT i FROM ref_norm) n, recsys_similar_items(n.i, 50) s;
SQL
check "Online Retail: cancels count against a product (some cells have w <= 0)" $R \
    "SELECT 'none' WHERE NOT EXISTS (SELECT 1 FROM ref_w WHERE w <= 0)"
check "Online Retail: every neighbour's similarity equals the reference's (K = 50)" $R \
    "SELECT g.* FROM got_sim g LEFT JOIN ref_sim r ON r.i = g.i AND r.j = g.j WHERE r.sim IS NULL OR abs(r.sim - g.sim) > 1e-9"
check "Online Retail: the similarities at each rank are the reference's top 50" $R \
    "WITH r AS (SELECT i, sim, row_number() OVER (PARTITION BY i ORDER BY sim DESC) AS rank FROM ref_sim)
     SELECT * FROM r FULL JOIN got_sim g USING (i, rank)
      WHERE (r.rank IS NULL OR r.rank <= 50) AND (r.sim IS NULL OR g.sim IS NULL OR abs(r.sim - g.sim) > 1e-9)"
value $R "SET maintenance_work_mem = '256MB'; SELECT * FROM recsys_train(neighbors => 0)" >/dev/null || { echo "FAIL: retraining with every neighbour"; fails=$((fails + 1)); }
psql -qX -v ON_ERROR_STOP=1 -d $R >/dev/null <<'SQL'
CREATE TABLE sample AS
SELECT u FROM (SELECT DISTINCT customer_id AS u FROM retail_log) x WHERE u % 25 = 0;
CREATE TABLE ref_score AS
SELECT h.u, s.j AS i, sum(h.w * s.sim) AS score
  FROM ref_w h JOIN sample USING (u) JOIN ref_sim s ON s.i = h.i
 WHERE h.w > 0 AND NOT EXISTS (SELECT 1 FROM ref_w seen WHERE seen.u = h.u AND seen.i = s.j)
 GROUP BY 1, 2 HAVING sum(h.w * s.sim) > 0;
CREATE TABLE got_rec AS
SELECT user_id AS u, product_id AS i, score, rank, source FROM recsys_recommend(ARRAY(SELECT u FROM sample), 20);
SQL
check "Online Retail: every recommended score equals the reference's (every 25th customer)" $R \
    "SELECT g.* FROM got_rec g LEFT JOIN ref_score r USING (u, i) WHERE g.source = 'cf' AND (r.score IS NULL OR abs(r.score - g.score) > 1e-9 * greatest(1, r.score))"
check "Online Retail: the scores at each rank are the reference's top 20" $R \
    "WITH r AS (SELECT u, score, row_number() OVER (PARTITION BY u ORDER BY score DESC) AS rank FROM ref_score)
     SELECT * FROM r FULL JOIN (SELECT * FROM got_rec WHERE source = 'cf') g USING (u, rank)
      WHERE (r.rank IS NULL OR r.rank <= 20) AND (r.score IS NULL OR g.score IS NULL OR abs(r.score - g.score) > 1e-9 * greatest(1, r.score))"
check "Online Retail: nothing a customer has an event on is recommended" $R \
    "SELECT g.* FROM got_rec g JOIN ref_w seen ON seen.u = g.u AND seen.i = g.i"
n=$(value $R "SELECT count(*) FROM got_rec WHERE source = 'cf'")
[ "${n:-0}" -gt 300 ] && echo "ok: Online Retail: $n collaborative recommendations compared" \
    || { echo "FAIL: only ${n:-0} collaborative recommendations"; fails=$((fails + 1)); }

# --- MovieLens ---------------------------------------------------------------
psql -qX -v ON_ERROR_STOP=1 -d $M -c "CREATE EXTENSION recsys" >/dev/null || exit 2
out=$(cd "$datadir" && psql -qXAt -v ON_ERROR_STOP=1 -d $M -f "$repo/scripts/recipe_movielens.sql" 2>&1) \
    || { echo "FAIL: the MovieLens recipe: $out"; exit 1; }
echo "ok: the MovieLens recipe loads and trains: $(echo "$out" | tr '\n' ' ')"
psql -qX -v ON_ERROR_STOP=1 -d $M >/dev/null <<'SQL'
CREATE TABLE ref_norm AS SELECT movie_id AS i, sqrt(sum(rating::float8 * rating)) AS norm FROM ratings GROUP BY 1;
CREATE TABLE sample AS SELECT movie_id AS i FROM ratings GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 30;
CREATE TABLE ref_sim AS
SELECT a.movie_id AS i, b.movie_id AS j, sum(a.rating::float8 * b.rating) / (na.norm * nb.norm) AS sim
  FROM ratings a JOIN sample s ON s.i = a.movie_id
  JOIN ratings b ON b.user_id = a.user_id AND b.movie_id <> a.movie_id
  JOIN ref_norm na ON na.i = a.movie_id JOIN ref_norm nb ON nb.i = b.movie_id
 GROUP BY 1, 2, na.norm, nb.norm;
CREATE TABLE got_sim AS SELECT s.i, n.product_id AS j, n.similarity AS sim, n.rank FROM sample s, recsys_similar_items(s.i, 20) n;
SQL
check "MovieLens: ratings are single events (one per user and movie)" $M \
    "SELECT user_id, movie_id FROM ratings GROUP BY 1, 2 HAVING count(*) > 1"
check "MovieLens: every neighbour's similarity (rating as value) equals the reference's (K = 20)" $M \
    "SELECT g.* FROM got_sim g LEFT JOIN ref_sim r USING (i, j) WHERE r.sim IS NULL OR abs(r.sim - g.sim) > 1e-9"
check "MovieLens: the similarities at each rank are the reference's top 20" $M \
    "WITH r AS (SELECT i, sim, row_number() OVER (PARTITION BY i ORDER BY sim DESC) AS rank FROM ref_sim)
     SELECT * FROM r FULL JOIN got_sim g USING (i, rank) WHERE (r.rank IS NULL OR r.rank <= 20)
        AND (r.sim IS NULL OR g.sim IS NULL OR abs(r.sim - g.sim) > 1e-9)"
check "MovieLens: five users' history is their ratings" $M \
    "SELECT * FROM (SELECT u.user_id, h.product_id, h.weight FROM generate_series(1, 5) u(user_id),
                           recsys_user_history(u.user_id, 1000) h) g
       FULL JOIN (SELECT user_id, movie_id AS product_id, rating FROM ratings WHERE user_id <= 5) r USING (user_id, product_id)
      WHERE g.weight IS NULL OR r.rating IS NULL OR g.weight <> r.rating"
[ $fails -eq 0 ] && echo "RESULT: PASS" || echo "RESULT: FAIL ($fails)"
exit $((fails > 0))
