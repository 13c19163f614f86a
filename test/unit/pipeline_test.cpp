// pipeline_test.cpp - the reading path's aggregation in blocks (add_blocks,
// src/core_source.hpp) against one event at a time, and the worker thread
// it runs on (AsyncWorker, src/core_parallel.hpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdint>
#include <limits>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>

#include "core_parallel.hpp"
#include "core_source.hpp"

using recsys::BlocksAdded;
using recsys::CellAggregator;
using recsys::DecaySpec;
using recsys::EventBlocks;
using recsys::KeyDict;
using recsys::KeyRef;
using recsys::detail::AsyncWorker;

namespace {

// A log of n events: skewed integer users (or their decimal strings as
// byte keys), items, values, times, and every 7th event a skipped touch.
struct Log {
    std::vector<std::string> strings;
    std::vector<KeyRef> users;
    std::vector<int32_t> user_idx, items;
    std::vector<double> wv;
    std::vector<int64_t> t;
    std::unique_ptr<bool[]> skip;
    Log(std::size_t n, bool bytes, uint32_t seed) : strings(n), users(n), user_idx(n), items(n), wv(n), t(n),
                                                     skip(new bool[n])
    {
        std::mt19937 rng(seed);
        for (std::size_t k = 0; k < n; k++) {
            int64_t u = static_cast<int64_t>(rng() % 5000);
            u = u * u % 7919;   // skewed, repeated
            if (bytes) {
                strings[k] = "user-" + std::to_string(u);
                users[k].p = strings[k].data();
                users[k].n = strings[k].size();
            } else {
                users[k].i = u * 1000003;
            }
            items[k] = static_cast<int32_t>(rng() % 3000);
            wv[k] = 0.25 * static_cast<double>(rng() % 9) - 0.5;
            t[k] = static_cast<int64_t>(rng() % 1000000000);
            skip[k] = k % 7 == 3;
        }
    }
};

std::map<std::pair<int32_t, int32_t>, std::pair<double, int64_t>> raw_cells(const CellAggregator& a)
{
    std::map<std::pair<int32_t, int32_t>, std::pair<double, int64_t>> m;
    std::vector<CellAggregator::RawCell> buf(100);
    std::size_t pos = 0, n;
    while ((n = a.raw_into(&pos, buf.data(), buf.size())) > 0)
        for (std::size_t k = 0; k < n; k++)
            m[{buf[k].user, buf[k].item}] = {buf[k].sum, buf[k].ref_us};
    return m;
}

// What the reading path did before the blocks: one event at a time, each
// key to the dictionary when its block is flushed, the budget looked at
// after each block whose events passed a multiple of 4096.  Returns the
// events added and whether (and in which block) it stopped.
BlocksAdded one_at_a_time(KeyDict& users, CellAggregator& cells, const Log& log, const std::vector<std::size_t>& ends,
                          const std::vector<std::size_t>& other, int64_t aggregated, std::size_t limit,
                          std::vector<int32_t>* idx)
{
    BlocksAdded r;
    std::size_t begin = 0;
    for (std::size_t b = 0; b < ends.size(); b++) {
        for (std::size_t k = begin; k < ends[b]; k++)
            (*idx)[k] = users.add(log.users[k]);
        for (std::size_t k = begin; k < ends[b]; k++) {
            if (!log.skip[k] && !cells.add((*idx)[k], log.items[k], log.wv[k], log.t[k])) {
                r.added = k;
                r.block = b;
                r.full = true;
                return r;
            }
            aggregated++;
            if (aggregated % 4096 == 0 && users.memory_bytes() + cells.memory_bytes() + other[b] > limit)
                r.full = true;   // (looked at once the block is done)
        }
        r.added = ends[b];
        if (r.full) {
            r.block = b;
            return r;
        }
        begin = ends[b];
    }
    r.block = ends.size();
    return r;
}

EventBlocks blocks_of(Log& log, std::size_t first, const std::vector<std::size_t>& ends,
                      const std::vector<std::size_t>& other)
{
    EventBlocks ev;
    ev.users = log.users.data() + first;
    ev.user_idx = log.user_idx.data() + first;
    ev.items = log.items.data() + first;
    ev.wv = log.wv.data() + first;
    ev.time_us = log.t.data() + first;
    ev.skip = log.skip.get() + first;
    ev.block_end = ends.data();
    ev.other_bytes = other.data();
    ev.blocks = ends.size();
    return ev;
}

void expect_same_dicts(const KeyDict& a, const KeyDict& b)
{
    ASSERT_EQ(a.size(), b.size());
    for (std::size_t i = 0; i < a.size(); i++) {
        if (a.bytes())
            EXPECT_EQ(a.bytes_key(static_cast<int32_t>(i)), b.bytes_key(static_cast<int32_t>(i)));
        else
            EXPECT_EQ(a.int_key(static_cast<int32_t>(i)), b.int_key(static_cast<int32_t>(i)));
    }
    EXPECT_EQ(a.memory_bytes(), b.memory_bytes());
}

std::vector<std::size_t> ends_of(std::size_t n, std::size_t block)
{
    std::vector<std::size_t> e;
    for (std::size_t k = block; k < n + block; k += block)
        e.push_back(std::min(k, n));
    return e;
}

// Block ends over n events, the blocks' sizes taken from sizes[0..m) in turn.
std::vector<std::size_t> ends_cycling(std::size_t n, const std::size_t* sizes, std::size_t m)
{
    std::vector<std::size_t> e;
    for (std::size_t k = 0, at = 0; at < n; k++) {
        at = std::min(n, at + sizes[k % m]);
        e.push_back(at);
    }
    return e;
}

}  // namespace

