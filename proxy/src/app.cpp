// app.cpp - see app.hpp.  Threads: `--threads` Asio I/O threads run every
// HTTP session (server.cpp); database work goes to the bounded libpq pool
// (db.hpp), whose workers call back with the rows; the callback formats the
// JSON and posts the write back onto the session's strand.  A keep-alive
// connection therefore holds no thread while it is idle or waiting for the
// database.
#include "app.hpp"

#include <malloc.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#include <libpq-fe.h>

#include "openapi.hpp"
#include "routes.hpp"
#include "server.hpp"
#include "services.hpp"

extern const char kOpenApiJson[];
extern const unsigned long kOpenApiJsonLen;

namespace rsproxy {

namespace net = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

// Raises the soft fd limit to the hard one; returns the soft limit in force.
long raise_fd_limit() {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
    rlim_t want = rl.rlim_max == RLIM_INFINITY ? rlim_t(1) << 20 : rl.rlim_max;
    if (rl.rlim_cur < want) {
        struct rlimit nl = rl;
        nl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &nl) == 0) rl = nl;
    }
    return rl.rlim_cur == RLIM_INFINITY ? 1L << 20 : static_cast<long>(rl.rlim_cur);
}

// The id types of the serving functions are read, and the products relation
// is checked, once at start on the first DSN that answers: a configured
// relation, id column or column that does not exist is a startup error.
// Returns "" when fine or when no DSN answered (each pool connection checks
// the products again when it opens; the model poll reads the types).
std::string check_at_start(const Config& cfg, bool& checked, Pool& pool) {
    checked = false;
    PoolOptions po = pool_options(cfg);
    std::vector<std::string> dsns = cfg.dsns.empty() ? std::vector<std::string>{""} : cfg.dsns;
    for (const auto& dsn : dsns) {
        PGconn* pg = connect_dsn(dsn, cfg.statement_timeout_ms, cfg.connect_timeout_ms);
        if (!pg) continue;
        if (PQstatus(pg) != CONNECTION_OK) {
            PQfinish(pg);
            continue;
        }
        IdTypes types;
        if (query_id_types(pg, types)) pool.set_types(types);
        ProductSql ps;
        std::string err = po.products.relation.empty() ? "" : resolve_products(pg, po.products, ps, pool.types());
        PQfinish(pg);
        checked = true;
        return err;
    }
    return "";
}

class App {
public:
    explicit App(const Config& cfg)
        : cfg_(cfg),
          sv_(cfg, route_labels()),
          ioc_(cfg.threads),
          signals_(ioc_, SIGTERM, SIGINT),
          model_timer_(ioc_),
          drain_timer_(ioc_),
          guard_(net::make_work_guard(ioc_)) {
        sv_.pool.on_db_error = [this](const std::string& s) { sv_.metrics.db_error(s); };
        sv_.pool.on_product_error = [this](const std::string& m) {
            std::lock_guard<std::mutex> g(warn_mu_);
            if (m == last_product_error_) return;  // once per distinct message
            last_product_error_ = m;
            std::string line = "{\"event\":\"products_unavailable\",\"message\":";
            append_json_string(line, m);
            line += "}\n";
            std::fwrite(line.data(), 1, line.size(), stderr);
        };
    }
    int run();

private:
    void schedule_model_check();
    void begin_shutdown();
    void drain_wait();
    void finish();

    const Config& cfg_;
    Services sv_;
    net::io_context ioc_;
    std::unique_ptr<Server> server_;
    net::signal_set signals_;
    net::steady_timer model_timer_;
    net::steady_timer drain_timer_;
    net::executor_work_guard<net::io_context::executor_type> guard_;
    Clock::time_point shutdown_started_;
    bool aborted_ = false;
    std::mutex warn_mu_;
    std::string last_product_error_;
};

// Every --model-check: the active model id (the cache's key) and the id
// types of the serving functions (requests are parsed with them; they change
// when recsys_set_source maps other types, which needs a new model).
void App::schedule_model_check() {
    if (server_->stopping()) return;
    model_timer_.expires_after(std::chrono::milliseconds(cfg_.model_check_ms));
    model_timer_.async_wait([this](boost::system::error_code ec) {
        if (ec || server_->stopping()) return;
        if (sv_.cache.enabled())
            sv_.pool.submit(Stmt::ActiveModelId, {}, [this](const DbOutcome& o) {
                if (o.kind != DbOutcome::Ok) return;
                if (o.rows->nrows() >= 1 && !o.rows->is_null(0, 0))
                    sv_.set_model_id(std::atoll(std::string(o.rows->get(0, 0)).c_str()));
                else
                    sv_.set_model_id(-1);
            });
        sv_.pool.submit(Stmt::IdTypes, {}, [this](const DbOutcome& o) {
            IdTypes t;
            if (o.kind == DbOutcome::Ok && read_id_types(*o.rows, t)) sv_.pool.set_types(t);
        });
        schedule_model_check();
    });
}

