// core_similarity.cpp - settings, weightings and similarity measures
// (core_similarity.hpp; formulas in docs/sql.md "Similarity settings").
// PostgreSQL-free.
#include "core_similarity.hpp"

#include <cmath>
#include <limits>
#include <sstream>
#include <string>

namespace recsys {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string num(double v) {
    std::ostringstream os;
    os.precision(17);
    os << v;
    return os.str();
}

// The value of an optional parameter: its default when unset; an error when
// set but not read by the chosen settings (`reads` false); NaN when unused.
double param(const std::optional<double>& v, const char* name, bool reads, double dflt,
             const char* readers) {
    if (!reads) {
        if (v)
            throw InvalidInput(std::string("recsys: ") + name + " applies only to " + readers);
        return kNaN;
    }
    return v ? *v : dflt;
}

void check_range(double v, const char* name, double lo, double hi, const char* range) {
    if (!(std::isfinite(v) && v >= lo && v <= hi))
        throw InvalidInput(std::string("recsys: ") + name + " must be " + range + ", got " + num(v));
}

}  // namespace

SimilaritySettings resolve_settings(const TrainOptions& opt) {
    if (opt.neighbors < 0)
        throw InvalidInput("recsys: neighbors must be >= 0 (0 keeps all), got " +
                           std::to_string(opt.neighbors));
    SimilaritySettings s;
    s.neighbors = opt.neighbors;
    s.weighting = opt.weighting;
    s.similarity = opt.similarity;
    switch (opt.weighting) {
        case Weighting::weights:
        case Weighting::binary:
        case Weighting::tfidf:
        case Weighting::bm25: break;
        default: throw InvalidInput("recsys: unknown weighting");
    }
    const Similarity sim = opt.similarity;
    if (sim != Similarity::cosine && sim != Similarity::asymmetric_cosine &&
        sim != Similarity::rp3beta && sim != Similarity::jaccard)
        throw InvalidInput("recsys: unknown similarity");
    const bool bm25 = opt.weighting == Weighting::bm25;
    s.k1 = param(opt.k1, "k1", bm25, 1.2, "weighting 'bm25'");
    s.b = param(opt.b, "b", bm25, 0.75, "weighting 'bm25'");
    if (bm25) {
        check_range(s.k1, "k1", 0, std::numeric_limits<double>::max(), "finite and >= 0");
        check_range(s.b, "b", 0, 1, "between 0 and 1");
    }
    const bool asym = sim == Similarity::asymmetric_cosine, rp3 = sim == Similarity::rp3beta;
    s.alpha = param(opt.alpha, "alpha", asym || rp3, asym ? 0.5 : 1.0,
                    "similarity 'asymmetric_cosine' and 'rp3beta'");
    if (asym) check_range(s.alpha, "alpha", 0, 1, "between 0 and 1 for asymmetric_cosine");
    if (rp3)
        check_range(s.alpha, "alpha", 0, std::numeric_limits<double>::max(),
                    "finite and >= 0 for rp3beta");
    s.beta = param(opt.beta, "beta", rp3, 0.5, "similarity 'rp3beta'");
    if (rp3) check_range(s.beta, "beta", 0, std::numeric_limits<double>::max(), "finite and >= 0");
    if (rp3) {
        if (opt.shrink != 0)
            throw InvalidInput("recsys: shrink does not apply to similarity 'rp3beta'");
        s.shrink = kNaN;
    } else {
        check_range(opt.shrink, "shrink", 0, std::numeric_limits<double>::max(), "finite and >= 0");
        s.shrink = opt.shrink;
    }
    if (sim == Similarity::jaccard && opt.weighting != Weighting::weights &&
        opt.weighting != Weighting::binary)
        throw InvalidInput(std::string("recsys: similarity 'jaccard' is defined on the binary "
                                       "matrix; weighting '") +
                           weighting_name(opt.weighting) + "' does not apply to it");
    return s;
}

const char* weighting_name(Weighting w) {
    switch (w) {
        case Weighting::weights: return "weights";
        case Weighting::binary: return "binary";
        case Weighting::tfidf: return "tfidf";
        case Weighting::bm25: return "bm25";
    }
    return "?";
}

const char* similarity_name(Similarity s) {
    switch (s) {
        case Similarity::cosine: return "cosine";
        case Similarity::asymmetric_cosine: return "asymmetric_cosine";
        case Similarity::rp3beta: return "rp3beta";
        case Similarity::jaccard: return "jaccard";
    }
    return "?";
}

