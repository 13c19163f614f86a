// recommend_test.cpp - recsys::recommend() and neighbors_of().
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "core.hpp"
#include "test_util.hpp"

using namespace recsys;

namespace {

// The hand example of train_test.cpp (see the arithmetic there):
//   10: 20 (S), 30 (T)      S = 3/(sqrt5*sqrt3) = 0.7745966..., T = 0.4
//   20: 10 (S), 30 (S)
//   30: 20 (S), 10 (T)
//   40: -
//   popular: 20 (3 users), 40 (3), 10 (2), 30 (2)
std::vector<Triplet> hand_cells() {
    return {{1, 10, 1}, {1, 20, 1}, {2, 10, 2}, {2, 20, 1}, {2, 30, 1},
            {3, 20, 1}, {3, 30, 2}, {4, 40, 3}, {5, 40, 1}, {6, 40, 1}};
}
const double kS = 3.0 / (std::sqrt(5.0) * std::sqrt(3.0));
const double kT = 2.0 / (std::sqrt(5.0) * std::sqrt(5.0));

const Model& hand_model() {
    static const Model m = train(hand_cells(), TrainOptions{});
    return m;
}

struct R {
    int32_t item;
    double score;
    bool cf;
};

void expect_recs(const std::vector<Recommendation>& got, const std::vector<R>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t k = 0; k < want.size(); ++k) {
        EXPECT_EQ(got[k].item, want[k].item) << "rank " << k;
        EXPECT_DOUBLE_EQ(got[k].score, want[k].score) << "rank " << k;
        EXPECT_EQ(got[k].from_cf, want[k].cf) << "rank " << k;
    }
}

}  // namespace

TEST(Recommend, ScoresAndExcludesHistory) {
    // history {10: w 2}: score(20) = 2*S = 1.549..., score(30) = 2*T = 0.8;
    // 10 itself is never recommended.  top 2 -> cf only.
    expect_recs(recommend(hand_model(), {{10, 2}}, 2), {{20, 2 * kS, true}, {30, 2 * kT, true}});
    // history {10: 1, 30: 1}: score(20) = 1*S (from 10) + 1*S (from 30) = 2S;
    // 10 and 30 are history, even though they are each other's neighbours.
    // Fill: 20 listed, 40 (3 users) -> popular; 10, 30 history.
    expect_recs(recommend(hand_model(), {{10, 1}, {30, 1}}, 5),
                {{20, 2 * kS, true}, {40, 3, false}});
}

TEST(Recommend, TiesByItemId) {
    // history {20: 2}: score(10) = 2S, score(30) = 2S (exact tie) -> 10 first.
    expect_recs(recommend(hand_model(), {{20, 2}}, 2), {{10, 2 * kS, true}, {30, 2 * kS, true}});
    expect_recs(recommend(hand_model(), {{20, 2}}, 1), {{10, 2 * kS, true}});
}

TEST(Recommend, PopularityFillForUserWithoutHistory) {
    // No history: popular order 20 (3), 40 (3), 10 (2), 30 (2).
    expect_recs(recommend(hand_model(), {}, 3), {{20, 3, false}, {40, 3, false}, {10, 2, false}});
    // Only non-positive weights: not history at all, same result.
    expect_recs(recommend(hand_model(), {{10, 0}, {20, -1}}, 3),
                {{20, 3, false}, {40, 3, false}, {10, 2, false}});
    // More slots than items: every item once, nothing more.
    expect_recs(recommend(hand_model(), {}, 10),
                {{20, 3, false}, {40, 3, false}, {10, 2, false}, {30, 2, false}});
}

TEST(Recommend, TooFewCfCandidatesAreFilledSkippingListedAndHistory) {
    // history {10: 1}: cf 20 (S), 30 (T).  Fill from 20 (listed), 40 -> add,
    // 10 (history), 30 (listed).
    expect_recs(recommend(hand_model(), {{10, 1}}, 4),
                {{20, kS, true}, {30, kT, true}, {40, 3, false}});
    // history {20: 2, 40: 1}: cf 10 (2S), 30 (2S); 40 has no neighbours.
    // Fill: 20 history, 40 history, 10 and 30 listed -> only 2 results.
    expect_recs(recommend(hand_model(), {{20, 2}, {40, 1}}, 4),
                {{10, 2 * kS, true}, {30, 2 * kS, true}});
    // history {40: 1}: no cf at all; fill 20, 10, 30 (40 is history).
    expect_recs(recommend(hand_model(), {{40, 1}}, 4),
                {{20, 3, false}, {10, 2, false}, {30, 2, false}});
}

