// eigen_test.cpp - recsys::train_eigen() (Eigen sparse products) against
// recsys::train() (hand-written CSR/CSC): the same model from two
// independent implementations.
//
// train_eigen sums (w_ui/|w_i|)(w_uj/|w_j|) where train divides the dot
// product by |w_i||w_j|, so similarities may differ in the last bits.  The
// comparison therefore requires: identical ids, counts, offsets and
// popularity; similarities equal within a relative 1e-12 rank by rank; and at
// every rank where the neighbour ids differ, a neighbour whose true
// similarity (from train with K = 0) is within 1e-12 of the one train put
// there -- i.e. swaps only among (near-)ties, including at the top-K cut.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <set>
#include <string>

#include "core.hpp"
#include "core_topk.hpp"
#include "test_util.hpp"

using namespace recsys;
using recsys_test::model_nbrs;
using recsys_test::NaiveNeighbor;

namespace {

constexpr double kRel = 1e-12;

bool close(double a, double b) {
    return std::fabs(a - b) <= kRel * std::max(std::fabs(a), std::fabs(b));
}

// The hand example of train_test.cpp (see there for the arithmetic).
std::vector<Triplet> hand_cells() {
    return {{1, 10, 1}, {1, 20, 1}, {2, 10, 2}, {2, 20, 1}, {2, 30, 1},
            {3, 20, 1}, {3, 30, 2}, {4, 40, 3}, {5, 40, 1}, {6, 40, 1}};
}

const double kS = 3.0 / (std::sqrt(5.0) * std::sqrt(3.0));  // sim(10,20) = sim(20,30)
const double kT = 0.4;                                      // sim(10,30)

struct AgreeStats {
    long long sims = 0, bit_identical = 0, id_swaps = 0;
    double max_rel = 0;
};

// `e` (train_eigen) against `t` (train, same K) and `all` (train, K = 0).
void expect_agree(const Model& e, const Model& t, const Model& all, const std::string& what,
                  AgreeStats* stats = nullptr) {
    SCOPED_TRACE(what);
    ASSERT_EQ(e.item_ids, t.item_ids);
    EXPECT_EQ(e.n_users, t.n_users);
    EXPECT_EQ(e.n_cells, t.n_cells);
    EXPECT_EQ(e.popular_ids, t.popular_ids);
    EXPECT_EQ(e.popular_users, t.popular_users);
    ASSERT_EQ(e.nbr_offsets, t.nbr_offsets);
    ASSERT_EQ(e.nbr_ids.size(), t.nbr_ids.size());
    ASSERT_EQ(e.nbr_sims.size(), t.nbr_sims.size());
    for (std::size_t k = 0; k < e.item_ids.size(); ++k) {
        const int32_t item = e.item_ids[k];
        std::map<int32_t, double> truth;
        for (const NaiveNeighbor& nb : model_nbrs(all, item)) truth[nb.id] = nb.sim;
        std::set<int32_t> seen;
        for (int64_t p = e.nbr_offsets[k]; p < e.nbr_offsets[k + 1]; ++p) {
            const int32_t id = e.nbr_ids[static_cast<std::size_t>(p)];
            const double es = e.nbr_sims[static_cast<std::size_t>(p)];
            const double ts = t.nbr_sims[static_cast<std::size_t>(p)];
            ASSERT_TRUE(es > 0 && std::isfinite(es)) << "item " << item << " sim " << es;
            ASSERT_TRUE(seen.insert(id).second) << "item " << item << " repeats " << id;
            ASSERT_NE(id, item);
            // sorted by the core's one ranking rule
            if (p > e.nbr_offsets[k]) {
                const detail::Scored prev{e.nbr_sims[static_cast<std::size_t>(p - 1)],
                                          e.nbr_ids[static_cast<std::size_t>(p - 1)]};
                ASSERT_TRUE(detail::ranks_before(prev, detail::Scored{es, id}))
                    << "item " << item << " rank " << p - e.nbr_offsets[k];
            }
            ASSERT_TRUE(close(es, ts)) << "item " << item << " rank " << p - e.nbr_offsets[k]
                                       << ": eigen " << es << " train " << ts;
            const auto it = truth.find(id);
            ASSERT_NE(it, truth.end()) << "item " << item << ": " << id << " is no neighbour";
            ASSERT_TRUE(close(es, it->second)) << "item " << item << " nbr " << id;
            if (stats) {
                ++stats->sims;
                stats->bit_identical += es == ts;
                stats->id_swaps += id != t.nbr_ids[static_cast<std::size_t>(p)];
                if (es != ts)
                    stats->max_rel = std::max(stats->max_rel, std::fabs(es - ts) / std::fabs(ts));
            }
        }
    }
}

void expect_agree_all_k(const std::vector<Triplet>& cells, const std::vector<int>& ks,
                        const std::string& what, AgreeStats* stats = nullptr,
                        TrainOptions opt = TrainOptions{}) {
    opt.neighbors = 0;
    const Model all = train(cells, opt);
    for (int k : ks) {
        opt.neighbors = k;
        const Model t = train(cells, opt);
        const Model e = train_eigen(cells, opt);
        expect_agree(e, t, all, what + " k=" + std::to_string(k), stats);
    }
}

void expect_nbrs_near(const Model& m, int32_t item, const std::vector<NaiveNeighbor>& want) {
    const auto got = model_nbrs(m, item);
    ASSERT_EQ(got.size(), want.size()) << "item " << item;
    for (std::size_t k = 0; k < want.size(); ++k) {
        EXPECT_EQ(got[k].id, want[k].id) << "item " << item << " rank " << k;
        EXPECT_NEAR(got[k].sim, want[k].sim, 1e-15) << "item " << item << " rank " << k;
    }
}

}  // namespace

