// evaluate_test.cpp - recsys::evaluate(): hand example, edge cases, and a
// brute-force re-implementation on random data.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "core.hpp"
#include "test_util.hpp"

using namespace recsys;

namespace {

// `before` is the hand example of train_test.cpp:
//   10: 20 (S), 30 (T);  20: 10 (S), 30 (S);  30: 20 (S), 10 (T);  40: -
//   popular: 20 (3 users), 40 (3), 10 (2), 30 (2)
//   histories: u1 {10:1, 20:1}, u2 {10:2, 20:1, 30:1}, u3 {20:1, 30:2},
//              u4 {40:3}, u5 {40:1}, u6 {40:1}
std::vector<Triplet> hand_before() {
    return {{1, 10, 1}, {1, 20, 1}, {2, 10, 2}, {2, 20, 1}, {2, 30, 1},
            {3, 20, 1}, {3, 30, 2}, {4, 40, 3}, {5, 40, 1}, {6, 40, 1}};
}

// `after`: distinct pairs (1,30) (1,10) (2,50) (3,10) (3,50) (4,40) (9,10) -> 7.
//   u1: relevant {30}      (10 is history)
//   u2: relevant {50}      (50 is not even a model item)
//   u3: relevant {10, 50}
//   u4: relevant {}        (40 is history)        -> not evaluated
//   u9: no cell before                             -> not evaluated
std::vector<Touch> hand_after() {
    return {{1, 30}, {1, 30}, {1, 10}, {2, 50}, {3, 10}, {3, 50}, {4, 40}, {9, 10}, {3, 10}};
}

}  // namespace

TEST(Evaluate, HandExampleK2) {
    // k = 2.
    // u1: cf: 30 = T (via 10) + S (via 20); 20, 10 history -> [30];
    //     fill: 20 hist, 40 -> recs [30, 40].  Relevant {30}: hit at rank 1.
    //     P = 1/2, R = 1/1, DCG = 1/log2(2) = 1, IDCG (min(2,1) = 1 term) = 1,
    //     nDCG = 1, hit = 1, AP = (1/1) / min(2,1) = 1.
    //     pop: popular minus history = [40, 30] -> 30 hits: pP = 1/2, pR = 1.
    // u2: cf: nothing outside history; fill: 40 -> recs [40] (one item).
    //     Relevant {50}: 0 hits -> P = 0/2 (divide by k), R = 0, nDCG = 0,
    //     hit = 0, AP = 0.  pop: [40] -> 0, 0.
    // u3: cf: 10 = S (via 20) + 2T (via 30) -> [10]; fill: 20 hist, 40 ->
    //     recs [10, 40].  Relevant {10, 50}: hit at rank 1.
    //     P = 1/2, R = 1/2, DCG = 1, IDCG = 1 + 1/log2(3), nDCG = 1/(1 + 1/log2 3),
    //     hit = 1, AP = (1/1) / min(2,2) = 1/2.
    //     pop: [40, 10] -> 10 hits: pP = 1/2, pR = 1/2.
    // Averages over 3 users:
    //   precision (1/2 + 0 + 1/2)/3 = 1/3       recall (1 + 0 + 1/2)/3 = 1/2
    //   ndcg (1 + 0 + 1/(1+1/log2 3))/3         hit_rate 2/3
    //   map (1 + 0 + 1/2)/3 = 1/2
    //   coverage: {30, 40, 10} of 4 model items = 3/4
    //   pop_precision (1/2 + 0 + 1/2)/3 = 1/3   pop_recall (1 + 0 + 1/2)/3 = 1/2
    const EvalResult r = evaluate(hand_before(), hand_after(), EvalOptions{2, 50});
    const double L = 1.0 / std::log2(3.0);  // 0.6309...
    EXPECT_EQ(r.users_evaluated, 3);
    EXPECT_DOUBLE_EQ(r.precision, 1.0 / 3);
    EXPECT_DOUBLE_EQ(r.recall, 0.5);
    EXPECT_DOUBLE_EQ(r.ndcg, (1.0 + 1.0 / (1.0 + L)) / 3);
    EXPECT_NEAR(r.ndcg, 0.5377, 1e-4);
    EXPECT_DOUBLE_EQ(r.hit_rate, 2.0 / 3);
    EXPECT_DOUBLE_EQ(r.map, 0.5);
    EXPECT_DOUBLE_EQ(r.coverage, 0.75);
    EXPECT_DOUBLE_EQ(r.pop_precision, 1.0 / 3);
    EXPECT_DOUBLE_EQ(r.pop_recall, 0.5);
    EXPECT_EQ(r.model_items, 4);
    EXPECT_EQ(r.model_users, 6);
    EXPECT_EQ(r.train_cells, 10);
    EXPECT_EQ(r.test_touches, 7);
}

