// api.cpp - see api.hpp.
#include "api.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
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

bool percent_decode(std::string_view s, std::string& out) {
    out.clear();
    out.reserve(s.size());
    auto hexv = [](char c) {
        return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    };
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '%') {
            out.push_back(s[i]);
            continue;
        }
        if (i + 2 >= s.size()) return false;
        int hi = hexv(s[i + 1]), lo = hexv(s[i + 2]);
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) return false;
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
    }
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

const char* id_type_sql(IdType t) {
    switch (t) {
        case IdType::Integer: return "integer";
        case IdType::Bigint: return "bigint";
        case IdType::Text: return "text";
        case IdType::Uuid: return "uuid";
    }
    return "integer";
}

bool id_type_from_sql(std::string_view n, IdType& out) {
    if (n == "integer" || n == "smallint") out = IdType::Integer;
    else if (n == "bigint") out = IdType::Bigint;
    else if (n == "text" || n == "character varying") out = IdType::Text;
    else if (n == "uuid") out = IdType::Uuid;
    else return false;
    return true;
}

namespace {

const char* id_form(IdType t) {
    switch (t) {
        case IdType::Integer: return "integer (32-bit): a JSON integer or a string of one";
        case IdType::Bigint: return "bigint (64-bit): a JSON integer or a string of one";
        case IdType::Text: return "text: a JSON string (or an integer, taken as its decimal text)";
        case IdType::Uuid: return "uuid: a string like \"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\"";
    }
    return "";
}

// Well-formed UTF-8 (no overlongs, no surrogates, at most U+10FFFF).
bool valid_utf8(std::string_view s) {
    std::size_t i = 0;
    while (i < s.size()) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        std::size_t n = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : 9;
        if (n == 9 || i + n >= s.size()) return false;
        uint32_t cp = n == 0 ? c : n == 1 ? (c & 0x1F) : n == 2 ? (c & 0x0F) : (c & 0x07);
        for (std::size_t k = 1; k <= n; ++k) {
            unsigned char d = static_cast<unsigned char>(s[i + k]);
            if ((d >> 6) != 2) return false;
            cp = (cp << 6) | (d & 0x3F);
        }
        static const uint32_t min_cp[] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += n + 1;
    }
    return true;
}

bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// A decimal integer within [lo, hi] in canonical form; 0, 400 (not decimal) or 422 (out of range).
int decimal_in_range(std::string_view s, int64_t lo, int64_t hi, std::string& out) {
    std::size_t i = s.size() > 0 && s[0] == '-' ? 1 : 0;
    if (i == s.size()) return 400;
    for (std::size_t k = i; k < s.size(); ++k)
        if (s[k] < '0' || s[k] > '9') return 400;
    if (s[i] == '0' && (s.size() > i + 1 || i == 1)) return 400;  // leading zeros, "-0"
    int64_t v = 0;
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec != std::errc() || r.ptr != s.data() + s.size() || v < lo || v > hi) return 422;
    out.assign(s.data(), s.size());
    return 0;
}

}  // namespace

int parse_id_text(std::string_view s, IdType t, std::string& out, std::string& why) {
    int st = 0;
    switch (t) {
        case IdType::Integer:
        case IdType::Bigint: {
            const bool i32 = t == IdType::Integer;
            st = decimal_in_range(s, i32 ? INT32_MIN : INT64_MIN, i32 ? INT32_MAX : INT64_MAX, out);
            if (st == 400) why = "not a decimal integer";
            else if (st == 422) why = i32 ? "outside the 32-bit integer range" : "outside the 64-bit integer range";
            return st;
        }
        case IdType::Text:
            if (s.empty()) why = "an empty string";
            else if (s.find('\0') != std::string_view::npos) why = "contains a NUL character";
            else if (s.size() > kMaxTextIdBytes) why = "longer than " + std::to_string(kMaxTextIdBytes) + " bytes";
            else if (!valid_utf8(s)) why = "not valid UTF-8";
            else {
                out.assign(s.data(), s.size());
                return 0;
            }
            return 422;
        case IdType::Uuid: {
            bool ok = s.size() == 36;
            for (std::size_t i = 0; ok && i < 36; ++i)
                ok = (i == 8 || i == 13 || i == 18 || i == 23) ? s[i] == '-' : is_hex(s[i]);
            if (!ok) {
                why = "not a uuid (8-4-4-4-12 hex digits)";
                return 400;
            }
            out.assign(s.data(), s.size());
            for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            return 0;
        }
    }
    return 400;
}

