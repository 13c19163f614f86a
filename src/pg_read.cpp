// pg_read.cpp - training's reading path: SOURCE_EVENTS streamed into the
// core's dictionaries and cell aggregation (see pg_read.hpp).
#include <algorithm>
#include <cmath>
#include <system_error>
#include <thread>

#include <sys/resource.h>
#include <time.h>

#include "core_parallel.hpp"
#include "core_source.hpp"
#include "pg_ids.hpp"
#include "pg_progress.hpp"
#include "pg_read.hpp"

extern "C" {
#include "access/htup_details.h"
#include "access/tupdesc.h"
#include "access/tupmacs.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_locale.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"
#include "storage/buffile.h"
}

// One event in a partition file (when the users are read in parts): the
// user's key (an integer, or keylen bytes that follow the record), the
// item's index, weight * value and time, and whether it is a test touch.
struct SpillRec {
    int64 ikey;
    double wv;
    int64 t;
    int32 item;
    uint32 keylen;
    int32 touch;
    int32 pad;
};

// A part of the users (key hash % modulus == residue) and the file holding
// its events.
struct Part {
    uint64 modulus;
    uint64 residue;
    BufFile* file;
};

// Events on their way to the aggregation, handed to the core a batch at a
// time and added in the scan's order: the core prefetches the hash tables'
// slots a few events ahead, which a row at a time cannot.  A batch is made of
// blocks of EVENT_BATCH events, the unit the budget is checked at: on one
// thread every block is aggregated as it closes; read in a pipeline (see
// below) a batch of EVENT_GROUP blocks goes to the worker thread at once.
#define EVENT_BATCH 256
#define EVENT_GROUP 16
#define EVENT_GROUP_EVENTS (EVENT_BATCH * EVENT_GROUP)
#define PREFAULT_CHUNK ((Size) 2 << 20)   // the cell table faulted in by the waiting scan at a time
struct EventBatch {
    int n;                               // events queued
    int nblocks;                         // blocks closed: events [0, block_end[nblocks - 1])
    Size block_end[EVENT_GROUP];
    Size other_bytes[EVENT_GROUP];       // the item dictionary's bytes when the block closed (in a
                                         // pipeline: and the users')
    int64 block_rows[EVENT_GROUP];       // rows received when the block closed
    recsys::KeyRef* users;               // byte keys: p set at the hand-off
    Size* key_off;                       // byte keys: offset in keys
    int32* user_idx;
    int32* items;
    double* wv;
    int64* t;
    bool* touch;
    char* keys;                          // byte keys, copied (the rows' go away)
    Size keys_len, keys_cap;
    recsys::BlocksAdded res;             // what add_blocks did with it
    bool users_added;                    // its closed blocks' users are in the dictionary (see hand_off)
};

// Bytes of an EventBatch of `cap` events, its byte keys aside.
static Size event_batch_bytes(int cap)
{
    return sizeof(EventBatch) + (Size) cap * (sizeof(recsys::KeyRef) + sizeof(Size) + 2 * sizeof(int32) +
                                              sizeof(double) + sizeof(int64) + sizeof(bool));
}

static EventBatch* new_event_batch(int cap)
{
    EventBatch* b = (EventBatch*) palloc0(sizeof(EventBatch));
    b->users = (recsys::KeyRef*) palloc(sizeof(recsys::KeyRef) * cap);
    b->key_off = (Size*) palloc(sizeof(Size) * cap);
    b->user_idx = (int32*) palloc(sizeof(int32) * cap);
    b->items = (int32*) palloc(sizeof(int32) * cap);
    b->wv = (double*) palloc(sizeof(double) * cap);
    b->t = (int64*) palloc(sizeof(int64) * cap);
    b->touch = (bool*) palloc(sizeof(bool) * cap);
    b->keys_cap = 1024;
    b->keys = (char*) palloc(b->keys_cap);
    return b;
}

static void free_event_batch(EventBatch* b)
{
    if (b == NULL)
        return;
    pfree(b->users);
    pfree(b->key_off);
    pfree(b->user_idx);
    pfree(b->items);
    pfree(b->wv);
    pfree(b->t);
    pfree(b->touch);
    pfree(b->keys);
    pfree(b);
}

// Evaluation in one scan (EventsSplit.find_cutoff): an event held back
// until it is known to be before the cutoff or not.  Its keys, not their
// indices: an integer key in u / i, or a byte key's offset in the held
// keys and its length.  h is the hash of its cell (user key, item key).
struct HeldEvent {
    int64 u;
    int64 i;
    double wv;
    int64 t;
    uint32 ulen, ilen;
    uint64 h;
};

// Evaluation in one scan: the scan's usable events on their way to the
// held-event test, a batch at a time (see receive_one_pass): each one's
// bitmap word is prefetched as it arrives, tested when the batch is full.
// hold_from[k] is r->hold_from as it was when event k arrived; the events'
// byte keys are in keys.
#define ONE_PASS_BATCH 256
struct PendingEvents {
    int n;
    HeldEvent ev[ONE_PASS_BATCH];
    int64 hold_from[ONE_PASS_BATCH];
    char* keys;
    Size keys_len, keys_cap;
};

// How the scan reads: every event with the cutoff known (or no split), in
// one scan finding the cutoff, only finding the newest usable event (the
// one-scan read gave up: the events are read again split at it), or not at
// all (SOURCE_MAX_TIME must find the cutoff: the rows are not looked at).
enum ReadMode {
    READ_KNOWN,
    READ_ONE_PASS,
    READ_NEWEST_ONLY,
    READ_STOP
};

#define WEIGHT_LENS 64

// A test user of a read in parts: its global index and its key (an
// integer, or `len` bytes at `off` in the receiver's test_keys).
struct TestUser {
    int32 user;
    int32 len;
    int64 key;   // the integer key, or the offset of the bytes
};

// A DestReceiver that feeds the rows of the scan to the core: into the
// aggregation while it fits, else, from the row that overflowed on, into
// partition files by user (the aggregation so far is written there first).
struct EventReceiver {
    DestReceiver pub;
    const EventWeights* w;
    int last_type;          // the index in w of the type that matched last
    // Where the query's rows hold the user, item, event type, time and
    // value (-1: no value), how many columns they have, and how many to
    // deform (source_events_sql).
    int col[5];
    int natts;
    int fetch;
    signed char field_of[MaxTupleAttributeNumber];   // column -> index in col (-1: none), up to fetch
    // The event types' weights by the type's length (WEIGHT_LENS of them):
    // the index in w of the only type of that length, -1 when none has it,
    // -2 when several do (then they are searched).
    int16 type_of_len[WEIGHT_LENS];
    Oid ubase, ibase;       // the key columns' (base) types
    bool ubytes, ibytes;    // keys as bytes (text, varchar, uuid) or integers
    bool item_identity;     // integer items: the id is the index
    Oid user_type, item_type;   // the mapping's served types
    OwnedByContext<recsys::KeyDict>* users;
    OwnedByContext<recsys::KeyDict>* items;
    OwnedByContext<recsys::CellAggregator>* agg;
    Size limit;             // bytes for the dictionaries and the aggregation
    recsys::DecaySpec decay;
    int64 aggregated;       // events added to the aggregation
    double est_rows;        // the relation's rows as ANALYZE saw them (-1: unknown)
    MemoryContext rowcxt;   // detoasted keys, reset every 1024 rows
    EventBatch* batch;      // events not yet aggregated (not while spilling)
    // The pipeline (pipelined): the worker aggregates `pending` (when
    // in_flight) while the scan fills `batch`; joined before anything else
    // reads or changes the users or the cells.  With users_on_scan, the
    // batches whose users_added is set get their users added to the
    // dictionary by the scan as each block closes, the worker adding only
    // their cells; which batches do is decided batch by batch to balance
    // the two threads (hand_off).  (Evaluation's one-scan read starts with
    // the users on the worker, unless it is order_free: its scan thread also
    // tests every event against the held ones; the balancing moves them
    // when the worker falls behind, e.g. while its cell table doubles.)
    bool pipelined;
    bool users_on_scan;     // pipelined, and the scan's thread may add the users
    bool in_flight;
    bool sync;              // a non-finite weight * value was queued: each block aggregated as it closes
    bool finishing;         // finish_batch() is running
    EventBatch* pending;
    OwnedByContext<recsys::detail::AsyncWorker>* worker;
    int64 handed;           // batches the worker aggregated
    int64 scan_users;       // batches whose users the scan's thread added
    int64 waited_us;        // time the scan waited for it
    // The cell table's pages not yet faulted in by the scan: while the
    // worker is behind, the scan faults them in (table_prefault) instead of
    // waiting, so the worker does not stop on them.  Set on the scan's
    // thread while the worker is idle (after reserve), cleared with the
    // aggregation.
    char* prefault_at;
    char* prefault_end;
    Size prefaulted;        // bytes the scan faulted in
    int64 rows;             // rows received
    int64 events, ignored_null, ignored_type;
    TimestampTz newest;
    bool any;
    // Spilling: the parts' files (nparts of them, first those of the scan).
    bool spilling;
    Part* parts;
    int nparts, parts_cap;
    int scan_parts;         // the scan's parts: parts[0, scan_parts)
    // Evaluation (split != NULL): the events at or after the cutoff are the
    // touches, in the users' indices of the aggregation they go with.
    EventsSplit* split;
    recsys::Touch* touches;
    int64 n_touches, touch_cap;
    // Read in parts: each test user's global index and key, so that the
    // test users can be numbered in key order across the parts at the end.
    TestUser* test_users;
    int64 n_test_users, test_users_cap;
    char* test_keys;        // their byte keys
    int64 test_keys_len, test_keys_cap;
    MemoryContext cxt;      // where the touches and the parts grow
    // One scan finding the cutoff (mode READ_ONE_PASS; see EventsSplit).
    int mode;
    const char* two_scans;      // why the one-scan read gave up
    bool usable_any;            // an event of a type weighted > 0 was seen
    TimestampTz usable_newest;  // the newest of them so far
    TimestampTz hold_from;      // events before this are before the cutoff whatever comes later
    int64 margin_us;            // (hold_days + 2) days
    bool released_any;          // an event was released as before the cutoff during the scan
    TimestampTz released_max;   // the newest of them
    HeldEvent* held;            // the held events, in arrival order
    int64 n_held, held_cap;
    char* held_keys;            // their byte keys
    Size held_keys_len, held_keys_cap;
    uint64* held_bits;          // a bit per cell hash: set when the cell may have a held event
    uint64 held_bits_mask;      // bits - 1
    int64 held_check;           // n_held at which to sweep next
    TimestampTz swept_at;       // hold_from at the last sweep
    PendingEvents* arrived;     // arrived, not yet tested against the held events
    // Every event's weight * value is an integer of at most 2^16 (integer
    // weights, no value column) and nothing decays: a cell's sum is exact in
    // any order, so an event before hold_from is released at once, whatever
    // its cell holds (no hash, no bitmap, no pending batch).
    bool order_free;
};

