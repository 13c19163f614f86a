#!/usr/bin/env bash
# Benchmarks recsys inside PostgreSQL, side by side with a plain-SQL baseline,
# in one run on one server:
#   1. recsys_train() end to end on a synthetic ~1M-event log (100k users,
#      10k products, the demo generator), median of 3, with the backend's
#      peak RSS growth (VmHWM, reset before each run) next to the documented
#      memory formula;
#   2. the same top-50 cosine neighbours computed by a SQL self-join in plain
#      PostgreSQL (the baseline), once;
#   3. recsys_recommend latency with pgbench: 1 user with ~20 history items,
#      and 100 such users per call.
# Prints a table and the ratios.  Not a test: nothing asserts on time.
#
#   bench/bench_extension.sh                 own throwaway cluster
#   BENCH_USERS=100000 BENCH_PRODUCTS=10000 BENCH_EPU=10 bench/bench_extension.sh
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${BENCH_USERS:-100000}
PRODUCTS=${BENCH_PRODUCTS:-10000}
EPU=${BENCH_EPU:-10}
PGBIN=$(pg_config --bindir)

make -j2 >/dev/null && make install >/dev/null
DIR=$(mktemp -d /tmp/recsys-bench.XXXXXX); chmod 755 "$DIR"
PORT=55470
while (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; do PORT=$((PORT + 1)); done
scripts/pgcluster.sh start "$DIR" "$PORT" "shared_buffers=1GB" "max_wal_size=4GB"
trap 'scripts/pgcluster.sh stop "$DIR"; rm -rf "$DIR"' EXIT
export PGHOST=$DIR PGPORT=$PORT PGUSER=postgres PGDATABASE=bench
psql -qX -d postgres -c "CREATE DATABASE bench"

echo "== generating $USERS users x $PRODUCTS products x ~$EPU events per user"
t0=$(date +%s.%N)
psql -qX -v ON_ERROR_STOP=1 -v users="$USERS" -v products="$PRODUCTS" -v events_per_user="$EPU" \
     -f scripts/demo_data.sql >/dev/null
psql -qX -c "VACUUM ANALYZE interactions" -c "CREATE EXTENSION recsys"
echo "   $(psql -qXAt -c "SELECT count(*) || ' events, ' || count(DISTINCT user_id) || ' users, ' || count(DISTINCT product_id) || ' products' FROM interactions") in $(echo "$(date +%s.%N) - $t0" | bc | cut -c1-5) s"

MWM=${BENCH_MWM:-256MB}
echo "== recsys_train() x 3 with maintenance_work_mem = $MWM (memory: the backend's VmHWM growth)"
# Each run: a new session reads the tables training touches (so the shared
# buffers it maps are already counted, while no private memory has been
# allocated and kept by malloc yet), resets the peak, trains, reads the peak.
train_run() { # train_run MWM -> "seconds users items pairs hwm_before hwm_after"
    psql -qXAt -v ON_ERROR_STOP=1 -v mwm="$1" <<'SQL'
SET maintenance_work_mem = :'mwm';
SELECT pg_backend_pid() AS pid \gset
\setenv PID :pid
SELECT count(*) FROM interactions \gset warm_
SELECT count(*) FROM recsys.neighbors \gset warm_
SELECT count(*) FROM recsys.popularity \gset warm_
\! echo 5 > /proc/$PID/clear_refs
\! grep VmHWM /proc/$PID/status | awk '{print $2}' > /tmp/recsys_hwm1
SELECT seconds || ' ' || users || ' ' || items || ' ' || neighbor_pairs AS r FROM recsys_train() \gset t_
\! printf '%s %s\n' "$(cat /tmp/recsys_hwm1)" "$(grep VmHWM /proc/$PID/status | awk '{print $2}')" > /tmp/recsys_hwm2
\echo :t_r
SQL
}
for i in 1 2 3; do
    paste -d' ' <(train_run "$MWM") /tmp/recsys_hwm2 > "$DIR/run$i.txt"
done
cat "$DIR"/run*.txt | sort -n | sed -n 2p > "$DIR/median.txt"
read -r train_s users items pairs hwm_before hwm_after < "$DIR/median.txt"
paste -d' ' <(train_run 64MB) /tmp/recsys_hwm2 > "$DIR/default.txt"
read -r def_s _ _ _ def_before def_after < "$DIR/default.txt"
eigen_s=$(psql -qXAt -c "SET maintenance_work_mem = '$MWM'" -c "SET recsys.similarity_method = 'eigen'" \
               -c "SELECT round(seconds::numeric, 3) FROM recsys_train()" | tail -1)
echo "   recsys.similarity_method = eigen: ${eigen_s} s"
psql -qX -c "SET maintenance_work_mem = '$MWM'" -c "SELECT * FROM recsys_train()" >/dev/null   # native model active again
# Evaluation reads the log twice more than training (the newest event, the
# test window's touches) and trains on the part before the cutoff.
eval_s=$(psql -qXAt -c "SET maintenance_work_mem = '$MWM'" \
              -c "SELECT round(seconds::numeric, 3) FROM recsys_evaluate(10)" | tail -1)
echo "   recsys_evaluate(10): ${eval_s} s"
cells=$(psql -qXAt -c "SELECT cells FROM recsys_models WHERE active")
echo "   runs (s): $(cut -d' ' -f1 "$DIR"/run*.txt | tr '\n' ' ')  median $train_s"
peak_mb=$(( (hwm_after - hwm_before) / 1024 ))
def_peak_mb=$(( (def_after - def_before) / 1024 ))
echo "   with the default 64MB: ${def_s} s, peak RSS growth ${def_peak_mb} MB"
# The documented estimate (docs/operations.md), as training computes it.
formula_mb=$(psql -qXAt -c "SELECT round(recsys.train_memory($cells, $users, $items, 50) / 1048576.0)")
echo "   peak RSS growth ${peak_mb} MB; formula ${formula_mb} MB (cells $cells, users $users, items $items, pairs $pairs)"

echo "== baseline: the same top-50 neighbours by a SQL self-join"
t0=$(date +%s.%N)
psql -qX -v ON_ERROR_STOP=1 <<'SQL'
SET work_mem = '256MB';
CREATE UNLOGGED TABLE baseline_neighbors AS
WITH m AS (SELECT * FROM recsys_user_item_matrix),
     norms AS (SELECT product_id, sqrt(sum(weight * weight)) AS norm FROM m GROUP BY product_id),
     dots AS (SELECT a.product_id AS i, b.product_id AS j, sum(a.weight * b.weight) AS dot
                FROM m a JOIN m b ON a.user_id = b.user_id AND a.product_id <> b.product_id
               GROUP BY a.product_id, b.product_id),
     sims AS (SELECT d.i, d.j, d.dot / (ni.norm * nj.norm) AS sim
                FROM dots d JOIN norms ni ON ni.product_id = d.i JOIN norms nj ON nj.product_id = d.j),
     ranked AS (SELECT i, j, sim, row_number() OVER (PARTITION BY i ORDER BY sim DESC, j) AS r FROM sims)
SELECT i, j, sim FROM ranked WHERE r <= 50;
SQL
t1=$(date +%s.%N)
base_s=$(echo "$t1 - $t0" | bc)
echo "   $(printf '%.2f' "$base_s") s"
same=$(psql -qXAt <<'SQL'
CREATE UNLOGGED TABLE ext AS SELECT nb.item_id AS i, n.id AS j, n.sim FROM recsys.neighbors nb
  JOIN recsys.active_model a USING (model_id), unnest(nb.neighbor_ids, nb.sims) AS n(id, sim);
SELECT (SELECT count(*) FROM ext) || ' extension pairs, ' ||
       (SELECT count(*) FROM baseline_neighbors) || ' baseline pairs, ' ||
       (SELECT count(*) FROM ext e JOIN baseline_neighbors b USING (i, j) WHERE abs(e.sim - b.sim) < 1e-9) || ' identical';
SQL
) || true
echo "   agreement: $same"

echo "== recsys_recommend latency (pgbench, 1 client, 10 s each)"
psql -qX -c "CREATE TABLE bench_users AS SELECT user_id FROM recsys_user_item_matrix GROUP BY user_id HAVING count(*) BETWEEN 18 AND 22"
nusers=$(psql -qXAt -c "SELECT count(*) FROM bench_users")
psql -qX -c "CREATE TABLE bench_user_arr AS SELECT array_agg(user_id ORDER BY user_id) AS ids FROM bench_users"
cat > "$DIR/one.sql" <<SQL
\set n random(0, $((nusers - 1)))
SELECT * FROM recsys_recommend(ARRAY[(SELECT ids[:n + 1] FROM bench_user_arr)], 10);
SQL
cat > "$DIR/hundred.sql" <<SQL
\set n random(0, $((nusers > 100 ? nusers - 100 : 0)))
SELECT * FROM recsys_recommend((SELECT ids[:n + 1 : :n + 100] FROM bench_user_arr), 10);
SQL
one_ms=$("$PGBIN/pgbench" -n -M prepared -c 1 -T 10 -f "$DIR/one.sql" 2>/dev/null | awk '/latency average/ {print $4}')
hun_ms=$("$PGBIN/pgbench" -n -M prepared -c 1 -T 10 -f "$DIR/hundred.sql" 2>/dev/null | awk '/latency average/ {print $4}')
echo "   1 user (~20 history items): ${one_ms} ms;  100 users: ${hun_ms} ms   ($nusers users with 18-22 items)"

echo
echo "| measure | value |"
echo "|---|---|"
echo "| events / users / products | $(psql -qXAt -c "SELECT interactions_used || ' / ' || users || ' / ' || items FROM recsys_models WHERE active") |"
echo "| recsys_train() median of 3 (maintenance_work_mem $MWM) | ${train_s} s |"
echo "| recsys_train() with the default 64MB | ${def_s} s |"
echo "| recsys_train() with recsys.similarity_method = eigen | ${eigen_s} s |"
echo "| recsys_evaluate(10) (maintenance_work_mem $MWM) / its ratio to the median training | ${eval_s} s / $(echo "scale=2; $eval_s / $train_s" | bc)x |"
echo "| SQL self-join baseline | $(printf '%.2f' "$base_s") s |"
echo "| speed-up | $(echo "scale=1; $base_s / $train_s" | bc)x |"
echo "| recsys_recommend, 1 user | ${one_ms} ms |"
echo "| recsys_recommend, 100 users | ${hun_ms} ms |"
echo "| training peak RSS growth / estimate (excl. aggregation) | ${peak_mb} MB / ${formula_mb} MB ($MWM budget); ${def_peak_mb} MB (64MB budget) |"
