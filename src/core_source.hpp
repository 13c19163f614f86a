// core_source.hpp - turning a raw events log into matrix cells: the keys of
// the source (any integer, text or uuid ids) mapped to dense 32-bit indices,
// and w(u,i) = sum over events of weight(event_type) * value, optionally
// decayed with a half-life, aggregated in hash tables.
//
// PostgreSQL-free like core.hpp.  The glue streams the rows of the plainest
// query over the events relation into these structures; no SQL GROUP BY.
// Memory: every structure reports its bytes, and CellAggregator::add refuses
// (returns false) to grow past its limit, so that the caller can restrict the
// pass to a part of the users (user_part) and read the source again: beyond
// the budget, training reads in more passes, more slowly, and does not fail.
#pragma once

#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "core.hpp"

namespace recsys {

struct EventBlocks;
struct BlocksAdded;
class KeyDict;
class CellAggregator;
BlocksAdded add_blocks(KeyDict& users, CellAggregator& cells, const EventBlocks& ev, int64_t aggregated,
                       std::size_t limit);

// Address space for a hash table larger than the caches, which doubles in
// place.  A table of 2 MB or more is mapped with room reserved behind it
// (PROT_NONE: nothing is committed or touched) up to `reserve` bytes, 2 MB
// aligned and advised to the kernel as huge pages (so that a random probe
// costs one cache miss and not a TLB miss, a page walk, too);
// table_space_extend makes more of that room usable, so a doubling keeps
// the old slots where they are instead of holding an old table beside a
// new one.  A smaller table is plain operator new (and, when no mapping can
// be had, a larger one 2 MB aligned memory from the heap), and is never
// extended in place.
struct TableSpace {
    char* base = nullptr;      // the table's first byte
    std::size_t usable = 0;    // bytes readable and writable from base
    std::size_t reserved = 0;  // bytes from base it may be extended to
    void* map = nullptr;       // the whole mapping (nullptr: table_alloc)
    std::size_t map_len = 0;
    bool zeroed = false;       // a fresh mapping: every byte not yet written is 0
};
TableSpace table_space_alloc(std::size_t bytes, std::size_t reserve);
// Makes the first `bytes` usable, keeping the contents in place; false
// (nothing changed) beyond the reserved room or when the system refuses.
bool table_space_extend(TableSpace& sp, std::size_t bytes);
void table_space_free(TableSpace& sp) noexcept;
// Faults in the pages of [p, p + bytes) writable without writing to them
// (MADV_POPULATE_WRITE): the kernel zeroes fresh ones, no content changes,
// so another thread may be adding to the table meanwhile.  False when the
// system cannot (a kernel before 5.14): the caller stops trying.
bool table_prefault(void* p, std::size_t bytes) noexcept;

// A table of trivially copyable slots in a TableSpace.
template <typename T>
class SlotTable {
    static_assert(std::is_trivially_copyable<T>::value, "slots are moved as bytes");

public:
    SlotTable() = default;
    SlotTable(const SlotTable&) = delete;
    SlotTable& operator=(const SlotTable&) = delete;
    ~SlotTable() { table_space_free(sp_); }
    std::size_t size() const { return n_; }
    bool empty() const { return n_ == 0; }
    T* data() { return reinterpret_cast<T*>(sp_.base); }
    const T* data() const { return reinterpret_cast<const T*>(sp_.base); }
    T& operator[](std::size_t i) { return data()[i]; }
    const T& operator[](std::size_t i) const { return data()[i]; }
    const T* begin() const { return data(); }
    const T* end() const { return data() + n_; }
    T* begin() { return data(); }
    T* end() { return data() + n_; }
    // A fresh table of n copies of `fill`, with room up to reserve_bytes.
    // A fill of zero bytes in a fresh mapping is not written: its pages
    // are zero when first touched, by whichever thread adds to them.
    static void make(SlotTable& t, std::size_t n, const T& fill, std::size_t reserve_bytes)
    {
        t.reset();
        t.sp_ = table_space_alloc(n * sizeof(T), reserve_bytes);
        t.n_ = n;
        if (!(t.sp_.zeroed && zero_bytes(fill)))
            std::fill(t.data(), t.data() + n, fill);
    }
    // Grows to n slots in place, the new ones `fill`; false (unchanged)
    // when the room reserved does not allow it.
    bool extend(std::size_t n, const T& fill)
    {
        if (n <= n_)
            return true;
        if (!table_space_extend(sp_, n * sizeof(T)))
            return false;
        if (!(sp_.zeroed && zero_bytes(fill)))  // (nothing past n_ was written)
            std::fill(data() + n_, data() + n, fill);
        n_ = n;
        return true;
    }
    void swap(SlotTable& o) noexcept
    {
        std::swap(sp_, o.sp_);
        std::swap(n_, o.n_);
    }
    void reset() noexcept
    {
        table_space_free(sp_);
        n_ = 0;
    }

private:
    static bool zero_bytes(const T& v)
    {
        const unsigned char* p = reinterpret_cast<const unsigned char*>(&v);
        return std::all_of(p, p + sizeof(T), [](unsigned char c) { return c == 0; });
    }
    TableSpace sp_;
    std::size_t n_ = 0;
};

// A key as the glue hands it over: an integer, or bytes (text, varchar,
// uuid's 16 bytes).
struct KeyRef {
    int64_t i = 0;
    const char* p = nullptr;  // bytes: non-null (may be empty with n == 0)
    std::size_t n = 0;
};

// 64-bit hash of a key (FNV-1a folded through a 64-bit mixer); the same on
// every platform, so partitions are reproducible.
uint64_t key_hash(const KeyRef& k, bool bytes);

// Maps keys to dense indices 0, 1, 2, ... in first-seen order (until
// sort_by_key()).  Integer or byte-string keys, chosen at construction.
// Open addressing at a load of at most 1/2 over 16-byte slots that hold the
// integer key (or the byte key's hash) beside its index, so that a probe
// touches one cache line and not the key arrays: 8 bytes per integer key
// (plus 16 per byte key and its bytes), and 16 per slot.
class KeyDict {
public:
    explicit KeyDict(bool bytes) : bytes_(bytes) {}

