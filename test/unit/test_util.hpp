// test_util.hpp - shared helpers for the core unit tests: seeded random
// inputs and brute-force reference implementations (deliberately naive:
// dense matrices, full sorts) to compare the fast code against.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <vector>

#include <gtest/gtest.h>

#include "core.hpp"

namespace recsys_test {

using recsys::Model;
using recsys::Triplet;

// Random cells.  Weights come from {0.5, 1, 1.5, 2, 3}: all products and
// sums are exact in binary floating point, so dot products and squared norms
// are exact whatever the summation order, and the fast and naive code must
// agree bit for bit (including exact ties).  Ids are drawn from sparse pools
// that include negative values and the int32 extremes.
inline std::vector<Triplet> random_cells(uint32_t seed, int n_users, int n_items, int n_cells) {
    std::mt19937 rng(seed);
    std::vector<int32_t> users, items;
    std::set<int32_t> seen;
    std::uniform_int_distribution<int32_t> any_id(INT32_MIN, INT32_MAX);
    auto pool = [&](int n, std::vector<int32_t>& out) {
        seen.clear();
        seen.insert(INT32_MIN);
        seen.insert(INT32_MAX);
        seen.insert(0);
        seen.insert(-1);
        while (static_cast<int>(seen.size()) < n) {
            // mix of small dense ids and arbitrary ones
            seen.insert(rng() % 3 == 0 ? any_id(rng) : static_cast<int32_t>(rng() % 1000) - 500);
        }
        out.assign(seen.begin(), seen.end());
        std::shuffle(out.begin(), out.end(), rng);
        out.resize(static_cast<std::size_t>(n));
    };
    pool(n_users, users);
    pool(n_items, items);
    static const double kWeights[] = {0.5, 1, 1.5, 2, 3};
    std::vector<Triplet> cells;
    for (int c = 0; c < n_cells; ++c) {
        // skewed item choice: low indices are more popular
        const double x = std::uniform_real_distribution<double>(0, 1)(rng);
        const int ii = static_cast<int>(x * x * n_items) % n_items;
        cells.push_back(Triplet{users[rng() % users.size()], items[static_cast<std::size_t>(ii)],
                                kWeights[rng() % 5]});
    }
    return cells;
}

struct NaiveNeighbor {
    int32_t id;
    double sim;
};

// Naive reference: dense user x item matrix, cosine of every pair, full sort.
struct NaiveModel {
    std::vector<int32_t> items;  // ascending
    std::map<int32_t, std::vector<NaiveNeighbor>> nbrs;
    std::vector<int32_t> popular_ids, popular_users;
    int64_t n_users = 0, n_cells = 0;
};

inline NaiveModel naive_train(const std::vector<Triplet>& cells, int k) {
    NaiveModel nm;
    std::vector<int32_t> users;
    for (const Triplet& t : cells) {
        users.push_back(t.user);
        nm.items.push_back(t.item);
    }
    std::sort(users.begin(), users.end());
    users.erase(std::unique(users.begin(), users.end()), users.end());
    std::sort(nm.items.begin(), nm.items.end());
    nm.items.erase(std::unique(nm.items.begin(), nm.items.end()), nm.items.end());
    const std::size_t U = users.size(), I = nm.items.size();
    std::vector<double> w(U * I, 0.0);  // w[u * I + i]
    auto idx = [](const std::vector<int32_t>& v, int32_t x) {
        return static_cast<std::size_t>(std::lower_bound(v.begin(), v.end(), x) - v.begin());
    };
    for (const Triplet& t : cells) w[idx(users, t.user) * I + idx(nm.items, t.item)] += t.weight;
    nm.n_users = static_cast<int64_t>(U);
    std::vector<double> norm(I, 0.0);
    std::vector<int32_t> count(I, 0);
    for (std::size_t i = 0; i < I; ++i) {
        double s = 0;
        for (std::size_t u = 0; u < U; ++u) {
            s += w[u * I + i] * w[u * I + i];
            if (w[u * I + i] > 0) {
                ++count[i];
                ++nm.n_cells;
            }
        }
        norm[i] = std::sqrt(s);
    }
    for (std::size_t i = 0; i < I; ++i) {
        std::vector<NaiveNeighbor> list;
        for (std::size_t j = 0; j < I; ++j) {
            if (j == i) continue;
            double dot = 0;
            for (std::size_t u = 0; u < U; ++u) dot += w[u * I + i] * w[u * I + j];
            const double sim = dot / (norm[i] * norm[j]);
            if (sim > 0) list.push_back(NaiveNeighbor{nm.items[j], sim});
        }
        std::sort(list.begin(), list.end(), [](const NaiveNeighbor& a, const NaiveNeighbor& b) {
            return a.sim != b.sim ? a.sim > b.sim : a.id < b.id;
        });
        if (k > 0 && list.size() > static_cast<std::size_t>(k)) list.resize(static_cast<std::size_t>(k));
        nm.nbrs[nm.items[i]] = list;
    }
    std::vector<std::size_t> order(I);
    for (std::size_t i = 0; i < I; ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        return count[a] != count[b] ? count[a] > count[b] : nm.items[a] < nm.items[b];
    });
    for (std::size_t i : order) {
        nm.popular_ids.push_back(nm.items[i]);
        nm.popular_users.push_back(count[i]);
    }
    return nm;
}

