// core_shape.cpp - the shape of a cell list, for the memory estimate that
// training checks before it allocates.
#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

#include "core.hpp"
#include "core_topk.hpp"
#include "core_parallel.hpp"

namespace recsys {
namespace {

// Number of distinct values of field f over the cells.
template <typename F>
int64_t count_distinct(const Triplet* cells, std::size_t n, F f)
{
    if (n == 0)
        return 0;
    int64_t lo = f(cells[0]), hi = lo;
    for (std::size_t k = 1; k < n; ++k) {
        lo = std::min<int64_t>(lo, f(cells[k]));
        hi = std::max<int64_t>(hi, f(cells[k]));
    }
    const uint64_t range = static_cast<uint64_t>(hi - lo) + 1;
    if (range <= (uint64_t(1) << 26)) {   // at most 8 MiB of bits
        std::vector<uint64_t> bits((range + 63) / 64);
        int64_t distinct = 0;
        for (std::size_t k = 0; k < n; ++k) {
            const uint64_t v = static_cast<uint64_t>(f(cells[k]) - lo);
            const uint64_t mask = uint64_t(1) << (v & 63);
            if (!(bits[v >> 6] & mask)) {
                bits[v >> 6] |= mask;
                ++distinct;
            }
        }
        return distinct;
    }
    std::vector<int32_t> ids(n);
    for (std::size_t k = 0; k < n; ++k)
        ids[k] = f(cells[k]);
    std::sort(ids.begin(), ids.end());
    return static_cast<int64_t>(std::unique(ids.begin(), ids.end()) - ids.begin());
}

}  // namespace

MatrixShape measure(const Triplet* cells, std::size_t n)
{
    // The users and the items each on a thread of their own when the cells
    // are many (each count reads them all twice: 26 ms at the 10M bench's
    // 5M cells on one thread).
    MatrixShape s;
    const bool two = n >= (std::size_t(1) << 20) && std::thread::hardware_concurrency() >= 2;
    detail::parallel_blocks(
        2, 1, two,
        [&](std::size_t h, std::size_t, int) {
            if (h == 0)
                s.users = count_distinct(cells, n, [](const Triplet& t) { return t.user; });
            else
                s.items = count_distinct(cells, n, [](const Triplet& t) { return t.item; });
        },
        CancelCheck{}, [](std::size_t) {});
    return s;
}

}  // namespace recsys
