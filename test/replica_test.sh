#!/usr/bin/env bash
# replica_test.sh - recsys on a streaming hot standby, and recsys-proxy failing
# over from a stopped primary to the standby.
#
# Builds its own primary and standby (scripts/pgcluster.sh on free loopback
# ports, pg_basebackup -R -X stream), as docs/operations.md "Replicas" shows:
#   * hand-checkable data on the primary; after a training the standby replays
#     the model (polled: pg_last_wal_replay_lsn() on the standby reaches
#     pg_current_wal_lsn() of the primary) and recsys_recommend,
#     recsys_similar_items and recsys_user_history return exactly the
#     primary's rows (and the hand-computed similarities);
#   * training on the standby fails with SQLSTATE 25006 (read-only);
#   * the demo shop (scripts/demo_data.sql) is trained on the primary and the
#     time until the standby serves the new model is printed ("# replay lag");
#   * proxy/build/recsys-proxy with --dsn PRIMARY --dsn STANDBY answers
#     POST /recommendations; the primary is stopped (fast shutdown) while a
#     client keeps sending requests; every request must still get 200 with
#     the same results, served by the standby.
# Needs the extension installed and the proxy built (make && make install).
# $1 (the shared data directory) is not used.  Prints "N passed, M failed".
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
PGBIN=$(pg_config --bindir)
BIN=${RECSYS_PROXY_BIN:-$repo/proxy/build/recsys-proxy}
DEMO_USERS=${RECSYS_REPLICA_DEMO_USERS:-2000}         # the demo shop's size (scripts/demo_data.sql)
DEMO_PRODUCTS=${RECSYS_REPLICA_DEMO_PRODUCTS:-1000}
STOP_MODE=${RECSYS_REPLICA_STOP:-fast}   # how the primary is stopped: fast, or immediate (a crash)

pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   - $*"; }
bad() { fail=$((fail + 1)); echo "FAIL - $*"; }
finish() { echo "$pass passed, $fail failed"; [ "$fail" = 0 ]; exit; }

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

