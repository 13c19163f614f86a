// agg_bench.cpp - times the read's aggregation (recsys::add_blocks: the user
// KeyDict, then the CellAggregator) on a synthetic log shaped like
// bench/gen_events.sql's, handed over as pg_read.cpp hands it to the
// aggregation's thread: batches of 16 blocks of 256 events.
// Build and run: make -C test/unit agg_bench
// Args: [events (10000000)] [repeats (3)] [decay 0|1 (0)] [limit MB (512)]
// (the limit bounds the cells and the budget check as pg_read.cpp's limit,
// half of maintenance_work_mem, does: 512 is 1GB's)
//
// Prints the thread CPU time of each stage (users, cells; and the cells
// alone through add_cell_blocks, the worker's share when the scan's thread
// has added the users, checked to build the same table) per repeat and a
// checksum of the cells (their keys and the bits of their sums, in key
// order), so that two builds can be compared for speed and for identical
// results.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

#include "core_source.hpp"

namespace {

double cpu_now()
{
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

uint64_t splitmix(uint64_t& s)
{
    uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double u01(uint64_t& s)
{
    return static_cast<double>(splitmix(s) >> 11) * (1.0 / 9007199254740992.0);
}

struct Log {
    std::vector<recsys::KeyRef> users;
    std::vector<int32_t> items;
    std::vector<double> wv;
    std::vector<int64_t> t;
};

// The model of gen_events.sql: visits of 1-4 events of one (user, product),
// users skewed (1 + floor(U * x^1.6)), products Zipf in a taste cluster
// (65%) or the whole catalogue; the log in visit order.
Log make_log(std::size_t events)
{
    const int64_t n_users = std::max<int64_t>(1, std::llround(0.0944 * static_cast<double>(events)));
    const int64_t n_products =
        std::max<int64_t>(50, std::llround(50000 * std::sqrt(static_cast<double>(events) / 1e7)));
    const int64_t n_clusters = std::max<int64_t>(1, n_products / 50);
    const double weights[4] = {1, 2, 3, 5};
    Log log;
    log.users.reserve(events);
    log.items.reserve(events);
    log.wv.reserve(events);
    log.t.reserve(events);
    uint64_t s = 1;
    while (log.items.size() < events) {
        int len = 1;
        if (u01(s) < 0.30) {
            len = 2;
            if (u01(s) < 0.35) {
                len = 3;
                if (u01(s) < 0.55)
                    len = 4;
            }
        }
        int64_t user = 1 + static_cast<int64_t>(std::floor(static_cast<double>(n_users) * std::pow(u01(s), 1.6)));
        uint64_t us = static_cast<uint64_t>(user) * 7919;
        int64_t c = static_cast<int64_t>(std::floor(static_cast<double>(n_clusters) * u01(us)));
        int64_t product;
        if (u01(s) < 0.65) {
            int64_t n = (n_products - c - 1) / n_clusters + 1;
            int64_t r = std::min<int64_t>(
                n - 1, static_cast<int64_t>(std::floor(std::exp(u01(s) * std::log(n + 1.0)))) - 1);
            product = c + 1 + n_clusters * r;
        } else {
            product = 1 + std::min<int64_t>(n_products - 1, static_cast<int64_t>(std::floor(std::exp(
                                                                  u01(s) * std::log(n_products + 1.0)))) - 1);
        }
        int64_t tv = static_cast<int64_t>(u01(s) * 180 * 86400e6);
        for (int k = 0; k < len && log.items.size() < events; k++) {
            recsys::KeyRef key;
            key.i = user;
            log.users.push_back(key);
            log.items.push_back(static_cast<int32_t>(product - 1));   // items already dense
            log.wv.push_back(weights[k]);
            log.t.push_back(tv + k * 60000000);
        }
    }
    return log;
}

}  // namespace

int main(int argc, char** argv)
{
    std::size_t events = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 10000000;
    int repeats = argc > 2 ? std::atoi(argv[2]) : 3;
    bool decay = argc > 3 && std::atoi(argv[3]) != 0;
    std::size_t limit = (argc > 4 ? std::strtoull(argv[4], nullptr, 10) : 512) << 20;
    // AGG_BENCH_CACHE=file keeps the generated log between runs (A/B of two
    // builds without generating it each time).
    const char* cache = std::getenv("AGG_BENCH_CACHE");
    Log log;
    FILE* f = cache != nullptr ? std::fopen(cache, "rb") : nullptr;
    std::size_t cached = 0;
    if (f != nullptr && std::fread(&cached, sizeof cached, 1, f) == 1 && cached == events) {
        log.users.resize(events);
        log.items.resize(events);
        log.wv.resize(events);
        log.t.resize(events);
        bool ok = std::fread(log.users.data(), sizeof(recsys::KeyRef), events, f) == events &&
                  std::fread(log.items.data(), sizeof(int32_t), events, f) == events &&
                  std::fread(log.wv.data(), sizeof(double), events, f) == events &&
                  std::fread(log.t.data(), sizeof(int64_t), events, f) == events;
        if (!ok)
            log = make_log(events);
    } else {
        log = make_log(events);
        if (cache != nullptr) {
            FILE* w = std::fopen(cache, "wb");
            if (w != nullptr) {
                std::fwrite(&events, sizeof events, 1, w);
                std::fwrite(log.users.data(), sizeof(recsys::KeyRef), events, w);
                std::fwrite(log.items.data(), sizeof(int32_t), events, w);
                std::fwrite(log.wv.data(), sizeof(double), events, w);
                std::fwrite(log.t.data(), sizeof(int64_t), events, w);
                std::fclose(w);
            }
        }
    }
    if (f != nullptr)
        std::fclose(f);
    std::vector<int32_t> user_idx(events);
    const std::size_t kBlock = 256, kGroup = 16;
    std::vector<std::size_t> block_end(kGroup), other(kGroup, 0);
    recsys::DecaySpec spec;
    if (decay)
        spec.half_life_us = 30 * 86400e6;
    std::printf("agg_bench: %zu events, decay %s, limit %zu MB\n", events, decay ? "on" : "off", limit >> 20);
    // The batch of events from `begin`, in blocks of kBlock (block_end
    // filled in relative to it).
    auto batch_at = [&](std::size_t begin) {
        std::size_t end = std::min(events, begin + kBlock * kGroup), blocks = 0;
        for (std::size_t e = begin; e < end; e += kBlock)
            block_end[blocks++] = std::min(end, e + kBlock) - begin;
        recsys::EventBlocks ev;
        ev.users = log.users.data() + begin;
        ev.user_idx = user_idx.data() + begin;
        ev.items = log.items.data() + begin;
        ev.wv = log.wv.data() + begin;
        ev.time_us = log.t.data() + begin;
        ev.block_end = block_end.data();
        ev.other_bytes = other.data();
        ev.blocks = blocks;
        return ev;
    };
    for (int rep = 0; rep < repeats; rep++) {
        recsys::KeyDict users(false);
        recsys::CellAggregator cells(spec, limit);
        double t_all = 0, t_users = 0;
        int64_t aggregated = 0;
        for (std::size_t begin = 0; begin < events; begin += kBlock * kGroup) {
            recsys::EventBlocks ev = batch_at(begin);
            double t0 = cpu_now();
            recsys::BlocksAdded r = recsys::add_blocks(users, cells, ev, aggregated, limit);
            t_all += cpu_now() - t0;
            if (r.full) {
                std::fprintf(stderr, "agg_bench: the cells outgrow the limit: give a larger one\n");
                return 1;
            }
            aggregated += static_cast<int64_t>(r.added);
        }
        // The users' stage alone, again (a second dictionary, the same keys).
        {
            recsys::KeyDict u2(false);
            double t0 = cpu_now();
            for (std::size_t begin = 0; begin < events; begin += kBlock)
                u2.add_batch(log.users.data() + begin, std::min(kBlock, events - begin), user_idx.data() + begin);
            t_users = cpu_now() - t0;
        }
        // The cells alone as the worker adds them when the scan has added
        // the users (add_cell_blocks over the indices just computed).
        double t_cells = 0;
        {
            recsys::CellAggregator c2(spec, limit);
            int64_t agg2 = 0;
            for (std::size_t begin = 0; begin < events; begin += kBlock * kGroup) {
                recsys::EventBlocks ev = batch_at(begin);
                double t0 = cpu_now();
                recsys::BlocksAdded r = recsys::add_cell_blocks(c2, ev, agg2, limit);
                t_cells += cpu_now() - t0;
                agg2 += static_cast<int64_t>(r.added);
            }
            if (c2.cells() != cells.cells() || c2.memory_bytes() != cells.memory_bytes()) {
                std::fprintf(stderr, "agg_bench: add_cell_blocks made another table than add_blocks\n");
                return 1;
            }
        }
        std::vector<recsys::CellAggregator::RawCell> raw(cells.cells());
        std::size_t pos = 0, got = cells.raw_into(&pos, raw.data(), raw.size());
        raw.resize(got);
        std::sort(raw.begin(), raw.end(), [](const auto& a, const auto& b) {
            return a.user != b.user ? a.user < b.user : a.item < b.item;
        });
        uint64_t h = 1469598103934665603ULL;
        for (const auto& c : raw) {
            uint64_t bits;
            std::memcpy(&bits, &c.sum, sizeof bits);
            for (uint64_t v : {static_cast<uint64_t>(c.user), static_cast<uint64_t>(c.item), bits,
                               static_cast<uint64_t>(c.ref_us)})
                h = (h ^ v) * 1099511628211ULL;
        }
        std::printf("repeat %d: add_blocks %.3f s CPU (users alone %.3f s, so cells ~%.3f s; add_cell_blocks "
                    "%.3f s); %zu users, %zu cells, table %.1f MB, checksum %016llx\n",
                    rep, t_all, t_users, t_all - t_users, t_cells, users.size(), cells.cells(),
                    static_cast<double>(cells.memory_bytes()) / 1048576.0, static_cast<unsigned long long>(h));
    }
    return 0;
}
