// source_test.cpp - key dictionaries and the cell aggregation
// (src/core_source.hpp), each against a direct computation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "core_source.hpp"

using recsys::CellAggregator;
using recsys::DecaySpec;
using recsys::KeyDict;
using recsys::KeyRef;

namespace {

KeyRef ik(int64_t v)
{
    KeyRef k;
    k.i = v;
    return k;
}

KeyRef bk(const std::string& s)
{
    KeyRef k;
    k.p = s.data();
    k.n = s.size();
    return k;
}

std::map<std::pair<int32_t, int32_t>, double> emitted(const CellAggregator& a, int64_t newest,
                                                      recsys::AggregateCounts* counts = nullptr)
{
    std::map<std::pair<int32_t, int32_t>, double> m;
    auto c = a.emit(newest, [&](const recsys::Triplet& t) {
        EXPECT_TRUE(m.emplace(std::make_pair(t.user, t.item), t.weight).second) << "cell emitted twice";
    });
    if (counts != nullptr)
        *counts = c;
    return m;
}

}  // namespace

TEST(KeyDict, IntegerKeysGetDenseIndicesInFirstSeenOrder)
{
    KeyDict d(false);
    EXPECT_EQ(d.add(ik(9000000010LL)), 0);
    EXPECT_EQ(d.add(ik(-5)), 1);
    EXPECT_EQ(d.add(ik(9000000010LL)), 0);
    EXPECT_EQ(d.add(ik(INT64_MIN)), 2);
    EXPECT_EQ(d.add(ik(INT64_MAX)), 3);
    EXPECT_EQ(d.size(), 4u);
    EXPECT_EQ(d.find(ik(-5)), 1);
    EXPECT_EQ(d.find(ik(6)), -1);
    EXPECT_EQ(d.int_key(0), 9000000010LL);
    EXPECT_EQ(d.int_key(2), INT64_MIN);
}

TEST(KeyDict, ByteKeysAreComparedWhole)
{
    KeyDict d(true);
    const std::string a = "85123A", b = "85123a", empty, zero("a\0b", 3), zero2("a\0c", 3);
    EXPECT_EQ(d.add(bk(a)), 0);
    EXPECT_EQ(d.add(bk(b)), 1);
    EXPECT_EQ(d.add(bk(empty)), 2);
    EXPECT_EQ(d.add(bk(zero)), 3);
    EXPECT_EQ(d.add(bk(zero2)), 4);
    EXPECT_EQ(d.add(bk(std::string("85123A"))), 0);
    EXPECT_EQ(d.find(bk(std::string("85123"))), -1);
    EXPECT_EQ(d.bytes_key(3), zero);
    EXPECT_EQ(d.bytes_key(2), empty);
}

TEST(KeyDict, ManyKeysMatchAStdMap)
{
    std::mt19937_64 rng(7);
    KeyDict ints(false), strs(true);
    std::map<int64_t, int32_t> want_i;
    std::map<std::string, int32_t> want_s;
    for (int n = 0; n < 200000; n++) {
        int64_t v = static_cast<int64_t>(rng() % 50000) * 1000003;
        auto it = want_i.emplace(v, static_cast<int32_t>(want_i.size())).first;
        ASSERT_EQ(ints.add(ik(v)), it->second);
        std::string s = "sku-" + std::to_string(rng() % 30000);
        auto jt = want_s.emplace(s, static_cast<int32_t>(want_s.size())).first;
        ASSERT_EQ(strs.add(bk(s)), jt->second);
    }
    EXPECT_EQ(ints.size(), want_i.size());
    EXPECT_EQ(strs.size(), want_s.size());
    for (const auto& [s, idx] : want_s)
        EXPECT_EQ(strs.bytes_key(idx), s);
    EXPECT_LE(ints.memory_bytes(), KeyDict::estimate_bytes(static_cast<int64_t>(ints.size()), false, 0));
}

