// metrics.cpp - see metrics.hpp.
#include "metrics.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace rsproxy {

Metrics::Metrics(std::vector<std::string> route_labels)
    : labels_(std::move(route_labels)), routes_(new PerRoute[labels_.empty() ? 1 : labels_.size()]) {
    if (labels_.empty()) labels_.emplace_back("other");
}

void Metrics::observe(int ri, int status, double seconds) {
    const int n = static_cast<int>(labels_.size());
    if (ri < 0 || ri >= n) ri = n - 1;
    PerRoute& r = routes_[ri];
    if (status >= 100 && status < 600) r.status[status - 100].fetch_add(1, std::memory_order_relaxed);
    int b = 0;
    while (b < kBuckets && seconds > kBounds[b]) ++b;
    r.buckets[b].fetch_add(1, std::memory_order_relaxed);
    r.sum_us.fetch_add(static_cast<uint64_t>(seconds * 1e6), std::memory_order_relaxed);
    r.count.fetch_add(1, std::memory_order_relaxed);
}

void Metrics::db_error(const std::string& sqlstate) {
    std::lock_guard<std::mutex> g(err_mu_);
    ++db_errors_[sqlstate.empty() ? std::string("connection") : sqlstate];
}

namespace {

bool to_double(const Rows& r, int row, int col, double& out) {
    if (r.is_null(row, col)) return false;
    std::string t(r.get(row, col));
    char* end = nullptr;
    out = std::strtod(t.c_str(), &end);
    return !t.empty() && end && *end == '\0' && std::isfinite(out);
}

// A label value in the exposition format: \ " and newline escaped.
std::string label_value(std::string_view v) {
    std::string o;
    for (char c : v) {
        if (c == '\\' || c == '"') o.push_back('\\');
        if (c == '\n') {
            o += "\\n";
            continue;
        }
        o.push_back(c);
    }
    return o;
}

}  // namespace

bool parse_model_status(const Rows& r, ModelStatus& st) {
    if (r.nrows() != 1 || r.ncols() != 4 || r.is_null(0, 3)) return false;
    ModelStatus n = st;
    n.known = true;
    n.runs_readable = r.get(0, 3) == "t";
    if (r.is_null(0, 0)) {
        n.active_model_id = -1;
    } else {
        std::string t(r.get(0, 0));
        char* end = nullptr;
        long long v = std::strtoll(t.c_str(), &end, 10);
        if (t.empty() || *end || v < 1) return false;
        n.active_model_id = v;
        if (!to_double(r, 0, 1, n.created_epoch) || !to_double(r, 0, 2, n.age_seconds)) return false;
    }
    st = n;
    return true;
}

bool parse_last_training(const Rows& r, ModelStatus& st) {
    if (r.ncols() != 3 || r.nrows() > 1) return false;
    if (r.nrows() == 0) {  // no finished training yet
        st.has_training = false;
        return true;
    }
    if (r.is_null(0, 0)) return false;
    st.has_training = true;
    st.status = std::string(r.get(0, 0));
    double d;
    st.duration_seconds = to_double(r, 0, 1, d) ? std::optional<double>(d) : std::nullopt;
    st.end_epoch = to_double(r, 0, 2, d) ? std::optional<double>(d) : std::nullopt;
    return true;
}

