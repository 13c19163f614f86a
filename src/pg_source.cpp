// pg_source.cpp - finding, querying and reading the events relation (see
// pg_source.hpp for the rules every query here follows).
#include "pg_source.hpp"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
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
#include "lib/stringinfo.h"
#include "utils/float.h"
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
    src->ucol = "user_id";
    src->icol = "product_id";
    src->item_attname = "product_id";
    src->ecol = "event_type";
    src->tcol = "event_time";
    src->vcol = NULL;
    src->user_type = INT4OID;
    src->item_type = INT4OID;
    src->half_life_days = 0;
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
    AttrNumber att = get_attnum(src->relid, src->item_attname);
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
    case SOURCE_HISTORY:
        return 3;
    case SOURCE_MAX_TIME:
    case SOURCE_ITEM_COUNT:
        return 2;
    case SOURCE_USER_HISTORY:
        return 4;
    case SOURCE_EVENTS:
        return 0;
    case SOURCE_EVENTS_OF_USERS:
        return 1;
    }
    return 2;
}

// The query templates name the mapped columns {U}, {I}, {E}, {T} (and {V},
// the value as float8 or NULL); source_query_sql puts in the quoted names.
static char* fill_columns(const SourceRel* src, const char* tmpl)
{
    StringInfoData out;
    initStringInfo(&out);
    for (const char* p = tmpl; *p != '\0'; p++) {
        if (p[0] == '{' && p[1] != '\0' && p[2] == '}') {
            switch (p[1]) {
            case 'U': appendStringInfoString(&out, src->ucol); p += 2; continue;
            case 'I': appendStringInfoString(&out, src->icol); p += 2; continue;
            case 'E': appendStringInfoString(&out, src->ecol); p += 2; continue;
            case 'T': appendStringInfoString(&out, src->tcol); p += 2; continue;
            case 'V':
                if (src->vcol != NULL)
                    appendStringInfo(&out, "s.%s::pg_catalog.float8", src->vcol);
                else
                    appendStringInfoString(&out, "NULL::pg_catalog.float8");
                p += 2;
                continue;
            default:
                break;
            }
        }
        appendStringInfoChar(&out, *p);
    }
    return out.data;
}

// The relation joined to its weights, and the condition every usable event
// meets.  Only event types with a weight > 0 are in the parameters.
#define WEIGHTED_FROM(join)                                                                        \
    "FROM %s s " join " ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), "                          \
    "pg_catalog.unnest($2::pg_catalog.float8[])) "                                                      \
    "AS w(event_type, weight) ON w.event_type OPERATOR(pg_catalog.=) s.{E}::pg_catalog.text"
#define USABLE "s.{U} IS NOT NULL AND s.{I} IS NOT NULL AND s.{T} IS NOT NULL"

