// pg_lookup.cpp - recsys_similar_items and recsys_user_history: what the
// active model stores about a product, and a user's history as recommending
// sees it.
#include "pg_model.hpp"

extern "C" {
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(recsys_similar_items);
PG_FUNCTION_INFO_V1(recsys_user_history);
}

static SPIPlanPtr similar_plan = NULL;
static SPIPlanPtr user_history_plan = NULL;
static Oid user_history_relid = InvalidOid;
static char* user_history_rel = NULL;   // the name the plan's text uses

// Copies every row of the last SPI result into the function's tuplestore;
// the columns are all passed by value.
static void return_rows(FunctionCallInfo fcinfo)
{
    ReturnSetInfo* rsinfo = (ReturnSetInfo*) fcinfo->resultinfo;
    int natts = rsinfo->setDesc->natts;
    Datum values[8];
    bool nulls[8];
    Assert(natts <= 8 && natts == SPI_tuptable->tupdesc->natts);
    for (uint64 i = 0; i < SPI_processed; i++) {
        for (int c = 0; c < natts; c++)
            values[c] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, c + 1, &nulls[c]);
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }
}

// recsys_similar_items(product_id int, top_n int)
//   -> (product_id int, similarity float8, rank int)
extern "C" Datum recsys_similar_items(PG_FUNCTION_ARGS)
{
    check_id_and_limit(fcinfo, 0, "product_id", 1, "top_n");
    InitMaterializedSRF(fcinfo, 0);
    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "recsys: SPI_connect failed");
    ActiveModel m;
    active_model_read(&m);
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
    Datum args[3] = {Int64GetDatum(m.model_id), PG_GETARG_DATUM(0), PG_GETARG_DATUM(1)};
    if (SPI_execute_plan(similar_plan, args, NULL, true, 0) != SPI_OK_SELECT)
        elog(ERROR, "recsys: reading neighbours failed");
    return_rows(fcinfo);
    SPI_finish();
    return (Datum) 0;
}

// recsys_user_history(user_id int, max_items int)
//   -> (product_id int, weight float8, last_event timestamptz), newest first
extern "C" Datum recsys_user_history(PG_FUNCTION_ARGS)
{
    check_id_and_limit(fcinfo, 0, "user_id", 1, "max_items");
    InitMaterializedSRF(fcinfo, 0);
    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "recsys: SPI_connect failed");
    ActiveModel m;
    active_model_read(&m);
    SourceRel src;
    active_model_source(&m, &src);
    if (user_history_plan == NULL || user_history_relid != src.relid ||
        strcmp(user_history_rel, src.qualified) != 0) {
        if (user_history_plan != NULL)
            SPI_freeplan(user_history_plan);
        user_history_plan = NULL;
        user_history_plan = source_keep_plan(&src, SOURCE_USER_HISTORY);
        if (user_history_rel != NULL)
            pfree(user_history_rel);
        user_history_rel = MemoryContextStrdup(TopMemoryContext, src.qualified);
        user_history_relid = src.relid;
    }
    Datum args[4] = {m.weights.types, m.weights.weights, PG_GETARG_DATUM(0), PG_GETARG_DATUM(1)};
    source_execute_plan(&src, user_history_plan, args);
    return_rows(fcinfo);
    SPI_finish();
    return (Datum) 0;
}
