// core_evaluate.cpp - offline evaluation with a time split.  PostgreSQL-free.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>

#include "core.hpp"
#include "core_parallel.hpp"
#include "core_simd.hpp"
#include "core_topk.hpp"

namespace recsys {

namespace {
constexpr std::size_t kPollDraws = std::size_t(1) << 16;  // bootstrap draws between cancel polls
constexpr std::size_t kMaxColumns = 8;                    // bootstrap metrics at once
constexpr std::size_t kGroup = 4;                         // bootstrap resamples summed at once
constexpr std::size_t kUserBlock = 256;                   // users scored between cancel polls
constexpr std::size_t kSortedTopK = 32;                   // k up to this: the top k kept sorted, else a heap
constexpr std::size_t kMinParallelUsers = 4096;           // fewer: one thread
constexpr std::size_t kMinParallelSort = std::size_t(1) << 16;  // touches: fewer, sorted after the histories
constexpr std::size_t kMinParallelDraws = std::size_t(1) << 20;  // bootstrap: fewer draws, one thread

// One test user's slices of the sorted touches and histories.
struct UserSlice {
    std::size_t a_begin, a_end, h_begin, h_end;
};

// One test user's figures.
struct UserScore {
    double p = 0, r = 0, ndcg = 0, hit = 0, ap = 0, pop_p = 0, pop_r = 0;
    bool evaluated = false;
    bool no_history = false;
};

// One stored pair as the scorer reads it: the similarity and the
// neighbour's index side by side, packed, so that a neighbour list is one
// run of memory (500 bytes for 50 neighbours with the narrow index, where
// the model's two arrays spread it over 200 and 400 bytes in two places).
// Scoring reads one list per history item at random from tens of MB, so
// it waits on fewer cache lines.  The same similarity doubles.
#pragma pack(push, 1)
struct NarrowPair {
    double sim;
    uint16_t j;  // catalogues of up to 65,536 items
};
struct WidePair {
    double sim;
    int32_t j;
};
#pragma pack(pop)

// The model's neighbour lists (packed pairs, dense item indices) and
// popularity list (dense item indices), built once for all users.
struct ModelIndex {
    std::vector<NarrowPair> narrow;  // per stored pair, when the model holds <= 65,536 items
    std::vector<WidePair> wide;      // otherwise
    std::vector<int32_t> popular;    // per popularity rank: the item's index
    // By item id, when the ids are dense enough (0 <= id < 4 items + 2^16):
    // the item's index, or -1; empty otherwise (binary search instead).
    std::vector<int32_t> by_id;
    // The table by id is made first: the stored pairs' neighbours (millions
    // at 10M events) are then found by one look-up each, not a search.
    explicit ModelIndex(const Model& m) : popular(m.popular_ids.size()) {
        if (!m.item_ids.empty() && m.item_ids.front() >= 0 &&
            static_cast<std::size_t>(m.item_ids.back()) < 4 * m.item_ids.size() + (std::size_t(1) << 16)) {
            by_id.assign(static_cast<std::size_t>(m.item_ids.back()) + 1, -1);
            for (std::size_t j = 0; j < m.item_ids.size(); ++j)
                by_id[static_cast<std::size_t>(m.item_ids[j])] = static_cast<int32_t>(j);
        }
        const auto pack = [&](auto& pairs) {
            using Pair = typename std::decay_t<decltype(pairs)>::value_type;
            pairs.resize(m.nbr_ids.size());
            for (std::size_t e = 0; e < m.nbr_ids.size(); ++e)
                pairs[e] = Pair{m.nbr_sims[e], static_cast<decltype(Pair::j)>(held(m, m.nbr_ids[e]))};
        };
        if (m.item_ids.size() <= (std::size_t(1) << 16)) pack(narrow);
        else pack(wide);
        for (std::size_t q = 0; q < m.popular_ids.size(); ++q) popular[q] = held(m, m.popular_ids[q]);
    }
    // The index of `item` in m.item_ids, or -1.
    int32_t find(const Model& m, int32_t item) const {
        if (!by_id.empty())
            return item >= 0 && static_cast<std::size_t>(item) < by_id.size() ? by_id[static_cast<std::size_t>(item)]
                                                                               : -1;
        auto it = std::lower_bound(m.item_ids.begin(), m.item_ids.end(), item);
        return it != m.item_ids.end() && *it == item ? static_cast<int32_t>(it - m.item_ids.begin()) : -1;
    }
    // The index of `item`, which the model lists (as a neighbour or a
    // popular item): it must hold it.
    int32_t held(const Model& m, int32_t item) const {
        const int32_t j = find(m, item);
        if (j < 0) throw InvalidInput("recsys: the model lists item " + std::to_string(item) + " it does not hold");
        return j;
    }
};

// Scores users against the model as recommend(model, history, k, !repeats)
// does -- the same sums in the same order, the same ranking and popular fill
// -- with a dense accumulator over the model's items that is reused from user
// to user.  One per thread.
class Scorer {
public:
    std::vector<unsigned char> recommended;  // by item index: recommended to an evaluated user

    Scorer(const Model& m, const ModelIndex& ix, int k, bool repeats)
        : recommended(m.item_ids.size(), 0), m_(m), ix_(ix), k_(static_cast<std::size_t>(k)), repeats_(repeats),
          acc_(m.item_ids.size(), 0),
          seen_(m.item_ids.size(), 0), listed_(m.item_ids.size(), 0), relevant_flag_(m.item_ids.size(), 0),
          order_(m.item_ids.size() + 1), top_(k_), best_(k_) {}

