// core_source.cpp - key dictionaries and the cell aggregation (see
// core_source.hpp).
#include "core_source.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>
#include <utility>

#include <sys/mman.h>

namespace recsys {

namespace {

uint64_t mix64(uint64_t x)
{
    // splitmix64's finaliser
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

uint64_t bytes_hash(const char* p, std::size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (std::size_t i = 0; i < n; i++) {
        h ^= static_cast<unsigned char>(p[i]);
        h *= 0x100000001b3ULL;
    }
    return mix64(h ^ n);
}

inline uint64_t hash_key(const KeyRef& k, bool bytes)
{
    return bytes ? bytes_hash(k.p, k.n) : mix64(static_cast<uint64_t>(k.i));
}

constexpr std::size_t kMinSlots = 1024;

// How many keys (events) ahead the batches prefetch: enough to cover a
// memory access at the loop's pace, few enough to stay in L1.
constexpr std::size_t kPrefetchAhead = 16;

inline void prefetch(const void* p)
{
#if defined(__GNUC__)
    __builtin_prefetch(p);
#else
    (void) p;
#endif
}

// A slot may straddle two cache lines (24-byte cells: 3 slots in 8 do):
// both are prefetched.
template <typename Slot>
inline void prefetch_slot(const Slot* s)
{
    prefetch(s);
    const char* last = reinterpret_cast<const char*>(s) + sizeof(Slot) - 1;
    if ((reinterpret_cast<std::uintptr_t>(s) ^ reinterpret_cast<std::uintptr_t>(last)) >= 64)
        prefetch(last);
}

// For a cell's probe: the line of its first slot and the next one.  At the
// loads the cell table keeps (up to 0.7, up to 0.9 when it may not double)
// a probe often runs past its first line, and a 24-byte slot may straddle
// into the next one; the next line's address is formed as an integer (it
// may lie past the table's end: a prefetch never faults).
template <typename Slot>
inline void prefetch_probe(const Slot* s)
{
    prefetch(s);
    prefetch(reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(s) + 64));
}

// Calls place(j, hash(j)) for j = 0, 1, ..., n - 1, each hash(j) called
// kPrefetchAhead places before its place (so that hash can prefetch the slot
// place will touch).  Stops at the first place that returns false; returns
// the j it stopped at, or n.
template <typename Hash, typename Place>
std::size_t pipelined(std::size_t n, Hash&& hash, Place&& place)
{
    uint64_t ring[kPrefetchAhead];
    for (std::size_t j = 0; j < n && j < kPrefetchAhead; j++)
        ring[j] = hash(j);
    for (std::size_t j = 0; j < n; j++) {
        uint64_t h = ring[j % kPrefetchAhead];
        if (j + kPrefetchAhead < n)
            ring[j % kPrefetchAhead] = hash(j + kPrefetchAhead);
        if (!place(j, h))
            return j;
    }
    return n;
}

// A cell's key, never 0 (CellAggregator::kEmpty): user indices are >= 0,
// so user << 32 | item is below 2^63 and one more does not wrap.
uint64_t cell_key(int32_t user, int32_t item)
{
    return ((static_cast<uint64_t>(static_cast<uint32_t>(user)) << 32) | static_cast<uint32_t>(item)) + 1;
}

}  // namespace

constexpr std::size_t kHugePage = std::size_t{2} << 20;

// The heap's table memory (see TableSpace): below 2 MB plain operator new,
// from 2 MB on 2 MB aligned and advised as huge pages.
static void* table_alloc(std::size_t bytes)
{
    if (bytes < kHugePage)
        return ::operator new(bytes);
    void* p = nullptr;
    std::size_t rounded = (bytes + kHugePage - 1) & ~(kHugePage - 1);
    if (posix_memalign(&p, kHugePage, rounded) != 0)
        throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    (void) madvise(p, rounded, MADV_HUGEPAGE);   // advice: no huge pages is no error
#endif
    return p;
}

static void table_free(void* p, std::size_t bytes) noexcept
{
    if (bytes < kHugePage)
        ::operator delete(p);
    else
        std::free(p);
}

static std::size_t round_to_huge(std::size_t bytes)
{
    return (bytes + kHugePage - 1) & ~(kHugePage - 1);
}

TableSpace table_space_alloc(std::size_t bytes, std::size_t reserve)
{
    if (bytes >= kHugePage && std::max(bytes, reserve) <= std::numeric_limits<std::size_t>::max() / 2) {
        const std::size_t room = round_to_huge(std::max(bytes, reserve));
        const std::size_t len = room + kHugePage;  // for the alignment
        void* m = mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m != MAP_FAILED) {
            const uintptr_t a = (reinterpret_cast<uintptr_t>(m) + kHugePage - 1) & ~uintptr_t(kHugePage - 1);
            char* base = reinterpret_cast<char*>(a);
            const std::size_t usable = round_to_huge(bytes);
            if (mprotect(base, usable, PROT_READ | PROT_WRITE) != 0) {
                munmap(m, len);
                throw std::bad_alloc();
            }
#ifdef MADV_HUGEPAGE
            (void) madvise(base, room, MADV_HUGEPAGE);  // advice: no huge pages is no error
#endif
            return TableSpace{base, usable, room, m, len, true};
        }
    }
    // Small, or no address space to reserve: a table that cannot grow in place.
    return TableSpace{static_cast<char*>(table_alloc(bytes)), bytes, bytes, nullptr, 0, false};
}

