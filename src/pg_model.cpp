// pg_model.cpp - the active model, kept plans and argument checks shared by
// the serving functions.
#include "pg_model.hpp"
#include "pg_limits.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
}

// Serving reads the model tables with the caller's rights: say which grants
// are missing before a query on them fails with its text in the error.
static void check_reader_grants(void)
{
    Oid nsp = get_namespace_oid("recsys", false);
    Oid user = GetUserId();
    // recsys.config: the recommendable items (issue #8); recsys.neighbors
    // here too, as the neighbour cache may serve a call without reading it.
    Oid tables[4] = {get_relname_relid("active_model", nsp), get_relname_relid("models", nsp),
                     get_relname_relid("config", nsp), get_relname_relid("neighbors", nsp)};
    bool ok = pg_namespace_aclcheck(nsp, user, ACL_USAGE) == ACLCHECK_OK;
    for (int i = 0; ok && i < 4; i++)
        ok = OidIsValid(tables[i]) && pg_class_aclcheck(tables[i], user, ACL_SELECT) == ACLCHECK_OK;
    if (!ok) {
        const char* role = quote_identifier(GetUserNameFromId(user, false));
        ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                        errmsg("permission denied for the recsys model tables"),
                        errdetail("Serving reads the tables of schema recsys with the caller's rights."),
                        errhint("GRANT USAGE ON SCHEMA recsys TO %s; GRANT SELECT ON ALL TABLES IN SCHEMA recsys TO %s; "
                                "(docs/operations.md, Privileges)", role, role)));
    }
}

// True when recsys.models has no settings column: the database still has
// 1.0's SQL objects (ALTER EXTENSION recsys UPDATE not run yet).
static bool legacy_schema(void)
{
    Oid models = get_relname_relid("models", get_namespace_oid("recsys", false));
    return get_attnum(models, "settings") == InvalidAttrNumber;
}

static SPIPlanPtr active_plan = NULL;
static SPIPlanPtr active_rec_plan = NULL;
static SPIPlanPtr weights_plan = NULL;

// The recorded weights and mapping of the last model served, kept for the
// backend's life: a model's settings never change after training and model
// ids are never reused, so the cache is keyed by the id alone.
static int64 cached_model_id = -1;
static SourceWeights cached_weights;
static ModelMapping* cached_map = NULL;

// Copies a string into TopMemoryContext (NULL stays NULL).
static const char* keep_string(const char* s)
{
    return s == NULL ? NULL : MemoryContextStrdup(TopMemoryContext, s);
}

// The mapping recorded in settings, in TopMemoryContext.
static ModelMapping* mapping_from_settings(Datum settings, const char* whose)
{
    SourceRel tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.ucol = "user_id";
    tmp.icol = "product_id";
    tmp.ecol = "event_type";
    tmp.tcol = "event_time";
    tmp.user_type = INT4OID;
    tmp.item_type = INT4OID;
    source_set_mapping(&tmp, settings);
    EventWeights ew;
    source_event_weights(settings, whose, &ew);
    ModelMapping* map = (ModelMapping*) MemoryContextAllocZero(TopMemoryContext, sizeof(ModelMapping));
    map->ucol = keep_string(tmp.ucol);
    map->icol = keep_string(tmp.icol);
    map->ecol = keep_string(tmp.ecol);
    map->tcol = keep_string(tmp.tcol);
    map->vcol = keep_string(tmp.vcol);
    map->user_type = tmp.user_type;
    map->item_type = tmp.item_type;
    map->half_life_days = tmp.half_life_days;
    map->ew.n = ew.n;
    map->ew.types = (char**) MemoryContextAlloc(TopMemoryContext, sizeof(char*) * Max(ew.n, 1));
    map->ew.lens = (int*) MemoryContextAlloc(TopMemoryContext, sizeof(int) * Max(ew.n, 1));
    map->ew.weights = (double*) MemoryContextAlloc(TopMemoryContext, sizeof(double) * Max(ew.n, 1));
    for (int i = 0; i < ew.n; i++) {
        map->ew.types[i] = (char*) keep_string(ew.types[i]);
        map->ew.lens[i] = ew.lens[i];
        map->ew.weights[i] = ew.weights[i];
    }
    return map;
}

