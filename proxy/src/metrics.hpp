// metrics.hpp - Prometheus counters for recsys-proxy (lock-free on the hot path).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "api.hpp"

namespace rsproxy {


struct PoolGauges {
    long in_use = 0;
    long waiting = 0;
    long size = 0;
    long healthy_dsns = 0;
    long dsns = 0;
    std::vector<std::pair<bool, uint64_t>> per_dsn;  // (healthy, statements) in --dsn order
};

// What /metrics reports about the database's models, read at scrape time
// (db.cpp: Stmt::ModelStatus, then Stmt::LastTraining when runs_readable).
struct ModelStatus {
    bool known = false;              // recsys_models was read
    int64_t active_model_id = -1;    // -1: no model is active
    double created_epoch = 0;        // the active model's created_at (Unix seconds)
    double age_seconds = 0;          // the server's clock_timestamp() - created_at
    bool runs_readable = false;      // recsys_training_runs exists and the role may SELECT it
    bool has_training = false;       // a finished training was read from it
    std::string status;              // 'succeeded', 'failed', 'cancelled', 'rolled back', 'terminated'
    std::optional<double> duration_seconds;  // NULL for a terminated run
    std::optional<double> end_epoch;         // finished_at; NULL for a terminated run
};

// Fill `st` from the rows of Stmt::ModelStatus (model_id, created epoch, age,
// runs readable) and Stmt::LastTraining (status, seconds, finished epoch).
// Return false, leaving `st` unchanged, when the shape is not the expected one.
bool parse_model_status(const Rows& rows, ModelStatus& st);
bool parse_last_training(const Rows& rows, ModelStatus& st);

// The Prometheus text of `st` (empty when !st.known).
std::string render_model_status(const ModelStatus& st);

class Metrics {
public:
    static constexpr int kBuckets = 14;
    static constexpr std::array<double, kBuckets> kBounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                             0.1,    0.25,  0.5,    1,     2.5,   5,     10};

    // One set of request counters per route label (routes.cpp: route_labels()).
    explicit Metrics(std::vector<std::string> route_labels = {"other"});

    // `route` indexes the labels; anything else counts under the last label.
    void observe(int route, int status, double seconds);
    void connection_opened() { connections_.fetch_add(1, std::memory_order_relaxed); }
    void connection_closed() { connections_.fetch_sub(1, std::memory_order_relaxed); }
    void connection_refused() { refused_.fetch_add(1, std::memory_order_relaxed); }
    void cache_hit(uint64_t n = 1) { cache_hits_.fetch_add(n, std::memory_order_relaxed); }
    void cache_miss(uint64_t n = 1) { cache_misses_.fetch_add(n, std::memory_order_relaxed); }
    void db_error(const std::string& sqlstate);

    // Prometheus text exposition format 0.0.4.
    // `model`, when given, adds the recsys_active_model_* / recsys_last_training_* gauges.
    std::string render(const PoolGauges& pool, long cache_entries, int64_t active_model,
                       const ModelStatus* model = nullptr) const;

private:
    struct PerRoute {
        std::array<std::atomic<uint64_t>, 500> status{};  // index status-100
        std::array<std::atomic<uint64_t>, kBuckets + 1> buckets{};
        std::atomic<uint64_t> sum_us{0};
        std::atomic<uint64_t> count{0};
    };
    std::vector<std::string> labels_;
    std::unique_ptr<PerRoute[]> routes_;
    std::atomic<long> connections_{0};
    std::atomic<uint64_t> refused_{0};
    std::atomic<uint64_t> cache_hits_{0}, cache_misses_{0};
    mutable std::mutex err_mu_;
    std::map<std::string, uint64_t> db_errors_;
};

}  // namespace rsproxy