TEST(TrainEigen, HandExample) {
    const Model m = train_eigen(hand_cells(), TrainOptions{});
    EXPECT_EQ(m.item_ids, (std::vector<int32_t>{10, 20, 30, 40}));
    EXPECT_EQ(m.n_users, 6);
    EXPECT_EQ(m.n_cells, 10);
    EXPECT_EQ(m.nbr_offsets, (std::vector<int64_t>{0, 2, 4, 6, 6}));
    expect_nbrs_near(m, 10, {{20, kS}, {30, kT}});
    expect_nbrs_near(m, 20, {{10, kS}, {30, kS}});  // an exact tie here too
    expect_nbrs_near(m, 30, {{20, kS}, {10, kT}});
    expect_nbrs_near(m, 40, {});
    EXPECT_EQ(m.popular_ids, (std::vector<int32_t>{20, 40, 10, 30}));
    EXPECT_EQ(m.popular_users, (std::vector<int32_t>{3, 3, 2, 2}));
    expect_agree_all_k(hand_cells(), {0, 1, 2, 3, 9}, "hand");
}

TEST(TrainEigen, HandTopOneBreaksTieById) {
    const Model k1 = train_eigen(hand_cells(), TrainOptions{1});
    expect_nbrs_near(k1, 10, {{20, kS}});
    expect_nbrs_near(k1, 20, {{10, kS}});  // 10 and 30 tie; 10 < 30
    expect_nbrs_near(k1, 30, {{20, kS}});
    expect_nbrs_near(k1, 40, {});
}

