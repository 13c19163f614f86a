// core_bench.cpp - times recsys::train() on a synthetic 1M-cell log:
// 100k users, 10k items, ~10 cells per user, skewed (Zipf-like) item
// popularity, 100 taste clusters (70% of a user's cells come from their
// cluster's items).  Build and run: make -C test/unit bench
// Optional args: users items cells_per_user neighbors repeats threads eigen_repeats settings
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

double cpu_now() {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

struct Timing {
    double best = 1e300, total = 0, best_cpu = 1e300;
    int runs = 0;
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
    const int users = argc > 1 ? std::atoi(argv[1]) : 100000;
    const int items = argc > 2 ? std::atoi(argv[2]) : 10000;
    const int per_user = argc > 3 ? std::atoi(argv[3]) : 10;
    const int neighbors = argc > 4 ? std::atoi(argv[4]) : 50;
    const int repeats = argc > 5 ? std::atoi(argv[5]) : 5;
    const int threads = argc > 6 ? std::atoi(argv[6]) : 0;
    const auto cells = synthetic(users, items, per_user, 12345);
    std::printf("synthetic log: %zu cells, %d users, %d items, neighbors %d, threads %d\n",
                cells.size(), users, items, neighbors, threads);
    const int eigen_repeats = argc > 7 ? std::atoi(argv[7]) : std::max(1, std::min(repeats, 3));
    // Memory first, while the heap holds little besides the input.
    print_peak("train()", peak_extra_bytes([&] {
        std::vector<recsys::Triplet> copy = cells;  // train() consumes its input
        recsys::detail::train_threads(std::move(copy), recsys::TrainOptions{neighbors}, {},
                                      threads);
    }));
    print_peak("train_eigen()", peak_extra_bytes([&] {
        recsys::train_eigen(cells, recsys::TrainOptions{neighbors});
    }));
    std::printf("(peak extra RSS: forked child, ru_maxrss minus starting RSS; train() figure "
                "includes its 16 B/cell input copy)\n");
    recsys::Model m;
    const Timing tt = time_runs(repeats, cells, m, [&](std::vector<recsys::Triplet>&& copy) {
        return recsys::detail::train_threads(std::move(copy), recsys::TrainOptions{neighbors}, {},
                                             threads);
    });
    std::printf("model: %zu items, %lld users, %lld cells, %lld pairs\n", m.item_ids.size(),
                static_cast<long long>(m.n_users), static_cast<long long>(m.n_cells),
                static_cast<long long>(m.pairs()));
    std::printf("estimate_train_bytes: %.1f MB\n",
                static_cast<double>(recsys::estimate_train_bytes(
                    static_cast<int64_t>(cells.size()), users, items, neighbors)) /
                    1048576.0);
    std::printf("train() seconds: best %.4f, mean %.4f over %d runs (best CPU time %.4f)\n",
                tt.best, tt.total / tt.runs, tt.runs, tt.best_cpu);

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

    if (argc > 8 && std::atoi(argv[8]) != 0) time_settings(cells, neighbors, repeats, threads);
    return 0;
}
