// pg_read.cpp - training's reading path: SOURCE_EVENTS streamed into the
// core's dictionaries and cell aggregation (see pg_read.hpp).
#include <algorithm>
#include <cmath>

#include "core_source.hpp"
#include "pg_ids.hpp"
#include "pg_progress.hpp"
#include "pg_read.hpp"

extern "C" {
#include "access/tupdesc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"
}

// A DestReceiver that feeds the rows of one pass to the core.
struct EventReceiver {
    DestReceiver pub;
    const EventWeights* w;
    Oid ubase, ibase;       // the key columns' (base) types
    bool ubytes, ibytes;    // keys as bytes (text, varchar, uuid) or integers
    bool item_identity;     // integer items: the id is the index
    Oid user_type, item_type;   // the mapping's served types
    recsys::UserPart part;  // the users this pass keeps
    OwnedByContext<recsys::KeyDict>* users;
    OwnedByContext<recsys::KeyDict>* items;
    OwnedByContext<recsys::CellAggregator>* agg;
    Size limit;             // bytes for the dictionaries and the aggregation
    MemoryContext rowcxt;   // detoasted keys, reset every row
    bool overflow;          // the pass stopped: over the limit
    int64 events, ignored_null, ignored_type;
    TimestampTz newest;
    bool any;
    // Evaluation (split != NULL): the events at or after the cutoff are the
    // part's touches, in part-local user indices.
    EventsSplit* split;
    recsys::Touch* touches;
    int64 n_touches, touch_cap;
    MemoryContext cxt;      // where the touches grow
};

// A key column's value as the core takes it.  Byte keys may be detoasted
// into the current memory context.
static recsys::KeyRef key_of(Datum v, Oid type)
{
    IdKey id = id_key_of(v, type);   // pg_ids.hpp
    recsys::KeyRef k;
    k.i = id.i;
    k.p = id.p;
    k.n = (size_t) id.n;
    return k;
}

// The type the serving functions use for a column's base type.
static Oid served_id_type(Oid t)
{
    switch (t) {
    case INT2OID:
    case INT4OID:
        return INT4OID;
    case VARCHAROID:
        return TEXTOID;
    default:
        return t;
    }
}

// A key of an integer column served as integer must fit it (22003).
static void check_fits_integer(int64 k, const char* what)
{
    if (k < PG_INT32_MIN || k > PG_INT32_MAX)
        ereport(ERROR, (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
                        errmsg("%s id " INT64_FORMAT " does not fit integer, the type the serving functions take",
                               what, k),
                        errhint("Map the source with recsys_set_source(...): its bigint columns get bigint "
                                "serving functions.")));
}

// Whether a column of base type col can feed ids served as `served`.
static bool compatible_id_type(Oid col, Oid served)
{
    Oid t = served_id_type(col);
    return t == served || ((t == INT4OID || t == INT8OID) && (served == INT4OID || served == INT8OID));
}

