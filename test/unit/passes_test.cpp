// passes_test.cpp - training within a memory budget (core_passes.hpp): the
// spilled, multi-pass path must give exactly train()'s model, and leave no
// temporary file open whatever happens.
#include <gtest/gtest.h>

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core.hpp"
#include "core_passes.hpp"
#include "test_util.hpp"

using namespace recsys;
using recsys_test::expect_same_model;

namespace {

// Entries of a directory (without . and ..).
int entries(const std::string& dir) {
    DIR* d = opendir(dir.c_str());
    if (d == nullptr) return -1;
    int n = 0;
    while (dirent* e = readdir(d))
        if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") ++n;
    closedir(d);
    return n;
}

// A private temporary directory, removed at the end.
struct TmpDir {
    std::string path;
    TmpDir() {
        char tmpl[] = "/tmp/recsys-passes-XXXXXX";
        const char* p = mkdtemp(tmpl);
        EXPECT_NE(p, nullptr);
        path = p ? p : "/tmp";
    }
    ~TmpDir() { rmdir(path.c_str()); }
};

// Spills `cells` in runs of `run` cells (the last one shorter).
void spill_into(CellSpill& s, const std::vector<Triplet>& cells, std::size_t run,
                const CancelCheck& cancel = {}) {
    for (std::size_t b = 0; b < cells.size(); b += run) {
        std::vector<Triplet> chunk(cells.begin() + static_cast<std::ptrdiff_t>(b),
                                   cells.begin() + static_cast<std::ptrdiff_t>(std::min(cells.size(), b + run)));
        s.add_run(chunk.data(), chunk.size(), cancel);
    }
}

// Random cells whose weights are arbitrary doubles, so that any change of
// the summation order would show in the last bits.
std::vector<Triplet> inexact_cells(uint32_t seed, int users, int items, int n) {
    auto cells = recsys_test::random_cells(seed, users, items, n);
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> f(0.01, 10.0);
    for (auto& t : cells) t.weight *= f(rng);
    return cells;
}

Model passes(const std::vector<Triplet>& cells, int k, std::size_t run, std::size_t budget,
             const std::string& dir, PassPlan* plan_out = nullptr) {
    CellSpill s(dir);
    spill_into(s, cells, run);
    const PassPlan plan = plan_passes(s.cells(), s.users_bound(), s.items(), k, s.runs(), budget);
    if (plan_out) *plan_out = plan;
    return train_passes(s, TrainOptions{k}, budget, {});
}

int open_fds() { return entries("/proc/self/fd"); }

}  // namespace

// The heart of it: many runs (so merges in several levels), many passes (a
// budget at the minimum: a few items per pass), and the same model as train()
// bit for bit, with exact and inexact weights, duplicates and K = 0, 1, 7, 50.
TEST(Passes, SameModelAsTrainExactly) {
    TmpDir dir;
    struct Config {
        int users, items, cells;
        std::size_t run;
    };
    const Config configs[] = {{30, 12, 200, 7},     {200, 60, 1500, 50},  {500, 300, 4000, 333},
                              {2000, 150, 20000, 1000}, {50, 2, 300, 16}, {400, 900, 3000, 64}};
    int many_passes = 0, multi_level = 0;
    for (uint32_t seed = 1; seed <= 3; ++seed) {
        for (const Config& c : configs) {
            for (bool exact : {true, false}) {
                const auto cells = exact ? recsys_test::random_cells(seed, c.users, c.items, c.cells)
                                         : inexact_cells(seed, c.users, c.items, c.cells);
                for (int k : {0, 1, 7, 50}) {
                    const Model want = train(cells, TrainOptions{k});
                    PassPlan probe;
                    {
                        CellSpill s(dir.path);
                        spill_into(s, cells, c.run);
                        probe = plan_passes(s.cells(), s.users_bound(), s.items(), k, s.runs(), 0);
                    }
                    for (std::size_t budget : {probe.minimum, probe.minimum + probe.minimum / 3,
                                               std::size_t(1) << 30}) {
                        PassPlan plan;
                        const Model got = passes(cells, k, c.run, budget, dir.path, &plan);
                        SCOPED_TRACE("seed " + std::to_string(seed) + " cells " + std::to_string(c.cells) +
                                     " k " + std::to_string(k) + " budget " + std::to_string(budget));
                        expect_same_model(got, want);
                        ASSERT_GT(plan.passes, 0);
                        ASSERT_EQ(plan.passes, (static_cast<int64_t>(want.item_ids.size()) +
                                                plan.items_per_pass - 1) / plan.items_per_pass);
                        many_passes += plan.passes >= 10;
                        const int64_t runs = (c.cells + static_cast<int64_t>(c.run) - 1) / static_cast<int64_t>(c.run);
                        multi_level += runs > plan.merge_fan_in;
                    }
                }
            }
        }
    }
    EXPECT_GT(many_passes, 50);  // the minimum budget really forced many passes
    EXPECT_GT(multi_level, 10);  // and merges in levels
    EXPECT_EQ(entries(dir.path), 0);
}

