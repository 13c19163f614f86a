#!/usr/bin/env bash
# ALTER EXTENSION recsys UPDATE, from every older release this tree ships an
# install script for, to the default version (recsys.control).
#
# (a) A database on 1.0 with edited configuration, evaluations and a trained
#     model on small hand-checked data is updated: the configuration and the
#     evaluations are kept, the 1.0 model serves exactly what it served before
#     (or, if the update says a retrain is needed, serving fails clearly until
#     one), training, activation and evaluation work afterwards.
# (b) The catalog each update leaves (every extension member: functions with
#     their whole definition, properties, settings and privileges; tables with
#     columns, defaults, constraints, indexes, triggers; views; sequences;
#     comments; membership; the pg_dump configuration list) must be identical
#     to a fresh install's.  A difference is printed as a diff: lines with "-"
#     exist only in the fresh install (sql/recsys--NEW.sql), lines with "+"
#     only after the update (sql/recsys--OLD--NEW.sql).
#
# Needs PGHOST/PGPORT/PGUSER of a server with recsys installed; makes its own
# databases (recsys_upgrade_*) and drops them at the end (KEEP=1 keeps them).
set -uo pipefail
PFX=recsys_upgrade
DATA_DB=${PFX}_data FRESH_DB=${PFX}_fresh PROBE_DB=${PFX}_probe
DBS=()
READER=${PFX}_reader   # a role the DBA let read recsys_models (as the proxy's)
WORK=$(mktemp -d /tmp/recsys-upgrade.XXXXXX)
PASSED=0 FAILED=0

admin() { psql -qX -d postgres "$@" >/dev/null 2>&1; }
cleanup() {
    if [ "${KEEP:-0}" = 1 ]; then echo "kept databases ${DBS[*]} and $WORK"; return; fi
    for db in "${DBS[@]}"; do admin -c "DROP DATABASE IF EXISTS $db"; done
    admin -c "DROP ROLE IF EXISTS $READER"
    rm -rf "$WORK"
}
trap cleanup EXIT
newdb() { DBS+=("$1"); admin -c "DROP DATABASE IF EXISTS $1" && admin -c "CREATE DATABASE $1"; }
# q DB SQL: one query, unaligned; a failure prints the error (on stdout, so
# that it shows in what a check got) and returns non-zero.
q() { psql -qXAt -v ON_ERROR_STOP=1 -d "$1" -c "$2" 2>&1; }
ok()   { PASSED=$((PASSED + 1)); echo "ok: $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL: $*"; }
# same WHAT WANT GOT: passes when the two texts are equal, else shows both.
same() {
    if [ "$2" = "$3" ]; then ok "$1"; return 0; fi
    fail "$1"
    diff -u --label want <(printf '%s\n' "$2") --label got <(printf '%s\n' "$3") | sed 's/^/    /'
    return 1
}
finish() { echo "$PASSED passed, $FAILED failed"; [ "$FAILED" -eq 0 ]; exit $?; }