TEST(TrainEigen, OtherHandExamples) {
    // Four-way tie at exactly 0.5 (train_test.cpp TieBreakingByNeighbourId).
    const std::vector<Triplet> ties = {{1, 1, 1}, {1, 9, 1}, {2, 1, 1}, {2, 5, 1},
                                       {3, 1, 1}, {3, 7, 1}, {4, 1, 1}, {4, 3, 1}};
    const Model all = train_eigen(ties, TrainOptions{});
    expect_nbrs_near(all, 1, {{3, 0.5}, {5, 0.5}, {7, 0.5}, {9, 0.5}});
    const Model two = train_eigen(ties, TrainOptions{2});
    expect_nbrs_near(two, 1, {{3, 0.5}, {5, 0.5}});
    EXPECT_EQ(all.popular_ids, (std::vector<int32_t>{1, 3, 5, 7, 9}));
    expect_agree_all_k(ties, {0, 1, 2, 3}, "ties");

    // Duplicates summed into the hand example's matrix.
    const std::vector<Triplet> dups = {{1, 10, 1},   {1, 20, 1}, {2, 10, 0.5}, {2, 20, 1},
                                       {2, 30, 1},   {3, 20, 1}, {3, 30, 1},   {4, 40, 3},
                                       {2, 10, 1.5}, {5, 40, 1}, {6, 40, 1},   {3, 30, 1}};
    const Model d = train_eigen(dups, TrainOptions{});
    const Model h = train_eigen(hand_cells(), TrainOptions{});
    EXPECT_EQ(d.n_cells, 10);
    EXPECT_EQ(d.nbr_ids, h.nbr_ids);
    EXPECT_EQ(d.nbr_sims, h.nbr_sims);
    EXPECT_EQ(d.popular_users, h.popular_users);
    expect_agree_all_k(dups, {0, 1}, "dups");

    // One item; no co-occurrence; extreme ids.
    const std::vector<Triplet> single = {{1, 7, 1}, {2, 7, 2}, {2, 7, 1}, {3, 7, 5}};
    const Model s = train_eigen(single, TrainOptions{0});
    EXPECT_EQ(s.nbr_offsets, (std::vector<int64_t>{0, 0}));
    EXPECT_EQ(s.n_cells, 3);
    expect_agree_all_k(single, {0, 1}, "single");
    const std::vector<Triplet> none = {{1, 5, 1}, {2, 5, 1}, {3, -3, 2}, {4, 8, 1}};
    EXPECT_EQ(train_eigen(none, TrainOptions{}).pairs(), 0);
    expect_agree_all_k(none, {0, 1}, "none");
    const int32_t lo = std::numeric_limits<int32_t>::min(), hi = std::numeric_limits<int32_t>::max();
    const std::vector<Triplet> extreme = {{hi, lo, 1}, {lo, hi, 1}, {lo, lo, 1}, {hi, hi, 1}};
    const Model x = train_eigen(extreme, TrainOptions{});
    EXPECT_EQ(x.item_ids, (std::vector<int32_t>{lo, hi}));
    expect_nbrs_near(x, lo, {{hi, 1.0}});
    expect_agree_all_k(extreme, {0, 1}, "extreme");
}

// 20 seeded random inputs of various shapes (several with more than one
// 256-item block), exact-arithmetic weights (many exact ties in train) or
// real-valued ones, K = 0, 1, 5, 50.
TEST(TrainEigen, AgreesWithTrainOnRandomInputs) {
    struct Config {
        int users, items, cells;
    };
    const Config configs[] = {{5, 4, 12},      {20, 10, 60},    {40, 30, 150},
                              {60, 25, 400},   {10, 80, 120},   {200, 40, 900},
                              {400, 1500, 6000}, {3000, 500, 40000}, {50, 700, 3000},
                              {1000, 300, 20000}};
    AgreeStats stats;
    int inputs = 0;
    for (uint32_t seed = 1; seed <= 2; ++seed) {
        for (const Config& c : configs) {
            auto cells = recsys_test::random_cells(seed * 7919 + static_cast<uint32_t>(c.cells),
                                                   c.users, c.items, c.cells);
            if (seed == 2)  // real-valued weights: sims rarely exact in either method
                for (std::size_t k = 0; k < cells.size(); k += 3) cells[k].weight *= 1.37;
            expect_agree_all_k(cells, {0, 1, 5, 50},
                               "seed " + std::to_string(seed) + " items " + std::to_string(c.items),
                               &stats);
            ++inputs;
        }
    }
    EXPECT_EQ(inputs, 20);
    EXPECT_GT(stats.sims, 100000);
    std::printf("[ eigen    ] %lld sims compared: %lld bit-identical, max rel diff %.3g, "
                "%lld id swaps among near-ties\n",
                stats.sims, stats.bit_identical, stats.max_rel, stats.id_swaps);
}

