// server.cpp - see server.hpp.
#include "server.hpp"

#include <malloc.h>
#include <sys/time.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <optional>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "routes.hpp"
#include "services.hpp"

namespace rsproxy {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

// Responses at least this large give their memory back to the system once
// written (malloc_trim), so a burst of big answers does not stay in RSS.
constexpr std::size_t kTrimAfterBytes = 1u << 20;

class Session : public Responder, public std::enable_shared_from_this<Session> {
public:
    Session(tcp::socket&& s, Server& server) : stream_(std::move(s)), server_(server) {}
    void start();
    void close_if_idle();
    void abort_inflight();
    void close_now();
    void send(Reply r, int route, unsigned seq) override;

private:
    void read_next();
    void on_header(beast::error_code ec);
    void on_read(beast::error_code ec);
    void early_error(int status, const char* code, std::string message, std::string details);
    void do_write(Reply r);
    void close();
    const Config& cfg() const { return server_.sv_.cfg; }
    void access_log(int status, std::size_t bytes, double seconds, const char* cache);

    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    std::string out_head_, out_body_;  // the answer being written
    Server& server_;
    Clock::time_point started_;
    int route_ = -1;
    unsigned seq_ = 0;       // the request being served (strand)
    bool busy_ = false;      // between a complete request and its written response (strand)
    bool answered_ = false;  // the current request has its reply (strand)
    bool keep_alive_ = true;
    bool head_ = false;
    bool closed_ = false;
    std::string method_, target_, origin_;
    std::string remote_;
    static constexpr char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
};

void Session::start() {
    beast::error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec) remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
    stream_.socket().set_option(tcp::no_delay(true), ec);
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read_next(); });
}

void Session::read_next() {
    if (server_.stopping()) return close();
    method_.clear();
    target_.clear();
    origin_.clear();
    parser_.emplace();
    parser_->body_limit(cfg().limits.max_body_bytes);
    parser_->header_limit(16 * 1024);
    // The idle timeout covers the wait for a request and a request that stalls.
    stream_.expires_after(std::chrono::seconds(cfg().idle_timeout_s));
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_header(ec); });
}

// A request that failed before dispatch: answer it and close.
void Session::early_error(int status, const char* code, std::string message, std::string details) {
    started_ = Clock::now();
    busy_ = true;
    answered_ = false;
    ++seq_;
    server_.inflight_.fetch_add(1);
    keep_alive_ = false;
    head_ = false;
    route_ = other_route_label();
    do_write(error_reply(make_error(status, code, std::move(message), std::move(details))));
}

void Session::on_header(beast::error_code ec) {
    if (!ec || ec == http::error::body_limit) {
        const auto& h = parser_->get();
        method_ = std::string(h.method_string());
        target_ = std::string(h.target().substr(0, 512));
        origin_ = std::string(h[http::field::origin]);
    }
    if (ec == http::error::body_limit)
        return early_error(413, "PX413", "request body too large",
                           "at most " + std::to_string(cfg().limits.max_body_bytes) + " bytes");
    if (ec) {
        if (ec.category() == http::make_error_code(http::error::body_limit).category() &&
            ec != http::error::end_of_stream) {
            // Malformed request: answer 400 (431 for huge headers) and close.
            method_.clear();
            target_.clear();
            if (ec == http::error::header_limit)
                return early_error(431, "PX431", "malformed HTTP request", ec.message());
            return early_error(400, "PX400", "malformed HTTP request", ec.message());
        }
        return close();
    }
    auto self = shared_from_this();
    auto read_body = [self] {
        http::async_read(self->stream_, self->buffer_, *self->parser_,
                         [self](beast::error_code ec2, std::size_t) { self->on_read(ec2); });
    };
    if (beast::iequals(parser_->get()[http::field::expect], "100-continue") && !parser_->is_done()) {
        net::async_write(stream_, net::buffer(kContinue, sizeof(kContinue) - 1),
                         [self, read_body](beast::error_code ec2, std::size_t) {
                             if (ec2) return self->close();
                             read_body();
                         });
        return;
    }
    if (parser_->is_done()) return on_read({});
    read_body();
}

