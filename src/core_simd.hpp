// The core's vector kernels, compiled for AVX2 (the sieve also for
// AVX-512) with target attributes and chosen at run time (a portable build
// enables only SSE2).  Each computes
// exactly what the scalar code beside it computes -- the same IEEE
// operations in the same order, lane by lane -- so results never depend on
// the CPU; without AVX2 the callers take their scalar paths.
//
// 1. The accumulator sieve of the cosine similarity pass (issue #9 point 2).
//    An item whose dot products touch a large share of the catalogue ranks
//    them faster by reading the whole accumulator in order than by following
//    its touched list (each entry a random read of its sum and its norm).
//    The sieve reads a run of the accumulator and the norms, clears the run,
//    and returns the entries the cosine's threshold test cannot rule out; the
//    caller tests those exactly.  It is only a prefilter: it keeps every
//    entry the scalar test would keep.
// 2. The bootstrap's sums (core_evaluate.cpp), four resamples at once.
// 3. The bootstrap's draws: SplitMix64 outputs mapped to indices, eight at
//    once with AVX-512 (its outputs are a counter hashed, so eight
//    consecutive ones are independent).
//
// Pure C++, no PostgreSQL headers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

namespace recsys::detail {

// The cosine pass's prefilter, one rule for the touched list, the scalar
// sieve and (lane by lane) the vector sieve: with d = ni · norm[j] and
// bound = fl(thr · d), when bound is a normal, finite double (within
// [kSieveMinBound, kSieveMaxBound]), dot < fl(bound · kSieveMargin) implies
// dot / d < thr (1 - 1e-12 + 2^-52), so that fl(dot / d) < thr: the sum
// cannot reach the threshold, and the division can be skipped.
constexpr double kSieveMargin = 1 - 1e-12;
constexpr double kSieveMinBound = 4 * std::numeric_limits<double>::min();
constexpr double kSieveMaxBound = std::numeric_limits<double>::max() / 2;

inline bool ruled_out(double dot, double bound) {
    return bound >= kSieveMinBound && bound <= kSieveMaxBound && dot < bound * kSieveMargin;
}

// The pass sieves an item's sums when its multiply-adds (which bound the
// sums it touches) reach this share of the catalogue, and then accumulates
// them without the touched list.  core_bench --events 10000000 --user-skew
// 3.42 50 3 1 0 (one thread), best of 3: 1.50 s at 10 and 15 %, 1.54 s at
// 25, 1.55 s at 5, 1.71-1.86 s without the sieve; on the default log
// (--events 10000000 50 3 1 0) 0.82-0.88 s at 15-60 % and without, so no
// loss where fewer items are heavy.
constexpr std::size_t kSieveWorkPercent = 15;

inline bool sieve_pays(std::size_t work, std::size_t n_items) { return work * 100 >= n_items * kSieveWorkPercent; }

// True when this CPU runs the vector kernels (the pass only sieves then: a
// scalar sieve is not faster than the touched list).
bool simd_available();

// The widest sieve kernel this process runs: 0 scalar, 1 AVX2, 2 AVX-512.
// cap_simd_level(n) caps it at n (the unit tests run every kernel the CPU
// has; nothing else calls it).
int simd_level();
void cap_simd_level(int level);

// Sieves acc[b, e): every entry is set to 0; an entry j is returned (its
// rank in ids, its sum in dots, in increasing j) unless its sum is 0 or the
// prefilter rules it out for the threshold thr, with d = ni · norm[j]:
//   ruled_out(dot, thr · d).
// ids and dots have room for e - b entries.  Returns how many were kept.
// With AVX-512 or AVX2 the vector code, else a scalar loop (the same
// entries).
// When every norm[j] of the run lies in [norm_lo, norm_hi] (the caller
// knows it: the pass keeps each run's lowest and highest norm), the vector
// code checks the bound's range once for the run, not lane by lane; the
// defaults say nothing of the norms.
std::size_t sieve_run(double* acc, const double* norm, std::size_t b, std::size_t e, double ni, double thr,
                      int32_t* ids, double* dots, double norm_lo = 0,
                      double norm_hi = std::numeric_limits<double>::infinity());

// The bootstrap's column limit (core_evaluate.cpp's kMaxColumns).
constexpr std::size_t kBootColumns = 8;

// The bootstrap's sums for four resamples at once: for p = 0..3 and column
// c < k, sum[p * kBootColumns + c] = the sum over units j = 0..m-1, in turn,
// of low[p][j] * rows[j * k + c], each low[p][j] then set to 0 -- the same
// operations in the same order as the scalar loop, lane by lane.  Returns
// false (and does nothing) without AVX2 or when k > kBootColumns.
bool bootstrap_sum4(std::size_t k, uint8_t* const* low, const double* rows, std::size_t m, double* sum);

// One output of SplitMix64 (Steele, Lea and Flood 2014), advancing *state.
inline uint64_t splitmix64_next(uint64_t* state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// n indices in [0, m) from SplitMix64 at *state, as this loop draws them
// (Lemire's multiply-shift: an output x gives floor(x m / 2^64) unless the
// low 64 bits of x m fall below reject_below, then the next output is
// tried), into idx[0..n); *state advances past every output used.  Callers
// pass reject_below = 2^64 mod m (an unbiased draw); any value gives the
// same indices on every path.  With AVX-512 (F and DQ) and m < 2^32, eight
// outputs at a time.
void splitmix64_indices(uint64_t* state, std::size_t n, uint64_t m, uint64_t reject_below, uint64_t* idx);

}  // namespace recsys::detail
