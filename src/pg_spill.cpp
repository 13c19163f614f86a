// pg_spill.cpp - the cell buffer training reads the matrix into, and its
// spilling to disk when the cells outgrow their share of maintenance_work_mem.
//
// The runs are written by the core (recsys::CellSpill, core_passes.hpp) with
// plain POSIX I/O, not with PostgreSQL's BufFile: training later re-reads
// them, pass after pass, inside one core_call(), where no PostgreSQL function
// may run.  The files go where PostgreSQL puts its own temporary files (the
// first of temp_tablespaces, else the database's tablespace:
// <tablespace>/pgsql_tmp), are named pgsql_tmp<pid>.recsys.<n> and unlinked
// at once; the CellSpill is owned by a memory context, so an error or a
// cancel closes them (and frees their space) with the transaction.
#include "core_passes.hpp"
#include "pg_fetch.hpp"

extern "C" {
#include "catalog/pg_tablespace_d.h"
#include "commands/tablespace.h"
#include "miscadmin.h"
#include "storage/fd.h"
}

void cell_buffer_init(CellBuffer* b, bool may_spill)
{
    memset(b, 0, sizeof *b);
    b->cxt = CurrentMemoryContext;
    if (!may_spill)
        return;
    b->max_cap = cell_buffer_max_cells((Size) maintenance_work_mem * 1024);
    b->spill = OwnedByContext<recsys::CellSpill>::create(CurrentMemoryContext);
    // As OpenTemporaryFile() does: temp_tablespaces first, else the database's.
    PrepareTempTablespaces();
    Oid ts = GetNextTempTableSpace();
    if (!OidIsValid(ts))
        ts = OidIsValid(MyDatabaseTableSpace) ? MyDatabaseTableSpace : DEFAULTTABLESPACE_OID;
    TempTablespacePath(b->dir, ts);
}

bool cell_buffer_spilled(const CellBuffer* b)
{
    return b->spilled > 0;
}

// Writes the buffered cells as one sorted run and empties the buffer.
static void spill_run(CellBuffer* b)
{
    if (b->n == 0)
        return;
    // The directory may not exist yet (PostgreSQL creates it on first use).
    if (b->spill->obj == NULL && MakePGDirectory(b->dir) < 0 && errno != EEXIST)
        ereport(ERROR, (errcode_for_file_access(),
                        errmsg("recsys: could not create directory \"%s\": %m", b->dir)));
    core_call_or_error("reading the interactions", [&] {
        if (b->spill->obj == nullptr)
            b->spill->obj = new recsys::CellSpill(b->dir);
        b->spill->obj->add_run(b->data, (size_t) b->n, pg_cancel_check());
    });
    b->spilled += b->n;
    b->n = 0;
}

// True when user is among b->keep_users (binary search).
static bool user_kept(const CellBuffer* b, int32 user)
{
    int64 lo = 0, hi = b->keep_n;
    while (lo < hi) {
        int64 mid = lo + (hi - lo) / 2;
        if (b->keep_users[mid] < user)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < b->keep_n && b->keep_users[lo] == user;
}

void cell_buffer_append(CellBuffer* b, int32 user, int32 item, double weight)
{
    cell_buffer_append_kept(b, user, item, weight, b->keep_users != NULL && user_kept(b, user));
}

void cell_buffer_append_kept(CellBuffer* b, int32 user, int32 item, double weight, bool keep)
{
    if (b->n == b->cap) {
        MemoryContext old = MemoryContextSwitchTo(b->cxt);
        if (b->max_cap == 0) {
            b->data = (recsys::Triplet*) grow_array(b->data, &b->cap, b->n + 1, sizeof(recsys::Triplet));
        } else if (b->cap < b->max_cap) {
            // Doubling up to the buffer's share, then no further.
            int64 newcap = Min(Max(b->cap * 2, (int64) 1024), b->max_cap);
            Size bytes = (Size) newcap * sizeof(recsys::Triplet);
            b->data = (recsys::Triplet*) (b->data == NULL ? MemoryContextAllocHuge(b->cxt, bytes)
                                                          : repalloc_huge(b->data, bytes));
            b->cap = newcap;
        } else {
            spill_run(b);
        }
        MemoryContextSwitchTo(old);
    }
    recsys::Triplet* t = &b->data[b->n++];
    t->user = user;
    t->item = item;
    t->weight = weight;
    if (keep) {
        if (b->n_kept == b->kept_cap) {
            MemoryContext old = MemoryContextSwitchTo(b->cxt);
            b->kept = (recsys::Triplet*) grow_array(b->kept, &b->kept_cap, b->n_kept + 1, sizeof(recsys::Triplet));
            MemoryContextSwitchTo(old);
        }
        b->kept[b->n_kept++] = *t;
    }
}

void cell_buffer_spill_rest(CellBuffer* b)
{
    spill_run(b);
    if (b->data != NULL)
        pfree(b->data);
    b->data = NULL;
    b->cap = 0;
}