bool table_space_extend(TableSpace& sp, std::size_t bytes)
{
    if (bytes <= sp.usable)
        return true;
    if (sp.map == nullptr || bytes > sp.reserved)
        return false;
    const std::size_t usable = round_to_huge(bytes);
    if (mprotect(sp.base + sp.usable, usable - sp.usable, PROT_READ | PROT_WRITE) != 0)
        return false;
    sp.usable = usable;
    return true;
}

void table_space_free(TableSpace& sp) noexcept
{
    if (sp.map != nullptr)
        munmap(sp.map, sp.map_len);
    else if (sp.base != nullptr)
        table_free(sp.base, sp.usable);
    sp = TableSpace{};
}

bool table_prefault(void* p, std::size_t bytes) noexcept
{
#ifdef MADV_POPULATE_WRITE
    // madvise wants a page-aligned start: widen down to the page.
    const uintptr_t a = reinterpret_cast<uintptr_t>(p), start = a & ~uintptr_t(4095);
    return madvise(reinterpret_cast<void*>(start), bytes + (a - start), MADV_POPULATE_WRITE) == 0;
#else
    (void) p;
    (void) bytes;
    return false;
#endif
}

uint64_t key_hash(const KeyRef& k, bool bytes)
{
    return hash_key(k, bytes);
}

// ---------------------------------------------------------------------------
// Doubling a linear-probing table in place

namespace {

// The table t was `old` slots and is now 2 old, the upper half empty: every
// cell moves to its place in the doubled table without a second table.
// A cell's new home is its old home h or h + old.  The old slots are taken
// in cyclic order from just after an empty one (so no run of full slots is
// cut where the order starts): each cell is lifted out of its slot, which
// stays empty, and probed for from its new home.  That probe never passes
// a cell not yet lifted, so lifting one later leaves no gap in the probe
// of a cell already placed:
// - from h, it runs over the old run from h to the cell's own slot, all
//   taken before it in this order, and stops at its own slot at the latest;
//   a run that wrapped past the old table's end goes on in the upper half;
// - from h + old, it runs in the upper half, which holds placed cells
//   only; it can run past the table's end into slot 0 only after the order
//   wrapped too (before that, the cells with new homes at or above any x
//   came from distinct old slots at or above x - old: no more than the
//   slots from x to the end), and then stops at its own slot at the latest.
template <typename Slot, typename IsEmpty, typename Hash>
void rehash_in_place(Slot* const t, std::size_t old, IsEmpty is_empty, Hash hash, const Slot& empty)
{
    const std::size_t mask = 2 * old - 1, old_mask = old - 1;
    std::size_t start = 0;
    while (!is_empty(t[start]))  // there is one: the load is below 1
        start++;
    for (std::size_t k = 1; k <= old; k++) {
        const std::size_t p = (start + k) & old_mask;
        const Slot cell = t[p];
        if (is_empty(cell))
            continue;
        t[p] = empty;
        std::size_t pos = static_cast<std::size_t>(hash(cell)) & mask;
        while (!is_empty(t[pos]))
            pos = (pos + 1) & mask;
        t[pos] = cell;
    }
}

}  // namespace

