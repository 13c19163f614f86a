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
# maintenance_work_mem = 1GB so that every setting trains in memory.  Prints
# one line per setting: median seconds and the ratio to the defaults'; then
# recsys_tune(10, 30)'s seconds and their ratio to one default training.
set -euo pipefail
EVENTS=${1:-1000000}
RUNS=${2:-3}
PSQL=(psql -X -q -v ON_ERROR_STOP=1)
cd "$(dirname "$0")/.."
"${PSQL[@]}" -c "CREATE EXTENSION IF NOT EXISTS recsys" >/dev/null
"${PSQL[@]}" -v events="$EVENTS" -f bench/gen_events.sql >/dev/null
"${PSQL[@]}" -c "UPDATE recsys.config SET source_relation = 'interactions', keep_models = 1" >/dev/null

time_train() {  # settings jsonb -> median seconds of RUNS trainings
    local s=$1 i secs=()
    for ((i = 0; i < RUNS; i++)); do
        secs+=("$("${PSQL[@]}" -At -c "SET maintenance_work_mem = '1GB'" \
                 -c "SELECT seconds FROM recsys_train(settings => '$s')")")
    done
    printf '%s\n' "${secs[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

grid=$("${PSQL[@]}" -At -c "SELECT value FROM jsonb_array_elements(recsys.tune_grid())")
base=""
echo "events $EVENTS, median of $RUNS trainings (recsys_train().seconds: reading, training, writing)"
while IFS= read -r s; do
    t=$(time_train "$s")
    [ -n "$base" ] || base=$t
    printf '%8.3f s  %5.2fx  %s\n' "$t" "$(echo "$t / $base" | bc -l)" "$s"
done <<<"$grid"
t0=$(date +%s%N)
"${PSQL[@]}" -c "SET maintenance_work_mem = '1GB'" -c "SET client_min_messages = warning" \
    -c "SELECT count(*) FROM recsys_tune(10, 30)" >/dev/null
t=$(echo "($(date +%s%N) - $t0) / 1000000000" | bc -l)
printf 'recsys_tune(10, 30): %.3f s = %.2fx one default training\n' "$t" "$(echo "$t / $base" | bc -l)"