void append_json_id(std::string& out, IdType t, std::string_view text) {
    if (t == IdType::Integer || t == IdType::Bigint)
        out.append(text.data(), text.size());
    else
        append_json_string(out, text);
}

namespace {

using nlohmann::json;

bool parse_body(std::string_view body, json& doc, ApiError& err, const char* example) {
    try {
        doc = json::parse(body.begin(), body.end());
    } catch (const json::exception& ex) {
        err = make_error(400, "PX400", "request body is not valid JSON", ex.what(), std::string("send ") + example);
        return false;
    } catch (...) {
        err = make_error(400, "PX400", "request body is not valid JSON");
        return false;
    }
    if (!doc.is_object()) {
        err = make_error(400, "PX400", "request body must be a JSON object", "", std::string("send ") + example);
        return false;
    }
    return true;
}

// 422 for a member not in `allowed` (so a misspelt option is never ignored).
bool known_fields(const json& doc, const std::vector<const char*>& allowed, const char* route, ApiError& err) {
    for (const auto& kv : doc.items()) {
        const std::string& k = kv.key();
        if (std::none_of(allowed.begin(), allowed.end(), [&](const char* a) { return k == a; })) {
            std::string list;
            for (std::size_t i = 0; i < allowed.size(); ++i)
                list += std::string(i == 0 ? "" : i + 1 == allowed.size() ? " and " : ", ") + allowed[i];
            err = make_error(422, "PX422", "unknown field \"" + k.substr(0, 64) + "\"",
                             std::string("a ") + route + " body has the fields " + list,
                             "remove the field or check its spelling");
            return false;
        }
    }
    return true;
}

// One JSON id.  0 with `out`, or the status with `why`.
int json_id(const json& v, IdType t, std::string& out, std::string& why) {
    if (v.is_string()) return parse_id_text(v.get_ref<const std::string&>(), t, out, why);
    if (v.is_number_integer() && t != IdType::Uuid) {
        std::string text = v.is_number_unsigned() ? std::to_string(v.get<uint64_t>()) : std::to_string(v.get<int64_t>());
        return parse_id_text(text, t, out, why);
    }
    why = std::string("found ") + v.type_name();
    return 400;
}

// An offending JSON value as the error's details show it (at most 64 bytes).
std::string shown(const json& v) {
    std::string d = v.dump(-1, ' ', false, json::error_handler_t::replace);
    return d.size() > 64 ? d.substr(0, 61) + "..." : d;
}

// Type errors (400) are reported at once; the first range error (422) is kept
// in `later` so that every 400 of the body comes first.
struct Checker {
    explicit Checker(ApiError& e) : err(e) {}
    ApiError& err;
    ApiError later;
    bool has_later = false;
    void defer(ApiError e) {
        if (!has_later) later = std::move(e), has_later = true;
    }
    bool finish() {
        if (!has_later) return true;
        err = later;
        return false;
    }
};

// An array of ids `name` (of `what`, e.g. "user id"): 400 when it is not an
// array or an element is of the wrong form, 422 (deferred) when it has fewer
// than `min` or more than `max` elements or an id is out of range.
bool id_array(const json& a, const char* name, const char* what, IdType t, std::size_t min, std::size_t max,
              const char* max_flag, Checker& ck, std::vector<std::string>& out) {
    const std::string q = std::string("\"") + name + "\"";
    if (!a.is_array()) {
        ck.err = make_error(400, "PX400", q + " must be an array of ids", std::string("found ") + a.type_name(),
                            std::string("the ") + what + "s are " + id_form(t));
        return false;
    }
    out.clear();
    out.reserve(std::min(a.size(), max));
    std::string id, why;
    for (const auto& v : a) {
        int st = json_id(v, t, id, why);
        if (st == 400) {
            ck.err = make_error(400, "PX400", q + " must be an array of ids", shown(v) + ": " + why,
                                std::string("the ") + what + "s are " + id_form(t));
            return false;
        }
        if (st != 0) {
            ck.defer(make_error(422, "PX422", std::string(what) + " out of range", shown(v) + " in " + q + " is " + why,
                                std::string("the ") + what + "s are " + id_form(t)));
            continue;
        }
        out.push_back(id);
    }
    if (a.size() < min)
        ck.defer(make_error(422, "PX422", q + " must hold at least one id"));
    if (a.size() > max)
        ck.defer(make_error(422, "PX422", std::string("too many ") + what + "s in " + q,
                            std::to_string(a.size()) + " given, at most " + std::to_string(max) + " allowed (" +
                                max_flag + ")"));
    return true;
}

bool top_n_field(const json& doc, const Limits& lim, Checker& ck, int& out) {
    out = lim.default_top_n;
    auto tit = doc.find("top_n");
    if (tit == doc.end()) return true;
    if (!tit->is_number_integer()) {
        ck.err = make_error(400, "PX400", "\"top_n\" must be an integer", "found " + std::string(tit->type_name()));
        return false;
    }
    bool ok = true;
    int64_t n = 0;
    if (tit->is_number_unsigned()) {
        uint64_t u = tit->get<uint64_t>();
        ok = u <= static_cast<uint64_t>(lim.max_top_n);
        n = ok ? static_cast<int64_t>(u) : 0;
    } else {
        n = tit->get<int64_t>();
    }
    if (!ok || n < 1 || n > lim.max_top_n) {
        ck.defer(make_error(422, "PX422", "\"top_n\" out of range",
                            "top_n must be between 1 and " + std::to_string(lim.max_top_n)));
        return true;
    }
    out = static_cast<int>(n);
    return true;
}

// An optional boolean: -1 absent, else 0/1.
bool bool_field(const json& doc, const char* name, Checker& ck, int& out) {
    out = -1;
    auto it = doc.find(name);
    if (it == doc.end()) return true;
    if (!it->is_boolean()) {
        ck.err = make_error(400, "PX400", std::string("\"") + name + "\" must be a boolean",
                            "found " + std::string(it->type_name()));
        return false;
    }
    out = it->get<bool>() ? 1 : 0;
    return true;
}

bool filter_field(const json& doc, const char* name, IdType t, const Limits& lim, Checker& ck, ItemFilter& out) {
    out = ItemFilter{};
    auto it = doc.find(name);
    if (it == doc.end()) return true;
    out.given = true;
    return id_array(*it, name, "item id", t, 0, lim.max_filter_items, "--max-filter-items", ck, out.ids);
}

bool required(const json& doc, const char* name, const char* what, ApiError& err) {
    if (doc.contains(name)) return true;
    err = make_error(400, "PX400", std::string("missing field \"") + name + "\"", "", what);
    return false;
}

}  // namespace

