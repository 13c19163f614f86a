#!/usr/bin/env bash
# realdata_check.sh - compare the recsys extension with the plain-SQL
# reference (scripts/reference.sql) on the UCI Online Retail purchases.
#
#   PGHOST=... PGPORT=... PGUSER=... PGDATABASE=... test/realdata_check.sh [shared_data_dir]
#
# shared_data_dir defaults to the shared/data folder next to the repository's
# parent ("$(dirname "$0")/../../shared/data").  The script
#   1. loads the log (scripts/load_online_retail.sql -> retail_interactions),
#   2. runs the reference (K=50, top_n=10, test_days=3) -> ref_* tables,
#   3. if the recsys extension is available: trains it on retail_interactions,
#      asks it for every user's list and for the offline evaluation, and
#      compares: same lists per user (a different product is accepted only
#      where the scores tie within TOL), every metric equal within TOL.
# It prints PASS/FAIL/SKIP lines and exits 1 on any FAIL (2 on a setup error).
# Tables it leaves in the database: retail_*, ref_*, ext_recs, ext_eval,
# ext_sim, ext_pop (and recsys.config.source_relation = 'retail_interactions').
#
# The extension calls are plain SQL in the variables below; override them from
# the environment if the API differs.  %USERS% in EXT_RECOMMEND_SQL is
# replaced by an int[] expression holding every user of retail_interactions.
# EXT_SIM_SQL must return the trained neighbours (item_id, neighbor_id, sim),
# EXT_POP_SQL the popularity list (rank, product_id, users); set either to ""
# to skip that comparison (it is also skipped when the query fails).
# RECSYS_FORCE=1 runs the comparison even when pg_available_extensions does not
# list recsys (e.g. to test this script with stand-in SQL).
# RECSYS_RECREATE=1 drops and recreates the extension first (a database that
# still has an older build's SQL objects).
# Other knobs: K, TOP_N, TEST_DAYS, TOL, TIE_DIGITS (see scripts/reference.sql),
# REL (compare on another relation, e.g. the demo data's interactions; then
# nothing is loaded).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
datadir=${1:-"$here/../../shared/data"}

K=${K:-50}
TOP_N=${TOP_N:-10}
TEST_DAYS=${TEST_DAYS:-3}
TOL=${TOL:-1e-9}
REL=${REL:-retail_interactions}  # another relation: compared as it is, nothing loaded
TIE_DIGITS=${TIE_DIGITS:-0}   # reference.sql tie_digits: 0 = rank on raw doubles

EXT_SETUP_SQL=${EXT_SETUP_SQL:-"UPDATE recsys.config SET source_relation = '$REL'"}
EXT_TRAIN_SQL=${EXT_TRAIN_SQL:-"SELECT * FROM recsys_train(neighbors => $K)"}
EXT_RECOMMEND_SQL=${EXT_RECOMMEND_SQL:-"SELECT user_id, product_id, score, rank, source FROM recsys_recommend(%USERS%, $TOP_N)"}
EXT_EVAL_SQL=${EXT_EVAL_SQL:-"SELECT * FROM recsys_evaluate($TOP_N, test_days => $TEST_DAYS, neighbors => $K)"}
EXT_SIM_SQL=${EXT_SIM_SQL-"SELECT n.item_id, u.neighbor_id, u.sim FROM recsys.neighbors n CROSS JOIN LATERAL unnest(n.neighbor_ids, n.sims) AS u(neighbor_id, sim) WHERE n.model_id = (SELECT model_id FROM recsys.active_model)"}
EXT_POP_SQL=${EXT_POP_SQL-"SELECT rank, item_id AS product_id, users FROM recsys.popularity WHERE model_id = (SELECT model_id FROM recsys.active_model)"}

PSQL=(psql -X -q -v ON_ERROR_STOP=1)
fails=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
skip() { echo "SKIP: $*"; }
die()  { echo "FAIL: $*"; echo "RESULT: FAIL (setup error)"; exit 2; }
elapsed() { local ms=$(( ($(date +%s%N) - $1) / 1000000 )); printf '%d.%03d' $((ms / 1000)) $((ms % 1000)); }

if [ ! -r "$datadir/online_retail_uci_tail/interactions.csv" ]; then
    die "no $datadir/online_retail_uci_tail/interactions.csv (pass the shared data dir as \$1)"