// ---------------------------------------------------------------------------
// KeyDict

bool KeyDict::equal(const Slot& s, uint64_t tag, const KeyRef& k) const
{
    if (s.tag != tag)
        return false;
    if (!bytes_)
        return true;
    std::size_t i = static_cast<std::size_t>(s.idx1 - 1);
    std::size_t len = offsets_[i + 1] - offsets_[i];
    return len == k.n && (len == 0 || std::memcmp(arena_.data() + offsets_[i], k.p, len) == 0);
}

void KeyDict::rebuild_slots(std::size_t n)
{
    // The old slots hold every key's tag: no key bytes are reread.
    const std::size_t old_n = slots_.size();
    if (old_n != 0 && n == 2 * old_n && slots_.extend(n, Slot{0, 0})) {
        rehash_in_place(
            slots_.data(), old_n, [](const Slot& s) { return s.idx1 == 0; },
            [this](const Slot& s) { return bytes_ ? s.tag : mix64(s.tag); }, Slot{0, 0});
        return;
    }
    SlotTable<Slot> s;
    SlotTable<Slot>::make(s, n, Slot{0, 0}, 8 * n * sizeof(Slot));
    std::size_t mask = n - 1;
    // In the old slots' order (so the same table as one by one), each new
    // slot prefetched ahead.
    pipelined(
        slots_.size(),
        [&](std::size_t j) {
            uint64_t h = bytes_ ? slots_[j].tag : mix64(slots_[j].tag);
            if (slots_[j].idx1 != 0)
                prefetch(&s[static_cast<std::size_t>(h) & mask]);
            return h;
        },
        [&](std::size_t j, uint64_t h) {
            const Slot& old = slots_[j];
            if (old.idx1 != 0) {
                std::size_t pos = static_cast<std::size_t>(h) & mask;
                while (s[pos].idx1 != 0)
                    pos = (pos + 1) & mask;
                s[pos] = old;
            }
            return true;
        });
    slots_.swap(s);
}

void KeyDict::grow()
{
    rebuild_slots(slots_.empty() ? kMinSlots : slots_.size() * 2);
}

int32_t KeyDict::find(const KeyRef& k) const
{
    if (slots_.empty())
        return -1;
    std::size_t mask = slots_.size() - 1;
    uint64_t h = key_hash(k, bytes_);
    uint64_t tag = bytes_ ? h : static_cast<uint64_t>(k.i);
    std::size_t pos = static_cast<std::size_t>(h) & mask;
    while (slots_[pos].idx1 != 0) {
        if (equal(slots_[pos], tag, k))
            return slots_[pos].idx1 - 1;
        pos = (pos + 1) & mask;
    }
    return -1;
}

int32_t KeyDict::add(const KeyRef& k)
{
    return add_hashed(k, hash_key(k, bytes_));
}

void KeyDict::add_batch(const KeyRef* keys, std::size_t n, int32_t* out)
{
    pipelined(
        n,
        [&](std::size_t k) {
            uint64_t h = hash_key(keys[k], bytes_);
            // A table that grows meanwhile makes this a wasted prefetch.
            if (!slots_.empty())
                prefetch(&slots_[static_cast<std::size_t>(h) & (slots_.size() - 1)]);
            return h;
        },
        [&](std::size_t k, uint64_t h) {
            out[k] = add_hashed(keys[k], h);
            return true;
        });
}

