// core_passes.cpp - training within a memory budget (see core_passes.hpp).
//
// Pipeline (C = cells, I = distinct items):
//   1. reading: CellSpill::add_run validates each chunk of cells, sorts it
//      stably by (user, item) and appends it to a temporary file as a run;
//   2. merging: the runs are merged (F at a time, in levels when there are
//      more than F) in (user, item, run) order; duplicates are summed in
//      input order, items get their dense index, and the matrix goes to a
//      second file, user-major: per user its length, dense items ascending,
//      weights.  Column norms, distinct users per item and each item's
//      "reach" (the bound of its neighbour count) are gathered on the way;
//   3. passes: for a block of items [b0, b1), stream the matrix once; for
//      every user u and every item i of u in the block, add w(u,i) w(u,j)
//      to a dense accumulator row of i for every j of u -- or, for an item
//      whose users hold fewer other items than there are items, append the
//      products to a list, replayed into a dense row after the stream --
//      then take each row's top K as train() does.
// Each (i, j) dot product is summed over the users in ascending order, the
// order train() sums it in, with the same operands: the model is identical
// bit for bit.  Memory: O(I) plus the largest block's rooms (at least one
// dense row of 12 I bytes), never O(C).
#include "core_passes.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <queue>
#include <string>
#include <system_error>

#include <fcntl.h>
#include <unistd.h>

#include "core_similarity.hpp"
#include "core_topk.hpp"

namespace recsys {

namespace detail {

// A temporary file, unlinked as soon as it exists: the descriptor is all
// there is of it, and closing it (the destructor, or the process's end)
// frees its space.  The name follows PostgreSQL's temporary files
// (pgsql_tmp<pid>.<n>), so a file left by a crash between open and unlink
// is removed at the server's next start.
class TempFile {
public:
    explicit TempFile(const std::string& dir) {
        static unsigned counter = 0;
        for (int attempt = 0;; ++attempt) {
            path_ = dir + "/pgsql_tmp" + std::to_string(static_cast<long>(::getpid())) + ".recsys." +
                    std::to_string(counter++);
            fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            if (fd_ >= 0) break;
            if (errno != EEXIST || attempt >= 1000) fail("could not create temporary file");
        }
        if (::unlink(path_.c_str()) != 0) {
            const int e = errno;
            ::close(fd_);
            fd_ = -1;
            errno = e;
            fail("could not unlink temporary file");
        }
    }
    ~TempFile() {
        if (fd_ >= 0) ::close(fd_);
    }
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;

    void write_at(uint64_t off, const char* p, std::size_t n) {
        while (n > 0) {
            const ssize_t w = ::pwrite(fd_, p, n, static_cast<off_t>(off));
            if (w < 0) {
                if (errno == EINTR) continue;
                fail("could not write temporary file");
            }
            p += w;
            n -= static_cast<std::size_t>(w);
            off += static_cast<uint64_t>(w);
        }
    }
    void read_at(uint64_t off, char* p, std::size_t n) const {
        while (n > 0) {
            const ssize_t r = ::pread(fd_, p, n, static_cast<off_t>(off));
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) {
                if (r == 0) errno = EIO;
                fail("could not read temporary file");
            }
            p += r;
            n -= static_cast<std::size_t>(r);
            off += static_cast<uint64_t>(r);
        }
    }

private:
    [[noreturn]] void fail(const char* what) const {
        throw std::system_error(errno, std::generic_category(),
                                std::string("recsys: ") + what + " \"" + path_ + "\"");
    }
    std::string path_;
    int fd_ = -1;
};

}  // namespace detail

