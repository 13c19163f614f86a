// pg_evaluate.cpp - recsys.evaluate_core(): the C++ half of recsys_evaluate().
//
// Reads the pre-cutoff matrix and the post-cutoff touches, then trains and
// scores a throwaway model in the core.  Nothing is written: the active
// model is never touched.
#include <vector>

#include "pg_fetch.hpp"
#include "pg_progress.hpp"

extern "C" {
#include "access/htup_details.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(recsys_evaluate_core);
}

// recsys.evaluate_core(before_sql, after_sql, k, neighbors) -> metrics row
extern "C" Datum recsys_evaluate_core(PG_FUNCTION_ARGS)
{
    for (int i = 0; i < 4; i++)
        if (PG_ARGISNULL(i))
            ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                            errmsg("recsys.evaluate_core: arguments must not be NULL")));
    char* before_sql = text_to_cstring(PG_GETARG_TEXT_PP(0));
    char* after_sql = text_to_cstring(PG_GETARG_TEXT_PP(1));
    int k = PG_GETARG_INT32(2);
    int neighbors = PG_GETARG_INT32(3);
    if (k < 1)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("k must be at least 1, not %d", k)));
    if (neighbors < 0)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("neighbors must be >= 0, not %d", neighbors)));

    TupleDesc desc;
    if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "recsys.evaluate_core: return type must be a row type");
    desc = BlessTupleDesc(desc);

    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "recsys: SPI_connect failed");
    CellBuffer before;
    TouchBuffer after;
    fetch_cells(before_sql, &before);
    fetch_touches(after_sql, &after);

    // The same budget as training, checked before the core allocates.
    Size need = 0;
    core_call_or_error("evaluation", [&] {
        recsys::MatrixShape shape = recsys::measure(before.data, (size_t) before.n);
        need = cell_buffer_bytes(before.n) + (Size) after.n * sizeof(recsys::Touch) * 3 +
               recsys::estimate_train_bytes(before.n, shape.users, shape.items, neighbors);
    });
    check_memory_budget(need, "evaluation");

    recsys::EvalResult res;
    progress_set_phase("training");
    core_call_or_error("evaluation", [&] {
        recsys::EvalOptions opt;
        opt.k = k;
        opt.neighbors = neighbors;
        opt.progress = pg_progress();
        std::vector<recsys::Triplet> b(before.data, before.data + before.n);
        std::vector<recsys::Touch> a(after.data, after.data + after.n);
        res = recsys::evaluate(std::move(b), std::move(a), opt, pg_cancel_check());
    });

    Datum values[10];
    bool nulls[10] = {false};
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
    HeapTuple tuple = heap_form_tuple(desc, values, nulls);
    Datum result = SPI_datumTransfer(HeapTupleGetDatum(tuple), false, -1);
    SPI_finish();
    PG_RETURN_DATUM(result);
}