// Past 2 MB of slots a dictionary doubles in place (2 -> 4 -> 8 -> 16 MB
// here): every key keeps its index and is found again, integer and byte
// keys alike, and the memory is what estimate_bytes allows.
TEST(KeyDict, DoublingInPlaceFindsEveryKey)
{
    std::mt19937_64 rng(11);
    KeyDict ints(false), strs(true);
    std::map<int64_t, int32_t> want_i;
    std::map<std::string, int32_t> want_s;
    while (want_i.size() < 400000) {
        const int64_t v = static_cast<int64_t>(rng() >> 1);
        auto it = want_i.emplace(v, static_cast<int32_t>(want_i.size())).first;
        ASSERT_EQ(ints.add(ik(v)), it->second);
        const std::string str = "user-" + std::to_string(rng() % 1000000);
        auto jt = want_s.emplace(str, static_cast<int32_t>(want_s.size())).first;
        ASSERT_EQ(strs.add(bk(str)), jt->second);
    }
    ASSERT_GE(ints.memory_bytes(), std::size_t{16} << 20);
    for (const auto& [v, idx] : want_i)
        ASSERT_EQ(ints.find(ik(v)), idx);
    for (const auto& [str, idx] : want_s)
        ASSERT_EQ(strs.find(bk(str)), idx);
    EXPECT_EQ(ints.find(ik(-5)), -1);
    EXPECT_EQ(strs.find(bk("nobody")), -1);
    EXPECT_LE(ints.memory_bytes(), KeyDict::estimate_bytes(static_cast<int64_t>(ints.size()), false, 0));
}

TEST(CellAggregator, SumsWeightTimesValueAndDropsNonPositiveCells)
{
    CellAggregator a(DecaySpec{}, 0);
    // user 0: item 0 purchase 5 * qty 2, cancel -5 * qty 1 -> 5
    ASSERT_TRUE(a.add(0, 0, 5 * 2.0, 10));
    ASSERT_TRUE(a.add(0, 0, -5 * 1.0, 20));
    // user 0: item 1 purchase then cancel of the same quantity -> 0, dropped
    ASSERT_TRUE(a.add(0, 1, 5 * 3.0, 10));
    ASSERT_TRUE(a.add(0, 1, -5 * 3.0, 11));
    // user 1: item 1 view with weight 0 -> 0, dropped (seen, not in matrix)
    ASSERT_TRUE(a.add(1, 1, 0.0, 10));
    // user 1: item 2 dislike -> negative, dropped
    ASSERT_TRUE(a.add(1, 2, -1.0, 10));
    // user 1: item 0 rating 4 (NULL value counts 1 is the glue's: value 1 here)
    ASSERT_TRUE(a.add(1, 0, 1.0 * 4, 10));
    recsys::AggregateCounts c;
    auto m = emitted(a, 0, &c);
    EXPECT_EQ(c.cells_positive, 2);
    EXPECT_EQ(c.cells_dropped, 3);
    ASSERT_EQ(m.size(), 2u);
    EXPECT_DOUBLE_EQ((m[{0, 0}]), 5.0);
    EXPECT_DOUBLE_EQ((m[{1, 0}]), 4.0);
    EXPECT_THROW(a.add(0, 0, std::nan(""), 0), recsys::InvalidInput);
}

TEST(CellAggregator, DecayEqualsTheDirectFormulaInAnyEventOrder)
{
    const double day = 86400e6;
    DecaySpec d{7 * day};
    std::mt19937_64 rng(11);
    CellAggregator a(d, 0);
    std::map<std::pair<int32_t, int32_t>, std::vector<std::pair<double, int64_t>>> events;
    int64_t newest = INT64_MIN;
    for (int n = 0; n < 20000; n++) {
        int32_t u = static_cast<int32_t>(rng() % 50), i = static_cast<int32_t>(rng() % 40);
        double wv = static_cast<double>(static_cast<int>(rng() % 9) - 2);   // -2 .. 6
        // Ten years of events, in random order: 520 half-lives.
        int64_t t = static_cast<int64_t>(rng() % static_cast<uint64_t>(3650 * day));
        ASSERT_TRUE(a.add(u, i, wv, t));
        events[{u, i}].push_back({wv, t});
        newest = std::max(newest, t);
    }
    auto m = emitted(a, newest);
    int64_t positive = 0;
    for (const auto& [cell, evs] : events) {
        double want = 0;
        for (const auto& [wv, t] : evs)
            want += wv * std::exp2(-static_cast<double>(newest - t) / d.half_life_us);
        // A cell whose direct sum is positive by more than rounding is
        // emitted with that sum; one that is not is left out.
        if (want > 1e-9) {
            positive++;
            ASSERT_EQ(m.count(cell), 1u) << cell.first << "," << cell.second;
            EXPECT_NEAR(m[cell], want, 1e-9 * std::max(1.0, std::fabs(want)));
        } else if (want < -1e-9) {
            EXPECT_EQ(m.count(cell), 0u);
        }
    }
    EXPECT_GT(positive, 100);
}

