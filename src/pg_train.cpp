// pg_train.cpp - recsys.train_store(): the C++ half of recsys_train().
//
// recsys_train() (plpgsql) validates, locks and counts; this function reads
// the weighted matrix, trains in the core and writes the model's rows.  It
// all happens in the caller's transaction, so a failure or cancel leaves the
// previous model active.
#include <vector>

#include "core_passes.hpp"
#include "pg_fetch.hpp"
#include "pg_read.hpp"
#include "pg_progress.hpp"
#include "pg_settings.hpp"
#include "pg_train.hpp"
#include "pg_tune.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/hio.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "nodes/makefuncs.h"
#include "storage/bufmgr.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "lib/stringinfo.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "portability/instr_time.h"
#include "utils/array.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(recsys_train_store);
PG_FUNCTION_INFO_V1(recsys_train_memory);
PG_FUNCTION_INFO_V1(recsys_train_plan);
}

// Rows of recsys.neighbors per INSERT on the executor's path: one statement
// per item cost ~27 us an item in executor start-up and shutdown, more than
// the row itself.
static const int NEIGHBOR_ROWS_PER_INSERT = 64;

// Rows the direct path hands the table access method at once (COPY's
// multi-insert buffers hold up to 1000): a few hundred kB of arrays.
static const int BULK_ROWS = 256;

// The direct path into one of the extension's own tables: rows go to the
// table with table_multi_insert and to its indexes with
// ExecInsertIndexTuples, as COPY FROM writes them, without planning or
// running an INSERT per batch.  Each row is formed into a heap tuple once,
// in heap-tuple slots that own it: the table access method's slots (and a
// virtual slot) would copy every row twice more on its way to the page.
// The caller's INSERT privilege is checked as the executor checks it; a
// table the executor must write itself (a trigger, row-level security or a
// CHECK constraint a DBA added, or not a plain table, or columns other than
// `columns`) is not opened: bulk_rows_open returns NULL and the caller
// inserts with SQL.
struct BulkRows {
    Relation rel;
    EState* estate;
    ResultRelInfo* rri;
    BulkInsertState bistate;
    CommandId cid;
    TupleTableSlot** slots;
    int n;                 // slots filled
    Datum* values;         // the next row's values (bulk_rows_next)
    bool* nulls;           // all false
    MemoryContext rows;    // the filled slots' values and tuples, reset at each flush
};

static BulkRows* bulk_rows_open(const char* relname, const char* const* columns, const Oid* types, int ncols)
{
    Oid relid = get_relname_relid(relname, get_namespace_oid("recsys", false));
    if (!OidIsValid(relid))
        elog(ERROR, "recsys: table recsys.%s is missing", relname);
    Relation rel = table_open(relid, RowExclusiveLock);
    // Privileges first, as the executor checks them (every column inserted).
    RangeTblEntry* rte = makeNode(RangeTblEntry);
    rte->rtekind = RTE_RELATION;
    rte->relid = relid;
    rte->relkind = rel->rd_rel->relkind;
    rte->rellockmode = RowExclusiveLock;
    rte->requiredPerms = ACL_INSERT;
    for (int a = 1; a <= RelationGetDescr(rel)->natts; a++)
        if (!TupleDescAttr(RelationGetDescr(rel), a - 1)->attisdropped)
            rte->insertedCols = bms_add_member(rte->insertedCols, a - FirstLowInvalidHeapAttributeNumber);
    ExecCheckRTPerms(list_make1(rte), true);
    TupleDesc desc = RelationGetDescr(rel);
    bool same = desc->natts == ncols;
    for (int a = 0; same && a < ncols; a++)
        same = !TupleDescAttr(desc, a)->attisdropped && TupleDescAttr(desc, a)->atttypid == types[a] &&
               strcmp(NameStr(TupleDescAttr(desc, a)->attname), columns[a]) == 0;
    TupleConstr* constr = desc->constr;
    if (!same || rel->rd_rel->relkind != RELKIND_RELATION || rel->trigdesc != NULL ||
        check_enable_rls(relid, InvalidOid, false) == RLS_ENABLED ||
        (constr != NULL && (constr->num_check > 0 || constr->has_generated_stored))) {
        table_close(rel, NoLock);
        return NULL;
    }
    BulkRows* b = (BulkRows*) palloc0(sizeof(BulkRows));
    b->rel = rel;
    b->estate = CreateExecutorState();
    b->rri = makeNode(ResultRelInfo);
    InitResultRelInfo(b->rri, rel, 1, NULL, 0);
    ExecOpenIndices(b->rri, false);
    // The insertion target page kept pinned between batches, but not
    // COPY's ring of buffers: the model is read right after its commit, so
    // its pages stay in shared buffers, and a recycled dirty buffer of the
    // ring would first flush the WAL up to it.
    b->bistate = GetBulkInsertState();
    FreeAccessStrategy(b->bistate->strategy);
    b->bistate->strategy = NULL;
    b->cid = GetCurrentCommandId(true);
    b->slots = (TupleTableSlot**) palloc(sizeof(TupleTableSlot*) * BULK_ROWS);
    for (int i = 0; i < BULK_ROWS; i++)
        b->slots[i] = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);
    b->values = (Datum*) palloc(sizeof(Datum) * ncols);
    b->nulls = (bool*) palloc0(sizeof(bool) * ncols);
    b->rows = AllocSetContextCreate(CurrentMemoryContext, "recsys bulk rows", ALLOCSET_DEFAULT_SIZES);
    return b;
}

