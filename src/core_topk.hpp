// core_topk.hpp - internal helpers shared by the core_*.cpp files.
// Not part of the public API; PostgreSQL-free like core.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "core.hpp"

namespace recsys {
namespace detail {

// A scored candidate: a neighbour (train) or a recommended item (recommend).
struct Scored {
    double score;
    int32_t id;
};

// The one ranking rule of the core: score descending, then id ascending.
// Scores are never NaN here (callers keep only score > 0).
inline bool ranks_before(const Scored& a, const Scored& b) {
    if (a.score != b.score) return a.score > b.score;
    return a.id < b.id;
}

struct RanksBefore {
    bool operator()(const Scored& a, const Scored& b) const { return ranks_before(a, b); }
};

// Keeps the best `k` of `v` (k == 0: keep all), sorted by ranks_before.
// O(n + k log k).  Ids are assumed distinct, so the order is total.
inline void select_top_k(std::vector<Scored>& v, std::size_t k) {
    if (k != 0 && k < v.size()) {
        std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end(),
                         RanksBefore());
        v.resize(k);
    }
    std::sort(v.begin(), v.end(), RanksBefore());
}

// Streaming top-k by ranks_before (k == 0: keep everything).  Once k
// candidates are held they form a heap whose front is the worst kept one, so
// most later offers cost a single comparison.  Same result as select_top_k.
class TopK {
public:
    explicit TopK(std::size_t k) : k_(k) {}
    void reserve(std::size_t n) { v_.reserve(n); }
    void clear() { v_.clear(); }
    void offer(const Scored& s) {
        if (k_ == 0 || v_.size() < k_) {
            v_.push_back(s);
            if (v_.size() == k_) std::make_heap(v_.begin(), v_.end(), RanksBefore());
            return;
        }
        if (!ranks_before(s, v_.front())) return;
        // s takes the worst one's place at the root and sifts down: one
        // pass down the heap, where pop_heap then push_heap made two.
        const std::size_t n = v_.size();
        std::size_t i = 0;
        for (;;) {
            std::size_t c = 2 * i + 1;  // the worse child
            if (c >= n) break;
            if (c + 1 < n && ranks_before(v_[c], v_[c + 1])) ++c;
            if (!ranks_before(s, v_[c])) break;
            v_[i] = v_[c];
            i = c;
        }
        v_[i] = s;
    }
    // Whether k candidates are held (never with k == 0); then every later
    // offer scoring below worst_score() is refused.
    bool full() const { return k_ != 0 && v_.size() == k_; }
    double worst_score() const { return v_.front().score; }  // only when full()
    // The kept candidates, best first.
    const std::vector<Scored>& sorted() {
        std::sort(v_.begin(), v_.end(), RanksBefore());
        return v_;
    }

private:
    std::size_t k_;
    std::vector<Scored> v_;
};

// Calls the CancelCheck (if any) and throws Cancelled when it says so.
// Only ever called from the thread that called into the core.
inline void poll_cancel(const CancelCheck& cancel) {
    if (cancel && cancel()) throw Cancelled();
}

// Throws InvalidInput unless every weight is finite and > 0; polls `cancel`
// every 2^16 cells.  Shared by train() and train_eigen().
inline void validate_cells(const std::vector<Triplet>& cells, const CancelCheck& cancel) {
    constexpr std::size_t chunk = std::size_t(1) << 16;
    const std::size_t n = cells.size();
    for (std::size_t base = 0; base < n; base += chunk) {
        poll_cancel(cancel);
        const std::size_t end = std::min(n, base + chunk);
        for (std::size_t k = base; k < end; ++k) {
            const Triplet& t = cells[k];
            if (!(std::isfinite(t.weight) && t.weight > 0)) {
                std::ostringstream os;
                os.precision(17);
                os << "recsys: every weight must be finite and > 0, got (user " << t.user << ", item "
                   << t.item << ", weight " << t.weight << ")";
                throw InvalidInput(os.str());
            }
        }
    }
}

// Fills m.popular_ids/popular_users: every item of m.item_ids by its distinct
// users (users_of(dense index)) descending, then id ascending, and returns
// that order (dense indices, 4I bytes).  Shared by train() and train_passes().
template <class UsersOf>
std::vector<int32_t> rank_popularity(Model& m, UsersOf users_of) {
    const std::size_t n = m.item_ids.size();
    std::vector<int32_t> order(n);
    for (std::size_t i = 0; i < n; ++i) order[i] = static_cast<int32_t>(i);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
        const int32_t ca = users_of(static_cast<std::size_t>(a)), cb = users_of(static_cast<std::size_t>(b));
        if (ca != cb) return ca > cb;
        return a < b;
    });
    m.popular_ids.resize(n);
    m.popular_users.resize(n);
    for (std::size_t r = 0; r < n; ++r) {
        const std::size_t i = static_cast<std::size_t>(order[r]);
        m.popular_ids[r] = m.item_ids[i];
        m.popular_users[r] = users_of(i);
    }
    return order;
}

