#!/usr/bin/env bash
# Benchmarks training against its memory budget: recsys_train() on synthetic
# logs of ~1M and ~10M events (the demo generator: users x 10 events over
# 10k products), once per maintenance_work_mem setting (default 64MB and
# 1GB), reporting the time, the backend's peak RSS growth (VmHWM, reset
# before the run, as bench_extension.sh measures it), the budget, and what
# recsys.train_plan() predicts for that shape (the in-memory figure, the
# least budget of the passes, the number of passes).  Also checks that every
# setting trained the same neighbours.  Not a test: nothing asserts on time.
#
#   bench/bench_memory.sh                                 own cluster, 1M and 10M events
#   BENCH_USERS="100000" BENCH_MWMS="8MB 64MB 1GB" bench/bench_memory.sh
#   BENCH_KEEP=1 ...   keep the cluster and its data in /tmp/recsys-bench-memory (reused next time)
#   BENCH_SERVER=1 ... use the running server PGHOST/PGPORT/PGUSER name (superuser)
set -euo pipefail
cd "$(dirname "$0")/.."
USERS_LIST=${BENCH_USERS:-"100000 1000000"}
MWMS=${BENCH_MWMS:-"64MB 1GB"}
PRODUCTS=${BENCH_PRODUCTS:-10000}
EPU=${BENCH_EPU:-10}

make -j2 >/dev/null && make install >/dev/null
if [ -n "${BENCH_SERVER:-}" ]; then
    # BENCH_SERVER=1: the server PGHOST/PGPORT name (databases bench_<users> reused).
    DIR=$(mktemp -d /tmp/recsys-bench-memory.XXXXXX)
    trap 'rm -rf "$DIR"' EXIT
elif [ -n "${BENCH_KEEP:-}" ]; then
    DIR=/tmp/recsys-bench-memory; mkdir -p "$DIR"
else
    DIR=$(mktemp -d /tmp/recsys-bench-memory.XXXXXX)
