#!/usr/bin/env bash
# Starts or stops a throwaway PostgreSQL 15 cluster, also when called as root
# (the server itself always runs as user postgres).
#   scripts/pgcluster.sh start DIR PORT [extra postgres -c settings...]
#   scripts/pgcluster.sh stop DIR
# After start: PGHOST=DIR PGPORT=PORT PGUSER=postgres reach it.
set -euo pipefail
PGBIN=${PGBIN:-$(pg_config --bindir)}
cmd=${1:?start|stop}; dir=${2:?directory}

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
    port=${3:?port}; shift 3
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C >"$dir/initdb.log"
    fi
    opts="-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    for extra in "$@"; do opts="$opts -c $extra"; done
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -o "$opts" -l "$dir/server.log" -w -t 60 start >/dev/null
    ;;
stop)
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    ;;
*)
    echo "usage: $0 start DIR PORT [setting=value...] | stop DIR" >&2; exit 2 ;;
esac
