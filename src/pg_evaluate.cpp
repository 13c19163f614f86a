// pg_evaluate.cpp - recsys.evaluate_core(): the C++ half of recsys_evaluate().
//
// Reads the pre-cutoff matrix and the post-cutoff touches, then trains and
// scores a throwaway model in the core.  Nothing is written: the active
// model is never touched.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <system_error>
#include <thread>
#include <vector>

#include "core_parallel.hpp"
#include "pg_fetch.hpp"
#include "pg_limits.hpp"
#include "pg_progress.hpp"
#include "pg_read.hpp"
#include "pg_train.hpp"
#include "pg_tune.hpp"

extern "C" {
#include "access/htup_details.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "portability/instr_time.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(recsys_evaluate_core);
}

// The evaluation's cutoff from the newest usable event of src (found: there
// is one): it minus test_days days (in the session's time zone, as
// timestamptz arithmetic does).
static TimestampTz cutoff_from_newest(const SourceRel* src, bool found, TimestampTz newest, int test_days)
{
    if (!found)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("relation %s has no usable interactions", src->qualified),
                        errhint("Event types are weighted by recsys.event_weights.")));
    if (TIMESTAMP_NOT_FINITE(newest))
        ereport(ERROR, (errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
                        errmsg("the newest event of %s is at %s", src->qualified, timestamptz_to_str(newest)),
                        errdetail("The evaluation's cutoff is the newest event minus test_days."),
                        errhint("Fix or delete the events whose event_time is infinite.")));
    Interval* days = (Interval*) palloc0(sizeof(Interval));
    days->day = test_days;
    return DatumGetTimestampTz(
        DirectFunctionCall2(timestamptz_mi_interval, TimestampTzGetDatum(newest), PointerGetDatum(days)));
}

// The evaluation's cutoff: the newest usable event of src (SOURCE_MAX_TIME)
// minus test_days days.
TimestampTz evaluation_cutoff(const SourceRel* src, const SourceWeights* w, int test_days)
{
    Datum args[2] = {w->types, w->weights};
    source_execute(src, SOURCE_MAX_TIME, args, 1);
    bool isnull = true;
    Datum newest = 0;
    if (SPI_processed > 0)
        newest = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
    return cutoff_from_newest(src, !isnull, isnull ? 0 : DatumGetTimestampTz(newest), test_days);
}

// The one-scan read's questions (EventsSplit.cutoff_of), and the refusal's
// (refuse_before_reading's first): the cutoff's errors come first, as when
// the cutoff was found before anything else.
struct CutoffQuestion {
    const SourceRel* src;
    const SourceWeights* weights;
    int test_days;
};

static TimestampTz cutoff_of_scan(void* arg, bool by_query, bool found, TimestampTz newest)
{
    const CutoffQuestion* q = (const CutoffQuestion*) arg;
    if (by_query)
        return evaluation_cutoff(q->src, q->weights, q->test_days);
    return cutoff_from_newest(q->src, found, newest, q->test_days);
}

static void cutoff_before_refusing(void* arg)
{
    const CutoffQuestion* q = (const CutoffQuestion*) arg;
    (void) evaluation_cutoff(q->src, q->weights, q->test_days);
}

// The distinct users of the touches, ascending, in a palloc'd array.
static int32* distinct_users(const TouchBuffer* t, int64* n)
{
    int32* users = (int32*) MemoryContextAllocHuge(CurrentMemoryContext, (Size) Max(t->n, (int64) 1) * sizeof(int32));
    for (int64 i = 0; i < t->n; i++)
        users[i] = t->data[i].user;
    std::sort(users, users + t->n);
    int64 out = 0;
    for (int64 i = 0; i < t->n; i++)
        if (out == 0 || users[out - 1] != users[i])
            users[out++] = users[i];
    *n = out;
    return users;
}

// Scoring's inputs (the kept histories and the touches, palloc'd arrays)
// sorted by recsys::sort_scoring_inputs on a thread of its own while the
// model trains: the sort does not depend on the model, and training leaves
// the second core idle in its serial steps.  The thread only reads and
// writes the two arrays and its own scratch (no PostgreSQL call).  Created
// in the arrays' memory context after them, so that an error or a cancel,
// which resets that context, runs the destructor -- the thread told to
// stop, then joined -- before the arrays are freed.
struct InputSorter {
    std::atomic<bool> quit{false};
    std::size_t n_history = 0, n_after = 0;   // in: the lengths; out: the sorted ones
    recsys::detail::AsyncWorker worker;       // destroyed (joined) before the rest
    ~InputSorter() { quit.store(true); }
};

