#!/usr/bin/env bash
# grants.sh - the application role's grants documented in docs/operations.md
# ("Privileges") make recsys-proxy work fully, and a role without them gets
# clear errors.
#
# Starts a throw-away cluster on $RECSYS_IT_PGPORT (default 55434), loads the
# demo shop (300 users), trains and evaluates, then:
#   * role app: LOGIN, no other rights, plus exactly the GRANT lines of the sql
#     block of the Privileges section (read from the file, so the document and
#     this test cannot drift).  A proxy connected as app must answer /readyz,
#     /models/active, /evaluations, /recommendations (also with details),
#     /similar and /users/{id}/history with 200 and the same data as SQL, and
#     /metrics with the active model and last training gauges equal to
#     recsys_models / recsys_training_runs (after a failed and after a
#     successful training); the web page's browser test passes against it; the
#     server logs no error for role app;
#   * role nogrant (LOGIN only): 503 / 403 with SQLSTATE 42501, never 500, and
#     /metrics still serves the proxy's own metrics;
#   * role app_noruns (the lines without recsys_training_runs), and a
#     database on extension 1.0 (no such view): the model gauges without the
#     last training gauges, and no error in the server log for them.
# Prerequisites: the extension installed and the proxy built (make && make
# install at the top), curl, python3.  Prints "N passed, M failed".
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
proxy_dir=$(cd "$here/.." && pwd)
repo=$(cd "$proxy_dir/.." && pwd)
BIN=${RECSYS_PROXY_BIN:-$proxy_dir/build/recsys-proxy}
PORT=${RECSYS_IT_PGPORT:-55434}
DOC=$repo/docs/operations.md

pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   - $*"; }
bad() { fail=$((fail + 1)); echo "FAIL - $*"; }
finish() { echo "$pass passed, $fail failed"; [ "$fail" = 0 ]; exit; }

[ -x "$BIN" ] || { echo "build the proxy first: make -C $proxy_dir"; exit 2; }
TMP=$(mktemp -d /tmp/recsys-grants.XXXXXX)
chmod 755 "$TMP"
[ "$(id -u)" = 0 ] && chown postgres "$TMP"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    "$repo/scripts/pgcluster.sh" stop "$TMP/pg" >/dev/null 2>&1
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "# cluster on port $PORT in $TMP"
# %u@ before each log line: errors raised for role app are found by name.
"$repo/scripts/pgcluster.sh" start "$TMP/pg" "$PORT" max_worker_processes=20 log_line_prefix=%u@ || {
    tail -20 "$TMP/pg/server.log"; echo "cannot start PostgreSQL on port $PORT"; exit 2; }
SU="psql -X -q -v ON_ERROR_STOP=1 -At -h 127.0.0.1 -p $PORT -U postgres"
$SU -d postgres -c "CREATE DATABASE shop" >/dev/null || exit 2
$SU -d shop -c "CREATE EXTENSION recsys" >/dev/null || { echo "CREATE EXTENSION recsys failed"; exit 2; }
$SU -d shop -v users=300 -f "$repo/scripts/demo_data.sql" >/dev/null || { echo "demo data failed"; exit 2; }
$SU -d shop -c "SELECT model_id FROM recsys_train()" >/dev/null || exit 2
for k in 5 10; do $SU -d shop -c "SELECT users_evaluated FROM recsys_evaluate($k)" >/dev/null || exit 2; done

echo "# the GRANT lines of docs/operations.md (Privileges)"
awk '/^## Privileges/ { p = 1; next } p && /^## / { exit } p && /^```sql/ { b = 1; next } p && b && /^```/ { exit } p && b' \
    "$DOC" > "$TMP/grants.sql"
sed 's/^/    /' "$TMP/grants.sql"
if [ "$(grep -c . "$TMP/grants.sql")" -ge 3 ] && ! grep -v '^GRANT .* TO app;' "$TMP/grants.sql" | grep -q .; then
    ok "the Privileges section has $(grep -c . "$TMP/grants.sql") GRANT ... TO app lines"
else
    bad "unexpected sql block in the Privileges section"; finish
fi
$SU -d shop -c "CREATE ROLE app LOGIN" -c "CREATE ROLE nogrant LOGIN" -c "CREATE ROLE app_noruns LOGIN" >/dev/null
if out=$($SU -d shop -f "$TMP/grants.sql" 2>&1); then ok "the documented lines apply as they are"
else bad "applying the documented lines: $out"; finish; fi
sed -e 's/, recsys_training_runs//' -e 's/ TO app;/ TO app_noruns;/' "$TMP/grants.sql" | $SU -d shop >/dev/null \
    || bad "grants for app_noruns"