static bool receive_event(TupleTableSlot* slot, DestReceiver* self)
{
    EventReceiver* r = (EventReceiver*) self;
    slot_getallattrs(slot);
    Datum* v = slot->tts_values;
    bool* null = slot->tts_isnull;
    progress_add_rows(1);
    if (null[0] || null[1] || null[3]) {
        r->ignored_null++;
        return true;
    }
    if (null[2]) {
        r->ignored_type++;
        return true;
    }
    MemoryContext old = MemoryContextSwitchTo(r->rowcxt);
    text* et = DatumGetTextPP(v[2]);
    double wt = event_weight(r->w, VARDATA_ANY(et), (int) VARSIZE_ANY_EXHDR(et));
    if (std::isnan(wt) || wt == 0) {
        MemoryContextSwitchTo(old);
        MemoryContextReset(r->rowcxt);
        r->ignored_type++;
        return true;
    }
    TimestampTz t = DatumGetTimestampTz(v[3]);
    if (r->split != NULL && t >= r->split->end) {
        // After the window: not read.
        MemoryContextSwitchTo(old);
        MemoryContextReset(r->rowcxt);
        return true;
    }
    bool touch = r->split != NULL && t >= r->split->cutoff;
    if (!touch) {
        if (!r->any || t > r->newest)
            r->newest = t;
        r->any = true;
    }
    double wv = wt * (null[4] ? 1.0 : DatumGetFloat8(v[4]));
    if (touch && !(wv > 0)) {
        // Not a test touch (a refund, a dislike), and not before the cutoff.
        MemoryContextSwitchTo(old);
        MemoryContextReset(r->rowcxt);
        return true;
    }
    recsys::KeyRef uk = key_of(v[0], r->ubase);
    recsys::KeyRef ik = key_of(v[1], r->ibase);
    if (r->user_type == INT4OID)
        check_fits_integer(uk.i, "user");
    if (r->item_type == INT4OID)
        check_fits_integer(ik.i, "item");
    int32 identity = r->item_identity ? (int32) ik.i : 0;
    int32 touched_user = -1, touched_item = 0;
    bool mine = false, added = true;
    size_t bytes = 0;
    core_call_or_error("reading the events", [&] {
        mine = r->part.keeps(recsys::key_hash(uk, r->ubytes));
        if (!mine)
            return;
        int32_t u = r->users->obj->add(uk);
        int32_t i = r->item_identity ? identity : r->items->obj->add(ik);
        if (touch) {
            touched_user = u;
            touched_item = i;
        } else {
            added = r->agg->obj->add(u, i, wv, t);
        }
        bytes = r->users->obj->memory_bytes() + r->agg->obj->memory_bytes() +
                (r->items->obj != nullptr ? r->items->obj->memory_bytes() : 0);
    });
    MemoryContextSwitchTo(old);
    MemoryContextReset(r->rowcxt);
    if (!mine)
        return true;
    if (!added || bytes > r->limit) {
        r->overflow = true;
        return false;   // stops the executor: this part is read again in halves
    }
    if (touched_user >= 0) {
        MemoryContext prev = MemoryContextSwitchTo(r->cxt);
        r->touches = (recsys::Touch*) grow_array(r->touches, &r->touch_cap, r->n_touches + 1, sizeof(recsys::Touch));
        MemoryContextSwitchTo(prev);
        r->touches[r->n_touches].user = touched_user;
        r->touches[r->n_touches].item = touched_item;
        r->n_touches++;
    }
    r->events++;
    return true;
}

static void event_receiver_startup(DestReceiver* self, int operation, TupleDesc desc)
{
    EventReceiver* r = (EventReceiver*) self;
    if (desc->natts != 5)
        elog(ERROR, "recsys: the events query returned %d columns, not 5", desc->natts);
    r->ubase = getBaseType(TupleDescAttr(desc, 0)->atttypid);
    r->ibase = getBaseType(TupleDescAttr(desc, 1)->atttypid);
    static const Oid ok[6] = {INT2OID, INT4OID, INT8OID, TEXTOID, VARCHAROID, UUIDOID};
    bool uok = false, iok = false;
    for (int i = 0; i < 6; i++) {
        uok |= r->ubase == ok[i];
        iok |= r->ibase == ok[i];
    }
    if (!uok || !iok)
        ereport(ERROR, (errcode(ERRCODE_DATATYPE_MISMATCH),
                        errmsg("recsys: the mapped user or item column has type %s / %s, which recsys cannot use",
                               format_type_be(r->ubase), format_type_be(r->ibase)),
                        errhint("Map it again: SELECT recsys_set_source(...);")));
    r->ubytes = r->ubase == TEXTOID || r->ubase == VARCHAROID || r->ubase == UUIDOID;
    r->ibytes = r->ibase == TEXTOID || r->ibase == VARCHAROID || r->ibase == UUIDOID;
    if (!compatible_id_type(r->ubase, r->user_type) || !compatible_id_type(r->ibase, r->item_type))
        ereport(ERROR, (errcode(ERRCODE_DATATYPE_MISMATCH),
                        errmsg("recsys: the user and item columns now have types %s and %s, not the ones they "
                               "were mapped with", format_type_be(r->ubase), format_type_be(r->ibase)),
                        errhint("Map the source again: SELECT recsys_set_source(...);")));
}

static void event_receiver_noop(DestReceiver* self) {}

// One scan of src into r.
static void scan_events(const SourceRel* src, const char* sql, EventReceiver* r)
{
    r->pub.receiveSlot = receive_event;
    r->pub.rStartup = event_receiver_startup;
    r->pub.rShutdown = event_receiver_noop;
    r->pub.rDestroy = event_receiver_noop;
    r->pub.mydest = DestTuplestore;   // not DestNone: SPI would report SPI_OK_UTILITY
    SPIExecuteOptions opt;
    memset(&opt, 0, sizeof opt);
    opt.read_only = true;
    opt.dest = &r->pub;
    SourceSwitch sw;
    source_enter(src, &sw);
    int rc = SPI_execute_extended(sql, &opt);
    source_leave(&sw);
    if (rc != SPI_OK_SELECT)
        elog(ERROR, "recsys: reading %s failed: %s", src->qualified, SPI_result_code_string(rc));
}

