#!/usr/bin/env bash
# demo_data.sh - generate the demo shop (scripts/demo_data.sql) and check it
# (scripts/demo_data_check.sql).  Connection from PGHOST/PGPORT/PGUSER/PGDATABASE.
#
#   scripts/demo_data.sh [users [products [days [seed [events_per_user]]]]]
#   e.g. scripts/demo_data.sh 100000 10000 180 42 10     # ~1M events
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
args=()
[ $# -ge 1 ] && args+=(-v "users=$1")
[ $# -ge 2 ] && args+=(-v "products=$2")
[ $# -ge 3 ] && args+=(-v "days=$3")
[ $# -ge 4 ] && args+=(-v "seed=$4")
[ $# -ge 5 ] && args+=(-v "events_per_user=$5")
psql -X -q -v ON_ERROR_STOP=1 "${args[@]}" -f "$here/demo_data.sql"
psql -X -q -v ON_ERROR_STOP=1 -f "$here/demo_data_check.sql"
