#!/usr/bin/env bash
# The run log when no background worker slot is free (docs/operations.md,
# "The run log and the worker slots"): on a throwaway server with
# max_worker_processes = 1 (taken by the logical replication launcher) every
# run is logged in its own transaction with a WARNING, so a committed run is
# in recsys_training_runs and a failed one is not; training works as usual.
# Needs the PostgreSQL binaries on PATH and recsys installed into them.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=$(mktemp -d /tmp/recsys-noslot-XXXXXX)
trap 'scripts/pgcluster.sh stop "$DIR"; rm -rf "$DIR"' EXIT
# Unix socket in its own directory only: no TCP port to clash with.
scripts/pgcluster.sh start "$DIR" 5432 "max_worker_processes=1" "listen_addresses=''" >/dev/null
export PGHOST=$DIR PGPORT=5432 PGUSER=postgres PGDATABASE=postgres
fail=0
ok() { echo "  ok: $*"; }
bad() { echo "  FAIL: $*"; fail=1; }

out=$(psql -qXAt -v ON_ERROR_STOP=1 2>&1 <<'SQL'
CREATE EXTENSION recsys;
CREATE TABLE interactions (user_id int, product_id int, event_type text, event_time timestamptz);
INSERT INTO interactions VALUES (1, 10, 'view', now()), (1, 11, 'click', now()), (2, 10, 'view', now()),
                                (2, 12, 'purchase', now()), (3, 11, 'view', now()), (3, 12, 'view', now());
SELECT model_id FROM recsys_train();
SQL
)
n=$(grep -c 'no background worker slot free for the run log' <<<"$out" || true)
# One warning per run: its end row goes where its start row went.
[ "$n" = 1 ] && ok "training warned once that no slot was free" || bad "expected 1 warning, got $n: $out"
run=$(psql -qXAt -c "SELECT kind, status, model_id, phase, rows_read FROM recsys_training_runs" | tr '|' ' ')
[ "$run" = "train succeeded 1 done 6" ] && ok "the committed run is logged: $run" || bad "run log: '$run'"

psql -qX -c "UPDATE recsys.event_weights SET weight = 0" >/dev/null
err=$(psql -qXAt -c "SELECT model_id FROM recsys_train()" 2>&1 || true)
[[ "$err" == *"has no usable interactions"* ]] && ok "the failing training fails as usual" || bad "failing training: $err"
runs=$(psql -qXAt -c "SELECT count(*) FROM recsys_training_runs")
active=$(psql -qXAt -c "SELECT model_id FROM recsys_models WHERE active")
[ "$runs" = 1 ] && [ "$active" = 1 ] && ok "its in-transaction log rows went with its rollback; model 1 still serves" \
    || bad "runs logged: $runs, active model: $active"
exit $fail
