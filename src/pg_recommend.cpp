// pg_recommend.cpp - recsys_recommend(user_ids <user type>[], top_n int,
// exclude_seen bool), in the id types it is declared with (pg_ids.hpp).
//
// Reads the users' current events, the neighbours of the items in their
// history and the head of the popularity list in three indexed queries,
// scores each user in the core, and returns the rows in the order of the
// input array.  Every item a user has an event on is excluded (unless
// exclude_seen is false), whatever its weight: refunds and weight-0 events
// included.
#include <algorithm>
#include <vector>

#include "pg_limits.hpp"
#include "pg_ids.hpp"
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

// Builds an int4[] datum from n ints.
static Datum int_array(const int32* v, int n)
{
    Datum* d = (Datum*) palloc(sizeof(Datum) * Max(n, 1));
    for (int i = 0; i < n; i++)
        d[i] = Int32GetDatum(v[i]);
    return PointerGetDatum(construct_array(d, n, INT4OID, 4, true, TYPALIGN_INT));
}

static int cmp_int32(const void* a, const void* b)
{
    int32 x = *(const int32*) a, y = *(const int32*) b;
    return x < y ? -1 : (x > y ? 1 : 0);
}

// A requested id, its key and where it came in the array.
struct ReqUser {
    IdKey key;
    Datum id;
    int pos;
};
static int cmp_requser(const void* a, const void* b)
{
    const ReqUser* x = (const ReqUser*) a;
    const ReqUser* y = (const ReqUser*) b;
    int c = id_key_cmp(&x->key, &y->key);
    if (c != 0)
        return c;
    return x->pos < y->pos ? -1 : (x->pos > y->pos ? 1 : 0);
}

// Orders a user's events by user, then item (the known ones).
static int cmp_event(const void* a, const void* b)
{
    const UserEvent* x = (const UserEvent*) a;
    const UserEvent* y = (const UserEvent*) b;
    if (x->user != y->user)
        return x->user < y->user ? -1 : 1;
    if (x->item != y->item)
        return x->item < y->item ? -1 : 1;
    return 0;
}

// Reads and checks the arguments; returns the distinct ids sorted by key
// (their first position in `pos`).
static ReqUser* read_user_ids(FunctionCallInfo fcinfo, int* n_out, int* top_n_out, bool* exclude_seen)
{
    if (PG_ARGISNULL(0))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                        errmsg("user_ids must not be NULL"),
                        errhint("Pass an array of user ids, e.g. ARRAY[10, 25, 42].")));
    if (PG_ARGISNULL(1))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                        errmsg("top_n must not be NULL")));
    if (PG_NARGS() > 2 && PG_ARGISNULL(2))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                        errmsg("exclude_seen must not be NULL")));
    *exclude_seen = PG_NARGS() > 2 ? PG_GETARG_BOOL(2) : true;
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
    Oid elem = ARR_ELEMTYPE(arr);
    int16 typlen;
    bool typbyval;
    char typalign;
    get_typlenbyvalalign(elem, &typlen, &typbyval, &typalign);
    Datum* elems;
    bool* nulls;
    int nelems;
    deconstruct_array(arr, elem, typlen, typbyval, typalign, &elems, &nulls, &nelems);
    ReqUser* sorted = (ReqUser*) palloc(sizeof(ReqUser) * nelems);
    for (int i = 0; i < nelems; i++) {
        if (nulls[i])
            ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                            errmsg("user_ids must not contain NULL (element %d is NULL)", i + 1)));
        sorted[i].key = id_key_of(elems[i], elem);
        sorted[i].id = elems[i];
        sorted[i].pos = i;
    }
    qsort(sorted, nelems, sizeof(ReqUser), cmp_requser);
    int m = 0;
    for (int i = 0; i < nelems; i++)
        if (i == 0 || id_key_cmp(&sorted[i].key, &sorted[i - 1].key) != 0)
            sorted[m++] = sorted[i];
    *n_out = m;
    return sorted;
}

// Orders distinct users by their first position in the input.
static int cmp_first_pos(const void* a, const void* b)
{
    const ReqUser* x = *(const ReqUser* const*) a;
    const ReqUser* y = *(const ReqUser* const*) b;
    return x->pos < y->pos ? -1 : (x->pos > y->pos ? 1 : 0);
}