// Writes the filled slots: the tuples in as few pages and WAL records as
// they fit, then each one's index entries.
static void bulk_rows_flush(BulkRows* b)
{
    if (b->n == 0)
        return;
    MemoryContext old = MemoryContextSwitchTo(GetPerTupleMemoryContext(b->estate));
    table_multi_insert(b->rel, b->slots, b->n, b->cid, 0, b->bistate);
    for (int i = 0; i < b->n; i++) {
        if (b->rri->ri_NumIndices > 0)
            (void) ExecInsertIndexTuples(b->rri, b->slots[i], b->estate, false, false, NULL, NIL);
        ExecClearTuple(b->slots[i]);
    }
    MemoryContextSwitchTo(old);
    ResetPerTupleExprContext(b->estate);
    MemoryContextReset(b->rows);
    b->n = 0;
}

// The next row's values (the columns of bulk_rows_open, none NULL): fill them,
// allocating in b->rows, then call bulk_rows_add.
static Datum* bulk_rows_next(BulkRows* b)
{
    if (b->n == BULK_ROWS)
        bulk_rows_flush(b);
    return b->values;
}

static void bulk_rows_add(BulkRows* b)
{
    MemoryContext old = MemoryContextSwitchTo(b->rows);
    HeapTuple tuple = heap_form_tuple(RelationGetDescr(b->rel), b->values, b->nulls);
    MemoryContextSwitchTo(old);
    ExecStoreHeapTuple(tuple, b->slots[b->n], true);
    b->n++;
}

// Flushes and closes; the rows are visible to the transaction's next command.
static void bulk_rows_close(BulkRows* b)
{
    bulk_rows_flush(b);
    for (int i = 0; i < BULK_ROWS; i++)
        ExecDropSingleTupleTableSlot(b->slots[i]);
    FreeBulkInsertState(b->bistate);
    ExecCloseIndices(b->rri);
    FreeExecutorState(b->estate);
    table_close(b->rel, NoLock);
    MemoryContextDelete(b->rows);
    pfree(b->slots);
    pfree(b->values);
    pfree(b->nulls);
    pfree(b);
    CommandCounterIncrement();
}

// A one-dimensional array of n > 0 elements of a fixed-width type without
// padding between them (int4, float8), copied from `data`: the bytes
// construct_array would give, without its Datum per element.
static Datum flat_array(const void* data, int n, Oid elmtype, int elmlen)
{
    Size nbytes = ARR_OVERHEAD_NONULLS(1) + (Size) n * elmlen;
    ArrayType* a = (ArrayType*) palloc0(nbytes);
    SET_VARSIZE(a, nbytes);
    a->ndim = 1;
    a->dataoffset = 0;
    a->elemtype = elmtype;
    ARR_DIMS(a)[0] = n;
    ARR_LBOUND(a)[0] = 1;
    memcpy(ARR_DATA_PTR(a), data, (Size) n * elmlen);
    return PointerGetDatum(a);
}

// The arrays of n neighbours, allocated in the current memory context.
static void neighbor_arrays_of(const int32* ids, const double* sims, int n, Datum* ids_array, Datum* sims_array)
{
    static_assert(sizeof(double) == sizeof(float8), "the similarities are copied as float8");
    if (n == 0) {
        *ids_array = PointerGetDatum(construct_empty_array(INT4OID));
        *sims_array = PointerGetDatum(construct_empty_array(FLOAT8OID));
        return;
    }
    *ids_array = flat_array(ids, n, INT4OID, sizeof(int32));
    *sims_array = flat_array(sims, n, FLOAT8OID, sizeof(float8));
}