namespace {

// The fast path's reader: one pass over the body, no document built.
struct FastReader {
    const char* p;
    const char* end;
    void ws() {
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) ++p;
    }
    bool eat(char c) {
        ws();
        if (p == end || *p != c) return false;
        ++p;
        return true;
    }
    // A member name without escapes.
    bool key(std::string_view& k) {
        if (!eat('"')) return false;
        const char* b = p;
        while (p < end && *p != '"' && *p != '\\' && static_cast<unsigned char>(*p) >= 0x20) ++p;
        if (p == end || *p != '"') return false;
        k = std::string_view(b, static_cast<std::size_t>(p - b));
        ++p;
        return true;
    }
    // A JSON integer -?(0|[1-9][0-9]*) of at most 18 digits, not "-0", not
    // followed by a fraction or exponent; its text is its canonical form.
    bool integer(std::string_view& text, int64_t& v) {
        ws();
        const char* b = p;
        if (p < end && *p == '-') ++p;
        const char* d = p;
        while (p < end && *p >= '0' && *p <= '9') ++p;
        const std::size_t nd = static_cast<std::size_t>(p - d);
        if (nd == 0 || nd > 18 || (*d == '0' && (nd > 1 || d != b))) return false;
        if (p < end && (*p == '.' || *p == 'e' || *p == 'E')) return false;
        text = std::string_view(b, static_cast<std::size_t>(p - b));
        auto r = std::from_chars(b, p, v);
        return r.ec == std::errc() && r.ptr == p;
    }
    bool boolean(bool& v) {
        ws();
        if (end - p >= 4 && std::string_view(p, 4) == "true") {
            p += 4;
            v = true;
        } else if (end - p >= 5 && std::string_view(p, 5) == "false") {
            p += 5;
            v = false;
        } else {
            return false;
        }
        return p == end || !(std::isalnum(static_cast<unsigned char>(*p)) || *p == '_');
    }
    // An array of integer ids of type t (integer or bigint, in range) with
    // min..max elements.
    bool ids(IdType t, std::size_t min, std::size_t max, std::vector<std::string>& out) {
        if (t != IdType::Integer && t != IdType::Bigint) return false;
        if (!eat('[')) return false;
        out.clear();
        ws();
        if (p < end && *p == ']') {
            ++p;
            return min == 0;
        }
        // Room for the elements up to the first ']' (a bound: one more than
        // its commas, at most max), so a long filter is not moved on growth.
        const char* close = static_cast<const char*>(std::memchr(p, ']', static_cast<std::size_t>(end - p)));
        if (close) out.reserve(std::min<std::size_t>(max, 1 + static_cast<std::size_t>(std::count(p, close, ','))));
        while (true) {
            std::string_view text;
            int64_t v = 0;
            if (!integer(text, v)) return false;
            if (t == IdType::Integer && (v < INT32_MIN || v > INT32_MAX)) return false;
            if (out.size() == max) return false;
            out.emplace_back(text);
            if (eat(']')) break;
            if (!eat(',')) return false;
        }
        return out.size() >= min;
    }
};