extern "C" Datum recsys_recommend(PG_FUNCTION_ARGS)
{
    int n_users, top_n;
    bool exclude_seen;
    ReqUser* users = read_user_ids(fcinfo, &n_users, &top_n, &exclude_seen);

    InitMaterializedSRF(fcinfo, 0);
    ReturnSetInfo* rsinfo = (ReturnSetInfo*) fcinfo->resultinfo;
    if (n_users == 0)
        return (Datum) 0;
    Oid user_type = TupleDescAttr(rsinfo->setDesc, 0)->atttypid;
    Oid item_type = TupleDescAttr(rsinfo->setDesc, 1)->atttypid;

    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "recsys: SPI_connect failed");

    // The active model, and the events of every requested user at call
    // time (with the model's weights and decay).
    ActiveModel model;
    active_model_read(&model);
    check_model_types(&model, user_type, item_type, "recsys_recommend");
    int64 model_id = model.model_id;
    SourceRel src;
    active_model_source(&model, &src);
    Datum* ids = (Datum*) palloc(sizeof(Datum) * n_users);
    IdKey* keys = (IdKey*) palloc(sizeof(IdKey) * n_users);
    for (int i = 0; i < n_users; i++) {
        ids[i] = users[i].id;
        keys[i] = users[i].key;
    }
    int n_ev;
    Oid item_coltype;
    UserEvent* ev = read_user_events(&model, &src, ids, keys, n_users, &n_ev, &item_coltype);
    // Summed per (user, item): w(u,i) > 0 is history, the other known
    // items are seen.  Events of items the model does not know are dropped.
    int n_known = 0;
    for (int i = 0; i < n_ev; i++)
        if (ev[i].known)
            ev[n_known++] = ev[i];
    qsort(ev, n_known, sizeof(UserEvent), cmp_event);
    int n_cells = 0;
    for (int i = 0; i < n_known; i++) {
        if (n_cells > 0 && ev[n_cells - 1].user == ev[i].user && ev[n_cells - 1].item == ev[i].item) {
            ev[n_cells - 1].w += ev[i].w;
            continue;
        }
        ev[n_cells++] = ev[i];
    }
    int* u_first = (int*) palloc(sizeof(int) * (n_users + 1));   // cells of user j: [u_first[j], u_first[j+1])
    int max_seen = 0;
    for (int j = 0, c = 0; j <= n_users; j++) {
        u_first[j] = c;
        while (c < n_cells && ev[c].user == j)
            c++;
        if (j < n_users)
            max_seen = Max(max_seen, c - u_first[j]);
    }
    int32* items = (int32*) palloc(sizeof(int32) * Max(n_cells, 1));
    int n_items = 0;
    for (int i = 0; i < n_cells; i++)
        if (ev[i].w > 0)
            items[n_items++] = ev[i].item;
    qsort(items, n_items, sizeof(int32), cmp_int32);
    int n_distinct = 0;
    for (int i = 0; i < n_items; i++)
        if (i == 0 || items[i] != items[i - 1])
            items[n_distinct++] = items[i];
    n_items = n_distinct;
    int max_hist = max_seen;
    bool isnull;

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

    // Score each user in the core and emit its rows, in input order.
    ReqUser** order = (ReqUser**) palloc(sizeof(ReqUser*) * n_users);
    for (int j = 0; j < n_users; j++)
        order[j] = &users[j];
    qsort(order, n_users, sizeof(ReqUser*), cmp_first_pos);
    recsys::Recommendation* out = (recsys::Recommendation*) palloc(sizeof(recsys::Recommendation) * top_n);
    recsys::HistoryItem* h_item = (recsys::HistoryItem*) palloc(sizeof(recsys::HistoryItem) * Max(max_seen, 1));
    int32* seen = (int32*) palloc(sizeof(int32) * Max(max_seen, 1));
    int32* out_idx = (int32*) palloc(sizeof(int32) * top_n);
    Datum* out_ids = (Datum*) palloc(sizeof(Datum) * top_n);
    for (int o = 0; o < n_users; o++) {
        CHECK_FOR_INTERRUPTS();
        int j = (int) (order[o] - users);
        int n_hist = 0, n_seen = 0;
        for (int c = u_first[j]; c < u_first[j + 1]; c++) {
            if (ev[c].w > 0) {
                h_item[n_hist].item = ev[c].item;
                h_item[n_hist].weight = ev[c].w;
                n_hist++;
            } else {
                seen[n_seen++] = ev[c].item;   // ascending: the cells are sorted by item
            }
        }
        int n_out = 0;
        core_call_or_error("recommending", [&] {
            std::vector<recsys::HistoryItem> history(h_item, h_item + n_hist);
            std::vector<int32_t> also_seen(seen, seen + n_seen);
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
            auto recs = recsys::recommend(history, lookup, pids, pusers, top_n, exclude_seen, also_seen);
            n_out = (int) std::min(recs.size(), (size_t) top_n);
            std::copy(recs.begin(), recs.begin() + n_out, out);
        });
        for (int r = 0; r < n_out; r++)
            out_idx[r] = out[r].item;
        item_ids_of(model_id, item_type, out_idx, n_out, out_ids);
        for (int r = 0; r < n_out; r++) {
            Datum values[5];
            bool nulls[5] = {false, false, false, false, false};
            values[0] = users[j].id;
            values[1] = out_ids[r];
            values[2] = Float8GetDatum(out[r].score);
            values[3] = Int32GetDatum(r + 1);
            values[4] = CStringGetTextDatum(out[r].from_cf ? "cf" : "popular");
            tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
        }
    }
    SPI_finish();
    return (Datum) 0;
}
