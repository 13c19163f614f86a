// The accumulator sieve of the cosine similarity pass (issue #9 point 2).
//
// An item whose dot products touch a large share of the catalogue ranks
// them faster by reading the whole accumulator in order than by following
// its touched list (each entry a random read of its sum and its norm).  The
// sieve reads a run of the accumulator and the norms with vector
// instructions, clears the run, and returns the entries the cosine's
// threshold test cannot rule out; the caller tests those exactly.  It is
// only a prefilter: it keeps every entry the scalar test would keep.
//
// Pure C++, no PostgreSQL headers.  The vector code is compiled for AVX2
// with a target attribute and chosen at run time; a CPU without AVX2 gets
// no sieve (sieve_available() is false) and the pass ranks the touched list
// as before.
#pragma once

#include <cstddef>
#include <cstdint>

namespace recsys::detail {

// The prefilter's constants (see SimWorker::item in core_train.cpp): when
// bound = fl(thr · d) is a normal, finite double, dot < fl(bound · kMargin)
// implies fl(dot / d) < thr, so the entry cannot pass.
constexpr double kSieveMargin = 1 - 1e-12;

// The pass sieves an item's sums when its multiply-adds (which bound the
// sums it touches) reach this share of the catalogue, and then accumulates
// them without the touched list.  core_bench --events 10000000 --user-skew
// 3.42 50 3 1 0 (one thread), best of 3: 1.50 s at 10 and 15 %, 1.54 s at
// 25, 1.55 s at 5, 1.71-1.86 s without the sieve; on the default log
// (--events 10000000 50 3 1 0) 0.82-0.88 s at 15-60 % and without, so no
// loss where fewer items are heavy.
constexpr std::size_t kSieveWorkPercent = 15;

inline bool sieve_pays(std::size_t work, std::size_t n_items) { return work * 100 >= n_items * kSieveWorkPercent; }

// True when this CPU runs the vector sieve (the pass only sieves then: a
// scalar sieve is not faster than the touched list).
bool sieve_available();

// Sieves acc[b, e): every entry is set to 0; an entry j is returned (its
// rank in ids, its sum in dots, in increasing j) unless its sum is 0 or the
// prefilter rules it out for the threshold thr, with d = ni · norm[j]:
//   bound = thr · d, kMinNormal4 <= bound <= kMaxHalf and dot < bound · kSieveMargin.
// ids and dots have room for e - b entries.  Returns how many were kept.
// With AVX2 the vector code, else a scalar loop (the same entries).
std::size_t sieve_run(double* acc, const double* norm, std::size_t b, std::size_t e, double ni, double thr,
                      int32_t* ids, double* dots);

}  // namespace recsys::detail