// Every weighting x similarity (and shrink, alpha, beta, k1, b away from
// their defaults) on seeded random inputs: train() (core_similarity hooks in
// the CSR/CSC pipeline) and train_eigen() (matrix expressions) must agree as
// above, similarities within a relative 1e-12.
TEST(TrainEigen, AgreesWithTrainForEverySetting) {
    struct Setting {
        const char* name;
        TrainOptions opt;
    };
    std::vector<Setting> settings;
    auto add = [&](const char* name, Weighting w, Similarity s, auto tweak) {
        TrainOptions o;
        o.weighting = w;
        o.similarity = s;
        tweak(o);
        settings.push_back(Setting{name, o});
    };
    auto none = [](TrainOptions&) {};
    for (Weighting w : {Weighting::weights, Weighting::binary, Weighting::tfidf, Weighting::bm25}) {
        add("cosine", w, Similarity::cosine, none);
        add("cosine shrink 10", w, Similarity::cosine, [](TrainOptions& o) { o.shrink = 10; });
        add("asymmetric 0.2 shrink 3", w, Similarity::asymmetric_cosine, [](TrainOptions& o) {
            o.alpha = 0.2;
            o.shrink = 3;
        });
        add("asymmetric 0.9", w, Similarity::asymmetric_cosine, [](TrainOptions& o) { o.alpha = 0.9; });
        add("rp3beta", w, Similarity::rp3beta, none);
        if (w == Weighting::binary) {
            add("asymmetric 0.5", w, Similarity::asymmetric_cosine, none);
            add("rp3beta 1.5 0", w, Similarity::rp3beta, [](TrainOptions& o) {
                o.alpha = 1.5;
                o.beta = 0;
            });
        }
        add("rp3beta 0.6 0.3", w, Similarity::rp3beta, [](TrainOptions& o) {
            o.alpha = 0.6;
            o.beta = 0.3;
        });
    }
    for (Weighting w : {Weighting::weights, Weighting::binary}) {
        add("jaccard", w, Similarity::jaccard, none);
        add("jaccard shrink 200", w, Similarity::jaccard, [](TrainOptions& o) { o.shrink = 200; });
    }
    add("bm25 k1 100 b 0.8", Weighting::bm25, Similarity::cosine, [](TrainOptions& o) {
        o.k1 = 100;
        o.b = 0.8;
    });
    add("bm25 k1 0.5 b 0 asym", Weighting::bm25, Similarity::asymmetric_cosine, [](TrainOptions& o) {
        o.k1 = 0.5;
        o.b = 0;
        o.alpha = 0.7;
    });
    add("tfidf shrink 200 (the issue's best)", Weighting::tfidf, Similarity::cosine,
        [](TrainOptions& o) { o.shrink = 200; });

    struct Config {
        int users, items, cells;
    };
    const Config configs[] = {{5, 4, 12}, {40, 30, 150}, {200, 40, 900}, {10, 80, 120}, {300, 300, 3000}};
    AgreeStats stats;
    int runs = 0;
    for (const Setting& st : settings) {
        for (uint32_t seed = 1; seed <= 2; ++seed) {
            for (const Config& c : configs) {
                auto cells = recsys_test::random_cells(seed * 104729 + static_cast<uint32_t>(c.cells),
                                                       c.users, c.items, c.cells);
                if (seed == 2)
                    for (std::size_t k = 0; k < cells.size(); k += 3) cells[k].weight *= 1.37;
                expect_agree_all_k(cells, {0, 1, 50},
                                   std::string(st.name) + " " + weighting_name(st.opt.weighting) +
                                       " seed " + std::to_string(seed) + " items " +
                                       std::to_string(c.items),
                                   &stats, st.opt);
                ++runs;
            }
        }
    }
    EXPECT_EQ(runs, static_cast<int>(settings.size()) * 2 * 5);
    EXPECT_GT(stats.sims, 50000);
    std::printf("[ settings ] %zu settings, %lld sims compared: %lld bit-identical, max rel diff "
                "%.3g, %lld id swaps among near-ties\n",
                settings.size(), stats.sims, stats.bit_identical, stats.max_rel, stats.id_swaps);
}

