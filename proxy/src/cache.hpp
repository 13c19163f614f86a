// cache.hpp - a thread-safe LRU cache with a time-to-live, keyed by
// (model id, user id text, top_n, details, exclude_seen).  Values are JSON
// array texts.  Requests with include/exclude filters are not cached.
#pragma once

#include <chrono>
#include <cstdint>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>

namespace rsproxy {

struct CacheKey {
    int64_t model_id;
    std::string user_id;  // canonical text (the id types are fixed per model)
    int32_t top_n;
    bool details;
    int8_t exclude_seen = -1;  // -1 not given (the extension's default)
    bool operator==(const CacheKey& o) const {
        return model_id == o.model_id && user_id == o.user_id && top_n == o.top_n && details == o.details &&
               exclude_seen == o.exclude_seen;
    }
};

struct CacheKeyHash {
    std::size_t operator()(const CacheKey& k) const noexcept {
        uint64_t h = static_cast<uint64_t>(k.model_id) * 0x9E3779B97F4A7C15ull;
        h ^= (static_cast<uint64_t>(std::hash<std::string>()(k.user_id)) << 7) ^
             (static_cast<uint64_t>(static_cast<uint32_t>(k.top_n)) << 3) ^ (k.details ? 1u : 0u) ^
             (static_cast<uint64_t>(k.exclude_seen + 1) << 1);
        h ^= h >> 29;
        h *= 0xBF58476D1CE4E5B9ull;
        h ^= h >> 32;
        return static_cast<std::size_t>(h);
    }
};

class LruCache {
public:
    using Clock = std::chrono::steady_clock;

    LruCache(std::size_t capacity, std::chrono::milliseconds ttl) : capacity_(capacity), ttl_(ttl) {}

    bool enabled() const { return capacity_ > 0 && ttl_.count() > 0; }

    // Copies the value out on a fresh hit.  Expired entries are dropped.
    bool get(const CacheKey& k, std::string& value, Clock::time_point now = Clock::now()) {
        if (!enabled()) return false;
        std::lock_guard<std::mutex> g(mu_);
        auto it = map_.find(k);
        if (it == map_.end()) return false;
        if (now >= it->second->expires) {
            order_.erase(it->second);
            map_.erase(it);
            return false;
        }
        order_.splice(order_.begin(), order_, it->second);
        value = it->second->value;
        return true;
    }

    void put(const CacheKey& k, std::string value, Clock::time_point now = Clock::now()) {
        if (!enabled()) return;
        std::lock_guard<std::mutex> g(mu_);
        auto it = map_.find(k);
        if (it != map_.end()) {
            it->second->value = std::move(value);
            it->second->expires = now + ttl_;
            order_.splice(order_.begin(), order_, it->second);
            return;
        }
        order_.push_front(Entry{k, std::move(value), now + ttl_});
        map_.emplace(k, order_.begin());
        while (map_.size() > capacity_) {
            map_.erase(order_.back().key);
            order_.pop_back();
        }
    }

    // Drops every entry whose model id differs from `model_id`.
    void retain_model(int64_t model_id) {
        std::lock_guard<std::mutex> g(mu_);
        for (auto it = order_.begin(); it != order_.end();) {
            if (it->key.model_id != model_id) {
                map_.erase(it->key);
                it = order_.erase(it);
            } else {
                ++it;
            }
        }
    }

    std::size_t size() const {
        std::lock_guard<std::mutex> g(mu_);
        return map_.size();
    }

private:
    struct Entry {
        CacheKey key;
        std::string value;
        Clock::time_point expires;
    };
    std::size_t capacity_;
    std::chrono::milliseconds ttl_;
    mutable std::mutex mu_;
    std::list<Entry> order_;
    std::unordered_map<CacheKey, std::list<Entry>::iterator, CacheKeyHash> map_;
};

}  // namespace rsproxy