TEST(Recommend, NonPositiveTopN) {
    EXPECT_TRUE(recommend(hand_model(), {{10, 1}}, 0).empty());
    EXPECT_TRUE(recommend(hand_model(), {{10, 1}}, -3).empty());
    EXPECT_TRUE(recommend(hand_model(), {}, 0).empty());
}

TEST(Recommend, NeverMoreThanTopN) {
    for (int n = 1; n <= 6; ++n) {
        EXPECT_LE(recommend(hand_model(), {{10, 1}}, n).size(), static_cast<std::size_t>(n));
        EXPECT_LE(recommend(hand_model(), {}, n).size(), static_cast<std::size_t>(n));
    }
}

TEST(Recommend, HistoryDuplicatesSummedAndNonPositiveIgnored) {
    // {10: 0.5, 10: 1.5} = {10: 2}; {30: -1} and {30: 0} and NaN are not
    // history, so 30 can be recommended (score 2T) and is not excluded.
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const auto got =
        recommend(hand_model(), {{10, 0.5}, {30, -1}, {10, 1.5}, {30, 0}, {30, nan}}, 2);
    expect_recs(got, {{20, 2 * kS, true}, {30, 2 * kT, true}});
    // An unknown history item adds nothing but is still excluded from the fill.
    expect_recs(recommend(hand_model(), {{99, 1}, {40, 1}}, 2), {{20, 3, false}, {10, 2, false}});
}

TEST(Recommend, ExternalPopularListSkipsDuplicates) {
    // Lookup with no neighbours; a popular list that repeats an id.
    const NeighborLookup none = [](int32_t) { return NeighborList{}; };
    const auto got = recommend({{1, 1}}, none, {5, 1, 5, 7}, {9, 8, 9, 2}, 3);
    expect_recs(got, {{5, 9, false}, {7, 2, false}});
    // An empty lookup function means no cf.
    const auto got2 = recommend({{1, 1}}, NeighborLookup{}, {5, 7}, {9, 2}, 3);
    expect_recs(got2, {{5, 9, false}, {7, 2, false}});
    // Mismatched popular arrays are an error.
    EXPECT_THROW(recommend({}, none, {1, 2}, {3}, 3), InvalidInput);
}

TEST(Recommend, ViaLookupEqualsViaModel) {
    for (uint32_t seed = 1; seed <= 5; ++seed) {
        const auto cells = recsys_test::random_cells(seed, 50, 30, 300);
        const Model m = train(cells, TrainOptions{5});
        int lookups = 0;
        const NeighborLookup lookup = [&](int32_t item) {
            ++lookups;
            return neighbors_of(m, item);
        };
        for (std::size_t u = 0; u < 20; ++u) {
            std::vector<HistoryItem> h;
            for (std::size_t k = u; k < cells.size(); k += 37)
                h.push_back(HistoryItem{cells[k].item, cells[k].weight});
            for (int n : {1, 3, 10, 40}) {
                const auto a = recommend(m, h, n);
                const auto b = recommend(h, lookup, m.popular_ids, m.popular_users, n);
                ASSERT_EQ(a.size(), b.size());
                for (std::size_t k = 0; k < a.size(); ++k) {
                    EXPECT_EQ(a[k].item, b[k].item);
                    EXPECT_EQ(a[k].score, b[k].score);
                    EXPECT_EQ(a[k].from_cf, b[k].from_cf);
                }
            }
        }
        EXPECT_GT(lookups, 0);
    }
}

