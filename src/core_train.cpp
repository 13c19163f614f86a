// core_train.cpp - cosine item-item similarity, top-K neighbours per item.
//
// Pipeline (C = input cells, U = distinct users, I = distinct items):
//   1. validate weights;
//   2. stable LSD radix sort of (item, cell index) -> dense item index;
//   3. stable LSD radix sort of (user, cell index) -> dense user index;
//   4. counting sort, in item order, into a user-major CSR (items ascending
//      within a user, duplicates adjacent in input order) and merge duplicates;
//   5. item-major CSC, column norms, popularity;
//   6. per item i: dense accumulator of dot products over all users u of i and
//      their items j (work = sum_u nnz(u)^2), then top-K of the touched j.
// PostgreSQL-free.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>

#include "core.hpp"
#include "core_topk.hpp"

namespace recsys {

namespace {

using detail::poll_cancel;
using detail::Scored;

constexpr std::size_t kChunk = std::size_t(1) << 16;  // cells between cancel polls
constexpr uint32_t kSignFlip = 0x80000000u;            // int32 -> order-preserving uint32

inline uint32_t key_of(int32_t v) { return static_cast<uint32_t>(v) ^ kSignFlip; }
inline int32_t id_of_key(uint32_t k) { return static_cast<int32_t>(k ^ kSignFlip); }
inline uint32_t hi32(uint64_t x) { return static_cast<uint32_t>(x >> 32); }
inline uint32_t lo32(uint64_t x) { return static_cast<uint32_t>(x); }

template <class T>
void release(std::vector<T>& v) {
    std::vector<T>().swap(v);
}

// Stable sort of `a` by the upper 32 bits (LSD radix, 8 bits a pass);
// `tmp` must have a.size() elements.  Passes whose byte is constant are skipped.
void radix_sort_hi32(std::vector<uint64_t>& a, std::vector<uint64_t>& tmp,
                     const CancelCheck& cancel) {
    const std::size_t n = a.size();
    std::vector<std::size_t> cnt(4 * 256, 0);
    for (std::size_t base = 0; base < n; base += kChunk) {
        poll_cancel(cancel);
        const std::size_t end = std::min(n, base + kChunk);
        for (std::size_t k = base; k < end; ++k) {
            const uint32_t h = hi32(a[k]);
            ++cnt[0 * 256 + (h & 255)];
            ++cnt[1 * 256 + ((h >> 8) & 255)];
            ++cnt[2 * 256 + ((h >> 16) & 255)];
            ++cnt[3 * 256 + (h >> 24)];
        }
    }
    for (int pass = 0; pass < 4; ++pass) {
        std::size_t* c = &cnt[static_cast<std::size_t>(pass) * 256];
        bool trivial = false;
        for (int b = 0; b < 256; ++b)
            if (c[b] == n) trivial = true;
        if (trivial) continue;
        std::size_t sum = 0;
        for (int b = 0; b < 256; ++b) {
            const std::size_t t = c[b];
            c[b] = sum;
            sum += t;
        }
        const int shift = 32 + 8 * pass;
        for (std::size_t base = 0; base < n; base += kChunk) {
            poll_cancel(cancel);
            const std::size_t end = std::min(n, base + kChunk);
            for (std::size_t k = base; k < end; ++k) {
                const uint64_t x = a[k];
                tmp[c[(x >> shift) & 255]++] = x;
            }
        }
        a.swap(tmp);
    }
}

std::string describe_cell(const Triplet& t) {
    std::ostringstream os;
    os.precision(17);
    os << "(user " << t.user << ", item " << t.item << ", weight " << t.weight << ")";
    return os.str();
}

}  // namespace

std::size_t estimate_train_bytes(int64_t cells, int64_t users, int64_t items, int neighbors) {
    // Mirrors the allocations of train() below, stage by stage; every factor
    // is the byte size of an array we allocate (exactly sized, no growth).
    const double C = static_cast<double>(std::max<int64_t>(cells, 0));
    double U = static_cast<double>(std::max<int64_t>(users, 0));
    double I = static_cast<double>(std::max<int64_t>(items, 0));
    U = std::min(U, C);  // at most one user / item per cell
    I = std::min(I, C);
    // Stored neighbour pairs: at most min(K, I-1) per item, and at most
    // sum_u nnz(u)(nnz(u)-1) <= C * (min(I, C) - 1) overall.
    const double per_item = I > 1 ? I - 1 : 0;
    const double k = neighbors > 0 ? std::min<double>(neighbors, per_item) : per_item;
    const double P = std::min(I * k, C * per_item);
    // Stage 1 (sorting, counting into the CSR), at its worst: input 16C,
    // item keys 8C, user keys 8C, radix buffer 8C, radix counts, item_ids
    // 4I, user_ids 4U; then keys 8C + user_of 4C + input 16C + CSR 12C +
    // offsets 8(U+1).  The larger of the two moments:
    const double s1a = 16 * C + 8 * C + 8 * C + 8 * C + 8192 + 4 * I + 4 * U;
    const double s1b = 16 * C + 8 * C + 4 * C + 12 * C + 8 * (U + 1) + 4 * I + 4 * U;
    // Stage 2 (similarities): CSR 12C + 8(U+1), CSC 12C + 8(I+1),
    // item_ids 4I, user_ids 4U, popular 4I+4I + sort order 4I, norms 8I,
    // accumulator 8I, touched 4I, candidates 16I, output offsets 8(I+1),
    // output pairs 12P, per-item pair bounds 8I.
    const double s2 = 12 * C + 8 * (U + 1) + 12 * C + 8 * (I + 1) + 4 * I + 4 * U + 12 * I +
                      8 * I + 8 * I + 4 * I + 16 * I + 8 * (I + 1) + 12 * P + 8 * I;
    // Allocator bookkeeping: ~40 live blocks, plus stream/exception slack.
    const double slack = 40 * 64 + 16384;
    const double total = std::max({s1a, s1b, s2}) + slack;
    if (!(total < static_cast<double>(std::numeric_limits<std::size_t>::max())))
        return std::numeric_limits<std::size_t>::max();
    return static_cast<std::size_t>(total);
}

Model train(std::vector<Triplet> cells, const TrainOptions& opt, const CancelCheck& cancel) {
    if (opt.neighbors < 0)
        throw InvalidInput("recsys: neighbors must be >= 0 (0 keeps all), got " +
                           std::to_string(opt.neighbors));
    poll_cancel(cancel);

    const std::size_t n = cells.size();
    if (n > std::numeric_limits<uint32_t>::max())
        throw InvalidInput("recsys: too many cells for one training run (" + std::to_string(n) +
                           ")");

    // 1. Validate.
    for (std::size_t base = 0; base < n; base += kChunk) {
        poll_cancel(cancel);
        const std::size_t end = std::min(n, base + kChunk);
        for (std::size_t k = base; k < end; ++k) {
            const double w = cells[k].weight;
            if (!(std::isfinite(w) && w > 0))
                throw InvalidInput("recsys: every weight must be finite and > 0, got " +
                                   describe_cell(cells[k]));
        }
    }

    Model m;
    if (n == 0) {
        m.nbr_offsets.assign(1, 0);
        return m;
    }

    // 2. Dense item index: A[p] = (item key << 32 | cell index), sorted.
    std::vector<uint64_t> A(n), tmp(n);
    for (std::size_t k = 0; k < n; ++k)
        A[k] = (static_cast<uint64_t>(key_of(cells[k].item)) << 32) | k;
    radix_sort_hi32(A, tmp, cancel);
    std::size_t n_items = 1;
    for (std::size_t p = 1; p < n; ++p) n_items += hi32(A[p]) != hi32(A[p - 1]);
    m.item_ids.reserve(n_items);
    {
        uint32_t prev = hi32(A[0]);
        uint64_t d = 0;
        m.item_ids.push_back(id_of_key(prev));
        for (std::size_t p = 0; p < n; ++p) {
            const uint32_t h = hi32(A[p]);
            if (h != prev) {
                prev = h;
                ++d;
                m.item_ids.push_back(id_of_key(h));
            }
            A[p] = (d << 32) | lo32(A[p]);  // now (dense item << 32 | cell index)
        }
    }
    poll_cancel(cancel);

    // 3. Dense user index per cell.
    std::vector<uint64_t> B(n);
    for (std::size_t k = 0; k < n; ++k)
        B[k] = (static_cast<uint64_t>(key_of(cells[k].user)) << 32) | k;
    radix_sort_hi32(B, tmp, cancel);
    release(tmp);
    std::size_t n_users = 1;
    for (std::size_t p = 1; p < n; ++p) n_users += hi32(B[p]) != hi32(B[p - 1]);
    std::vector<int32_t> user_ids;
    user_ids.reserve(n_users);
    std::vector<uint32_t> user_of(n);
    {
        uint32_t prev = hi32(B[0]);
        uint32_t d = 0;
        user_ids.push_back(id_of_key(prev));
        for (std::size_t p = 0; p < n; ++p) {
            const uint32_t h = hi32(B[p]);
            if (h != prev) {
                prev = h;
                ++d;
                user_ids.push_back(id_of_key(h));
            }
            user_of[lo32(B[p])] = d;
        }
    }
    release(B);
    poll_cancel(cancel);

    // 4. User-major CSR by counting sort over A (item order, stable).
    std::vector<int64_t> row_off(n_users + 1, 0);
    for (std::size_t k = 0; k < n; ++k) ++row_off[user_of[k] + 1];
    for (std::size_t u = 0; u < n_users; ++u) row_off[u + 1] += row_off[u];
    std::vector<int32_t> row_item(n);
    std::vector<double> row_w(n);
    for (std::size_t base = 0; base < n; base += kChunk) {
        poll_cancel(cancel);
        const std::size_t end = std::min(n, base + kChunk);
        for (std::size_t p = base; p < end; ++p) {
            const uint32_t idx = lo32(A[p]);
            const int64_t q = row_off[user_of[idx]]++;
            row_item[q] = static_cast<int32_t>(hi32(A[p]));
            row_w[q] = cells[idx].weight;
        }
    }
    for (std::size_t u = n_users; u > 0; --u) row_off[u] = row_off[u - 1];
    row_off[0] = 0;
    release(A);
    release(user_of);
    release(cells);

    // Merge duplicate (user, item) cells, compacting in place.
    int64_t nnz = 0;
    for (std::size_t u = 0; u < n_users; ++u) {
        const int64_t start = row_off[u], end = row_off[u + 1];
        row_off[u] = nnz;
        for (int64_t q = start; q < end; ++q) {
            if (q > start && row_item[q] == row_item[nnz - 1]) {
                row_w[nnz - 1] += row_w[q];
                if (!std::isfinite(row_w[nnz - 1]))
                    throw InvalidInput("recsys: the summed weight of (user " +
                                       std::to_string(user_ids[u]) + ", item " +
                                       std::to_string(m.item_ids[row_item[q]]) +
                                       ") overflows a double");
            } else {
                row_item[nnz] = row_item[q];
                row_w[nnz] = row_w[q];
                ++nnz;
            }
        }
    }
    row_off[n_users] = nnz;
    m.n_users = static_cast<int64_t>(n_users);
    m.n_cells = nnz;
    poll_cancel(cancel);

    // 5. Item-major CSC (users ascending within an item), norms, popularity.
    std::vector<int64_t> col_off(n_items + 1, 0);
    for (int64_t q = 0; q < nnz; ++q) ++col_off[row_item[q] + 1];
    for (std::size_t i = 0; i < n_items; ++i) col_off[i + 1] += col_off[i];
    std::vector<int32_t> col_user(static_cast<std::size_t>(nnz));
    std::vector<double> col_w(static_cast<std::size_t>(nnz));
    for (std::size_t u = 0; u < n_users; ++u) {
        for (int64_t q = row_off[u]; q < row_off[u + 1]; ++q) {
            const int64_t p = col_off[row_item[q]]++;
            col_user[p] = static_cast<int32_t>(u);
            col_w[p] = row_w[q];
        }
    }
    for (std::size_t i = n_items; i > 0; --i) col_off[i] = col_off[i - 1];
    col_off[0] = 0;
    poll_cancel(cancel);

    std::vector<double> norm(n_items);
    for (std::size_t i = 0; i < n_items; ++i) {
        double s = 0;
        for (int64_t p = col_off[i]; p < col_off[i + 1]; ++p) s += col_w[p] * col_w[p];
        norm[i] = std::sqrt(s);
        if (!std::isfinite(norm[i]))
            throw InvalidInput("recsys: weights of item " + std::to_string(m.item_ids[i]) +
                               " are too large: the squared norm overflows a double");
    }

    {
        std::vector<int32_t> order(n_items);
        for (std::size_t i = 0; i < n_items; ++i) order[i] = static_cast<int32_t>(i);
        std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
            const int64_t ca = col_off[a + 1] - col_off[a], cb = col_off[b + 1] - col_off[b];
            if (ca != cb) return ca > cb;
            return a < b;
        });
        m.popular_ids.resize(n_items);
        m.popular_users.resize(n_items);
        for (std::size_t r = 0; r < n_items; ++r) {
            const int32_t i = order[r];
            m.popular_ids[r] = m.item_ids[i];
            m.popular_users[r] = static_cast<int32_t>(col_off[i + 1] - col_off[i]);
        }
    }
    poll_cancel(cancel);

    // 6. Similarities.  Reserve the exact upper bound of stored pairs so the
    // output never reallocates (keeps estimate_train_bytes honest).
    const std::size_t k_cap =
        opt.neighbors > 0 ? std::min<std::size_t>(opt.neighbors, n_items - 1) : n_items - 1;
    std::size_t pair_bound = 0;
    for (std::size_t i = 0; i < n_items; ++i) {
        std::size_t reach = 0;  // sum over users of i of their other items
        for (int64_t p = col_off[i]; p < col_off[i + 1] && reach < k_cap; ++p) {
            const int32_t u = col_user[p];
            reach += static_cast<std::size_t>(row_off[u + 1] - row_off[u] - 1);
        }
        pair_bound += std::min(reach, k_cap);
    }
    m.nbr_offsets.resize(n_items + 1);
    m.nbr_offsets[0] = 0;
    m.nbr_ids.reserve(pair_bound);
    m.nbr_sims.reserve(pair_bound);

    std::vector<double> acc(n_items, 0.0);
    std::vector<int32_t> touched;
    touched.reserve(n_items);
    std::vector<Scored> cand;
    cand.reserve(n_items);
    const std::size_t keep = opt.neighbors > 0 ? static_cast<std::size_t>(opt.neighbors) : 0;

    std::size_t work = 0;
    constexpr std::size_t kWorkPerPoll = std::size_t(1) << 20;  // ~1 ms of multiply-adds
    for (std::size_t i = 0; i < n_items; ++i) {
        if ((i & 255) == 0 || work >= kWorkPerPoll) {
            poll_cancel(cancel);
            work = 0;
        }
        touched.clear();
        for (int64_t p = col_off[i]; p < col_off[i + 1]; ++p) {
            const int32_t u = col_user[p];
            const double wi = col_w[p];
            const int64_t qb = row_off[u], qe = row_off[u + 1];
            work += static_cast<std::size_t>(qe - qb);
            for (int64_t q = qb; q < qe; ++q) {
                const int32_t j = row_item[q];
                const double prod = wi * row_w[q];
                double& a = acc[j];
                if (a == 0) {
                    if (prod == 0) continue;  // underflow: adds nothing, keep j untouched
                    touched.push_back(j);
                }
                a += prod;
            }
        }
        cand.clear();
        const double ni = norm[i];
        for (const int32_t j : touched) {
            const double dot = acc[j];
            acc[j] = 0;
            if (static_cast<std::size_t>(j) == i) continue;
            const double sim = dot / (ni * norm[j]);
            if (sim > 0 && std::isfinite(sim)) cand.push_back(Scored{sim, j});
        }
        detail::select_top_k(cand, keep);
        for (const Scored& s : cand) {
            m.nbr_ids.push_back(m.item_ids[static_cast<std::size_t>(s.id)]);
            m.nbr_sims.push_back(s.score);
        }
        m.nbr_offsets[i + 1] = static_cast<int64_t>(m.nbr_ids.size());
    }
    poll_cancel(cancel);
    return m;
}

}  // namespace recsys
