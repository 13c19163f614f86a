// core_bench.cpp - times recsys::train() on a synthetic 1M-cell log:
// 100k users, 10k items, ~10 cells per user, skewed (Zipf-like) item
// popularity, 100 taste clusters (70% of a user's cells come from their
// cluster's items).  Build and run: make -C test/unit bench
// Optional args: users items cells_per_user neighbors repeats threads eigen_repeats settings
// or: --events N [--user-skew S] neighbors repeats threads eigen_repeats settings (the shape of
// bench/gen_events.sql's N-event log, its -v user_skew S, default 1.6; eigen_repeats 0 skips train_eigen())
// (threads: 0 = automatic as in train(), 1 = calling thread only, 2 = two;
// settings: 1 = also time train() with every weighting/similarity setting,
// see time_settings() below)
//
// Then times recsys::train_eigen() (the same model via Eigen sparse products,
// always single-threaded) on the same log, checks that the two models agree,
// and prints the time ratio.  Peak memory of each is measured in a forked
// child (Linux): peak RSS (ru_maxrss) minus the RSS the child started with.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <ctime>
#include <string>
#include <vector>
#if defined(__linux__)
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#endif
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "core.hpp"
#include "core_topk.hpp"

namespace {

std::vector<recsys::Triplet> synthetic(int users, int items, int per_user, uint32_t seed) {
    std::mt19937_64 rng(seed);
    const int clusters = 100;
    // Zipf-ish global popularity via inverse-CDF on a power law.
    std::vector<double> cdf(static_cast<std::size_t>(items));
    double sum = 0;
    for (int i = 0; i < items; ++i) cdf[static_cast<std::size_t>(i)] = sum += 1.0 / std::pow(i + 1.0, 0.9);
    for (double& c : cdf) c /= sum;
    std::uniform_real_distribution<double> unit(0, 1);
    auto popular_item = [&] {
        const auto it = std::lower_bound(cdf.begin(), cdf.end(), unit(rng));
        return static_cast<int32_t>(std::min<std::ptrdiff_t>(it - cdf.begin(), items - 1));
    };
    // Items are shuffled into clusters so cluster and popularity mix.
    std::vector<int32_t> perm(static_cast<std::size_t>(items));
    for (int i = 0; i < items; ++i) perm[static_cast<std::size_t>(i)] = i;
    std::shuffle(perm.begin(), perm.end(), rng);
    const int per_cluster = items / clusters;
    std::poisson_distribution<int> len(per_user - 1);
    std::vector<recsys::Triplet> cells;
    cells.reserve(static_cast<std::size_t>(users) * static_cast<std::size_t>(per_user + 2));
    for (int u = 0; u < users; ++u) {
        const int c = static_cast<int>(rng() % clusters);
        const int n = 1 + len(rng);
        for (int k = 0; k < n; ++k) {
            int32_t item;
            if (unit(rng) < 0.7) {
                // within cluster, skewed towards the cluster's first items
                const double x = unit(rng);
                item = perm[static_cast<std::size_t>(c * per_cluster +
                                                     static_cast<int>(x * x * per_cluster))];
            } else {
                item = popular_item();
            }
            cells.push_back(recsys::Triplet{u, item, 1.0 + static_cast<double>(rng() % 5)});
        }
    }
    return cells;
}

// The shape of bench/gen_events.sql's log, summed into cells as recsys_train()
// hands them to the core (default event weights view 1, click 2, add_to_cart 3,
// purchase 5): `events` events in visits of 1-4 events (a view, then a click
// with p 0.30, a cart given a click 0.35, a purchase given a cart 0.55); the
// visit's user 1 + floor(U x^s) (U = 0.0944 events, s = --user-skew, 1.6 as
// the SQL's default user_skew); 65% of visits pick a
// product of the user's taste cluster (clusters of ~50 of P = 50000
// sqrt(events / 10M) products), 35% from the whole catalogue, both Zipf
// (exponent 1) by rank.  Draws come from a seeded generator, not the SQL's
// hashes, so the cells are not the same, only the shape (10M events: ~940k
// users, 50k items, ~6.1M cells, sum of deg^2 ~57M).
std::vector<recsys::Triplet> gen_events_shape(long long events, uint32_t seed, double user_skew) {
    const long long n_users = std::max(1LL, std::llround(0.0944 * static_cast<double>(events)));
    const int n_products = std::max(50, static_cast<int>(std::lround(50000 * std::sqrt(static_cast<double>(events) / 1e7))));
    const int n_clusters = std::max(1, n_products / 50);
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> unit(0, 1);
    // Cluster of a user: a hash of the id, as the SQL's u01(user, salt).
    auto cluster_of = [&](long long u) {
        uint64_t z = static_cast<uint64_t>(u) * 0x9E3779B97F4A7C15ull + seed;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        return static_cast<int>(static_cast<double>(z >> 11) / 9007199254740992.0 * n_clusters);
    };
    std::vector<uint64_t> keys;  // user << 32 | product, one per visit
    std::vector<uint8_t> lens;
    keys.reserve(static_cast<std::size_t>(events / 1.4));
    lens.reserve(keys.capacity());
    long long done = 0;
    while (done < events) {
        int len = 1;
        if (unit(rng) < 0.30) {
            len = 2;
            if (unit(rng) < 0.35) {
                len = 3;
                if (unit(rng) < 0.55) len = 4;
            }
        }
        len = static_cast<int>(std::min<long long>(len, events - done));
        done += len;
        const long long user = 1 + static_cast<long long>(std::floor(static_cast<double>(n_users) * std::pow(unit(rng), user_skew)));
        const int c = cluster_of(user);
        int product;
        if (unit(rng) < 0.65) {
            const int n = (n_products - c - 1) / n_clusters + 1;
            const int r = std::min(n - 1, static_cast<int>(std::floor(std::exp(unit(rng) * std::log(n + 1.0)))) - 1);
            product = c + 1 + n_clusters * std::max(0, r);
        } else {
            product = 1 + std::min(n_products - 1,
                                   std::max(0, static_cast<int>(std::floor(std::exp(unit(rng) * std::log(n_products + 1.0)))) - 1));
        }
        keys.push_back((static_cast<uint64_t>(user) << 32) | static_cast<uint32_t>(product));
        lens.push_back(static_cast<uint8_t>(len));
    }
    static const double weight_of_len[5] = {0, 1, 3, 6, 11};  // view, +click 2, +cart 3, +purchase 5
    std::vector<std::pair<uint64_t, double>> visits(keys.size());
    for (std::size_t k = 0; k < keys.size(); ++k) visits[k] = {keys[k], weight_of_len[lens[k]]};
    std::sort(visits.begin(), visits.end());
    std::vector<recsys::Triplet> cells;
    for (std::size_t k = 0; k < visits.size(); ++k) {
        const uint64_t key = visits[k].first;
        if (!cells.empty() && k > 0 && visits[k - 1].first == key) {
            cells.back().weight += visits[k].second;
            continue;
        }
        cells.push_back(recsys::Triplet{static_cast<int32_t>(key >> 32), static_cast<int32_t>(key & 0xffffffffu),
                                        visits[k].second});
    }
    // The reading path hands cells over in no particular order: shuffle.
    std::shuffle(cells.begin(), cells.end(), rng);
    return cells;
}

// FNV-1a over every array of the model: equal fingerprints, bit-identical
// models (for A/B runs of two builds).
uint64_t fingerprint(const recsys::Model& m) {
    uint64_t h = 1469598103934665603ull;
    auto mix = [&](const void* p, std::size_t n) {
        const unsigned char* c = static_cast<const unsigned char*>(p);
        for (std::size_t k = 0; k < n; ++k) h = (h ^ c[k]) * 1099511628211ull;
    };
    mix(m.item_ids.data(), 4 * m.item_ids.size());
    mix(m.nbr_offsets.data(), 8 * m.nbr_offsets.size());
    mix(m.nbr_ids.data(), 4 * m.nbr_ids.size());
    mix(m.nbr_sims.data(), 8 * m.nbr_sims.size());
    mix(m.popular_ids.data(), 4 * m.popular_ids.size());
    mix(m.popular_users.data(), 4 * m.popular_users.size());
    mix(&m.n_users, 8);
    mix(&m.n_cells, 8);
    return h;
}

// The floor: sum over users of deg(u)^2, deg = distinct items of the user.
double floor_madds(const std::vector<recsys::Triplet>& cells) {
    std::vector<uint64_t> k(cells.size());
    for (std::size_t p = 0; p < cells.size(); ++p)
        k[p] = (static_cast<uint64_t>(static_cast<uint32_t>(cells[p].user)) << 32) | static_cast<uint32_t>(cells[p].item);
    std::sort(k.begin(), k.end());
    k.erase(std::unique(k.begin(), k.end()), k.end());
    double total = 0;
    for (std::size_t a = 0; a < k.size();) {
        std::size_t b = a;
        while (b < k.size() && (k[b] >> 32) == (k[a] >> 32)) ++b;
        total += static_cast<double>(b - a) * static_cast<double>(b - a);
        a = b;
    }
    return total;
}

double cpu_now() {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

struct Timing {
    double best = 1e300, total = 0, best_cpu = 1e300;
    int runs = 0;
};

// The similarity pass alone, from train()'s progress: its first report
// ("similarities", 0 done) to its last (every item done).  The best of the
// runs that set it.
struct PassTimer {
    std::chrono::steady_clock::time_point start;
    double best = 1e300;
    recsys::TrainOptions options(int neighbors) {
        recsys::TrainOptions o{neighbors};
        o.progress = [this](const char* stage, int64_t done, int64_t total) {
            if (std::string(stage) != "similarities") return;
            const auto now = std::chrono::steady_clock::now();
            if (done == 0) start = now;
            if (done == total) best = std::min(best, std::chrono::duration<double>(now - start).count());
        };
        return o;
    }
};

// Runs `fn` (a fresh copy of `cells` -> Model) `repeats` times; keeps the
// last model.  The copy is made outside the timed region.
template <class F>
Timing time_runs(int repeats, const std::vector<recsys::Triplet>& cells, recsys::Model& out, F fn) {
    Timing t;
    for (int r = 0; r < repeats; ++r) {
        std::vector<recsys::Triplet> copy = cells;
        const double c0 = cpu_now();
        const auto t0 = std::chrono::steady_clock::now();
        out = fn(std::move(copy));
        const double s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        t.best_cpu = std::min(t.best_cpu, cpu_now() - c0);
        t.best = std::min(t.best, s);
        t.total += s;
        ++t.runs;
    }
    return t;
}

// Peak extra resident memory (bytes) of one run of `fn`, measured in a forked
// child: ru_maxrss at the end minus the RSS at the start.  -1 if unavailable.
template <class F>
double peak_extra_bytes(F fn) {
#if defined(__linux__)
    int fd[2];
    if (pipe(fd) != 0) return -1;
    const pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return -1;
    }
    if (pid == 0) {
        close(fd[0]);
#if defined(__GLIBC__)
        malloc_trim(0);  // free heap pages would hide the growth
#endif
        double result = -1;
        long pages = 0, resident = 0;
        if (FILE* f = std::fopen("/proc/self/statm", "r")) {
            if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = -1;
            std::fclose(f);
        }
        if (resident >= 0) {
            const double start = static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE));
            fn();
            rusage ru;
            getrusage(RUSAGE_SELF, &ru);
            result = static_cast<double>(ru.ru_maxrss) * 1024.0 - start;
        }
        if (write(fd[1], &result, sizeof result) != static_cast<ssize_t>(sizeof result)) _exit(1);
        _exit(0);
    }
    close(fd[1]);
    double result = -1;
    if (read(fd[0], &result, sizeof result) != static_cast<ssize_t>(sizeof result)) result = -1;
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return result;
#else
    (void)fn;
    return -1;
