// pg_fetch.hpp - reading query results into plain arrays the core can use.
// C-style code (see pg_guard.hpp): call with SPI connected.
#pragma once

#include "pg_guard.hpp"

// A growable palloc'd array of matrix cells.
struct CellBuffer {
    recsys::Triplet* data;
    int64 n;
    int64 events;         // events summed into the cells
    int64 ignored_null;   // rows with a NULL user, product or time
    int64 ignored_type;   // rows whose event type has no positive weight
};

// A palloc'd array of (user, item) pairs.
struct TouchBuffer {
    recsys::Touch* data;
    int64 n;
};

// Bytes a CellBuffer of `cells` cells takes.
inline Size cell_buffer_bytes(int64 cells) { return (Size) cells * sizeof(recsys::Triplet); }

// Runs a recsys.matrix_sql() query (user int4, product int4, weight float8,
// events int8) and collects every cell; rows with a NULL user carry the
// ignored counts (product -1: NULL key, -2: unweighted type).  The query's
// hash table and the cell buffer each get half of maintenance_work_mem (the
// query runs with work_mem = that / hash_mem_multiplier, and without JIT,
// both restored afterwards).
void fetch_cells(const char* sql, CellBuffer* out);

// Runs `sql` (user int4, product int4) through a cursor and collects every row.
void fetch_touches(const char* sql, TouchBuffer* out);

// Errors out (54000) when `bytes` exceeds the training memory budget,
// maintenance_work_mem; `what` says what needs it.
void check_memory_budget(Size bytes, const char* what);
