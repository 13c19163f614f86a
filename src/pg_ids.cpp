// pg_ids.cpp - ids in the source's own types at the serving functions (see
// pg_ids.hpp).
#include <cmath>

#include "pg_ids.hpp"

extern "C" {
#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/params.h"
#include "tcop/dest.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"
}

int id_key_cmp(const IdKey* a, const IdKey* b)
{
    if (a->p == NULL || b->p == NULL)
        return a->i < b->i ? -1 : (a->i > b->i ? 1 : 0);
    int c = memcmp(a->p, b->p, Min(a->n, b->n));
    if (c != 0)
        return c;
    return a->n < b->n ? -1 : (a->n > b->n ? 1 : 0);
}

IdKey id_key_of(Datum v, Oid type)
{
    IdKey k;
    k.i = 0;
    k.p = NULL;
    k.n = 0;
    switch (type) {
    case INT2OID:
        k.i = DatumGetInt16(v);
        break;
    case INT4OID:
        k.i = DatumGetInt32(v);
        break;
    case INT8OID:
        k.i = DatumGetInt64(v);
        break;
    case UUIDOID:
        k.p = (const char*) DatumGetUUIDP(v)->data;
        k.n = UUID_LEN;
        break;
    default: {
        text* t = DatumGetTextPP(v);
        k.p = VARDATA_ANY(t);
        k.n = (int) VARSIZE_ANY_EXHDR(t);
        break;
    }
    }
    return k;
}

Datum id_datum_as(Datum v, Oid coltype, Oid served, bool* ok)
{
    *ok = true;
    if (served == INT4OID || served == INT8OID) {
        int64 i = id_key_of(v, coltype).i;
        if (served == INT8OID)
            return Int64GetDatum(i);
        if (i < PG_INT32_MIN || i > PG_INT32_MAX) {
            *ok = false;
            return Int32GetDatum(0);
        }
        return Int32GetDatum((int32) i);
    }
    return v;   // text (varchar is binary compatible) or uuid
}

char* id_key_text(Datum v, Oid coltype)
{
    switch (coltype) {
    case INT2OID:
    case INT4OID:
    case INT8OID:
        return psprintf(INT64_FORMAT, id_key_of(v, coltype).i);
    case UUIDOID:
        return DatumGetCString(DirectFunctionCall1(uuid_out, v));
    default:
        return TextDatumGetCString(v);
    }
}

static const char* type_name(Oid t)
{
    return format_type_be(t);
}

void check_model_types(const ActiveModel* m, Oid user_type, Oid item_type, const char* fn)
{
    if ((user_type != InvalidOid && user_type != m->map->user_type) ||
        (item_type != InvalidOid && item_type != m->map->item_type))
        ereport(ERROR, (errcode(ERRCODE_DATATYPE_MISMATCH),
                        errmsg("the active model " INT64_FORMAT " has %s user ids and %s item ids, but %s is "
                               "declared with %s and %s",
                               m->model_id, type_name(m->map->user_type), type_name(m->map->item_type), fn,
                               user_type != InvalidOid ? type_name(user_type) : "-",
                               item_type != InvalidOid ? type_name(item_type) : "-"),
                        errdetail("recsys_set_source() changed the id types after the model was trained."),
                        errhint("Retrain on the new source: SELECT * FROM recsys_train();")));
}

static SPIPlanPtr key_to_index_plan = NULL;
static SPIPlanPtr index_to_key_plan = NULL;

// Orders (text key, position) pairs by key.
struct KeyPos {
    const char* key;
    int pos;
};
static int cmp_keypos(const void* a, const void* b)
{
    return strcmp(((const KeyPos*) a)->key, ((const KeyPos*) b)->key);
}

