// pg_lookup.cpp - recsys_similar_items and recsys_user_history: what the
// active model stores about a product, and a user's history as recommending
// sees it.
#include "pg_ids.hpp"
#include "pg_model.hpp"

extern "C" {
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(recsys_similar_items);
PG_FUNCTION_INFO_V1(recsys_user_history);
}

static SPIPlanPtr similar_plan = NULL;

// recsys_similar_items(product_id <item type>, top_n int)
//   -> (product_id <item type>, similarity float8, rank int)
extern "C" Datum recsys_similar_items(PG_FUNCTION_ARGS)
{
    check_id_and_limit(fcinfo, 0, "product_id", 1, "top_n");
    InitMaterializedSRF(fcinfo, 0);
    ReturnSetInfo* rsinfo = (ReturnSetInfo*) fcinfo->resultinfo;
    Oid arg_type = get_fn_expr_argtype(fcinfo->flinfo, 0);
    Oid item_type = TupleDescAttr(rsinfo->setDesc, 0)->atttypid;
    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "recsys: SPI_connect failed");
    ActiveModel m;
    active_model_read(&m);
    check_model_types(&m, InvalidOid, item_type, "recsys_similar_items");
    int32 idx;
    if (item_type == INT4OID) {
        idx = PG_GETARG_INT32(0);
    } else {
        char* key = id_key_text(PG_GETARG_DATUM(0), arg_type);
        item_indices(m.model_id, &key, 1, &idx);
        if (idx < 0) {
            SPI_finish();
            return (Datum) 0;   // an item the model does not know has no neighbours
        }
    }
    if (similar_plan == NULL) {
        Oid types[3] = {INT8OID, INT4OID, INT4OID};
        similar_plan = keep_plan("SELECT n.id, n.sim, n.ord::pg_catalog.int4 FROM recsys.neighbors nb, "
                                 "ROWS FROM (pg_catalog.unnest(nb.neighbor_ids), pg_catalog.unnest(nb.sims)) "
                                 "WITH ORDINALITY AS n(id, sim, ord) "
                                 "WHERE nb.model_id OPERATOR(pg_catalog.=) $1 "
                                 "AND nb.item_id OPERATOR(pg_catalog.=) $2 "
                                 "AND n.ord OPERATOR(pg_catalog.<=) $3 ORDER BY n.ord",
                                 3, types);
    }
    Datum args[3] = {Int64GetDatum(m.model_id), Int32GetDatum(idx), PG_GETARG_DATUM(1)};
    if (SPI_execute_plan(similar_plan, args, NULL, true, 0) != SPI_OK_SELECT)
        elog(ERROR, "recsys: reading neighbours failed");
    int n = (int) SPI_processed;
    SPITupleTable* tt = SPI_tuptable;
    int32* nb = (int32*) palloc(sizeof(int32) * Max(n, 1));
    Datum* ids = (Datum*) palloc(sizeof(Datum) * Max(n, 1));
    bool isnull;
    for (int i = 0; i < n; i++)
        nb[i] = DatumGetInt32(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
    item_ids_of(m.model_id, item_type, nb, n, ids);
    for (int i = 0; i < n; i++) {
        Datum values[3];
        bool nulls[3] = {false, false, false};
        values[0] = ids[i];
        values[1] = SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull);
        values[2] = SPI_getbinval(tt->vals[i], tt->tupdesc, 3, &isnull);
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }
    SPI_finish();
    return (Datum) 0;
}

// One item of a user's history: its id as the source holds it, w(u,i) and
// the latest event.
struct HistRow {
    IdKey key;
    Datum item;
    double w;
    TimestampTz last;
};
static int cmp_histrow_key(const void* a, const void* b)
{
    return id_key_cmp(&((const HistRow*) a)->key, &((const HistRow*) b)->key);
}
// Newest first, then by id.
static int cmp_histrow_time(const void* a, const void* b)
{
    const HistRow* x = (const HistRow*) a;
    const HistRow* y = (const HistRow*) b;
    if (x->last != y->last)
        return x->last > y->last ? -1 : 1;
    return id_key_cmp(&x->key, &y->key);
}

// recsys_user_history(user_id <user type>, max_items int)
//   -> (product_id <item type>, weight float8, last_event timestamptz),
// newest first: the items with an event of a weighted type, w(u,i) with the
// model's weights, values and decay, as recommending sees it.
extern "C" Datum recsys_user_history(PG_FUNCTION_ARGS)
{
    check_id_and_limit(fcinfo, 0, "user_id", 1, "max_items");
    InitMaterializedSRF(fcinfo, 0);
    ReturnSetInfo* rsinfo = (ReturnSetInfo*) fcinfo->resultinfo;
    Oid arg_type = get_fn_expr_argtype(fcinfo->flinfo, 0);
    Oid item_type = TupleDescAttr(rsinfo->setDesc, 0)->atttypid;
    int max_items = PG_GETARG_INT32(1);
    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "recsys: SPI_connect failed");
    ActiveModel m;
    active_model_read(&m);
    check_model_types(&m, arg_type, item_type, "recsys_user_history");
    SourceRel src;
    active_model_source(&m, &src);
    Datum user = PG_GETARG_DATUM(0);
    IdKey key = id_key_of(user, arg_type);
    int n_ev;
    Oid item_coltype;
    UserEvent* ev = read_user_events(&m, &src, &user, &key, 1, &n_ev, &item_coltype);
    HistRow* rows = (HistRow*) palloc(sizeof(HistRow) * Max(n_ev, 1));
    int n = 0;
    for (int i = 0; i < n_ev; i++) {
        if (!ev[i].weighted)
            continue;
        rows[n].key = id_key_of(ev[i].item_datum, item_coltype);
        rows[n].item = ev[i].item_datum;
        rows[n].w = ev[i].w;
        rows[n].last = ev[i].time;
        n++;
    }
    qsort(rows, n, sizeof(HistRow), cmp_histrow_key);
    int cells = 0;
    for (int i = 0; i < n; i++) {
        if (cells > 0 && id_key_cmp(&rows[cells - 1].key, &rows[i].key) == 0) {
            rows[cells - 1].w += rows[i].w;
            rows[cells - 1].last = Max(rows[cells - 1].last, rows[i].last);
            continue;
        }
        rows[cells++] = rows[i];
    }
    qsort(rows, cells, sizeof(HistRow), cmp_histrow_time);
    for (int i = 0; i < cells && i < max_items; i++) {
        Datum values[3];
        bool nulls[3] = {false, false, false};
        bool fits;
        values[0] = id_datum_as(rows[i].item, item_coltype, item_type, &fits);
        if (!fits)
            ereport(ERROR, (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
                            errmsg("item id %s does not fit integer, the type recsys_user_history returns",
                                   id_key_text(rows[i].item, item_coltype))));
        values[1] = Float8GetDatum(rows[i].w);
        values[2] = TimestampTzGetDatum(rows[i].last);
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }
    SPI_finish();
    return (Datum) 0;
}