static void free_mapping(ModelMapping* map)
{
    for (int i = 0; i < map->ew.n; i++)
        pfree(map->ew.types[i]);
    pfree(map->ew.types);
    pfree(map->ew.lens);
    pfree(map->ew.weights);
    const char* strs[5] = {map->ucol, map->icol, map->ecol, map->tcol, map->vcol};
    for (int i = 0; i < 5; i++)
        if (strs[i] != NULL)
            pfree((void*) strs[i]);
    pfree(map);
}

static char* cached_source = NULL;   // recsys.models.source_relation of cached_model_id

// The value of column `col` in the first row of `rel` (NULL when NULL).
static char* text_of(Relation rel, HeapTuple t, const char* col)
{
    AttrNumber att = get_attnum(RelationGetRelid(rel), col);
    if (att == InvalidAttrNumber)
        return NULL;
    bool isnull;
    Datum d = heap_getattr(t, att, RelationGetDescr(rel), &isnull);
    if (isnull)
        return NULL;
    Oid type = TupleDescAttr(RelationGetDescr(rel), att - 1)->atttypid;
    return type == NAMEOID ? pstrdup(NameStr(*DatumGetName(d))) : TextDatumGetCString(d);
}

// The one row of recsys.active_model and of recsys.config, read in the
// statement's snapshot (the one SPI's read-only queries use) without the
// executor: a call spends most of a statement's cost on these two rows
// otherwise.  False when either table has row security (SPI reads them
// then); the caller's SELECT rights were checked.
static bool read_singletons(Oid nsp, bool* has_model, int64* model_id, char** rec_rel, char** rec_col)
{
    Oid ids[2] = {get_relname_relid("active_model", nsp), get_relname_relid("config", nsp)};
    Relation rels[2];
    for (int i = 0; i < 2; i++)
        rels[i] = table_open(ids[i], AccessShareLock);
    bool ok = !rels[0]->rd_rel->relrowsecurity && !rels[1]->rd_rel->relrowsecurity;
    *has_model = false;
    *rec_rel = NULL;
    *rec_col = NULL;
    for (int i = 0; ok && i < 2; i++) {
        TableScanDesc scan = table_beginscan(rels[i], GetActiveSnapshot(), 0, NULL);
        HeapTuple t = heap_getnext(scan, ForwardScanDirection);
        if (t != NULL && i == 0) {
            bool isnull;
            Datum d = heap_getattr(t, get_attnum(ids[0], "model_id"), RelationGetDescr(rels[0]), &isnull);
            *has_model = !isnull;
            *model_id = isnull ? 0 : DatumGetInt64(d);
        } else if (t != NULL) {
            *rec_rel = text_of(rels[1], t, "recommendable_relation");
            *rec_col = text_of(rels[1], t, "recommendable_column");
        }
        table_endscan(scan);
    }
    for (int i = 0; i < 2; i++)
        table_close(rels[i], AccessShareLock);
    return ok;
}

