// config.hpp - recsys-proxy settings from command-line flags and RECSYS_* environment variables.
#pragma once

#include <string>
#include <vector>

#include "api.hpp"

namespace rsproxy {

struct Config {
    std::string listen_host = "127.0.0.1";
    unsigned short listen_port = 8000;
    std::vector<std::string> dsns;        // empty -> one DSN "" (libpq defaults / PG* env)
    int pool_size = 4;                    // connections per DSN
    int threads = 2;                      // HTTP I/O threads
    int acquire_timeout_ms = 1000;
    int statement_timeout_ms = 5000;
    int connect_timeout_ms = 2000;
    Limits limits;
    std::vector<std::string> api_keys;
    std::size_t cache_size = 0;           // entries; 0 disables the cache
    int cache_ttl_ms = 30000;
    int model_check_ms = 1000;
    bool access_log = true;
    int idle_timeout_s = 60;
    int shutdown_timeout_ms = 10000;
    int max_batch = 64;                   // single-user requests merged into one statement; 1 disables
    // Product details (details:true, /similar, /history): a relation, its id
    // column and the columns shown.  Empty relation: no product details.
    std::string products_relation = "products";
    std::string product_id_column = "product_id";
    std::vector<std::string> product_columns = {"product_name", "category", "price"};
    bool products_explicit = false;       // set by a flag/variable: then the relation must exist
    std::vector<std::string> cors_origins;  // allowed Origin values; "*" allows any; empty: no CORS
    int max_connections = 0;              // open HTTP connections; 0: derived from the fd limit at start
    std::size_t max_response_bytes = 16u << 20;  // response body bound per request (413 beyond)
};

// Parses env (getenv) then argv.  Returns 0 on success; otherwise the exit
// status (0 after --help/--version with `exit_now` set, 2 on a bad flag) and
// writes the message to `msg`.
int parse_config(int argc, char** argv, Config& cfg, std::string& msg, bool& exit_now);

// For tests: the same with an injectable environment lookup.
using EnvLookup = const char* (*)(const char*);
int parse_config(int argc, char** argv, Config& cfg, std::string& msg, bool& exit_now, EnvLookup env);

std::string usage_text();

}  // namespace rsproxy