// measure() counts the distinct users and items exactly: against sorting
// copies, on few cells (one thread) and on more than 2^20 (users and items
// each on a thread), with compact ids (bitmaps) and ids spanning the int32
// range (sorted copies).
TEST(Passes, MeasureCountsDistinctUsersAndItems) {
    std::mt19937 rng(31);
    for (std::size_t n : {std::size_t(5000), std::size_t(1) << 21}) {
        for (bool wide : {false, true}) {
            std::vector<Triplet> cells(n);
            for (Triplet& t : cells) {
                const int32_t u = static_cast<int32_t>(rng() % 400000), i = static_cast<int32_t>(rng() % 30000);
                t = wide ? Triplet{u * 5303 - 1000000000, i * 71000 - 1000000000, 1.0} : Triplet{u, i, 1.0};
            }
            std::vector<int32_t> us, is;
            for (const Triplet& t : cells) {
                us.push_back(t.user);
                is.push_back(t.item);
            }
            std::sort(us.begin(), us.end());
            std::sort(is.begin(), is.end());
            const MatrixShape shape = measure(cells.data(), cells.size());
            EXPECT_EQ(shape.users, std::unique(us.begin(), us.end()) - us.begin()) << n << (wide ? " wide" : "");
            EXPECT_EQ(shape.items, std::unique(is.begin(), is.end()) - is.begin()) << n << (wide ? " wide" : "");
        }
    }
}

// Reading the runs back into memory and training there gives the same model.
TEST(Passes, LoadThenTrainIsTheSame) {
    TmpDir dir;
    const auto cells = inexact_cells(5, 300, 80, 5000);
    CellSpill s(dir.path);
    spill_into(s, cells, 123);
    EXPECT_EQ(s.cells(), 5000);
    EXPECT_EQ(s.runs(), (5000 + 122) / 123);
    const Model want = train(cells, TrainOptions{20});
    expect_same_model(train(s.load(), TrainOptions{20}), want);
    // The dictionary and the user bound.
    const MatrixShape shape = measure(cells.data(), cells.size());
    EXPECT_EQ(s.items(), shape.items);
    EXPECT_GE(s.users_bound(), shape.users);
    EXPECT_LE(s.users_bound(), s.cells());
}