char* source_query_sql(const SourceRel* src, SourceQuery q, Oid* argtypes)
{
    argtypes[0] = TEXTARRAYOID;
    argtypes[1] = FLOAT8ARRAYOID;
    const char* rel = src->qualified;
    const char* tmpl = NULL;
    switch (q) {
    case SOURCE_MATRIX:
        // Ignored rows come out as two extra rows with a NULL user, so that
        // one scan also counts them.
        tmpl = "SELECT user_id, product_id, pg_catalog.sum(weight) AS weight, pg_catalog.count(*) AS events FROM ("
               "SELECT CASE WHEN ok THEN uid END AS user_id, "
               "CASE WHEN ok THEN pid WHEN nullkey THEN -1 ELSE -2 END AS product_id, "
               "CASE WHEN ok THEN weight END AS weight FROM ("
               "SELECT s.{U}::pg_catalog.int4 AS uid, s.{I}::pg_catalog.int4 AS pid, w.weight, "
               "(s.{U} IS NULL OR s.{I} IS NULL OR s.{T} IS NULL) AS nullkey, "
               "(" USABLE " AND w.weight IS NOT NULL) AS ok " WEIGHTED_FROM("LEFT JOIN") ") r) e "
               "GROUP BY user_id, product_id";
        break;
    case SOURCE_MAX_TIME:
        // A filter rather than a join, and ORDER BY ... LIMIT 1: an index on
        // a timestamptz time column answers it at once; without one it is a
        // plain scan with a top-1 sort.  ($2 is not used.)
        tmpl = "SELECT s.{T}::pg_catalog.timestamptz FROM %s s WHERE " USABLE
               " AND s.{E}::pg_catalog.text OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[])"
               " AND $2 IS NOT NULL ORDER BY 1 DESC LIMIT 1";
        break;
    case SOURCE_ITEM_COUNT:
        tmpl = "SELECT pg_catalog.count(*) FROM (SELECT s.{I} " WEIGHTED_FROM("JOIN") " WHERE " USABLE
               " GROUP BY 1) p";
        break;
    case SOURCE_HISTORY:
        argtypes[2] = INT4ARRAYOID;
        tmpl = "SELECT s.{U}::pg_catalog.int4, s.{I}::pg_catalog.int4, "
               "pg_catalog.sum(w.weight) " WEIGHTED_FROM("JOIN")
               " WHERE s.{U} OPERATOR(pg_catalog.=) ANY ($3) AND " USABLE " "
               "GROUP BY 1, 2 ORDER BY 1, 2";
        break;
    case SOURCE_USER_HISTORY:
        argtypes[2] = INT4OID;
        argtypes[3] = INT4OID;
        tmpl = "SELECT s.{I}::pg_catalog.int4, pg_catalog.sum(w.weight), "
               "pg_catalog.max(s.{T}::pg_catalog.timestamptz) " WEIGHTED_FROM("JOIN")
               " WHERE s.{U} OPERATOR(pg_catalog.=) $3 AND " USABLE " "
               "GROUP BY 1 ORDER BY 3 DESC, 1 LIMIT $4";
        break;
    case SOURCE_EVENTS:
    case SOURCE_EVENTS_OF_USERS:
        if (q == SOURCE_EVENTS_OF_USERS) {
            argtypes[0] = get_array_type(src->user_type);
            tmpl = "SELECT s.{U}, s.{I}, s.{E}::pg_catalog.text, s.{T}::pg_catalog.timestamptz, {V} FROM %s s "
                   "WHERE s.{U} OPERATOR(pg_catalog.=) ANY ($1)";
        } else {
            tmpl = "SELECT s.{U}, s.{I}, s.{E}::pg_catalog.text, s.{T}::pg_catalog.timestamptz, {V} FROM %s s";
        }
        break;
    }
    if (tmpl == NULL)
        elog(ERROR, "recsys: unknown source query %d", (int) q);
    return psprintf(fill_columns(src, tmpl), rel);
}