Weighting parse_weighting(const std::string& name) {
    for (Weighting w : {Weighting::weights, Weighting::binary, Weighting::tfidf, Weighting::bm25})
        if (name == weighting_name(w)) return w;
    throw InvalidInput("recsys: unknown weighting \"" + name +
                       "\" (accepted: weights, binary, tfidf, bm25)");
}

Similarity parse_similarity(const std::string& name) {
    for (Similarity s : {Similarity::cosine, Similarity::asymmetric_cosine, Similarity::rp3beta,
                         Similarity::jaccard})
        if (name == similarity_name(s)) return s;
    throw InvalidInput("recsys: unknown similarity \"" + name +
                       "\" (accepted: cosine, asymmetric_cosine, rp3beta, jaccard)");
}

namespace detail {

CellWeighting::CellWeighting(const SimilaritySettings& s, const CellStats& st) : kind_(s.weighting) {
    if (kind_ != Weighting::tfidf && kind_ != Weighting::bm25) return;
    // idf(u) = max(0, ln(N / (1 + |I_u|))), N = number of items: implicit's
    // tfidf_weight/bm25_weight (ln N - ln(1 + df)) on the item x user matrix
    // (items are the documents, users the terms), clamped at 0.  The quotient
    // form makes idf exactly 0 when 1 + |I_u| = N.
    const std::size_t n_items = st.item_users.size();
    const double n = static_cast<double>(n_items);
    idf_.resize(st.user_items.size());
    for (std::size_t u = 0; u < idf_.size(); ++u)
        idf_[u] = std::max(0.0, std::log(n / (1.0 + static_cast<double>(st.user_items[u]))));
    if (kind_ != Weighting::bm25) return;
    // L_i = (1 - b) + b len_i / avglen, len_i = sum_u w(u,i), avglen = mean len_i.
    double total = 0;
    for (double len : st.item_weight) total += len;
    if (!std::isfinite(total))
        throw InvalidInput("recsys: weights too large for bm25: their sum overflows a double");
    const double avg = total / static_cast<double>(n_items);
    k1p1_ = s.k1 + 1.0;
    k1L_.resize(n_items);
    for (std::size_t i = 0; i < n_items; ++i)
        k1L_[i] = s.k1 * ((1.0 - s.b) + s.b * st.item_weight[i] / avg);
}

SimilarityFinish::SimilarityFinish(const SimilaritySettings& s, const WeightedStats& st,
                                   const std::vector<int64_t>& item_users)
    : kind_(s.similarity), alpha_(s.alpha), shrink_(s.shrink) {
    const std::size_t n_items = item_users.size();
    auto finite = [](const std::vector<double>& v, const char* what) {
        for (double x : v)
            if (!std::isfinite(x))
                throw InvalidInput(std::string("recsys: weights too large: ") + what +
                                   " overflows a double");
    };
    switch (kind_) {
        case Similarity::cosine:
            finite(st.item_sumsq, "an item's squared norm");
            own_.resize(n_items);
            for (std::size_t i = 0; i < n_items; ++i) own_[i] = std::sqrt(st.item_sumsq[i]);
            break;
        case Similarity::asymmetric_cosine:
            finite(st.item_sumsq, "an item's squared norm");
            own_.resize(n_items);
            other_.resize(n_items);
            for (std::size_t i = 0; i < n_items; ++i) {
                own_[i] = std::pow(st.item_sumsq[i], s.alpha);
                other_[i] = std::pow(st.item_sumsq[i], 1.0 - s.alpha);
            }
            break;
        case Similarity::jaccard:
            own_.resize(n_items);
            for (std::size_t i = 0; i < n_items; ++i) own_[i] = static_cast<double>(item_users[i]);
            break;
        case Similarity::rp3beta:
            finite(st.item_sum, "an item's summed weight");
            finite(st.user_sum, "a user's summed weight");
            item_ = st.item_sum;
            user_ = st.user_sum;
            other_.resize(n_items);
            for (std::size_t i = 0; i < n_items; ++i)
                other_[i] = std::pow(static_cast<double>(item_users[i]), s.beta);
            break;
    }
}

double similarity_extra_bytes(double users, double items, const SimilaritySettings& s) {
    if (s.plain()) return 0;
    // CellStats 8U + 16I (freed after weighting), WeightedStats 8U + 16I and
    // item_users 8I (freed after prepare), finisher at most 8U + 24I: count
    // all at once.
    return 24 * users + 64 * items;
}

}  // namespace detail
}  // namespace recsys
