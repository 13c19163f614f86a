#!/usr/bin/env bash
# pg_dump keeps the DBA's edits to recsys.event_weights and recsys.config, and
# restoring them into a fresh database replaces the seeded rows cleanly.  It
# keeps the evaluations too, with their ids (plain dump into psql, and a
# custom-format dump through pg_restore).
# Needs PGHOST/PGPORT/PGUSER of a server with recsys installed.
set -euo pipefail
A=recsys_dump_a B=recsys_dump_b C=recsys_dump_c D=recsys_dump_d E=recsys_dump_e F=recsys_dump_f
cleanup() { psql -qX -d postgres -c "DROP DATABASE IF EXISTS $A" -c "DROP DATABASE IF EXISTS $B" \
                 -c "DROP DATABASE IF EXISTS $C" -c "DROP DATABASE IF EXISTS $D" \
                 -c "DROP DATABASE IF EXISTS $E" -c "DROP DATABASE IF EXISTS $F" >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
psql -qX -d postgres -c "CREATE DATABASE $A" -c "CREATE DATABASE $B" -c "CREATE DATABASE $C"
psql -qX -v ON_ERROR_STOP=1 -d $A <<'SQL'
CREATE EXTENSION recsys;
CREATE SCHEMA shop;
CREATE TABLE shop.events (user_id int, product_id int, event_type text, event_time timestamptz);
INSERT INTO shop.events VALUES (1, 1, 'view', now()), (1, 2, 'like', now()), (2, 2, 'view', now());
UPDATE recsys.event_weights SET weight = 1.5 WHERE event_type = 'view';
INSERT INTO recsys.event_weights VALUES ('like', 4);
UPDATE recsys.config SET source_relation = 'shop.events', neighbors = 20, keep_models = 2;
SELECT model_id FROM recsys_train();
-- Two evaluations on a log with a time split (cutoff 2024-01-04: u2 and u3
-- are evaluated on item 2).
CREATE TABLE shop.history (user_id int, product_id int, event_type text, event_time timestamptz);
INSERT INTO shop.history VALUES (1, 1, 'view', '2024-01-01'), (1, 2, 'view', '2024-01-01'),
    (2, 1, 'view', '2024-01-01'), (2, 2, 'view', '2024-01-05'), (3, 1, 'view', '2024-01-01'), (3, 2, 'view', '2024-01-05');
SELECT users_evaluated FROM recsys_evaluate(k => 1, test_days => 1, source => 'shop.history');
SELECT users_evaluated FROM recsys_evaluate(k => 2, test_days => 1, source => 'shop.history');
SQL
q_weights="SELECT string_agg(event_type || '=' || weight, ',' ORDER BY event_type) FROM recsys.event_weights"
q_config="SELECT source_relation || ',' || neighbors || ',' || keep_models FROM recsys.config"
q_evals="SELECT e::text FROM recsys.evaluations e ORDER BY evaluation_id"
want_w=$(psql -qXAt -d $A -c "$q_weights")
want_c=$(psql -qXAt -d $A -c "$q_config")
want_e=$(psql -qXAt -d $A -c "$q_evals")

pg_dump -d $A | psql -qX -v ON_ERROR_STOP=1 -d $B >/dev/null
pg_dump -Fc -d $A | pg_restore --exit-on-error -d $C
got_w=$(psql -qXAt -d $B -c "$q_weights")
got_c=$(psql -qXAt -d $B -c "$q_config")
fail=0
[ "$got_w" = "$want_w" ] && echo "ok: weights kept ($got_w)" || { echo "FAIL: weights: want $want_w, got $got_w"; fail=1; }
[ "$got_c" = "$want_c" ] && echo "ok: config kept ($got_c)" || { echo "FAIL: config: want $want_c, got $got_c"; fail=1; }
n=$(printf '%s\n' "$want_e" | grep -c '2024-01-04')
[ "$n" = 2 ] || { echo "FAIL: the source database has $n evaluations, not 2: $want_e"; fail=1; }
for db in $B $C; do
    got_e=$(psql -qXAt -d $db -c "$q_evals")
    [ "$got_e" = "$want_e" ] && echo "ok: $db: both evaluations kept, every value" \
        || { echo "FAIL: $db: evaluations: want"; echo "$want_e"; echo "got"; echo "$got_e"; fail=1; }
    # Where the ids stand is kept too: the next evaluation gets a new one.
    next=$(psql -qXAt -d $db -c "SELECT users_evaluated FROM recsys_evaluate(k => 1, test_days => 1, source => 'shop.history')" \
                            -c "SELECT string_agg(evaluation_id::text, ',' ORDER BY evaluation_id) FROM recsys_evaluations")
    [ "$next" = "$(printf '2\n1,2,3')" ] && echo "ok: $db: a new evaluation gets id 3" \
        || { echo "FAIL: $db: a new evaluation: $next"; fail=1; }
done
# Models are derived data and are not dumped: the restored database retrains.
n=$(psql -qXAt -d $B -c "SELECT count(*) FROM recsys_models")
[ "$n" = 0 ] && echo "ok: models are not dumped" || { echo "FAIL: $n models restored"; fail=1; }
u=$(psql -qXAt -d $B -c "SELECT users FROM recsys_train()")
[ "$u" = 2 ] && echo "ok: restored database trains from shop.events ($u users)" || { echo "FAIL: retrain gave $u users"; fail=1; }

# A mapped source (recsys_set_source: bigint customers, text SKUs, a value
# column, a half-life) is kept too, and the restore recreates the serving
# functions with its id types, whose grants are dumped as well.
psql -qX -d postgres -c "CREATE DATABASE $D" -c "CREATE DATABASE $E" -c "CREATE DATABASE $F"
psql -qX -v ON_ERROR_STOP=1 -d $D >/dev/null <<'SQL'
CREATE EXTENSION recsys;
CREATE TABLE shop_events (customer_id bigint, sku text, action text, ts timestamptz, quantity int);
INSERT INTO shop_events VALUES (9000000001, 'A-1', 'purchase', now(), 2), (9000000001, 'B-2', 'purchase', now(), 1),
                               (9000000002, 'A-1', 'purchase', now(), 1), (9000000002, 'C-3', 'purchase', now(), 3);
SELECT * FROM recsys_set_source('shop_events', 'customer_id', 'sku', 'action', 'ts', 'quantity');
UPDATE recsys.config SET half_life_days = 14;
CREATE VIEW sellable AS SELECT DISTINCT sku FROM shop_events;
SELECT recsys_set_recommendable('sellable', 'sku');
CREATE ROLE recsys_dump_app;
REVOKE ALL ON FUNCTION recsys_recommend(bigint[], integer, boolean, text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION recsys_recommend(bigint[], integer, boolean, text[], text[]) TO recsys_dump_app;
SQL
q_map="SELECT concat_ws(',', source_relation, user_column, item_column, event_column, time_column, value_column, half_life_days, user_type, item_type, recommendable_relation, recommendable_column) FROM recsys.config"
q_sig="SELECT p.oid::regprocedure::text || ' -> ' || pg_get_function_result(p.oid) FROM pg_proc p WHERE p.proname = 'recsys_recommend'"
q_acl="SELECT has_function_privilege('recsys_dump_app', 'recsys_recommend(bigint[], integer, boolean, text[], text[])', 'EXECUTE')::text || ',' || has_function_privilege('public', 'recsys_recommend(bigint[], integer, boolean, text[], text[])', 'EXECUTE')::text"
want_m=$(psql -qXAt -d $D -c "$q_map"); want_s=$(psql -qXAt -d $D -c "$q_sig"); want_a=$(psql -qXAt -d $D -c "$q_acl")
pg_dump -d $D | psql -qX -v ON_ERROR_STOP=1 -d $E >/dev/null
pg_dump -Fc -d $D | pg_restore --exit-on-error -d $F
for db in $E $F; do
    [ "$(psql -qXAt -d $db -c "$q_map")" = "$want_m" ] && echo "ok: $db: the mapping is kept ($want_m)" \
        || { echo "FAIL: $db: mapping: $(psql -qXAt -d $db -c "$q_map")"; fail=1; }
    [ "$(psql -qXAt -d $db -c "$q_sig")" = "$want_s" ] && echo "ok: $db: serving functions in the source's types ($want_s)" \
        || { echo "FAIL: $db: serving functions: $(psql -qXAt -d $db -c "$q_sig")"; fail=1; }
    [ "$(psql -qXAt -d $db -c "$q_acl")" = "$want_a" ] && echo "ok: $db: their grants are kept ($want_a)" \
        || { echo "FAIL: $db: grants: $(psql -qXAt -d $db -c "$q_acl")"; fail=1; }
    got=$(psql -qXAt -d $db -c "SELECT users FROM recsys_train()" \
               -c "SELECT string_agg(product_id, ',' ORDER BY rank) FROM recsys_recommend(ARRAY[9000000002]::bigint[], 2)")
    [ "$got" = "$(printf '2\nB-2')" ] && echo "ok: $db: trains and recommends text SKUs to bigint customers" \
        || { echo "FAIL: $db: train and recommend: $got"; fail=1; }
done
psql -qX -d postgres -c "DROP DATABASE $D" -c "DROP DATABASE $E" -c "DROP DATABASE $F" -c "DROP ROLE recsys_dump_app" >/dev/null
exit $fail
