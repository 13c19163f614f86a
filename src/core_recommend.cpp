// core_recommend.cpp - scoring one user's history against stored neighbours.
// PostgreSQL-free.
#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "core.hpp"
#include "core_topk.hpp"

namespace recsys {

namespace {

using detail::Scored;

// The user's history: entries with weight > 0 (NaN and <= 0 are not
// history), duplicates summed in input order, sorted by item.
std::vector<HistoryItem> normalize_history(const std::vector<HistoryItem>& history) {
    std::vector<HistoryItem> h;
    h.reserve(history.size());
    for (const HistoryItem& x : history)
        if (x.weight > 0) h.push_back(x);
    std::stable_sort(h.begin(), h.end(),
                     [](const HistoryItem& a, const HistoryItem& b) { return a.item < b.item; });
    std::size_t out = 0;
    for (std::size_t k = 0; k < h.size(); ++k) {
        if (out > 0 && h[out - 1].item == h[k].item)
            h[out - 1].weight += h[k].weight;
        else
            h[out++] = h[k];
    }
    h.resize(out);
    return h;
}

bool in_history(const std::vector<HistoryItem>& h, int32_t item) {
    auto it = std::lower_bound(h.begin(), h.end(), item,
                               [](const HistoryItem& a, int32_t v) { return a.item < v; });
    return it != h.end() && it->item == item;
}

struct Contribution {
    int32_t item;
    double score;
};

}  // namespace

std::vector<Recommendation> recommend(const std::vector<HistoryItem>& history,
                                      const NeighborLookup& neighbors,
                                      const std::vector<int32_t>& popular_ids,
                                      const std::vector<int32_t>& popular_users, int top_n) {
    std::vector<Recommendation> out;
    if (top_n <= 0) return out;
    if (popular_ids.size() != popular_users.size())
        throw InvalidInput("recsys: popular_ids and popular_users differ in length (" +
                           std::to_string(popular_ids.size()) + " vs " +
                           std::to_string(popular_users.size()) + ")");
    const std::size_t n = static_cast<std::size_t>(top_n);
    const std::vector<HistoryItem> h = normalize_history(history);

    // Collaborative scores: every (neighbour, w * sim) contribution, then
    // summed per neighbour.  Summation order is history item ascending, then
    // neighbour list order, so results do not depend on the input order.
    std::vector<Contribution> contrib;
    if (neighbors) {
        for (const HistoryItem& hi : h) {
            const NeighborList nl = neighbors(hi.item);
            for (std::size_t k = 0; k < nl.size; ++k)
                contrib.push_back(Contribution{nl.ids[k], hi.weight * nl.sims[k]});
        }
    }
    std::stable_sort(contrib.begin(), contrib.end(),
                     [](const Contribution& a, const Contribution& b) { return a.item < b.item; });
    std::vector<Scored> cand;
    for (std::size_t k = 0; k < contrib.size();) {
        const int32_t item = contrib[k].item;
        double s = 0;
        for (; k < contrib.size() && contrib[k].item == item; ++k) s += contrib[k].score;
        if (s > 0 && !in_history(h, item)) cand.push_back(Scored{s, item});
    }
    detail::select_top_k(cand, n);

    out.reserve(std::min(n, cand.size() + popular_ids.size()));
    std::unordered_set<int32_t> listed;
    for (const Scored& s : cand) {
        out.push_back(Recommendation{s.id, s.score, true});
        listed.insert(s.id);
    }
    for (std::size_t r = 0; r < popular_ids.size() && out.size() < n; ++r) {
        const int32_t item = popular_ids[r];
        if (in_history(h, item) || listed.count(item)) continue;
        out.push_back(Recommendation{item, static_cast<double>(popular_users[r]), false});
        listed.insert(item);
    }
    return out;
}

NeighborList neighbors_of(const Model& model, int32_t item) {
    NeighborList nl;
    auto it = std::lower_bound(model.item_ids.begin(), model.item_ids.end(), item);
    if (it == model.item_ids.end() || *it != item) return nl;
    const std::size_t k = static_cast<std::size_t>(it - model.item_ids.begin());
    if (k + 1 >= model.nbr_offsets.size()) return nl;  // malformed model: no neighbours
    const int64_t b = model.nbr_offsets[k], e = model.nbr_offsets[k + 1];
    if (b < 0 || e < b || static_cast<std::size_t>(e) > model.nbr_ids.size() ||
        static_cast<std::size_t>(e) > model.nbr_sims.size())
        return nl;
    nl.ids = model.nbr_ids.data() + b;
    nl.sims = model.nbr_sims.data() + b;
    nl.size = static_cast<std::size_t>(e - b);
    return nl;
}

std::vector<Recommendation> recommend(const Model& model, const std::vector<HistoryItem>& history,
                                      int top_n) {
    return recommend(
        history, [&model](int32_t item) { return neighbors_of(model, item); }, model.popular_ids,
        model.popular_users, top_n);
}

}  // namespace recsys