    // One user: cells before the cutoff hist[0..nh) (sorted by item, summed),
    // distinct touches after it t[0..nt) (sorted by item).
    void score(const Triplet* hist, std::size_t nh, const Touch* t, std::size_t nt, UserScore& out) {
        history_.clear();
        for (std::size_t q = 0; q < nh; ++q)
            if (hist[q].weight > 0) history_.push_back(HistoryItem{hist[q].item, hist[q].weight});
        out = UserScore{};
        if (history_.empty()) {
            out.no_history = true;
            return;
        }
        // Both lists are sorted by item: one merge, not a search per touch.
        relevant_.clear();
        for (std::size_t q = 0, h = 0; q < nt; ++q) {
            if (!repeats_) {
                while (h < history_.size() && history_[h].item < t[q].item) ++h;
                if (h < history_.size() && history_[h].item == t[q].item) continue;
            }
            relevant_.push_back(t[q].item);
        }
        if (relevant_.empty()) return;
        out.evaluated = true;

        // Collaborative scores (accumulate below), the history's items
        // flagged as seen.
        hidx_.clear();
        for (const HistoryItem& h : history_) {
            const int32_t j = ix_.find(m_, h.item);
            hidx_.push_back(j);
            if (j >= 0) seen_[static_cast<std::size_t>(j)] = 1;
        }
        double* const acc = acc_.data();
        int32_t* const order = order_.data();
        const std::size_t n_order =
            ix_.narrow.empty() ? accumulate(ix_.wide.data(), acc, order) : accumulate(ix_.narrow.data(), acc, order);
        const std::size_t n_best = select_best(order, n_order, acc);
        recs_.clear();
        for (std::size_t q = 0; q < n_best; ++q) {  // ids here are item indices
            recs_.push_back(best_[q].id);
            listed_[static_cast<std::size_t>(best_[q].id)] = 1;
        }
        for (std::size_t q = 0; q < ix_.popular.size() && recs_.size() < k_; ++q) {
            const std::size_t j = static_cast<std::size_t>(ix_.popular[q]);
            if ((!repeats_ && seen_[j]) || listed_[j]) continue;
            recs_.push_back(static_cast<int32_t>(j));
            listed_[j] = 1;
        }

        // The relevant items the model holds, flagged by item index (the
        // others can be neither recommended nor popular).
        ridx_.clear();
        for (int32_t item : relevant_) {
            const int32_t j = ix_.find(m_, item);
            if (j < 0) continue;
            ridx_.push_back(j);
            relevant_flag_[static_cast<std::size_t>(j)] = 1;
        }
        int hits = 0;
        double dcg = 0, ap_sum = 0;
        for (std::size_t rank = 1; rank <= recs_.size(); ++rank) {
            const std::size_t j = static_cast<std::size_t>(recs_[rank - 1]);
            recommended[j] = 1;
            listed_[j] = 0;
            if (relevant_flag_[j]) {
                ++hits;
                dcg += 1.0 / std::log2(static_cast<double>(rank) + 1.0);
                ap_sum += static_cast<double>(hits) / static_cast<double>(rank);
            }
        }
        const std::size_t ideal = std::min(k_, relevant_.size());
        double idcg = 0;
        for (std::size_t rank = 1; rank <= ideal; ++rank) idcg += 1.0 / std::log2(static_cast<double>(rank) + 1.0);
        out.p = static_cast<double>(hits) / static_cast<double>(k_);
        out.r = static_cast<double>(hits) / static_cast<double>(relevant_.size());
        out.ndcg = dcg / idcg;
        out.hit = hits > 0 ? 1.0 : 0.0;
        out.ap = ap_sum / static_cast<double>(ideal);

        // Popularity baseline: the k most popular model items not in the
        // history (with repeats: the k most popular model items).
        int pop_hits = 0;
        std::size_t listed = 0;
        for (std::size_t q = 0; q < ix_.popular.size() && listed < k_; ++q) {
            const std::size_t j = static_cast<std::size_t>(ix_.popular[q]);
            if (!repeats_ && seen_[j]) continue;
            ++listed;
            pop_hits += relevant_flag_[j];
        }
        out.pop_p = static_cast<double>(pop_hits) / static_cast<double>(k_);
        out.pop_r = static_cast<double>(pop_hits) / static_cast<double>(relevant_.size());
        for (int32_t j : hidx_)
            if (j >= 0) seen_[static_cast<std::size_t>(j)] = 0;
        for (int32_t j : ridx_) relevant_flag_[static_cast<std::size_t>(j)] = 0;
    }

private:
    // The collaborative scores of history_ (its items' indices in hidx_)
    // into acc: w * sim summed per neighbour, history item ascending, then
    // neighbour list order (as recommend() sums them).  Appends each item
    // touched to order, first touch first; returns how many.
    //
    // Neighbour similarities and history weights are > 0, so a zero
    // accumulator is one not touched yet (or touched only by products that
    // underflowed to 0, which add nothing): no separate flag.  The first
    // touch of an item appends it without a branch (order holds every item
    // at most once, and one slot more for the write past the last).  The
    // lists are read at random (tens of MB at 10M events): the next history
    // item's list, every line of it, and the offsets of the one after are
    // fetched ahead while this one is summed.
    template <class Pair>
    std::size_t accumulate(const Pair* const pairs, double* const acc, int32_t* const order) const {
        constexpr uintptr_t kLine = 64;
        const int64_t* const off = m_.nbr_offsets.data();
        std::size_t n_order = 0;
        const std::size_t nh_items = history_.size();
        for (std::size_t q = 0; q < nh_items; ++q) {
            if (q + 2 < nh_items && hidx_[q + 2] >= 0) __builtin_prefetch(off + hidx_[q + 2]);
            if (q + 1 < nh_items && hidx_[q + 1] >= 0) {
                const std::size_t i1 = static_cast<std::size_t>(hidx_[q + 1]);
                const uintptr_t b = reinterpret_cast<uintptr_t>(pairs + off[i1]);
                const uintptr_t e = reinterpret_cast<uintptr_t>(pairs + off[i1 + 1]);
                for (uintptr_t a = b & ~(kLine - 1); a < e; a += kLine)
                    __builtin_prefetch(reinterpret_cast<const void*>(a));
            }
            if (hidx_[q] < 0) continue;
            const std::size_t i = static_cast<std::size_t>(hidx_[q]);
            const double w = history_[q].weight;
            for (const Pair *p = pairs + off[i], *const end = pairs + off[i + 1]; p != end; ++p) {
                const int32_t j = p->j;
                const double prod = w * p->sim;
                const double a = acc[j];
                order[n_order] = j;
                n_order += static_cast<std::size_t>((a == 0) & (prod != 0));
                acc[j] = a + prod;
            }
        }
        return n_order;
    }