// Starts sorting scoring's inputs on a thread (false: no thread, or too
// few to gain: evaluate_model sorts them).
static bool start_sorting_inputs(OwnedByContext<InputSorter>* sorter, CellBuffer* before, TouchBuffer* after)
{
    bool posted = false;
    core_call_or_error("evaluation", [&] {
        if (std::thread::hardware_concurrency() < 2 || before->n_kept + after->n < 65536)
            return;
        InputSorter* s = new InputSorter();
        sorter->obj = s;
        s->n_history = (std::size_t) before->n_kept;
        s->n_after = (std::size_t) after->n;
        recsys::Triplet* h = before->kept;
        recsys::Touch* a = after->data;
        try {
            s->worker.post([s, h, a] {
                recsys::sort_scoring_inputs(h, &s->n_history, a, &s->n_after,
                                            [s] { return s->quit.load(std::memory_order_relaxed); });
            });
            posted = true;
        } catch (const std::system_error&) {
            // No thread available: evaluate_model sorts them.
        }
    });
    if (!posted)
        sorter->release();
    return posted;
}

// Waits for the sorting thread (answering a cancel meanwhile) and takes the
// sorted lengths.
static void finish_sorting_inputs(OwnedByContext<InputSorter>* sorter, CellBuffer* before, TouchBuffer* after)
{
    for (;;) {
        bool busy = false;
        core_call_or_error("evaluation", [&] { busy = sorter->obj->worker.busy(); });
        if (!busy)
            break;
        CHECK_FOR_INTERRUPTS();
        pg_usleep(200L);
    }
    core_call_or_error("evaluation", [&] { sorter->obj->worker.wait(); });
    before->n_kept = (int64) sorter->obj->n_history;
    after->n = (int64) sorter->obj->n_after;
    sorter->release();
}