Method to_method(http::verb v) {
    switch (v) {
        case http::verb::get: return Method::Get;
        case http::verb::head: return Method::Head;
        case http::verb::post: return Method::Post;
        case http::verb::options: return Method::Options;
        default: return Method::Other;
    }
}

void Session::on_read(beast::error_code ec) {
    if (ec == http::error::body_limit)
        return early_error(413, "PX413", "request body too large",
                           "at most " + std::to_string(cfg().limits.max_body_bytes) + " bytes");
    if (ec) {
        if (ec.category() == http::make_error_code(http::error::body_limit).category() &&
            ec != http::error::end_of_stream)
            return early_error(400, "PX400", "malformed HTTP request", ec.message());
        return close();
    }
    started_ = Clock::now();
    http::request<http::string_body> msg = parser_->release();
    parser_.reset();
    busy_ = true;
    answered_ = false;
    ++seq_;
    server_.inflight_.fetch_add(1);
    keep_alive_ = msg.keep_alive();
    head_ = msg.method() == http::verb::head;
    stream_.expires_never();

    auto x = std::make_shared<Exchange>();
    Request& rq = x->req;
    rq.method = to_method(msg.method());
    std::string_view target = msg.target();
    auto q = target.find('?');
    rq.path = std::string(target.substr(0, q));
    if (q != std::string_view::npos) rq.query = std::string(target.substr(q + 1));
    rq.content_type = std::string(msg[http::field::content_type]);
    rq.authorization = std::string(msg[http::field::authorization]);
    rq.x_api_key = std::string(msg["X-API-Key"]);
    rq.origin = origin_;
    rq.cors_method = std::string(msg[http::field::access_control_request_method]);
    rq.body = std::move(msg.body());
    x->seq = seq_;
    x->route = other_route_label();
    x->out = shared_from_this();
    dispatch(server_.sv_, x);
}

void Session::send(Reply r, int route, unsigned seq) {
    net::post(stream_.get_executor(), [self = shared_from_this(), r = std::move(r), route, seq]() mutable {
        if (!self->busy_ || self->answered_ || seq != self->seq_) return;  // answered already (shutdown)
        self->route_ = route;
        self->do_write(std::move(r));
    });
}

// The answer is written as two buffers, the head built by response_head()
// (one string, instead of Beast's field list and serializer) and the body.
void Session::do_write(Reply r) {
    answered_ = true;
    const bool ka = keep_alive_ && !r.close && !server_.stopping();
    const std::size_t bytes = r.body.size();
    out_head_ = response_head(r, cors_allow_origin(cfg(), origin_), ka, bytes);
    out_body_ = std::move(r.body);
    if (head_) out_body_.clear();  // HEAD: the GET's headers, Content-Length included, without the body
    double secs = std::chrono::duration<double>(Clock::now() - started_).count();
    server_.sv_.metrics.observe(route_, r.status, secs);
    access_log(r.status, bytes, secs, r.cache);
    stream_.expires_after(std::chrono::seconds(30));
    std::array<net::const_buffer, 2> bufs{net::buffer(out_head_), net::buffer(out_body_)};
    net::async_write(stream_, bufs, [self = shared_from_this(), ka, bytes](beast::error_code ec, std::size_t) {
        self->busy_ = false;
        self->server_.inflight_.fetch_sub(1);
        self->out_body_.clear();
        if (bytes >= kTrimAfterBytes) {
            std::string().swap(self->out_body_);
            self->buffer_.shrink_to_fit();
            malloc_trim(0);
        }
        if (ec || !ka) return self->close();
        self->read_next();
    });
}

void Session::access_log(int status, std::size_t bytes, double seconds, const char* cache) {
    if (!cfg().access_log) return;
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
    append_json_string(line, remote_);
    line += ",\"method\":";
    append_json_string(line, method_);
    line += ",\"path\":";
    append_json_string(line, target_);
    char buf[128];
    std::snprintf(buf, sizeof buf, ",\"status\":%d,\"bytes\":%zu,\"ms\":%.3f", status, bytes, seconds * 1e3);
    line += buf;
    if (cache) {
        line += ",\"cache\":\"";
        line += cache;
        line += "\"";
    }
    line += "}\n";
    std::lock_guard<std::mutex> g(server_.log_mu_);
    std::fwrite(line.data(), 1, line.size(), stderr);
}