// A key column's value as the core takes it.  Byte keys may be detoasted
// into the current memory context.
static inline recsys::KeyRef key_of(Datum v, Oid type)
{
    recsys::KeyRef k;
    // Integers here, every row: no call.
    if (type == INT4OID) {
        k.i = DatumGetInt32(v);
        return k;
    }
    if (type == INT8OID) {
        k.i = DatumGetInt64(v);
        return k;
    }
    IdKey id = id_key_of(v, type);   // pg_ids.hpp
    k.i = id.i;
    k.p = id.p;
    k.n = (size_t) id.n;
    return k;
}

// event_weight() for every row: the type that matched last is tried first
// (logs come in runs of a few types), and the bytes are compared inline,
// without a call per row.
static inline bool same_bytes(const char* a, const char* b, int len)
{
    // Words, not bytes: the last word overlaps the one before it when len
    // is not a multiple of its size; nothing outside [0, len) is read.
    if (len >= 8) {
        uint64 x, y;
        for (int k = 0; k + 8 < len; k += 8) {
            memcpy(&x, a + k, 8);
            memcpy(&y, b + k, 8);
            if (x != y)
                return false;
        }
        memcpy(&x, a + len - 8, 8);
        memcpy(&y, b + len - 8, 8);
        return x == y;
    }
    if (len >= 4) {
        uint32 x0, y0, x1, y1;
        memcpy(&x0, a, 4);
        memcpy(&y0, b, 4);
        memcpy(&x1, a + len - 4, 4);
        memcpy(&y1, b + len - 4, 4);
        return x0 == y0 && x1 == y1;
    }
    for (int k = 0; k < len; k++)
        if (a[k] != b[k])
            return false;
    return true;
}

static inline double weight_of(EventReceiver* r, const char* type, int len)
{
    const EventWeights* w = r->w;
    int last = r->last_type;
    if (last < w->n && w->lens[last] == len && same_bytes(w->types[last], type, len))
        return w->weights[last];
    if (len < WEIGHT_LENS && r->type_of_len[len] != -2) {
        // At most one type has this length (the usual case): one comparison.
        int i = r->type_of_len[len];
        if (i < 0 || !same_bytes(w->types[i], type, len))
            return get_float8_nan();
        r->last_type = i;
        return w->weights[i];
    }
    for (int i = 0; i < w->n; i++)
        if (w->lens[i] == len && same_bytes(w->types[i], type, len)) {
            r->last_type = i;
            return w->weights[i];
        }
    return get_float8_nan();
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

// Whether the dictionaries and the aggregation have outgrown r->limit.
static bool over_limit(EventReceiver* r)
{
    size_t bytes = 0;
    core_call_or_error("reading the events", [&] {
        bytes = r->users->obj->memory_bytes() + r->agg->obj->memory_bytes() +
                (r->items->obj != nullptr ? r->items->obj->memory_bytes() : 0);
    });
    return bytes > r->limit;
}

// About how many cells this read will sum, from the newest model trained on
// the same source: its cells, scaled by the relation's rows now against the
// events that model used, at most one a row.  0 when there is no such model,
// or the caller may not read recsys.models (the read then grows its table as
// it goes).  Read in the caller's SPI connection, names qualified.
static int64 cells_hint(const SourceRel* src, double est_rows)
{
    Oid nsp = get_namespace_oid("recsys", true);
    Oid models = OidIsValid(nsp) ? get_relname_relid("models", nsp) : InvalidOid;
    if (!OidIsValid(models) || pg_class_aclcheck(models, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
        return 0;
    Oid types[1] = {TEXTOID};
    Datum values[1] = {CStringGetTextDatum(src->qualified)};
    int rc = SPI_execute_with_args("SELECT m.cells, m.interactions_used FROM recsys.models m "
                                   "WHERE m.source_relation OPERATOR(pg_catalog.=) $1 "
                                   "ORDER BY m.model_id DESC LIMIT 1",
                                   1, types, values, NULL, true, 1);
    if (rc != SPI_OK_SELECT)
        elog(ERROR, "recsys: reading the newest model's size failed");
    double hint = 0;
    if (SPI_processed == 1) {
        bool null_cells, null_used;
        int64 cells = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &null_cells));
        int64 used = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &null_used));
        if (!null_cells && cells > 0) {
            hint = (double) cells;
            if (!null_used && used > 0 && est_rows > 0) {
                hint *= est_rows / (double) used;
                hint = Min(hint, est_rows);
            }
        }
    }
    SPI_freetuptable(SPI_tuptable);
    return hint >= 1 && hint < 4e18 ? (int64) hint : 0;
}

// Starts a fresh aggregation (a new part of the users).
static void reset_aggregation(EventReceiver* r)
{
    core_call_or_error("reading the events", [&] {
        delete r->users->obj;
        r->users->obj = nullptr;
        delete r->agg->obj;
        r->agg->obj = nullptr;
        r->users->obj = new recsys::KeyDict(r->ubytes);
        r->agg->obj = new recsys::CellAggregator(r->decay, r->limit);
    });
    r->n_touches = 0;
    r->aggregated = 0;
    r->prefault_at = r->prefault_end = NULL;
}

static void spill_write(BufFile* f, const SpillRec* rec, const char* key)
{
    BufFileWrite(f, (void*) rec, sizeof *rec);
    if (rec->keylen > 0)
        BufFileWrite(f, (void*) key, rec->keylen);
}

// Reads the next record of f (false at its end); its key bytes into *buf.
static bool spill_read(BufFile* f, SpillRec* rec, char** buf, Size* cap)
{
    size_t got = BufFileRead(f, rec, sizeof *rec);
    if (got == 0)
        return false;
    if (got != sizeof *rec)
        ereport(ERROR, (errcode_for_file_access(), errmsg("recsys: could not read a temporary file of events")));
    if (rec->keylen > 0) {
        if (rec->keylen > *cap) {
            *cap = Max((Size) rec->keylen, *cap * 2);
            *buf = (char*) repalloc(*buf, *cap);
        }
        if (BufFileRead(f, *buf, rec->keylen) != rec->keylen)
            ereport(ERROR, (errcode_for_file_access(), errmsg("recsys: could not read a temporary file of events")));
    }
    return true;
}

// The file of the scan's part a key hash belongs to (the scan's parts are
// r->parts[k] with modulus nparts and residue k).
static BufFile* part_file(EventReceiver* r, uint64 h)
{
    return r->parts[h % (uint64) r->scan_parts].file;
}

static void add_part(EventReceiver* r, uint64 modulus, uint64 residue)
{
    if (r->nparts == r->parts_cap) {
        MemoryContext old = MemoryContextSwitchTo(r->cxt);
        r->parts_cap = Max(r->parts_cap * 2, 16);
        r->parts = (Part*) (r->parts == NULL ? palloc(sizeof(Part) * r->parts_cap)
                                             : repalloc(r->parts, sizeof(Part) * r->parts_cap));
        MemoryContextSwitchTo(old);
    }
    Part* p = &r->parts[r->nparts++];
    p->modulus = modulus;
    p->residue = residue;
    p->file = BufFileCreateTemp(false);
}

// The aggregation outgrew the budget during the scan: from now on the
// events go to partition files by user, and what was aggregated so far goes
// there first (each cell as one event that restores it exactly).  `rows`:
// the rows received when the block that overflowed closed.
static void begin_spill(EventReceiver* r, int64 rows)
{
    // Parts enough that each should fit at the rate seen so far, doubled
    // for the skew; a part that does not fit is split again.  Each open
    // part holds a BLCKSZ buffer: their buffers take at most a quarter of
    // the aggregation's share.
    double seen = (double) Max(rows, (int64) 1);
    double total = r->est_rows > seen ? r->est_rows : seen * 4;
    int max_parts = (int) Min((Size) 1024, Max(r->limit / 4 / BLCKSZ, (Size) 2));
    int nparts = 2;
    while (nparts * 2 <= max_parts && (double) nparts < 2.0 * total / seen)
        nparts *= 2;
    MemoryContext old = MemoryContextSwitchTo(r->cxt);
    for (int k = 0; k < nparts; k++)
        add_part(r, (uint64) nparts, (uint64) k);
    r->scan_parts = nparts;
    MemoryContextSwitchTo(old);
    elog(DEBUG1, "recsys: the events exceed %zu MB after " INT64_FORMAT " rows: writing them to %d parts by user",
         r->limit / (1024 * 1024), rows, nparts);

    const size_t chunk = 1024;
    recsys::CellAggregator::RawCell* cells =
        (recsys::CellAggregator::RawCell*) palloc(sizeof(recsys::CellAggregator::RawCell) * chunk);
    int64* ikeys = (int64*) palloc(sizeof(int64) * chunk);
    const char** pkeys = (const char**) palloc(sizeof(char*) * chunk);
    size_t* lens = (size_t*) palloc(sizeof(size_t) * chunk);
    uint64* hashes = (uint64*) palloc(sizeof(uint64) * chunk);
    // The user's key and hash of local index u, into slot k of the arrays.
    auto key_of_user = [&](int32_t u, size_t k) {
        recsys::KeyRef kr;
        if (r->ubytes) {
            pkeys[k] = r->users->obj->bytes_data(u, &lens[k]);
            kr.p = pkeys[k];
            kr.n = lens[k];
            ikeys[k] = 0;
        } else {
            ikeys[k] = r->users->obj->int_key(u);
            kr.i = ikeys[k];
            lens[k] = 0;
            pkeys[k] = NULL;
        }
        hashes[k] = recsys::key_hash(kr, r->ubytes);
    };
    size_t pos = 0, n = 0;
    do {
        core_call_or_error("reading the events", [&] {
            n = r->agg->obj->raw_into(&pos, cells, chunk);
            for (size_t k = 0; k < n; k++)
                key_of_user(cells[k].user, k);
        });
        for (size_t k = 0; k < n; k++) {
            SpillRec rec;
            memset(&rec, 0, sizeof rec);
            rec.ikey = ikeys[k];
            rec.keylen = (uint32) lens[k];
            rec.item = cells[k].item;
            rec.wv = cells[k].sum;
            rec.t = cells[k].ref_us;
            spill_write(part_file(r, hashes[k]), &rec, pkeys[k]);
        }
    } while (n > 0);
    for (int64 t0 = 0; t0 < r->n_touches; t0 += (int64) chunk) {
        n = (size_t) Min((int64) chunk, r->n_touches - t0);
        core_call_or_error("reading the events", [&] {
            for (size_t k = 0; k < n; k++)
                key_of_user(r->touches[t0 + k].user, k);
        });
        for (size_t k = 0; k < n; k++) {
            SpillRec rec;
            memset(&rec, 0, sizeof rec);
            rec.ikey = ikeys[k];
            rec.keylen = (uint32) lens[k];
            rec.item = r->touches[t0 + k].item;
            rec.touch = 1;
            spill_write(part_file(r, hashes[k]), &rec, pkeys[k]);
        }
    }
    pfree(cells);
    pfree(ikeys);
    pfree(pkeys);
    pfree(lens);
    pfree(hashes);
    reset_aggregation(r);
    r->spilling = true;
}

