// db.cpp - see db.hpp.
#include "db.hpp"

#include <malloc.h>
#include <poll.h>

#include <algorithm>
#include <bitset>
#include <cstdlib>
#include <cstring>
#include <unordered_map>

#include <libpq-fe.h>

namespace rsproxy {

using Clock = std::chrono::steady_clock;

// Results with at least this many rows are returned to the system (malloc_trim)
// once freed, so a burst of large answers does not stay in RSS.
constexpr int kTrimAfterRows = 100000;

namespace {
std::string trim_msg(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}
}  // namespace

const std::string kNullParam("\x01NULL", 5);

std::string stmt_sql(Stmt s, const ProductSql& p, IdTypes t) {
    // The product fields: json_build_object('col', p."col", ...) over the
    // resolved relation, all names quoted by the server (resolve_products).
    const std::string join = p.on ? " LEFT JOIN " + p.relation + " p ON p." + p.id_column + " = " : std::string();
    const std::string u = id_type_sql(t.user), i = id_type_sql(t.item);
    const std::string pairs = p.on ? ", " + p.pairs : std::string();
    switch (s) {
        case Stmt::Recommend:
        case Stmt::RecommendSeen:
        case Stmt::RecommendFiltered:
        case Stmt::RecommendDetails:
        case Stmt::RecommendSeenDetails:
        case Stmt::RecommendFilteredDetails: {
            const bool det = s == Stmt::RecommendDetails || s == Stmt::RecommendSeenDetails ||
                             s == Stmt::RecommendFilteredDetails;
            std::string call = "recsys_recommend($1::" + u + "[], $2";
            if (s == Stmt::RecommendSeen || s == Stmt::RecommendSeenDetails) call += ", $3::boolean";
            if (s == Stmt::RecommendFiltered || s == Stmt::RecommendFilteredDetails)
                call += ", $3::boolean, $4::" + i + "[], $5::" + i + "[]";
            call += ")";
            if (!det || !p.on) return "SELECT user_id, product_id, score, rank, source FROM " + call;
            return "SELECT r.user_id, r.product_id, r.score, r.rank, r.source, json_build_object(" + p.pairs +
                   ")::text FROM " + call + " r" + join + "r.product_id";
        }
        case Stmt::ItemsRecommend:
        case Stmt::ItemsRecommendDetails: {
            const bool det = s == Stmt::ItemsRecommendDetails;
            const std::string call = "recsys_recommend_for_items($1::" + i + "[], $2::integer, $3::float8[], $4::" + i +
                                     "[], $5::" + i + "[]) r";
            if (!det)
                return "SELECT coalesce(json_agg(r.product_id ORDER BY r.rank), '[]')::text FROM " + call;
            return "SELECT coalesce(json_agg(json_build_object('product_id', r.product_id, 'score', r.score, 'rank', "
                   "r.rank, 'source', r.source" + pairs + ") ORDER BY r.rank), '[]')::text FROM " + call +
                   (p.on ? join + "r.product_id" : std::string());
        }
        case Stmt::Explain:
            // Popularity fill: one row with a NULL history_item; it is not a contribution.
            return "SELECT coalesce(json_agg(json_build_object('history_item', e.history_item, 'weight', e.weight, "
                   "'similarity', e.similarity, 'contribution', e.contribution" + pairs +
                   ") ORDER BY e.contribution DESC, e.history_item) FILTER (WHERE e.history_item IS NOT NULL), "
                   "'[]')::text, sum(e.contribution)::float8, min(e.source), count(*) FROM recsys_explain($1::" + u +
                   ", $2::" + i + ") e" + (p.on ? join + "e.history_item" : std::string());
        case Stmt::Products:
            if (!p.on) return "SELECT '[]'::text WHERE $1::int IS NOT NULL";
            return "SELECT coalesce(json_agg(json_build_object('product_id', p." + p.id_column + pairs + ") ORDER BY p." +
                   p.id_column + "), '[]')::text FROM (SELECT * FROM " + p.relation + " p ORDER BY p." + p.id_column +
                   " LIMIT $1::int) p";
        case Stmt::IdTypes:
            return "SELECT pg_catalog.format_type(u.proargtypes[0], NULL), pg_catalog.format_type(i.proargtypes[0], "
                   "NULL) FROM (SELECT) AS one "
                   "LEFT JOIN pg_catalog.pg_proc u ON u.oid = pg_catalog.to_regproc('recsys_user_history') "
                   "LEFT JOIN pg_catalog.pg_proc i ON i.oid = pg_catalog.to_regproc('recsys_similar_items')";
        case Stmt::Similar:
        case Stmt::SimilarDetails:
            return "SELECT coalesce(json_agg(json_build_object('product_id', s.product_id, 'similarity', "
                   "s.similarity, 'rank', s.rank" + (s == Stmt::SimilarDetails && p.on ? ", " + p.pairs : std::string()) +
                   ") ORDER BY s.rank), '[]')::text FROM recsys_similar_items($1::" + i + ", $2::int) s" +
                   (s == Stmt::SimilarDetails && p.on ? join + "s.product_id" : std::string());
        case Stmt::History:
        case Stmt::HistoryDetails:
            return "SELECT coalesce(json_agg(json_build_object('product_id', h.product_id, 'weight', h.weight, "
                   "'last_event', h.last_event" + (s == Stmt::HistoryDetails && p.on ? ", " + p.pairs : std::string()) +
                   ") ORDER BY h.last_event DESC, h.product_id), '[]')::text "
                   "FROM recsys_user_history($1::" + u + ", $2::int) h" +
                   (s == Stmt::HistoryDetails && p.on ? join + "h.product_id" : std::string());
        case Stmt::ModelActive:
            return "SELECT row_to_json(m)::text FROM recsys_models m WHERE m.active LIMIT 1";
        case Stmt::Evaluations:
            return "SELECT coalesce(json_agg(e ORDER BY e.evaluated_at DESC, e.k), '[]')::text "
                   "FROM recsys_evaluations e";
        case Stmt::ActiveModelId:
            return "SELECT model_id FROM recsys_models WHERE active LIMIT 1";
        case Stmt::ModelStatus:
            // Always one row; the last column says whether LastTraining can run
            // (the view is missing before 1.1, or the role may not read it).
            return "SELECT m.model_id, date_part('epoch', m.created_at)::float8, "
                   "date_part('epoch', clock_timestamp() - m.created_at)::float8, "
                   "coalesce(has_table_privilege(to_regclass('recsys_training_runs'), 'SELECT'), false) "
                   "FROM (SELECT) AS one LEFT JOIN (SELECT model_id, created_at FROM recsys_models WHERE active "
                   "LIMIT 1) m ON true";
        case Stmt::LastTraining:
            return "SELECT status, seconds::float8, date_part('epoch', finished_at)::float8 "
                   "FROM recsys_training_runs WHERE kind = 'train' AND status <> 'running' "
                   "ORDER BY coalesce(finished_at, started_at) DESC, run_id DESC LIMIT 1";
        default:
            return "SELECT 1";
    }
}

namespace {

// Names are compared as PostgreSQL stores them and come back quoted by
// format('%I'); the relation is found by to_regclass (the connection's search_path).
const char* kResolveProducts =
    "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname), pg_catalog.has_table_privilege(c.oid, 'SELECT'), "
    "(SELECT pg_catalog.format('%I', a.attname) FROM pg_catalog.pg_attribute a "
    "  WHERE a.attrelid = c.oid AND a.attname = $2::name AND a.attnum > 0 AND NOT a.attisdropped), "
    "(SELECT pg_catalog.string_agg(pg_catalog.format('%L, p.%I', u.col, u.col), ', ' ORDER BY u.i) "
    "   FROM pg_catalog.unnest($3::text[]) WITH ORDINALITY AS u(col, i)), "
    "(SELECT pg_catalog.string_agg(pg_catalog.quote_ident(u.col), ', ' ORDER BY u.i) "
    "   FROM pg_catalog.unnest($3::text[]) WITH ORDINALITY AS u(col, i) WHERE NOT EXISTS ("
    "     SELECT FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attname = u.col::name "
    "        AND a.attnum > 0 AND NOT a.attisdropped)) "
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.oid = pg_catalog.to_regclass($1)";

}  // namespace

bool read_id_types(const Rows& rows, IdTypes& out) {
    if (rows.nrows() < 1 || rows.ncols() < 2 || rows.is_null(0, 0) || rows.is_null(0, 1)) return false;
    IdTypes t;
    if (!id_type_from_sql(rows.get(0, 0), t.user) || !id_type_from_sql(rows.get(0, 1), t.item)) return false;
    out = t;
    return true;
}

std::string resolve_products(PGconn* pg, const ProductOptions& opt, ProductSql& out, IdTypes types) {
    out = ProductSql{};
    if (opt.relation.empty() || opt.columns.empty()) return "";
    std::string cols = array_literal(opt.columns);
    const char* pv[3] = {opt.relation.c_str(), opt.id_column.c_str(), cols.c_str()};
    // The catalog lookups get their own time (a tiny --statement-timeout is
    // for the serving queries); RESET returns to the connection's setting.
    PQclear(PQexec(pg, "SET statement_timeout = '10s'"));
    PGresult* r = PQexecParams(pg, kResolveProducts, 3, nullptr, pv, nullptr, nullptr, 0);
    std::string err;
    const std::string what = "--products " + opt.relation;
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        err = what + ": " + (r ? std::string(PQresultErrorMessage(r)) : std::string(PQerrorMessage(pg)));
        while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
    } else if (PQntuples(r) == 0) {
        if (opt.required) err = what + ": no such relation (searched with the connection's search_path)";
    } else if (opt.required && std::strcmp(PQgetvalue(r, 0, 1), "t") != 0) {
        // (Left to the queries otherwise: they answer 42501, a 403 that names the relation.)
        err = what + ": the role may not SELECT it (GRANT SELECT ON " + std::string(PQgetvalue(r, 0, 0)) +
              " TO the proxy's role)";
    } else if (PQgetisnull(r, 0, 2)) {
        err = what + ": it has no column \"" + opt.id_column + "\" (--product-id-column)";
    } else if (!PQgetisnull(r, 0, 4)) {
        err = what + ": it has no column " + std::string(PQgetvalue(r, 0, 4)) + " (--product-columns)";
    } else {
        out.on = true;
        out.relation = PQgetvalue(r, 0, 0);
        out.id_column = PQgetvalue(r, 0, 2);
        out.pairs = PQgetvalue(r, 0, 3);
    }
    if (r) PQclear(r);
    if (!err.empty() || !out.on) {
        PQclear(PQexec(pg, "RESET statement_timeout"));
        return err;
    }
    // The join must type-check against the ids recsys_recommend returns.
    r = PQprepare(pg, "", stmt_sql(Stmt::RecommendDetails, out, types).c_str(), 0, nullptr);
    std::string sqlstate = r && PQresultErrorField(r, PG_DIAG_SQLSTATE) ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : "";
    std::string msg = r && PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : "";
    if (r) PQclear(r);
    PQclear(PQexec(pg, "RESET statement_timeout"));
    if (sqlstate == "42804" || (sqlstate == "42883" && msg.find("operator") != std::string::npos)) {
        out = ProductSql{};
        return what + ": its column " + opt.id_column + " cannot be joined to the recommended product ids: " + msg;
    }
    return "";
}