TEST(CellAggregator, HalfLifeHalvesAnEventsWeight)
{
    const double day = 86400e6;
    CellAggregator a(DecaySpec{30 * day}, 0);
    ASSERT_TRUE(a.add(0, 0, 8.0, 0));                               // 60 days old: 8 / 4 = 2
    ASSERT_TRUE(a.add(0, 1, 8.0, static_cast<int64_t>(30 * day)));  // 30 days old: 4
    ASSERT_TRUE(a.add(1, 1, 3.0, static_cast<int64_t>(60 * day)));  // newest: 3
    auto m = emitted(a, static_cast<int64_t>(60 * day));
    EXPECT_DOUBLE_EQ((m[{0, 0}]), 2.0);
    EXPECT_DOUBLE_EQ((m[{0, 1}]), 4.0);
    EXPECT_DOUBLE_EQ((m[{1, 1}]), 3.0);
}

TEST(CellAggregator, RefusesToGrowPastItsLimit)
{
    const std::size_t limit = CellAggregator::estimate_bytes(3000);
    CellAggregator a(DecaySpec{}, limit);
    int64_t added = 0;
    bool refused = false;
    for (int32_t u = 0; u < 100000 && !refused; u++) {
        if (a.add(u, u % 7, 1.0, 0))
            added++;
        else
            refused = true;
    }
    EXPECT_TRUE(refused);
    EXPECT_GE(added, 1000);
    EXPECT_LE(a.memory_bytes(), limit);
    // Existing cells still take events when the table is full.
    EXPECT_TRUE(a.add(0, 0, 1.0, 0));
    auto m = emitted(a, 0);
    EXPECT_EQ(static_cast<int64_t>(m.size()), added);
    EXPECT_DOUBLE_EQ((m[{0, 0}]), 2.0);
}

TEST(PartQueue, SplitsCoverEveryHashExactlyOnce)
{
    recsys::PartQueue q;
    std::mt19937_64 rng(3);
    std::vector<recsys::UserPart> done;
    int splits = 0;
    while (!q.empty()) {
        if (splits < 12 && rng() % 2 == 0) {
            q.split();
            splits++;
        } else {
            done.push_back(q.front());
            q.done();
        }
    }
    EXPECT_EQ(q.completed(), done.size());
    EXPECT_EQ(done.size(), static_cast<std::size_t>(splits) + 1);
    for (int n = 0; n < 10000; n++) {
        uint64_t h = recsys::key_hash(ik(n), false);
        int owners = 0;
        for (const auto& p : done)
            owners += p.keeps(h) ? 1 : 0;
        ASSERT_EQ(owners, 1) << n;
    }
}

TEST(CellAggregator, EmitIntoInChunksEqualsEmit)
{
    CellAggregator a(DecaySpec{1e6}, 0);
    std::mt19937_64 rng(5);
    for (int n = 0; n < 5000; n++)
        ASSERT_TRUE(a.add(static_cast<int32_t>(rng() % 300), static_cast<int32_t>(rng() % 20),
                          static_cast<double>(static_cast<int>(rng() % 7) - 2), static_cast<int64_t>(rng() % 10000000)));
    recsys::AggregateCounts c;
    auto want = emitted(a, 10000000, &c);
    std::map<std::pair<int32_t, int32_t>, double> got;
    std::size_t pos = 0;
    int64_t dropped = 0;
    recsys::Triplet buf[37];
    while (std::size_t n = a.emit_into(&pos, 10000000, buf, 37, &dropped))
        for (std::size_t k = 0; k < n; k++)
            got[{buf[k].user, buf[k].item}] = buf[k].weight;
    EXPECT_EQ(got, want);
    EXPECT_EQ(dropped, c.cells_dropped);
}

