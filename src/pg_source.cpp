// pg_source.cpp - finding, querying and reading the events relation (see
// pg_source.hpp for the rules every query here follows).
#include "pg_source.hpp"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_statistic.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/syscache.h"
}

SPIPlanPtr keep_plan(const char* sql, int nargs, Oid* types)
{
    SPIPlanPtr plan = SPI_prepare_cursor(sql, nargs, types, CURSOR_OPT_GENERIC_PLAN);
    if (plan == NULL)
        elog(ERROR, "recsys: SPI_prepare failed for \"%s\": %s", sql, SPI_result_code_string(SPI_result));
    if (SPI_keepplan(plan) != 0)
        elog(ERROR, "recsys: SPI_keepplan failed");
    return plan;
}

// The schema the extension was created in.
static Oid extension_schema(void)
{
    Oid ext = get_extension_oid("recsys", false);
    Relation rel = table_open(ExtensionRelationId, AccessShareLock);
    ScanKeyData key;
    ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(ext));
    SysScanDesc scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
    HeapTuple tup = systable_getnext(scan);
    if (!HeapTupleIsValid(tup))
        elog(ERROR, "recsys: extension %u not found", ext);
    Oid nsp = ((Form_pg_extension) GETSTRUCT(tup))->extnamespace;
    systable_endscan(scan);
    table_close(rel, AccessShareLock);
    return nsp;
}

Oid source_lookup(const char* name, const char* whose)
{
    List* names = stringToQualifiedNameList(name);
    RangeVar* rv = makeRangeVarFromNameList(names);
    if (rv->schemaname == NULL) {
        // An unqualified name means a relation in the extension's schema,
        // never one found through the caller's search_path.
        rv->schemaname = get_namespace_name(extension_schema());
    }
    Oid relid = RangeVarGetRelid(rv, NoLock, true);
    if (!OidIsValid(relid))
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE),
                        errmsg("relation \"%s\", the events relation of %s, does not exist", name, whose),
                        errdetail("It was dropped or renamed after it was configured or trained on."),
                        errhint("Restore or rename it back, or point recsys.config.source_relation at the events "
                                "relation and retrain: SELECT recsys_train();")));
    return relid;
}

void source_open(Oid relid, SourceRel* src)
{
    HeapTuple tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
    if (!HeapTupleIsValid(tup))
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE),
                        errmsg("relation with OID %u does not exist", relid)));
    Form_pg_class cls = (Form_pg_class) GETSTRUCT(tup);
    src->relid = relid;
    src->owner = cls->relowner;
    src->qualified = pstrdup(quote_qualified_identifier(get_namespace_name(cls->relnamespace),
                                                        NameStr(cls->relname)));
    ReleaseSysCache(tup);
    if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
        ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                        errmsg("permission denied for the events relation %s", src->qualified),
                        errdetail("recsys reads it with its owner's rights, for callers that may read it."),
                        errhint("GRANT SELECT ON %s TO %s;", src->qualified,
                                quote_identifier(GetUserNameFromId(GetUserId(), false)))));
}

void source_estimate(const SourceRel* src, double* rows, double* items)
{
    *rows = *items = -1;
    char kind = get_rel_relkind(src->relid);
    if (kind != RELKIND_RELATION && kind != RELKIND_MATVIEW && kind != RELKIND_PARTITIONED_TABLE)
        return;
    HeapTuple tup = SearchSysCache1(RELOID, ObjectIdGetDatum(src->relid));
    if (!HeapTupleIsValid(tup))
        return;
    double reltuples = ((Form_pg_class) GETSTRUCT(tup))->reltuples;
    ReleaseSysCache(tup);
    AttrNumber att = get_attnum(src->relid, "product_id");
    if (reltuples < 0 || att == InvalidAttrNumber)
        return;
    // A partitioned table's statistics are those of the whole hierarchy.
    tup = SearchSysCache3(STATRELATTINH, ObjectIdGetDatum(src->relid), Int16GetDatum(att),
                          BoolGetDatum(kind == RELKIND_PARTITIONED_TABLE));
    if (!HeapTupleIsValid(tup))
        return;
    float4 distinct = ((Form_pg_statistic) GETSTRUCT(tup))->stadistinct;
    ReleaseSysCache(tup);
    if (distinct == 0)
        return;   // unknown
    *rows = reltuples;
    *items = distinct > 0 ? distinct : -distinct * reltuples;
}

