// reply.cpp - error and success replies, and database outcomes as HTTP.
#include "db.hpp"
#include "exchange.hpp"

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

}  // namespace rsproxy
