// evaluate_test.cpp - recsys::evaluate(): hand example, edge cases, and a
// brute-force re-implementation on random data.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>

#include "core.hpp"
#include "core_topk.hpp"
#include "test_util.hpp"

using namespace recsys;

namespace {

// `before` is the hand example of train_test.cpp:
//   10: 20 (S), 30 (T);  20: 10 (S), 30 (S);  30: 20 (S), 10 (T);  40: -
//   popular: 20 (3 users), 40 (3), 10 (2), 30 (2)
//   histories: u1 {10:1, 20:1}, u2 {10:2, 20:1, 30:1}, u3 {20:1, 30:2},
//              u4 {40:3}, u5 {40:1}, u6 {40:1}
std::vector<Triplet> hand_before() {
    return {{1, 10, 1}, {1, 20, 1}, {2, 10, 2}, {2, 20, 1}, {2, 30, 1},
            {3, 20, 1}, {3, 30, 2}, {4, 40, 3}, {5, 40, 1}, {6, 40, 1}};
}

// `after`: distinct pairs (1,30) (1,10) (2,50) (3,10) (3,50) (4,40) (9,10) -> 7.
//   u1: relevant {30}      (10 is history)
//   u2: relevant {50}      (50 is not even a model item)
//   u3: relevant {10, 50}
//   u4: relevant {}        (40 is history)        -> not evaluated
//   u9: no cell before                             -> not evaluated
std::vector<Touch> hand_after() {
    return {{1, 30}, {1, 30}, {1, 10}, {2, 50}, {3, 10}, {3, 50}, {4, 40}, {9, 10}, {3, 10}};
}

// The bootstrap recipe of core_topk.hpp, written again from its description,
// naively: SplitMix64 spelled out here; resample r's generator starts at the
// r-th output of SplitMix64(seed); the units with a non-zero value in some
// column (m of the n); the terms of Binomial(n, m/n) from the mode
// floor((n+1) m/n) outwards by the ratio of consecutive terms, cut below
// 1e-20, in a map; K = the first k whose running sum exceeds (x >> 11) 2^-53
// of the total, by a linear scan; an index among the m is floor(x m / 2^64)
// for the first draw x with (x m mod 2^64) >= (2^64 mod m); the mean of a
// resample is the sum over the m units, ascending, of count * value over n;
// quantiles by linear interpolation at q (B - 1) of the sorted means.  One
// thread.
uint64_t ref_splitmix(uint64_t& x) {
    x += 0x9e3779b97f4a7c15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

std::vector<Interval> ref_bootstrap(const std::vector<std::vector<double>>& cols, int B, uint64_t seed) {
    std::vector<Interval> out(cols.size());
    const std::size_t n = cols[0].size();
    if (n == 0 || B == 0) return out;
    std::vector<std::size_t> hits;
    for (std::size_t u = 0; u < n; ++u) {
        bool any = false;
        for (const auto& c : cols) any = any || c[u] != 0;
        if (any) hits.push_back(u);
    }
    const uint64_t m = hits.size();
    std::map<uint64_t, double> term;
    if (m == 0 || m == n) {
        term[m] = 1;
    } else {
        const double dn = double(n), dm = double(m), dq = double(n - m);
        const uint64_t mode = (n + 1) * m / n;
        term[mode] = 1;
        double w = 1;
        for (uint64_t k = mode; k > 0; --k) {
            w = w * double(k) * dq / ((dn - double(k) + 1) * dm);
            if (w < 1e-20) break;
            term[k - 1] = w;
        }
        w = 1;
        for (uint64_t k = mode; k < n; ++k) {
            w = w * (dn - double(k)) * dm / ((double(k) + 1) * dq);
            if (w < 1e-20) break;
            term[k + 1] = w;
        }
    }
    std::vector<std::pair<uint64_t, double>> cum;  // (k, running sum), ascending k
    double total = 0;
    for (const auto& [k, w] : term) cum.emplace_back(k, total += w);
    const unsigned __int128 two64 = static_cast<unsigned __int128>(1) << 64;
    const unsigned __int128 threshold = m > 0 ? two64 % m : 0;
    uint64_t outer = seed;
    std::vector<std::vector<double>> means(cols.size());
    for (int b = 0; b < B; ++b) {
        uint64_t x = ref_splitmix(outer);
        const double u = double(ref_splitmix(x) >> 11) * std::ldexp(1.0, -53) * total;
        uint64_t K = cum.back().first;
        for (const auto& [k, c] : cum)
            if (c > u) {
                K = k;
                break;
            }
        std::vector<uint64_t> count(m, 0);
        for (uint64_t d = 0; d < K; ++d) {
            unsigned __int128 xm = static_cast<unsigned __int128>(ref_splitmix(x)) * m;
            while (xm % two64 < threshold) xm = static_cast<unsigned __int128>(ref_splitmix(x)) * m;
            ++count[static_cast<std::size_t>(xm / two64)];
        }
        for (std::size_t c = 0; c < cols.size(); ++c) {
            double sum = 0;
            for (std::size_t j = 0; j < m; ++j) sum += static_cast<double>(count[j]) * cols[c][hits[j]];
            means[c].push_back(sum / static_cast<double>(n));
        }
    }
    for (std::size_t c = 0; c < cols.size(); ++c) {
        std::sort(means[c].begin(), means[c].end());
        auto q = [&](double p) {
            const double pos = p * (B - 1);
            const std::size_t i = static_cast<std::size_t>(pos);
            const double frac = pos - static_cast<double>(i);
            return i + 1 < means[c].size() ? means[c][i] + frac * (means[c][i + 1] - means[c][i]) : means[c][i];
        };
        out[c].lo = q(0.025);
        out[c].hi = q(0.975);
    }
    return out;
}

void expect_ci(const Interval& got, const Interval& want) {
    EXPECT_EQ(got.lo, want.lo);
    EXPECT_EQ(got.hi, want.hi);
}

// Every figure of two evaluations equal, bit for bit (the timings aside).
void expect_same_result(const EvalResult& got, const EvalResult& want) {
    EXPECT_EQ(got.users_evaluated, want.users_evaluated);
    EXPECT_EQ(got.users_without_history, want.users_without_history);
    EXPECT_EQ(got.test_touches, want.test_touches);
    EXPECT_EQ(got.precision, want.precision);
    EXPECT_EQ(got.recall, want.recall);
    EXPECT_EQ(got.ndcg, want.ndcg);
    EXPECT_EQ(got.hit_rate, want.hit_rate);
    EXPECT_EQ(got.map, want.map);
    EXPECT_EQ(got.coverage, want.coverage);
    EXPECT_EQ(got.pop_precision, want.pop_precision);
    EXPECT_EQ(got.pop_recall, want.pop_recall);
    EXPECT_EQ(got.model_items, want.model_items);
    EXPECT_EQ(got.model_users, want.model_users);
    EXPECT_EQ(got.train_cells, want.train_cells);
    expect_ci(got.precision_ci, want.precision_ci);
    expect_ci(got.recall_ci, want.recall_ci);
    expect_ci(got.ndcg_ci, want.ndcg_ci);
}


// A model of `neighbors` neighbours per item trained on `before`.
Model trained(const std::vector<Triplet>& before, int neighbors) {
    TrainOptions topt;
    topt.neighbors = neighbors;
    return train(before, topt);
}

// Evaluation at k with that model's neighbours and `resamples` bootstrap resamples.
EvalOptions eval_options(int k, int neighbors, int resamples) {
    EvalOptions opt;
    opt.k = k;
    opt.neighbors = neighbors;
    opt.bootstrap_resamples = resamples;
    return opt;
}
}  // namespace

TEST(Evaluate, HandExampleK2) {
    // k = 2.
    // u1: cf: 30 = T (via 10) + S (via 20); 20, 10 history -> [30];
    //     fill: 20 hist, 40 -> recs [30, 40].  Relevant {30}: hit at rank 1.
    //     P = 1/2, R = 1/1, DCG = 1/log2(2) = 1, IDCG (min(2,1) = 1 term) = 1,
    //     nDCG = 1, hit = 1, AP = (1/1) / min(2,1) = 1.
    //     pop: popular minus history = [40, 30] -> 30 hits: pP = 1/2, pR = 1.
    // u2: cf: nothing outside history; fill: 40 -> recs [40] (one item).
    //     Relevant {50}: 0 hits -> P = 0/2 (divide by k), R = 0, nDCG = 0,
    //     hit = 0, AP = 0.  pop: [40] -> 0, 0.
    // u3: cf: 10 = S (via 20) + 2T (via 30) -> [10]; fill: 20 hist, 40 ->
    //     recs [10, 40].  Relevant {10, 50}: hit at rank 1.
    //     P = 1/2, R = 1/2, DCG = 1, IDCG = 1 + 1/log2(3), nDCG = 1/(1 + 1/log2 3),
    //     hit = 1, AP = (1/1) / min(2,2) = 1/2.
    //     pop: [40, 10] -> 10 hits: pP = 1/2, pR = 1/2.
    // Averages over 3 users:
    //   precision (1/2 + 0 + 1/2)/3 = 1/3       recall (1 + 0 + 1/2)/3 = 1/2
    //   ndcg (1 + 0 + 1/(1+1/log2 3))/3         hit_rate 2/3
    //   map (1 + 0 + 1/2)/3 = 1/2
    //   coverage: {30, 40, 10} of 4 model items = 3/4
    //   pop_precision (1/2 + 0 + 1/2)/3 = 1/3   pop_recall (1 + 0 + 1/2)/3 = 1/2
    const EvalResult r = evaluate(hand_before(), hand_after(), EvalOptions{2, 50});
    const double L = 1.0 / std::log2(3.0);  // 0.6309...
    EXPECT_EQ(r.users_evaluated, 3);
    EXPECT_EQ(r.users_without_history, 1);  // u9
    EXPECT_DOUBLE_EQ(r.precision, 1.0 / 3);
    EXPECT_DOUBLE_EQ(r.recall, 0.5);
    EXPECT_DOUBLE_EQ(r.ndcg, (1.0 + 1.0 / (1.0 + L)) / 3);
    EXPECT_NEAR(r.ndcg, 0.5377, 1e-4);
    EXPECT_DOUBLE_EQ(r.hit_rate, 2.0 / 3);
    EXPECT_DOUBLE_EQ(r.map, 0.5);
    EXPECT_DOUBLE_EQ(r.coverage, 0.75);
    EXPECT_DOUBLE_EQ(r.pop_precision, 1.0 / 3);
    EXPECT_DOUBLE_EQ(r.pop_recall, 0.5);
    EXPECT_EQ(r.model_items, 4);
    EXPECT_EQ(r.model_users, 6);
    EXPECT_EQ(r.train_cells, 10);
    EXPECT_EQ(r.test_touches, 7);
}

TEST(Evaluate, HandExampleK1) {
    // k = 1.  Recs: u1 [30] (hit), u2 [40] (miss), u3 [10] (hit).
    //   Pop:  u1 [40] (miss), u2 [40] (miss), u3 [40] (miss).
    // u1: P 1, R 1, nDCG 1/1, hit 1, AP 1/min(1,1) = 1.
    // u2: all 0.
    // u3: P 1, R 1/2, DCG 1, IDCG (min(1,2) = 1 term) 1 -> nDCG 1, hit 1,
    //     AP = 1/min(1,2) = 1.
    // precision 2/3, recall (1 + 0 + 1/2)/3 = 1/2, ndcg 2/3, hit 2/3, map 2/3,
    // coverage {30, 40, 10} = 3/4, pop 0 / 0.
    const EvalResult r = evaluate(hand_before(), hand_after(), EvalOptions{1, 50});
    EXPECT_EQ(r.users_evaluated, 3);
    EXPECT_DOUBLE_EQ(r.precision, 2.0 / 3);
    EXPECT_DOUBLE_EQ(r.recall, 0.5);
    EXPECT_DOUBLE_EQ(r.ndcg, 2.0 / 3);
    EXPECT_DOUBLE_EQ(r.hit_rate, 2.0 / 3);
    EXPECT_DOUBLE_EQ(r.map, 2.0 / 3);
    EXPECT_DOUBLE_EQ(r.coverage, 0.75);
    EXPECT_DOUBLE_EQ(r.pop_precision, 0.0);
    EXPECT_DOUBLE_EQ(r.pop_recall, 0.0);
}

TEST(Evaluate, HandExampleNeighborsOption) {
    // neighbors = 1: 10 -> [20], 20 -> [10], 30 -> [20]  (see train_test).
    // k = 2.  u1 {10,20}: cf nothing (20, 10 are history) -> fill [40, 30];
    //   relevant {30}: hit at rank 2: P 1/2, R 1, DCG 1/log2 3, IDCG 1,
    //   AP = (1/2)/1 = 1/2.
    // u2: [40] -> 0.   u3 {20, 30}: cf 10 = S (via 20) -> [10, 40]: as k=2 above:
    //   P 1/2, R 1/2, nDCG 1/(1+L), AP 1/2.
    const EvalResult r = evaluate(hand_before(), hand_after(), EvalOptions{2, 1});
    const double L = 1.0 / std::log2(3.0);
    EXPECT_EQ(r.users_evaluated, 3);
    EXPECT_DOUBLE_EQ(r.precision, 1.0 / 3);
    EXPECT_DOUBLE_EQ(r.recall, 0.5);
    EXPECT_DOUBLE_EQ(r.ndcg, (L + 1.0 / (1.0 + L)) / 3);
    EXPECT_DOUBLE_EQ(r.map, (0.5 + 0.5) / 3);
    EXPECT_DOUBLE_EQ(r.coverage, 0.75);  // {40, 30, 10}
}

TEST(Evaluate, TiedScoresRankByIdWhateverTheirOrder) {
    // A hand-made model: item 50 first touched (via 10's list), then 40
    // (via 20's), with equal scores 1 * 0.5.  The tie goes to the lower id,
    // 40, as recommend() ranks it: with k = 1 u1's one recommendation is 40,
    // a hit (keeping the first of equal scores would keep 50: precision 0);
    // with k = 2 the list is [40, 50], the hit at rank 1 (nDCG 1; in
    // arrival order it would be at rank 2: 1 / log2(3)).
    Model m;
    m.n_users = 4;
    m.n_cells = 8;
    m.item_ids = {10, 20, 40, 50};
    m.nbr_offsets = {0, 1, 2, 2, 2};
    m.nbr_ids = {50, 40};
    m.nbr_sims = {0.5, 0.5};
    m.popular_ids = {10, 20, 40, 50};
    m.popular_users = {4, 3, 2, 1};
    const std::vector<Triplet> history = {{1, 10, 1.0}, {1, 20, 1.0}};
    const std::vector<Touch> after = {{1, 40}};
    const std::vector<HistoryItem> h = {{10, 1.0}, {20, 1.0}};
    const auto recs = recommend(m, h, 2, true);
    ASSERT_EQ(recs.size(), 2u);
    EXPECT_EQ(recs[0].item, 40);
    EXPECT_EQ(recs[1].item, 50);
    for (int k : {1, 2}) {
        EvalOptions opt;
        opt.k = k;
        opt.bootstrap_resamples = 0;
        const EvalResult r = evaluate_model(m, history, after, opt);
        EXPECT_EQ(r.users_evaluated, 1);
        EXPECT_EQ(r.precision, 1.0 / k) << "k = " << k;
        EXPECT_EQ(r.ndcg, 1.0) << "k = " << k;
    }
}

TEST(Evaluate, MoreThan65536ItemsAgreeWithRecommend) {
    // Beyond 65,536 items the scorer's packed lists hold 32-bit indices
    // (WidePair): the same recommendations as recommend(), user by user.
    const auto before = recsys_test::random_cells(31, 20000, 70000, 300000);
    const auto later = recsys_test::random_cells(32, 20000, 70000, 40000);
    const Model m = train(before, TrainOptions{20});
    ASSERT_GT(m.item_ids.size(), std::size_t(1) << 16);
    std::map<int32_t, std::map<int32_t, double>> hist;
    for (const auto& t : before) hist[t.user][t.item] += t.weight;
    std::vector<Touch> after;
    std::map<int32_t, std::set<int32_t>> touched;
    for (const auto& t : later) {
        after.push_back(Touch{t.user, t.item});
        touched[t.user].insert(t.item);
    }
    constexpr int k = 10;
    // So that there are hits: every 7th user with a history also touches
    // the 2nd and 9th items recommend() gives it.
    for (const auto& [u, items] : hist) {
        if (static_cast<uint32_t>(u) % 7 != 0) continue;
        std::vector<HistoryItem> h;
        for (const auto& [i, w] : items) h.push_back(HistoryItem{i, w});
        const auto recs = recommend(m, h, k, true);
        for (std::size_t r : {std::size_t(1), std::size_t(8)})
            if (r < recs.size()) {
                after.push_back(Touch{u, recs[r].item});
                touched[u].insert(recs[r].item);
            }
    }
    double P = 0, N = 0;
    int64_t users = 0;
    for (const auto& [u, items] : touched) {
        if (!hist.count(u)) continue;
        std::set<int32_t> rel;
        for (int32_t i : items)
            if (!hist[u].count(i)) rel.insert(i);
        if (rel.empty()) continue;
        ++users;
        std::vector<HistoryItem> h;
        for (const auto& [i, w] : hist[u]) h.push_back(HistoryItem{i, w});
        const auto recs = recommend(m, h, k, true);
        double hits = 0, dcg = 0, idcg = 0;
        for (std::size_t r = 0; r < recs.size(); ++r)
            if (rel.count(recs[r].item)) {
                hits += 1;
                dcg += 1 / std::log2(r + 2.0);
            }
        for (int r = 1; r <= std::min<int>(k, static_cast<int>(rel.size())); ++r) idcg += 1 / std::log2(r + 1.0);
        P += hits / k;
        N += dcg / idcg;
    }
    EvalOptions opt;
    opt.k = k;
    opt.neighbors = 20;
    opt.bootstrap_resamples = 0;
    const EvalResult r = evaluate_model(m, before, after, opt);
    ASSERT_EQ(r.users_evaluated, users);
    ASSERT_GT(P, 0);
    EXPECT_NEAR(r.precision, P / users, 1e-12);
    EXPECT_NEAR(r.ndcg, N / users, 1e-12);
}

TEST(Evaluate, NoEvaluableUsers) {
    // Touches only by unknown users or of history items.
    const EvalResult r = evaluate(hand_before(), {{9, 10}, {4, 40}, {1, 10}}, EvalOptions{});
    EXPECT_EQ(r.users_evaluated, 0);
    EXPECT_EQ(r.users_without_history, 1);  // u9; u4 and u1 have history
    EXPECT_TRUE(std::isnan(r.precision_ci.lo) && std::isnan(r.precision_ci.hi));
    EXPECT_TRUE(std::isnan(r.ndcg_ci.lo));
    EXPECT_EQ(r.precision, 0);
    EXPECT_EQ(r.recall, 0);
    EXPECT_EQ(r.ndcg, 0);
    EXPECT_EQ(r.hit_rate, 0);
    EXPECT_EQ(r.map, 0);
    EXPECT_EQ(r.coverage, 0);
    EXPECT_EQ(r.pop_precision, 0);
    EXPECT_EQ(r.pop_recall, 0);
    EXPECT_EQ(r.model_items, 4);
    EXPECT_EQ(r.model_users, 6);
    EXPECT_EQ(r.train_cells, 10);
    EXPECT_EQ(r.test_touches, 3);
    // Both sides empty.
    const EvalResult e = evaluate({}, {}, EvalOptions{});
    EXPECT_EQ(e.users_evaluated, 0);
    EXPECT_EQ(e.model_items, 0);
    EXPECT_EQ(e.coverage, 0);
    EXPECT_EQ(e.test_touches, 0);
    // Empty before, touches after: nobody has history.
    const EvalResult f = evaluate({}, {{1, 2}, {1, 2}, {3, 4}}, EvalOptions{});
    EXPECT_EQ(f.users_evaluated, 0);
    EXPECT_EQ(f.users_without_history, 2);
    EXPECT_EQ(f.test_touches, 2);
}

TEST(Evaluate, InvalidOptionsAndInput) {
    EXPECT_THROW(evaluate(hand_before(), hand_after(), EvalOptions{0, 50}), InvalidInput);
    EXPECT_THROW(evaluate(hand_before(), hand_after(), EvalOptions{-1, 50}), InvalidInput);
    EXPECT_THROW(evaluate(hand_before(), hand_after(), EvalOptions{10, -1}), InvalidInput);
    EvalOptions o;
    o.bootstrap_resamples = -1;
    EXPECT_THROW(evaluate(hand_before(), hand_after(), o), InvalidInput);
    o.bootstrap_resamples = 100001;
    EXPECT_THROW(evaluate(hand_before(), hand_after(), o), InvalidInput);
    o = EvalOptions{};
    o.settings.similarity = Similarity::rp3beta;
    o.settings.shrink = 5;  // rejected before any work
    EXPECT_THROW(evaluate(hand_before(), hand_after(), o), InvalidInput);
    o.settings.neighbors = -7;  // ignored: EvalOptions::neighbors counts
    o.settings.shrink = 0;
    EXPECT_NO_THROW(evaluate(hand_before(), hand_after(), o));
    auto bad = hand_before();
    bad.push_back(Triplet{1, 30, -1});
    EXPECT_THROW(evaluate(bad, hand_after(), EvalOptions{}), InvalidInput);
}

TEST(Evaluate, CancelThrowsOnNthCall) {
    const auto before = recsys_test::random_cells(5, 300, 600, 3000);
    std::vector<Touch> after;
    for (std::size_t k = 0; k < before.size(); k += 3)
        after.push_back(Touch{before[(k * 7) % before.size()].user, before[k].item});
    int calls = 0;
    const EvalResult full = evaluate(before, after, EvalOptions{}, [&] {
        ++calls;
        return false;
    });
    ASSERT_GE(calls, 5);
    EXPECT_GT(full.users_evaluated, 0);
    for (int n = 1; n <= calls; ++n) {
        int seen = 0;
        EXPECT_THROW(evaluate(before, after, EvalOptions{}, [&] { return ++seen == n; }),
                     Cancelled)
            << "cancel on call " << n << " of " << calls;
    }
}

// Brute force: a literal re-implementation of the metric definitions, using
// recommend() (tested separately) for the lists.
TEST(Evaluate, AgreesWithBruteForce) {
    for (uint32_t seed = 21; seed <= 26; ++seed) {
        const auto before = recsys_test::random_cells(seed, 60, 40, 300);
        const auto later = recsys_test::random_cells(seed + 100, 60, 40, 200);
        std::vector<Touch> after;
        for (const auto& t : later) after.push_back(Touch{t.user, t.item});
        for (const auto& t : before)  // some repeat touches of history items
            if (t.user % 3 == 0) after.push_back(Touch{t.user, t.item});
        // k up to kSortedTopK (32) keeps the top k sorted, beyond it a heap.
        for (int k : {1, 3, 10, 32, 33}) {
            for (int nb : {0, 2, 50}) {
              for (int variant = 0; variant < 3; ++variant) {
                // 0: 1.0 defaults; 1: count repeats; 2: tfidf + rp3beta, repeats
                const bool repeats = variant > 0;
                EvalOptions eo{k, nb};
                eo.count_repeats = repeats;
                eo.bootstrap_resamples = 200;
                eo.bootstrap_seed = seed;
                TrainOptions to{nb};
                if (variant == 2) {
                    to.weighting = eo.settings.weighting = Weighting::tfidf;
                    to.similarity = eo.settings.similarity = Similarity::rp3beta;
                }
                const EvalResult r = evaluate(before, after, eo);
                const Model m = train(before, to);
                if (variant == 2) {  // the settings really change the model
                    ASSERT_NE(m.nbr_sims, train(before, TrainOptions{nb}).nbr_sims);
                }
                std::map<int32_t, std::map<int32_t, double>> hist;
                for (const auto& t : before) hist[t.user][t.item] += t.weight;
                std::map<int32_t, std::set<int32_t>> touched;
                for (const auto& t : after) touched[t.user].insert(t.item);
                std::size_t touches = 0;
                for (const auto& [u, s] : touched) touches += s.size();
                double P = 0, Rc = 0, N = 0, H = 0, AP = 0, PP = 0, PR = 0;
                std::set<int32_t> rec_items;
                int64_t users = 0, no_history = 0;
                std::vector<double> user_p, user_r, user_n;
                for (const auto& [u, items] : touched) {
                    if (!hist.count(u)) {
                        ++no_history;
                        continue;
                    }
                    std::set<int32_t> rel;
                    for (int32_t i : items)
                        if (repeats || !hist[u].count(i)) rel.insert(i);
                    if (rel.empty()) continue;
                    ++users;
                    std::vector<HistoryItem> h;
                    for (const auto& [i, w] : hist[u]) h.push_back(HistoryItem{i, w});
                    const auto recs = recommend(m, h, k, !repeats);
                    double hits = 0, dcg = 0, ap = 0, idcg = 0;
                    for (std::size_t r = 0; r < recs.size(); ++r) {
                        rec_items.insert(recs[r].item);
                        if (rel.count(recs[r].item)) {
                            hits += 1;
                            dcg += 1 / std::log2(r + 2.0);
                            ap += hits / (r + 1.0);
                        }
                    }
                    const double ideal = std::min<double>(k, rel.size());
                    for (int r = 1; r <= ideal; ++r) idcg += 1 / std::log2(r + 1.0);
                    P += hits / k;
                    Rc += hits / rel.size();
                    N += dcg / idcg;
                    user_p.push_back(hits / k);
                    user_r.push_back(hits / rel.size());
                    user_n.push_back(dcg / idcg);
                    H += hits > 0;
                    AP += ap / ideal;
                    double ph = 0;
                    int listed = 0;
                    for (int32_t i : m.popular_ids) {
                        if (listed == k) break;
                        if (!repeats && hist[u].count(i)) continue;
                        ++listed;
                        ph += rel.count(i);
                    }
                    PP += ph / k;
                    PR += ph / rel.size();
                }
                ASSERT_EQ(r.users_evaluated, users);
                ASSERT_GT(users, 0);
                EXPECT_EQ(r.users_without_history, no_history);
                // The CIs: the documented bootstrap recipe re-done here.
                const std::vector<Interval> ci = ref_bootstrap({user_p, user_r, user_n}, 200, seed);
                expect_ci(r.precision_ci, ci[0]);
                expect_ci(r.recall_ci, ci[1]);
                expect_ci(r.ndcg_ci, ci[2]);
                EXPECT_NEAR(r.precision, P / users, 1e-12);
                EXPECT_NEAR(r.recall, Rc / users, 1e-12);
                EXPECT_NEAR(r.ndcg, N / users, 1e-12);
                EXPECT_NEAR(r.hit_rate, H / users, 1e-12);
                EXPECT_NEAR(r.map, AP / users, 1e-12);
                EXPECT_NEAR(r.pop_precision, PP / users, 1e-12);
                EXPECT_NEAR(r.pop_recall, PR / users, 1e-12);
                EXPECT_NEAR(r.coverage, double(rec_items.size()) / m.item_ids.size(), 1e-12);
                EXPECT_EQ(r.test_touches, static_cast<int64_t>(touches));
                EXPECT_EQ(r.train_cells, m.n_cells);
                EXPECT_EQ(r.model_users, m.n_users);
                EXPECT_EQ(r.model_items, static_cast<int64_t>(m.item_ids.size()));
              }
            }
        }
    }
}

TEST(Evaluate, CountRepeatsHandExample) {
    // count_repeats, k = 2: relevant = every item touched after the cutoff;
    // history items may be recommended; the popularity baseline is the k most
    // popular items, history included.  S = 0.7746 (sim 10-20, 20-30), T = 0.4.
    // u1 {10:1, 20:1}, relevant {10, 30}: scores 10 = S (via 20), 20 = S (via
    //    10), 30 = T + S = 1.1746 -> [30, 10] (10/20 tie, id asc): 2 hits.
    //    P 1, R 1, DCG 1 + L = IDCG -> nDCG 1, AP (1/1 + 2/2)/2 = 1.
    //    pop [20, 40]: 0.
    // u2 {10:2, 20:1, 30:1}, relevant {50}: [20 (3S), 30 (2T + S)]: 0 hits.
    // u3 {20:1, 30:2}, relevant {10, 50}: 10 = S + 2T = 1.5746, 20 = 2S = 1.549,
    //    30 = S -> [10, 20]: hit at 1: P 1/2, R 1/2, nDCG 1/(1 + L), AP 1/2.
    // u4 {40:3}, relevant {40}: no cf (40 has no neighbours); fill [20, 40]:
    //    hit at 2: P 1/2, R 1, nDCG L/1, AP (1/2)/1.  pop [20, 40]: pP 1/2, pR 1.
    // u9: no history: not evaluated, counted in users_without_history.
    // Averages over 4 users: precision (1 + 0 + 1/2 + 1/2)/4 = 1/2,
    // recall (1 + 0 + 1/2 + 1)/4 = 5/8, ndcg (1 + 0 + 1/(1+L) + L)/4,
    // hit 3/4, map (1 + 0 + 1/2 + 1/2)/4 = 1/2, coverage {30,10,20,40} = 1,
    // pop_precision (1/2)/4 = 1/8, pop_recall 1/4.
    EvalOptions o{2, 50};
    o.count_repeats = true;
    const EvalResult r = evaluate(hand_before(), hand_after(), o);
    const double L = 1.0 / std::log2(3.0);
    EXPECT_EQ(r.users_evaluated, 4);
    EXPECT_EQ(r.users_without_history, 1);
    EXPECT_DOUBLE_EQ(r.precision, 0.5);
    EXPECT_DOUBLE_EQ(r.recall, 5.0 / 8);
    EXPECT_DOUBLE_EQ(r.ndcg, (1 + 1 / (1 + L) + L) / 4);
    EXPECT_DOUBLE_EQ(r.hit_rate, 0.75);
    EXPECT_DOUBLE_EQ(r.map, 0.5);
    EXPECT_DOUBLE_EQ(r.coverage, 1.0);
    EXPECT_DOUBLE_EQ(r.pop_precision, 1.0 / 8);
    EXPECT_DOUBLE_EQ(r.pop_recall, 0.25);
    EXPECT_EQ(r.test_touches, 7);
}

TEST(Evaluate, RecommendWithoutExcludingSeen) {
    const Model m = train(hand_before(), TrainOptions{});
    // History {10, 20}: 30 (T + S), then 10 and 20 (S each, id asc).
    const auto recs = recommend(m, {{10, 1}, {20, 1}}, 3, false);
    ASSERT_EQ(recs.size(), 3u);
    EXPECT_EQ(recs[0].item, 30);
    EXPECT_EQ(recs[1].item, 10);
    EXPECT_EQ(recs[2].item, 20);
    EXPECT_TRUE(recs[2].from_cf);
    // The fill may list history items: {40} -> popular 20, 40.
    const auto fill = recommend(m, {{40, 3}}, 2, false);
    ASSERT_EQ(fill.size(), 2u);
    EXPECT_EQ(fill[0].item, 20);
    EXPECT_EQ(fill[1].item, 40);
    EXPECT_FALSE(fill[1].from_cf);
    // The default still excludes them.
    const auto ex = recommend(m, {{40, 3}}, 2);
    EXPECT_EQ(ex[1].item, 10);
}

TEST(Evaluate, SettingsReachTheModel) {
    // rp3beta, alpha 1, beta 2, K = 1 on the hand example.  Column sums
    // 10: 3, 20: 3, 30: 3; row sums u1 2, u2 4, u3 3; |U| 10: 2, 20: 3, 30: 2.
    //   sim(10,20) = (1/3 1/2 + 2/3 1/4)/3^2 = (1/3)/9 = 0.037
    //   sim(10,30) = (2/3 1/4)/2^2 = (1/6)/4 = 0.0417    -> 10: [30]
    //   sim(20,10) = (1/3 1/2 + 1/3 2/4)/4 = (1/3)/4     -> 20: [10]
    //   sim(20,30) = (1/3 1/4 + 1/3 2/3)/4 = (11/36)/4
    //   sim(30,10) = (1/3 2/4)/4 = 0.0417, sim(30,20) = (11/36)/9 -> 30: [10]
    // k = 2.  u1 {10, 20}: cf 30 (via 10) -> [30, 40]: hit at 1 (cosine K = 1:
    //   [40, 30], hit at 2; HandExampleNeighborsOption).  u2: [40], 0.
    //   u3 {20, 30}: cf 10 -> [10, 40]: hit at 1 of {10, 50}.
    // precision (1/2 + 0 + 1/2)/3 = 1/3, ndcg (1 + 0 + 1/(1+L))/3,
    // map (1 + 0 + 1/2)/3 = 1/2 (cosine K = 1: ndcg (L + 1/(1+L))/3, map 1/3).
    EvalOptions o{2, 1};
    o.settings.similarity = Similarity::rp3beta;
    o.settings.alpha = 1;
    o.settings.beta = 2;
    const EvalResult r = evaluate(hand_before(), hand_after(), o);
    const double L = 1.0 / std::log2(3.0);
    EXPECT_EQ(r.users_evaluated, 3);
    EXPECT_DOUBLE_EQ(r.precision, 1.0 / 3);
    EXPECT_DOUBLE_EQ(r.ndcg, (1 + 1 / (1 + L)) / 3);
    EXPECT_DOUBLE_EQ(r.map, 0.5);
    const EvalResult c = evaluate(hand_before(), hand_after(), EvalOptions{2, 1});
    EXPECT_DOUBLE_EQ(c.ndcg, (L + 1 / (1 + L)) / 3);
    EXPECT_DOUBLE_EQ(c.map, 1.0 / 3);
}

TEST(Evaluate, BootstrapReproducibleAndContainsEstimate) {
    const auto before = recsys_test::random_cells(31, 300, 80, 2500);
    std::vector<Touch> after;  // users and items of `before`, mixed
    for (std::size_t k = 0; k < before.size(); k += 2)
        after.push_back(Touch{before[(k * 7) % before.size()].user, before[(k * 13 + 5) % before.size()].item});
    EvalOptions o{10, 50};
    o.bootstrap_seed = 42;
    const EvalResult a = evaluate(before, after, o);
    const EvalResult b = evaluate(before, after, o);
    ASSERT_GT(a.users_evaluated, 100);
    // Same seed: bit-identical intervals.
    expect_ci(a.precision_ci, b.precision_ci);
    expect_ci(a.recall_ci, b.recall_ci);
    expect_ci(a.ndcg_ci, b.ndcg_ci);
    // The point estimate lies inside, the interval has width.
    for (const auto& [v, ci] : {std::pair{a.precision, a.precision_ci}, std::pair{a.recall, a.recall_ci},
                                std::pair{a.ndcg, a.ndcg_ci}}) {
        EXPECT_LE(ci.lo, v);
        EXPECT_GE(ci.hi, v);
        EXPECT_LT(ci.lo, ci.hi);
        EXPECT_GE(ci.lo, 0);
        EXPECT_LE(ci.hi, 1);
    }
    // Another seed: another interval (same point estimates).
    o.bootstrap_seed = 43;
    const EvalResult c = evaluate(before, after, o);
    EXPECT_EQ(c.precision, a.precision);
    EXPECT_TRUE(c.precision_ci.lo != a.precision_ci.lo || c.precision_ci.hi != a.precision_ci.hi ||
                c.ndcg_ci.lo != a.ndcg_ci.lo || c.ndcg_ci.hi != a.ndcg_ci.hi);
    // No resamples: no interval, the metrics unchanged.
    o.bootstrap_resamples = 0;
    const EvalResult z = evaluate(before, after, o);
    EXPECT_TRUE(std::isnan(z.precision_ci.lo) && std::isnan(z.recall_ci.hi) &&
                std::isnan(z.ndcg_ci.lo));
    EXPECT_EQ(z.precision, a.precision);
    EXPECT_EQ(z.ndcg, a.ndcg);
}

TEST(Evaluate, BootstrapOneUserHasZeroWidth) {
    // Only u1 is evaluable (relevant {30}): k = 2 -> precision 1/2, recall 1,
    // nDCG 1; every resample is u1 again.
    const EvalResult r = evaluate(hand_before(), {{1, 30}, {9, 10}}, EvalOptions{2, 50});
    ASSERT_EQ(r.users_evaluated, 1);
    EXPECT_EQ(r.precision_ci.lo, 0.5);
    EXPECT_EQ(r.precision_ci.hi, 0.5);
    EXPECT_EQ(r.recall_ci.lo, 1.0);
    EXPECT_EQ(r.recall_ci.hi, 1.0);
    EXPECT_EQ(r.ndcg_ci.lo, 1.0);
    EXPECT_EQ(r.ndcg_ci.hi, 1.0);
}

TEST(Evaluate, BootstrapSmallCases) {
    using recsys::detail::percentile_bootstrap;
    // Two users with values 0 and 1: a resample mean is 0 (both draws the
    // first, probability 1/4), 1/2 (1/2) or 1 (1/4).  Of 1000 resamples about
    // 250 are 0 and 250 are 1, so the 2.5% and 97.5% quantiles (positions
    // 24.975 and 974.025 of the sorted means) are exactly 0 and 1.
    const auto two = percentile_bootstrap({{0.0, 1.0}}, 1000, 7, 0.025, 0.975, {});
    ASSERT_EQ(two.size(), 1u);
    EXPECT_EQ(two[0].lo, 0.0);
    EXPECT_EQ(two[0].hi, 1.0);
    // Constant values: zero width, any n.
    const auto flat = percentile_bootstrap({{0.25, 0.25, 0.25}, {1, 1, 1}}, 50, 3, 0.025, 0.975, {});
    EXPECT_EQ(flat[0].lo, 0.25);
    EXPECT_EQ(flat[0].hi, 0.25);
    EXPECT_EQ(flat[1].lo, 1.0);
    // One resample: both bounds are its mean, one of 0, 1/3, 2/3, 1 here.
    const auto one = percentile_bootstrap({{0, 0, 1}}, 1, 11, 0.025, 0.975, {});
    EXPECT_EQ(one[0].lo, one[0].hi);
    const double m3 = one[0].lo * 3;
    EXPECT_EQ(m3, std::round(m3));
    // The recipe, re-done independently, for n = 5 and 3 (rejection bounds
    // differ) and a few seeds and resample counts, every column paired.
    const std::vector<double> v5 = {0.1, 0.5, 0.0, 1.0, 0.25};
    const std::vector<double> w5 = {1.0, 0.0, 0.0, 0.5, 0.75};
    for (uint64_t seed : {0ull, 1ull, 12345ull, ~0ull}) {
        for (int B : {1, 2, 7, 100, 999}) {
            const auto got = percentile_bootstrap({v5, w5}, B, seed, 0.025, 0.975, {});
            const auto want = ref_bootstrap({v5, w5}, B, seed);
            expect_ci(got[0], want[0]);
            expect_ci(got[1], want[1]);
            for (const std::vector<double>& v3 : {std::vector<double>{0.0, 0.5, 1.0}, std::vector<double>{0.5, 0.5, 1.0},
                                                 std::vector<double>{0.0, 0.0, 0.0}})
                expect_ci(percentile_bootstrap({v3}, B, seed, 0.025, 0.975, {})[0], ref_bootstrap({v3}, B, seed)[0]);
        }
    }
    // Empty: NaN.
    const auto none = percentile_bootstrap({{}}, 100, 1, 0.025, 0.975, {});
    EXPECT_TRUE(std::isnan(none[0].lo) && std::isnan(none[0].hi));
    // Polls the CancelCheck before each block of 2^16 / m resamples and once
    // more on finding none left: v5 has m = 4 units with a value -> blocks of
    // 16384, so 30000 resamples poll before resamples 0, 16384 and at the end.
    int calls = 0;
    percentile_bootstrap({v5}, 30000, 1, 0.025, 0.975, [&] {
        ++calls;
        return false;
    }, 1);
    EXPECT_EQ(calls, 3);
    // The result does not depend on the thread count: one and two threads,
    // on more units than a block holds, equal the naive recipe.
    std::vector<double> big(70000);
    for (std::size_t u = 0; u < big.size(); ++u) big[u] = (u % 7 == 0) ? 0.0 : static_cast<double>(u % 11) / 10.0;
    const Interval want = ref_bootstrap({big}, 40, 99)[0];
    for (int threads : {1, 2})
        expect_ci(percentile_bootstrap({big}, 40, 99, 0.025, 0.975, {}, threads)[0], want);
    EXPECT_THROW(percentile_bootstrap({v5}, 37, 1, 0.025, 0.975, [] { return true; }), Cancelled);
}

// The resamples follow the bootstrap's distribution, checked against exact
// values computed here independently: a resample of n units is n uniform
// draws with replacement, so the draw counts are Multinomial(n; 1/n, ...).
TEST(Evaluate, BootstrapMatchesMultinomialMoments) {
    using recsys::detail::bootstrap_means;
    // (a) The number of draws that land among m units: with the column 1 on
    // those m units and 0 elsewhere, n * mean = K ~ Binomial(n, m/n).  Every
    // frequency of K over B resamples against B * the exact pmf (lgamma),
    // within 5 standard deviations (+1).
    {
        const std::size_t n = 40, m = 10;
        const int B = 200000;
        std::vector<double> col(n, 0.0);
        for (std::size_t u = 3; u < n; u += 4) col[u] = 1;  // 10 units, not the first
        const auto means = bootstrap_means({col}, B, 5, {});
        ASSERT_EQ(means.size(), 1u);
        ASSERT_EQ(means[0].size(), std::size_t(B));
        std::vector<double> freq(n + 1, 0);
        for (double x : means[0]) {
            const double k = x * n;
            ASSERT_EQ(k, std::round(k));
            freq[static_cast<std::size_t>(std::round(k))] += 1;
        }
        const double p = double(m) / n;
        double chi2 = 0;
        int cells = 0;
        for (std::size_t k = 0; k <= n; ++k) {
            const double pmf = std::exp(std::lgamma(n + 1.0) - std::lgamma(k + 1.0) - std::lgamma(n - k + 1.0) +
                                        k * std::log(p) + (n - k) * std::log1p(-p));
            const double expect = B * pmf;
            EXPECT_LE(std::fabs(freq[k] - expect), 5 * std::sqrt(expect * (1 - pmf)) + 1) << "k = " << k;
            if (expect >= 5) {
                chi2 += (freq[k] - expect) * (freq[k] - expect) / expect;
                ++cells;
            }
        }
        // About 20 cells: the chi-square's 99.99% point is below 55.
        EXPECT_GE(cells, 15);
        EXPECT_LT(chi2, 55.0);
    }
    // (b) The joint counts of single units: column c is 1 on unit c's
    // position only, so n * mean_c = count_c ~ Binomial(n, 1/n): mean 1,
    // variance (n-1)/n; two units' covariance -1/n.  n = 6, three units
    // with a value (and three without), B = 100000 resamples.
    {
        const std::size_t n = 6;
        const int B = 100000;
        const std::size_t pos[3] = {1, 3, 4};
        std::vector<std::vector<double>> cols(3, std::vector<double>(n, 0.0));
        for (int c = 0; c < 3; ++c) cols[c][pos[c]] = 1;
        const auto means = bootstrap_means(cols, B, 77, {});
        double s[3] = {0}, ss[3] = {0}, cross[3] = {0};
        for (int r = 0; r < B; ++r) {
            double cnt[3];
            for (int c = 0; c < 3; ++c) {
                cnt[c] = means[c][r] * n;
                s[c] += cnt[c];
                ss[c] += cnt[c] * cnt[c];
            }
            cross[0] += cnt[0] * cnt[1];
            cross[1] += cnt[0] * cnt[2];
            cross[2] += cnt[1] * cnt[2];
        }
        const double var = (n - 1.0) / n, cov = -1.0 / n;
        for (int c = 0; c < 3; ++c) {
            const double mean = s[c] / B;
            EXPECT_NEAR(mean, 1.0, 5 * std::sqrt(var / B));
            EXPECT_NEAR(ss[c] / B - mean * mean, var, 0.03);
        }
        const int pairs[3][2] = {{0, 1}, {0, 2}, {1, 2}};
        for (int p = 0; p < 3; ++p) {
            const double ma = s[pairs[p][0]] / B, mb = s[pairs[p][1]] / B;
            EXPECT_NEAR(cross[p] / B - ma * mb, cov, 0.03);
        }
    }
    // (c) A metric's resample mean: expectation the sample mean, variance
    // the population variance / n (the bootstrap's exact moments), on
    // n = 50000 units, 30% with a value, so the Binomial table is cut at its
    // tails; 4000 resamples: the variance within 4 * sqrt(2 / B) ~ 9%.
    {
        const std::size_t n = 50000;
        const int B = 4000;
        std::mt19937_64 g(3);
        std::uniform_real_distribution<double> U(0, 1);
        std::vector<double> v(n, 0.0);
        for (double& x : v)
            if (U(g) < 0.3) x = U(g);
        double mu = 0, s2 = 0;
        for (double x : v) mu += x;
        mu /= n;
        for (double x : v) s2 += (x - mu) * (x - mu);
        const double var = s2 / n / n;  // Var of a resample mean
        for (int threads : {1, 2}) {
            const auto means = bootstrap_means({v}, B, 9, {}, threads);
            double a = 0, aa = 0;
            for (double x : means[0]) a += x;
            a /= B;
            for (double x : means[0]) aa += (x - a) * (x - a);
            aa /= (B - 1);
            EXPECT_NEAR(a, mu, 5 * std::sqrt(var / B));
            EXPECT_NEAR(aa / var, 1.0, 4 * std::sqrt(2.0 / B));
        }
        // The same seed, any thread count: the same resamples, bit for bit.
        EXPECT_EQ(bootstrap_means({v}, 50, 9, {}, 1), bootstrap_means({v}, 50, 9, {}, 2));
        EXPECT_NE(bootstrap_means({v}, 50, 9, {}, 1), bootstrap_means({v}, 50, 10, {}, 1));
    }
    // Every unit with a value, and none: K is n, resp. nothing is drawn.
    const auto all = bootstrap_means({{0.5, 1.0}}, 3000, 1, {});
    const auto none = bootstrap_means({{0.0, 0.0, 0.0}}, 10, 1, {});
    for (double x : none[0]) EXPECT_EQ(x, 0.0);
    int both_first = 0;
    for (double x : all[0]) {
        EXPECT_TRUE(x == 0.5 || x == 0.75 || x == 1.0) << x;
        both_first += x == 0.5;
    }
    EXPECT_NEAR(both_first, 750, 5 * std::sqrt(3000 * 0.25 * 0.75));
}

// evaluate_model() on a model trained apart (as the glue does within a
// memory budget), with the history cut down to the users touched after the
// cutoff, gives evaluate()'s result field for field.
TEST(Evaluate, ModelAndTestUsersHistoryEqualsEvaluate) {
    for (uint64_t seed : {3u, 17u, 29u}) {
        const auto before = recsys_test::random_cells(seed, 200, 60, 1500);
        // Touches after the cutoff: a third of the users, items both new to
        // them and already in their history.
        std::vector<Touch> after;
        std::set<int32_t> test_users;
        const std::size_t n = before.size();
        for (std::size_t i = 0; i < n / 4; ++i) {
            const int32_t user = before[(i * 7) % n].user;
            if (user % 3 == 0) continue;
            after.push_back(Touch{user, before[(i * 13 + 5) % n].item});
            test_users.insert(user);
        }
        EvalOptions opt;
        opt.k = 5;
        opt.neighbors = 20;
        opt.bootstrap_resamples = 200;
        const EvalResult want = evaluate(before, after, opt);
        ASSERT_GT(want.users_evaluated, 20);

        const Model model = trained(before, 20);
        std::vector<Triplet> kept;
        for (const Triplet& c : before)
            if (test_users.count(c.user)) kept.push_back(c);
        ASSERT_LT(kept.size(), before.size());
        expect_same_result(evaluate_model(model, kept, after, opt), want);
    }
}

// The histories and touches may come in any order and with duplicates: each
// cell split in two halves (exact: w/2 + w/2 = w) and the touches repeated,
// all shuffled, give the result of the cells and touches as they are -- the
// (user, item) sort groups ids over the whole int32 range (random_cells).
TEST(Evaluate, HistoryOrderAndDuplicatesDoNotMatter) {
    const auto before = recsys_test::random_cells(57, 400, 80, 4000);
    std::vector<Touch> after;
    const std::size_t n = before.size();
    for (std::size_t i = 0; i < n / 3; ++i) after.push_back(Touch{before[(i * 7) % n].user, before[(i * 13 + 5) % n].item});
    const Model model = trained(before, 20);
    EvalOptions opt = eval_options(5, 20, 100);
    const EvalResult want = evaluate_model(model, before, after, opt);
    ASSERT_GT(want.users_evaluated, 50);
    std::vector<Triplet> halves;
    for (const Triplet& c : before) {
        halves.push_back(Triplet{c.user, c.item, c.weight / 2});
        halves.push_back(Triplet{c.user, c.item, c.weight / 2});
    }
    std::vector<Touch> twice(after);
    twice.insert(twice.end(), after.begin(), after.end());
    std::mt19937 rng(5);
    std::shuffle(halves.begin(), halves.end(), rng);
    std::shuffle(twice.begin(), twice.end(), rng);
    expect_same_result(evaluate_model(model, halves, twice, opt), want);
}

// Scoring on two threads gives the one-thread result bit for bit (each
// user's figures are summed in user order whichever thread scored them).
TEST(Evaluate, TwoScoringThreadsEqualOne) {
    const auto before = recsys_test::random_cells(41, 3000, 300, 30000);
    std::vector<Touch> after;
    const std::size_t n = before.size();
    for (std::size_t i = 0; i < n / 3; ++i)
        after.push_back(Touch{before[(i * 7) % n].user, before[(i * 11 + 3) % n].item});
    EvalOptions one;
    one.k = 10;
    one.neighbors = 30;
    one.bootstrap_resamples = 100;
    one.threads = 1;
    EvalOptions two = one;
    two.threads = 2;
    const EvalResult a = evaluate(before, after, one);
    const EvalResult b = evaluate(before, after, two);
    ASSERT_GT(a.users_evaluated, 1000);  // several blocks of users
    EXPECT_EQ(a.users_evaluated, b.users_evaluated);
    EXPECT_EQ(a.users_without_history, b.users_without_history);
    EXPECT_EQ(a.precision, b.precision);
    EXPECT_EQ(a.recall, b.recall);
    EXPECT_EQ(a.ndcg, b.ndcg);
    EXPECT_EQ(a.hit_rate, b.hit_rate);
    EXPECT_EQ(a.map, b.map);
    EXPECT_EQ(a.coverage, b.coverage);
    EXPECT_EQ(a.pop_precision, b.pop_precision);
    EXPECT_EQ(a.pop_recall, b.pop_recall);
    expect_ci(a.precision_ci, b.precision_ci);
    expect_ci(a.recall_ci, b.recall_ci);
    expect_ci(a.ndcg_ci, b.ndcg_ci);
}

// The evaluation's sort by (user, item) is std::stable_sort's order, ties
// (duplicate pairs) in input order: the weights tag each element's input
// position.  Shapes: dense users with few items each (2 radix passes,
// insertion sorts), a few users with hundreds of items (their stable_sort),
// one user (no radix pass), users spread over the whole int32 range (3
// passes), negative ids, and the empty and one-element cases.
TEST(Evaluate, SortByUserItemIsStableSort) {
    struct Shape {
        std::size_t n;
        int64_t user_lo, user_hi, item_lo, item_hi;
    };
    const Shape shapes[] = {
        {0, 0, 0, 0, 0},
        {1, 5, 5, 7, 7},
        {20000, 0, 4000, 0, 60},                        // ~5 per user, many duplicate pairs
        {20000, 100, 140, 0, 5000},                     // ~500 per user: stable_sort per user
        {3000, 7, 7, 0, 500},                           // one user
        {20000, 0, 1000, 0, 40},                        // 1 pass
        {20000, 0, 6000, 0, 3},                         // nearly every pair repeated
        {20000, -2000000000, 2000000000, -50, 50},      // sparse users: 3 passes
        {20000, -3000, 3000, -2147483647 - 1, 2147483647},  // negative users, items over int32
        {5000, 0, 200000, 0, 100},                      // 2 passes of 9 bits
    };
    std::mt19937_64 rng(7);
    for (const Shape& sh : shapes) {
        std::uniform_int_distribution<int64_t> du(sh.user_lo, sh.user_hi), di(sh.item_lo, sh.item_hi);
        std::vector<Triplet> cells(sh.n);
        std::vector<Touch> touches(sh.n);
        for (std::size_t q = 0; q < sh.n; ++q) {
            cells[q] = Triplet{static_cast<int32_t>(du(rng)), static_cast<int32_t>(di(rng)), static_cast<double>(q)};
            touches[q] = Touch{cells[q].user, cells[q].item};
        }
        std::vector<Triplet> want = cells;
        std::stable_sort(want.begin(), want.end(), [](const Triplet& a, const Triplet& b) {
            return a.user != b.user ? a.user < b.user : a.item < b.item;
        });
        detail::sort_by_user_item(cells, {});
        ASSERT_EQ(cells.size(), want.size());
        for (std::size_t q = 0; q < sh.n; ++q) {
            ASSERT_EQ(cells[q].user, want[q].user) << "n " << sh.n << " at " << q;
            ASSERT_EQ(cells[q].item, want[q].item) << "n " << sh.n << " at " << q;
            ASSERT_EQ(cells[q].weight, want[q].weight) << "n " << sh.n << " at " << q;  // input order of ties
        }
        detail::sort_by_user_item(touches, {});
        for (std::size_t q = 0; q < sh.n; ++q) {
            ASSERT_EQ(touches[q].user, want[q].user) << "n " << sh.n << " at " << q;
            ASSERT_EQ(touches[q].item, want[q].item) << "n " << sh.n << " at " << q;
        }
    }
}

// The sort polls `cancel` and throws Cancelled when it says so.
TEST(Evaluate, SortByUserItemCancels) {
    std::vector<Triplet> cells;
    for (int32_t q = 0; q < 1000; ++q) cells.push_back(Triplet{q % 97, q % 13, 1.0});
    std::vector<Triplet> sparse = cells;
    sparse[0].user = 2000000000;  // 3 passes
    const CancelCheck now = [] { return true; };
    EXPECT_THROW(detail::sort_by_user_item(cells, now), Cancelled);
    EXPECT_THROW(detail::sort_by_user_item(sparse, now), Cancelled);
}

// With two threads the touches are sorted on the second one while this one
// sorts the histories: a cancel then throws Cancelled here (the worker is
// stopped and joined, whatever it was doing), and without one the result
// is the one-thread result.
TEST(Evaluate, CancelWhileTheTouchesSortOnASecondThread) {
    std::mt19937 rng(5);
    std::uniform_int_distribution<int32_t> user(0, 30000), item(0, 400);
    std::vector<Triplet> before;
    std::vector<Touch> after;
    for (int q = 0; q < 200000; ++q) before.push_back(Triplet{user(rng), item(rng), 1.0 + q % 3});
    for (int q = 0; q < 300000; ++q) after.push_back(Touch{user(rng), item(rng)});
    const Model model = trained(before, 20);
    EvalOptions opt = eval_options(5, 20, 50);
    opt.threads = 2;
    int calls = 0;
    const EvalResult two = evaluate_model(model, before, after, opt, [&] {
        ++calls;
        return false;
    });
    opt.threads = 1;
    const EvalResult one = evaluate_model(model, before, after, opt);
    EXPECT_EQ(two.users_evaluated, one.users_evaluated);
    EXPECT_EQ(two.test_touches, one.test_touches);
    EXPECT_EQ(two.precision, one.precision);
    EXPECT_EQ(two.ndcg, one.ndcg);
    EXPECT_EQ(two.coverage, one.coverage);
    expect_ci(two.recall_ci, one.recall_ci);
    opt.threads = 2;
    ASSERT_GE(calls, 4);
    for (int n = 1; n <= 4; ++n) {  // within the histories' sort, the touches' one under way
        int seen = 0;
        EXPECT_THROW(evaluate_model(model, before, after, opt, [&] { return ++seen >= n; }), Cancelled) << n;
    }
}

// sort_scoring_inputs() (the glue runs it on a thread of its own while the
// model trains) sorts in place as evaluate_model() does -- the histories by
// std::stable_sort's (user, item) order with each pair's cells summed in
// input order, the touches distinct -- and evaluate_sorted() on them gives
// evaluate_model()'s result of the unsorted inputs field for field.  Shapes: cells split in halves and shuffled (duplicates to sum,
// exactly), touches repeated, 1 to 3 radix passes (an odd count leaves the
// sort's result in its scratch, copied back), one user, and empty inputs.
TEST(Evaluate, SortScoringInputsThenEvaluateEqualsEvaluate) {
    EvalOptions opt;
    opt.k = 5;
    opt.neighbors = 20;
    opt.bootstrap_resamples = 100;
    const auto before = recsys_test::random_cells(57, 400, 80, 4000);
    const Model model = trained(before, opt.neighbors);
    const std::size_t n = before.size();
    std::mt19937 rng(11);
    for (int shape = 0; shape < 3; ++shape) {
        std::vector<Triplet> hist;
        std::vector<Touch> after;
        for (const Triplet& c : before) {
            hist.push_back(Triplet{c.user, c.item, c.weight / 2});
            hist.push_back(Triplet{c.user, c.item, c.weight / 2});
        }
        for (std::size_t i = 0; i < n / 3; ++i) {
            const Touch t{before[(i * 7) % n].user, before[(i * 13 + 5) % n].item};
            after.push_back(t);
            if (i % 4 == 0) after.push_back(t);
        }
        if (shape == 1) {  // one user
            for (Triplet& c : hist) c.user = before[0].user;
            for (Touch& t : after) t.user = before[0].user;
        }
        std::shuffle(hist.begin(), hist.end(), rng);
        std::shuffle(after.begin(), after.end(), rng);
        EvalOptions o = opt;
        o.count_repeats = shape == 1;  // (the one user's history holds every item touched)
        const EvalResult want = evaluate_model(model, hist, after, o);
        ASSERT_GT(want.users_evaluated, 0);

        // The in-place sort against std::stable_sort, summing and unique.
        std::vector<Triplet> want_hist = hist;
        std::stable_sort(want_hist.begin(), want_hist.end(), [](const Triplet& a, const Triplet& b) {
            return a.user != b.user ? a.user < b.user : a.item < b.item;
        });
        std::vector<Triplet> summed;
        for (const Triplet& c : want_hist) {
            if (!summed.empty() && summed.back().user == c.user && summed.back().item == c.item)
                summed.back().weight += c.weight;
            else
                summed.push_back(c);
        }
        std::vector<Touch> want_after = after;
        std::stable_sort(want_after.begin(), want_after.end(), [](const Touch& a, const Touch& b) {
            return a.user != b.user ? a.user < b.user : a.item < b.item;
        });
        want_after.erase(std::unique(want_after.begin(), want_after.end(),
                                     [](const Touch& a, const Touch& b) { return a.user == b.user && a.item == b.item; }),
                         want_after.end());
        std::size_t nh = hist.size(), na = after.size();
        sort_scoring_inputs(hist.data(), &nh, after.data(), &na);
        ASSERT_EQ(nh, summed.size());
        ASSERT_EQ(na, want_after.size());
        for (std::size_t q = 0; q < nh; ++q) {
            ASSERT_EQ(hist[q].user, summed[q].user) << q;
            ASSERT_EQ(hist[q].item, summed[q].item) << q;
            ASSERT_EQ(hist[q].weight, summed[q].weight) << q;
        }
        for (std::size_t q = 0; q < na; ++q) {
            ASSERT_EQ(after[q].user, want_after[q].user) << q;
            ASSERT_EQ(after[q].item, want_after[q].item) << q;
        }
        expect_same_result(evaluate_sorted(model, hist.data(), nh, after.data(), na, o), want);
    }
    // Sparse users (3 radix passes: the result ends in the scratch).
    std::vector<Triplet> sparse;
    std::uniform_int_distribution<int32_t> du(-2000000000, 2000000000), di(0, 50);
    for (int q = 0; q < 5000; ++q) sparse.push_back(Triplet{du(rng) / 1000 * 1000, di(rng), static_cast<double>(q)});
    std::vector<Triplet> want = sparse;
    std::stable_sort(want.begin(), want.end(), [](const Triplet& a, const Triplet& b) {
        return a.user != b.user ? a.user < b.user : a.item < b.item;
    });
    std::size_t nh = sparse.size(), na = 0;
    sort_scoring_inputs(sparse.data(), &nh, nullptr, &na);
    ASSERT_EQ(nh, want.size());  // (no duplicate pairs at this density)
    for (std::size_t q = 0; q < nh; ++q) {
        ASSERT_EQ(sparse[q].user, want[q].user) << q;
        ASSERT_EQ(sparse[q].item, want[q].item) << q;
        ASSERT_EQ(sparse[q].weight, want[q].weight) << q;
    }
    // Empty inputs, and a cancel.
    nh = 0;
    sort_scoring_inputs(nullptr, &nh, nullptr, &na);
    EXPECT_EQ(nh, 0u);
    EXPECT_EQ(na, 0u);
    std::size_t n2 = want.size(), z = 0;
    EXPECT_THROW(sort_scoring_inputs(want.data(), &n2, nullptr, &z, [] { return true; }), Cancelled);
}