enum AggResult {
    AGG_OK,         // added, within the budget
    AGG_ADDED_FULL, // added, and now over the budget
    AGG_REFUSED     // not added: the aggregation may not grow
};

// Adds one event (or touch) of user key uk to the aggregation.
static AggResult aggregate(EventReceiver* r, const recsys::KeyRef& uk, int32 item, double wv, int64 t, bool touch)
{
    int32_t u = 0;
    bool added = true;
    core_call_or_error("reading the events", [&] {
        u = r->users->obj->add(uk);
        if (!touch)
            added = r->agg->obj->add(u, item, wv, t);
    });
    if (!added)
        return AGG_REFUSED;
    if (touch) {
        MemoryContext prev = MemoryContextSwitchTo(r->cxt);
        r->touches = (recsys::Touch*) grow_array(r->touches, &r->touch_cap, r->n_touches + 1, sizeof(recsys::Touch));
        MemoryContextSwitchTo(prev);
        r->touches[r->n_touches].user = u;
        r->touches[r->n_touches].item = item;
        r->n_touches++;
    }
    // The sizes grow by doublings: a look every 4096 events is enough.
    if ((++r->aggregated & 4095) == 0 && over_limit(r))
        return AGG_ADDED_FULL;
    return AGG_OK;
}

// Writes one event (or touch) to its user's part.
static void spill_event(EventReceiver* r, const recsys::KeyRef& uk, int32 item, double wv, int64 t, bool touch)
{
    uint64 h = 0;
    core_call_or_error("reading the events", [&] { h = recsys::key_hash(uk, r->ubytes); });
    SpillRec rec;
    memset(&rec, 0, sizeof rec);
    rec.ikey = uk.i;
    rec.keylen = r->ubytes ? (uint32) uk.n : 0;
    rec.item = item;
    rec.wv = wv;
    rec.t = t;
    rec.touch = touch ? 1 : 0;
    spill_write(part_file(r, h), &rec, uk.p);
}

static void give_up_one_pass(EventReceiver* r, const char* why);

// The aggregation's side of a batch: add_blocks, on the worker thread or here.
static recsys::EventBlocks event_blocks(EventReceiver* r, EventBatch* b)
{
    recsys::EventBlocks ev;
    ev.users = b->users;
    ev.user_idx = b->user_idx;
    ev.items = b->items;
    ev.wv = b->wv;
    ev.time_us = b->t;
    ev.skip = r->split != NULL ? b->touch : nullptr;
    ev.block_end = b->block_end;
    ev.other_bytes = b->other_bytes;
    ev.blocks = (size_t) b->nblocks;
    return ev;
}

// After add_blocks: the touches of the events added, and from the block
// that overflowed the budget on, the events to the parts (or the one-scan
// read gives up), as aggregate() and spill_event() would one at a time.
// The batch is empty afterwards.
static void finish_batch(EventReceiver* r, EventBatch* b)
{
    size_t added = b->res.added;
    if (r->split != NULL) {
        MemoryContext prev = MemoryContextSwitchTo(r->cxt);
        r->touches = (recsys::Touch*) grow_array(r->touches, &r->touch_cap, r->n_touches + (int64) added,
                                                 sizeof(recsys::Touch));
        MemoryContextSwitchTo(prev);
        for (size_t k = 0; k < added; k++)
            if (b->touch[k]) {
                r->touches[r->n_touches].user = b->user_idx[k];
                r->touches[r->n_touches].item = b->items[k];
                r->n_touches++;
            }
    }
    r->aggregated += (int64) added;
    int n = b->n;
    b->n = 0;
    b->nblocks = 0;
    b->keys_len = 0;   // (the keys stay readable until the next event is queued)
    if (!b->res.full)
        return;
    if (r->mode == READ_ONE_PASS) {
        // The two-step read would have read the users in parts (or may
        // have: the held events are not in the aggregation yet), and the
        // parts number the users: it does it.
        r->finishing = true;
        give_up_one_pass(r, "the events outgrow the aggregation's memory");
        r->finishing = false;
        return;
    }
    begin_spill(r, b->block_rows[b->res.block]);
    for (int k = (int) added; k < n; k++)
        spill_event(r, b->users[k], b->items[k], b->wv[k], b->t[k], b->touch[k]);
}

// Waits for the batch in flight and finishes it.
static void wait_pending(EventReceiver* r)
{
    if (!r->in_flight)
        return;
    r->in_flight = false;
    recsys::detail::AsyncWorker* w = r->worker->obj;
    TimestampTz t0 = GetCurrentTimestamp();
    core_call_or_error("reading the events", [&] {
        // Rather than wait, fault in the table's next pages for the worker.
        while (r->prefault_at < r->prefault_end && w->busy()) {
            Size n = Min((Size) (r->prefault_end - r->prefault_at), PREFAULT_CHUNK);
            if (!recsys::table_prefault(r->prefault_at, n)) {
                r->prefault_end = r->prefault_at;
                break;
            }
            r->prefault_at += n;
            r->prefaulted += n;
        }
        w->wait();
    });
    r->waited_us += GetCurrentTimestamp() - t0;
    r->handed++;
    finish_batch(r, r->pending);
}

// Adds the users of b's events [start, end) to the dictionary, in order;
// returns its bytes afterwards.  A byte key's pointer is set for the call
// (the keys may move as the batch fills).
static Size add_block_users(EventReceiver* r, EventBatch* b, Size start, Size end)
{
    recsys::KeyRef* keys = b->users + start;
    int32* idx = b->user_idx + start;
    size_t n = end - start;
    if (r->ubytes)
        for (size_t k = 0; k < n; k++)
            keys[k].p = b->keys + b->key_off[start + k];
    recsys::KeyDict* users = r->users->obj;
    Size bytes = 0;
    core_call_or_error("reading the events", [&] {
        users->add_batch(keys, n, idx);
        bytes = users->memory_bytes();
    });
    return bytes;
}

// Aggregates the closed blocks of r->batch: on the worker thread (the scan
// goes on filling the other batch), or here.  What came before is finished
// first: if the aggregation overflowed meanwhile, these events go to the
// parts in their order.
static void hand_off(EventReceiver* r)
{
    // The worker still busy with the previous batch: it is the slower side.
    bool worker_behind = false;
    if (r->in_flight && r->users_on_scan)
        core_call_or_error("reading the events", [&] { worker_behind = r->worker->obj->busy(); });
    wait_pending(r);
    EventBatch* b = r->batch;
    if (b->nblocks == 0)
        return;
    size_t n = b->block_end[b->nblocks - 1];
    if (r->ubytes)
        for (size_t k = 0; k < n; k++)
            b->users[k].p = b->keys + b->key_off[k];
    if (r->spilling) {
        for (size_t k = 0; k < n; k++)
            spill_event(r, b->users[k], b->items[k], b->wv[k], b->t[k], b->touch[k]);
        b->n = b->nblocks = 0;
        b->keys_len = 0;
        return;
    }
    // Balancing: the users go to whichever thread is faster.  A batch whose
    // users the worker was to add while the worker is behind gets them added
    // here, now that every earlier user is in (block by block, each block's
    // bytes as they would have been when it closed); the next batch's users
    // are added by the scan while the worker stays behind, else by the
    // worker, after this batch's (the dictionary takes them in the scan's
    // order either way, so the results do not depend on the split).
    if (worker_behind && !b->users_added) {
        Size start = 0;
        for (int j = 0; j < b->nblocks; j++) {
            b->other_bytes[j] += add_block_users(r, b, start, b->block_end[j]);
            start = b->block_end[j];
        }
        b->users_added = true;
    }
    if (b->users_added)
        r->scan_users++;
    recsys::EventBlocks ev = event_blocks(r, b);
    recsys::KeyDict* users = r->users->obj;
    recsys::CellAggregator* agg = r->agg->obj;
    int64 aggregated = r->aggregated;
    Size limit = r->limit;
    bool users_added = b->users_added;
    if (r->pipelined && !r->sync) {
        bool posted = false;
        core_call_or_error("reading the events", [&] {
            try {
                r->worker->obj->post([b, ev, users, agg, aggregated, limit, users_added] {
                    b->res = users_added ? recsys::add_cell_blocks(*agg, ev, aggregated, limit)
                                         : recsys::add_blocks(*users, *agg, ev, aggregated, limit);
                });
                posted = true;
            } catch (const std::system_error&) {
                // No thread available: the read goes on on this one.
            }
        });
        if (posted) {
            r->in_flight = true;
            r->batch = r->pending;
            r->pending = b;
            r->batch->users_added = users_added && worker_behind;
            return;
        }
        r->pipelined = false;
        r->users_on_scan = false;
        r->pending->users_added = false;
        elog(DEBUG1, "recsys: no thread for the aggregation: reading on one thread");
    }
    core_call_or_error("reading the events", [&] {
        b->res = users_added ? recsys::add_cell_blocks(*agg, ev, aggregated, limit)
                              : recsys::add_blocks(*users, *agg, ev, aggregated, limit);
    });
    finish_batch(r, b);
    // From here on each block is aggregated here as it closes, add_blocks
    // adding its users.
    b->users_added = false;
}