void App::begin_shutdown() {
    if (server_->stopping()) return;
    std::fprintf(stderr, "{\"event\":\"shutdown\",\"inflight\":%ld}\n", server_->inflight());
    server_->stop_accepting();
    model_timer_.cancel();
    shutdown_started_ = Clock::now();
    server_->close_idle();
    drain_wait();
}

// Waits for in-flight requests.  Past --shutdown-timeout they are answered
// 503 with Connection: close and their statements are cancelled; then the
// writes of those answers get one more second.
void App::drain_wait() {
    const auto waited = Clock::now() - shutdown_started_;
    const auto grace = std::chrono::milliseconds(cfg_.shutdown_timeout_ms);
    if (server_->inflight() == 0) return finish();
    if (!aborted_ && waited >= grace) {
        aborted_ = true;
        std::fprintf(stderr, "{\"event\":\"shutdown_timeout\",\"inflight\":%ld}\n", server_->inflight());
        server_->abort_inflight();
        sv_.pool.cancel_all();
    } else if (aborted_ && waited >= grace + std::chrono::seconds(1)) {
        return finish();
    }
    drain_timer_.expires_after(std::chrono::milliseconds(10));
    drain_timer_.async_wait([this](boost::system::error_code) { drain_wait(); });
}

void App::finish() {
    server_->close_all();
    guard_.reset();
    if (server_->inflight() != 0) ioc_.stop();  // a write that did not finish: cut
}

int App::run() {
    // Blocks of 1 MiB and more (large answers and their parts) are mapped on
    // their own and unmapped when freed, instead of the heap keeping them
    // (glibc raises this threshold up to 32 MiB on its own otherwise).
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    const long fd_limit = raise_fd_limit();
    const long pool_fds = static_cast<long>(cfg_.dsns.size()) * cfg_.pool_size;
    // Each connection is one fd; keep a reserve for the pool, the listener and logs.
    const long fit = std::max(16L, fd_limit - pool_fds - 64);
    long max_conn = cfg_.max_connections > 0 ? cfg_.max_connections : fit;
    if (max_conn > fit) {
        std::fprintf(stderr,
                     "{\"event\":\"warning\",\"message\":\"--max-connections %ld exceeds what the fd limit %ld "
                     "allows (%ld); using %ld\"}\n",
                     max_conn, fd_limit, fit, fit);
        max_conn = fit;
    }
    try {
        sv_.openapi = openapi_document(std::string_view(kOpenApiJson, kOpenApiJsonLen), cfg_);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "recsys-proxy: the embedded OpenAPI document is broken: %s\n", e.what());
        return 1;
    }
    bool checked = false;
    std::string perr = check_at_start(cfg_, checked, sv_.pool);
    if (!perr.empty()) {
        std::fprintf(stderr, "recsys-proxy: %s\n", perr.c_str());
        return 2;
    }
    if (!checked && !cfg_.products_relation.empty())
        std::fprintf(stderr, "{\"event\":\"warning\",\"message\":\"no database answered at start: the products "
                             "relation is checked when the pool connects\"}\n");

    server_ = std::make_unique<Server>(ioc_, sv_, static_cast<int>(max_conn));
    std::string err = server_->listen(cfg_.listen_host, cfg_.listen_port);
    if (!err.empty()) {
        std::fprintf(stderr, "recsys-proxy: %s\n", err.c_str());
        return 1;
    }
    auto bound = server_->local_endpoint();
    std::fprintf(stderr,
                 "{\"event\":\"listening\",\"address\":\"%s\",\"port\":%u,\"dsns\":%zu,\"pool_size\":%d,"
                 "\"threads\":%d,\"cache_size\":%zu,\"api_keys\":%zu,\"max_connections\":%ld,\"fd_limit\":%ld}\n",
                 bound.address().to_string().c_str(), bound.port(), cfg_.dsns.size(), cfg_.pool_size, cfg_.threads,
                 cfg_.cache_size, cfg_.api_keys.size(), max_conn, fd_limit);
    sv_.pool.start();
    signals_.async_wait([this](boost::system::error_code e, int) {
        if (!e) begin_shutdown();
    });
    server_->start_accept();
    schedule_model_check();
    std::vector<std::thread> th;
    for (int i = 1; i < cfg_.threads; ++i) th.emplace_back([this] { ioc_.run(); });
    ioc_.run();
    for (auto& t : th) t.join();
    sv_.pool.stop();
    std::fprintf(stderr, "{\"event\":\"stopped\"}\n");
    return 0;
}

}  // namespace

int run_proxy(const Config& cfg) {
    App app(cfg);
    return app.run();
}

}  // namespace rsproxy
