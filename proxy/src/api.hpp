// api.hpp - the PostgreSQL-free, network-free part of recsys-proxy:
// request parsing and validation, error mapping, JSON building, API-key
// comparison.  Unit-tested (test/unit_tests.cpp) and fuzzed (test/fuzz_request.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace rsproxy {

// An error answer: HTTP status plus the JSON body {"code","message","details","hint"}.
struct ApiError {
    int status = 500;
    std::string code;     // SQLSTATE for database errors, a PXnnn code for the proxy's own
    std::string message;
    std::string details;  // "" -> null
    std::string hint;     // "" -> null
};

ApiError make_error(int status, std::string code, std::string message,
                    std::string details = "", std::string hint = "");

// {"code":...,"message":...,"details":...|null,"hint":...|null}
std::string error_json(const ApiError& e);

struct Limits {
    std::size_t max_body_bytes = 64 * 1024;
    std::size_t max_user_ids = 1000;
    int max_top_n = 1000;
    int default_top_n = 10;
    int max_history = 1000;
    int default_history = 20;
};

struct RecRequest {
    std::vector<int32_t> user_ids;  // de-duplicated, first-seen order
    int top_n = 10;
    bool details = false;
};

// Parses and validates a POST /recommendations body.  Returns true and fills
// `out`, or false and fills `err` (400 malformed / wrong type / missing field,
// 422 an unknown field or a value outside the bounds).  Never throws.
bool parse_rec_request(std::string_view body, const Limits& lim, RecRequest& out, ApiError& err);

// Strict decimal int32 ("42", "-7"; no '+', no spaces, no leading zeros beyond "0").
bool parse_int32(std::string_view s, int32_t& out);

// Value of `name` in a query string "a=1&b=2" (no percent-decoding needed for
// the numeric parameters used here).  Returns false when absent.
bool query_param(std::string_view query, std::string_view name, std::string& value);

// HTTP status for a PostgreSQL SQLSTATE, PostgREST style, with the project's
// overrides (55000 -> 503, 57014 -> 504, 08xxx/57P0x -> 503).  The proxy
// validates every argument before it reaches SQL, so only the argument checks
// of the extension (22023, 22004, 2202E, 22P02) are the client's fault (400);
// any other data exception (22xxx: an overflow or a bad value in stored data)
// and P0001 are server-side faults: 500.
int http_status_for_sqlstate(std::string_view sqlstate);

// The smallest body a /recommendations answer for `ids` users with `top_n`
// items each can have (each item at least "1," or, with details, its fixed
// fields), and a typical one (8 bytes a plain item, 80 + 20 per product column
// with details).  Requests whose typical size exceeds --max-response-bytes are
// refused before any query runs.
std::size_t typical_response_bytes(std::size_t ids, int top_n, bool details, std::size_t product_columns);

// Constant-time comparison (time depends only on the lengths' maximum).
bool constant_time_equals(std::string_view a, std::string_view b);
// True when `presented` equals one of `keys`; every key is compared.
bool key_matches(const std::vector<std::string>& keys, std::string_view presented);
// The key of "Authorization: Bearer KEY" ("" for another scheme or none).
std::string bearer_key(std::string_view authorization);
// True when the Bearer key or the X-API-Key value is one of `keys`: a wrong or
// foreign Authorization header does not hide a valid X-API-Key.
bool request_authorized(const std::vector<std::string>& keys, std::string_view authorization,
                        std::string_view x_api_key);

// PostgreSQL array literal "{1,2,3}".
std::string int_array_literal(const std::vector<int32_t>& ids);

// JSON string escaping, appended to `out` with the surrounding quotes.
void append_json_string(std::string& out, std::string_view s);
// A float8 in PostgreSQL text form as a JSON number (NaN/Infinity -> null).
void append_json_float(std::string& out, std::string_view pg_text);

// Tabular result, the subset of PGresult the formatters need (lets tests feed rows).
class Rows {
public:
    virtual ~Rows() = default;
    virtual int nrows() const = 0;
    virtual int ncols() const = 0;
    virtual bool is_null(int r, int c) const = 0;
    virtual std::string_view get(int r, int c) const = 0;
};

class VectorRows : public Rows {
public:
    // cells row-major; a cell "\x01NULL" stands for SQL NULL.
    VectorRows(int ncols, std::vector<std::string> cells) : ncols_(ncols), cells_(std::move(cells)) {}
    int nrows() const override { return ncols_ ? static_cast<int>(cells_.size()) / ncols_ : 0; }
    int ncols() const override { return ncols_; }
    bool is_null(int r, int c) const override { return cells_[r * ncols_ + c] == "\x01NULL"; }
    std::string_view get(int r, int c) const override { return cells_[r * ncols_ + c]; }
private:
    int ncols_;
    std::vector<std::string> cells_;
};

// Formats recsys_recommend rows (user_id, product_id, score, rank, source
// [, product JSON object]) into {"results":{"<uid>":[...]}}, keys in request
// order, items by rank.  With details each item is an object
// {"product_id","score","rank","source", ...the product object's members}.
// Returns false (err filled) when the rows are malformed (500) or the answer
// would exceed `max_bytes` (413).
bool format_recommendations(const RecRequest& req, const Rows& rows, std::string& out, ApiError& err,
                            std::size_t max_bytes = SIZE_MAX);
// The same in two steps: one JSON array text per id (in `ids` order; [] for an
// id without rows), then the {"results":{...}} envelope.
bool format_user_fragments(const std::vector<int32_t>& ids, bool details, const Rows& rows,
                           std::vector<std::string>& frags, ApiError& err, std::size_t max_bytes = SIZE_MAX);
ApiError response_too_large(std::size_t max_bytes, const std::string& what);
std::string assemble_results(const std::vector<int32_t>& ids, const std::vector<std::string>& frags);

// Formats one-column one-row results holding a JSON text (json_agg etc.).
// `empty` is used when there is no row or the value is NULL.
std::string json_cell_or(const Rows& rows, std::string_view empty);

}  // namespace rsproxy