// Closes the block being filled (the last events of the scan, or a full
// block) with what the budget check needs at that point, and hands the
// batch on when it is full (on one thread: every block).
static void close_block(EventReceiver* r)
{
    EventBatch* b = r->batch;
    Size start = b->nblocks > 0 ? b->block_end[b->nblocks - 1] : 0;
    if ((Size) b->n == start)
        return;
    Size other_bytes = 0;
    if (r->items->obj != nullptr)
        core_call_or_error("reading the events", [&] { other_bytes = r->items->obj->memory_bytes(); });
    if (b->users_added && !r->spilling) {
        // The block's users to the dictionary here, and its bytes now (as
        // the aggregation would see them after the block): the worker adds
        // the cells alone (add_cell_blocks).
        other_bytes += add_block_users(r, b, start, (Size) b->n);
    }
    b->block_end[b->nblocks] = (Size) b->n;
    b->other_bytes[b->nblocks] = other_bytes;
    b->block_rows[b->nblocks] = r->rows;
    b->nblocks++;
    if (!r->pipelined || r->sync || b->nblocks == EVENT_GROUP)
        hand_off(r);
}

// Aggregates (or spills) every event queued, and waits until it is done:
// afterwards the users and the cells may be read.
static void flush_events(EventReceiver* r)
{
    close_block(r);
    hand_off(r);
    wait_pending(r);
}

// Drops the events queued and in flight (the one-scan read gave up).
static void discard_events(EventReceiver* r)
{
    if (r->in_flight) {
        r->in_flight = false;
        recsys::detail::AsyncWorker* w = r->worker->obj;
        core_call_or_error("reading the events", [&] { w->wait(); });
        r->pending->n = r->pending->nblocks = 0;
        r->pending->keys_len = 0;
    }
    r->batch->n = r->batch->nblocks = 0;
    r->batch->keys_len = 0;
}

// Before the one-scan read gives up for another reason: the blocks closed
// so far are aggregated first, as they would have been one at a time, and
// may give it up for the aggregation's memory instead.
static void settle_before_give_up(EventReceiver* r)
{
    if (!r->pipelined || r->finishing)
        return;
    wait_pending(r);
    if (r->mode == READ_ONE_PASS)
        hand_off(r);
    wait_pending(r);
}

// Queues one event for the aggregation (flush_events adds it).
static pg_attribute_always_inline void queue_event(EventReceiver* r, const recsys::KeyRef& uk, int32 item, double wv,
                                                   int64 t, bool touch)
{
    EventBatch* b = r->batch;
    int k = b->n;
    b->users[k].i = uk.i;
    b->users[k].n = uk.n;
    b->users[k].p = NULL;
    if (r->ubytes) {
        if (b->keys_len + uk.n > b->keys_cap) {
            b->keys_cap = Max(b->keys_cap * 2, b->keys_len + uk.n);
            b->keys = (char*) repalloc(b->keys, b->keys_cap);
        }
        memcpy(b->keys + b->keys_len, uk.p, uk.n);
        b->key_off[k] = b->keys_len;
        b->keys_len += uk.n;
    }
    b->items[k] = item;
    b->wv[k] = wv;
    b->t[k] = t;
    b->touch[k] = touch;
    // The aggregation fails on it (or spills it) when its block is added:
    // from now on each block is added as it closes, as on one thread, so
    // that happens at the same point of the scan.
    if (unlikely(!std::isfinite(wv)))
        r->sync = true;
    b->n++;
    Size start = b->nblocks > 0 ? b->block_end[b->nblocks - 1] : 0;
    if ((Size) b->n - start == EVENT_BATCH)
        close_block(r);
}

// ---- Evaluation in one scan (EventsSplit.find_cutoff) ----------------------
//
// The cutoff is C = newest - hold_days days (timestamptz arithmetic in the
// session's time zone), the newest being that of the events whose type is
// weighted > 0.  While the scan runs, with M the newest so far: an event
// before hold_from = M - (hold_days + 2) days is before C whatever comes
// later (C >= M - hold_days days - the largest change of the zone's UTC
// offset, which is under 2 days); the others are held.  A cell's events sum
// in the scan's order (bit for bit, decay included), so an event whose cell
// has an event held is held too, behind it: the held events of a cell are
// always the last ones of it that arrived.  Cells are known by a 64-bit hash
// of their keys, through a bitmap: a collision only holds more events of a
// cell, in their order.  A sweep (when the held events double, and the
// hold_from advanced) releases every cell's held events from the first on
// while they are before hold_from; after the scan, the held events are split
// at C in arrival order.  (The events are tested a batch at a time, each
// as of its arrival, so that their bitmap words can be prefetched: the
// same decisions in the same order.)  What a released event does is what
// the two-step read does with it (pre-cutoff: the matrix; after: a touch
// when its wv > 0, else nothing), and the cells, touches, dictionaries and counts come out
// the same; only their order inside the hash tables differs, which nothing
// downstream sees (indices follow the keys' order, cells are unique).
// When every weight * value is an integer of at most 2^16 and nothing decays
// (the default event weights, no value column: EventReceiver.order_free),
// a cell's sum is exact in any order (every partial sum is an integer below
// 2^53), so no event is held for its cell's sake: an event before hold_from
// is released on arrival, the others are held, and the cells, touches and
// counts come out the same again.
//
// The two-step read (cutoff, then read_events split at it) is used instead,
// the scan going on only to find the newest event, when the one-scan read
// could differ from it:
// - the aggregation outgrows its budget, or might have in the two-step read
//   (memory_bound() after the scan): the two-step read then reads the users
//   in parts, whose numbering (and so the model's sums and the bootstrap's
//   draws) depends on the row it began at;
// - an event's weight * value is not finite, or an integer key does not fit
//   integer: the two-step read may fail on it, or skip it, naming what it met
//   first;
// - the held events outgrow the other half of the budget (the cell buffer's,
//   unused while scanning);
// - the user or item column no longer has the mapped type (the two-step
//   read reports it after the cutoff's errors).
// And with a nondeterministic collation on the event type column (where
// SOURCE_MAX_TIME's = may match other types than the byte comparison here)
// the scan stops at once and SOURCE_MAX_TIME finds the cutoff.

