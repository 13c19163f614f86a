// handlers.cpp - one handler per route; see routes.cpp for the table.
#include "handlers.hpp"

#include <cstdlib>
#include <memory>

#include "services.hpp"

extern const char kIndexHtml[];
extern const unsigned long kIndexHtmlLen;

namespace rsproxy {

namespace {

using Clock = std::chrono::steady_clock;

// A bounded integer query parameter: `def` when absent, 400 when not an
// integer, 422 outside 1..max.
bool query_bounded(const ExchangePtr& x, const char* name, int def, int max, int& out) {
    std::string v;
    if (!query_param(x->req.query, name, v)) {
        out = def;
        return true;
    }
    int32_t n;
    if (!parse_int32(v, n)) {
        x->reply(error_reply(make_error(400, "PX400", std::string("query parameter ") + name + " must be an integer")));
        return false;
    }
    if (n < 1 || n > max) {
        x->reply(error_reply(make_error(422, "PX422", std::string(name) + " out of range",
                                        std::string(name) + " must be between 1 and " + std::to_string(max))));
        return false;
    }
    out = n;
    return true;
}

// The int32 path parameter `i`, or a 400 naming it.
bool path_id(const ExchangePtr& x, std::size_t i, const char* what, int32_t& out) {
    const std::string& t = x->req.params.at(i);
    if (parse_int32(t, out)) return true;
    x->reply(error_reply(make_error(400, "PX400", std::string(what) + " must be a 32-bit integer", t.substr(0, 64))));
    return false;
}

// A statement answering one JSON text, wrapped as {"<key>":<value>, "<list>":<json>}.
void json_list(Services& sv, const ExchangePtr& x, Stmt st, std::vector<std::string> params, std::string prefix) {
    sv.pool.submit(st, std::move(params), [x, prefix = std::move(prefix)](const DbOutcome& o) {
        if (o.kind != DbOutcome::Ok) return x->reply(outcome_error(o));
        x->reply(json_ok(prefix + json_cell_or(*o.rows, "[]") + "}"));
    });
}

}  // namespace

void handle_root(Services&, const ExchangePtr& x) {
    Reply r;
    r.content_type = "text/html; charset=utf-8";
    r.body.assign(kIndexHtml, kIndexHtmlLen);
    x->reply(std::move(r));
}

void handle_healthz(Services&, const ExchangePtr& x) { x->reply(json_ok("{\"status\":\"ok\"}")); }

void handle_openapi(Services& sv, const ExchangePtr& x) { x->reply(json_ok(sv.openapi)); }

void handle_metrics(Services& sv, const ExchangePtr& x) {
    // The pool as it is now (before the status statements below occupy a connection).
    auto g = std::make_shared<PoolGauges>(PoolGauges{sv.pool.in_use(), sv.pool.waiting(), sv.pool.size(),
                                                     sv.pool.healthy_dsns(), sv.pool.dsns(), sv.pool.dsn_stats()});
    auto st = std::make_shared<ModelStatus>();
    Services* s = &sv;
    auto send = [s, x, g, st] {
        Reply r;
        r.content_type = "text/plain; version=0.0.4; charset=utf-8";
        r.body = s->metrics.render(*g, static_cast<long>(s->cache.size()), s->model_id(), st.get());
        x->reply(std::move(r));
    };
    // The model's and the last training's gauges are read at scrape time;
    // without the database they are left out and the rest is served.
    sv.pool.submit(Stmt::ModelStatus, {}, [s, st, send](const DbOutcome& o) {
        if (o.kind != DbOutcome::Ok || !parse_model_status(*o.rows, *st)) return send();
        s->set_model_id(st->active_model_id);
        if (!st->runs_readable || Clock::now() < s->runs_retry_at()) return send();
        s->pool.submit(Stmt::LastTraining, {}, [s, st, send](const DbOutcome& o2) {
            if (o2.kind == DbOutcome::Ok)
                parse_last_training(*o2.rows, *st);
            else if (o2.kind == DbOutcome::SqlError)  // e.g. no EXECUTE on a function the view calls
                s->set_runs_retry_at(Clock::now() + std::chrono::minutes(5));
            send();
        });
    });
}

void handle_readyz(Services& sv, const ExchangePtr& x) {
    Services* s = &sv;
    sv.pool.submit(Stmt::ActiveModelId, {}, [s, x](const DbOutcome& o) {
        if (o.kind != DbOutcome::Ok) {
            Reply r = outcome_error(o);
            if (r.status != 503)  // readiness is binary: any failure is "not ready"
                r = error_reply(make_error(503, o.sqlstate.empty() ? "PX503" : o.sqlstate, "not ready: " + o.message,
                                           o.detail, o.hint));
            return x->reply(std::move(r));
        }
        if (o.rows->nrows() < 1 || o.rows->is_null(0, 0)) {
            s->set_model_id(-1);
            return x->reply(
                error_reply(make_error(503, "55000", "not ready: no active model", "", "run SELECT recsys_train()")));
        }
        std::string id(o.rows->get(0, 0));
        s->set_model_id(std::atoll(id.c_str()));
        x->reply(json_ok("{\"status\":\"ready\",\"model_id\":" + id + "}"));
    });
}

void handle_recommendations(Services& sv, const ExchangePtr& x) {
    auto rr = std::make_shared<RecRequest>();
    ApiError err;
    if (!parse_rec_request(x->req.body, sv.cfg.limits, *rr, err)) return x->reply(error_reply(err));
    // Bounded memory: refuse before the query what cannot fit in --max-response-bytes.
    const std::size_t max_bytes = sv.cfg.max_response_bytes;
    const std::size_t ncols = sv.cfg.products_relation.empty() ? 0 : sv.cfg.product_columns.size();
    const std::size_t typical = typical_response_bytes(rr->user_ids.size(), rr->top_n, rr->details, ncols);
    if (typical > max_bytes)
        return x->reply(error_reply(response_too_large(
            max_bytes, std::to_string(rr->user_ids.size()) + " user ids x top_n " + std::to_string(rr->top_n) +
                           (rr->details ? " with details" : "") + " come to about " + std::to_string(typical) +
                           " bytes")));
    // Cache lookup, per user; the key holds the model id, so no entry of one
    // model can answer for another.
    const int64_t mid = sv.model_id();
    auto frags = std::make_shared<std::vector<std::string>>(rr->user_ids.size());
    std::vector<int32_t> missing;
    auto miss_pos = std::make_shared<std::vector<std::size_t>>();
    const bool use_cache = sv.cache.enabled() && mid > 0;
    if (use_cache) {
        for (std::size_t i = 0; i < rr->user_ids.size(); ++i) {
            if (!sv.cache.get(CacheKey{mid, rr->user_ids[i], rr->top_n, rr->details}, (*frags)[i])) {
                missing.push_back(rr->user_ids[i]);
                miss_pos->push_back(i);
            }
        }
        sv.metrics.cache_hit(rr->user_ids.size() - missing.size());
        sv.metrics.cache_miss(missing.size());
        if (missing.empty()) {
            Reply rep = json_ok(assemble_results(rr->user_ids, *frags));
            rep.cache = "hit";
            return x->reply(std::move(rep));
        }
    } else {
        missing = rr->user_ids;
        for (std::size_t i = 0; i < missing.size(); ++i) miss_pos->push_back(i);
    }
    const char* cache_tag = !use_cache ? nullptr : (missing.size() == rr->user_ids.size() ? "miss" : "partial");
    auto ids = std::make_shared<std::vector<int32_t>>(missing);
    Services* s = &sv;
    sv.pool.submit_recommend(std::move(missing), rr->top_n, rr->details,
                             [s, x, rr, frags, miss_pos, ids, mid, use_cache, cache_tag, max_bytes](const DbOutcome& o) {
        if (o.kind != DbOutcome::Ok) return x->reply(outcome_error(o));
        ApiError e;
        if (!use_cache) {  // formatted straight into the answer
            Reply rep;
            if (!format_recommendations(*rr, *o.rows, rep.body, e, max_bytes)) return x->reply(error_reply(e));
            return x->reply(std::move(rep));
        }
        std::vector<std::string> fresh;
        if (!format_user_fragments(*ids, rr->details, *o.rows, fresh, e, max_bytes)) return x->reply(error_reply(e));
        // Cache only what the model read before the query still answers for:
        // a model switch seen meanwhile leaves these rows uncached.
        const bool cacheable = s->model_id() == mid;
        std::size_t total = 32;
        for (std::size_t k = 0; k < fresh.size(); ++k) {
            if (cacheable) s->cache.put(CacheKey{mid, (*ids)[k], rr->top_n, rr->details}, fresh[k]);
            (*frags)[(*miss_pos)[k]] = std::move(fresh[k]);
        }
        for (const auto& f : *frags) total += f.size() + 16;
        if (total > max_bytes)
            return x->reply(error_reply(response_too_large(max_bytes, "the answer has " + std::to_string(total) + " bytes")));
        Reply rep = json_ok(assemble_results(rr->user_ids, *frags));
        frags->clear();
        frags->shrink_to_fit();
        rep.cache = cache_tag;
        x->reply(std::move(rep));
    });
}

void handle_similar(Services& sv, const ExchangePtr& x) {
    int32_t id;
    int top_n;
    if (!path_id(x, 0, "product id", id)) return;
    if (!query_bounded(x, "top_n", sv.cfg.limits.default_top_n, sv.cfg.limits.max_top_n, top_n)) return;
    json_list(sv, x, Stmt::SimilarDetails, {std::to_string(id), std::to_string(top_n)},
              "{\"product_id\":" + std::to_string(id) + ",\"similar\":");
}

void handle_history(Services& sv, const ExchangePtr& x) {
    int32_t id;
    int limit;
    if (!path_id(x, 0, "user id", id)) return;
    if (!query_bounded(x, "limit", sv.cfg.limits.default_history, sv.cfg.limits.max_history, limit)) return;
    json_list(sv, x, Stmt::HistoryDetails, {std::to_string(id), std::to_string(limit)},
              "{\"user_id\":" + std::to_string(id) + ",\"history\":");
}

void handle_models_active(Services& sv, const ExchangePtr& x) {
    sv.pool.submit(Stmt::ModelActive, {}, [x](const DbOutcome& o) {
        if (o.kind != DbOutcome::Ok) return x->reply(outcome_error(o));
        if (o.rows->nrows() < 1 || o.rows->is_null(0, 0))
            return x->reply(error_reply(make_error(404, "PX404", "no active model", "", "run SELECT recsys_train()")));
        x->reply(json_ok(std::string(o.rows->get(0, 0))));
    });
}

void handle_evaluations(Services& sv, const ExchangePtr& x) {
    json_list(sv, x, Stmt::Evaluations, {}, "{\"evaluations\":");
}

}  // namespace rsproxy
