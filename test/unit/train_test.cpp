// train_test.cpp - recsys::train(): hand examples and brute-force agreement.
#include <gtest/gtest.h>
#include <functional>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <thread>

#include "core.hpp"
#include "core_topk.hpp"
#include "test_util.hpp"

using namespace recsys;
using recsys_test::model_nbrs;
using recsys_test::NaiveNeighbor;
using recsys_test::expect_same_model;

namespace {

// The hand example used throughout the tests.
//
//   user  item:weight
//   1     10:1  20:1
//   2     10:2  20:1  30:1
//   3           20:1  30:2
//   4     40:3
//   5     40:1
//   6     40:1
//
// Item columns over users 1..6:
//   10 = (1,2,0,0,0,0)  |10| = sqrt(1+4)   = sqrt(5)
//   20 = (1,1,1,0,0,0)  |20| = sqrt(1+1+1) = sqrt(3)
//   30 = (0,1,2,0,0,0)  |30| = sqrt(1+4)   = sqrt(5)
//   40 = (0,0,0,3,1,1)  |40| = sqrt(9+1+1) = sqrt(11)
// Dot products:
//   10.20 = 1*1 + 2*1 = 3   -> sim = 3/(sqrt5*sqrt3) = 0.7745966...
//   10.30 = 2*1       = 2   -> sim = 2/(sqrt5*sqrt5) = 0.4
//   20.30 = 1*1 + 1*2 = 3   -> sim = 3/(sqrt3*sqrt5) = 0.7745966...
//   40.x  = 0               -> 40 has no neighbours
// Neighbour lists (sim desc, id asc):
//   10: 20 (0.7746), 30 (0.4)
//   20: 10 (0.7746), 30 (0.7746)    <- exact tie, broken by id
//   30: 20 (0.7746), 10 (0.4)
//   40: -
// Distinct users: 10 -> 2 (u1,u2), 20 -> 3, 30 -> 2 (u2,u3), 40 -> 3 (u4..u6)
// popular: 20 (3), 40 (3) [tie, id asc], 10 (2), 30 (2) [tie, id asc].
std::vector<Triplet> hand_cells() {
    return {{1, 10, 1}, {1, 20, 1}, {2, 10, 2}, {2, 20, 1}, {2, 30, 1},
            {3, 20, 1}, {3, 30, 2}, {4, 40, 3}, {5, 40, 1}, {6, 40, 1}};
}

const double kS = 3.0 / (std::sqrt(5.0) * std::sqrt(3.0));  // sim(10,20) = sim(20,30)
const double kT = 2.0 / (std::sqrt(5.0) * std::sqrt(5.0));  // sim(10,30) = 0.4

void expect_nbrs(const Model& m, int32_t item, const std::vector<NaiveNeighbor>& want) {
    const auto got = model_nbrs(m, item);
    ASSERT_EQ(got.size(), want.size()) << "item " << item;
    for (std::size_t k = 0; k < want.size(); ++k) {
        EXPECT_EQ(got[k].id, want[k].id) << "item " << item << " rank " << k;
        EXPECT_DOUBLE_EQ(got[k].sim, want[k].sim) << "item " << item << " rank " << k;
    }
}

// Every item's neighbours in m are nm's: the same ids, and sims bit for bit.
void expect_exact_nbrs(const Model& m, const recsys_test::NaiveModel& nm, uint32_t seed, int k) {
    for (int32_t item : nm.items) {
        const auto got = model_nbrs(m, item);
        const auto& want = nm.nbrs.at(item);
        ASSERT_EQ(got.size(), want.size()) << "seed " << seed << " k " << k;
        for (std::size_t r = 0; r < want.size(); ++r) {
            ASSERT_EQ(got[r].id, want[r].id) << "item " << item << " rank " << r;
            ASSERT_EQ(got[r].sim, want[r].sim) << "item " << item << " rank " << r;
        }
    }
}

void expect_valid_csr(const Model& m) {
    ASSERT_EQ(m.nbr_offsets.size(), m.item_ids.size() + 1);
    EXPECT_EQ(m.nbr_offsets.front(), 0);
    EXPECT_EQ(m.nbr_offsets.back(), m.pairs());
    EXPECT_EQ(m.nbr_ids.size(), m.nbr_sims.size());
    for (std::size_t k = 0; k + 1 < m.nbr_offsets.size(); ++k)
        EXPECT_LE(m.nbr_offsets[k], m.nbr_offsets[k + 1]);
    EXPECT_TRUE(std::is_sorted(m.item_ids.begin(), m.item_ids.end()));
    EXPECT_EQ(std::adjacent_find(m.item_ids.begin(), m.item_ids.end()), m.item_ids.end());
    EXPECT_EQ(m.popular_ids.size(), m.item_ids.size());
    EXPECT_EQ(m.popular_users.size(), m.item_ids.size());
}

}  // namespace