static inline uint64 mix64(uint64 x)
{
    x ^= x >> 33;
    x *= UINT64CONST(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x *= UINT64CONST(0xc4ceb9fe1a85ec53);
    x ^= x >> 33;
    return x;
}

static uint64 cell_hash(const EventReceiver* r, const recsys::KeyRef& uk, const recsys::KeyRef& ik)
{
    uint64 hu = r->ubytes ? hash_bytes_extended((const unsigned char*) uk.p, (int) uk.n, 0) : mix64((uint64) uk.i);
    uint64 hi = r->ibytes ? hash_bytes_extended((const unsigned char*) ik.p, (int) ik.n, 1) : mix64((uint64) ik.i);
    return mix64(hu ^ (hi + UINT64CONST(0x9e3779b97f4a7c15) + (hu << 6) + (hu >> 2)));
}

// How many held events ahead a pass over them prefetches their bitmap
// words (a random access each into a bitmap of megabytes).
#define HELD_PREFETCH_AHEAD 16

static inline bool held_bit(const EventReceiver* r, const uint64* bits, uint64 h)
{
    uint64 k = h & r->held_bits_mask;
    return (bits[k >> 6] >> (k & 63)) & 1;
}

static inline void set_held_bit(const EventReceiver* r, uint64* bits, uint64 h)
{
    uint64 k = h & r->held_bits_mask;
    bits[k >> 6] |= UINT64CONST(1) << (k & 63);
}

// Bytes the held events take.
static Size held_bytes(const EventReceiver* r)
{
    return (Size) r->held_cap * sizeof(HeldEvent) + r->held_keys_cap + (Size) (r->held_bits_mask + 1) / 8;
}

static void free_held(EventReceiver* r)
{
    if (r->held != NULL)
        pfree(r->held);
    if (r->held_keys != NULL)
        pfree(r->held_keys);
    if (r->held_bits != NULL)
        pfree(r->held_bits);
    r->held = NULL;
    r->held_keys = NULL;
    r->held_bits = NULL;
    r->n_held = r->held_cap = 0;
    r->held_keys_len = r->held_keys_cap = 0;
}

// The one-scan read gives way to the two-step read: what was aggregated
// and held is dropped, and the scan goes on finding the newest event only.
static void give_up_one_pass(EventReceiver* r, const char* why)
{
    if (r->mode != READ_ONE_PASS)
        return;
    settle_before_give_up(r);
    if (r->mode != READ_ONE_PASS)
        return;
    r->mode = READ_NEWEST_ONLY;
    r->two_scans = why;
    free_held(r);
    reset_aggregation(r);
    core_call_or_error("reading the events", [&] {
        if (r->items->obj != nullptr)
            r->items->obj->clear();
    });
    discard_events(r);
    if (r->arrived != NULL) {
        r->arrived->n = 0;
        r->arrived->keys_len = 0;
    }
    r->events = 0;
    r->any = false;
    elog(DEBUG1, "recsys: reading the events split at the cutoff in a second scan: %s", why);
}

// A bitmap for the held events up to r->held_check (16 bits each at least:
// a false positive, which holds an event for nothing, at most 1 in 16).
static uint64* new_held_bits(EventReceiver* r)
{
    uint64 bits = 4096;
    while (bits < (uint64) r->held_check * 16)
        bits *= 2;
    r->held_bits_mask = bits - 1;
    return (uint64*) MemoryContextAllocHuge(r->cxt, bits / 8);
}

// Releases a held or arriving event: before the cutoff (the matrix), or,
// after the scan, a test touch; as the two-step read's receive_event does.
static void release_event(EventReceiver* r, const recsys::KeyRef& uk, const recsys::KeyRef& ik, double wv, int64 t,
                          bool touch)
{
    int32 item = r->item_identity ? (int32) ik.i : 0;
    if (!r->item_identity)
        core_call_or_error("reading the events", [&] { item = r->items->obj->add(ik); });
    if (!touch) {
        if (!r->any || t > r->newest)
            r->newest = t;
        r->any = true;
    }
    r->events++;
    queue_event(r, uk, item, wv, t, touch);
}

// Releases an event during the scan as before the cutoff whatever comes
// later (before hold_from), noting the newest so released.
static void release_early(EventReceiver* r, const recsys::KeyRef& uk, const recsys::KeyRef& ik, double wv, int64 t)
{
    if (!r->released_any || t > r->released_max)
        r->released_max = t;
    r->released_any = true;
    release_event(r, uk, ik, wv, t, false);
}

static recsys::KeyRef held_key(const EventReceiver* r, int64 v, uint32 len, bool bytes)
{
    recsys::KeyRef k;
    if (bytes) {
        k.p = r->held_keys + v;
        k.n = len;
    } else {
        k.i = v;
    }
    return k;
}

// Releases, cell by cell in arrival order, the held events before
// r->hold_from (after the scan: every held event, split at `cutoff`), and
// compacts the rest.  Returns at once if the one-scan read gives up meanwhile.
static void sweep_held(EventReceiver* r, bool final, TimestampTz cutoff)
{
    uint64* bits = NULL;
    if (!final) {
        r->held_check = Max(r->n_held * 2, r->n_held + 65536);
        if (!r->order_free) {
            bits = new_held_bits(r);
            memset(bits, 0, (Size) (r->held_bits_mask + 1) / 8);
        }
    }
    int64 kept = 0;
    Size kept_keys = 0;
    for (int64 k = 0; k < r->n_held; k++) {
        if (bits != NULL && k + HELD_PREFETCH_AHEAD < r->n_held)
            __builtin_prefetch(&bits[(r->held[k + HELD_PREFETCH_AHEAD].h & r->held_bits_mask) >> 6]);
        HeldEvent e = r->held[k];
        recsys::KeyRef uk = held_key(r, e.u, e.ulen, r->ubytes);
        recsys::KeyRef ik = held_key(r, e.i, e.ilen, r->ibytes);
        if (final) {
            if (e.t < cutoff)
                release_event(r, uk, ik, e.wv, e.t, false);
            else if (e.wv > 0)
                release_event(r, uk, ik, e.wv, e.t, true);
        } else if (e.t < r->hold_from && (bits == NULL || !held_bit(r, bits, e.h))) {
            release_early(r, uk, ik, e.wv, e.t);
        } else {
            // Kept, and so is every later event of its cell.  Its keys move
            // down (never past a key not yet read).
            if (bits != NULL)
                set_held_bit(r, bits, e.h);
            if (r->ubytes) {
                memmove(r->held_keys + kept_keys, r->held_keys + e.u, e.ulen);
                e.u = (int64) kept_keys;
                kept_keys += e.ulen;
            }
            if (r->ibytes) {
                memmove(r->held_keys + kept_keys, r->held_keys + e.i, e.ilen);
                e.i = (int64) kept_keys;
                kept_keys += e.ilen;
            }
            r->held[kept++] = e;
        }
        if (r->mode != READ_ONE_PASS) {
            if (bits != NULL)
                pfree(bits);
            return;
        }
        if ((k & 65535) == 65535)
            CHECK_FOR_INTERRUPTS();
    }
    if (final) {
        free_held(r);
        return;
    }
    r->n_held = kept;
    r->held_keys_len = kept_keys;
    if (bits != NULL) {
        pfree(r->held_bits);
        r->held_bits = bits;
    }
    r->swept_at = r->hold_from;
}

// A held event's key: an integer as it is, bytes copied to the held keys
// (their offset, and their length in *len).
static int64 hold_key(EventReceiver* r, const recsys::KeyRef& k, bool bytes, uint32* len)
{
    *len = 0;
    if (!bytes)
        return k.i;
    memcpy(r->held_keys + r->held_keys_len, k.p, k.n);
    int64 off = (int64) r->held_keys_len;
    *len = (uint32) k.n;
    r->held_keys_len += k.n;
    return off;
}

// Holds an event back (see above).
static void hold_event(EventReceiver* r, const recsys::KeyRef& uk, const recsys::KeyRef& ik, double wv, int64 t,
                       uint64 h)
{
    if (r->n_held == r->held_cap || r->held_keys_len + uk.n + ik.n > r->held_keys_cap) {
        int64 cap = r->n_held == r->held_cap ? Max(r->held_cap * 2, (int64) 4096) : r->held_cap;
        Size kcap = r->held_keys_cap;
        if (r->ubytes || r->ibytes)
            while (r->held_keys_len + uk.n + ik.n > kcap)
                kcap = Max(kcap * 2, (Size) 65536);
        if ((Size) cap * sizeof(HeldEvent) + kcap + (Size) (r->held_bits_mask + 1) / 8 > r->limit) {
            give_up_one_pass(r, "the events held back near the newest one outgrow half of maintenance_work_mem");
            return;
        }
        if (cap != r->held_cap) {
            r->held = (HeldEvent*) (r->held == NULL ? MemoryContextAllocHuge(r->cxt, sizeof(HeldEvent) * cap)
                                                    : repalloc_huge(r->held, sizeof(HeldEvent) * cap));
            r->held_cap = cap;
        }
        if (kcap != r->held_keys_cap) {
            r->held_keys = (char*) (r->held_keys == NULL ? MemoryContextAllocHuge(r->cxt, kcap)
                                                         : repalloc_huge(r->held_keys, kcap));
            r->held_keys_cap = kcap;
        }
    }
    HeldEvent* e = &r->held[r->n_held++];
    e->wv = wv;
    e->t = t;
    e->h = h;
    e->u = hold_key(r, uk, r->ubytes, &e->ulen);
    e->i = hold_key(r, ik, r->ibytes, &e->ilen);
    if (!r->order_free)
        set_held_bit(r, r->held_bits, h);
    if (r->n_held < r->held_check)
        return;
    if (r->hold_from > r->swept_at) {
        sweep_held(r, false, 0);
    } else {
        // Nothing to release yet: look again at twice as many, and (the
        // bitmap's read) a larger bitmap for the events to come.
        r->held_check = Max(r->n_held * 2, r->n_held + 65536);
        if (!r->order_free) {
            pfree(r->held_bits);
            r->held_bits = new_held_bits(r);
            memset(r->held_bits, 0, (Size) (r->held_bits_mask + 1) / 8);
            for (int64 k = 0; k < r->n_held; k++) {
                if (k + HELD_PREFETCH_AHEAD < r->n_held)
                    __builtin_prefetch(&r->held_bits[(r->held[k + HELD_PREFETCH_AHEAD].h & r->held_bits_mask) >> 6]);
                set_held_bit(r, r->held_bits, r->held[k].h);
            }
        }
    }
    if (r->mode == READ_ONE_PASS && held_bytes(r) > r->limit)
        give_up_one_pass(r, "the events held back near the newest one outgrow half of maintenance_work_mem");
}

// Tests the pending events in arrival order, as each would have been
// tested on arrival (with the hold_from of then): released (before the
// cutoff whatever comes later, and no event of its cell held) or held.
static void test_pending(EventReceiver* r)
{
    PendingEvents* p = r->arrived;
    int n = p->n;
    p->n = 0;
    TimestampTz hold_from = r->hold_from;
    for (int k = 0; k < n && r->mode == READ_ONE_PASS; k++) {
        const HeldEvent& e = p->ev[k];
        recsys::KeyRef uk, ik;
        if (r->ubytes) {
            uk.p = p->keys + e.u;
            uk.n = e.ulen;
        } else {
            uk.i = e.u;
        }
        if (r->ibytes) {
            ik.p = p->keys + e.i;
            ik.n = e.ilen;
        } else {
            ik.i = e.i;
        }
        // hold_event may sweep, which releases what is before hold_from.
        r->hold_from = p->hold_from[k];
        if (e.t < r->hold_from && !held_bit(r, r->held_bits, e.h)) {
            release_early(r, uk, ik, e.wv, e.t);
        } else {
            hold_event(r, uk, ik, e.wv, e.t, e.h);
        }
    }
    r->hold_from = hold_from;
    p->keys_len = 0;
}

// A pending event's key: an integer as it is, bytes copied to the pending
// keys (their offset, and their length in *len).
static int64 pend_key(PendingEvents* p, const recsys::KeyRef& k, bool bytes, uint32* len)
{
    *len = 0;
    if (!bytes)
        return k.i;
    if (p->keys_len + k.n > p->keys_cap) {
        p->keys_cap = Max(p->keys_cap * 2, p->keys_len + k.n);
        p->keys = (char*) repalloc_huge(p->keys, p->keys_cap);
    }
    memcpy(p->keys + p->keys_len, k.p, k.n);
    int64 off = (int64) p->keys_len;
    *len = (uint32) k.n;
    p->keys_len += k.n;
    return off;
}

// receive_event's part for a usable event (keys, time and weight present)
// when the scan finds the cutoff.  Called in r->rowcxt; returns in `old`.
// The event waits in r->arrived, its word of the held events' bitmap
// prefetched: tested one at a time on arrival, the scan waited on a cache
// miss per row.
static void receive_one_pass(EventReceiver* r, Datum* v, bool* null, double wt, TimestampTz t, MemoryContext old)
{
    if (wt > 0 && (!r->usable_any || t > r->usable_newest)) {
        r->usable_newest = t;
        r->usable_any = true;
        // hold_from = t - margin, saturating at -infinity.
        r->hold_from = t < DT_NOBEGIN + r->margin_us ? DT_NOBEGIN : t - r->margin_us;
    }
    if (r->mode != READ_ONE_PASS || t >= r->split->end) {
        MemoryContextSwitchTo(old);
        return;
    }
    double wv = wt * (null[4] ? 1.0 : DatumGetFloat8(v[4]));
    recsys::KeyRef uk = key_of(v[0], r->ubase);
    recsys::KeyRef ik = key_of(v[1], r->ibase);
    MemoryContextSwitchTo(old);
    if (!std::isfinite(wv)) {
        test_pending(r);   // (they may give up first, for another reason)
        give_up_one_pass(r, "an event's weight times value is not finite");
        return;
    }
    if ((r->user_type == INT4OID && (uk.i < PG_INT32_MIN || uk.i > PG_INT32_MAX)) ||
        (r->item_type == INT4OID && (ik.i < PG_INT32_MIN || ik.i > PG_INT32_MAX))) {
        test_pending(r);
        give_up_one_pass(r, "a key does not fit integer");
        return;
    }
    if (r->order_free) {
        // Tested on arrival: nothing is held for its cell's sake.
        if (t < r->hold_from) {
            release_early(r, uk, ik, wv, t);
        } else {
            hold_event(r, uk, ik, wv, t, 0);
        }
        return;
    }
    uint64 h = cell_hash(r, uk, ik);
    PendingEvents* p = r->arrived;
    HeldEvent* e = &p->ev[p->n];
    e->wv = wv;
    e->t = t;
    e->h = h;
    e->u = pend_key(p, uk, r->ubytes, &e->ulen);
    e->i = pend_key(p, ik, r->ibytes, &e->ilen);
    p->hold_from[p->n] = r->hold_from;
    __builtin_prefetch(&r->held_bits[(h & r->held_bits_mask) >> 6]);
    if (++p->n == ONE_PASS_BATCH || p->keys_len >= 65536)
        test_pending(r);
}

// Bytes the two-step read's dictionaries and aggregation would take at
// most, holding what the one-scan read's hold now (the same keys and
// cells): their tables and arrays grow with their counts alone, but a byte
// dictionary's string grows by doubling from the lengths in the order they
// came, to at most twice its length.
static Size memory_bound(EventReceiver* r)
{
    Size bytes = 0;
    core_call_or_error("reading the events", [&] {
        const recsys::KeyDict* dicts[2] = {r->users->obj, r->items->obj};
        for (const recsys::KeyDict* d : dicts)
            if (d != nullptr)
                bytes += d->memory_bytes() - d->arena_capacity() + Max(d->arena_bytes() * 2, (Size) 16);
        bytes += r->agg->obj->memory_bytes();
    });
    return bytes;
}

// The mapped columns of a row straight from its heap tuple in the buffer,
// the common case: the scan's own slot (no projection), a tuple without
// NULLs that has every column up to the last one needed.  What
// slot_deform_heap_tuple does for those columns (the same offsets and
// Datums), without filling the slot's arrays for the other columns or the
// calls through the slot's operations.  False: the slot must deform.
static pg_attribute_always_inline bool deform_event(const EventReceiver* r, TupleTableSlot* slot, Datum* v,
                                                    bool* null)
{
    if (slot->tts_ops != &TTSOpsBufferHeapTuple)
        return false;
    HeapTuple tup = ((BufferHeapTupleTableSlot*) slot)->base.tuple;
    if (tup == NULL || HeapTupleHasNulls(tup) || HeapTupleHeaderGetNatts(tup->t_data) < r->fetch)
        return false;
    TupleDesc desc = slot->tts_tupleDescriptor;
    const char* tp = (const char*) tup->t_data + tup->t_data->t_hoff;
    uint32 off = 0;
    for (int a = 0; a < r->fetch; a++) {
        Form_pg_attribute att = TupleDescAttr(desc, a);
        if (att->attlen == -1)
            off = att_align_pointer(off, att->attalign, -1, tp + off);
        else
            off = att_align_nominal(off, att->attalign);
        int f = r->field_of[a];
        if (f >= 0)
            v[f] = fetchatt(att, tp + off);
        off = att_addlength_pointer(off, att->attlen, tp + off);
    }
    for (int k = 0; k < 5; k++)
        null[k] = r->col[k] < 0;
    if (r->col[4] < 0)
        v[4] = (Datum) 0;
    return true;
}

static bool receive_event(TupleTableSlot* slot, DestReceiver* self)
{
    EventReceiver* r = (EventReceiver*) self;
    if (r->mode == READ_STOP)
        return false;   // SOURCE_MAX_TIME finds the cutoff: no need of the rows
    Datum v[5];
    bool null[5];
    if (!deform_event(r, slot, v, null)) {
        slot_getsomeattrs(slot, r->fetch);
        for (int k = 0; k < 5; k++) {
            int c = r->col[k];
            v[k] = c >= 0 ? slot->tts_values[c] : (Datum) 0;
            null[k] = c >= 0 ? slot->tts_isnull[c] : true;
        }
    }
    if ((++r->rows & 1023) == 0) {
        progress_add_rows(1024);         // the rest at the scan's end
        MemoryContextReset(r->rowcxt);   // detoasted keys, if any
    }
    if (null[0] || null[1] || null[3]) {
        r->ignored_null++;
        return true;
    }
    if (null[2]) {
        r->ignored_type++;
        return true;
    }
    MemoryContext old = MemoryContextSwitchTo(r->rowcxt);
    struct varlena* et = (struct varlena*) DatumGetPointer(v[2]);
    if (VARATT_IS_COMPRESSED(et) || VARATT_IS_EXTERNAL(et))
        et = pg_detoast_datum_packed(et);   // (DatumGetTextPP without a call for the plain ones)
    double wt = weight_of(r, VARDATA_ANY(et), (int) VARSIZE_ANY_EXHDR(et));
    if (std::isnan(wt) || wt == 0) {
        MemoryContextSwitchTo(old);
        r->ignored_type++;
        return true;
    }
    TimestampTz t = DatumGetTimestampTz(v[3]);
    if (r->mode != READ_KNOWN) {
        receive_one_pass(r, v, null, wt, t, old);
        return true;
    }
    if (r->split != NULL && t >= r->split->end) {
        // After the window: not read.
        MemoryContextSwitchTo(old);
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
        return true;
    }
    recsys::KeyRef uk = key_of(v[0], r->ubase);
    recsys::KeyRef ik = key_of(v[1], r->ibase);
    MemoryContextSwitchTo(old);
    if (r->user_type == INT4OID)
        check_fits_integer(uk.i, "user");
    if (r->item_type == INT4OID)
        check_fits_integer(ik.i, "item");
    int32 item = r->item_identity ? (int32) ik.i : 0;
    if (!r->item_identity)
        core_call_or_error("reading the events", [&] { item = r->items->obj->add(ik); });
    r->events++;
    if (!r->spilling)
        queue_event(r, uk, item, wv, t, touch);
    else
        spill_event(r, uk, item, wv, t, touch);
    return true;
}

static void event_receiver_startup(DestReceiver* self, int operation, TupleDesc desc)
{
    EventReceiver* r = (EventReceiver*) self;
    if (desc->natts != r->natts)
        elog(ERROR, "recsys: the events query returned %d columns, not %d", desc->natts, r->natts);
    r->ubase = getBaseType(TupleDescAttr(desc, r->col[0])->atttypid);
    r->ibase = getBaseType(TupleDescAttr(desc, r->col[1])->atttypid);
    static const Oid ok[6] = {INT2OID, INT4OID, INT8OID, TEXTOID, VARCHAROID, UUIDOID};
    bool uok = false, iok = false;
    for (int i = 0; i < 6; i++) {
        uok |= r->ubase == ok[i];
        iok |= r->ibase == ok[i];
    }
    if (r->mode == READ_ONE_PASS) {
        // SOURCE_MAX_TIME compares the event types with the column's
        // collation: only a deterministic one is the byte comparison here.
        Oid coll = TupleDescAttr(desc, r->col[2])->attcollation;
        if (OidIsValid(coll) && !get_collation_isdeterministic(coll)) {
            r->mode = READ_STOP;
            r->two_scans = "the event type column has a nondeterministic collation";
            return;
        }
        // The two-step read reports these after the cutoff's own errors.
        if (!uok || !iok || !compatible_id_type(r->ubase, r->user_type) ||
            !compatible_id_type(r->ibase, r->item_type)) {
            give_up_one_pass(r, "the user or item column no longer has a type the mapping can read");
            return;
        }
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
    flush_events(r);
    progress_add_rows(r->rows & 1023);
}

// Errors out when the item dictionary alone takes more than half of the
// aggregation's share of the budget: no split of the users helps then.
static void check_item_dictionary(EventReceiver* r, Size budget)
{
    Size item_bytes = 0;
    core_call_or_error("reading the events", [&] {
        item_bytes = r->items->obj != nullptr ? r->items->obj->memory_bytes() : 0;
    });
    if (item_bytes > r->limit / 2)
        ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                        errmsg("recsys: the item dictionary needs about %zu MB, more than a quarter of "
                               "maintenance_work_mem (%zu MB)",
                               item_bytes / (1024 * 1024) + 1, budget / (1024 * 1024)),
                        errhint("Raise it for this session, e.g. SET maintenance_work_mem = '%zuMB'.",
                                item_bytes * 4 / (1024 * 1024) + 64)));
}

