// handlers.cpp - one handler per route; see routes.cpp for the table.
#include "handlers.hpp"

#include <cstdlib>
#include <memory>

#include "openapi.hpp"
#include "services.hpp"

extern const char kIndexHtml[];
extern const unsigned long kIndexHtmlLen;
extern const char kOpenApiJson[];
extern const unsigned long kOpenApiJsonLen;

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

// The path parameter `i` (percent-decoded) as an id of type `t` in its
// canonical text, or a 400/422 naming it.
bool path_id(const ExchangePtr& x, std::size_t i, const char* what, IdType t, std::string& out) {
    const std::string& raw = x->req.params.at(i);
    std::string dec, why;
    int st = percent_decode(raw, dec) ? parse_id_text(dec, t, out, why) : 400;
    if (st == 0) return true;
    if (why.empty()) why = "malformed percent-encoding";
    x->reply(error_reply(make_error(st, "PX" + std::to_string(st),
                                    std::string(what) + " must be " + (st == 400 ? "an id of type " : "a valid ") +
                                        id_type_sql(t),
                                    raw.substr(0, 64) + ": " + why)));
    return false;
}

// An SQL error from a serving function this database's recsys lacks (an
// extension before the function was added, or types that do not match)
// answers 501 naming it; any other outcome as usual.
Reply feature_error(const DbOutcome& o, const char* function) {
    if (o.kind == DbOutcome::SqlError && o.sqlstate == "42883")
        return error_reply(make_error(501, "PX501", std::string("the database's recsys has no ") + function +
                                                        " for these arguments",
                                      o.message, "update the extension: ALTER EXTENSION recsys UPDATE"));
    return outcome_error(o);
}

// 413 before the query when `typical` exceeds --max-response-bytes.
bool within_response_bound(Services& sv, const ExchangePtr& x, std::size_t typical, const std::string& what) {
    if (typical <= sv.cfg.max_response_bytes) return true;
    x->reply(error_reply(response_too_large(sv.cfg.max_response_bytes,
                                            what + " come to about " + std::to_string(typical) + " bytes")));
    return false;
}

std::size_t product_columns(const Services& sv) {
    return sv.cfg.products_relation.empty() ? 0 : sv.cfg.product_columns.size();
}

// A statement answering one JSON text, wrapped as {"<key>":<value>, "<list>":<json>}.
void json_list(Services& sv, const ExchangePtr& x, Stmt st, std::vector<std::string> params, std::string prefix,
               IdTypes types = IdTypes{}) {
    sv.pool.submit(st, std::move(params), [x, prefix = std::move(prefix)](const DbOutcome& o) {
        if (o.kind != DbOutcome::Ok) return x->reply(outcome_error(o));
        x->reply(json_ok(prefix + json_cell_or(*o.rows, "[]") + "}"));
    }, types);
}

}  // namespace

void handle_root(Services&, const ExchangePtr& x) {
    Reply r;
    r.content_type = "text/html; charset=utf-8";
    r.body.assign(kIndexHtml, kIndexHtmlLen);
    x->reply(std::move(r));
}

void handle_healthz(Services&, const ExchangePtr& x) { x->reply(json_ok("{\"status\":\"ok\"}")); }

