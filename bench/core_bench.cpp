// core_bench.cpp - times recsys::train() on a synthetic 1M-cell log:
// 100k users, 10k items, ~10 cells per user, skewed (Zipf-like) item
// popularity, 100 taste clusters (70% of a user's cells come from their
// cluster's items).  Build and run: make -C test/unit bench
// Optional args: users items cells_per_user neighbors repeats threads
// (threads: 0 = automatic as in train(), 1 = calling thread only, 2 = two)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <ctime>
#include <vector>

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
    auto cpu_now = [] {
        timespec ts;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
    };
    double best = 1e300, total = 0, best_cpu = 1e300;
    recsys::Model m;
    for (int r = 0; r < repeats; ++r) {
        std::vector<recsys::Triplet> copy = cells;
        const double c0 = cpu_now();
        const auto t0 = std::chrono::steady_clock::now();
        m = recsys::detail::train_threads(std::move(copy), recsys::TrainOptions{neighbors}, {},
                                          threads);
        const double s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best_cpu = std::min(best_cpu, cpu_now() - c0);
        best = std::min(best, s);
        total += s;
    }
    std::printf("model: %zu items, %lld users, %lld cells, %lld pairs\n", m.item_ids.size(),
                static_cast<long long>(m.n_users), static_cast<long long>(m.n_cells),
                static_cast<long long>(m.pairs()));
    std::printf("estimate_train_bytes: %.1f MB\n",
                static_cast<double>(recsys::estimate_train_bytes(
                    static_cast<int64_t>(cells.size()), users, items, neighbors)) /
                    1048576.0);
    std::printf("train() seconds: best %.4f, mean %.4f over %d runs (best CPU time %.4f)\n", best,
                total / repeats, repeats, best_cpu);
    return 0;
}
