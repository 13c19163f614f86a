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

}  // namespace

bool ItemFilter::passes(int32_t item) const {
    if (allowed != nullptr && !std::binary_search(allowed, allowed + n_allowed, item)) return false;
    return denied == nullptr || !std::binary_search(denied, denied + n_denied, item);
}

namespace {

// Excluded: the history, and the items of `seen` (sorted), with exclude_seen.
struct Exclusion {
    const std::vector<HistoryItem>& h;
    const std::vector<int32_t>& seen;
    bool exclude_seen;
    const ItemFilter& filter;
    bool excluded(int32_t item) const {
        if (exclude_seen && (in_history(h, item) || std::binary_search(seen.begin(), seen.end(), item)))
            return true;
        return !filter.passes(item);
    }
};

// recommend_cf's score table.
struct Slot {
    int32_t item;
    uint32_t stamp;
    double score;
};
struct ScoreTable {
    std::vector<Slot> slots;
    uint32_t stamp = 0;
};
constexpr std::size_t kKeptSlots = std::size_t{1} << 16;  // 1 MB kept per thread at most
ScoreTable& kept_table() {
    thread_local ScoreTable table;
    return table;
}

// Asks for a neighbour list's cache lines ahead of use.
void prefetch_list(const NeighborList& nl) {
    constexpr std::size_t kLine = 64;
    const char* ids = reinterpret_cast<const char*>(nl.ids);
    const char* sims = reinterpret_cast<const char*>(nl.sims);
    for (std::size_t b = 0; b < nl.size * sizeof(int32_t); b += kLine) __builtin_prefetch(ids + b);
    for (std::size_t b = 0; b < nl.size * sizeof(double); b += kLine) __builtin_prefetch(sims + b);
}

void check_seen(const std::vector<int32_t>& seen) {
    if (!std::is_sorted(seen.begin(), seen.end()))
        throw InvalidInput("recsys: the seen items must be sorted");
}

}  // namespace

std::vector<Recommendation> recommend_cf(const std::vector<HistoryItem>& history,
                                         const NeighborLookup& neighbors, int top_n,
                                         bool exclude_seen, const std::vector<int32_t>& seen,
                                         const ItemFilter& filter) {
    std::vector<Recommendation> out;
    if (top_n <= 0) return out;
    check_seen(seen);
    const std::size_t n = static_cast<std::size_t>(top_n);
    const std::vector<HistoryItem> h = normalize_history(history);

    // Collaborative scores: w * sim summed per neighbour in an open-addressing
    // table.  Each neighbour's contributions are added in generation order
    // (history item ascending, then neighbour list order), so the sums do not
    // depend on the input order.
    std::size_t upper = 0;
    std::vector<NeighborList> lists;
    lists.reserve(h.size());
    if (neighbors) {
        for (const HistoryItem& hi : h) {
            lists.push_back(neighbors(hi.item));
            upper += lists.back().size;
        }
    }
    std::size_t cap = 16;
    int bits = 4;
    while (cap < 2 * upper) {
        cap <<= 1;
        ++bits;
    }
    const std::size_t mask = cap - 1;
    // Fibonacci hashing: the high bits of the product.
    auto home = [bits](int32_t item) {
        return static_cast<std::size_t>((static_cast<uint32_t>(item) * 2654435761u) >> (32 - bits));
    };
    // One slot per candidate: item, stamp and score side by side (one cache
    // line a probe).  The table is kept per thread between calls (up to
    // kKeptSlots slots): a slot is in use when its stamp is this call's.
    ScoreTable local;
    ScoreTable& t = cap <= kKeptSlots ? kept_table() : local;
    if (t.slots.size() < cap) {
        t.slots.assign(cap, Slot{0, 0, 0});
        t.stamp = 0;
    }
    if (++t.stamp == 0) {  // wrapped: clear the old stamps once
        for (Slot& sl : t.slots) sl.stamp = 0;
        t.stamp = 1;
    }
    const uint32_t now = t.stamp;
    Slot* slots = t.slots.data();
    std::vector<uint32_t> order;  // slots in first-seen order
    order.reserve(upper);
    // The lists lie apart in memory (a backend's neighbour cache): the next
    // one is fetched while this one is summed.
    if (!lists.empty()) prefetch_list(lists[0]);
    for (std::size_t q = 0; q < lists.size(); ++q) {
        const NeighborList& nl = lists[q];
        if (q + 1 < lists.size()) prefetch_list(lists[q + 1]);
        const double w = h[q].weight;
        for (std::size_t k = 0; k < nl.size; ++k) {
            const int32_t item = nl.ids[k];
            std::size_t pos = home(item);
            while (slots[pos].stamp == now && slots[pos].item != item) pos = (pos + 1) & mask;
            Slot& sl = slots[pos];
            if (sl.stamp != now) {
                sl.stamp = now;
                sl.item = item;
                sl.score = 0;
                order.push_back(static_cast<uint32_t>(pos));
            }
            sl.score += w * nl.sims[k];
        }
    }
    // The history and the seen items that got a score are excluded here, by
    // their slots (a few lookups instead of a search per candidate): a score
    // of 0 is never a candidate.
    if (exclude_seen) {
        auto exclude = [&](int32_t item) {
            std::size_t pos = home(item);
            while (slots[pos].stamp == now && slots[pos].item != item) pos = (pos + 1) & mask;
            if (slots[pos].stamp == now) slots[pos].score = 0;
        };
        for (const HistoryItem& hi : h) exclude(hi.item);
        for (int32_t item : seen) exclude(item);
    }
    // The candidates go straight into a bounded heap of the best top_n (most
    // cost one comparison with the worst kept): no candidate array to fill,
    // and no selection over it.  TopK keeps what select_top_k would: the
    // ranking is a total order, the items are distinct.
    detail::TopK top(n);
    top.reserve(n);
    if (filter.allowed != nullptr && filter.n_allowed < order.size()) {
        // An allowed set smaller than the candidates (a category page): its
        // items are looked up in the table instead of a search of the set for
        // every candidate.  The same candidates, in another order, which the
        // ranking does not depend on.
        for (std::size_t a = 0; a < filter.n_allowed; ++a) {
            const int32_t item = filter.allowed[a];
            if (a > 0 && item == filter.allowed[a - 1]) continue;  // sorted: a repeat
            std::size_t pos = home(item);
            while (slots[pos].stamp == now && slots[pos].item != item) pos = (pos + 1) & mask;
            const Slot& sl = slots[pos];
            if (sl.stamp == now && sl.score > 0 &&
                (filter.denied == nullptr || !std::binary_search(filter.denied, filter.denied + filter.n_denied, item)))
                top.offer(Scored{sl.score, sl.item});
        }
    } else {
        const bool all = filter.allowed == nullptr && filter.denied == nullptr;
        for (uint32_t pos : order) {
            const Slot& sl = slots[pos];
            if (sl.score > 0 && (all || filter.passes(sl.item))) top.offer(Scored{sl.score, sl.item});
        }
    }
    const std::vector<Scored>& best = top.sorted();
    out.reserve(best.size());
    for (const Scored& s : best) out.push_back(Recommendation{s.id, s.score, true});
    return out;
}