void source_weights_from_row(HeapTuple row, TupleDesc desc, int col, const char* whose, SourceWeights* w)
{
    bool isnull;
    char* kind = SPI_getvalue(row, desc, col + 2);
    if (kind == NULL || strcmp(kind, "object") != 0)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("%s has no recorded event weights", whose),
                        errhint("Retrain: SELECT recsys_train();")));
    w->types = SPI_datumTransfer(SPI_getbinval(row, desc, col, &isnull), false, -1);
    w->weights = SPI_datumTransfer(SPI_getbinval(row, desc, col + 1, &isnull), false, -1);
    ArrayType* a = DatumGetArrayTypeP(w->types);
    w->n = ArrayGetNItems(ARR_NDIM(a), ARR_DIMS(a));
}

void source_weights_from_settings(Datum settings, const char* whose, SourceWeights* w)
{
    Oid types[1] = {JSONBOID};
    Datum args[1] = {settings};
    if (SPI_execute_with_args("SELECT " RECSYS_WEIGHTS_SQL("$1"), 1, types, args, NULL, true, 1) != SPI_OK_SELECT ||
        SPI_processed != 1)
        elog(ERROR, "recsys: reading the recorded weights failed");
    source_weights_from_row(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, whose, w);
}

int source_query_nargs(SourceQuery q)
{
    switch (q) {
    case SOURCE_MATRIX:
        return 2;
    case SOURCE_MATRIX_BEFORE:
    case SOURCE_TOUCHES_AFTER:
    case SOURCE_TOUCHES_WINDOW:
    case SOURCE_HISTORY:
        return 3;
    case SOURCE_MAX_TIME:
    case SOURCE_ITEM_COUNT:
        return 2;
    case SOURCE_USER_HISTORY:
        return 4;
    }
    return 2;
}

// The relation joined to its weights, and the condition every usable event
// meets.  Only event types with a weight > 0 are in the parameters.
#define WEIGHTED_FROM(rel, join)                                                            \
    psprintf("FROM %s s " join " ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), "            \
             "pg_catalog.unnest($2::pg_catalog.float8[])) "                                            \
             "AS w(event_type, weight) ON w.event_type OPERATOR(pg_catalog.=) s.event_type::pg_catalog.text", rel)
#define USABLE "s.user_id IS NOT NULL AND s.product_id IS NOT NULL AND s.event_time IS NOT NULL"

