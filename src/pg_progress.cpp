// pg_progress.cpp - the progress record of a running training or evaluation.
//
// One record per backend.  The backend's own copy (`local`) always exists;
// with shared_preload_libraries = 'recsys' a shared array holds one slot per
// backend (indexed by MyBackendId, so claiming one takes no lock) that is
// kept equal to it.  Only the owning backend writes its slot, with plain
// stores of aligned words; readers copy it and retry when `changes` moved
// (pgstat's st_changecount protocol), so they never see a half update.
#include "pg_progress.hpp"

extern "C" {
#include "access/xact.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/backendid.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(recsys_progress_start);
PG_FUNCTION_INFO_V1(recsys_progress_phase);
PG_FUNCTION_INFO_V1(recsys_progress_stop);
PG_FUNCTION_INFO_V1(recsys_progress_local);
PG_FUNCTION_INFO_V1(recsys_progress_slots);
}

// Phases by number, so that a phase is one aligned store.
static const char* const phase_names[] = {"starting", "checking", "cutoff", "reading", "training",
                                          "similarities", "scoring", "writing", "done", "other"};
static const int n_phases = (int) lengthof(phase_names);

struct ProgressSlot {
    uint32 changes;       // odd while the owner is writing
    int32 pid;            // 0: no run
    int64 run_id;
    int32 kind;           // 0 train, 1 evaluate
    int32 phase;          // index into phase_names
    Oid relid;            // the source relation, once known
    int64 rows_read;
    int64 items_done;
    int64 items_total;
    TimestampTz started;
};

static ProgressSlot local;
static ProgressSlot* shared_slots = NULL;   // MaxBackends slots, preloaded only
static volatile ProgressSlot* my_slot = NULL;   // this backend's, while a run is on
static bool callbacks_registered = false;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static Size slots_size(void)
{
    return mul_size((Size) MaxBackends, sizeof(ProgressSlot));
}

static void progress_shmem_request(void)
{
    if (prev_shmem_request_hook)
        prev_shmem_request_hook();
    RequestAddinShmemSpace(slots_size());
}

static void progress_shmem_startup(void)
{
    if (prev_shmem_startup_hook)
        prev_shmem_startup_hook();
    bool found;
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    shared_slots = (ProgressSlot*) ShmemInitStruct("recsys progress", slots_size(), &found);
    if (!found)
        memset(shared_slots, 0, slots_size());
    LWLockRelease(AddinShmemInitLock);
}

// Copies `local` into this backend's shared slot (when there is one).
static void publish(void) noexcept
{
    volatile ProgressSlot* s = my_slot;
    if (s == NULL)
        return;
    s->changes++;
    pg_write_barrier();
    s->pid = local.pid;
    s->run_id = local.run_id;
    s->kind = local.kind;
    s->phase = local.phase;
    s->relid = local.relid;
    s->rows_read = local.rows_read;
    s->items_done = local.items_done;
    s->items_total = local.items_total;
    s->started = local.started;
    pg_write_barrier();
    s->changes++;
}

// Ends the run's record (also at transaction end and at exit).
static void progress_clear(void) noexcept
{
    memset(&local, 0, sizeof local);
    publish();
    my_slot = NULL;
}

static void on_xact_end(XactEvent event, void* arg)
{
    if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PREPARE ||
        event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
        if (local.pid != 0)
            progress_clear();
}

static void on_exit_clear(int code, Datum arg)
{
    if (local.pid != 0)
        progress_clear();
}

void progress_init(void)
{
    if (process_shared_preload_libraries_in_progress) {
        prev_shmem_request_hook = shmem_request_hook;
        shmem_request_hook = progress_shmem_request;
        prev_shmem_startup_hook = shmem_startup_hook;
        shmem_startup_hook = progress_shmem_startup;
    }
}

void progress_add_rows(int64 n) noexcept
{
    if (local.pid == 0)
        return;
    local.rows_read += n;
    volatile ProgressSlot* s = my_slot;
    if (s != NULL) {
        // One aligned store: readers see the old or the new count.
        s->rows_read = local.rows_read;
    }
}

static int phase_index(const char* phase) noexcept
{
    for (int i = 0; i < n_phases; i++)
        if (strcmp(phase, phase_names[i]) == 0)
            return i;
    return n_phases - 1;
}

void progress_set_phase(const char* phase) noexcept
{
    if (local.pid == 0)
        return;
    local.phase = phase_index(phase);
    publish();
}

void progress_set_items(const char* stage, int64 done, int64 total) noexcept
{
    if (local.pid == 0)
        return;
    int phase = phase_index(stage);
    if (phase != local.phase) {
        local.phase = phase;
        local.items_done = done;
        local.items_total = total;
        publish();
        return;
    }
    local.items_done = done;
    local.items_total = total;
    volatile ProgressSlot* s = my_slot;
    if (s != NULL) {
        s->items_total = total;
        s->items_done = done;
    }
}

