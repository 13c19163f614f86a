#!/usr/bin/env bash
# pg_cancel_backend stops recsys_train and recsys_evaluate within a second,
# whichever phase they are in (counting, the SQL aggregation, the C++ core,
# writing the model), and the previous model keeps serving.
# Needs PGHOST/PGPORT/PGUSER of a server with recsys installed.
set -euo pipefail
DB=recsys_cancel_test
psql -qX -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
trap 'psql -qX -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true' EXIT
export PGDATABASE=$DB
psql -qX -v ON_ERROR_STOP=1 <<'SQL'
CREATE EXTENSION recsys;
-- 600k events: 40k users, 4k products, each user in a 200-product cluster.
CREATE TABLE interactions AS
  SELECT u AS user_id,
         ((u % 20) * 200 + (hashint4(u * 31 + j) & 1023) % 200)::int AS product_id,
         (ARRAY['view', 'view', 'click', 'add_to_cart', 'purchase'])[1 + (hashint4(u + j) & 1023) % 5] AS event_type,
         timestamptz '2024-01-01' + (j * interval '1 hour') AS event_time
    FROM generate_series(1, 40000) u, generate_series(1, 15) j;
CREATE INDEX ON interactions (user_id);
SELECT model_id FROM recsys_train(neighbors => 20);
SQL
before=$(psql -qXAt -c "SELECT model_id FROM recsys_models WHERE active")
fail=0

# cancel_after SQL DELAY: runs SQL, cancels it after DELAY seconds, and checks
# the statement ended with 57014 within one second of the cancel.
cancel_after() {
    local sql=$1 delay=$2 out
    out=$(mktemp)
    PGAPPNAME=recsys_cancel_victim psql -qX -v VERBOSITY=verbose -c "SET client_min_messages = debug1" -c "SET maintenance_work_mem = '1GB'" -c "$sql" >"$out" 2>&1 &
    local victim=$!
    sleep "$delay"
    local t0 t1 pid
    pid=$(psql -qXAt -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'recsys_cancel_victim' AND state = 'active' AND backend_type = 'client backend'")
    if [ -z "$pid" ]; then
        wait $victim || true
        echo "  delay $delay: statement finished before the cancel (no check)"
        rm -f "$out"; return 0
    fi
    t0=$(date +%s.%N)
    psql -qXAt -c "SELECT pg_cancel_backend($pid)" >/dev/null
    wait $victim || true
    t1=$(date +%s.%N)
    local secs phase
    secs=$(echo "$t1 - $t0" | bc)
    phase=$(grep -o 'recsys: [a-z]* [^(]*in' "$out" | tail -1 || true)
    if grep -q '57014' "$out" && [ "$(echo "$secs < 1.0" | bc)" = 1 ]; then
        echo "  ok: delay $delay, stopped ${secs}s after the cancel (last phase done: ${phase:-none})"
    else
        echo "  FAIL: delay $delay, ${secs}s after the cancel:"; cat "$out"; fail=1
    fi
    rm -f "$out"
}

echo "recsys_train:"
for d in 0.05 0.3 0.6 0.9 1.2 1.5 1.8 2.1 2.4 2.7 3.0 3.5; do cancel_after "SELECT * FROM recsys_train(neighbors => 0)" $d; done
echo "recsys_evaluate:"
for d in 0.1 0.4 0.8 1.2; do cancel_after "SELECT * FROM recsys_evaluate(10, test_days => 5, neighbors => 0)" $d; done

after=$(psql -qXAt -c "SELECT model_id FROM recsys_models WHERE active")
if [ "$before" != "$after" ]; then echo "FAIL: active model changed from $before to $after"; fail=1; fi
n=$(psql -qXAt -c "SELECT count(*) FROM recsys_recommend(ARRAY[1, 2, 3], 5)")
[ "$n" = 15 ] || { echo "FAIL: the previous model does not serve ($n rows)"; fail=1; }
exit $fail