char* source_query_sql(const SourceRel* src, SourceQuery q, Oid* argtypes)
{
    argtypes[0] = TEXTARRAYOID;
    argtypes[1] = FLOAT8ARRAYOID;
    const char* rel = src->qualified;
    switch (q) {
    case SOURCE_MATRIX:
    case SOURCE_MATRIX_BEFORE:
        if (q == SOURCE_MATRIX_BEFORE)
            argtypes[2] = TIMESTAMPTZOID;
        // Ignored rows come out as two extra rows with a NULL user, so that
        // one scan also counts them.
        return psprintf(
            "SELECT user_id, product_id, pg_catalog.sum(weight) AS weight, pg_catalog.count(*) AS events FROM ("
            "SELECT CASE WHEN ok THEN uid END AS user_id, "
            "CASE WHEN ok THEN pid WHEN nullkey THEN -1 ELSE -2 END AS product_id, "
            "CASE WHEN ok THEN weight END AS weight FROM ("
            "SELECT s.user_id::pg_catalog.int4 AS uid, s.product_id::pg_catalog.int4 AS pid, w.weight, "
            "(s.user_id IS NULL OR s.product_id IS NULL OR s.event_time IS NULL) AS nullkey, "
            "(" USABLE " AND w.weight IS NOT NULL) AS ok %s%s) r) e "
            "GROUP BY user_id, product_id",
            WEIGHTED_FROM(rel, "LEFT JOIN"),
            q == SOURCE_MATRIX_BEFORE ? " WHERE s.event_time OPERATOR(pg_catalog.<) $3" : "");
    case SOURCE_TOUCHES_AFTER:
        argtypes[2] = TIMESTAMPTZOID;
        return psprintf("SELECT s.user_id::pg_catalog.int4, s.product_id::pg_catalog.int4 %s "
                        "WHERE " USABLE " AND s.event_time OPERATOR(pg_catalog.>=) $3",
                        WEIGHTED_FROM(rel, "JOIN"));
    case SOURCE_TOUCHES_WINDOW:
        argtypes[2] = TIMESTAMPTZARRAYOID;
        return psprintf("SELECT s.user_id::pg_catalog.int4, s.product_id::pg_catalog.int4 %s "
                        "WHERE " USABLE " AND s.event_time OPERATOR(pg_catalog.>=) $3[1] "
                        "AND s.event_time OPERATOR(pg_catalog.<) $3[2]",
                        WEIGHTED_FROM(rel, "JOIN"));
    case SOURCE_MAX_TIME:
        return psprintf("SELECT pg_catalog.max(s.event_time::pg_catalog.timestamptz) %s WHERE " USABLE,
                        WEIGHTED_FROM(rel, "JOIN"));
    case SOURCE_ITEM_COUNT:
        return psprintf("SELECT pg_catalog.count(*) FROM (SELECT s.product_id::pg_catalog.int4 %s WHERE " USABLE
                        " GROUP BY 1) p",
                        WEIGHTED_FROM(rel, "JOIN"));
    case SOURCE_HISTORY:
        argtypes[2] = INT4ARRAYOID;
        return psprintf("SELECT s.user_id::pg_catalog.int4, s.product_id::pg_catalog.int4, "
                        "pg_catalog.sum(w.weight) %s "
                        "WHERE s.user_id OPERATOR(pg_catalog.=) ANY ($3) AND " USABLE " "
                        "GROUP BY 1, 2 ORDER BY 1, 2",
                        WEIGHTED_FROM(rel, "JOIN"));
    case SOURCE_USER_HISTORY:
        argtypes[2] = INT4OID;
        argtypes[3] = INT4OID;
        return psprintf("SELECT s.product_id::pg_catalog.int4, pg_catalog.sum(w.weight), "
                        "pg_catalog.max(s.event_time::pg_catalog.timestamptz) %s "
                        "WHERE s.user_id OPERATOR(pg_catalog.=) $3 AND " USABLE " "
                        "GROUP BY 1 ORDER BY 3 DESC, 1 LIMIT $4",
                        WEIGHTED_FROM(rel, "JOIN"));
    }
    elog(ERROR, "recsys: unknown source query %d", (int) q);
    return NULL;
}

void source_enter(const SourceRel* src, SourceSwitch* sw)
{
    GetUserIdAndSecContext(&sw->save_uid, &sw->save_sec);
    sw->nest = NewGUCNestLevel();
    (void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
                             GUC_ACTION_SAVE, true, 0, false);
    SetUserIdAndSecContext(src->owner, sw->save_sec | SECURITY_LOCAL_USERID_CHANGE |
                                           SECURITY_RESTRICTED_OPERATION);
}

void source_leave(SourceSwitch* sw)
{
    SetUserIdAndSecContext(sw->save_uid, sw->save_sec);
    AtEOXact_GUC(true, sw->nest);
}

void source_execute_plan(const SourceRel* src, SPIPlanPtr plan, Datum* args)
{
    SourceSwitch sw;
    source_enter(src, &sw);
    int rc = SPI_execute_plan(plan, args, NULL, true, 0);
    source_leave(&sw);
    if (rc != SPI_OK_SELECT)
        elog(ERROR, "recsys: reading %s failed: %s", src->qualified, SPI_result_code_string(rc));
}

void source_execute(const SourceRel* src, SourceQuery q, Datum* args, long tcount)
{
    Oid types[4];
    char* sql = source_query_sql(src, q, types);
    SourceSwitch sw;
    source_enter(src, &sw);
    int rc = SPI_execute_with_args(sql, source_query_nargs(q), types, args, NULL, true, tcount);
    source_leave(&sw);
    if (rc != SPI_OK_SELECT)
        elog(ERROR, "recsys: reading %s failed: %s", src->qualified, SPI_result_code_string(rc));
}

SPIPlanPtr source_keep_plan(const SourceRel* src, SourceQuery q)
{
    Oid types[4];
    char* sql = source_query_sql(src, q, types);
    SourceSwitch sw;
    source_enter(src, &sw);
    SPIPlanPtr plan = keep_plan(sql, source_query_nargs(q), types);
    source_leave(&sw);
    return plan;
}
