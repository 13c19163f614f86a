#!/usr/bin/env bash
# recsys_recommend latency of this tree against another commit (default: the
# merge base with main), side by side in one run on one cluster and one
# ~1M-event log (the demo generator: 100k users, 10k products, ~10 events per
# user): each build is installed in turn (A B A B), the server restarted, the
# extension recreated and trained (timed, with maintenance_work_mem 64MB and
# 256MB), then pgbench -M prepared runs 1 user (18-22 history items) and 100
# such users per call.  Prints each round and the ratio of the medians (B / A).  Not a test: nothing asserts on time.
#
#   bench/bench_recommend_ab.sh [base-ref]        (BENCH_SECONDS=10 per measurement)
# Installs into the PostgreSQL of pg_config on PATH: use a private copy.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
BASE=${1:-$(git merge-base HEAD main)}
SECS=${BENCH_SECONDS:-10}
PGBIN=$(pg_config --bindir)
DIR=$(mktemp -d /tmp/recsys-ab.XXXXXX); chmod 755 "$DIR"
git worktree add -q --detach "$DIR/base" "$BASE"
PORT=55440
while (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; do PORT=$((PORT + 1)); done
cleanup() { scripts/pgcluster.sh stop "$DIR/pg" >/dev/null 2>&1 || true; git worktree remove --force "$DIR/base"; rm -rf "$DIR"; }
trap cleanup EXIT
echo "== building A = $(git -C "$DIR/base" log --oneline -1) and B = this tree ($(git log --oneline -1))"
(cd "$DIR/base" && make -j2 >/dev/null 2>&1)
make -j2 >/dev/null 2>&1
install_build() { (cd "$1" && make install >/dev/null 2>&1); }
start() { scripts/pgcluster.sh start "$DIR/pg" "$PORT" shared_buffers=1GB max_wal_size=4GB >/dev/null; }
stop() { scripts/pgcluster.sh stop "$DIR/pg" >/dev/null; }
install_build "$DIR/base"
start
export PGHOST=$DIR/pg PGPORT=$PORT PGUSER=postgres PGDATABASE=bench
psql -qX -d postgres -c "CREATE DATABASE bench"
psql -qX -v ON_ERROR_STOP=1 -v users=100000 -v products=10000 -v events_per_user=10 -f scripts/demo_data.sql >/dev/null
psql -qX -c "VACUUM ANALYZE interactions"
psql -qX -c "CREATE TABLE bench_users AS SELECT user_id FROM interactions GROUP BY user_id HAVING count(*) BETWEEN 18 AND 22" \
         -c "CREATE TABLE bench_user_arr AS SELECT array_agg(user_id ORDER BY user_id) AS ids FROM bench_users"
nusers=$(psql -qXAt -c "SELECT count(*) FROM bench_users")
echo "   $(psql -qXAt -c "SELECT count(*) FROM interactions") events; $nusers users with 18-22 events"
cat > "$DIR/one.sql" <<SQL
\set n random(1, $nusers)
SELECT * FROM recsys_recommend(ARRAY[(SELECT ids[:n] FROM bench_user_arr)], 10);
SQL
cat > "$DIR/hundred.sql" <<SQL
\set n random(1, $((nusers > 100 ? nusers - 99 : 1)))
SELECT * FROM recsys_recommend((SELECT ids[:n : :n + 99] FROM bench_user_arr), 10);
SQL
declare -A one hun tr64 tr256
# recsys_train() end to end (psql's round trip included) with a budget.
train_seconds() {
    local t0 t1
    t0=$(date +%s.%N)
    psql -qX -c "SET maintenance_work_mem = '$1'" -c "SELECT * FROM recsys_train()" >/dev/null 2>&1
    t1=$(date +%s.%N)
    echo "scale=3; ($t1 - $t0) / 1" | bc
}
round() { # round NAME TREE
    stop; install_build "$2"; start
    psql -qX -c "DROP EXTENSION IF EXISTS recsys CASCADE" -c "CREATE EXTENSION recsys" 2>/dev/null
    local o h t64 t256
    t64=$(train_seconds 64MB)
    t256=$(train_seconds 256MB)
    tr64[$1]="${tr64[$1]:-} $t64"; tr256[$1]="${tr256[$1]:-} $t256"
    o=$("$PGBIN/pgbench" -n -M prepared -c 1 -T "$SECS" -f "$DIR/one.sql" 2>/dev/null | awk '/latency average/ {print $4}')
    h=$("$PGBIN/pgbench" -n -M prepared -c 1 -T "$SECS" -f "$DIR/hundred.sql" 2>/dev/null | awk '/latency average/ {print $4}')
    one[$1]="${one[$1]:-} $o"; hun[$1]="${hun[$1]:-} $h"
    echo "   $1: train ${t64} s (64MB), ${t256} s (256MB); recommend 1 user $o ms, 100 users $h ms"
}
echo "== rounds (pgbench -M prepared -c 1 -T $SECS each)"
for r in 1 2; do round A "$DIR/base"; round B "$REPO"; done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
a1=$(echo "${one[A]}" | median); b1=$(echo "${one[B]}" | median)
a100=$(echo "${hun[A]}" | median); b100=$(echo "${hun[B]}" | median)
echo
echo "| recsys_recommend | A (base) | B (this tree) | B / A |"
echo "|---|---|---|---|"
echo "| 1 user, ms | $a1 | $b1 | $(echo "scale=3; $b1 / $a1" | bc) |"
echo "| 100 users, ms | $a100 | $b100 | $(echo "scale=3; $b100 / $a100" | bc) |"
ta64=$(echo "${tr64[A]}" | median); tb64=$(echo "${tr64[B]}" | median)
ta256=$(echo "${tr256[A]}" | median); tb256=$(echo "${tr256[B]}" | median)
echo "| recsys_train(), maintenance_work_mem 256MB, s | $ta256 | $tb256 | $(echo "scale=3; $tb256 / $ta256" | bc) |"
echo "| recsys_train(), maintenance_work_mem 64MB, s | $ta64 | $tb64 | $(echo "scale=3; $tb64 / $ta64" | bc) |"