TEST(TrainEigen, InvalidInputThrows) {
    const double bad[] = {0.0, -0.0, -1.0, std::numeric_limits<double>::quiet_NaN(),
                          std::numeric_limits<double>::infinity(),
                          -std::numeric_limits<double>::infinity()};
    for (double w : bad) {
        auto cells = hand_cells();
        cells.push_back(Triplet{7, 10, w});
        EXPECT_THROW(train_eigen(cells, TrainOptions{}), InvalidInput) << "weight " << w;
    }
    try {
        train_eigen({{1, 2, 1.0}, {3, 4, -2.5}}, TrainOptions{});
        FAIL() << "expected InvalidInput";
    } catch (const InvalidInput& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("user 3"), std::string::npos) << msg;
        EXPECT_NE(msg.find("item 4"), std::string::npos) << msg;
        EXPECT_NE(msg.find("-2.5"), std::string::npos) << msg;
    }
    EXPECT_THROW(train_eigen(hand_cells(), TrainOptions{-1}), InvalidInput);
    EXPECT_THROW(train_eigen({}, TrainOptions{-5}), InvalidInput);
    // Overflowing duplicate sums and squared norms: rejected, as by train().
    EXPECT_THROW(train({{1, 1, 1e308}, {1, 1, 1e308}}, TrainOptions{}), InvalidInput);
    EXPECT_THROW(train_eigen({{1, 1, 1e308}, {1, 1, 1e308}}, TrainOptions{}), InvalidInput);
    EXPECT_THROW(train({{1, 1, 1e200}, {1, 2, 1}}, TrainOptions{}), InvalidInput);
    EXPECT_THROW(train_eigen({{1, 1, 1e200}, {1, 2, 1}}, TrainOptions{}), InvalidInput);
    EXPECT_NO_THROW(train_eigen({{1, 1, 1e-300}, {1, 2, 1e150}}, TrainOptions{}));
}

TEST(TrainEigen, EmptyInput) {
    const Model m = train_eigen({}, TrainOptions{});
    EXPECT_EQ(m.n_users, 0);
    EXPECT_EQ(m.n_cells, 0);
    EXPECT_TRUE(m.item_ids.empty());
    EXPECT_EQ(m.nbr_offsets, (std::vector<int64_t>{0}));
    EXPECT_TRUE(m.nbr_ids.empty());
    EXPECT_TRUE(m.nbr_sims.empty());
    EXPECT_TRUE(m.popular_ids.empty());
    EXPECT_TRUE(m.popular_users.empty());
}

TEST(TrainEigen, Cancel) {
    // 1500 items: 6 blocks of 256, polled between them and in preparation.
    const auto cells = recsys_test::random_cells(7, 400, 1500, 6000);
    recsys_test::expect_cancel_at_every_poll(
        [](const std::vector<Triplet>& c, const TrainOptions& o, const recsys::CancelCheck& k) {
            return train_eigen(c, o, k);
        },
        cells, 6);
    EXPECT_THROW(train_eigen(cells, TrainOptions{}, [] { return true; }), Cancelled);
}