TEST(KeyDict, SortByKeyRenumbersInKeyOrderWhateverTheInsertionOrder)
{
    // Integers by value; bytes by memcmp, a prefix first (uuid's and C
    // collation text's order).
    const std::vector<int64_t> ints = {42, -7, 9000000010LL, 0, 5, INT64_MIN};
    const std::vector<std::string> strs = {"b", "ab", "", "a", std::string("a\0", 2), "\xff", "B"};
    std::mt19937_64 rng(11);
    for (int round = 0; round < 5; round++) {
        std::vector<int64_t> io = ints;
        std::vector<std::string> so = strs;
        std::shuffle(io.begin(), io.end(), rng);
        std::shuffle(so.begin(), so.end(), rng);
        KeyDict di(false), ds(true);
        for (int64_t v : io)
            di.add(ik(v));
        for (const std::string& s : so)
            ds.add(bk(s));
        std::vector<int32_t> mi = di.sort_by_key(), ms = ds.sort_by_key();
        std::vector<int64_t> want_i = ints;
        std::sort(want_i.begin(), want_i.end());
        std::vector<std::string> want_s = strs;
        std::sort(want_s.begin(), want_s.end());   // std::string compares bytes as unsigned
        for (std::size_t k = 0; k < want_i.size(); k++) {
            EXPECT_EQ(di.int_key(static_cast<int32_t>(k)), want_i[k]);
            EXPECT_EQ(di.find(ik(want_i[k])), static_cast<int32_t>(k));
            EXPECT_EQ(di.add(ik(want_i[k])), static_cast<int32_t>(k));   // no stale cached index
        }
        for (std::size_t k = 0; k < want_s.size(); k++) {
            EXPECT_EQ(ds.bytes_key(static_cast<int32_t>(k)), want_s[k]);
            EXPECT_EQ(ds.find(bk(want_s[k])), static_cast<int32_t>(k));
        }
        // The map takes each old index (insertion position) to the new one.
        for (std::size_t old = 0; old < io.size(); old++)
            EXPECT_EQ(di.int_key(mi[old]), io[old]);
        for (std::size_t old = 0; old < so.size(); old++)
            EXPECT_EQ(ds.bytes_key(ms[old]), so[old]);
        // New keys still get the next index.
        EXPECT_EQ(di.add(ik(123456)), static_cast<int32_t>(ints.size()));
        EXPECT_EQ(ds.add(bk("zzz")), static_cast<int32_t>(strs.size()));
    }
}

TEST(CellAggregator, RawCellsReaddedRestoreTheSumsBitForBit)
{
    // What reading does when it starts writing parts to disk: the cells so
    // far, each re-added as one event, then the events that follow.
    std::mt19937_64 rng(13);
    for (double half_life : {0.0, 3e6}) {
        CellAggregator whole(DecaySpec{half_life}, 0), first(DecaySpec{half_life}, 0);
        std::vector<std::tuple<int32_t, int32_t, double, int64_t>> events;
        for (int n = 0; n < 6000; n++)
            events.emplace_back(static_cast<int32_t>(rng() % 200), static_cast<int32_t>(rng() % 30),
                                std::ldexp(static_cast<double>(rng() % 1000) - 300, -7),
                                static_cast<int64_t>(rng() % 50000000));
        for (std::size_t k = 0; k < events.size(); k++) {
            auto [u, i, wv, t] = events[k];
            ASSERT_TRUE(whole.add(u, i, wv, t));
            if (k < 2500) {
                ASSERT_TRUE(first.add(u, i, wv, t));
            }
        }
        CellAggregator second(DecaySpec{half_life}, 0);
        CellAggregator::RawCell buf[29];
        std::size_t pos = 0, raw = 0;
        while (std::size_t n = first.raw_into(&pos, buf, 29)) {
            raw += n;
            for (std::size_t k = 0; k < n; k++)
                ASSERT_TRUE(second.add(buf[k].user, buf[k].item, buf[k].sum, buf[k].ref_us));
        }
        EXPECT_EQ(raw, first.cells());
        for (std::size_t k = 2500; k < events.size(); k++) {
            auto [u, i, wv, t] = events[k];
            ASSERT_TRUE(second.add(u, i, wv, t));
        }
        recsys::AggregateCounts cw, cs;
        auto want = emitted(whole, 50000000, &cw);
        auto got = emitted(second, 50000000, &cs);
        ASSERT_EQ(got.size(), want.size());
        for (const auto& [cell, w] : want)
            EXPECT_EQ(got[cell], w);   // exactly
        EXPECT_EQ(cs.cells_dropped, cw.cells_dropped);
    }
}

TEST(CellAggregator, FillsToNinetyPercentWhenItMayNotDouble)
{
    // 1024 slots of 24 bytes may not double under a limit of 2048 * 24
    // (old and new held at once): 716 cells at 0.7, up to 921 at 0.9.
    CellAggregator a(DecaySpec{}, 2048 * 24);
    int added = 0;
    while (a.add(added, 0, 1.0, 0))
        added++;
    EXPECT_EQ(added, 921);
    EXPECT_EQ(a.memory_bytes(), 1024u * 24);
}

