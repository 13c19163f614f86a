// pg_fetch.hpp - reading query results into plain arrays the core can use.
// C-style code (see pg_guard.hpp): call with SPI connected.
#pragma once

#include "pg_source.hpp"

extern "C" {
#include "datatype/timestamp.h"
}

namespace recsys {
class CellSpill;
}

// A growable palloc'd array of matrix cells that may spill to disk
// (pg_spill.cpp): set up by cell_buffer_init, filled by cell_buffer_append.
struct CellBuffer {
    recsys::Triplet* data;
    int64 n;
    int64 events;         // events summed into the cells
    int64 ignored_null;   // rows with a NULL user, product or time
    int64 ignored_type;   // rows whose event type has no positive weight
    int64 spilled;        // cells written to the runs so far
    int64 cap;            // cells data has room for
    int64 max_cap;        // spilling: the buffer's size, in cells (0: no spilling)
    MemoryContext cxt;    // where data lives
    OwnedByContext<recsys::CellSpill>* spill;  // spilling: the runs on disk (obj NULL until the first)
    char dir[MAXPGPATH];  // spilling: the temporary files' directory
    // Evaluation (1.0's query texts; read_events flags each cell itself):
    // the cells of these users (sorted ascending, keep_n of them)
    // are also copied to `kept` as they arrive, so that their histories
    // survive the spill (keep_users NULL: none kept).
    const int32* keep_users;
    int64 keep_n;
    recsys::Triplet* kept;
    int64 n_kept;
    int64 kept_cap;
};

// Cells the buffer holds before it spills, for a budget of `budget` bytes:
// its half of the budget (the aggregation has the other) holds the buffer
// and the sort of a run, 16 bytes a cell each.
inline int64 cell_buffer_max_cells(Size budget) { return Max((int64) (budget / 2 / 32), (int64) 1024); }

// An empty buffer in CurrentMemoryContext.  With may_spill, a full buffer
// becomes a sorted run in a temporary file (core_passes.hpp) and the buffer
// is reused; without, growing it over maintenance_work_mem is an error.
void cell_buffer_init(CellBuffer* b, bool may_spill);
// Appends one cell (may spill, or error out over budget).
void cell_buffer_append(CellBuffer* b, int32 user, int32 item, double weight);
// The same, with the caller saying whether the cell is also kept (instead
// of a search of keep_users).
void cell_buffer_append_kept(CellBuffer* b, int32 user, int32 item, double weight, bool keep);
// True once a run has been written (then n counts only the buffered cells).
bool cell_buffer_spilled(const CellBuffer* b);
// Writes the cells still buffered as the last run and frees the buffer.
void cell_buffer_spill_rest(CellBuffer* b);

// A palloc'd array of (user, item) pairs.
struct TouchBuffer {
    recsys::Touch* data;
    int64 n;
};

// Bytes a CellBuffer of `cells` cells takes.
inline Size cell_buffer_bytes(int64 cells) { return (Size) cells * sizeof(recsys::Triplet); }

// The weighted matrix and the test touches from query text, run with the
// caller's rights: only for the
// 1.0 SQL functions of a database not yet updated (ALTER EXTENSION recsys
// UPDATE), whose recsys.matrix_sql()/events_sql() built it.  1.1's SQL never
// passes SQL text.
void fetch_cells_sql(const char* sql, CellBuffer* out);
void fetch_touches_sql(const char* sql, TouchBuffer* out);

// Grows a huge palloc'd array (in CurrentMemoryContext) to hold at least
// `need` elements of `elem` bytes; errors out (54000) over maintenance_work_mem.
void* grow_array(void* data, int64* cap, int64 need, Size elem);

// Errors out (54000) when `bytes` exceeds the training memory budget,
// maintenance_work_mem; `what` says what needs it.
void check_memory_budget(Size bytes, const char* what);