namespace {

using detail::poll_cancel;
using detail::Scored;
using detail::TempFile;

constexpr std::size_t kSortBlock = std::size_t(1) << 15;  // cells sorted between cancel polls
constexpr std::size_t kWorkPerPoll = std::size_t(1) << 20;
constexpr std::size_t kSlack = 96 * 1024;  // allocator rounding (large blocks are page-rounded), strings

inline bool cell_less(const Triplet& a, const Triplet& b) {
    if (a.user != b.user) return a.user < b.user;
    return a.item < b.item;
}

// Stable sort of a[0..n) by (user, item): blocks, then bottom-up merges
// (std::merge takes from the left run on ties), polling in between.
// Holds n more cells (16n bytes).
void stable_sort_cells(Triplet* a, std::size_t n, const CancelCheck& cancel) {
    for (std::size_t b = 0; b < n; b += kSortBlock) {
        poll_cancel(cancel);
        std::stable_sort(a + b, a + std::min(n, b + kSortBlock), cell_less);
    }
    if (n <= kSortBlock) return;
    std::vector<Triplet> tmp(n);
    Triplet* src = a;
    Triplet* dst = tmp.data();
    for (std::size_t w = kSortBlock; w < n; w *= 2) {
        for (std::size_t lo = 0; lo < n; lo += 2 * w) {
            poll_cancel(cancel);
            const std::size_t mid = std::min(n, lo + w), hi = std::min(n, lo + 2 * w);
            std::merge(src + lo, src + mid, src + mid, src + hi, dst + lo, cell_less);
        }
        std::swap(src, dst);
    }
    if (src != a) std::copy(src, src + n, a);
}

// Sequential writes through one buffer of kPassIoBuffer bytes.
class Appender {
public:
    Appender(TempFile& f, uint64_t at) : f_(f), pos_(at), buf_(kPassIoBuffer) {}
    void put(const void* p, std::size_t n) {
        const char* c = static_cast<const char*>(p);
        while (n > 0) {
            if (used_ == buf_.size()) flush();
            const std::size_t k = std::min(n, buf_.size() - used_);
            std::memcpy(buf_.data() + used_, c, k);
            used_ += k;
            c += k;
            n -= k;
        }
    }
    void flush() {
        f_.write_at(pos_, buf_.data(), used_);
        pos_ += used_;
        used_ = 0;
    }
    uint64_t end() const { return pos_ + used_; }

private:
    TempFile& f_;
    uint64_t pos_;
    std::vector<char> buf_;
    std::size_t used_ = 0;
};

// Sequential reads of [begin, end) through one buffer of kPassIoBuffer bytes.
class Reader {
public:
    Reader(const TempFile& f, uint64_t begin, uint64_t end)
        : f_(f), pos_(begin), end_(end), buf_(kPassIoBuffer) {}
    bool at_end() const { return at_ == have_ && pos_ == end_; }
    void get(void* p, std::size_t n) {
        char* c = static_cast<char*>(p);
        while (n > 0) {
            if (at_ == have_) fill();
            const std::size_t k = std::min(n, have_ - at_);
            std::memcpy(c, buf_.data() + at_, k);
            at_ += k;
            c += k;
            n -= k;
        }
    }
    // The next n bytes where they lie in the buffer (valid until the next
    // read), or, when they straddle its end, copied into `scratch` (room for
    // n bytes).  Records are multiples of 4 bytes from a 4-aligned start, so
    // a view is 4-aligned.
    const void* view(std::size_t n, void* scratch) {
        if (at_ == have_ && n > 0) fill();
        if (have_ - at_ >= n) {
            const char* const p = buf_.data() + at_;
            at_ += n;
            return p;
        }
        get(scratch, n);
        return scratch;
    }
    // Bytes readable before the buffer is refilled.
    std::size_t buffered() const { return have_ - at_; }
    void skip(std::size_t n) {
        const std::size_t k = std::min<std::size_t>(n, have_ - at_);
        at_ += k;
        n -= k;
        if (n > 0) {
            if (n > end_ - pos_) throw std::runtime_error("recsys: temporary file is truncated");
            pos_ += n;
        }
    }

private:
    void fill() {
        if (pos_ == end_) throw std::runtime_error("recsys: temporary file is truncated");
        have_ = static_cast<std::size_t>(std::min<uint64_t>(buf_.size(), end_ - pos_));
        f_.read_at(pos_, buf_.data(), have_);
        pos_ += have_;
        at_ = 0;
    }
    const TempFile& f_;
    uint64_t pos_, end_;
    std::vector<char> buf_;
    std::size_t at_ = 0, have_ = 0;
};

// Merges runs [first, first + n) of `f` in (user, item, run) order, calling
// sink(cell) for each; stable, so duplicates keep their input order.
template <class Sink>
void merge_runs(const TempFile& f, const CellSpill::Run* runs, std::size_t n, Sink&& sink,
                const CancelCheck& cancel) {
    struct Head {
        Triplet t;
        std::size_t run;
    };
    auto after = [](const Head& a, const Head& b) {  // priority_queue keeps the largest on top
        if (a.t.user != b.t.user) return a.t.user > b.t.user;
        if (a.t.item != b.t.item) return a.t.item > b.t.item;
        return a.run > b.run;
    };
    std::vector<Reader> readers;
    std::vector<uint64_t> left(n);
    readers.reserve(n);
    std::vector<Head> heap_store;
    heap_store.reserve(n);
    std::priority_queue<Head, std::vector<Head>, decltype(after)> heap(after, std::move(heap_store));
    for (std::size_t r = 0; r < n; ++r) {
        readers.emplace_back(f, runs[r].offset, runs[r].offset + runs[r].count * sizeof(Triplet));
        left[r] = runs[r].count;
        if (left[r] > 0) {
            Head h{{}, r};
            readers[r].get(&h.t, sizeof(Triplet));
            --left[r];
            heap.push(h);
        }
    }
    std::size_t since_poll = 0;
    while (!heap.empty()) {
        if (++since_poll == kWorkPerPoll / 16) {
            poll_cancel(cancel);
            since_poll = 0;
        }
        Head h = heap.top();
        heap.pop();
        sink(h.t);
        if (left[h.run] > 0) {
            readers[h.run].get(&h.t, sizeof(Triplet));
            --left[h.run];
            heap.push(h);
        }
    }
}

double dbl(int64_t x) { return static_cast<double>(std::max<int64_t>(x, 0)); }

std::size_t to_size(double bytes) {
    if (!(bytes < static_cast<double>(std::numeric_limits<std::size_t>::max())))
        return std::numeric_limits<std::size_t>::max();
    return static_cast<std::size_t>(bytes);
}

}  // namespace