# A database still on extension 1.0 (no recsys_training_runs), for the proxy as postgres.
# Not trained: the library installed is the newer one.
$SU -d postgres -c "CREATE DATABASE old" >/dev/null
$SU -d old -c "CREATE EXTENSION recsys VERSION '1.0'" >/dev/null || bad "extension 1.0 in database old"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_proxy() {  # start_proxy NAME ROLE [DB] -> URL_<NAME>
    local name=$1 role=$2 db=${3:-shop} p pid
    p=$(free_port)
    "$BIN" --listen "127.0.0.1:$p" --dsn "host=127.0.0.1 port=$PORT user=$role dbname=$db" --pool-size 2 \
        2>"$TMP/proxy-$name.log" &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$p/healthz" && break; sleep 0.05; done
    printf -v "URL_$name" '%s' "http://127.0.0.1:$p"
}
start_proxy app app
start_proxy none nogrant
start_proxy noruns app_noruns
start_proxy old postgres old

get() { curl -s -o "$TMP/body" -w '%{http_code}' "$@"; }
post() { curl -s -o "$TMP/body" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary "$2" "$1/recommendations"; }
expect() {  # expect WANT NAME STATUS
    if [ "$3" = "$1" ]; then ok "$2 -> $1"; else bad "$2: want $1, got $3: $(head -c 300 "$TMP/body")"; fi
}
js() { python3 -c "import json,sys; d=json.load(open('$TMP/body')); $1"; }

U=$URL_app
mid=$($SU -d shop -c "SELECT model_id FROM recsys_models WHERE active")
echo "# role app, with the documented grants"
expect 200 "/readyz" "$(get "$U/readyz")"
js "sys.exit(0 if d == {'status': 'ready', 'model_id': $mid} else 1)" && ok "/readyz names model $mid" || bad "/readyz body $(cat "$TMP/body")"
expect 200 "/models/active" "$(get "$U/models/active")"
$SU -d shop -c "SELECT row_to_json(m) FROM recsys_models m WHERE active" > "$TMP/model.json"
python3 -c "import json; a=json.load(open('$TMP/body')); b=json.load(open('$TMP/model.json')); exit(0 if a == b and a['model_id'] == $mid else 1)" \
    && ok "/models/active equals recsys_models' active row" || bad "/models/active $(cat "$TMP/body")"
expect 200 "/evaluations" "$(get "$U/evaluations")"
n=$($SU -d shop -c "SELECT count(*) FROM recsys_evaluations")
js "sys.exit(0 if len(d['evaluations']) == $n == 2 and sorted(e['k'] for e in d['evaluations']) == [5, 10] else 1)" \
    && ok "/evaluations has the $n evaluations (k = 5, 10)" || bad "/evaluations $(head -c 300 "$TMP/body")"
IDS="10,25,42,1,299"
expect 200 "POST /recommendations" "$(post "$U" "{\"user_ids\":[$IDS],\"top_n\":5}")"
$SU -d shop -F '|' -c "SELECT user_id, product_id FROM recsys_recommend('{$IDS}', 5) ORDER BY user_id, rank" > "$TMP/rec.tsv"
python3 - "$TMP/body" "$TMP/rec.tsv" <<'EOF' && ok "/recommendations equals recsys_recommend (run as postgres)" || bad "/recommendations differs"
import json, sys
got = json.load(open(sys.argv[1]))["results"]
want = {}
for line in open(sys.argv[2]):
    u, p = line.strip().split("|")
    want.setdefault(u, []).append(int(p))
assert got == want and len(want) == 5 and all(len(v) == 5 for v in want.values()), (got, want)
EOF
expect 200 "POST /recommendations with details" "$(post "$U" '{"user_ids":[10],"top_n":5,"details":true}')"
$SU -d shop -F '|' -c "SELECT r.product_id, p.product_name FROM recsys_recommend('{10}', 5) r
                        JOIN products p USING (product_id) ORDER BY r.rank" > "$TMP/det.tsv"
python3 - "$TMP/body" "$TMP/det.tsv" <<'EOF' && ok "details carry the product names (SELECT on products)" || bad "details differ"
import json, sys
got = [(x["product_id"], x["product_name"]) for x in json.load(open(sys.argv[1]))["results"]["10"]]
want = [(int(p), n) for p, n in (l.rstrip("\n").split("|", 1) for l in open(sys.argv[2]))]
assert got == want and len(want) == 5, (got, want)
EOF
expect 200 "/similar/5" "$(get "$U/similar/5?top_n=4")"
want=$($SU -d shop -c "SELECT string_agg(product_id::text, ',' ORDER BY rank) FROM recsys_similar_items(5, 4)")
js "sys.exit(0 if ','.join(str(x['product_id']) for x in d['similar']) == '$want' != '' else 1)" \
    && ok "/similar/5 equals recsys_similar_items ($want)" || bad "/similar/5 $(cat "$TMP/body")"
