// pg_recommend.cpp - recsys_recommend(user_ids int[], top_n int).
//
// Reads the users' current history, the neighbours of the items in it and
// the head of the popularity list in three indexed queries, scores each user
// in the core, and returns the rows in the order of the input array.
#include <algorithm>
#include <vector>

#include "pg_limits.hpp"
#include "pg_model.hpp"

extern "C" {
#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

PG_FUNCTION_INFO_V1(recsys_recommend);
}

// Plans kept for the life of the backend; the plan cache replans them after DDL.
static SPIPlanPtr neighbors_plan = NULL;
static SPIPlanPtr popular_plan = NULL;
static SPIPlanPtr history_plan = NULL;
static Oid history_relid = InvalidOid;
static char* history_rel = NULL;   // the name history_plan's text uses

// The history query over src: (user_id, product_id, w) sorted by user.
static SPIPlanPtr get_history_plan(const SourceRel* src)
{
    if (history_plan != NULL && history_relid == src->relid && strcmp(history_rel, src->qualified) == 0)
        return history_plan;
    if (history_plan != NULL)
        SPI_freeplan(history_plan);
    history_plan = NULL;
    history_plan = source_keep_plan(src, SOURCE_HISTORY);
    if (history_rel != NULL)
        pfree(history_rel);
    history_rel = MemoryContextStrdup(TopMemoryContext, src->qualified);
    history_relid = src->relid;
    return history_plan;
}

// Builds an int4[] datum from n ints.
static Datum int_array(const int32* v, int n)
{
    Datum* d = (Datum*) palloc(sizeof(Datum) * Max(n, 1));
    for (int i = 0; i < n; i++)
        d[i] = Int32GetDatum(v[i]);
    return PointerGetDatum(construct_array(d, n, INT4OID, 4, true, TYPALIGN_INT));
}

// Orders positions by id, then by position, for de-duplication.
struct IdPos {
    int32 id;
    int pos;
};
static int cmp_idpos(const void* a, const void* b)
{
    const IdPos* x = (const IdPos*) a;
    const IdPos* y = (const IdPos*) b;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    return x->pos < y->pos ? -1 : (x->pos > y->pos ? 1 : 0);
}

static int cmp_int32(const void* a, const void* b)
{
    int32 x = *(const int32*) a, y = *(const int32*) b;
    return x < y ? -1 : (x > y ? 1 : 0);
}

// Reads and checks the arguments; returns the distinct ids in first-seen order.
static int32* read_user_ids(FunctionCallInfo fcinfo, int* n_out, int* top_n_out)
{
    if (PG_ARGISNULL(0))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                        errmsg("user_ids must not be NULL"),
                        errhint("Pass an array of user ids, e.g. ARRAY[10, 25, 42].")));
    if (PG_ARGISNULL(1))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                        errmsg("top_n must not be NULL")));
    int top_n = PG_GETARG_INT32(1);
    if (top_n < 1 || top_n > RECSYS_MAX_TOP_N)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("top_n must be between 1 and %d, not %d", RECSYS_MAX_TOP_N, top_n)));
    ArrayType* arr = PG_GETARG_ARRAYTYPE_P(0);
    if (ARR_NDIM(arr) > 1)
        ereport(ERROR, (errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
                        errmsg("user_ids must be a one-dimensional array, not %d-dimensional", ARR_NDIM(arr))));
    int n = ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));
    if (n > RECSYS_MAX_USER_IDS)
        ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                        errmsg("too many user ids: %d, at most %d per call", n, RECSYS_MAX_USER_IDS),
                        errhint("Split the ids into several calls.")));
    *top_n_out = top_n;
    *n_out = 0;
    if (n == 0)
        return NULL;
    Datum* elems;
    bool* nulls;
    int nelems;
    deconstruct_array(arr, INT4OID, 4, true, TYPALIGN_INT, &elems, &nulls, &nelems);
    IdPos* sorted = (IdPos*) palloc(sizeof(IdPos) * nelems);
    for (int i = 0; i < nelems; i++) {
        if (nulls[i])
            ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                            errmsg("user_ids must not contain NULL (element %d is NULL)", i + 1)));
        sorted[i].id = DatumGetInt32(elems[i]);
        sorted[i].pos = i;
    }
    qsort(sorted, nelems, sizeof(IdPos), cmp_idpos);
    bool* keep = (bool*) palloc0(sizeof(bool) * nelems);
    for (int i = 0; i < nelems; i++)
        if (i == 0 || sorted[i].id != sorted[i - 1].id)
            keep[sorted[i].pos] = true;
    int32* ids = (int32*) palloc(sizeof(int32) * nelems);
    int m = 0;
    for (int i = 0; i < nelems; i++)
        if (keep[i])
            ids[m++] = DatumGetInt32(elems[i]);
    *n_out = m;
    return ids;
}