// pg_read.cpp's one-scan evaluation bounds the two-step read's memory from
// its own dictionaries, filled in another order: without the byte keys'
// string, memory_bytes() depends on the keys alone; the string's capacity
// is at most twice its length (or 15), whatever the order.
TEST(KeyDict, MemoryBesidesTheArenaDoesNotDependOnTheOrder)
{
    std::mt19937_64 rng(5);
    std::vector<std::string> keys;
    for (int k = 0; k < 3000; k++)
        keys.push_back(std::string(1 + rng() % (k % 100 == 0 ? 700 : 40), static_cast<char>('a' + k % 26)) +
                       std::to_string(k));
    std::vector<int64_t> ints;
    for (int k = 0; k < 3000; k++)
        ints.push_back(static_cast<int64_t>(rng()));
    std::size_t first_bytes = 0, first_ints = 0;
    for (int round = 0; round < 6; round++) {
        std::shuffle(keys.begin(), keys.end(), rng);
        std::shuffle(ints.begin(), ints.end(), rng);
        KeyDict ds(true), di(false);
        std::size_t len = 0;
        for (const std::string& s : keys) {
            ds.add(bk(s));
            len += s.size();
            EXPECT_LE(ds.arena_capacity(), std::max<std::size_t>(2 * ds.arena_bytes(), 15));
        }
        for (int64_t v : ints)
            di.add(ik(v));
        EXPECT_EQ(ds.arena_bytes(), len);
        EXPECT_GE(ds.arena_capacity(), len);
        std::size_t besides = ds.memory_bytes() - ds.arena_capacity();
        if (round == 0) {
            first_bytes = besides;
            first_ints = di.memory_bytes();
        }
        EXPECT_EQ(besides, first_bytes);
        EXPECT_EQ(di.memory_bytes(), first_ints);
    }
}

TEST(KeyDict, AddBatchEqualsAddOneByOne)
{
    // Batches of every length around the prefetch distance, integer and
    // byte keys, with runs of one key (the last-key shortcut) and growth.
    std::mt19937_64 rng(11);
    for (bool bytes : {false, true}) {
        KeyDict one(bytes), batch(bytes);
        std::vector<std::string> strs;
        std::vector<KeyRef> keys;
        for (int n = 0; n < 60000; n++) {
            int64_t v = (n % 5 == 1) ? static_cast<int64_t>(rng() % 50) : static_cast<int64_t>(rng() % 40000);
            strs.push_back("u" + std::to_string(v));
        }
        for (int n = 0; n < 60000; n++) {
            int64_t v = std::stoll(strs[n].substr(1));
            keys.push_back(bytes ? bk(strs[n]) : ik(v));
            if (n % 3 == 0)
                keys.push_back(keys.back());   // a run
        }
        std::vector<int32_t> want(keys.size()), got(keys.size());
        for (std::size_t k = 0; k < keys.size(); k++)
            want[k] = one.add(keys[k]);
        std::size_t pos = 0;
        for (std::size_t len = 0; pos < keys.size(); len = (len + 7) % 40) {
            std::size_t m = std::min(len, keys.size() - pos);
            batch.add_batch(keys.data() + pos, m, got.data() + pos);
            pos += m;
        }
        ASSERT_EQ(got, want);
        EXPECT_EQ(batch.size(), one.size());
        EXPECT_EQ(batch.memory_bytes(), one.memory_bytes());
        for (std::size_t k = 0; k < keys.size(); k += 997)
            EXPECT_EQ(batch.find(keys[k]), want[k]);
    }
}