void Session::close_if_idle() {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
        if (!self->busy_) self->close();
    });
}

void Session::abort_inflight() {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
        if (!self->busy_ || self->answered_) return;
        Reply r = error_reply(make_error(503, "PX503", "the proxy is shutting down",
                                         "the request did not finish within --shutdown-timeout", "retry it"));
        r.close = true;
        self->do_write(std::move(r));
    });
}

void Session::close_now() {
    net::post(stream_.get_executor(), [self = shared_from_this()] { self->close(); });
}

void Session::close() {
    if (closed_) return;
    closed_ = true;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.socket().close(ec);
    server_.remove(shared_from_this());
}

// ------------------------------------------------------------------ Server --

Server::Server(net::io_context& ioc, Services& sv, int max_connections)
    : ioc_(ioc), sv_(sv), max_connections_(max_connections), acceptor_(ioc) {}

std::string Server::listen(const std::string& host, unsigned short port) {
    beast::error_code ec;
    auto addr = net::ip::make_address(host, ec);
    if (ec) {
        tcp::resolver res(ioc_);
        auto it = res.resolve(host, std::to_string(port), ec);
        if (ec || it.empty()) return "cannot resolve " + host;
        addr = it.begin()->endpoint().address();
    }
    tcp::endpoint ep(addr, port);
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(1024, ec);
    if (ec) return "cannot listen on " + host + ":" + std::to_string(port) + ": " + ec.message();
    return "";
}

tcp::endpoint Server::local_endpoint() const { return acceptor_.local_endpoint(); }

void Server::start_accept() { do_accept(); }

void Server::do_accept() {
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
        bool full;
        {
            std::lock_guard<std::mutex> g(mu_);
            full = static_cast<long>(sessions_.size()) >= max_connections_;
        }
        if (full) {
            refuse(std::move(sock));
        } else {
            auto s = std::make_shared<Session>(std::move(sock), *this);
            add(s);
            s->start();
        }
        do_accept();
    });
}

// Past --max-connections: a short 503 and close, so the client is told
// instead of waiting in the backlog.
void Server::refuse(tcp::socket sock) {
    sv_.metrics.connection_refused();
    static const std::string body =
        "{\"code\":\"PX503\",\"message\":\"too many connections\",\"details\":\"the proxy serves at most "
        "--max-connections at once\",\"hint\":\"retry after the delay given in Retry-After\"}";
    static const std::string msg = "HTTP/1.1 503 Service Unavailable\r\nServer: recsys-proxy\r\n"
                                   "Content-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n"
                                   "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    auto s = std::make_shared<tcp::socket>(std::move(sock));
    net::async_write(*s, net::buffer(msg), [s](beast::error_code, std::size_t) {
        beast::error_code ec;
        s->shutdown(tcp::socket::shutdown_both, ec);
        s->close(ec);
    });
}

void Server::add(const std::shared_ptr<Session>& s) {
    std::lock_guard<std::mutex> g(mu_);
    sessions_.insert(s);
    sv_.metrics.connection_opened();
}

void Server::remove(const std::shared_ptr<Session>& s) {
    std::lock_guard<std::mutex> g(mu_);
    if (sessions_.erase(s)) sv_.metrics.connection_closed();
}

template <class F>
void Server::each(F f) {
    std::vector<std::shared_ptr<Session>> all;
    {
        std::lock_guard<std::mutex> g(mu_);
        all.assign(sessions_.begin(), sessions_.end());
    }
    for (auto& s : all) f(*s);
}

void Server::stop_accepting() {
    stopping_ = true;
    beast::error_code ec;
    acceptor_.close(ec);
}

void Server::close_idle() { each([](Session& s) { s.close_if_idle(); }); }
void Server::abort_inflight() { each([](Session& s) { s.abort_inflight(); }); }
void Server::close_all() { each([](Session& s) { s.close_now(); }); }

}  // namespace rsproxy
