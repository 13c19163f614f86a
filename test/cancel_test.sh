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
-- 800k events: 20k users with 40 events each, 4k products, each user in a
-- 200-product cluster: long enough phases (the core's work grows with the
-- square of a user's items) to land a cancel in each.
CREATE TABLE interactions AS
  SELECT u AS user_id,
         ((u % 20) * 200 + (hashint4(u * 31 + j) & 1023) % 200)::int AS product_id,
         (ARRAY['view', 'view', 'click', 'add_to_cart', 'purchase'])[1 + (hashint4(u + j) & 1023) % 5] AS event_type,
         timestamptz '2024-01-01' + (j * interval '1 hour') AS event_time
    FROM generate_series(1, 20000) u, generate_series(1, 40) j;
CREATE INDEX ON interactions (user_id);
SELECT model_id FROM recsys_train(neighbors => 20);
SQL
before=$(psql -qXAt -c "SELECT model_id FROM recsys_models WHERE active")
fail=0
MWM=1GB   # maintenance_work_mem of the cancelled statements
HIT=""
PHASE=""

# cancel_after SQL DELAY: runs SQL, cancels it after DELAY seconds, and checks
# the statement ended with 57014 within one second of the cancel.
cancel_after() {
    local sql=$1 delay=$2 out
    out=$(mktemp)
    # In a transaction rolled back at the end, so a run that finishes first
    # leaves the active model alone too.
    PGAPPNAME=recsys_cancel_victim psql -qX -v VERBOSITY=verbose -c "SET client_min_messages = debug1" \
        -c "SET maintenance_work_mem = '$MWM'" -c "BEGIN" -c "$sql" -c "ROLLBACK" >"$out" 2>&1 &
    local victim=$!
    sleep "$delay"
    local t0 t1 pid
    pid=$(psql -qXAt -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'recsys_cancel_victim' AND state = 'active' AND backend_type = 'client backend'")
    if [ -z "$pid" ]; then
        wait $victim || true
        echo "  delay $delay: statement finished before the cancel (no check)"
        PHASE=finished
        rm -f "$out"; return 0
    fi
    t0=$(date +%s.%N)
    psql -qXAt -c "SELECT pg_cancel_backend($pid)" >/dev/null 2>&1
    wait $victim || true
    t1=$(date +%s.%N)
    if ! grep -q '57014' "$out" && grep -q '^(1 row)' "$out"; then
        echo "  delay $delay: statement finished as the cancel was sent (no check)"
        PHASE=finished
        rm -f "$out"; return 0
    fi
    local secs
    secs=$(echo "$t1 - $t0" | bc)
    # The phase the cancel hit, from train_store's DEBUG lines.
    if grep -q 'recsys: model written' "$out"; then PHASE=after-writing
    elif grep -q 'recsys: trained in' "$out"; then PHASE=writing
    elif grep -q 'recsys: read ' "$out"; then PHASE=core
    else PHASE=reading; fi
    if grep -q '57014' "$out" && [ "$(echo "$secs < 1.0" | bc)" = 1 ]; then
        echo "  ok: delay $delay, stopped ${secs}s after the cancel, during: $PHASE"
        HIT="$HIT $PHASE"
    else
        echo "  FAIL: delay $delay, ${secs}s after the cancel:"; cat "$out"; fail=1
    fi
    rm -f "$out"
}

# One uncancelled run gives the end of each phase (DEBUG lines of
# recsys.train_store); then cancel in the middle of each phase, and around.
TRAIN="SELECT * FROM recsys_train(neighbors => 0)"
TRAIN_PASSES="SELECT * FROM recsys_train(neighbors => 20)"
phases=$(psql -qX -c "SET client_min_messages = debug1" -c "SET maintenance_work_mem = '1GB'" \
              -c "BEGIN" -c "$TRAIN" -c "ROLLBACK" 2>&1 | grep -o ' in [0-9.]* s' | grep -o '[0-9.]*' | tr '\n' ' ')
read -r t_read t_train t_write <<<"$phases"
echo "recsys_train phases end at: read ${t_read}s, core ${t_train}s, written ${t_write}s"
mid_read=$(echo "scale=3; $t_read / 2" | bc)
mid_core=$(echo "scale=3; ($t_read + $t_train) / 2" | bc)
mid_write=$(echo "scale=3; ($t_train + $t_write) / 2" | bc)
echo "recsys_train:"
cancel_after "$TRAIN" 0.05
# Phases last 0.1-0.7 s and runs vary: step around each phase's middle until
# a cancel lands in it.
for target in "reading $mid_read" "core $mid_core" "writing $mid_write"; do
    read -r name mid <<<"$target"
    for off in 0 -0.04 0.04 -0.08 0.08 -0.12 0.12 -0.16 0.16 -0.2 0.2 -0.24 -0.28 -0.32 -0.36 -0.4 -0.45 -0.5; do
        case " $HIT " in *" $name "*) break ;; esac
        d=$(echo "$mid + $off" | bc)
        [ "$(echo "$d > 0.01" | bc)" = 1 ] || continue
        cancel_after "$TRAIN" "$d"
    done
done
for p in reading core writing; do
    case " $HIT " in
        *" $p "*) ;;
        *) echo "FAIL: no cancel landed in the $p phase"; fail=1 ;;
    esac
