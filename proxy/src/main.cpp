// main.cpp - recsys-proxy: HTTP/JSON server (Boost.Beast over Asio) in front
// of the recsys PostgreSQL extension.
//
// Threads: `--threads` Asio I/O threads run every HTTP session (parse, route,
// format, write); database work goes to the bounded libpq pool (db.hpp),
// whose workers call back with the rows; the callback formats the JSON and
// posts the write back onto the session's strand.  A keep-alive connection
// therefore holds no thread while it is idle or waiting for the database.
#include <signal.h>
#include <sys/time.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "api.hpp"
#include "cache.hpp"
#include "config.hpp"
#include "db.hpp"
#include "metrics.hpp"

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

extern const char kIndexHtml[];
extern const unsigned long kIndexHtmlLen;
extern const char kOpenApiJson[];
extern const unsigned long kOpenApiJsonLen;

namespace rsproxy {

struct Reply {
    int status = 200;
    std::string body;
    std::string content_type = "application/json";
    int retry_after = 0;      // seconds; 0 = no header
    std::string allow;        // for 405
    bool www_authenticate = false;
    const char* cache = nullptr;  // "hit" | "miss" | "partial" for the access log
};

Reply error_reply(const ApiError& e) {
    Reply r;
    r.status = e.status;
    r.body = error_json(e);
    if (e.status == 503) r.retry_after = 1;
    return r;
}

Reply json_ok(std::string body) {
    Reply r;
    r.body = std::move(body);
    return r;
}

Reply outcome_error(const DbOutcome& o) {
    switch (o.kind) {
        case DbOutcome::SqlError: {
            int st = http_status_for_sqlstate(o.sqlstate);
            return error_reply(make_error(st, o.sqlstate.empty() ? "PX500" : o.sqlstate, o.message, o.detail, o.hint));
        }
        case DbOutcome::Unavailable: {
            Reply r = error_reply(make_error(503, "PX503", "the database is unavailable", o.message,
                                             "retry after the delay given in Retry-After"));
            r.retry_after = 1;
            return r;
        }
        case DbOutcome::AcquireTimeout:
            return error_reply(make_error(504, "PX504", "timed out waiting for a database connection", o.message));
        case DbOutcome::ClientTimeout:
            return error_reply(make_error(504, "PX504", "the database did not answer in time", o.message));
        default:
            return error_reply(make_error(500, "PX500", "internal error"));
    }
}

class App;

class Session : public std::enable_shared_from_this<Session> {
public:
    Session(tcp::socket&& s, App& app) : stream_(std::move(s)), app_(app) {}
    void start();
    void shutdown_if_idle();
    void send(Reply r);  // thread-safe; call exactly once per request

private:
    void read_next();
    void on_header(beast::error_code ec);
    void on_read(beast::error_code ec);
    void dispatch();
    void do_write(Reply r);
    void close();

    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    http::request<http::string_body> req_;
    http::response<http::string_body> res_;
    App& app_;
    Clock::time_point started_;
    Route route_ = Route::NotFound;
    bool busy_ = false;  // between a complete request and its written response (strand)
    bool keep_alive_ = true;
    std::string remote_;
    static constexpr char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
};

class App {
public:
    explicit App(Config cfg)
        : cfg_(std::move(cfg)),
          pool_(PoolOptions{cfg_.dsns, cfg_.pool_size, cfg_.acquire_timeout_ms, cfg_.statement_timeout_ms,
                            cfg_.connect_timeout_ms, cfg_.max_batch, cfg_.limits.max_user_ids}),
          cache_(cfg_.cache_size, std::chrono::milliseconds(cfg_.cache_ttl_ms)),
          ioc_(cfg_.threads),
          acceptor_(ioc_),
          signals_(ioc_, SIGTERM, SIGINT),
          model_timer_(ioc_),
          drain_timer_(ioc_),
          guard_(net::make_work_guard(ioc_)) {
        pool_.on_db_error = [this](const std::string& s) { metrics_.db_error(s); };
    }

    int run();

    const Config& cfg() const { return cfg_; }
    Pool& pool() { return pool_; }
    Metrics& metrics() { return metrics_; }
    LruCache& cache() { return cache_; }
    bool stopping() const { return stopping_.load(); }
    std::atomic<long> inflight{0};

