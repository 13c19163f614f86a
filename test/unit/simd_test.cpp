// simd_test.cpp - the core's vector kernels (core_simd.hpp).  The
// accumulator sieve of the cosine pass: entry by entry against the scalar
// prefilter written out here, against the exact test it must never
// overrule, and train() against brute force on a log where some items are
// sieved and the others are not.  The bootstrap's four-resample sums: bit
// for bit against the scalar loop written out here.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core.hpp"
#include "core_simd.hpp"
#include "test_util.hpp"

using namespace recsys;

namespace {

constexpr double kTiny = std::numeric_limits<double>::min();    // smallest normal
constexpr double kHuge = std::numeric_limits<double>::max();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The scalar prefilter of SimWorker::item, as its comment states it: an
// entry is ruled out when bound = thr · (ni · norm) lies in [4 · min normal,
// max / 2] and dot < bound · (1 - 1e-12).  Zero sums are never kept.
bool kept_by_rule(double dot, double ni, double nj, double thr) {
    if (dot == 0) return false;
    const double bound = thr * (ni * nj);
    const bool normal = bound >= 4 * kTiny && bound <= kHuge / 2;
    return !(normal && dot < bound * (1 - 1e-12));
}

// The exact test the pass applies to a kept entry.
bool passes_exact(double dot, double ni, double nj, double thr) {
    const double sim = dot / (ni * nj);
    return sim > 0 && std::isfinite(sim) && sim >= thr;
}

// A sum drawn to land on every side of the prefilter: zeros, the threshold's
// own boundary give or take a few ulps, negatives, NaN, subnormals, huge.
double draw_dot(std::mt19937_64& rng, double ni, double nj, double thr) {
    switch (rng() % 10) {
        case 0:
        case 1:
        case 2: return 0.0;
        case 3: {  // within a few ulps of thr · ni · nj
            double x = thr * (ni * nj);
            for (int k = static_cast<int>(rng() % 9) - 4; k != 0; k += k > 0 ? -1 : 1)
                x = std::nextafter(x, k > 0 ? kHuge : -kHuge);
            return x;
        }
        case 4: return thr * (ni * nj) * (1 - 1e-12);
        case 5: return -std::uniform_real_distribution<double>(0, 10)(rng);
        case 6: return rng() % 2 ? kNaN : std::numeric_limits<double>::denorm_min() * (1 + rng() % 100);
        case 7: return rng() % 2 ? kHuge / (1 + rng() % 3) : -0.0;
        default: return std::uniform_real_distribution<double>(0, 10)(rng);
    }
}

double draw_norm(std::mt19937_64& rng) {
    switch (rng() % 8) {
        case 0: return 0.0;
        case 1: return kTiny * (1 + rng() % 5);
        case 2: return 1e300;
        default: return std::uniform_real_distribution<double>(0.01, 50)(rng);
    }
}

}  // namespace

// Each kernel this CPU runs (scalar, AVX2, AVX-512), and the sieve with
// and without the run's norms' range (the pass passes each run's lowest
// and highest norm; a range test once per run replaces the lanes').
struct SieveCase {
    int level;
    bool ranged;
};

std::vector<SieveCase> sieve_cases() {
    std::vector<SieveCase> v;
    for (int level = 0; level <= detail::simd_level(); ++level)
        for (bool ranged : {false, true}) v.push_back({level, ranged});
    return v;
}

// sieve_run at kernel level `level`, given the run's norms' range or not.
std::size_t sieve_at(const SieveCase& c, double* acc, const double* norm, std::size_t b, std::size_t e, double ni,
                     double thr, int32_t* ids, double* dots) {
    detail::cap_simd_level(c.level);
    std::size_t got;
    if (c.ranged && e > b) {
        const double lo = *std::min_element(norm + b, norm + e), hi = *std::max_element(norm + b, norm + e);
        got = detail::sieve_run(acc, norm, b, e, ni, thr, ids, dots, lo, hi);
    } else {
        got = detail::sieve_run(acc, norm, b, e, ni, thr, ids, dots);
    }
    detail::cap_simd_level(2);
    return got;
}

