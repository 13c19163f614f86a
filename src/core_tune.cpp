// core_tune.cpp - the search behind recsys_tune() (core_tune.hpp).
// PostgreSQL-free.
#include "core_tune.hpp"

#include "core_topk.hpp"

#include <cmath>
#include <sstream>
#include <utility>

namespace recsys {

namespace {

TrainOptions setting(Weighting w, Similarity s, double shrink, int k) {
    TrainOptions o;
    o.weighting = w;
    o.similarity = s;
    o.shrink = shrink;
    o.neighbors = k;
    return o;
}

TrainOptions rp3(double alpha, double beta, int k) {
    TrainOptions o = setting(Weighting::binary, Similarity::rp3beta, 0, k);
    o.alpha = alpha;
    o.beta = beta;
    return o;
}

TrainOptions asym(double alpha, double shrink, int k) {
    TrainOptions o = setting(Weighting::binary, Similarity::asymmetric_cosine, shrink, k);
    o.alpha = alpha;
    return o;
}

}  // namespace

std::vector<TrainOptions> default_tune_grid() {
    using W = Weighting;
    using S = Similarity;
    // Shrinkage and binarisation are what beat popularity on purchase logs
    // (a raw cosine ranks items bought once or twice first); IDF user
    // weighting, RP3beta's popularity penalty and the asymmetric cosine are
    // the next most cited fixes.  K stays at most 200 so that any setting
    // trains within 1.5x of the default's time (bench/tune_speed.sh).
    return {
        setting(W::weights, S::cosine, 0, 50),  // the 1.0 defaults
        setting(W::binary, S::cosine, 50, 50),
        setting(W::tfidf, S::cosine, 200, 100),
        rp3(0.5, 0.3, 100),
        setting(W::binary, S::cosine, 200, 100),
        setting(W::tfidf, S::cosine, 50, 100),
        setting(W::bm25, S::cosine, 100, 100),
        rp3(1.0, 0.5, 100),
        asym(0.25, 50, 100),
        setting(W::binary, S::jaccard, 10, 100),
        setting(W::binary, S::cosine, 10, 50),
        setting(W::tfidf, S::cosine, 500, 200),
    };
}

std::string describe(const TrainOptions& s) {
    std::ostringstream os;
    os.precision(6);
    os << weighting_name(s.weighting) << ' ' << similarity_name(s.similarity);
    if (s.alpha) os << " alpha=" << *s.alpha;
    if (s.beta) os << " beta=" << *s.beta;
    if (s.k1) os << " k1=" << *s.k1;
    if (s.b) os << " b=" << *s.b;
    if (s.similarity != Similarity::rp3beta) os << " shrink=" << s.shrink;
    os << " K=";
    if (s.neighbors == 0)
        os << "all";
    else
        os << s.neighbors;
    return os.str();
}

std::string settings_json(const TrainOptions& opt, bool with_neighbors) {
    const SimilaritySettings s = resolve_settings(opt);
    std::ostringstream os;
    os.precision(15);
    os << "{\"weighting\": \"" << weighting_name(s.weighting) << "\", \"similarity\": \""
       << similarity_name(s.similarity) << '"';
    auto num = [&os](const char* key, double v) {
        if (!std::isnan(v)) os << ", \"" << key << "\": " << v;
    };
    num("shrink", s.shrink);
    num("alpha", s.alpha);
    num("beta", s.beta);
    num("k1", s.k1);
    num("b", s.b);
    if (with_neighbors) os << ", \"neighbors\": " << s.neighbors;
    os << '}';
    return os.str();
}

long best_trial(const std::vector<TuneTrial>& trials) {
    long best = -1;
    for (std::size_t i = 0; i < trials.size(); ++i) {
        const EvalResult& r = trials[i].result;
        if (r.users_evaluated == 0 || !std::isfinite(r.ndcg)) continue;
        if (best < 0 || r.ndcg > trials[static_cast<std::size_t>(best)].result.ndcg)
            best = static_cast<long>(i);
    }
    return best;
}

Tuner::Tuner(std::vector<Triplet> before, std::vector<Touch> after,
             std::vector<TrainOptions> candidates, const TuneOptions& opt)
    : before_(std::move(before)), after_(std::move(after)), candidates_(std::move(candidates)),
      opt_(opt) {
    if (opt_.k <= 0) throw InvalidInput("recsys: k must be > 0, got " + std::to_string(opt_.k));
    if (!(opt_.max_seconds >= 0) || !std::isfinite(opt_.max_seconds))
        throw InvalidInput("recsys: the time budget must be finite and >= 0 seconds");
    for (std::size_t i = 0; i < candidates_.size(); ++i) {
        try {
            resolve_settings(candidates_[i]);
        } catch (const InvalidInput& e) {
            throw InvalidInput("recsys: candidate " + std::to_string(i + 1) + ": " +
                               (std::string(e.what()).rfind("recsys: ", 0) == 0
                                    ? std::string(e.what()).substr(8)
                                    : std::string(e.what())));
        }
    }
    detail::validate_cells(before_, {});
}

std::size_t Tuner::planned() const {
    return opt_.max_configs > 0 ? std::min(opt_.max_configs, candidates_.size()) : candidates_.size();
}

bool Tuner::more() const {
    if (trials_.size() >= planned()) return false;
    if (started_ && opt_.max_seconds > 0) {
        const std::chrono::duration<double> spent = std::chrono::steady_clock::now() - start_;
        if (spent.count() >= opt_.max_seconds) return false;
    }
    return true;
}

const TuneTrial& Tuner::run_next(const CancelCheck& cancel) {
    if (!more()) throw InvalidInput("recsys: no candidate left within the budget");
    const auto t0 = std::chrono::steady_clock::now();
    if (!started_) {
        start_ = t0;
        started_ = true;
    }
    TuneTrial t;
    t.settings = candidates_[trials_.size()];
    EvalOptions eo;
    eo.k = opt_.k;
    eo.neighbors = t.settings.neighbors;
    eo.count_repeats = opt_.count_repeats;
    eo.bootstrap_resamples = opt_.bootstrap_resamples;
    eo.bootstrap_seed = opt_.bootstrap_seed;
    eo.progress = opt_.progress;
    eo.settings = t.settings;
    // The same in-memory matrix for every candidate: evaluate() consumes its
    // arguments, so it gets copies.
    t.result = evaluate(before_, after_, eo, cancel);
    t.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    t.settings.progress = nullptr;
    trials_.push_back(std::move(t));
    return trials_.back();
}

}  // namespace recsys