TEST(AddBlocks, EqualsOneEventAtATimeWithoutALimit)
{
    for (bool bytes : {false, true}) {
        for (double half_life : {0.0, 3.6e9}) {
            Log log(20000, bytes, 11);
            std::vector<std::size_t> ends = ends_of(log.users.size(), 256);
            ends.back() = 19990;   // a short last block, as at the scan's end
            ends.push_back(20000);
            std::vector<std::size_t> other(ends.size(), 0);
            DecaySpec d;
            d.half_life_us = half_life;
            KeyDict u1(bytes), u2(bytes);
            CellAggregator c1(d, 0), c2(d, 0);
            std::vector<int32_t> idx(log.users.size());
            BlocksAdded want = one_at_a_time(u1, c1, log, ends, other, 0, SIZE_MAX, &idx);
            BlocksAdded got = recsys::add_blocks(u2, c2, blocks_of(log, 0, ends, other), 0, SIZE_MAX);
            EXPECT_FALSE(want.full);
            EXPECT_FALSE(got.full);
            EXPECT_EQ(got.added, 20000u);
            EXPECT_EQ(got.block, ends.size());
            EXPECT_EQ(log.user_idx, idx);
            expect_same_dicts(u1, u2);
            EXPECT_EQ(raw_cells(c1), raw_cells(c2));   // sums and times bit for bit
            EXPECT_EQ(c1.memory_bytes(), c2.memory_bytes());
        }
    }
}

TEST(AddBlocks, StopsInTheBlockWhereTheCellsRefuseAnEvent)
{
    Log log(40000, false, 5);
    std::vector<std::size_t> ends = ends_of(log.users.size(), 256);
    std::vector<std::size_t> other(ends.size(), 0);
    // 1024 slots * 24 bytes may double once (and the old table stays while
    // growing): it refuses at 90% of 2048 slots.
    std::size_t max_bytes = 3 * 1024 * 24;
    KeyDict u1(false), u2(false);
    CellAggregator c1(DecaySpec(), max_bytes), c2(DecaySpec(), max_bytes);
    std::vector<int32_t> idx(log.users.size());
    BlocksAdded want = one_at_a_time(u1, c1, log, ends, other, 0, SIZE_MAX, &idx);
    BlocksAdded got = recsys::add_blocks(u2, c2, blocks_of(log, 0, ends, other), 0, SIZE_MAX);
    ASSERT_TRUE(want.full);
    EXPECT_TRUE(got.full);
    EXPECT_EQ(got.added, want.added);
    EXPECT_EQ(got.block, want.block);
    EXPECT_EQ(got.block, want.added / 256);
    EXPECT_EQ(c2.cells(), 2048u * 9 / 10);   // (count + 1) * 10 > slots * 9 refuses the next
    // The users of the whole block that stopped are in the dictionary, none after it.
    expect_same_dicts(u1, u2);
    EXPECT_EQ(raw_cells(c1), raw_cells(c2));
}

