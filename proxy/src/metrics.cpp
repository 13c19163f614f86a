// metrics.cpp - see metrics.hpp.
#include "metrics.hpp"

#include <cstdio>

namespace rsproxy {

const char* route_name(Route r) {
    switch (r) {
        case Route::Root: return "/";
        case Route::Healthz: return "/healthz";
        case Route::Readyz: return "/readyz";
        case Route::Metrics: return "/metrics";
        case Route::OpenApi: return "/openapi.json";
        case Route::Recommendations: return "/recommendations";
        case Route::Similar: return "/similar/{product_id}";
        case Route::ModelsActive: return "/models/active";
        case Route::History: return "/users/{user_id}/history";
        case Route::Evaluations: return "/evaluations";
        case Route::NotFound: return "other";
        default: return "other";
    }
}

void Metrics::observe(Route r, int status, double seconds) {
    int ri = static_cast<int>(r);
    if (ri < 0 || ri >= kRoutes) ri = static_cast<int>(Route::NotFound);
    if (status >= 100 && status < 600) status_[ri][status - 100].fetch_add(1, std::memory_order_relaxed);
    int b = 0;
    while (b < kBuckets && seconds > kBounds[b]) ++b;
    buckets_[ri][b].fetch_add(1, std::memory_order_relaxed);
    sum_us_[ri].fetch_add(static_cast<uint64_t>(seconds * 1e6), std::memory_order_relaxed);
    count_[ri].fetch_add(1, std::memory_order_relaxed);
}

void Metrics::db_error(const std::string& sqlstate) {
    std::lock_guard<std::mutex> g(err_mu_);
    ++db_errors_[sqlstate.empty() ? std::string("connection") : sqlstate];
}

std::string Metrics::render(const PoolGauges& pool, long cache_entries, int64_t active_model) const {
    std::string o;
    o.reserve(8192);
    char buf[1024];
    o += "# HELP recsys_proxy_requests_total HTTP requests by route and status.\n"
         "# TYPE recsys_proxy_requests_total counter\n";
    for (int r = 0; r < kRoutes; ++r)
        for (int s = 0; s < 500; ++s) {
            uint64_t v = status_[r][s].load(std::memory_order_relaxed);
            if (!v) continue;
            std::snprintf(buf, sizeof buf, "recsys_proxy_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                          route_name(static_cast<Route>(r)), s + 100, static_cast<unsigned long long>(v));
            o += buf;
        }
    o += "# HELP recsys_proxy_request_duration_seconds Request latency by route.\n"
         "# TYPE recsys_proxy_request_duration_seconds histogram\n";
    for (int r = 0; r < kRoutes; ++r) {
        uint64_t n = count_[r].load(std::memory_order_relaxed);
        if (!n) continue;
        const char* rn = route_name(static_cast<Route>(r));
        uint64_t cum = 0;
        for (int b = 0; b <= kBuckets; ++b) {
            cum += buckets_[r][b].load(std::memory_order_relaxed);
            if (b < kBuckets)
                std::snprintf(buf, sizeof buf,
                              "recsys_proxy_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n", rn,
                              kBounds[b], static_cast<unsigned long long>(cum));
            else
                std::snprintf(buf, sizeof buf,
                              "recsys_proxy_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n", rn,
                              static_cast<unsigned long long>(cum));
            o += buf;
        }
        std::snprintf(buf, sizeof buf, "recsys_proxy_request_duration_seconds_sum{route=\"%s\"} %.6f\n", rn,
                      static_cast<double>(sum_us_[r].load(std::memory_order_relaxed)) / 1e6);
        o += buf;
        std::snprintf(buf, sizeof buf, "recsys_proxy_request_duration_seconds_count{route=\"%s\"} %llu\n", rn,
                      static_cast<unsigned long long>(cum));
        o += buf;
    }
    std::snprintf(buf, sizeof buf,
                  "# HELP recsys_proxy_pool_connections Database connections (workers) in the pool.\n"
                  "# TYPE recsys_proxy_pool_connections gauge\nrecsys_proxy_pool_connections %ld\n"
                  "# HELP recsys_proxy_pool_in_use Connections running a statement.\n"
                  "# TYPE recsys_proxy_pool_in_use gauge\nrecsys_proxy_pool_in_use %ld\n"
                  "# HELP recsys_proxy_pool_waiting Requests waiting for a connection.\n"
                  "# TYPE recsys_proxy_pool_waiting gauge\nrecsys_proxy_pool_waiting %ld\n",
                  pool.size, pool.in_use, pool.waiting);
    o += buf;
    std::snprintf(buf, sizeof buf,
                  "# HELP recsys_proxy_dsn_healthy DSNs currently considered healthy (of recsys_proxy_dsns).\n"
                  "# TYPE recsys_proxy_dsn_healthy gauge\nrecsys_proxy_dsn_healthy %ld\n"
                  "# TYPE recsys_proxy_dsns gauge\nrecsys_proxy_dsns %ld\n",
                  pool.healthy_dsns, pool.dsns);
    o += buf;
    if (!pool.per_dsn.empty()) {
        o += "# HELP recsys_proxy_dsn_up 1 when the DSN (index in --dsn order) is healthy.\n"
             "# TYPE recsys_proxy_dsn_up gauge\n";
        for (std::size_t i = 0; i < pool.per_dsn.size(); ++i) {
            std::snprintf(buf, sizeof buf, "recsys_proxy_dsn_up{dsn=\"%zu\"} %d\n", i, pool.per_dsn[i].first ? 1 : 0);
            o += buf;
        }
        o += "# HELP recsys_proxy_dsn_statements_total Statements run on each DSN (index in --dsn order).\n"
             "# TYPE recsys_proxy_dsn_statements_total counter\n";
        for (std::size_t i = 0; i < pool.per_dsn.size(); ++i) {
            std::snprintf(buf, sizeof buf, "recsys_proxy_dsn_statements_total{dsn=\"%zu\"} %llu\n", i,
                          static_cast<unsigned long long>(pool.per_dsn[i].second));
            o += buf;
        }
    }
    std::snprintf(buf, sizeof buf,
                  "# HELP recsys_proxy_cache_hits_total Recommendation cache hits (per user list).\n"
                  "# TYPE recsys_proxy_cache_hits_total counter\nrecsys_proxy_cache_hits_total %llu\n"
                  "# HELP recsys_proxy_cache_misses_total Recommendation cache misses (per user list).\n"
                  "# TYPE recsys_proxy_cache_misses_total counter\nrecsys_proxy_cache_misses_total %llu\n"
                  "# TYPE recsys_proxy_cache_entries gauge\nrecsys_proxy_cache_entries %ld\n",
                  static_cast<unsigned long long>(cache_hits_.load()),
                  static_cast<unsigned long long>(cache_misses_.load()), cache_entries);
    o += buf;
    std::snprintf(buf, sizeof buf,
                  "# HELP recsys_proxy_active_model_id Last seen active model id (-1 unknown).\n"
                  "# TYPE recsys_proxy_active_model_id gauge\nrecsys_proxy_active_model_id %lld\n",
                  static_cast<long long>(active_model));
    o += buf;
    o += "# HELP recsys_proxy_db_errors_total Database errors by SQLSTATE (\"connection\" for lost or "
         "refused connections, \"timeout\" for client-side deadlines).\n"
         "# TYPE recsys_proxy_db_errors_total counter\n";
    {
        std::lock_guard<std::mutex> g(err_mu_);
        for (const auto& [k, v] : db_errors_) {
            std::snprintf(buf, sizeof buf, "recsys_proxy_db_errors_total{sqlstate=\"%s\"} %llu\n", k.c_str(),
                          static_cast<unsigned long long>(v));
            o += buf;
        }
    }
    return o;
}

}  // namespace rsproxy
