// pg_settings.hpp - the extension's GUC settings (defined in pg_module.cpp).
#pragma once

enum RecsysSimilarityMethod {
    RECSYS_SIM_NATIVE = 0,
    RECSYS_SIM_EIGEN = 1
};

// recsys.similarity_method
extern int recsys_similarity_method;

// recsys.neighbor_cache_size (kB): how much of the active model's neighbour
// lists each backend keeps between calls; 0 turns the cache off.
extern int recsys_neighbor_cache_kb;
