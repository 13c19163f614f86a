// alloc_test.cpp - estimate_train_bytes() is an upper bound of train()'s
// real peak heap.  This file replaces the global (non-aligned) operator
// new/delete of the test binary with malloc/free wrappers that track the live
// and peak bytes (by malloc_usable_size, i.e. what the allocator really
// hands out).  Tracking is always on but only read by these tests; it is
// harmless for the others, and works under AddressSanitizer (whose malloc
// still does the checking).
#include <gtest/gtest.h>
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <random>

#include <unistd.h>

#include <string>

#include "core.hpp"
#include "core_passes.hpp"
#include "core_topk.hpp"
#include "test_util.hpp"

namespace {

std::atomic<long long> g_live{0};
std::atomic<long long> g_peak{0};

void* tracked_alloc(std::size_t n) {
    void* p = std::malloc(n == 0 ? 1 : n);
    if (p) {
        const long long now =
            g_live.fetch_add(static_cast<long long>(malloc_usable_size(p))) +
            static_cast<long long>(malloc_usable_size(p));
        long long peak = g_peak.load();
        while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
        }
    }
    return p;
}

void tracked_free(void* p) noexcept {
    if (!p) return;
    g_live.fetch_sub(static_cast<long long>(malloc_usable_size(p)));
    std::free(p);
}

}  // namespace

