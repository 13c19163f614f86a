// core_train.cpp - cosine item-item similarity, top-K neighbours per item.
//
// Pipeline (C = input cells, U = distinct users, I = distinct items):
//   1. validate weights;
//   2-4. dense user and item indices (ascending ids) and a user-major CSR
//      (items ascending within a user, duplicates adjacent in input order),
//      then duplicates merged.  Compact ids (the glue's): lookup tables and
//      a radix sort by user (build_csr_tables); any ids: stable LSD radix
//      sorts of (item, cell index) and (user, cell index), then a counting
//      sort in item order (build_csr_radix);
//   5. item-major CSC, column norms, popularity; the rows and the norms then
//      name items by popularity rank (cache locality of step 6), and the
//      rows are packed to 8 bytes an entry when every weight is a float;
//   6. per item i: dense accumulator of dot products over all users u of i and
//      their items j (work = sum_u nnz(u)^2), then top-K of the touched j.
// With two threads (large inputs), the compact-id path of steps 2-4 (the
// tables side by side, the remapping and every radix pass on two halves of
// the cells, the rows sorted in blocks of users), the CSC (two halves of the
// users), the norms and output slots beside the popularity ranks and the
// packing, and step 6 run on both; the result never depends on it.
// Settings other than the 1.0 defaults hook in after 4 (the weighting) and 5
// (the similarity's factors and final formula): core_similarity.hpp.
// PostgreSQL-free.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>
#include <cstring>
#include <functional>
#include <limits>
#include <new>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "core.hpp"
#include "core_simd.hpp"
#include "core_similarity.hpp"
#include "core_parallel.hpp"
#include "core_topk.hpp"

namespace recsys {

namespace {

using detail::poll_cancel;
using detail::Scored;

constexpr std::size_t kChunk = std::size_t(1) << 16;  // cells between cancel polls
constexpr std::size_t kUserBlock = std::size_t(1) << 16;  // rows sorted between cancel polls
constexpr std::size_t kMinParallelCells = std::size_t(1) << 20;  // below: building on one thread
constexpr uint32_t kSignFlip = 0x80000000u;            // int32 -> order-preserving uint32

inline uint32_t key_of(int32_t v) { return static_cast<uint32_t>(v) ^ kSignFlip; }
inline int32_t id_of_key(uint32_t k) { return static_cast<int32_t>(k ^ kSignFlip); }
inline uint32_t hi32(uint64_t x) { return static_cast<uint32_t>(x >> 32); }
inline uint32_t lo32(uint64_t x) { return static_cast<uint32_t>(x); }

// One stored cell of a user's row (user-major CSR), items ascending.
struct RowEntry {
    int32_t item;  // dense item index
    int32_t user;  // dense user index while the CSR is built (in the padding), then unused
    double w;
};

// One stored cell of an item's column (item-major CSC), users ascending:
// where the user's row is, so the hot loop reads it without another lookup.
struct ColEntry {
    uint32_t row;  // offset of the user's row in the CSR
    uint32_t len;  // nnz of that row (>= 1)
    double w;      // w(user, item)
};

inline void prefetch(const void* p) {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(p);
#else
    (void)p;
#endif
}

template <class T, class A>
void release(std::vector<T, A>& v) {
    std::vector<T, A>().swap(v);
}

// The input cells: a vector train() owns, or the caller's buffer, borrowed
// as scratch (CellInput, core.hpp).  The build reads them, overwrites them
// (its radix passes alternate between them and the CSR's buffer), and
// releases them: an owned vector is freed there, a borrowed buffer is only
// no longer used.
class InputCells {
public:
    explicit InputCells(std::vector<Triplet>&& v) : own_(std::move(v)), p_(own_.data()), n_(own_.size()) {}
    InputCells(Triplet* p, std::size_t n) : p_(p), n_(n) {}
    std::size_t size() const { return n_; }
    Triplet* data() { return p_; }
    Triplet& operator[](std::size_t k) { return p_[k]; }
    const Triplet& operator[](std::size_t k) const { return p_[k]; }
    void release() {
        std::vector<Triplet>().swap(own_);
        p_ = nullptr;
        n_ = 0;
    }

private:
    std::vector<Triplet> own_;  // empty when borrowed
    Triplet* p_;
    std::size_t n_;
};

// The allocator of the CSR and the CSC: the similarity pass reads rows at
// random, so on Linux their pages are marked for transparent huge pages
// (when the system allows them on request, as
// /sys/kernel/mm/transparent_hugepage/enabled = madvise does): one TLB entry
// then covers 2 MB instead of 4 kB.  Before the vector first writes them, so
// that the kernel can fault them in as huge pages.  Same memory otherwise.
template <class T>
struct HugePageAllocator {
    using value_type = T;
    HugePageAllocator() = default;
    template <class U>
    HugePageAllocator(const HugePageAllocator<U>&) {}
    T* allocate(std::size_t n) {
        T* p = std::allocator<T>().allocate(n);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
        constexpr uintptr_t kHuge = uintptr_t(1) << 21;
        const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
        const uintptr_t e = (reinterpret_cast<uintptr_t>(p + n)) & ~(kHuge - 1);
        if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_HUGEPAGE);  // advice only
#endif
        return p;
    }
    void deallocate(T* p, std::size_t n) { std::allocator<T>().deallocate(p, n); }
    // resize() leaves new entries uninitialized (the entries are trivial and
    // every one is written before it is read): no pass over the buffer.
    template <class U>
    void construct(U* p) noexcept { ::new (static_cast<void*>(p)) U; }
    template <class U, class... Args>
    void construct(U* p, Args&&... args) { ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...); }
    bool operator==(const HugePageAllocator&) const { return true; }
    bool operator!=(const HugePageAllocator&) const { return false; }
};
using Rows = std::vector<RowEntry, HugePageAllocator<RowEntry>>;
using Offsets = std::vector<int64_t, HugePageAllocator<int64_t>>;  // the CSR's row offsets

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

