// pg_runlog.cpp - recsys.run_log_write(): writes a row of the training-runs
// log from a dynamic background worker, so that it survives the caller's
// rollback.
//
// The caller puts the row (jsonb text) into a DSM segment and starts a
// worker: for an end row it waits until the worker has committed the row, so
// that the outcome is committed when the run returns (not for the worker's
// exit, which is collected before the session starts its next writer); for
// a start row it does not wait (the fork, the connection and the commit take
// 20-60 ms), and the run goes on meanwhile.  That worker is collected before
// the end row's is started (by then it has long exited), and its failure is
// reported then; should it never have run, both rows are written in the
// caller's transaction, as with no free slot.  The worker connects to the same database as the
// bootstrap superuser, runs one fixed, schema-qualified statement with the
// row as a parameter (no SQL text crosses over, and search_path is pinned),
// commits, and reports through the segment.  No shared_preload_libraries is
// needed; each write takes a max_worker_processes slot for a few
// milliseconds.  With no slot free the row is written in the caller's own
// transaction, with a WARNING: it is then lost if that transaction rolls
// back (docs/operations.md).
#include "pg_guard.hpp"

extern "C" {
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/snapmgr.h"

PG_FUNCTION_INFO_V1(recsys_run_log_write);
PGDLLEXPORT void recsys_run_log_main(Datum arg);
}

// What the caller hands the worker, and what the worker hands back.
struct RunLogMessage {
    Oid database;
    int caller;               // the caller's pgprocno: its latch is set on attaching
    bool final;
    volatile bool attached;   // the worker has the segment (set by the worker)
    volatile bool done;       // the row is committed (set by the worker)
    char error[512];          // the worker's error message, when it failed
    char entry[FLEXIBLE_ARRAY_MEMBER];   // the row as jsonb text
};

// A start row: inserted unless the run is already there (its end may have
// been written first, when a cancel hit while the start was being written).
static const char* const insert_start =
    "INSERT INTO recsys.training_runs "
    "SELECT * FROM pg_catalog.jsonb_populate_record(NULL::recsys.training_runs, $1::pg_catalog.jsonb) "
    "ON CONFLICT (run_id) DO NOTHING";

// An end row: the outcome, over the start row.
static const char* const upsert_end =
    "INSERT INTO recsys.training_runs AS t "
    "SELECT * FROM pg_catalog.jsonb_populate_record(NULL::recsys.training_runs, $1::pg_catalog.jsonb) "
    "ON CONFLICT (run_id) DO UPDATE SET status = EXCLUDED.status, model_id = EXCLUDED.model_id, "
    "finished_at = EXCLUDED.finished_at, phase = EXCLUDED.phase, rows_read = EXCLUDED.rows_read, "
    "items_done = EXCLUDED.items_done, items_total = EXCLUDED.items_total, sqlstate = EXCLUDED.sqlstate, "
    "error = EXCLUDED.error, settings = EXCLUDED.settings, xid = EXCLUDED.xid";

// Housekeeping after an end row: settle the outcome of succeeded runs whose
// transaction has ended (so no row keeps an xid for long: after a restore
// into another cluster it would mean nothing), and apply the retention.
static const char* const housekeeping[] = {
    "UPDATE recsys.training_runs SET status = 'rolled back', xid = NULL "
    "WHERE xid IS NOT NULL AND recsys.xact_state(xid) OPERATOR(pg_catalog.=) 'aborted'",
    "UPDATE recsys.training_runs SET xid = NULL "
    "WHERE xid IS NOT NULL AND recsys.xact_state(xid) OPERATOR(pg_catalog.=) 'committed'",
    "DELETE FROM recsys.training_runs "
    "WHERE COALESCE(finished_at, started_at) OPERATOR(pg_catalog.<) "
    "(pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.make_interval(days => "
    "(SELECT c.run_log_days FROM recsys.config c)))",
};