TMP=$(mktemp -d /tmp/recsys-replica.XXXXXX)
chmod 755 "$TMP"
[ "$(id -u)" = 0 ] && chown postgres "$TMP"
PROXY_PID=""
LOAD_PID=""
cleanup() {
    [ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null
    [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null && wait "$PROXY_PID" 2>/dev/null
    for c in standby primary; do
        if [ -f "$TMP/$c/data/postmaster.pid" ]; then
            as_pg "$PGBIN/pg_ctl" -D "$TMP/$c/data" -m immediate -w stop >/dev/null 2>&1
        fi
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free loopback ports, from beside the main test cluster's port upwards.
next_port=${RECSYS_REPLICA_PORT:-$(( ${PGPORT:-55500} + 20 ))}
free_port() {  # free_port VAR
    while (exec 3<>/dev/tcp/127.0.0.1/$next_port) 2>/dev/null; do next_port=$((next_port + 1)); done
    printf -v "$1" '%s' "$next_port"
    next_port=$((next_port + 1))
}
free_port P1
free_port P2

# q PORT DB SQL: one value (or rows) from a server, unaligned.
q() { psql -X -q -v ON_ERROR_STOP=1 -At -h 127.0.0.1 -p "$1" -U postgres -d "$2" -c "$3"; }
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

echo "# primary on port $P1, standby on port $P2, in $TMP"
if ! "$repo/scripts/pgcluster.sh" start "$TMP/primary" "$P1" wal_level=replica max_wal_senders=4 hot_standby=on; then
    tail -20 "$TMP/primary/server.log"; bad "primary did not start"; finish
fi
# initdb --auth=trust allows replication connections from loopback as well.
if grep -Eq '^host[[:space:]]+replication[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' \
        "$TMP/primary/data/pg_hba.conf"; then
    ok "pg_hba.conf of initdb --auth=trust allows replication from 127.0.0.1"
else
    bad "pg_hba.conf has no replication line for 127.0.0.1: $(grep replication "$TMP/primary/data/pg_hba.conf")"
fi

q "$P1" postgres "CREATE DATABASE shop" >/dev/null && q "$P1" postgres "CREATE DATABASE demo" >/dev/null || {
    bad "createdb on the primary"; finish; }
# Hand-checkable events (weights: view 1, click 2, purchase 5):
#   w(1,10) = 1, w(1,11) = 5; w(2,10) = 1, w(2,11) = 1, w(2,12) = 2; w(3,11) = 2, w(3,12) = 2; w(4,13) = 1
# Item columns over users 1..4: 10 = (1,1,0,0), 11 = (5,1,2,0), 12 = (0,2,2,0), 13 = (0,0,0,1), so
#   sim(10,11) = 6/sqrt(2*30) = 0.774597, sim(10,12) = 2/sqrt(2*8) = 0.5, sim(11,12) = 6/sqrt(30*8) = 0.387298
# and item 13 has no neighbour.
psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$P1" -U postgres -d shop >/dev/null <<'SQL' || { bad "loading the hand data"; finish; }
CREATE EXTENSION recsys;
CREATE TABLE interactions (user_id int, product_id int, event_type text, event_time timestamptz);
CREATE INDEX ON interactions (user_id);
INSERT INTO interactions VALUES
    (1, 10, 'view', '2026-01-01 10:00+00'), (1, 11, 'purchase', '2026-01-02 10:00+00'),
    (2, 10, 'view', '2026-01-01 11:00+00'), (2, 11, 'view', '2026-01-01 12:00+00'), (2, 12, 'click', '2026-01-03 10:00+00'),
    (3, 11, 'click', '2026-01-01 13:00+00'), (3, 12, 'click', '2026-01-04 10:00+00'),
    (4, 13, 'view', '2026-01-05 10:00+00');
SQL
q "$P1" demo "CREATE EXTENSION recsys" >/dev/null || { bad "CREATE EXTENSION in demo"; finish; }
psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$P1" -U postgres -d demo -v users="$DEMO_USERS" -v products="$DEMO_PRODUCTS" \
    -f "$repo/scripts/demo_data.sql" >/dev/null || { bad "loading the demo shop"; finish; }

echo "# pg_basebackup -D $TMP/standby/data -R -X stream -c fast -h 127.0.0.1 -p $P1 -U postgres"
mkdir -p "$TMP/standby"
[ "$(id -u)" = 0 ] && chown postgres "$TMP/standby"
if as_pg "$PGBIN/pg_basebackup" -D "$TMP/standby/data" -R -X stream -c fast -h 127.0.0.1 -p "$P1" -U postgres; then
    ok "pg_basebackup of the primary"
else
    bad "pg_basebackup failed"; finish
fi
[ -f "$TMP/standby/data/standby.signal" ] && grep -q "port=$P1" "$TMP/standby/data/postgresql.auto.conf" \
    && ok "-R wrote standby.signal and primary_conninfo" || bad "no standby.signal / primary_conninfo"
if ! "$repo/scripts/pgcluster.sh" start "$TMP/standby" "$P2" hot_standby=on; then
    tail -20 "$TMP/standby/server.log"; bad "standby did not start"; finish
fi
[ "$(q "$P2" postgres "SELECT pg_is_in_recovery()")" = t ] && ok "the standby is in recovery" || bad "standby not in recovery"
[ "$(q "$P1" postgres "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")" = 1 ] \
    && ok "the primary streams to one standby" || bad "pg_stat_replication: $(q "$P1" postgres "TABLE pg_stat_replication")"

# wait_replayed DB: polls until the standby has replayed everything the primary
# has written so far; prints the seconds it took.
wait_replayed() {
    local lsn t0 i
    lsn=$(q "$P1" postgres "SELECT pg_current_wal_lsn()")
    t0=$(now)
    for i in $(seq 1 3000); do
        [ "$(q "$P2" postgres "SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn")" = t ] && { elapsed "$t0" "$(now)"; return 0; }
        sleep 0.01
    done
    return 1
}

echo "# train on the primary, read on the standby"
# (pgcluster.sh turns synchronous_commit off; trainings here run with the
# default, on, so that pg_current_wal_lsn() is past their commit when they return.)
mid=$(q "$P1" shop "SET synchronous_commit = on; SELECT model_id FROM recsys_train()")
[ -n "$mid" ] && ok "trained model $mid on the primary" || { bad "recsys_train on the primary"; finish; }
if secs=$(wait_replayed); then ok "the standby replayed the training (${secs} s)"; else bad "the standby did not catch up in 30 s"; finish; fi
[ "$(q "$P2" shop "SELECT model_id FROM recsys_models WHERE active")" = "$mid" ] \
    && ok "recsys_models on the standby: model $mid active" || bad "active model on the standby"

# same NAME SQL [DB]: the rows on the standby equal those on the primary, and there are some.
same() {
    local name=$1 sql=$2 db=${3:-shop} a b
    a=$(q "$P1" "$db" "$sql"); b=$(q "$P2" "$db" "$sql")
    if [ -n "$a" ] && [ "$a" = "$b" ]; then ok "$name: standby = primary ($(echo "$a" | wc -l) rows)"
    else bad "$name: primary [$a] standby [$b]"; fi
}
same "recsys_recommend" "SELECT user_id, product_id, score, rank, source FROM recsys_recommend('{1,2,3,4,99}', 3) ORDER BY user_id, rank"
same "recsys_similar_items" "SELECT i, s.product_id, s.similarity, s.rank FROM generate_series(10, 13) i, recsys_similar_items(i, 5) s ORDER BY i, s.rank"
same "recsys_user_history" "SELECT u, h.product_id, h.weight, h.last_event FROM generate_series(1, 4) u, recsys_user_history(u, 10) h ORDER BY u, h.product_id"
got=$(q "$P2" shop "SELECT string_agg(product_id || ':' || round(similarity::numeric, 6), ',' ORDER BY rank) FROM recsys_similar_items(10, 5)")
[ "$got" = "11:0.774597,12:0.500000" ] && ok "similar items of 10 on the standby, by hand: $got" || bad "similar(10) on the standby: $got"
got=$(q "$P2" shop "SELECT count(*) FROM recsys_similar_items(13, 5)")
[ "$got" = 0 ] && ok "item 13 has no neighbour on the standby" || bad "similar(13): $got rows"
# user 1: history {10: 1, 11: 5}; score(12) = 1*0.5 + 5*0.387298 = 2.436492, then the popular 13.
got=$(q "$P2" shop "SELECT string_agg(product_id || ':' || source || ':' || round(score::numeric, 6), ',' ORDER BY rank) FROM recsys_recommend('{1}', 2)")
[ "$got" = "12:cf:2.436492,13:popular:1.000000" ] && ok "recommendations of user 1 on the standby, by hand: $got" \
    || bad "recommend(1) on the standby: $got"
got=$(q "$P2" shop "SELECT string_agg(product_id || ':' || weight, ',' ORDER BY product_id) FROM recsys_user_history(2, 10)")
[ "$got" = "10:1,11:1,12:2" ] && ok "history of user 2 on the standby: $got" || bad "history(2) on the standby: $got"

out=$(psql -X -q -At -h 127.0.0.1 -p "$P2" -U postgres -d shop -v VERBOSITY=verbose -c "SELECT recsys_train()" 2>&1)
if echo "$out" | grep -q 'ERROR:  25006:' && echo "$out" | head -1 | grep -Eqi 'read-only|recovery'; then
    ok "recsys_train on the standby fails with 25006: $(echo "$out" | head -1)"
else
    bad "recsys_train on the standby: $out"
fi

echo "# the demo shop ($DEMO_USERS users, $DEMO_PRODUCTS products): how long until the standby serves a new model"
wait_replayed >/dev/null || { bad "standby behind before the demo training"; finish; }
t0=$(now)
dmid=$(q "$P1" demo "SET synchronous_commit = on; SELECT model_id FROM recsys_train()")
t1=$(now)
served=""
for i in $(seq 1 3000); do
    if [ "$(q "$P2" demo "SELECT model_id FROM recsys_models WHERE active")" = "$dmid" ]; then served=$(now); break; fi
    sleep 0.01
done
if [ -n "$served" ]; then
    shape=$(q "$P1" demo "SELECT users || ' users, ' || items || ' items, ' || neighbor_pairs || ' pairs' FROM recsys_models WHERE model_id = $dmid")
    wal=$(q "$P1" demo "SELECT pg_size_pretty(sum(pg_relation_size(c.oid))) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'recsys' AND c.relname IN ('neighbors', 'popularity')")
    echo "# replay lag: training took $(elapsed "$t0" "$t1") s on the primary ($shape, $wal of model tables);"
    echo "#             the standby served model $dmid $(elapsed "$t1" "$served") s after the training returned"
    ok "the standby serves the demo model $dmid"
else
    bad "the standby never served the demo model $dmid"
fi
same "recsys_recommend on the demo shop (users 1..200)" \
    "SELECT user_id, product_id, score, rank, source FROM recsys_recommend(ARRAY(SELECT generate_series(1, 200)), 10) ORDER BY user_id, rank" demo

echo "# recsys-proxy with the primary and the standby"
if [ ! -x "$BIN" ]; then bad "no proxy binary at $BIN (make at the top level)"; finish; fi
free_port PP
"$BIN" --listen "127.0.0.1:$PP" --dsn "host=127.0.0.1 port=$P1 user=postgres dbname=shop" \
       --dsn "host=127.0.0.1 port=$P2 user=postgres dbname=shop" --pool-size 2 --access-log off \
       2>"$TMP/proxy.log" &
PROXY_PID=$!
U="http://127.0.0.1:$PP"
# Polled until /readyz answers 200 (listening, a database reachable, a model
# active); the bound is generous because a loaded machine starts it slowly
# (a fixed 10 s wait once ran out: "POST with both up: 000").
deadline=$((SECONDS + 120))
until [ "$(curl -s -o /dev/null -w '%{http_code}' "$U/readyz")" = 200 ]; do
    kill -0 "$PROXY_PID" 2>/dev/null || break
    [ "$SECONDS" -ge "$deadline" ] && break
    sleep 0.05
done
BODY='{"user_ids":[1,2,3,4],"top_n":3}'
post() { curl -s -o "$TMP/body" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary "$BODY" "$U/recommendations"; }
st=$(post)
[ "$st" = 200 ] && ok "POST /recommendations -> 200 with both servers up" || { bad "POST with both up: $st $(cat "$TMP/body")"; finish; }
cp "$TMP/body" "$TMP/want.json"
q "$P1" shop "SELECT user_id, product_id FROM recsys_recommend('{1,2,3,4}', 3) ORDER BY user_id, rank" > "$TMP/want.tsv"
python3 - "$TMP/want.json" "$TMP/want.tsv" <<'EOF' && ok "the answer equals recsys_recommend on the primary" || bad "answer differs from SQL"
import json, sys
got = json.load(open(sys.argv[1]))["results"]
want = {}
for line in open(sys.argv[2]):
    u, p = line.split("|")
    want.setdefault(u, []).append(int(p))
assert got == want and sorted(want) == ["1", "2", "3", "4"], (got, want)
EOF
stmts() { curl -s "$U/metrics" | awk -v d="$1" '$1 == "recsys_proxy_dsn_statements_total{dsn=\"" d "\"}" { print $2 }'; }

# A client sending requests back to back (4 threads) while the primary stops.
python3 - "$U" "$BODY" "$TMP/want.json" "$TMP/stop-load" "$TMP/load.json" <<'EOF' &
import json, os, sys, time, urllib.request, urllib.error
from concurrent.futures import ThreadPoolExecutor
url, body, want_file, stop_file, out = sys.argv[1:6]
want = json.load(open(want_file))
def one():
    req = urllib.request.Request(url + "/recommendations", data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return "200" if json.load(r) == want else "200-different"
    except urllib.error.HTTPError as e:
        return str(e.code)
    except Exception as e:
        return type(e).__name__
def loop(_):
    seen = {}
    while not os.path.exists(stop_file):
        s = one()
        seen[s] = seen.get(s, 0) + 1
    return seen
with ThreadPoolExecutor(4) as ex:
    parts = list(ex.map(loop, range(4)))
total = {}
for p in parts:
    for k, v in p.items(): total[k] = total.get(k, 0) + v
json.dump(total, open(out, "w"))
EOF
LOAD_PID=$!
before1=$(stmts 1)
# Let the client run against both servers first (until the standby served 50 more statements).
for i in $(seq 1 600); do [ "$(( $(stmts 1) - before1 ))" -ge 50 ] && break; sleep 0.02; done
echo "# stopping the primary (pg_ctl stop -m $STOP_MODE) under load"
t0=$(now)
as_pg "$PGBIN/pg_ctl" -D "$TMP/primary/data" -m "$STOP_MODE" -w stop >/dev/null && ok "primary stopped" || bad "pg_ctl stop of the primary"
t1=$(now)
# Requests keep coming until the proxy has seen the primary fail (its DSN is marked down) and
# the standby has served 200 more statements.
mark=$(stmts 1)
down=""
for i in $(seq 1 1500); do
    m=$(curl -s "$U/metrics")
    [ -z "$down" ] && echo "$m" | grep -q '^recsys_proxy_dsn_up{dsn="0"} 0$' && down=$(now)
    n1=$(echo "$m" | awk '$1 == "recsys_proxy_dsn_statements_total{dsn=\"1\"}" { print $2 }')
    [ -n "$down" ] && [ "$((n1 - mark))" -ge 200 ] && break
    sleep 0.02
done
touch "$TMP/stop-load"
wait "$LOAD_PID"
LOAD_PID=""
[ -n "$down" ] && ok "the proxy marked the primary's DSN down $(elapsed "$t1" "$down") s after it stopped" \
    || bad "the primary's DSN was never marked down"
load=$(cat "$TMP/load.json" 2>/dev/null)
echo "# requests during the stop (4 client threads): $load (the stop took $(elapsed "$t0" "$t1") s)"
python3 - "$TMP/load.json" <<'EOF' && ok "every request during the failover got 200 with the same results" || bad "requests failed during the failover: $load"
import json, sys
t = json.load(open(sys.argv[1]))
assert set(t) == {"200"} and t["200"] > 200, t
EOF
# After the stop: sequential requests, all from the standby.
n1=$(stmts 1); okn=0
for i in $(seq 1 20); do
    st=$(post)
    [ "$st" = 200 ] && cmp -s "$TMP/body" "$TMP/want.json" && okn=$((okn + 1))
done
[ "$okn" = 20 ] && ok "20 requests after the stop: 200 and equal to the primary's answer" || bad "after the stop: $okn of 20 good (last $st $(cat "$TMP/body"))"
[ "$(( $(stmts 1) - n1 ))" -ge 20 ] && ok "the standby's DSN ran them" || bad "statements on the standby: $n1 -> $(stmts 1)"
st=$(curl -s -o "$TMP/body" -w '%{http_code}' "$U/readyz")
[ "$st" = 200 ] && ok "/readyz 200 from the standby" || bad "/readyz with the primary down: $st $(cat "$TMP/body")"
kill -0 "$PROXY_PID" 2>/dev/null && ok "the proxy is still running" || bad "the proxy died"
finish