char* source_events_sql(const SourceRel* src, int* cols, int* natts)
{
    Oid types[4];
    for (int k = 0; k < 5; k++)
        cols[k] = k;
    *natts = 5;
    char* plain = source_query_sql(src, SOURCE_EVENTS, types);
    char kind = get_rel_relkind(src->relid);
    if (kind != RELKIND_RELATION && kind != RELKIND_MATVIEW && kind != RELKIND_PARTITIONED_TABLE)
        return plain;
    Relation rel = relation_open(src->relid, AccessShareLock);
    TupleDesc desc = RelationGetDescr(rel);
    const char* mapped[5] = {src->ucol, src->icol, src->ecol, src->tcol, src->vcol};
    int found[5] = {-1, -1, -1, -1, -1};
    bool ok = true;
    StringInfoData sql;
    initStringInfo(&sql);
    appendStringInfoString(&sql, "SELECT ");
    for (int a = 0; a < desc->natts && ok; a++) {
        Form_pg_attribute att = TupleDescAttr(desc, a);
        if (att->attisdropped) {
            ok = false;   // no list of the columns matches the tuples: a projection either way
            break;
        }
        const char* name = quote_identifier(NameStr(att->attname));
        for (int k = 0; k < 5; k++)
            if (mapped[k] != NULL && found[k] < 0 && strcmp(mapped[k], name) == 0)
                found[k] = a;
        appendStringInfo(&sql, "%ss.%s", a > 0 ? ", " : "", name);
    }
    for (int k = 0; k < 5 && ok; k++)
        ok = mapped[k] == NULL || found[k] >= 0;
    // The columns SOURCE_EVENTS casts must already have the cast's type
    // (varchar to text is a relabelling: the same bytes).
    if (ok) {
        Oid et = TupleDescAttr(desc, found[2])->atttypid;
        ok = (et == TEXTOID || et == VARCHAROID) && TupleDescAttr(desc, found[3])->atttypid == TIMESTAMPTZOID &&
             (found[4] < 0 || TupleDescAttr(desc, found[4])->atttypid == FLOAT8OID);
    }
    int n = desc->natts;
    relation_close(rel, NoLock);
    if (!ok) {
        pfree(sql.data);
        return plain;
    }
    appendStringInfo(&sql, " FROM %s s", src->qualified);
    for (int k = 0; k < 5; k++)
        cols[k] = found[k];
    *natts = n;
    pfree(plain);
    return sql.data;
}

void source_enter(const SourceRel* src, SourceSwitch* sw)
{
    GetUserIdAndSecContext(&sw->save_uid, &sw->save_sec);
    sw->nest = NewGUCNestLevel();
    (void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
                             GUC_ACTION_SAVE, true, 0, false);
    // A synchronized scan of a large table starts where another scan of it
    // is (or stopped), so the rows would come in an order that depends on
    // other sessions; where a read's result depends on the rows' order (the
    // users numbered by parts when the aggregation outgrows its budget, and
    // with them the sums' order and the bootstrap's draws), the same table
    // must give the same model and the same metrics.
    (void) set_config_option("synchronize_seqscans", "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0,
                             false);
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

// The served type named in settings ('integer', 'bigint', 'text', 'uuid').
static Oid served_type(const char* name, Oid dflt)
{
    if (name == NULL)
        return dflt;
    if (strcmp(name, "integer") == 0)
        return INT4OID;
    if (strcmp(name, "bigint") == 0)
        return INT8OID;
    if (strcmp(name, "text") == 0)
        return TEXTOID;
    if (strcmp(name, "uuid") == 0)
        return UUIDOID;
    ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED), errmsg("recsys: unknown id type \"%s\" in a model's settings", name)));
    return dflt;
}

void source_set_mapping(SourceRel* src, Datum settings)
{
    Oid types[1] = {JSONBOID};
    Datum args[1] = {settings};
    if (SPI_execute_with_args("SELECT $1 OPERATOR(pg_catalog.->>) 'user_column', $1 OPERATOR(pg_catalog.->>) 'item_column', "
                              "$1 OPERATOR(pg_catalog.->>) 'event_column', $1 OPERATOR(pg_catalog.->>) 'time_column', "
                              "$1 OPERATOR(pg_catalog.->>) 'value_column', $1 OPERATOR(pg_catalog.->>) 'user_type', "
                              "$1 OPERATOR(pg_catalog.->>) 'item_type', "
                              "($1 OPERATOR(pg_catalog.->>) 'half_life_days')::pg_catalog.float8",
                              1, types, args, NULL, true, 1) != SPI_OK_SELECT ||
        SPI_processed != 1)
        elog(ERROR, "recsys: reading the recorded mapping failed");
    HeapTuple row = SPI_tuptable->vals[0];
    TupleDesc desc = SPI_tuptable->tupdesc;
    const char** cols[5] = {&src->ucol, &src->icol, &src->ecol, &src->tcol, &src->vcol};
    for (int i = 0; i < 5; i++) {
        char* v = SPI_getvalue(row, desc, i + 1);
        if (v != NULL && i == 1)
            src->item_attname = v;
        if (v != NULL)
            *cols[i] = quote_identifier(v);
        else if (i == 4)
            *cols[i] = NULL;
    }
    src->user_type = served_type(SPI_getvalue(row, desc, 6), INT4OID);
    src->item_type = served_type(SPI_getvalue(row, desc, 7), INT4OID);
    bool isnull;
    Datum hl = SPI_getbinval(row, desc, 8, &isnull);
    src->half_life_days = isnull ? 0 : DatumGetFloat8(hl);
}

