// core_passes.hpp - training within a memory budget: the cells spilled to a
// temporary file in sorted runs, and the similarities computed in passes over
// a user-major copy of the matrix on disk, as an external sort works.
//
// PostgreSQL-free like core.hpp.  The core writes its temporary files itself
// (POSIX open/pread/pwrite) into a directory the caller names: the passes
// re-read the matrix inside one core call, where no PostgreSQL function (such
// as BufFile's, which may raise an error) can run.  Each file is unlinked as
// soon as it is created, so its space is returned when its descriptor closes:
// by RAII on every exit path (a Cancelled or any other exception included),
// and by the kernel if the process dies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core.hpp"

namespace recsys {

namespace detail {
class TempFile;
}

// Bytes of each read or write buffer of the external path.
constexpr std::size_t kPassIoBuffer = 64 * 1024;

// What training a matrix of a given shape needs, and how it proceeds within
// `budget` bytes.  Every figure mirrors an allocation of the code (see
// plan_passes in core_passes.cpp and docs/operations.md).
struct PassPlan {
    std::size_t in_memory = 0;     // train() in memory: 16 C (the cell buffer, lent to train()) +
                                   // estimate_train_bytes(..., CellInput::borrowed)
    std::size_t minimum = 0;       // the least budget the external path can work in
    std::size_t pass_fixed = 0;    // bytes of a similarity pass besides its block of items
    std::size_t per_item = 0;      // bytes of an item's dense row in a pass's block: 12 I
    int64_t items_per_pass = 0;    // items one pass computes at least (as dense rows; 0: budget < minimum)
    int64_t passes = 0;            // similarity passes over the matrix at most (0: budget < minimum);
                                   // items whose users hold few other items take less room than a
                                   // dense row, and the passes made are often far fewer
    int64_t merge_fan_in = 0;      // runs merged at once (0: budget < minimum)
};

// The plan for `cells` cells (duplicates included) over `users` users and
// `items` items, keeping `neighbors` per item (0 = all), when the cells lie in
// `runs` sorted runs on disk, within `budget` bytes.  `users` only enters
// in_memory; an upper bound is fine.
PassPlan plan_passes(int64_t cells, int64_t users, int64_t items, int neighbors, int64_t runs,
                     std::size_t budget);
// The same for any model settings: a weighting or similarity other than the
// 1.0 defaults also holds per-user and per-item statistics (24 U + 64 I
// bytes, core_similarity.hpp), counted in in_memory and minimum and left out
// of the budget the passes plan with.  Throws InvalidInput for bad settings.
PassPlan plan_passes(int64_t cells, int64_t users, int64_t items, const TrainOptions& opt, int64_t runs,
                     std::size_t budget);

// Matrix cells spilled to one temporary file as sorted runs.  Adding a run
// validates its weights (as train() does, in input order), sorts it stably by
// (user, item) and appends it; runs keep their input order, so duplicates of
// a cell stay in input order and are summed exactly as train() sums them.
class CellSpill {
public:
    // `dir` must exist; no file is created before the first run.
    explicit CellSpill(std::string dir);
    ~CellSpill();
    CellSpill(const CellSpill&) = delete;
    CellSpill& operator=(const CellSpill&) = delete;

    // Sorts cells[0..n) in place (using 16n more bytes) and writes them.
    void add_run(Triplet* cells, std::size_t n, const CancelCheck& cancel = {});

    int64_t cells() const { return cells_; }
    int64_t runs() const { return static_cast<int64_t>(runs_.size()); }
    int64_t items() const { return static_cast<int64_t>(items_.size()); }  // distinct items
    int64_t users_bound() const { return users_bound_; }  // >= distinct users
    uint64_t bytes_on_disk() const { return static_cast<uint64_t>(cells_) * sizeof(Triplet); }

    // Every cell back in memory, runs one after the other: train() on it
    // gives the same model as on the cells in their input order.
    std::vector<Triplet> load(const CancelCheck& cancel = {}) const;

    struct Run {
        uint64_t offset;  // in bytes
        uint64_t count;   // cells
    };

private:
    friend Model train_passes(CellSpill& spill, const TrainOptions& opt, std::size_t budget,
                              const CancelCheck& cancel, int64_t* passes_made);
    std::string dir_;
    std::unique_ptr<detail::TempFile> file_;
    std::vector<Run> runs_;
    std::vector<int32_t> items_;  // distinct items seen, ascending
    int64_t cells_ = 0;
    int64_t users_bound_ = 0;
};

// The model train() computes from the spilled cells (the same ids, order and
// bit-identical similarities, for every weighting and similarity), holding at most `budget` bytes of heap at any
// time: the runs are merged into a user-major matrix file, then each pass
// streams it once and computes the neighbours of a block of items.  Consumes
// the spill (its file is closed and its dictionary moved into the model).
// Throws InvalidInput when budget < plan_passes(...).minimum.  With
// passes_made, stores the number of passes it made there (at most
// plan_passes(...).passes).
Model train_passes(CellSpill& spill, const TrainOptions& opt, std::size_t budget,
                   const CancelCheck& cancel = {}, int64_t* passes_made = nullptr);

}  // namespace recsys