std::string render_model_status(const ModelStatus& st) {
    std::string o;
    if (!st.known) return o;
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "# HELP recsys_active_model_id The active model's id (recsys_models), -1 when none is active.\n"
                  "# TYPE recsys_active_model_id gauge\nrecsys_active_model_id %lld\n",
                  static_cast<long long>(st.active_model_id));
    o += buf;
    if (st.active_model_id > 0) {
        std::snprintf(buf, sizeof buf,
                      "# HELP recsys_active_model_created_timestamp_seconds When the active model was trained "
                      "(created_at, Unix time).\n"
                      "# TYPE recsys_active_model_created_timestamp_seconds gauge\n"
                      "recsys_active_model_created_timestamp_seconds %.3f\n"
                      "# HELP recsys_active_model_age_seconds Age of the active model by the database's clock.\n"
                      "# TYPE recsys_active_model_age_seconds gauge\nrecsys_active_model_age_seconds %.3f\n",
                      st.created_epoch, st.age_seconds);
        o += buf;
    }
    if (!st.has_training) return o;
    static const char* const kStates[] = {"succeeded", "failed", "cancelled", "rolled back", "terminated"};
    std::snprintf(buf, sizeof buf,
                  "# HELP recsys_last_training_success 1 when the newest finished training (recsys_training_runs) "
                  "succeeded.\n"
                  "# TYPE recsys_last_training_success gauge\nrecsys_last_training_success %d\n"
                  "# HELP recsys_last_training_status The newest finished training's status (1 for the current one).\n"
                  "# TYPE recsys_last_training_status gauge\n",
                  st.status == "succeeded" ? 1 : 0);
    o += buf;
    bool listed = false;
    for (const char* s : kStates) {
        listed |= st.status == s;
        o += "recsys_last_training_status{status=\"";
        o += s;
        o += st.status == s ? "\"} 1\n" : "\"} 0\n";
    }
    if (!listed) o += "recsys_last_training_status{status=\"" + label_value(st.status) + "\"} 1\n";
    if (st.duration_seconds) {
        std::snprintf(buf, sizeof buf,
                      "# HELP recsys_last_training_duration_seconds How long the newest finished training ran.\n"
                      "# TYPE recsys_last_training_duration_seconds gauge\n"
                      "recsys_last_training_duration_seconds %.6f\n",
                      *st.duration_seconds);
        o += buf;
    }
    if (st.end_epoch) {
        std::snprintf(buf, sizeof buf,
                      "# HELP recsys_last_training_end_timestamp_seconds When the newest finished training ended "
                      "(Unix time).\n"
                      "# TYPE recsys_last_training_end_timestamp_seconds gauge\n"
                      "recsys_last_training_end_timestamp_seconds %.3f\n",
                      *st.end_epoch);
        o += buf;
    }
    return o;
}

std::string Metrics::render(const PoolGauges& pool, long cache_entries, int64_t active_model,
                            const ModelStatus* model) const {
    std::string o;
    o.reserve(8192);
    char buf[1024];
    o += "# HELP recsys_proxy_requests_total HTTP requests by route and status.\n"
         "# TYPE recsys_proxy_requests_total counter\n";
    const int kRoutes = static_cast<int>(labels_.size());
    for (int r = 0; r < kRoutes; ++r)
        for (int s = 0; s < 500; ++s) {
            uint64_t v = routes_[r].status[s].load(std::memory_order_relaxed);
            if (!v) continue;
            std::snprintf(buf, sizeof buf, "recsys_proxy_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                          label_value(labels_[r]).c_str(), s + 100, static_cast<unsigned long long>(v));
            o += buf;
        }
    o += "# HELP recsys_proxy_request_duration_seconds Request latency by route.\n"
         "# TYPE recsys_proxy_request_duration_seconds histogram\n";
    for (int r = 0; r < kRoutes; ++r) {
        uint64_t n = routes_[r].count.load(std::memory_order_relaxed);
        if (!n) continue;
        const std::string rl = label_value(labels_[r]);
        const char* rn = rl.c_str();
        uint64_t cum = 0;
        for (int b = 0; b <= kBuckets; ++b) {
            cum += routes_[r].buckets[b].load(std::memory_order_relaxed);
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
                      static_cast<double>(routes_[r].sum_us.load(std::memory_order_relaxed)) / 1e6);
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
                  "# HELP recsys_proxy_http_connections Open HTTP connections.\n"
                  "# TYPE recsys_proxy_http_connections gauge\nrecsys_proxy_http_connections %ld\n"
                  "# HELP recsys_proxy_http_connections_refused_total Connections refused at --max-connections.\n"
                  "# TYPE recsys_proxy_http_connections_refused_total counter\n"
                  "recsys_proxy_http_connections_refused_total %llu\n",
                  connections_.load(std::memory_order_relaxed),
                  static_cast<unsigned long long>(refused_.load(std::memory_order_relaxed)));
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
    if (model) o += render_model_status(*model);
    return o;
}

}  // namespace rsproxy
