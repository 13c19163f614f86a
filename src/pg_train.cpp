// pg_train.cpp - recsys.train_store(): the C++ half of recsys_train().
//
// recsys_train() (plpgsql) validates, locks and counts; this function reads
// the weighted matrix, trains in the core and writes the model's rows.  It
// all happens in the caller's transaction, so a failure or cancel leaves the
// previous model active.
#include <vector>

#include "pg_fetch.hpp"
#include "pg_progress.hpp"
#include "pg_settings.hpp"

extern "C" {
#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "portability/instr_time.h"
#include "utils/array.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(recsys_train_store);
PG_FUNCTION_INFO_V1(recsys_train_memory);
}

// Seconds since t0.
static double elapsed(instr_time t0)
{
    instr_time now;
    INSTR_TIME_SET_CURRENT(now);
    INSTR_TIME_SUBTRACT(now, t0);
    return INSTR_TIME_GET_DOUBLE(now);
}

// Writes each item's neighbour arrays under model_id.
static void write_neighbors(int64 model_id, const recsys::Model* m)
{
    Oid types[4] = {INT8OID, INT4OID, INT4ARRAYOID, FLOAT8ARRAYOID};
    SPIPlanPtr plan = SPI_prepare("INSERT INTO recsys.neighbors (model_id, item_id, neighbor_ids, sims) "
                                  "VALUES ($1, $2, $3, $4)", 4, types);
    if (plan == NULL)
        elog(ERROR, "recsys: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
    MemoryContext loop_cxt = AllocSetContextCreate(CurrentMemoryContext, "recsys neighbours",
                                                   ALLOCSET_DEFAULT_SIZES);
    MemoryContext old = MemoryContextSwitchTo(loop_cxt);
    size_t n_items = m->item_ids.size();
    for (size_t k = 0; k < n_items; k++) {
        int64 lo = m->nbr_offsets[k], hi = m->nbr_offsets[k + 1];
        if (hi == lo)
            continue;
        CHECK_FOR_INTERRUPTS();
        int n = (int) (hi - lo);
        Datum* ids = (Datum*) palloc(sizeof(Datum) * n);
        Datum* sims = (Datum*) palloc(sizeof(Datum) * n);
        for (int j = 0; j < n; j++) {
            ids[j] = Int32GetDatum(m->nbr_ids[lo + j]);
            sims[j] = Float8GetDatum(m->nbr_sims[lo + j]);
        }
        Datum values[4];
        values[0] = Int64GetDatum(model_id);
        values[1] = Int32GetDatum(m->item_ids[k]);
        values[2] = PointerGetDatum(construct_array(ids, n, INT4OID, 4, true, TYPALIGN_INT));
        values[3] = PointerGetDatum(construct_array(sims, n, FLOAT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
        if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_INSERT)
            elog(ERROR, "recsys: writing neighbours failed");
        MemoryContextReset(loop_cxt);
    }
    MemoryContextSwitchTo(old);
    MemoryContextDelete(loop_cxt);
    SPI_freeplan(plan);
}

// Writes the popularity ranking under model_id in one statement.
static void write_popularity(int64 model_id, const recsys::Model* m)
{
    int n = (int) m->popular_ids.size();
    if (n == 0)
        return;
    Datum* ids = (Datum*) palloc(sizeof(Datum) * n);
    Datum* users = (Datum*) palloc(sizeof(Datum) * n);
    for (int j = 0; j < n; j++) {
        ids[j] = Int32GetDatum(m->popular_ids[j]);
        users[j] = Int32GetDatum(m->popular_users[j]);
    }
    Oid types[3] = {INT8OID, INT4ARRAYOID, INT4ARRAYOID};
    Datum values[3];
    values[0] = Int64GetDatum(model_id);
    values[1] = PointerGetDatum(construct_array(ids, n, INT4OID, 4, true, TYPALIGN_INT));
    values[2] = PointerGetDatum(construct_array(users, n, INT4OID, 4, true, TYPALIGN_INT));
    int rc = SPI_execute_with_args(
        "INSERT INTO recsys.popularity (model_id, rank, item_id, users) "
        "SELECT $1, t.ord::int4, t.item, t.users FROM unnest($2, $3) WITH ORDINALITY AS t(item, users, ord)",
        3, types, values, NULL, false, 0);
    if (rc != SPI_OK_INSERT)
        elog(ERROR, "recsys: writing popularity failed");
}

// recsys.train_store(model_id, matrix_sql, neighbors)
//   -> (users, items, cells, pairs, events, ignored_null, ignored_type)
extern "C" Datum recsys_train_store(PG_FUNCTION_ARGS)
{
    if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                        errmsg("recsys.train_store: arguments must not be NULL")));
    int64 model_id = PG_GETARG_INT64(0);
    char* sql = text_to_cstring(PG_GETARG_TEXT_PP(1));
    int neighbors = PG_GETARG_INT32(2);
    if (neighbors < 0)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("neighbors must be >= 0, not %d", neighbors)));

    TupleDesc desc;
    if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "recsys.train_store: return type must be a row type");
    desc = BlessTupleDesc(desc);

    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "recsys: SPI_connect failed");

    instr_time t0;
    INSTR_TIME_SET_CURRENT(t0);
    CellBuffer cells;
    fetch_cells(sql, &cells);
    elog(DEBUG1, "recsys: read " INT64_FORMAT " cells in %.3f s", cells.n, elapsed(t0));

    // Say what training needs, and refuse it over budget, before allocating.
    // (The Eigen method's peak measured 1.3x the native one's: budget 1.5x.)
    bool eigen = recsys_similarity_method == RECSYS_SIM_EIGEN;
    Size need = 0;
    core_call_or_error("training", [&] {
        recsys::MatrixShape shape = recsys::measure(cells.data, (size_t) cells.n);
        Size core = recsys::estimate_train_bytes(cells.n, shape.users, shape.items, neighbors);
        need = cell_buffer_bytes(cells.n) + (eigen ? core + core / 2 : core);
    });
    elog(DEBUG1, "recsys: training " INT64_FORMAT " cells needs about %zu MB", cells.n, need / (1024 * 1024) + 1);
    check_memory_budget(need, "training");

    // The model is a C++ object: owned by the SPI context, so an error while
    // writing it frees it.
    auto* owned = OwnedByContext<recsys::Model>::create(CurrentMemoryContext);
    progress_set_phase("training");
    core_call_or_error("training", [&] {
        recsys::TrainOptions opt;
        opt.neighbors = neighbors;
        opt.progress = pg_progress();
        std::vector<recsys::Triplet> v(cells.data, cells.data + cells.n);
        owned->obj = new recsys::Model(eigen ? recsys::train_eigen(v, opt, pg_cancel_check())
                                             : recsys::train(std::move(v), opt, pg_cancel_check()));
    });
    int64 events = cells.events, ignored_null = cells.ignored_null, ignored_type = cells.ignored_type;
    if (cells.data != NULL)
        pfree(cells.data);
    elog(DEBUG1, "recsys: trained in %.3f s", elapsed(t0));

    const recsys::Model* m = owned->obj;
    progress_set_phase("writing");
    write_neighbors(model_id, m);
    write_popularity(model_id, m);
    elog(DEBUG1, "recsys: model written in %.3f s", elapsed(t0));

    Datum values[7];
    bool nulls[7] = {false, false, false, false, false, false, false};
    values[0] = Int64GetDatum(m->n_users);
    values[1] = Int64GetDatum((int64) m->item_ids.size());
    values[2] = Int64GetDatum(m->n_cells);
    values[3] = Int64GetDatum(m->pairs());
    values[4] = Int64GetDatum(events);
    values[5] = Int64GetDatum(ignored_null);
    values[6] = Int64GetDatum(ignored_type);
    owned->release();

    HeapTuple tuple = heap_form_tuple(desc, values, nulls);
    // Copy the result out of SPI memory before SPI_finish frees it.
    Datum result = SPI_datumTransfer(HeapTupleGetDatum(tuple), false, -1);
    SPI_finish();
    PG_RETURN_DATUM(result);
}

// recsys.train_memory(cells, users, items, neighbors) -> bytes training needs
// at its peak besides the aggregation's work_mem: the cell buffer plus the
// core's structures.
extern "C" Datum recsys_train_memory(PG_FUNCTION_ARGS)
{
    int64 cells = PG_GETARG_INT64(0), users = PG_GETARG_INT64(1), items = PG_GETARG_INT64(2);
    int neighbors = PG_GETARG_INT32(3);
    if (cells < 0 || users < 0 || items < 0 || neighbors < 0)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("recsys.train_memory: arguments must be >= 0")));
    Size bytes = 0;
    core_call_or_error("estimating memory", [&] {
        bytes = cell_buffer_bytes(cells) + recsys::estimate_train_bytes(cells, users, items, neighbors);
    });
    PG_RETURN_INT64((int64) Min(bytes, (Size) PG_INT64_MAX));
}
