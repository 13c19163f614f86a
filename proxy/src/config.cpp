// config.cpp - see config.hpp.
#include "config.hpp"

#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace rsproxy {

std::string usage_text() {
    return R"(recsys-proxy - HTTP/JSON front end for the recsys PostgreSQL extension

Usage: recsys-proxy [OPTIONS]

Every option can also be set through the environment variable shown; a flag
wins over its variable.  Durations are in milliseconds unless stated.

  --listen HOST:PORT          RECSYS_LISTEN            address to serve on (default 127.0.0.1:8000)
  --dsn CONNINFO              RECSYS_DSN               libpq connection string or URI; repeat the flag
                                                       (or separate with ';' in the variable) for several
                                                       servers: reads are spread round robin over the
                                                       healthy ones (default: libpq defaults / PG* vars)
  --pool-size N               RECSYS_POOL_SIZE         connections per DSN (default 4)
  --threads N                 RECSYS_THREADS           HTTP I/O threads (default 2)
  --acquire-timeout MS        RECSYS_ACQUIRE_TIMEOUT   max wait for a free connection -> 504 (default 1000)
  --statement-timeout MS      RECSYS_STATEMENT_TIMEOUT statement_timeout per query -> 504 (default 5000)
  --connect-timeout MS        RECSYS_CONNECT_TIMEOUT   libpq connect timeout (default 2000, rounded up to s)
  --max-body-bytes N          RECSYS_MAX_BODY_BYTES    larger request bodies -> 413 (default 65536)
  --max-user-ids N            RECSYS_MAX_USER_IDS      user_ids per request, 1..N else 422 (default 1000)
  --max-filter-items N        RECSYS_MAX_FILTER_ITEMS  include_items / exclude_items per request, else 422
                                                       (default 10000)
  --max-top-n N               RECSYS_MAX_TOP_N         top_n bound, 1..N else 422 (default 1000)
  --default-top-n N           RECSYS_DEFAULT_TOP_N     top_n when the body omits it (default 10)
  --api-key KEY[,KEY...]      RECSYS_API_KEYS          require "Authorization: Bearer KEY" or
                                                       "X-API-Key: KEY" on the data routes (repeatable)
  --cache-size N              RECSYS_CACHE_SIZE        LRU entries (model, user, top_n); 0 = off (default 0)
  --cache-ttl MS              RECSYS_CACHE_TTL         cache entry lifetime (default 30000)
  --model-check MS            RECSYS_MODEL_CHECK       how often the id types (and, with the cache, the active
                                                       model id) are polled (default 1000)
  --max-batch N               RECSYS_MAX_BATCH         concurrent requests with the same top_n merged into
                                                       one recsys_recommend call (default 64; 1 = off)
  --access-log on|off         RECSYS_ACCESS_LOG        JSON access-log line per request on stderr (default on)
  --idle-timeout S            RECSYS_IDLE_TIMEOUT      a connection that sends nothing for S seconds (idle
                                                       keep-alive, or a request that stalls) is closed (default 60)
  --max-connections N         RECSYS_MAX_CONNECTIONS   open HTTP connections; beyond it a new connection gets 503
                                                       and is closed (default 0 = the fd limit minus the pool
                                                       and a reserve of 64)
  --max-response-bytes N      RECSYS_MAX_RESPONSE_BYTES  response body bound per request -> 413 (default 16777216)
  --cors-origin ORIGIN[,...]  RECSYS_CORS_ORIGINS      browser origins allowed by CORS (e.g. https://shop.example);
                                                       "*" allows any; default none (no CORS headers)
  --products RELATION         RECSYS_PRODUCTS          relation with the product details, optionally schema-
                                                       qualified (default products, used when it exists);
                                                       "" turns product details off
  --product-id-column COL     RECSYS_PRODUCT_ID_COLUMN its column joined to product ids (default product_id)
  --product-columns C[,C...]  RECSYS_PRODUCT_COLUMNS   columns shown with details, under their own names
                                                       (default product_name,category,price)
  --shutdown-timeout MS       RECSYS_SHUTDOWN_TIMEOUT  SIGTERM grace for in-flight requests (default 10000)
  --help                                               this text
  --version                                            print the version
)";
}

namespace {

long to_long(const std::string& name, const std::string& v, long lo, long hi) {
    char* end = nullptr;
    errno = 0;
    long x = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || errno || !end || *end || x < lo || x > hi)
        throw std::invalid_argument(name + ": expected an integer in [" + std::to_string(lo) + ", " +
                                    std::to_string(hi) + "], got '" + v + "'");
    return x;
}

void split_into(const std::string& v, char sep, std::vector<std::string>& out) {
    std::size_t start = 0;
    while (start <= v.size()) {
        std::size_t p = v.find(sep, start);
        std::string part = v.substr(start, p == std::string::npos ? std::string::npos : p - start);
        while (!part.empty() && (part.front() == ' ' || part.front() == '\t')) part.erase(0, 1);
        while (!part.empty() && (part.back() == ' ' || part.back() == '\t')) part.pop_back();
        if (!part.empty()) out.push_back(part);
        if (p == std::string::npos) break;
        start = p + 1;
    }
}

