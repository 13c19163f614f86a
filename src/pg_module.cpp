// pg_module.cpp - the module's identity for the server and its settings.
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
    MarkGUCPrefixReserved("recsys");
    progress_init();
}