done
# Training in passes (a budget far below the in-memory figure): the core
# phase is the merge and the passes over the matrix on disk; cancels there
# stop it as fast, and the temporary files go with it.
MWM=2MB
out=$(psql -qX -c "SET client_min_messages = debug1" -c "SET maintenance_work_mem = '$MWM'" \
           -c "BEGIN" -c "$TRAIN_PASSES" -c "ROLLBACK" 2>&1)
if ! grep -q 'computing in [0-9]* passes' <<<"$out"; then
    echo "FAIL: no training in passes at $MWM:"; echo "$out"; fail=1
fi
read -r p_read p_train _ <<<"$(grep -o ' in [0-9.]* s' <<<"$out" | grep -o '[0-9.]*' | tr '\n' ' ')"
echo "recsys_train in passes ($(grep -o 'computing in [0-9]* passes' <<<"$out")): read ${p_read}s, core ${p_train}s"
HIT=""
for f in 0.3 0.5 0.7 0.9; do
    cancel_after "$TRAIN_PASSES" "$(echo "$p_read + ($p_train - $p_read) * $f" | bc)"
done
case " $HIT " in
    *" core "*) ;;
    *) echo "FAIL: no cancel landed in the passes"; fail=1 ;;
esac
# After a statement_timeout anywhere in training in passes (or none, if it
# finished first), the session holds no temporary file of recsys open.
for ms in 100 $(echo "$p_read * 1000 / 1" | bc) $(echo "($p_read + $p_train) * 500 / 1" | bc); do
    left=$(psql -qXAt -v ON_ERROR_STOP=0 2>/dev/null <<SQL
SET maintenance_work_mem = '$MWM';
SELECT pg_backend_pid() AS pid \\gset
\\setenv PID :pid
BEGIN;
SET LOCAL statement_timeout = '${ms}ms';
$TRAIN_PASSES;
ROLLBACK;
\\! ls -l /proc/\$PID/fd | grep -c 'pgsql_tmp' || true
SQL
)
    if [ "$(tail -1 <<<"$left")" = 0 ]; then echo "  ok: timeout ${ms}ms, no temporary file left open"
    else echo "  FAIL: timeout ${ms}ms, temporary files left open: $left"; fail=1; fi
done
MWM=1GB

echo "recsys_evaluate:"
for d in 0.1 0.4 0.8 1.2; do cancel_after "SELECT * FROM recsys_evaluate(10, test_days => 1, neighbors => 0)" $d; done

# Interrupts that are not a cancel must not stop the work: a client
# connection check every 100 ms, and memory-context logging requested from
# another session, both set InterruptPending while the core runs.
echo "other interrupts:"
out=$(mktemp)
PGAPPNAME=recsys_interrupt_victim psql -qX -v ON_ERROR_STOP=1 -c "SET client_connection_check_interval = '100ms'" \
    -c "SET maintenance_work_mem = '1GB'" -c "BEGIN" -c "$TRAIN" -c "$TRAIN" -c "$TRAIN" -c "ROLLBACK" >"$out" 2>&1 &
victim=$!
signals=0
while kill -0 $victim 2>/dev/null && [ $signals -lt 40 ]; do
    pid=$(psql -qXAt -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'recsys_interrupt_victim' AND state = 'active'")
    if [ -n "$pid" ] && [ "$(psql -qXAt -c "SELECT pg_log_backend_memory_contexts($pid)" 2>/dev/null)" = t ]; then
        signals=$((signals + 1))
    fi
    sleep 0.05
done
if wait $victim; then
    echo "  ok: three trainings under client_connection_check_interval = 100ms and $signals memory-context requests"
else
    echo "  FAIL: a non-cancel interrupt stopped training:"; cat "$out"; fail=1
fi
[ $signals -gt 0 ] || { echo "  FAIL: no memory-context request reached the training"; fail=1; }
rm -f "$out"

after=$(psql -qXAt -c "SELECT model_id FROM recsys_models WHERE active")
if [ "$before" != "$after" ]; then echo "FAIL: active model changed from $before to $after"; fail=1; fi
n=$(psql -qXAt -c "SELECT count(*) FROM recsys_recommend(ARRAY[1, 2, 3], 5)")
[ "$n" = 15 ] || { echo "FAIL: the previous model does not serve ($n rows)"; fail=1; }
exit $fail