void active_model_read(ActiveModel* m)
{
    check_reader_grants();
    Oid nsp = get_namespace_oid("recsys", false);
    if (!legacy_schema() && ActiveSnapshotSet()) {
        // The model served last: its settings are cached, two rows say
        // which model and which recommendable items.
        bool has_model;
        int64 id;
        char *rec_rel, *rec_col;
        if (read_singletons(nsp, &has_model, &id, &rec_rel, &rec_col) && has_model && id == cached_model_id &&
            cached_source != NULL) {
            m->model_id = id;
            m->source = pstrdup(cached_source);
            m->rec_relation = rec_rel;
            m->rec_column = rec_col;
            m->weights = cached_weights;
            m->map = cached_map;
            return;
        }
    }
    // The recommendable relation comes in the same query (one statement
    // fewer per call); a database still at 1.0's objects has no such column.
    Oid config = get_relname_relid("config", nsp);
    bool with_rec = get_attnum(config, "recommendable_relation") != InvalidAttrNumber;
    SPIPlanPtr* plan = with_rec ? &active_rec_plan : &active_plan;
    if (*plan == NULL)
        *plan = keep_plan(with_rec ? "SELECT a.model_id, m.source_relation, c.recommendable_relation, "
                                     "c.recommendable_column FROM recsys.active_model a "
                                     "JOIN recsys.models m ON m.model_id OPERATOR(pg_catalog.=) a.model_id "
                                     "LEFT JOIN recsys.config c ON true"
                                   : "SELECT a.model_id, m.source_relation FROM recsys.active_model a "
                                     "JOIN recsys.models m ON m.model_id OPERATOR(pg_catalog.=) a.model_id",
                          0, NULL);
    if (SPI_execute_plan(*plan, NULL, NULL, true, 1) != SPI_OK_SELECT)
        elog(ERROR, "recsys: reading the active model failed");
    if (SPI_processed == 0)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("no recsys model has been trained yet"),
                        errhint("Run SELECT * FROM recsys_train(); first.")));
    bool isnull;
    m->model_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
    m->source = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
    m->rec_relation = with_rec ? SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3) : NULL;
    m->rec_column = with_rec ? SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4) : NULL;
    if (legacy_schema()) {
        // A database still at 1.0 serves with the live weights, as 1.0 did.
        if (SPI_execute("SELECT " RECSYS_WEIGHTS_SQL(RECSYS_LIVE_WEIGHTS) ", " RECSYS_LIVE_WEIGHTS, true, 1) !=
                SPI_OK_SELECT ||
            SPI_processed != 1)
            elog(ERROR, "recsys: reading recsys.event_weights failed");
        source_weights_from_row(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, "recsys.event_weights",
                                &m->weights);
        Datum live = SPI_datumTransfer(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull),
                                       false, -1);
        if (cached_map != NULL)
            free_mapping(cached_map);
        cached_map = mapping_from_settings(live, "recsys.event_weights");
        cached_model_id = -1;
        m->map = cached_map;
        return;
    }
    if (m->model_id != cached_model_id) {
        if (weights_plan == NULL) {
            Oid types[1] = {INT8OID};
            weights_plan = keep_plan("SELECT " RECSYS_WEIGHTS_SQL("m.settings") ", m.settings FROM recsys.models m "
                                     "WHERE m.model_id OPERATOR(pg_catalog.=) $1",
                                     1, types);
        }
        Datum args[1] = {Int64GetDatum(m->model_id)};
        if (SPI_execute_plan(weights_plan, args, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
            elog(ERROR, "recsys: reading the active model's settings failed");
        char whose[64];
        snprintf(whose, sizeof whose, "the active model " INT64_FORMAT, m->model_id);
        SourceWeights w;
        source_weights_from_row(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, whose, &w);
        Datum settings = SPI_datumTransfer(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull),
                                           false, -1);
        ModelMapping* map = mapping_from_settings(settings, whose);
        // Keep copies for the backend's life; free the previous ones.
        if (cached_model_id >= 0) {
            pfree(DatumGetPointer(cached_weights.types));
            pfree(DatumGetPointer(cached_weights.weights));
        }
        if (cached_map != NULL)
            free_mapping(cached_map);
        cached_map = map;
        MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
        cached_weights.types = datumCopy(w.types, false, -1);
        cached_weights.weights = datumCopy(w.weights, false, -1);
        cached_weights.n = w.n;
        if (cached_source != NULL)
            pfree(cached_source);
        cached_source = pstrdup(m->source);
        MemoryContextSwitchTo(old);
        cached_model_id = m->model_id;
    }
    m->weights = cached_weights;
    m->map = cached_map;
}

void active_model_source(const ActiveModel* m, SourceRel* src)
{
    // "the active model <id>", for errors only: formatted without snprintf,
    // as it is on every call.
    char whose[64] = "the active model ";
    pg_lltoa(m->model_id, whose + strlen(whose));
    source_open(source_lookup(m->source, whose), src);
    src->ucol = m->map->ucol;
    src->icol = m->map->icol;
    src->ecol = m->map->ecol;
    src->tcol = m->map->tcol;
    src->vcol = m->map->vcol;
    src->user_type = m->map->user_type;
    src->item_type = m->map->item_type;
    src->half_life_days = m->map->half_life_days;
}

void check_id_and_limit(FunctionCallInfo fcinfo, int id_arg, const char* id_name, int n_arg, const char* n_name)
{
    if (PG_ARGISNULL(id_arg) || PG_ARGISNULL(n_arg))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                        errmsg("%s and %s must not be NULL", id_name, n_name)));
    int n = PG_GETARG_INT32(n_arg);
    if (n < 1 || n > RECSYS_MAX_TOP_N)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("%s must be between 1 and %d, not %d", n_name, RECSYS_MAX_TOP_N, n)));
}