TEST(Train, HandExample) {
    const Model m = train(hand_cells(), TrainOptions{});
    expect_valid_csr(m);
    EXPECT_EQ(m.item_ids, (std::vector<int32_t>{10, 20, 30, 40}));
    EXPECT_EQ(m.n_users, 6);
    EXPECT_EQ(m.n_cells, 10);
    EXPECT_EQ(m.pairs(), 6);
    EXPECT_EQ(m.nbr_offsets, (std::vector<int64_t>{0, 2, 4, 6, 6}));
    expect_nbrs(m, 10, {{20, kS}, {30, kT}});
    expect_nbrs(m, 20, {{10, kS}, {30, kS}});
    expect_nbrs(m, 30, {{20, kS}, {10, kT}});
    expect_nbrs(m, 40, {});
    EXPECT_NEAR(kS, 0.7745966692414834, 1e-15);
    EXPECT_DOUBLE_EQ(kT, 0.4);
    EXPECT_EQ(m.popular_ids, (std::vector<int32_t>{20, 40, 10, 30}));
    EXPECT_EQ(m.popular_users, (std::vector<int32_t>{3, 3, 2, 2}));
    // The exact formula: dot / (norm_i * norm_j) in double.
    EXPECT_EQ(m.nbr_sims[0], 3.0 / (std::sqrt(5.0) * std::sqrt(3.0)));
}

TEST(Train, InputOrderDoesNotMatter) {
    auto cells = hand_cells();
    std::reverse(cells.begin(), cells.end());
    const Model a = train(hand_cells(), TrainOptions{});
    const Model b = train(cells, TrainOptions{});
    EXPECT_EQ(a.item_ids, b.item_ids);
    EXPECT_EQ(a.nbr_offsets, b.nbr_offsets);
    EXPECT_EQ(a.nbr_ids, b.nbr_ids);
    EXPECT_EQ(a.nbr_sims, b.nbr_sims);
    EXPECT_EQ(a.popular_ids, b.popular_ids);
}

TEST(Train, KeepsTopKWithTieByIdAndZeroKeepsAll) {
    // K = 1: 10 -> 20; 20 -> 10 (tie with 30 at kS, 10 < 30); 30 -> 20.
    const Model k1 = train(hand_cells(), TrainOptions{1});
    expect_valid_csr(k1);
    expect_nbrs(k1, 10, {{20, kS}});
    expect_nbrs(k1, 20, {{10, kS}});
    expect_nbrs(k1, 30, {{20, kS}});
    expect_nbrs(k1, 40, {});
    EXPECT_EQ(k1.pairs(), 3);
    // K = 0 keeps every positive neighbour: same as a large K here.
    const Model k0 = train(hand_cells(), TrainOptions{0});
    const Model k9 = train(hand_cells(), TrainOptions{9});
    EXPECT_EQ(k0.pairs(), 6);
    EXPECT_EQ(k0.nbr_ids, k9.nbr_ids);
    EXPECT_EQ(k0.nbr_sims, k9.nbr_sims);
    EXPECT_EQ(k0.nbr_offsets, k9.nbr_offsets);
}

TEST(Train, TieBreakingByNeighbourId) {
    // Item 1 is bought with 9, 5, 7, 3 by users 1..4, each with weight 1:
    // column 1 = (1,1,1,1), |1| = 2; columns 3,5,7,9 have one 1 each, |.| = 1.
    // sim(1, j) = 1 / (2 * 1) = 0.5 for j in {3,5,7,9}: a four-way tie,
    // listed by id ascending.  sim(j, j') = 0 for the singletons (no
    // co-occurrence), so each of 3,5,7,9 has exactly one neighbour: 1.
    const std::vector<Triplet> cells = {{1, 1, 1}, {1, 9, 1}, {2, 1, 1}, {2, 5, 1},
                                        {3, 1, 1}, {3, 7, 1}, {4, 1, 1}, {4, 3, 1}};
    const Model all = train(cells, TrainOptions{});
    expect_nbrs(all, 1, {{3, 0.5}, {5, 0.5}, {7, 0.5}, {9, 0.5}});
    for (int32_t j : {3, 5, 7, 9}) expect_nbrs(all, j, {{1, 0.5}});
    const Model two = train(cells, TrainOptions{2});
    expect_nbrs(two, 1, {{3, 0.5}, {5, 0.5}});
    // popular: 1 has 4 users, the others 1 each -> 1, then 3,5,7,9 by id.
    EXPECT_EQ(all.popular_ids, (std::vector<int32_t>{1, 3, 5, 7, 9}));
    EXPECT_EQ(all.popular_users, (std::vector<int32_t>{4, 1, 1, 1, 1}));
}