// The heap train_passes() holds, stage by stage (every factor is the byte
// size of an exactly sized array it allocates):
//   merge   36 I + (F + 1) buf + 128 F + 32 runs: dictionary 4I, users per
//           item 4I, squared norms 8I, reach 8I, one user's row 12I (items
//           and weights, room for I), F run readers and the matrix writer,
//           the merge heap and counts, the run lists;
//   ranking 48 I: the above without buffers, plus popularity 8I and its sort 4I;
//   passes  64 I + 8 + 12 P + 16 kk + buf + 12 units: dictionary, norms,
//           popularity, row, neighbour offsets 8(I+1), reach 8I, the
//           bookkeeping of a block's items 16I, the neighbours (at most P,
//           reserved exactly), the top-K buffer, the matrix reader, and the
//           arena of the largest block (12 bytes a unit: a dense row is I
//           units, an item's list of products reach(i) + 1; step 3 of
//           train_passes).  The plan counts every item as a dense row: b
//           such rows fit, at least b items a pass.
// P and kk as in estimate_train_bytes: P = min(I min(K, I-1), C (I-1)),
// kk = min(K, I) (I when K = 0).
PassPlan plan_passes(int64_t cells, int64_t users, int64_t items, int neighbors, int64_t runs,
                     std::size_t budget) {
    PassPlan p;
    const double C = dbl(cells), I = std::min(dbl(items), C), R = std::max(dbl(runs), 1.0);
    const double buf = static_cast<double>(kPassIoBuffer);
    p.in_memory = to_size(
        16 * C + static_cast<double>(estimate_train_bytes(cells, users, items, neighbors, CellInput::borrowed)));
    const double per_item_nbrs = I > 1 ? I - 1 : 0;
    const double k_cap = neighbors > 0 ? std::min<double>(neighbors, per_item_nbrs) : per_item_nbrs;
    const double P = std::min(I * k_cap, C * per_item_nbrs);
    const double kk = neighbors > 0 ? std::min<double>(neighbors, I) : I;
    const double merge_fixed = 36 * I + buf + 32 * R;  // + F (buf + 128)
    const double ranking = 48 * I;
    const double pass_fixed = 64 * I + 8 + 12 * P + 16 * kk + buf;  // + b (12 I), b dense rows
    const double per_item = 12 * I;
    const double slack = static_cast<double>(kSlack);
    p.pass_fixed = to_size(pass_fixed);
    p.per_item = to_size(per_item);
    p.minimum = to_size(std::max({merge_fixed + 2 * (buf + 128), ranking, pass_fixed + per_item}) + slack);
    const double B = static_cast<double>(budget);
    if (B < static_cast<double>(p.minimum)) return p;
    const double fan = std::floor((B - slack - merge_fixed) / (buf + 128));
    p.merge_fan_in = static_cast<int64_t>(std::min(std::max(fan, 2.0), std::max(R, 2.0)));
    const double b = I > 0 ? std::min(I, std::floor((B - slack - pass_fixed) / per_item)) : 1;
    p.items_per_pass = static_cast<int64_t>(b);
    p.passes = I > 0 ? static_cast<int64_t>(std::ceil(I / b)) : 0;
    return p;
}