// The common shape of a /recommendations body -- an object of the known
// members with integer ids, an integer top_n in range and booleans, each
// member once, nothing to report -- read in one pass.  False for anything
// else (string ids, floats, nulls, escapes, a repeated member, any error),
// which the general path then parses: what it answers, the fast path
// answers for the bodies it takes (test/unit_tests.cpp and the fuzzer
// compare the two).
bool parse_rec_request_fast(std::string_view body, const Limits& lim, RecRequest& out, IdTypes types) {
    FastReader rd{body.data(), body.data() + body.size()};
    RecRequest r;
    r.types = types;
    r.top_n = lim.default_top_n;
    std::vector<std::string> ids;
    unsigned seen = 0;
    if (!rd.eat('{')) return false;
    rd.ws();
    if (rd.p < rd.end && *rd.p == '}') return false;  // no user_ids
    while (true) {
        std::string_view k;
        if (!rd.key(k) || !rd.eat(':')) return false;
        unsigned bit;
        bool ok;
        if (k == "user_ids") {
            bit = 1;
            ok = rd.ids(types.user, 1, lim.max_user_ids, ids);
        } else if (k == "top_n") {
            bit = 2;
            std::string_view text;
            int64_t v = 0;
            ok = rd.integer(text, v) && v >= 1 && v <= lim.max_top_n;
            r.top_n = static_cast<int>(v);
        } else if (k == "details") {
            bit = 4;
            ok = rd.boolean(r.details);
        } else if (k == "exclude_seen") {
            bit = 8;
            bool b = false;
            ok = rd.boolean(b);
            r.exclude_seen = b ? 1 : 0;
        } else if (k == "include_items") {
            bit = 16;
            r.include_items.given = true;
            ok = rd.ids(types.item, 0, lim.max_filter_items, r.include_items.ids);
        } else if (k == "exclude_items") {
            bit = 32;
            r.exclude_items.given = true;
            ok = rd.ids(types.item, 0, lim.max_filter_items, r.exclude_items.ids);
        } else {
            return false;
        }
        if (!ok || (seen & bit)) return false;
        seen |= bit;
        if (rd.eat('}')) break;
        if (!rd.eat(',')) return false;
    }
    rd.ws();
    if (rd.p != rd.end || !(seen & 1)) return false;
    r.user_ids.reserve(ids.size());
    std::unordered_set<std::string_view> distinct;
    distinct.reserve(ids.size() * 2);
    for (const auto& id : ids)
        if (distinct.insert(id).second) r.user_ids.push_back(id);
    out = std::move(r);
    return true;
}

}  // namespace

bool parse_rec_request(std::string_view body, const Limits& lim, RecRequest& out, ApiError& err, IdTypes types) {
    if (parse_rec_request_fast(body, lim, out, types)) return true;
    return parse_rec_request_general(body, lim, out, err, types);
}