TEST(AddBlocks, LooksAtTheBudgetWhenTheCountPassesAMultipleOf4096)
{
    Log log(16 * 256, false, 9);
    std::vector<std::size_t> ends = ends_of(log.users.size(), 256);
    const std::size_t huge = std::numeric_limits<std::size_t>::max() / 4, limit = huge;
    // The 16 blocks pass one multiple of 4096: 0 + 4096 after block 15,
    // 4000 + 256 after block 0, 8191 + 256 after block 0.
    const int64_t starts[3] = {0, 4000, 8191};
    const std::size_t crossings[3] = {15, 0, 0};
    for (int c = 0; c < 3; c++) {
        for (bool over : {false, true}) {
            // Over: the other bytes of the crossing block pass the limit.
            // Not over: every other block's do, which is not looked at.
            std::vector<std::size_t> other(ends.size(), over ? 0 : huge);
            other[crossings[c]] = over ? huge : 0;
            KeyDict u1(false), u2(false);
            CellAggregator c1(DecaySpec(), 0), c2(DecaySpec(), 0);
            std::vector<int32_t> idx(log.users.size());
            BlocksAdded want = one_at_a_time(u1, c1, log, ends, other, starts[c], limit, &idx);
            BlocksAdded got = recsys::add_blocks(u2, c2, blocks_of(log, 0, ends, other), starts[c], limit);
            EXPECT_EQ(want.full, over);
            EXPECT_EQ(got.full, over) << "start " << starts[c];
            EXPECT_EQ(got.block, over ? crossings[c] : ends.size());
            EXPECT_EQ(got.added, over ? ends[crossings[c]] : log.users.size());
            EXPECT_EQ(want.added, got.added);
            EXPECT_EQ(raw_cells(c1), raw_cells(c2));
        }
    }
}

// add_blocks runs each block as one loop with two prefetch stages of 16
// events: blocks shorter than a stage, or two, or not a multiple, and a
// refusal anywhere in a block, give what one event at a time gives.
TEST(AddBlocks, BlocksOfEverySizeAroundThePrefetchStages)
{
    const std::size_t sizes[] = {1, 2, 15, 16, 17, 31, 32, 33, 47, 48, 49, 100, 256};
    for (bool bytes : {false, true}) {
        Log log(6000, bytes, 23);
        std::vector<std::size_t> ends = ends_cycling(log.users.size(), sizes, sizeof sizes / sizeof sizes[0]);
        std::vector<std::size_t> other(ends.size(), 0);
        // Unbounded, then refusing at 90% of 1024, 2048 or 4096 slots: the
        // refusal falls at different places in the blocks.
        for (std::size_t max_bytes : {std::size_t{0}, std::size_t{1024} * 24, std::size_t{3} * 1024 * 24,
                                      std::size_t{6} * 1024 * 24}) {
            KeyDict u1(bytes), u2(bytes);
            CellAggregator c1(DecaySpec(), max_bytes), c2(DecaySpec(), max_bytes);
            std::vector<int32_t> idx(log.users.size());
            std::fill(log.user_idx.begin(), log.user_idx.end(), -1);
            BlocksAdded want = one_at_a_time(u1, c1, log, ends, other, 0, SIZE_MAX, &idx);
            BlocksAdded got = recsys::add_blocks(u2, c2, blocks_of(log, 0, ends, other), 0, SIZE_MAX);
            EXPECT_EQ(want.full, max_bytes != 0);
            EXPECT_EQ(got.full, want.full);
            EXPECT_EQ(got.added, want.added) << max_bytes;
            EXPECT_EQ(got.block, want.block);
            // The indices of the users added: through the block that stopped.
            std::size_t through = want.full ? ends[want.block] : log.users.size();
            for (std::size_t k = 0; k < through; k++)
                ASSERT_EQ(log.user_idx[k], idx[k]) << k;
            for (std::size_t k = through; k < log.users.size(); k++)
                ASSERT_EQ(log.user_idx[k], -1) << k;
            expect_same_dicts(u1, u2);
            EXPECT_EQ(raw_cells(c1), raw_cells(c2));
            EXPECT_EQ(c1.cells(), c2.cells());
        }
    }
}

