// services.hpp - what the route handlers share: the configuration, the
// database pool, the cache, the metrics, the active model id and the
// generated OpenAPI document.  No Asio here (app.cpp owns the I/O).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "cache.hpp"
#include "config.hpp"
#include "db.hpp"
#include "metrics.hpp"

namespace rsproxy {

PoolOptions pool_options(const Config& cfg);

class Services {
public:
    using Clock = std::chrono::steady_clock;
    Services(const Config& cfg, std::vector<std::string> route_labels);

    const Config& cfg;
    Pool pool;
    Metrics metrics;
    LruCache cache;
    std::string openapi;  // the OpenAPI document with this configuration's limits and security

    void set_model_id(int64_t id) {
        int64_t old = model_id_.exchange(id);
        if (old != id && id > 0) cache.retain_model(id);
    }
    int64_t model_id() const { return model_id_.load(); }
    // After recsys_training_runs failed with an SQL error, /metrics leaves it
    // alone for a while instead of logging the same error on every scrape.
    Clock::time_point runs_retry_at() const { return Clock::time_point(Clock::duration(runs_retry_at_.load())); }
    void set_runs_retry_at(Clock::time_point t) { runs_retry_at_.store(t.time_since_epoch().count()); }

private:
    std::atomic<int64_t> model_id_{-1};
    std::atomic<Clock::rep> runs_retry_at_{0};
};

}  // namespace rsproxy
