// openapi.cpp - see openapi.hpp.
#include "openapi.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

namespace rsproxy {

using nlohmann::json;

namespace {

void set_query_bounds(json& op, const char* name, int def, int max) {
    for (auto& p : op["parameters"])
        if (p.value("name", "") == name && p.value("in", "") == "query") {
            p["schema"]["maximum"] = max;
            p["schema"]["default"] = def;
        }
}

// The product fields of an item schema: the configured columns (their JSON
// type follows the column's SQL type, so it is left open).
void set_product_fields(json& item, const Config& cfg) {
    auto& props = item["properties"];
    for (const char* old : {"product_name", "category", "price"}) props.erase(old);
    if (cfg.products_relation.empty()) return;
    for (const auto& c : cfg.product_columns)
        props[c] = json{{"nullable", true},
                        {"description", "column " + c + " of " + cfg.products_relation + " (--product-columns); null "
                                        "when the product has no row there"}};
}

// The JSON schema of one id of type `t`.
json id_schema(IdType t, const char* what) {
    switch (t) {
        case IdType::Integer:
            return json{{"oneOf", json::array({json{{"type", "integer"}, {"format", "int32"}},
                                               json{{"type", "string"}, {"pattern", "^-?(0|[1-9][0-9]{0,9})$"}}})},
                        {"description", std::string(what) + " of type integer: a JSON integer or a string of one"}};
        case IdType::Bigint:
            return json{{"oneOf", json::array({json{{"type", "integer"}, {"format", "int64"}},
                                               json{{"type", "string"}, {"pattern", "^-?(0|[1-9][0-9]{0,18})$"}}})},
                        {"description", std::string(what) + " of type bigint: a JSON integer or a string of one; "
                                        "answers write it as a JSON number (exact; JavaScript's JSON.parse rounds "
                                        "beyond 2^53)"}};
        case IdType::Text:
            return json{{"oneOf", json::array({json{{"type", "string"}, {"minLength", 1},
                                                    {"maxLength", kMaxTextIdBytes}},
                                               json{{"type", "integer"}}})},
                        {"description", std::string(what) + " of type text (a JSON integer is taken as its decimal "
                                        "text); answers write it as a string"}};
        case IdType::Uuid:
            return json{{"type", "string"}, {"format", "uuid"},
                        {"description", std::string(what) + " of type uuid, 8-4-4-4-12 hex digits in either case; "
                                        "answers write it in lower case"}};
    }
    return json::object();
}

}  // namespace

std::string openapi_document(std::string_view base, const Config& cfg, IdTypes types) {
    json d = json::parse(base.begin(), base.end());
    const Limits& lim = cfg.limits;
    auto& schemas = d["components"]["schemas"];
    auto& req = schemas["RecommendationsRequest"];
    req["additionalProperties"] = false;
    req["properties"]["user_ids"]["maxItems"] = lim.max_user_ids;
    req["properties"]["user_ids"]["description"] =
        "1.." + std::to_string(lim.max_user_ids) + " ids (--max-user-ids); duplicates are answered once";
    req["properties"]["top_n"]["maximum"] = lim.max_top_n;
    req["properties"]["top_n"]["default"] = lim.default_top_n;
    for (const char* s : {"RecommendedItem", "SimilarItem", "HistoryItem", "Contribution", "Product"})
        set_product_fields(schemas[s], cfg);
    schemas["UserId"] = id_schema(types.user, "a user id");
    schemas["ItemId"] = id_schema(types.item, "an item id");
    for (const char* f : {"include_items", "exclude_items"}) {
        req["properties"][f]["maxItems"] = lim.max_filter_items;
        schemas["ItemsRequest"]["properties"][f]["maxItems"] = lim.max_filter_items;
    }
    auto& items = schemas["ItemsRequest"]["properties"];
    items["item_ids"]["maxItems"] = lim.max_user_ids;
    items["top_n"]["maximum"] = lim.max_top_n;
    items["top_n"]["default"] = lim.default_top_n;

    auto& paths = d["paths"];
    set_query_bounds(paths["/similar/{product_id}"]["get"], "top_n", lim.default_top_n, lim.max_top_n);
    set_query_bounds(paths["/users/{user_id}/history"]["get"], "limit", lim.default_history, lim.max_history);
    const int max_products = static_cast<int>(std::max<std::size_t>(1, std::min<std::size_t>(lim.max_filter_items, 1000000)));
    set_query_bounds(paths["/products"]["get"], "limit", max_products, max_products);
    for (const char* route : {"/recommendations", "/recommendations/items", "/explanations"}) {
        auto& rec = paths[route]["post"];
        rec["responses"]["413"] = json{{"$ref", "#/components/responses/Error"}};
        rec["responses"]["415"] = json{{"$ref", "#/components/responses/Error"}};
        rec["description"] = "The body is at most " + std::to_string(lim.max_body_bytes) +
                             " bytes (--max-body-bytes) and must be sent as application/json (else 415); unknown "
                             "fields are refused (422). An answer may hold at most " +
                             std::to_string(cfg.max_response_bytes) +
                             " bytes (--max-response-bytes): a request whose ids x top_n would exceed it is refused "
                             "with 413 before any query runs. Ids follow the source's types (UserId, ItemId).";
    }
    paths["/recommendations/items"]["post"]["description"] =
        paths["/recommendations/items"]["post"]["description"].get<std::string>() +
        " 501 when the database's recsys has no recsys_recommend_for_items.";
    paths["/explanations"]["post"]["description"] = paths["/explanations"]["post"]["description"].get<std::string>() +
                                                    " 501 when the database's recsys has no recsys_explain.";

    // Security as configured: without --api-key every route is open.
    for (auto& [path, item] : paths.items())
        for (auto& [method, op] : item.items()) {
            (void)path;
            (void)method;
            if (!op.is_object() || !op.contains("security")) continue;
            if (cfg.api_keys.empty())
                op.erase("security");
        }
    if (cfg.api_keys.empty()) d["components"].erase("securitySchemes");
    d["x-recsys-proxy"] = json{{"max_body_bytes", lim.max_body_bytes},
                               {"max_user_ids", lim.max_user_ids},
                               {"max_filter_items", lim.max_filter_items},
                               {"user_type", id_type_sql(types.user)},
                               {"item_type", id_type_sql(types.item)},
                               {"max_top_n", lim.max_top_n},
                               {"default_top_n", lim.default_top_n},
                               {"max_history", lim.max_history},
                               {"max_response_bytes", cfg.max_response_bytes},
                               {"api_keys_required", !cfg.api_keys.empty()},
                               {"cors_origins", cfg.cors_origins},
                               {"products", cfg.products_relation.empty() ? json(nullptr) : json(cfg.products_relation)},
                               {"product_columns", cfg.products_relation.empty() ? json::array() : json(cfg.product_columns)}};
    return d.dump();
}

}  // namespace rsproxy