TEST(Train, DuplicatesAreSummed) {
    // (2,10) given as 0.5 + 1.5 = 2 and (3,30) as 1 + 1 = 2: the same matrix
    // as the hand example, so the same model; n_cells counts distinct cells.
    std::vector<Triplet> cells = {{1, 10, 1},   {1, 20, 1}, {2, 10, 0.5}, {2, 20, 1},
                                  {2, 30, 1},   {3, 20, 1}, {3, 30, 1},   {4, 40, 3},
                                  {2, 10, 1.5}, {5, 40, 1}, {6, 40, 1},   {3, 30, 1}};
    const Model a = train(cells, TrainOptions{});
    const Model b = train(hand_cells(), TrainOptions{});
    EXPECT_EQ(a.n_cells, 10);
    EXPECT_EQ(a.n_users, 6);
    EXPECT_EQ(a.nbr_ids, b.nbr_ids);
    EXPECT_EQ(a.nbr_sims, b.nbr_sims);
    EXPECT_EQ(a.popular_ids, b.popular_ids);
    EXPECT_EQ(a.popular_users, b.popular_users);  // duplicates count one user
}

TEST(Train, InvalidWeightsThrow) {
    const double bad[] = {0.0, -0.0, -1.0, std::numeric_limits<double>::quiet_NaN(),
                          std::numeric_limits<double>::infinity(),
                          -std::numeric_limits<double>::infinity()};
    for (double w : bad) {
        auto cells = hand_cells();
        cells.push_back(Triplet{7, 10, w});
        EXPECT_THROW(train(cells, TrainOptions{}), InvalidInput) << "weight " << w;
    }
    // The message names the offending cell.
    try {
        train({{1, 2, 1.0}, {3, 4, -2.5}}, TrainOptions{});
        FAIL() << "expected InvalidInput";
    } catch (const InvalidInput& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("user 3"), std::string::npos) << msg;
        EXPECT_NE(msg.find("item 4"), std::string::npos) << msg;
        EXPECT_NE(msg.find("-2.5"), std::string::npos) << msg;
    }
    // The first offending cell, also when the cells are checked in two halves
    // (on two threads) and each half has one.
    for (int threads : {1, 2}) {
        std::vector<Triplet> cells;
        for (int k = 0; k < 1000; ++k) cells.push_back(Triplet{k, k % 7, 1.0});
        cells[300].weight = -3.5;
        cells[800].weight = 0.0;
        try {
            detail::train_threads(cells, TrainOptions{}, {}, threads);
            FAIL() << "expected InvalidInput";
        } catch (const InvalidInput& e) {
            const std::string msg = e.what();
            EXPECT_NE(msg.find("user 300, item 6, weight -3.5"), std::string::npos) << msg;
        }
        cells[300].weight = 1.0;
        EXPECT_THROW(detail::train_threads(cells, TrainOptions{}, {}, threads), InvalidInput);
    }
    // Tiny positive and huge finite weights are fine on their own...
    EXPECT_NO_THROW(train({{1, 1, 1e-300}, {1, 2, 1e150}}, TrainOptions{}));
    // ...but a sum of duplicates that overflows is rejected, not turned into inf.
    EXPECT_THROW(train({{1, 1, 1e308}, {1, 1, 1e308}}, TrainOptions{}), InvalidInput);
}

TEST(Train, NegativeNeighborsThrow) {
    EXPECT_THROW(train(hand_cells(), TrainOptions{-1}), InvalidInput);
    EXPECT_THROW(train({}, TrainOptions{-5}), InvalidInput);
}

TEST(Train, EmptyInput) {
    const Model m = train({}, TrainOptions{});
    EXPECT_EQ(m.n_users, 0);
    EXPECT_EQ(m.n_cells, 0);
    EXPECT_TRUE(m.item_ids.empty());
    EXPECT_EQ(m.nbr_offsets, (std::vector<int64_t>{0}));
    EXPECT_TRUE(m.nbr_ids.empty());
    EXPECT_TRUE(m.nbr_sims.empty());
    EXPECT_TRUE(m.popular_ids.empty());
    EXPECT_TRUE(m.popular_users.empty());
    EXPECT_EQ(neighbors_of(m, 1).size, 0u);
}

TEST(Train, SingleItem) {
    // One item, three users (one with a duplicate): no pair i != j exists.
    const Model m = train({{1, 7, 1}, {2, 7, 2}, {2, 7, 1}, {3, 7, 5}}, TrainOptions{0});
    expect_valid_csr(m);
    EXPECT_EQ(m.item_ids, (std::vector<int32_t>{7}));
    EXPECT_EQ(m.nbr_offsets, (std::vector<int64_t>{0, 0}));
    EXPECT_EQ(m.pairs(), 0);
    EXPECT_EQ(m.n_users, 3);
    EXPECT_EQ(m.n_cells, 3);
    EXPECT_EQ(m.popular_ids, (std::vector<int32_t>{7}));
    EXPECT_EQ(m.popular_users, (std::vector<int32_t>{3}));
}

TEST(Train, NoCooccurrence) {
    // Every user has one item: all dot products are 0, so no neighbours.
    // popular: 5 has users 1,2 (2); -3 has 3 (1); 8 has 4 (1) -> 5, -3, 8.
    const Model m = train({{1, 5, 1}, {2, 5, 1}, {3, -3, 2}, {4, 8, 1}}, TrainOptions{});
    expect_valid_csr(m);
    EXPECT_EQ(m.item_ids, (std::vector<int32_t>{-3, 5, 8}));
    EXPECT_EQ(m.pairs(), 0);
    EXPECT_EQ(m.nbr_offsets, (std::vector<int64_t>{0, 0, 0, 0}));
    EXPECT_EQ(m.popular_ids, (std::vector<int32_t>{5, -3, 8}));
    EXPECT_EQ(m.popular_users, (std::vector<int32_t>{2, 1, 1}));
}