fi
datadir=$(cd "$datadir" && pwd)

# 1. load -----------------------------------------------------------------
if [ "$REL" = retail_interactions ]; then
    t0=$(date +%s%N)
    "${PSQL[@]}" -v datadir="$datadir" -f "$repo/scripts/load_online_retail.sql" >/dev/null \
        || die "loading Online Retail"
    n=$("${PSQL[@]}" -At -c "SELECT count(*) FROM retail_interactions") || die "counting retail_interactions"
    [ "$n" -gt 0 ] || die "retail_interactions is empty"
    pass "loaded Online Retail: $n purchase rows ($(elapsed "$t0") s)"
else
    n=$("${PSQL[@]}" -At -c "SELECT count(*) FROM $REL") || die "reading $REL"
    pass "using $REL as it is: $n rows"
fi

# 2. reference ------------------------------------------------------------
t0=$(date +%s%N)
"${PSQL[@]}" -v rel="$REL" -v k="$K" -v top_n="$TOP_N" -v test_days="$TEST_DAYS" \
    -v tie_digits="$TIE_DIGITS" \
    -f "$repo/scripts/reference.sql" >/dev/null || die "scripts/reference.sql"
pass "reference computed ($(elapsed "$t0") s)"
psql -X -P footer=off -c "SELECT users_evaluated, round(precision::numeric, 6) AS precision,
        round(recall::numeric, 6) AS recall, round(ndcg::numeric, 6) AS ndcg,
        round(hit_rate::numeric, 6) AS hit_rate, round(map::numeric, 6) AS map,
        round(coverage::numeric, 6) AS coverage, round(pop_precision::numeric, 6) AS pop_precision,
        round(pop_recall::numeric, 6) AS pop_recall FROM ref_eval"

# 3. extension ------------------------------------------------------------
avail=$("${PSQL[@]}" -At -c "SELECT count(*) FROM pg_available_extensions WHERE name = 'recsys'") \
    || die "querying pg_available_extensions"
if [ "$avail" = 0 ] && [ "${RECSYS_FORCE:-0}" != 1 ]; then
    skip "recsys extension not available: reference only, nothing compared"
    echo "RESULT: PASS (reference only)"
    exit 0
fi
if [ "$avail" != 0 ]; then
    if [ "${RECSYS_RECREATE:-0}" = 1 ]; then
        "${PSQL[@]}" -c "DROP EXTENSION IF EXISTS recsys CASCADE" || die "DROP EXTENSION recsys"
    fi
    "${PSQL[@]}" -c "CREATE EXTENSION IF NOT EXISTS recsys" || die "CREATE EXTENSION recsys"
fi