// Neighbours of model.item_ids[k] as a vector (for easy comparisons).
inline std::vector<NaiveNeighbor> model_nbrs(const Model& m, int32_t item) {
    std::vector<NaiveNeighbor> out;
    const recsys::NeighborList nl = recsys::neighbors_of(m, item);
    for (std::size_t k = 0; k < nl.size; ++k) out.push_back(NaiveNeighbor{nl.ids[k], nl.sims[k]});
    return out;
}

// Two models are the same: ids, order, and bit-identical similarities.
inline void expect_same_model(const Model& a, const Model& b) {
    EXPECT_EQ(a.n_users, b.n_users);
    EXPECT_EQ(a.n_cells, b.n_cells);
    EXPECT_EQ(a.item_ids, b.item_ids);
    EXPECT_EQ(a.nbr_offsets, b.nbr_offsets);
    EXPECT_EQ(a.nbr_ids, b.nbr_ids);
    EXPECT_EQ(a.nbr_sims, b.nbr_sims);  // bit-identical
    EXPECT_EQ(a.popular_ids, b.popular_ids);
    EXPECT_EQ(a.popular_users, b.popular_users);
}

// Checks that train_fn (train or train_eigen) polls its CancelCheck at least
// min_calls times, throws Cancelled at whichever poll says so and stops
// polling then, and that a check that never fires changes nothing.
template <typename TrainFn>
void expect_cancel_at_every_poll(TrainFn train_fn, const std::vector<Triplet>& cells, int min_calls) {
    using recsys::Cancelled;
    using recsys::Model;
    using recsys::TrainOptions;
    int calls = 0;
    const Model full = train_fn(cells, TrainOptions{}, [&] {
        ++calls;
        return false;
    });
    ASSERT_GE(calls, min_calls);
    for (int n = 1; n <= calls; ++n) {
        int seen = 0;
        EXPECT_THROW(train_fn(cells, TrainOptions{}, [&] { return ++seen == n; }), Cancelled)
            << "cancel on call " << n << " of " << calls;
        EXPECT_EQ(seen, n);  // stops polling once it has thrown
    }
    const Model plain = train_fn(cells, TrainOptions{}, recsys::CancelCheck{});
    EXPECT_EQ(plain.nbr_ids, full.nbr_ids);
    EXPECT_EQ(plain.nbr_sims, full.nbr_sims);
    // Empty input still polls once.
    int seen = 0;
    EXPECT_THROW(train_fn({}, TrainOptions{}, [&] { return ++seen == 1; }), Cancelled);
}

}  // namespace recsys_test