int32_t KeyDict::add_hashed(const KeyRef& k, uint64_t h)
{
    // Event logs come in runs of one user's (or item's) events: the last
    // integer key answers without a probe.
    if (!bytes_ && last_idx_ >= 0 && k.i == last_key_)
        return last_idx_;
    if ((count_ + 1) * 2 > slots_.size())
        grow();
    uint64_t tag = bytes_ ? h : static_cast<uint64_t>(k.i);
    std::size_t mask = slots_.size() - 1;
    std::size_t pos = static_cast<std::size_t>(h) & mask;
    while (slots_[pos].idx1 != 0) {
        if (equal(slots_[pos], tag, k)) {
            last_key_ = k.i;
            last_idx_ = slots_[pos].idx1 - 1;
            return last_idx_;
        }
        pos = (pos + 1) & mask;
    }
    if (count_ >= static_cast<std::size_t>(std::numeric_limits<int32_t>::max()))
        throw InvalidInput("recsys: more than 2147483647 distinct keys");
    int32_t idx = static_cast<int32_t>(count_);
    if (bytes_) {
        if (offsets_.empty())
            offsets_.push_back(0);
        arena_.append(k.p, k.n);
        offsets_.push_back(arena_.size());
    } else {
        ints_.push_back(k.i);
    }
    slots_[pos] = Slot{tag, idx + 1};
    count_++;
    last_key_ = k.i;
    last_idx_ = idx;
    return idx;
}

std::vector<int32_t> KeyDict::sort_by_key()
{
    std::vector<int32_t> order(count_);   // new index -> old index
    for (std::size_t i = 0; i < count_; i++)
        order[i] = static_cast<int32_t>(i);
    if (bytes_) {
        auto less = [this](int32_t a, int32_t b) {
            std::size_t la = offsets_[a + 1] - offsets_[a], lb = offsets_[b + 1] - offsets_[b];
            int c = std::memcmp(arena_.data() + offsets_[a], arena_.data() + offsets_[b], std::min(la, lb));
            return c < 0 || (c == 0 && la < lb);
        };
        std::sort(order.begin(), order.end(), less);
        std::string arena;
        arena.reserve(arena_.size());
        std::vector<uint64_t> offsets(count_ + 1, 0);
        for (std::size_t i = 0; i < count_; i++) {
            int32_t o = order[i];
            arena.append(arena_, offsets_[o], offsets_[o + 1] - offsets_[o]);
            offsets[i + 1] = arena.size();
        }
        arena_.swap(arena);
        if (count_ > 0)
            offsets_.swap(offsets);
    } else {
        // The keys beside their indices: the sort reads them in place, not
        // through the indices at random.  (Keys are distinct: the same order.)
        std::vector<std::pair<int64_t, int32_t>> byk(count_);
        for (std::size_t i = 0; i < count_; i++)
            byk[i] = {ints_[i], static_cast<int32_t>(i)};
        std::sort(byk.begin(), byk.end());
        for (std::size_t i = 0; i < count_; i++) {
            ints_[i] = byk[i].first;
            order[i] = byk[i].second;
        }
    }
    std::vector<int32_t> remap(count_);
    for (std::size_t i = 0; i < count_; i++)
        remap[order[i]] = static_cast<int32_t>(i);
    last_idx_ = -1;
    for (Slot& s : slots_)
        if (s.idx1 != 0)
            s.idx1 = remap[s.idx1 - 1] + 1;
    return remap;
}

std::string KeyDict::bytes_key(int32_t idx) const
{
    std::size_t i = static_cast<std::size_t>(idx);
    return arena_.substr(offsets_[i], offsets_[i + 1] - offsets_[i]);
}

std::size_t KeyDict::memory_bytes() const
{
    return slots_.size() * sizeof(Slot) + ints_.capacity() * sizeof(int64_t) +
           offsets_.capacity() * sizeof(uint64_t) + arena_.capacity();
}