TEST(CellAggregator, AddBatchEqualsAddOneByOneBitForBit)
{
    // With decay, so that the order of each cell's events shows in its sum;
    // skipped events add nothing; the raw cells come out in the same order.
    std::mt19937_64 rng(5);
    const std::size_t n = 50000;
    std::vector<int32_t> users(n), items(n);
    std::vector<double> wv(n);
    std::vector<int64_t> t(n);
    std::vector<char> skip_c(n);
    for (std::size_t k = 0; k < n; k++) {
        users[k] = static_cast<int32_t>(rng() % 3000);
        items[k] = static_cast<int32_t>(rng() % 200);
        wv[k] = static_cast<double>(rng() % 1000) / 7.0 - 20.0;
        t[k] = static_cast<int64_t>(rng() % 1000000000);
        skip_c[k] = rng() % 9 == 0;
    }
    std::unique_ptr<bool[]> skip(new bool[n]);
    for (std::size_t k = 0; k < n; k++)
        skip[k] = skip_c[k] != 0;
    DecaySpec decay;
    decay.half_life_us = 3e8;
    CellAggregator one(decay, 0), batch(decay, 0);
    for (std::size_t k = 0; k < n; k++) {
        if (!skip[k]) {
            ASSERT_TRUE(one.add(users[k], items[k], wv[k], t[k]));
        }
    }
    for (std::size_t pos = 0, len = 1; pos < n; len = len * 3 % 301 + 1) {
        std::size_t m = std::min(len, n - pos);
        ASSERT_EQ(batch.add_batch(&users[pos], &items[pos], &wv[pos], &t[pos], skip.get() + pos, m), m);
        pos += m;
    }
    ASSERT_EQ(batch.cells(), one.cells());
    std::vector<CellAggregator::RawCell> a(one.cells() + 1), b(one.cells() + 1);
    std::size_t pa = 0, pb = 0;
    ASSERT_EQ(one.raw_into(&pa, a.data(), a.size()), one.cells());
    ASSERT_EQ(batch.raw_into(&pb, b.data(), b.size()), one.cells());
    for (std::size_t k = 0; k < one.cells(); k++) {
        ASSERT_EQ(a[k].user, b[k].user);
        ASSERT_EQ(a[k].item, b[k].item);
        ASSERT_EQ(a[k].ref_us, b[k].ref_us);
        ASSERT_EQ(std::memcmp(&a[k].sum, &b[k].sum, sizeof(double)), 0) << "cell " << k;
    }
}

TEST(CellAggregator, AddBatchStopsAtTheFirstRefusal)
{
    // The same limit as RefusesToGrowPastItsLimit: the batch adds exactly
    // the events the calls one by one add before the first refusal.
    const std::size_t limit = CellAggregator::estimate_bytes(3000);
    CellAggregator one(DecaySpec{}, limit), batch(DecaySpec{}, limit);
    const std::size_t n = 10000;
    std::vector<int32_t> users(n), items(n);
    std::vector<double> wv(n, 1.0);
    std::vector<int64_t> t(n, 0);
    for (std::size_t k = 0; k < n; k++) {
        users[k] = static_cast<int32_t>(k);
        items[k] = static_cast<int32_t>(k % 7);
    }
    std::size_t first_refused = n;
    for (std::size_t k = 0; k < n && first_refused == n; k++)
        if (!one.add(users[k], items[k], wv[k], t[k]))
            first_refused = k;
    ASSERT_LT(first_refused, n);
    std::size_t added = 0;
    while (added < n) {
        std::size_t m = std::min<std::size_t>(256, n - added);
        std::size_t got = batch.add_batch(&users[added], &items[added], &wv[added], &t[added], nullptr, m);
        added += got;
        if (got < m)
            break;
    }
    EXPECT_EQ(added, first_refused);
    EXPECT_EQ(batch.cells(), one.cells());
    EXPECT_EQ(batch.memory_bytes(), one.memory_bytes());
}

// pg_read.cpp gives the emitted part of the cell table back while the
// cells' buffer fills: the cells emitted are those of an aggregation that
// keeps its table, and the aggregator refuses to be used as if it had it.
TEST(CellAggregator, ReleasingTheEmittedSlotsKeepsTheRestAndRefusesToGoBack)
{
    // 200,000 cells: a table of 2^19 slots, 12 MB, six 2 MB blocks.
    CellAggregator kept(DecaySpec{}, 0), released(DecaySpec{}, 0);
    std::mt19937_64 rng(11);
    for (int k = 0; k < 200000; k++) {
        const int32_t u = static_cast<int32_t>(k / 7), i = static_cast<int32_t>(rng() % 5000);
        const double w = 1.0 + static_cast<double>(rng() % 5);
        ASSERT_TRUE(kept.add(u, i, w, k));
        ASSERT_TRUE(released.add(u, i, w, k));
    }
    ASSERT_GE(released.memory_bytes(), std::size_t{8} << 20);
    std::map<std::pair<int32_t, int32_t>, double> got;
    std::vector<recsys::Triplet> buf(1000);
    std::size_t pos = 0, n;
    int64_t dropped = 0;
    while ((n = released.emit_into(&pos, 0, buf.data(), buf.size(), &dropped)) > 0) {
        for (std::size_t k = 0; k < n; k++)
            got[{buf[k].user, buf[k].item}] = buf[k].weight;
        released.release_emitted(pos);
    }
    EXPECT_EQ(got, emitted(kept, 0));
    EXPECT_EQ(got.size(), kept.cells());
    // Back to the start, or adding, would read the released slots.
    std::size_t again = 0;
    EXPECT_THROW(released.emit_into(&again, 0, buf.data(), buf.size(), &dropped), std::logic_error);
    std::vector<CellAggregator::RawCell> raw(10);
    again = 0;
    EXPECT_THROW(released.raw_into(&again, raw.data(), raw.size()), std::logic_error);
    EXPECT_THROW(released.add(1, 1, 1.0, 0), std::logic_error);
    const int32_t u1 = 1, i1 = 1;
    const double w1 = 1.0;
    const int64_t t1 = 0;
    EXPECT_THROW(released.add_batch(&u1, &i1, &w1, &t1, nullptr, 1), std::logic_error);
    // Cleared, it is an empty aggregator again.
    released.clear();
    EXPECT_TRUE(released.add(1, 1, 2.0, 0));
    EXPECT_EQ((emitted(released, 0)), (std::map<std::pair<int32_t, int32_t>, double>{{{1, 1}, 2.0}}));
}

