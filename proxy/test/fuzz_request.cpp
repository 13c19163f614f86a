// fuzz_request.cpp - libFuzzer target for recsys-proxy's request parsing
// (POST /recommendations, /recommendations/items and /explanations bodies under
// every id type, path ids, query integers, API-key headers).
// Build and run: make -C proxy fuzz [FUZZ_SECONDS=60]
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "api.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view in(reinterpret_cast<const char*>(data), size);
    rsproxy::Limits lim;
    lim.max_user_ids = 64;
    lim.max_top_n = 100;
    rsproxy::RecRequest req;
    rsproxy::ApiError err;
    if (rsproxy::parse_rec_request(in, lim, req, err)) {
        // Invariants of an accepted request.
        if (req.user_ids.empty() || req.user_ids.size() > lim.max_user_ids) std::abort();
        if (req.top_n < 1 || req.top_n > lim.max_top_n) std::abort();
        // Format an empty result for it: every id must appear once.
        rsproxy::VectorRows rows(5, {});
        std::string out;
        if (!rsproxy::format_recommendations(req, rows, out, err)) std::abort();
        if (out.size() < 14 || out.compare(0, 12, "{\"results\":{") != 0) std::abort();
        std::string lit = rsproxy::array_literal(req.user_ids);
        if (lit.front() != '{' || lit.back() != '}') std::abort();
    } else {
        if (err.status != 400 && err.status != 422) std::abort();
        std::string j = rsproxy::error_json(err);
        if (j.empty() || j.front() != '{') std::abort();
    }
    // The fast path answers what the general parser answers, for every id type.
    for (rsproxy::IdType t : {rsproxy::IdType::Integer, rsproxy::IdType::Bigint, rsproxy::IdType::Text,
                              rsproxy::IdType::Uuid}) {
        rsproxy::RecRequest a, b;
        rsproxy::ApiError ea, eb;
        const bool ok_a = rsproxy::parse_rec_request(in, lim, a, ea, rsproxy::IdTypes{t, t});
        const bool ok_b = rsproxy::parse_rec_request_general(in, lim, b, eb, rsproxy::IdTypes{t, t});
        if (ok_a != ok_b) std::abort();
        if (ok_a && (a.user_ids != b.user_ids || a.top_n != b.top_n || a.details != b.details ||
                     a.exclude_seen != b.exclude_seen || a.include_items.given != b.include_items.given ||
                     a.include_items.ids != b.include_items.ids || a.exclude_items.given != b.exclude_items.given ||
                     a.exclude_items.ids != b.exclude_items.ids || a.types != b.types))
            std::abort();
        if (!ok_a && rsproxy::error_json(ea) != rsproxy::error_json(eb)) std::abort();
    }
    // The same body against the other id types, a basket and an explanation.
    for (rsproxy::IdType t : {rsproxy::IdType::Bigint, rsproxy::IdType::Text, rsproxy::IdType::Uuid}) {
        rsproxy::RecRequest r2;
        if (!rsproxy::parse_rec_request(in, lim, r2, err, rsproxy::IdTypes{t, t}) && err.status != 400 && err.status != 422)
            std::abort();
        std::string id, why;
        int st = rsproxy::parse_id_text(in, t, id, why);
        if (st != 0 && st != 400 && st != 422) std::abort();
        if (st == 0 && t != rsproxy::IdType::Uuid && id != in) std::abort();
    }
    rsproxy::ItemsRequest ir;
    if (rsproxy::parse_items_request(in, lim, ir, err)) {
        if (ir.item_ids.empty() || (ir.has_weights && ir.weights.size() != ir.item_ids.size())) std::abort();
    } else if (err.status != 400 && err.status != 422) {
        std::abort();
    }
    rsproxy::ExplainRequest er;
    if (!rsproxy::parse_explain_request(in, er, err) && err.status != 400 && err.status != 422) std::abort();
    std::string dec;
    (void)rsproxy::percent_decode(in, dec);
    int32_t v;
    if (rsproxy::parse_int32(in, v) && std::to_string(v) != in) std::abort();
    std::string q;
    rsproxy::query_param(in, "top_n", q);
    static const std::vector<std::string> keys{"k1", "k2"};
    if (rsproxy::request_authorized(keys, in, in) && in.find("k1") == std::string_view::npos &&
        in.find("k2") == std::string_view::npos)
        std::abort();
    (void)rsproxy::http_status_for_sqlstate(in);
    std::string s;
    rsproxy::append_json_string(s, in);
    return 0;
}