// Aggregates the events of part p from its file; false when they do not
// fit the budget (the aggregation is then incomplete).
static bool aggregate_part(EventReceiver* r, Part* p, char** keybuf, Size* keycap)
{
    if (BufFileSeek(p->file, 0, 0, SEEK_SET) != 0)
        ereport(ERROR, (errcode_for_file_access(), errmsg("recsys: could not rewind a temporary file of events")));
    SpillRec rec;
    int64 k = 0;
    while (spill_read(p->file, &rec, keybuf, keycap)) {
        if ((++k & 65535) == 0)
            CHECK_FOR_INTERRUPTS();
        recsys::KeyRef uk;
        uk.i = rec.ikey;
        uk.p = r->ubytes ? *keybuf : NULL;
        uk.n = rec.keylen;
        if (aggregate(r, uk, rec.item, rec.wv, rec.t, rec.touch != 0) != AGG_OK)
            return false;
    }
    return true;
}

// Splits part p (at index idx of r->parts, its file closed) in two halves
// by user, appended to r->parts.
static void split_part(EventReceiver* r, int idx, char** keybuf, Size* keycap)
{
    Part p = r->parts[idx];
    if (p.modulus >= ((uint64) 1 << 40))
        ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                        errmsg("recsys: the events of one part of the users do not fit the memory budget even "
                               "split 2^40 ways"),
                        errhint("Raise maintenance_work_mem for this session.")));
    add_part(r, p.modulus * 2, p.residue);
    add_part(r, p.modulus * 2, p.residue + p.modulus);
    BufFile* lo = r->parts[r->nparts - 2].file;
    BufFile* hi = r->parts[r->nparts - 1].file;
    if (BufFileSeek(p.file, 0, 0, SEEK_SET) != 0)
        ereport(ERROR, (errcode_for_file_access(), errmsg("recsys: could not rewind a temporary file of events")));
    SpillRec rec;
    while (spill_read(p.file, &rec, keybuf, keycap)) {
        recsys::KeyRef uk;
        uk.i = rec.ikey;
        uk.p = r->ubytes ? *keybuf : NULL;
        uk.n = rec.keylen;
        uint64 h = 0;
        core_call_or_error("reading the events", [&] { h = recsys::key_hash(uk, r->ubytes); });
        spill_write(h % (p.modulus * 2) == p.residue ? lo : hi, &rec, *keybuf);
    }
    BufFileClose(p.file);
    r->parts[idx].file = NULL;
    elog(DEBUG1, "recsys: the events of a part of the users exceed %zu MB: reading it in two halves",
         r->limit / (1024 * 1024));
}