    bool bytes() const { return bytes_; }
    // The key's index, adding it when new.  Throws InvalidInput past
    // 2^31 - 1 keys (indices are int32).
    int32_t add(const KeyRef& k);
    // add() of keys[0..n) in order, into out[0..n): the same indices and
    // the same table as n calls of add(), with each key's slot prefetched a
    // few keys ahead (the table is larger than the caches on big logs).
    void add_batch(const KeyRef* keys, std::size_t n, int32_t* out);
    // The key's index, or -1.
    int32_t find(const KeyRef& k) const;
    std::size_t size() const { return count_; }
    // The key of index idx.
    int64_t int_key(int32_t idx) const { return ints_[static_cast<std::size_t>(idx)]; }
    std::string bytes_key(int32_t idx) const;
    // The same without copying: points into the dictionary (valid until
    // the next add or clear).
    const char* bytes_data(int32_t idx, std::size_t* len) const
    {
        std::size_t i = static_cast<std::size_t>(idx);
        *len = offsets_[i + 1] - offsets_[i];
        return arena_.data() + offsets_[i];
    }
    // Heap bytes held now.
    std::size_t memory_bytes() const;
    // The byte keys' string: its length, and the capacity memory_bytes()
    // counts (which depends on the order of the lengths added: at most
    // twice the length, or 15).
    std::size_t arena_bytes() const { return arena_.size(); }
    std::size_t arena_capacity() const { return arena_.capacity(); }
    // Heap bytes that `keys` keys of average length `avg_len` would hold at
    // most (for planning).
    static std::size_t estimate_bytes(int64_t keys, bool bytes, double avg_len);
    void clear();
    // Renumbers the keys in ascending key order (integers by value, bytes
    // by memcmp then length, which is uuid's order and text's in the C
    // collation), so that the indices do not depend on the order the keys
    // were added in.  Returns the old index -> new index map.
    std::vector<int32_t> sort_by_key();

private:
    friend BlocksAdded add_blocks(KeyDict&, CellAggregator&, const EventBlocks&, int64_t, std::size_t);
    struct Slot {
        uint64_t tag;   // the integer key, or the byte key's hash
        int32_t idx1;   // index + 1, 0 = empty
    };
    bool equal(const Slot& s, uint64_t tag, const KeyRef& k) const;
    int32_t add_hashed(const KeyRef& k, uint64_t h);
    void grow();
    void rebuild_slots(std::size_t n);
    bool bytes_;
    std::size_t count_ = 0;
    SlotTable<Slot> slots_;           // size a power of two; doubles in place from 2 MB on
    std::vector<int64_t> ints_;       // integer keys by index
    std::vector<uint64_t> offsets_;   // byte keys: index -> start in arena_ (count_ + 1 entries)
    std::string arena_;               // byte keys, concatenated
    int64_t last_key_ = 0;            // integer keys: the last key added and its index (-1: none)
    int32_t last_idx_ = -1;
};

// Time decay as in Microsoft's SAR: an event of age a counts
// weight * value * 2^(-a / half_life).  Times are microseconds.
struct DecaySpec {
    double half_life_us = 0;  // 0 = no decay
    bool on() const { return half_life_us > 0; }
};

// What an aggregation produced besides its cells.
struct AggregateCounts {
    int64_t cells_positive = 0;  // cells with w > 0 (the matrix)
    int64_t cells_dropped = 0;   // cells with w <= 0 (seen, not in the matrix)
};

// Sums w(u,i) per (user index, item index) cell.  Each cell keeps its sum
// relative to its own newest event, so decay is exact for any time span:
// adding an event newer than the cell's reference rescales the sum once.
// The table keeps a load of at most 0.7; when doubling it would pass
// max_bytes it fills up to 0.9 before add refuses.  From 2 MB on it
// doubles in place (SlotTable::extend, then rehash_in_place): the peak is
// the doubled table, not the old one beside it.  max_bytes still counts
// both, as for a doubling that has to copy (no room reserved).
class CellAggregator {
public:
    // `max_bytes` bounds the hash table (0: unbounded).
    CellAggregator(DecaySpec decay, std::size_t max_bytes);

