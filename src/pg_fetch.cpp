// pg_fetch.cpp - cursor reads of the weighted matrix and of test touches.
#include "pg_fetch.hpp"

extern "C" {
#include "executor/spi.h"
#include "miscadmin.h"
}

static const long FETCH_BATCH = 50000;

// Opens a read-only cursor planned for the whole result (not fast-start).
static Portal open_cursor(const char* sql)
{
    SPIPlanPtr plan = SPI_prepare_cursor(sql, 0, NULL, CURSOR_OPT_NO_SCROLL);
    if (plan == NULL)
        elog(ERROR, "recsys: SPI_prepare_cursor failed: %s", SPI_result_code_string(SPI_result));
    Portal portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
    if (portal == NULL)
        elog(ERROR, "recsys: SPI_cursor_open failed: %s", SPI_result_code_string(SPI_result));
    return portal;
}

// Grows a huge palloc'd array to hold at least `need` elements of `elem` bytes.
static void* grow(void* data, int64* cap, int64 need, Size elem)
{
    if (need <= *cap)
        return data;
    int64 newcap = Max(need, *cap * 2);
    newcap = Max(newcap, (int64) 1024);
    check_memory_budget((Size) newcap * elem, "reading the interactions");
    *cap = newcap;
    if (data == NULL)
        return MemoryContextAllocHuge(CurrentMemoryContext, (Size) newcap * elem);
    return repalloc_huge(data, (Size) newcap * elem);
}

void fetch_cells(const char* sql, int64 expected, CellBuffer* out)
{
    Portal portal = open_cursor(sql);
    int64 cap = 0;
    out->data = NULL;
    out->n = 0;
    out->data = (recsys::Triplet*) grow(NULL, &cap, Max(expected, (int64) 1), sizeof(recsys::Triplet));
    for (;;) {
        CHECK_FOR_INTERRUPTS();
        SPI_cursor_fetch(portal, true, FETCH_BATCH);
        if (SPI_processed == 0)
            break;
        out->data = (recsys::Triplet*) grow(out->data, &cap, out->n + (int64) SPI_processed,
                                            sizeof(recsys::Triplet));
        TupleDesc desc = SPI_tuptable->tupdesc;
        for (uint64 i = 0; i < SPI_processed; i++) {
            HeapTuple tup = SPI_tuptable->vals[i];
            bool null_u, null_i, null_w;
            Datum u = SPI_getbinval(tup, desc, 1, &null_u);
            Datum it = SPI_getbinval(tup, desc, 2, &null_i);
            Datum w = SPI_getbinval(tup, desc, 3, &null_w);
            if (null_u || null_i || null_w)
                continue;   /* the query filters these out; be safe anyway */
            recsys::Triplet* t = &out->data[out->n++];
            t->user = DatumGetInt32(u);
            t->item = DatumGetInt32(it);
            t->weight = DatumGetFloat8(w);
        }
        SPI_freetuptable(SPI_tuptable);
    }
    SPI_cursor_close(portal);
}

void fetch_touches(const char* sql, TouchBuffer* out)
{
    Portal portal = open_cursor(sql);
    int64 cap = 0;
    out->data = NULL;
    out->n = 0;
    for (;;) {
        CHECK_FOR_INTERRUPTS();
        SPI_cursor_fetch(portal, true, FETCH_BATCH);
        if (SPI_processed == 0)
            break;
        out->data = (recsys::Touch*) grow(out->data, &cap, out->n + (int64) SPI_processed,
                                          sizeof(recsys::Touch));
        TupleDesc desc = SPI_tuptable->tupdesc;
        for (uint64 i = 0; i < SPI_processed; i++) {
            HeapTuple tup = SPI_tuptable->vals[i];
            bool null_u, null_i;
            Datum u = SPI_getbinval(tup, desc, 1, &null_u);
            Datum it = SPI_getbinval(tup, desc, 2, &null_i);
            if (null_u || null_i)
                continue;
            recsys::Touch* t = &out->data[out->n++];
            t->user = DatumGetInt32(u);
            t->item = DatumGetInt32(it);
        }
        SPI_freetuptable(SPI_tuptable);
    }
    SPI_cursor_close(portal);
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
