// pg_tune.hpp - model settings (weighting, similarity and their parameters,
// docs/sql.md "Model settings") between SQL and the core, and what
// recsys_tune()'s C half shares with recsys_evaluate()'s.
// C-style code (see pg_guard.hpp).
#pragma once

#include "pg_source.hpp"

extern "C" {
#include "datatype/timestamp.h"
}

// The model settings of a settings jsonb, as given: names empty and has_*
// false for what it does not set (JSON null counts as not set).  Plain data.
struct ModelSettings {
    char weighting[40];
    char similarity[40];
    bool has_shrink, has_alpha, has_beta, has_k1, has_b, has_neighbors;
    double shrink, alpha, beta, k1, b;
    int neighbors;
};

// Reads the keys "weighting", "similarity", "shrink", "alpha", "beta",
// "k1", "b" and "neighbors" of a jsonb object (other keys are left to their
// readers); a key of the wrong JSON type is an error (22023) naming `whose`.
void model_settings_from_jsonb(Datum settings, const char* whose, ModelSettings* out);

// The core's options for s; neighbors when s does not set them.  Builds C++
// objects and throws InvalidInput for unknown names: call inside core_call.
recsys::TrainOptions model_train_options(const ModelSettings* s, int neighbors);

// The evaluation's cutoff: src's newest usable event minus test_days days
// (pg_evaluate.cpp).  Needs SPI connected.
TimestampTz evaluation_cutoff(const SourceRel* src, const SourceWeights* w, int test_days);