users_expr="(SELECT array_agg(DISTINCT user_id ORDER BY user_id) FROM $REL WHERE user_id IS NOT NULL)"
rec_sql=${EXT_RECOMMEND_SQL//%USERS%/$users_expr}

t0=$(date +%s%N)
"${PSQL[@]}" <<SQL || die "running the extension"
DROP TABLE IF EXISTS ext_recs, ext_eval, ext_sim, ext_pop;
$EXT_SETUP_SQL;
$EXT_TRAIN_SQL;
CREATE TABLE ext_recs AS
SELECT user_id::int AS user_id, product_id::int AS product_id, score::float8 AS score,
       rank::int AS rank, source::text AS source
FROM ($rec_sql) r;
CREATE TABLE ext_eval AS $EXT_EVAL_SQL;
SQL
pass "extension trained, recommended and evaluated ($(elapsed "$t0") s)"

# Checks: each query returns one row: ok (bool), detail (text).
check() {  # name, sql
    local out
    out=$("${PSQL[@]}" -At -F '|' -c "$2") || { fail "$1: query failed"; return; }
    local ok=${out%%|*} detail=${out#*|}
    if [ "$ok" = t ]; then pass "$1${detail:+ ($detail)}"; else fail "$1${detail:+: $detail}"; fi
}

check "lists cover the same users with the same lengths" "
WITH r AS (SELECT user_id, count(*) n FROM ref_recs GROUP BY 1),
     e AS (SELECT user_id, count(*) n FROM ext_recs GROUP BY 1),
     bad AS (SELECT coalesce(r.user_id, e.user_id) u, r.n rn, e.n en
             FROM r FULL JOIN e USING (user_id) WHERE r.n IS DISTINCT FROM e.n)
SELECT count(*) = 0,
       CASE WHEN count(*) = 0 THEN (SELECT count(*) FROM r) || ' users'
            ELSE count(*) || ' users differ, e.g. ' ||
                 string_agg(format('user %s: ref %s ext %s', u, rn, en), '; ' ORDER BY u)
                   FILTER (WHERE u IN (SELECT u FROM bad ORDER BY u LIMIT 5)) END
FROM bad"

check "ranks are 1..n without duplicate products" "
WITH bad AS (
  SELECT user_id FROM ext_recs GROUP BY user_id
  HAVING count(DISTINCT product_id) <> count(*) OR min(rank) <> 1 OR max(rank) <> count(*)
      OR count(DISTINCT rank) <> count(*))
SELECT count(*) = 0, coalesce(count(*) || ' bad users, e.g. ' || min(user_id), '') FROM bad"

check "scores and sources per rank equal within $TOL" "
WITH bad AS (
  SELECT r.user_id, r.rank, r.score rs, e.score es, r.source rsrc, e.source esrc
  FROM ref_recs r JOIN ext_recs e USING (user_id, rank)
  WHERE r.source <> e.source
     OR abs(r.score - e.score) > $TOL * greatest(1, abs(r.score)))
SELECT count(*) = 0,
       CASE WHEN count(*) = 0 THEN (SELECT count(*) FROM ext_recs) || ' rows'
            ELSE count(*) || ' rows differ, e.g. ' ||
                 string_agg(format('user %s rank %s: ref %s %s ext %s %s', user_id, rank, rsrc, rs, esrc, es),
                            '; ' ORDER BY user_id, rank) FILTER (WHERE (user_id, rank) IN
                   (SELECT user_id, rank FROM bad ORDER BY 1, 2 LIMIT 5)) END
FROM bad"

check "same products per user (differences only among scores tied within $TOL)" "
WITH diff AS (
  SELECT e.user_id, e.rank, e.product_id ep, r.product_id rp, e.score, e.source
  FROM ext_recs e JOIN ref_recs r USING (user_id, rank)
  WHERE e.product_id <> r.product_id),
bad AS (
  SELECT d.* FROM diff d
  WHERE NOT (
    -- the extension's product really has (within TOL) the score it was
    -- listed with, and is not in the user's history
    CASE d.source
      WHEN 'cf' THEN EXISTS (SELECT 1 FROM ref_scores s
                             WHERE s.user_id = d.user_id AND s.product_id = d.ep
                               AND abs(s.score - d.score) <= $TOL * greatest(1, abs(d.score)))
      ELSE EXISTS (SELECT 1 FROM ref_popular p
                   WHERE p.product_id = d.ep AND p.users = d.score)
    END
    AND NOT EXISTS (SELECT 1 FROM $REL h
                    WHERE h.user_id = d.user_id AND h.product_id = d.ep)
    -- and the reference's product at that rank ties with it
    AND EXISTS (SELECT 1 FROM ref_recs r2
                WHERE r2.user_id = d.user_id AND r2.product_id = d.rp
                  AND abs(r2.score - d.score) <= $TOL * greatest(1, abs(d.score)))))
SELECT count(*) = 0,
       (SELECT count(*) FROM diff) || ' rows differ only by ties'
       || CASE WHEN count(*) = 0 THEN ''
               ELSE ', ' || count(*) || ' real differences, e.g. ' ||
                    string_agg(format('user %s rank %s: ref %s ext %s (%s %s)', user_id, rank, rp, ep, source, score),
                               '; ' ORDER BY user_id, rank) FILTER (WHERE (user_id, rank) IN
                      (SELECT user_id, rank FROM bad ORDER BY 1, 2 LIMIT 5)) END
FROM bad"

for m in cutoff model_items; do
    has=$("${PSQL[@]}" -At -c "SELECT to_jsonb(e) ? '$m' FROM ext_eval e LIMIT 1")
    if [ "$has" != t ]; then skip "evaluation: $m not returned by the extension"; continue; fi
    check "evaluation: $m equal" "
SELECT (to_jsonb(e) ->> '$m') = to_jsonb(r) ->> '$m', format('ref %s ext %s', r.$m, to_jsonb(e) ->> '$m')
FROM ref_eval r, ext_eval e"
done

check "evaluation: users_evaluated equal" "
SELECT (to_jsonb(e) ->> 'users_evaluated')::bigint = r.users_evaluated,
       format('ref %s ext %s', r.users_evaluated, to_jsonb(e) ->> 'users_evaluated')
FROM ref_eval r, ext_eval e"

for m in precision recall ndcg hit_rate map coverage pop_precision pop_recall; do
    has=$("${PSQL[@]}" -At -c "SELECT to_jsonb(e) ? '$m' FROM ext_eval e LIMIT 1")
    if [ "$has" != t ]; then
        case $m in
            pop_*) skip "evaluation: $m not returned by the extension" ;;
            *)     fail "evaluation: $m not returned by the extension" ;;
        esac
        continue
    fi
    check "evaluation: $m equal within $TOL" "