// pg_read.cpp sizes the cell table from the newest model of the source: the
// table reserved is the one the doublings reach, under a limit too, and the
// sums are those of a table grown as it goes.
TEST(CellAggregator, ReservedTableIsTheOneItsDoublingsReach)
{
    for (std::size_t limit : {std::size_t{0}, CellAggregator::estimate_bytes(3000)}) {
        for (int cells : {1, 500, 3000, 40000}) {
            CellAggregator grown(DecaySpec{}, limit), reserved(DecaySpec{}, limit);
            reserved.reserve(cells);
            const std::size_t at_start = reserved.memory_bytes();
            int added = 0;
            for (int k = 0; k < cells; k++) {
                const bool g = grown.add(k, k % 13, 1.0 + k % 3, k);
                ASSERT_EQ(g, reserved.add(k, k % 13, 1.0 + k % 3, k)) << "limit " << limit << ", cell " << k;
                added += g;
            }
            ASSERT_GT(added, 0);
            EXPECT_EQ(at_start, grown.memory_bytes()) << "limit " << limit << ", cells " << cells;
            EXPECT_EQ(reserved.memory_bytes(), grown.memory_bytes());
            if (limit != 0) {
                EXPECT_LE(reserved.memory_bytes(), limit);
            }
            EXPECT_EQ(emitted(reserved, 0), emitted(grown, 0));
        }
    }
    // A guess too small: the table grows on from it; once cells are in, no effect.
    CellAggregator small(DecaySpec{}, 0), grown(DecaySpec{}, 0);
    small.reserve(100);
    for (int k = 0; k < 5000; k++) {
        ASSERT_TRUE(small.add(k, 1, 1.0, 0));
        ASSERT_TRUE(grown.add(k, 1, 1.0, 0));
    }
    const std::size_t before = small.memory_bytes();
    small.reserve(1000000);
    EXPECT_EQ(small.memory_bytes(), before);
    EXPECT_EQ(before, grown.memory_bytes());
    EXPECT_EQ(emitted(small, 0), emitted(grown, 0));
}

// table_prefault only faults pages in: a table's cells stay as they are,
// whether it runs before, between or beside the adds (on another thread,
// as the read's scan does while the aggregation's thread adds).
TEST(CellAggregator, PrefaultingTheTableChangesNoCell)
{
    CellAggregator a(DecaySpec{}, 0), b(DecaySpec{}, 0);
    a.reserve(200000);
    b.reserve(200000);
    char* first = nullptr;
    std::size_t bytes = 0;
    a.table_span(&first, &bytes);
    ASSERT_EQ(bytes, a.memory_bytes());
    ASSERT_GE(bytes, std::size_t{2} << 20);
    const bool can = recsys::table_prefault(first, bytes / 2);  // a kernel before 5.14 cannot: then it is a no-op
    std::thread faulting([&] {
        if (can)
            for (std::size_t off = 0; off < bytes; off += 65536)
                recsys::table_prefault(first + off, std::min<std::size_t>(65536, bytes - off));
    });
    std::map<std::pair<int32_t, int32_t>, double> want;
    for (int32_t k = 0; k < 150000; k++) {
        ASSERT_TRUE(a.add(k / 4, k % 7, 1.0 + k % 3, 0));
        want[{k / 4, k % 7}] += 1.0 + k % 3;
    }
    faulting.join();
    b.table_span(&first, &bytes);
    for (int32_t k = 0; k < 150000; k++)
        ASSERT_TRUE(b.add(k / 4, k % 7, 1.0 + k % 3, 0));
    recsys::table_prefault(first, bytes);
    EXPECT_EQ(emitted(a, 0), want);
    EXPECT_EQ(emitted(b, 0), want);
}