// Every weighting and similarity gives train()'s model bit for bit in passes
// too, also at the least budget (many passes), and that least budget grows
// by the statistics the settings hold.
TEST(Passes, EverySettingSameModelAsTrain) {
    TmpDir dir;
    std::vector<TrainOptions> settings;
    for (Weighting w : {Weighting::weights, Weighting::binary, Weighting::tfidf, Weighting::bm25}) {
        TrainOptions o{7};
        o.weighting = w;
        o.shrink = 3;
        settings.push_back(o);
    }
    TrainOptions a{0};
    a.similarity = Similarity::asymmetric_cosine;
    a.alpha = 0.3;
    settings.push_back(a);
    TrainOptions r{5};
    r.weighting = Weighting::binary;
    r.similarity = Similarity::rp3beta;
    r.alpha = 0.5;
    r.beta = 0.3;
    settings.push_back(r);
    r.weighting = Weighting::bm25;  // row/column sums of a non-binary x
    settings.push_back(r);
    TrainOptions j{10};
    j.similarity = Similarity::jaccard;
    j.shrink = 1;
    settings.push_back(j);
    int many_passes = 0;
    for (uint32_t seed = 1; seed <= 2; ++seed) {
        const auto cells = inexact_cells(seed, 300, 2000, 6000);
        for (const TrainOptions& o : settings) {
            const Model want = train(cells, o);
            PassPlan probe;
            {
                CellSpill s(dir.path);
                spill_into(s, cells, 333);
                probe = plan_passes(s.cells(), s.users_bound(), s.items(), o, s.runs(), 0);
                const PassPlan plain = plan_passes(s.cells(), s.users_bound(), s.items(), o.neighbors, s.runs(), 0);
                EXPECT_EQ(probe.minimum > plain.minimum, !resolve_settings(o).plain());
            }
            for (std::size_t budget : {probe.minimum, std::size_t(1) << 30}) {
                CellSpill s(dir.path);
                spill_into(s, cells, 333);
                const PassPlan plan = plan_passes(s.cells(), s.users_bound(), s.items(), o, s.runs(), budget);
                ASSERT_GT(plan.passes, 0);
                many_passes += plan.passes >= 3;
                SCOPED_TRACE("seed " + std::to_string(seed) + " budget " + std::to_string(budget) + " " +
                             weighting_name(o.weighting) + " " + similarity_name(o.similarity));
                expect_same_model(train_passes(s, o, budget), want);
            }
            CellSpill s(dir.path);
            spill_into(s, cells, 333);
            EXPECT_THROW((void) train_passes(s, o, probe.minimum - 1), InvalidInput);
        }
    }
    EXPECT_GE(many_passes, 16);  // every setting and seed at the least budget
    EXPECT_EQ(entries(dir.path), 0);
}

TEST(Passes, HandExampleAtMinimum) {
    TmpDir dir;
    const std::vector<Triplet> cells = {{1, 10, 1}, {1, 20, 1}, {2, 10, 2}, {2, 20, 1}, {2, 30, 1},
                                        {3, 20, 1}, {3, 30, 2}, {4, 40, 3}, {5, 40, 1}, {6, 40, 1}};
    CellSpill s(dir.path);
    spill_into(s, cells, 3);
    EXPECT_EQ(s.runs(), 4);
    const PassPlan p0 = plan_passes(10, 6, 4, 50, s.runs(), 0);
    EXPECT_EQ(p0.passes, 0);
    const PassPlan plan = plan_passes(10, 6, 4, 50, s.runs(), p0.minimum);
    EXPECT_GE(plan.items_per_pass, 1);
    EXPECT_EQ(plan.passes, (4 + plan.items_per_pass - 1) / plan.items_per_pass);
    const Model m = train_passes(s, TrainOptions{}, p0.minimum);
    EXPECT_EQ(m.item_ids, (std::vector<int32_t>{10, 20, 30, 40}));
    EXPECT_EQ(m.nbr_offsets, (std::vector<int64_t>{0, 2, 4, 6, 6}));
    EXPECT_EQ(m.nbr_ids, (std::vector<int32_t>{20, 30, 10, 30, 20, 10}));
    const double kS = 3.0 / (std::sqrt(5.0) * std::sqrt(3.0)), kT = 2.0 / (std::sqrt(5.0) * std::sqrt(5.0));
    EXPECT_EQ(m.nbr_sims, (std::vector<double>{kS, kT, kS, kS, kS, kT}));
    EXPECT_EQ(m.popular_ids, (std::vector<int32_t>{20, 40, 10, 30}));
    EXPECT_EQ(m.n_users, 6);
    EXPECT_EQ(m.n_cells, 10);
}

