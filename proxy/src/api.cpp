// api.cpp - see api.hpp.
#include "api.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

namespace rsproxy {

ApiError make_error(int status, std::string code, std::string message, std::string details,
                    std::string hint) {
    ApiError e;
    e.status = status;
    e.code = std::move(code);
    e.message = std::move(message);
    e.details = std::move(details);
    e.hint = std::move(hint);
    return e;
}

void append_json_string(std::string& out, std::string_view s) {
    static const char hex[] = "0123456789abcdef";
    out.push_back('"');
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default:
                if (c < 0x20) {
                    out += "\\u00";
                    out.push_back(hex[c >> 4]);
                    out.push_back(hex[c & 15]);
                } else {
                    out.push_back(static_cast<char>(c));
                }
        }
    }
    out.push_back('"');
}

void append_json_float(std::string& out, std::string_view t) {
    // PostgreSQL prints NaN, Infinity, -Infinity; JSON has no such numbers.
    if (t.empty() || t == "NaN" || t == "Infinity" || t == "-Infinity") {
        out += "null";
        return;
    }
    for (char c : t) {
        if (!((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E')) {
            out += "null";
            return;
        }
    }
    out.append(t.data(), t.size());
}

static void append_nullable(std::string& out, const std::string& s) {
    if (s.empty())
        out += "null";
    else
        append_json_string(out, s);
}

std::string error_json(const ApiError& e) {
    std::string out;
    out.reserve(64 + e.message.size() + e.details.size() + e.hint.size());
    out += "{\"code\":";
    append_json_string(out, e.code);
    out += ",\"message\":";
    append_json_string(out, e.message);
    out += ",\"details\":";
    append_nullable(out, e.details);
    out += ",\"hint\":";
    append_nullable(out, e.hint);
    out += "}";
    return out;
}

bool parse_int32(std::string_view s, int32_t& out) {
    if (s.empty() || s.size() > 11) return false;
    std::size_t i = 0;
    bool neg = false;
    if (s[0] == '-') {
        neg = true;
        i = 1;
        if (s.size() == 1) return false;
    }
    if (s[i] == '0' && s.size() > i + 1) return false;
    int64_t v = 0;
    for (; i < s.size(); ++i) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (s[i] - '0');
    }
    if (neg) v = -v;
    if (v < INT32_MIN || v > INT32_MAX) return false;
    if (neg && v == 0) return false;
    out = static_cast<int32_t>(v);
    return true;
}

bool query_param(std::string_view q, std::string_view name, std::string& value) {
    while (!q.empty()) {
        std::size_t amp = q.find('&');
        std::string_view part = q.substr(0, amp);
        std::size_t eq = part.find('=');
        std::string_view k = part.substr(0, eq);
        if (k == name) {
            value = eq == std::string_view::npos ? std::string() : std::string(part.substr(eq + 1));
            return true;
        }
        if (amp == std::string_view::npos) break;
        q.remove_prefix(amp + 1);
    }
    return false;
}

bool parse_rec_request(std::string_view body, const Limits& lim, RecRequest& out, ApiError& err) {
    using nlohmann::json;
    json doc;
    try {
        doc = json::parse(body.begin(), body.end());
    } catch (const json::exception& ex) {
        err = make_error(400, "PX400", "request body is not valid JSON", ex.what(),
                         "send {\"user_ids\":[1,2],\"top_n\":5}");
        return false;
    } catch (...) {
        err = make_error(400, "PX400", "request body is not valid JSON");
        return false;
    }
    if (!doc.is_object()) {
        err = make_error(400, "PX400", "request body must be a JSON object", "",
                         "send {\"user_ids\":[1,2],\"top_n\":5}");
        return false;
    }
    for (const auto& kv : doc.items()) {
        const std::string& k = kv.key();
        if (k != "user_ids" && k != "top_n" && k != "details") {
            std::string shown = k.substr(0, 64);
            err = make_error(422, "PX422", "unknown field \"" + shown + "\"",
                             "a /recommendations body has the fields user_ids, top_n and details",
                             "remove the field or check its spelling");
            return false;
        }
    }
    auto uit = doc.find("user_ids");
    if (uit == doc.end()) {
        err = make_error(400, "PX400", "missing field \"user_ids\"", "", "user_ids is an array of integers");
        return false;
    }
    if (!uit->is_array()) {
        err = make_error(400, "PX400", "\"user_ids\" must be an array of integers");
        return false;
    }
    for (const auto& v : *uit) {
        if (!v.is_number_integer()) {
            err = make_error(400, "PX400", "\"user_ids\" must be an array of integers",
                             "found an element of type " + std::string(v.type_name()));
            return false;
        }
    }
    out.top_n = lim.default_top_n;
    auto tit = doc.find("top_n");
    bool top_n_ok = true;
    int64_t top_n = lim.default_top_n;
    if (tit != doc.end()) {
        if (!tit->is_number_integer()) {
            err = make_error(400, "PX400", "\"top_n\" must be an integer",
                             "found " + std::string(tit->type_name()));
            return false;
        }
        if (tit->is_number_unsigned()) {
            uint64_t u = tit->get<uint64_t>();
            top_n_ok = u <= static_cast<uint64_t>(lim.max_top_n);
            top_n = top_n_ok ? static_cast<int64_t>(u) : 0;
        } else {
            top_n = tit->get<int64_t>();
        }
    }
    out.details = false;
    auto dit = doc.find("details");
    if (dit != doc.end()) {
        if (!dit->is_boolean()) {
            err = make_error(400, "PX400", "\"details\" must be a boolean");
            return false;
        }
        out.details = dit->get<bool>();
    }
    // Bounds (422).
    if (uit->empty()) {
        err = make_error(422, "PX422", "\"user_ids\" must hold at least one id");
        return false;
    }
    if (uit->size() > lim.max_user_ids) {
        err = make_error(422, "PX422", "too many user ids",
                         std::to_string(uit->size()) + " given, at most " +
                             std::to_string(lim.max_user_ids) + " allowed");
        return false;
    }
    if (!top_n_ok || top_n < 1 || top_n > lim.max_top_n) {
        err = make_error(422, "PX422", "\"top_n\" out of range",
                         "top_n must be between 1 and " + std::to_string(lim.max_top_n));
        return false;
    }
    out.top_n = static_cast<int>(top_n);
    out.user_ids.clear();
    out.user_ids.reserve(uit->size());
    std::unordered_set<int32_t> seen;
    seen.reserve(uit->size() * 2);
    for (const auto& v : *uit) {
        bool ok;
        int64_t id = 0;
        if (v.is_number_unsigned()) {
            uint64_t u = v.get<uint64_t>();
            ok = u <= static_cast<uint64_t>(INT32_MAX);
            id = ok ? static_cast<int64_t>(u) : 0;
        } else {
            id = v.get<int64_t>();
            ok = id >= INT32_MIN && id <= INT32_MAX;
        }
        if (!ok) {
            err = make_error(422, "PX422", "user id out of range",
                             "each user id must be a 32-bit signed integer");
            return false;
        }
        if (seen.insert(static_cast<int32_t>(id)).second) out.user_ids.push_back(static_cast<int32_t>(id));
    }
    return true;
}

int http_status_for_sqlstate(std::string_view s) {
    if (s.size() != 5) return 500;
    auto cls = s.substr(0, 2);
    if (s == "55000") return 503;  // no model trained yet (recsys)
    if (s == "57014") return 504;  // statement_timeout / cancel
    if (s == "42501") return 403;
    if (s == "42883" || s == "42P01") return 404;
    if (s == "25006") return 405;
    if (s == "22023" || s == "22004" || s == "2202E" || s == "22P02") return 400;  // argument checks
    if (s == "57P01" || s == "57P02" || s == "57P03") return 503;  // server shutting down / starting
    if (cls == "08") return 503;
    if (cls == "0L" || cls == "0P" || cls == "28") return 403;
    if (cls == "23") return 409;
    if (cls == "53") return 503;
    if (cls == "54") return 413;
    return 500;
}

bool constant_time_equals(std::string_view a, std::string_view b) {
    std::size_t n = std::max(a.size(), b.size());
    unsigned diff = a.size() == b.size() ? 0u : 1u;
    for (std::size_t i = 0; i < n; ++i) {
        unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
        unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
        diff |= static_cast<unsigned>(x ^ y);
    }
    return diff == 0;
}

bool key_matches(const std::vector<std::string>& keys, std::string_view presented) {
    bool any = false;
    for (const auto& k : keys) any |= constant_time_equals(k, presented);  // no early exit
    return any && !presented.empty();
}

static std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

std::string bearer_key(std::string_view authorization) {
    std::string_view a = trim(authorization);
    if (a.size() > 7) {
        std::string scheme(a.substr(0, 7));
        std::transform(scheme.begin(), scheme.end(), scheme.begin(), [](unsigned char c) { return std::tolower(c); });
        if (scheme == "bearer ") return std::string(trim(a.substr(7)));
    }
    return std::string();
}

bool request_authorized(const std::vector<std::string>& keys, std::string_view authorization,
                        std::string_view x_api_key) {
    // Both are compared, always: the time does not tell which header held the key.
    bool bearer = key_matches(keys, bearer_key(authorization));
    bool header = key_matches(keys, trim(x_api_key));
    return bearer || header;
}

std::size_t typical_response_bytes(std::size_t ids, int top_n, bool details, std::size_t product_columns) {
    const std::size_t per_item = details ? 80 + 20 * product_columns : 8;
    return 32 + ids * (16 + static_cast<std::size_t>(top_n < 0 ? 0 : top_n) * per_item);
}

ApiError response_too_large(std::size_t max_bytes, const std::string& what) {
    return make_error(413, "PX413", "the response would be too large",
                      what + "; the proxy answers at most " + std::to_string(max_bytes) +
                          " bytes per request (--max-response-bytes)",
                      "ask for fewer user ids, a smaller top_n, or leave out details");
}

std::string int_array_literal(const std::vector<int32_t>& ids) {
    std::string s;
    s.reserve(ids.size() * 8 + 2);
    s.push_back('{');
    char buf[16];
    for (std::size_t i = 0; i < ids.size(); ++i) {
        if (i) s.push_back(',');
        auto r = std::to_chars(buf, buf + sizeof buf, ids[i]);
        s.append(buf, r.ptr);
    }
    s.push_back('}');
    return s;
}

static bool is_int_text(std::string_view s) {
    int32_t v;
    return parse_int32(s, v);
}

// Appends the members of the JSON object text `obj` ({"a" : 1, ...}, as
// json_build_object prints it), each preceded by a comma and without the
// whitespace between tokens; nothing for {} or a text that is not an object.
static void append_object_members(std::string& out, std::string_view obj) {
    while (!obj.empty() && (obj.front() == ' ' || obj.front() == '\n')) obj.remove_prefix(1);
    while (!obj.empty() && (obj.back() == ' ' || obj.back() == '\n')) obj.remove_suffix(1);
    if (obj.size() < 2 || obj.front() != '{' || obj.back() != '}') return;
    obj = obj.substr(1, obj.size() - 2);
    const std::size_t mark = out.size();
    out.push_back(',');
    bool in_string = false, escaped = false, any = false;
    for (char c : obj) {
        if (in_string) {
            out.push_back(c);
            if (escaped) escaped = false;
            else if (c == '\\') escaped = true;
            else if (c == '"') in_string = false;
            continue;
        }
        if (c == ' ' || c == '\n' || c == '\t' || c == '\r') continue;
        if (c == '"') in_string = true;
        out.push_back(c);
        any = true;
    }
    if (!any) out.resize(mark);
}

// Formats each id's JSON array (in `ids` order) and hands it to
// emit(index, std::string&&); false with `err` on malformed rows (500) or past
// `max_bytes` (413, counting 32 bytes of envelope and 16 per id).
template <class Emit>
static bool format_each(const std::vector<int32_t>& ids, bool details, const Rows& rows, ApiError& err,
                        std::size_t max_bytes, Emit emit) {
    const int nr = rows.nrows();
    const int nc = rows.ncols();
    if (nc < 5) {
        err = make_error(500, "PX500", "unexpected result shape from recsys_recommend");
        return false;
    }
    const bool with_products = nc >= 6;
    std::size_t total = 32;
    // Group row indexes by user, then order each group by rank.
    struct Ref {
        int64_t rank;
        int row;
    };
    std::unordered_map<int32_t, std::vector<Ref>> by_user;
    by_user.reserve(ids.size() * 2);
    for (int r = 0; r < nr; ++r) {
        int32_t uid, rank;
        if (rows.is_null(r, 0) || rows.is_null(r, 1) || !parse_int32(rows.get(r, 0), uid) ||
            !is_int_text(rows.get(r, 1))) {
            err = make_error(500, "PX500", "unexpected row from recsys_recommend");
            return false;
        }
        if (rows.is_null(r, 3) || !parse_int32(rows.get(r, 3), rank)) rank = INT32_MAX;
        by_user[uid].push_back({rank, r});
    }
    std::string out;
    for (std::size_t i = 0; i < ids.size(); ++i) {
        const int32_t uid = ids[i];
        out.clear();
        out.push_back('[');
        auto it = by_user.find(uid);
        if (it != by_user.end()) {
            auto& v = it->second;
            out.reserve(2 + v.size() * (details ? 160 : 8));
            std::stable_sort(v.begin(), v.end(), [](const Ref& a, const Ref& b) { return a.rank < b.rank; });
            bool first = true;
            for (const Ref& ref : v) {
                if (!first) out.push_back(',');
                first = false;
                std::string_view pid = rows.get(ref.row, 1);
                if (!details) {
                    out.append(pid.data(), pid.size());
                    continue;
                }
                out += "{\"product_id\":";
                out.append(pid.data(), pid.size());
                out += ",\"score\":";
                if (rows.is_null(ref.row, 2))
                    out += "null";
                else
                    append_json_float(out, rows.get(ref.row, 2));
                out += ",\"rank\":";
                if (ref.rank == INT32_MAX)
                    out += "null";
                else
                    out += std::to_string(ref.rank);
                out += ",\"source\":";
                if (rows.is_null(ref.row, 4))
                    out += "null";
                else
                    append_json_string(out, rows.get(ref.row, 4));
                if (with_products && !rows.is_null(ref.row, 5)) append_object_members(out, rows.get(ref.row, 5));
                out.push_back('}');
            }
        }
        out.push_back(']');
        total += out.size() + 16;
        if (total > max_bytes) {
            err = response_too_large(max_bytes, "the answer grew past " + std::to_string(max_bytes) + " bytes");
            return false;
        }
        emit(i, std::move(out));
    }
    return true;
}

bool format_user_fragments(const std::vector<int32_t>& ids, bool details, const Rows& rows,
                           std::vector<std::string>& frags, ApiError& err, std::size_t max_bytes) {
    frags.assign(ids.size(), std::string());
    bool ok = format_each(ids, details, rows, err, max_bytes,
                          [&](std::size_t i, std::string&& f) { frags[i] = std::move(f); });
    if (!ok) {
        frags.clear();
        frags.shrink_to_fit();
    }
    return ok;
}

std::string assemble_results(const std::vector<int32_t>& ids, const std::vector<std::string>& frags) {
    std::size_t n = 16;
    for (const auto& f : frags) n += f.size() + 16;
    std::string out;
    out.reserve(n);
    out += "{\"results\":{";
    char buf[16];
    for (std::size_t i = 0; i < ids.size(); ++i) {
        if (i) out.push_back(',');
        out.push_back('"');
        auto tc = std::to_chars(buf, buf + sizeof buf, ids[i]);
        out.append(buf, tc.ptr);
        out += "\":";
        out += i < frags.size() ? frags[i] : std::string("[]");
    }
    out += "}}";
    return out;
}

bool format_recommendations(const RecRequest& req, const Rows& rows, std::string& out, ApiError& err,
                            std::size_t max_bytes) {
    // Straight into `out`, sized once (no doubling, no per-user copies beside the answer).
    std::size_t want = 32 + req.user_ids.size() * 16;
    for (int r = 0; r < rows.nrows() && rows.ncols() >= 5; ++r) {
        want += rows.get(r, 1).size() + 1;
        if (req.details) want += 80 + (rows.ncols() >= 6 ? rows.get(r, 5).size() : 0);
    }
    out.clear();
    out.reserve(std::min(want, max_bytes));
    out += "{\"results\":{";
    char buf[16];
    bool ok = format_each(req.user_ids, req.details, rows, err, max_bytes, [&](std::size_t i, std::string&& f) {
        if (i) out.push_back(',');
        out.push_back('"');
        auto tc = std::to_chars(buf, buf + sizeof buf, req.user_ids[i]);
        out.append(buf, tc.ptr);
        out += "\":";
        out += f;
    });
    if (!ok) {
        out.clear();
        out.shrink_to_fit();
        return false;
    }
    out += "}}";
    return true;
}

std::string json_cell_or(const Rows& rows, std::string_view empty) {
    if (rows.nrows() < 1 || rows.ncols() < 1 || rows.is_null(0, 0)) return std::string(empty);
    return std::string(rows.get(0, 0));
}

}  // namespace rsproxy
