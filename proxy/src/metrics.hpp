// metrics.hpp - Prometheus counters for recsys-proxy (lock-free on the hot path).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace rsproxy {

enum class Route : int {
    Root = 0,
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    Recommendations,
    Similar,
    ModelsActive,
    History,
    Evaluations,
    NotFound,
    Count
};

const char* route_name(Route r);

struct PoolGauges {
    long in_use = 0;
    long waiting = 0;
    long size = 0;
    long healthy_dsns = 0;
    long dsns = 0;
    std::vector<std::pair<bool, uint64_t>> per_dsn;  // (healthy, statements) in --dsn order
};

class Metrics {
public:
    static constexpr int kBuckets = 14;
    static constexpr std::array<double, kBuckets> kBounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                             0.1,    0.25,  0.5,    1,     2.5,   5,     10};

    void observe(Route r, int status, double seconds);
    void cache_hit(uint64_t n = 1) { cache_hits_.fetch_add(n, std::memory_order_relaxed); }
    void cache_miss(uint64_t n = 1) { cache_misses_.fetch_add(n, std::memory_order_relaxed); }
    void db_error(const std::string& sqlstate);

    // Prometheus text exposition format 0.0.4.
    std::string render(const PoolGauges& pool, long cache_entries, int64_t active_model) const;

private:
    static constexpr int kRoutes = static_cast<int>(Route::Count);
    std::array<std::array<std::atomic<uint64_t>, 500>, kRoutes> status_{};  // index status-100
    std::array<std::array<std::atomic<uint64_t>, kBuckets + 1>, kRoutes> buckets_{};
    std::array<std::atomic<uint64_t>, kRoutes> sum_us_{};
    std::array<std::atomic<uint64_t>, kRoutes> count_{};
    std::atomic<uint64_t> cache_hits_{0}, cache_misses_{0};
    mutable std::mutex err_mu_;
    std::map<std::string, uint64_t> db_errors_;
};

}  // namespace rsproxy
