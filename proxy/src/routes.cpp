// routes.cpp - see routes.hpp.
#include "routes.hpp"

#include <algorithm>
#include <cctype>

#include "config.hpp"
#include "handlers.hpp"
#include "services.hpp"

namespace rsproxy {

const std::vector<RouteSpec>& route_table() {
    static const std::vector<RouteSpec> table = {
        {"/", Method::Get, false, handle_root},
        {"/index.html", Method::Get, false, handle_root},
        {"/healthz", Method::Get, false, handle_healthz},
        {"/readyz", Method::Get, false, handle_readyz},
        {"/metrics", Method::Get, false, handle_metrics},
        {"/openapi.json", Method::Get, false, handle_openapi},
        {"/recommendations", Method::Post, true, handle_recommendations},
        {"/recommendations/items", Method::Post, true, handle_recommendations_items},
        {"/explanations", Method::Post, true, handle_explanations},
        {"/similar/{product_id}", Method::Get, true, handle_similar},
        {"/products", Method::Get, true, handle_products},
        {"/users/{user_id}/history", Method::Get, true, handle_history},
        {"/models/active", Method::Get, true, handle_models_active},
        {"/evaluations", Method::Get, true, handle_evaluations},
    };
    return table;
}

namespace {

// label_of()[i]: the metric label index of route_table()[i].
const std::vector<int>& label_of() {
    static const std::vector<int> v = [] {
        std::vector<int> out;
        std::vector<std::string> seen;
        for (const auto& r : route_table()) {
            auto it = std::find(seen.begin(), seen.end(), r.pattern);
            out.push_back(static_cast<int>(it - seen.begin()));
            if (it == seen.end()) seen.emplace_back(r.pattern);
        }
        return out;
    }();
    return v;
}

const char* method_name(Method m) {
    switch (m) {
        case Method::Get: return "GET";
        case Method::Head: return "HEAD";
        case Method::Post: return "POST";
        case Method::Options: return "OPTIONS";
        default: return "?";
    }
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
}

}  // namespace

const std::vector<std::string>& route_labels() {
    static const std::vector<std::string> v = [] {
        std::vector<std::string> out;
        for (const auto& r : route_table())
            if (std::find(out.begin(), out.end(), r.pattern) == out.end()) out.emplace_back(r.pattern);
        out.emplace_back("other");
        return out;
    }();
    return v;
}

int other_route_label() { return static_cast<int>(route_labels().size()) - 1; }

bool match_path(std::string_view pattern, std::string_view path, std::vector<std::string>& params) {
    std::size_t added = 0;
    auto undo = [&] {
        params.resize(params.size() - added);
        return false;
    };
    while (true) {
        if (pattern.empty() || path.empty()) return pattern.empty() && path.empty() ? true : undo();
        if (pattern[0] != '/' || path[0] != '/') return undo();
        pattern.remove_prefix(1);
        path.remove_prefix(1);
        std::size_t pe = std::min(pattern.find('/'), pattern.size());
        std::size_t se = std::min(path.find('/'), path.size());
        std::string_view pseg = pattern.substr(0, pe), seg = path.substr(0, se);
        if (pseg.size() >= 2 && pseg.front() == '{' && pseg.back() == '}') {
            if (seg.empty()) return undo();
            params.emplace_back(seg);
            ++added;
        } else if (pseg != seg) {
            return undo();
        }
        pattern.remove_prefix(pe);
        path.remove_prefix(se);
    }
}

bool is_json_media_type(std::string_view ct) {
    return iequals(trim(ct.substr(0, ct.find(';'))), "application/json");
}

std::string cors_allow_origin(const Config& cfg, std::string_view origin) {
    if (origin.empty() || cfg.cors_origins.empty()) return "";
    for (const auto& o : cfg.cors_origins) {
        if (o == "*") return "*";
        if (iequals(o, origin)) return std::string(origin);
    }
    return "";
}

void dispatch(Services& sv, const ExchangePtr& x) {
    const auto& table = route_table();
    Request& rq = x->req;
    const Method want = rq.method == Method::Head ? Method::Get : rq.method;
    int chosen = -1, first = -1;
    std::vector<std::string> params, scratch;
    std::string allow;
    for (std::size_t i = 0; i < table.size(); ++i) {
        scratch.clear();
        if (!match_path(table[i].pattern, rq.path, scratch)) continue;
        if (first < 0) first = static_cast<int>(i);
        allow += allow.empty() ? "" : ", ";
        allow += method_name(table[i].method);
        if (table[i].method == Method::Get) allow += ", HEAD";
        if (table[i].method == want && chosen < 0) {
            chosen = static_cast<int>(i);
            params.swap(scratch);
        }
    }
    if (first < 0) {
        x->route = other_route_label();
        x->reply(error_reply(make_error(404, "PX404", "no such route", rq.path.substr(0, 200), "see /openapi.json")));
        return;
    }
    allow += ", OPTIONS";
    x->route = label_of()[static_cast<std::size_t>(chosen >= 0 ? chosen : first)];

    if (rq.method == Method::Options) {
        Reply r;
        r.status = 204;
        r.allow = allow;
        r.content_type.clear();
        if (!rq.origin.empty() && !rq.cors_method.empty()) {  // a CORS preflight
            if (cors_allow_origin(sv.cfg, rq.origin).empty()) {
                x->reply(error_reply(make_error(403, "PX403", "origin not allowed", rq.origin.substr(0, 200),
                                                "allow it with --cors-origin")));
                return;
            }
            r.headers = {{"Access-Control-Allow-Methods", allow},
                         {"Access-Control-Allow-Headers", "Authorization, Content-Type, X-API-Key"},
                         {"Access-Control-Max-Age", "600"}};
        }
        x->reply(std::move(r));
        return;
    }
    if (chosen < 0) {
        Reply r = error_reply(make_error(405, "PX405", "method not allowed", "", "use " + allow));
        r.allow = allow;
        x->reply(std::move(r));
        return;
    }
    const RouteSpec& route = table[static_cast<std::size_t>(chosen)];
    if (route.auth && !sv.cfg.api_keys.empty() &&
        !request_authorized(sv.cfg.api_keys, rq.authorization, rq.x_api_key)) {
        Reply r = error_reply(make_error(401, "PX401", "missing or invalid API key", "",
                                         "send Authorization: Bearer KEY or X-API-Key: KEY"));
        r.www_authenticate = true;
        x->reply(std::move(r));
        return;
    }
    if (route.method == Method::Post && !is_json_media_type(rq.content_type)) {
        x->reply(error_reply(make_error(415, "PX415", "unsupported media type",
                                        rq.content_type.empty() ? "no Content-Type" : "Content-Type: " + rq.content_type.substr(0, 100),
                                        "send Content-Type: application/json")));
        return;
    }
    rq.params = std::move(params);
    route.handle(sv, x);
}

}  // namespace rsproxy