TEST(Train, ExtremeIds) {
    // INT32_MIN and INT32_MAX as user and item ids (radix keys flip the sign).
    // Both users have both items with weight 1: sim = 2 / (sqrt2*sqrt2) = 1.
    const int32_t lo = std::numeric_limits<int32_t>::min(), hi = std::numeric_limits<int32_t>::max();
    const Model m = train({{hi, lo, 1}, {lo, hi, 1}, {lo, lo, 1}, {hi, hi, 1}}, TrainOptions{});
    EXPECT_EQ(m.item_ids, (std::vector<int32_t>{lo, hi}));
    EXPECT_EQ(m.n_users, 2);
    expect_nbrs(m, lo, {{hi, 2.0 / (std::sqrt(2.0) * std::sqrt(2.0))}});
    expect_nbrs(m, hi, {{lo, 2.0 / (std::sqrt(2.0) * std::sqrt(2.0))}});
}

TEST(Train, NeighborsOfUnknownItem) {
    const Model m = train(hand_cells(), TrainOptions{});
    for (int32_t item : {0, 11, 39, 41, -10}) {
        const NeighborList nl = neighbors_of(m, item);
        EXPECT_EQ(nl.size, 0u);
        EXPECT_EQ(nl.ids, nullptr);
    }
}

TEST(Train, CancelThrowsOnNthCall) {
    // Polled in every phase: at least once per 256 items (1500 items) plus
    // the preparation steps.
    recsys_test::expect_cancel_at_every_poll(
        [](const std::vector<Triplet>& c, const TrainOptions& o, const recsys::CancelCheck& k) {
            return train(c, o, k);
        },
        recsys_test::random_cells(7, 400, 1500, 6000), 10);
}

// Brute force: dense cosine over all pairs + full sort, on seeded random data
// with exact-arithmetic weights (ties are common with weights from a 5-value
// set), negative/extreme ids, duplicates, and K = 0, 1, 3, 10, huge.
TEST(Train, AgreesWithBruteForce) {
    struct Config {
        int users, items, cells;
    };
    const Config configs[] = {{5, 4, 12},    {20, 10, 60},   {40, 30, 150},
                              {60, 25, 400}, {10, 80, 120},  {200, 40, 900}};
    const int ks[] = {0, 1, 3, 10, 1000000};
    int compared = 0;
    for (uint32_t seed = 1; seed <= 6; ++seed) {
        for (const Config& c : configs) {
            const auto cells = recsys_test::random_cells(seed * 7919 + c.cells, c.users, c.items,
                                                         c.cells);
            for (int k : ks) {
                const Model m = train(cells, TrainOptions{k});
                const auto nm = recsys_test::naive_train(cells, k);
                expect_valid_csr(m);
                ASSERT_EQ(m.item_ids, nm.items);
                EXPECT_EQ(m.n_users, nm.n_users);
                EXPECT_EQ(m.n_cells, nm.n_cells);
                EXPECT_EQ(m.popular_ids, nm.popular_ids);
                EXPECT_EQ(m.popular_users, nm.popular_users);
                expect_exact_nbrs(m, nm, seed, k);
                if (::testing::Test::HasFatalFailure()) return;
                ++compared;
            }
        }
    }
    EXPECT_EQ(compared, 6 * 6 * 5);
}

// Items with more candidates than train()'s candidate buffer (max(4K, 256)):
// the buffer is cut to its best K several times per item, with exact ties
// (weights from {0.5, ..., 3}) at the threshold.
TEST(Train, AgreesWithBruteForceOnManyCandidates) {
    for (uint32_t seed = 1; seed <= 3; ++seed) {
        const auto cells = recsys_test::random_cells(seed * 131, 100, 600, 12000);
        std::size_t most = 0;  // the most candidates (positive sims) of an item
        for (const auto& kv : recsys_test::naive_train(cells, 0).nbrs) most = std::max(most, kv.second.size());
        for (int k : {1, 3, 10, 100}) {
            EXPECT_GT(most, std::max<std::size_t>(4 * static_cast<std::size_t>(k), 256));  // the buffer is cut
            const Model m = train(cells, TrainOptions{k});
            const auto nm = recsys_test::naive_train(cells, k);
            ASSERT_EQ(m.item_ids, nm.items);
            expect_exact_nbrs(m, nm, seed, k);
            if (::testing::Test::HasFatalFailure()) return;
        }
    }
}