ConnParams connect_params(const std::string& dsn, int statement_timeout_ms, int connect_timeout_ms) {
    ConnParams p;
    std::string app = "recsys-proxy", user_opts;
    bool dsn_timeout = false;
    if (const char* v = std::getenv("PGAPPNAME"); v && *v) app = v;
    if (const char* v = std::getenv("PGOPTIONS"); v && *v) user_opts = v;
    if (const char* v = std::getenv("PGCONNECT_TIMEOUT"); v && *v) dsn_timeout = true;
    if (!dsn.empty()) {
        char* err = nullptr;
        PQconninfoOption* opts = PQconninfoParse(dsn.c_str(), &err);
        if (!opts) {
            p.error = err ? trim_msg(err) : "cannot parse the DSN";
            if (err) PQfreemem(err);
            return p;
        }
        for (PQconninfoOption* o = opts; o->keyword; ++o) {
            if (!o->val) continue;
            if (std::strcmp(o->keyword, "application_name") == 0 && *o->val) app = o->val;
            else if (std::strcmp(o->keyword, "options") == 0) user_opts = o->val;
            else if (std::strcmp(o->keyword, "connect_timeout") == 0 && *o->val) dsn_timeout = true;
        }
        PQconninfoFree(opts);
        p.keys.push_back("dbname");  // expanded by libpq (expand_dbname); the later keywords override
        p.values.push_back(dsn);
    }
    if (!dsn_timeout) {
        p.keys.push_back("connect_timeout");
        p.values.push_back(std::to_string(std::max(1, (connect_timeout_ms + 999) / 1000)));
    }
    p.keys.push_back("application_name");
    p.values.push_back(app);
    std::string o = user_opts;
    if (!o.empty()) o.push_back(' ');
    o += "-c statement_timeout=" + std::to_string(statement_timeout_ms) + " -c DateStyle=ISO,YMD -c extra_float_digits=1";
    p.keys.push_back("options");
    p.values.push_back(o);
    return p;
}

