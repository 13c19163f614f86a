// tune_test.cpp - recsys::Tuner (core_tune.hpp): every trial equals an
// independent evaluate() of the same setting, the budget, the choice.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core.hpp"
#include "core_tune.hpp"

using namespace recsys;

namespace {

// A random log: `users` users buying from 40 items, popular items likelier.
void random_split(std::vector<Triplet>& before, std::vector<Touch>& after, int users, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::geometric_distribution<int> item(0.08);
    for (int u = 1; u <= users; ++u) {
        const int n = 2 + static_cast<int>(rng() % 8);
        for (int k = 0; k < n; ++k)
            before.push_back(Triplet{u, 1 + item(rng) % 40, 1.0 + static_cast<double>(rng() % 3)});
        if (u % 2 == 0)
            for (int k = 0; k < 2; ++k) after.push_back(Touch{u, 1 + item(rng) % 40});
    }
    after.push_back(Touch{users + 1, 1});  // no history
}

EvalOptions eval_options(const TrainOptions& s, int k) {
    EvalOptions eo;
    eo.k = k;
    eo.neighbors = s.neighbors;
    eo.settings = s;
    return eo;
}

}  // namespace

TEST(Tune, EveryTrialIsTheIndependentEvaluation) {
    std::vector<Triplet> before;
    std::vector<Touch> after;
    random_split(before, after, 300, 7);
    const std::vector<TrainOptions> grid = default_tune_grid();
    TuneOptions opt;
    opt.k = 5;
    Tuner t(before, after, grid, opt);
    EXPECT_EQ(t.planned(), grid.size());
    while (t.more()) t.run_next();
    ASSERT_EQ(t.trials().size(), grid.size());
    for (std::size_t i = 0; i < grid.size(); ++i) {
        const EvalResult want = evaluate(before, after, eval_options(grid[i], 5));
        const EvalResult& got = t.trials()[i].result;
        EXPECT_EQ(got.users_evaluated, want.users_evaluated) << describe(grid[i]);
        EXPECT_EQ(got.users_without_history, 1);
        EXPECT_DOUBLE_EQ(got.ndcg, want.ndcg) << describe(grid[i]);
        EXPECT_DOUBLE_EQ(got.precision, want.precision);
        EXPECT_DOUBLE_EQ(got.ndcg_ci.lo, want.ndcg_ci.lo);
        EXPECT_DOUBLE_EQ(got.ndcg_ci.hi, want.ndcg_ci.hi);
    }
    // The choice is the highest nDCG, the earliest among equals.
    const long best = best_trial(t.trials());
    ASSERT_GE(best, 0);
    for (std::size_t i = 0; i < grid.size(); ++i) {
        if (static_cast<long>(i) < best) {
            EXPECT_LT(t.trials()[i].result.ndcg, t.trials()[best].result.ndcg);
        }
        EXPECT_LE(t.trials()[i].result.ndcg, t.trials()[best].result.ndcg);
    }
}

TEST(Tune, BestTrialTiesAndEmpty) {
    std::vector<TuneTrial> v(3);
    for (auto& t : v) t.result.users_evaluated = 1;
    v[0].result.ndcg = 0.5;
    v[1].result.ndcg = 0.7;
    v[2].result.ndcg = 0.7;
    EXPECT_EQ(best_trial(v), 1);
    v[1].result.users_evaluated = 0;  // evaluated nobody: never chosen
    EXPECT_EQ(best_trial(v), 2);
    EXPECT_EQ(best_trial({}), -1);
}

TEST(Tune, BudgetOfConfigurationsAndSeconds) {
    std::vector<Triplet> before;
    std::vector<Touch> after;
    random_split(before, after, 50, 3);
    TuneOptions opt;
    opt.max_configs = 3;
    Tuner a(before, after, default_tune_grid(), opt);
    while (a.more()) a.run_next();
    EXPECT_EQ(a.trials().size(), 3u);
    EXPECT_THROW(a.run_next(), InvalidInput);
    // A time budget shorter than any trial: the first one runs, then it stops.
    opt.max_configs = 0;
    opt.max_seconds = 1e-9;
    Tuner b(before, after, default_tune_grid(), opt);
    EXPECT_TRUE(b.more());
    b.run_next();
    EXPECT_FALSE(b.more());
    opt.max_seconds = -1;
    EXPECT_THROW(Tuner(before, after, default_tune_grid(), opt), InvalidInput);
}

TEST(Tune, BadCandidateIsNamedByPosition) {
    std::vector<TrainOptions> c(2);
    c[1].alpha = 0.5;  // cosine reads no alpha
    try {
        Tuner t({}, {}, c, TuneOptions{});
        FAIL() << "accepted a bad candidate";
    } catch (const InvalidInput& e) {
        EXPECT_NE(std::string(e.what()).find("candidate 2: alpha applies only to"), std::string::npos) << e.what();
    }
}

TEST(Tune, EmptyMatrixEvaluatesNobody) {
    Tuner t({}, {{1, 2}}, {TrainOptions{}}, TuneOptions{});
    const TuneTrial& r = t.run_next();
    EXPECT_EQ(r.result.users_evaluated, 0);
    EXPECT_EQ(r.result.users_without_history, 1);
    EXPECT_EQ(best_trial(t.trials()), -1);
}

TEST(Tune, SettingsJson) {
    EXPECT_EQ(settings_json(TrainOptions{}, true),
              "{\"weighting\": \"weights\", \"similarity\": \"cosine\", \"shrink\": 0, \"neighbors\": 50}");
    TrainOptions o;
    o.weighting = Weighting::bm25;
    o.similarity = Similarity::rp3beta;
    o.beta = 0.3;
    o.neighbors = 0;
    EXPECT_EQ(settings_json(o, false),
              "{\"weighting\": \"bm25\", \"similarity\": \"rp3beta\", \"alpha\": 1, \"beta\": 0.3, \"k1\": 1.2, "
              "\"b\": 0.75}");
    // The default grid: valid, the 1.0 defaults first, K at most 200.
    const std::vector<TrainOptions> g = default_tune_grid();
    ASSERT_FALSE(g.empty());
    EXPECT_TRUE(resolve_settings(g[0]).plain());
    EXPECT_EQ(g[0].neighbors, 50);
    for (const TrainOptions& s : g) {
        EXPECT_NO_THROW(resolve_settings(s));
        EXPECT_GT(s.neighbors, 0);
        EXPECT_LE(s.neighbors, 200);
    }
}
