// The accumulator sieve of the cosine similarity pass: see core_sieve.hpp.
#include "core_sieve.hpp"

#include <limits>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define RECSYS_SIEVE_AVX2 1
#endif

namespace recsys::detail {

namespace {
constexpr double kMinNormal4 = 4 * std::numeric_limits<double>::min();
constexpr double kMaxHalf = std::numeric_limits<double>::max() / 2;

// The scalar sieve: the tail of a run, and the whole run without AVX2.
std::size_t sieve_scalar(double* acc, const double* norm, std::size_t b, std::size_t e, double ni, double thr,
                         int32_t* ids, double* dots, std::size_t n) {
    for (std::size_t j = b; j < e; ++j) {
        const double dot = acc[j];
        acc[j] = 0;
        if (dot == 0) continue;
        const double bound = thr * (ni * norm[j]);
        if (bound >= kMinNormal4 && bound <= kMaxHalf && dot < bound * kSieveMargin) continue;
        ids[n] = static_cast<int32_t>(j);
        dots[n] = dot;
        ++n;
    }
    return n;
}
}  // namespace

#ifdef RECSYS_SIEVE_AVX2

bool sieve_available() {
    static const bool yes = __builtin_cpu_supports("avx2");
    return yes;
}

// Four sums at a time.  Each lane computes d, bound and bound · kMargin with
// the same IEEE operations as the scalar test (no fused multiply-add), so a
// lane is ruled out exactly when the scalar prefilter would rule it out; the
// rest (a few percent of the catalogue once the threshold has risen) are
// written out in order for the exact test.
struct SieveConsts {
    __m256d ni, thr, min, max, margin, zero;
};

__attribute__((target("avx2"), always_inline)) inline std::size_t sieve4(const SieveConsts& c, __m256d dot,
                                                                        const double* norm, std::size_t j,
                                                                        int32_t* ids, double* dots,
                                                                        std::size_t n) {
    const __m256d d = _mm256_mul_pd(c.ni, _mm256_loadu_pd(norm + j));
    const __m256d bound = _mm256_mul_pd(c.thr, d);
    const __m256d ruled_out =
        _mm256_and_pd(_mm256_and_pd(_mm256_cmp_pd(bound, c.min, _CMP_GE_OQ), _mm256_cmp_pd(bound, c.max, _CMP_LE_OQ)),
                      _mm256_cmp_pd(dot, _mm256_mul_pd(bound, c.margin), _CMP_LT_OQ));
    const __m256d nonzero = _mm256_cmp_pd(dot, c.zero, _CMP_NEQ_UQ);
    unsigned m = static_cast<unsigned>(_mm256_movemask_pd(_mm256_andnot_pd(ruled_out, nonzero)));
    if (m == 0) return n;
    alignas(32) double lane[4];
    _mm256_store_pd(lane, dot);
    do {
        const unsigned k = static_cast<unsigned>(__builtin_ctz(m));
        ids[n] = static_cast<int32_t>(j + k);
        dots[n] = lane[k];
        ++n;
        m &= m - 1;
    } while (m != 0);
    return n;
}

// Eight sums (one cache line when acc is aligned) at a time: a line whose
// sums are all +0 (untouched) is neither cleared nor compared, and its norms
// are not read, which spares the bandwidth on an item's rarely touched tail.
__attribute__((target("avx2"))) static std::size_t sieve_avx2(double* acc, const double* norm, std::size_t b,
                                                              std::size_t e, double ni, double thr, int32_t* ids,
                                                              double* dots) {
    const SieveConsts c{_mm256_set1_pd(ni),         _mm256_set1_pd(thr),          _mm256_set1_pd(kMinNormal4),
                        _mm256_set1_pd(kMaxHalf), _mm256_set1_pd(kSieveMargin), _mm256_setzero_pd()};
    std::size_t n = 0, j = b;
    for (; j + 4 <= e; j += 4) {
        const __m256d dot = _mm256_loadu_pd(acc + j);
        _mm256_storeu_pd(acc + j, c.zero);
        n = sieve4(c, dot, norm, j, ids, dots, n);
    }
    // Clear the upper halves before the caller's SSE code runs again: GCC
    // emits no vzeroupper for a target("avx2") function inside a portable
    // build, and without it the whole pass ran 25% slower (core_bench).
    _mm256_zeroupper();
    return sieve_scalar(acc, norm, j, e, ni, thr, ids, dots, n);  // the tail
}

#else

bool sieve_available() { return false; }

#endif

std::size_t sieve_run(double* acc, const double* norm, std::size_t b, std::size_t e, double ni, double thr,
                      int32_t* ids, double* dots) {
#ifdef RECSYS_SIEVE_AVX2
    if (sieve_available()) return sieve_avx2(acc, norm, b, e, ni, thr, ids, dots);
#endif
    return sieve_scalar(acc, norm, b, e, ni, thr, ids, dots, 0);
}

}  // namespace recsys::detail