// Steps 2-4 for any ids: two LSD radix sorts of (id key << 32 | cell index)
// give the dense indices (ascending id); a counting sort in item order (stable)
// gives the CSR.  Releases `cells`.
void build_csr_radix(InputCells& cells, std::vector<int32_t>& item_ids,
                     std::vector<int32_t>& user_ids, Offsets& row_off,
                     Rows& rows, const CancelCheck& cancel) {
    const std::size_t n = cells.size();
    // 2. Dense item index: A[p] = (item key << 32 | cell index), sorted.
    std::vector<uint64_t> A(n), tmp(n);
    for (std::size_t k = 0; k < n; ++k)
        A[k] = (static_cast<uint64_t>(key_of(cells[k].item)) << 32) | k;
    radix_sort_hi32(A, tmp, cancel);
    std::size_t n_items = 1;
    for (std::size_t p = 1; p < n; ++p) n_items += hi32(A[p]) != hi32(A[p - 1]);
    item_ids.reserve(n_items);
    {
        uint32_t prev = hi32(A[0]);
        uint64_t d = 0;
        item_ids.push_back(id_of_key(prev));
        for (std::size_t p = 0; p < n; ++p) {
            const uint32_t h = hi32(A[p]);
            if (h != prev) {
                prev = h;
                ++d;
                item_ids.push_back(id_of_key(h));
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
    row_off.assign(n_users + 1, 0);
    for (std::size_t k = 0; k < n; ++k) ++row_off[user_of[k] + 1];
    for (std::size_t u = 0; u < n_users; ++u) row_off[u + 1] += row_off[u];
    rows.resize(n);
    for (std::size_t base = 0; base < n; base += kChunk) {
        poll_cancel(cancel);
        const std::size_t end = std::min(n, base + kChunk);
        for (std::size_t p = base; p < end; ++p) {
            const uint32_t idx = lo32(A[p]);
            const int64_t q = row_off[user_of[idx]]++;
            rows[q].item = static_cast<int32_t>(hi32(A[p]));
            rows[q].w = cells[idx].weight;
        }
    }
    for (std::size_t u = n_users; u > 0; --u) row_off[u] = row_off[u - 1];
    row_off[0] = 0;
    release(A);
    release(user_of);
    cells.release();
}

// The ids of one side of the cells: the smallest, and max - min + 1.
struct IdRange {
    int32_t min = 0;
    uint64_t span = 0;
};

// [b, e): half h (0 or 1) of [0, len), split at len / 2.
inline void half_of(std::size_t len, std::size_t h, std::size_t& b, std::size_t& e) {
    b = h == 0 ? 0 : len / 2;
    e = h == 0 ? len / 2 : len;
}

// Step 1 and the ids' ranges in one pass over the cells, in two halves (on
// two threads with `two_threads`): throws validate_cells' error for the
// first cell whose weight is not finite and > 0.
void scan_cells(const InputCells& cells, IdRange& users, IdRange& items, bool two_threads,
                const CancelCheck& cancel) {
    const std::size_t n = cells.size(), mid = n / 2;
    struct Part {
        int32_t ulo = std::numeric_limits<int32_t>::max(), uhi = std::numeric_limits<int32_t>::min();
        int32_t ilo = std::numeric_limits<int32_t>::max(), ihi = std::numeric_limits<int32_t>::min();
        std::size_t bad = 0;  // the first invalid cell, or the half's end
    } part[2];
    detail::parallel_blocks(
        2, 1, two_threads,
        [&](std::size_t h, std::size_t, int) {
            Part& pt = part[h];
            std::size_t k0, k1;
            half_of(n, h, k0, k1);
            pt.bad = k1;
            for (std::size_t k = k0; k < k1; ++k) {
                const double w = cells[k].weight;
                if (!(std::isfinite(w) && w > 0)) {
                    pt.bad = k;
                    return;
                }
            }
            // a loop of its own (no exit): the compiler vectorizes it
            int32_t ulo = pt.ulo, uhi = pt.uhi, ilo = pt.ilo, ihi = pt.ihi;
            for (std::size_t k = k0; k < k1; ++k) {
                ulo = std::min(ulo, cells[k].user);
                uhi = std::max(uhi, cells[k].user);
                ilo = std::min(ilo, cells[k].item);
                ihi = std::max(ihi, cells[k].item);
            }
            pt.ulo = ulo;
            pt.uhi = uhi;
            pt.ilo = ilo;
            pt.ihi = ihi;
        },
        cancel, [](std::size_t) {});
    if (part[0].bad < mid) detail::validate_cells({cells[part[0].bad]}, {});  // throws
    if (part[1].bad < n) detail::validate_cells({cells[part[1].bad]}, {});
    if (n == 0) return;
    const int32_t ulo = std::min(part[0].ulo, part[1].ulo), uhi = std::max(part[0].uhi, part[1].uhi);
    const int32_t ilo = std::min(part[0].ilo, part[1].ilo), ihi = std::max(part[0].ihi, part[1].ihi);
    users.min = ulo;
    users.span = static_cast<uint64_t>(static_cast<int64_t>(uhi) - ulo) + 1;
    items.min = ilo;
    items.span = static_cast<uint64_t>(static_cast<int64_t>(ihi) - ilo) + 1;
}

// Sorts one CSR row by item, stably (duplicates of an item stay in input
// order, the order their weights are summed in).
void sort_row(RowEntry* b, RowEntry* e) {
    if (e - b <= 32) {
        for (RowEntry* p = b + 1; p < e; ++p) {
            const RowEntry v = *p;
            RowEntry* q = p;
            for (; q > b && q[-1].item > v.item; --q) *q = q[-1];
            *q = v;
        }
        return;
    }
    std::stable_sort(b, e, [](const RowEntry& x, const RowEntry& y) { return x.item < y.item; });
}

// One cell between the two layouts of build_csr_tables' radix passes.
inline void move_cell(const Triplet& t, RowEntry& r) {
    r.item = t.item;
    r.user = t.user;
    r.w = t.weight;
}
inline void move_cell(const RowEntry& r, Triplet& t) {
    t.user = r.user;
    t.item = r.item;
    t.weight = r.w;
}

// One stable counting-sort pass by the dense user's bits [shift, shift +
// width) over the cells [k0, k1) of `in`: `c` holds each bucket's next
// output position.  With `next` (a pass follows), the digit of the next pass
// of every cell written below output position `mid` is counted into it: the
// next pass's input splits at `mid` too, and its first part needs its counts.
template <class From, class To>
void radix_pass(const From* in, std::size_t k0, std::size_t k1, To* out, uint32_t* c, int shift,
                std::size_t mask, uint32_t* next, int next_shift, std::size_t mid) {
    if (!next) {
        for (std::size_t k = k0; k < k1; ++k)
            move_cell(in[k], out[c[(static_cast<uint32_t>(in[k].user) >> shift) & mask]++]);
        return;
    }
    for (std::size_t k = k0; k < k1; ++k) {
        const uint32_t u = static_cast<uint32_t>(in[k].user);
        const uint32_t q = c[(u >> shift) & mask]++;
        move_cell(in[k], out[q]);
        next[(u >> next_shift) & mask] += q < mid;
    }
}

// Steps 2-4 when the ids of both sides span at most 2 * cells values (always
// so for the glue, whose ids are dense indices): lookup tables over the id
// ranges give the dense indices without sorting (written into the cells in
// place); an LSD radix sort of the cells by dense user (stable; passes of at
// most 10 bits: 1 up to 2^10 users, 2 up to 2^20, else 3), whose every write
// goes to one of at most 1024 sequential streams instead of a random row,
// then a stable sort of each (short) row by item, gives the same CSR as
// build_csr_radix.  The passes alternate between the cells and the CSR's
// buffer.  Releases `cells`.
//
// With `two_threads`, every step runs on two threads: the tables' steps on
// two halves of the tables or of the cells; the remapping, each radix pass
// and the copy on the two halves of the cells [0, mid), [mid, n); the row
// offsets beside the freeing of the cells; the row sorts in blocks of users.
// A pass is stable with halves too: each half has its own counts, and a
// bucket's cells from the first half are written before those from the
// second (the first half's counts of a pass's digit come from the remapping
// for the first pass, and from the pass before, which counts the cells it
// writes below `mid`, for the others).  The result is the same whichever
// thread does which half, and the same on one thread (which does both
// halves in turn).
//
// Memory: the tables (4 bytes a value of the ranges, at most 8 bytes a
// cell) beside the cells; then the cells and the CSR (with its offsets),
// and the counts (4-byte words, as positions: 2 x passes x 1024 + 4 x 1024
// at most, 40 kB; a single pass's 16 kB); a
// stable sort of a row longer than 32 takes at most 16 bytes an entry,
// after the cells are freed -- all within stage 1 of estimate_train_bytes,
// which counts 16 + 8 + 4 bytes a cell beside the CSR for the radix path.
// Sets `distinct` when no row has the same item twice (no duplicate cells
// to merge).
void build_csr_tables(InputCells& cells, const IdRange& ur, const IdRange& ir,
                      std::vector<int32_t>& item_ids, std::vector<int32_t>& user_ids,
                      Offsets& row_off, Rows& rows, bool two_threads, bool& distinct,
                      const CancelCheck& cancel) {
    const std::size_t n = cells.size(), mid = n / 2;
    // f(0) and f(1), on two threads when asked (cancel polled between them
    // or while waiting for the other thread).
    auto both = [&](auto&& f) {
        detail::parallel_blocks(
            2, 1, two_threads, [&](std::size_t h, std::size_t, int) { f(h); }, cancel, [](std::size_t) {});
    };
    // The tables, both sides at once: -1 for absent ids, else the rank of
    // the id among the present ones (ascending, as the radix path numbers
    // them), and the present ids into user_ids, item_ids.  Filled with -1,
    // then 0 written for the present ids (both halves of the cells may mark
    // one id: relaxed atomic stores of the same value), then each half of a
    // table numbered from the count of present ids in the half before it.
    using Table = std::vector<int32_t, HugePageAllocator<int32_t>>;
    Table umap(static_cast<std::size_t>(ur.span)), imap(static_cast<std::size_t>(ir.span));
    Table* const tables[2] = {&umap, &imap};
    std::vector<int32_t>* const ids[2] = {&user_ids, &item_ids};
    const int32_t mins[2] = {ur.min, ir.min};
    both([&](std::size_t h) {
        for (Table* t : tables) {
            std::size_t b, e;
            half_of(t->size(), h, b, e);
            std::fill(t->data() + b, t->data() + e, -1);
        }
    });
    both([&](std::size_t h) {
        std::size_t k0, k1;
        half_of(n, h, k0, k1);
        int32_t* const ut = umap.data();
        int32_t* const it = imap.data();
        for (std::size_t k = k0; k < k1; ++k) {
            __atomic_store_n(ut + (static_cast<int64_t>(cells[k].user) - ur.min), 0, __ATOMIC_RELAXED);
            __atomic_store_n(it + (static_cast<int64_t>(cells[k].item) - ir.min), 0, __ATOMIC_RELAXED);
        }
    });
    std::size_t present[2][2] = {{0, 0}, {0, 0}};  // [side][half]
    both([&](std::size_t h) {
        for (int s = 0; s < 2; ++s) {
            std::size_t b, e, c = 0;
            half_of(tables[s]->size(), h, b, e);
            const int32_t* const t = tables[s]->data();
            for (std::size_t k = b; k < e; ++k) c += t[k] == 0;
            present[s][h] = c;
        }
    });
    for (int s = 0; s < 2; ++s) ids[s]->resize(present[s][0] + present[s][1]);
    both([&](std::size_t h) {
        for (int s = 0; s < 2; ++s) {
            std::size_t b, e;
            half_of(tables[s]->size(), h, b, e);
            int32_t* const t = tables[s]->data();
            int32_t* const out = ids[s]->data();
            int32_t d = static_cast<int32_t>(h == 0 ? 0 : present[s][0]);
            for (std::size_t k = b; k < e; ++k)
                if (t[k] == 0) {
                    out[d] = static_cast<int32_t>(mins[s] + static_cast<int64_t>(k));
                    t[k] = d++;
                }
        }
    });
    const std::size_t n_users = user_ids.size();
    int bits = 0;
    while (bits < 32 && (std::size_t(1) << bits) < n_users) ++bits;
    const int passes = std::max(1, (bits + 9) / 10);  // of at most 10 bits: 1024 buckets
    const int width = (bits + passes - 1) / passes;
    const std::size_t buckets = std::size_t(1) << width, mask = buckets - 1;
    const std::size_t per_half = static_cast<std::size_t>(passes) * buckets;
    // cnt[h * per_half + pass * buckets + b]: cells of half h whose digit of `pass` is b.
    std::vector<uint32_t> cnt(2 * per_half, 0);
    both([&](std::size_t h) {
        uint32_t* const c = &cnt[h * per_half];
        std::size_t k0, k1;
        half_of(n, h, k0, k1);
        Triplet* const cb = cells.data() + k0;
        Triplet* const ce = cells.data() + k1;
        for (Triplet* t = cb; t != ce; ++t) {
            t->user = umap[static_cast<std::size_t>(static_cast<int64_t>(t->user) - ur.min)];
            t->item = imap[static_cast<std::size_t>(static_cast<int64_t>(t->item) - ir.min)];
        }
        const int np = passes, wd = width;  // locals: the counts' stores cannot alias them
        const std::size_t nb = buckets, mk = mask;
        for (const Triplet* t = cb; t != ce; ++t)
            for (int pass = 0; pass < np; ++pass)
                ++c[static_cast<std::size_t>(pass) * nb + ((static_cast<uint32_t>(t->user) >> (pass * wd)) & mk)];
    });
    release(imap);
    release(umap);
    // The passes alternate between the cells and the CSR's buffer, so that
    // no third array of 16 bytes a cell is needed; after an even number of
    // them the data is in the cells and is copied (in order) to the CSR.
    rows.resize(n);
    // pos[h * buckets + b]: where half h writes its next cell of bucket b;
    // next[h * buckets + b]: cells of digit b of the next pass that half h
    // wrote below `mid` (n < 2^32: positions fit 4 bytes).
    std::vector<uint32_t> pos(2 * buckets), next(passes > 1 ? 2 * buckets : 0);
    for (int pass = 0; pass < passes; ++pass) {
        const std::size_t off = static_cast<std::size_t>(pass) * buckets;
        uint32_t sum = 0;
        for (std::size_t b = 0; b < buckets; ++b) {
            // the first half's cells of bucket b, then the second half's
            const uint32_t first = pass == 0 ? cnt[b] : next[b] + next[buckets + b];
            pos[b] = sum;
            pos[buckets + b] = sum + first;
            sum += cnt[off + b] + cnt[per_half + off + b];
        }
        const bool more = pass + 1 < passes;
        std::fill(next.begin(), next.end(), 0u);
        both([&](std::size_t h) {
            std::size_t k0, k1;
            half_of(n, h, k0, k1);
            uint32_t* const c = &pos[h * buckets];
            uint32_t* const nx = more ? &next[h * buckets] : nullptr;
            if (pass % 2 == 0)
                radix_pass(cells.data(), k0, k1, rows.data(), c, pass * width, mask, nx, (pass + 1) * width, mid);
            else
                radix_pass(rows.data(), k0, k1, cells.data(), c, pass * width, mask, nx, (pass + 1) * width, mid);
        });
    }
    if (passes % 2 == 0)
        both([&](std::size_t h) {
            std::size_t q0, q1;
            half_of(n, h, q0, q1);
            for (std::size_t q = q0; q < q1; ++q) move_cell(cells[q], rows[q]);
        });
    // Rows are now in user order, every user present: row u starts at the
    // first cell of u (each offset written once: no zero fill).  Beside
    // that, the cells are freed (unmapping them takes about as long).
    row_off.resize(n_users + 1);
    both([&](std::size_t h) {
        if (h == 1) {
            cells.release();
            return;
        }
        for (std::size_t q = 0; q < n; ++q) {
            const int32_t u = rows[q].user;
            if (q == 0 || rows[q - 1].user != u) row_off[static_cast<std::size_t>(u)] = static_cast<int64_t>(q);
        }
    });
    row_off[n_users] = static_cast<int64_t>(n);
    // Rows are independent: sorted in blocks of users, on two threads when
    // asked (same result either way); cancel is polled between blocks.
    std::atomic<bool> repeated{false};
    detail::parallel_blocks(
        n_users, kUserBlock, two_threads,
        [&](std::size_t b, std::size_t e, int) {
            bool rep = false;
            for (std::size_t u = b; u < e; ++u) {
                RowEntry* const rb = rows.data() + row_off[u];
                RowEntry* const re = rows.data() + row_off[u + 1];
                sort_row(rb, re);
                for (const RowEntry* r = rb + 1; r < re; ++r) rep |= r->item == r[-1].item;
            }
            if (rep) repeated.store(true, std::memory_order_relaxed);
        },
        cancel, [](std::size_t) {});
    distinct = !repeated.load();
}

// A row entry of the similarity pass when every weight of the rows is a
// float (checked: as the default event weights, binary and jaccard give):
// half the bytes of a RowEntry, so half the cache lines a random row read
// brings in.  The products are the same doubles (a float widens exactly).
struct PackedEntry {
    int32_t item;  // popularity rank
    float w;
};
static_assert(2 * sizeof(PackedEntry) == sizeof(RowEntry) && alignof(PackedEntry) <= alignof(RowEntry),
              "rows are packed in place");

// Everything the per-item similarity pass reads and writes.
//
// The rows name items by popularity rank (0 = the item with the most users),
// not by dense index: the accumulator and the norms are then read mostly in
// their first few kilobytes (the popular items), which stay in cache.  The
// columns, the slots and the output keep the dense index; neighbours are
// ranked (ties: dense index ascending) and stored by dense index.
struct SimContext {
    const RowEntry* rows = nullptr;       // .item: popularity rank (wide layout)
    const PackedEntry* packed = nullptr;  // the same rows, packed (then rows is null)
    const ColEntry* cols;
    const int64_t* col_off;
    const double* norm;     // by popularity rank
    const double* run_lo;   // each sieve run's lowest norm (run r: ranks [r kSieveRun, (r+1) kSieveRun))
    const double* run_hi;   // and its highest (sieve_run's range test)
    const int32_t* rank_of;   // dense index -> popularity rank
    const int32_t* dense_of;  // popularity rank -> dense index
    const int32_t* item_ids;
    const int64_t* slot;  // item i writes its neighbours at [slot[i], slot[i+1])
    int32_t* out_ids;
    double* out_sims;
    int64_t* out_count;  // item i stores its neighbour count at out_count[i]
    std::size_t n_items;
    std::size_t keep;    // 0 = all
    const detail::SimilarityFinish* finish = nullptr;  // null: cosine (the 1.0 formula)
};

// The cosine pass ranks an item's sums by the sieve (core_simd.hpp),
// kSieveRun at a time, when its multiply-adds reach
// detail::kSieveWorkPercent % of the catalogue.
constexpr std::size_t kSieveRun = 512;

inline double weight_of(const RowEntry& r) { return r.w; }
inline double weight_of(const PackedEntry& r) { return static_cast<double>(r.w); }

// ranks_before on candidates named by popularity rank: the same order as on
// dense indices (ties by dense index), so the same top K.
struct RankedBefore {
    const int32_t* dense_of;
    bool operator()(const Scored& a, const Scored& b) const {
        if (a.score != b.score) return a.score > b.score;
        return dense_of[a.id] < dense_of[b.id];
    }
};

// One thread's state: the accumulator (by rank, 8 bytes an item: the
// accumulation's scattered reads and writes touch half the cache lines they
// did when each sum sat beside a copy of its norm, which ranking a touched
// item then read from the same line; on both bench logs this layout is the
// faster), the touched list, a top-K buffer.
class SimWorker {
public:
    explicit SimWorker(const SimContext& cx)
        : cx_(cx), acc_(cx.n_items, 0.0), touched_(cx.n_items + 1),
          cap_(cx.keep > 0 ? std::min(cx.n_items, std::max<std::size_t>(4 * cx.keep, 256)) : cx.n_items),
          sieve_(detail::simd_available()) {
        cand_.resize(cap_);  // written through data() up to cap_
        scores_.reserve(cap_);
        if (sieve_) {
            sieve_ids_.resize(kSieveRun);
            sieve_dots_.resize(kSieveRun);
        }
    }

    // Computes item i's neighbours into its slot; returns the work done.
    std::size_t item(std::size_t i) {
        std::size_t n_touched = 0;
        const bool sieve = sieve_ && !cx_.finish && sieves(i);
        const std::size_t work = sieve ? (cx_.packed ? accumulate<false>(cx_.packed, i, n_touched)
                                                     : accumulate<false>(cx_.rows, i, n_touched))
                                       : (cx_.packed ? accumulate<true>(cx_.packed, i, n_touched)
                                                     : accumulate<true>(cx_.rows, i, n_touched));
        // The top K by ranks_before, K = cx_.keep (0: all), through a buffer
        // of cap_ candidates: when it fills, the threshold `thr` rises to at
        // most the K-th highest score (raise_threshold) and only the
        // candidates at or above it stay; a candidate below thr cannot be
        // among the best K (K held ones rank before it), so it is not kept,
        // nor (cosine) even divided.  The same top K as a heap.
        double* const acc = acc_.data();
        const double* const nrm = cx_.norm;
        const int32_t* const touched = touched_.data();
        const RankedBefore before{cx_.dense_of};
        const int32_t self = cx_.rank_of[i];
        // The buffer is written through a local pointer and count, not
        // push_back (whose end pointer lived in memory, and whose candidate
        // was assembled on the stack and reloaded whole: a store-forwarding
        // stall on every push); core_bench 10M, best of 7, three rounds
        // alternating: 0.88-0.93 -> 0.85-0.87 s at the density,
        // 0.42-0.44 -> 0.41-0.43 s on the default log.
        Scored* const cb = cand_.data();
        std::size_t nc = 0;
        double thr = 0;
        const double ni = nrm[self];
        const bool trims = cx_.keep > 0 && cap_ > cx_.keep;
        if (const detail::SimilarityFinish* const finish = cx_.finish) {
            for (std::size_t t = 0; t < n_touched; ++t) {
                const int32_t j = touched[t];
                const double dot = acc[j];
                acc[j] = 0;
                if (j == self) continue;
                const double sim = (*finish)(i, static_cast<std::size_t>(cx_.dense_of[j]), dot);
                if (!(sim > 0 && std::isfinite(sim) && sim >= thr)) continue;
                cb[nc].score = sim;
                cb[nc].id = j;
                if (++nc == cap_ && trims) nc = raise_threshold(nc, thr);
            }
        } else {  // the 1.0 cosine
            const auto offer = [&](int32_t j, double dot) {
                const double d = ni * nrm[j];
                // The prefilter (core_simd.hpp): a sum that cannot reach
                // thr is not divided.
                if (detail::ruled_out(dot, thr * d)) return;
                const double sim = dot / d;
                if (!(sim > 0 && std::isfinite(sim) && sim >= thr)) return;
                cb[nc].score = sim;
                cb[nc].id = j;
                if (++nc == cap_ && trims) nc = raise_threshold(nc, thr);
            };
            if (sieve) {
                // Much of the catalogue touched: the whole accumulator in
                // runs, in order, through the vector sieve (core_simd.hpp),
                // which clears it and keeps only the sums the threshold at
                // the run's start cannot rule out; those are tested exactly
                // (thr only rises, so the older threshold is the looser).
                int32_t* const ids = sieve_ids_.data();
                double* const dots = sieve_dots_.data();
                for (std::size_t b = 0; b < cx_.n_items; b += kSieveRun) {
                    const std::size_t e = std::min(cx_.n_items, b + kSieveRun);
                    const std::size_t n = detail::sieve_run(acc, nrm, b, e, ni, thr, ids, dots,
                                                            cx_.run_lo[b / kSieveRun], cx_.run_hi[b / kSieveRun]);
                    for (std::size_t k = 0; k < n; ++k)
                        if (ids[k] != self) offer(ids[k], dots[k]);
                }
            } else {
                for (std::size_t t = 0; t < n_touched; ++t) {
                    const int32_t j = touched[t];
                    const double dot = acc[j];
                    acc[j] = 0;
                    if (j != self) offer(j, dot);
                }
            }
        }
        std::size_t n_out = nc;
        if (cx_.keep != 0 && cx_.keep < nc) {
            // The candidates at or above kth_bound's threshold (at most the
            // K-th highest score: K of them, or a few more), then the best K
            // of those.
            n_out = keep_from(nc, kth_bound(nc));
            if (n_out > cx_.keep) {
                std::nth_element(cb, cb + cx_.keep, cb + n_out, before);
                n_out = cx_.keep;
            }
        }
        std::sort(cb, cb + n_out, before);
        int64_t q = cx_.slot[i];
        for (std::size_t k = 0; k < n_out; ++k, ++q) {
            cx_.out_ids[q] = cx_.item_ids[static_cast<std::size_t>(cx_.dense_of[cb[k].id])];
            cx_.out_sims[q] = cb[k].score;
        }
        cx_.out_count[i] = static_cast<int64_t>(n_out);
        return work + (sieve ? cx_.n_items : n_touched);
    }

private:
    // Whether item i's sums are ranked by the sieve, decided before they are
    // accumulated (then without the touched list): by its multiply-adds, the
    // bound on its touched sums, against the catalogue (core_simd.hpp).
    bool sieves(std::size_t i) const {
        std::size_t work = 0;
        for (int64_t p = cx_.col_off[i], pe = cx_.col_off[i + 1]; p < pe; ++p) work += cx_.cols[p].len;
        return detail::sieve_pays(work, cx_.n_items);
    }

    // Item i's dot products with every j into acc_[j]; with Track, the
    // touched j appended to touched_ (in first-touch order).  Returns the
    // multiply-adds.
    template <bool Track, class Entry>
    std::size_t accumulate(const Entry* const R, std::size_t i, std::size_t& n_touched) {
        constexpr int64_t kPrefetch = 8;  // column entries ahead: rows are random accesses
        constexpr uintptr_t kLine = 64;
        const ColEntry* const Cl = cx_.cols;
        double* const an = acc_.data();
        int32_t* const touched = touched_.data();
        std::size_t work = 0, nt = 0;
        const int64_t pb = cx_.col_off[i], pe = cx_.col_off[i + 1];
        for (int64_t p = pb; p < pe; ++p) {
            if (p + kPrefetch < pe) {
                // Every cache line of that row, from its first byte to its last.
                const ColEntry& f = Cl[p + kPrefetch];
                if (f.len > 1) {
                    const uintptr_t e = reinterpret_cast<uintptr_t>(R + f.row + f.len);
                    for (uintptr_t a = reinterpret_cast<uintptr_t>(R + f.row) & ~(kLine - 1); a < e; a += kLine)
                        prefetch(reinterpret_cast<const void*>(a));
                }
            }
            const ColEntry& c = Cl[p];
            // A user with one item adds only dot(i,i), which is never used:
            // skip the row (a random access) altogether.
            if (c.len == 1) continue;
            const double wi = c.w;
            const Entry* r = R + c.row;
            const Entry* const re = r + c.len;
            work += c.len;
            for (; r != re; ++r) {
                // Branch-free: the first product into acc[j] appends j to
                // `touched` (unless it underflowed to 0: then j stays
                // untouched, as acc[j] stays 0); the slot past the end
                // absorbs the unconditional store.
                const int32_t j = r->item;
                const double prod = wi * weight_of(*r);
                const double a = an[j];
                if (Track) {
                    touched[nt] = j;
                    nt += (a == 0) & (prod != 0);
                }
                an[j] = a + prod;
            }
        }
        n_touched = nt;
        return work;
    }

    // The buffer is full: the threshold rises to kth_bound's (at most the
    // K-th highest score) and only the candidates at or above it stay, at
    // least K.  Every dropped one has K kept ones ranking before it (higher
    // scores), so the best K overall are kept.  Selects on bare scores:
    // cheaper than ordering candidates by (score, dense index).  When more
    // than half the buffer stays (near ties: the bound's bucket holds
    // many), the threshold becomes the exact K-th highest, and if that
    // still keeps more than half (exact ties), the best K by (score, dense
    // index) stay: each raise frees half the buffer at least.
    std::size_t raise_threshold(std::size_t nc, double& thr) {
        Scored* const cb = cand_.data();
        const std::size_t K = cx_.keep;
        thr = std::max(thr, kth_bound(nc));
        if ((nc = keep_from(nc, thr)) <= cap_ / 2) return nc;
        thr = std::max(thr, exact_kth(nc));
        if ((nc = keep_from(nc, thr)) <= cap_ / 2) return nc;
        std::nth_element(cb, cb + (K - 1), cb + nc, RankedBefore{cx_.dense_of});
        thr = std::max(thr, cb[K - 1].score);  // the K-th best's: the lowest kept
        return K;
    }

    // Keeps, in place and in order, those of the buffer's first nc
    // candidates that score t or more; returns how many.
    std::size_t keep_from(std::size_t nc, double t) {
        Scored* const cb = cand_.data();
        std::size_t kept = 0;
        for (std::size_t k = 0; k < nc; ++k)
            if (cb[k].score >= t) cb[kept++] = cb[k];
        return kept;
    }

    // The K-th highest score of the buffer's first nc candidates (K =
    // cx_.keep <= nc), ranked on bare scores.
    double exact_kth(std::size_t nc) {
        const Scored* const cb = cand_.data();
        const std::size_t K = cx_.keep;
        scores_.resize(nc);
        double* const sc = scores_.data();
        for (std::size_t k = 0; k < nc; ++k) sc[k] = cb[k].score;
        std::nth_element(sc, sc + (K - 1), sc + nc, std::greater<double>());
        return sc[K - 1];
    }

    // A threshold t that at least K = cx_.keep of the buffer's first nc
    // candidates reach (K <= nc), at most 1/16 of an octave below the K-th
    // highest score, without ranking them: positive doubles order as their
    // bits, so a histogram of the scores' top 16 bits (exponent and four
    // mantissa bits) counted down from the highest finds the bucket where
    // the count reaches K, and t is that bucket's lower edge.  When the
    // K-th highest lies 16 octaves or more below the highest, t is the K-th
    // highest itself.
    double kth_bound(std::size_t nc) {
        const Scored* const cb = cand_.data();
        const std::size_t K = cx_.keep;
        constexpr std::size_t kBuckets = 256;
        const auto key = [](double x) {
            uint64_t u;
            std::memcpy(&u, &x, sizeof u);
            return u >> 48;
        };
        uint64_t top = 0;
        for (std::size_t k = 0; k < nc; ++k) top = std::max(top, key(cb[k].score));
        uint32_t hist[kBuckets] = {};
        for (std::size_t k = 0; k < nc; ++k) ++hist[std::min<uint64_t>(top - key(cb[k].score), kBuckets - 1)];
        std::size_t count = 0;
        for (std::size_t b = 0; b + 1 < kBuckets; ++b) {
            count += hist[b];
            if (count >= K) {
                const uint64_t edge = (top - b) << 48;
                double t;
                std::memcpy(&t, &edge, sizeof t);
                return t;
            }
        }
        return exact_kth(nc);
    }

    const SimContext& cx_;
    std::vector<double> acc_;  // dot(i, j) so far, by popularity rank; 0 = untouched
    std::vector<int32_t> touched_;
    std::size_t cap_;  // candidates buffered before the worst are dropped
    std::vector<Scored> cand_;  // .id: popularity rank
    std::vector<double> scores_;  // raise_threshold's scratch
    bool sieve_;  // the CPU runs the vector sieve
    std::vector<int32_t> sieve_ids_;  // one run's kept ranks
    std::vector<double> sieve_dots_;  // and their sums
};

// Below this (Σdeg² multiply-adds) one thread is faster.  core_bench
// --events N 50 20 0 0, best wall of 20: 200k events (Σdeg² 1.1M) 0.023 s on
// two threads against 0.038 s on one, 50k 0.0085 against 0.013; 20k
// (below the bound) the same either way.  (It was 4e6, from before the
// pass's per-multiply-add cost fell.)
constexpr double kMinParallelWork = 2e5;
constexpr std::size_t kWorkPerPoll = 1u << 20;  // ~1 ms of multiply-adds
constexpr std::size_t kBlock = 16;              // items handed out at a time

// Runs SimWorker::item over all items in blocks of kBlock (core_parallel.hpp):
// with `two_threads` a worker thread takes blocks too.  Every item is computed
// by the same code whichever thread takes it, so the result does not depend
// on the thread count.  The calling thread also polls for cancellation inside
// a block, after every kWorkPerPoll multiply-adds.
void run_similarities(const SimContext& cx, bool two_threads, const CancelCheck& cancel,
                      const Progress& progress) {
    std::optional<SimWorker> workers[2];
    std::size_t work = 0;
    if (progress) progress("similarities", 0, static_cast<int64_t>(cx.n_items));  // the pass begins
    detail::parallel_blocks(
        cx.n_items, kBlock, two_threads,
        [&](std::size_t b, std::size_t e, int worker) {
            if (!workers[worker]) workers[worker].emplace(cx);
            for (std::size_t i = b; i < e; ++i) {
                const std::size_t done = workers[worker]->item(i);
                if (worker == 0 && (work += done) >= kWorkPerPoll) {
                    poll_cancel(cancel);
                    work = 0;
                }
            }
        },
        cancel,
        [&](std::size_t b) {
            if (progress && b % 256 < kBlock)
                progress("similarities", static_cast<int64_t>(b), static_cast<int64_t>(cx.n_items));
        });
    if (progress) progress("similarities", static_cast<int64_t>(cx.n_items), static_cast<int64_t>(cx.n_items));
}

}  // namespace

std::size_t estimate_train_bytes(int64_t cells, int64_t users, int64_t items, int neighbors, CellInput input) {
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
    // 4I; then input 16C + item keys 8C + user_of 4C + CSR rows 16C +
    // row offsets 8(U+1) + item_ids 4I + user_ids 4U.  The larger of the two:
    // (A borrowed input is the caller's: not counted.)
    const double in = input == CellInput::owned ? 16 * C : 0;
    const double s1a = in + 8 * C + 8 * C + 8 * C + 8192 + 4 * I;
    const double s1b = in + 8 * C + 4 * C + 16 * C + 8 * (U + 1) + 4 * I + 4 * U;
    // Stage 2 (CSC, similarities): CSR 16C + 8(U+1) (row offsets are freed
    // after the CSC is built, but count them), CSC 16C + 8(I+1), item_ids
    // 4I, user_ids 4U, popular 4I+4I + sort order 4I, norms 8I, accumulator
    // 8I, touched 4I, candidates 16I -- twice, for the optional worker
    // thread -- output slots 8(I+1), output offsets 8(I+1), output pairs 12P;
    // and, at most, the second half's column starts 8(I+1) (while the CSC is
    // built), the popularity ranks 4I and the norms' copy by rank 8I.
    const double s2 = 16 * C + 8 * (U + 1) + 16 * C + 8 * (I + 1) + 4 * I + 4 * U + 12 * I +
                      8 * I + 2 * (8 * I + 4 * I + 16 * I) + 8 * (I + 1) + 8 * (I + 1) + 12 * P +
                      8 * (I + 1) + 4 * I + 8 * I;
    // The sieve's buffers, kSieveRun ranks and sums per worker thread.
    const double sieve = 2.0 * kSieveRun * (sizeof(int32_t) + sizeof(double));
    // Allocator bookkeeping: ~40 live blocks, plus stream/exception slack.
    const double slack = 40 * 64 + 16384;
    const double total = std::max({s1a, s1b, s2 + sieve}) + slack;
    if (!(total < static_cast<double>(std::numeric_limits<std::size_t>::max())))
        return std::numeric_limits<std::size_t>::max();
    return static_cast<std::size_t>(total);
}

std::size_t estimate_train_bytes(int64_t cells, int64_t users, int64_t items,
                                 const TrainOptions& opt, CellInput input) {
    const std::size_t base = estimate_train_bytes(cells, users, items, opt.neighbors, input);
    const double extra = detail::similarity_extra_bytes(
        static_cast<double>(std::max<int64_t>(std::min(users, cells), 0)),
        static_cast<double>(std::max<int64_t>(std::min(items, cells), 0)), resolve_settings(opt));
    const double total = static_cast<double>(base) + extra;
    if (!(total < static_cast<double>(std::numeric_limits<std::size_t>::max())))
        return std::numeric_limits<std::size_t>::max();
    return static_cast<std::size_t>(total);
}

namespace {

// What the similarity pass reads and writes, built by prepare_pass() (steps
// 1-5 of train()); never moved once built (cx points into it).
struct PreparedPass {
    Model m;
    Rows rows;
    std::vector<ColEntry, HugePageAllocator<ColEntry>> cols;
    std::vector<int64_t> col_off;
    std::vector<double> norm;         // by popularity rank
    std::vector<double> run_lo, run_hi;  // each sieve run's lowest and highest norm
    std::vector<int32_t> dense_of, rank_of;
    std::vector<int64_t> slot;
    std::optional<detail::SimilarityFinish> finish;
    SimContext cx;
    bool two_threads = false;         // the pass is worth a second thread
};

// Steps 1-5 of train() into p: everything but the similarities (the model's
// items, popularity and counts are final when it returns; each item's
// neighbour slot is sized, its count 0).
void prepare_pass(PreparedPass& p, InputCells cells, const TrainOptions& opt,
                  const CancelCheck& cancel, int threads) {
    const SimilaritySettings settings = resolve_settings(opt);  // validates
    poll_cancel(cancel);

    const std::size_t n = cells.size();
    if (n > std::numeric_limits<uint32_t>::max())
        throw InvalidInput("recsys: too many cells for one training run (" + std::to_string(n) +
                           ")");

    // Building the CSR and the CSC on two threads: as the similarity pass
    // below (threads <= 0: when the input is large and 2+ CPUs exist).
    const bool two_build =
        threads > 1 || (threads <= 0 && n >= kMinParallelCells && std::thread::hardware_concurrency() >= 2);

    // 1. Validate (and the ids' ranges, for step 2).
    IdRange ur, ir;
    scan_cells(cells, ur, ir, two_build, cancel);

    Model& m = p.m;
    p.cx.n_items = 0;
    if (n == 0) {
        m.nbr_offsets.assign(1, 0);
        return;
    }

    // 2-4. Dense item and user indices, the user-major CSR.
    std::vector<int32_t> user_ids;
    Offsets row_off;
    Rows& rows = p.rows;
    bool distinct = false;  // no (user, item) twice: nothing to merge
    if (ur.span + ir.span <= 2 * static_cast<uint64_t>(n))
        build_csr_tables(cells, ur, ir, m.item_ids, user_ids, row_off, rows, two_build, distinct, cancel);
    else
        build_csr_radix(cells, m.item_ids, user_ids, row_off, rows, cancel);
    const std::size_t n_items = m.item_ids.size(), n_users = user_ids.size();

    // Merge duplicate (user, item) cells, compacting in place.
    int64_t nnz = distinct ? static_cast<int64_t>(row_off[n_users]) : 0;
    for (std::size_t u = 0; u < n_users && !distinct; ++u) {
        const int64_t start = row_off[u], end = row_off[u + 1];
        row_off[u] = nnz;
        for (int64_t q = start; q < end; ++q) {
            if (q > start && rows[q].item == rows[nnz - 1].item) {
                rows[nnz - 1].w += rows[q].w;
                if (!std::isfinite(rows[nnz - 1].w))
                    throw InvalidInput("recsys: the summed weight of (user " +
                                       std::to_string(user_ids[u]) + ", item " +
                                       std::to_string(m.item_ids[rows[q].item]) +
                                       ") overflows a double");
            } else {
                rows[nnz] = rows[q];
                ++nnz;
            }
        }
    }
    row_off[n_users] = nnz;
    m.n_users = static_cast<int64_t>(n_users);
    m.n_cells = nnz;
    poll_cancel(cancel);

    // Hook: w -> x, the matrix weighting (a no-op for 'weights').
    detail::apply_weighting(settings, rows.data(), row_off.data(), n_users, n_items, cancel);

    // 5. Item-major CSC (users ascending within an item); each entry carries
    // the user's row position and length, so the hot loop needs no row_off.
    // Two halves of the users (split at half the cells) are counted and
    // scattered independently, each item's entries from the second half
    // after those from the first: users stay ascending in every column,
    // whichever thread does which half.
    std::vector<int64_t>& col_off = p.col_off;
    col_off.assign(n_items + 1, 0);
    std::vector<int64_t> second(n_items + 1, 0);
    const std::size_t split = static_cast<std::size_t>(
        std::upper_bound(row_off.begin(), row_off.begin() + static_cast<std::ptrdiff_t>(n_users), nnz / 2) -
        row_off.begin()) - 1;
    auto& cols = p.cols;
    cols.resize(static_cast<std::size_t>(nnz));
    auto halves = [&](auto&& per_half) {
        detail::parallel_blocks(
            2, 1, two_build,
            [&](std::size_t h, std::size_t, int) {
                if (h == 0) per_half(std::size_t(0), split, col_off.data());
                else per_half(split, n_users, second.data());
            },
            cancel, [](std::size_t) {});
    };
    // Counts: col_off[i + 1] of the first half, second[i + 1] of the second.
    halves([&](std::size_t ub, std::size_t ue, int64_t* cnt) {
        for (int64_t q = row_off[ub]; q < row_off[ue]; ++q) ++cnt[rows[q].item + 1];
    });
    // col_off[i]: where column i starts; second[i]: where its second half starts.
    for (std::size_t i = 0; i < n_items; ++i) {
        const int64_t c0 = col_off[i + 1], c1 = second[i + 1];
        col_off[i + 1] = col_off[i] + c0 + c1;
        second[i] = col_off[i] + c0;
    }
    halves([&](std::size_t ub, std::size_t ue, int64_t* pos) {
        for (std::size_t u = ub; u < ue; ++u) {
            const int64_t qb = row_off[u], qe = row_off[u + 1];
            for (int64_t q = qb; q < qe; ++q) {
                ColEntry& c = cols[pos[rows[q].item]++];
                c.row = static_cast<uint32_t>(qb);
                c.len = static_cast<uint32_t>(qe - qb);
                c.w = rows[q].w;
            }
        }
    });
    // The second halves ended where the columns end.
    for (std::size_t i = n_items; i > 0; --i) col_off[i] = second[i - 1];
    col_off[0] = 0;
    release(second);
    // Hook: the similarity's factors (CSC: left, CSR: right) and final formula.
    std::optional<detail::SimilarityFinish>& finish = p.finish;
    if (!settings.plain())
        finish.emplace(detail::prepare_similarity(settings, rows.data(), row_off.data(), n_users,
                                                  cols.data(), col_off.data(), n_items, cancel));
    release(row_off);
    poll_cancel(cancel);

    // Two independent jobs, side by side when building on two threads:
    // (a) per item, its norm and its output slot (step 6), then the output
    // arrays; (b) the popularity ranks, then the rows renamed by rank (and
    // packed).  Each writes only its own arrays; an overflowing norm throws
    // the same error as on one thread (the first such item).
    std::vector<double>& norm = p.norm;
    norm.resize(n_items);
    // 6. Similarities.  Each item gets an output slot sized by an upper
    // bound of its neighbour count, so items can be computed in any order (and
    // by two threads) straight into the final arrays, which are compacted
    // afterwards and never reallocate (keeps estimate_train_bytes honest).
    const std::size_t k_cap =
        opt.neighbors > 0 ? std::min<std::size_t>(opt.neighbors, n_items - 1) : n_items - 1;
    std::vector<int64_t>& slot = p.slot;
    slot.resize(n_items + 1);
    double total_work = 0;  // sum_u nnz(u)^2
    const std::vector<int32_t>& dense_of = p.dense_of;
    std::vector<int32_t>& rank_of = p.rank_of;
    const PackedEntry* packed = nullptr;
    auto norms_and_slots = [&] {
        slot[0] = 0;
        for (std::size_t i = 0; i < n_items; ++i) {
            double s = 0;
            std::size_t reach = 0;  // sum over users of i of their other items
            for (int64_t q = col_off[i]; q < col_off[i + 1]; ++q) {
                s += cols[q].w * cols[q].w;
                reach += cols[q].len - 1;
            }
            norm[i] = std::sqrt(s);
            if (!std::isfinite(norm[i]))
                throw InvalidInput("recsys: weights of item " + std::to_string(m.item_ids[i]) +
                                   " are too large: the squared norm overflows a double");
            total_work += static_cast<double>(reach + static_cast<std::size_t>(col_off[i + 1] - col_off[i]));
            slot[i + 1] = slot[i] + static_cast<int64_t>(std::min(reach, k_cap));
        }
        m.nbr_offsets.assign(n_items + 1, 0);
        m.nbr_ids.resize(static_cast<std::size_t>(slot[n_items]));
        m.nbr_sims.resize(static_cast<std::size_t>(slot[n_items]));
    };
    auto ranks_and_rows = [&] {
        // Items by popularity rank in the rows and the norms (see SimContext).
        p.dense_of = detail::rank_popularity(
            m, [&](std::size_t i) { return static_cast<int32_t>(col_off[i + 1] - col_off[i]); });
        rank_of.resize(n_items);
        for (std::size_t r = 0; r < n_items; ++r)
            rank_of[static_cast<std::size_t>(dense_of[r])] = static_cast<int32_t>(r);
        // When every weight is a float, the rows are packed in place into 8-byte
        // entries (entry q's bytes [8q, 8q + 8) lie in entries <= q, already
        // read): the similarity pass then reads half the cache lines.
        bool fits_float = true;
        for (int64_t q = 0; q < nnz; ++q) {
            const double w = rows[q].w;
            fits_float &= std::fabs(w) <= std::numeric_limits<float>::max() &&
                          static_cast<double>(static_cast<float>(w)) == w;
        }
        if (fits_float) {
            unsigned char* const base = reinterpret_cast<unsigned char*>(rows.data());
            for (int64_t q = 0; q < nnz; ++q) {
                const RowEntry r = rows[q];
                ::new (static_cast<void*>(base + sizeof(PackedEntry) * static_cast<std::size_t>(q)))
                    PackedEntry{rank_of[static_cast<std::size_t>(r.item)], static_cast<float>(r.w)};
            }
            packed = std::launder(reinterpret_cast<const PackedEntry*>(base));
        } else {
            for (int64_t q = 0; q < nnz; ++q) rows[q].item = rank_of[static_cast<std::size_t>(rows[q].item)];
        }
    };
    detail::parallel_blocks(
        2, 1, two_build,
        [&](std::size_t h, std::size_t, int) {
            if (h == 0) norms_and_slots();
            else ranks_and_rows();
        },
        cancel, [](std::size_t) {});
    {
        std::vector<double> by_rank(n_items);
        for (std::size_t r = 0; r < n_items; ++r) by_rank[r] = norm[static_cast<std::size_t>(dense_of[r])];
        norm.swap(by_rank);
    }
    // Each sieve run's lowest and highest norm, once for every worker.
    for (std::size_t b = 0; b < n_items; b += kSieveRun) {
        const auto nb = norm.begin() + static_cast<std::ptrdiff_t>(b);
        const auto ne = nb + static_cast<std::ptrdiff_t>(std::min(n_items - b, kSieveRun));
        p.run_lo.push_back(*std::min_element(nb, ne));
        p.run_hi.push_back(*std::max_element(nb, ne));
    }
    poll_cancel(cancel);

    SimContext& cx = p.cx;
    cx.rows = packed ? nullptr : rows.data();
    cx.packed = packed;
    cx.cols = cols.data();
    cx.col_off = col_off.data();
    cx.norm = norm.data();
    cx.run_lo = p.run_lo.data();
    cx.run_hi = p.run_hi.data();
    cx.rank_of = rank_of.data();
    cx.dense_of = dense_of.data();
    cx.item_ids = m.item_ids.data();
    cx.slot = slot.data();
    cx.out_ids = m.nbr_ids.data();
    cx.out_sims = m.nbr_sims.data();
    cx.out_count = m.nbr_offsets.data() + 1;
    cx.n_items = n_items;
    cx.keep = opt.neighbors > 0 ? static_cast<std::size_t>(opt.neighbors) : 0;
    cx.finish = finish ? &*finish : nullptr;

    p.two_threads = threads > 1 || (threads <= 0 && total_work >= kMinParallelWork &&
                                    std::thread::hardware_concurrency() >= 2);
}

// Step 7: the slots compacted into the model's arrays (counts -> offsets,
// pairs moved down in place); returns the model.
Model compact_pass(PreparedPass& p, const CancelCheck& cancel) {
    Model& m = p.m;
    const std::size_t n_items = p.cx.n_items;
    const std::vector<int64_t>& slot = p.slot;
    int64_t pos = 0;
    for (std::size_t i = 0; i < n_items; ++i) {
        const int64_t cnt = m.nbr_offsets[i + 1], from = slot[i];
        if (from != pos) {
            std::copy(m.nbr_ids.begin() + from, m.nbr_ids.begin() + from + cnt, m.nbr_ids.begin() + pos);
            std::copy(m.nbr_sims.begin() + from, m.nbr_sims.begin() + from + cnt,
                      m.nbr_sims.begin() + pos);
        }
        pos += cnt;
        m.nbr_offsets[i + 1] = pos;
    }
    m.nbr_ids.resize(static_cast<std::size_t>(pos));
    m.nbr_sims.resize(static_cast<std::size_t>(pos));
    poll_cancel(cancel);
    return std::move(m);
}

// Steps 1-7 on `threads` (as train_threads).
Model train_prepared(InputCells cells, const TrainOptions& opt, const CancelCheck& cancel, int threads) {
    auto p = std::make_unique<PreparedPass>();
    prepare_pass(*p, std::move(cells), opt, cancel, threads);
    if (p->cx.n_items > 0) run_similarities(p->cx, p->two_threads, cancel, opt.progress);
    return compact_pass(*p, cancel);
}

}  // namespace

Model detail::train_threads(std::vector<Triplet> cells, const TrainOptions& opt,
                            const CancelCheck& cancel, int threads) {
    return train_prepared(InputCells(std::move(cells)), opt, cancel, threads);
}

Model detail::train_threads(Triplet* cells, std::size_t n, const TrainOptions& opt, const CancelCheck& cancel,
                            int threads) {
    return train_prepared(InputCells(cells, n), opt, cancel, threads);
}

// SteppedTraining: the similarity pass of prepare_pass()'s model in blocks of
// kBlock items taken from one counter by the caller (step) and a helper
// thread; a block's flag is set (release) when its items are final, and
// ready() advances over the set flags (acquire) in item order.
struct SteppedTraining::Impl {
    PreparedPass p;
    std::size_t n_blocks = 0;
    std::unique_ptr<std::atomic<unsigned char>[]> done;
    std::atomic<std::size_t> next{0};
    std::atomic<bool> stop{false}, helper_failed{false};
    std::exception_ptr helper_error;
    std::thread helper;
    std::size_t ready_blocks = 0;
    std::optional<SimWorker> own, other;  // the caller's, the helper's
    std::size_t work = 0;                 // the caller's multiply-adds since its last poll

    // Steps 1-5 (prepare_pass), and the blocks' flags.
    void prepare(InputCells cells, const TrainOptions& opt, const CancelCheck& cancel) {
        prepare_pass(p, std::move(cells), opt, cancel, 0);
        n_blocks = (p.cx.n_items + kBlock - 1) / kBlock;
        done.reset(new std::atomic<unsigned char>[n_blocks + 1]);
        for (std::size_t b = 0; b <= n_blocks; ++b) done[b].store(0, std::memory_order_relaxed);
    }

    void block(SimWorker& w, std::size_t b, const CancelCheck* cancel) {
        const std::size_t e = std::min(p.cx.n_items, (b + 1) * kBlock);
        for (std::size_t i = b * kBlock; i < e; ++i) {
            const std::size_t d = w.item(i);
            if (cancel && (work += d) >= kWorkPerPoll) {
                poll_cancel(*cancel);
                work = 0;
            }
        }
        done[b].store(1, std::memory_order_release);
    }
    // Lets the helper end its block in flight, joins it, rethrows its error.
    void join_helper() {
        if (helper.joinable()) {
            stop.store(true);
            helper.join();
        }
        if (helper_failed.load(std::memory_order_acquire)) std::rethrow_exception(helper_error);
    }
};

SteppedTraining::SteppedTraining(std::vector<Triplet> cells, const TrainOptions& opt, const CancelCheck& cancel)
    : impl_(std::make_unique<Impl>()) {
    impl_->prepare(InputCells(std::move(cells)), opt, cancel);
}

SteppedTraining::SteppedTraining(Triplet* cells, std::size_t n, const TrainOptions& opt,
                                 const CancelCheck& cancel)
    : impl_(std::make_unique<Impl>()) {
    impl_->prepare(InputCells(cells, n), opt, cancel);
}

SteppedTraining::~SteppedTraining() {
    if (impl_ && impl_->helper.joinable()) {
        impl_->stop.store(true);
        impl_->helper.join();
    }
}

const Model& SteppedTraining::model() const { return impl_->p.m; }

std::size_t SteppedTraining::items() const { return impl_->p.cx.n_items; }

void SteppedTraining::start_helper() {
    Impl& s = *impl_;
    if (!s.p.two_threads || s.n_blocks < 2 || s.helper.joinable()) return;
    try {
        s.helper = detail::start_thread_without_signals([&s] {
            try {
                for (;;) {
                    if (s.stop.load(std::memory_order_relaxed)) break;
                    const std::size_t b = s.next.fetch_add(1);
                    if (b >= s.n_blocks) break;
                    if (!s.other) s.other.emplace(s.p.cx);
                    s.block(*s.other, b, nullptr);
                }
            } catch (...) {
                s.helper_error = std::current_exception();
                s.helper_failed.store(true, std::memory_order_release);
            }
        });
    } catch (const std::system_error&) {
        // No thread available: step() takes every block.
    }
}

bool SteppedTraining::step(const CancelCheck& cancel) {
    Impl& s = *impl_;
    if (s.helper_failed.load(std::memory_order_acquire)) s.join_helper();
    poll_cancel(cancel);
    const std::size_t b = s.next.fetch_add(1);
    if (b >= s.n_blocks) return false;
    if (!s.own) s.own.emplace(s.p.cx);
    s.block(*s.own, b, &cancel);
    return true;
}

std::size_t SteppedTraining::ready() {
    Impl& s = *impl_;
    if (s.helper_failed.load(std::memory_order_acquire)) s.join_helper();
    while (s.ready_blocks < s.n_blocks && s.done[s.ready_blocks].load(std::memory_order_acquire)) ++s.ready_blocks;
    return std::min(s.p.cx.n_items, s.ready_blocks * kBlock);
}

NeighborList SteppedTraining::neighbours(std::size_t k) const {
    const PreparedPass& p = impl_->p;
    const auto from = static_cast<std::size_t>(p.slot[k]);
    return NeighborList{p.m.nbr_ids.data() + from, p.m.nbr_sims.data() + from,
                        static_cast<std::size_t>(p.m.nbr_offsets[k + 1])};
}

Model SteppedTraining::finish(const CancelCheck& cancel) {
    Impl& s = *impl_;
    while (step(cancel)) {
    }
    s.join_helper();  // every block is taken: the helper ends with its last one
    return compact_pass(s.p, cancel);
}

Model train(std::vector<Triplet> cells, const TrainOptions& opt, const CancelCheck& cancel) {
    return detail::train_threads(std::move(cells), opt, cancel, 0);
}

Model train(Triplet* cells, std::size_t n, const TrainOptions& opt, const CancelCheck& cancel) {
    return train_prepared(InputCells(cells, n), opt, cancel, 0);
}

}  // namespace recsys