// The plan: the minimum is what one item per pass needs, more budget means
// fewer passes, and below the minimum there is no plan (and training refuses).
TEST(Passes, PlanFormulas) {
    const int64_t C = 1000000, U = 100000, I = 10000;
    const PassPlan p = plan_passes(C, U, I, 50, 10, 64u << 20);
    // Every figure by hand: P = I * 50, kk = 50, buf = 64 KiB, slack = 96 KiB.
    const double pass_fixed = 64.0 * I + 8 + 12.0 * I * 50 + 16.0 * 50 + 65536;
    EXPECT_EQ(p.pass_fixed, static_cast<std::size_t>(pass_fixed));
    EXPECT_EQ(p.per_item, static_cast<std::size_t>(12 * I));
    EXPECT_EQ(p.minimum, static_cast<std::size_t>(pass_fixed + 12.0 * I + 96 * 1024));
    const int64_t b = static_cast<int64_t>(((64u << 20) - 96.0 * 1024 - pass_fixed) / (12.0 * I));
    EXPECT_EQ(p.items_per_pass, b);
    EXPECT_EQ(p.passes, (I + b - 1) / b);
    EXPECT_EQ(p.in_memory, 16 * C + estimate_train_bytes(C, U, I, 50, recsys::CellInput::borrowed));
    EXPECT_EQ(p.merge_fan_in, 10);  // every run at once
    const PassPlan big = plan_passes(C, U, I, 50, 10, std::size_t(4) << 30);
    EXPECT_EQ(big.passes, 1);
    EXPECT_EQ(big.items_per_pass, I);
    const PassPlan below = plan_passes(C, U, I, 50, 10, p.minimum - 1);
    EXPECT_EQ(below.passes, 0);
    const PassPlan at = plan_passes(C, U, I, 50, 10, p.minimum);
    EXPECT_EQ(at.items_per_pass, 1);
    EXPECT_EQ(at.passes, I);

    TmpDir dir;
    CellSpill s(dir.path);
    auto cells = recsys_test::random_cells(3, 100, 50, 1000);
    spill_into(s, cells, 100);
    const PassPlan q = plan_passes(s.cells(), s.users_bound(), s.items(), 10, s.runs(), 0);
    EXPECT_THROW(train_passes(s, TrainOptions{10}, q.minimum - 1), InvalidInput);
    EXPECT_THROW(train_passes(s, TrainOptions{-1}, q.minimum), InvalidInput);
}

TEST(Passes, EmptyInput) {
    TmpDir dir;
    CellSpill s(dir.path);
    s.add_run(nullptr, 0);
    EXPECT_EQ(s.runs(), 0);
    const Model m = train_passes(s, TrainOptions{}, 1 << 20);
    expect_same_model(m, train({}, TrainOptions{}));
}

// Bad weights and overflowing sums: the same errors as train().
TEST(Passes, InvalidInputAsTrain) {
    TmpDir dir;
    std::vector<Triplet> bad = {{1, 2, 1.0}, {3, 4, -2.5}, {5, 6, 0.0}};
    std::string want;
    try {
        train(bad, TrainOptions{});
    } catch (const InvalidInput& e) {
        want = e.what();
    }
    ASSERT_NE(want, "");
    {
        CellSpill s(dir.path);
        try {
            s.add_run(bad.data(), bad.size());
            FAIL() << "expected InvalidInput";
        } catch (const InvalidInput& e) {
            EXPECT_EQ(std::string(e.what()), want);
        }
    }
    std::vector<Triplet> over = {{1, 1, 1.0}, {7, 3, 1e308}, {2, 2, 1.0}, {7, 3, 1e308}};
    try {
        train(over, TrainOptions{});
    } catch (const InvalidInput& e) {
        want = e.what();
    }
    CellSpill s(dir.path);
    spill_into(s, over, 2);  // the duplicates land in different runs
    try {
        train_passes(s, TrainOptions{}, 1 << 20);
        FAIL() << "expected InvalidInput";
    } catch (const InvalidInput& e) {
        EXPECT_EQ(std::string(e.what()), want);
    }
    // Squared norm overflow: each weight is finite, the column's norm is not.
    std::vector<Triplet> big = {{1, 9, 1e200}, {2, 9, 1e200}, {1, 8, 1.0}};
    try {
        train(big, TrainOptions{});
    } catch (const InvalidInput& e) {
        want = e.what();
    }
    CellSpill s2(dir.path);
    spill_into(s2, big, 1);
    try {
        train_passes(s2, TrainOptions{}, 1 << 20);
        FAIL() << "expected InvalidInput";
    } catch (const InvalidInput& e) {
        EXPECT_EQ(std::string(e.what()), want);
    }
}

