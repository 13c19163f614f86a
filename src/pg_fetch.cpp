// pg_fetch.cpp - streaming the weighted matrix and test touches into arrays.
//
// The query's rows go to a DestReceiver that appends their values to a huge
// palloc'd array: no tuple is copied into an SPI tuptable, and the executor
// checks for interrupts as it runs.
#include "pg_fetch.hpp"
#include "pg_progress.hpp"

extern "C" {
#include "executor/spi.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
}

// Grows a huge palloc'd array (in CurrentMemoryContext) to hold at least
// `need` elements of `elem` bytes; errors out (54000) over maintenance_work_mem.
void* grow_array(void* data, int64* cap, int64 need, Size elem)
{
    if (need <= *cap)
        return data;
    int64 newcap = Max(need, *cap * 2);
    newcap = Max(newcap, (int64) 1024);
    check_memory_budget((Size) newcap * elem * 2, "reading the interactions");
    *cap = newcap;
    if (data == NULL)
        return MemoryContextAllocHuge(CurrentMemoryContext, (Size) newcap * elem);
    return repalloc_huge(data, (Size) newcap * elem);
}

// A receiver that appends (int4, int4[, float8, int8]) rows to a buffer.
struct ArrayReceiver {
    DestReceiver pub;
    MemoryContext cxt;    // where the buffer lives
    bool cells;           // CellBuffer (4 columns) or TouchBuffer (2 columns)
    CellBuffer* cell_out;
    TouchBuffer* touch_out;
    int64 cap;
};

static bool receive_row(TupleTableSlot* slot, DestReceiver* self)
{
    ArrayReceiver* r = (ArrayReceiver*) self;
    slot_getallattrs(slot);
    Datum* v = slot->tts_values;
    bool* null = slot->tts_isnull;
    // Progress in source rows: a cell counts the events summed into it.
    progress_add_rows(r->cells ? (null[3] ? 0 : DatumGetInt64(v[3])) : 1);
    if (r->cells && null[0] && !null[1] && !null[3]) {
        // One of matrix_sql's two rows of ignored counts.
        if (DatumGetInt32(v[1]) == -1)
            r->cell_out->ignored_null += DatumGetInt64(v[3]);
        else
            r->cell_out->ignored_type += DatumGetInt64(v[3]);
        return true;
    }
    if (null[0] || null[1] || (r->cells && null[2]))
        return true;   // the queries produce none of these; be safe anyway
    MemoryContext old = MemoryContextSwitchTo(r->cxt);
    if (r->cells) {
        CellBuffer* out = r->cell_out;
        cell_buffer_append(out, DatumGetInt32(v[0]), DatumGetInt32(v[1]), DatumGetFloat8(v[2]));
        if (!null[3])
            out->events += DatumGetInt64(v[3]);
    } else {
        TouchBuffer* out = r->touch_out;
        out->data = (recsys::Touch*) grow_array(out->data, &r->cap, out->n + 1, sizeof(recsys::Touch));
        recsys::Touch* t = &out->data[out->n++];
        t->user = DatumGetInt32(v[0]);
        t->item = DatumGetInt32(v[1]);
    }
    MemoryContextSwitchTo(old);
    return true;
}

// Checks the query's columns: (int4, int4, float8, int8) or (int4, int4).
static void receiver_startup(DestReceiver* self, int operation, TupleDesc desc)
{
    ArrayReceiver* r = (ArrayReceiver*) self;
    static const Oid cell_types[4] = {INT4OID, INT4OID, FLOAT8OID, INT8OID};
    int need = r->cells ? 4 : 2;
    bool ok = desc->natts == need;
    for (int i = 0; ok && i < need; i++)
        ok = TupleDescAttr(desc, i)->atttypid == cell_types[i];
    if (!ok)
        ereport(ERROR, (errcode(ERRCODE_DATATYPE_MISMATCH),
                        errmsg("recsys: the query must return %s",
                               r->cells ? "(integer, integer, double precision, bigint)" : "(integer, integer)")));
}

static void receiver_noop(DestReceiver* self) {}

// Runs sql read-only with params, sending every row to the receiver.
static void receive_into(const char* sql, ParamListInfo params, ArrayReceiver* r)
{
    r->pub.receiveSlot = receive_row;
    r->pub.rStartup = receiver_startup;
    r->pub.rShutdown = receiver_noop;
    r->pub.rDestroy = receiver_noop;
    r->pub.mydest = DestTuplestore;   // not DestNone: SPI would report SPI_OK_UTILITY
    r->cxt = CurrentMemoryContext;

    SPIExecuteOptions opt;
    memset(&opt, 0, sizeof opt);
    opt.params = params;
    opt.read_only = true;
    opt.tcount = 0;
    opt.dest = &r->pub;
    int rc = SPI_execute_extended(sql, &opt);
    if (rc != SPI_OK_SELECT)
        elog(ERROR, "recsys: an internal query failed: %s", SPI_result_code_string(rc));
}

void fetch_cells_sql(const char* sql, CellBuffer* out)
{
    // The aggregation's hash table gets half of maintenance_work_mem (work_mem
    // times hash_mem_multiplier), the cell buffer the other half, instead of
    // spilling at the session's work_mem; JIT-compiling the aggregation
    // costs more than it saves on one scan.
    int nest = NewGUCNestLevel();
    char wm[32];
    double hash_kb = maintenance_work_mem / 2.0 / Max(hash_mem_multiplier, 1.0);
    snprintf(wm, sizeof wm, "%d", Max((int) hash_kb, 64));
    (void) set_config_option("work_mem", wm, PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
    (void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);

    ArrayReceiver r;
    memset(&r, 0, sizeof r);
    r.cells = true;
    r.cell_out = out;   // set up by cell_buffer_init
    receive_into(sql, NULL, &r);
    AtEOXact_GUC(true, nest);
}

void fetch_touches_sql(const char* sql, TouchBuffer* out)
{
    ArrayReceiver r;
    memset(&r, 0, sizeof r);
    r.cells = false;
    r.touch_out = out;
    out->data = NULL;
    out->n = 0;
    receive_into(sql, NULL, &r);
}

void check_memory_budget(Size bytes, const char* what)
{
    Size budget = (Size) maintenance_work_mem * 1024;
    if (bytes > budget)
        ereport(ERROR,
                (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                 errmsg("recsys: %s needs about %zu MB, more than maintenance_work_mem (%zu MB)",
                        what, bytes / (1024 * 1024) + 1, budget / (1024 * 1024)),
                 errhint("Raise it for this session, e.g. SET maintenance_work_mem = '%zuMB', or lower neighbors.",
                         bytes / (1024 * 1024) + 64)));
}
