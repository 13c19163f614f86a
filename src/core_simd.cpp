// The core's vector kernels (the cosine pass's sieve, the bootstrap's sums):
// see core_simd.hpp.
#include "core_simd.hpp"

#include <atomic>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define RECSYS_AVX2 1
#endif

namespace recsys::detail {

namespace {
// The scalar draws: the rule itself, the tail of a vector run, and every
// draw without AVX-512.
void splitmix64_indices_scalar(uint64_t* state, std::size_t n, uint64_t m, uint64_t reject_below, uint64_t* idx) {
    for (std::size_t d = 0; d < n; ++d) {
        unsigned __int128 x = static_cast<unsigned __int128>(splitmix64_next(state)) * m;
        while (static_cast<uint64_t>(x) < reject_below)
            x = static_cast<unsigned __int128>(splitmix64_next(state)) * m;
        idx[d] = static_cast<uint64_t>(x >> 64);
    }
}

// The scalar sieve: the tail of a run, and the whole run without AVX2.
std::size_t sieve_scalar(double* acc, const double* norm, std::size_t b, std::size_t e, double ni, double thr,
                         int32_t* ids, double* dots, std::size_t n) {
    for (std::size_t j = b; j < e; ++j) {
        const double dot = acc[j];
        acc[j] = 0;
        if (dot == 0) continue;
        const double bound = thr * (ni * norm[j]);
        if (ruled_out(dot, bound)) continue;
        ids[n] = static_cast<int32_t>(j);
        dots[n] = dot;
        ++n;
    }
    return n;
}
}  // namespace

#ifdef RECSYS_AVX2

bool simd_available() {
    static const bool yes = __builtin_cpu_supports("avx2");
    return yes;
}

static std::atomic<int> simd_cap{2};  // cap_simd_level's

static bool avx512_available() {
    static const bool yes = __builtin_cpu_supports("avx512f");
    return yes && simd_cap.load(std::memory_order_relaxed) >= 2;
}

static bool avx512dq_available() {
    static const bool yes = __builtin_cpu_supports("avx512dq");
    return yes && avx512_available();
}

// A right shift and an unsigned 32 x 32 -> 64-bit multiply of every lane
// (zero-masked: GCC 12's unmasked forms read an "undefined" vector that
// -Wmaybe-uninitialized flags).
#define SRL64(v, k) _mm512_maskz_srli_epi64(static_cast<__mmask8>(0xff), (v), (k))
#define MULU32(a, b) _mm512_maskz_mul_epu32(static_cast<__mmask8>(0xff), (a), (b))

// splitmix64_indices for m < 2^32, eight outputs a vector: lane k hashes
// the state k + 1 steps on.  x m's low 64 bits come from one 64-bit
// multiply; its high ones, with x = xh 2^32 + xl, are (xh m + (xl m >>
// 32)) >> 32 (the sum fits: xh m <= (2^32 - 1)^2).  A vector with a
// rejected lane is done again by the scalar rule, which skips that output
// and takes the next, as one at a time would.
__attribute__((target("avx512f,avx512dq"))) static void splitmix64_indices_avx512(uint64_t* state, std::size_t n,
                                                                                  uint64_t m, uint64_t reject_below,
                                                                                  uint64_t* idx) {
    constexpr uint64_t kGamma = 0x9e3779b97f4a7c15ull;
    const __m512i c1 = _mm512_set1_epi64(static_cast<long long>(0xbf58476d1ce4e5b9ull));
    const __m512i c2 = _mm512_set1_epi64(static_cast<long long>(0x94d049bb133111ebull));
    const __m512i mv = _mm512_set1_epi64(static_cast<long long>(m));
    const __m512i below = _mm512_set1_epi64(static_cast<long long>(reject_below));
    const __m512i ahead = _mm512_mullo_epi64(_mm512_set_epi64(8, 7, 6, 5, 4, 3, 2, 1),
                                             _mm512_set1_epi64(static_cast<long long>(kGamma)));
    std::size_t d = 0;
    while (d + 8 <= n) {
        __m512i z = _mm512_add_epi64(_mm512_set1_epi64(static_cast<long long>(*state)), ahead);
        z = _mm512_mullo_epi64(_mm512_xor_si512(z, SRL64(z, 30)), c1);
        z = _mm512_mullo_epi64(_mm512_xor_si512(z, SRL64(z, 27)), c2);
        z = _mm512_xor_si512(z, SRL64(z, 31));
        if (_mm512_cmplt_epu64_mask(_mm512_mullo_epi64(z, mv), below) != 0) {
            splitmix64_indices_scalar(state, 8, m, reject_below, idx + d);
            d += 8;
            continue;
        }
        const __m512i hi = SRL64(
            _mm512_add_epi64(MULU32(SRL64(z, 32), mv), SRL64(MULU32(z, mv), 32)),
            32);
        _mm512_storeu_si512(idx + d, hi);
        *state += 8 * kGamma;
        d += 8;
    }
    _mm256_zeroupper();
    splitmix64_indices_scalar(state, n - d, m, reject_below, idx + d);
}
#undef SRL64
#undef MULU32

int simd_level() {
    if (!simd_available() || simd_cap.load(std::memory_order_relaxed) < 1) return 0;
    return avx512_available() ? 2 : 1;
}

void cap_simd_level(int level) { simd_cap.store(level, std::memory_order_relaxed); }

// Appends the kept lanes (the set bits of m, m != 0) of the vector at j,
// stored in lane[], to ids and dots from n; returns the new count.
__attribute__((always_inline)) inline std::size_t append_lanes(unsigned m, const double* lane, std::size_t j,
                                                               int32_t* ids, double* dots, std::size_t n) {
    do {
        const unsigned k = static_cast<unsigned>(__builtin_ctz(m));
        ids[n] = static_cast<int32_t>(j + k);
        dots[n] = lane[k];
        ++n;
        m &= m - 1;
    } while (m != 0);
    return n;
}

// Four sums at a time.  Each lane computes d, bound and bound · kSieveMargin with
// the same IEEE operations as the scalar test (no fused multiply-add), so a
// lane is ruled out exactly when the scalar prefilter would rule it out; the
// rest (a few percent of the catalogue once the threshold has risen) are
// written out in order for the exact test.  With Ranged, every lane's bound
// is known to be normal and finite (sieve_run's norm_lo and norm_hi), and
// the lanes skip that test.
struct SieveConsts {
    __m256d ni, thr, min, max, margin, zero;
};

template <bool Ranged>
__attribute__((target("avx2"), always_inline)) inline std::size_t sieve4(const SieveConsts& c, __m256d dot,
                                                                        const double* norm, std::size_t j,
                                                                        int32_t* ids, double* dots,
                                                                        std::size_t n) {
    const __m256d d = _mm256_mul_pd(c.ni, _mm256_loadu_pd(norm + j));
    const __m256d bound = _mm256_mul_pd(c.thr, d);
    __m256d out = _mm256_cmp_pd(dot, _mm256_mul_pd(bound, c.margin), _CMP_LT_OQ);
    if (!Ranged)
        out = _mm256_and_pd(
            _mm256_and_pd(_mm256_cmp_pd(bound, c.min, _CMP_GE_OQ), _mm256_cmp_pd(bound, c.max, _CMP_LE_OQ)), out);
    const __m256d nonzero = _mm256_cmp_pd(dot, c.zero, _CMP_NEQ_UQ);
    unsigned m = static_cast<unsigned>(_mm256_movemask_pd(_mm256_andnot_pd(out, nonzero)));
    if (m == 0) return n;
    alignas(32) double lane[4];
    _mm256_store_pd(lane, dot);
    return append_lanes(m, lane, j, ids, dots, n);
}

// The run four sums at a time, each cleared and compared (skipping lines
// of untouched sums was measured slower: see docs/benchmarks.md), then the
// tail by the scalar loop.
template <bool Ranged>
__attribute__((target("avx2"))) static std::size_t sieve_avx2(double* acc, const double* norm, std::size_t b,
                                                              std::size_t e, double ni, double thr, int32_t* ids,
                                                              double* dots) {
    const SieveConsts c{_mm256_set1_pd(ni),         _mm256_set1_pd(thr),          _mm256_set1_pd(kSieveMinBound),
                        _mm256_set1_pd(kSieveMaxBound), _mm256_set1_pd(kSieveMargin), _mm256_setzero_pd()};
    std::size_t n = 0, j = b;
    for (; j + 4 <= e; j += 4) {
        const __m256d dot = _mm256_loadu_pd(acc + j);
        _mm256_storeu_pd(acc + j, c.zero);
        n = sieve4<Ranged>(c, dot, norm, j, ids, dots, n);
    }
    // Clear the upper halves before the caller's SSE code runs again: GCC
    // emits no vzeroupper for a target("avx2") function inside a portable
    // build, and without it the whole pass ran 25% slower (core_bench).
    _mm256_zeroupper();
    return sieve_scalar(acc, norm, j, e, ni, thr, ids, dots, n);  // the tail
}

// The same eight sums at a time, where the CPU has AVX-512: the lanes' tests
// land in a mask register.  The same IEEE operations lane by lane.
template <bool Ranged>
__attribute__((target("avx512f"))) static std::size_t sieve_avx512(double* acc, const double* norm,
                                                                  std::size_t b, std::size_t e, double ni,
                                                                  double thr, int32_t* ids, double* dots) {
    const __m512d vni = _mm512_set1_pd(ni), vthr = _mm512_set1_pd(thr), vmin = _mm512_set1_pd(kSieveMinBound),
                  vmax = _mm512_set1_pd(kSieveMaxBound), vmargin = _mm512_set1_pd(kSieveMargin),
                  zero = _mm512_setzero_pd();
    std::size_t n = 0, j = b;
    for (; j + 8 <= e; j += 8) {
        const __m512d dot = _mm512_loadu_pd(acc + j);
        _mm512_storeu_pd(acc + j, zero);
        const __m512d bound = _mm512_mul_pd(vthr, _mm512_mul_pd(vni, _mm512_loadu_pd(norm + j)));
        __mmask8 out = _mm512_cmp_pd_mask(dot, _mm512_mul_pd(bound, vmargin), _CMP_LT_OQ);
        if (!Ranged)
            out = _mm512_kand(out, _mm512_kand(_mm512_cmp_pd_mask(bound, vmin, _CMP_GE_OQ),
                                               _mm512_cmp_pd_mask(bound, vmax, _CMP_LE_OQ)));
        unsigned m = _mm512_mask_cmp_pd_mask(static_cast<__mmask8>(~out), dot, zero, _CMP_NEQ_UQ);
        if (m == 0) continue;
        alignas(64) double lane[8];
        _mm512_store_pd(lane, dot);
        n = append_lanes(m, lane, j, ids, dots, n);
    }
    _mm256_zeroupper();
    return sieve_scalar(acc, norm, j, e, ni, thr, ids, dots, n);  // the tail
}

// The bootstrap's sums for four resamples at once (core_evaluate.cpp's
// sum_counts_k with P = 4 and no wrapped count): lane p of each vector is
// resample p, so every resample's sums are the same multiplications and
// additions in the same order (units ascending) as the scalar loop's.  The
// four count arrays are read 16 units at a time and transposed so that one
// unit's four counts sit in four bytes.
template <std::size_t K>
__attribute__((target("avx2"))) static void boot_sum4(uint8_t* const* low, const double* rows, std::size_t m,
                                                     double* sum) {
    __m256d s[K];
    for (std::size_t c = 0; c < K; ++c) s[c] = _mm256_setzero_pd();
    const __m128i zero = _mm_setzero_si128();
    std::size_t j = 0;
    for (; j + 16 <= m; j += 16) {
        __m128i l[4];
        for (int p = 0; p < 4; ++p) {
            __m128i* const at = reinterpret_cast<__m128i*>(low[p] + j);
            l[p] = _mm_loadu_si128(at);
            _mm_storeu_si128(at, zero);
        }
        const __m128i a0 = _mm_unpacklo_epi8(l[0], l[1]), a1 = _mm_unpackhi_epi8(l[0], l[1]);
        const __m128i b0 = _mm_unpacklo_epi8(l[2], l[3]), b1 = _mm_unpackhi_epi8(l[2], l[3]);
        const __m128i q[4] = {_mm_unpacklo_epi16(a0, b0), _mm_unpackhi_epi16(a0, b0), _mm_unpacklo_epi16(a1, b1),
                              _mm_unpackhi_epi16(a1, b1)};
        const double* row = rows + j * K;
        for (int g = 0; g < 4; ++g) {
            __m128i w = q[g];
            for (int t = 0; t < 4; ++t, row += K) {
                const __m256d cnt = _mm256_cvtepi32_pd(_mm_cvtepu8_epi32(w));
                w = _mm_srli_si128(w, 4);
                for (std::size_t c = 0; c < K; ++c)
                    s[c] = _mm256_add_pd(s[c], _mm256_mul_pd(cnt, _mm256_broadcast_sd(row + c)));
            }
        }
    }
    alignas(32) double lane[K][4];
    for (std::size_t c = 0; c < K; ++c) _mm256_store_pd(lane[c], s[c]);
    _mm256_zeroupper();
    for (; j < m; ++j) {  // the tail, scalar, continuing the same sums
        const double* row = rows + j * K;
        for (int p = 0; p < 4; ++p) {
            const double cd = static_cast<double>(low[p][j]);
            low[p][j] = 0;
            for (std::size_t c = 0; c < K; ++c) lane[c][p] += cd * row[c];
        }
    }
    for (int p = 0; p < 4; ++p)
        for (std::size_t c = 0; c < K; ++c) sum[p * kBootColumns + c] = lane[c][p];
}

#else

bool simd_available() { return false; }
int simd_level() { return 0; }
void cap_simd_level(int) {}

#endif

std::size_t sieve_run(double* acc, const double* norm, std::size_t b, std::size_t e, double ni, double thr,
                      int32_t* ids, double* dots, double norm_lo, double norm_hi) {
#ifdef RECSYS_AVX2
    if (simd_level() > 0) {
        // Rounding is monotonic: when the lowest and the highest norm give
        // a normal, finite bound, every norm between them does.
        const double lo = thr * (ni * norm_lo), hi = thr * (ni * norm_hi);
        const bool ranged = lo >= kSieveMinBound && hi <= kSieveMaxBound;
        if (avx512_available())
            return ranged ? sieve_avx512<true>(acc, norm, b, e, ni, thr, ids, dots)
                          : sieve_avx512<false>(acc, norm, b, e, ni, thr, ids, dots);
        return ranged ? sieve_avx2<true>(acc, norm, b, e, ni, thr, ids, dots)
                      : sieve_avx2<false>(acc, norm, b, e, ni, thr, ids, dots);
    }
#else
    (void)norm_lo; (void)norm_hi;
#endif
    return sieve_scalar(acc, norm, b, e, ni, thr, ids, dots, 0);
}

void splitmix64_indices(uint64_t* state, std::size_t n, uint64_t m, uint64_t reject_below, uint64_t* idx) {
#ifdef RECSYS_AVX2
    if (m <= 0xffffffffull && simd_level() >= 2 && avx512dq_available())
        return splitmix64_indices_avx512(state, n, m, reject_below, idx);
#endif
    splitmix64_indices_scalar(state, n, m, reject_below, idx);
}

bool bootstrap_sum4(std::size_t k, uint8_t* const* low, const double* rows, std::size_t m, double* sum) {
#ifdef RECSYS_AVX2
    if (!simd_available()) return false;
    switch (k) {
        case 1: boot_sum4<1>(low, rows, m, sum); return true;
        case 2: boot_sum4<2>(low, rows, m, sum); return true;
        case 3: boot_sum4<3>(low, rows, m, sum); return true;
        case 4: boot_sum4<4>(low, rows, m, sum); return true;
        case 5: boot_sum4<5>(low, rows, m, sum); return true;
        case 6: boot_sum4<6>(low, rows, m, sum); return true;
        case 7: boot_sum4<7>(low, rows, m, sum); return true;
        case 8: boot_sum4<8>(low, rows, m, sum); return true;
        default: return false;
    }
#else
    (void)k; (void)low; (void)rows; (void)m; (void)sum;
    return false;
#endif
}

}  // namespace recsys::detail