// Bootstrap resample means (core_evaluate.cpp).  `metrics` are k <= 8
// columns of n per-unit values; m units have a non-zero value in some
// column.  Resample r (0-based) has its own generator: SplitMix64 whose
// initial state is the r-th output of SplitMix64 started at `seed`.  It
// stands for n uniform draws with replacement among the n units, of which
// only those among the m count: its first output x gives K, the number of
// draws that land among the m, ~ Binomial(n, m/n), by inversion (the first
// k whose running sum of the distribution's terms exceeds (x >> 11) 2^-53 of
// their total; the terms are tabulated from the mode floor((n+1) m/n)
// outwards by the ratios of consecutive terms and cut below 1e-20 of the
// mode's); the next outputs draw K units among the m (index = the high 64
// bits of x m for the first x whose low 64 bits of x m are >= 2^64 mod m:
// Lemire's unbiased multiply-shift).  Its mean of column c is the sum over
// those m units, ascending, of count_r(u) * v_c(u), divided by n: the same
// columns paired.  Returns k columns of `resamples` means (empty columns
// when n = 0 or resamples = 0).  Resamples are computed in blocks of
// max(4, 2^16 / m) on one or two threads (`threads` as train_threads; the
// result never depends on it); `cancel` is polled before each block.
std::vector<std::vector<double>> bootstrap_means(const std::vector<std::vector<double>>& metrics, int resamples,
                                                 uint64_t seed, const CancelCheck& cancel, int threads = 0);

// Percentile bootstrap: the interval of column c is the q_lo and q_hi
// quantiles of its bootstrap_means (0.025 and 0.975 for a 95% interval),
// linear interpolation between the sorted means at position
// q (resamples - 1).  No values or resamples = 0: NaN intervals.
std::vector<Interval> percentile_bootstrap(const std::vector<std::vector<double>>& metrics,
                                           int resamples, uint64_t seed, double q_lo, double q_hi,
                                           const CancelCheck& cancel, int threads = 0);

// Sorts v by (user, item) ascending, stably -- equal pairs keep their input
// order, as std::stable_sort would -- polling `cancel` (core_evaluate.cpp:
// the evaluation's histories and touches).  Needs a scratch copy of v.
void sort_by_user_item(std::vector<Triplet>& v, const CancelCheck& cancel);
void sort_by_user_item(std::vector<Touch>& v, const CancelCheck& cancel);

// train() with an explicit thread count for the similarity pass: 1 = the
// calling thread only, 2 = one extra worker thread, <= 0 = automatic (2 when
// the work is large enough and 2+ CPUs exist).  Results never depend on it.
Model train_threads(std::vector<Triplet> cells, const TrainOptions& opt, const CancelCheck& cancel,
                    int threads);
// The same on the caller's n cells, borrowed (train(Triplet*, n, ...)).
Model train_threads(Triplet* cells, std::size_t n, const TrainOptions& opt, const CancelCheck& cancel,
                    int threads);

}  // namespace detail
}  // namespace recsys