fi
chmod 755 "$DIR"
if [ -z "${BENCH_SERVER:-}" ]; then
PORT=55480
while (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; do PORT=$((PORT + 1)); done
scripts/pgcluster.sh start "$DIR" "$PORT" "shared_buffers=1GB" "max_wal_size=4GB"
if [ -n "${BENCH_KEEP:-}" ]; then
    trap 'scripts/pgcluster.sh stop "$DIR"' EXIT
else
    trap 'scripts/pgcluster.sh stop "$DIR"; rm -rf "$DIR"' EXIT
fi
export PGHOST=$DIR PGPORT=$PORT PGUSER=postgres
fi

# train_run DB MWM -> "seconds users items pairs cells hwm_before hwm_after anon_before anon_peak passes"
# VmHWM counts the shared buffers and WAL buffers the run touches (writing
# the model) too; RssAnon, sampled every 20 ms, is the backend's private memory.
# (the peak is read right after recsys_train() returns, before anything else runs)
train_run() {
    local db=$1 mwm=$2 r passes
    r=$(PGDATABASE=$db psql -qXAt -v ON_ERROR_STOP=1 -v mwm="$mwm" -v hwm="$DIR/hwm" 2>"$DIR/notice" <<'SQL'
SET maintenance_work_mem = :'mwm';
SET client_min_messages = debug1;  -- the passes made, after the NOTICE's bound
SELECT pg_backend_pid() AS pid \gset
\setenv PID :pid
\setenv HWM :hwm
SET max_parallel_workers_per_gather = 0;  -- the warm-up maps the pages itself, not workers
SELECT count(*) FROM interactions \gset warm_
SELECT count(*) FROM recsys.neighbors \gset warm_
SELECT count(*) FROM recsys.popularity \gset warm_
\! echo 5 > /proc/$PID/clear_refs
\! grep VmHWM /proc/$PID/status | awk '{print $2}' > $HWM.1; grep RssAnon /proc/$PID/status | awk '{print $2}' > $HWM.a1
\! rm -f $HWM.stop $HWM.a2; (m=0; while [ ! -e $HWM.stop ]; do while read -r k v _; do [ "$k" = RssAnon: ] && [ "$v" -gt "$m" ] && m=$v; done < /proc/$PID/status; sleep 0.02; done; echo $m > $HWM.a2) >/dev/null 2>&1 &
SELECT seconds || ' ' || users || ' ' || items || ' ' || neighbor_pairs AS r FROM recsys_train() \gset t_
\! touch $HWM.stop; while [ ! -s $HWM.a2 ]; do sleep 0.01; done
\! printf '%s %s %s %s\n' "$(cat $HWM.1)" "$(grep VmHWM /proc/$PID/status | awk '{print $2}')" "$(cat $HWM.a1)" "$(cat $HWM.a2)" > $HWM.2
SELECT :'t_r' || ' ' || cells FROM recsys_models WHERE active;
SQL
)
    passes=$(grep -o 'computed the similarities in [0-9]* passes' "$DIR/notice" | grep -o '[0-9]*' || true)
    printf '%s %s %s\n' "$r" "$(cat "$DIR/hwm.2")" "${passes:-0}"
}

echo "| events | cells / users / items | maintenance_work_mem | train_plan: in memory / least / passes | passes run | recsys_train() | peak RSS growth (VmHWM) | peak private memory growth (RssAnon) |"
echo "|---|---|---|---|---|---|---|---|"
for users in $USERS_LIST; do
    db=bench_$users
    if ! psql -qXAt -d "$db" -c "SELECT 1 FROM interactions LIMIT 1" >/dev/null 2>&1; then
        psql -qX -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
        PGDATABASE=$db psql -qX -v ON_ERROR_STOP=1 -v users="$users" -v products="$PRODUCTS" \
            -v events_per_user="$EPU" -f scripts/demo_data.sql >/dev/null
        PGDATABASE=$db psql -qX -c "VACUUM ANALYZE interactions" -c "CREATE EXTENSION recsys"
    fi
    psql -qX -d "$db" -c "UPDATE recsys.config SET keep_models = 100"
    events=$(psql -qXAt -d "$db" -c "SELECT count(*) FROM interactions")
    first=""
    for mwm in $MWMS; do
        read -r secs u i pairs cells hwm0 hwm1 anon0 anon1 passes < <(train_run "$db" "$mwm" </dev/null)
        kb=$(psql -qXAt -d "$db" -c "SET maintenance_work_mem = '$mwm'" -c "SELECT current_setting('maintenance_work_mem')::text" | tail -1)
        plan=$(psql -qXAt -d "$db" -c "SET maintenance_work_mem = '$mwm'" -c "SELECT round(in_memory / 1048576.0) || ' MB / ' || round(minimum / 1048576.0) || ' MB / ' || coalesce(passes::text, 'refused') FROM recsys.train_plan($cells, $u, $i, 50)" | tail -1)
        # Every setting must have trained the same neighbours as the first.
        model=$(psql -qXAt -d "$db" -c "SELECT model_id FROM recsys_models WHERE active")
        if [ -z "$first" ]; then first=$model; same=""; else
            same=$(psql -qXAt -d "$db" -c "SELECT CASE WHEN count(*) FILTER (WHERE a.neighbor_ids IS DISTINCT FROM b.neighbor_ids OR a.sims IS DISTINCT FROM b.sims) = 0 THEN ' (same model)' ELSE ' (DIFFERENT MODEL)' END FROM (SELECT * FROM recsys.neighbors WHERE model_id = $first) a FULL JOIN (SELECT * FROM recsys.neighbors WHERE model_id = $model) b USING (item_id)")
        fi
        echo "| $events | $cells / $u / $i | $kb | $plan | $passes | $(printf '%.1f' "$secs") s$same | $(( (hwm1 - hwm0) / 1024 )) MB | $(( (anon1 - anon0) / 1024 )) MB |"
    done
done