#endif
}

void print_peak(const char* what, double bytes) {
    if (bytes < 0)
        std::printf("%s peak extra RSS: not measured\n", what);
    else
        std::printf("%s peak extra RSS: %.1f MB\n", what, bytes / 1048576.0);
}

// train() with each weighting and similarity setting on the same log.
void time_settings(const std::vector<recsys::Triplet>& cells, int neighbors, int repeats,
                   int threads) {
    using recsys::Similarity;
    using recsys::Weighting;
    struct Setting {
        const char* name;
        Weighting w;
        Similarity s;
        double shrink;
    };
    const Setting settings[] = {
        {"weights cosine (1.0 defaults)", Weighting::weights, Similarity::cosine, 0},
        {"weights cosine shrink 10", Weighting::weights, Similarity::cosine, 10},
        {"binary cosine", Weighting::binary, Similarity::cosine, 0},
        {"tfidf cosine shrink 200", Weighting::tfidf, Similarity::cosine, 200},
        {"bm25 cosine", Weighting::bm25, Similarity::cosine, 0},
        {"weights asymmetric_cosine", Weighting::weights, Similarity::asymmetric_cosine, 0},
        {"weights rp3beta", Weighting::weights, Similarity::rp3beta, 0},
        {"binary rp3beta", Weighting::binary, Similarity::rp3beta, 0},
        {"binary jaccard", Weighting::binary, Similarity::jaccard, 0},
    };
    std::printf("settings (train(), threads %d, best of %d):\n", threads, repeats);
    for (const Setting& st : settings) {
        recsys::TrainOptions o;
        o.neighbors = neighbors;
        o.weighting = st.w;
        o.similarity = st.s;
        o.shrink = st.shrink;
        recsys::Model m;
        const Timing t = time_runs(repeats, cells, m, [&](std::vector<recsys::Triplet>&& copy) {
            return recsys::detail::train_threads(std::move(copy), o, {}, threads);
        });
        std::printf("  %-32s best %.4f s, mean %.4f s (best CPU %.4f s), %lld pairs\n", st.name,
                    t.best, t.total / t.runs, t.best_cpu, static_cast<long long>(m.pairs()));
    }
}

}  // namespace