std::size_t KeyDict::estimate_bytes(int64_t keys, bool bytes, double avg_len)
{
    if (keys <= 0)
        return 0;
    std::size_t slots = kMinSlots;
    while (slots < static_cast<std::size_t>(keys) * 2)
        slots *= 2;
    // Vectors grow by doubling: up to twice the keys' room while growing.
    std::size_t per_key = bytes ? 2 * (sizeof(uint64_t) + static_cast<std::size_t>(std::ceil(avg_len)))
                                : 2 * sizeof(int64_t);
    return slots * sizeof(Slot) * 3 / 2 + static_cast<std::size_t>(keys) * per_key;
}

void KeyDict::clear()
{
    count_ = 0;
    last_idx_ = -1;
    slots_.reset();
    std::vector<int64_t>().swap(ints_);
    std::vector<uint64_t>().swap(offsets_);
    std::string().swap(arena_);
}

// ---------------------------------------------------------------------------
// CellAggregator

CellAggregator::CellAggregator(DecaySpec decay, std::size_t max_bytes) : decay_(decay), max_bytes_(max_bytes) {}

// The slots the table reaches for `cells` cells by doubling, at most 70%
// full (grow()'s rule).
static std::size_t cell_slots_for(int64_t cells)
{
    std::size_t slots = kMinSlots;
    while (cells > 0 && slots * 7 < static_cast<std::size_t>(cells) * 10)
        slots *= 2;
    return slots;
}

std::size_t CellAggregator::estimate_bytes(int64_t cells)
{
    return cell_slots_for(cells) * sizeof(Slot);
}

std::size_t CellAggregator::home_slot(int32_t user, int32_t item, std::size_t slots)
{
    return static_cast<std::size_t>(mix64(cell_key(user, item))) & (slots - 1);
}

// The room a table of `slots` slots is mapped with: all max_bytes allows
// (a table never passes it), or, unbounded, eight times its size.
std::size_t CellAggregator::room_for(std::size_t slots) const
{
    return max_bytes_ != 0 ? max_bytes_ : 8 * slots * sizeof(Slot);
}

bool CellAggregator::grow()
{
    const std::size_t old = slots_.size();
    const std::size_t n = old == 0 ? kMinSlots : old * 2;
    // A doubling that copies holds the old and the new table at once: the
    // limit counts both, also for one done in place (the same table sizes
    // whichever way a table doubles).
    if (max_bytes_ != 0 && (n + old) * sizeof(Slot) > max_bytes_)
        return false;
    if (old != 0 && slots_.extend(n, Slot{kEmpty, 0, 0})) {
        rehash_in_place(old);
        return true;
    }
    SlotTable<Slot> s;
    SlotTable<Slot>::make(s, n, Slot{kEmpty, 0, 0}, room_for(n));
    std::size_t mask = n - 1;
    // In the old slots' order (the same table as one by one), each new slot
    // prefetched ahead.
    pipelined(
        old,
        [&](std::size_t j) {
            uint64_t h = mix64(slots_[j].key);
            if (slots_[j].key != kEmpty)
                prefetch_slot(&s[static_cast<std::size_t>(h) & mask]);
            return h;
        },
        [&](std::size_t j, uint64_t h) {
            const Slot& old_slot = slots_[j];
            if (old_slot.key != kEmpty) {
                std::size_t pos = static_cast<std::size_t>(h) & mask;
                while (s[pos].key != kEmpty)
                    pos = (pos + 1) & mask;
                s[pos] = old_slot;
            }
            return true;
        });
    slots_.swap(s);
    return true;
}

void CellAggregator::rehash_in_place(std::size_t old)
{
    recsys::rehash_in_place(
        slots_.data(), old, [](const Slot& s) { return s.key == kEmpty; }, [](const Slot& s) { return mix64(s.key); },
        Slot{kEmpty, 0, 0});
}