// Brute force: dense scores over every model item, full sort, then a naive
// popularity fill; on random data with exact-arithmetic weights (so the
// summation order cannot matter and ties are real).
TEST(Recommend, AgreesWithBruteForce) {
    for (uint32_t seed = 11; seed <= 16; ++seed) {
        const auto cells = recsys_test::random_cells(seed, 40, 25, 250);
        for (int k : {0, 2, 6}) {
            const Model m = train(cells, TrainOptions{k});
            for (std::size_t u = 0; u < 15; ++u) {
                std::vector<HistoryItem> h;
                for (std::size_t q = u * 3; q < cells.size(); q += 23)
                    h.push_back(HistoryItem{cells[q].item, cells[q].weight});
                std::map<int32_t, double> hw;  // summed history
                for (const auto& x : h) hw[x.item] += x.weight;
                std::map<int32_t, double> score;
                for (const auto& [item, w] : hw)
                    for (const auto& nb : recsys_test::model_nbrs(m, item))
                        score[nb.id] += w * nb.sim;
                std::vector<std::pair<double, int32_t>> ranked;
                for (const auto& [item, s] : score)
                    if (s > 0 && !hw.count(item)) ranked.push_back({-s, item});
                std::sort(ranked.begin(), ranked.end());
                for (int n : {1, 4, 8, 30}) {
                    std::vector<R> want;
                    for (std::size_t r = 0; r < ranked.size() && want.size() < std::size_t(n); ++r)
                        want.push_back(R{ranked[r].second, -ranked[r].first, true});
                    for (std::size_t p = 0; p < m.popular_ids.size() && want.size() < std::size_t(n);
                         ++p) {
                        const int32_t item = m.popular_ids[p];
                        bool listed = hw.count(item) > 0;
                        for (const R& x : want) listed = listed || x.item == item;
                        if (!listed) want.push_back(R{item, double(m.popular_users[p]), false});
                    }
                    expect_recs(recommend(m, h, n), want);
                }
            }
        }
    }
}

// Items the user has events on that sum to w <= 0 (a refund, a weight-0
// view) are excluded like the history, and allowed back with exclude_seen
// = false.  History {10: 1}: 20 (S), 30 (T) from the neighbours; the fill
// would bring 40 first.
TEST(Recommend, SeenItemsWithoutWeightAreExcludedToo) {
    const Model& m = hand_model();
    auto lookup = [&m](int32_t item) { return neighbors_of(m, item); };
    const std::vector<HistoryItem> h = {{10, 1.0}};
    expect_recs(recommend(h, lookup, m.popular_ids, m.popular_users, 3, true, {20, 40}),
                {{30, kT, true}});
    expect_recs(recommend(h, lookup, m.popular_ids, m.popular_users, 3, true, {}),
                {{20, kS, true}, {30, kT, true}, {40, 3, false}});
    expect_recs(recommend(h, lookup, m.popular_ids, m.popular_users, 4, false, {20, 40}),
                {{20, kS, true}, {30, kT, true}, {40, 3, false}, {10, 2, false}});
    EXPECT_THROW(recommend(h, lookup, m.popular_ids, m.popular_users, 3, true, {40, 20}), InvalidInput);
}

// Filters (issue #8): the top_n are chosen among the allowed items, for the
// collaborative part and the fill alike.
TEST(Recommend, FilterChoosesTopNAmongAllowed) {
    const NeighborLookup nb = [](int32_t item) { return neighbors_of(hand_model(), item); };
    const auto& m = hand_model();
    // history {10: 1}: cf 20 (S), 30 (T).  Unfiltered top 1 is 20; allowing
    // only 30 and 40 gives 30 from cf (not an empty list), then 40 as fill.
    const int32_t allow[] = {30, 40};
    ItemFilter f;
    f.allowed = allow;
    f.n_allowed = 2;
    expect_recs(recommend({{10, 1}}, nb, m.popular_ids, m.popular_users, 1, true, {}, f),
                {{30, kT, true}});
    expect_recs(recommend({{10, 1}}, nb, m.popular_ids, m.popular_users, 3, true, {}, f),
                {{30, kT, true}, {40, 3, false}});
    // Denying 20: cf 30, fill 40 (10 is history).
    const int32_t deny[] = {20};
    ItemFilter d;
    d.denied = deny;
    d.n_denied = 1;
    expect_recs(recommend({{10, 1}}, nb, m.popular_ids, m.popular_users, 3, true, {}, d),
                {{30, kT, true}, {40, 3, false}});
    // An empty allowed set allows nothing.
    ItemFilter none;
    none.allowed = allow;
    none.n_allowed = 0;
    EXPECT_TRUE(recommend({{10, 1}}, nb, m.popular_ids, m.popular_users, 3, true, {}, none).empty());
    // Allowed and denied together: allowed {30, 40} minus denied {30}.
    const int32_t deny30[] = {30};
    f.denied = deny30;
    f.n_denied = 1;
    expect_recs(recommend({}, nb, m.popular_ids, m.popular_users, 3, true, {}, f), {{40, 3, false}});
}

