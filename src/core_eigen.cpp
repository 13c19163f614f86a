// core_eigen.cpp - train_eigen(): the cosine item-item model of train(),
// computed a second, independent way with Eigen sparse matrices.
//
// train() (core_train.cpp) is the production path: hand-written radix sorts,
// CSR/CSC and a per-item dense accumulator.  This file follows the textbook
// formulation instead, so the two can be checked against each other and
// timed side by side (test/unit/eigen_test.cpp, bench/core_bench.cpp):
//   1. validate weights (same rules and messages as train());
//   2. map user and item ids to dense indices (sorted distinct ids);
//   3. W = users x items SparseMatrix via setFromTriplets (duplicates summed);
//   4. Wn = W * D^-1, D = diag(column norms);
//   5. per block of item columns: S = Wn^T * Wn.middleCols(start, len), then
//      top-K of each column of S (sim desc, id asc; core_topk.hpp).
// The similarities are sum_u (w_ui/|w_i|)(w_uj/|w_j|), which can differ from
// train()'s dot/(|w_i||w_j|) in the last bits (by more when weights are so
// extreme, below ~1e-154 or above ~1e154, that squares or products leave the
// normal double range).  Everything else (ids, n_users, n_cells, popularity,
// errors) is exactly as in train().
// PostgreSQL-free.  Not part of the extension build (see Makefile CORE_OBJS).
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

// Eigen builds warning-free with g++ 12 at -O1/-O2; these only guard against
// newer GCC versions flagging Eigen's internals under -Werror.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-copy"
#pragma GCC diagnostic ignored "-Wclass-memaccess"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/SparseCore>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include "core.hpp"
#include "core_topk.hpp"