// From 2 MB on the table doubles in place (no second table), in a mapping
// whose zero pages are its empty slots (never written before use): the cells and
// sums are those a map sums independently, and every cell is still found
// (adding to it again makes no new cell).  The cells aimed at the last 64
// slots of the doubled table are more than those slots hold, so the probes
// of at least 64 of them run past the end into slot 0.  Bounded and
// unbounded (the room reserved differs).
TEST(CellAggregator, DoublingInPlaceKeepsEveryCell)
{
    constexpr std::size_t kOld = std::size_t{1} << 17, kNew = kOld * 2;  // 3 MB -> 6 MB of slots
    ASSERT_GE(CellAggregator::estimate_bytes(80000), std::size_t{2} << 20);
    // Ordinary cells to 60% of kOld slots, the aimed ones (which run on
    // past the old table's end too, over ordinary cells there, some of
    // which move to the upper half), then ordinary ones past the doubling
    // at 70%.
    // The extreme keys first: (0, 0) is no empty slot, nor is the largest.
    std::vector<std::pair<int32_t, int32_t>> cells{{0, 0}, {INT32_MAX, INT32_MAX}, {0, INT32_MAX}, {INT32_MAX, 0}};
    int32_t k = 0;
    for (; cells.size() < kOld * 6 / 10; k++)
        cells.emplace_back(1000000 + k / 3, k % 3);
    for (int32_t u = 0, aimed = 0; aimed < 128; u++)
        if (CellAggregator::home_slot(u, 7, kNew) >= kNew - 64) {
            cells.emplace_back(u, 7);
            aimed++;
        }
    for (; cells.size() < kOld * 7 / 10 + 5000; k++)
        cells.emplace_back(1000000 + k / 3, k % 3);
    for (std::size_t limit : {std::size_t{0}, std::size_t{64} << 20}) {
        CellAggregator a(DecaySpec{}, limit);
        a.reserve(80000);
        ASSERT_EQ(a.memory_bytes(), kOld * CellAggregator::estimate_bytes(1) / 1024);
        std::map<std::pair<int32_t, int32_t>, double> want;
        for (std::size_t k = 0; k < cells.size(); k++) {
            const double w = 1.0 + static_cast<double>(k % 5);
            ASSERT_TRUE(a.add(cells[k].first, cells[k].second, w, 0));
            want[cells[k]] += w;
        }
        EXPECT_EQ(a.memory_bytes(), kNew * CellAggregator::estimate_bytes(1) / 1024) << "limit " << limit;
        EXPECT_EQ(a.cells(), cells.size());
        EXPECT_EQ(emitted(a, 0), want) << "limit " << limit;
        for (std::size_t k = 0; k < cells.size(); k++) {
            ASSERT_TRUE(a.add(cells[k].first, cells[k].second, 0.5, 0));
            want[cells[k]] += 0.5;
        }
        EXPECT_EQ(a.cells(), cells.size()) << "a cell was not found again after the doubling";
        EXPECT_EQ(emitted(a, 0), want) << "limit " << limit;
    }
    // Random cells through three doublings in place (2^17 -> 2^20 slots),
    // each added twice, the second time after all of them.
    std::mt19937_64 rng(7);
    std::vector<std::pair<int32_t, int32_t>> random_cells(500000);
    for (auto& c : random_cells)
        c = {static_cast<int32_t>(rng() % 200000), static_cast<int32_t>(rng() % 5000)};
    CellAggregator a(DecaySpec{}, 0);
    std::map<std::pair<int32_t, int32_t>, double> want;
    for (int round = 0; round < 2; round++)
        for (const auto& c : random_cells) {
            ASSERT_TRUE(a.add(c.first, c.second, 1.0 + round, 0));
            want[c] += 1.0 + round;
        }
    EXPECT_EQ(a.cells(), want.size());
    EXPECT_EQ(a.memory_bytes(), CellAggregator::estimate_bytes(static_cast<int64_t>(want.size())));
    EXPECT_EQ(emitted(a, 0), want);
}
