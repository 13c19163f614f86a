// pg_matrix.cpp - recsys_user_item_matrix(): the weighted matrix the next
// training of the configured events relation reads, with today's weights.
#include "pg_model.hpp"

extern "C" {
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(recsys_user_item_matrix);
}

// recsys_user_item_matrix() -> (user_id int, product_id int, weight float8, events int8)
extern "C" Datum recsys_user_item_matrix(PG_FUNCTION_ARGS)
{
    InitMaterializedSRF(fcinfo, 0);
    ReturnSetInfo* rsinfo = (ReturnSetInfo*) fcinfo->resultinfo;
    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "recsys: SPI_connect failed");
    // The configured relation and the current weights, read as the caller.
    if (SPI_execute("SELECT c.source_relation, " RECSYS_WEIGHTS_SQL(RECSYS_LIVE_WEIGHTS)
                    ", " RECSYS_LIVE_WEIGHTS " OPERATOR(pg_catalog.||) recsys.source_settings(NULL) FROM recsys.config c",
                    true, 1) != SPI_OK_SELECT ||
        SPI_processed != 1)
        elog(ERROR, "recsys: reading recsys.config failed");
    char* name = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
    if (name == NULL)
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("recsys source relation is not set"),
                        errhint("UPDATE recsys.config SET source_relation = 'public.interactions'")));
    SourceWeights w;
    source_weights_from_row(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, "recsys.event_weights", &w);
    bool isnull;
    Datum settings = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull);
    SourceRel src;
    source_open(source_lookup(name, "recsys.config.source_relation"), &src);
    // The configured mapping (recsys_set_source), as the next training reads it.
    source_set_mapping(&src, settings);
    check_aggregating_mapping(&src, settings, "recsys_user_item_matrix");

    Datum args[2] = {w.types, w.weights};
    source_execute(&src, SOURCE_MATRIX, args, 0);
    for (uint64 i = 0; i < SPI_processed; i++) {
        Datum values[4];
        bool nulls[4];
        for (int c = 0; c < 4; c++)
            values[c] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, c + 1, &nulls[c]);
        if (nulls[0])
            continue;   // the rows that count ignored events
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }
    SPI_finish();
    return (Datum) 0;
}