    // Adds one event of weighted value wv (weight(event_type) * value) at
    // `time_us`.  Returns false, adding nothing, when the table would have
    // to grow past max_bytes.  Throws InvalidInput for a non-finite wv.
    bool add(int32_t user, int32_t item, double wv, int64_t time_us);
    // add() of the events k in [0, n) with skip == nullptr or !skip[k], in
    // order, each cell's slot prefetched a few events ahead: the same sums
    // and the same table as the calls one by one.  Returns n, or the first k
    // whose add() refused (that event and those after it were not added).
    std::size_t add_batch(const int32_t* users, const int32_t* items, const double* wv, const int64_t* time_us,
                          const bool* skip, std::size_t n);

    std::size_t cells() const { return count_; }
    std::size_t memory_bytes() const { return slots_.size() * sizeof(Slot); }
    // Bytes the table holds for `cells` cells, at most.
    static std::size_t estimate_bytes(int64_t cells);
    // The slot a cell's probe starts from in a table of `slots` slots (a
    // power of two): for tests that aim cells at a part of the table.
    static std::size_t home_slot(int32_t user, int32_t item, std::size_t slots);

    // Calls sink(Triplet) for every cell with w > 0, in unspecified order;
    // with decay, each sum is taken to the age measured from `newest_us`.
    // Cells with w <= 0 (or that decay to 0) are counted, not emitted.
    template <typename Sink>
    AggregateCounts emit(int64_t newest_us, Sink&& sink) const
    {
        AggregateCounts c;
        for (const Slot& s : slots_) {
            if (s.key == kEmpty)
                continue;
            double w = final_weight(s, newest_us);
            if (w > 0) {
                sink(Triplet{key_user(s.key), key_item(s.key), w});
                c.cells_positive++;
            } else {
                c.cells_dropped++;
            }
        }
        return c;
    }
    // The same in chunks, for callers that must not allocate while
    // emitting: writes at most `cap` cells with w > 0 to out, resuming at
    // slot *pos (start at 0) and advancing it; returns the cells written
    // (0 once *pos reaches the end).  Adds the cells dropped to *dropped.
    std::size_t emit_into(std::size_t* pos, int64_t newest_us, Triplet* out, std::size_t cap,
                          int64_t* dropped) const;
    // Every cell's raw state, w <= 0 too, in chunks as emit_into: adding
    // each as one event (add(user, item, sum, ref_us)) to an empty
    // aggregator, before the events that follow, gives the same sums
    // bit for bit.
    struct RawCell {
        int32_t user;
        int32_t item;
        double sum;
        int64_t ref_us;
    };
    std::size_t raw_into(std::size_t* pos, RawCell* out, std::size_t cap) const;
    // The slots before `pos` (as emit_into or raw_into advanced it) are not
    // read again: their memory goes back to the system, in whole 2 MB
    // blocks of a table that large, so that the emitted cells' buffer and
    // the table are not both held whole (at 1M events the table is 24 MB
    // and the cells 10 MB).  From then on the aggregator only emits the
    // slots from `pos` on, then is cleared or destroyed: adding, or
    // emitting from before `pos`, throws std::logic_error.
    void release_emitted(std::size_t pos);
    // Before the first add: the table its doublings would end at for about
    // `cells` cells (at most 70% full, and no larger than a doubling within
    // max_bytes could make it), allocated at once: no intermediate tables,
    // and no moment holding an old one beside its double.  A wrong guess
    // costs nothing in the sums: the table grows on from there, or stays
    // emptier.  Does nothing once cells were added.
    void reserve(int64_t cells);
    // The table's first byte and its bytes now (for table_prefault by
    // another thread: a table that doubles in place keeps this range).
    void table_span(char** first, std::size_t* bytes);
    void clear();

private:
    friend BlocksAdded add_blocks(KeyDict&, CellAggregator&, const EventBlocks&, int64_t, std::size_t);
    struct Slot {
        uint64_t key;    // (user << 32 | item) + 1 (cell_key); kEmpty when free
        double sum;      // relative to ref_us when decaying
        int64_t ref_us;  // the cell's newest event (decay only)
    };
    // 0, so that the zero pages of a fresh mapping are empty slots as they
    // are: a table is not written before its first cell (at 10M events
    // 200 MB the backend's thread would fill before the scan starts).
    static constexpr uint64_t kEmpty = 0;
    static int32_t key_user(uint64_t key) { return static_cast<int32_t>((key - 1) >> 32); }
    static int32_t key_item(uint64_t key) { return static_cast<int32_t>((key - 1) & 0xffffffffu); }
    double final_weight(const Slot& s, int64_t newest_us) const;
    // add() of the cell `key` whose hash (mix64) is h.
    bool add_hashed(uint64_t key, uint64_t h, double wv, int64_t time_us);
    [[noreturn]] static void not_finite(uint64_t key);
    bool grow();
    void rehash_in_place(std::size_t old_slots);
    std::size_t room_for(std::size_t slots) const;
    void check_not_released() const;
    void check_emit_from(std::size_t pos) const;
    DecaySpec decay_;
    std::size_t max_bytes_;
    std::size_t count_ = 0;
    SlotTable<Slot> slots_;
    std::size_t last_pos_ = ~std::size_t{0};   // the slot of the last cell added to
    std::size_t released_ = 0;        // release_emitted: slots before it not to be read
    std::size_t released_bytes_ = 0;  // bytes from the table's start given back
};

// Events on their way from the reading path to the aggregation, in blocks:
// column arrays, block b being events [block_end[b-1], block_end[b]).
struct EventBlocks {
    const KeyRef* users = nullptr;     // user keys
    int32_t* user_idx = nullptr;       // out: the users' indices
    const int32_t* items = nullptr;    // item indices
    const double* wv = nullptr;        // weight * value
    const int64_t* time_us = nullptr;
    const bool* skip = nullptr;        // not added to the cells (test touches); nullptr: none
    const std::size_t* block_end = nullptr;
    const std::size_t* other_bytes = nullptr;  // bytes held beside users and cells (add_cell_blocks:
                                               // beside the cells) when block b closed
    std::size_t blocks = 0;
};

// What add_blocks did.
struct BlocksAdded {
    std::size_t added = 0;   // events added to the cells, from the first: all those before it
    std::size_t block = 0;   // the block it stopped after (blocks: it did not stop)
    bool full = false;       // the aggregation outgrew its budget in that block
};

// Adds the blocks in order, each as the reading path flushes one: every
// key of the block to `users`, and its events to `cells`, with the same
// result as KeyDict::add_batch of the block and then CellAggregator::
// add_batch (one loop does both, prefetching the dictionary's slots and the
// cells' so that their cache misses overlap).  `aggregated` counts the events added
// before; whenever the count passes a multiple of 4096 after a block,
// users + cells + other_bytes[b] over `limit` makes the block full.  Stops
// after the first full block (one whose add_batch refused an event, or over
// the limit): its events from `added` on, and the later blocks, were not
// added to the cells.  Pure C++: the reading path on one thread; read in a
// pipeline, it runs add_cell_blocks on its worker thread.
BlocksAdded add_blocks(KeyDict& users, CellAggregator& cells, const EventBlocks& ev, int64_t aggregated,
                       std::size_t limit);

// The cells' half of add_blocks, for a reader that adds each block's users
// itself as the block closes (KeyDict::add_batch, ev.user_idx filled in)
// and counts the dictionary's bytes at that point in other_bytes[b]: the
// same cells, the same `added`, the same full block as add_blocks of the
// blocks, whose users' bytes after block b are what the reader saw.  (The
// reading path's scan thread builds the users' dictionary, its worker the
// cells, so that the two threads' shares of the work are about even.)
BlocksAdded add_cell_blocks(CellAggregator& cells, const EventBlocks& ev, int64_t aggregated, std::size_t limit);

// Which part of the users a pass keeps: those whose key hash h has
// h % modulus == residue.  {1, 0} keeps every user.
struct UserPart {
    uint64_t modulus = 1;
    uint64_t residue = 0;
    bool keeps(uint64_t h) const { return modulus == 1 || h % modulus == residue; }
};

// The parts of the users still to read, as the passes refine them: a part
// that overflows the budget is split in two (modulus doubled), so every user
// is read in exactly one completed pass.
class PartQueue {
public:
    PartQueue() { parts_.push_back(UserPart{}); }
    bool empty() const { return parts_.empty(); }
    const UserPart& front() const { return parts_.front(); }
    // The front part is done.
    void done()
    {
        parts_.erase(parts_.begin());
        completed_++;
    }
    // The front part did not fit: replace it by its two halves.  Throws
    // InvalidInput when it cannot be split further (modulus 2^40).
    void split();
    std::size_t completed() const { return completed_; }

private:
    std::vector<UserPart> parts_;
    std::size_t completed_ = 0;
};

}  // namespace recsys