// The collaborative part under a filter equals the unfiltered ranking with
// the rejected items taken out, for allowed sets smaller than the candidates
// (looked up in the score table), larger (searched per candidate), with
// repeats and with a denied set besides.
TEST(Recommend, FilteredCfEqualsUnfilteredWithRejectedRemoved) {
    for (uint32_t seed = 21; seed <= 24; ++seed) {
        const auto cells = recsys_test::random_cells(seed, 40, 30, 300);
        const Model m = train(cells, TrainOptions{8});
        const NeighborLookup nb = [&m](int32_t item) { return neighbors_of(m, item); };
        for (std::size_t u = 0; u < 10; ++u) {
            std::vector<HistoryItem> h;
            for (std::size_t q = u * 5; q < cells.size(); q += 19)
                h.push_back(HistoryItem{cells[q].item, cells[q].weight});
            const auto all = recommend_cf(h, nb, 1000, true, {}, ItemFilter{});
            for (int32_t step : {1, 2, 3, 7}) {
                std::vector<int32_t> allow;
                for (int32_t i = (int32_t)u % 3; i < 30; i += step) {
                    allow.push_back(i);
                    if (i % 5 == 0) allow.push_back(i);  // a repeat
                }
                const std::vector<int32_t> deny = {(int32_t)(u % 7), 11};
                for (bool with_deny : {false, true}) {
                    ItemFilter f;
                    f.allowed = allow.data();
                    f.n_allowed = allow.size();
                    if (with_deny) {
                        f.denied = deny.data();
                        f.n_denied = deny.size();
                    }
                    for (int n : {1, 3, 10}) {
                        std::vector<R> want;
                        for (const auto& r : all)
                            if (want.size() < std::size_t(n) &&
                                std::binary_search(allow.begin(), allow.end(), r.item) &&
                                !(with_deny && std::binary_search(deny.begin(), deny.end(), r.item)))
                                want.push_back(R{r.item, r.score, true});
                        expect_recs(recommend_cf(h, nb, n, true, {}, f), want);
                    }
                }
            }
        }
    }
}

TEST(Recommend, FillInPartsEqualsFillAtOnce) {
    // The fill fed the popularity list in two parts gives what one call gives.
    const NeighborLookup nb = [](int32_t item) { return neighbors_of(hand_model(), item); };
    const auto& m = hand_model();
    auto out = recommend_cf({{10, 1}}, nb, 4, true, {}, ItemFilter{});
    const std::vector<int32_t> ids1(m.popular_ids.begin(), m.popular_ids.begin() + 1);
    const std::vector<int32_t> us1(m.popular_users.begin(), m.popular_users.begin() + 1);
    const std::vector<int32_t> ids2(m.popular_ids.begin() + 1, m.popular_ids.end());
    const std::vector<int32_t> us2(m.popular_users.begin() + 1, m.popular_users.end());
    fill_popular(out, {{10, 1}}, ids1, us1, 4, true, {}, ItemFilter{});
    fill_popular(out, {{10, 1}}, ids2, us2, 4, true, {}, ItemFilter{});
    expect_recs(out, {{20, kS, true}, {30, kT, true}, {40, 3, false}});
}

TEST(Recommend, ExplainSumsToTheScore) {
    const NeighborLookup nb = [](int32_t item) { return neighbors_of(hand_model(), item); };
    // history {10: 1, 30: 2}: score(20) = 1*S (from 10) + 2*S (from 30).
    const auto c = explain({{30, 2}, {10, 1}}, nb, 20);
    ASSERT_EQ(c.size(), 2u);
    EXPECT_EQ(c[0].history_item, 10);
    EXPECT_DOUBLE_EQ(c[0].weight, 1);
    EXPECT_DOUBLE_EQ(c[0].similarity, kS);
    EXPECT_EQ(c[1].history_item, 30);
    EXPECT_DOUBLE_EQ(c[1].contribution, 2 * kS);
    const auto recs = recommend(hand_model(), {{30, 2}, {10, 1}}, 1);
    ASSERT_EQ(recs.size(), 1u);
    EXPECT_EQ(recs[0].item, 20);
    EXPECT_EQ(c[0].contribution + c[1].contribution, recs[0].score);  // exactly: same order
    // An item no history item neighbours: nothing.
    EXPECT_TRUE(explain({{10, 1}}, nb, 40).empty());
    // Non-positive weights are not history.
    EXPECT_TRUE(explain({{10, 0}, {30, -1}}, nb, 20).empty());
}
