#!/usr/bin/env bash
# A DBA schedules recsys_train() with pg_cron, as docs/operations.md shows:
# the scheduled run replaces the active model; a scheduled run that fails
# (every event weight 0) shows in cron.job_run_details and in
# recsys_training_runs as failed, with its SQLSTATE and message, and the
# previous model keeps serving.  Needs a server started with
# shared_preload_libraries including pg_cron, cron.database_name = 'postgres'
# and cron.use_background_workers = on (scripts/test.sh starts one); skips
# (exit 0, saying so) when pg_cron is not loaded.
set -euo pipefail
DB=recsys_cron_test
FAILDB=recsys_cron_fail_test
case ",$(psql -qXAt -d postgres -c "SHOW shared_preload_libraries" | tr -d ' ')," in
    *,pg_cron,*) ;;
    *) echo "SKIP: pg_cron is not in shared_preload_libraries"; exit 0 ;;
esac
cleanup() {
    psql -qX -d postgres -c "SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname IN ('recsys-test', 'recsys-test-fail')" >/dev/null 2>&1 || true
    psql -qX -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "DROP DATABASE IF EXISTS $FAILDB" >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup
psql -qX -d postgres -c "CREATE DATABASE $DB" -c "CREATE DATABASE $FAILDB" -c "CREATE EXTENSION IF NOT EXISTS pg_cron"
for db in $DB $FAILDB; do
    psql -qX -v ON_ERROR_STOP=1 -d $db <<'SQL'
CREATE EXTENSION recsys;
CREATE TABLE interactions (user_id int, product_id int, event_type text, event_time timestamptz);
INSERT INTO interactions VALUES (1, 10, 'view', now()), (1, 11, 'click', now()), (2, 10, 'view', now()),
                                (2, 12, 'purchase', now()), (3, 11, 'view', now()), (3, 12, 'view', now());
SELECT model_id FROM recsys_train();
SQL
done
# In the second database every event type is now ignored: training there fails (55000).
psql -qX -v ON_ERROR_STOP=1 -d $FAILDB -c "UPDATE recsys.event_weights SET weight = 0"
before=$(psql -qXAt -d $DB -c "SELECT model_id FROM recsys_models WHERE active")
fail_before=$(psql -qXAt -d $FAILDB -c "SELECT model_id FROM recsys_models WHERE active")
psql -qXAt -d postgres -c "SELECT cron.schedule_in_database('recsys-test', '* * * * *', 'SELECT recsys_train()', '$DB')" \
                       -c "SELECT cron.schedule_in_database('recsys-test-fail', '* * * * *', 'SELECT recsys_train()', '$FAILDB')" >/dev/null
echo "scheduled; waiting for the minute's runs (up to 100 s)"
# last_run JOB: the status of the job's latest finished run.
last_run() {
    psql -qXAt -d postgres -c "SELECT d.status FROM cron.job_run_details d JOIN cron.job j USING (jobid)
                                WHERE j.jobname = '$1' AND d.status IN ('succeeded', 'failed')
                                ORDER BY d.start_time DESC LIMIT 1"
}
status=""; fstatus=""
for _ in $(seq 1 100); do
    status=$(last_run recsys-test); fstatus=$(last_run recsys-test-fail)
    [ -n "$status" ] && [ -n "$fstatus" ] && break
    sleep 1
done
message() {
    psql -qXAt -d postgres -c "SELECT d.return_message FROM cron.job_run_details d JOIN cron.job j USING (jobid)
                                WHERE j.jobname = '$1' ORDER BY d.start_time DESC LIMIT 1"
}
msg=$(message recsys-test); fmsg=$(message recsys-test-fail)
after=$(psql -qXAt -d $DB -c "SELECT model_id FROM recsys_models WHERE active")
fail=0
if [ "$status" = succeeded ] && [ "$after" -gt "$before" ]; then
    echo "ok: the scheduled recsys_train() ran ($msg) and model $after replaced model $before"
else
    echo "FAIL: status '${status:-none}', message '$msg', active model $before -> $after"; fail=1
fi
# The failed scheduled run: in pg_cron's log, and in recsys's with what failed.
fail_after=$(psql -qXAt -d $FAILDB -c "SELECT model_id FROM recsys_models WHERE active")
run=$(psql -qXAt -F '|' -d $FAILDB -c "SELECT status, sqlstate, error, phase, username, model_id IS NULL,
                                               settings->'weights'->>'view', finished_at IS NOT NULL
                                          FROM recsys_training_runs ORDER BY run_id DESC LIMIT 1")
# (The relation is named as the function's search_path shows it.)
expected='failed|55000|relation "*interactions" has no usable interactions|checking|postgres|t|0|t'
if [ "$fstatus" = failed ] && [[ "$fmsg" == *"has no usable interactions"* ]] && [[ "$run" == $expected ]] \
        && [ "$fail_after" = "$fail_before" ]; then
    echo "ok: the failing scheduled run is logged by pg_cron ($fmsg) and in recsys_training_runs ($run); model $fail_after still serves"
else
    echo "FAIL: failing job: cron status '${fstatus:-none}', message '$fmsg', run log '$run' (expected '$expected'), active model $fail_before -> $fail_after"
    fail=1
fi
exit $fail