void CellAggregator::not_finite(uint64_t key)
{
    throw InvalidInput("recsys: an event's weight times value is not finite (user index " +
                       std::to_string(key_user(key)) + ", item index " + std::to_string(key_item(key)) + ")");
}

void CellAggregator::check_not_released() const
{
    if (released_ != 0)
        throw std::logic_error("recsys: cells added to an aggregation whose table was released");
}

void CellAggregator::check_emit_from(std::size_t pos) const
{
    if (pos < released_)
        throw std::logic_error("recsys: cells emitted from a released part of the table");
}

bool CellAggregator::add(int32_t user, int32_t item, double wv, int64_t time_us)
{
    check_not_released();
    uint64_t key = cell_key(user, item);
    return add_hashed(key, mix64(key), wv, time_us);
}

inline bool CellAggregator::add_hashed(uint64_t key, uint64_t h, double wv, int64_t time_us)
{
    if (!std::isfinite(wv))
        not_finite(key);
    std::size_t pos = 0;
    if (last_pos_ < slots_.size() && slots_[last_pos_].key == key) {
        pos = last_pos_;   // a run of events of one cell
    } else if (!slots_.empty()) {
        std::size_t mask = slots_.size() - 1;
        pos = static_cast<std::size_t>(h) & mask;
        while (slots_[pos].key != kEmpty && slots_[pos].key != key)
            pos = (pos + 1) & mask;
    }
    if (slots_.empty() || slots_[pos].key == kEmpty) {
        // A new cell: keep the load at most 0.7, or 0.9 when the table may
        // not double.
        if ((count_ + 1) * 10 > slots_.size() * 7) {
            bool grown = grow();
            if (!grown && (slots_.empty() || (count_ + 1) * 10 > slots_.size() * 9))
                return false;
            std::size_t mask = slots_.size() - 1;
            pos = static_cast<std::size_t>(h) & mask;
            while (slots_[pos].key != kEmpty)
                pos = (pos + 1) & mask;
        }
        Slot& s = slots_[pos];
        s.key = key;
        s.sum = wv;
        s.ref_us = time_us;
        count_++;
        last_pos_ = pos;
        return true;
    }
    last_pos_ = pos;
    Slot& s = slots_[pos];
    if (!decay_.on()) {
        s.sum += wv;
    } else if (time_us > s.ref_us) {
        // The new event becomes the reference: age the sum so far.
        s.sum = s.sum * std::exp2(-static_cast<double>(time_us - s.ref_us) / decay_.half_life_us) + wv;
        s.ref_us = time_us;
    } else {
        s.sum += wv * std::exp2(-static_cast<double>(s.ref_us - time_us) / decay_.half_life_us);
    }
    return true;
}

std::size_t CellAggregator::add_batch(const int32_t* users, const int32_t* items, const double* wv,
                                     const int64_t* time_us, const bool* skip, std::size_t n)
{
    // Each cell's hash, computed once where its slot is prefetched, rides
    // the ring to its add.
    check_not_released();
    return pipelined(
        n,
        [&](std::size_t k) {
            uint64_t h = mix64(cell_key(users[k], items[k]));
            if (!slots_.empty() && (skip == nullptr || !skip[k]))
                prefetch_probe(&slots_[static_cast<std::size_t>(h) & (slots_.size() - 1)]);
            return h;
        },
        [&](std::size_t k, uint64_t h) {
            return (skip != nullptr && skip[k]) || add_hashed(cell_key(users[k], items[k]), h, wv[k], time_us[k]);
        });
}

double CellAggregator::final_weight(const Slot& s, int64_t newest_us) const
{
    if (!decay_.on())
        return s.sum;
    double age = static_cast<double>(newest_us - s.ref_us);
    if (age < 0)
        age = 0;   // newest_us is the newest event: never, but stay exact-or-lower
    return s.sum * std::exp2(-age / decay_.half_life_us);
}

