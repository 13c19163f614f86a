#!/usr/bin/env bash
# A DBA schedules recsys_train() with pg_cron, as docs/operations.md shows,
# and the scheduled run replaces the active model.  Needs a server started
# with shared_preload_libraries = 'pg_cron', cron.database_name = 'postgres'
# and cron.use_background_workers = on (scripts/test.sh starts one); skips
# (exit 0, saying so) when pg_cron is not loaded.
set -euo pipefail
DB=recsys_cron_test
if [ "$(psql -qXAt -d postgres -c "SHOW shared_preload_libraries")" != "pg_cron" ]; then
    echo "SKIP: pg_cron is not in shared_preload_libraries"; exit 0
fi
cleanup() {
    psql -qX -d postgres -c "SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = 'recsys-test'" >/dev/null 2>&1 || true
    psql -qX -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup
psql -qX -d postgres -c "CREATE DATABASE $DB" -c "CREATE EXTENSION IF NOT EXISTS pg_cron"
psql -qX -v ON_ERROR_STOP=1 -d $DB <<'SQL'
CREATE EXTENSION recsys;
CREATE TABLE interactions (user_id int, product_id int, event_type text, event_time timestamptz);
INSERT INTO interactions VALUES (1, 10, 'view', now()), (1, 11, 'click', now()), (2, 10, 'view', now()),
                                (2, 12, 'purchase', now()), (3, 11, 'view', now()), (3, 12, 'view', now());
SELECT model_id FROM recsys_train();
SQL
before=$(psql -qXAt -d $DB -c "SELECT model_id FROM recsys_models WHERE active")
psql -qXAt -d postgres -c "SELECT cron.schedule_in_database('recsys-test', '* * * * *', 'SELECT recsys_train()', '$DB')" >/dev/null
echo "scheduled; waiting for the minute's run (up to 100 s)"
for _ in $(seq 1 100); do
    status=$(psql -qXAt -d postgres -c "SELECT d.status FROM cron.job_run_details d JOIN cron.job j USING (jobid)
                                         WHERE j.jobname = 'recsys-test' AND d.status IN ('succeeded', 'failed')
                                         ORDER BY d.start_time DESC LIMIT 1")
    [ -n "$status" ] && break
    sleep 1
done
msg=$(psql -qXAt -d postgres -c "SELECT d.return_message FROM cron.job_run_details d JOIN cron.job j USING (jobid)
                                  WHERE j.jobname = 'recsys-test' ORDER BY d.start_time DESC LIMIT 1")
after=$(psql -qXAt -d $DB -c "SELECT model_id FROM recsys_models WHERE active")
if [ "$status" = succeeded ] && [ "$after" -gt "$before" ]; then
    echo "ok: the scheduled recsys_train() ran ($msg) and model $after replaced model $before"
else
    echo "FAIL: status '${status:-none}', message '$msg', active model $before -> $after"; exit 1
fi
