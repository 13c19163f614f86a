// services.cpp - see services.hpp.
#include "services.hpp"

namespace rsproxy {

PoolOptions pool_options(const Config& cfg) {
    PoolOptions o{cfg.dsns, cfg.pool_size, cfg.acquire_timeout_ms, cfg.statement_timeout_ms,
                  cfg.connect_timeout_ms, cfg.max_batch, cfg.limits.max_user_ids, {}};
    o.products.relation = cfg.products_relation;
    o.products.id_column = cfg.product_id_column;
    o.products.columns = cfg.product_columns;
    o.products.required = cfg.products_explicit && !cfg.products_relation.empty();
    return o;
}

Services::Services(const Config& c, std::vector<std::string> route_labels)
    : cfg(c),
      pool(pool_options(c)),
      metrics(std::move(route_labels)),
      cache(c.cache_size, std::chrono::milliseconds(c.cache_ttl_ms)) {}

}  // namespace rsproxy