void item_indices(int64 model_id, char** keys, int n, int32* out)
{
    for (int i = 0; i < n; i++)
        out[i] = -1;
    if (n == 0)
        return;
    if (key_to_index_plan == NULL) {
        Oid types[2] = {INT8OID, TEXTARRAYOID};
        key_to_index_plan = keep_plan("SELECT k.item_key, k.item_id FROM recsys.item_keys k "
                                      "WHERE k.model_id OPERATOR(pg_catalog.=) $1 "
                                      "AND k.item_key OPERATOR(pg_catalog.=) ANY ($2)",
                                      2, types);
    }
    Datum* d = (Datum*) palloc(sizeof(Datum) * n);
    for (int i = 0; i < n; i++)
        d[i] = CStringGetTextDatum(keys[i]);
    Datum args[2] = {Int64GetDatum(model_id),
                     PointerGetDatum(construct_array(d, n, TEXTOID, -1, false, TYPALIGN_INT))};
    if (SPI_execute_plan(key_to_index_plan, args, NULL, true, 0) != SPI_OK_SELECT)
        elog(ERROR, "recsys: reading the item keys failed");
    KeyPos* sorted = (KeyPos*) palloc(sizeof(KeyPos) * n);
    for (int i = 0; i < n; i++) {
        sorted[i].key = keys[i];
        sorted[i].pos = i;
    }
    qsort(sorted, n, sizeof(KeyPos), cmp_keypos);
    for (uint64 r = 0; r < SPI_processed; r++) {
        bool isnull;
        KeyPos probe;
        probe.key = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);
        int32 id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &isnull));
        KeyPos* hit = (KeyPos*) bsearch(&probe, sorted, n, sizeof(KeyPos), cmp_keypos);
        if (hit == NULL)
            continue;
        // Equal keys lie next to each other: give every one the index.
        KeyPos* lo = hit;
        while (lo > sorted && strcmp(lo[-1].key, probe.key) == 0)
            lo--;
        for (KeyPos* k = lo; k < sorted + n && strcmp(k->key, probe.key) == 0; k++)
            out[k->pos] = id;
    }
}

// Orders (index, position) pairs by index.
struct IdxPos {
    int32 idx;
    int pos;
};
static int cmp_idxpos(const void* a, const void* b)
{
    int32 x = ((const IdxPos*) a)->idx, y = ((const IdxPos*) b)->idx;
    return x < y ? -1 : (x > y ? 1 : 0);
}

void item_ids_of(int64 model_id, Oid item_type, const int32* idx, int n, Datum* out)
{
    if (item_type == INT4OID) {
        for (int i = 0; i < n; i++)
            out[i] = Int32GetDatum(idx[i]);
        return;
    }
    if (n == 0)
        return;
    if (index_to_key_plan == NULL) {
        Oid types[2] = {INT8OID, INT4ARRAYOID};
        index_to_key_plan = keep_plan("SELECT k.item_id, k.item_key FROM recsys.item_keys k "
                                      "WHERE k.model_id OPERATOR(pg_catalog.=) $1 "
                                      "AND k.item_id OPERATOR(pg_catalog.=) ANY ($2)",
                                      2, types);
    }
    Datum* d = (Datum*) palloc(sizeof(Datum) * n);
    IdxPos* sorted = (IdxPos*) palloc(sizeof(IdxPos) * n);
    bool* found = (bool*) palloc0(sizeof(bool) * n);
    for (int i = 0; i < n; i++) {
        d[i] = Int32GetDatum(idx[i]);
        sorted[i].idx = idx[i];
        sorted[i].pos = i;
    }
    qsort(sorted, n, sizeof(IdxPos), cmp_idxpos);
    Datum args[2] = {Int64GetDatum(model_id), PointerGetDatum(construct_array(d, n, INT4OID, 4, true, TYPALIGN_INT))};
    if (SPI_execute_plan(index_to_key_plan, args, NULL, true, 0) != SPI_OK_SELECT)
        elog(ERROR, "recsys: reading the item keys failed");
    Oid input;
    Oid ioparam;
    getTypeInputInfo(item_type, &input, &ioparam);
    for (uint64 r = 0; r < SPI_processed; r++) {
        bool isnull;
        IdxPos probe;
        probe.idx = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull));
        char* key = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2);
        Datum v = OidInputFunctionCall(input, key, ioparam, -1);
        IdxPos* hit = (IdxPos*) bsearch(&probe, sorted, n, sizeof(IdxPos), cmp_idxpos);
        if (hit == NULL)
            continue;
        IdxPos* lo = hit;
        while (lo > sorted && lo[-1].idx == probe.idx)
            lo--;
        for (IdxPos* k = lo; k < sorted + n && k->idx == probe.idx; k++) {
            out[k->pos] = v;
            found[k->pos] = true;
        }
    }
    for (int i = 0; i < n; i++)
        if (!found[i])
            ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
                            errmsg("recsys: item %d of model " INT64_FORMAT " has no key in recsys.item_keys", idx[i],
                                   model_id),
                            errhint("Retrain with SELECT * FROM recsys_train();")));
}

