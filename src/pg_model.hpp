// pg_model.hpp - what the serving functions share: kept plans, the active
// model, argument checks.  C-style code (see pg_guard.hpp): call with SPI
// connected.
#pragma once

#include "pg_source.hpp"

extern "C" {
#include "executor/spi.h"
}

// How a model reads its source (issue #7), from its recorded settings:
// kept for the backend's life per model id.
struct ModelMapping {
    const char* ucol;
    const char* icol;
    const char* ecol;
    const char* tcol;
    const char* vcol;        // NULL: no value column
    Oid user_type;           // served id types: INT4OID, INT8OID, TEXTOID, UUIDOID
    Oid item_type;
    double half_life_days;   // 0: no decay
    EventWeights ew;         // every weighted event type, any sign
};

// The active model and what serving reads with it.
struct ActiveModel {
    int64 model_id;
    char* source;            // the events relation's stored name
    SourceWeights weights;   // the weights it was trained with (> 0 only)
    const ModelMapping* map;
    char* rec_relation;      // recsys_set_recommendable's relation and column
    char* rec_column;        // (NULL: none configured)
};

// Reads the active model; 55000 with a hint when none is trained.
void active_model_read(ActiveModel* m);

// Opens the active model's events relation for reading, with the model's
// mapping (errors name the model when it is gone or unreadable).
void active_model_source(const ActiveModel* m, SourceRel* src);

// Checks an (id, list length) argument pair: neither NULL (22004), the
// length in 1..RECSYS_MAX_TOP_N (22023).
void check_id_and_limit(FunctionCallInfo fcinfo, int id_arg, const char* id_name, int n_arg,
                        const char* n_name);