# The catalog the extension leaves in a database, one sorted line per fact:
# "<object>: <fact>".  Objects are named by pg_identify_object, never by OID;
# data (rows, a sequence's current value) is not part of it.  Privileges are
# the effective ones (a NULL ACL shown as the default it stands for).
describe_catalog() {
    psql -qXAt -v ON_ERROR_STOP=1 -d "$1" <<'SQL'
WITH ext AS (
    SELECT e.oid, e.extnamespace, e.extrelocatable, e.extconfig, e.extcondition
      FROM pg_catalog.pg_extension e WHERE e.extname = 'recsys'),
member AS (
    SELECT d.classid, d.objid, d.objsubid, o.type || ' ' || o.identity AS label
      FROM pg_catalog.pg_depend d JOIN ext ON d.refobjid = ext.oid,
           LATERAL pg_catalog.pg_identify_object(d.classid, d.objid, d.objsubid) o
     WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e'),
fn AS (
    SELECT m.label, p.* FROM member m JOIN pg_catalog.pg_proc p ON p.oid = m.objid
     WHERE m.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass),
rel AS (
    SELECT m.label, c.oid AS reloid, c.* FROM member m JOIN pg_catalog.pg_class c ON c.oid = m.objid
     WHERE m.classid = 'pg_catalog.pg_class'::pg_catalog.regclass),
facts(obj, seq, fact) AS (
    -- the extension itself and its pg_dump configuration list
    SELECT 'extension recsys', 0, pg_catalog.format('schema=%s relocatable=%s',
               pg_catalog.quote_ident(n.nspname), ext.extrelocatable)
      FROM ext JOIN pg_catalog.pg_namespace n ON n.oid = ext.extnamespace
    UNION ALL
    SELECT 'extension recsys', 1, pg_catalog.format('config_dump %s condition=%L', c.cfg::pg_catalog.regclass, c.cond)
      FROM ext, LATERAL unnest(ext.extconfig, ext.extcondition) AS c(cfg, cond)
    -- membership
    UNION ALL
    SELECT m.label, 0, 'extension member' FROM member m
    -- objects in schema recsys that are not members (indexes and toast belong to their table)
    UNION ALL
    SELECT o.type || ' ' || o.identity, 0, 'in schema recsys but NOT an extension member'
      FROM pg_catalog.pg_class c, LATERAL pg_catalog.pg_identify_object('pg_catalog.pg_class'::pg_catalog.regclass, c.oid, 0) o
     WHERE c.relnamespace = 'recsys'::pg_catalog.regnamespace AND c.relkind NOT IN ('i', 'I', 't')
       AND NOT EXISTS (SELECT 1 FROM member m WHERE m.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND m.objid = c.oid)
    UNION ALL
    SELECT o.type || ' ' || o.identity, 0, 'in schema recsys but NOT an extension member'
      FROM pg_catalog.pg_proc p, LATERAL pg_catalog.pg_identify_object('pg_catalog.pg_proc'::pg_catalog.regclass, p.oid, 0) o
     WHERE p.pronamespace = 'recsys'::pg_catalog.regnamespace
       AND NOT EXISTS (SELECT 1 FROM member m WHERE m.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND m.objid = p.oid)
    -- comments on members and on their columns
    UNION ALL
    SELECT o.type || ' ' || o.identity, 1, pg_catalog.format('comment %L', d.description)
      FROM member m JOIN pg_catalog.pg_description d ON d.classoid = m.classid AND d.objoid = m.objid,
           LATERAL pg_catalog.pg_identify_object(d.classoid, d.objoid, d.objsubid) o
    -- schemas
    UNION ALL
    SELECT m.label, 2, pg_catalog.format('owner=%s acl=%s', n.nspowner::pg_catalog.regrole, COALESCE(n.nspacl, pg_catalog.acldefault('n', n.nspowner)))
      FROM member m JOIN pg_catalog.pg_namespace n ON n.oid = m.objid
     WHERE m.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
    -- functions: their properties on one line, then the whole definition line by line
    UNION ALL
    SELECT f.label, 2,
           pg_catalog.format('kind=%s language=%s volatility=%s strict=%s security_definer=%s leakproof=%s parallel=%s '
                             'returns=%s%s config=%s owner=%s acl=%s',
               f.prokind, l.lanname, f.provolatile, f.proisstrict, f.prosecdef, f.proleakproof, f.proparallel,
               CASE WHEN f.proretset THEN 'setof ' ELSE '' END, f.prorettype::pg_catalog.regtype,
               COALESCE(f.proconfig::text, 'none'), f.proowner::pg_catalog.regrole, COALESCE(f.proacl, pg_catalog.acldefault('f', f.proowner)))
      FROM fn f JOIN pg_catalog.pg_language l ON l.oid = f.prolang
    UNION ALL
    SELECT f.label, 100 + d.n, 'def| ' || d.line
      FROM fn f, LATERAL pg_catalog.regexp_split_to_table(pg_catalog.pg_get_functiondef(f.oid), E'\n')
                         WITH ORDINALITY AS d(line, n)
     WHERE f.prokind IN ('f', 'p', 'w')
    -- relations: persistence, options, ownership, privileges
    UNION ALL
    SELECT r.label, 2,
           pg_catalog.format('persistence=%s options=%s rowsecurity=%s/%s replica_identity=%s owner=%s acl=%s',
               r.relpersistence, COALESCE(r.reloptions::text, 'none'), r.relrowsecurity, r.relforcerowsecurity,
               r.relreplident, r.relowner::pg_catalog.regrole, COALESCE(r.relacl, pg_catalog.acldefault(CASE r.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char", r.relowner)))
      FROM rel r
    -- columns by logical position (a dropped column leaves no gap; order
    -- matters to INSERT ... VALUES and SELECT *)
    UNION ALL
    SELECT r.label, 10,
           pg_catalog.format('column %3s %s %s%s%s%s%s%s acl=%s',
               pg_catalog.row_number() OVER (PARTITION BY r.reloid ORDER BY a.attnum),
               pg_catalog.quote_ident(a.attname), pg_catalog.format_type(a.atttypid, a.atttypmod),
               CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END,
               ' DEFAULT ' || pg_catalog.pg_get_expr(ad.adbin, ad.adrelid),
               CASE WHEN a.attidentity <> '' THEN ' IDENTITY ' || a.attidentity::text ELSE '' END,
               CASE WHEN a.attgenerated <> '' THEN ' GENERATED ' || a.attgenerated::text ELSE '' END,
               CASE WHEN a.attcollation <> 0 THEN ' COLLATE ' || a.attcollation::pg_catalog.regcollation::text ELSE '' END,
               COALESCE(a.attacl::text, 'none'))
      FROM rel r JOIN pg_catalog.pg_attribute a ON a.attrelid = r.reloid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    -- constraints, indexes, triggers, rules, policies
    UNION ALL
    SELECT r.label, 20,
           pg_catalog.format('constraint %s %s', pg_catalog.quote_ident(co.conname), pg_catalog.pg_get_constraintdef(co.oid))
      FROM rel r JOIN pg_catalog.pg_constraint co ON co.conrelid = r.reloid
    UNION ALL
    SELECT r.label, 30,
           pg_catalog.format('index %s%s', pg_catalog.pg_get_indexdef(i.indexrelid),
                             CASE WHEN i.indisclustered THEN ' CLUSTERED' ELSE '' END)
      FROM rel r JOIN pg_catalog.pg_index i ON i.indrelid = r.reloid
    UNION ALL
    SELECT r.label, 40, pg_catalog.format('trigger %s enabled=%s', pg_catalog.pg_get_triggerdef(t.oid), t.tgenabled)
      FROM rel r JOIN pg_catalog.pg_trigger t ON t.tgrelid = r.reloid AND NOT t.tgisinternal
    UNION ALL
    SELECT r.label, 50, 'rule ' || pg_catalog.pg_get_ruledef(ru.oid)
      FROM rel r JOIN pg_catalog.pg_rewrite ru ON ru.ev_class = r.reloid AND ru.rulename <> '_RETURN'
    UNION ALL
    SELECT r.label, 60,
           pg_catalog.format('policy %s cmd=%s permissive=%s roles=%s using=%s check=%s', po.polname, po.polcmd,
               po.polpermissive, po.polroles::pg_catalog.regrole[], pg_catalog.pg_get_expr(po.polqual, po.polrelid),
               pg_catalog.pg_get_expr(po.polwithcheck, po.polrelid))
      FROM rel r JOIN pg_catalog.pg_policy po ON po.polrelid = r.reloid
    -- sequences: parameters and owning column, not their current value
    UNION ALL
    SELECT r.label, 70,
           pg_catalog.format('sequence type=%s start=%s increment=%s min=%s max=%s cache=%s cycle=%s',
               s.seqtypid::pg_catalog.regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle)
      FROM rel r JOIN pg_catalog.pg_sequence s ON s.seqrelid = r.reloid
    UNION ALL
    SELECT r.label, 71,
           pg_catalog.format('owned by %s (%s)', pg_catalog.pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid), d.deptype)
      FROM rel r JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                                            AND d.objid = r.reloid AND d.deptype IN ('a', 'i')
                                            AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
     WHERE r.relkind = 'S'
    -- views, line by line
    UNION ALL
    SELECT r.label, 100 + d.n, 'view| ' || d.line
      FROM rel r, LATERAL pg_catalog.regexp_split_to_table(pg_catalog.pg_get_viewdef(r.reloid, true), E'\n')
                          WITH ORDINALITY AS d(line, n)
     WHERE r.relkind IN ('v', 'm')
    -- types the extension owns besides tables' row types
    UNION ALL
    SELECT m.label, 2,
           pg_catalog.format('typtype=%s base=%s owner=%s acl=%s', t.typtype, t.typbasetype::pg_catalog.regtype,
                             t.typowner::pg_catalog.regrole, COALESCE(t.typacl, pg_catalog.acldefault('T', t.typowner)))
      FROM member m JOIN pg_catalog.pg_type t ON t.oid = m.objid
     WHERE m.classid = 'pg_catalog.pg_type'::pg_catalog.regclass
)
SELECT obj || ': ' || fact FROM facts ORDER BY obj COLLATE "C", seq, fact COLLATE "C";
SQL
}

# compare_catalog WHAT DB: DB's catalog must be the fresh install's.
compare_catalog() {
    local what=$1 db=$2
    if ! describe_catalog "$db" >"$WORK/$db.catalog"; then fail "$what: describing the catalog of $db failed"; return 1; fi
    if diff -u --label "fresh install of $DEFAULT (sql/recsys--$DEFAULT.sql)" --label "$what" \
            "$WORK/fresh.catalog" "$WORK/$db.catalog" >"$WORK/$db.diff"; then
        ok "$what: catalog identical to a fresh install ($(wc -l <"$WORK/fresh.catalog") facts)"
        return 0
    fi
    fail "$what: catalog differs from a fresh install; '-' only in the fresh install, '+' only after the update:"
    # The same differences as the last comparison printed are not repeated.
    if [ -n "${LAST_DIFF:-}" ] && diff -q <(tail -n +3 "$LAST_DIFF") <(tail -n +3 "$WORK/$db.diff") >/dev/null; then
        echo "    (the same differences as above)"
    else
        sed 's/^/    /' "$WORK/$db.diff"
    fi
    LAST_DIFF=$WORK/$db.diff
    return 1
}

DEFAULT=$(q postgres "SELECT default_version FROM pg_available_extensions WHERE name = 'recsys'")
[ -n "$DEFAULT" ] || { fail "recsys is not installed on this server"; finish; }
mapfile -t OLDER < <(q postgres "SELECT version FROM pg_available_extension_versions
                                  WHERE name = 'recsys' AND version <> '$DEFAULT' ORDER BY version")
echo "default version $DEFAULT; older versions shipped: ${OLDER[*]:-none}"
# The chain: every shipped version must update to the default one.
for v in "${OLDER[@]}"; do
    path=$(q postgres "SELECT path FROM pg_extension_update_paths('recsys') WHERE source = '$v' AND target = '$DEFAULT'")
    if [ -n "$path" ]; then ok "update path $v -> $DEFAULT: $path"; else fail "no update path from $v to $DEFAULT"; fi
done

##############################################################################
# (a) 1.0 with data, updated

newdb "$DATA_DB" && newdb "$FRESH_DB" && newdb "$PROBE_DB" || { fail "cannot create databases"; finish; }
admin -c "DROP ROLE IF EXISTS $READER"; admin -c "CREATE ROLE $READER"
D=$DATA_DB
if ! psql -qX -v ON_ERROR_STOP=1 -d "$D" >"$WORK/setup.log" 2>&1 <<'SQL'
CREATE EXTENSION recsys VERSION '1.0';
-- w with the edited weights (view 2, like 3; share is not weighted):
--   u1: w(1,10) = 2, w(1,11) = 3;  u2: w(2,10) = w(2,11) = w(2,12) = 2;  u3: w(3,12) = 3, w(3,13) = 2
-- norms^2: 10: 8, 11: 13, 12: 13, 13: 4.  sim(10,11) = 10/sqrt(104) = 0.980581,
-- sim(10,12) = 4/sqrt(104) = 0.392232, sim(11,12) = 4/13 = 0.307692, sim(12,13) = 6/(2 sqrt(13)) = 0.832050.
-- K = 2 keeps 10: [11, 12], 11: [10, 12], 12: [13, 10], 13: [12]: 7 pairs (with K = 50, 12 would also keep 11).
-- Popularity (distinct users): 10: 2, 11: 2, 12: 2, 13: 1.
CREATE TABLE interactions (user_id int, product_id int, event_type text, event_time timestamptz);
INSERT INTO interactions VALUES
    (1, 10, 'view', '2024-03-01 10:00+00'), (1, 11, 'like', '2024-03-02 10:00+00'),
    (2, 10, 'view', '2024-03-01 11:00+00'), (2, 11, 'view', '2024-03-03 11:00+00'), (2, 12, 'view', '2024-03-04 11:00+00'),
    (3, 12, 'like', '2024-03-05 12:00+00'), (3, 13, 'view', '2024-03-06 12:00+00'),
    (3, 13, 'share', '2024-03-06 13:00+00'),       -- event type without a weight: ignored
    (NULL, 10, 'view', '2024-03-06 14:00+00');     -- no user: ignored
CREATE INDEX ON interactions (user_id);
UPDATE recsys.event_weights SET weight = 2 WHERE event_type = 'view';
INSERT INTO recsys.event_weights VALUES ('like', 3);
UPDATE recsys.config SET neighbors = 2, keep_models = 5;
GRANT SELECT ON recsys_models TO recsys_upgrade_reader;
SQL
then fail "setting up 1.0"; cat "$WORK/setup.log"; finish; fi
same "installed version 1.0" "1.0" "$(q "$D" "SELECT extversion FROM pg_extension WHERE extname = 'recsys'")"

same "1.0 trains the hand-checked model (users, items, used, ignored, pairs)" "3|4|7|2|7" \
    "$(q "$D" "SELECT users || '|' || items || '|' || interactions_used || '|' || interactions_ignored || '|' || neighbor_pairs
                FROM recsys_train()")"
OLD_MODEL=$(q "$D" "SELECT model_id FROM recsys_models WHERE active")
# Two evaluations (cutoff 2024-03-03 12:00: u2 is evaluated on item 12).
q "$D" "SELECT recsys_evaluate(k => 1, test_days => 3)" >/dev/null &&
q "$D" "SELECT recsys_evaluate(k => 2, test_days => 3)" >/dev/null || fail "1.0 evaluates"

# What 1.0 serves: rounded to check against the hand computation, and in full
# to compare with what the updated extension serves.
Q_REC="SELECT user_id, product_id, score, rank, source FROM recsys_recommend(ARRAY[1, 2, 3, 9], 3)"
Q_SIM="SELECT i, s.* FROM unnest(ARRAY[10, 11, 12, 13]) i, recsys_similar_items(i, 5) s"
Q_HIST="SELECT u, h.product_id, h.weight, h.last_event AT TIME ZONE 'UTC' FROM unnest(ARRAY[1, 2, 3]) u, recsys_user_history(u, 10) h"
Q_CONF="SELECT (SELECT string_agg(event_type || '=' || weight, ',' ORDER BY event_type) FROM recsys.event_weights)
               || ' ' || source_relation || ',' || neighbors || ',' || keep_models FROM recsys.config"
# The columns 1.0 had (1.1 appends more, NULL for the kept rows).
Q_EVAL="SELECT (e.evaluation_id, e.evaluated_at, e.source_relation, e.k, e.test_days, e.neighbors, e.cutoff,
                e.users_evaluated, e.\"precision\", e.recall, e.ndcg, e.hit_rate, e.map, e.coverage,
                e.pop_precision, e.pop_recall, e.model_items, e.seconds)::text
          FROM recsys.evaluations e ORDER BY evaluation_id"
same "1.0 recommends the hand-computed lists" \
"1|12|1.707541|1|cf
1|13|1.000000|2|popular
2|13|1.664101|1|cf
3|10|1.176697|1|cf
3|11|2.000000|2|popular
9|10|2.000000|1|popular
9|11|2.000000|2|popular
9|12|2.000000|3|popular" \
    "$(q "$D" "SELECT user_id, product_id, round(score::numeric, 6), rank, source FROM ($Q_REC) r")"
same "1.0 keeps the hand-computed neighbours (K = 2)" \
"10|11|0.980581|1
10|12|0.392232|2
11|10|0.980581|1
11|12|0.307692|2
12|13|0.832050|1
12|10|0.392232|2
13|12|0.832050|1" \
    "$(q "$D" "SELECT i, product_id, round(similarity::numeric, 6), rank FROM ($Q_SIM) s")"
same "1.0 user history (the unweighted 'share' does not count)" \
"1|11|3|2024-03-02 10:00:00
1|10|2|2024-03-01 10:00:00
2|12|2|2024-03-04 11:00:00
2|11|2|2024-03-03 11:00:00
2|10|2|2024-03-01 11:00:00
3|13|2|2024-03-06 12:00:00
3|12|3|2024-03-05 12:00:00" "$(q "$D" "$Q_HIST")"
REC0=$(q "$D" "$Q_REC") SIM0=$(q "$D" "$Q_SIM") HIST0=$(q "$D" "$Q_HIST")
CONF0=$(q "$D" "$Q_CONF") EVAL0=$(q "$D" "$Q_EVAL")
same "1.0 recorded two evaluations" 2 "$(q "$D" "SELECT count(*) FROM recsys.evaluations")"

# The update itself.
if psql -qX -v ON_ERROR_STOP=1 -d "$D" -c "ALTER EXTENSION recsys UPDATE" >"$WORK/update.log" 2>&1; then
    ok "ALTER EXTENSION recsys UPDATE on a 1.0 database with a model and evaluations"
else
    fail "ALTER EXTENSION recsys UPDATE"; sed 's/^/    /' "$WORK/update.log"; finish
fi
sed 's/^/    update says: /' "$WORK/update.log"
same "updated to the default version" "$DEFAULT" "$(q "$D" "SELECT extversion FROM pg_extension WHERE extname = 'recsys'")"
same "configuration kept" "$CONF0" "$(q "$D" "$Q_CONF")"
same "evaluations kept" "$EVAL0" "$(q "$D" "$Q_EVAL")"
same "the 1.0 model is still the active one" "$OLD_MODEL" "$(q "$D" "SELECT model_id FROM recsys_models WHERE active")"
same "a grant on recsys_models survives the update" t "$(q "$D" "SELECT has_table_privilege('$READER', 'recsys_models', 'SELECT')")"
same "the 1.0 model's settings are recorded from the configuration, marked as such, unpinned" \
    '{"like": 3, "view": 2, "click": 2, "purchase": 5, "add_to_cart": 3}|2|public.interactions|true|false' \
    "$(q "$D" "SELECT (settings->'weights')::text || '|' || (settings->>'neighbors') || '|' || (settings->>'source') || '|'
                      || (settings->>'recorded_at_upgrade') || '|' || pinned FROM recsys_models WHERE model_id = $OLD_MODEL")"

if grep -qi 'NOTICE:.*retrain' "$WORK/update.log"; then
    # The update said the old model cannot serve: it must fail clearly until a retrain.
    out=$(q "$D" "$Q_REC")
    if [[ "$out" == *ERROR:* && "$out" == *retrain* ]]; then ok "the update asked for a retrain, and serving says so: $out"
    else fail "the update asked for a retrain, but serving gave: $out"; fi
else
    same "the 1.0 model recommends exactly as before" "$REC0" "$(q "$D" "$Q_REC")"
    same "the 1.0 model's neighbours are as before" "$SIM0" "$(q "$D" "$Q_SIM")"
    same "user history is as before" "$HIST0" "$(q "$D" "$Q_HIST")"
fi

# Training after the update: a new, larger id, the same data and settings
# give the same model.
NEW_MODEL=$(q "$D" "SELECT model_id FROM recsys_train()")
if [[ "$NEW_MODEL" =~ ^[0-9]+$ ]] && [ "$NEW_MODEL" -gt "$OLD_MODEL" ]; then
    ok "training after the update: model $NEW_MODEL > $OLD_MODEL"
else fail "training after the update gave: $NEW_MODEL"; fi
same "the new model recommends as the 1.0 one did" "$REC0" "$(q "$D" "$Q_REC")"
same "the new model's neighbours are the 1.0 one's" "$SIM0" "$(q "$D" "$Q_SIM")"
same "the new model records its settings" '{"like": 3, "view": 2, "click": 2, "purchase": 5, "add_to_cart": 3}|2|public.interactions' \
    "$(q "$D" "SELECT (settings->'weights')::text || '|' || (settings->>'neighbors') || '|' || (settings->>'source')
                 FROM recsys_models WHERE active")"
# Rolling back to the 1.0 model.
same "recsys_activate() rolls back to the 1.0 model" "$OLD_MODEL|$NEW_MODEL" \
    "$(q "$D" "SELECT model_id || '|' || previous_model_id FROM recsys_activate($OLD_MODEL)")"
same "the reactivated 1.0 model recommends as before" "$REC0" "$(q "$D" "$Q_REC")"
q "$D" "SELECT recsys_evaluate(k => 2, test_days => 3)" >/dev/null || fail "evaluating after the update"
same "evaluating after the update adds a third evaluation after the kept ones" "3|3" \
    "$(q "$D" "SELECT count(*) || '|' || max(evaluation_id) FROM recsys.evaluations")"

##############################################################################
# (b) the catalog an update leaves is a fresh install's

# The DBA's grant is not the install's: take it back before comparing.
q "$D" "REVOKE SELECT ON recsys_models FROM $READER" >/dev/null

if ! q "$FRESH_DB" "CREATE EXTENSION recsys" >/dev/null || ! describe_catalog "$FRESH_DB" >"$WORK/fresh.catalog"; then
    fail "fresh install of $DEFAULT"; finish
fi
# A description that misses what the extension surely has would compare nothing.
for fact in "function public.recsys_train(integer,pg_catalog.text,pg_catalog.jsonb): def| CREATE OR REPLACE FUNCTION public.recsys_train(" \
            "table recsys.models: column   1 model_id bigint NOT NULL" \
            "view public.recsys_models: view|" \
            "extension recsys: config_dump recsys.config" \
            "table recsys.config: trigger CREATE TRIGGER upsert_on_restore"; do
    grep -qF "$fact" "$WORK/fresh.catalog" || fail "the catalog description lacks \"$fact\"; it is broken"
done
compare_catalog "1.0 with data updated to $DEFAULT" "$D"
for v in "${OLDER[@]}"; do
    db=${PFX}_v${v//[^0-9a-zA-Z]/_}
    newdb "$db" || { fail "cannot create $db"; continue; }
    if q "$db" "CREATE EXTENSION recsys VERSION '$v'" >/dev/null && q "$db" "ALTER EXTENSION recsys UPDATE" >/dev/null; then
        compare_catalog "empty $v updated to $DEFAULT" "$db"
    else fail "installing $v and updating it"; fi
done
# The comparison sees a change as small as one function setting.
q "$PROBE_DB" "CREATE EXTENSION recsys; ALTER FUNCTION recsys.check_weights() SET work_mem = '1MB'" >/dev/null
describe_catalog "$PROBE_DB" >"$WORK/probe.catalog"
probe=$(diff "$WORK/fresh.catalog" "$WORK/probe.catalog" | grep -c '^[<>] function recsys.check_weights()')
[ "$probe" -gt 0 ] && ok "the comparison detects a changed function setting ($probe lines)" \
                   || fail "the comparison missed ALTER FUNCTION recsys.check_weights() SET work_mem"

finish
