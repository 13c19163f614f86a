// core_tune.hpp - trying many model settings on one time split: the search
// behind recsys_tune() (docs/sql.md "recsys_tune").  PostgreSQL-free.
//
// A Tuner holds the cells before a cutoff and the touches after it, read
// once, and evaluates one candidate setting per call of run_next() on that
// same in-memory matrix: the source is never read again for another setting.
// Candidates run in the order given until a budget is spent: a number of
// configurations, and/or seconds (a candidate is started only while time is
// left; one already running finishes).  The glue calls run_next() once per
// candidate so that it can report each trial as it ends.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include "core.hpp"

namespace recsys {

// One candidate's outcome.
struct TuneTrial {
    TrainOptions settings;  // settings.neighbors is the K tried
    EvalResult result;
    double seconds = 0;     // training + scoring
};

struct TuneOptions {
    int k = 10;
    bool count_repeats = false;
    int bootstrap_resamples = 1000;
    uint64_t bootstrap_seed = 1;
    // Budget: at most max_configs candidates (0: every one), started within
    // max_seconds of the first (0: no time limit).
    std::size_t max_configs = 0;
    double max_seconds = 0;
    Progress progress{};  // training and scoring stages of each candidate
};

// The search space recsys_tune() tries by default, most promising first
// (the literature's best performers on implicit purchase data), the 1.0
// defaults first of all so that tuning never picks a setting that scored
// below them.  Every entry passes resolve_settings().
std::vector<TrainOptions> default_tune_grid();

// A short text for messages: "tfidf cosine shrink=200 K=100".
std::string describe(const TrainOptions& s);

// The settings as a JSON object, every parameter the settings read with its
// default filled in, others left out: {"weighting": "tfidf", "similarity":
// "cosine", "shrink": 200} plus "neighbors" when with_neighbors.  Numbers
// carry 15 significant digits (a decimal typed with at most 15 comes back
// as typed).  Throws InvalidInput for bad settings.
std::string settings_json(const TrainOptions& s, bool with_neighbors);

// The trial with the highest nDCG; ties go to the earlier one.  -1 when
// there is none or no trial evaluated a user.
long best_trial(const std::vector<TuneTrial>& trials);

class Tuner {
public:
    // Validates every candidate (InvalidInput names the first bad one, by
    // position) and the options before any work.
    Tuner(std::vector<Triplet> before, std::vector<Touch> after,
          std::vector<TrainOptions> candidates, const TuneOptions& opt);

    // Candidates the budget allows in total (min of candidates, max_configs).
    std::size_t planned() const;
    // True while a candidate is left and the budget allows starting it.
    bool more() const;
    // Evaluates the next candidate and returns its trial (kept in trials()).
    const TuneTrial& run_next(const CancelCheck& cancel = {});

    const std::vector<TuneTrial>& trials() const { return trials_; }
    std::size_t cells() const { return before_.size(); }

private:
    std::vector<Triplet> before_;
    std::vector<Touch> after_;
    std::vector<TrainOptions> candidates_;
    TuneOptions opt_;
    std::vector<TuneTrial> trials_;
    std::chrono::steady_clock::time_point start_;
    bool started_ = false;
};

}  // namespace recsys
