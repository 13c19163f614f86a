// pg_fetch.hpp - reading query results into plain arrays the core can use.
// C-style code (see pg_guard.hpp): call with SPI connected.
#pragma once

#include "pg_source.hpp"

extern "C" {
#include "datatype/timestamp.h"
}

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

// Reads the weighted matrix of src (SOURCE_MATRIX, or SOURCE_MATRIX_BEFORE
// `cutoff` when before is true) and collects every cell, with the counts of
// ignored rows.  The query's hash table and the cell buffer each get half of
// maintenance_work_mem (the query runs with work_mem = that /
// hash_mem_multiplier, and without JIT, both restored afterwards).
void fetch_cells(const SourceRel* src, const SourceWeights* w, bool before, TimestampTz cutoff,
                 CellBuffer* out);

// Collects every usable (user, product) event of src at or after cutoff,
// duplicates included (the core de-duplicates).
void fetch_touches(const SourceRel* src, const SourceWeights* w, TimestampTz cutoff, TouchBuffer* out);

// Errors out (54000) when `bytes` exceeds the training memory budget,
// maintenance_work_mem; `what` says what needs it.
void check_memory_budget(Size bytes, const char* what);
