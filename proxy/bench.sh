#!/usr/bin/env bash
# bench.sh - throughput of recsys-proxy against a FastAPI + uvicorn + psycopg2
# service running the same SQL, both measured with wrk at 64 connections:
# single-user POST /recommendations {"user_ids":[random 1..USERS],"top_n":10}.
# BENCH_KIND=filtered adds "include_items": the ids of one category (the
# products of the smallest category name, about a tenth of the demo's 1000);
# BENCH_KIND=basket posts {"item_ids":[two random products],"top_n":10} to
# /recommendations/items (recsys_recommend_for_items) instead.
#
#   proxy/bench.sh                     # own cluster on port 55434, demo data, trained model
#   BENCH_DSN="host=... dbname=..." proxy/bench.sh   # use an existing database with a model
#
# Environment: BENCH_SECONDS (15), BENCH_CONNECTIONS (64), BENCH_USERS (2000),
# BENCH_PGPORT (55434), BENCH_POOL (2, proxy connections: one per database core), BENCH_THREADS (2,
# proxy I/O threads), BENCH_CACHE (0 = proxy cache off), BENCH_UVICORN_WORKERS (2),
# BENCH_BASELINE_BIN (another recsys-proxy build to measure the same way, e.g. before a change).
# Prints req/s and p99 for each and the ratio.  Needs wrk, python3-fastapi,
# python3-uvicorn, python3-psycopg2 and the built proxy (make -C proxy).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
BIN=${RECSYS_PROXY_BIN:-$here/build/recsys-proxy}
SECS=${BENCH_SECONDS:-15}
CONNS=${BENCH_CONNECTIONS:-64}
USERS=${BENCH_USERS:-2000}
PGPORT_B=${BENCH_PGPORT:-55434}
POOL=${BENCH_POOL:-2}
THREADS=${BENCH_THREADS:-2}
CACHE=${BENCH_CACHE:-0}
UVW=${BENCH_UVICORN_WORKERS:-2}
KIND=${BENCH_KIND:-plain}
case "$KIND" in plain|filtered|basket) ;; *) echo "BENCH_KIND is plain, filtered or basket"; exit 2 ;; esac
PGBIN=/usr/lib/postgresql/15/bin
PY=/usr/bin/python3   # Debian's python3 has the python3-fastapi/uvicorn/psycopg2 packages

[ -x "$BIN" ] || { echo "build first: make -C $here"; exit 2; }
command -v wrk >/dev/null || { echo "wrk not installed"; exit 2; }

TMP=$(mktemp -d /tmp/recsys-bench.XXXXXX)
chmod 755 "$TMP"
pids=()
own_cluster=""
uv_pid=""
cleanup() {
    [ -n "$uv_pid" ] && { kill -TERM -- "-$uv_pid" 2>/dev/null || true; sleep 0.5; kill -KILL -- "-$uv_pid" 2>/dev/null || true; }
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    if [ -n "$own_cluster" ]; then
        if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$PGBIN/pg_ctl" -D "$TMP/data" -m immediate stop >/dev/null 2>&1 || true
        else "$PGBIN/pg_ctl" -D "$TMP/data" -m immediate stop >/dev/null 2>&1 || true; fi
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

if [ -z "${BENCH_DSN:-}" ]; then
    as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
    [ "$(id -u)" = 0 ] && chown postgres "$TMP"
    as_pg "$PGBIN/initdb" -D "$TMP/data" --auth=trust -U postgres >/dev/null
    as_pg "$PGBIN/pg_ctl" -D "$TMP/data" -l "$TMP/pg.log" -w \
        -o "-p $PGPORT_B -k $TMP -c listen_addresses=127.0.0.1 -c max_connections=100" start >/dev/null
    own_cluster=1
    export PGHOST=127.0.0.1 PGPORT=$PGPORT_B PGUSER=postgres
    createdb shop
    psql -X -q -v ON_ERROR_STOP=1 -d shop -c "CREATE EXTENSION recsys"
    echo "# loading demo data (users=$USERS) and training"
    psql -X -q -v ON_ERROR_STOP=1 -d shop -v users="$USERS" -f "$repo/scripts/demo_data.sql" >/dev/null
    psql -X -q -v ON_ERROR_STOP=1 -d shop -c "SELECT model_id FROM recsys_train()" >/dev/null
    BENCH_DSN="host=127.0.0.1 port=$PGPORT_B user=postgres dbname=shop"
fi

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done; echo "no answer from $1"; exit 1; }

