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
    std::size_t max_user_ids = 1000;       // user_ids per request, and item_ids per basket
    std::size_t max_filter_items = 10000;  // include_items / exclude_items per request
    int max_top_n = 1000;
    int default_top_n = 10;
    int max_history = 1000;
    int default_history = 20;
};

// The id types recsys serves (recsys.config.user_type / item_type; smallint
// is served as integer and varchar as text).
enum class IdType : int { Integer = 0, Bigint, Text, Uuid };
struct IdTypes {
    IdType user = IdType::Integer;
    IdType item = IdType::Integer;
    bool operator==(const IdTypes& o) const { return user == o.user && item == o.item; }
    bool operator!=(const IdTypes& o) const { return !(*this == o); }
};
// "integer", "bigint", "text", "uuid": the SQL name, used in casts ($1::bigint[]).
const char* id_type_sql(IdType t);
// From a type name as format_type prints it ("integer", "bigint", "text",
// "uuid"; "smallint" and "character varying" map to what recsys serves them as).
bool id_type_from_sql(std::string_view name, IdType& out);
// Longest text id accepted (bytes).
constexpr std::size_t kMaxTextIdBytes = 1024;

// One id in its canonical text (as PostgreSQL prints it): an integer type
// takes a decimal string ("42", "-7"; no '+', spaces or leading zeros) within
// its range; text any non-empty string without NUL of at most
// kMaxTextIdBytes; uuid the 8-4-4-4-12 hex form in either case (lowered).
// Returns 0 when valid, else the HTTP status (400 not of the type's form,
// 422 of the form but outside its range or length) with `why` saying so.
int parse_id_text(std::string_view s, IdType t, std::string& out, std::string& why);

// Appends an id's canonical text as JSON: a number for integer/bigint, a
// string for text/uuid.
void append_json_id(std::string& out, IdType t, std::string_view text);

// An optional list of item ids (include_items / exclude_items).
struct ItemFilter {
    bool given = false;
    std::vector<std::string> ids;
};

struct RecRequest {
    std::vector<std::string> user_ids;  // canonical text, de-duplicated, first-seen order
    int top_n = 10;
    bool details = false;
    int exclude_seen = -1;              // -1 not given (the extension's default, true), 0, 1
    ItemFilter include_items, exclude_items;
    IdTypes types;
    // Requests that may share one statement and one cache entry per user
    // have the same key (top_n, details, exclude_seen, filters, types).
    bool filtered() const { return include_items.given || exclude_items.given; }
};

// Parses and validates a POST /recommendations body against the id types
// `types` (JSON numbers or strings, see parse_id_text).  Returns true and
// fills `out`, or false and fills `err` (400 malformed / wrong type / missing
// field, 422 an unknown field or a value outside the bounds).  Never throws.
bool parse_rec_request(std::string_view body, const Limits& lim, RecRequest& out, ApiError& err,
                       IdTypes types = IdTypes{});
// The same without the fast path parse_rec_request takes for bodies of the
// common shape (integer ids, no error): the tests compare the two.
bool parse_rec_request_general(std::string_view body, const Limits& lim, RecRequest& out, ApiError& err,
                               IdTypes types = IdTypes{});

// POST /recommendations/items: a basket or an anonymous session.
struct ItemsRequest {
    std::vector<std::string> item_ids;  // canonical text, in request order (duplicates kept)
    std::vector<double> weights;        // empty or one per item id
    bool has_weights = false;
    int top_n = 10;
    bool details = false;
    ItemFilter include_items, exclude_items;
    IdTypes types;
};
bool parse_items_request(std::string_view body, const Limits& lim, ItemsRequest& out, ApiError& err,
                         IdTypes types = IdTypes{});

// POST /explanations: {"user_id":..,"product_id":..}.
struct ExplainRequest {
    std::string user_id, product_id;  // canonical text
    IdTypes types;
};
bool parse_explain_request(std::string_view body, ExplainRequest& out, ApiError& err, IdTypes types = IdTypes{});

// Strict decimal int32 ("42", "-7"; no '+', no spaces, no leading zeros beyond "0").
bool parse_int32(std::string_view s, int32_t& out);

// Decodes %XX escapes of a path segment; false on a malformed escape or a
// decoded NUL.
bool percent_decode(std::string_view s, std::string& out);

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
// PostgreSQL array literal of any element type, every element double-quoted
// with '"' and '\\' escaped: {"a","b\"c"}; sent as a parameter ($1::text[],
// $1::uuid[], ...), never pasted into SQL.
std::string array_literal(const std::vector<std::string>& elems);
// {1.5,2} for weights (shortest round-trip form).
std::string float_array_literal(const std::vector<double>& v);

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
// Users are matched by the text of their id (column 0), product ids written
// as JSON following req.types.item.
bool format_recommendations(const RecRequest& req, const Rows& rows, std::string& out, ApiError& err,
                            std::size_t max_bytes = SIZE_MAX);
// The same in two steps: one JSON array text per id (in `ids` order; [] for an
// id without rows), then the {"results":{...}} envelope.
bool format_user_fragments(const std::vector<std::string>& ids, bool details, IdType item_type, const Rows& rows,
                           std::vector<std::string>& frags, ApiError& err, std::size_t max_bytes = SIZE_MAX);
ApiError response_too_large(std::size_t max_bytes, const std::string& what);
std::string assemble_results(const std::vector<std::string>& ids, const std::vector<std::string>& frags);

// Formats one-column one-row results holding a JSON text (json_agg etc.).
// `empty` is used when there is no row or the value is NULL.
std::string json_cell_or(const Rows& rows, std::string_view empty);

}  // namespace rsproxy