TEST(Evaluate, HandExampleK1) {
    // k = 1.  Recs: u1 [30] (hit), u2 [40] (miss), u3 [10] (hit).
    //   Pop:  u1 [40] (miss), u2 [40] (miss), u3 [40] (miss).
    // u1: P 1, R 1, nDCG 1/1, hit 1, AP 1/min(1,1) = 1.
    // u2: all 0.
    // u3: P 1, R 1/2, DCG 1, IDCG (min(1,2) = 1 term) 1 -> nDCG 1, hit 1,
    //     AP = 1/min(1,2) = 1.
    // precision 2/3, recall (1 + 0 + 1/2)/3 = 1/2, ndcg 2/3, hit 2/3, map 2/3,
    // coverage {30, 40, 10} = 3/4, pop 0 / 0.
    const EvalResult r = evaluate(hand_before(), hand_after(), EvalOptions{1, 50});
    EXPECT_EQ(r.users_evaluated, 3);
    EXPECT_DOUBLE_EQ(r.precision, 2.0 / 3);
    EXPECT_DOUBLE_EQ(r.recall, 0.5);
    EXPECT_DOUBLE_EQ(r.ndcg, 2.0 / 3);
    EXPECT_DOUBLE_EQ(r.hit_rate, 2.0 / 3);
    EXPECT_DOUBLE_EQ(r.map, 2.0 / 3);
    EXPECT_DOUBLE_EQ(r.coverage, 0.75);
    EXPECT_DOUBLE_EQ(r.pop_precision, 0.0);
    EXPECT_DOUBLE_EQ(r.pop_recall, 0.0);
}

TEST(Evaluate, HandExampleNeighborsOption) {
    // neighbors = 1: 10 -> [20], 20 -> [10], 30 -> [20]  (see train_test).
    // k = 2.  u1 {10,20}: cf nothing (20, 10 are history) -> fill [40, 30];
    //   relevant {30}: hit at rank 2: P 1/2, R 1, DCG 1/log2 3, IDCG 1,
    //   AP = (1/2)/1 = 1/2.
    // u2: [40] -> 0.   u3 {20, 30}: cf 10 = S (via 20) -> [10, 40]: as k=2 above:
    //   P 1/2, R 1/2, nDCG 1/(1+L), AP 1/2.
    const EvalResult r = evaluate(hand_before(), hand_after(), EvalOptions{2, 1});
    const double L = 1.0 / std::log2(3.0);
    EXPECT_EQ(r.users_evaluated, 3);
    EXPECT_DOUBLE_EQ(r.precision, 1.0 / 3);
    EXPECT_DOUBLE_EQ(r.recall, 0.5);
    EXPECT_DOUBLE_EQ(r.ndcg, (L + 1.0 / (1.0 + L)) / 3);
    EXPECT_DOUBLE_EQ(r.map, (0.5 + 0.5) / 3);
    EXPECT_DOUBLE_EQ(r.coverage, 0.75);  // {40, 30, 10}
}

TEST(Evaluate, NoEvaluableUsers) {
    // Touches only by unknown users or of history items.
    const EvalResult r = evaluate(hand_before(), {{9, 10}, {4, 40}, {1, 10}}, EvalOptions{});
    EXPECT_EQ(r.users_evaluated, 0);
    EXPECT_EQ(r.precision, 0);
    EXPECT_EQ(r.recall, 0);
    EXPECT_EQ(r.ndcg, 0);
    EXPECT_EQ(r.hit_rate, 0);
    EXPECT_EQ(r.map, 0);
    EXPECT_EQ(r.coverage, 0);
    EXPECT_EQ(r.pop_precision, 0);
    EXPECT_EQ(r.pop_recall, 0);
    EXPECT_EQ(r.model_items, 4);
    EXPECT_EQ(r.model_users, 6);
    EXPECT_EQ(r.train_cells, 10);
    EXPECT_EQ(r.test_touches, 3);
    // Both sides empty.
    const EvalResult e = evaluate({}, {}, EvalOptions{});
    EXPECT_EQ(e.users_evaluated, 0);
    EXPECT_EQ(e.model_items, 0);
    EXPECT_EQ(e.coverage, 0);
    EXPECT_EQ(e.test_touches, 0);
    // Empty before, touches after: nobody has history.
    const EvalResult f = evaluate({}, {{1, 2}, {1, 2}, {3, 4}}, EvalOptions{});
    EXPECT_EQ(f.users_evaluated, 0);
    EXPECT_EQ(f.test_touches, 2);
}

TEST(Evaluate, InvalidOptionsAndInput) {
    EXPECT_THROW(evaluate(hand_before(), hand_after(), EvalOptions{0, 50}), InvalidInput);
    EXPECT_THROW(evaluate(hand_before(), hand_after(), EvalOptions{-1, 50}), InvalidInput);
    EXPECT_THROW(evaluate(hand_before(), hand_after(), EvalOptions{10, -1}), InvalidInput);
    auto bad = hand_before();
    bad.push_back(Triplet{1, 30, -1});
    EXPECT_THROW(evaluate(bad, hand_after(), EvalOptions{}), InvalidInput);
}