// The candidate buffer's threshold comes from a histogram of the scores'
// top bits (SimWorker::kth_bound): the bucket where the count from the
// highest reaches K, or the exact K-th score when that lies 16 octaves or
// more below the highest.  A hub item with one co-user per other item j,
// the user's weight on the hub a(j): sim(hub, j) = a(j) / |hub|.  Spread
// over 100 octaves (the exact fallback, in the buffer's cuts for K >= 100
// and in the final selection), over a few (the histogram), or all within
// one bucket (nothing dropped by the threshold: the best K by id); each
// value shared by 20 or more items (ties at the threshold).  With 20,000
// isolated items more, the hub is ranked through the touched list instead
// of the sieve.  The expected lists are computed by hand (the brute force
// is quadratic in the items).
TEST(Train, AgreesWithBruteForceWhenScoresSpanManyOctaves) {
    const int n = 2000;
    const std::function<double(int)> spreads[] = {
        [](int j) { return std::ldexp(1.0, -(j % 100)); },
        [](int j) { return std::ldexp(1.0, -(j % 5)); },
        [](int j) { return 1.0 + std::ldexp(static_cast<double>(j % 7), -20); },
    };
    for (const auto& a : spreads) {
        for (int isolated : {0, 20000}) {
            std::vector<Triplet> cells;
            for (int j = 1; j <= n; ++j) {
                cells.push_back({j, 0, a(j)});      // user j: the hub
                cells.push_back({j, j, 1.0});       // and item j
            }
            for (int q = 0; q < isolated; ++q) cells.push_back({n + 1 + q, n + 1 + q, 1.0});
            // By hand: |hub| = sqrt(sum of a(j)^2, users ascending), as
            // train() sums it; sim(hub, j) = (a(j) * 1) / (|hub| * 1).
            double sq = 0;
            for (int j = 1; j <= n; ++j) sq += a(j) * a(j);
            const double hub = std::sqrt(sq);
            std::vector<recsys_test::NaiveNeighbor> all;
            for (int j = 1; j <= n; ++j) all.push_back({j, a(j) / hub});
            std::sort(all.begin(), all.end(), [](const auto& x, const auto& y) {
                return x.sim != y.sim ? x.sim > y.sim : x.id < y.id;
            });
            for (int k : {1, 10, 100, 400}) {
                const Model m = train(cells, TrainOptions{k});
                ASSERT_EQ(m.item_ids.size(), static_cast<std::size_t>(n + 1 + isolated));
                const auto got = model_nbrs(m, 0);
                ASSERT_EQ(got.size(), static_cast<std::size_t>(k));
                for (int r = 0; r < k; ++r) {
                    ASSERT_EQ(got[r].id, all[r].id) << "k " << k << " rank " << r;
                    ASSERT_EQ(got[r].sim, all[r].sim) << "k " << k << " rank " << r;
                }
                for (int j : {1, 2, 99, 100, n}) {
                    const auto nj = model_nbrs(m, j);
                    ASSERT_EQ(nj.size(), 1u);
                    EXPECT_EQ(nj[0].id, 0);
                    EXPECT_EQ(nj[0].sim, (1.0 * a(j)) / (1.0 * hub));
                }
                EXPECT_TRUE(model_nbrs(m, n + 1 + isolated / 2).empty());
            }
        }
    }
}

// The similarity pass reads the rows packed (8 bytes an entry) when every
// weight is a float, as in the tests above; otherwise the wide rows.  Weights
// that are not floats (1.1 x, + 0.1, or a single 0.3 among float ones): the
// same agreement, bit for bit -- train() and the naive reference add the same
// products in the same order (users ascending), whatever the weights.
TEST(Train, AgreesWithBruteForceWhenWeightsAreNotFloats) {
    auto not_float = [](double w) { return static_cast<double>(static_cast<float>(w)) != w; };
    for (uint32_t seed = 1; seed <= 3; ++seed) {
        const auto base = recsys_test::random_cells(seed * 577, 100, 600, 12000);
        std::vector<std::vector<Triplet>> variants(3, base);
        for (Triplet& t : variants[0]) t.weight *= 1.1;
        for (Triplet& t : variants[1]) t.weight += 0.1;
        variants[2][base.size() / 2].weight = 0.3;
        ASSERT_TRUE(not_float(variants[2][base.size() / 2].weight));
        for (const auto& cells : variants) {
            ASSERT_TRUE(std::any_of(cells.begin(), cells.end(), [&](const Triplet& t) { return not_float(t.weight); }));
            for (int k : {0, 3, 50}) {
                const Model m = train(cells, TrainOptions{k});
                const auto nm = recsys_test::naive_train(cells, k);
                ASSERT_EQ(m.item_ids, nm.items);
                expect_exact_nbrs(m, nm, seed, k);
                if (::testing::Test::HasFatalFailure()) return;
            }
        }
    }
}

TEST(Train, RandomInputHasTies) {
    // Make sure the brute-force comparison above really exercised ties.
    const auto cells = recsys_test::random_cells(3, 60, 25, 400);
    const Model m = train(cells, TrainOptions{0});
    int ties = 0;
    for (std::size_t i = 0; i + 1 < m.nbr_offsets.size(); ++i)
        for (int64_t p = m.nbr_offsets[i]; p + 1 < m.nbr_offsets[i + 1]; ++p)
            ties += m.nbr_sims[p] == m.nbr_sims[p + 1];
    EXPECT_GT(ties, 0);
}