SELECT abs((to_jsonb(e) ->> '$m')::float8 - r.$m) <= $TOL,
       format('ref %s ext %s', r.$m, to_jsonb(e) ->> '$m')
FROM ref_eval r, ext_eval e"
done

if [ -z "$EXT_SIM_SQL" ]; then
    skip "neighbour lists not compared (EXT_SIM_SQL is empty)"
elif ! "${PSQL[@]}" -c "DROP TABLE IF EXISTS ext_sim" -c "CREATE TABLE ext_sim AS SELECT item_id::int AS item_id, neighbor_id::int AS neighbor_id, sim::float8 AS sim FROM ($EXT_SIM_SQL) s"; then
    skip "neighbour lists not compared (EXT_SIM_SQL failed)"
else
    check "neighbour counts per item equal" "
WITH r AS (SELECT item_id, count(*) n FROM ref_sim GROUP BY 1),
     e AS (SELECT item_id, count(*) n FROM ext_sim GROUP BY 1),
     bad AS (SELECT coalesce(r.item_id, e.item_id) i FROM r FULL JOIN e USING (item_id)
             WHERE r.n IS DISTINCT FROM e.n)
SELECT count(*) = 0, coalesce(count(*) || ' items differ, e.g. ' || min(i), '') FROM bad"
    check "neighbours equal (sim within $TOL; others only tied at the K-th sim)" "
WITH kth AS (SELECT item_id, min(sim) AS s FROM ref_sim GROUP BY 1),
bad AS (
  SELECT e.* FROM ext_sim e
  LEFT JOIN ref_sim r USING (item_id, neighbor_id)
  LEFT JOIN kth k USING (item_id)
  WHERE CASE WHEN r.item_id IS NOT NULL THEN abs(r.sim - e.sim) > $TOL
             ELSE k.s IS NULL OR abs(k.s - e.sim) > $TOL END)
SELECT count(*) = 0, coalesce(count(*) || ' pairs differ, e.g. ' || min(item_id || '->' || neighbor_id), '') FROM bad"
fi

if [ -z "$EXT_POP_SQL" ]; then
    skip "popularity list not compared (EXT_POP_SQL is empty)"
elif ! "${PSQL[@]}" -c "DROP TABLE IF EXISTS ext_pop" -c "CREATE TABLE ext_pop AS SELECT rank::int AS rank, product_id::int AS product_id, users::bigint AS users FROM ($EXT_POP_SQL) s"; then
    skip "popularity list not compared (EXT_POP_SQL failed)"
else
    check "popularity list equal (rank, product, distinct users)" "
WITH bad AS (SELECT coalesce(r.rank, e.rank) rk FROM ref_popular r FULL JOIN ext_pop e USING (rank)
             WHERE r.product_id IS DISTINCT FROM e.product_id OR r.users IS DISTINCT FROM e.users)
SELECT count(*) = 0, CASE WHEN count(*) = 0 THEN (SELECT count(*) FROM ref_popular) || ' items'
                          ELSE count(*) || ' ranks differ, first ' || min(rk) END FROM bad"
fi

if [ "$fails" -gt 0 ]; then
    echo "RESULT: FAIL ($fails failed checks)"
    exit 1
fi
echo "RESULT: PASS"