extern "C" Datum recsys_recommend(PG_FUNCTION_ARGS)
{
    int n_users, top_n;
    int32* users = read_user_ids(fcinfo, &n_users, &top_n);

    InitMaterializedSRF(fcinfo, 0);
    ReturnSetInfo* rsinfo = (ReturnSetInfo*) fcinfo->resultinfo;
    if (n_users == 0)
        return (Datum) 0;

    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "recsys: SPI_connect failed");

    // The active model, and the history of every requested user at call
    // time (with the model's weights), sorted by user then item.
    ActiveModel model;
    active_model_read(&model);
    int64 model_id = model.model_id;
    SourceRel src;
    active_model_source(&model, &src);
    Datum hargs[3] = {model.weights.types, model.weights.weights, int_array(users, n_users)};
    source_execute_plan(&src, get_history_plan(&src), hargs);
    bool isnull;
    int n_hist = (int) SPI_processed;
    int32* h_user = (int32*) palloc(sizeof(int32) * Max(n_hist, 1));
    recsys::HistoryItem* h_item = (recsys::HistoryItem*) palloc(sizeof(recsys::HistoryItem) * Max(n_hist, 1));
    int32* items = (int32*) palloc(sizeof(int32) * Max(n_hist, 1));
    for (int i = 0; i < n_hist; i++) {
        HeapTuple t = SPI_tuptable->vals[i];
        h_user[i] = DatumGetInt32(SPI_getbinval(t, SPI_tuptable->tupdesc, 1, &isnull));
        h_item[i].item = DatumGetInt32(SPI_getbinval(t, SPI_tuptable->tupdesc, 2, &isnull));
        h_item[i].weight = DatumGetFloat8(SPI_getbinval(t, SPI_tuptable->tupdesc, 3, &isnull));
        items[i] = h_item[i].item;
    }
    // Longest single history, to size the popularity head.
    int max_hist = 0;
    for (int i = 0, run = 0; i < n_hist; i++) {
        run = (i > 0 && h_user[i] == h_user[i - 1]) ? run + 1 : 1;
        max_hist = Max(max_hist, run);
    }
    qsort(items, n_hist, sizeof(int32), cmp_int32);
    int n_items = 0;
    for (int i = 0; i < n_hist; i++)
        if (i == 0 || items[i] != items[i - 1])
            items[n_items++] = items[i];

    // Neighbours of every history item, sorted by item, flattened.
    int32* nb_item = (int32*) palloc(sizeof(int32) * Max(n_items, 1));
    int64* nb_off = (int64*) palloc(sizeof(int64) * (n_items + 1));
    int32* nb_ids = NULL;
    double* nb_sims = NULL;
    int n_nb = 0;
    nb_off[0] = 0;
    if (n_items > 0) {
        if (neighbors_plan == NULL) {
            Oid types[2] = {INT8OID, INT4ARRAYOID};
            neighbors_plan = keep_plan("SELECT item_id, neighbor_ids, sims FROM recsys.neighbors "
                                       "WHERE model_id OPERATOR(pg_catalog.=) $1 "
                                       "AND item_id OPERATOR(pg_catalog.=) ANY ($2) ORDER BY item_id",
                                       2, types);
        }
        Datum nargs[2] = {Int64GetDatum(model_id), int_array(items, n_items)};
        if (SPI_execute_plan(neighbors_plan, nargs, NULL, true, 0) != SPI_OK_SELECT)
            elog(ERROR, "recsys: reading neighbours failed");
        n_nb = (int) SPI_processed;
        ArrayType** id_arrs = (ArrayType**) palloc(sizeof(ArrayType*) * Max(n_nb, 1));
        ArrayType** sim_arrs = (ArrayType**) palloc(sizeof(ArrayType*) * Max(n_nb, 1));
        int64 total = 0;
        for (int i = 0; i < n_nb; i++) {
            HeapTuple t = SPI_tuptable->vals[i];
            nb_item[i] = DatumGetInt32(SPI_getbinval(t, SPI_tuptable->tupdesc, 1, &isnull));
            id_arrs[i] = DatumGetArrayTypeP(SPI_getbinval(t, SPI_tuptable->tupdesc, 2, &isnull));
            sim_arrs[i] = DatumGetArrayTypeP(SPI_getbinval(t, SPI_tuptable->tupdesc, 3, &isnull));
            int len = ArrayGetNItems(ARR_NDIM(id_arrs[i]), ARR_DIMS(id_arrs[i]));
            if (ARR_HASNULL(id_arrs[i]) || ARR_HASNULL(sim_arrs[i]) ||
                ArrayGetNItems(ARR_NDIM(sim_arrs[i]), ARR_DIMS(sim_arrs[i])) != len)
                ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
                                errmsg("recsys: neighbour arrays of item %d in model " INT64_FORMAT " are damaged",
                                       nb_item[i], model_id),
                                errhint("Retrain with SELECT * FROM recsys_train();")));
            total += len;
            nb_off[i + 1] = total;
        }
        nb_ids = (int32*) palloc(sizeof(int32) * Max(total, (int64) 1));
        nb_sims = (double*) palloc(sizeof(double) * Max(total, (int64) 1));
        for (int i = 0; i < n_nb; i++) {
            int len = (int) (nb_off[i + 1] - nb_off[i]);
            memcpy(nb_ids + nb_off[i], ARR_DATA_PTR(id_arrs[i]), sizeof(int32) * len);
            memcpy(nb_sims + nb_off[i], ARR_DATA_PTR(sim_arrs[i]), sizeof(double) * len);
        }
    }

    // The head of the popularity list: enough to fill top_n past any history.
    if (popular_plan == NULL) {
        Oid types[2] = {INT8OID, INT4OID};
        popular_plan = keep_plan("SELECT item_id, users FROM recsys.popularity "
                                 "WHERE model_id OPERATOR(pg_catalog.=) $1 ORDER BY rank LIMIT $2", 2, types);
    }
    Datum pargs[2] = {Int64GetDatum(model_id), Int32GetDatum(top_n + max_hist)};
    if (SPI_execute_plan(popular_plan, pargs, NULL, true, 0) != SPI_OK_SELECT)
        elog(ERROR, "recsys: reading popularity failed");
    int n_pop = (int) SPI_processed;
    int32* pop_ids = (int32*) palloc(sizeof(int32) * Max(n_pop, 1));
    int32* pop_users = (int32*) palloc(sizeof(int32) * Max(n_pop, 1));
    for (int i = 0; i < n_pop; i++) {
        HeapTuple t = SPI_tuptable->vals[i];
        pop_ids[i] = DatumGetInt32(SPI_getbinval(t, SPI_tuptable->tupdesc, 1, &isnull));
        pop_users[i] = DatumGetInt32(SPI_getbinval(t, SPI_tuptable->tupdesc, 2, &isnull));
    }

    // Score each user in the core and emit its rows.
    recsys::Recommendation* out = (recsys::Recommendation*) palloc(sizeof(recsys::Recommendation) * top_n);
    for (int u = 0; u < n_users; u++) {
        CHECK_FOR_INTERRUPTS();
        int32 uid = users[u];
        // This user's rows in the history, found by binary search.
        int lo = 0, hi = n_hist;
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (h_user[mid] < uid) lo = mid + 1; else hi = mid;
        }
        int first = lo;
        int last = first;
        while (last < n_hist && h_user[last] == uid)
            last++;

        int n_out = 0;
        core_call_or_error("recommending", [&] {
            std::vector<recsys::HistoryItem> history(h_item + first, h_item + last);
            std::vector<int32_t> pids(pop_ids, pop_ids + n_pop);
            std::vector<int32_t> pusers(pop_users, pop_users + n_pop);
            auto lookup = [&](int32_t item) {
                recsys::NeighborList l;
                const int32* p = std::lower_bound(nb_item, nb_item + n_nb, item);
                if (p != nb_item + n_nb && *p == item) {
                    size_t k = (size_t) (p - nb_item);
                    l.ids = nb_ids + nb_off[k];
                    l.sims = nb_sims + nb_off[k];
                    l.size = (size_t) (nb_off[k + 1] - nb_off[k]);
                }
                return l;
            };
            auto recs = recsys::recommend(history, lookup, pids, pusers, top_n);
            n_out = (int) std::min(recs.size(), (size_t) top_n);
            std::copy(recs.begin(), recs.begin() + n_out, out);
        });

        for (int r = 0; r < n_out; r++) {
            Datum values[5];
            bool nulls[5] = {false, false, false, false, false};
            values[0] = Int32GetDatum(uid);
            values[1] = Int32GetDatum(out[r].item);
            values[2] = Float8GetDatum(out[r].score);
            values[3] = Int32GetDatum(r + 1);
            values[4] = CStringGetTextDatum(out[r].from_cf ? "cf" : "popular");
            tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
        }
    }
    SPI_finish();
    return (Datum) 0;
}