TEST(Evaluate, CancelThrowsOnNthCall) {
    const auto before = recsys_test::random_cells(5, 300, 600, 3000);
    std::vector<Touch> after;
    for (std::size_t k = 0; k < before.size(); k += 3)
        after.push_back(Touch{before[(k * 7) % before.size()].user, before[k].item});
    int calls = 0;
    const EvalResult full = evaluate(before, after, EvalOptions{}, [&] {
        ++calls;
        return false;
    });
    ASSERT_GE(calls, 5);
    EXPECT_GT(full.users_evaluated, 0);
    for (int n = 1; n <= calls; ++n) {
        int seen = 0;
        EXPECT_THROW(evaluate(before, after, EvalOptions{}, [&] { return ++seen == n; }),
                     Cancelled)
            << "cancel on call " << n << " of " << calls;
    }
}

// Brute force: a literal re-implementation of the metric definitions, using
// recommend() (tested separately) for the lists.
TEST(Evaluate, AgreesWithBruteForce) {
    for (uint32_t seed = 21; seed <= 26; ++seed) {
        const auto before = recsys_test::random_cells(seed, 60, 40, 300);
        const auto later = recsys_test::random_cells(seed + 100, 60, 40, 200);
        std::vector<Touch> after;
        for (const auto& t : later) after.push_back(Touch{t.user, t.item});
        for (const auto& t : before)  // some repeat touches of history items
            if (t.user % 3 == 0) after.push_back(Touch{t.user, t.item});
        for (int k : {1, 3, 10}) {
            for (int nb : {0, 2, 50}) {
                const EvalResult r = evaluate(before, after, EvalOptions{k, nb});
                const Model m = train(before, TrainOptions{nb});
                std::map<int32_t, std::map<int32_t, double>> hist;
                for (const auto& t : before) hist[t.user][t.item] += t.weight;
                std::map<int32_t, std::set<int32_t>> touched;
                for (const auto& t : after) touched[t.user].insert(t.item);
                std::size_t touches = 0;
                for (const auto& [u, s] : touched) touches += s.size();
                double P = 0, Rc = 0, N = 0, H = 0, AP = 0, PP = 0, PR = 0;
                std::set<int32_t> rec_items;
                int64_t users = 0;
                for (const auto& [u, items] : touched) {
                    if (!hist.count(u)) continue;
                    std::set<int32_t> rel;
                    for (int32_t i : items)
                        if (!hist[u].count(i)) rel.insert(i);
                    if (rel.empty()) continue;
                    ++users;
                    std::vector<HistoryItem> h;
                    for (const auto& [i, w] : hist[u]) h.push_back(HistoryItem{i, w});
                    const auto recs = recommend(m, h, k);
                    double hits = 0, dcg = 0, ap = 0, idcg = 0;
                    for (std::size_t r = 0; r < recs.size(); ++r) {
                        rec_items.insert(recs[r].item);
                        if (rel.count(recs[r].item)) {
                            hits += 1;
                            dcg += 1 / std::log2(r + 2.0);
                            ap += hits / (r + 1.0);
                        }
                    }
                    const double ideal = std::min<double>(k, rel.size());
                    for (int r = 1; r <= ideal; ++r) idcg += 1 / std::log2(r + 1.0);
                    P += hits / k;
                    Rc += hits / rel.size();
                    N += dcg / idcg;
                    H += hits > 0;
                    AP += ap / ideal;
                    double ph = 0;
                    int listed = 0;
                    for (int32_t i : m.popular_ids) {
                        if (listed == k) break;
                        if (hist[u].count(i)) continue;
                        ++listed;
                        ph += rel.count(i);
                    }
                    PP += ph / k;
                    PR += ph / rel.size();
                }
                ASSERT_EQ(r.users_evaluated, users);
                ASSERT_GT(users, 0);
                EXPECT_NEAR(r.precision, P / users, 1e-12);
                EXPECT_NEAR(r.recall, Rc / users, 1e-12);
                EXPECT_NEAR(r.ndcg, N / users, 1e-12);
                EXPECT_NEAR(r.hit_rate, H / users, 1e-12);
                EXPECT_NEAR(r.map, AP / users, 1e-12);
                EXPECT_NEAR(r.pop_precision, PP / users, 1e-12);
                EXPECT_NEAR(r.pop_recall, PR / users, 1e-12);
                EXPECT_NEAR(r.coverage, double(rec_items.size()) / m.item_ids.size(), 1e-12);
                EXPECT_EQ(r.test_touches, static_cast<int64_t>(touches));
                EXPECT_EQ(r.train_cells, m.n_cells);
                EXPECT_EQ(r.model_users, m.n_users);
                EXPECT_EQ(r.model_items, static_cast<int64_t>(m.item_ids.size()));
            }
        }
    }
}