// Runs the row's statements with SPI, in the current transaction.
static void write_row(const char* entry, bool final)
{
    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "recsys: SPI_connect failed");
    Oid types[1] = {TEXTOID};
    Datum values[1] = {CStringGetTextDatum(entry)};
    int rc = SPI_execute_with_args(final ? upsert_end : insert_start, 1, types, values, NULL, false, 0);
    if (rc != SPI_OK_INSERT)
        elog(ERROR, "recsys: writing the run log failed: %s", SPI_result_code_string(rc));
    if (final)
        for (size_t i = 0; i < lengthof(housekeeping); i++)
            if (SPI_execute(housekeeping[i], false, 0) < 0)
                elog(ERROR, "recsys: run log housekeeping failed");
    SPI_finish();
}

// The run whose rows this transaction wrote itself (no worker slot was
// free): its later rows are written here too.  A worker updating a row that
// this uncommitted transaction inserted would wait for us while we wait for
// it.
static int64 in_transaction_run = 0;

static int64 entry_run_id(Jsonb* j)
{
    JsonbValue key;
    key.type = jbvString;
    key.val.string.val = (char*) "run_id";
    key.val.string.len = 6;
    JsonbValue* v = findJsonbValueFromContainer(&j->root, JB_FOBJECT, &key);
    if (v == NULL || v->type != jbvNumeric)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("recsys.run_log_write: the entry needs a numeric run_id")));
    return DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(v->val.numeric)));
}

