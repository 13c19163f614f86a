// exchange.hpp - one HTTP request and its answer, as the route handlers see
// them: plain strings, no Beast types (server.cpp converts), so handlers and
// the route table compile without Asio and are unit-testable.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "api.hpp"

namespace rsproxy {

struct DbOutcome;

enum class Method { Get, Head, Post, Options, Other };

struct Request {
    Method method = Method::Other;
    std::string path, query, body;
    std::string content_type, authorization, x_api_key, origin;
    std::string cors_method;          // Access-Control-Request-Method (preflight)
    std::vector<std::string> params;  // the path's {parameters}, in pattern order
};

struct Reply {
    int status = 200;
    std::string body;
    std::string content_type = "application/json";
    int retry_after = 0;              // seconds; 0 = no header
    std::string allow;                // 405 and OPTIONS
    bool www_authenticate = false;
    bool close = false;               // answer with Connection: close
    const char* cache = nullptr;      // "hit" | "miss" | "partial" for the access log
    std::vector<std::pair<std::string, std::string>> headers;  // e.g. the CORS preflight's
};

Reply error_reply(const ApiError& e);
// The status line and header fields of the HTTP/1.1 answer to `r`, ending
// with the empty line: Server, Content-Type, Retry-After, Allow,
// WWW-Authenticate, Cache-Control: no-store (JSON), the CORS fields when
// `acao` is not empty, r.headers (each replacing a field of its name),
// Connection: close unless `keep_alive`, and Content-Length `content_length`
// -- what Beast's serializer wrote for the same
// message (test/unit_tests.cpp compares the two), built in one string.
std::string response_head(const Reply& r, const std::string& acao, bool keep_alive, std::size_t content_length);
Reply json_ok(std::string body);
Reply outcome_error(const DbOutcome& o);

// The connection a request came on (server.cpp's Session).  send() is
// thread-safe; a reply for a request the connection no longer waits for
// (answered 503 at shutdown) is dropped.
class Responder {
public:
    virtual ~Responder() = default;
    virtual void send(Reply r, int route, unsigned seq) = 0;
};

struct Exchange {
    Request req;
    int route = -1;  // metrics label index (routes.hpp), -1 = "other"
    unsigned seq = 0;
    std::shared_ptr<Responder> out;
    void reply(Reply r) const { out->send(std::move(r), route, seq); }
};
using ExchangePtr = std::shared_ptr<Exchange>;

}  // namespace rsproxy