    void add(const std::shared_ptr<Session>& s) {
        std::lock_guard<std::mutex> g(sess_mu_);
        sessions_.insert(s);
    }
    void remove(const std::shared_ptr<Session>& s) {
        std::lock_guard<std::mutex> g(sess_mu_);
        sessions_.erase(s);
    }

    void handle(const std::shared_ptr<Session>& s, const http::request<http::string_body>& req, Route& route);
    void access_log(const http::request<http::string_body>& req, const std::string& remote, int status,
                    std::size_t bytes, double seconds, const char* cache);
    void set_model_id(int64_t id) {
        int64_t old = model_id_.exchange(id);
        if (old != id && id > 0) cache_.retain_model(id);
    }
    int64_t model_id() const { return model_id_.load(); }
    // After recsys_training_runs failed with an SQL error, /metrics leaves it
    // alone for a while instead of logging the same error on every scrape.
    Clock::time_point runs_retry_at() const { return Clock::time_point(Clock::duration(runs_retry_at_.load())); }
    void set_runs_retry_at(Clock::time_point t) { runs_retry_at_.store(t.time_since_epoch().count()); }

private:
    void do_accept();
    void schedule_model_check();
    void begin_shutdown();
    void drain_wait();
    bool authorized(const http::request<http::string_body>& req) const;

    Config cfg_;
    Pool pool_;
    Metrics metrics_;
    LruCache cache_;
    net::io_context ioc_;
    tcp::acceptor acceptor_;
    net::signal_set signals_;
    net::steady_timer model_timer_;
    net::steady_timer drain_timer_;
    net::executor_work_guard<net::io_context::executor_type> guard_;
    std::atomic<bool> stopping_{false};
    std::atomic<int64_t> model_id_{-1};
    std::atomic<Clock::rep> runs_retry_at_{0};
    Clock::time_point shutdown_started_;
    std::mutex sess_mu_;
    std::set<std::shared_ptr<Session>> sessions_;
    std::mutex log_mu_;
};

// ---------------------------------------------------------------- Session --

void Session::start() {
    beast::error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec) remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
    stream_.socket().set_option(tcp::no_delay(true), ec);
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read_next(); });
}

void Session::read_next() {
    if (app_.stopping()) {
        close();
        return;
    }
    parser_.emplace();
    parser_->body_limit(app_.cfg().limits.max_body_bytes);
    parser_->header_limit(16 * 1024);
    stream_.expires_after(std::chrono::seconds(app_.cfg().idle_timeout_s));
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_header(ec); });
}

void Session::on_header(beast::error_code ec) {
    if (ec == http::error::body_limit) {
        started_ = Clock::now();
        busy_ = true;
        app_.inflight.fetch_add(1);
        keep_alive_ = false;
        route_ = Route::Recommendations;
        req_ = parser_->release();
        do_write(error_reply(make_error(413, "PX413", "request body too large",
                                        "at most " + std::to_string(app_.cfg().limits.max_body_bytes) + " bytes")));
        return;
    }
    if (ec) {
        if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == net::error::operation_aborted ||
            ec == net::error::connection_reset || ec == net::error::eof) {
            close();
            return;
        }
        if (ec.category() == http::make_error_code(http::error::body_limit).category()) {
            // Malformed request: answer 400 (431 for huge headers) and close.
            started_ = Clock::now();
            busy_ = true;
            app_.inflight.fetch_add(1);
            keep_alive_ = false;
            route_ = Route::NotFound;
            req_ = {};
            int st = ec == http::error::header_limit ? 431 : 400;
            do_write(error_reply(make_error(st, st == 431 ? "PX431" : "PX400", "malformed HTTP request", ec.message())));
            return;
        }
        close();
        return;
    }
    auto& h = parser_->get();
    auto expect = h[http::field::expect];
    auto self = shared_from_this();
    auto read_body = [self] {
        http::async_read(self->stream_, self->buffer_, *self->parser_,
                         [self](beast::error_code ec2, std::size_t) { self->on_read(ec2); });
    };
    if (beast::iequals(expect, "100-continue") && !parser_->is_done()) {
        net::async_write(stream_, net::buffer(kContinue, sizeof(kContinue) - 1),
                         [self, read_body](beast::error_code ec2, std::size_t) {
                             if (ec2) return self->close();
                             read_body();
                         });
        return;
    }
    if (parser_->is_done()) {
        on_read({});
        return;
    }
    read_body();
}

