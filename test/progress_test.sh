#!/usr/bin/env bash
# Live progress and the run log seen from another session:
#  - with shared_preload_libraries = 'recsys' (scripts/test.sh's server),
#    recsys_progress shows a running training's rows read (then items done)
#    and an evaluation's; without it (a throwaway server this test starts),
#    it still lists the running training from the run log, counters NULL;
#  - a training whose backend is terminated shows as 'terminated' in
#    recsys_training_runs, and the previous model keeps serving.
# Polls with bounded loops; no assertion depends on timing, only on a
# training of 800k events lasting long enough to be seen (seconds).
# Needs PGHOST/PGPORT/PGUSER of a server with recsys installed.
set -euo pipefail
cd "$(dirname "$0")/.."
DB=recsys_progress_test
fail=0
TMPPG=""
cleanup() {
    psql -qX -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
    if [ -n "$TMPPG" ]; then scripts/pgcluster.sh stop "$TMPPG"; rm -rf "$TMPPG"; fi
}
trap cleanup EXIT

setup() {
    psql -qX -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
    psql -qXAt -v ON_ERROR_STOP=1 -d $DB >/dev/null <<'SQL'
CREATE EXTENSION recsys;
-- 800k events (as test/cancel_test.sh): 20k users, 40 events each, over 40 hours.
CREATE TABLE interactions AS
  SELECT u AS user_id,
         ((u % 20) * 200 + (hashint4(u * 31 + j) & 1023) % 200)::int AS product_id,
         (ARRAY['view', 'view', 'click', 'add_to_cart', 'purchase'])[1 + (hashint4(u + j) & 1023) % 5] AS event_type,
         timestamptz '2024-01-01' + (j * interval '1 hour') AS event_time
    FROM generate_series(1, 20000) u, generate_series(1, 40) j;
VACUUM interactions;   -- reltuples = 800000 exactly
SET maintenance_work_mem = '1GB';
SELECT model_id FROM recsys_train(neighbors => 5);
-- progress_seen(kind, condition, timeout): the first recsys_progress row of
-- another backend's run of that kind meeting the condition, as psql -A
-- prints it ('|' between the columns, NULL as nothing), polled every
-- millisecond inside this one statement (a phase of a few tens of
-- milliseconds is seen, where a new psql every 50 ms could miss it); NULL
-- after the timeout.
CREATE FUNCTION progress_seen(kind text, cond text, timeout_s float8) RETURNS text
LANGUAGE plpgsql AS $f$
DECLARE
    r text;
    t0 timestamptz := clock_timestamp();
BEGIN
    LOOP
        EXECUTE format('SELECT concat_ws(''|'', run_id, phase, coalesce(rows_read::text, ''''),
                               coalesce(rows_estimate::text, ''''), coalesce(items_done::text, ''''),
                               coalesce(items_total::text, ''''))
                          FROM recsys_progress
                         WHERE kind = %L AND pid <> pg_backend_pid() AND (%s) LIMIT 1', kind, cond) INTO r;
        EXIT WHEN r IS NOT NULL OR clock_timestamp() - t0 > timeout_s * interval '1 second';
        PERFORM pg_sleep(0.001);
    END LOOP;
    RETURN r;
END
$f$;
SQL
}

q() { psql -qXAt -d $DB -c "$1"; }

# start SQL: runs SQL in the background as application 'recsys_progress_victim'.
start() {
    PGAPPNAME=recsys_progress_victim psql -qX -d $DB -c "SET maintenance_work_mem = '1GB'" -c "$1" \
        >/tmp/recsys_progress_victim.$$ 2>&1 &
    VICTIM=$!
}

# poll KIND CONDITION: waits (bounded: 30 s) until recsys_progress shows a
# run of KIND meeting CONDITION while the statement runs; prints the row or
# nothing.  The polling happens inside the database (progress_seen), every
# millisecond: the computing phase of this log lasts well under 0.1 s.
poll() {
    q "SELECT progress_seen('$1', \$c\$$2\$c\$, 30)" | tr '|' ' '
}

ok() { echo "  ok: $*"; }
bad() { echo "  FAIL: $*"; fail=1; }

check_preloaded() {
    echo "with shared_preload_libraries = 'recsys':"
    start "SELECT model_id FROM recsys_train(neighbors => 0)"
    local r1 r2 run
    r1=$(poll train "rows_read > 0")
    r2=$(poll train "items_done > 0")
    wait $VICTIM || true
    # shellcheck disable=SC2086
    set -- $r1
    if [ -n "$r1" ] && [ "$3" -gt 0 ] && [ "$3" -le 800000 ] && [ "$4" = 800000 ]; then
        ok "training seen reading: run $1, phase $2, $3 of about $4 rows read"
    else bad "no running training with rows read > 0 seen (saw '$r1')"; fi
    # shellcheck disable=SC2086
    set -- $r2
    if [ -n "$r2" ] && [ "$3" = 800000 ] && [ "$5" -gt 0 ] && [ "$5" -le "$6" ] && [ "$6" = 4000 ]; then
        ok "training seen computing: phase $2, $5 of $6 items done, all 800000 rows read"
    else bad "no running training with items done > 0 seen (saw '$r2')"; fi
    run=$(q "SELECT status, rows_read, items_done, items_total FROM recsys_training_runs ORDER BY run_id DESC LIMIT 1" | tr '|' ' ')
    [ "$run" = "succeeded 800000 4000 4000" ] && ok "logged as: $run" || bad "run log says '$run'"
    [ "$(q "SELECT count(*) FROM recsys_progress")" = 0 ] && ok "nothing in progress afterwards" \
        || bad "progress rows left: $(q "SELECT * FROM recsys_progress")"

    start "SELECT users_evaluated FROM recsys_evaluate(k => 10, test_days => 1, neighbors => 0)"
    r1=$(poll evaluate "rows_read > 0")
    wait $VICTIM || true
    [ -n "$r1" ] && ok "evaluation seen: $r1" || bad "no running evaluation with rows read seen"
    run=$(q "SELECT kind, status, phase, items_done = items_total AND items_total > 0 FROM recsys_training_runs ORDER BY run_id DESC LIMIT 1" | tr '|' ' ')
    [ "$run" = "evaluate succeeded done t" ] && ok "logged as: $run" || bad "run log says '$run'"
}

check_not_preloaded() {
    echo "without shared_preload_libraries = 'recsys':"
    start "SELECT model_id FROM recsys_train(neighbors => 0)"
    local r1 run
    r1=$(poll train "true")
    local counters
    counters=$(q "SELECT count(*) FROM recsys_progress WHERE rows_read IS NULL AND items_done IS NULL AND items_total IS NULL")
    wait $VICTIM || true
    # shellcheck disable=SC2086
    set -- $r1
    if [ -n "$r1" ] && [ "$2" = starting ] && [ "$counters" -ge 1 ]; then
        ok "the running training is listed from the run log: run $1, phase $2, counters NULL"
    else bad "running training not listed as expected (saw '$r1', rows with NULL counters: $counters)"; fi
    [ "$(q "SELECT count(*) FROM recsys.progress_slots()")" = 0 ] && ok "no shared progress slots" \
        || bad "progress slots exist without preload"
    run=$(q "SELECT status, rows_read, items_total FROM recsys_training_runs ORDER BY run_id DESC LIMIT 1" | tr '|' ' ')
    [ "$run" = "succeeded 800000 4000" ] && ok "logged as: $run" || bad "run log says '$run'"
}

check_terminated() {
    local before run_id pid status after
    before=$(q "SELECT model_id FROM recsys_models WHERE active")
    start "SELECT model_id FROM recsys_train(neighbors => 0)"
    run_id=$(poll train "true" | cut -d' ' -f1)
    pid=$(q "SELECT pid FROM recsys_progress WHERE run_id = ${run_id:-0}")
    if [ -z "$run_id" ] || [ -z "$pid" ]; then bad "no running training to terminate"; wait $VICTIM || true; return; fi
    q "SELECT pg_terminate_backend($pid)" >/dev/null
    wait $VICTIM || true
    for _ in $(seq 1 200); do
        status=$(q "SELECT status FROM recsys_training_runs WHERE run_id = $run_id")
        [ "$status" = terminated ] && break
        sleep 0.05
    done
    after=$(q "SELECT model_id FROM recsys_models WHERE active")
    if [ "$status" = terminated ] && [ "$after" = "$before" ]; then
        ok "terminated training (run $run_id, pid $pid) shows as '$status'; model $after still serves"
    else bad "terminated training shows as '$status', active model $before -> $after"; fi
    [ "$(q "SELECT count(*) FROM recsys_progress WHERE run_id = $run_id")" = 0 ] \
        && ok "and is no longer in progress" || bad "terminated run still listed in recsys_progress"
}

preload=$(psql -qXAt -d postgres -c "SHOW shared_preload_libraries" | tr -d ' ')
setup
case ",$preload," in
    *,recsys,*) check_preloaded; check_terminated ;;
    *) check_not_preloaded; check_terminated ;;
esac

# The other mode on a throwaway server (scripts/pgcluster.sh) that listens on
# a Unix socket in its own directory only, so no TCP port can clash.
if [ "${RECSYS_PROGRESS_NESTED:-}" = "" ]; then
    TMPPG=$(mktemp -d /tmp/recsys-progress-XXXXXX)
    case ",$preload," in
        *,recsys,*) other="max_worker_processes=20" ;;
        *) other="shared_preload_libraries=recsys" ;;
    esac
    if scripts/pgcluster.sh start "$TMPPG" "$PGPORT" "$other" "listen_addresses=''" >/dev/null; then
        PGHOST=$TMPPG RECSYS_PROGRESS_NESTED=1 bash "$0" || fail=1
    else
        bad "could not start a second server ($other)"; tail -5 "$TMPPG/server.log" || true
    fi
fi
rm -f /tmp/recsys_progress_victim.$$
exit $fail
