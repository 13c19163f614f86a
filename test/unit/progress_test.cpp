// progress_test.cpp - the core's optional Progress callback: called only on
// the calling thread, counts never go backwards or past the total, the total
// is the number of items (training) or test touches (evaluation's scoring),
// and a finished stage reports done == total.
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "core.hpp"
#include "test_util.hpp"

using namespace recsys;

namespace {

struct Call {
    std::string stage;
    int64_t done, total;
    std::thread::id thread;
};

Progress recorder(std::vector<Call>* calls) {
    return [calls](const char* stage, int64_t done, int64_t total) {
        calls->push_back(Call{stage, done, total, std::this_thread::get_id()});
    };
}

// Checks the calls of one stage: same total, non-decreasing, within
// [0, total], ending at total, all on this thread.
void check_stage(const std::vector<Call>& calls, const std::string& stage, int64_t total) {
    int64_t last = -1;
    int n = 0;
    for (const Call& c : calls) {
        if (c.stage != stage) continue;
        ++n;
        EXPECT_EQ(c.thread, std::this_thread::get_id());
        EXPECT_EQ(c.total, total);
        EXPECT_GE(c.done, last);
        EXPECT_GE(c.done, 0);
        EXPECT_LE(c.done, total);
        last = c.done;
    }
    ASSERT_GT(n, 0) << "no call for stage " << stage;
    EXPECT_EQ(last, total);
}

}  // namespace

// Trains with a recording callback (native or Eigen) and checks its calls.
static void check_train(bool eigen, const std::vector<Triplet>& cells, int neighbors) {
    std::vector<Call> calls;
    TrainOptions opt;
    opt.neighbors = neighbors;
    opt.progress = recorder(&calls);
    const Model m = eigen ? train_eigen(cells, opt) : train(cells, opt);
    check_stage(calls, "similarities", static_cast<int64_t>(m.item_ids.size()));
    // The callback does not change the model.
    const Model plain = eigen ? train_eigen(cells, TrainOptions{neighbors}) : train(cells, TrainOptions{neighbors});
    EXPECT_EQ(m.nbr_ids, plain.nbr_ids);
    EXPECT_EQ(m.nbr_sims, plain.nbr_sims);
}

TEST(Progress, TrainReportsEveryItemDone) {
    // Enough work for the worker thread and many polls.
    check_train(false, recsys_test::random_cells(7, 3000, 2000, 200000), 10);
}

TEST(Progress, TrainEigenReportsEveryItemDone) {
    check_train(true, recsys_test::random_cells(8, 500, 700, 20000), 5);
}

TEST(Progress, EvaluateReportsTrainingThenScoring) {
    // Hand data: 3 distinct test touches after the duplicates go.
    std::vector<Triplet> before = {{1, 10, 1}, {1, 20, 1}, {2, 10, 2}, {2, 30, 1}, {3, 20, 1}};
    std::vector<Touch> after = {{1, 30}, {2, 20}, {2, 20}, {3, 10}};
    std::vector<Call> calls;
    EvalOptions opt;
    opt.k = 2;
    opt.neighbors = 5;
    opt.progress = recorder(&calls);
    evaluate(before, after, opt);
    check_stage(calls, "similarities", 3);  // items 10, 20, 30
    check_stage(calls, "scoring", 3);
    // Training's calls all come before scoring's.
    bool scoring = false;
    for (const Call& c : calls) {
        if (c.stage == "scoring") scoring = true;
        else EXPECT_FALSE(scoring) << "a training call after scoring began";
    }
}