PassPlan plan_passes(int64_t cells, int64_t users, int64_t items, const TrainOptions& opt, int64_t runs,
                     std::size_t budget) {
    const SimilaritySettings s = resolve_settings(opt);
    const double U = std::max(0.0, std::min(dbl(users), dbl(cells))), I = std::max(0.0, std::min(dbl(items), dbl(cells)));
    const std::size_t extra = to_size(detail::similarity_extra_bytes(U, I, s));
    PassPlan p = plan_passes(cells, users, items, opt.neighbors, runs, budget > extra ? budget - extra : 0);
    if (extra == 0) return p;
    // The statistics are held next to whatever the rest needs.
    p.in_memory = to_size(dbl(p.in_memory) + dbl(extra));
    p.minimum = to_size(dbl(p.minimum) + dbl(extra));
    if (budget < p.minimum) p.items_per_pass = p.passes = p.merge_fan_in = 0;
    return p;
}

CellSpill::CellSpill(std::string dir) : dir_(std::move(dir)) {}
CellSpill::~CellSpill() = default;

void CellSpill::add_run(Triplet* cells, std::size_t n, const CancelCheck& cancel) {
    poll_cancel(cancel);
    if (n == 0) return;
    // Validate in input order: the first bad cell is the one train() names.
    for (std::size_t b = 0; b < n; b += kSortBlock) {
        poll_cancel(cancel);
        for (std::size_t k = b; k < std::min(n, b + kSortBlock); ++k)
            if (!(std::isfinite(cells[k].weight) && cells[k].weight > 0))
                detail::validate_cells({cells[k]}, {});  // throws train()'s message
    }
    stable_sort_cells(cells, n, cancel);
    if (!file_) file_.reset(new TempFile(dir_));
    const uint64_t at = runs_.empty() ? 0 : runs_.back().offset + runs_.back().count * sizeof(Triplet);
    {
        Appender out(*file_, at);
        for (std::size_t b = 0; b < n; b += kSortBlock) {
            poll_cancel(cancel);
            const std::size_t e = std::min(n, b + kSortBlock);
            out.put(cells + b, (e - b) * sizeof(Triplet));
        }
        out.flush();
    }
    runs_.push_back(Run{at, n});
    cells_ += static_cast<int64_t>(n);
    // Distinct users of the run (it is sorted by user), and its items merged
    // into the dictionary.
    int64_t users = 1;
    for (std::size_t k = 1; k < n; ++k) users += cells[k].user != cells[k - 1].user;
    users_bound_ = std::min(users_bound_ + users, cells_);
    std::vector<int32_t> run_items(n);
    for (std::size_t k = 0; k < n; ++k) run_items[k] = cells[k].item;
    poll_cancel(cancel);
    std::sort(run_items.begin(), run_items.end());
    run_items.erase(std::unique(run_items.begin(), run_items.end()), run_items.end());
    std::vector<int32_t> merged;
    merged.reserve(items_.size() + run_items.size());
    std::set_union(items_.begin(), items_.end(), run_items.begin(), run_items.end(),
                   std::back_inserter(merged));
    items_.swap(merged);
    items_.shrink_to_fit();
}

std::vector<Triplet> CellSpill::load(const CancelCheck& cancel) const {
    std::vector<Triplet> out(static_cast<std::size_t>(cells_));
    std::size_t at = 0;
    for (const Run& r : runs_) {
        for (uint64_t done = 0; done < r.count;) {
            poll_cancel(cancel);
            const uint64_t k = std::min<uint64_t>(r.count - done, kSortBlock);
            file_->read_at(r.offset + done * sizeof(Triplet), reinterpret_cast<char*>(out.data() + at),
                           static_cast<std::size_t>(k) * sizeof(Triplet));
            at += static_cast<std::size_t>(k);
            done += k;
        }
    }
    return out;
}