    // The best k of the touched items order[0..n) by ranks_before (the
    // items of the history left out unless repeats count), best first, in
    // best_; returns how many (up to k).  Every touched sum is read and
    // cleared.  Once k are kept, a score below the k-th cannot enter: that
    // bar refuses most candidates with one comparison.  Up to kSortedTopK
    // the k are kept sorted and a candidate is inserted in its place (at
    // 10M events and k = 10, scoring took 0.43-0.46 s against 0.50-0.64 s
    // with the heap: the short, predictable shifts beat the sift-down's
    // branches, and no final sort); beyond, a heap (TopK).  The same k in
    // the same order either way (ranks_before is a total order here).
    std::size_t select_best(const int32_t* const order, const std::size_t n, double* const acc) {
        double bar = -HUGE_VAL;
        if (k_ <= kSortedTopK) {
            detail::Scored* const b = best_.data();
            std::size_t kept = 0;
            for (std::size_t q = 0; q < n; ++q) {
                const std::size_t j = static_cast<std::size_t>(order[q]);
                const double a = acc[j];
                acc[j] = 0;
                if (a < bar || (!repeats_ && seen_[j])) continue;
                const detail::Scored c{a, order[q]};
                if (kept == k_ && !detail::ranks_before(c, b[k_ - 1])) continue;
                std::size_t at = kept < k_ ? kept++ : k_ - 1;  // full: the k-th goes
                for (; at > 0 && detail::ranks_before(c, b[at - 1]); --at) b[at] = b[at - 1];
                b[at] = c;
                if (kept == k_) bar = b[k_ - 1].score;
            }
            return kept;
        }
        top_.clear();
        for (std::size_t q = 0; q < n; ++q) {
            const std::size_t j = static_cast<std::size_t>(order[q]);
            const double a = acc[j];
            acc[j] = 0;
            if (a < bar || (!repeats_ && seen_[j])) continue;
            top_.offer(detail::Scored{a, order[q]});
            if (top_.full()) bar = top_.worst_score();
        }
        const std::vector<detail::Scored>& sorted = top_.sorted();
        std::copy(sorted.begin(), sorted.end(), best_.begin());
        return sorted.size();
    }