// Item k's neighbour arrays, allocated in the current memory context.
static void neighbor_arrays(const recsys::Model* m, size_t k, Datum* ids_array, Datum* sims_array)
{
    static_assert(sizeof(m->nbr_ids[0]) == sizeof(int32), "the neighbour ids are copied as int4");
    int64 lo = m->nbr_offsets[k], hi = m->nbr_offsets[k + 1];
    neighbor_arrays_of(m->nbr_ids.data() + lo, m->nbr_sims.data() + lo, (int) (hi - lo), ids_array, sims_array);
}

// An INSERT of `rows` neighbour rows: VALUES ($1, $2, $3, $4), ($5, ...).
static SPIPlanPtr neighbors_insert_plan(int rows)
{
    StringInfoData sql;
    initStringInfo(&sql);
    appendStringInfoString(&sql, "INSERT INTO recsys.neighbors (model_id, item_id, neighbor_ids, sims) VALUES ");
    Oid* types = (Oid*) palloc(sizeof(Oid) * 4 * rows);
    for (int r = 0; r < rows; r++) {
        appendStringInfo(&sql, "%s($%d, $%d, $%d, $%d)", r == 0 ? "" : ", ", 4 * r + 1, 4 * r + 2, 4 * r + 3,
                         4 * r + 4);
        types[4 * r] = INT8OID;
        types[4 * r + 1] = INT4OID;
        types[4 * r + 2] = INT4ARRAYOID;
        types[4 * r + 3] = FLOAT8ARRAYOID;
    }
    SPIPlanPtr plan = SPI_prepare(sql.data, 4 * rows, types);
    if (plan == NULL)
        elog(ERROR, "recsys: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
    pfree(types);
    pfree(sql.data);
    return plan;
}

// The executor's path: NEIGHBOR_ROWS_PER_INSERT rows a statement.
static void write_neighbors_sql(int64 model_id, const recsys::Model* m)
{
    const int B = NEIGHBOR_ROWS_PER_INSERT;
    SPIPlanPtr full = neighbors_insert_plan(B);
    MemoryContext loop_cxt = AllocSetContextCreate(CurrentMemoryContext, "recsys neighbours",
                                                   ALLOCSET_DEFAULT_SIZES);
    MemoryContext old = CurrentMemoryContext;
    Datum* values = (Datum*) palloc(sizeof(Datum) * 4 * B);
    size_t n_items = m->item_ids.size();
    size_t k = 0;
    while (k < n_items) {
        CHECK_FOR_INTERRUPTS();
        // Every batch: SPI_execute_plan returns in SPI's procedure context,
        // where these arrays would pile up until SPI_finish (a few kB an
        // item: 7 MB at 7k items).
        MemoryContextSwitchTo(loop_cxt);
        int rows = 0;
        for (; k < n_items && rows < B; k++) {
            if (m->nbr_offsets[k + 1] == m->nbr_offsets[k])
                continue;
            values[4 * rows] = Int64GetDatum(model_id);
            values[4 * rows + 1] = Int32GetDatum(m->item_ids[k]);
            neighbor_arrays(m, k, &values[4 * rows + 2], &values[4 * rows + 3]);
            rows++;
        }
        if (rows > 0) {
            // The last batch may be short: a plan of its own size, once.
            SPIPlanPtr plan = rows == B ? full : neighbors_insert_plan(rows);
            if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_INSERT)
                elog(ERROR, "recsys: writing neighbours failed");
            if (plan != full)
                SPI_freeplan(plan);
        }
        MemoryContextReset(loop_cxt);
    }
    MemoryContextSwitchTo(old);
    MemoryContextDelete(loop_cxt);
    pfree(values);
    SPI_freeplan(full);
}

static const char* const neighbor_columns[4] = {"model_id", "item_id", "neighbor_ids", "sims"};
static const Oid neighbor_types[4] = {INT8OID, INT4OID, INT4ARRAYOID, FLOAT8ARRAYOID};

// Adds item's row of n neighbours to b (none when n is 0).
static void neighbor_row(BulkRows* b, int64 model_id, int32 item, const int32* ids, const double* sims, int n)
{
    if (n == 0)
        return;
    Datum* v = bulk_rows_next(b);
    MemoryContext old = MemoryContextSwitchTo(b->rows);
    v[0] = Int64GetDatum(model_id);
    v[1] = Int32GetDatum(item);
    neighbor_arrays_of(ids, sims, n, &v[2], &v[3]);
    MemoryContextSwitchTo(old);
    bulk_rows_add(b);
}