void* operator new(std::size_t n) {
    if (void* p = tracked_alloc(n)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
    if (void* p = tracked_alloc(n)) return p;
    throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return tracked_alloc(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return tracked_alloc(n); }
void operator delete(void* p) noexcept { tracked_free(p); }
void operator delete[](void* p) noexcept { tracked_free(p); }
void operator delete(void* p, std::size_t) noexcept { tracked_free(p); }
void operator delete[](void* p, std::size_t) noexcept { tracked_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { tracked_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { tracked_free(p); }

namespace {

struct Measured {
    long long peak = 0;        // peak heap during input construction + train()
    std::size_t estimate = 0;  // estimate_train_bytes for the same input
    int64_t users = 0, items = 0;  // distinct
    recsys::Model model;
};

// Builds the input vector inside the measured window (train() takes it by
// value and we move it in, so its bytes are part of train()'s peak).  With
// `borrowed`, the input is the caller's buffer, filled before the window,
// and train() borrows it (CellInput::borrowed: not counted by the estimate).
Measured measure(const std::vector<recsys::Triplet>& src, const recsys::TrainOptions& opt,
                 int threads = 0, bool borrowed = false) {
    // distinct counts for the estimate (computed before the window)
    std::vector<int32_t> u, i;
    for (const auto& t : src) {
        u.push_back(t.user);
        i.push_back(t.item);
    }
    std::sort(u.begin(), u.end());
    std::sort(i.begin(), i.end());
    const auto users = std::unique(u.begin(), u.end()) - u.begin();
    const auto items = std::unique(i.begin(), i.end()) - i.begin();

    Measured out;
    out.users = users;
    out.items = items;
    std::vector<recsys::Triplet> scratch;
    if (borrowed) scratch.assign(src.begin(), src.end());
    const long long base = g_live.load();
    g_peak.store(base);
    if (borrowed) {
        out.model = recsys::detail::train_threads(scratch.data(), scratch.size(), opt, {}, threads);
    } else {
        std::vector<recsys::Triplet> cells(src.begin(), src.end());  // exact size
        out.model = recsys::detail::train_threads(std::move(cells), opt, {}, threads);
    }
    out.peak = g_peak.load() - base;
    out.estimate = recsys::estimate_train_bytes(static_cast<int64_t>(src.size()), users, items, opt,
                                                borrowed ? recsys::CellInput::borrowed : recsys::CellInput::owned);
    return out;
}

Measured measure(const std::vector<recsys::Triplet>& src, int neighbors, int threads = 0, bool borrowed = false) {
    Measured m = measure(src, recsys::TrainOptions{neighbors}, threads, borrowed);
    // The default settings add nothing to the 1.0 estimate.
    EXPECT_EQ(m.estimate, recsys::estimate_train_bytes(static_cast<int64_t>(src.size()), m.users, m.items,
                                                       neighbors, borrowed ? recsys::CellInput::borrowed
                                                                           : recsys::CellInput::owned));
    return m;
}

}  // namespace

TEST(EstimateTrainBytes, TrackerSeesAllocations) {
    const long long before = g_live.load();
    auto* v = new std::vector<double>(1000);
    EXPECT_GE(g_live.load() - before, static_cast<long long>(1000 * sizeof(double)));
    delete v;
    EXPECT_EQ(g_live.load(), before);
}

TEST(EstimateTrainBytes, BoundsRealPeak) {
    struct Case {
        int users, items, cells, k, threads;
    };
    const Case cases[] = {
        {1, 1, 1, 50, 1},           {3, 1, 10, 0, 2},          {2000, 300, 20000, 50, 1},
        {2000, 300, 20000, 0, 1},   {500, 2000, 5000, 0, 1},   {5000, 50, 30000, 0, 1},
        {20000, 3000, 60000, 10, 1}, {200, 200, 40000, 0, 1},  {20000, 3000, 60000, 0, 1},
        {2000, 300, 20000, 50, 2},  {200, 200, 40000, 0, 2},   {20000, 3000, 60000, 10, 2}};
    for (const Case& c : cases) {
      for (bool borrowed : {false, true}) {
        const auto cells = recsys_test::random_cells(42, c.users, c.items, c.cells);
        const Measured m = measure(cells, c.k, c.threads, borrowed);
        EXPECT_GE(static_cast<long long>(m.estimate), m.peak)
            << c.cells << " cells, k " << c.k << (borrowed ? ", borrowed" : "") << ": estimate " << m.estimate
            << " < peak " << m.peak;
        // Honest, but not absurd: within 8x of the real peak for non-tiny
        // inputs with K > 0.  (For K = 0 the estimate must assume up to
        // items-1 neighbours per item, capped by cells*(items-1) pairs; sparse
        // data keeps far fewer, so no tightness check there.)
        if (c.cells >= 1000 && c.k > 0) {
            EXPECT_LE(static_cast<double>(m.estimate), 8.0 * static_cast<double>(m.peak))
                << c.cells << " cells, k " << c.k;
        }
        std::printf("[ estimate ] cells %d users %d items %d k %d threads %d%s: peak %lld, "
                    "estimate %zu (%.2fx)\n",
                    c.cells, c.users, c.items, c.k, c.threads, borrowed ? " borrowed" : "", m.peak, m.estimate,
                    static_cast<double>(m.estimate) / static_cast<double>(m.peak));
      }
    }
}

// The same with compact ids (lookup tables and a radix sort by user, on one
// and two threads): one pass of up to 1024 buckets for the fewest cells it
// can take (one cell a user, one item), two passes of 1024 past 2^19 users.
TEST(EstimateTrainBytes, BoundsRealPeakCompactIds) {
    struct Case {
        int users, items, cells, k;
    };
    const Case cases[] = {{600, 1, 600, 50},   {1024, 1, 1024, 0},       {1000, 40, 3000, 10},
                          {5000, 300, 20000, 50}, {(1 << 19) + 10, 50, 600000, 10}};
    std::mt19937 rng(5);
    for (const Case& c : cases) {
        std::vector<recsys::Triplet> cells;
        for (int u = 0; u < c.users; ++u)
            cells.push_back(recsys::Triplet{u, static_cast<int32_t>(rng() % c.items), 1.0 + rng() % 3});
        while (static_cast<int>(cells.size()) < c.cells)
            cells.push_back(recsys::Triplet{static_cast<int32_t>(rng() % c.users),
                                            static_cast<int32_t>(rng() % c.items), 1.0 + rng() % 3});
        std::shuffle(cells.begin(), cells.end(), rng);
        for (int threads : {1, 2}) {
          for (bool borrowed : {false, true}) {
            const Measured m = measure(cells, c.k, threads, borrowed);
            EXPECT_GE(static_cast<long long>(m.estimate), m.peak)
                << c.cells << " cells, " << c.users << " users, k " << c.k << ", threads " << threads
                << (borrowed ? ", borrowed" : "") << ": estimate " << m.estimate << " < peak " << m.peak;
            std::printf("[ estimate ] compact ids: cells %d users %d items %d k %d threads %d%s: peak %lld, "
                        "estimate %zu (%.2fx)\n",
                        c.cells, c.users, c.items, c.k, threads, borrowed ? " borrowed" : "", m.peak, m.estimate,
                        static_cast<double>(m.estimate) / static_cast<double>(m.peak));
          }
        }
    }
}

TEST(EstimateTrainBytes, MonotoneAndSane) {
    using recsys::estimate_train_bytes;
    EXPECT_GT(estimate_train_bytes(0, 0, 0, 50), 0u);
    EXPECT_LE(estimate_train_bytes(1000, 100, 100, 10), estimate_train_bytes(2000, 100, 100, 10));
    EXPECT_LE(estimate_train_bytes(1000, 100, 100, 10), estimate_train_bytes(1000, 100, 100, 20));
    // K = 0 is at least as expensive as any K.
    EXPECT_LE(estimate_train_bytes(100000, 1000, 1000, 50),
              estimate_train_bytes(100000, 1000, 1000, 0));
    // At least the input vector itself.
    EXPECT_GE(estimate_train_bytes(1000000, 100000, 10000, 50), 1000000u * sizeof(recsys::Triplet));
    // Huge inputs saturate instead of overflowing.
    EXPECT_GT(estimate_train_bytes(INT64_MAX, INT64_MAX, INT64_MAX, 0), 0u);
}

// train_passes() holds at most its budget: its real peak heap (the spill
// filled before the window) against the budget, from the minimum up.
TEST(PassesBudget, PeakWithinBudget) {
    char tmpl[] = "/tmp/recsys-alloc-XXXXXX";
    const std::string dir = mkdtemp(tmpl);
    struct Case {
        int users, items, cells, k;
        std::size_t run;
    };
    const Case cases[] = {{2000, 300, 20000, 50, 1000}, {20000, 3000, 60000, 10, 5000},
                          {500, 2000, 5000, 0, 700},    {200, 200, 40000, 0, 4000},
                          {5000, 50, 30000, 0, 100},    {3000, 1500, 50000, 20, 20000}};
    for (const Case& c : cases) {
        const auto cells = recsys_test::random_cells(42, c.users, c.items, c.cells);
        recsys::PassPlan probe;
        {
            recsys::CellSpill s(dir);
            std::vector<recsys::Triplet> v(cells);
            for (std::size_t b = 0; b < v.size(); b += c.run)
                s.add_run(v.data() + b, std::min(c.run, v.size() - b));
            probe = recsys::plan_passes(s.cells(), s.users_bound(), s.items(), c.k, s.runs(), 0);
        }
        for (double f : {1.0, 1.5, 4.0, 100.0}) {
            const std::size_t budget = static_cast<std::size_t>(static_cast<double>(probe.minimum) * f);
            recsys::CellSpill s(dir);
            std::vector<recsys::Triplet> v(cells);
            for (std::size_t b = 0; b < v.size(); b += c.run)
                s.add_run(v.data() + b, std::min(c.run, v.size() - b));
            std::vector<recsys::Triplet>().swap(v);
            const recsys::PassPlan plan =
                recsys::plan_passes(s.cells(), s.users_bound(), s.items(), c.k, s.runs(), budget);
            const long long base = g_live.load();
            g_peak.store(base);
            long long peak = 0;
            int64_t made = 0;
            {
                const recsys::Model m = recsys::train_passes(s, recsys::TrainOptions{c.k}, budget, {}, &made);
                peak = g_peak.load() - base;
                EXPECT_EQ(m.nbr_ids, recsys::train(cells, recsys::TrainOptions{c.k}).nbr_ids);
            }
            EXPECT_LE(peak, static_cast<long long>(budget))
                << c.cells << " cells, k " << c.k << ", budget x" << f;
            std::printf("[ passes   ] cells %d items %d k %d budget %zu (x%.1f): %lld passes (at most %lld), "
                        "peak %lld (%.2f of the budget)\n",
                        c.cells, c.items, c.k, budget, f, static_cast<long long>(made),
                        static_cast<long long>(plan.passes), peak,
                        static_cast<double>(peak) / static_cast<double>(budget));
        }
    }
    rmdir(dir.c_str());
}

// The same bound for every weighting and similarity: their per-user and
// per-item statistics are counted by estimate_train_bytes(..., TrainOptions).
TEST(EstimateTrainBytes, BoundsRealPeakForSettings) {
    using recsys::Similarity;
    using recsys::Weighting;
    struct Case {
        int users, items, cells, k;
    };
    // Many users per cell and many items: where the statistics weigh most.
    const Case cases[] = {{1, 1, 1, 50}, {20000, 3000, 30000, 10}, {5000, 8000, 12000, 0},
                          {2000, 300, 20000, 50}};
    for (Weighting w : {Weighting::weights, Weighting::binary, Weighting::tfidf, Weighting::bm25}) {
        for (Similarity s : {Similarity::cosine, Similarity::asymmetric_cosine,
                             Similarity::rp3beta, Similarity::jaccard}) {
            if (s == Similarity::jaccard && (w == Weighting::tfidf || w == Weighting::bm25)) continue;
            recsys::TrainOptions o;
            o.weighting = w;
            o.similarity = s;
            if (s != Similarity::rp3beta) o.shrink = 1;
            for (const Case& c : cases) {
                o.neighbors = c.k;
                const auto cells = recsys_test::random_cells(43, c.users, c.items, c.cells);
                const Measured m = measure(cells, o, 1);
                EXPECT_GE(static_cast<long long>(m.estimate), m.peak)
                    << recsys::weighting_name(w) << " " << recsys::similarity_name(s) << " "
                    << c.cells << " cells, k " << c.k;
            }
        }
    }
}