void fill_popular(std::vector<Recommendation>& out, const std::vector<HistoryItem>& history,
                  const std::vector<int32_t>& popular_ids, const std::vector<int32_t>& popular_users,
                  int top_n, bool exclude_seen, const std::vector<int32_t>& seen,
                  const ItemFilter& filter) {
    if (popular_ids.size() != popular_users.size())
        throw InvalidInput("recsys: popular_ids and popular_users differ in length (" +
                           std::to_string(popular_ids.size()) + " vs " +
                           std::to_string(popular_users.size()) + ")");
    if (top_n <= 0) return;
    check_seen(seen);
    const std::size_t n = static_cast<std::size_t>(top_n);
    if (out.size() >= n) return;
    const std::vector<HistoryItem> h = normalize_history(history);
    const Exclusion ex{h, seen, exclude_seen, filter};
    std::unordered_set<int32_t> listed;
    for (const Recommendation& r : out) listed.insert(r.item);
    for (std::size_t r = 0; r < popular_ids.size() && out.size() < n; ++r) {
        const int32_t item = popular_ids[r];
        if (ex.excluded(item) || listed.count(item)) continue;
        out.push_back(Recommendation{item, static_cast<double>(popular_users[r]), false});
        listed.insert(item);
    }
}

std::vector<Recommendation> recommend(const std::vector<HistoryItem>& history,
                                      const NeighborLookup& neighbors,
                                      const std::vector<int32_t>& popular_ids,
                                      const std::vector<int32_t>& popular_users, int top_n,
                                      bool exclude_seen, const std::vector<int32_t>& seen,
                                      const ItemFilter& filter) {
    if (popular_ids.size() != popular_users.size())
        throw InvalidInput("recsys: popular_ids and popular_users differ in length (" +
                           std::to_string(popular_ids.size()) + " vs " +
                           std::to_string(popular_users.size()) + ")");
    std::vector<Recommendation> out = recommend_cf(history, neighbors, top_n, exclude_seen, seen, filter);
    fill_popular(out, history, popular_ids, popular_users, top_n, exclude_seen, seen, filter);
    return out;
}

std::vector<Contribution> explain(const std::vector<HistoryItem>& history,
                                  const NeighborLookup& neighbors, int32_t item) {
    std::vector<Contribution> out;
    if (!neighbors) return out;
    for (const HistoryItem& hi : normalize_history(history)) {
        const NeighborList nl = neighbors(hi.item);
        for (std::size_t k = 0; k < nl.size; ++k) {
            if (nl.ids[k] != item) continue;
            out.push_back(Contribution{hi.item, hi.weight, nl.sims[k], hi.weight * nl.sims[k]});
            break;
        }
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
                                      int top_n, bool exclude_seen) {
    return recommend(
        history, [&model](int32_t item) { return neighbors_of(model, item); }, model.popular_ids,
        model.popular_users, top_n, exclude_seen, {}, ItemFilter{});
}

}  // namespace recsys