// Cancel at every poll of both phases: Cancelled is thrown at exactly that
// poll, no descriptor stays open, and no file is left in the directory.
TEST(Passes, CancelAtEveryPollLeavesNoFile) {
    TmpDir dir;
    const auto cells = recsys_test::random_cells(11, 3000, 400, 40000);
    PassPlan probe;
    {
        CellSpill s(dir.path);
        spill_into(s, cells, 4000);
        probe = plan_passes(s.cells(), s.users_bound(), s.items(), 10, s.runs(), 0);
    }
    const std::size_t budget = probe.minimum + 40 * probe.per_item;  // ~10 passes
    const int fds = open_fds();
    int calls = 0;
    Model full;
    {
        CellSpill s(dir.path);
        const CancelCheck count = [&] {
            ++calls;
            return false;
        };
        spill_into(s, cells, 4000, count);
        full = train_passes(s, TrainOptions{10}, budget, count);
    }
    expect_same_model(full, train(cells, TrainOptions{10}));
    ASSERT_GE(calls, 30);
    for (int n = 1; n <= calls; ++n) {
        int seen = 0;
        const CancelCheck at_n = [&] { return ++seen == n; };
        EXPECT_THROW(
            {
                CellSpill s(dir.path);
                spill_into(s, cells, 4000, at_n);
                train_passes(s, TrainOptions{10}, budget, at_n);
            },
            Cancelled)
            << "cancel on call " << n << " of " << calls;
        EXPECT_EQ(seen, n);
        EXPECT_EQ(open_fds(), fds) << "call " << n;
        EXPECT_EQ(entries(dir.path), 0) << "call " << n;
    }
}