// A non-finite weighted value stops the aggregation with the error one
// event at a time raises, at the same event: the events before it added.
TEST(AddBlocks, RaisesTheNonFiniteErrorAtTheSameEvent)
{
    for (std::size_t bad : {std::size_t{0}, std::size_t{17}, std::size_t{40}, std::size_t{511}, std::size_t{700}}) {
        Log log(1000, false, 31);
        log.skip[bad] = false;
        log.wv[bad] = std::numeric_limits<double>::infinity();
        std::vector<std::size_t> ends = ends_of(log.users.size(), 256);
        std::vector<std::size_t> other(ends.size(), 0);
        KeyDict u1(false), u2(false);
        CellAggregator c1(DecaySpec(), 0), c2(DecaySpec(), 0);
        std::vector<int32_t> idx(log.users.size());
        std::string want, got;
        try {
            one_at_a_time(u1, c1, log, ends, other, 0, SIZE_MAX, &idx);
        } catch (const recsys::InvalidInput& e) {
            want = e.what();
        }
        try {
            recsys::add_blocks(u2, c2, blocks_of(log, 0, ends, other), 0, SIZE_MAX);
        } catch (const recsys::InvalidInput& e) {
            got = e.what();
        }
        EXPECT_NE(want.find("is not finite (user index " + std::to_string(idx[bad]) + ", item index " +
                            std::to_string(log.items[bad]) + ")"),
                  std::string::npos)
            << want;
        EXPECT_EQ(got, want);
        EXPECT_EQ(raw_cells(c1), raw_cells(c2));   // the events before it, in both
    }
}