// Every entry of every run (offsets and lengths that exercise the vector
// body and the scalar tail): kept exactly when the rule above keeps it, in
// increasing order with its sum, and every entry of the run cleared (none
// outside it touched).  The runs draw norms where the range test passes
// (all moderate) as often as ones where it fails.
TEST(Sieve, KeepsExactlyWhatTheScalarRuleKeeps) {
    for (const SieveCase& c : sieve_cases()) {
    SCOPED_TRACE("kernel level " + std::to_string(c.level) + (c.ranged ? ", ranged" : ""));
    std::mt19937_64 rng(20261128);
    const double thrs[] = {0.0, 0.25, 0.999, 1e-310, 3e-308, 1e300, 1.0};
    const double nis[] = {1.0, 7.5, kTiny, 1e300};
    std::size_t kept_total = 0, ruled_out_total = 0;
    for (int round = 0; round < 400; ++round) {
        const std::size_t n = 1 + rng() % 200;
        const std::size_t b = rng() % std::min<std::size_t>(n, 5), e = b + rng() % (n - b + 1);
        const double thr = thrs[rng() % 7], ni = nis[rng() % 4];
        std::vector<double> norm(n), acc(n);
        const bool moderate = rng() % 2;
        for (std::size_t j = 0; j < n; ++j)
            norm[j] = moderate ? std::uniform_real_distribution<double>(0.01, 50)(rng) : draw_norm(rng);
        for (std::size_t j = 0; j < n; ++j) acc[j] = draw_dot(rng, ni, norm[j], thr);
        const std::vector<double> before = acc;
        std::vector<int32_t> ids(n + 1, -7);
        std::vector<double> dots(n + 1, -7);
        const std::size_t got = sieve_at(c, acc.data(), norm.data(), b, e, ni, thr, ids.data(), dots.data());
        std::vector<std::size_t> want;
        for (std::size_t j = b; j < e; ++j)
            if (kept_by_rule(before[j], ni, norm[j], thr)) want.push_back(j);
        ASSERT_EQ(got, want.size()) << "round " << round;
        for (std::size_t k = 0; k < got; ++k) {
            ASSERT_EQ(ids[k], static_cast<int32_t>(want[k])) << "round " << round;
            const double w = before[want[k]];
            ASSERT_TRUE(std::isnan(w) ? std::isnan(dots[k]) : dots[k] == w) << "round " << round;
        }
        for (std::size_t j = 0; j < n; ++j) {
            if (j >= b && j < e)
                ASSERT_EQ(acc[j], 0.0) << "round " << round << " j " << j;
            else
                ASSERT_TRUE(std::isnan(before[j]) ? std::isnan(acc[j]) : acc[j] == before[j]);
        }
        kept_total += got;
        ruled_out_total += e - b - got;
    }
    EXPECT_GT(kept_total, 1000u);
    EXPECT_GT(ruled_out_total, 1000u);
    }
}

// The sieve only saves work: an entry it rules out never passes the exact
// test (sim > 0, finite, >= thr), even a few ulps from the threshold.
TEST(Sieve, NeverRulesOutWhatTheExactTestKeeps) {
    for (const SieveCase& c : sieve_cases()) {
    SCOPED_TRACE("kernel level " + std::to_string(c.level) + (c.ranged ? ", ranged" : ""));
    std::mt19937_64 rng(77);
    std::size_t near = 0;
    for (int round = 0; round < 2000; ++round) {
        const std::size_t n = 64;
        const double thr = std::uniform_real_distribution<double>(1e-6, 1.0)(rng);
        const double ni = std::uniform_real_distribution<double>(0.1, 100)(rng);
        std::vector<double> norm(n), acc(n);
        for (std::size_t j = 0; j < n; ++j) norm[j] = std::uniform_real_distribution<double>(0.1, 100)(rng);
        for (std::size_t j = 0; j < n; ++j) {
            double x = thr * (ni * norm[j]);
            for (int k = static_cast<int>(rng() % 41) - 20; k != 0; k += k > 0 ? -1 : 1)
                x = std::nextafter(x, k > 0 ? kHuge : 0.0);
            acc[j] = x;
        }
        const std::vector<double> before = acc;
        std::vector<int32_t> ids(n);
        std::vector<double> dots(n);
        const std::size_t got = sieve_at(c, acc.data(), norm.data(), 0, n, ni, thr, ids.data(), dots.data());
        std::set<int32_t> kept(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(got));
        for (std::size_t j = 0; j < n; ++j) {
            const bool exact = passes_exact(before[j], ni, norm[j], thr);
            near += exact;
            if (exact) {
                ASSERT_TRUE(kept.count(static_cast<int32_t>(j))) << "round " << round << " j " << j;
            }
        }
    }
    EXPECT_GT(near, 10000u);  // many entries sat on the threshold's right side
    }
}