std::size_t CellAggregator::emit_into(std::size_t* pos, int64_t newest_us, Triplet* out, std::size_t cap,
                                      int64_t* dropped) const
{
    check_emit_from(*pos);
    std::size_t n = 0;
    while (*pos < slots_.size() && n < cap) {
        const Slot& s = slots_[(*pos)++];
        if (s.key == kEmpty)
            continue;
        double w = final_weight(s, newest_us);
        if (w > 0)
            out[n++] = Triplet{key_user(s.key), key_item(s.key), w};
        else
            (*dropped)++;
    }
    return n;
}

std::size_t CellAggregator::raw_into(std::size_t* pos, RawCell* out, std::size_t cap) const
{
    check_emit_from(*pos);
    std::size_t n = 0;
    while (*pos < slots_.size() && n < cap) {
        const Slot& s = slots_[(*pos)++];
        if (s.key != kEmpty)
            out[n++] = RawCell{key_user(s.key), key_item(s.key), s.sum,
                               s.ref_us};
    }
    return n;
}

void CellAggregator::release_emitted(std::size_t pos)
{
    pos = std::min(pos, slots_.size());
    released_ = std::max(released_, pos);
    // table_space_alloc gave a table of 2 MB or more whole 2 MB blocks, 2 MB
    // aligned: the emitted ones go back (a smaller table stays as it is).
    if (slots_.size() * sizeof(Slot) < kHugePage)
        return;
    const std::size_t upto = (released_ * sizeof(Slot)) & ~(kHugePage - 1);
    if (upto <= released_bytes_)
        return;
#ifdef MADV_DONTNEED
    char* base = reinterpret_cast<char*>(slots_.data());
    (void) madvise(base + released_bytes_, upto - released_bytes_, MADV_DONTNEED);  // advice: no error
#endif
    released_bytes_ = upto;
}

void CellAggregator::reserve(int64_t cells)
{
    check_not_released();
    if (!slots_.empty() || cells <= 0)
        return;
    std::size_t n = cell_slots_for(cells);
    // grow() doubles to n only when n and n / 2 slots fit max_bytes at once.
    while (max_bytes_ != 0 && n > kMinSlots && (n + n / 2) * sizeof(Slot) > max_bytes_)
        n /= 2;
    SlotTable<Slot>::make(slots_, n, Slot{kEmpty, 0, 0}, room_for(n));
}

void CellAggregator::table_span(char** first, std::size_t* bytes)
{
    *first = reinterpret_cast<char*>(slots_.data());
    *bytes = slots_.size() * sizeof(Slot);
}

void CellAggregator::clear()
{
    count_ = 0;
    last_pos_ = ~std::size_t{0};
    released_ = 0;
    released_bytes_ = 0;
    slots_.reset();
}

// ---------------------------------------------------------------------------
// add_blocks

namespace {

// After block b (events [begin, begin + n), of which `added` went to the
// cells): counts them, and says whether the block is full (an event was
// refused, or, whenever the count passes a multiple of 4096, `bytes` plus
// other_bytes[b] is over the limit), noting it in *r.
bool block_full(BlocksAdded* r, std::size_t b, std::size_t begin, std::size_t added, std::size_t n,
                int64_t* aggregated, std::size_t bytes, const EventBlocks& ev, std::size_t limit)
{
    int64_t before = *aggregated;
    *aggregated += static_cast<int64_t>(added);
    r->added = begin + added;
    // The sizes grow by doublings: a look every 4096 events is enough.
    if (added < n || ((before >> 12) != (*aggregated >> 12) && bytes + ev.other_bytes[b] > limit)) {
        r->block = b;
        r->full = true;
        return true;
    }
    return false;
}

}  // namespace