// Kept plans of the users' events query, per model (its mapping) and relation.
static SPIPlanPtr events_plan = NULL;
static int64 events_model = -1;
static Oid events_relid = InvalidOid;
static char* events_rel = NULL;

static int cmp_user_key(const IdKey* keys, int n, const IdKey* k)
{
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        int c = id_key_cmp(&keys[mid], k);
        if (c == 0)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

// Takes the events query's rows as the executor makes them, without a copy
// of each row into an SPI tuple table: the fields are read from the slot,
// the item id kept (copied when passed by reference).
struct EventsReceiver {
    DestReceiver pub;   // first: the executor sees a DestReceiver
    const ActiveModel* m;
    const IdKey* keys;
    int n_keys;
    MemoryContext cxt;   // where the events go (the caller's)
    Oid ucol, icol;      // the columns' base types
    int16 ilen;
    bool ibyval;
    bool items_are_ints;
    double half_life_us;
    TimestampTz now;
    UserEvent* ev;
    char** item_keys;
    int n_ev, cap;
};

static void events_startup(DestReceiver* self, int operation, TupleDesc desc)
{
    EventsReceiver* r = (EventsReceiver*) self;
    r->ucol = getBaseType(TupleDescAttr(desc, 0)->atttypid);
    r->icol = getBaseType(TupleDescAttr(desc, 1)->atttypid);
    get_typlenbyval(r->icol, &r->ilen, &r->ibyval);
}

static bool events_receive(TupleTableSlot* slot, DestReceiver* self)
{
    EventsReceiver* r = (EventsReceiver*) self;
    slot_getallattrs(slot);
    const Datum* d = slot->tts_values;
    const bool* isnull = slot->tts_isnull;
    if (isnull[0] || isnull[1] || isnull[3])
        return true;   // not usable, as in training
    IdKey uk = id_key_of(d[0], r->ucol);
    // The query compares in the column's type; find the requested id.
    int pos = cmp_user_key(r->keys, r->n_keys, &uk);
    if (pos < 0)
        return true;
    MemoryContext old = MemoryContextSwitchTo(r->cxt);
    if (r->n_ev == r->cap) {
        r->cap *= 2;
        r->ev = (UserEvent*) repalloc(r->ev, sizeof(UserEvent) * r->cap);
        if (r->item_keys != NULL)
            r->item_keys = (char**) repalloc(r->item_keys, sizeof(char*) * r->cap);
    }
    UserEvent* x = &r->ev[r->n_ev];
    x->user = pos;
    x->time = DatumGetTimestampTz(d[3]);
    x->item_datum = r->ibyval ? d[1] : datumCopy(d[1], false, r->ilen);
    x->weighted = false;
    x->w = 0;
    if (!isnull[2]) {
        text* et = DatumGetTextPP(d[2]);
        double wt = event_weight(&r->m->map->ew, VARDATA_ANY(et), (int) VARSIZE_ANY_EXHDR(et));
        if (!std::isnan(wt) && wt != 0) {
            x->weighted = true;
            x->w = wt * (isnull[4] ? 1.0 : DatumGetFloat8(d[4]));
            if (r->half_life_us > 0)
                x->w *= std::exp2(-(double) (r->now - x->time) / r->half_life_us);
        }
    }
    if (r->items_are_ints) {
        bool fits;
        Datum v = id_datum_as(d[1], r->icol, INT4OID, &fits);
        x->item = fits ? DatumGetInt32(v) : 0;
        x->known = fits;
    } else {
        r->item_keys[r->n_ev] = id_key_text(d[1], r->icol);
        x->item = -1;
        x->known = false;
    }
    r->n_ev++;
    MemoryContextSwitchTo(old);
    return true;
}

static void events_shutdown(DestReceiver* self) {}
static void events_destroy(DestReceiver* self) {}

UserEvent* read_user_events(const ActiveModel* m, const SourceRel* src, const Datum* users, const IdKey* keys,
                            int n, int* n_out, Oid* item_coltype)
{
    if (events_plan == NULL || events_model != m->model_id || events_relid != src->relid ||
        strcmp(events_rel, src->qualified) != 0) {
        if (events_plan != NULL)
            SPI_freeplan(events_plan);
        events_plan = NULL;
        events_plan = source_keep_plan(src, SOURCE_EVENTS_OF_USERS);
        if (events_rel != NULL)
            pfree(events_rel);
        events_rel = MemoryContextStrdup(TopMemoryContext, src->qualified);
        events_relid = src->relid;
        events_model = m->model_id;
    }
    Datum* arr = (Datum*) palloc(sizeof(Datum) * Max(n, 1));
    for (int i = 0; i < n; i++)
        arr[i] = users[i];
    int16 typlen;
    bool typbyval;
    char typalign;
    get_typlenbyvalalign(src->user_type, &typlen, &typbyval, &typalign);
    ParamListInfo params = makeParamList(1);
    params->params[0].value = PointerGetDatum(construct_array(arr, n, src->user_type, typlen, typbyval, typalign));
    params->params[0].isnull = false;
    params->params[0].pflags = PARAM_FLAG_CONST;
    params->params[0].ptype = get_array_type(src->user_type);

    EventsReceiver r;
    memset(&r, 0, sizeof r);
    r.pub.receiveSlot = events_receive;
    r.pub.rStartup = events_startup;
    r.pub.rShutdown = events_shutdown;
    r.pub.rDestroy = events_destroy;
    r.pub.mydest = DestTuplestore;   // any but DestNone (no result) and DestSPI (a tuple table)
    r.m = m;
    r.keys = keys;
    r.n_keys = n;
    r.cxt = CurrentMemoryContext;
    r.items_are_ints = m->map->item_type == INT4OID;
    r.half_life_us = m->map->half_life_days * 86400.0 * 1e6;
    r.now = GetCurrentTransactionStartTimestamp();
    r.cap = Max(8 * n, 16);
    r.ev = (UserEvent*) palloc(sizeof(UserEvent) * r.cap);
    r.item_keys = r.items_are_ints ? NULL : (char**) palloc(sizeof(char*) * r.cap);
    SPIExecuteOptions opt;
    memset(&opt, 0, sizeof opt);
    opt.params = params;
    opt.read_only = true;
    opt.dest = &r.pub;
    SourceSwitch sw;
    source_enter(src, &sw);
    int rc = SPI_execute_plan_extended(events_plan, &opt);
    source_leave(&sw);
    if (rc != SPI_OK_SELECT)
        elog(ERROR, "recsys: reading %s failed: %s", src->qualified, SPI_result_code_string(rc));
    *item_coltype = r.icol;
    UserEvent* ev = r.ev;
    int n_ev = r.n_ev;
    bool items_are_ints = r.items_are_ints;
    char** item_keys = r.item_keys;
    if (!items_are_ints) {
        int32* idx = (int32*) palloc(sizeof(int32) * Max(n_ev, 1));
        item_indices(m->model_id, item_keys, n_ev, idx);
        for (int i = 0; i < n_ev; i++) {
            ev[i].item = idx[i];
            ev[i].known = idx[i] >= 0;
        }
    }
    *n_out = n_ev;
    return ev;
}
