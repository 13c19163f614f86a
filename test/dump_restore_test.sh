#!/usr/bin/env bash
# pg_dump keeps the DBA's edits to recsys.event_weights and recsys.config, and
# restoring them into a fresh database replaces the seeded rows cleanly.
# Needs PGHOST/PGPORT/PGUSER of a server with recsys installed.
set -euo pipefail
A=recsys_dump_a B=recsys_dump_b
cleanup() { psql -qX -d postgres -c "DROP DATABASE IF EXISTS $A" -c "DROP DATABASE IF EXISTS $B" >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
psql -qX -d postgres -c "CREATE DATABASE $A" -c "CREATE DATABASE $B"
psql -qX -v ON_ERROR_STOP=1 -d $A <<'SQL'
CREATE EXTENSION recsys;
CREATE SCHEMA shop;
CREATE TABLE shop.events (user_id int, product_id int, event_type text, event_time timestamptz);
INSERT INTO shop.events VALUES (1, 1, 'view', now()), (1, 2, 'like', now()), (2, 2, 'view', now());
UPDATE recsys.event_weights SET weight = 1.5 WHERE event_type = 'view';
INSERT INTO recsys.event_weights VALUES ('like', 4);
UPDATE recsys.config SET source_relation = 'shop.events', neighbors = 20, keep_models = 2;
SELECT model_id FROM recsys_train();
SQL
q_weights="SELECT string_agg(event_type || '=' || weight, ',' ORDER BY event_type) FROM recsys.event_weights"
q_config="SELECT source_relation || ',' || neighbors || ',' || keep_models FROM recsys.config"
want_w=$(psql -qXAt -d $A -c "$q_weights")
want_c=$(psql -qXAt -d $A -c "$q_config")

pg_dump -d $A | psql -qX -v ON_ERROR_STOP=1 -d $B >/dev/null
got_w=$(psql -qXAt -d $B -c "$q_weights")
got_c=$(psql -qXAt -d $B -c "$q_config")
fail=0
[ "$got_w" = "$want_w" ] && echo "ok: weights kept ($got_w)" || { echo "FAIL: weights: want $want_w, got $got_w"; fail=1; }
[ "$got_c" = "$want_c" ] && echo "ok: config kept ($got_c)" || { echo "FAIL: config: want $want_c, got $got_c"; fail=1; }
# Models are derived data and are not dumped: the restored database retrains.
n=$(psql -qXAt -d $B -c "SELECT count(*) FROM recsys_models")
[ "$n" = 0 ] && echo "ok: models are not dumped" || { echo "FAIL: $n models restored"; fail=1; }
u=$(psql -qXAt -d $B -c "SELECT users FROM recsys_train()")
[ "$u" = 2 ] && echo "ok: restored database trains from shop.events ($u users)" || { echo "FAIL: retrain gave $u users"; fail=1; }
exit $fail