void Session::on_read(beast::error_code ec) {
    started_ = Clock::now();
    if (ec == http::error::body_limit) {
        busy_ = true;
        app_.inflight.fetch_add(1);
        keep_alive_ = false;
        route_ = Route::Recommendations;
        req_ = {};
        do_write(error_reply(make_error(413, "PX413", "request body too large",
                                        "at most " + std::to_string(app_.cfg().limits.max_body_bytes) + " bytes")));
        return;
    }
    if (ec) {
        if (ec.category() == http::make_error_code(http::error::body_limit).category()) {
            busy_ = true;
            app_.inflight.fetch_add(1);
            keep_alive_ = false;
            req_ = {};
            do_write(error_reply(make_error(400, "PX400", "malformed HTTP request", ec.message())));
            return;
        }
        close();
        return;
    }
    req_ = parser_->release();
    busy_ = true;
    app_.inflight.fetch_add(1);
    keep_alive_ = req_.keep_alive();
    stream_.expires_never();
    app_.handle(shared_from_this(), req_, route_);
}

void Session::send(Reply r) {
    net::post(stream_.get_executor(),
              [self = shared_from_this(), r = std::move(r)]() mutable { self->do_write(std::move(r)); });
}

void Session::do_write(Reply r) {
    res_ = {};
    res_.version(11);
    res_.result(static_cast<unsigned>(r.status));
    res_.set(http::field::server, "recsys-proxy");
    res_.set(http::field::content_type, r.content_type);
    if (r.retry_after > 0) res_.set(http::field::retry_after, std::to_string(r.retry_after));
    if (!r.allow.empty()) res_.set(http::field::allow, r.allow);
    if (r.www_authenticate) res_.set(http::field::www_authenticate, "Bearer");
    if (r.content_type.rfind("application/json", 0) == 0) res_.set(http::field::cache_control, "no-store");
    bool ka = keep_alive_ && !app_.stopping();
    res_.keep_alive(ka);
    res_.body() = std::move(r.body);
    res_.prepare_payload();
    double secs = std::chrono::duration<double>(Clock::now() - started_).count();
    app_.metrics().observe(route_, r.status, secs);
    app_.access_log(req_, remote_, r.status, res_.body().size(), secs, r.cache);
    stream_.expires_after(std::chrono::seconds(30));
    http::async_write(stream_, res_, [self = shared_from_this(), ka](beast::error_code ec, std::size_t) {
        self->busy_ = false;
        self->app_.inflight.fetch_sub(1);
        if (ec || !ka) {
            self->close();
            return;
        }
        self->read_next();
    });
}

void Session::shutdown_if_idle() {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
        if (!self->busy_) self->close();
    });
}

void Session::close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.socket().close(ec);
    app_.remove(shared_from_this());
}

// -------------------------------------------------------------------- App --

bool App::authorized(const http::request<http::string_body>& req) const {
    if (cfg_.api_keys.empty()) return true;
    std::string key = presented_key(std::string_view(req[http::field::authorization].data(), req[http::field::authorization].size()),
                                    std::string_view(req["X-API-Key"].data(), req["X-API-Key"].size()));
    return key_matches(cfg_.api_keys, key);
}

void App::access_log(const http::request<http::string_body>& req, const std::string& remote, int status,
                     std::size_t bytes, double seconds, const char* cache) {
    if (!cfg_.access_log) return;
    std::string line;
    line.reserve(256);
    char ts[64];
    struct timeval tv;
    gettimeofday(&tv, nullptr);
    struct tm tmv;
    gmtime_r(&tv.tv_sec, &tmv);
    std::size_t n = std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tmv);
    std::snprintf(ts + n, sizeof ts - n, ".%03dZ", static_cast<int>(tv.tv_usec / 1000));
    line += "{\"ts\":\"";
    line += ts;
    line += "\",\"remote\":";
    append_json_string(line, remote);
    line += ",\"method\":";
    append_json_string(line, std::string_view(req.method_string().data(), req.method_string().size()));
    line += ",\"path\":";
    auto t = req.target();
    append_json_string(line, std::string_view(t.data(), std::min<std::size_t>(t.size(), 512)));
    char buf[128];
    std::snprintf(buf, sizeof buf, ",\"status\":%d,\"bytes\":%zu,\"ms\":%.3f", status, bytes, seconds * 1e3);
    line += buf;
    if (cache) {
        line += ",\"cache\":\"";
        line += cache;
        line += "\"";
    }
    line += "}\n";
    std::lock_guard<std::mutex> g(log_mu_);
    std::fwrite(line.data(), 1, line.size(), stderr);
}