// Read in a pipeline, the scan's thread adds each block's users as the
// block closes (KeyDict::add_batch) and counts the dictionary's bytes then;
// the worker adds the cells alone (add_cell_blocks).  The same cells, the
// same stop (a refused event, or the budget, looked at after the same
// blocks with the same bytes) and the same users' indices as one event at a
// time, for integer and byte keys, with and without decay, blocks of many
// sizes, and the batch handed over in pieces as the reader does.
TEST(AddCellBlocks, EqualsOneEventAtATimeWithTheUsersAddedAsEachBlockCloses)
{
    const std::size_t sizes[] = {256, 256, 1, 17, 256, 33, 100, 256, 48};
    for (bool bytes : {false, true}) {
        for (double half_life : {0.0, 3.6e9}) {
            Log log(30000, bytes, 41);
            std::vector<std::size_t> ends = ends_cycling(log.users.size(), sizes, sizeof sizes / sizeof sizes[0]);
            std::vector<std::size_t> other(ends.size());
            for (std::size_t b = 0; b < ends.size(); b++)
                other[b] = 1000 * b;   // the item dictionary's bytes, growing
            DecaySpec d;
            d.half_life_us = half_life;
            // Unbounded; cells refusing at 90% of 2048 or 4096 slots; the
            // budget passed at three points of the log.
            struct Case {
                std::size_t max_bytes, limit;
            } cases[] = {{0, SIZE_MAX},
                         {std::size_t{3} * 1024 * 24, SIZE_MAX},
                         {std::size_t{6} * 1024 * 24, SIZE_MAX},
                         {0, 150000},
                         {0, 400000},
                         {0, 900000}};
            // Each case twice: the scan adding every block's users as it
            // closes, then mixed: every third batch's users left to the
            // worker (add_blocks), the others' added by the scan just
            // before the batch is handed over, as pg_read.cpp balances them.
            for (std::size_t ci = 0; ci < 2 * (sizeof cases / sizeof cases[0]); ci++) {
                const Case& c = cases[ci / 2];
                const bool mixed = ci % 2 == 1;
                KeyDict u1(bytes), u2(bytes);
                CellAggregator c1(d, c.max_bytes), c2(d, c.max_bytes);
                std::vector<int32_t> idx(log.users.size());
                BlocksAdded want = one_at_a_time(u1, c1, log, ends, other, 0, c.limit, &idx);
                // The scan's thread: every block's users as it closes, and
                // the bytes beside the cells at that point.
                std::fill(log.user_idx.begin(), log.user_idx.end(), -1);
                std::vector<std::size_t> seen(ends.size());
                auto add_users = [&](std::size_t from, std::size_t to) {
                    for (std::size_t b = from; b < to; b++) {
                        std::size_t begin = b == 0 ? 0 : ends[b - 1];
                        u2.add_batch(log.users.data() + begin, ends[b] - begin, log.user_idx.data() + begin);
                        seen[b] = other[b] + u2.memory_bytes();
                    }
                };
                if (!mixed)
                    add_users(0, ends.size());
                // The worker: batches of 16 blocks (the last one shorter),
                // each block's end relative to its batch's first event.
                BlocksAdded got;
                int64_t aggregated = 0;
                std::size_t first = 0;
                for (std::size_t b0 = 0; b0 < ends.size(); b0 += 16) {
                    std::size_t nb = std::min<std::size_t>(16, ends.size() - b0);
                    bool worker_users = mixed && (b0 / 16) % 3 == 1;
                    if (mixed && !worker_users)
                        add_users(b0, b0 + nb);
                    std::vector<std::size_t> rel(nb), bytes_at(nb);
                    for (std::size_t b = 0; b < nb; b++) {
                        rel[b] = ends[b0 + b] - first;
                        bytes_at[b] = worker_users ? other[b0 + b] : seen[b0 + b];
                    }
                    BlocksAdded r = worker_users
                                        ? recsys::add_blocks(u2, c2, blocks_of(log, first, rel, bytes_at), aggregated,
                                                             c.limit)
                                        : recsys::add_cell_blocks(c2, blocks_of(log, first, rel, bytes_at),
                                                                  aggregated, c.limit);
                    got.added = first + r.added;
                    got.block = b0 + r.block;
                    if (r.full) {
                        got.full = true;
                        break;
                    }
                    aggregated += static_cast<int64_t>(rel.back());
                    first = ends[b0 + nb - 1];
                }
                EXPECT_EQ(got.full, want.full) << c.max_bytes << " " << c.limit << " " << mixed;
                EXPECT_EQ(got.added, want.added) << c.max_bytes << " " << c.limit << " " << mixed;
                EXPECT_EQ(got.block, want.block) << c.max_bytes << " " << c.limit << " " << mixed;
                // Each bounded case stops somewhere.
                EXPECT_EQ(want.full, c.max_bytes != 0 || c.limit != SIZE_MAX) << c.max_bytes << " " << c.limit;
                std::size_t through = want.full ? ends[want.block] : log.users.size();
                for (std::size_t k = 0; k < through; k++)
                    ASSERT_EQ(log.user_idx[k], idx[k]) << k;
                // The dictionary one event at a time holds the users through
                // the block that stopped; the scan's holds those after too,
                // numbered after them.
                ASSERT_LE(u1.size(), u2.size());
                for (std::size_t i = 0; i < u1.size(); i++) {
                    if (bytes)
                        ASSERT_EQ(u1.bytes_key(static_cast<int32_t>(i)), u2.bytes_key(static_cast<int32_t>(i)));
                    else
                        ASSERT_EQ(u1.int_key(static_cast<int32_t>(i)), u2.int_key(static_cast<int32_t>(i)));
                }
                EXPECT_EQ(raw_cells(c1), raw_cells(c2));   // sums and times bit for bit
                EXPECT_EQ(c1.memory_bytes(), c2.memory_bytes());
            }
        }
    }
}

TEST(AsyncWorker, RunsEachJobOnAnotherThreadWithSignalsBlocked)
{
    AsyncWorker w;
    std::thread::id me = std::this_thread::get_id(), ran;
    bool blocked = false;
    w.post([&] {
        ran = std::this_thread::get_id();
        sigset_t s;
        pthread_sigmask(SIG_SETMASK, nullptr, &s);
        blocked = sigismember(&s, SIGINT) == 1 && sigismember(&s, SIGUSR1) == 1 && sigismember(&s, SIGALRM) == 1;
    });
    w.wait();
    EXPECT_NE(ran, me);
    EXPECT_TRUE(blocked);
    // The caller's mask is as it was.
    sigset_t s;
    pthread_sigmask(SIG_SETMASK, nullptr, &s);
    EXPECT_EQ(sigismember(&s, SIGINT), 0);
    // The same thread takes the next job.
    std::thread::id again;
    w.post([&] { again = std::this_thread::get_id(); });
    w.wait();
    EXPECT_EQ(again, ran);
}