// train() sieves the items whose multiply-adds reach kSieveWorkPercent of
// the catalogue and ranks the others' touched lists: both kinds in one log
// (a dense block of heavy users over 150 items, and 650 items each bought
// by two light users), and the model equals the brute force bit for bit.
TEST(Sieve, TrainAgreesWithBruteForceWithSievedAndListedItems) {
    std::mt19937 rng(4242);
    static const double kWeights[] = {0.5, 1, 1.5, 2, 3};
    std::vector<Triplet> cells;
    for (int u = 0; u < 40; ++u)
        for (int k = 0; k < 60; ++k)
            cells.push_back(Triplet{u, static_cast<int32_t>(rng() % 150), kWeights[rng() % 5]});
    for (int it = 150; it < 800; ++it)
        for (int c = 0; c < 2; ++c)
            cells.push_back(Triplet{1000 + static_cast<int32_t>(rng() % 500), it, kWeights[rng() % 5]});
    // Which items the rule sieves: each item's multiply-adds, as the pass
    // counts them (the row lengths of its users).
    std::map<int32_t, std::set<int32_t>> row, col;
    for (const Triplet& t : cells) {
        row[t.user].insert(t.item);
        col[t.item].insert(t.user);
    }
    std::size_t sieved = 0, listed = 0;
    for (const auto& kv : col) {
        std::size_t work = 0;
        for (int32_t u : kv.second) work += row[u].size();
        (detail::sieve_pays(work, col.size()) ? sieved : listed) += 1;
    }
    EXPECT_GE(sieved, 140u);
    EXPECT_GE(listed, 600u);
    if (!detail::simd_available()) std::cout << "[ note ] this CPU has no AVX2: every item took the touched list\n";
    const auto nm = recsys_test::naive_train(cells, 0);  // every list whole; the top k is its head
    for (int k : {1, 5, 50, 0}) {
        const Model m = train(cells, TrainOptions{k});
        ASSERT_EQ(m.item_ids, nm.items);
        for (int32_t item : nm.items) {
            const auto got = recsys_test::model_nbrs(m, item);
            auto want = nm.nbrs.at(item);
            if (k > 0 && want.size() > static_cast<std::size_t>(k)) want.resize(static_cast<std::size_t>(k));
            ASSERT_EQ(got.size(), want.size()) << "item " << item << " k " << k;
            for (std::size_t r = 0; r < want.size(); ++r) {
                ASSERT_EQ(got[r].id, want[r].id) << "item " << item << " rank " << r << " k " << k;
                ASSERT_EQ(got[r].sim, want[r].sim) << "item " << item << " rank " << r << " k " << k;
            }
        }
    }
}

