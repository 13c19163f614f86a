// core_source.cpp - key dictionaries and the cell aggregation (see
// core_source.hpp).
#include "core_source.hpp"

#include <cmath>
#include <cstring>
#include <limits>

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

constexpr std::size_t kMinSlots = 1024;

}  // namespace

uint64_t key_hash(const KeyRef& k, bool bytes)
{
    return bytes ? bytes_hash(k.p, k.n) : mix64(static_cast<uint64_t>(k.i));
}

// ---------------------------------------------------------------------------
// KeyDict

bool KeyDict::equal(int32_t idx, const KeyRef& k) const
{
    std::size_t i = static_cast<std::size_t>(idx);
    if (!bytes_)
        return ints_[i] == k.i;
    std::size_t len = offsets_[i + 1] - offsets_[i];
    return len == k.n && (len == 0 || std::memcmp(arena_.data() + offsets_[i], k.p, len) == 0);
}

void KeyDict::grow()
{
    std::size_t n = slots_.empty() ? kMinSlots : slots_.size() * 2;
    std::vector<int32_t> s(n, 0);
    std::size_t mask = n - 1;
    for (std::size_t idx = 0; idx < count_; idx++) {
        uint64_t h = bytes_ ? hashes_[idx] : mix64(static_cast<uint64_t>(ints_[idx]));
        std::size_t pos = static_cast<std::size_t>(h) & mask;
        while (s[pos] != 0)
            pos = (pos + 1) & mask;
        s[pos] = static_cast<int32_t>(idx + 1);
    }
    slots_.swap(s);
}

int32_t KeyDict::find(const KeyRef& k) const
{
    if (slots_.empty())
        return -1;
    std::size_t mask = slots_.size() - 1;
    std::size_t pos = static_cast<std::size_t>(key_hash(k, bytes_)) & mask;
    while (slots_[pos] != 0) {
        if (equal(slots_[pos] - 1, k))
            return slots_[pos] - 1;
        pos = (pos + 1) & mask;
    }
    return -1;
}

int32_t KeyDict::add(const KeyRef& k)
{
    if ((count_ + 1) * 2 > slots_.size())
        grow();
    uint64_t h = key_hash(k, bytes_);
    std::size_t mask = slots_.size() - 1;
    std::size_t pos = static_cast<std::size_t>(h) & mask;
    while (slots_[pos] != 0) {
        if (equal(slots_[pos] - 1, k))
            return slots_[pos] - 1;
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
        hashes_.push_back(h);
    } else {
        ints_.push_back(k.i);
    }
    slots_[pos] = idx + 1;
    count_++;
    return idx;
}

std::string KeyDict::bytes_key(int32_t idx) const
{
    std::size_t i = static_cast<std::size_t>(idx);
    return arena_.substr(offsets_[i], offsets_[i + 1] - offsets_[i]);
}

std::size_t KeyDict::memory_bytes() const
{
    return slots_.capacity() * sizeof(int32_t) + ints_.capacity() * sizeof(int64_t) +
           offsets_.capacity() * sizeof(uint64_t) + arena_.capacity() + hashes_.capacity() * sizeof(uint64_t);
}

std::size_t KeyDict::estimate_bytes(int64_t keys, bool bytes, double avg_len)
{
    if (keys <= 0)
        return 0;
    std::size_t slots = kMinSlots;
    while (slots < static_cast<std::size_t>(keys) * 2)
        slots *= 2;
    // Vectors grow by doubling: up to twice the keys' room while growing.
    std::size_t per_key = bytes ? 2 * (sizeof(uint64_t) * 2 + static_cast<std::size_t>(std::ceil(avg_len)))
                                : 2 * sizeof(int64_t);
    return slots * sizeof(int32_t) * 3 / 2 + static_cast<std::size_t>(keys) * per_key;
}

void KeyDict::clear()
{
    count_ = 0;
    std::vector<int32_t>().swap(slots_);
    std::vector<int64_t>().swap(ints_);
    std::vector<uint64_t>().swap(offsets_);
    std::string().swap(arena_);
    std::vector<uint64_t>().swap(hashes_);
}

// ---------------------------------------------------------------------------
// CellAggregator

CellAggregator::CellAggregator(DecaySpec decay, std::size_t max_bytes) : decay_(decay), max_bytes_(max_bytes) {}

std::size_t CellAggregator::estimate_bytes(int64_t cells)
{
    std::size_t slots = kMinSlots;
    while (cells > 0 && slots * 7 < static_cast<std::size_t>(cells) * 10)
        slots *= 2;
    return slots * sizeof(Slot);
}

bool CellAggregator::grow()
{
    std::size_t n = slots_.empty() ? kMinSlots : slots_.size() * 2;
    // While growing, the old and the new table are both held.
    if (max_bytes_ != 0 && (n + slots_.size()) * sizeof(Slot) > max_bytes_)
        return false;
    std::vector<Slot> s(n, Slot{kEmpty, 0, 0});
    std::size_t mask = n - 1;
    for (const Slot& old : slots_) {
        if (old.key == kEmpty)
            continue;
        std::size_t pos = static_cast<std::size_t>(mix64(old.key)) & mask;
        while (s[pos].key != kEmpty)
            pos = (pos + 1) & mask;
        s[pos] = old;
    }
    slots_.swap(s);
    return true;
}

bool CellAggregator::add(int32_t user, int32_t item, double wv, int64_t time_us)
{
    if (!std::isfinite(wv))
        throw InvalidInput("recsys: an event's weight times value is not finite (user index " +
                           std::to_string(user) + ", item index " + std::to_string(item) + ")");
    uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(user)) << 32) | static_cast<uint32_t>(item);
    std::size_t pos = 0;
    if (!slots_.empty()) {
        std::size_t mask = slots_.size() - 1;
        pos = static_cast<std::size_t>(mix64(key)) & mask;
        while (slots_[pos].key != kEmpty && slots_[pos].key != key)
            pos = (pos + 1) & mask;
    }
    if (slots_.empty() || slots_[pos].key == kEmpty) {
        // A new cell: keep the load at most 0.7.
        if ((count_ + 1) * 10 > slots_.size() * 7) {
            if (!grow())
                return false;
            std::size_t mask = slots_.size() - 1;
            pos = static_cast<std::size_t>(mix64(key)) & mask;
            while (slots_[pos].key != kEmpty)
                pos = (pos + 1) & mask;
        }
        Slot& s = slots_[pos];
        s.key = key;
        s.sum = wv;
        s.ref_us = time_us;
        count_++;
        return true;
    }
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
    std::size_t n = 0;
    while (*pos < slots_.size() && n < cap) {
        const Slot& s = slots_[(*pos)++];
        if (s.key == kEmpty)
            continue;
        double w = final_weight(s, newest_us);
        if (w > 0)
            out[n++] = Triplet{static_cast<int32_t>(s.key >> 32), static_cast<int32_t>(s.key & 0xffffffffu), w};
        else
            (*dropped)++;
    }
    return n;
}

void CellAggregator::clear()
{
    count_ = 0;
    std::vector<Slot>().swap(slots_);
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