static bool parse_bounded(const std::string& q, const char* name, int def, int max, int& out, Reply& err) {
    std::string v;
    if (!query_param(q, name, v)) {
        out = def;
        return true;
    }
    int32_t x;
    if (!parse_int32(v, x)) {
        err = error_reply(make_error(400, "PX400", std::string("query parameter ") + name + " must be an integer"));
        return false;
    }
    if (x < 1 || x > max) {
        err = error_reply(make_error(422, "PX422", std::string(name) + " out of range",
                                     std::string(name) + " must be between 1 and " + std::to_string(max)));
        return false;
    }
    out = x;
    return true;
}

void App::handle(const std::shared_ptr<Session>& s, const http::request<http::string_body>& req, Route& route) {
    std::string_view target(req.target().data(), req.target().size());
    std::string_view path = target.substr(0, target.find('?'));
    std::string query = target.find('?') == std::string_view::npos ? std::string()
                                                                   : std::string(target.substr(target.find('?') + 1));
    const auto method = req.method();
    auto method_not_allowed = [&](const char* allow) {
        Reply r = error_reply(make_error(405, "PX405", "method not allowed", "", std::string("use ") + allow));
        r.allow = allow;
        s->send(std::move(r));
    };
    auto need = [&](http::verb v, const char* allow) {
        if (method == v) return true;
        method_not_allowed(allow);
        return false;
    };

    // Public routes.
    if (path == "/" || path == "/index.html") {
        route = Route::Root;
        if (!need(http::verb::get, "GET")) return;
        Reply r;
        r.content_type = "text/html; charset=utf-8";
        r.body.assign(kIndexHtml, kIndexHtmlLen);
        s->send(std::move(r));
        return;
    }
    if (path == "/healthz") {
        route = Route::Healthz;
        if (!need(http::verb::get, "GET")) return;
        s->send(json_ok("{\"status\":\"ok\"}"));
        return;
    }
    if (path == "/openapi.json") {
        route = Route::OpenApi;
        if (!need(http::verb::get, "GET")) return;
        s->send(json_ok(std::string(kOpenApiJson, kOpenApiJsonLen)));
        return;
    }
    if (path == "/metrics") {
        route = Route::Metrics;
        if (!need(http::verb::get, "GET")) return;
        // The pool as it is now (before the status statements below occupy a connection).
        auto g = std::make_shared<PoolGauges>(PoolGauges{pool_.in_use(), pool_.waiting(), pool_.size(),
                                                         pool_.healthy_dsns(), pool_.dsns(), pool_.dsn_stats()});
        auto st = std::make_shared<ModelStatus>();
        auto send = [this, s, g, st] {
            Reply r;
            r.content_type = "text/plain; version=0.0.4; charset=utf-8";
            r.body = metrics_.render(*g, static_cast<long>(cache_.size()), model_id(), st.get());
            s->send(std::move(r));
        };
        // The model's and the last training's gauges are read at scrape time;
        // without the database they are left out and the rest is served.
        pool_.submit(Stmt::ModelStatus, {}, [this, st, send](const DbOutcome& o) {
            if (o.kind != DbOutcome::Ok || !parse_model_status(*o.rows, *st)) return send();
            set_model_id(st->active_model_id);
            if (!st->runs_readable || Clock::now() < runs_retry_at()) return send();
            pool_.submit(Stmt::LastTraining, {}, [this, st, send](const DbOutcome& o2) {
                if (o2.kind == DbOutcome::Ok)
                    parse_last_training(*o2.rows, *st);
                else if (o2.kind == DbOutcome::SqlError)  // e.g. no EXECUTE on a function the view calls
                    set_runs_retry_at(Clock::now() + std::chrono::minutes(5));
                send();
            });
        });
        return;
    }
    if (path == "/readyz") {
        route = Route::Readyz;
        if (!need(http::verb::get, "GET")) return;
        pool_.submit(Stmt::ActiveModelId, {}, [this, s](const DbOutcome& o) {
            if (o.kind != DbOutcome::Ok) {
                Reply r = outcome_error(o);
                if (r.status != 503) {  // readiness is binary: any failure is "not ready"
                    ApiError e = make_error(503, o.sqlstate.empty() ? "PX503" : o.sqlstate, "not ready: " + o.message,
                                            o.detail, o.hint);
                    r = error_reply(e);
                }
                s->send(std::move(r));
                return;
            }
            if (o.rows->nrows() < 1 || o.rows->is_null(0, 0)) {
                set_model_id(-1);
                s->send(error_reply(make_error(503, "55000", "not ready: no active model", "",
                                               "run SELECT recsys_train()")));
                return;
            }
            std::string id(o.rows->get(0, 0));
            set_model_id(std::atoll(id.c_str()));
            s->send(json_ok("{\"status\":\"ready\",\"model_id\":" + id + "}"));
        });
        return;
    }

    // Data routes.
    Route r = Route::NotFound;
    int32_t path_id = 0;
    if (path == "/recommendations") r = Route::Recommendations;
    else if (path == "/models/active") r = Route::ModelsActive;
    else if (path == "/evaluations") r = Route::Evaluations;
    else if (path.rfind("/similar/", 0) == 0) r = Route::Similar;
    else if (path.rfind("/users/", 0) == 0 && path.size() > 15 && path.substr(path.size() - 8) == "/history")
        r = Route::History;
    route = r;
    if (r == Route::NotFound) {
        s->send(error_reply(make_error(404, "PX404", "no such route", std::string(path.substr(0, 200)),
                                       "see /openapi.json")));
        return;
    }
    if (!authorized(req)) {
        Reply rep = error_reply(make_error(401, "PX401", "missing or invalid API key", "",
                                           "send Authorization: Bearer KEY or X-API-Key: KEY"));
        rep.www_authenticate = true;
        s->send(std::move(rep));
        return;
    }

    if (r == Route::Recommendations) {
        if (method != http::verb::post) return method_not_allowed("POST");
        auto rr = std::make_shared<RecRequest>();
        ApiError err;
        if (!parse_rec_request(req.body(), cfg_.limits, *rr, err)) {
            s->send(error_reply(err));
            return;
        }
        // Cache lookup, per user.
        const int64_t mid = model_id();
        auto frags = std::make_shared<std::vector<std::string>>(rr->user_ids.size());
        std::vector<int32_t> missing;
        auto miss_pos = std::make_shared<std::vector<std::size_t>>();
        bool use_cache = cache_.enabled() && mid > 0;
        if (use_cache) {
            for (std::size_t i = 0; i < rr->user_ids.size(); ++i) {
                if (!cache_.get(CacheKey{mid, rr->user_ids[i], rr->top_n, rr->details}, (*frags)[i])) {
                    missing.push_back(rr->user_ids[i]);
                    miss_pos->push_back(i);
                }
            }
            metrics_.cache_hit(rr->user_ids.size() - missing.size());
            metrics_.cache_miss(missing.size());
            if (missing.empty()) {
                Reply rep = json_ok(assemble_results(rr->user_ids, *frags));
                rep.cache = "hit";
                s->send(std::move(rep));
                return;
            }
        } else {
            missing = rr->user_ids;
            for (std::size_t i = 0; i < missing.size(); ++i) miss_pos->push_back(i);
        }
        const char* cache_tag = !use_cache ? nullptr : (missing.size() == rr->user_ids.size() ? "miss" : "partial");
        auto ids = std::make_shared<std::vector<int32_t>>(missing);
        pool_.submit_recommend(std::move(missing), rr->top_n, rr->details,
                               [this, s, rr, frags, miss_pos, ids, mid, use_cache, cache_tag](const DbOutcome& o) {
                                   if (o.kind != DbOutcome::Ok) {
                                       s->send(outcome_error(o));
                                       return;
                                   }
                                   std::vector<std::string> fresh;
                                   ApiError e;
                                   if (!format_user_fragments(*ids, rr->details, *o.rows, fresh, e)) {
                                       s->send(error_reply(e));
                                       return;
                                   }
                                   for (std::size_t k = 0; k < fresh.size(); ++k) {
                                       if (use_cache)
                                           cache_.put(CacheKey{mid, (*ids)[k], rr->top_n, rr->details}, fresh[k]);
                                       (*frags)[(*miss_pos)[k]] = std::move(fresh[k]);
                                   }
                                   Reply rep = json_ok(assemble_results(rr->user_ids, *frags));
                                   rep.cache = cache_tag;
                                   s->send(std::move(rep));
                               });
        return;
    }

    if (!need(http::verb::get, "GET")) return;
    if (r == Route::Similar) {
        std::string_view idtxt = path.substr(9);
        if (!parse_int32(idtxt, path_id)) {
            s->send(error_reply(make_error(400, "PX400", "product id must be a 32-bit integer",
                                           std::string(idtxt.substr(0, 64)))));
            return;
        }
        int top_n;
        Reply bad;
        if (!parse_bounded(query, "top_n", cfg_.limits.default_top_n, cfg_.limits.max_top_n, top_n, bad)) {
            s->send(std::move(bad));
            return;
        }
        pool_.submit(Stmt::SimilarDetails, {std::to_string(path_id), std::to_string(top_n)},
                     [s, path_id](const DbOutcome& o) {
                         if (o.kind != DbOutcome::Ok) return s->send(outcome_error(o));
                         Reply rep;
                         rep.body = "{\"product_id\":" + std::to_string(path_id) +
                                    ",\"similar\":" + json_cell_or(*o.rows, "[]") + "}";
                         s->send(std::move(rep));
                     });
        return;
    }
    if (r == Route::History) {
        std::string_view idtxt = path.substr(7, path.size() - 7 - 8);
        if (!parse_int32(idtxt, path_id)) {
            s->send(error_reply(make_error(400, "PX400", "user id must be a 32-bit integer",
                                           std::string(idtxt.substr(0, 64)))));
            return;
        }
        int limit;
        Reply bad;
        if (!parse_bounded(query, "limit", cfg_.limits.default_history, cfg_.limits.max_history, limit, bad)) {
            s->send(std::move(bad));
            return;
        }
        pool_.submit(Stmt::HistoryDetails, {std::to_string(path_id), std::to_string(limit)},
                     [s, path_id](const DbOutcome& o) {
                         if (o.kind != DbOutcome::Ok) return s->send(outcome_error(o));
                         Reply rep;
                         rep.body = "{\"user_id\":" + std::to_string(path_id) +
                                    ",\"history\":" + json_cell_or(*o.rows, "[]") + "}";
                         s->send(std::move(rep));
                     });
        return;
    }
    if (r == Route::ModelsActive) {
        pool_.submit(Stmt::ModelActive, {}, [s](const DbOutcome& o) {
            if (o.kind != DbOutcome::Ok) return s->send(outcome_error(o));
            if (o.rows->nrows() < 1 || o.rows->is_null(0, 0))
                return s->send(error_reply(make_error(404, "PX404", "no active model", "", "run SELECT recsys_train()")));
            Reply rep;
            rep.body = std::string(o.rows->get(0, 0));
            s->send(std::move(rep));
        });
        return;
    }
    if (r == Route::Evaluations) {
        pool_.submit(Stmt::Evaluations, {}, [s](const DbOutcome& o) {
            if (o.kind != DbOutcome::Ok) return s->send(outcome_error(o));
            Reply rep;
            rep.body = "{\"evaluations\":" + json_cell_or(*o.rows, "[]") + "}";
            s->send(std::move(rep));
        });
        return;
    }
}