// recsys.evaluate_core(source regclass, settings jsonb, test_days, k, neighbors,
//                      count_repeats)
//   -> metrics row with the cutoff: the newest usable event minus test_days,
//      the users without history and the 95% bootstrap CIs.  settings also
//      carries the model settings (weighting, similarity, ...).
// A database still at 1.0 calls it as 1.0 did, (before_sql, after_sql, k,
// neighbors), from its own recsys_evaluate(): see recsys_train_store.
extern "C" Datum recsys_evaluate_core(PG_FUNCTION_ARGS)
{
    bool legacy = PG_NARGS() == 4;
    bool count_repeats = !legacy && PG_GETARG_BOOL(5);
    for (int i = 0; i < PG_NARGS(); i++)
        if (PG_ARGISNULL(i))
            ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                            errmsg("recsys.evaluate_core: arguments must not be NULL")));
    int test_days = legacy ? 1 : PG_GETARG_INT32(2);
    int k = PG_GETARG_INT32(legacy ? 2 : 3);
    int neighbors = PG_GETARG_INT32(legacy ? 3 : 4);
    if (k < 1 || k > RECSYS_MAX_K)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("k must be between 1 and %d, not %d", RECSYS_MAX_K, k)));
    if (test_days < 1 || test_days > RECSYS_MAX_TEST_DAYS)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("test_days must be between 1 and %d, not %d", RECSYS_MAX_TEST_DAYS, test_days)));
    if (neighbors < 0)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("neighbors must be >= 0, not %d", neighbors)));

    TupleDesc desc;
    if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "recsys.evaluate_core: return type must be a row type");
    desc = BlessTupleDesc(desc);

    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "recsys: SPI_connect failed");
    instr_time t0;
    INSTR_TIME_SET_CURRENT(t0);
    SourceRel src;
    SourceWeights weights;
    TimestampTz cutoff = 0;
    TouchBuffer after;
    ModelSettings model;
    memset(&model, 0, sizeof model);   // 1.0's call: the 1.0 defaults
    CellBuffer before;
    cell_buffer_init(&before, true);
    int64 scans = 2;   // 1.0's two queries; 1.1's scan, and a second when it had to
    if (legacy) {
        // A 1.0 database's query texts: the touches after the cutoff first
        // (they are few, and say whose histories scoring needs), then the
        // matrix before it, keeping those users' cells aside.
        fetch_touches_sql(text_to_cstring(PG_GETARG_TEXT_PP(1)), &after);
        int64 n_test_users = 0;
        before.keep_users = distinct_users(&after, &n_test_users);
        before.keep_n = n_test_users;
        fetch_cells_sql(text_to_cstring(PG_GETARG_TEXT_PP(0)), &before);
    } else {
        // The mapped source in one scan, as training reads it (pg_read.hpp),
        // split at the cutoff: the matrix before it, the touches after it,
        // and the touched users' cells kept aside for scoring.
        EventWeights ew;
        EventsRead read;
        EventsSplit split;
        source_open(PG_GETARG_OID(0), &src);
        source_set_mapping(&src, PG_GETARG_DATUM(1));
        source_event_weights(PG_GETARG_DATUM(1), "the evaluation's settings", &ew);
        source_weights_positive(&ew, &weights);   // for the cutoff query
        model_settings_from_jsonb(PG_GETARG_DATUM(1), "the evaluation's settings", &model);
        // The scan finds the cutoff itself (pg_read.hpp): no scan before it.
        CutoffQuestion q = {&src, &weights, test_days};
        refuse_before_reading(&src, &ew, neighbors, &model, 0, "evaluation", cutoff_before_refusing, &q);
        memset(&split, 0, sizeof split);
        split.end = DT_NOEND;
        split.keep_histories = true;
        split.find_cutoff = true;
        split.hold_days = test_days;
        split.cutoff_of = cutoff_of_scan;
        split.cutoff_arg = &q;
        read_events(&src, &ew, &before, &read, &split);
        cutoff = split.cutoff;
        after = split.touches;
        scans = read.scans;
    }
    elog(DEBUG1, "recsys: read " INT64_FORMAT " cells before the cutoff and " INT64_FORMAT " touches after it in %.3f s"
         " (" INT64_FORMAT " cells kept for scoring; " INT64_FORMAT " scan%s)",
         before.spilled + before.n, after.n, seconds_since(t0), before.n_kept, scans, scans == 1 ? "" : "s");
    // Held besides the model: the touches and the kept histories, and the
    // core's copy of each for scoring (sorting that copy takes scratch
    // memory of the same size, which training's freed buffers cover).
    // Sorted on a second thread while the model trains (below), they are
    // sorted in place and scored where they are, with no copy: during
    // training only the sort's scratch (at most the size of the histories,
    // then of the touches) is held beside them, within the same reserve.
    Size reserved = ((Size) after.n * sizeof(recsys::Touch) + (Size) before.n_kept * sizeof(recsys::Triplet)) * 2;
    auto* sorter = OwnedByContext<InputSorter>::create(CurrentMemoryContext);
    bool presorted = !legacy && start_sorting_inputs(sorter, &before, &after);
    auto* trained = OwnedByContext<recsys::Model>::create(CurrentMemoryContext);
    progress_set_phase("training");
    train_within_budget(&before, neighbors, &model, reserved, "evaluation", trained);
    if (presorted)
        finish_sorting_inputs(sorter, &before, &after);

    elog(DEBUG1, "recsys: trained in %.3f s", seconds_since(t0));
    recsys::EvalResult res;
    progress_set_phase("scoring");
    core_call_or_error("evaluation", [&] {
        recsys::EvalOptions opt;
        opt.k = k;
        opt.neighbors = neighbors;
        opt.settings = model_train_options(&model, neighbors);
        opt.count_repeats = count_repeats;
        // 95% CIs from 1000 resamples with the fixed seed 1: reproducible.
        // 1.0's SQL function has no columns for them.
        opt.bootstrap_resamples = legacy ? 0 : 1000;
        opt.bootstrap_seed = 1;
        opt.progress = pg_progress();
        if (presorted) {
            // Sorted while the model trained: read where they are.
            res = recsys::evaluate_sorted(*trained->obj, before.kept, (size_t) before.n_kept, after.data,
                                          (size_t) after.n, opt, pg_cancel_check());
            return;
        }
        std::vector<recsys::Triplet> h(before.kept, before.kept + before.n_kept);
        std::vector<recsys::Touch> a(after.data, after.data + after.n);
        res = recsys::evaluate_model(*trained->obj, std::move(h), std::move(a), opt, pg_cancel_check());
    });
    elog(DEBUG1, "recsys: scored in %.3f s (sorting %.3f s, scoring %.3f s, bootstrap %.3f s)", seconds_since(t0),
         res.seconds_sort, res.seconds_score, res.seconds_bootstrap);

    if (res.users_evaluated == 0 && !legacy)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("recsys: no user to evaluate in %s with the cutoff at %s", src.qualified,
                               timestamptz_to_str(cutoff)),
                        errdetail("%lld distinct (user, product) events fall at or after the cutoff; no user "
                                  "among them has both events before it and a product new to them after it.",
                                  (long long) res.test_touches),
                        errhint("The cutoff is the newest event minus test_days (%d): choose test_days so that "
                                "users active after it were also active before it.", test_days)));

    Datum values[18];
    bool nulls[18] = {false};
    values[0] = Int64GetDatum(res.users_evaluated);
    values[1] = Float8GetDatum(res.precision);
    values[2] = Float8GetDatum(res.recall);
    values[3] = Float8GetDatum(res.ndcg);
    values[4] = Float8GetDatum(res.hit_rate);
    values[5] = Float8GetDatum(res.map);
    values[6] = Float8GetDatum(res.coverage);
    values[7] = Float8GetDatum(res.pop_precision);
    values[8] = Float8GetDatum(res.pop_recall);
    values[9] = Int64GetDatum(res.model_items);
    values[10] = TimestampTzGetDatum(cutoff);   // 1.1's OUT cutoff; 1.0's row has 10 columns
    values[11] = Int64GetDatum(res.users_without_history);
    const double ci[6] = {res.precision_ci.lo, res.precision_ci.hi, res.recall_ci.lo,
                          res.recall_ci.hi, res.ndcg_ci.lo, res.ndcg_ci.hi};
    for (int i = 0; i < 6; i++) {
        values[12 + i] = Float8GetDatum(ci[i]);
        nulls[12 + i] = std::isnan(ci[i]);
    }
    HeapTuple tuple = heap_form_tuple(desc, values, nulls);
    Datum result = SPI_datumTransfer(HeapTupleGetDatum(tuple), false, -1);
    SPI_finish();
    PG_RETURN_DATUM(result);
}