PGconn* connect_dsn(const std::string& dsn, int statement_timeout_ms, int connect_timeout_ms) {
    ConnParams p = connect_params(dsn, statement_timeout_ms, connect_timeout_ms);
    if (!p.error.empty()) return nullptr;
    std::vector<const char*> k, v;
    for (std::size_t i = 0; i < p.keys.size(); ++i) {
        k.push_back(p.keys[i].c_str());
        v.push_back(p.values[i].c_str());
    }
    k.push_back(nullptr);
    v.push_back(nullptr);
    return PQconnectdbParams(k.data(), v.data(), 1);
}

static bool is_details(Stmt s) {
    return s == Stmt::RecommendDetails || s == Stmt::RecommendSeenDetails || s == Stmt::RecommendFilteredDetails ||
           s == Stmt::Products ||
           s == Stmt::ItemsRecommendDetails || s == Stmt::SimilarDetails || s == Stmt::HistoryDetails;
}
static Stmt without_details(Stmt s) {
    switch (s) {
        case Stmt::RecommendDetails: return Stmt::Recommend;
        case Stmt::RecommendSeenDetails: return Stmt::RecommendSeen;
        case Stmt::RecommendFilteredDetails: return Stmt::RecommendFiltered;
        case Stmt::ItemsRecommendDetails: return Stmt::ItemsRecommend;
        case Stmt::SimilarDetails: return Stmt::Similar;
        case Stmt::HistoryDetails: return Stmt::History;
        default: return s;
    }
}