// bootstrap_sum4 against the scalar sums written out (count times value,
// units ascending, one running sum per resample and column): the same
// doubles bit for bit, for every column count and for unit counts around
// the 16-unit blocks; every count is reset to 0.  Values of mixed sign and
// magnitude, so that another order of additions would show in the bits.
TEST(BootstrapSum4, SameBitsAsTheScalarSums) {
    std::mt19937_64 rng(9);
    std::uniform_real_distribution<double> val(-1, 1);
    std::size_t compared = 0;
    for (std::size_t k = 1; k <= detail::kBootColumns; ++k) {
        for (std::size_t m : {0, 1, 3, 15, 16, 17, 31, 32, 33, 100, 1000, 4099}) {
            std::vector<double> rows(m * k);
            for (double& v : rows) v = val(rng) * std::pow(10.0, static_cast<double>(rng() % 7) - 3);
            std::vector<std::vector<uint8_t>> counts(4, std::vector<uint8_t>(m));
            for (auto& c : counts)
                for (uint8_t& x : c) x = static_cast<uint8_t>(rng() % 3 == 0 ? 0 : rng() % 256);
            double want[4][detail::kBootColumns] = {};
            for (std::size_t p = 0; p < 4; ++p)
                for (std::size_t c = 0; c < k; ++c) {
                    double s = 0;
                    for (std::size_t j = 0; j < m; ++j) s += static_cast<double>(counts[p][j]) * rows[j * k + c];
                    want[p][c] = s;
                }
            uint8_t* low[4] = {counts[0].data(), counts[1].data(), counts[2].data(), counts[3].data()};
            double got[4 * detail::kBootColumns];
            for (double& g : got) g = -7;
            const bool ran = detail::bootstrap_sum4(k, low, rows.data(), m, got);
            ASSERT_EQ(ran, detail::simd_available());
            if (!ran) continue;
            for (std::size_t p = 0; p < 4; ++p) {
                for (std::size_t c = 0; c < k; ++c)
                    ASSERT_EQ(got[p * detail::kBootColumns + c], want[p][c]) << "k " << k << " m " << m << " p " << p;
                for (std::size_t j = 0; j < m; ++j) ASSERT_EQ(counts[p][j], 0) << "k " << k << " m " << m;
            }
            ++compared;
        }
    }
    if (detail::simd_available()) {
        EXPECT_EQ(compared, detail::kBootColumns * 12);
    }
    uint8_t* none[4] = {nullptr, nullptr, nullptr, nullptr};
    double unused[4 * detail::kBootColumns];
    EXPECT_FALSE(detail::bootstrap_sum4(detail::kBootColumns + 1, none, nullptr, 0, unused));
}

// The bootstrap's draws: at every kernel level, the same indices and the
// same final state as Lemire's rule written out here over SplitMix64 (the
// published constants), for batch sizes around the vector's eight, for m
// below and above 2^32 (the vector path takes only the former), and with a
// rejection bound of 2^63, which rejects about half the outputs (a real
// bound, 2^64 mod m, rejects almost none) so that the vectors with a
// rejected lane and the scalar redo are exercised.
TEST(SplitMix64Indices, SameIndicesAsTheScalarRule) {
    const auto next = [](uint64_t& s) {
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    };
    std::size_t compared = 0;
    for (uint64_t m : {uint64_t(1), uint64_t(7), uint64_t(183000), uint64_t(0xffffffffull), uint64_t(1) << 40}) {
        for (uint64_t below : {(0 - m) % m, uint64_t(1) << 63}) {
            for (std::size_t n : {0, 1, 7, 8, 9, 16, 100, 1000}) {
                const uint64_t seed = 0x1234567ull * (m + n) + below;
                std::vector<uint64_t> want(n);
                uint64_t ws = seed;
                for (std::size_t d = 0; d < n; ++d) {
                    unsigned __int128 x;
                    do {
                        x = static_cast<unsigned __int128>(next(ws)) * m;
                    } while (static_cast<uint64_t>(x) < below);
                    want[d] = static_cast<uint64_t>(x >> 64);
                }
                for (int level = 0; level <= detail::simd_level(); ++level) {
                    detail::cap_simd_level(level);
                    std::vector<uint64_t> got(n + 1, 99);
                    uint64_t gs = seed;
                    detail::splitmix64_indices(&gs, n, m, below, got.data());
                    detail::cap_simd_level(2);
                    ASSERT_EQ(std::vector<uint64_t>(got.begin(), got.begin() + static_cast<std::ptrdiff_t>(n)), want)
                        << "m " << m << " below " << below << " n " << n << " level " << level;
                    ASSERT_EQ(got[n], 99u) << "wrote past n";
                    ASSERT_EQ(gs, ws) << "m " << m << " n " << n << " level " << level;
                    ++compared;
                }
            }
        }
    }
    EXPECT_EQ(compared, 5u * 2 * 8 * static_cast<std::size_t>(detail::simd_level() + 1));
}