recsys::Progress pg_progress()
{
    return [](const char* stage, int64_t done, int64_t total) { progress_set_items(stage, done, total); };
}

// recsys.progress_start(run_id, kind): starts this backend's record.
extern "C" Datum recsys_progress_start(PG_FUNCTION_ARGS)
{
    int64 run_id = PG_GETARG_INT64(0);
    char* kind = text_to_cstring(PG_GETARG_TEXT_PP(1));
    if (!callbacks_registered) {
        RegisterXactCallback(on_xact_end, NULL);
        before_shmem_exit(on_exit_clear, 0);
        callbacks_registered = true;
    }
    memset(&local, 0, sizeof local);
    local.pid = MyProcPid;
    local.run_id = run_id;
    local.kind = strcmp(kind, "evaluate") == 0 ? 1 : 0;
    local.phase = phase_index("starting");
    local.started = GetCurrentTimestamp();
    if (shared_slots != NULL && MyBackendId >= 1 && MyBackendId <= MaxBackends)
        my_slot = &shared_slots[MyBackendId - 1];
    publish();
    PG_RETURN_VOID();
}

// recsys.progress_phase(phase, rel DEFAULT NULL)
extern "C" Datum recsys_progress_phase(PG_FUNCTION_ARGS)
{
    if (PG_ARGISNULL(0))
        PG_RETURN_VOID();
    char* phase = text_to_cstring(PG_GETARG_TEXT_PP(0));
    if (local.pid != 0 && !PG_ARGISNULL(1))
        local.relid = PG_GETARG_OID(1);
    progress_set_phase(phase);
    PG_RETURN_VOID();
}

// recsys.progress_stop()
extern "C" Datum recsys_progress_stop(PG_FUNCTION_ARGS)
{
    progress_clear();
    PG_RETURN_VOID();
}

// recsys.progress_local() -> (phase, rows_read, items_done, items_total) of
// this backend's run; NULLs when none.
extern "C" Datum recsys_progress_local(PG_FUNCTION_ARGS)
{
    TupleDesc desc;
    if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "recsys.progress_local: return type must be a row type");
    desc = BlessTupleDesc(desc);
    Datum values[4];
    bool nulls[4] = {true, true, true, true};
    if (local.pid != 0) {
        values[0] = CStringGetTextDatum(phase_names[local.phase]);
        values[1] = Int64GetDatum(local.rows_read);
        values[2] = Int64GetDatum(local.items_done);
        values[3] = Int64GetDatum(local.items_total);
        nulls[0] = nulls[1] = false;
        // Items are counted by the core only; none yet means unknown.
        nulls[2] = nulls[3] = local.items_total == 0;
    }
    PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

// recsys.progress_slots() -> one row per backend with a run in progress.
extern "C" Datum recsys_progress_slots(PG_FUNCTION_ARGS)
{
    InitMaterializedSRF(fcinfo, 0);
    ReturnSetInfo* rsinfo = (ReturnSetInfo*) fcinfo->resultinfo;
    if (shared_slots == NULL)
        PG_RETURN_VOID();
    for (int i = 0; i < MaxBackends; i++) {
        volatile ProgressSlot* s = &shared_slots[i];
        ProgressSlot copy;
        for (int attempt = 0;; attempt++) {
            uint32 before = s->changes;
            pg_read_barrier();
            copy.pid = s->pid;
            copy.run_id = s->run_id;
            copy.kind = s->kind;
            copy.phase = s->phase;
            copy.relid = s->relid;
            copy.rows_read = s->rows_read;
            copy.items_done = s->items_done;
            copy.items_total = s->items_total;
            copy.started = s->started;
            pg_read_barrier();
            if ((before & 1) == 0 && before == s->changes)
                break;
            if (attempt >= 1000) {
                copy.pid = 0;   // the owner keeps writing: skip it this time
                break;
            }
            CHECK_FOR_INTERRUPTS();
        }
        if (copy.pid == 0)
            continue;
        Datum values[9];
        bool nulls[9] = {false, false, false, false, false, false, false, false, false};
        values[0] = Int32GetDatum(copy.pid);
        values[1] = Int64GetDatum(copy.run_id);
        values[2] = CStringGetTextDatum(copy.kind == 1 ? "evaluate" : "train");
        values[3] = CStringGetTextDatum(phase_names[copy.phase >= 0 && copy.phase < n_phases ? copy.phase : n_phases - 1]);
        values[4] = ObjectIdGetDatum(copy.relid);
        nulls[4] = copy.relid == InvalidOid;
        values[5] = Int64GetDatum(copy.rows_read);
        values[6] = Int64GetDatum(copy.items_done);
        values[7] = Int64GetDatum(copy.items_total);
        nulls[6] = nulls[7] = copy.items_total == 0;
        values[8] = TimestampTzGetDatum(copy.started);
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }
    PG_RETURN_VOID();
}