void set_listen(Config& c, const std::string& v) {
    auto colon = v.rfind(':');
    if (colon == std::string::npos) throw std::invalid_argument("--listen: expected HOST:PORT, got '" + v + "'");
    std::string host = v.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    c.listen_host = host.empty() ? "0.0.0.0" : host;
    c.listen_port = static_cast<unsigned short>(to_long("--listen port", v.substr(colon + 1), 0, 65535));
}

bool to_bool(const std::string& name, const std::string& v) {
    if (v == "on" || v == "true" || v == "1" || v == "yes") return true;
    if (v == "off" || v == "false" || v == "0" || v == "no") return false;
    throw std::invalid_argument(name + ": expected on or off, got '" + v + "'");
}

// A column name as PostgreSQL stores it (case and all): it is quoted, never pasted.
std::string check_column(const std::string& flag, const std::string& v) {
    if (v.empty() || v.size() > 63)
        throw std::invalid_argument(flag + ": a column name of 1 to 63 bytes, got '" + v + "'");
    for (unsigned char ch : v)
        if (ch < 0x20) throw std::invalid_argument(flag + ": control character in '" + v + "'");
    return v;
}

// The item fields that details always carry; a product column may not shadow them.
const char* const kReservedFields[] = {"product_id", "score", "rank", "source", "similarity", "weight", "last_event"};

void set_product_columns(Config& c, const std::string& v) {
    std::vector<std::string> cols;
    split_into(v, ',', cols);
    for (auto& col : cols) {
        check_column("--product-columns", col);
        for (const char* r : kReservedFields)
            if (col == r)
                throw std::invalid_argument("--product-columns: '" + col +
                                            "' is a field every item already has; list only the product's own columns");
        for (std::size_t i = 0; &cols[i] != &col; ++i)
            if (cols[i] == col) throw std::invalid_argument("--product-columns: '" + col + "' is listed twice");
    }
    c.product_columns = std::move(cols);
}

void set_cors(Config& c, const std::string& v) {
    std::vector<std::string> origins;
    split_into(v, ',', origins);
    for (auto& o : origins) {
        while (!o.empty() && o.back() == '/') o.pop_back();
        bool ok = o == "*" || ((o.rfind("http://", 0) == 0 || o.rfind("https://", 0) == 0) &&
                               o.find('/', o.find("//") + 2) == std::string::npos && o.size() > 8);
        if (!ok)
            throw std::invalid_argument("--cors-origin: expected * or scheme://host[:port] (e.g. https://shop.example), got '" +
                                        o + "'");
    }
    c.cors_origins = std::move(origins);
}

// Applies one setting; `name` without leading dashes. Multi-valued settings
// append when `append` (flags), replace otherwise (the env sets them first).
void apply(Config& c, const std::string& name, const std::string& v) {
    if (name == "listen") set_listen(c, v);
    else if (name == "dsn") c.dsns.push_back(v);
    else if (name == "pool-size") c.pool_size = static_cast<int>(to_long("--pool-size", v, 1, 1000));
    else if (name == "threads") c.threads = static_cast<int>(to_long("--threads", v, 1, 256));
    else if (name == "acquire-timeout") c.acquire_timeout_ms = static_cast<int>(to_long("--acquire-timeout", v, 1, 3600000));
    else if (name == "statement-timeout") c.statement_timeout_ms = static_cast<int>(to_long("--statement-timeout", v, 1, 3600000));
    else if (name == "connect-timeout") c.connect_timeout_ms = static_cast<int>(to_long("--connect-timeout", v, 1, 600000));
    else if (name == "max-body-bytes") c.limits.max_body_bytes = static_cast<std::size_t>(to_long("--max-body-bytes", v, 16, 1L << 30));
    else if (name == "max-user-ids") c.limits.max_user_ids = static_cast<std::size_t>(to_long("--max-user-ids", v, 1, 1000000));
    else if (name == "max-filter-items") c.limits.max_filter_items = static_cast<std::size_t>(to_long("--max-filter-items", v, 0, 10000000));
    else if (name == "max-top-n") c.limits.max_top_n = static_cast<int>(to_long("--max-top-n", v, 1, 1000000));
    else if (name == "default-top-n") c.limits.default_top_n = static_cast<int>(to_long("--default-top-n", v, 1, 1000000));
    else if (name == "api-key") split_into(v, ',', c.api_keys);
    else if (name == "cache-size") c.cache_size = static_cast<std::size_t>(to_long("--cache-size", v, 0, 100000000));
    else if (name == "cache-ttl") c.cache_ttl_ms = static_cast<int>(to_long("--cache-ttl", v, 0, 86400000));
    else if (name == "model-check") c.model_check_ms = static_cast<int>(to_long("--model-check", v, 10, 3600000));
    else if (name == "max-batch") c.max_batch = static_cast<int>(to_long("--max-batch", v, 1, 100000));
    else if (name == "access-log") c.access_log = to_bool("--access-log", v);
    else if (name == "idle-timeout") c.idle_timeout_s = static_cast<int>(to_long("--idle-timeout", v, 1, 86400));
    else if (name == "max-connections") c.max_connections = static_cast<int>(to_long("--max-connections", v, 0, 10000000));
    else if (name == "max-response-bytes") c.max_response_bytes = static_cast<std::size_t>(to_long("--max-response-bytes", v, 1024, 1L << 40));
    else if (name == "cors-origin") set_cors(c, v);
    else if (name == "products") { c.products_relation = v; c.products_explicit = true; }
    else if (name == "product-id-column") { c.product_id_column = check_column("--product-id-column", v); c.products_explicit = true; }
    else if (name == "product-columns") { set_product_columns(c, v); c.products_explicit = true; }
    else if (name == "shutdown-timeout") c.shutdown_timeout_ms = static_cast<int>(to_long("--shutdown-timeout", v, 0, 3600000));
    else throw std::invalid_argument("unknown option --" + name + " (see --help)");
}

