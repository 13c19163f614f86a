#!/usr/bin/env bash
# tune_speed.sh - training time of every setting recsys_tune() tries by
# default against the 1.0 defaults', and recsys_tune()'s own time, on the
# benchmark's synthetic log (bench/gen_events.sql).
#
#   PGHOST=... PGPORT=... PGUSER=... PGDATABASE=... bench/tune_speed.sh [events] [runs]
#
# events defaults to 1000000, runs (timed trainings per setting, the median
# is reported) to 3.  Replaces the table `interactions` (gen_events.sql) and
# points recsys.config at it; trains with recsys_train(settings => ...) under
# maintenance_work_mem = 1GB so that every setting trains in memory.
#
# Two clocks: wall seconds (recsys_train().seconds: reading, training,
# writing), and the CPU seconds of the backend process (user + system, all
# its threads, from /proc/<pid>/stat: needs the server on this machine and
# the right to read it).  On a shared machine only the CPU figure compares
# settings fairly.  Prints one line per setting, timed in pairs with the
# defaults; then recsys_tune(10, 30)'s CPU as a multiple of one default
# training's.
set -euo pipefail
EVENTS=${1:-1000000}
RUNS=${2:-3}
PSQL=(psql -X -q -v ON_ERROR_STOP=1)
HZ=$(getconf CLK_TCK)
cd "$(dirname "$0")/.."
"${PSQL[@]}" -c "CREATE EXTENSION IF NOT EXISTS recsys" >/dev/null 2>&1
"${PSQL[@]}" -v events="$EVENTS" -f bench/gen_events.sql >/dev/null
"${PSQL[@]}" -c "UPDATE recsys.config SET source_relation = 'interactions', keep_models = 1" >/dev/null

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# One statement in a fresh session: prints "wall_seconds cpu_seconds".
measure() {
    local sql=$1 fifo pid t0 w out
    fifo=$(mktemp -u)
    mkfifo "$fifo"
    "${PSQL[@]}" -At <"$fifo" >"$fifo.out" &
    local client=$!
    exec 9>"$fifo"
    echo "SET maintenance_work_mem = '1GB'; SET client_min_messages = warning;" >&9
    echo "SELECT pg_backend_pid();" >&9
    while [ ! -s "$fifo.out" ]; do sleep 0.05; done
    pid=$(head -n 1 "$fifo.out")
    local c0; c0=$(cpu_ticks "$pid")
    t0=$(date +%s%N)
    echo "$sql;" >&9
    echo "SELECT 'done', pg_backend_pid();" >&9
    while ! grep -q '^done' "$fifo.out"; do sleep 0.05; done
    w=$(echo "($(date +%s%N) - $t0) / 1000000000" | bc -l)
    out=$(echo "($(cpu_ticks "$pid") - $c0) / $HZ" | bc -l)
    exec 9>&-
    wait "$client"
    rm -f "$fifo" "$fifo.out"
    printf '%.3f %.3f\n' "$w" "$out"
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

grid=$("${PSQL[@]}" -At -c "SELECT value FROM jsonb_array_elements(recsys.tune_grid())")
default=$(head -n 1 <<<"$grid")
# Each setting is timed in turn with the defaults, RUNS pairs (so that a
# change of the machine's load hits both alike); the ratio is the median of
# the pairs' CPU ratios.
base_cpus=()
echo "events $EVENTS; per setting $RUNS (defaults, setting) pairs: median wall s, median CPU s, median CPU ratio"
while IFS= read -r s; do
    [ "$s" != "$default" ] || continue
    walls=() cpus=() ratios=()
    for ((i = 0; i < RUNS; i++)); do
        read -r wd cd < <(measure "SELECT * FROM recsys_train(settings => '$default')")
        read -r w c < <(measure "SELECT * FROM recsys_train(settings => '$s')")
        base_cpus+=("$cd"); walls+=("$w"); cpus+=("$c")
        ratios+=("$(echo "$c / $cd" | bc -l)")
    done
    printf '%8.3f s wall  %8.3f s CPU  %5.2fx  %s\n' "$(printf '%s\n' "${walls[@]}" | median)" \
        "$(printf '%s\n' "${cpus[@]}" | median)" "$(printf '%s\n' "${ratios[@]}" | median)" "$s"
done <<<"$grid"
base=$(printf '%s\n' "${base_cpus[@]}" | median)
printf 'defaults (%s): %.3f s CPU, median of %d trainings\n' "$default" "$base" "${#base_cpus[@]}"
read -r w c < <(measure "SELECT count(*) FROM recsys_tune(10, 30)")
printf 'recsys_tune(10, 30): %.3f s wall, %.3f s CPU = %.2fx the CPU of one default training\n' \
    "$w" "$c" "$(echo "$c / $base" | bc -l)"