// The distinct users of t[0..n), ascending, in a palloc'd array, each plus
// `base`.
static int32* touched_users(const recsys::Touch* t, int64 n, int64 base, int64* n_users)
{
    int32* users = (int32*) MemoryContextAllocHuge(CurrentMemoryContext, (Size) Max(n, (int64) 1) * sizeof(int32));
    for (int64 k = 0; k < n; k++)
        users[k] = (int32) (t[k].user + base);
    std::sort(users, users + n);
    *n_users = std::unique(users, users + n) - users;
    return users;
}

void read_events(const SourceRel* src, const EventWeights* w, CellBuffer* out, EventsRead* res,
                 EventsSplit* split)
{
    memset(res, 0, sizeof *res);
    MemoryContext cxt = CurrentMemoryContext;
    Size budget = (Size) maintenance_work_mem * 1024;
    bool identity = src->item_type == INT4OID;
    bool ubytes = src->user_type == TEXTOID || src->user_type == UUIDOID;
    bool ibytes = src->item_type == TEXTOID || src->item_type == UUIDOID;
    recsys::DecaySpec decay;
    decay.half_life_us = src->half_life_days * 86400.0 * 1e6;

    auto* queue = OwnedByContext<recsys::PartQueue>::create(cxt);
    res->items = OwnedByContext<recsys::KeyDict>::create(cxt);
    EventReceiver r = EventReceiver();   // zeroed; trivially destructible
    r.w = w;
    r.item_identity = identity;
    r.user_type = src->user_type;
    r.item_type = src->item_type;
    r.limit = budget / 2;
    r.items = res->items;
    r.users = OwnedByContext<recsys::KeyDict>::create(cxt);
    r.agg = OwnedByContext<recsys::CellAggregator>::create(cxt);
    r.rowcxt = AllocSetContextCreate(cxt, "recsys event row", ALLOCSET_SMALL_SIZES);
    r.split = split;
    r.cxt = cxt;
    if (split != NULL) {
        split->touches.data = NULL;
        split->touches.n = 0;
    }
    int64 all_touch_cap = 0;
    core_call_or_error("reading the events", [&] {
        queue->obj = new recsys::PartQueue();
        if (!identity)
            res->items->obj = new recsys::KeyDict(ibytes);
    });

    Oid types[4];
    char* sql = source_query_sql(src, SOURCE_EVENTS, types);
    recsys::Triplet* buf = (recsys::Triplet*) palloc(sizeof(recsys::Triplet) * 4096);
    int64 user_base = 0;
    bool counted = false;
    for (;;) {
        bool empty = true;
        core_call_or_error("reading the events", [&] {
            empty = queue->obj->empty();
            if (empty)
                return;
            r.part = queue->obj->front();
            delete r.users->obj;
            r.users->obj = nullptr;
            delete r.agg->obj;
            r.agg->obj = nullptr;
            r.users->obj = new recsys::KeyDict(ubytes);
            r.agg->obj = new recsys::CellAggregator(decay, r.limit);
        });
        if (empty)
            break;
        r.overflow = false;
        r.n_touches = 0;
        r.events = r.ignored_null = r.ignored_type = 0;
        r.any = false;
        r.newest = 0;
        scan_events(src, sql, &r);
        res->scans++;
        if (r.overflow) {
            Size item_bytes = 0;
            core_call_or_error("reading the events", [&] {
                item_bytes = res->items->obj != nullptr ? res->items->obj->memory_bytes() : 0;
            });
            if (item_bytes > r.limit / 2)
                ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                                errmsg("recsys: the item dictionary needs about %zu MB, more than a quarter of "
                                       "maintenance_work_mem (%zu MB)",
                                       item_bytes / (1024 * 1024) + 1, budget / (1024 * 1024)),
                                errhint("Raise it for this session, e.g. SET maintenance_work_mem = '%zuMB'.",
                                        item_bytes * 4 / (1024 * 1024) + 64)));
            core_call_or_error("reading the events", [&] { queue->obj->split(); });
            elog(DEBUG1, "recsys: the events of a part of the users exceed %zu MB: reading them in two halves",
                 r.limit / (1024 * 1024));
            continue;
        }
        if (!counted) {
            // Every completed pass reads every row: count the ignored ones
            // and find the newest event once.
            res->ignored_null = r.ignored_null;
            res->ignored_type = r.ignored_type;
            res->newest = r.newest;
            res->any = r.any;
            counted = true;
        }
        res->events += r.events;
        if (split != NULL) {
            // This part's touches join the others in global user indices;
            // its test users' cells are kept aside as they are emitted.
            MemoryContext prev = MemoryContextSwitchTo(cxt);
            TouchBuffer* all = &split->touches;
            all->data = (recsys::Touch*) grow_array(all->data, &all_touch_cap, all->n + r.n_touches,
                                                   sizeof(recsys::Touch));
            for (int64 k = 0; k < r.n_touches; k++) {
                all->data[all->n].user = (int32) (r.touches[k].user + user_base);
                all->data[all->n].item = r.touches[k].item;
                all->n++;
            }
            if (split->keep_histories) {
                if (out->keep_users != NULL)
                    pfree((void*) out->keep_users);
                out->keep_users = touched_users(r.touches, r.n_touches, user_base, &out->keep_n);
            }
            MemoryContextSwitchTo(prev);
        }
        size_t pos = 0, n = 0;
        int64 part_users = 0;
        int64 dropped = 0;
        do {
            core_call_or_error("reading the events", [&] {
                n = r.agg->obj->emit_into(&pos, res->newest, buf, 4096, &dropped);
                part_users = (int64) r.users->obj->size();
            });
            for (size_t k = 0; k < n; k++)
                cell_buffer_append(out, (int32) (buf[k].user + user_base), buf[k].item, buf[k].weight);
        } while (n > 0);
        res->cells_dropped += dropped;
        if (user_base + part_users > PG_INT32_MAX)
            ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                            errmsg("recsys: more than 2147483647 distinct users")));
        user_base += part_users;
        core_call_or_error("reading the events", [&] { queue->obj->done(); });
    }
    res->users = user_base;
    if (r.touches != NULL)
        pfree(r.touches);
    if (split != NULL && out->keep_users != NULL) {
        pfree((void*) out->keep_users);
        out->keep_users = NULL;
        out->keep_n = 0;
    }
    out->events = res->events;
    out->ignored_null = res->ignored_null;
    out->ignored_type = res->ignored_type;
    r.users->release();
    r.agg->release();
    queue->release();
    MemoryContextDelete(r.rowcxt);
    pfree(buf);
}