expect 200 "/users/10/history" "$(get "$U/users/10/history?limit=5")"
want=$($SU -d shop -c "SELECT string_agg(product_id::text, ',' ORDER BY last_event DESC, product_id) FROM recsys_user_history(10, 5)")
js "sys.exit(0 if ','.join(str(x['product_id']) for x in d['history']) == '$want' != '' else 1)" \
    && ok "/users/10/history equals recsys_user_history" || bad "/users/10/history $(cat "$TMP/body")"

# metric NAME FILE: the value of an unlabelled (or fully labelled) sample.
metric() { awk -v n="$1" '$1 == n { print $2 }' "$2"; }
# check_metrics WHAT: /metrics against recsys_models and recsys_training_runs, read as postgres.
check_metrics() {
    local what=$1 before after
    before=$($SU -d shop -c "SELECT date_part('epoch', clock_timestamp() - created_at) FROM recsys_models WHERE active")
    expect 200 "/metrics ($what)" "$(get "$U/metrics")"
    cp "$TMP/body" "$TMP/metrics"
    after=$($SU -d shop -c "SELECT date_part('epoch', clock_timestamp() - created_at) FROM recsys_models WHERE active")
    $SU -d shop -F '|' -c "SELECT model_id, date_part('epoch', created_at) FROM recsys_models WHERE active" > "$TMP/m.sql"
    $SU -d shop -F '|' -c "SELECT status, seconds, date_part('epoch', finished_at) FROM recsys_training_runs
                            WHERE kind = 'train' AND status <> 'running' ORDER BY run_id DESC LIMIT 1" > "$TMP/t.sql"
    python3 - "$TMP/metrics" "$TMP/m.sql" "$TMP/t.sql" "$before" "$after" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
m = {}
for line in text.splitlines():
    if line and not line.startswith("#"):
        k, v = line.rsplit(" ", 1)
        m[k] = float(v)
mid, created = open(sys.argv[2]).read().strip().split("|")
status, secs, end = open(sys.argv[3]).read().strip().split("|")
before, after = float(sys.argv[4]), float(sys.argv[5])
errs = []
def want(cond, what):
    if not cond: errs.append(what)
want(m.get("recsys_active_model_id") == int(mid), "recsys_active_model_id %s, SQL %s" % (m.get("recsys_active_model_id"), mid))
want(abs(m.get("recsys_active_model_created_timestamp_seconds", 0) - float(created)) < 0.001, "created timestamp")
age = m.get("recsys_active_model_age_seconds", -1)
want(before <= age <= after, "age %s not between the SQL ages %s and %s read around the scrape" % (age, before, after))
want(m.get("recsys_last_training_success") == (1 if status == "succeeded" else 0), "success gauge")
ones = [k for k, v in m.items() if k.startswith("recsys_last_training_status{") and v == 1]
want(ones == ['recsys_last_training_status{status="%s"}' % status], "status gauges %s, SQL %s" % (ones, status))
want(abs(m.get("recsys_last_training_duration_seconds", -1) - float(secs)) < 1e-5, "duration %s, SQL %s" % (m.get("recsys_last_training_duration_seconds"), secs))
want(abs(m.get("recsys_last_training_end_timestamp_seconds", 0) - float(end)) < 0.001, "end timestamp")
if errs:
    print("   ", "; ".join(errs)); sys.exit(1)
print("    model %s, age %.3f s, last training %s in %s s" % (mid, age, status, secs))
EOF
}
$SU -d shop -c "SELECT recsys_train(source => 'no_such_relation')" >/dev/null 2>&1
[ "$($SU -d shop -c "SELECT status || ' ' || sqlstate FROM recsys_training_runs ORDER BY run_id DESC LIMIT 1")" = "failed 42P01" ] \
    && ok "a failed training is logged (failed, 42P01)" || bad "the failed training is not in recsys_training_runs"
check_metrics "after a failed training" && ok "/metrics: model $mid still active, last training failed, as SQL says" \
    || bad "/metrics after the failed training"
mid2=$($SU -d shop -c "SELECT model_id FROM recsys_train()")
check_metrics "after a successful training" && ok "/metrics: model $mid2 active, last training succeeded, as SQL says" \
    || bad "/metrics after the successful training"
