// pg_progress.hpp - this backend's progress record for a running training or
// evaluation (recsys_progress, recsys_training_runs.phase / rows_read).
//
// The record always lives in backend memory (the run log reads the phase
// reached and the counters from it); with shared_preload_libraries =
// 'recsys' it is mirrored into a shared-memory slot that other sessions read.
// Updates are plain stores: safe from the core's calling thread, which may
// call no PostgreSQL function.  Include after pg_guard.hpp.
#pragma once

#include "pg_guard.hpp"

// Adds n rows to the rows read by the current run (no-op without a run).
void progress_add_rows(int64 n) noexcept;

// Sets the phase by name ("reading", "training", "writing", ...); unknown
// names are kept as "other".
void progress_set_phase(const char* phase) noexcept;
// The phase and how many of its items are done, as the core's Progress
// callback reports them (for glue that reports on its own).
void progress_set_items(const char* phase, int64 done, int64 total) noexcept;

// The core's progress callback: sets the phase and the items done / total.
recsys::Progress pg_progress();

// Called from _PG_init: reserves the shared slots when the library is being
// preloaded, and registers the clean-up callbacks.
void progress_init(void);
