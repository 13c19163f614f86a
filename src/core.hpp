// core.hpp - the recommender's math, in plain C++17.
//
// This header and the core_*.cpp files that implement it know nothing of
// PostgreSQL: they are compiled into the extension and, unchanged, into the
// GoogleTest binary.  The glue (pg_*.cpp) is the only code that talks to the
// server; it converts the exceptions thrown here into ereport() calls.
#pragma once

#ifdef POSTGRES_H
#error "core.hpp is PostgreSQL-free: include it before postgres.h, never from C code"
#endif

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace recsys {

// One cell of the weighted user-item matrix: w(user, item) > 0.
// Training sums duplicate (user, item) cells, so callers may pass raw events.
struct Triplet {
    int32_t user;
    int32_t item;
    double weight;
};

// Thrown when the caller's CancelCheck asks the work to stop.
class Cancelled : public std::exception {
public:
    const char* what() const noexcept override { return "recsys: work cancelled"; }
};

// Thrown for input the core cannot accept (NaN or non-positive weights, ...).
class InvalidInput : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Polled from the thread that called into the core, every few milliseconds of
// work; returning true makes the core throw Cancelled.  May be empty.
using CancelCheck = std::function<bool()>;

// Told how far a long stage has come: `stage` names it ("similarities",
// "scoring"), `done` of `total` units (items, test touches).  Called only from
// the thread that called into the core, where it polls its CancelCheck; must
// not throw.  May be empty.  train()'s similarity pass reports 0 done as it
// begins and every item done as it ends (bench/core_bench.cpp times it so).
using Progress = std::function<void(const char* stage, int64_t done, int64_t total)>;

// How the summed matrix w(u,i) is turned into the matrix x(u,i) that the
// similarity reads (docs/sql.md "Similarity settings" has the formulas).
enum class Weighting {
    weights,  // x = w (1.0)
    binary,   // x = 1
    tfidf,    // x = idf(u), binary tf: IDF down-weighting of heavy users
    bm25,     // x = w (k1+1) / (k1 L_i + w) * idf(u)
};

// The item-item similarity computed from x.
enum class Similarity {
    cosine,             // dot / (|x_i| |x_j| + shrink)                      (1.0, shrink 0)
    asymmetric_cosine,  // dot / (|x_i|^(2 alpha) |x_j|^(2 (1 - alpha)) + shrink)
    rp3beta,            // sum_u P_iu^alpha P_uj^alpha / |U_j|^beta
    jaccard,            // |U_i & U_j| / (|U_i| + |U_j| - |U_i & U_j| + shrink)
};

// Training settings.  The defaults reproduce release 1.0 exactly.  An unset
// optional takes the default of the setting that reads it; setting one that
// the chosen weighting/similarity does not read is an InvalidInput.
struct TrainOptions {
    int neighbors = 50;  // neighbours kept per item; 0 keeps every positive one
    Weighting weighting = Weighting::weights;
    Similarity similarity = Similarity::cosine;
    std::optional<double> alpha = std::nullopt;  // asymmetric_cosine: 0..1, default 0.5; rp3beta: >= 0, default 1
    std::optional<double> beta = std::nullopt;   // rp3beta: >= 0, default 0.5
    std::optional<double> k1 = std::nullopt;     // bm25: >= 0, default 1.2
    std::optional<double> b = std::nullopt;      // bm25: 0..1, default 0.75
    double shrink = 0;            // cosine, asymmetric_cosine, jaccard: >= 0
    Progress progress{};          // optional
};

// TrainOptions validated, with the defaults filled in: what a model records.
// Parameters the settings do not read are NaN.
struct SimilaritySettings {
    int neighbors = 50;
    Weighting weighting = Weighting::weights;
    Similarity similarity = Similarity::cosine;
    double alpha = 0, beta = 0, k1 = 0, b = 0, shrink = 0;
    // true for the 1.0 model: weights, cosine, shrink 0 (any K)
    bool plain() const {
        return weighting == Weighting::weights && similarity == Similarity::cosine && shrink == 0;
    }
};
// Throws InvalidInput (naming the parameter and its range) for bad settings.
SimilaritySettings resolve_settings(const TrainOptions& opt);

// Names as used in SQL ('weights', 'asymmetric_cosine', ...), and back; the
// parsers throw InvalidInput listing the accepted names.
const char* weighting_name(Weighting w);
const char* similarity_name(Similarity s);
Weighting parse_weighting(const std::string& name);
Similarity parse_similarity(const std::string& name);

// A trained item-to-item model.
struct Model {
    int64_t n_users = 0;   // distinct users in the training cells
    int64_t n_cells = 0;   // distinct (user, item) cells with w > 0

    // Items in the model, ascending.  Neighbours of item_ids[k] are
    // nbr_ids/nbr_sims[nbr_offsets[k] .. nbr_offsets[k+1]), ordered by
    // similarity descending, then neighbour id ascending; every sim > 0.
    std::vector<int32_t> item_ids;
    std::vector<int64_t> nbr_offsets;  // item_ids.size() + 1 entries
    std::vector<int32_t> nbr_ids;
    std::vector<double> nbr_sims;

    // Every item, by distinct users descending, then id ascending.
    std::vector<int32_t> popular_ids;
    std::vector<int32_t> popular_users;

    int64_t pairs() const { return static_cast<int64_t>(nbr_ids.size()); }
};

// Distinct users and items among n cells.
struct MatrixShape {
    int64_t users = 0;
    int64_t items = 0;
};
// O(n) with a bitmap when the id range is at most 2^26, else a sort of copies.
MatrixShape measure(const Triplet* cells, std::size_t n);

// Whose memory holds train()'s input: a vector train() owns (and frees as
// soon as the matrix is built), or the caller's buffer, which train()
// borrows as scratch space (train(Triplet*, n, ...)).
enum class CellInput { owned, borrowed };

// Upper bound, in bytes, of the heap that train() needs for `cells` input
// triplets over at most `users` users and `items` items, keeping `neighbors`
// per item (0 = all).  An owned input vector is included; a borrowed buffer
// is the caller's to count.
std::size_t estimate_train_bytes(int64_t cells, int64_t users, int64_t items, int neighbors,
                                 CellInput input = CellInput::owned);
// The same for any settings: adds the per-user and per-item statistics that
// a weighting or similarity other than the 1.0 defaults keeps.
std::size_t estimate_train_bytes(int64_t cells, int64_t users, int64_t items,
                                 const TrainOptions& opt, CellInput input = CellInput::owned);

// Item-item similarity, top-K per item.  With the default options: the
// cosine of the columns of w, sim(i,j) = sum_u w(u,i) w(u,j) / (|w_i| |w_j|),
// i != j, kept when > 0; the other settings: see Weighting and Similarity.
Model train(std::vector<Triplet> cells, const TrainOptions& opt, const CancelCheck& cancel = {});
// The same model from the caller's n cells, borrowed as scratch space: their
// contents are overwritten while the matrix is built, and the caller frees
// them when train() returns or throws (no copy of the input: 16 bytes a cell
// less at the peak, and no time spent copying them).
Model train(Triplet* cells, std::size_t n, const TrainOptions& opt, const CancelCheck& cancel = {});

// The same model computed independently with Eigen sparse products (columns
// scaled to unit norm, S = Wn^T Wn in blocks of items; every other setting
// with its own matrix formulation); sims can differ from train() in the last
// bits.  For cross-checks and benchmarks (core_eigen.cpp).
Model train_eigen(const std::vector<Triplet>& cells, const TrainOptions& opt,
                  const CancelCheck& cancel = {});

// ---------------------------------------------------------------------------
// Recommending one user.

struct HistoryItem {
    int32_t item;
    double weight;  // w(u, item) at call time; only > 0 entries are history
};

// Read-only view of one item's stored neighbours (sorted as in Model).
struct NeighborList {
    const int32_t* ids = nullptr;
    const double* sims = nullptr;
    std::size_t size = 0;
};

// train() in steps, so that its caller can store the model while the
// similarity pass runs (the pass is the only long step left once the
// constructor returns, and storing is work the core cannot do):
//   SteppedTraining t(cells, opt, cancel);  // steps 1-5; model() has the
//                                           // items, popularity and counts
//   t.start_helper();                       // a second thread takes blocks
//   while (t.ready() < t.items()) {         // items [0, ready()) are final
//       ... store the ready items' neighbours(k) ...
//       if (!t.step(cancel)) ... wait: the helper holds the last blocks
//   }
//   Model m = t.finish();                   // as train() returns it
// The model is train()'s bit for bit, whichever thread computed an item.
// The helper never calls `cancel`: the destructor stops it (after its block
// in flight, a few milliseconds at most) and joins it, so destroying the
// object is how a caller that must stop (an error, a cancel) ends it.
class SteppedTraining {
public:
    SteppedTraining(std::vector<Triplet> cells, const TrainOptions& opt, const CancelCheck& cancel);
    // Borrowing the caller's n cells as train(Triplet*, n, ...) does: they
    // are not read after the constructor returns.
    SteppedTraining(Triplet* cells, std::size_t n, const TrainOptions& opt, const CancelCheck& cancel);
    ~SteppedTraining();
    SteppedTraining(const SteppedTraining&) = delete;
    SteppedTraining& operator=(const SteppedTraining&) = delete;

    // The model so far: item_ids, n_users, n_cells and the popularity
    // lists are final; the neighbours are not (use neighbours()).
    const Model& model() const;
    std::size_t items() const;
    // Starts the second thread when the pass is worth one (as train()
    // decides) and a thread can be started; else step() does every block.
    void start_helper();
    // Computes the next block of items nobody took on the calling thread,
    // polling `cancel` inside it; false when every block was taken.
    bool step(const CancelCheck& cancel);
    // The items [0, ready()) have their final neighbours; rethrows what the
    // helper threw.
    std::size_t ready();
    // Item k's neighbours, k < ready(): best first, as Model stores them.
    NeighborList neighbours(std::size_t k) const;
    // Computes what is left, joins the helper and returns the model.  Once.
    Model finish(const CancelCheck& cancel);

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

// Finds the stored neighbours of an item; returns an empty list for items
// the model does not know.
using NeighborLookup = std::function<NeighborList(int32_t item)>;

struct Recommendation {
    int32_t item;
    double score;   // cf score; for popularity fill: the item's distinct users
    bool from_cf;   // true: 'cf', false: 'popular'
};

// Which items may be recommended (issue #8): when `allowed` is set, only
// the items in it; never the items in `denied`.  Both are views of sorted
// ascending arrays of item indices owned by the caller.
struct ItemFilter {
    const int32_t* allowed = nullptr;  // nullptr: every item is allowed
    std::size_t n_allowed = 0;
    const int32_t* denied = nullptr;
    std::size_t n_denied = 0;
    bool passes(int32_t item) const;
};

// score(u,j) = sum_{i in history} w(u,i) sim_K(i,j); history items excluded;
// top_n by score desc, id asc, score > 0; the remaining slots are filled from
// `popular` (ids in popularity order, counts alongside) skipping history and
// already listed items.  With exclude_seen = false, history items are
// candidates like any other (scored through the other history items, as
// sim(j,j) is not stored) and the fill skips only already listed items.
// `seen` (sorted ascending) lists more items to exclude with the history:
// the items the user has events on that sum to w <= 0 (weight 0, refunds).
// Items `filter` rejects are neither scored candidates nor fill: recommend_cf
// then fill_popular (below).
std::vector<Recommendation> recommend(const std::vector<HistoryItem>& history,
                                      const NeighborLookup& neighbors,
                                      const std::vector<int32_t>& popular_ids,
                                      const std::vector<int32_t>& popular_users,
                                      int top_n, bool exclude_seen = true,
                                      const std::vector<int32_t>& seen = {},
                                      const ItemFilter& filter = ItemFilter{});

// The collaborative part of recommend(): the top_n items by score > 0 that
// are neither excluded (history and `seen`, with exclude_seen) nor filtered
// out, so a narrow filter still yields top_n items when that many score.
std::vector<Recommendation> recommend_cf(const std::vector<HistoryItem>& history,
                                         const NeighborLookup& neighbors, int top_n,
                                         bool exclude_seen, const std::vector<int32_t>& seen,
                                         const ItemFilter& filter);

// The popularity fill of recommend(): appends to `out` (already holding the
// collaborative items) the items of `popular_ids` in order, skipping the
// excluded, the filtered out and the already listed ones, until `out` holds
// top_n.  Can be called again with the next part of the popularity list.
void fill_popular(std::vector<Recommendation>& out, const std::vector<HistoryItem>& history,
                  const std::vector<int32_t>& popular_ids, const std::vector<int32_t>& popular_users,
                  int top_n, bool exclude_seen, const std::vector<int32_t>& seen,
                  const ItemFilter& filter);

// One history item's part of an item's collaborative score.
struct Contribution {
    int32_t history_item;
    double weight;      // w(u, history_item), duplicates summed
    double similarity;  // sim_K(history_item, item)
    double contribution;  // weight * similarity
};

// Why recommend() scores `item` as it does: one entry per history item (with
// weight > 0) whose stored neighbours include `item`, in history item order.
// The contributions, added in this order, give recommend()'s score exactly.
std::vector<Contribution> explain(const std::vector<HistoryItem>& history,
                                  const NeighborLookup& neighbors, int32_t item);

// Same, against an in-memory model.
std::vector<Recommendation> recommend(const Model& model,
                                      const std::vector<HistoryItem>& history,
                                      int top_n, bool exclude_seen = true);

// Neighbour lookup over an in-memory model (binary search on item_ids).
NeighborList neighbors_of(const Model& model, int32_t item);

// ---------------------------------------------------------------------------
// Offline evaluation with a time split.

// One (user, item) touched at or after the cutoff.
struct Touch {
    int32_t user;
    int32_t item;
};

struct EvalOptions {
    int k = 10;          // list length
    int neighbors = 50;  // as TrainOptions::neighbors
    Progress progress{};   // optional: training's stages, then "scoring"
    // Repeat purchases count: history items may be recommended and a touch
    // after the cutoff of a history item is relevant (default: neither).
    bool count_repeats = false;
    // Percentile bootstrap over the evaluated users (95% CI of precision,
    // recall, nDCG): resamples (0 = no CI, at most 100000) and the seed.
    int bootstrap_resamples = 1000;
    uint64_t bootstrap_seed = 1;
    // Scoring threads: 0 = as the machine and the number of test users
    // suggest (1 or 2); the result does not depend on it.
    int threads = 0;
    // Model settings (weighting, similarity, ...); its `neighbors` is
    // ignored: EvalOptions::neighbors above is used.
    TrainOptions settings = {};
};

// A confidence interval; NaN bounds when there is none (no evaluated user,
// or bootstrap_resamples = 0).
struct Interval {
    double lo = std::numeric_limits<double>::quiet_NaN();
    double hi = std::numeric_limits<double>::quiet_NaN();
};

struct EvalResult {
    int64_t users_evaluated = 0;
    // Users with a touch after the cutoff but no cell before it: they cannot
    // be evaluated (nothing to recommend from); not in users_evaluated.
    int64_t users_without_history = 0;
    double precision = 0, recall = 0, ndcg = 0, hit_rate = 0, map = 0, coverage = 0;
    Interval precision_ci, recall_ci, ndcg_ci;  // 95% percentile bootstrap
    double pop_precision = 0, pop_recall = 0;  // popularity-only baseline
    int64_t model_items = 0;                   // items in the pre-cutoff model
    int64_t model_users = 0;
    int64_t train_cells = 0;
    int64_t test_touches = 0;                  // distinct (user, item) after cutoff
    // Wall-clock seconds of evaluate_model()'s phases (for the glue's DEBUG
    // lines): sorting the histories and touches, scoring, the bootstrap.
    double seconds_sort = 0, seconds_score = 0, seconds_bootstrap = 0;
};

// Trains on `before` (cells before the cutoff), recommends k items to every
// user with >= 1 cell before and >= 1 relevant item (touched after, not in
// the user's history before -- or any touched item with count_repeats), and
// averages the metrics over those users.
EvalResult evaluate(std::vector<Triplet> before, std::vector<Touch> after,
                    const EvalOptions& opt, const CancelCheck& cancel = {});

// The scoring half of evaluate(), for a model already trained on the cells
// before the cutoff (in memory or in passes): `history` holds the cells before
// the cutoff of at least every user in `after` (any order, duplicates summed;
// other users' cells are ignored), so a caller within a memory budget keeps
// only the test users' cells.  opt.neighbors and opt.settings are not used.
EvalResult evaluate_model(const Model& model, std::vector<Triplet> history, std::vector<Touch> after,
                          const EvalOptions& opt, const CancelCheck& cancel = {});

// evaluate_model()'s first step on its own, in place: the histories sorted
// by (user, item) -- stably, as std::stable_sort would -- with each pair's
// cells summed in their order, packed to the front (*n_history becomes
// their count); the touches sorted by (user, item) with the duplicates
// dropped (*n_after likewise).  It does not depend on the model, so a
// caller may run it on a thread of its own while the model trains.  Holds
// a scratch copy of the histories (then of the touches) while it runs;
// polls `cancel`.
void sort_scoring_inputs(Triplet* history, std::size_t* n_history, Touch* after, std::size_t* n_after,
                         const CancelCheck& cancel = {});

// evaluate_model() on inputs sort_scoring_inputs() prepared, read in place
// (no copy, no sort): the same result bit for bit.  Its seconds_sort is
// the time of what is left of that phase (the users' slices, the model's
// index).
EvalResult evaluate_sorted(const Model& model, const Triplet* history, std::size_t n_history, const Touch* after,
                           std::size_t n_after, const EvalOptions& opt, const CancelCheck& cancel = {});

}  // namespace recsys