bool parse_rec_request_general(std::string_view body, const Limits& lim, RecRequest& out, ApiError& err,
                               IdTypes types) {
    json doc;
    if (!parse_body(body, doc, err, "{\"user_ids\":[1,2],\"top_n\":5}")) return false;
    if (!known_fields(doc, {"user_ids", "top_n", "details", "exclude_seen", "include_items", "exclude_items"},
                      "/recommendations", err))
        return false;
    if (!required(doc, "user_ids", "user_ids is an array of ids", err)) return false;
    Checker ck(err);
    std::vector<std::string> ids;
    int details = -1;
    out.types = types;
    if (!id_array(doc["user_ids"], "user_ids", "user id", types.user, 1, lim.max_user_ids, "--max-user-ids", ck, ids) ||
        !top_n_field(doc, lim, ck, out.top_n) || !bool_field(doc, "details", ck, details) ||
        !bool_field(doc, "exclude_seen", ck, out.exclude_seen) ||
        !filter_field(doc, "include_items", types.item, lim, ck, out.include_items) ||
        !filter_field(doc, "exclude_items", types.item, lim, ck, out.exclude_items) || !ck.finish())
        return false;
    out.details = details == 1;
    out.user_ids.clear();
    out.user_ids.reserve(ids.size());
    std::unordered_set<std::string> seen;
    seen.reserve(ids.size() * 2);
    for (auto& id : ids)
        if (seen.insert(id).second) out.user_ids.push_back(std::move(id));
    return true;
}

bool parse_items_request(std::string_view body, const Limits& lim, ItemsRequest& out, ApiError& err, IdTypes types) {
    json doc;
    if (!parse_body(body, doc, err, "{\"item_ids\":[1,2],\"top_n\":5}")) return false;
    if (!known_fields(doc, {"item_ids", "top_n", "weights", "details", "include_items", "exclude_items"},
                      "/recommendations/items", err))
        return false;
    if (!required(doc, "item_ids", "item_ids is an array of the basket's item ids", err)) return false;
    Checker ck(err);
    int details = -1;
    out.types = types;
    if (!id_array(doc["item_ids"], "item_ids", "item id", types.item, 1, lim.max_user_ids, "--max-user-ids", ck,
                  out.item_ids) ||
        !top_n_field(doc, lim, ck, out.top_n) || !bool_field(doc, "details", ck, details) ||
        !filter_field(doc, "include_items", types.item, lim, ck, out.include_items) ||
        !filter_field(doc, "exclude_items", types.item, lim, ck, out.exclude_items))
        return false;
    out.details = details == 1;
    out.weights.clear();
    out.has_weights = false;
    auto wit = doc.find("weights");
    if (wit != doc.end()) {
        if (!wit->is_array()) {
            err = make_error(400, "PX400", "\"weights\" must be an array of numbers", "found " + std::string(wit->type_name()));
            return false;
        }
        for (const auto& v : *wit) {
            if (!v.is_number()) {
                err = make_error(400, "PX400", "\"weights\" must be an array of numbers",
                                 "an element: found " + std::string(v.type_name()));
                return false;
            }
            double w = v.get<double>();
            if (!std::isfinite(w))
                ck.defer(make_error(422, "PX422", "a weight out of range", "each weight must be a finite number"));
            out.weights.push_back(w);
        }
        out.has_weights = true;
        if (wit->size() != doc["item_ids"].size())
            ck.defer(make_error(422, "PX422", "\"weights\" must have one number per item id",
                                std::to_string(wit->size()) + " weights for " +
                                    std::to_string(doc["item_ids"].size()) + " item ids"));
    }
    return ck.finish();
}