Model train_passes(CellSpill& spill, const TrainOptions& opt, std::size_t budget,
                   const CancelCheck& cancel, int64_t* passes_made) {
    if (opt.neighbors < 0)
        throw InvalidInput("recsys: neighbors must be >= 0 (0 keeps all), got " +
                           std::to_string(opt.neighbors));
    // Settings other than 1.0's plain cosine read per-user and per-item
    // statistics (core_similarity.hpp), gathered by two more streaming passes
    // over the matrix file; plan_passes(opt) leaves room for them.
    const SimilaritySettings settings = resolve_settings(opt);
    poll_cancel(cancel);
    const PassPlan plan = plan_passes(spill.cells(), spill.users_bound(), spill.items(), opt, spill.runs(), budget);
    if (plan.passes == 0 && spill.items() > 0)
        throw InvalidInput("recsys: training in passes needs at least " + std::to_string(plan.minimum) +
                           " bytes, the budget is " + std::to_string(budget));
    Model m;
    m.item_ids.swap(spill.items_);
    const std::size_t n_items = m.item_ids.size();
    if (n_items == 0) {
        m.nbr_offsets.assign(1, 0);
        spill.file_.reset();
        spill.runs_.clear();
        return m;
    }

    // 2a. Merge levels until at most F runs are left (each level merges
    // consecutive groups, so run order, and with it input order, is kept).
    std::unique_ptr<TempFile> src = std::move(spill.file_);
    std::vector<CellSpill::Run> runs;
    runs.swap(spill.runs_);
    const std::size_t fan = static_cast<std::size_t>(plan.merge_fan_in);
    while (runs.size() > fan) {
        std::unique_ptr<TempFile> dst(new TempFile(spill.dir_));
        std::vector<CellSpill::Run> next;
        next.reserve((runs.size() + fan - 1) / fan);
        Appender out(*dst, 0);
        for (std::size_t g = 0; g < runs.size(); g += fan) {
            const uint64_t at = out.end();
            uint64_t count = 0;
            merge_runs(*src, runs.data() + g, std::min(fan, runs.size() - g),
                       [&](const Triplet& t) {
                           out.put(&t, sizeof t);
                           ++count;
                       },
                       cancel);
            next.push_back(CellSpill::Run{at, count});
        }
        out.flush();
        runs.swap(next);
        src = std::move(dst);
    }

    // 2b. The last merge writes the user-major matrix: per user, its length
    // (uint32), its dense items ascending (int32), their weights (double).
    std::vector<int32_t> users_of(n_items, 0);   // distinct users per item
    std::vector<double> norm(n_items, 0.0);      // squared, then the norm
    std::vector<uint64_t> reach(n_items, 0);     // sum over users of i of their other items
    std::vector<int32_t> row_items;
    std::vector<double> row_w;
    row_items.reserve(n_items);
    row_w.reserve(n_items);
    TempFile matrix(spill.dir_);
    uint64_t matrix_bytes = 0;
    int64_t n_users = 0, nnz = 0;
    {
        Appender out(matrix, 0);
        int32_t user = 0;
        auto flush_row = [&] {
            const uint32_t len = static_cast<uint32_t>(row_items.size());
            if (len == 0) return;
            out.put(&len, sizeof len);
            out.put(row_items.data(), len * sizeof(int32_t));
            out.put(row_w.data(), len * sizeof(double));
            for (uint32_t q = 0; q < len; ++q) {
                const int32_t i = row_items[q];
                ++users_of[i];
                norm[i] += row_w[q] * row_w[q];
                reach[i] += len - 1;
            }
            ++n_users;
            nnz += len;
            row_items.clear();
            row_w.clear();
        };
        merge_runs(*src, runs.data(), runs.size(),
                   [&](const Triplet& t) {
                       if (!row_items.empty() && t.user != user) flush_row();
                       user = t.user;
                       const int32_t i = static_cast<int32_t>(
                           std::lower_bound(m.item_ids.begin(), m.item_ids.end(), t.item) -
                           m.item_ids.begin());
                       if (!row_items.empty() && row_items.back() == i) {
                           row_w.back() += t.weight;
                           if (!std::isfinite(row_w.back()))
                               throw InvalidInput("recsys: the summed weight of (user " +
                                                  std::to_string(t.user) + ", item " +
                                                  std::to_string(t.item) + ") overflows a double");
                       } else {
                           row_items.push_back(i);
                           row_w.push_back(t.weight);
                       }
                   },
                   cancel);
        flush_row();
        out.flush();
        matrix_bytes = out.end();
    }
    src.reset();  // the runs are no longer needed
    runs.clear();
    runs.shrink_to_fit();
    m.n_users = n_users;
    m.n_cells = nnz;
    poll_cancel(cancel);

    for (std::size_t i = 0; i < n_items; ++i) {
        norm[i] = std::sqrt(norm[i]);
        if (!std::isfinite(norm[i]))
            throw InvalidInput("recsys: weights of item " + std::to_string(m.item_ids[i]) +
                               " are too large: the squared norm overflows a double");
    }
    // The weighting and the similarity's factors, as train() computes them:
    // the same statistics summed in the same order (users ascending, each
    // user's items ascending), so the same doubles.
    std::optional<detail::CellWeighting> weigh;
    std::optional<detail::SimilarityFinish> finish;
    if (!settings.plain()) {
        const std::size_t n_rows = static_cast<std::size_t>(n_users);
        auto each_cell = [&](const auto& fn) {
            Reader in(matrix, 0, matrix_bytes);
            for (std::size_t u = 0; !in.at_end(); ++u) {
                uint32_t len = 0;
                in.get(&len, sizeof len);
                row_items.resize(len);
                row_w.resize(len);
                in.get(row_items.data(), len * sizeof(int32_t));
                in.get(row_w.data(), len * sizeof(double));
                for (uint32_t q = 0; q < len; ++q) fn(u, static_cast<std::size_t>(row_items[q]), row_w[q]);
                if ((u & 1023) == 0) poll_cancel(cancel);
            }
        };
        {
            detail::CellStats st(n_rows, n_items);
            each_cell([&](std::size_t u, std::size_t i, double w) { st.add(u, i, w); });
            weigh.emplace(settings, st);
        }
        detail::WeightedStats xs(n_rows, n_items);
        each_cell([&](std::size_t u, std::size_t i, double w) { xs.add(u, i, (*weigh)(u, i, w)); });
        const std::vector<int64_t> item_users(users_of.begin(), users_of.end());
        finish.emplace(settings, xs, item_users);
    }
    detail::rank_popularity(m, [&](std::size_t i) { return users_of[i]; });
    std::vector<int32_t>().swap(users_of);
    const std::size_t keep = opt.neighbors > 0 ? static_cast<std::size_t>(opt.neighbors) : 0;
    const std::size_t k_cap = keep > 0 ? std::min(keep, n_items - 1) : n_items - 1;
    std::size_t total = 0;
    for (std::size_t i = 0; i < n_items; ++i) total += std::min<std::size_t>(reach[i], k_cap);
    poll_cancel(cancel);

    // 3. Passes over blocks of items.  A block is a run of items [b0, b1)
    // whose rooms fit what the budget leaves the passes (plan_passes:
    // budget - slack - pass_fixed).  Item i's room is the smaller of
    //   - a dense row: its sums by neighbour (8I bytes) and the neighbours
    //     it touched (4I), 12 I bytes, and
    //   - a list of its products in the order the stream makes them (a
    //     product and a neighbour, 12 bytes each; at most reach(i), its
    //     users' other items, and one slot for the branch-free append),
    //     12 (reach(i) + 1) bytes,
    // except that the block's first item always takes a dense row: once it
    // is ranked, that row sums each listed item's products, replayed in
    // their order, before that item is ranked in turn.  Either way each sum
    // adds the same products in the same order (users ascending), so the
    // model does not depend on the rooms.  plan_passes' figures (every item
    // a dense row) bound the number of passes; items of small reach make
    // them far fewer.
    const std::size_t room = to_size(static_cast<double>(budget) - static_cast<double>(kSlack) -
                                     static_cast<double>(plan.pass_fixed));
    const std::size_t dense_units = n_items;  // a unit: 8 bytes in `sums` and 4 in `ids` (below)
    const auto list_units = [&](std::size_t i) { return static_cast<std::size_t>(reach[i]) + 1; };
    const auto listed = [&](std::size_t i) { return list_units(i) < dense_units; };
    // Where the block from b0 ends; its units.
    const auto block_end = [&](std::size_t b0, std::size_t& units) {
        std::size_t e = b0 + 1;
        units = dense_units;
        for (; e < n_items; ++e) {
            const std::size_t add = std::min(list_units(e), dense_units);
            if (12 * (units + add) > room) break;
            units += add;
        }
        return e;
    };
    std::size_t max_units = 0;
    for (std::size_t b0 = 0, units = 0; b0 < n_items;) {
        b0 = block_end(b0, units);
        max_units = std::max(max_units, units);
    }
    m.nbr_offsets.assign(n_items + 1, 0);
    m.nbr_ids.reserve(total);
    m.nbr_sims.reserve(total);
    // The arena: the block's dense rows first (sums in `sums`, touched
    // neighbours in `ids`), its lists after (products in `sums`, neighbours
    // in `ids`).  Per item of the block (by its offset in it): `where` its
    // dense row, or ~ the start of its list; `count` the neighbours its row
    // touched, or its listed products.
    std::vector<double> sums(max_units, 0.0);
    std::vector<int32_t> ids(max_units);
    std::vector<int64_t> where(n_items), count(n_items);
    detail::TopK top(keep);
    top.reserve(keep > 0 ? std::min(keep, n_items) : n_items);
    std::size_t work = 0;
    int64_t passes = 0;
    std::size_t zeroed_rows = 0;  // the dense rows of `sums` known to hold only zeros
    std::vector<double> row_right;  // settings: right(u, x) of the row's cells
    // Ranks the n_touched sums of dense row r as item i's, zeroing them.
    const auto rank_row = [&](std::size_t i, std::size_t r, std::size_t n_touched) {
        double* const a_row = sums.data() + r * n_items;
        const int32_t* const t_row = ids.data() + r * n_items;
        top.clear();
        const double ni = norm[i];
        for (std::size_t t = 0; t < n_touched; ++t) {
            const int32_t j = t_row[t];
            const double dot = a_row[j];
            a_row[j] = 0;
            if (static_cast<std::size_t>(j) == i) continue;
            const double sim = finish ? (*finish)(i, static_cast<std::size_t>(j), dot)
                                      : dot / (ni * norm[static_cast<std::size_t>(j)]);
            if (sim > 0 && std::isfinite(sim)) top.offer(Scored{sim, j});
        }
        work += n_touched + 16;
        for (const Scored& s : top.sorted()) {
            m.nbr_ids.push_back(m.item_ids[static_cast<std::size_t>(s.id)]);
            m.nbr_sims.push_back(s.score);
        }
        m.nbr_offsets[i + 1] = static_cast<int64_t>(m.nbr_ids.size());
    };
    row_items.resize(n_items);  // a row holds at most every item (the room reserved in step 2b)
    row_w.resize(n_items);
    if (opt.progress) opt.progress("similarities", 0, static_cast<int64_t>(n_items));
    for (std::size_t b0 = 0, units = 0; b0 < n_items;) {
        const std::size_t b1 = block_end(b0, units);
        // The rooms: item b0 dense row 0, the other dense rows after it,
        // then the lists.  Rows a list of an earlier block wrote over are
        // zeroed.
        std::size_t rows = 1;
        for (std::size_t i = b0 + 1; i < b1; ++i) rows += !listed(i);
        std::size_t next_row = 0, next_list = rows * n_items;
        for (std::size_t i = b0; i < b1; ++i) {
            if (i == b0 || !listed(i)) {
                where[i - b0] = static_cast<int64_t>(next_row++);
            } else {
                where[i - b0] = ~static_cast<int64_t>(next_list);
                next_list += list_units(i);
            }
            count[i - b0] = 0;
        }
        if (rows > zeroed_rows)
            std::fill(sums.begin() + static_cast<std::ptrdiff_t>(zeroed_rows * n_items),
                      sums.begin() + static_cast<std::ptrdiff_t>(rows * n_items), 0.0);
        zeroed_rows = rows;
        const int32_t lo_item = static_cast<int32_t>(b0), hi_item = static_cast<int32_t>(b1);
        Reader in(matrix, 0, matrix_bytes);
        for (std::size_t u = 0; !in.at_end(); ++u) {
            uint32_t len = 0;
            in.get(&len, sizeof len);
            // Read in place where the buffer holds the row's items (most
            // rows, most of which miss the block).
            const int32_t* items =
                static_cast<const int32_t*>(in.view(len * sizeof(int32_t), row_items.data()));
            work += 1 + len / 16;
            std::size_t lo = 0, hi = 0;
            if (len > 0 && items[len - 1] >= lo_item && items[0] < hi_item) {
                lo = static_cast<std::size_t>(std::lower_bound(items, items + len, lo_item) - items);
                hi = static_cast<std::size_t>(std::lower_bound(items + lo, items + len, hi_item) - items);
            }
            if (lo == hi) {
                in.skip(len * sizeof(double));
            } else {
                if (items != row_items.data() && in.buffered() < len * sizeof(double)) {
                    // Reading the weights refills the buffer: the items first.
                    std::memcpy(row_items.data(), items, len * sizeof(int32_t));
                    items = row_items.data();
                }
                in.get(row_w.data(), len * sizeof(double));
                const double* w = row_w.data();
                const double* xs = w;  // the plain cosine multiplies the weights
                if (finish) {
                    // x = weighting(w); the owner's factor left(i, x), the
                    // neighbour's right(u, x), as train()'s CSC and CSR hold them.
                    row_right.resize(len);
                    for (uint32_t q = 0; q < len; ++q) {
                        const std::size_t iq = static_cast<std::size_t>(items[q]);
                        const double x = (*weigh)(u, iq, row_w[q]);
                        row_right[q] = finish->right(u, x);
                        row_w[q] = finish->left(iq, x);
                    }
                    xs = row_right.data();
                }
                for (std::size_t p = lo; p < hi; ++p) {
                    const std::size_t bi = static_cast<std::size_t>(items[p]) - b0;
                    const double wi = w[p];
                    const int64_t at = where[bi];
                    if (at >= 0) {
                        double* const a_row = sums.data() + static_cast<std::size_t>(at) * n_items;
                        int32_t* const t_row = ids.data() + static_cast<std::size_t>(at) * n_items;
                        int64_t nt = count[bi];
                        for (uint32_t q = 0; q < len; ++q) {
                            const int32_t j = items[q];
                            const double prod = wi * xs[q];
                            const double a = a_row[j];
                            if (a == 0) {
                                if (prod == 0) continue;  // underflow: adds nothing, keep j untouched
                                t_row[nt++] = j;
                            }
                            a_row[j] = a + prod;
                        }
                        count[bi] = nt;
                    } else {
                        // The products in stream order; the item itself
                        // (never its own neighbour) and underflows (which
                        // add nothing) left out.
                        double* const pv = sums.data() + ~at;
                        int32_t* const jv = ids.data() + ~at;
                        int64_t n = count[bi];
                        for (uint32_t q = 0; q < len; ++q) {
                            const double prod = wi * xs[q];
                            jv[n] = items[q];
                            pv[n] = prod;
                            n += (q != p) & (prod != 0);
                        }
                        count[bi] = n;
                    }
                    work += len;
                }
            }
            if (work >= kWorkPerPoll) {
                poll_cancel(cancel);
                work = 0;
            }
        }
        ++passes;
        for (std::size_t i = b0; i < b1; ++i) {
            const std::size_t bi = i - b0;
            const int64_t at = where[bi];
            if (at >= 0) {
                rank_row(i, static_cast<std::size_t>(at), static_cast<std::size_t>(count[bi]));
                continue;
            }
            // Replayed into row 0 (item b0's, ranked and zeroed already):
            // each sum adds its products in the order the stream made them.
            double* const a_row = sums.data();
            int32_t* const t_row = ids.data();
            const double* const pv = sums.data() + ~at;
            const int32_t* const jv = ids.data() + ~at;
            std::size_t nt = 0;
            for (int64_t e = 0; e < count[bi]; ++e) {
                const int32_t j = jv[e];
                const double a = a_row[j];
                if (a == 0) t_row[nt++] = j;
                a_row[j] = a + pv[e];
            }
            work += static_cast<std::size_t>(count[bi]);
            rank_row(i, 0, nt);
            if (work >= kWorkPerPoll) {
                poll_cancel(cancel);
                work = 0;
            }
        }
        if (opt.progress) opt.progress("similarities", static_cast<int64_t>(b1), static_cast<int64_t>(n_items));
        poll_cancel(cancel);
        b0 = b1;
    }
    if (passes_made) *passes_made = passes;
    return m;
}

}  // namespace recsys
