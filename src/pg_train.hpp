// pg_train.hpp - training within the memory budget, shared by training and
// evaluation.  C-style code (see pg_guard.hpp): call with SPI connected.
#pragma once

#include "pg_fetch.hpp"

extern "C" {
#include "portability/instr_time.h"
}

// Seconds since t0, for DEBUG1 timings.
inline double seconds_since(instr_time t0)
{
    instr_time now;
    INSTR_TIME_SET_CURRENT(now);
    INSTR_TIME_SUBTRACT(now, t0);
    return INSTR_TIME_GET_DOUBLE(now);
}

// Trains on the cells read into `cells`, with the model settings `model`
// (pg_tune.hpp), within maintenance_work_mem less
// `reserved` bytes the caller already holds (evaluation's test touches and
// histories), leaving the model in owned->obj.  Says what it needs before the
// heavy work: in memory when the whole job fits; else in passes over the
// spilled matrix (core_passes.hpp) with a NOTICE giving the figures; else,
// when even one item per pass does not fit, an error (54000) whose hint is
// the least budget that works.  `what` names the job in messages
// ("training", "evaluation").  Consumes the cells.
// With `store` (training), a model trained in memory by the native method
// is stored under store->model_id while its similarity pass runs (the
// popularity first, then each item's neighbours as they are final) and
// store->stored is set; otherwise (evaluation, passes, eigen) the caller
// stores owned->obj.
struct ModelStore {
    int64 model_id;
    instr_time start;   // DEBUG1's "trained in" (every list final) counts from here
    bool stored;
};
void train_within_budget(CellBuffer* cells, int neighbors, const struct ModelSettings* model, Size reserved,
                         const char* what, OwnedByContext<recsys::Model>* owned, ModelStore* store = NULL);

// Refuses (54000) before the heavy reading a job over src that cannot fit
// maintenance_work_mem less `reserved` bytes whatever the reading finds, with
// the least budget that works as the hint; returns otherwise (the decision
// then comes after reading, from train_within_budget).  Needs ANALYZE's
// statistics of src to suspect it; then counts the products exactly (not
// with negative weights, where the count would only bound the matrix's).
// first (if set) runs just before the refusal, for errors that must come
// before it (the evaluation's cutoff).
void refuse_before_reading(const SourceRel* src, const EventWeights* w, int neighbors,
                           const struct ModelSettings* model, Size reserved, const char* what,
                           void (*first)(void*) = NULL, void* first_arg = NULL);
