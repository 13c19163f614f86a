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

# cancel_in SQL PHASE [COND]: runs SQL and, as soon as recsys_progress shows
# it in PHASE (the progress record is shared: the cluster preloads recsys),
# cancels it from another session; checks the statement ended with 57014
# and its session was ready for the next statement within one second of the
# cancel (both times from the server's clock), and that its backend then
# holds no temporary file of recsys open.  Waiting on the phase, not on a
# clock, keeps this independent of how fast the machine is.
cancel_in() {
    local sql=$1 want=$2 cond=${3:-true} out
    out=$(mktemp)
    # In a transaction rolled back at the end, so a run that finishes first
    # leaves the active model alone too.
    PGAPPNAME=recsys_cancel_victim psql -qX -v VERBOSITY=verbose >"$out" 2>&1 <<SQL &
SET client_min_messages = debug1;
SET maintenance_work_mem = '$MWM';
SELECT pg_backend_pid() AS pid \gset
\setenv PID :pid
BEGIN;
$sql;
ROLLBACK;
SELECT 'stopped at ' || extract(epoch FROM clock_timestamp());
\! echo "temporary files open: \$(ls -l /proc/\$PID/fd | grep -c 'pgsql_tmp')"
SQL
    local victim=$!
    # The watcher polls the shared progress records every 2 ms; it gives up
    # when the run ends without reaching the phase.
    local t0
    t0=$(psql -qXAt 2>&1 <<SQL | grep -o 'cancelled at [0-9.]*' | grep -o '[0-9.]*$' || true
DO \$\$
DECLARE
    p int;
    seen boolean := false;
    t0 timestamptz := clock_timestamp();
BEGIN
    LOOP
        SELECT s.pid INTO p FROM recsys.progress_slots() s
         WHERE s.pid <> pg_backend_pid() AND s.phase = '$want' AND ($cond);
        EXIT WHEN p IS NOT NULL;
        IF EXISTS (SELECT 1 FROM recsys.progress_slots() s WHERE s.pid <> pg_backend_pid()) THEN
            seen := true;
        ELSIF seen OR clock_timestamp() - t0 > interval '60 s' THEN
            EXIT;
        END IF;
        PERFORM pg_sleep(0.002);
    END LOOP;
    IF p IS NOT NULL THEN
        PERFORM pg_cancel_backend(p);
        RAISE NOTICE 'cancelled at %', extract(epoch FROM clock_timestamp());
    END IF;
END \$\$;
SQL
)
    wait $victim || true
    local t1 secs phase
    # When the victim's session could run its next statement: the server's
    # clock, as t0 is, so psql's exit and the shell's are not counted.
    t1=$(grep -o 'stopped at [0-9.]*' "$out" | grep -o '[0-9.]*$' || true)
    if [ -z "$t0" ]; then
        echo "  FAIL: $want: the run never showed that phase:"; cat "$out"; fail=1
        rm -f "$out"; return 0
    fi
    secs=$(echo "${t1:-9999999999} - $t0" | bc)
    # The phase the cancel hit, from the DEBUG lines of the phases' ends.
    if grep -q 'recsys: model written' "$out"; then phase=after-writing
    elif grep -q 'recsys: trained in' "$out"; then phase=after-training
    elif grep -q 'recsys: read ' "$out"; then phase=core
    else phase=reading; fi
    if grep -q '57014' "$out" && [ "$(echo "$secs < 1.0" | bc)" = 1 ] &&
       grep -q 'temporary files open: 0' "$out"; then
        echo "  ok: cancelled in $want ($phase), stopped ${secs}s after the cancel, no temporary file left open"
    else
        echo "  FAIL: $want, ${secs}s after the cancel:"; cat "$out"; fail=1
    fi
    rm -f "$out"
}

TRAIN="SELECT * FROM recsys_train(neighbors => 0)"
TRAIN_PASSES="SELECT * FROM recsys_train(neighbors => 20)"
echo "recsys_train:"
cancel_in "$TRAIN" reading
cancel_in "$TRAIN" reading "s.rows_read > 300000"
cancel_in "$TRAIN" training
cancel_in "$TRAIN" writing
# Training in passes (a budget far below the in-memory figure: the data
# needs about 42 MB): the reading spills, the core phase is the merge and
# the passes over the matrix on disk; cancels there stop it as fast, and
# the temporary files go with it.
MWM=16MB
out=$(psql -qX -c "SET maintenance_work_mem = '$MWM'" -c "BEGIN" -c "$TRAIN_PASSES" -c "ROLLBACK" 2>&1)
if grep -q 'computing in at most [0-9]* passes' <<<"$out"; then
    echo "recsys_train in passes ($(grep -o 'computing in at most [0-9]* passes' <<<"$out")):"
else
    echo "FAIL: no training in passes at $MWM:"; echo "$out"; fail=1
fi
cancel_in "$TRAIN_PASSES" reading "s.rows_read > 400000"
cancel_in "$TRAIN_PASSES" similarities "s.items_done > 0"
# A statement_timeout is a cancel too: none of the session's temporary
# files stay open after it.
left=$(psql -qXAt -v ON_ERROR_STOP=0 2>/dev/null <<SQL
SET maintenance_work_mem = '$MWM';
SELECT pg_backend_pid() AS pid \\gset
\\setenv PID :pid
BEGIN;
SET LOCAL statement_timeout = '1s';
$TRAIN_PASSES;
ROLLBACK;
\\! ls -l /proc/\$PID/fd | grep -c 'pgsql_tmp' || true
SQL
)
if [ "$(tail -1 <<<"$left")" = 0 ]; then echo "  ok: statement_timeout 1s, no temporary file left open"
else echo "  FAIL: statement_timeout 1s, temporary files left open: $left"; fail=1; fi
MWM=1GB

echo "recsys_evaluate:"
EVAL="SELECT * FROM recsys_evaluate(10, test_days => 1, neighbors => 0)"
for p in reading training scoring; do cancel_in "$EVAL" $p; done

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