// Writes each item's neighbour arrays under model_id, in item order (items
// without neighbours get no row).  The direct path when the table allows it:
// the INSERTs' planning and execution cost more than the rows (10M events:
// 0.8-1.0 s of 64-row INSERTs).
static void write_neighbors(int64 model_id, const recsys::Model* m)
{
    BulkRows* b = bulk_rows_open("neighbors", neighbor_columns, neighbor_types, 4);
    if (b == NULL) {
        write_neighbors_sql(model_id, m);
        return;
    }
    size_t n_items = m->item_ids.size();
    for (size_t k = 0; k < n_items; k++) {
        if (k % BULK_ROWS == 0)
            CHECK_FOR_INTERRUPTS();
        int64 lo = m->nbr_offsets[k];
        neighbor_row(b, model_id, m->item_ids[k], m->nbr_ids.data() + lo, m->nbr_sims.data() + lo,
                     (int) (m->nbr_offsets[k + 1] - lo));
    }
    bulk_rows_close(b);
}

// Writes the popularity ranking under model_id, rank 1 the most popular:
// on the direct path when the table allows it, else in one statement.
static void write_popularity(int64 model_id, const recsys::Model* m)
{
    int n = (int) m->popular_ids.size();
    if (n == 0)
        return;
    static const char* const columns[4] = {"model_id", "rank", "item_id", "users"};
    static const Oid column_types[4] = {INT8OID, INT4OID, INT4OID, INT4OID};
    BulkRows* b = bulk_rows_open("popularity", columns, column_types, 4);
    if (b != NULL) {
        for (int j = 0; j < n; j++) {
            if (j % BULK_ROWS == 0)
                CHECK_FOR_INTERRUPTS();
            Datum* v = bulk_rows_next(b);
            v[0] = Int64GetDatum(model_id);
            v[1] = Int32GetDatum(j + 1);
            v[2] = Int32GetDatum(m->popular_ids[j]);
            v[3] = Int32GetDatum(m->popular_users[j]);
            bulk_rows_add(b);
        }
        bulk_rows_close(b);
        return;
    }
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

// MB, rounded up, for messages.
static Size mb(Size bytes)
{
    return bytes / (1024 * 1024) + (bytes % (1024 * 1024) != 0);
}

// The core's options for a training from SQL: the neighbour count, the
// model settings recorded in the snapshot, and progress reported to
// recsys_progress.  Builds C++ objects: call inside core_call only.
static recsys::TrainOptions training_options(int neighbors, const ModelSettings* model)
{
    recsys::TrainOptions opt = model_train_options(model, neighbors);
    opt.neighbors = neighbors;
    opt.progress = pg_progress();
    return opt;
}

// The least budget training a matrix of `items` distinct items needs, in
// memory or in passes, when it can be told before reading: *exact is false
// when the figure could still depend on what reading finds (the cells, users
// and runs), true when it cannot.  `rows` bounds the cells (the estimate of
// the relation's rows).
static Size least_budget_for_items(double items, double rows, const recsys::TrainOptions& opt, bool* exact)
{
    // With the fewest cells and users these items allow: the passes' and the
    // in-memory figures are then their least.  The passes' pairs (at most K
    // per item) do not depend on the cells, nor does their figure when their
    // similarity pass outweighs merging the runs of a generous read.
    recsys::PassPlan few, many;
    core_call_or_error("estimating memory", [&] {
        int64 i = (int64) Min(items, 2e9);
        few = recsys::plan_passes(i, 1, i, opt, 1, 0);
        int64 cells = (int64) Min(Max(rows, items) * 2, 9e18);
        int64 runs = cells / cell_buffer_max_cells(few.minimum) + 1;
        many = recsys::plan_passes(i, 1, i, opt, runs, 0);
    });
    *exact = few.minimum == many.minimum && few.minimum <= few.in_memory;
    return Min(few.minimum, few.in_memory);
}

// Refuses before the heavy reading a training that cannot fit the budget
// (maintenance_work_mem less `reserved`), whatever reading would find, with
// the least budget that works as the hint.  Only when ANALYZE's statistics
// say the products may be too many for the budget does it count them (one
// light scan of a hashed column); without statistics, or when the figure
// would still depend on the matrix, the decision waits until after reading
// (train_within_budget), where it is exact too.
void refuse_before_reading(const SourceRel* src, const EventWeights* ew, int neighbors, const ModelSettings* model,
                           Size reserved, const char* what, void (*first)(void*), void* first_arg)
{
    Size mwm = (Size) maintenance_work_mem * 1024;
    if (reserved >= mwm)
        return;   // train_within_budget says so
    // With negative weights some products may end with no cell: the count
    // would only bound them.
    for (int k = 0; k < ew->n; k++)
        if (ew->weights[k] < 0)
            return;
    Size budget = mwm - reserved;
    double rows, estimate;
    bool exact;
    source_estimate(src, &rows, &estimate);
    if (estimate < 0)
        return;
    recsys::TrainOptions opt;
    core_call_or_error("estimating memory", [&] { opt = training_options(neighbors, model); });
    if (least_budget_for_items(estimate * 2, rows, opt, &exact) <= budget)
        return;
    SourceWeights w;
    source_weights_positive(ew, &w);
    Datum args[2] = {w.types, w.weights};
    source_execute(src, SOURCE_ITEM_COUNT, args, 1);
    bool isnull;
    int64 items = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
    Size least = least_budget_for_items((double) items, rows, opt, &exact);
    if (least <= budget || !exact)
        return;
    if (first != NULL)
        first(first_arg);
    ereport(ERROR,
            (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
             errmsg("recsys: %s needs at least %zu MB, more than maintenance_work_mem (%zu MB)", what,
                    mb(least + reserved), mwm / (1024 * 1024)),
             errdetail("%s has " INT64_FORMAT " products: keeping %s of each needs that much even in"
                       " passes over the matrix on disk.  Nothing was read besides counting them.",
                       src->qualified, items,
                       neighbors > 0 ? psprintf("%d neighbours", neighbors) : "every neighbour"),
             errhint("Raise it for this session, e.g. SET maintenance_work_mem = '%zuMB', or lower neighbors.",
                     mb(least + reserved))));
}

// The cells for training in memory, loaded from the spill file (which is
// then closed).  Builds C++ objects: call inside core_call only.
static std::vector<recsys::Triplet> load_spilled(CellBuffer* cells)
{
    std::vector<recsys::Triplet> v = cells->spill->obj->load(pg_cancel_check());
    delete cells->spill->obj;   // closes the file
    cells->spill->obj = nullptr;
    return v;
}

// The cells for training in memory: loaded from the spill file or copied
// from the buffer (train_eigen reads a vector).  Builds C++ objects: call
// inside core_call only.
static std::vector<recsys::Triplet> take_cells(CellBuffer* cells)
{
    if (cell_buffer_spilled(cells))
        return load_spilled(cells);
    return std::vector<recsys::Triplet>(cells->data, cells->data + cells->n);
}

// Training in memory with the model stored while the similarity pass runs
// (train_within_budget with a ModelStore): the core builds everything up to
// the pass (recsys::SteppedTraining), a second thread starts on the pass,
// and this thread writes the popularity, then, in turns, the neighbours of
// the items whose lists are final and one block of the pass itself.  The
// same rows as writing the finished model, in the same order; on two cores
// the writing no longer waits for the pass.  An error or a cancel here
// frees the SteppedTraining with the memory context, which stops and joins
// its thread.  Where the neighbours' table needs the executor (a trigger,
// row-level security: bulk_rows_open says so), the pass is finished first
// and written through SQL.
static void train_and_store(CellBuffer* cells, int neighbors, const ModelSettings* model, const char* what,
                            OwnedByContext<recsys::Model>* owned, ModelStore* store)
{
    auto* st = OwnedByContext<recsys::SteppedTraining>::create(CurrentMemoryContext);
    const int32* item_ids = NULL;
    size_t n_items = 0;
    core_call_or_error(what, [&] {
        const recsys::TrainOptions opt = training_options(neighbors, model);
        // The buffer is lent to the core as its scratch space, not copied
        // (CellInput::borrowed: 37-51 ms and 16 bytes a cell less at the
        // 10M bench), and freed below.
        if (cell_buffer_spilled(cells))
            st->obj = new recsys::SteppedTraining(load_spilled(cells), opt, pg_cancel_check());
        else
            st->obj = new recsys::SteppedTraining(cells->data, (size_t) cells->n, opt, pg_cancel_check());
        st->obj->start_helper();
        item_ids = st->obj->model().item_ids.data();
        n_items = st->obj->items();
    });
    // (bench/run.sh: the similarity pass is the time from here to "trained in")
    elog(DEBUG1, "recsys: built the matrix for the similarity pass in %.3f s", seconds_since(store->start));
    if (cells->data != NULL)
        pfree(cells->data);
    cells->data = NULL;
    recsys::SteppedTraining* t = st->obj;
    // The phase from here on: the model's rows are written (items_done of
    // them stored) while the last similarities are computed.
    progress_set_phase("writing");
    write_popularity(store->model_id, &t->model());
    BulkRows* b = bulk_rows_open("neighbors", neighbor_columns, neighbor_types, 4);
    if (b != NULL) {
        size_t k = 0, steps = 0;
        bool computed = false;
        for (;;) {
            CHECK_FOR_INTERRUPTS();
            size_t ready = 0;
            core_call_or_error(what, [&] { ready = t->ready(); });
            if (ready == n_items && !computed) {
                computed = true;
                elog(DEBUG1, "recsys: trained in %.3f s (the popularity and %zu of %zu items' neighbours written"
                     " meanwhile; %zu blocks of the pass on this thread)",
                     seconds_since(store->start), k, n_items, steps);
            }
            for (; k < ready; k++) {
                recsys::NeighborList l;
                core_call_or_error(what, [&] { l = t->neighbours(k); });
                neighbor_row(b, store->model_id, item_ids[k], l.ids, l.sims, (int) l.size);
            }
            progress_set_items("writing", (int64) k, (int64) n_items);
            if (k == n_items)
                break;
            bool took = false;
            core_call_or_error(what, [&] { took = t->step(pg_cancel_check()); });
            steps += took;
            if (!took)
                pg_usleep(100L);   // the helper's last blocks: a few ms at most
        }
        bulk_rows_close(b);
    }
    core_call_or_error(what, [&] { owned->obj = new recsys::Model(t->finish(pg_cancel_check())); });
    st->release();
    if (b == NULL)
        write_neighbors(store->model_id, owned->obj);
    store->stored = true;
}

// See pg_train.hpp.
void train_within_budget(CellBuffer* cells, int neighbors, const ModelSettings* model, Size reserved,
                         const char* what, OwnedByContext<recsys::Model>* owned, ModelStore* store)
{
    Size mwm = (Size) maintenance_work_mem * 1024;
    if (reserved >= mwm)
        ereport(ERROR,
                (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                 errmsg("recsys: %s holds %zu MB besides the model, more than maintenance_work_mem (%zu MB)",
                        what, mb(reserved), mwm / (1024 * 1024)),
                 errhint("Raise it for this session, e.g. SET maintenance_work_mem = '%zuMB'.",
                         mb(reserved) * 2)));
    Size budget = mwm - reserved;
    bool spilled = cell_buffer_spilled(cells);
    bool eigen = recsys_similarity_method == RECSYS_SIM_EIGEN;
    recsys::PassPlan plan;
    int64 n_cells = cells->n, runs = 1, items = 0;
    core_call_or_error(what, [&] {
        int64 users;
        if (spilled) {
            // The last cells join the runs first; the shape comes from the
            // spill (distinct items exactly, users as a bound).
            cells->spill->obj->add_run(cells->data, (size_t) cells->n, pg_cancel_check());
            cells->n = 0;
            n_cells = cells->spill->obj->cells();
            users = cells->spill->obj->users_bound();
            items = cells->spill->obj->items();
            runs = cells->spill->obj->runs();
        } else {
            recsys::MatrixShape shape = recsys::measure(cells->data, (size_t) cells->n);
            users = shape.users;
            items = shape.items;   // (in the NOTICE too)
        }
        // (Settings other than 1.0's also hold per-user and per-item statistics.)
        plan = recsys::plan_passes(n_cells, users, items, training_options(neighbors, model), runs, budget);
    });
    // (The Eigen method reads a copy of the cells where the native one
    // borrows the buffer, and its peak measured 1.3x the native one's with
    // that copy: budget 1.5x.)
    Size in_memory = plan.in_memory;
    if (eigen) {
        // The core's part: the native one's (in_memory - the buffer) and the copy (the buffer's size).
        Size core = in_memory;
        in_memory = cell_buffer_bytes(n_cells) + core + core / 2;
    }
    elog(DEBUG1, "recsys: %s on " INT64_FORMAT " cells needs about %zu MB in memory, %zu MB at least in passes",
         what, n_cells, mb(in_memory), mb(plan.minimum));

    if (in_memory <= budget) {
        if (spilled) {
            pfree(cells->data);
            cells->data = NULL;
        }
        if (store != NULL && !eigen) {
            train_and_store(cells, neighbors, model, what, owned, store);
            return;
        }
        core_call_or_error(what, [&] {
            const recsys::TrainOptions opt = training_options(neighbors, model);
            if (eigen)
                owned->obj = new recsys::Model(recsys::train_eigen(take_cells(cells), opt, pg_cancel_check()));
            else if (cell_buffer_spilled(cells))
                owned->obj = new recsys::Model(recsys::train(load_spilled(cells), opt, pg_cancel_check()));
            else   // the buffer lent, as train_and_store does
                owned->obj = new recsys::Model(
                    recsys::train(cells->data, (size_t) cells->n, opt, pg_cancel_check()));
        });
        if (cells->data != NULL)
            pfree(cells->data);
        cells->data = NULL;
        return;
    }
    if (plan.passes == 0) {
        // Even one item per pass needs more than the budget.  The hint is
        // the least budget that trains: what the passes need, or what
        // training in memory needs when that is less (the shape measured
        // exactly); both only shrink with a larger budget (fewer runs).
        Size least = (spilled ? plan.minimum : Min(plan.minimum, in_memory)) + reserved;
        ereport(ERROR,
                (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                 errmsg("recsys: %s needs about %zu MB, more than maintenance_work_mem (%zu MB)", what,
                        mb(Min(in_memory, plan.minimum) + reserved), mwm / (1024 * 1024)),
                 errdetail("In memory it needs %zu MB; in passes over the matrix on disk, at least %zu MB.",
                           mb(in_memory), mb(plan.minimum)),
                 errhint("Raise it for this session, e.g. SET maintenance_work_mem = '%zuMB', or lower neighbors.",
                         mb(least))));
    }
    ereport(NOTICE,
            (errmsg("recsys: %s needs about %zu MB, maintenance_work_mem is %zu MB: computing in at most " INT64_FORMAT
                    " passes", what, mb(in_memory + reserved), mwm / (1024 * 1024), plan.passes),
             errdetail("Each pass reads the matrix from a temporary file (about %zu MB) and computes the"
                       " neighbours of at least " INT64_FORMAT " of the " INT64_FORMAT " items; items whose"
                       " users hold few other items take less room, so passes are often far fewer.%s",
                       mb(cell_buffer_bytes(n_cells) * 3 / 4), plan.items_per_pass, items,
                       eigen ? " The passes use the native similarity method." : "")));
    if (!spilled)
        cell_buffer_spill_rest(cells);
    else if (cells->data != NULL) {
        pfree(cells->data);
        cells->data = NULL;
    }
    int64 passes_made = 0;
    core_call_or_error(what, [&] {
        const recsys::TrainOptions opt = training_options(neighbors, model);
        owned->obj = new recsys::Model(
            recsys::train_passes(*cells->spill->obj, opt, budget, pg_cancel_check(), &passes_made));
        delete cells->spill->obj;
        cells->spill->obj = nullptr;
    });
    elog(DEBUG1, "recsys: %s computed the similarities in " INT64_FORMAT " passes (at most " INT64_FORMAT
         " planned)", what, passes_made, plan.passes);
}

// recsys.train_store(model_id, source regclass, neighbors, settings jsonb)
//   -> (users, items, cells, pairs, events, ignored_null, ignored_type)
// settings is what recsys.settings_snapshot() recorded: its weights are the
// ones the matrix is built with.
// A database still at 1.0 (not yet ALTER EXTENSION recsys UPDATE) calls it
// as 1.0 did, (model_id, matrix_sql text, neighbors), from its own
// recsys_train(): that query text is run as 1.0 ran it, with the caller's
// rights, until the update replaces those SQL functions.
extern "C" Datum recsys_train_store(PG_FUNCTION_ARGS)
{
    bool legacy = PG_NARGS() == 3;
    for (int i = 0; i < PG_NARGS(); i++)
        if (PG_ARGISNULL(i))
            ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                            errmsg("recsys.train_store: arguments must not be NULL")));
    int64 model_id = PG_GETARG_INT64(0);
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

    SourceRel src;
    EventWeights weights;     // every weighted type, any sign
    EventsRead read;
    memset(&read, 0, sizeof read);
    ModelSettings model;
    memset(&model, 0, sizeof model);   // 1.0's call: the 1.0 defaults
    if (!legacy) {
        source_open(PG_GETARG_OID(1), &src);
        source_set_mapping(&src, PG_GETARG_DATUM(3));
        source_event_weights(PG_GETARG_DATUM(3), "the training's settings", &weights);
        model_settings_from_jsonb(PG_GETARG_DATUM(3), "the training's settings", &model);
    }

    if (!legacy)
        refuse_before_reading(&src, &weights, neighbors, &model, 0, "training");

    instr_time t0;
    INSTR_TIME_SET_CURRENT(t0);
    CellBuffer cells;
    cell_buffer_init(&cells, true);
    if (legacy)
        fetch_cells_sql(text_to_cstring(PG_GETARG_TEXT_PP(1)), &cells);
    else
        read_events(&src, &weights, &cells, &read);
    int64 events = cells.events, ignored_null = cells.ignored_null, ignored_type = cells.ignored_type;
    elog(DEBUG1, "recsys: read " INT64_FORMAT " cells in %.3f s (" INT64_FORMAT " spilled to disk)",
         cells.spilled + cells.n, seconds_since(t0), cells.spilled);

    // The model is a C++ object: owned by the SPI context, so an error while
    // writing it frees it.
    auto* owned = OwnedByContext<recsys::Model>::create(CurrentMemoryContext);
    progress_set_phase("training");
    ModelStore store = {model_id, t0, false};
    train_within_budget(&cells, neighbors, &model, 0, "training", owned, &store);
    const recsys::Model* m = owned->obj;
    if (store.stored) {
        elog(DEBUG1, "recsys: neighbours and popularity written in %.3f s", seconds_since(t0));
    } else {
        elog(DEBUG1, "recsys: trained in %.3f s", seconds_since(t0));
        progress_set_phase("writing");
        write_neighbors(model_id, m);
        elog(DEBUG1, "recsys: neighbours written in %.3f s", seconds_since(t0));
        write_popularity(model_id, m);
        elog(DEBUG1, "recsys: popularity written in %.3f s", seconds_since(t0));
    }
    if (!legacy)
        write_item_keys(model_id, &src, &read, m->item_ids.data(), (int64) m->item_ids.size());
    elog(DEBUG1, "recsys: model written in %.3f s", seconds_since(t0));

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
        bytes = cell_buffer_bytes(cells) +
                recsys::estimate_train_bytes(cells, users, items, neighbors, recsys::CellInput::borrowed);
    });
    PG_RETURN_INT64((int64) Min(bytes, (Size) PG_INT64_MAX));
}