bool parse_explain_request(std::string_view body, ExplainRequest& out, ApiError& err, IdTypes types) {
    json doc;
    if (!parse_body(body, doc, err, "{\"user_id\":10,\"product_id\":603}")) return false;
    if (!known_fields(doc, {"user_id", "product_id"}, "/explanations", err)) return false;
    if (!required(doc, "user_id", "user_id is the user whose recommendation is explained", err) ||
        !required(doc, "product_id", "product_id is the recommended product", err))
        return false;
    out.types = types;
    struct One {
        const char* name;
        const char* what;
        IdType t;
        std::string* dst;
    };
    Checker ck(err);
    for (const One& o : {One{"user_id", "user id", types.user, &out.user_id},
                         One{"product_id", "item id", types.item, &out.product_id}}) {
        std::string why;
        int st = json_id(doc[o.name], o.t, *o.dst, why);
        if (st == 400) {
            err = make_error(400, "PX400", std::string("\"") + o.name + "\" must be an id", why,
                             std::string("the ") + o.what + "s are " + id_form(o.t));
            return false;
        }
        if (st != 0)
            ck.defer(make_error(422, "PX422", std::string(o.what) + " out of range",
                                std::string("\"") + o.name + "\" is " + why,
                                std::string("the ") + o.what + "s are " + id_form(o.t)));
    }
    return ck.finish();
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

std::string array_literal(const std::vector<std::string>& elems) {
    std::size_t n = 2;
    for (const auto& e : elems) n += e.size() + 3;
    std::string s;
    s.reserve(n);
    s.push_back('{');
    for (std::size_t i = 0; i < elems.size(); ++i) {
        if (i) s.push_back(',');
        s.push_back('"');
        const std::string& e = elems[i];
        if (e.find_first_of("\"\\") == std::string::npos) {
            s.append(e);  // the common case (every integer and uuid id): nothing to escape
        } else {
            for (char c : e) {
                if (c == '"' || c == '\\') s.push_back('\\');
                s.push_back(c);
            }
        }
        s.push_back('"');
    }
    s.push_back('}');
    return s;
}

std::string float_array_literal(const std::vector<double>& v) {
    std::string s = "{";
    char buf[32];
    for (std::size_t i = 0; i < v.size(); ++i) {
        if (i) s.push_back(',');
        auto r = std::to_chars(buf, buf + sizeof buf, v[i]);
        s.append(buf, r.ptr);
    }
    return s + "}";
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
static bool format_each(const std::vector<std::string>& ids, bool details, IdType item_type, const Rows& rows,
                        ApiError& err, std::size_t max_bytes, Emit emit) {
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
    std::unordered_map<std::string_view, std::vector<Ref>> by_user;
    by_user.reserve(ids.size() * 2);
    const bool numeric = item_type == IdType::Integer || item_type == IdType::Bigint;
    std::string scratch, why;
    for (int r = 0; r < nr; ++r) {
        int32_t rank;
        if (rows.is_null(r, 0) || rows.is_null(r, 1) ||
            (numeric && parse_id_text(rows.get(r, 1), IdType::Bigint, scratch, why) != 0)) {
            err = make_error(500, "PX500", "unexpected row from recsys_recommend");
            return false;
        }
        if (rows.is_null(r, 3) || !parse_int32(rows.get(r, 3), rank)) rank = INT32_MAX;
        by_user[rows.get(r, 0)].push_back({rank, r});
    }
    std::string out;
    for (std::size_t i = 0; i < ids.size(); ++i) {
        const std::string_view uid = ids[i];
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
                    append_json_id(out, item_type, pid);
                    continue;
                }
                out += "{\"product_id\":";
                append_json_id(out, item_type, pid);
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

bool format_user_fragments(const std::vector<std::string>& ids, bool details, IdType item_type, const Rows& rows,
                           std::vector<std::string>& frags, ApiError& err, std::size_t max_bytes) {
    frags.assign(ids.size(), std::string());
    bool ok = format_each(ids, details, item_type, rows, err, max_bytes,
                          [&](std::size_t i, std::string&& f) { frags[i] = std::move(f); });
    if (!ok) {
        frags.clear();
        frags.shrink_to_fit();
    }
    return ok;
}

std::string assemble_results(const std::vector<std::string>& ids, const std::vector<std::string>& frags) {
    std::size_t n = 16;
    for (const auto& f : frags) n += f.size() + 16;
    for (const auto& id : ids) n += id.size();
    std::string out;
    out.reserve(n);
    out += "{\"results\":{";
    for (std::size_t i = 0; i < ids.size(); ++i) {
        if (i) out.push_back(',');
        append_json_string(out, ids[i]);
        out += ":";
        out += i < frags.size() ? frags[i] : std::string("[]");
    }
    out += "}}";
    return out;
}

bool format_recommendations(const RecRequest& req, const Rows& rows, std::string& out, ApiError& err,
                            std::size_t max_bytes) {
    // Straight into `out`, sized once (no doubling, no per-user copies beside the answer).
    std::size_t want = 32 + req.user_ids.size() * 16;
    for (const auto& id : req.user_ids) want += id.size();
    for (int r = 0; r < rows.nrows() && rows.ncols() >= 5; ++r) {
        want += rows.get(r, 1).size() + 3;
        if (req.details) want += 80 + (rows.ncols() >= 6 ? rows.get(r, 5).size() : 0);
    }
    out.clear();
    out.reserve(std::min(want, max_bytes));
    out += "{\"results\":{";
    bool ok = format_each(req.user_ids, req.details, req.types.item, rows, err, max_bytes,
                          [&](std::size_t i, std::string&& f) {
        if (i) out.push_back(',');
        append_json_string(out, req.user_ids[i]);
        out += ":";
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
