// db.hpp - the bounded libpq pool of recsys-proxy.
//
// Each DSN gets `pool_size` worker threads, each owning one connection (a
// libpq connection is never shared between threads).  Requests wait in one
// shared FIFO queue; a worker with a live connection takes the next one, so
// reads spread over every healthy DSN and a DSN whose connections fail is
// skipped until a reconnect succeeds (exponential backoff 50 ms .. 1 s).
// A request whose connection broke is retried once, on another DSN when one
// has live connections (so a stopped primary costs no request while a standby
// serves), and a worker checks that its idle connection was not closed by the
// server before it sends a request on it.
// Queries run with PQsendQueryPrepared + poll() against a deadline, so a hung
// server never holds a request past statement_timeout + 1 s.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "api.hpp"

namespace rsproxy {

enum class Stmt : int {
    Recommend = 0,     // $1 int[] literal, $2 top_n
    RecommendDetails,  // same + product columns (LEFT JOIN products)
    Similar,           // $1 product_id, $2 top_n -> one JSON text
    SimilarDetails,
    History,           // $1 user_id, $2 max_items -> one JSON text
    HistoryDetails,
    ModelActive,       // -> one JSON text or no row
    Evaluations,       // -> one JSON text
    ActiveModelId,     // -> model_id or no row
    ModelStatus,       // -> one row: active model_id, created_at and age (NULL when none), runs view readable
    LastTraining,      // -> the newest finished training: status, seconds, finished_at; or no row
    Count
};

const char* stmt_sql(Stmt s);

struct DbOutcome {
    enum Kind { Ok, SqlError, Unavailable, AcquireTimeout, ClientTimeout };
    Kind kind = Ok;
    const Rows* rows = nullptr;  // valid during the callback only (Ok)
    std::string sqlstate, message, detail, hint;
};

using DbCallback = std::function<void(const DbOutcome&)>;

struct PoolOptions {
    std::vector<std::string> dsns;
    int pool_size = 4;
    int acquire_timeout_ms = 1000;
    int statement_timeout_ms = 5000;
    int connect_timeout_ms = 2000;
    int max_batch = 64;
    std::size_t max_batch_ids = 1000;
};

class Pool {
public:
    explicit Pool(PoolOptions opt);
    ~Pool();
    Pool(const Pool&) = delete;
    Pool& operator=(const Pool&) = delete;

    void start();
    // Finishes the queued jobs (or fails them when no DSN is healthy) and joins.
    void stop();

    // Runs one prepared statement; `done` is called exactly once, on a worker
    // thread (or inline when the pool is unavailable).
    void submit(Stmt stmt, std::vector<std::string> params, DbCallback done);
    // recsys_recommend for `ids`; concurrent calls with the same (top_n,
    // details) may be merged into one statement.  `rows` in the outcome then
    // holds only the rows of this call's ids.
    void submit_recommend(std::vector<int32_t> ids, int top_n, bool details, DbCallback done);

    long in_use() const { return in_use_.load(); }
    long waiting() const;
    long size() const { return static_cast<long>(workers_.size()); }
    long healthy_dsns() const;
    long dsns() const { return static_cast<long>(dsn_state_.size()); }
    // Per DSN (in --dsn order): 1 when healthy, and statements run on it.
    std::vector<std::pair<bool, uint64_t>> dsn_stats() const;
    std::function<void(const std::string&)> on_db_error;  // metrics hook (sqlstate or "connection"/"timeout")

private:
    struct Job {
        Stmt stmt;
        std::vector<std::string> params;
        bool batchable = false;
        std::vector<int32_t> ids;
        int top_n = 0;
        bool details = false;
        bool retried = false;
        int avoid_dsn = -1;  // the DSN whose connection broke under this job (-1: none)
        std::chrono::steady_clock::time_point deadline;  // acquire deadline
        DbCallback done;
    };
    struct DsnState {
        std::string dsn;
        std::atomic<bool> healthy{true};
        std::atomic<int> connected{0};
        std::atomic<uint64_t> statements{0};
    };
    struct Conn;

    void enqueue(Job job);
    void worker(std::size_t dsn_index);
    void reap();
    bool any_healthy() const;
    bool other_dsn_serving(int dsn) const;
    bool runnable_on(const Job& j, std::size_t dsn) const;
    std::deque<Job>::iterator next_job_for(std::size_t dsn);
    void requeue_front(std::vector<Job>& jobs, std::size_t dsn);
    void fail_all_queued(const DbOutcome& o);
    void run_jobs(Conn& c, std::size_t dsn, std::vector<Job>& jobs);
    static void fail(Job& j, DbOutcome::Kind k, const std::string& msg);

    PoolOptions opt_;
    std::vector<std::unique_ptr<DsnState>> dsn_state_;
    std::vector<std::thread> workers_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<Job> queue_;
    bool stopping_ = false;
    bool stopped_ = false;
    std::thread reaper_;
    std::condition_variable reaper_cv_;
    bool reaper_stop_ = false;
    std::atomic<long> in_use_{0};
};

}  // namespace rsproxy
