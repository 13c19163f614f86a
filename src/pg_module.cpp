// pg_module.cpp - the module's identity for the server and its settings.
#include <climits>

#include "pg_guard.hpp"
#include "pg_progress.hpp"
#include "pg_settings.hpp"

extern "C" {
#include "fmgr.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

void _PG_init(void);
}

int recsys_similarity_method = RECSYS_SIM_NATIVE;
int recsys_neighbor_cache_kb = 65536;

static const struct config_enum_entry similarity_methods[] = {
    {"native", RECSYS_SIM_NATIVE, false},
    {"eigen", RECSYS_SIM_EIGEN, false},
    {NULL, 0, false}};

// Defines the settings when the library is loaded.
void _PG_init(void)
{
    DefineCustomEnumVariable("recsys.similarity_method",
                             "How recsys_train() computes item similarities.",
                             "native: per-item sparse accumulation (fastest); eigen: Eigen sparse "
                             "products in blocks, an independent second method giving the same model.",
                             &recsys_similarity_method, RECSYS_SIM_NATIVE, similarity_methods,
                             PGC_USERSET, 0, NULL, NULL, NULL);
    DefineCustomIntVariable("recsys.neighbor_cache_size",
                            "Memory each backend keeps the active model's neighbour lists in between calls.",
                            "Serving reads an item's neighbours from recsys.neighbors once per backend and model; "
                            "the cache starts over when it outgrows this size or another model is served. "
                            "0 reads them on every call.",
                            &recsys_neighbor_cache_kb, 65536, 0, MAX_KILOBYTES, PGC_USERSET, GUC_UNIT_KB, NULL,
                            NULL, NULL);
    MarkGUCPrefixReserved("recsys");
    progress_init();
}