// Rebuilt with the id types in force (sv.openapi, built at start, proved the
// embedded document sound).
void handle_openapi(Services& sv, const ExchangePtr& x) {
    x->reply(json_ok(openapi_document(std::string_view(kOpenApiJson, kOpenApiJsonLen), sv.cfg, sv.pool.types())));
}

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
    if (!parse_rec_request(x->req.body, sv.cfg.limits, *rr, err, sv.pool.types())) return x->reply(error_reply(err));
    // Bounded memory: refuse before the query what cannot fit in --max-response-bytes.
    const std::size_t max_bytes = sv.cfg.max_response_bytes;
    if (!within_response_bound(sv, x,
                               typical_response_bytes(rr->user_ids.size(), rr->top_n, rr->details, product_columns(sv)),
                               std::to_string(rr->user_ids.size()) + " user ids x top_n " +
                                   std::to_string(rr->top_n) + (rr->details ? " with details" : "")))
        return;
    // Cache lookup, per user; the key holds the model id, so no entry of one
    // model can answer for another.  Filtered requests are not cached.
    const int64_t mid = sv.model_id();
    auto frags = std::make_shared<std::vector<std::string>>(rr->user_ids.size());
    std::vector<std::string> missing;
    auto miss_pos = std::make_shared<std::vector<std::size_t>>();
    const bool use_cache = sv.cache.enabled() && mid > 0 && !rr->filtered();
    const auto key = [&rr, mid](const std::string& uid) {
        return CacheKey{mid, uid, rr->top_n, rr->details, static_cast<int8_t>(rr->exclude_seen)};
    };
    if (use_cache) {
        for (std::size_t i = 0; i < rr->user_ids.size(); ++i) {
            if (!sv.cache.get(key(rr->user_ids[i]), (*frags)[i])) {
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
    auto ids = std::make_shared<std::vector<std::string>>(missing);
    Services* s = &sv;
    sv.pool.submit_recommend(std::move(missing), *rr,
                             [s, x, rr, frags, miss_pos, ids, mid, use_cache, cache_tag, max_bytes, key](const DbOutcome& o) {
        if (o.kind != DbOutcome::Ok)
            return x->reply(rr->filtered() ? feature_error(o, "recsys_recommend with include_items/exclude_items")
                                           : outcome_error(o));
        ApiError e;
        if (!use_cache) {  // formatted straight into the answer
            Reply rep;
            if (!format_recommendations(*rr, *o.rows, rep.body, e, max_bytes)) return x->reply(error_reply(e));
            return x->reply(std::move(rep));
        }
        std::vector<std::string> fresh;
        if (!format_user_fragments(*ids, rr->details, rr->types.item, *o.rows, fresh, e, max_bytes))
            return x->reply(error_reply(e));
        // Cache only what the model read before the query still answers for:
        // a model switch seen meanwhile leaves these rows uncached.
        const bool cacheable = s->model_id() == mid;
        std::size_t total = 32;
        for (std::size_t k = 0; k < fresh.size(); ++k) {
            if (cacheable) s->cache.put(key((*ids)[k]), fresh[k]);
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
    const IdTypes types = sv.pool.types();
    std::string id;
    int top_n;
    if (!path_id(x, 0, "product id", types.item, id)) return;
    if (!query_bounded(x, "top_n", sv.cfg.limits.default_top_n, sv.cfg.limits.max_top_n, top_n)) return;
    std::string prefix = "{\"product_id\":";
    append_json_id(prefix, types.item, id);
    json_list(sv, x, Stmt::SimilarDetails, {id, std::to_string(top_n)}, prefix + ",\"similar\":", types);
}

void handle_history(Services& sv, const ExchangePtr& x) {
    const IdTypes types = sv.pool.types();
    std::string id;
    int limit;
    if (!path_id(x, 0, "user id", types.user, id)) return;
    if (!query_bounded(x, "limit", sv.cfg.limits.default_history, sv.cfg.limits.max_history, limit)) return;
    std::string prefix = "{\"user_id\":";
    append_json_id(prefix, types.user, id);
    json_list(sv, x, Stmt::HistoryDetails, {id, std::to_string(limit)}, prefix + ",\"history\":", types);
}

void handle_recommendations_items(Services& sv, const ExchangePtr& x) {
    auto rq = std::make_shared<ItemsRequest>();
    ApiError err;
    if (!parse_items_request(x->req.body, sv.cfg.limits, *rq, err, sv.pool.types())) return x->reply(error_reply(err));
    if (!within_response_bound(sv, x, typical_response_bytes(1, rq->top_n, rq->details, product_columns(sv)),
                               "top_n " + std::to_string(rq->top_n) + (rq->details ? " with details" : "")))
        return;
    std::vector<std::string> params = {
        array_literal(rq->item_ids), std::to_string(rq->top_n),
        rq->has_weights ? float_array_literal(rq->weights) : kNullParam,
        rq->include_items.given ? array_literal(rq->include_items.ids) : kNullParam,
        rq->exclude_items.given ? array_literal(rq->exclude_items.ids) : kNullParam};
    sv.pool.submit(rq->details ? Stmt::ItemsRecommendDetails : Stmt::ItemsRecommend, std::move(params),
                   [x](const DbOutcome& o) {
                       if (o.kind != DbOutcome::Ok) return x->reply(feature_error(o, "recsys_recommend_for_items"));
                       x->reply(json_ok("{\"results\":" + json_cell_or(*o.rows, "[]") + "}"));
                   },
                   rq->types);
}

void handle_explanations(Services& sv, const ExchangePtr& x) {
    auto rq = std::make_shared<ExplainRequest>();
    ApiError err;
    if (!parse_explain_request(x->req.body, *rq, err, sv.pool.types())) return x->reply(error_reply(err));
    sv.pool.submit(Stmt::Explain, {rq->user_id, rq->product_id},
                   [x, rq](const DbOutcome& o) {
                       if (o.kind != DbOutcome::Ok) return x->reply(feature_error(o, "recsys_explain"));
                       const Rows& r = *o.rows;
                       if (r.nrows() < 1 || r.ncols() < 4)
                           return x->reply(error_reply(make_error(500, "PX500", "unexpected result from recsys_explain")));
                       std::string body = "{\"user_id\":";
                       append_json_id(body, rq->types.user, rq->user_id);
                       body += ",\"product_id\":";
                       append_json_id(body, rq->types.item, rq->product_id);
                       body += ",\"source\":";
                       if (r.is_null(0, 2)) body += "null";
                       else append_json_string(body, r.get(0, 2));
                       body += ",\"score\":";
                       if (r.is_null(0, 1)) body += "null";
                       else append_json_float(body, r.get(0, 1));
                       body += ",\"contributions\":";
                       body += r.is_null(0, 0) ? std::string_view("[]") : r.get(0, 0);
                       body += "}";
                       x->reply(json_ok(std::move(body)));
                   },
                   rq->types);
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

namespace rsproxy {

// The products relation's rows (id and configured columns), for the web
// page's category and price filters: at most --max-filter-items, by id.
void handle_products(Services& sv, const ExchangePtr& x) {
    const int max = static_cast<int>(std::max<std::size_t>(1, std::min<std::size_t>(sv.cfg.limits.max_filter_items, 1000000)));
    int limit;
    if (!query_bounded(x, "limit", max, max, limit)) return;
    json_list(sv, x, Stmt::Products, {std::to_string(limit)}, "{\"products\":");
}

}  // namespace rsproxy