void write_item_keys(int64 model_id, const SourceRel* src, const EventsRead* res, const int32* item_ids, int64 n)
{
    if (res->items == NULL || res->items->obj == NULL || n == 0)
        return;
    Datum* keys = (Datum*) palloc(sizeof(Datum) * n);
    Datum* ids = (Datum*) palloc(sizeof(Datum) * n);
    for (int64 k = 0; k < n; k++) {
        ids[k] = Int32GetDatum(item_ids[k]);
        char* str = NULL;
        int64 ikey = 0;
        size_t len = 0;
        const char* bytes = NULL;
        core_call_or_error("writing the item keys", [&] {
            if (src->item_type == INT8OID)
                ikey = res->items->obj->int_key(item_ids[k]);
            else
                bytes = res->items->obj->bytes_data(item_ids[k], &len);
        });
        if (src->item_type == INT8OID) {
            str = psprintf(INT64_FORMAT, ikey);
        } else if (src->item_type == UUIDOID) {
            pg_uuid_t u;
            memcpy(u.data, bytes, UUID_LEN);
            str = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&u)));
        } else {
            str = pnstrdup(bytes, len);
        }
        keys[k] = CStringGetTextDatum(str);
    }
    Oid types[3] = {INT8OID, INT4ARRAYOID, TEXTARRAYOID};
    Datum values[3] = {Int64GetDatum(model_id),
                       PointerGetDatum(construct_array(ids, (int) n, INT4OID, 4, true, TYPALIGN_INT)),
                       PointerGetDatum(construct_array(keys, (int) n, TEXTOID, -1, false, TYPALIGN_INT))};
    if (SPI_execute_with_args("INSERT INTO recsys.item_keys (model_id, item_id, item_key) "
                              "SELECT $1, k.id, k.key FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3)) "
                              "AS k(id, key)",
                              3, types, values, NULL, false, 0) != SPI_OK_INSERT)
        elog(ERROR, "recsys: writing the item keys failed");
}
