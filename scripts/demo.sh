#!/usr/bin/env bash
# The whole product on a fresh Debian bookworm machine, as root:
# installs what is missing, builds and installs recsys and its proxy, starts
# a throwaway PostgreSQL cluster, generates a demo shop, trains, evaluates,
# prints the metrics and sample recommendations, then serves the HTTP API and
# the web page until Ctrl-C.
#
#   scripts/demo.sh                  demo size (3000 users, ~75k events), then serve
#   scripts/demo.sh --no-serve       stop after the printout
#   DEMO_USERS=20000 DEMO_PRODUCTS=3000 scripts/demo.sh
#   DEMO_LISTEN=127.0.0.1:8000       where the proxy listens
set -euo pipefail
cd "$(dirname "$0")/.."
SERVE=1
[ "${1:-}" = "--no-serve" ] && SERVE=0
USERS=${DEMO_USERS:-3000}
PRODUCTS=${DEMO_PRODUCTS:-1000}
LISTEN=${DEMO_LISTEN:-127.0.0.1:8000}

echo "== installing dependencies"
scripts/install_deps.sh
echo "== building"
make -j2 >/dev/null && make install >/dev/null
if [ -f proxy/Makefile ]; then make -C proxy -j2 >/dev/null; fi

DIR=$(mktemp -d /tmp/recsys-demo.XXXXXX)
chmod 755 "$DIR"
PORT=55480
while (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; do PORT=$((PORT + 1)); done
echo "== starting a throwaway PostgreSQL in $DIR (port $PORT)"
scripts/pgcluster.sh start "$DIR" "$PORT"
PROXY_PID=
cleanup() {
    [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null && wait "$PROXY_PID" 2>/dev/null
    scripts/pgcluster.sh stop "$DIR"
    rm -rf "$DIR"
}
trap cleanup EXIT
export PGHOST=$DIR PGPORT=$PORT PGUSER=postgres PGDATABASE=shop
psql -qX -d postgres -c "CREATE DATABASE shop"

echo "== generating the demo shop ($USERS users, $PRODUCTS products, 180 days)"
scripts/demo_data.sh "$USERS" "$PRODUCTS" 180 42 >/dev/null
psql -qX -c "SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM products) AS products,
                    (SELECT count(*) FROM interactions) AS interactions, (SELECT count(*) FROM orders) AS orders"

echo "== training"
psql -qX -c "CREATE EXTENSION recsys" -c "SELECT * FROM recsys_train()"

echo "== evaluating (last 30 days as test; k = 1..20, recorded in recsys_evaluations)"
psql -qX -c "CREATE TEMP TABLE ev AS SELECT k, e.* FROM generate_series(1, 20) AS k, LATERAL recsys_evaluate(k) e" \
         -c "SELECT k, users_evaluated, round(precision::numeric, 4) AS precision, round(recall::numeric, 4) AS recall,
                    round(ndcg::numeric, 4) AS ndcg, round(hit_rate::numeric, 4) AS hit_rate, round(map::numeric, 4) AS map,
                    round(coverage::numeric, 4) AS coverage,
                    round(pop_precision::numeric, 4) AS pop_precision, round(pop_recall::numeric, 4) AS pop_recall
               FROM ev WHERE k IN (1, 5, 10, 20) ORDER BY k"

echo "== tuning: settings chosen on the 30 days before the test window, then tested next to the 1.0 defaults"
psql -qX -c "SET client_min_messages = warning" \
         -c "CREATE TEMP TABLE tuned AS SELECT * FROM recsys_tune(10, 30, apply => true)" \
         -c "SELECT label, round(precision::numeric, 4) AS \"P@10\",
                    CASE WHEN precision_lo IS NOT NULL THEN
                        format('[%s, %s]', round(precision_lo::numeric, 4), round(precision_hi::numeric, 4)) END AS \"P@10 95% CI\",
                    round(ndcg::numeric, 4) AS \"nDCG@10\", round(recall::numeric, 4) AS \"R@10\", users_evaluated AS users,
                    settings
               FROM tuned WHERE stage = 'test' ORDER BY CASE label WHEN 'default' THEN 1 WHEN 'tuned' THEN 2 ELSE 3 END"
echo "== retraining with the tuned settings (recsys_tune applied them)"
psql -qX -c "SELECT model_id, users, items, neighbor_pairs, round(seconds::numeric, 2) AS seconds FROM recsys_train()"

echo "== sample recommendations"
psql -qX -c "SELECT r.user_id, r.rank, r.product_id, p.product_name, p.category, round(r.score::numeric, 3) AS score, r.source
               FROM recsys_recommend(ARRAY(SELECT user_id FROM users ORDER BY user_id LIMIT 3), 5) r
               JOIN products p USING (product_id)
              ORDER BY r.user_id, r.rank"

if [ "$SERVE" = 1 ] && [ -x proxy/build/recsys-proxy ]; then
    echo "== serving http://$LISTEN/ (web page) and POST http://$LISTEN/recommendations; Ctrl-C stops"
    proxy/build/recsys-proxy --listen "$LISTEN" --dsn "host=$DIR port=$PORT user=postgres dbname=shop" &
    PROXY_PID=$!
    sleep 1
    curl -s -X POST "http://$LISTEN/recommendations" -H 'Content-Type: application/json' \
         -d '{"user_ids":[10,25,42],"top_n":5}' && echo
    wait "$PROXY_PID"
fi
