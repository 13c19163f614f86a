// routes.hpp - the route table.  Adding a route is one line in routes.cpp's
// table plus its handler (handlers.hpp): dispatch() matches the path pattern,
// answers OPTIONS (CORS preflight), 405 with Allow, 401 and 415 from the
// table, and HEAD on every GET route.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "exchange.hpp"

namespace rsproxy {

class Services;
struct Config;

using Handler = void (*)(Services&, const ExchangePtr&);

struct RouteSpec {
    const char* pattern;  // "/similar/{product_id}": a {name} segment matches one non-empty segment
    Method method;        // Get (HEAD is served too) or Post (needs application/json)
    bool auth;            // needs an API key when --api-key is set
    Handler handle;
};

const std::vector<RouteSpec>& route_table();
// Metric labels: one per distinct pattern, then "other" (404s, malformed requests).
const std::vector<std::string>& route_labels();
int other_route_label();

// True when `path` matches `pattern`; the {parameters} are appended to `params`.
bool match_path(std::string_view pattern, std::string_view path, std::vector<std::string>& params);
// "application/json" with any parameters (charset), in any case.
bool is_json_media_type(std::string_view content_type);
// The Access-Control-Allow-Origin value for `origin`, or "" when it is not allowed.
std::string cors_allow_origin(const Config& cfg, std::string_view origin);

void dispatch(Services& sv, const ExchangePtr& x);

}  // namespace rsproxy