// Waits until the writer has exited, or only until it has committed the row
// when `msg` is given.  A cancel arriving meanwhile is served
// once the row is written (milliseconds; the worker's lock_timeout bounds
// it), so the log never misses a start or an end that was under way.
// Termination is not held: a backend told to die (fast shutdown, during
// which the postmaster starts no more workers; pg_terminate_backend) stops
// waiting at once, and its run shows as terminated.
static BgwHandleStatus wait_for_writer(BackgroundWorkerHandle* handle, const RunLogMessage* msg = NULL)
{
    BgwHandleStatus st;
    HOLD_INTERRUPTS();
    for (;;) {
        pid_t pid;
        st = GetBackgroundWorkerPid(handle, &pid);
        if (st == BGWH_STOPPED || st == BGWH_POSTMASTER_DIED)
            break;
        pg_read_barrier();
        if (msg != NULL && msg->done)
            break;
        if (ProcDiePending) {
            if (st == BGWH_NOT_YET_STARTED)
                TerminateBackgroundWorker(handle);
            break;
        }
        // The postmaster sets our latch when the worker starts and exits
        // (bgw_notify_pid), the worker when it attaches and when it has
        // committed; the timeout only re-checks now and then.
        (void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 1000L, PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
    }
    RESUME_INTERRUPTS();
    return st;
}

// The writer of this session's last start row while it may still be at
// work: its handle and segment live until it is collected (in
// TopMemoryContext, the mapping pinned, so a rollback in between keeps
// them).
static BackgroundWorkerHandle* start_writer = NULL;
static dsm_segment* start_segment = NULL;
static int64 start_run = 0;

// The writer of this session's last end row, which has committed it and is
// exiting: collected before the next writer starts.
static BackgroundWorkerHandle* end_writer = NULL;

static void no_slot_warning(int64 run_id)
{
    ereport(WARNING,
            (errmsg("recsys: no background worker slot free for the run log; run " INT64_FORMAT
                    " is logged in this transaction and lost if it rolls back", run_id),
             errhint("Raise max_worker_processes (docs/operations.md, \"Monitoring\").")));
}

// Waits for the last end row's writer to exit, so that a session's writers
// never hold two worker slots.
static void collect_end_writer(void)
{
    if (end_writer == NULL)
        return;
    BgwHandleStatus st = wait_for_writer(end_writer);
    pfree(end_writer);
    end_writer = NULL;
    if (ProcDiePending)
        CHECK_FOR_INTERRUPTS();   // exits
    if (st == BGWH_POSTMASTER_DIED)
        ereport(FATAL, (errcode(ERRCODE_ADMIN_SHUTDOWN),
                        errmsg("recsys: the postmaster died while the run log was written")));
}

// Waits for the start row's writer to exit and warns if it failed.  Before
// an end row's writer starts, so that the two never hold two worker slots
// (with few slots free, the end row would otherwise be written in the
// caller's transaction).  A writer that never ran (it could not be started)
// leaves the start row to this transaction when `run_id`, the run being
// written now, is its run; the caller then writes the end row here too.
static void collect_start_writer(int64 run_id)
{
    if (start_writer == NULL)
        return;
    BgwHandleStatus st = wait_for_writer(start_writer);
    RunLogMessage* msg = (RunLogMessage*) dsm_segment_address(start_segment);
    pg_read_barrier();
    bool failed = st != BGWH_POSTMASTER_DIED && msg->attached && !msg->done;
    bool never_ran = st != BGWH_POSTMASTER_DIED && !msg->attached;
    char error[sizeof msg->error];
    memcpy(error, msg->error, sizeof error);
    error[sizeof error - 1] = '\0';
    char* entry = never_ran ? pstrdup(msg->entry) : NULL;
    int64 start = start_run;
    dsm_detach(start_segment);
    pfree(start_writer);
    start_writer = NULL;
    start_segment = NULL;
    start_run = 0;
    if (ProcDiePending)
        CHECK_FOR_INTERRUPTS();   // exits
    if (st == BGWH_POSTMASTER_DIED)
        ereport(FATAL, (errcode(ERRCODE_ADMIN_SHUTDOWN),
                        errmsg("recsys: the postmaster died while the run log was written")));
    if (never_ran && start == run_id) {
        no_slot_warning(run_id);
        in_transaction_run = run_id;
        write_row(entry, false);
        return;
    }
    if (failed || never_ran)
        ereport(WARNING, (errmsg("recsys: the run log writer failed: %s", error[0] ? error : "see the server log"),
                          errdetail("The start of run " INT64_FORMAT " was not logged.", start)));
}

// recsys.run_log_write(entry jsonb, final boolean) -> true when a worker
// wrote it (committed; a start row: handed to a worker), false when it was
// written in this transaction or not at all (a WARNING says which).
extern "C" Datum recsys_run_log_write(PG_FUNCTION_ARGS)
{
    Jsonb* j = PG_GETARG_JSONB_P(0);
    bool final = PG_GETARG_BOOL(1);
    int64 run_id = entry_run_id(j);
    char* entry = JsonbToCString(NULL, &j->root, VARSIZE(j));

    // A standby can store nothing (and would never start the worker, which
    // waits for recovery to end): the run fails on its own writes anyway.
    if (RecoveryInProgress())
        PG_RETURN_BOOL(false);

    collect_start_writer(run_id);
    collect_end_writer();
    if (run_id != in_transaction_run || in_transaction_run == 0) {
        Size len = strlen(entry);
        dsm_segment* seg = dsm_create(offsetof(RunLogMessage, entry) + len + 1, 0);
        RunLogMessage* msg = (RunLogMessage*) dsm_segment_address(seg);
        msg->database = MyDatabaseId;
        msg->caller = MyProc->pgprocno;
        msg->final = final;
        msg->attached = false;
        msg->done = false;
        msg->error[0] = '\0';
        memcpy(msg->entry, entry, len + 1);

        BackgroundWorker w;
        memset(&w, 0, sizeof w);
        w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
        w.bgw_start_time = BgWorkerStart_RecoveryFinished;
        w.bgw_restart_time = BGW_NEVER_RESTART;
        strlcpy(w.bgw_library_name, "recsys", BGW_MAXLEN);
        strlcpy(w.bgw_function_name, "recsys_run_log_main", BGW_MAXLEN);
        strlcpy(w.bgw_name, "recsys run log writer", BGW_MAXLEN);
        strlcpy(w.bgw_type, "recsys run log writer", BGW_MAXLEN);
        w.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(seg));
        w.bgw_notify_pid = MyProcPid;

        BackgroundWorkerHandle* handle;
        MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
        bool registered = RegisterDynamicBackgroundWorker(&w, &handle);
        MemoryContextSwitchTo(old);
        if (registered && !final) {
            // The worker writes the row beside the run.
            dsm_pin_mapping(seg);
            start_writer = handle;
            start_segment = seg;
            start_run = run_id;
            PG_RETURN_BOOL(true);
        }
        if (registered) {
            BgwHandleStatus st = wait_for_writer(handle, msg);
            pg_read_barrier();
            if (ProcDiePending)
                CHECK_FOR_INTERRUPTS();   // exits: no fallback write while dying
            if (st == BGWH_POSTMASTER_DIED)
                ereport(FATAL, (errcode(ERRCODE_ADMIN_SHUTDOWN),
                                errmsg("recsys: the postmaster died while the run log was written")));
            pg_read_barrier();
            bool done = msg->done, attached = msg->attached;
            char error[sizeof msg->error];
            memcpy(error, msg->error, sizeof error);
            error[sizeof error - 1] = '\0';
            dsm_detach(seg);
            if (done) {
                // Committed; it exits on its own, collected before our next writer starts.
                end_writer = handle;
                PG_RETURN_BOOL(true);
            }
            pfree(handle);
            if (attached) {
                ereport(WARNING, (errmsg("recsys: the run log writer failed: %s",
                                         error[0] ? error : "see the server log"),
                                  errdetail("Run " INT64_FORMAT " is missing from recsys_training_runs or not up to date.",
                                            run_id)));
                PG_RETURN_BOOL(false);
            }
            // The worker never ran: write the row here.
        } else
            dsm_detach(seg);
        no_slot_warning(run_id);
        in_transaction_run = run_id;
    }
    write_row(entry, final);
    PG_RETURN_BOOL(false);
}