TEST(AsyncWorker, WaitRethrowsTheJobsExceptionAndTheWorkerGoesOn)
{
    AsyncWorker w;
    w.post([] { throw std::runtime_error("boom"); });
    EXPECT_THROW(w.wait(), std::runtime_error);
    int x = 0;
    w.post([&] { x = 42; });
    EXPECT_NO_THROW(w.wait());
    EXPECT_EQ(x, 42);
    w.wait();   // nothing in flight: returns at once
}

TEST(AsyncWorker, DestructorWaitsForTheJobInFlight)
{
    std::atomic<int> steps{0};
    {
        AsyncWorker w;
        w.post([&] {
            for (int k = 0; k < 1000; k++) {
                steps.fetch_add(1);
                std::this_thread::yield();
            }
        });
    }   // not waited for: the destructor does
    EXPECT_EQ(steps.load(), 1000);
    AsyncWorker never_used;   // no thread was started: nothing to join
    EXPECT_FALSE(never_used.busy());
}

// The reading path's pipeline: batches of 16 blocks, double-buffered, each
// aggregated on the worker while the next is filled, gives the same
// dictionary, cells and stop as every block aggregated in turn here.
TEST(AddBlocks, DoubleBufferedOnTheWorkerEqualsInline)
{
    for (bool bytes : {false, true}) {
        for (std::size_t max_bytes : {std::size_t{0}, std::size_t{1} << 20}) {
            Log log(60000, bytes, 3);
            const std::size_t n = log.users.size(), group = 16 * 256;
            KeyDict u1(bytes), u2(bytes);
            CellAggregator c1(DecaySpec(), max_bytes), c2(DecaySpec(), max_bytes);
            // Inline: every block in turn.
            std::vector<int32_t> idx(n);
            std::vector<std::size_t> ends = ends_of(n, 256), other(ends.size(), 0);
            BlocksAdded want = recsys::add_blocks(u1, c1, blocks_of(log, 0, ends, other), 0, SIZE_MAX);
            idx = log.user_idx;
            // Pipelined: group g on the worker while "filling" g + 1.
            std::vector<int32_t> idx2(n, -1);
            log.user_idx.assign(n, -1);
            AsyncWorker w;
            BlocksAdded res[2];
            std::vector<std::size_t> gends[2];
            std::size_t first[2] = {0, 0};
            std::vector<std::size_t> zeros(16, 0);
            int64_t aggregated = 0;
            bool in_flight = false, stopped = false;
            std::size_t stop_at = n;
            int slot = 0;
            for (std::size_t g0 = 0; g0 < n && !stopped; g0 += group) {
                std::size_t g1 = std::min(n, g0 + group);
                gends[slot].clear();
                for (std::size_t e = g0 + 256; e < g1 + 256; e += 256)
                    gends[slot].push_back(std::min(e, g1) - g0);
                first[slot] = g0;
                if (in_flight) {
                    w.wait();
                    in_flight = false;
                    BlocksAdded& p = res[1 - slot];
                    aggregated += static_cast<int64_t>(p.added);
                    if (p.full) {
                        stopped = true;
                        stop_at = first[1 - slot] + p.added;
                        break;
                    }
                }
                EventBlocks ev = blocks_of(log, g0, gends[slot], zeros);
                BlocksAdded* out = &res[slot];
                w.post([&u2, &c2, ev, aggregated, out] { *out = recsys::add_blocks(u2, c2, ev, aggregated, SIZE_MAX); });
                in_flight = true;
                slot = 1 - slot;
            }
            if (in_flight) {
                w.wait();
                BlocksAdded& p = res[1 - slot];
                if (p.full)
                    stop_at = first[1 - slot] + p.added;
            }
            EXPECT_EQ(want.full, max_bytes != 0);
            EXPECT_EQ(stop_at, want.added);
            expect_same_dicts(u1, u2);
            EXPECT_EQ(raw_cells(c1), raw_cells(c2));
            for (std::size_t k = 0; k < want.added; k++)
                ASSERT_EQ(log.user_idx[k], idx[k]) << k;
        }
    }
}