void App::do_accept() {
    acceptor_.async_accept(net::make_strand(ioc_), [this](beast::error_code ec, tcp::socket sock) {
        if (ec) {
            if (ec == net::error::operation_aborted || stopping_) return;
            // EMFILE etc.: back off briefly instead of spinning.
            auto t = std::make_shared<net::steady_timer>(ioc_, std::chrono::milliseconds(50));
            t->async_wait([this, t](beast::error_code) {
                if (!stopping_) do_accept();
            });
            return;
        }
        if (stopping_) return;
        auto s = std::make_shared<Session>(std::move(sock), *this);
        add(s);
        s->start();
        do_accept();
    });
}

void App::schedule_model_check() {
    if (!cache_.enabled() || stopping_) return;
    model_timer_.expires_after(std::chrono::milliseconds(cfg_.model_check_ms));
    model_timer_.async_wait([this](beast::error_code ec) {
        if (ec || stopping_) return;
        pool_.submit(Stmt::ActiveModelId, {}, [this](const DbOutcome& o) {
            if (o.kind == DbOutcome::Ok) {
                if (o.rows->nrows() >= 1 && !o.rows->is_null(0, 0))
                    set_model_id(std::atoll(std::string(o.rows->get(0, 0)).c_str()));
                else
                    set_model_id(-1);
            }
        });
        schedule_model_check();
    });
}