namespace {

class PgRows : public Rows {
public:
    explicit PgRows(const PGresult* r) : r_(r) {}
    int nrows() const override { return PQntuples(r_); }
    int ncols() const override { return PQnfields(r_); }
    bool is_null(int r, int c) const override { return PQgetisnull(r_, r, c); }
    std::string_view get(int r, int c) const override {
        return std::string_view(PQgetvalue(r_, r, c), static_cast<std::size_t>(PQgetlength(r_, r, c)));
    }
private:
    const PGresult* r_;
};

// A view of some rows of another Rows (one merged request's share of a batch).
class SubsetRows : public Rows {
public:
    SubsetRows(const Rows& base, std::vector<int> idx) : base_(base), idx_(std::move(idx)) {}
    int nrows() const override { return static_cast<int>(idx_.size()); }
    int ncols() const override { return base_.ncols(); }
    bool is_null(int r, int c) const override { return base_.is_null(idx_[r], c); }
    std::string_view get(int r, int c) const override { return base_.get(idx_[r], c); }
private:
    const Rows& base_;
    std::vector<int> idx_;
};

}  // namespace

bool query_id_types(PGconn* pg, IdTypes& out) {
    PGresult* r = PQexec(pg, stmt_sql(Stmt::IdTypes, ProductSql{}).c_str());
    bool ok = false;
    if (r && PQresultStatus(r) == PGRES_TUPLES_OK) {
        PgRows rows(r);
        ok = read_id_types(rows, out);
    }
    if (r) PQclear(r);
    return ok;
}