// recsys.train_plan(cells, users, items, neighbors, budget_kb)
//   -> (in_memory, minimum, passes, items_per_pass)
// How training a matrix of this shape proceeds within budget_kb kilobytes
// (NULL: maintenance_work_mem), as recsys.train_store decides it: in memory
// (passes 0) when in_memory fits; else in at most `passes` passes of at least
// items_per_pass items when `minimum` fits (items of small reach take less
// room than the dense row the plan counts); else refused (passes and
// items_per_pass NULL).
// The cells are assumed spilled in as many runs as reading them would write.
extern "C" Datum recsys_train_plan(PG_FUNCTION_ARGS)
{
    for (int i = 0; i < 4; i++)
        if (PG_ARGISNULL(i))
            ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                            errmsg("recsys.train_plan: cells, users, items and neighbors must not be NULL")));
    int64 cells = PG_GETARG_INT64(0), users = PG_GETARG_INT64(1), items = PG_GETARG_INT64(2);
    int neighbors = PG_GETARG_INT32(3);
    int64 budget_kb = PG_ARGISNULL(4) ? (int64) maintenance_work_mem : PG_GETARG_INT64(4);
    if (cells < 0 || users < 0 || items < 0 || neighbors < 0 || budget_kb < 0)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("recsys.train_plan: arguments must be >= 0")));
    TupleDesc desc;
    if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "recsys.train_plan: return type must be a row type");
    desc = BlessTupleDesc(desc);
    Size budget = (Size) Min(budget_kb, (int64) (PG_INT64_MAX / 1024)) * 1024;
    int64 per_run = cell_buffer_max_cells(budget);
    int64 runs = cells > per_run ? (cells + per_run - 1) / per_run : 1;
    recsys::PassPlan plan;
    core_call_or_error("estimating memory", [&] {
        plan = recsys::plan_passes(cells, users, items, neighbors, runs, budget);
    });
    Datum values[4];
    bool nulls[4] = {false, false, false, false};
    values[0] = Int64GetDatum((int64) Min(plan.in_memory, (Size) PG_INT64_MAX));
    values[1] = Int64GetDatum((int64) Min(plan.minimum, (Size) PG_INT64_MAX));
    if (plan.in_memory <= budget) {
        values[2] = Int64GetDatum(0);
        nulls[3] = true;
    } else if (plan.passes > 0) {
        values[2] = Int64GetDatum(plan.passes);
        values[3] = Int64GetDatum(plan.items_per_pass);
    } else {
        nulls[2] = nulls[3] = true;
    }
    PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