// The similarity pass may use a second thread (detail::train_threads; train()
// picks automatically).  Results must be identical to the single-threaded run.
TEST(Train, TwoThreadsGiveIdenticalResults) {
    struct Config {
        int users, items, cells;
    };
    const Config configs[] = {{5, 4, 12}, {60, 25, 400}, {400, 1500, 6000}, {3000, 500, 40000}};
    for (const Config& c : configs) {
        // real-valued weights here: identical results need identical arithmetic
        auto cells = recsys_test::random_cells(c.cells, c.users, c.items, c.cells);
        for (std::size_t k = 0; k < cells.size(); k += 3) cells[k].weight *= 1.37;
        for (int nb : {0, 1, 5, 50}) {
            const Model one = detail::train_threads(cells, TrainOptions{nb}, {}, 1);
            const Model two = detail::train_threads(cells, TrainOptions{nb}, {}, 2);
            const Model dflt = train(cells, TrainOptions{nb});
            expect_same_model(one, two);
            expect_same_model(one, dflt);
        }
    }
    const Model e1 = detail::train_threads({}, TrainOptions{}, {}, 2);
    EXPECT_TRUE(e1.item_ids.empty());
    EXPECT_EQ(e1.nbr_offsets, (std::vector<int64_t>{0}));
}

// The same for every weighting and similarity: the CSR, the CSC and the
// similarity pass all split their work between the threads.
TEST(Train, TwoThreadsGiveIdenticalResultsForEverySetting) {
    auto cells = recsys_test::random_cells(40000, 3000, 500, 40000);
    for (std::size_t k = 0; k < cells.size(); k += 3) cells[k].weight *= 1.37;
    struct Setting {
        recsys::Weighting w;
        recsys::Similarity s;
        double shrink;
    };
    const Setting settings[] = {
        {recsys::Weighting::weights, recsys::Similarity::cosine, 10},
        {recsys::Weighting::binary, recsys::Similarity::cosine, 0},
        {recsys::Weighting::tfidf, recsys::Similarity::cosine, 200},
        {recsys::Weighting::bm25, recsys::Similarity::cosine, 0},
        {recsys::Weighting::weights, recsys::Similarity::asymmetric_cosine, 0},
        {recsys::Weighting::weights, recsys::Similarity::rp3beta, 0},
        {recsys::Weighting::binary, recsys::Similarity::jaccard, 1},
    };
    for (const Setting& st : settings)
        for (int nb : {0, 5}) {
            TrainOptions o{nb};
            o.weighting = st.w;
            o.similarity = st.s;
            o.shrink = st.shrink;
            const Model one = detail::train_threads(cells, o, {}, 1);
            const Model two = detail::train_threads(cells, o, {}, 2);
            expect_same_model(one, two);
            EXPECT_GT(one.pairs(), 0);
        }
}

TEST(Train, TwoThreadsCancelOnlyFromCallingThread) {
    const auto cells = recsys_test::random_cells(8, 2000, 1500, 30000);
    const std::thread::id caller = std::this_thread::get_id();
    bool foreign = false;
    int calls = 0;
    const Model full = detail::train_threads(cells, TrainOptions{}, [&] {
        foreign = foreign || std::this_thread::get_id() != caller;
        ++calls;
        return false;
    }, 1);
    EXPECT_FALSE(foreign);
    int thrown = 0;
    // A check that turns (and stays) true from its Nth call on.  Up to the
    // similarity pass the polls are deterministic, so small N must throw;
    // later ones throw unless that run happened to need fewer polls, in which
    // case the result must be complete and identical.
    for (int n = 1; n <= calls + 2; ++n) {
        int seen = 0;
        try {
            const Model m = detail::train_threads(cells, TrainOptions{}, [&] {
                foreign = foreign || std::this_thread::get_id() != caller;
                return ++seen >= n;
            }, 2);
            EXPECT_GT(n, 10) << "prep-phase cancel must throw";
            expect_same_model(m, full);
        } catch (const Cancelled&) {
            ++thrown;
        }
    }
    EXPECT_FALSE(foreign) << "the CancelCheck was called from a worker thread";
    EXPECT_GE(thrown, 10);
    std::printf("[ threads  ] %d of %d sticky cancels threw (single-thread polls: %d)\n", thrown,
                calls + 2, calls);
}