namespace {

std::string field(const PGresult* r, int code) {
    const char* v = PQresultErrorField(r, code);
    return v ? std::string(v) : std::string();
}

// Server notices (e.g. "terminating connection due to administrator command")
// go to stderr as JSON lines, like the access log, instead of libpq's plain text.
void json_notice(void*, const char* message) {
    std::string line = "{\"event\":\"pg_notice\",\"message\":";
    std::string m = message ? message : "";
    while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
    append_json_string(line, m);
    line += "}\n";
    std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace

struct Pool::Conn {
    PGconn* pg = nullptr;
    PGcancel* cancel = nullptr;
    std::bitset<static_cast<int>(Stmt::Count) * 16> prepared;  // by statement and id types
    ProductSql products;
    std::string product_error;  // why details are unavailable on this connection
    ~Conn() { close(); }
    void close() {
        if (cancel) PQfreeCancel(cancel);
        cancel = nullptr;
        if (pg) PQfinish(pg);
        pg = nullptr;
        prepared.reset();
    }
    bool ok() const { return pg && PQstatus(pg) == CONNECTION_OK; }
};

Pool::Pool(PoolOptions opt) : opt_(std::move(opt)) {
    if (opt_.dsns.empty()) opt_.dsns.push_back("");
    for (const auto& d : opt_.dsns) {
        auto s = std::make_unique<DsnState>();
        s->dsn = d;
        dsn_state_.push_back(std::move(s));
    }
}

Pool::~Pool() { stop(); }

void Pool::start() {
    running_.assign(dsn_state_.size() * static_cast<std::size_t>(opt_.pool_size), nullptr);
    std::size_t w = 0;
    for (std::size_t d = 0; d < dsn_state_.size(); ++d)
        for (int i = 0; i < opt_.pool_size; ++i, ++w) workers_.emplace_back([this, d, w] { worker(d, w); });
    reaper_ = std::thread([this] { reap(); });
}

// Answers 504 to queued requests whose acquire deadline passed while every
// connection was busy (checked every 20 ms).
void Pool::reap() {
    std::unique_lock<std::mutex> lk(mu_);
    while (!reaper_stop_) {
        reaper_cv_.wait_for(lk, std::chrono::milliseconds(20));
        if (reaper_stop_) break;
        auto now = Clock::now();
        std::vector<Job> expired;
        for (auto it = queue_.begin(); it != queue_.end();) {
            if (now > it->deadline) {
                expired.push_back(std::move(*it));
                it = queue_.erase(it);
            } else {
                ++it;
            }
        }
        if (expired.empty()) continue;
        lk.unlock();
        for (auto& j : expired) {
            if (on_db_error) on_db_error("acquire_timeout");
            fail(j, DbOutcome::AcquireTimeout, "timed out waiting for a database connection");
        }
        lk.lock();
    }
}

void Pool::stop() {
    {
        std::lock_guard<std::mutex> g(mu_);
        if (stopped_) return;
        stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_)
        if (t.joinable()) t.join();
    workers_.clear();
    {
        std::lock_guard<std::mutex> g(mu_);
        reaper_stop_ = true;
        stopped_ = true;
    }
    reaper_cv_.notify_all();
    if (reaper_.joinable()) reaper_.join();
    DbOutcome o;
    o.kind = DbOutcome::Unavailable;
    o.message = "the proxy is shutting down";
    fail_all_queued(o);
}

void Pool::clear_running(std::size_t w) {
    std::lock_guard<std::mutex> g(cancel_mu_);
    running_[w] = nullptr;
}

void Pool::cancel_all() {
    DbOutcome o;
    o.kind = DbOutcome::Unavailable;
    o.message = "the proxy is shutting down";
    fail_all_queued(o);
    std::lock_guard<std::mutex> g(cancel_mu_);
    cancelling_ = true;
    char err[256];
    for (void* c : running_)
        if (c) PQcancel(static_cast<PGcancel*>(c), err, sizeof err);
}

long Pool::waiting() const {
    std::lock_guard<std::mutex> g(mu_);
    return static_cast<long>(queue_.size());
}

long Pool::healthy_dsns() const {
    long n = 0;
    for (const auto& d : dsn_state_) n += d->healthy.load() ? 1 : 0;
    return n;
}

std::vector<std::pair<bool, uint64_t>> Pool::dsn_stats() const {
    std::vector<std::pair<bool, uint64_t>> v;
    for (const auto& d : dsn_state_) v.emplace_back(d->healthy.load(), d->statements.load());
    return v;
}

bool Pool::any_healthy() const { return healthy_dsns() > 0; }

// True when a DSN other than `dsn` is healthy and has a live connection.
bool Pool::other_dsn_serving(int dsn) const {
    for (std::size_t d = 0; d < dsn_state_.size(); ++d)
        if (static_cast<int>(d) != dsn && dsn_state_[d]->healthy.load() && dsn_state_[d]->connected.load() > 0)
            return true;
    return false;
}

// A job whose connection broke on DSN d goes to another DSN while one serves.
bool Pool::runnable_on(const Job& j, std::size_t dsn) const {
    return j.avoid_dsn != static_cast<int>(dsn) || !other_dsn_serving(j.avoid_dsn);
}

// The first queued job this DSN's worker may run (mu_ held).
std::deque<Pool::Job>::iterator Pool::next_job_for(std::size_t dsn) {
    auto it = queue_.begin();
    while (it != queue_.end() && !runnable_on(*it, dsn)) ++it;
    return it;
}

// Puts jobs that did not reach the server back at the head of the queue, in
// order, steering them away from `dsn`.
void Pool::requeue_front(std::vector<Job>& jobs, std::size_t dsn) {
    {
        std::lock_guard<std::mutex> g(mu_);
        for (auto it = jobs.rbegin(); it != jobs.rend(); ++it) {
            it->avoid_dsn = static_cast<int>(dsn);
            queue_.push_front(std::move(*it));
        }
    }
    jobs.clear();
    cv_.notify_all();
}

void Pool::fail(Job& j, DbOutcome::Kind k, const std::string& msg) {
    DbOutcome o;
    o.kind = k;
    o.message = msg;
    if (j.done) j.done(o);
}

void Pool::fail_all_queued(const DbOutcome& o) {
    std::deque<Job> q;
    {
        std::lock_guard<std::mutex> g(mu_);
        q.swap(queue_);
    }
    for (auto& j : q)
        if (j.done) j.done(o);
}

void Pool::enqueue(Job job) {
    bool refuse = false;
    {
        std::lock_guard<std::mutex> g(mu_);
        refuse = stopped_;
        if (!refuse && any_healthy()) {
            job.deadline = Clock::now() + std::chrono::milliseconds(opt_.acquire_timeout_ms);
            queue_.push_back(std::move(job));
        } else {
            refuse = true;
        }
    }
    if (refuse) {
        fail(job, DbOutcome::Unavailable, "the database is unreachable");
        return;
    }
    cv_.notify_one();
}

void Pool::submit(Stmt stmt, std::vector<std::string> params, DbCallback done, IdTypes types) {
    Job j;
    j.stmt = stmt;
    j.params = std::move(params);
    j.types = types;
    j.done = std::move(done);
    enqueue(std::move(j));
}

void Pool::submit_recommend(std::vector<std::string> ids, const RecRequest& shape, DbCallback done) {
    Job j;
    j.types = shape.types;
    j.params.reserve(4);
    j.params.push_back(std::to_string(shape.top_n));
    if (shape.filtered()) {
        j.stmt = shape.details ? Stmt::RecommendFilteredDetails : Stmt::RecommendFiltered;
        j.params.push_back(shape.exclude_seen == 0 ? "false" : "true");
        j.params.push_back(shape.include_items.given ? array_literal(shape.include_items.ids) : kNullParam);
        j.params.push_back(shape.exclude_items.given ? array_literal(shape.exclude_items.ids) : kNullParam);
    } else if (shape.exclude_seen >= 0) {
        j.stmt = shape.details ? Stmt::RecommendSeenDetails : Stmt::RecommendSeen;
        j.params.push_back(shape.exclude_seen ? "true" : "false");
    } else {
        j.stmt = shape.details ? Stmt::RecommendDetails : Stmt::Recommend;
    }
    j.batchable = true;
    j.ids = std::move(ids);
    j.done = std::move(done);
    enqueue(std::move(j));
}

namespace {

// Waits for the complete result of the command sent on `pg`.  Returns the
// last non-null PGresult (caller clears) or nullptr with `timed_out`/`broken`.
PGresult* wait_result(PGconn* pg, Clock::time_point deadline, bool& timed_out) {
    timed_out = false;
    if (PQflush(pg) != 0) {
        // nonblocking flush pending: keep flushing until done or deadline
        while (true) {
            int f = PQflush(pg);
            if (f == 0) break;
            if (f < 0) return nullptr;
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
            if (left <= 0) { timed_out = true; return nullptr; }
            pollfd p{PQsocket(pg), POLLOUT | POLLIN, 0};
            ::poll(&p, 1, static_cast<int>(left));
        }
    }
    PGresult* last = nullptr;
    while (true) {
        while (PQisBusy(pg)) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
            if (left <= 0) {
                timed_out = true;
                if (last) PQclear(last);
                return nullptr;
            }
            pollfd p{PQsocket(pg), POLLIN, 0};
            int pr = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
            if (pr < 0 && errno != EINTR) {
                if (last) PQclear(last);
                return nullptr;
            }
            if (pr > 0 && !PQconsumeInput(pg)) {
                // connection lost; fall through to PQgetResult, which reports it
                break;
            }
        }
        PGresult* r = PQgetResult(pg);
        if (!r) break;
        if (last) PQclear(last);
        last = r;
        if (PQstatus(pg) == CONNECTION_BAD) {
            // drain whatever is left without blocking forever
            break;
        }
    }
    return last;
}

// True when the server has closed an idle connection (e.g. a fast shutdown
// sends FATAL 57P01 and hangs up): checked without blocking before a request
// is sent on it, so the request does not spend its one retry on a dead socket.
bool closed_by_server(PGconn* pg) {
    pollfd p{PQsocket(pg), POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    if (!PQconsumeInput(pg)) return true;
    return PQstatus(pg) != CONNECTION_OK;
}

}  // namespace

void Pool::worker(std::size_t di, std::size_t wi) {
    DsnState& ds = *dsn_state_[di];
    Conn conn;
    int backoff_ms = 50;
    while (true) {
        if (!conn.ok()) {
            conn.close();
            {
                std::lock_guard<std::mutex> g(mu_);
                if (stopping_ && queue_.empty()) return;
            }
            conn.pg = connect_dsn(ds.dsn, opt_.statement_timeout_ms, opt_.connect_timeout_ms);
            if (!conn.ok()) {
                conn.close();
                // One refused connection does not take down a DSN whose other
                // connections serve (e.g. a role's CONNECTION LIMIT below the pool).
                const bool others_live = ds.connected.load() > 0;
                if (!others_live) {
                    bool was = ds.healthy.exchange(false);
                    if (was && on_db_error) on_db_error("connection");
                }
                if (!any_healthy()) {
                    DbOutcome o;
                    o.kind = DbOutcome::Unavailable;
                    o.message = "the database is unreachable";
                    fail_all_queued(o);
                }
                std::unique_lock<std::mutex> lk(mu_);
                cv_.wait_for(lk, std::chrono::milliseconds(backoff_ms), [&] { return stopping_; });
                if (stopping_ && (queue_.empty() || !any_healthy())) return;
                // Retry slowly while this DSN serves through other connections.
                backoff_ms = std::min(backoff_ms * 2, others_live ? 5000 : 1000);
                continue;
            }
            backoff_ms = 50;
            PQsetNoticeProcessor(conn.pg, json_notice, nullptr);
            conn.product_error = resolve_products(conn.pg, opt_.products, conn.products, types());
            if (!conn.product_error.empty() && on_product_error) on_product_error(conn.product_error);
            if (!conn.ok()) continue;
            conn.cancel = PQgetCancel(conn.pg);
            PQsetnonblocking(conn.pg, 1);
            ds.connected.fetch_add(1);
            ds.healthy.store(true);
        }
        // Take one job, plus mergeable recommend jobs.
        std::vector<Job> jobs;
        {
            std::unique_lock<std::mutex> lk(mu_);
            cv_.wait_for(lk, std::chrono::milliseconds(500),
                         [&] { return stopping_ || next_job_for(di) != queue_.end(); });
            auto first = next_job_for(di);
            if (first == queue_.end() && stopping_) first = queue_.begin();  // draining: any DSN will do
            if (first == queue_.end()) {
                if (stopping_ && queue_.empty()) {
                    ds.connected.fetch_sub(1);
                    return;
                }
                continue;
            }
            jobs.push_back(std::move(*first));
            queue_.erase(first);
            if (jobs[0].batchable && opt_.max_batch > 1) {
                std::size_t ids = jobs[0].ids.size();
                for (auto it = queue_.begin();
                     it != queue_.end() && jobs.size() < static_cast<std::size_t>(opt_.max_batch);) {
                    if (it->batchable && same_statement(*it, jobs[0]) &&
                        ids + it->ids.size() <= opt_.max_batch_ids && runnable_on(*it, di)) {
                        ids += it->ids.size();
                        jobs.push_back(std::move(*it));
                        it = queue_.erase(it);
                    } else {
                        ++it;
                    }
                }
            }
        }
        // Acquire timeouts: requests that waited too long are answered 504.
        auto now = Clock::now();
        std::vector<Job> live;
        live.reserve(jobs.size());
        for (auto& j : jobs) {
            if (now > j.deadline) {
                if (on_db_error) on_db_error("acquire_timeout");
                fail(j, DbOutcome::AcquireTimeout, "timed out waiting for a database connection");
            } else {
                live.push_back(std::move(j));
            }
        }
        if (live.empty()) continue;
        if (closed_by_server(conn.pg)) {
            if (on_db_error) on_db_error("connection");
            requeue_front(live, di);
            ds.connected.fetch_sub(1);
            conn.close();
            continue;
        }
        in_use_.fetch_add(1);
        ds.statements.fetch_add(1, std::memory_order_relaxed);
        {
            std::lock_guard<std::mutex> g(cancel_mu_);
            running_[wi] = conn.cancel;
            if (cancelling_) {  // shutdown passed its grace: fail instead of starting
                running_[wi] = nullptr;
                for (auto& j : live) fail(j, DbOutcome::Unavailable, "the proxy is shutting down");
                live.clear();
            }
        }
        if (!live.empty()) run_jobs(conn, di, live);
        clear_running(wi);
        in_use_.fetch_sub(1);
        if (!conn.ok()) {
            ds.connected.fetch_sub(1);
            conn.close();
        }
    }
}

void Pool::run_jobs(Conn& c, std::size_t dsn, std::vector<Job>& jobs) {
    Job& j0 = jobs[0];
    Stmt stmt = j0.stmt;
    if (is_details(stmt) && !c.products.on) {
        if (!c.product_error.empty()) {  // configured, but not usable on this database
            DbOutcome o;
            o.kind = DbOutcome::SqlError;
            o.message = "product details are unavailable";
            o.detail = c.product_error;
            o.hint = "check --products, --product-id-column and --product-columns";
            for (auto& j : jobs)
                if (j.done) j.done(o);
            return;
        }
        stmt = without_details(stmt);
    }
    const int si = static_cast<int>(stmt) * 16 + static_cast<int>(j0.types.user) * 4 + static_cast<int>(j0.types.item);
    auto deadline = Clock::now() + std::chrono::milliseconds(opt_.statement_timeout_ms + 1000);

    std::vector<std::string> params;
    std::vector<std::string> all_ids;
    if (j0.batchable) {
        if (jobs.size() == 1) {
            all_ids = j0.ids;
        } else {
            for (auto& j : jobs) all_ids.insert(all_ids.end(), j.ids.begin(), j.ids.end());
            std::sort(all_ids.begin(), all_ids.end());
            all_ids.erase(std::unique(all_ids.begin(), all_ids.end()), all_ids.end());
        }
        params.reserve(1 + j0.params.size());
        params.push_back(array_literal(all_ids));
        params.insert(params.end(), j0.params.begin(), j0.params.end());
    } else {
        params = j0.params;
    }

    auto connection_lost = [&](const std::string& why) {
        if (on_db_error) on_db_error("connection");
        c.close();
        std::vector<Job> retry;
        for (auto& j : jobs) {
            if (!j.retried && Clock::now() < j.deadline + std::chrono::milliseconds(opt_.statement_timeout_ms)) {
                j.retried = true;
                retry.push_back(std::move(j));
            } else {
                fail(j, DbOutcome::Unavailable, why);
            }
        }
        requeue_front(retry, dsn);
    };

    // The server did not answer within statement_timeout + 1 s: drop the
    // connection (its backend's statement_timeout ends the query).
    auto timed_out_all = [&] {
        if (on_db_error) on_db_error("timeout");
        c.close();
        for (auto& j : jobs) fail(j, DbOutcome::ClientTimeout, "the database did not answer in time");
    };

    bool timed_out = false;
    if (!c.prepared.test(si)) {
        char name[16];
        std::snprintf(name, sizeof name, "rs%d", si);
        if (!PQsendPrepare(c.pg, name, stmt_sql(stmt, c.products, j0.types).c_str(), 0, nullptr)) {
            connection_lost(trim_msg(PQerrorMessage(c.pg)));
            return;
        }
        PGresult* r = wait_result(c.pg, deadline, timed_out);
        if (timed_out) {
            timed_out_all();
            return;
        }
        if (!r || PQstatus(c.pg) == CONNECTION_BAD) {
            if (r) PQclear(r);
            connection_lost(c.pg ? trim_msg(PQerrorMessage(c.pg)) : "connection lost");
            return;
        }
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            DbOutcome o;
            o.kind = DbOutcome::SqlError;
            o.sqlstate = field(r, PG_DIAG_SQLSTATE);
            o.message = trim_msg(field(r, PG_DIAG_MESSAGE_PRIMARY));
            o.detail = field(r, PG_DIAG_MESSAGE_DETAIL);
            o.hint = field(r, PG_DIAG_MESSAGE_HINT);
            PQclear(r);
            if (on_db_error) on_db_error(o.sqlstate);
            for (auto& j : jobs)
                if (j.done) j.done(o);
            return;
        }
        PQclear(r);
        c.prepared.set(si);
    }

    const char* pv[8] = {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
    for (std::size_t i = 0; i < params.size() && i < 8; ++i) pv[i] = params[i] == kNullParam ? nullptr : params[i].c_str();
    char name[16];
    std::snprintf(name, sizeof name, "rs%d", si);
    if (!PQsendQueryPrepared(c.pg, name, static_cast<int>(params.size()), pv, nullptr, nullptr, 0)) {
        connection_lost(trim_msg(PQerrorMessage(c.pg)));
        return;
    }
    PGresult* r = wait_result(c.pg, deadline, timed_out);
    if (timed_out) {
        timed_out_all();
        return;
    }
    if (!r) {
        connection_lost(trim_msg(PQerrorMessage(c.pg)));
        return;
    }
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        DbOutcome o;
        o.kind = DbOutcome::SqlError;
        o.sqlstate = field(r, PG_DIAG_SQLSTATE);
        o.message = trim_msg(field(r, PG_DIAG_MESSAGE_PRIMARY));
        o.detail = field(r, PG_DIAG_MESSAGE_DETAIL);
        o.hint = field(r, PG_DIAG_MESSAGE_HINT);
        PQclear(r);
        bool lost = PQstatus(c.pg) == CONNECTION_BAD || o.sqlstate.rfind("08", 0) == 0 ||
                    o.sqlstate == "57P01" || o.sqlstate == "57P02" || o.sqlstate == "57P03";
        if (lost) {
            connection_lost(o.message.empty() ? "connection lost" : o.message);
            return;
        }
        if (o.sqlstate == "26000" || o.sqlstate == "0A000") c.prepared.reset(si);  // plan gone/invalid
        if (on_db_error) on_db_error(o.sqlstate);
        if (jobs.size() > 1 && o.sqlstate != "57014") {
            // Merged requests: a fault in one user's data must not fail the
            // others, so each runs alone and gets its own answer.
            for (auto& j : jobs) {
                std::vector<Job> one;
                one.push_back(std::move(j));
                run_jobs(c, dsn, one);
            }
            return;
        }
        for (auto& j : jobs)
            if (j.done) j.done(o);
        return;
    }
    PgRows rows(r);
    if (jobs.size() == 1) {
        DbOutcome o;
        o.rows = &rows;
        jobs[0].done(o);
    } else {
        // Split the merged result by user id (column 0).
        std::unordered_map<std::string_view, std::vector<int>> by_user;
        by_user.reserve(all_ids.size() * 2);
        for (int i = 0; i < rows.nrows(); ++i)
            if (!rows.is_null(i, 0)) by_user[rows.get(i, 0)].push_back(i);
        for (auto& j : jobs) {
            std::vector<int> idx;
            for (const std::string& id : j.ids) {
                auto it = by_user.find(id);
                if (it != by_user.end()) idx.insert(idx.end(), it->second.begin(), it->second.end());
            }
            SubsetRows sub(rows, std::move(idx));
            DbOutcome o;
            o.rows = &sub;
            j.done(o);
        }
    }
    const bool large = PQntuples(r) >= kTrimAfterRows;
    PQclear(r);
    if (large) malloc_trim(0);  // give a large result's memory back (server.cpp does the same for answers)
}

}  // namespace rsproxy