    const Model& m_;
    const ModelIndex& ix_;
    std::size_t k_;
    bool repeats_;
    std::vector<double> acc_;
    std::vector<unsigned char> seen_, listed_, relevant_flag_;
    std::vector<HistoryItem> history_;
    std::vector<int32_t> hidx_, relevant_, ridx_, recs_;
    std::vector<int32_t> order_;  // items touched, in first-touch order (sized to the items)
    detail::TopK top_;                 // k > kSortedTopK
    std::vector<detail::Scored> best_;  // select_best's k
};
}  // namespace

namespace {
using detail::splitmix64_next;

// The number of a resample's n draws that land among the m units with a
// value: Binomial(n, m/n), drawn by inversion of its distribution function.
// The table holds the unnormalised weights' running sums from k0 on, built
// from the mode outwards by the ratio of consecutive terms (+, x, / only:
// the same table on every platform), cut where a term falls below 1e-20 of
// the mode's (the rest weighs nothing at the 2^-53 resolution of a draw).
class BinomialInversion {
public:
    BinomialInversion(uint64_t n, uint64_t m) {
        if (m == 0 || m == n) {  // a certain count: 0 or n
            k0_ = m;
            cum_.assign(1, 1.0);
            return;
        }
        const double dn = static_cast<double>(n), dm = static_cast<double>(m), dq = dn - dm;
        const uint64_t mode = std::min(n, (n + 1) * m / n);
        constexpr double kTiny = 1e-20;
        std::vector<double> down;  // terms mode-1, mode-2, ... (w(k-1) = w(k) k (n-m) / ((n-k+1) m))
        double w = 1;
        for (uint64_t k = mode; k > 0; --k) {
            w = w * static_cast<double>(k) * dq / ((dn - static_cast<double>(k) + 1) * dm);
            if (w < kTiny) break;
            down.push_back(w);
        }
        std::vector<double> up;    // terms mode+1, ... (w(k+1) = w(k) (n-k) m / ((k+1) (n-m)))
        w = 1;
        for (uint64_t k = mode; k < n; ++k) {
            w = w * (dn - static_cast<double>(k)) * dm / ((static_cast<double>(k) + 1) * dq);
            if (w < kTiny) break;
            up.push_back(w);
        }
        k0_ = mode - down.size();
        cum_.reserve(down.size() + 1 + up.size());
        double sum = 0;
        for (std::size_t j = down.size(); j-- > 0;) cum_.push_back(sum += down[j]);
        cum_.push_back(sum += 1);
        for (double x : up) cum_.push_back(sum += x);
    }
    // The count for a 64-bit generator output x: the first k whose running
    // sum exceeds u = (x >> 11) 2^-53 times the total.
    uint64_t draw(uint64_t x) const {
        const double u = static_cast<double>(x >> 11) * 0x1.0p-53 * cum_.back();
        const std::size_t j = static_cast<std::size_t>(std::upper_bound(cum_.begin(), cum_.end(), u) - cum_.begin());
        return k0_ + std::min(j, cum_.size() - 1);
    }

private:
    uint64_t k0_ = 0;
    std::vector<double> cum_;
};
}  // namespace

namespace {
// For P resamples at once (P = 1 to kGroup): sum[p][c] = the sum of
// count_p(j) * rows[j K + c] over the units j = 0, 1, ..., m - 1 in turn,
// count_p(j) = low[p][j] (+ high[p][j] with kHigh), each count then reset to
// 0.  Each resample's sums are the same additions in the same order as
// alone; K and P are constants here, so the P K running sums stay in
// registers, and the resamples' independent additions overlap (and the
// rows are read once for the P).
template <std::size_t K, std::size_t P, bool kHigh>
void sum_counts_k(uint8_t* const* low, uint32_t* const* high, const double* rows, std::size_t m,
                  double (*sum)[kMaxColumns]) {
    double s[P][K];
    for (std::size_t p = 0; p < P; ++p)
        for (std::size_t c = 0; c < K; ++c) s[p][c] = 0;
    for (std::size_t j = 0; j < m; ++j) {
        const double* row = rows + j * K;
        for (std::size_t p = 0; p < P; ++p) {
            uint32_t cj = low[p][j];
            low[p][j] = 0;
            if (kHigh) {
                cj += high[p][j];
                high[p][j] = 0;
            }
            const double cd = static_cast<double>(cj);
            for (std::size_t c = 0; c < K; ++c) s[p][c] += cd * row[c];
        }
    }
    for (std::size_t p = 0; p < P; ++p)
        for (std::size_t c = 0; c < K; ++c) sum[p][c] = s[p][c];
}

template <std::size_t K>
void sum_counts_of(std::size_t P, uint8_t* const* low, uint32_t* const* high, const double* rows, std::size_t m,
                   double (*sum)[kMaxColumns]) {
    if (high[0] != nullptr) {
        switch (P) {
            case 1: return sum_counts_k<K, 1, true>(low, high, rows, m, sum);
            case 2: return sum_counts_k<K, 2, true>(low, high, rows, m, sum);
            case 3: return sum_counts_k<K, 3, true>(low, high, rows, m, sum);
            default: return sum_counts_k<K, kGroup, true>(low, high, rows, m, sum);
        }
    }
    switch (P) {
        case 1: return sum_counts_k<K, 1, false>(low, high, rows, m, sum);
        case 2: return sum_counts_k<K, 2, false>(low, high, rows, m, sum);
        case 3: return sum_counts_k<K, 3, false>(low, high, rows, m, sum);
        default: return sum_counts_k<K, kGroup, false>(low, high, rows, m, sum);
    }
}

// The same for k = 1..kMaxColumns columns; high: every high[p] NULL (no
// count wrapped) or none.
void sum_counts(std::size_t k, std::size_t P, uint8_t* const* low, uint32_t* const* high, const double* rows,
                std::size_t m, double (*sum)[kMaxColumns]) {
    static_assert(kMaxColumns == detail::kBootColumns && kGroup == 4, "the vector sums' layout");
    if (P == kGroup && high[0] == nullptr && detail::bootstrap_sum4(k, low, rows, m, &sum[0][0])) return;
    switch (k) {
        case 1: return sum_counts_of<1>(P, low, high, rows, m, sum);
        case 2: return sum_counts_of<2>(P, low, high, rows, m, sum);
        case 3: return sum_counts_of<3>(P, low, high, rows, m, sum);
        case 4: return sum_counts_of<4>(P, low, high, rows, m, sum);
        case 5: return sum_counts_of<5>(P, low, high, rows, m, sum);
        case 6: return sum_counts_of<6>(P, low, high, rows, m, sum);
        case 7: return sum_counts_of<7>(P, low, high, rows, m, sum);
        default: return sum_counts_of<kMaxColumns>(P, low, high, rows, m, sum);
    }
}
}  // namespace

std::vector<std::vector<double>> detail::bootstrap_means(const std::vector<std::vector<double>>& metrics,
                                                         int resamples, uint64_t seed, const CancelCheck& cancel,
                                                         int threads) {
    const std::size_t n = metrics.empty() ? 0 : metrics[0].size();
    if (n == 0 || resamples <= 0) return std::vector<std::vector<double>>(metrics.size());
    if (metrics.size() > kMaxColumns) throw InvalidInput("recsys: too many bootstrap columns");
    for (const std::vector<double>& col : metrics)
        if (col.size() != n) throw InvalidInput("recsys: bootstrap columns differ in length");
    const std::size_t B = static_cast<std::size_t>(resamples), k = metrics.size();
    // Only the m units with a non-zero value in some column change a sum
    // (a term count * 0 adds +0, exactly).  Of a resample's n uniform draws
    // among the n units, the number K that land among those m is
    // Binomial(n, m/n), and given K they are K uniform draws among the m:
    // so a resample draws K, then K units among the m, and sums over them
    // in ascending order (the same sums as counting all n draws).
    std::vector<double> rows;  // the m units' values, row-major, k per unit, ascending units
    for (std::size_t u = 0; u < n; ++u) {
        bool zero = true;
        for (std::size_t c = 0; c < k; ++c) zero = zero && metrics[c][u] == 0;
        if (zero) continue;
        for (std::size_t c = 0; c < k; ++c) rows.push_back(metrics[c][u]);
    }
    const std::size_t m = rows.size() / k;
    const BinomialInversion binomial(n, m);
    // Unbiased index in [0, m) by Lemire's multiply-shift: idx = floor(x m / 2^64),
    // rejecting x when (x m mod 2^64) < (2^64 mod m); no division per draw.
    const uint64_t um = static_cast<uint64_t>(std::max<std::size_t>(m, 1));
    const uint64_t reject_below = (0 - um) % um;  // 2^64 mod m
    // Resample r's generator is SplitMix64 started at the r-th output of
    // SplitMix64(seed): each resample is computed alone, on any thread.
    std::vector<uint64_t> starts(B);
    uint64_t s = seed;
    for (std::size_t r = 0; r < B; ++r) starts[r] = splitmix64_next(&s);
    std::vector<std::vector<double>> means(k, std::vector<double>(B));
    // Resamples between cancel polls: at least kGroup, taken kGroup at a time.
    const std::size_t block = std::max<std::size_t>(kGroup, kPollDraws / um);
    const bool two = threads > 1 || (threads <= 0 && B * m >= kMinParallelDraws &&
                                     std::thread::hardware_concurrency() >= 2);
    // A resample's counts, one byte per unit (m bytes stay in a core's
    // cache where m 4-byte counts would not); a count that wraps adds 256 to
    // the unit's entry in `high`, made (m entries) at the first wrap only.
    // kGroup per worker: resamples are drawn one by one, then summed
    // kGroup at a time (one read of the rows for the kGroup).
    struct Counts {
        std::vector<uint8_t> low;
        std::vector<uint32_t> high;
    };
    Counts counts[2][kGroup];
    for (int w = 0; w < (two ? 2 : 1); ++w)
        for (Counts& c : counts[w]) c.low.assign(m, 0);
    // The draws come kIndexBatch at a time (core_simd.hpp: eight at once
    // where the CPU can), then are counted.
    constexpr std::size_t kIndexBatch = 256;
    const auto draw = [&](std::size_t r, Counts& cn) {
        uint8_t* cnt = cn.low.data();
        uint64_t state = starts[r];
        const uint64_t draws = binomial.draw(splitmix64_next(&state));
        uint64_t idx[kIndexBatch];
        for (uint64_t d = 0; d < draws; d += kIndexBatch) {
            const std::size_t b = static_cast<std::size_t>(std::min<uint64_t>(kIndexBatch, draws - d));
            detail::splitmix64_indices(&state, b, um, reject_below, idx);
            for (std::size_t q = 0; q < b; ++q) {
                const std::size_t j = idx[q];
                if (++cnt[j] == 0) {
                    if (cn.high.empty()) cn.high.assign(m, 0);
                    cn.high[j] += 256;
                }
            }
        }
    };
    detail::parallel_blocks(
        B, block, two,
        [&](std::size_t b, std::size_t e, int worker) {
            Counts* cn = counts[worker];
            for (std::size_t r = b; r < e; r += kGroup) {
                const std::size_t P = std::min<std::size_t>(kGroup, e - r);
                for (std::size_t p = 0; p < P; ++p) draw(r + p, cn[p]);
                bool wrapped = false;
                uint8_t* low[kGroup];
                uint32_t* high[kGroup];
                for (std::size_t p = 0; p < kGroup; ++p) {
                    wrapped = wrapped || (p < P && !cn[p].high.empty());
                    low[p] = cn[p].low.data();
                    high[p] = nullptr;
                }
                for (std::size_t p = 0; wrapped && p < P; ++p) {
                    if (cn[p].high.empty()) cn[p].high.assign(m, 0);
                    high[p] = cn[p].high.data();
                }
                double sum[kGroup][kMaxColumns];
                sum_counts(k, P, low, high, rows.data(), m, sum);
                for (std::size_t p = 0; p < P; ++p)
                    for (std::size_t col = 0; col < k; ++col)
                        means[col][r + p] = sum[p][col] / static_cast<double>(n);
            }
        },
        cancel, [](std::size_t) {});
    return means;
}

std::vector<Interval> detail::percentile_bootstrap(const std::vector<std::vector<double>>& metrics,
                                                   int resamples, uint64_t seed, double q_lo,
                                                   double q_hi, const CancelCheck& cancel, int threads) {
    std::vector<Interval> out(metrics.size());
    std::vector<std::vector<double>> means = bootstrap_means(metrics, resamples, seed, cancel, threads);
    if (means.empty() || means[0].empty()) return out;
    const std::size_t B = means[0].size(), k = means.size();
    auto quantile = [B](const std::vector<double>& v, double q) {
        const double h = q * static_cast<double>(B - 1);
        const std::size_t lo = static_cast<std::size_t>(std::floor(h));
        const std::size_t hi = std::min(lo + 1, B - 1);
        return v[lo] + (h - static_cast<double>(lo)) * (v[hi] - v[lo]);
    };
    for (std::size_t c = 0; c < k; ++c) {
        std::sort(means[c].begin(), means[c].end());
        out[c].lo = quantile(means[c], q_lo);
        out[c].hi = quantile(means[c], q_hi);
    }
    return out;
}

namespace {
// Sorts a[0..n) by (user, item) ascending, stably (equal pairs keep their
// input order), as std::stable_sort would: an LSD radix sort by user alone
// -- the users spanned split into digits of at most 11 bits (2 passes for a
// million users), every digit's counts taken in one read of a, then a
// scattering pass per digit between a and scratch (n elements) -- and then
// each user's few elements by item, stably (insertion sort; std::stable_sort
// beyond 32).  Returns where the result is: a, or scratch after an odd
// number of passes.
template <class T>
T* sort_by_user_item_into(T* a, T* scratch, std::size_t n, const CancelCheck& cancel) {
    if (n < 2) return a;
    int64_t umin = a[0].user, umax = umin;
    for (std::size_t q = 0; q < n; ++q) {
        umin = std::min<int64_t>(umin, a[q].user);
        umax = std::max<int64_t>(umax, a[q].user);
    }
    const uint64_t span = static_cast<uint64_t>(umax - umin);  // < 2^32
    int bits = 0;
    while (bits < 64 && (span >> bits) != 0) ++bits;
    constexpr int kMaxDigit = 11;
    const int passes = (bits + kMaxDigit - 1) / kMaxDigit;  // 0 when every user is the same
    T* src = a;
    if (passes > 0) {
        const int digit = (bits + passes - 1) / passes;
        const std::size_t buckets = std::size_t(1) << digit;
        const uint64_t mask = buckets - 1;
        const auto key = [umin](const T& x) { return static_cast<uint64_t>(static_cast<int64_t>(x.user) - umin); };
        std::vector<std::size_t> count(static_cast<std::size_t>(passes) * buckets, 0);
        for (std::size_t q = 0; q < n; ++q) {
            const uint64_t k = key(a[q]);
            for (int p = 0; p < passes; ++p) ++count[static_cast<std::size_t>(p) * buckets + ((k >> (p * digit)) & mask)];
        }
        T* dst = scratch;
        for (int p = 0; p < passes; ++p) {
            detail::poll_cancel(cancel);
            std::size_t* c = count.data() + static_cast<std::size_t>(p) * buckets;
            std::size_t sum = 0;
            for (std::size_t b = 0; b < buckets; ++b) {
                const std::size_t here = c[b];
                c[b] = sum;
                sum += here;
            }
            const int shift = p * digit;
            for (std::size_t q = 0; q < n; ++q) dst[c[(key(src[q]) >> shift) & mask]++] = src[q];
            std::swap(src, dst);
        }
    }
    detail::poll_cancel(cancel);
    constexpr std::size_t kInsertion = 32;
    constexpr std::size_t kPoll = std::size_t(1) << 18;  // elements between cancel polls
    T* const v = src;
    std::size_t next_poll = kPoll;
    for (std::size_t b = 0, e; b < n; b = e) {
        for (e = b + 1; e < n && v[e].user == v[b].user; ++e) {
        }
        if (e - b <= kInsertion) {
            for (std::size_t i = b + 1; i < e; ++i) {
                const T x = v[i];
                std::size_t j = i;
                for (; j > b && v[j - 1].item > x.item; --j) v[j] = v[j - 1];
                v[j] = x;
            }
        } else {
            std::stable_sort(v + b, v + e, [](const T& x, const T& y) { return x.item < y.item; });
        }
        if (e >= next_poll) {
            detail::poll_cancel(cancel);
            next_poll = e + kPoll;
        }
    }
    return v;
}

// The same on a vector: the scratch is a second vector, swapped in when it
// holds the result.
template <class T>
void sort_by_user_item_of(std::vector<T>& v, const CancelCheck& cancel) {
    if (v.size() < 2) return;
    std::vector<T> scratch(v.size());
    if (sort_by_user_item_into(v.data(), scratch.data(), v.size(), cancel) != v.data()) v.swap(scratch);
}

// In place on an array: the result is copied back when it ends in the
// scratch.
template <class T>
void sort_array_by_user_item(T* a, std::size_t n, std::vector<T>& scratch, const CancelCheck& cancel) {
    if (n < 2) return;
    scratch.resize(n);
    T* r = sort_by_user_item_into(a, scratch.data(), n, cancel);
    if (r != a) std::copy(r, r + n, a);
}

// Sorted histories: each (user, item)'s cells summed in their order, the
// sums packed to the front; returns their count.
std::size_t sum_sorted_history(Triplet* h, std::size_t n) {
    std::size_t out = 0;
    for (std::size_t k = 0; k < n; ++k) {
        if (out > 0 && h[out - 1].user == h[k].user && h[out - 1].item == h[k].item)
            h[out - 1].weight += h[k].weight;
        else
            h[out++] = h[k];
    }
    return out;
}

// Sorted touches: the distinct ones packed to the front; returns their count.
std::size_t unique_sorted_touches(Touch* t, std::size_t n) {
    return static_cast<std::size_t>(
        std::unique(t, t + n, [](const Touch& a, const Touch& b) { return a.user == b.user && a.item == b.item; }) - t);
}
}  // namespace

void detail::sort_by_user_item(std::vector<Triplet>& v, const CancelCheck& cancel) {
    sort_by_user_item_of(v, cancel);
}

void detail::sort_by_user_item(std::vector<Touch>& v, const CancelCheck& cancel) {
    sort_by_user_item_of(v, cancel);
}

void sort_scoring_inputs(Triplet* history, std::size_t* n_history, Touch* after, std::size_t* n_after,
                         const CancelCheck& cancel) {
    {
        std::vector<Triplet> scratch;
        sort_array_by_user_item(history, *n_history, scratch, cancel);
    }
    *n_history = sum_sorted_history(history, *n_history);
    detail::poll_cancel(cancel);
    {
        std::vector<Touch> scratch;
        sort_array_by_user_item(after, *n_after, scratch, cancel);
    }
    *n_after = unique_sorted_touches(after, *n_after);
    detail::poll_cancel(cancel);
}

namespace {
void check_eval_options(const EvalOptions& opt) {
    if (opt.k <= 0) throw InvalidInput("recsys: k must be > 0, got " + std::to_string(opt.k));
    if (opt.bootstrap_resamples < 0 || opt.bootstrap_resamples > 100000)
        throw InvalidInput("recsys: bootstrap resamples must be between 0 and 100000, got " +
                           std::to_string(opt.bootstrap_resamples));
}
}  // namespace

EvalResult evaluate(std::vector<Triplet> before, std::vector<Touch> after, const EvalOptions& opt,
                    const CancelCheck& cancel) {
    check_eval_options(opt);
    TrainOptions topt = opt.settings;
    topt.neighbors = opt.neighbors;
    topt.progress = opt.progress;
    resolve_settings(topt);  // validates before any work
    detail::poll_cancel(cancel);
    // train() validates the weights: it throws before any history is used.
    std::vector<Triplet> history(before);
    const Model model = train(std::move(before), topt, cancel);
    return evaluate_model(model, std::move(history), std::move(after), opt, cancel);
}

namespace {
EvalResult score_sorted(const Model& model, const Triplet* hist, std::size_t n_hist, const Touch* after,
                        std::size_t n_after, const EvalOptions& opt, const CancelCheck& cancel,
                        std::chrono::steady_clock::time_point t0);
}  // namespace

EvalResult evaluate_model(const Model& model, std::vector<Triplet> hist, std::vector<Touch> after,
                          const EvalOptions& opt, const CancelCheck& cancel) {
    check_eval_options(opt);
    detail::poll_cancel(cancel);
    const std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
    // Distinct touches after the cutoff, by (user, item): on a second
    // thread (when there are enough) while this one does the histories.
    const auto sort_touches = [&after](const CancelCheck& check) {
        detail::sort_by_user_item(after, check);
        after.resize(unique_sorted_touches(after.data(), after.size()));
    };
    // The worker's own stop flag (it never calls `cancel`), set when this
    // thread fails; `quit` outlives the worker, which is joined first.
    std::atomic<bool> quit{false};
    const CancelCheck worker_check = [&quit] { return quit.load(std::memory_order_relaxed); };
    detail::AsyncWorker worker;
    bool posted = false;
    if (opt.threads > 1 || (opt.threads <= 0 && after.size() >= kMinParallelSort &&
                            std::thread::hardware_concurrency() >= 2)) {
        try {
            worker.post([&] { sort_touches(worker_check); });
            posted = true;
        } catch (const std::system_error&) {
            // No thread available: this one sorts the touches below.
        }
    }
    try {
        // Histories: cells before the cutoff by (user, item), duplicates
        // summed in input order.
        detail::sort_by_user_item(hist, cancel);
        hist.resize(sum_sorted_history(hist.data(), hist.size()));
        detail::poll_cancel(cancel);
        if (posted) {
            while (worker.busy()) {
                detail::poll_cancel(cancel);
                std::this_thread::sleep_for(std::chrono::microseconds(200));
            }
            worker.wait();
        } else {
            sort_touches(cancel);
        }
    } catch (...) {
        quit.store(true);
        if (posted) {
            try {
                worker.wait();
            } catch (...) {
                // The worker stopped because this thread failed: this thread's error wins.
            }
        }
        throw;
    }
    detail::poll_cancel(cancel);
    return score_sorted(model, hist.data(), hist.size(), after.data(), after.size(), opt, cancel, t0);
}

EvalResult evaluate_sorted(const Model& model, const Triplet* hist, std::size_t n_hist, const Touch* after,
                           std::size_t n_after, const EvalOptions& opt, const CancelCheck& cancel) {
    check_eval_options(opt);
    detail::poll_cancel(cancel);
    return score_sorted(model, hist, n_hist, after, n_after, opt, cancel, std::chrono::steady_clock::now());
}

namespace {
// evaluate_model() from its sorted inputs on; `t0`: when its sorting
// phase began.
EvalResult score_sorted(const Model& model, const Triplet* hist, std::size_t n_hist, const Touch* after,
                        std::size_t n_after, const EvalOptions& opt, const CancelCheck& cancel,
                        std::chrono::steady_clock::time_point t0) {
    using Clock = std::chrono::steady_clock;
    const auto since = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
    EvalResult r;
    r.model_items = static_cast<int64_t>(model.item_ids.size());
    r.model_users = model.n_users;
    r.train_cells = model.n_cells;
    r.test_touches = static_cast<int64_t>(n_after);

    // Each user's slices of the touches and of the histories.
    std::vector<UserSlice> users;
    std::size_t hp = 0;
    for (std::size_t ap = 0; ap < n_after;) {
        UserSlice u;
        u.a_begin = ap;
        while (ap < n_after && after[ap].user == after[u.a_begin].user) ++ap;
        u.a_end = ap;
        while (hp < n_hist && hist[hp].user < after[u.a_begin].user) ++hp;
        u.h_begin = hp;
        while (hp < n_hist && hist[hp].user == after[u.a_begin].user) ++hp;
        u.h_end = hp;
        users.push_back(u);
    }
    const ModelIndex index(model);
    detail::poll_cancel(cancel);
    r.seconds_sort = since(t0);
    t0 = Clock::now();

    // Score every user, in blocks, on one or two threads; each user's
    // figures land in its own slot, so the sums below (in user order) do not
    // depend on the thread count.
    std::vector<UserScore> scores(users.size());
    int threads = opt.threads;
    if (threads <= 0)
        threads = (users.size() >= kMinParallelUsers && std::thread::hardware_concurrency() >= 2) ? 2 : 1;
    Scorer scorers[2] = {Scorer(model, index, opt.k, opt.count_repeats),
                         Scorer(model, index, opt.k, opt.count_repeats)};
    detail::parallel_blocks(
        users.size(), kUserBlock, threads > 1,
        [&](std::size_t b, std::size_t e, int worker) {
            for (std::size_t q = b; q < e; ++q)
                scorers[worker].score(hist + users[q].h_begin, users[q].h_end - users[q].h_begin,
                                      after + users[q].a_begin, users[q].a_end - users[q].a_begin,
                                      scores[q]);
        },
        cancel,
        [&](std::size_t done) {
            if (opt.progress)
                opt.progress("scoring", static_cast<int64_t>(done), static_cast<int64_t>(users.size()));
        });
    if (opt.progress)
        opt.progress("scoring", static_cast<int64_t>(users.size()), static_cast<int64_t>(users.size()));

    double sum_p = 0, sum_r = 0, sum_ndcg = 0, sum_hit = 0, sum_ap = 0;
    double sum_pop_p = 0, sum_pop_r = 0;
    int64_t evaluated = 0, no_history = 0;
    // Per evaluated user, for the bootstrap: precision, recall, nDCG.
    std::vector<std::vector<double>> per_user(opt.bootstrap_resamples > 0 ? 3 : 0);
    for (const UserScore& u : scores) {
        no_history += u.no_history;
        if (!u.evaluated) continue;
        ++evaluated;
        sum_p += u.p;
        sum_r += u.r;
        sum_ndcg += u.ndcg;
        if (!per_user.empty()) {
            per_user[0].push_back(u.p);
            per_user[1].push_back(u.r);
            per_user[2].push_back(u.ndcg);
        }
        sum_hit += u.hit;
        sum_ap += u.ap;
        sum_pop_p += u.pop_p;
        sum_pop_r += u.pop_r;
    }
    std::size_t distinct = 0;
    for (std::size_t j = 0; j < model.item_ids.size(); ++j)
        distinct += (scorers[0].recommended[j] | scorers[1].recommended[j]) != 0;

    r.users_evaluated = evaluated;
    r.users_without_history = no_history;
    r.seconds_score = since(t0);
    t0 = Clock::now();
    if (!per_user.empty()) {
        const std::vector<Interval> ci = detail::percentile_bootstrap(
            per_user, opt.bootstrap_resamples, opt.bootstrap_seed, 0.025, 0.975, cancel);
        r.precision_ci = ci[0];
        r.recall_ci = ci[1];
        r.ndcg_ci = ci[2];
    }
    r.seconds_bootstrap = since(t0);
    if (evaluated > 0) {
        const double n = static_cast<double>(evaluated);
        r.precision = sum_p / n;
        r.recall = sum_r / n;
        r.ndcg = sum_ndcg / n;
        r.hit_rate = sum_hit / n;
        r.map = sum_ap / n;
        r.pop_precision = sum_pop_p / n;
        r.pop_recall = sum_pop_r / n;
    }
    if (!model.item_ids.empty())
        r.coverage = static_cast<double>(distinct) / static_cast<double>(model.item_ids.size());
    return r;
}
}  // namespace

}  // namespace recsys
