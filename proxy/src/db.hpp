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

typedef struct pg_conn PGconn;

namespace rsproxy {

// Statements take and return ids in the serving functions' types (IdTypes):
// ids are sent as text parameters cast to the type ($1::bigint[],
// $1::uuid), array literals built by array_literal().
enum class Stmt : int {
    Recommend = 0,     // $1 user id[] literal, $2 top_n
    RecommendDetails,  // same + one column: the product's JSON object (LEFT JOIN the products relation)
    RecommendSeen,     // + $3 exclude_seen
    RecommendSeenDetails,
    RecommendFiltered,  // + $3 exclude_seen, $4 include_items, $5 exclude_items (NULL: no filter)
    RecommendFilteredDetails,
    ItemsRecommend,    // recsys_recommend_for_items($1 item id[], $2 top_n, $3 weights, $4 include, $5 exclude) -> one JSON text
    ItemsRecommendDetails,
    Explain,           // recsys_explain($1 user id, $2 product id) -> contributions JSON, their sum, source, rows
    Products,          // $1 limit -> the products relation's id and columns, by id, as one JSON text
    IdTypes,           // -> the user and item id types of the serving functions (format_type), NULL when absent
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

// Where product details come from (--products, --product-id-column,
// --product-columns).  Names are as PostgreSQL stores them; they are quoted
// on the server (format('%I')), never pasted.
struct ProductOptions {
    std::string relation = "products";  // "" = no product details; may be schema-qualified
    std::string id_column = "product_id";
    std::vector<std::string> columns = {"product_name", "category", "price"};
    bool required = false;              // configured explicitly: a missing relation is an error
};

// The products relation as resolved on a connection: SQL fragments built by
// the server from quote_ident'ed names.
struct ProductSql {
    bool on = false;
    std::string relation;   // "schema"."table"
    std::string id_column;  // "col"
    std::string pairs;      // 'col', p."col", ... for json_build_object
};

// The SQL text of a statement; the details statements join `p` when p.on.
// The id types come from a fixed list (id_type_sql), never from a request.
std::string stmt_sql(Stmt s, const ProductSql& p, IdTypes t = IdTypes{});
// A parameter sent as SQL NULL (Pool::submit).
extern const std::string kNullParam;

// Resolves `opt` on `pg` (the connection's search_path finds an unqualified
// relation).  Returns "" and fills `out` (out.on false when an optional
// relation is missing or the relation is ""), or a message saying what is
// wrong: no such relation, a missing column, no SELECT privilege, or a join
// that does not type-check.
std::string resolve_products(PGconn* pg, const ProductOptions& opt, ProductSql& out, IdTypes types = IdTypes{});

// The user and item id types the serving functions take on `pg` (read from
// the catalog: recsys_user_history's and recsys_similar_items' first
// arguments).  False when they cannot be read (no extension, ambiguous).
bool read_id_types(const Rows& rows, IdTypes& out);
bool query_id_types(PGconn* pg, IdTypes& out);

// libpq connection keywords for a DSN: the DSN's own keywords (expanded by
// libpq), connect_timeout, and application_name and options that keep what the
// DSN (or PGAPPNAME / PGOPTIONS) says: the proxy's settings (statement_timeout,
// DateStyle, extra_float_digits) are appended to the DSN's options, so they win
// only for those three.
struct ConnParams {
    std::vector<std::string> keys, values;
    std::string error;  // a DSN libpq cannot parse
};
ConnParams connect_params(const std::string& dsn, int statement_timeout_ms, int connect_timeout_ms);
// Connects with connect_params(); the caller owns the result (check PQstatus).
PGconn* connect_dsn(const std::string& dsn, int statement_timeout_ms, int connect_timeout_ms);

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
    ProductOptions products;
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
    // Shutdown past its grace period: answers the queued jobs `Unavailable` and
    // sends a cancel request (PQcancel) for every statement that is running.
    void cancel_all();

    // Runs one prepared statement; `done` is called exactly once, on a worker
    // thread (or inline when the pool is unavailable).
    // A parameter equal to kNullParam is sent as NULL; `types` picks the
    // statement's id casts.
    void submit(Stmt stmt, std::vector<std::string> params, DbCallback done, IdTypes types = IdTypes{});
    // recsys_recommend for `ids` (canonical texts); concurrent calls with the
    // same top_n, details, exclude_seen, filters and types may be merged into
    // one statement.  `rows` in the outcome then holds only the rows of this
    // call's ids.
    void submit_recommend(std::vector<std::string> ids, const RecRequest& shape, DbCallback done);
    // The id types requests are parsed with (app.cpp reads them at start and
    // when the active model changes); a new connection checks the products
    // join with them.
    void set_types(IdTypes t) { types_.store(static_cast<int>(t.user) * 16 + static_cast<int>(t.item)); }
    IdTypes types() const {
        int v = types_.load();
        return IdTypes{static_cast<IdType>(v / 16), static_cast<IdType>(v % 16)};
    }

    long in_use() const { return in_use_.load(); }
    long waiting() const;
    long size() const { return static_cast<long>(workers_.size()); }
    long healthy_dsns() const;
    long dsns() const { return static_cast<long>(dsn_state_.size()); }
    // Per DSN (in --dsn order): 1 when healthy, and statements run on it.
    std::vector<std::pair<bool, uint64_t>> dsn_stats() const;
    std::function<void(const std::string&)> on_db_error;  // metrics hook (sqlstate or "connection"/"timeout")
    std::function<void(const std::string&)> on_product_error;  // a connection cannot use the products relation

private:
    struct Job {
        Stmt stmt;
        std::vector<std::string> params;  // for a batchable job: the parameters after $1 (ids)
        IdTypes types;
        bool batchable = false;
        std::vector<std::string> ids;
        bool retried = false;
        int avoid_dsn = -1;  // the DSN whose connection broke under this job (-1: none)
        std::chrono::steady_clock::time_point deadline;  // acquire deadline
        DbCallback done;
    };
    // Batchable jobs with the same statement, id types and parameters after
    // $1 (top_n, exclude_seen, the filters' literals) may share one statement.
    static bool same_statement(const Job& a, const Job& b) {
        return a.stmt == b.stmt && a.types == b.types && a.params == b.params;
    }
    struct DsnState {
        std::string dsn;
        // Down only when a connect failed while no connection of this DSN was
        // live: one connection refused (e.g. CONNECTION LIMIT) does not take
        // down a DSN whose other connections serve.
        std::atomic<bool> healthy{true};
        std::atomic<int> connected{0};
        std::atomic<uint64_t> statements{0};
    };
    struct Conn;

    void enqueue(Job job);
    void worker(std::size_t dsn_index, std::size_t worker_index);
    void reap();
    bool any_healthy() const;
    bool other_dsn_serving(int dsn) const;
    bool runnable_on(const Job& j, std::size_t dsn) const;
    std::deque<Job>::iterator next_job_for(std::size_t dsn);
    void requeue_front(std::vector<Job>& jobs, std::size_t dsn);
    void fail_all_queued(const DbOutcome& o);
    void run_jobs(Conn& c, std::size_t dsn, std::vector<Job>& jobs);
    void clear_running(std::size_t worker);
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
    std::atomic<int> types_{0};
    // One cancel handle per worker while it runs a statement (under cancel_mu_).
    std::mutex cancel_mu_;
    std::vector<void*> running_;  // PGcancel*, indexed by worker
    bool cancelling_ = false;
};

}  // namespace rsproxy