namespace recsys {

namespace {

using detail::poll_cancel;
using detail::Scored;

using SpMat = Eigen::SparseMatrix<double, Eigen::ColMajor, int>;
using SpTriplet = Eigen::Triplet<double, int>;

constexpr std::size_t kChunk = std::size_t(1) << 16;  // cells between cancel polls
constexpr int kBlockItems = 256;                      // item columns per product block
// Cap on the (upper bound of the) non-zeros of one product block, so memory
// stays bounded even when a few items co-occur with almost everything.
constexpr double kMaxBlockNnz = double(1 << 22);

// Sorted distinct values of `ids`.
std::vector<int32_t> distinct_sorted(std::vector<int32_t> ids) {
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    ids.shrink_to_fit();
    return ids;
}

inline int dense_index(const std::vector<int32_t>& sorted, int32_t id) {
    return static_cast<int>(std::lower_bound(sorted.begin(), sorted.end(), id) - sorted.begin());
}

}  // namespace

Model train_eigen(const std::vector<Triplet>& cells, const TrainOptions& opt,
                  const CancelCheck& cancel) {
    if (opt.neighbors < 0)
        throw InvalidInput("recsys: neighbors must be >= 0 (0 keeps all), got " +
                           std::to_string(opt.neighbors));
    poll_cancel(cancel);

    const std::size_t n = cells.size();
    if (n > static_cast<std::size_t>(INT_MAX))
        throw InvalidInput("recsys: too many cells for train_eigen (" + std::to_string(n) + ")");

    // 1. Validate.
    detail::validate_cells(cells, cancel);

    Model m;
    if (n == 0) {
        m.nbr_offsets.assign(1, 0);
        return m;
    }

    // 2. Dense ids.
    std::vector<int32_t> user_ids;
    {
        std::vector<int32_t> u(n), i(n);
        for (std::size_t k = 0; k < n; ++k) {
            u[k] = cells[k].user;
            i[k] = cells[k].item;
        }
        user_ids = distinct_sorted(std::move(u));
        m.item_ids = distinct_sorted(std::move(i));
    }
    poll_cancel(cancel);
    const int n_users = static_cast<int>(user_ids.size());
    const int n_items = static_cast<int>(m.item_ids.size());

    // 3. W, users x items, duplicates summed.
    SpMat W(n_users, n_items);
    {
        std::vector<SpTriplet> trips;
        trips.reserve(n);
        for (std::size_t base = 0; base < n; base += kChunk) {
            poll_cancel(cancel);
            const std::size_t end = std::min(n, base + kChunk);
            for (std::size_t k = base; k < end; ++k)
                trips.emplace_back(dense_index(user_ids, cells[k].user),
                                   dense_index(m.item_ids, cells[k].item), cells[k].weight);
        }
        W.setFromTriplets(trips.begin(), trips.end());  // sums duplicates
    }
    W.makeCompressed();
    poll_cancel(cancel);
    m.n_users = n_users;
    m.n_cells = W.nonZeros();

    // Column norms (users ascending, as train()), overflow checks, popularity.
    Eigen::VectorXd inv_norm(n_items);
    std::vector<int32_t> users_of(static_cast<std::size_t>(n_items));
    std::vector<int64_t> row_nnz(static_cast<std::size_t>(n_users), 0);
    for (int i = 0; i < n_items; ++i) {
        double s = 0;
        int cnt = 0;
        for (SpMat::InnerIterator it(W, i); it; ++it) {
            const double w = it.value();
            if (!std::isfinite(w))
                throw InvalidInput("recsys: the summed weight of (user " +
                                   std::to_string(user_ids[static_cast<std::size_t>(it.row())]) +
                                   ", item " +
                                   std::to_string(m.item_ids[static_cast<std::size_t>(i)]) +
                                   ") overflows a double");
            s += w * w;
            ++cnt;
            ++row_nnz[static_cast<std::size_t>(it.row())];
        }
        const double norm = std::sqrt(s);
        if (!std::isfinite(norm))
            throw InvalidInput("recsys: weights of item " +
                               std::to_string(m.item_ids[static_cast<std::size_t>(i)]) +
                               " are too large: the squared norm overflows a double");
        inv_norm[i] = 1.0 / norm;
        users_of[static_cast<std::size_t>(i)] = cnt;
    }
    {
        std::vector<int32_t> order(static_cast<std::size_t>(n_items));
        for (int i = 0; i < n_items; ++i) order[static_cast<std::size_t>(i)] = i;
        std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
            const int32_t ca = users_of[static_cast<std::size_t>(a)];
            const int32_t cb = users_of[static_cast<std::size_t>(b)];
            if (ca != cb) return ca > cb;
            return a < b;
        });
        m.popular_ids.resize(static_cast<std::size_t>(n_items));
        m.popular_users.resize(static_cast<std::size_t>(n_items));
        for (std::size_t r = 0; r < order.size(); ++r) {
            const auto i = static_cast<std::size_t>(order[r]);
            m.popular_ids[r] = m.item_ids[i];
            m.popular_users[r] = users_of[i];
        }
    }
    // Upper bound of the non-zeros of column i of Wn^T Wn: sum over its
    // users of their row lengths, capped at n_items.
    std::vector<double> reach(static_cast<std::size_t>(n_items));
    for (int i = 0; i < n_items; ++i) {
        double r = 0;
        for (SpMat::InnerIterator it(W, i); it; ++it)
            r += static_cast<double>(row_nnz[static_cast<std::size_t>(it.row())]);
        reach[static_cast<std::size_t>(i)] = std::min(r, static_cast<double>(n_items));
    }
    std::vector<int64_t>().swap(row_nnz);
    poll_cancel(cancel);

    // 4. Wn = W D^-1 (unit columns); Wt = Wn^T stored column-major, so that
    // column u of Wt is user u's row: the product walks rows, as train() does.
    SpMat Wn = W * inv_norm.asDiagonal();
    W = SpMat();
    Wn.makeCompressed();
    SpMat Wt = Wn.transpose();
    poll_cancel(cancel);

    // 5. Similarities, a block of item columns at a time.
    const std::size_t keep = opt.neighbors > 0 ? static_cast<std::size_t>(opt.neighbors) : 0;
    detail::TopK top(keep);
    top.reserve(keep > 0 ? std::min<std::size_t>(keep, static_cast<std::size_t>(n_items))
                         : static_cast<std::size_t>(n_items));
    m.nbr_offsets.reserve(static_cast<std::size_t>(n_items) + 1);
    m.nbr_offsets.push_back(0);
    SpMat S;
    for (int start = 0; start < n_items;) {
        poll_cancel(cancel);
        if (opt.progress) opt.progress("similarities", start, n_items);
        int len = 0;
        double bound = 0;
        while (start + len < n_items && len < kBlockItems) {
            const double r = reach[static_cast<std::size_t>(start + len)];
            if (len > 0 && bound + r > kMaxBlockNnz) break;
            bound += r;
            ++len;
        }
        S = Wt * Wn.middleCols(start, len);
        for (int c = 0; c < len; ++c) {
            const int j = start + c;
            top.clear();
            for (SpMat::InnerIterator it(S, c); it; ++it) {
                const int i = static_cast<int>(it.row());
                if (i == j) continue;
                const double sim = it.value();
                if (sim > 0 && std::isfinite(sim)) top.offer(Scored{sim, i});
            }
            for (const Scored& s : top.sorted()) {
                m.nbr_ids.push_back(m.item_ids[static_cast<std::size_t>(s.id)]);
                m.nbr_sims.push_back(s.score);
            }
            m.nbr_offsets.push_back(static_cast<int64_t>(m.nbr_ids.size()));
        }
        start += len;
    }
    poll_cancel(cancel);
    if (opt.progress) opt.progress("similarities", n_items, n_items);
    m.nbr_ids.shrink_to_fit();
    m.nbr_sims.shrink_to_fit();
    return m;
}

}  // namespace recsys