// train() builds its CSR in one of two ways: lookup tables and a radix sort by
// user when the ids are compact (as the glue's dense indices always are),
// two radix sorts of (id, cell index) otherwise.  The same cells with their
// ids spread out by a monotone map (so the dense order is the same) must give
// the same model, bit for bit, whatever the number of radix passes by user
// (1 up to 2^10 users, 2 up to 2^20, 3 beyond), with duplicate cells (summed
// in input order), rows longer than 32 (sorted by std::stable_sort) and
// settings that read the rows in item order (rp3beta's per-user sums).
// The compact path also runs on one and on two threads (tables side by side,
// each radix pass on two halves of the cells), and without duplicates (the
// merge then has nothing to do).
TEST(Train, CompactAndSparseIdsGiveTheSameModel) {
    struct Config {
        int users, items, cells;
    };
    const Config configs[] = {{7, 5, 30}, {900, 300, 20000}, {30000, 2000, 150000},
                              {(1 << 20) + 70, 3000, (1 << 20) + 40000}};
    std::mt19937 rng(11);
    for (const Config& c : configs) {
        std::vector<Triplet> dense;
        // every user gets one cell, so the count of users (and of passes) is sure
        for (int u = 0; u < c.users; ++u)
            dense.push_back(Triplet{u, static_cast<int32_t>(rng() % c.items), 1.0 + (rng() % 7) * 0.37});
        while (static_cast<int>(dense.size()) < c.cells) {
            // a few heavy users (rows past 32 entries) and duplicates
            const int32_t u = rng() % 4 == 0 ? static_cast<int32_t>(rng() % 5) : static_cast<int32_t>(rng() % c.users);
            const double x = std::uniform_real_distribution<double>(0, 1)(rng);
            dense.push_back(Triplet{u, static_cast<int32_t>(x * x * c.items), 0.5 + (rng() % 9) * 0.73});
        }
        std::shuffle(dense.begin(), dense.end(), rng);
        // ids spread over the int32 range, order kept: forces the radix path
        auto spread = [](int32_t id) { return static_cast<int32_t>(INT32_MIN + 2001LL * id + 17); };
        std::vector<Triplet> sparse = dense;
        for (Triplet& t : sparse) {
            t.user = spread(t.user);
            t.item = spread(t.item);
        }
        TrainOptions plain{20};
        TrainOptions rp3{0};
        rp3.weighting = Weighting::binary;
        rp3.similarity = Similarity::rp3beta;
        TrainOptions bm25{10};
        bm25.weighting = Weighting::bm25;
        bm25.shrink = 5;
        // the same cells without duplicates (first of each (user, item) kept)
        std::vector<Triplet> distinct = dense;
        std::stable_sort(distinct.begin(), distinct.end(), [](const Triplet& x, const Triplet& y) {
            return x.user != y.user ? x.user < y.user : x.item < y.item;
        });
        distinct.erase(std::unique(distinct.begin(), distinct.end(),
                                   [](const Triplet& x, const Triplet& y) {
                                       return x.user == y.user && x.item == y.item;
                                   }),
                       distinct.end());
        std::shuffle(distinct.begin(), distinct.end(), rng);
        std::vector<Triplet> distinct_sparse = distinct;
        for (Triplet& t : distinct_sparse) {
            t.user = spread(t.user);
            t.item = spread(t.item);
        }
        auto unspread = [](Model b) {
            for (int32_t& id : b.item_ids) id = static_cast<int32_t>((static_cast<int64_t>(id) - INT32_MIN - 17) / 2001);
            for (int32_t& id : b.nbr_ids) id = static_cast<int32_t>((static_cast<int64_t>(id) - INT32_MIN - 17) / 2001);
            for (int32_t& id : b.popular_ids) id = static_cast<int32_t>((static_cast<int64_t>(id) - INT32_MIN - 17) / 2001);
            return b;
        };
        for (const TrainOptions& o : {plain, rp3, bm25}) {
            const Model a = train(dense, o);
            const Model b = unspread(train(sparse, o));
            ASSERT_EQ(a.item_ids.size(), b.item_ids.size());
            expect_same_model(a, b);
            expect_same_model(a, detail::train_threads(dense, o, {}, 1));
            expect_same_model(a, detail::train_threads(dense, o, {}, 2));
            EXPECT_GT(a.pairs(), 0);
            EXPECT_LT(a.n_cells, c.cells);  // duplicates were merged
        }
        const Model a = train(distinct, plain);
        expect_same_model(a, unspread(train(distinct_sparse, plain)));
        expect_same_model(a, detail::train_threads(distinct, plain, {}, 1));
        expect_same_model(a, detail::train_threads(distinct, plain, {}, 2));
        EXPECT_EQ(a.n_cells, static_cast<int64_t>(distinct.size()));
    }
}

