// reply.cpp - error and success replies, and database outcomes as HTTP.
#include "db.hpp"
#include "exchange.hpp"

#include <strings.h>

#include <boost/beast/http/status.hpp>

namespace rsproxy {

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
        case DbOutcome::Unavailable:
            return error_reply(make_error(503, "PX503", "the database is unavailable", o.message,
                                          "retry after the delay given in Retry-After"));
        case DbOutcome::AcquireTimeout:
            return error_reply(make_error(504, "PX504", "timed out waiting for a database connection", o.message));
        case DbOutcome::ClientTimeout:
            return error_reply(make_error(504, "PX504", "the database did not answer in time", o.message));
        default:
            return error_reply(make_error(500, "PX500", "internal error"));
    }
}

std::string response_head(const Reply& r, const std::string& acao, bool keep_alive, std::size_t content_length) {
    namespace http = boost::beast::http;
    std::vector<std::pair<std::string_view, std::string_view>> fields;
    fields.reserve(12 + r.headers.size());
    std::string retry = r.retry_after > 0 ? std::to_string(r.retry_after) : std::string();
    fields.emplace_back("Server", "recsys-proxy");
    if (!r.content_type.empty()) fields.emplace_back("Content-Type", r.content_type);
    if (r.retry_after > 0) fields.emplace_back("Retry-After", retry);
    if (!r.allow.empty()) fields.emplace_back("Allow", r.allow);
    if (r.www_authenticate) fields.emplace_back("WWW-Authenticate", "Bearer");
    if (r.content_type.rfind("application/json", 0) == 0) fields.emplace_back("Cache-Control", "no-store");
    if (!acao.empty()) {
        fields.emplace_back("Access-Control-Allow-Origin", acao);
        fields.emplace_back("Access-Control-Expose-Headers", "Retry-After");
        if (acao != "*") fields.emplace_back("Vary", "Origin");
    }
    for (const auto& [k, v] : r.headers) {  // set(): replaces a field of the same name
        for (auto it = fields.begin(); it != fields.end();)
            it = it->first.size() == k.size() && strncasecmp(it->first.data(), k.data(), k.size()) == 0
                     ? fields.erase(it)
                     : it + 1;
        fields.emplace_back(k, v);
    }
    if (!keep_alive) fields.emplace_back("Connection", "close");
    const std::string length = std::to_string(content_length);  // as Beast's prepare_payload: also 0 on a 204
    fields.emplace_back("Content-Length", length);

    const std::string_view reason = http::obsolete_reason(static_cast<http::status>(r.status));
    std::size_t n = 16 + reason.size();
    for (const auto& [k, v] : fields) n += k.size() + v.size() + 4;
    std::string out;
    out.reserve(n);
    out += "HTTP/1.1 ";
    out += std::to_string(r.status);
    out += ' ';
    out += reason;
    out += "\r\n";
    for (const auto& [k, v] : fields) {
        out += k;
        out += ": ";
        out += v;
        out += "\r\n";
    }
    out += "\r\n";
    return out;
}

}  // namespace rsproxy