void source_event_weights(Datum settings, const char* whose, EventWeights* w)
{
    Oid types[1] = {JSONBOID};
    Datum args[1] = {settings};
    if (SPI_execute_with_args("SELECT e.key, e.value::pg_catalog.float8 FROM pg_catalog.jsonb_each("
                              "$1 OPERATOR(pg_catalog.->) 'weights') e "
                              "WHERE pg_catalog.jsonb_typeof(e.value) OPERATOR(pg_catalog.=) 'number' ORDER BY e.key",
                              1, types, args, NULL, true, 0) != SPI_OK_SELECT)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("%s has no recorded event weights", whose),
                        errhint("Retrain: SELECT recsys_train();")));
    int n = (int) SPI_processed;
    w->n = n;
    w->types = (char**) SPI_palloc(sizeof(char*) * Max(n, 1));
    w->lens = (int*) SPI_palloc(sizeof(int) * Max(n, 1));
    w->weights = (double*) SPI_palloc(sizeof(double) * Max(n, 1));
    for (int i = 0; i < n; i++) {
        bool isnull;
        char* t = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
        w->lens[i] = (int) strlen(t);
        w->types[i] = (char*) SPI_palloc(w->lens[i] + 1);
        memcpy(w->types[i], t, w->lens[i] + 1);
        w->weights[i] = DatumGetFloat8(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
    }
}

double event_weight(const EventWeights* w, const char* type, int len)
{
    for (int i = 0; i < w->n; i++)
        if (w->lens[i] == len && memcmp(w->types[i], type, len) == 0)
            return w->weights[i];
    return get_float8_nan();
}

void check_aggregating_mapping(const SourceRel* src, Datum settings, const char* fn)
{
    EventWeights ew;
    source_event_weights(settings, "the settings", &ew);
    const char* why = NULL;
    if (src->user_type != INT4OID || src->item_type != INT4OID)
        why = "ids that are not integers";
    else if (src->vcol != NULL)
        why = "a value column";
    else if (src->half_life_days > 0)
        why = "a half-life";
    for (int i = 0; why == NULL && i < ew.n; i++)
        if (ew.weights[i] < 0)
            why = "negative event weights";
    if (why != NULL)
        ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                        errmsg("%s does not support a source mapped with %s yet", fn, why),
                        errhint("Training and serving do; %s works on integer ids without values, decay or "
                                "negative weights.", fn)));
}

void source_weights_positive(const EventWeights* ew, SourceWeights* w)
{
    Datum* types = (Datum*) palloc(sizeof(Datum) * Max(ew->n, 1));
    Datum* weights = (Datum*) palloc(sizeof(Datum) * Max(ew->n, 1));
    int n = 0;
    for (int i = 0; i < ew->n; i++)
        if (ew->weights[i] > 0) {
            types[n] = PointerGetDatum(cstring_to_text_with_len(ew->types[i], ew->lens[i]));
            weights[n] = Float8GetDatum(ew->weights[i]);
            n++;
        }
    w->types = PointerGetDatum(construct_array(types, n, TEXTOID, -1, false, TYPALIGN_INT));
    w->weights = PointerGetDatum(construct_array(weights, n, FLOAT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
    w->n = n;
}
