// core_evaluate.cpp - offline evaluation with a time split.  PostgreSQL-free.
#include <algorithm>
#include <cmath>
#include <string>

#include "core.hpp"
#include "core_topk.hpp"

namespace recsys {

EvalResult evaluate(std::vector<Triplet> before, std::vector<Touch> after, const EvalOptions& opt,
                    const CancelCheck& cancel) {
    if (opt.k <= 0) throw InvalidInput("recsys: k must be > 0, got " + std::to_string(opt.k));
    if (opt.neighbors < 0)
        throw InvalidInput("recsys: neighbors must be >= 0 (0 keeps all), got " +
                           std::to_string(opt.neighbors));
    detail::poll_cancel(cancel);

    // Histories: cells before the cutoff by (user, item), duplicates summed
    // (train() validates the weights; it throws before any history is used).
    std::vector<Triplet> hist(before);
    std::stable_sort(hist.begin(), hist.end(), [](const Triplet& a, const Triplet& b) {
        return a.user != b.user ? a.user < b.user : a.item < b.item;
    });
    std::size_t out = 0;
    for (std::size_t k = 0; k < hist.size(); ++k) {
        if (out > 0 && hist[out - 1].user == hist[k].user && hist[out - 1].item == hist[k].item)
            hist[out - 1].weight += hist[k].weight;
        else
            hist[out++] = hist[k];
    }
    hist.resize(out);
    detail::poll_cancel(cancel);

    const Model model = train(std::move(before), TrainOptions{opt.neighbors, opt.progress}, cancel);

    // Distinct touches after the cutoff, by (user, item).
    std::sort(after.begin(), after.end(), [](const Touch& a, const Touch& b) {
        return a.user != b.user ? a.user < b.user : a.item < b.item;
    });
    after.erase(std::unique(after.begin(), after.end(),
                            [](const Touch& a, const Touch& b) {
                                return a.user == b.user && a.item == b.item;
                            }),
                after.end());
    detail::poll_cancel(cancel);

    EvalResult r;
    r.model_items = static_cast<int64_t>(model.item_ids.size());
    r.model_users = model.n_users;
    r.train_cells = model.n_cells;
    r.test_touches = static_cast<int64_t>(after.size());

    const int k = opt.k;
    const std::size_t kz = static_cast<std::size_t>(k);
    // Items recommended to an evaluated user, by model item index (every
    // recommended item, cf or popular, is a model item).
    std::vector<unsigned char> recommended(model.item_ids.size(), 0);
    std::size_t distinct = 0;
    std::vector<HistoryItem> history;
    std::vector<int32_t> relevant;     // sorted
    double sum_p = 0, sum_r = 0, sum_ndcg = 0, sum_hit = 0, sum_ap = 0;
    double sum_pop_p = 0, sum_pop_r = 0;
    int64_t evaluated = 0;

    auto is_relevant = [&relevant](int32_t item) {
        return std::binary_search(relevant.begin(), relevant.end(), item);
    };
    auto in_history = [&history](int32_t item) {
        auto it = std::lower_bound(history.begin(), history.end(), item,
                                   [](const HistoryItem& a, int32_t v) { return a.item < v; });
        return it != history.end() && it->item == item;
    };

    std::size_t hp = 0;  // cursor into hist
    std::size_t users_seen = 0;
    for (std::size_t ap = 0; ap < after.size();) {
        const int32_t user = after[ap].user;
        std::size_t ae = ap;
        while (ae < after.size() && after[ae].user == user) ++ae;
        if ((users_seen++ & 255) == 0) {
            detail::poll_cancel(cancel);
            if (opt.progress)
                opt.progress("scoring", static_cast<int64_t>(ap), static_cast<int64_t>(after.size()));
        }

        while (hp < hist.size() && hist[hp].user < user) ++hp;
        history.clear();
        for (std::size_t q = hp; q < hist.size() && hist[q].user == user; ++q)
            if (hist[q].weight > 0) history.push_back(HistoryItem{hist[q].item, hist[q].weight});
        relevant.clear();
        if (!history.empty())
            for (std::size_t q = ap; q < ae; ++q)
                if (!in_history(after[q].item)) relevant.push_back(after[q].item);
        ap = ae;
        if (history.empty() || relevant.empty()) continue;
        ++evaluated;

        // Model recommendations (cf, then popular fill).
        const std::vector<Recommendation> recs = recommend(model, history, k);
        int hits = 0;
        double dcg = 0, ap_sum = 0;
        for (std::size_t rank = 1; rank <= recs.size(); ++rank) {
            auto it = std::lower_bound(model.item_ids.begin(), model.item_ids.end(),
                                       recs[rank - 1].item);
            if (it != model.item_ids.end() && *it == recs[rank - 1].item) {
                unsigned char& seen = recommended[static_cast<std::size_t>(it - model.item_ids.begin())];
                distinct += seen == 0;
                seen = 1;
            }
            if (is_relevant(recs[rank - 1].item)) {
                ++hits;
                dcg += 1.0 / std::log2(static_cast<double>(rank) + 1.0);
                ap_sum += static_cast<double>(hits) / static_cast<double>(rank);
            }
        }
        const std::size_t ideal = std::min(kz, relevant.size());
        double idcg = 0;
        for (std::size_t rank = 1; rank <= ideal; ++rank)
            idcg += 1.0 / std::log2(static_cast<double>(rank) + 1.0);
        sum_p += static_cast<double>(hits) / k;
        sum_r += static_cast<double>(hits) / static_cast<double>(relevant.size());
        sum_ndcg += dcg / idcg;
        sum_hit += hits > 0 ? 1.0 : 0.0;
        sum_ap += ap_sum / static_cast<double>(ideal);

        // Popularity baseline: the k most popular model items not in history.
        int pop_hits = 0;
        std::size_t listed = 0;
        for (std::size_t q = 0; q < model.popular_ids.size() && listed < kz; ++q) {
            const int32_t item = model.popular_ids[q];
            if (in_history(item)) continue;
            ++listed;
            if (is_relevant(item)) ++pop_hits;
        }
        sum_pop_p += static_cast<double>(pop_hits) / k;
        sum_pop_r += static_cast<double>(pop_hits) / static_cast<double>(relevant.size());
    }
    if (opt.progress)
        opt.progress("scoring", static_cast<int64_t>(after.size()), static_cast<int64_t>(after.size()));

    r.users_evaluated = evaluated;
    if (evaluated > 0) {
        const double n = static_cast<double>(evaluated);
        r.precision = sum_p / n;
        r.recall = sum_r / n;
        r.ndcg = sum_ndcg / n;
        r.hit_rate = sum_hit / n;
        r.map = sum_ap / n;
        r.pop_precision = sum_pop_p / n;
        r.pop_recall = sum_pop_r / n;
    }
    if (!model.item_ids.empty())
        r.coverage = static_cast<double>(distinct) / static_cast<double>(model.item_ids.size());
    return r;
}

}  // namespace recsys