// The worker: attaches the segment, connects, writes the row, reports.
void recsys_run_log_main(Datum arg)
{
    BackgroundWorkerUnblockSignals();
    dsm_segment* seg = dsm_attach(DatumGetUInt32(arg));
    if (seg == NULL)
        proc_exit(0);   // the caller gave up (cancelled) before we started
    RunLogMessage* msg = (RunLogMessage*) dsm_segment_address(seg);
    Latch* caller = &ProcGlobal->allProcs[msg->caller].procLatch;
    msg->attached = true;
    pg_write_barrier();
    SetLatch(caller);
    BackgroundWorkerInitializeConnectionByOid(msg->database, BOOTSTRAP_SUPERUSERID, 0);

    // Our own settings, whatever the database or role defaults say.
    (void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_SESSION,
                             GUC_ACTION_SET, true, 0, false);
    (void) set_config_option("lock_timeout", "10s", PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SET, true, 0, false);
    (void) set_config_option("statement_timeout", "0", PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SET, true, 0, false);

    MemoryContext cxt = CurrentMemoryContext;
    PG_TRY();
    {
        SetCurrentStatementStartTimestamp();
        StartTransactionCommand();
        PushActiveSnapshot(GetTransactionSnapshot());
        pgstat_report_activity(STATE_RUNNING, "recsys: writing the run log");
        write_row(msg->entry, msg->final);
        PopActiveSnapshot();
        CommitTransactionCommand();
        pgstat_report_activity(STATE_IDLE, NULL);
        pg_write_barrier();
        msg->done = true;
        SetLatch(caller);
    }
    PG_CATCH();
    {
        MemoryContextSwitchTo(cxt);
        ErrorData* e = CopyErrorData();
        strlcpy(msg->error, e->message ? e->message : "unknown error", sizeof msg->error);
        pg_write_barrier();
        PG_RE_THROW();
    }
    PG_END_TRY();
    dsm_detach(seg);
    proc_exit(0);
}