// The temporary files never show in the directory (unlinked at creation)
// and their descriptors close when the spill and the training end.
TEST(Passes, TemporaryFilesAreClosed) {
    TmpDir dir;
    const int fds = open_fds();
    {
        CellSpill s(dir.path);
        EXPECT_EQ(open_fds(), fds);  // nothing before the first run
        auto cells = recsys_test::random_cells(2, 50, 20, 300);
        spill_into(s, cells, 30);
        EXPECT_EQ(open_fds(), fds + 1);
        EXPECT_EQ(entries(dir.path), 0);
        train_passes(s, TrainOptions{}, 1 << 20);
        EXPECT_EQ(open_fds(), fds);  // consumed
    }
    EXPECT_EQ(open_fds(), fds);
    // A directory that does not exist: a clear error, nothing left open.
    CellSpill bad("/nonexistent/recsys");
    Triplet t{1, 1, 1.0};
    try {
        bad.add_run(&t, 1);
        FAIL() << "expected an error";
    } catch (const std::system_error& e) {
        EXPECT_NE(std::string(e.what()).find("could not create temporary file"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("/nonexistent/recsys/pgsql_tmp"), std::string::npos) << e.what();
    }
    EXPECT_EQ(open_fds(), fds);
}

// recsys_progress shows the passes advance: "similarities" from 0 to every
// item, a step per pass, never backwards, on the calling thread only.
TEST(Passes, ReportItemsDonePerPass) {
    TmpDir dir;
    const auto cells = recsys_test::random_cells(4, 400, 900, 3000);
    const int k = 5;
    PassPlan probe;
    {
        CellSpill s(dir.path);
        spill_into(s, cells, 100);
        probe = plan_passes(s.cells(), s.users_bound(), s.items(), k, s.runs(), 0);
    }
    CellSpill s(dir.path);
    spill_into(s, cells, 100);
    const PassPlan plan = plan_passes(s.cells(), s.users_bound(), s.items(), k, s.runs(), probe.minimum);
    ASSERT_GE(plan.passes, 3);
    std::vector<std::pair<int64_t, int64_t>> calls;
    TrainOptions opt{k};
    const auto caller = std::this_thread::get_id();
    opt.progress = [&](const char* stage, int64_t done, int64_t total) {
        EXPECT_STREQ(stage, "similarities");
        EXPECT_EQ(std::this_thread::get_id(), caller);
        calls.emplace_back(done, total);
    };
    int64_t made = -1;
    const Model m = train_passes(s, opt, probe.minimum, {}, &made);
    expect_same_model(m, train(cells, TrainOptions{k}));
    const int64_t items = static_cast<int64_t>(m.item_ids.size());
    // Most items here have few co-users: their lists take far less room
    // than the dense rows the plan counts, so there are fewer passes.
    ASSERT_GE(made, 1);
    EXPECT_LT(made, plan.passes);
    ASSERT_EQ(calls.size(), static_cast<std::size_t>(made + 1));
    EXPECT_EQ(calls.front().first, 0);
    EXPECT_EQ(calls.back().first, items);
    for (std::size_t c = 0; c < calls.size(); ++c) {
        EXPECT_EQ(calls[c].second, items);
        if (c > 0) {
            EXPECT_GT(calls[c].first, calls[c - 1].first);
            // Every block but the last holds at least the plan's items.
            if (c + 1 < calls.size()) {
                EXPECT_GE(calls[c].first - calls[c - 1].first, plan.items_per_pass);
            }
        }
    }
}

// Blocks that mix dense rows and lists of products: every third item is
// held by heavy users (its users hold more other items than there are
// items: a dense row), the others only by light users (a list, replayed
// into the block's first row).  From the minimum budget up, the blocks hold
// one dense row, then several and lists, in changing numbers from block to
// block (rows a list wrote over are zeroed again); the model is train()'s
// bit for bit, for K = 5 and for all neighbours, and the passes made never
// exceed the plan's.
TEST(Passes, DenseRowsAndListsInOneBlock) {
    std::mt19937 rng(17);
    const int n_items = 300;
    std::vector<Triplet> cells;
    std::uniform_real_distribution<double> w(0.1, 5.0);
    for (int u = 0; u < 20; ++u)  // heavy users: 60 of the items 0, 3, 6, ...
        for (int c = 0; c < 60; ++c) cells.push_back(Triplet{u, 3 * static_cast<int32_t>(rng() % 100), w(rng)});
    for (int u = 20; u < 2020; ++u) {  // light users: 2 to 4 of all the items
        const int n = 2 + static_cast<int>(rng() % 3);
        for (int c = 0; c < n; ++c) cells.push_back(Triplet{u, static_cast<int32_t>(rng() % n_items), w(rng)});
    }
    std::shuffle(cells.begin(), cells.end(), rng);
    TmpDir dir;
    for (int k : {5, 0}) {
        const Model want = train(cells, TrainOptions{k});
        PassPlan probe;
        {
            CellSpill s(dir.path);
            spill_into(s, cells, 1000);
            probe = plan_passes(s.cells(), s.users_bound(), s.items(), k, s.runs(), 0);
        }
        bool fewer = false;
        for (double f : {1.0, 1.02, 1.1, 1.3, 2.0}) {
            const std::size_t budget = static_cast<std::size_t>(static_cast<double>(probe.minimum) * f);
            CellSpill s(dir.path);
            spill_into(s, cells, 1000);
            const PassPlan plan = plan_passes(s.cells(), s.users_bound(), s.items(), k, s.runs(), budget);
            int64_t made = 0;
            expect_same_model(train_passes(s, TrainOptions{k}, budget, {}, &made), want);
            EXPECT_GE(made, 1);
            EXPECT_LE(made, plan.passes) << "k " << k << ", budget x" << f;
            fewer = fewer || made < plan.passes;
        }
        EXPECT_TRUE(fewer) << "k " << k;
    }
}