// train() and SteppedTraining on the caller's buffer, borrowed as scratch
// (no copy of the input): the same model as from an owned vector, on both
// builds of the matrix (ids spanning the int32 range: the radix sort;
// compact ids: the lookup tables), on one thread and two, and the same
// error for a bad cell.  The stepped training's buffer is overwritten once
// its constructor has returned: the pass must not read it.
TEST(Train, BorrowedInputGivesTheSameModel) {
    std::vector<std::vector<Triplet>> logs;
    logs.push_back(recsys_test::random_cells(11, 800, 300, 9000));  // sparse ids: radix
    std::mt19937 rng(12);
    std::vector<Triplet> compact;
    for (int k = 0; k < 40000; ++k)
        compact.push_back(Triplet{static_cast<int32_t>(rng() % 3000), static_cast<int32_t>(rng() % 500),
                                  0.5 * (1 + rng() % 6)});
    logs.push_back(compact);
    for (const auto& cells : logs) {
        for (int nb : {0, 20}) {
            const TrainOptions o{nb};
            for (int threads : {1, 2}) {
                std::vector<Triplet> scratch = cells;
                expect_same_model(detail::train_threads(scratch.data(), scratch.size(), o, {}, threads),
                                  detail::train_threads(cells, o, {}, threads));
            }
            const Model want = train(cells, o);
            std::vector<Triplet> scratch = cells;
            expect_same_model(train(scratch.data(), scratch.size(), o), want);
            scratch = cells;
            SteppedTraining t(scratch.data(), scratch.size(), o, {});
            std::fill(scratch.begin(), scratch.end(), Triplet{-1, -1, -1.0});
            t.start_helper();
            while (t.step({})) {
            }
            expect_same_model(t.finish({}), want);
        }
    }
    std::vector<Triplet> bad = logs[1];
    bad[123].weight = std::nan("");
    std::string owned_error, borrowed_error;
    try {
        train(bad, TrainOptions{});
    } catch (const recsys::InvalidInput& e) {
        owned_error = e.what();
    }
    try {
        train(bad.data(), bad.size(), TrainOptions{});
    } catch (const recsys::InvalidInput& e) {
        borrowed_error = e.what();
    }
    EXPECT_FALSE(owned_error.empty());
    EXPECT_EQ(borrowed_error, owned_error);
}

// SteppedTraining: the model a caller stores while the pass runs is train()'s,
// item by item as ready() releases them (checked as they come, with the
// helper thread and without), and finish() returns it whole.
TEST(SteppedTraining, StreamsTrainsModelItemByItem) {
    struct Config {
        int users, items, cells;
    };
    const Config configs[] = {{5, 4, 12}, {60, 25, 400}, {3000, 500, 40000}};
    for (const Config& c : configs) {
        auto cells = recsys_test::random_cells(c.cells, c.users, c.items, c.cells);
        for (std::size_t k = 0; k < cells.size(); k += 3) cells[k].weight *= 1.37;
        for (int nb : {0, 5}) {
            for (bool helper : {false, true}) {
                TrainOptions o{nb};
                o.similarity = nb == 5 ? recsys::Similarity::asymmetric_cosine : recsys::Similarity::cosine;
                const Model want = train(cells, o);
                SteppedTraining t(cells, o, {});
                EXPECT_EQ(t.model().item_ids, want.item_ids);
                EXPECT_EQ(t.model().popular_ids, want.popular_ids);
                EXPECT_EQ(t.model().popular_users, want.popular_users);
                EXPECT_EQ(t.items(), want.item_ids.size());
                if (helper) t.start_helper();
                std::size_t seen = 0, steps = 0;
                for (;;) {
                    const std::size_t r = t.ready();
                    ASSERT_LE(r, t.items());
                    for (; seen < r; ++seen) {
                        const NeighborList l = t.neighbours(seen);
                        const int64_t lo = want.nbr_offsets[seen], hi = want.nbr_offsets[seen + 1];
                        ASSERT_EQ(l.size, static_cast<std::size_t>(hi - lo)) << "item " << seen;
                        for (int64_t q = lo; q < hi; ++q) {
                            EXPECT_EQ(l.ids[q - lo], want.nbr_ids[q]);
                            EXPECT_EQ(l.sims[q - lo], want.nbr_sims[q]);  // bit for bit
                        }
                    }
                    if (seen == t.items()) break;
                    if (t.step({}))
                        ++steps;
                    else
                        std::this_thread::yield();
                }
                if (!helper) {
                    EXPECT_EQ(steps, (t.items() + 15) / 16);
                }
                expect_same_model(t.finish({}), want);
            }
        }
    }
    SteppedTraining empty({}, TrainOptions{}, {});
    EXPECT_EQ(empty.items(), 0u);
    EXPECT_EQ(empty.ready(), 0u);
    EXPECT_FALSE(empty.step({}));
    const Model e = empty.finish({});
    EXPECT_TRUE(e.item_ids.empty());
    EXPECT_EQ(e.nbr_offsets, (std::vector<int64_t>{0}));
}

// A caller that stops (its cancel fires in step(), or it just destroys the
// object mid-pass) leaves no thread behind: the destructor joins the helper.
TEST(SteppedTraining, StopsMidPass) {
    const auto cells = recsys_test::random_cells(9, 3000, 800, 60000);
    {
        SteppedTraining t(cells, TrainOptions{}, {});
        t.start_helper();
        EXPECT_TRUE(t.step({}));
    }  // destroyed with blocks left: the helper stops after its block
    SteppedTraining t(cells, TrainOptions{}, {});
    t.start_helper();
    EXPECT_THROW(t.step([] { return true; }), recsys::Cancelled);
    EXPECT_THROW(t.finish([] { return true; }), recsys::Cancelled);
    // What finish() did not compute is still there to compute.
    const Model want = train(cells, TrainOptions{});
    expect_same_model(t.finish({}), want);
}