void App::begin_shutdown() {
    if (stopping_.exchange(true)) return;
    std::fprintf(stderr, "{\"event\":\"shutdown\",\"inflight\":%ld}\n", inflight.load());
    beast::error_code ec;
    acceptor_.close(ec);
    model_timer_.cancel();
    shutdown_started_ = Clock::now();
    std::vector<std::shared_ptr<Session>> all;
    {
        std::lock_guard<std::mutex> g(sess_mu_);
        all.assign(sessions_.begin(), sessions_.end());
    }
    for (auto& s : all) s->shutdown_if_idle();
    drain_wait();
}

void App::drain_wait() {
    bool done = inflight.load() == 0 ||
                Clock::now() - shutdown_started_ > std::chrono::milliseconds(cfg_.shutdown_timeout_ms);
    if (done) {
        std::vector<std::shared_ptr<Session>> all;
        {
            std::lock_guard<std::mutex> g(sess_mu_);
            all.assign(sessions_.begin(), sessions_.end());
        }
        for (auto& s : all) s->shutdown_if_idle();
        guard_.reset();
        // Anything still open after the grace period is cut.
        if (inflight.load() != 0) ioc_.stop();
        return;
    }
    drain_timer_.expires_after(std::chrono::milliseconds(10));
    drain_timer_.async_wait([this](beast::error_code) { drain_wait(); });
}

