// core_topk.hpp - internal helpers shared by the core_*.cpp files.
// Not part of the public API; PostgreSQL-free like core.hpp.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core.hpp"

namespace recsys {
namespace detail {

// A scored candidate: a neighbour (train) or a recommended item (recommend).
struct Scored {
    double score;
    int32_t id;
};

// The one ranking rule of the core: score descending, then id ascending.
// Scores are never NaN here (callers keep only score > 0).
inline bool ranks_before(const Scored& a, const Scored& b) {
    if (a.score != b.score) return a.score > b.score;
    return a.id < b.id;
}

// Keeps the best `k` of `v` (k == 0: keep all), sorted by ranks_before.
// O(n + k log k).  Ids are assumed distinct, so the order is total.
inline void select_top_k(std::vector<Scored>& v, std::size_t k) {
    if (k != 0 && k < v.size()) {
        std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end(),
                         ranks_before);
        v.resize(k);
    }
    std::sort(v.begin(), v.end(), ranks_before);
}

// Calls the CancelCheck (if any) and throws Cancelled when it says so.
// Only ever called from the thread that called into the core.
inline void poll_cancel(const CancelCheck& cancel) {
    if (cancel && cancel()) throw Cancelled();
}

}  // namespace detail
}  // namespace recsys