struct EnvVar {
    const char* var;
    const char* name;
};
const EnvVar kEnv[] = {
    {"RECSYS_LISTEN", "listen"},
    {"RECSYS_POOL_SIZE", "pool-size"},
    {"RECSYS_THREADS", "threads"},
    {"RECSYS_ACQUIRE_TIMEOUT", "acquire-timeout"},
    {"RECSYS_STATEMENT_TIMEOUT", "statement-timeout"},
    {"RECSYS_CONNECT_TIMEOUT", "connect-timeout"},
    {"RECSYS_MAX_BODY_BYTES", "max-body-bytes"},
    {"RECSYS_MAX_USER_IDS", "max-user-ids"},
    {"RECSYS_MAX_FILTER_ITEMS", "max-filter-items"},
    {"RECSYS_MAX_TOP_N", "max-top-n"},
    {"RECSYS_DEFAULT_TOP_N", "default-top-n"},
    {"RECSYS_API_KEYS", "api-key"},
    {"RECSYS_CACHE_SIZE", "cache-size"},
    {"RECSYS_CACHE_TTL", "cache-ttl"},
    {"RECSYS_MODEL_CHECK", "model-check"},
    {"RECSYS_MAX_BATCH", "max-batch"},
    {"RECSYS_ACCESS_LOG", "access-log"},
    {"RECSYS_IDLE_TIMEOUT", "idle-timeout"},
    {"RECSYS_SHUTDOWN_TIMEOUT", "shutdown-timeout"},
    {"RECSYS_MAX_CONNECTIONS", "max-connections"},
    {"RECSYS_MAX_RESPONSE_BYTES", "max-response-bytes"},
    {"RECSYS_CORS_ORIGINS", "cors-origin"},
    {"RECSYS_PRODUCTS", "products"},
    {"RECSYS_PRODUCT_ID_COLUMN", "product-id-column"},
    {"RECSYS_PRODUCT_COLUMNS", "product-columns"},
};

const char* real_getenv(const char* n) { return std::getenv(n); }

}  // namespace

int parse_config(int argc, char** argv, Config& cfg, std::string& msg, bool& exit_now) {
    return parse_config(argc, argv, cfg, msg, exit_now, &real_getenv);
}

int parse_config(int argc, char** argv, Config& cfg, std::string& msg, bool& exit_now, EnvLookup env) {
    exit_now = false;
    try {
        for (const auto& e : kEnv) {
            const char* v = env(e.var);
            if (v && *v) apply(cfg, e.name, v);
        }
        if (const char* v = env("RECSYS_DSN"); v && *v) split_into(v, ';', cfg.dsns);
        bool flag_dsn = false, flag_keys = false;
        for (int i = 1; i < argc; ++i) {
            std::string a = argv[i];
            if (a == "--help" || a == "-h") {
                msg = usage_text();
                exit_now = true;
                return 0;
            }
            if (a == "--version") {
                msg = "recsys-proxy 0.1.0\n";
                exit_now = true;
                return 0;
            }
            if (a.rfind("--", 0) != 0) throw std::invalid_argument("unexpected argument '" + a + "' (see --help)");
            std::string name = a.substr(2), value;
            auto eq = name.find('=');
            if (eq != std::string::npos) {
                value = name.substr(eq + 1);
                name = name.substr(0, eq);
            } else {
                if (i + 1 >= argc) throw std::invalid_argument("--" + name + " needs a value");
                value = argv[++i];
            }
            // Flags replace what the environment said for multi-valued settings.
            if (name == "dsn" && !flag_dsn) { cfg.dsns.clear(); flag_dsn = true; }
            if (name == "api-key" && !flag_keys) { cfg.api_keys.clear(); flag_keys = true; }
            apply(cfg, name, value);
        }
        if (cfg.products_relation.size() > 200)
            throw std::invalid_argument("--products: at most 200 bytes");
        if (cfg.limits.default_top_n > cfg.limits.max_top_n)
            throw std::invalid_argument("--default-top-n exceeds --max-top-n");
        if (cfg.dsns.empty()) cfg.dsns.push_back("");
    } catch (const std::exception& ex) {
        msg = std::string("recsys-proxy: ") + ex.what() + "\n";
        exit_now = true;
        return 2;
    }
    return 0;
}

}  // namespace rsproxy
