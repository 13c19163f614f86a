// topk_test.cpp - the internal ranking helpers (src/core_topk.hpp): the
// streaming TopK used by train() and select_top_k used by recommend() must
// both equal "full sort by (score desc, id asc), keep k".
#include <gtest/gtest.h>

#include <random>

#include "core_topk.hpp"

using recsys::detail::Scored;

namespace {

std::vector<Scored> reference(std::vector<Scored> v, std::size_t k) {
    std::sort(v.begin(), v.end(), [](const Scored& a, const Scored& b) {
        return a.score != b.score ? a.score > b.score : a.id < b.id;
    });
    if (k != 0 && v.size() > k) v.resize(k);
    return v;
}

void expect_same(const std::vector<Scored>& got, const std::vector<Scored>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t r = 0; r < want.size(); ++r) {
        EXPECT_EQ(got[r].id, want[r].id) << "rank " << r;
        EXPECT_EQ(got[r].score, want[r].score) << "rank " << r;
    }
}

}  // namespace

TEST(TopK, HandExampleWithTies) {
    // scores: id 7 -> 0.5, id 3 -> 0.9, id 9 -> 0.5, id 1 -> 0.5, id 4 -> 0.1
    // ranked: 3 (0.9), 1 (0.5), 7 (0.5), 9 (0.5), 4 (0.1)
    const std::vector<Scored> in = {{0.5, 7}, {0.9, 3}, {0.5, 9}, {0.5, 1}, {0.1, 4}};
    for (std::size_t k : {0, 1, 2, 3, 4, 5, 9}) {
        recsys::detail::TopK top(k);
        for (const Scored& s : in) top.offer(s);
        const auto want = reference(in, k);
        expect_same(top.sorted(), want);
        auto v = in;
        recsys::detail::select_top_k(v, k);
        expect_same(v, want);
    }
    recsys::detail::TopK top2(2);
    for (const Scored& s : in) top2.offer(s);
    const auto& two = top2.sorted();
    ASSERT_EQ(two.size(), 2u);
    EXPECT_EQ(two[0].id, 3);
    EXPECT_EQ(two[1].id, 1);
}

TEST(TopK, RandomAgainstFullSort) {
    std::mt19937 rng(99);
    for (int round = 0; round < 300; ++round) {
        const std::size_t n = rng() % 200;
        std::vector<Scored> in;
        std::vector<int32_t> ids(n);
        for (std::size_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>(i * 3) - 100;
        std::shuffle(ids.begin(), ids.end(), rng);
        for (std::size_t i = 0; i < n; ++i)  // few distinct scores: many ties
            in.push_back(Scored{0.25 * static_cast<double>(1 + rng() % 6), ids[i]});
        for (std::size_t k : {std::size_t(0), std::size_t(1), std::size_t(2), std::size_t(7),
                              std::size_t(50), n}) {
            recsys::detail::TopK top(k);
            top.reserve(n);
            for (const Scored& s : in) top.offer(s);
            const auto want = reference(in, k);
            expect_same(top.sorted(), want);
            auto v = in;
            recsys::detail::select_top_k(v, k);
            expect_same(v, want);
        }
    }
}

// full() and worst_score(): full once k candidates are held (never with
// k = 0), and then the k-th best score so far; an offer below it changes
// nothing (what the evaluation's scorer relies on to skip offers).
TEST(TopK, FullAndWorstScore) {
    recsys::detail::TopK all(0);
    all.offer(Scored{1.0, 1});
    EXPECT_FALSE(all.full());
    recsys::detail::TopK top(3);
    const Scored offers[] = {{0.5, 1}, {2.0, 2}, {1.0, 3}, {0.7, 4}, {3.0, 5}, {0.9, 6}, {1.0, 0}};
    const double worst[] = {0, 0, 0.5, 0.7, 1.0, 1.0, 1.0};
    for (std::size_t q = 0; q < 7; ++q) {
        top.offer(offers[q]);
        EXPECT_EQ(top.full(), q >= 2) << q;
        if (q >= 2) {
            EXPECT_EQ(top.worst_score(), worst[q]) << q;
        }
    }
    const std::vector<Scored>& got = top.sorted();  // 3.0/5, 2.0/2, 1.0/0 (id 0 beats id 3)
    ASSERT_EQ(got.size(), 3u);
    EXPECT_EQ(got[0].id, 5);
    EXPECT_EQ(got[1].id, 2);
    EXPECT_EQ(got[2].id, 0);
}
