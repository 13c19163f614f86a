#!/usr/bin/env bash
# Runs every recsys test on this machine (Debian bookworm, as root or as a
# user who can start PostgreSQL): builds with -Werror, installs, starts a
# throwaway PostgreSQL cluster, then runs the core's GoogleTest suite (plain
# and under ASan/UBSan), the pg_regress and isolation suites, the shell
# tests under test/, and the proxy's tests.  Ends with "N passed, N failed".
#
#   scripts/test.sh            everything
#   RECSYS_DATA=/path scripts/test.sh    where the shared data sets are
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export RECSYS_DATA=${RECSYS_DATA:-$(cd "$ROOT/.." && pwd)/shared/data}
PASSED=0
FAILED=0
FAILURES=()
LOG=$(mktemp -d /tmp/recsys-test.XXXXXX)
chmod 755 "$LOG"

note()  { printf '\n=== %s\n' "$*"; }
LAST_COUNT=$SECONDS
count() { # count NAME PASSED FAILED: also prints the seconds since the last count
    PASSED=$((PASSED + $2)); FAILED=$((FAILED + $3))
    [ "$3" -gt 0 ] && FAILURES+=("$1")
    printf -- '--- %s: %d passed, %d failed (%d s)\n' "$1" "$2" "$3" $((SECONDS - LAST_COUNT))
    LAST_COUNT=$SECONDS
}
# step NAME CMD...: runs CMD with its output in $LOG/NAME.log.  A CMD that
# ends with its own "N passed, M failed" line counts those; otherwise it is
# one test, passed when CMD exits 0.  A non-zero exit is always a failure.
step() {
    local name=$1; shift
    "$@" >"$LOG/$name.log" 2>&1
    local rc=$? p f line
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$LOG/$name.log" | tail -1)
    if [ -n "$line" ]; then
        p=${line%% passed*}; f=${line#*passed, }; f=${f%% failed*}
    elif [ $rc -eq 0 ]; then p=1; f=0
    else p=0; f=1; fi
    [ $rc -ne 0 ] && [ "$f" -eq 0 ] && f=1
    [ "$f" -gt 0 ] && tail -n 40 "$LOG/$name.log"
    count "$name" "$p" "$f"
}
# gtest_counts LOGFILE: prints "passed failed" from a GoogleTest run.
gtest_counts() {
    local p f
    p=$(grep -c '^\[       OK \]' "$1" || true)
    f=$(grep -cE '^\[  FAILED  \] [A-Za-z_].* \([0-9]+ ms\)$' "$1" || true)
    # A crash before the summary is one more failure.
    grep -q '^\[==========\] .* ran\.' "$1" || f=$((f + 1))
    echo "$p" "$f"
}

note "dependencies"
scripts/install_deps.sh || { echo "installing dependencies failed"; echo "0 passed, 1 failed"; exit 1; }

note "build (warnings are errors)"
make clean >/dev/null 2>&1
if ! make -j2 CI=1 >"$LOG/build.log" 2>&1 || ! make install >>"$LOG/build.log" 2>&1; then
    tail -n 60 "$LOG/build.log"; echo "0 passed, 1 failed"; exit 1
fi
count build 1 0

note "core unit tests (GoogleTest)"
# unit_result TARGET RC: counts a GoogleTest run from its log.
unit_result() {
    local p f
    read -r p f < <(gtest_counts "$LOG/unit-$1.log")
    [ "$2" -ne 0 ] && [ "$f" -eq 0 ] && f=1
    [ "$f" -gt 0 ] && tail -n 40 "$LOG/unit-$1.log"
    grep '^\[  PASSED  \]\|^\[  FAILED  \] [0-9]' "$LOG/unit-$1.log" || true
    count "unit-$1" "$p" "$f"
}
make -j2 -C test/unit test >"$LOG/unit-test.log" 2>&1
unit_result test $?
# The ASan/UBSan build and run (CPU-bound, a few minutes on one core) go on
# in the background beside the database tests, which wait on conditions,
# never on clocks; it ends before the proxy's tests, whose connection
# limits and idle timeouts are measured in wall time.
( make -j1 -C test/unit sanitize >"$LOG/unit-sanitize.log" 2>&1; echo $? >"$LOG/unit-sanitize.rc" ) &
SANITIZE_PID=$!
sanitize_result() {
    [ -n "${SANITIZE_PID:-}" ] || return 0
    note "core unit tests under ASan and UBSan (run beside the database tests)"
    wait "$SANITIZE_PID"
    SANITIZE_PID=
    unit_result sanitize "$(cat "$LOG/unit-sanitize.rc" 2>/dev/null || echo 1)"
}

note "PostgreSQL cluster"
PGDIR="$LOG/pg"
PORT=${RECSYS_TEST_PORT:-55490}
while (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; do PORT=$((PORT + 1)); done
if ! scripts/pgcluster.sh start "$PGDIR" "$PORT" \
        "shared_preload_libraries=pg_cron,recsys" "cron.database_name=postgres" "cron.use_background_workers=on" \
        "max_worker_processes=20"; then
    cat "$PGDIR/server.log" 2>/dev/null | tail -20; echo "$PASSED passed, $((FAILED + 1)) failed"; exit 1
fi
trap 'scripts/pgcluster.sh stop "$PGDIR"' EXIT
export PGHOST=$PGDIR PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres

note "pg_regress and isolation suites"
make installcheck >"$LOG/installcheck.log" 2>&1
rc=$?
p=$(grep -cE '^(test| ) +[a-z_0-9]+ +\.\.\. ok' "$LOG/installcheck.log" || true)
f=$(grep -cE '\.\.\. FAILED' "$LOG/installcheck.log" || true)
[ $rc -ne 0 ] && [ "$f" -eq 0 ] && f=1
grep -E '\.\.\. (ok|FAILED)' "$LOG/installcheck.log"
[ "$f" -gt 0 ] && { cat regression.diffs output_iso/regression.diffs 2>/dev/null | head -80; }
count installcheck "$p" "$f"

note "shell tests (test/*.sh)"
for t in test/*.sh; do
    [ -e "$t" ] || continue
    name=$(basename "$t" .sh)
    # Each gets a database of its own (tests that need several make their own).
    psql -qX -c "DROP DATABASE IF EXISTS test_$name" -c "CREATE DATABASE test_$name" >/dev/null 2>&1
    PGDATABASE=test_$name step "$name" bash "$t" "$RECSYS_DATA"
done

sanitize_result

if [ -f proxy/Makefile ]; then
    note "proxy"
    make -j2 -C proxy test >"$LOG/proxy-unit.log" 2>&1
    rc=$?
    read -r p f < <(gtest_counts "$LOG/proxy-unit.log")
    [ $rc -ne 0 ] && [ "$f" -eq 0 ] && f=1
    [ "$f" -gt 0 ] && tail -n 40 "$LOG/proxy-unit.log"
    count proxy-unit "$p" "$f"
    # The browser test's playwright-core (drives Debian's chromium).
    (cd test/browser && npm ci --no-audit --no-fund) >"$LOG/npm.log" 2>&1 || tail -n 20 "$LOG/npm.log"
    it_port=$((PORT + 1))
    while (exec 3<>/dev/tcp/127.0.0.1/$it_port) 2>/dev/null; do it_port=$((it_port + 1)); done
    for t in proxy/test/*.sh; do
        [ -e "$t" ] || continue
        RECSYS_IT_PGPORT=$it_port SCREENSHOT="$LOG/page.png" step "proxy-$(basename "$t" .sh)" bash "$t"
    done
    [ -f "$LOG/page.png" ] && echo "screenshot of the web page: $LOG/page.png"
fi

note "summary"
[ ${#FAILURES[@]} -gt 0 ] && echo "failed: ${FAILURES[*]} (logs in $LOG)"
echo "total: $SECONDS s"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