grep -q "^recsys_proxy_active_model_id $mid2\$" "$TMP/metrics" && ok "the scrape also refreshed the proxy's model id" \
    || bad "recsys_proxy_active_model_id: $(grep '^recsys_proxy_active_model_id' "$TMP/metrics")"

browser_dir="$repo/test/browser"
if [ -d "$browser_dir/node_modules/playwright-core" ] && [ -x "${CHROMIUM:-/usr/bin/chromium}" ] && command -v node >/dev/null; then
    if (cd "$browser_dir" && RECSYS_URL="$U" node --test page.test.mjs > "$TMP/browser.log" 2>&1); then
        ok "the web page's browser test passes as role app ($(grep -c '^ok ' "$TMP/browser.log") cases)"
    else
        bad "browser test as role app:"; sed 's/^/    /' "$TMP/browser.log" | tail -40
    fi
elif [ -n "${CI:-}" ]; then
    bad "browser test cannot run (npm ci in test/browser, apt-get install chromium)"
else
    echo "# skipped the browser test: npm ci in test/browser and apt-get install chromium to run it"
fi
n=$(grep -c '^app@\(ERROR\|FATAL\)' "$TMP/pg/server.log")
[ "$n" = 0 ] && ok "the server logged no error for role app" || bad "errors for role app: $(grep '^app@' "$TMP/pg/server.log" | head -5)"

echo "# role nogrant, without them"
U=$URL_none
st=$(get "$U/readyz")
[ "$st" = 503 ] && js "sys.exit(0 if d['code'] == '42501' and 'permission denied' in d['message'] else 1)" \
    && ok "/readyz -> 503, 42501: $(js "print(d['message'])")" || bad "/readyz without grants: $st $(cat "$TMP/body")"
for r in /models/active /evaluations /similar/5 /users/10/history; do
    st=$(get "$U$r")
    [ "$st" = 403 ] && js "sys.exit(0 if d['code'] == '42501' and 'permission denied' in d['message'] else 1)" \
        && ok "$r -> 403, 42501: $(js "print(d['message'])")" || bad "$r without grants: $st $(cat "$TMP/body")"
done
st=$(post "$U" '{"user_ids":[10],"top_n":5}')
[ "$st" = 403 ] && js "sys.exit(0 if d['code'] == '42501' else 1)" \
    && ok "POST /recommendations -> 403, 42501: $(js "print(d['message'])")" || bad "/recommendations without grants: $st $(cat "$TMP/body")"
st=$(get "$U/metrics")
[ "$st" = 200 ] && grep -q '^recsys_proxy_db_errors_total{sqlstate="42501"} [1-9]' "$TMP/body" && ! grep -q '^recsys_active_model' "$TMP/body" \
    && ok "/metrics -> 200: the proxy's metrics, 42501 counted, no model gauges" || bad "/metrics without grants: $st"

echo "# role app_noruns, without SELECT on recsys_training_runs"
U=$URL_noruns
expect 200 "/readyz" "$(get "$U/readyz")"
for i in 1 2 3; do get "$U/metrics" >/dev/null; done
grep -q "^recsys_active_model_id $mid2\$" "$TMP/body" && ! grep -q '^recsys_last_training' "$TMP/body" \
    && ok "/metrics: the model gauges, no last training gauges" || bad "/metrics for app_noruns: $(grep '^recsys_' "$TMP/body" | head)"
n=$(grep -c '^app_noruns@\(ERROR\|FATAL\)' "$TMP/pg/server.log")
[ "$n" = 0 ] && ok "three scrapes logged no error in the server" || bad "errors for app_noruns: $(grep '^app_noruns@' "$TMP/pg/server.log" | head -5)"

echo "# extension 1.0 (no recsys_training_runs)"
n0=$(grep -c '^postgres@\(ERROR\|FATAL\)' "$TMP/pg/server.log")
for i in 1 2 3; do get "$URL_old/metrics" >/dev/null; done
grep -q '^recsys_active_model_id -1$' "$TMP/body" && ! grep -q '^recsys_active_model_age_seconds' "$TMP/body" \
    && ! grep -q '^recsys_last_training' "$TMP/body" \
    && ok "/metrics on 1.0: no active model (-1), no last training gauges" || bad "/metrics on 1.0: $(grep '^recsys_[al]' "$TMP/body" | head)"
n=$(grep -c '^postgres@\(ERROR\|FATAL\)' "$TMP/pg/server.log")
[ "$n" = "$n0" ] && ok "three scrapes on 1.0 logged no error in the server" || bad "errors on 1.0: $(grep '^postgres@ERROR' "$TMP/pg/server.log" | tail -3)"
finish