int main(int argc, char** argv) {
    // "--events N" first: the shape of bench/gen_events.sql's N-event log
    // instead of the clustered synthetic log; the other arguments follow.
    std::vector<std::string> args(argv + 1, argv + argc);
    long long events = 0;
    double user_skew = 1.6;
    if (args.size() >= 2 && args[0] == "--events") {
        events = std::atoll(args[1].c_str());
        args.erase(args.begin(), args.begin() + 2);
        if (args.size() >= 2 && args[0] == "--user-skew") {  // gen_events.sql's -v user_skew
            user_skew = std::atof(args[1].c_str());
            args.erase(args.begin(), args.begin() + 2);
        }
        args.insert(args.begin(), 3, "0");  // users items cells_per_user: unused
    }
    auto arg = [&](std::size_t k, int dflt) { return k < args.size() ? std::atoi(args[k].c_str()) : dflt; };
    const int users = arg(0, 100000);
    const int items = arg(1, 10000);
    const int per_user = arg(2, 10);
    const int neighbors = arg(3, 50);
    const int repeats = arg(4, 5);
    const int threads = arg(5, 0);
    const auto cells = events > 0 ? gen_events_shape(events, 12345, user_skew) : synthetic(users, items, per_user, 12345);
    const double madds = floor_madds(cells);
    if (events > 0)
        std::printf("gen_events.sql-shaped log: %lld events (user_skew %g) -> %zu cells, floor sum deg^2 = %.0f, "
                    "neighbors %d, threads %d\n",
                    events, user_skew, cells.size(), madds, neighbors, threads);
    else
        std::printf("synthetic log: %zu cells, %d users, %d items, floor sum deg^2 = %.0f, neighbors %d, threads %d\n",
                    cells.size(), users, items, madds, neighbors, threads);
    const int eigen_repeats = arg(6, std::max(1, std::min(repeats, 3)));  // 0: no Eigen run
    // Memory first, while the heap holds little besides the input.
    print_peak("train()", peak_extra_bytes([&] {
        std::vector<recsys::Triplet> copy = cells;  // train() consumes its input
        recsys::detail::train_threads(std::move(copy), recsys::TrainOptions{neighbors}, {},
                                      threads);
    }));
    if (eigen_repeats > 0)
        print_peak("train_eigen()", peak_extra_bytes([&] {
            recsys::train_eigen(cells, recsys::TrainOptions{neighbors});
        }));
    std::printf("(peak extra RSS: forked child, ru_maxrss minus starting RSS; train() figure "
                "includes its 16 B/cell input copy)\n");
    recsys::Model m;
    PassTimer pass;
    const Timing tt = time_runs(repeats, cells, m, [&](std::vector<recsys::Triplet>&& copy) {
        return recsys::detail::train_threads(std::move(copy), pass.options(neighbors), {}, threads);
    });
    std::printf("model: %zu items, %lld users, %lld cells, %lld pairs\n", m.item_ids.size(),
                static_cast<long long>(m.n_users), static_cast<long long>(m.n_cells),
                static_cast<long long>(m.pairs()));
    std::printf("estimate_train_bytes: %.1f MB\n",
                static_cast<double>(recsys::estimate_train_bytes(
                    static_cast<int64_t>(cells.size()), m.n_users,
                    static_cast<int64_t>(m.item_ids.size()), neighbors)) /
                    1048576.0);
    std::printf("model fingerprint: %016llx\n", static_cast<unsigned long long>(fingerprint(m)));
    std::printf("train() seconds: best %.4f, mean %.4f over %d runs (best CPU time %.4f)\n",
                tt.best, tt.total / tt.runs, tt.runs, tt.best_cpu);
    std::printf("train() per multiply-add of the floor: %.2f ns wall, %.2f ns CPU (best)\n",
                1e9 * tt.best / madds, 1e9 * tt.best_cpu / madds);
    if (pass.best < 1e300)
        std::printf("of which the similarity pass: best %.4f s, %.2f ns wall per multiply-add of the floor\n",
                    pass.best, 1e9 * pass.best / madds);

    // The same pass on the calling thread only, for a like-for-like ratio.
    Timing t1 = tt;
    if (threads != 1) {
        recsys::Model m1;
        t1 = time_runs(repeats, cells, m1, [&](std::vector<recsys::Triplet>&& copy) {
            return recsys::detail::train_threads(std::move(copy), recsys::TrainOptions{neighbors},
                                                 {}, 1);
        });
        std::printf("train() 1 thread seconds: best %.4f, mean %.4f over %d runs (best CPU time %.4f)\n",
                    t1.best, t1.total / t1.runs, t1.runs, t1.best_cpu);
    }

    if (eigen_repeats <= 0) {
        if (arg(7, 0) != 0) time_settings(cells, neighbors, repeats, threads);
        return 0;
    }
    recsys::Model e;
    const Timing te = time_runs(eigen_repeats, cells, e, [&](std::vector<recsys::Triplet>&& copy) {
        return recsys::train_eigen(copy, recsys::TrainOptions{neighbors});
    });
    std::printf("train_eigen() seconds: best %.4f, mean %.4f over %d runs (best CPU time %.4f)\n",
                te.best, te.total / te.runs, te.runs, te.best_cpu);

    // Agreement: same shape, sims within a relative 1e-12 rank by rank.
    bool same_shape = e.item_ids == m.item_ids && e.nbr_offsets == m.nbr_offsets &&
                      e.popular_ids == m.popular_ids && e.popular_users == m.popular_users &&
                      e.n_users == m.n_users && e.n_cells == m.n_cells;
    double max_rel = 0;
    long long id_diffs = 0;
    if (same_shape) {
        for (std::size_t p = 0; p < m.nbr_sims.size(); ++p) {
            const double a = m.nbr_sims[p], b = e.nbr_sims[p];
            max_rel = std::max(max_rel, std::fabs(a - b) / std::max(std::fabs(a), std::fabs(b)));
            id_diffs += m.nbr_ids[p] != e.nbr_ids[p];
        }
    }
    std::printf("agreement: %s, max rel sim diff %.3g, %lld of %lld neighbour ids differ "
                "(near-tie swaps)\n",
                same_shape && max_rel <= 1e-12 ? "OK" : "MISMATCH", max_rel, id_diffs,
                static_cast<long long>(m.pairs()));
    std::printf("ratio train_eigen / train(): %.2fx wall (best), %.2fx vs 1-thread train(), "
                "%.2fx CPU\n",
                te.best / tt.best, te.best / t1.best, te.best_cpu / tt.best_cpu);

    if (arg(7, 0) != 0) time_settings(cells, neighbors, repeats, threads);
    return 0;
}
