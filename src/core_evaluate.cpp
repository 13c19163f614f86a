// core_evaluate.cpp - offline evaluation with a time split.  PostgreSQL-free.
#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include "core.hpp"
#include "core_topk.hpp"

namespace recsys {

namespace {
constexpr std::size_t kPollDraws = std::size_t(1) << 16;  // bootstrap draws between cancel polls
constexpr std::size_t kMaxColumns = 8;                    // bootstrap metrics at once
}  // namespace

std::vector<Interval> detail::percentile_bootstrap(const std::vector<std::vector<double>>& metrics,
                                                   int resamples, uint64_t seed, double q_lo,
                                                   double q_hi, const CancelCheck& cancel) {
    std::vector<Interval> out(metrics.size());
    const std::size_t n = metrics.empty() ? 0 : metrics[0].size();
    if (n == 0 || resamples <= 0) return out;
    if (metrics.size() > kMaxColumns) throw InvalidInput("recsys: too many bootstrap columns");
    for (const std::vector<double>& col : metrics)
        if (col.size() != n) throw InvalidInput("recsys: bootstrap columns differ in length");
    const std::size_t B = static_cast<std::size_t>(resamples), k = metrics.size();
    // Unbiased index in [0, n) by Lemire's multiply-shift: idx = floor(x n / 2^64),
    // rejecting x when (x n mod 2^64) < (2^64 mod n); no division per draw.
    const uint64_t un = static_cast<uint64_t>(n);
    const uint64_t reject_below = (0 - un) % un;  // 2^64 mod n
    // Row-major copy: one cache line per drawn unit.
    std::vector<double> vals(n * k);
    for (std::size_t c = 0; c < k; ++c)
        for (std::size_t u = 0; u < n; ++u) vals[u * k + c] = metrics[c][u];
    std::mt19937_64 rng(seed);
    std::vector<std::vector<double>> means(k, std::vector<double>(B));
    double sum[kMaxColumns];
    std::size_t draws = kPollDraws;
    for (std::size_t r = 0; r < B; ++r) {
        if (draws >= kPollDraws) {
            poll_cancel(cancel);
            draws = 0;
        }
        draws += n;
        std::fill(sum, sum + k, 0.0);
        for (std::size_t d = 0; d < n; ++d) {
            unsigned __int128 m = static_cast<unsigned __int128>(rng()) * un;
            while (static_cast<uint64_t>(m) < reject_below)
                m = static_cast<unsigned __int128>(rng()) * un;
            const double* row = &vals[static_cast<std::size_t>(m >> 64) * k];
            for (std::size_t c = 0; c < k; ++c) sum[c] += row[c];
        }
        for (std::size_t c = 0; c < k; ++c) means[c][r] = sum[c] / static_cast<double>(n);
    }
    auto quantile = [B](const std::vector<double>& v, double q) {
        const double h = q * static_cast<double>(B - 1);
        const std::size_t lo = static_cast<std::size_t>(std::floor(h));
        const std::size_t hi = std::min(lo + 1, B - 1);
        return v[lo] + (h - static_cast<double>(lo)) * (v[hi] - v[lo]);
    };
    for (std::size_t c = 0; c < k; ++c) {
        std::sort(means[c].begin(), means[c].end());
        out[c].lo = quantile(means[c], q_lo);
        out[c].hi = quantile(means[c], q_hi);
    }
    return out;
}

namespace {
void check_eval_options(const EvalOptions& opt) {
    if (opt.k <= 0) throw InvalidInput("recsys: k must be > 0, got " + std::to_string(opt.k));
    if (opt.bootstrap_resamples < 0 || opt.bootstrap_resamples > 100000)
        throw InvalidInput("recsys: bootstrap resamples must be between 0 and 100000, got " +
                           std::to_string(opt.bootstrap_resamples));
}
}  // namespace

EvalResult evaluate(std::vector<Triplet> before, std::vector<Touch> after, const EvalOptions& opt,
                    const CancelCheck& cancel) {
    check_eval_options(opt);
    TrainOptions topt = opt.settings;
    topt.neighbors = opt.neighbors;
    topt.progress = opt.progress;
    resolve_settings(topt);  // validates before any work
    detail::poll_cancel(cancel);
    // train() validates the weights: it throws before any history is used.
    std::vector<Triplet> history(before);
    const Model model = train(std::move(before), topt, cancel);
    return evaluate_model(model, std::move(history), std::move(after), opt, cancel);
}

EvalResult evaluate_model(const Model& model, std::vector<Triplet> hist, std::vector<Touch> after,
                          const EvalOptions& opt, const CancelCheck& cancel) {
    check_eval_options(opt);
    detail::poll_cancel(cancel);
    // Histories: cells before the cutoff by (user, item), duplicates summed
    // in input order.
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
    int64_t evaluated = 0, no_history = 0;
    const bool repeats = opt.count_repeats;
    // Per evaluated user, for the bootstrap: precision, recall, nDCG.
    std::vector<std::vector<double>> per_user(opt.bootstrap_resamples > 0 ? 3 : 0);

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
        if (history.empty()) ++no_history;
        else
            for (std::size_t q = ap; q < ae; ++q)
                if (repeats || !in_history(after[q].item)) relevant.push_back(after[q].item);
        ap = ae;
        if (history.empty() || relevant.empty()) continue;
        ++evaluated;

        // Model recommendations (cf, then popular fill).
        const std::vector<Recommendation> recs = recommend(model, history, k, !repeats);
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
        const double p = static_cast<double>(hits) / k;
        const double rc = static_cast<double>(hits) / static_cast<double>(relevant.size());
        sum_p += p;
        sum_r += rc;
        sum_ndcg += dcg / idcg;
        if (!per_user.empty()) {
            per_user[0].push_back(p);
            per_user[1].push_back(rc);
            per_user[2].push_back(dcg / idcg);
        }
        sum_hit += hits > 0 ? 1.0 : 0.0;
        sum_ap += ap_sum / static_cast<double>(ideal);

        // Popularity baseline: the k most popular model items not in history
        // (with count_repeats: the k most popular model items).
        int pop_hits = 0;
        std::size_t listed = 0;
        for (std::size_t q = 0; q < model.popular_ids.size() && listed < kz; ++q) {
            const int32_t item = model.popular_ids[q];
            if (!repeats && in_history(item)) continue;
            ++listed;
            if (is_relevant(item)) ++pop_hits;
        }
        sum_pop_p += static_cast<double>(pop_hits) / k;
        sum_pop_r += static_cast<double>(pop_hits) / static_cast<double>(relevant.size());
    }
    if (opt.progress)
        opt.progress("scoring", static_cast<int64_t>(after.size()), static_cast<int64_t>(after.size()));

    r.users_evaluated = evaluated;
    r.users_without_history = no_history;
    if (!per_user.empty()) {
        const std::vector<Interval> ci = detail::percentile_bootstrap(
            per_user, opt.bootstrap_resamples, opt.bootstrap_seed, 0.025, 0.975, cancel);
        r.precision_ci = ci[0];
        r.recall_ci = ci[1];
        r.ndcg_ci = ci[2];
    }
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