// How many cells ahead emit_aggregation prefetches their users' remap entries.
#define EMIT_PREFETCH_AHEAD 16

// Read in parts: notes the key of each user of this part's touches (before
// they are renumbered: r->touches hold the part's first-seen indices, remap
// takes them to its key order, with `kept` possibly set) under its global
// index, base + that.
static void note_test_users(EventReceiver* r, const uint32* remap, uint32 kept, int64 base)
{
    if (r->n_touches == 0)
        return;
    int32* local = (int32*) palloc(sizeof(int32) * (Size) r->n_touches);
    for (int64 k = 0; k < r->n_touches; k++)
        local[k] = (int32) (remap[r->touches[k].user] & ~kept);
    std::sort(local, local + r->n_touches);
    int64 n = std::unique(local, local + r->n_touches) - local;
    MemoryContext prev = MemoryContextSwitchTo(r->cxt);
    r->test_users = (TestUser*) grow_array(r->test_users, &r->test_users_cap, r->n_test_users + n, sizeof(TestUser));
    for (int64 k = 0; k < n; k++) {
        TestUser* t = &r->test_users[r->n_test_users++];
        t->user = (int32) (local[k] + base);
        if (!r->ubytes) {
            core_call_or_error("reading the events", [&] { t->key = r->users->obj->int_key(local[k]); });
            t->len = 0;
            continue;
        }
        const char* p = NULL;
        size_t len = 0;
        core_call_or_error("reading the events", [&] { p = r->users->obj->bytes_data(local[k], &len); });
        r->test_keys = (char*) grow_array(r->test_keys, &r->test_keys_cap, r->test_keys_len + (int64) len, 1);
        memcpy(r->test_keys + r->test_keys_len, p, len);
        t->key = r->test_keys_len;
        t->len = (int32) len;
        r->test_keys_len += (int64) len;
    }
    MemoryContextSwitchTo(prev);
    pfree(local);
}

// Read in parts: renumbers the test users of the touches and of the kept
// histories 0, 1, ... in their keys' order (KeyDict::sort_by_key's:
// integers by value, bytes by memcmp then length).  Read in one part, the
// users are numbered in that order already; in parts, part after part, in
// an order that depends on how many parts the budget and the row estimate
// asked for.  Evaluation adds its users' figures up and draws its bootstrap
// in the users' order: with this, its result does not depend on either.
static void order_test_users(EventReceiver* r, CellBuffer* out)
{
    int64 n = r->n_test_users;
    if (n == 0)
        return;
    TestUser* t = r->test_users;
    const char* keys = r->test_keys;
    if (r->ubytes)
        std::sort(t, t + n, [keys](const TestUser& a, const TestUser& b) {
            int c = memcmp(keys + a.key, keys + b.key, (size_t) Min(a.len, b.len));
            return c < 0 || (c == 0 && a.len < b.len);
        });
    else
        std::sort(t, t + n, [](const TestUser& a, const TestUser& b) { return a.key < b.key; });
    // t[rank].user -> rank, looked up by global index.
    for (int64 k = 0; k < n; k++)
        t[k].key = k;
    std::sort(t, t + n, [](const TestUser& a, const TestUser& b) { return a.user < b.user; });
    auto rank_of = [t, n](int32 user) -> int32 {
        const TestUser* p = std::lower_bound(t, t + n, user, [](const TestUser& a, int32 u) { return a.user < u; });
        if (p == t + n || p->user != user)
            elog(ERROR, "recsys: a test user without a key");
        return (int32) p->key;
    };
    TouchBuffer* touches = &r->split->touches;
    for (int64 k = 0; k < touches->n; k++)
        touches->data[k].user = rank_of(touches->data[k].user);
    for (int64 k = 0; k < out->n_kept; k++)
        out->kept[k].user = rank_of(out->kept[k].user);
}

// Emits the aggregation (one part of the users, or all of them) into out:
// the part's users numbered from *user_base in key order, the items
// renumbered by item_remap (NULL: as they are); its touches join
// split->touches.
static void emit_aggregation(EventReceiver* r, CellBuffer* out, EventsRead* res, const int32* item_remap,
                             int64* user_base, int64* all_touch_cap)
{
    int64 part_users = 0;
    core_call_or_error("reading the events", [&] { part_users = (int64) r->users->obj->size(); });
    if (*user_base + part_users > PG_INT32_MAX)
        ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                        errmsg("recsys: more than 2147483647 distinct users")));
    // Users in key order: the matrix does not depend on the rows' order.
    int32* user_remap = (int32*) MemoryContextAllocHuge(CurrentMemoryContext,
                                                        sizeof(int32) * (Size) Max(part_users, (int64) 1));
    core_call_or_error("reading the events", [&] {
        std::vector<int32_t> m = r->users->obj->sort_by_key();
        std::copy(m.begin(), m.end(), user_remap);
    });
    int64 base = *user_base;
    EventsSplit* split = r->split;
    // A test user, whose cells are kept aside, has KEPT_USER set in its
    // user_remap entry (free: the part's users are fewer than 2^31): one
    // random access per cell emitted, not two.
    const uint32 KEPT_USER = 0x80000000u;
    uint32* remap = (uint32*) user_remap;
    bool any_kept = false;
    if (split != NULL) {
        // This part's touches join the others in global indices; its test
        // users' cells are kept aside as they are emitted.
        if (split->keep_histories) {
            for (int64 k = 0; k < r->n_touches; k++)
                remap[r->touches[k].user] |= KEPT_USER;
            any_kept = r->n_touches > 0;
        }
        if (r->spilling)
            note_test_users(r, remap, KEPT_USER, base);
        MemoryContext prev = MemoryContextSwitchTo(r->cxt);
        for (int64 k = 0; k < r->n_touches; k++) {
            r->touches[k].user = (int32) (remap[r->touches[k].user] & ~KEPT_USER);
            if (item_remap != NULL)
                r->touches[k].item = item_remap[r->touches[k].item];
        }
        TouchBuffer* all = &split->touches;
        all->data = (recsys::Touch*) grow_array(all->data, all_touch_cap, all->n + r->n_touches,
                                               sizeof(recsys::Touch));
        for (int64 k = 0; k < r->n_touches; k++) {
            all->data[all->n].user = (int32) (r->touches[k].user + base);
            all->data[all->n].item = r->touches[k].item;
            all->n++;
        }
        MemoryContextSwitchTo(prev);
    }
    const size_t chunk = 4096;
    recsys::Triplet* buf = (recsys::Triplet*) palloc(sizeof(recsys::Triplet) * chunk);
    size_t pos = 0, n = 0;
    int64 dropped = 0;
    do {
        core_call_or_error("reading the events", [&] {
            n = r->agg->obj->emit_into(&pos, res->newest, buf, chunk, &dropped);
            // The table's emitted slots are not read again: their memory
            // goes back as the cells' buffer grows (the aggregation is
            // reset or freed after this).
            r->agg->obj->release_emitted(pos);
        });
        // The cells come in the cell table's order, their users at random:
        // each one's remap entry (4 bytes a user, 3.7 MB at 10M events,
        // beyond the caches) is fetched a few cells ahead.
        for (size_t k = 0; k < Min(n, (size_t) EMIT_PREFETCH_AHEAD); k++)
            __builtin_prefetch(&remap[buf[k].user]);
        for (size_t k = 0; k < n; k++) {
            if (k + EMIT_PREFETCH_AHEAD < n) {
                __builtin_prefetch(&remap[buf[k + EMIT_PREFETCH_AHEAD].user]);
                if (item_remap != NULL)
                    __builtin_prefetch(&item_remap[buf[k + EMIT_PREFETCH_AHEAD].item]);
            }
            uint32 m = remap[buf[k].user];
            cell_buffer_append_kept(out, (int32) ((m & ~KEPT_USER) + base),
                                    item_remap != NULL ? item_remap[buf[k].item] : buf[k].item, buf[k].weight,
                                    any_kept && (m & KEPT_USER) != 0);
        }
    } while (n > 0);
    pfree(buf);
    pfree(user_remap);
    res->cells_dropped += dropped;
    *user_base += part_users;
}

// Logs at least this big (as ANALYZE saw them) are read in a pipeline.
#define PIPELINE_MIN_ROWS 100000.0

// Whether the read aggregates on a second thread while the scan goes on
// (max_parallel_maintenance_workers > 0, two CPUs, a log big enough to gain,
// and the batches' memory small beside the budget), and its batches.
static void start_pipeline(EventReceiver* r)
{
    unsigned cpus = 0;
    core_call_or_error("reading the events", [&] { cpus = std::thread::hardware_concurrency(); });
    Size two_batches = 2 * event_batch_bytes(EVENT_GROUP_EVENTS);
    r->pipelined = max_parallel_maintenance_workers > 0 && cpus >= 2 && r->est_rows >= PIPELINE_MIN_ROWS &&
                   two_batches * 32 <= r->limit;
    if (r->pipelined) {
        r->batch = new_event_batch(EVENT_GROUP_EVENTS);
        r->pending = new_event_batch(EVENT_GROUP_EVENTS);
        // Created after the users and the cells: on an error the context's
        // reset joins the thread before it deletes what the thread uses.
        r->worker = OwnedByContext<recsys::detail::AsyncWorker>::create(r->cxt);
        core_call_or_error("reading the events", [&] { r->worker->obj = new recsys::detail::AsyncWorker(); });
    } else {
        r->batch = new_event_batch(EVENT_BATCH);
    }
    elog(DEBUG1, "recsys: reading the events %s (max_parallel_maintenance_workers = %d, %u CPUs, about %.0f rows)",
         r->pipelined ? "with a second thread for the aggregation" : "on one thread", max_parallel_maintenance_workers,
         cpus, r->est_rows);
}

