#!/usr/bin/env bash
# bench_memory.sh - the proxy's memory under large answers: N concurrent
# POST /recommendations of IDS user ids x top_n TOP_N (details DETAILS), then
# the process's peak RSS (VmHWM) and the RSS it keeps afterwards (VmRSS, once
# the answers are written and the connections closed).
#
#   BENCH_DSN="host=... dbname=shop" proxy/bench_memory.sh [extra proxy flags...]
#
# Environment: BENCH_DSN (required: a database with recsys, a trained model and
# the products table), RECSYS_PROXY_BIN (default proxy/build/recsys-proxy),
# MEM_CONCURRENCY (8), MEM_IDS (1000), MEM_TOP_N (1000), MEM_DETAILS (true).
# Prints one line: statuses, bytes per answer, peak RSS and RSS after, in MB.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BIN=${RECSYS_PROXY_BIN:-$here/build/recsys-proxy}
: "${BENCH_DSN:?set BENCH_DSN to a database with a trained model}"
CONC=${MEM_CONCURRENCY:-8}
IDS=${MEM_IDS:-1000}
TOP_N=${MEM_TOP_N:-1000}
DETAILS=${MEM_DETAILS:-true}
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" --listen "127.0.0.1:$PORT" --dsn "$BENCH_DSN" --access-log off "$@" 2>/dev/null &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.05; done
python3 - "$PORT" "$pid" "$CONC" "$IDS" "$TOP_N" "$DETAILS" <<'PY'
import json, sys, time, urllib.request, urllib.error
from concurrent.futures import ThreadPoolExecutor
port, pid, conc, ids, top_n, details = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "true"
body = json.dumps({"user_ids": list(range(1, ids + 1)), "top_n": top_n, "details": details}).encode()
def one(_):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/recommendations", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, len(r.read())
    except urllib.error.HTTPError as e:
        return e.code, len(e.read())
def rss():
    st = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status"))
    return int(st["VmHWM"].split()[0]) / 1024, int(st["VmRSS"].split()[0]) / 1024
base = rss()[1]
with ThreadPoolExecutor(conc) as ex:
    res = list(ex.map(one, range(conc)))
time.sleep(2)  # the last write's completion handler (trim) runs after the client has read it
peak, after = rss()
statuses = {s: [r[0] for r in res].count(s) for s in {r[0] for r in res}}
print(f"{conc} x ({ids} ids x top_n {top_n}, details {details}): statuses {statuses}, "
      f"{max(r[1] for r in res)} bytes per answer; RSS at start {base:.0f} MB, peak {peak:.0f} MB, after {after:.0f} MB")
PY