BlocksAdded add_blocks(KeyDict& users, CellAggregator& cells, const EventBlocks& ev, int64_t aggregated,
                       std::size_t limit)
{
    cells.check_not_released();
    // One loop over each block with two prefetch stages, so that the
    // dictionary's and the cells' cache misses overlap: at step j the key
    // of event j is hashed and its dictionary slot prefetched, the user of
    // event j - D is added and its cell's slot prefetched, and event j - 2D
    // is added to its cell.  Users and cells are each added in event order,
    // as by users.add_batch() of the block and then cells.add_batch().
    constexpr std::size_t D = kPrefetchAhead;
    const bool bytes = users.bytes_;
    uint64_t user_h[D], cell_h[D];
    BlocksAdded r;
    std::size_t begin = 0;
    for (std::size_t b = 0; b < ev.blocks; b++) {
        const std::size_t end = ev.block_end[b], n = end - begin;
        const KeyRef* keys = ev.users + begin;
        int32_t* idx = ev.user_idx + begin;
        const int32_t* items = ev.items + begin;
        const bool* skip = ev.skip != nullptr ? ev.skip + begin : nullptr;
        std::size_t added = n;
        for (std::size_t j = 0; j < n + 2 * D; j++) {
            // (Each ring entry is read by the later stage before the earlier
            // one writes it again.)
            if (j >= 2 * D) {
                std::size_t k = j - 2 * D;
                if (k < n && (skip == nullptr || !skip[k]) &&
                    !cells.add_hashed(cell_key(idx[k], items[k]), cell_h[k % D], ev.wv[begin + k],
                                      ev.time_us[begin + k])) {
                    // Refused: the rest of the block's users still go to the
                    // dictionary, its events not to the cells.
                    added = k;
                    std::size_t u = j - D;
                    if (u < n)
                        users.add_batch(keys + u, n - u, idx + u);
                    break;
                }
            }
            if (j >= D && j - D < n) {
                std::size_t k = j - D;
                idx[k] = users.add_hashed(keys[k], user_h[k % D]);
                if (skip == nullptr || !skip[k]) {
                    uint64_t h = mix64(cell_key(idx[k], items[k]));
                    cell_h[k % D] = h;
                    if (!cells.slots_.empty())
                        prefetch_probe(&cells.slots_[static_cast<std::size_t>(h) & (cells.slots_.size() - 1)]);
                }
            }
            if (j < n) {
                uint64_t h = hash_key(keys[j], bytes);
                user_h[j % D] = h;
                if (!users.slots_.empty())
                    prefetch(&users.slots_[static_cast<std::size_t>(h) & (users.slots_.size() - 1)]);
            }
        }
        if (block_full(&r, b, begin, added, n, &aggregated, users.memory_bytes() + cells.memory_bytes(), ev, limit))
            return r;
        begin = end;
    }
    r.block = ev.blocks;
    return r;
}

BlocksAdded add_cell_blocks(CellAggregator& cells, const EventBlocks& ev, int64_t aggregated, std::size_t limit)
{
    BlocksAdded r;
    std::size_t begin = 0;
    for (std::size_t b = 0; b < ev.blocks; b++) {
        const std::size_t end = ev.block_end[b], n = end - begin;
        std::size_t added = cells.add_batch(ev.user_idx + begin, ev.items + begin, ev.wv + begin, ev.time_us + begin,
                                            ev.skip != nullptr ? ev.skip + begin : nullptr, n);
        if (block_full(&r, b, begin, added, n, &aggregated, cells.memory_bytes(), ev, limit))
            return r;
        begin = end;
    }
    r.block = ev.blocks;
    return r;
}

// ---------------------------------------------------------------------------
// PartQueue

void PartQueue::split()
{
    UserPart p = parts_.front();
    if (p.modulus >= (uint64_t{1} << 40))
        throw InvalidInput("recsys: the events of one part of the users do not fit the memory budget even "
                           "split 2^40 ways");
    parts_.erase(parts_.begin());
    parts_.insert(parts_.begin(), UserPart{p.modulus * 2, p.residue + p.modulus});
    parts_.insert(parts_.begin(), UserPart{p.modulus * 2, p.residue});
}

}  // namespace recsys