int App::run() {
    beast::error_code ec;
    auto addr = net::ip::make_address(cfg_.listen_host, ec);
    if (ec) {
        tcp::resolver res(ioc_);
        auto it = res.resolve(cfg_.listen_host, std::to_string(cfg_.listen_port), ec);
        if (ec || it.empty()) {
            std::fprintf(stderr, "recsys-proxy: cannot resolve %s\n", cfg_.listen_host.c_str());
            return 1;
        }
        addr = it.begin()->endpoint().address();
    }
    tcp::endpoint ep(addr, cfg_.listen_port);
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(1024, ec);
    if (ec) {
        std::fprintf(stderr, "recsys-proxy: cannot listen on %s:%u: %s\n", cfg_.listen_host.c_str(), cfg_.listen_port,
                     ec.message().c_str());
        return 1;
    }
    auto bound = acceptor_.local_endpoint();
    std::fprintf(stderr,
                 "{\"event\":\"listening\",\"address\":\"%s\",\"port\":%u,\"dsns\":%zu,\"pool_size\":%d,"
                 "\"threads\":%d,\"cache_size\":%zu,\"api_keys\":%zu}\n",
                 bound.address().to_string().c_str(), bound.port(), cfg_.dsns.size(), cfg_.pool_size, cfg_.threads,
                 cfg_.cache_size, cfg_.api_keys.size());
    pool_.start();
    signals_.async_wait([this](beast::error_code e, int) {
        if (!e) begin_shutdown();
    });
    do_accept();
    schedule_model_check();
    std::vector<std::thread> th;
    for (int i = 1; i < cfg_.threads; ++i) th.emplace_back([this] { ioc_.run(); });
    ioc_.run();
    for (auto& t : th) t.join();
    pool_.stop();
    {
        std::lock_guard<std::mutex> g(sess_mu_);
        sessions_.clear();
    }
    std::fprintf(stderr, "{\"event\":\"stopped\"}\n");
    return 0;
}

}  // namespace rsproxy

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    rsproxy::Config cfg;
    std::string msg;
    bool exit_now = false;
    int rc = rsproxy::parse_config(argc, argv, cfg, msg, exit_now);
    if (exit_now) {
        std::fputs(msg.c_str(), rc == 0 ? stdout : stderr);
        return rc;
    }
    try {
        rsproxy::App app(cfg);
        return app.run();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "recsys-proxy: fatal: %s\n", e.what());
        return 1;
    }
}