ROUTE=/recommendations
FILTER=""
if [ "$KIND" = filtered ]; then
    FILTER=$(psql -X -At "$BENCH_DSN" -c "SELECT string_agg(product_id::text, ',' ORDER BY product_id) FROM products
                                           WHERE category = (SELECT min(category) FROM products)")
    echo "# filter: include_items of $(echo "$FILTER" | tr ',' '\n' | wc -l) products"
    BODY="'{\"user_ids\":[' .. math.random(1, $USERS) .. '],\"top_n\":10,\"include_items\":[$FILTER]}'"
elif [ "$KIND" = basket ]; then
    ROUTE=/recommendations/items
    NITEMS=$(psql -X -At "$BENCH_DSN" -c "SELECT max(product_id) FROM products")
    BODY="'{\"item_ids\":[' .. math.random(1, $NITEMS) .. ',' .. math.random(1, $NITEMS) .. '],\"top_n\":10}'"
else
    BODY="'{\"user_ids\":[' .. math.random(1, $USERS) .. '],\"top_n\":10}'"
fi
cat > "$TMP/post.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
math.randomseed(42)
request = function()
  return wrk.format(nil, nil, nil, $BODY)
end
local non200 = 0
response = function(status, headers, body) if status ~= 200 then non200 = non200 + 1 end end
EOF

cat > "$TMP/fastapi_app.py" <<'EOF'
# The baseline: the same SQL behind FastAPI + uvicorn + psycopg2 (thread pool).
import os
import threading
from typing import List, Optional
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from psycopg2.pool import ThreadedConnectionPool

DSN = os.environ["BENCH_DSN"]
POOL = int(os.environ.get("BENCH_POOL", "4"))
pool = ThreadedConnectionPool(1, POOL, DSN)
slots = threading.BoundedSemaphore(POOL)  # wait for a connection instead of PoolError
app = FastAPI()
SQL = "SELECT user_id, product_id, score, rank, source FROM recsys_recommend(%s::int[], %s)"

SQL_FILTERED = ("SELECT user_id, product_id, score, rank, source FROM "
                "recsys_recommend(%s::int[], %s, true, %s::int[], %s::int[])")
SQL_ITEMS = "SELECT product_id FROM recsys_recommend_for_items(%s::int[], %s) ORDER BY rank"

class Req(BaseModel):
    user_ids: List[int]
    top_n: int = 10
    include_items: Optional[List[int]] = None
    exclude_items: Optional[List[int]] = None

class ItemsReq(BaseModel):
    item_ids: List[int]
    top_n: int = 10

def query(sql, args):
    with slots:
        conn = pool.getconn()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                rows = cur.fetchall()
            conn.commit()
        finally:
            pool.putconn(conn)
    return rows

@app.post("/recommendations/items")
def items(req: ItemsReq):
    if not req.item_ids or len(req.item_ids) > 1000 or not 1 <= req.top_n <= 1000:
        raise HTTPException(status_code=422)
    return JSONResponse({"results": [r[0] for r in query(SQL_ITEMS, (req.item_ids, req.top_n))]})

@app.post("/recommendations")
def recommendations(req: Req):
    if not req.user_ids or len(req.user_ids) > 1000 or not 1 <= req.top_n <= 1000:
        raise HTTPException(status_code=422)
    if req.include_items is None and req.exclude_items is None:
        rows = query(SQL, (req.user_ids, req.top_n))
    else:
        rows = query(SQL_FILTERED, (req.user_ids, req.top_n, req.include_items, req.exclude_items))
    out = {str(u): [] for u in req.user_ids}
    for user_id, product_id, score, rank, source in sorted(rows, key=lambda r: (r[0], r[3])):
        out[str(user_id)].append(product_id)
    return JSONResponse({"results": out})
EOF

run_wrk() {  # run_wrk URL LABEL -> "reqs p99"
    wrk -t2 -c"$CONNS" -d3s -s "$TMP/post.lua" "$1" >/dev/null 2>&1 || true   # warm-up
    wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -s "$TMP/post.lua" "$1" > "$TMP/wrk-$2.txt" 2>&1
    local rps p99 errs
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$TMP/wrk-$2.txt")
    p99=$(awk '$1 == "99%" {print $2}' "$TMP/wrk-$2.txt")
    errs=$(awk '/Non-2xx/ {print $5}' "$TMP/wrk-$2.txt")
    echo "$2: ${rps} req/s, p99 ${p99}, non-2xx ${errs:-0}" >&2
    echo "$rps $p99"
}

run_proxy() {  # run_proxy BINARY LABEL -> "reqs p99"
    local pp pid
    pp=$(free_port)
    "$1" --listen "127.0.0.1:$pp" --dsn "$BENCH_DSN" --pool-size "$POOL" --threads "$THREADS" \
        --cache-size "$CACHE" --access-log off 2>"$TMP/proxy-$2.log" &
    pid=$!
    pids+=("$pid")
    wait_http "http://127.0.0.1:$pp/healthz" >&2
    curl -sf -X POST "http://127.0.0.1:$pp/recommendations" -H 'Content-Type: application/json' \
        -d '{"user_ids":[1],"top_n":10}' >/dev/null \
        || { echo "the proxy cannot recommend (is a model trained?)" >&2; cat "$TMP/proxy-$2.log" >&2; exit 1; }
    echo "# $2 ($1): pool $POOL, $THREADS I/O threads, cache $CACHE; $KIND requests; wrk -t2 -c$CONNS -d${SECS}s" >&2
    run_wrk "http://127.0.0.1:$pp$ROUTE" "$2"
    kill "$pid"; wait "$pid" 2>/dev/null || true
}
read -r p_rps p_p99 < <(run_proxy "$BIN" recsys-proxy)
# BENCH_BASELINE_BIN: another build of the proxy (e.g. the previous commit's), measured the same way.
b_rps=""
if [ -n "${BENCH_BASELINE_BIN:-}" ]; then
    read -r b_rps b_p99 < <(run_proxy "$BENCH_BASELINE_BIN" baseline)
fi

FP=$(free_port)
BENCH_DSN="$BENCH_DSN" BENCH_POOL="$POOL" setsid $PY -m uvicorn --app-dir "$TMP" fastapi_app:app \
    --host 127.0.0.1 --port "$FP" --workers "$UVW" --log-level warning --no-access-log >"$TMP/uvicorn.log" 2>&1 &
uv_pid=$!
wait_http "http://127.0.0.1:$FP/docs"
echo "# FastAPI + uvicorn ($UVW workers) + psycopg2 (pool $POOL per worker)"
read -r f_rps f_p99 < <(run_wrk "http://127.0.0.1:$FP$ROUTE" fastapi)

$PY - "$p_rps" "$p_p99" "$f_rps" "$f_p99" "${b_rps:-}" "${b_p99:-}" <<'EOF'
import sys
def ms(s):
    for suf, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if s.endswith(suf): return float(s[:-len(suf)]) * f
    return float("nan")
p, pp, f, fp = float(sys.argv[1]), ms(sys.argv[2]), float(sys.argv[3]), ms(sys.argv[4])
print(f"{'service':<16}{'req/s':>12}{'p99 ms':>10}")
print(f"{'recsys-proxy':<16}{p:>12.0f}{pp:>10.2f}")
if sys.argv[5]:
    print(f"{'baseline proxy':<16}{float(sys.argv[5]):>12.0f}{ms(sys.argv[6]):>10.2f}")
print(f"{'fastapi':<16}{f:>12.0f}{fp:>10.2f}")
print(f"ratio (proxy/fastapi): {p / f:.2f}x req/s, p99 {fp / pp:.2f}x lower")
EOF
