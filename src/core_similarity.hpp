// core_similarity.hpp - the matrix weightings and similarity measures of
// TrainOptions (docs/sql.md "Similarity settings"), as hooks for train().
// Internal to the core; PostgreSQL-free like core.hpp.
//
// train() computes, for each item i, dot(i,j) = sum_u left(u,i) right(u,j)
// over the users u of i and the items j of u, then sim(i,j) = finish(i,j,dot)
// -- the list of i holds j.  The hooks here supply those pieces:
//
//   1. CellStats: per-user and per-item counts/sums of the summed matrix w
//      (one pass over the distinct cells, any order);
//   2. CellWeighting: x(u,i) from w(u,i) and CellStats (the weighting);
//   3. WeightedStats: per-user and per-item sums of x (one more pass);
//   4. SimilarityFinish: left(i,x), right(u,x) and finish(i,j,dot).
//
// Each step reads only per-cell values and the statistics, so a driver that
// sees the cells in passes (blocks of users or items) can call the same
// functions; apply_weighting() and prepare_similarity() below do it for an
// in-memory CSR/CSC.  None of this runs for the 1.0 defaults
// (SimilaritySettings::plain()), which keep train()'s original code path.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core.hpp"
#include "core_topk.hpp"

namespace recsys {
namespace detail {

// Statistics of w, by dense user and item index.
struct CellStats {
    std::vector<int64_t> user_items;   // |I_u|: distinct items of user u
    std::vector<int64_t> item_users;   // |U_i|: distinct users of item i
    std::vector<double> item_weight;   // sum_u w(u,i)
    CellStats(std::size_t users, std::size_t items)
        : user_items(users, 0), item_users(items, 0), item_weight(items, 0.0) {}
    void add(std::size_t u, std::size_t i, double w) {
        ++user_items[u];
        ++item_users[i];
        item_weight[i] += w;
    }
};

// x(u,i) of a weighting.  Throws InvalidInput when a statistic overflows.
class CellWeighting {
public:
    CellWeighting(const SimilaritySettings& s, const CellStats& st);
    double operator()(std::size_t u, std::size_t i, double w) const {
        switch (kind_) {
            case Weighting::weights: return w;
            case Weighting::binary: return 1.0;
            case Weighting::tfidf: return idf_[u];
            case Weighting::bm25: return w * k1p1_ / (k1L_[i] + w) * idf_[u];
        }
        return w;
    }

private:
    Weighting kind_;
    double k1p1_ = 0;          // k1 + 1
    std::vector<double> idf_;  // tfidf, bm25: idf(u)
    std::vector<double> k1L_;  // bm25: k1 * L_i
};

// Statistics of x, by dense user and item index.
struct WeightedStats {
    std::vector<double> user_sum;    // sum_j x(u,j)
    std::vector<double> item_sum;    // sum_u x(u,i)
    std::vector<double> item_sumsq;  // sum_u x(u,i)^2
    WeightedStats(std::size_t users, std::size_t items)
        : user_sum(users, 0.0), item_sum(items, 0.0), item_sumsq(items, 0.0) {}
    void add(std::size_t u, std::size_t i, double x) {
        user_sum[u] += x;
        item_sum[i] += x;
        item_sumsq[i] += x * x;
    }
};

// The factors of the dot product and the final formula of a similarity.
class SimilarityFinish {
public:
    // item_users: |U_i| of every item (CellStats::item_users).
    SimilarityFinish(const SimilaritySettings& s, const WeightedStats& st,
                     const std::vector<int64_t>& item_users);
    // The factor of x(u,i) on the list owner's side (column i).
    double left(std::size_t i, double x) const {
        switch (kind_) {
            case Similarity::jaccard: return 1.0;
            case Similarity::rp3beta: return x > 0 && item_[i] > 0 ? std::pow(x / item_[i], alpha_) : 0.0;
            default: return x;
        }
    }
    // The factor of x(u,j) on the neighbour's side (user u's row).
    double right(std::size_t u, double x) const {
        switch (kind_) {
            case Similarity::jaccard: return 1.0;
            case Similarity::rp3beta: return x > 0 && user_[u] > 0 ? std::pow(x / user_[u], alpha_) : 0.0;
            default: return x;
        }
    }
    // sim(i,j) from dot(i,j) = sum_u left(u,i) right(u,j).
    double operator()(std::size_t i, std::size_t j, double dot) const {
        switch (kind_) {
            case Similarity::cosine: return dot / (own_[i] * own_[j] + shrink_);
            case Similarity::asymmetric_cosine: return dot / (own_[i] * other_[j] + shrink_);
            case Similarity::jaccard: return dot / (own_[i] + own_[j] - dot + shrink_);
            case Similarity::rp3beta: return dot / other_[j];
        }
        return 0;
    }

private:
    Similarity kind_;
    double alpha_ = 0, shrink_ = 0;
    std::vector<double> own_;    // cosine |x_i|; asymmetric |x_i|^(2 alpha); jaccard |U_i|
    std::vector<double> other_;  // asymmetric |x_j|^(2 (1 - alpha)); rp3beta |U_j|^beta
    std::vector<double> item_;   // rp3beta: sum_u x(u,i)
    std::vector<double> user_;   // rp3beta: sum_j x(u,j)
};

// Bytes of the statistics above for `users` x `items` (0 for plain settings).
double similarity_extra_bytes(double users, double items, const SimilaritySettings& s);

// Replaces w by x in a user-major CSR (rows[row_off[u] .. row_off[u+1]) hold
// user u's distinct items with members .item, .w).
template <class Row>
void apply_weighting(const SimilaritySettings& s, Row* rows, const int64_t* row_off,
                     std::size_t n_users, std::size_t n_items, const CancelCheck& cancel) {
    if (s.weighting == Weighting::weights) return;
    CellStats st(n_users, n_items);
    for (std::size_t u = 0; u < n_users; ++u)
        for (int64_t q = row_off[u]; q < row_off[u + 1]; ++q)
            st.add(u, static_cast<std::size_t>(rows[q].item), rows[q].w);
    poll_cancel(cancel);
    const CellWeighting weigh(s, st);
    for (std::size_t u = 0; u < n_users; ++u)
        for (int64_t q = row_off[u]; q < row_off[u + 1]; ++q)
            rows[q].w = weigh(u, static_cast<std::size_t>(rows[q].item), rows[q].w);
    poll_cancel(cancel);
}

// Given x in the CSR (rows) and in the item-major CSC (cols, col_off; same
// values), sets the CSC to left(i,x) and the CSR to right(u,x) and returns
// the finisher.  Call it after the CSC is built from the CSR.
template <class Row, class Col>
SimilarityFinish prepare_similarity(const SimilaritySettings& s, Row* rows, const int64_t* row_off,
                                    std::size_t n_users, Col* cols, const int64_t* col_off,
                                    std::size_t n_items, const CancelCheck& cancel) {
    WeightedStats st(n_users, n_items);
    std::vector<int64_t> item_users(n_items);
    for (std::size_t u = 0; u < n_users; ++u)
        for (int64_t q = row_off[u]; q < row_off[u + 1]; ++q)
            st.add(u, static_cast<std::size_t>(rows[q].item), rows[q].w);
    for (std::size_t i = 0; i < n_items; ++i) item_users[i] = col_off[i + 1] - col_off[i];
    poll_cancel(cancel);
    SimilarityFinish fin(s, st, item_users);
    for (std::size_t i = 0; i < n_items; ++i)
        for (int64_t p = col_off[i]; p < col_off[i + 1]; ++p) cols[p].w = fin.left(i, cols[p].w);
    for (std::size_t u = 0; u < n_users; ++u)
        for (int64_t q = row_off[u]; q < row_off[u + 1]; ++q) rows[q].w = fin.right(u, rows[q].w);
    poll_cancel(cancel);
    return fin;
}

}  // namespace detail
}  // namespace recsys