// Stops the worker thread (its batch done or dropped) and frees the batches.
static void end_pipeline(EventReceiver* r)
{
    if (r->worker != NULL) {
        if (r->in_flight)
            discard_events(r);
        r->worker->release();   // joins the thread
        r->worker = NULL;
        elog(DEBUG1,
             "recsys: the aggregation's thread took " INT64_FORMAT " batches (the scan added the users of " INT64_FORMAT
             "); the scan waited %.3f s for it, faulting in %.0f MB of the cell table meanwhile",
             r->handed, r->scan_users, r->waited_us / 1e6, r->prefaulted / 1048576.0);
    }
    free_event_batch(r->batch);
    free_event_batch(r->pending);
    r->batch = r->pending = NULL;
}

// This backend's CPU time (user and system) so far, for the debug line
// that says what reading cost on a machine other work shares.
static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double) (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// The calling thread's CPU time alone (the aggregation's worker aside).
static double thread_cpu_seconds(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0;
    return (double) ts.tv_sec + ts.tv_nsec / 1e9;
}

void read_events(const SourceRel* src, const EventWeights* w, CellBuffer* out, EventsRead* res,
                 EventsSplit* split)
{
    double cpu0 = cpu_seconds(), thread0 = thread_cpu_seconds();
    memset(res, 0, sizeof *res);
    MemoryContext cxt = CurrentMemoryContext;
    Size budget = (Size) maintenance_work_mem * 1024;
    bool identity = src->item_type == INT4OID;
    bool ibytes = src->item_type == TEXTOID || src->item_type == UUIDOID;

    res->items = OwnedByContext<recsys::KeyDict>::create(cxt);
    EventReceiver r = EventReceiver();   // zeroed; trivially destructible
    r.w = w;
    for (int l = 0; l < WEIGHT_LENS; l++)
        r.type_of_len[l] = -1;
    for (int i = 0; i < w->n; i++)
        if (w->lens[i] < WEIGHT_LENS)
            r.type_of_len[w->lens[i]] = r.type_of_len[w->lens[i]] == -1 ? (int16) i : (int16) -2;
    r.item_identity = identity;
    r.user_type = src->user_type;
    r.item_type = src->item_type;
    r.ubytes = src->user_type == TEXTOID || src->user_type == UUIDOID;
    r.limit = budget / 2;
    r.decay.half_life_us = src->half_life_days * 86400.0 * 1e6;
    r.items = res->items;
    r.users = OwnedByContext<recsys::KeyDict>::create(cxt);
    r.agg = OwnedByContext<recsys::CellAggregator>::create(cxt);
    r.rowcxt = AllocSetContextCreate(cxt, "recsys event row", ALLOCSET_SMALL_SIZES);
    r.split = split;
    r.arrived = NULL;
    r.cxt = cxt;
    double est_items;
    source_estimate(src, &r.est_rows, &est_items);
    start_pipeline(&r);
    if (split != NULL) {
        split->touches.data = NULL;
        split->touches.n = 0;
        split->two_scans = NULL;
    }
    int64 all_touch_cap = 0;
    core_call_or_error("reading the events", [&] {
        if (!identity)
            res->items->obj = new recsys::KeyDict(ibytes);
    });
    reset_aggregation(&r);
    // The cell table at the size its doublings would reach (see
    // CellAggregator::reserve): less memory touched, no old table beside a
    // new one.
    int64 hint = cells_hint(src, r.est_rows);
    if (hint > 0) {
        core_call_or_error("reading the events", [&] {
            r.agg->obj->reserve(hint);
            Size bytes = 0;
            r.agg->obj->table_span(&r.prefault_at, &bytes);
            r.prefault_end = r.prefault_at + bytes;
        });
        elog(DEBUG1, "recsys: the cell table sized for about " INT64_FORMAT " cells (the newest model of %s)",
             hint, src->qualified);
    }
    if (split != NULL && split->find_cutoff) {
        r.mode = READ_ONE_PASS;
        r.order_free = src->vcol == NULL && !r.decay.on();
        for (int i = 0; i < w->n; i++)
            r.order_free = r.order_free && w->weights[i] == std::floor(w->weights[i]) &&
                           std::fabs(w->weights[i]) <= 65536.0;
        r.margin_us = ((int64) split->hold_days + 2) * USECS_PER_DAY;
        r.hold_from = DT_NOBEGIN;
        r.swept_at = DT_NOBEGIN;
        r.held_check = 65536;
        r.held_bits = new_held_bits(&r);
        memset(r.held_bits, 0, (Size) (r.held_bits_mask + 1) / 8);
        r.arrived = (PendingEvents*) palloc0(sizeof(PendingEvents));
        r.arrived->keys_cap = 1024;
        r.arrived->keys = (char*) palloc(r.arrived->keys_cap);
    }
    // (In one scan finding the cutoff the first batch's users go to the
    // worker: the scan's thread has the held events to test.  Not when the
    // read is order-free: that thread then tests only each event's time.)
    r.users_on_scan = r.pipelined;
    r.batch->users_added = r.users_on_scan && (r.mode != READ_ONE_PASS || r.order_free);

    // The one scan of the source.
    char* sql = source_events_sql(src, r.col, &r.natts);
    r.fetch = 0;
    for (int k = 0; k < 5; k++)
        r.fetch = Max(r.fetch, r.col[k] + 1);
    for (int a = 0; a < r.fetch; a++)
        r.field_of[a] = -1;
    for (int k = 0; k < 5; k++)
        if (r.col[k] >= 0)
            r.field_of[r.col[k]] = (signed char) k;
    scan_events(src, sql, &r);
    res->scans = 1;
    if (r.arrived != NULL) {
        if (r.mode == READ_ONE_PASS)
            test_pending(&r);
        pfree(r.arrived->keys);
        pfree(r.arrived);
        r.arrived = NULL;
    }
    if (r.mode != READ_KNOWN) {
        // The scan found the newest event (or, stopped, leaves it to
        // SOURCE_MAX_TIME): the cutoff, or its errors, now.
        split->cutoff = split->cutoff_of(split->cutoff_arg, r.mode == READ_STOP, r.usable_any, r.usable_newest);
        if (r.mode == READ_ONE_PASS && r.released_any && r.released_max >= split->cutoff)
            give_up_one_pass(&r, "an event released as before the cutoff is not");   // (never: the margin)
        if (r.mode == READ_ONE_PASS)
            sweep_held(&r, true, split->cutoff);
        if (r.mode == READ_ONE_PASS) {
            flush_events(&r);
            if (r.mode == READ_ONE_PASS && memory_bound(&r) > r.limit)
                give_up_one_pass(&r, "the two-step read might have read the users in parts");
        }
        if (r.mode != READ_ONE_PASS) {
            // The two-step read, split at the cutoff now known.
            const char* why = r.two_scans;
            free_held(&r);
            if (r.touches != NULL)
                pfree(r.touches);
            end_pipeline(&r);
            r.users->release();
            r.agg->release();
            res->items->release();
            MemoryContextDelete(r.rowcxt);
            progress_add_rows(-r.rows);   // the rows are counted again
            EventsSplit again = *split;
            again.find_cutoff = false;
            read_events(src, w, out, res, &again);
            split->touches = again.touches;
            split->two_scans = why;
            res->scans = 2;
            return;
        }
    }
    end_pipeline(&r);
    res->ignored_null = r.ignored_null;
    res->ignored_type = r.ignored_type;
    res->newest = r.newest;
    res->any = r.any;
    res->events = r.events;

    // The items in key order: results do not depend on the rows' order.
    int32* item_remap = NULL;
    if (!identity) {
        int64 n_items = 0;
        core_call_or_error("reading the events", [&] { n_items = (int64) res->items->obj->size(); });
        item_remap = (int32*) MemoryContextAllocHuge(cxt, sizeof(int32) * (Size) Max(n_items, (int64) 1));
        core_call_or_error("reading the events", [&] {
            std::vector<int32_t> m = res->items->obj->sort_by_key();
            std::copy(m.begin(), m.end(), item_remap);
        });
    }
    int64 user_base = 0;
    if (!r.spilling) {
        emit_aggregation(&r, out, res, item_remap, &user_base, &all_touch_cap);
    } else {
        // The parts, one at a time; one that does not fit is split in two.
        check_item_dictionary(&r, budget);
        Size keycap = 64;
        char* keybuf = (char*) palloc(keycap);
        for (int idx = 0; idx < r.nparts; idx++) {
            reset_aggregation(&r);
            if (!aggregate_part(&r, &r.parts[idx], &keybuf, &keycap)) {
                reset_aggregation(&r);
                split_part(&r, idx, &keybuf, &keycap);
                continue;
            }
            BufFileClose(r.parts[idx].file);
            r.parts[idx].file = NULL;
            emit_aggregation(&r, out, res, item_remap, &user_base, &all_touch_cap);
            res->parts++;
        }
        pfree(keybuf);
        if (split != NULL)
            order_test_users(&r, out);
    }
    res->users = user_base;
    if (r.touches != NULL)
        pfree(r.touches);
    if (item_remap != NULL)
        pfree(item_remap);
    out->events = res->events;
    out->ignored_null = res->ignored_null;
    out->ignored_type = res->ignored_type;
    r.users->release();
    r.agg->release();
    MemoryContextDelete(r.rowcxt);
    elog(DEBUG1, "recsys: reading the events took %.3f s of CPU, %.3f s of it on the backend's thread (" INT64_FORMAT
         " used)", cpu_seconds() - cpu0, thread_cpu_seconds() - thread0, res->events);
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
