// unit_tests.cpp - GoogleTest unit tests for recsys-proxy's database-free parts,
// plus a process-level test that runs the built binary against an unreachable
// database (RECSYS_PROXY_BIN) and checks the status codes that need no database.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <sstream>

#include <boost/beast/http.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "api.hpp"
#include "cache.hpp"
#include "db.hpp"
#include "config.hpp"
#include "metrics.hpp"
#include "openapi.hpp"
#include "routes.hpp"

extern const char kOpenApiJson[];
extern const unsigned long kOpenApiJsonLen;

using namespace rsproxy;

// ------------------------------------------------------------ request body --

static bool parse(const std::string& body, RecRequest& r, ApiError& e, Limits lim = {}) {
    return parse_rec_request(body, lim, r, e);
}

// Bodies of the common shape take a fast path (no JSON document built); it
// must answer exactly what the general parser answers, for these and for
// every body that only looks like them (the fuzzer compares the two too).
TEST(ParseRequest, FastPathAnswersAsTheGeneralParser) {
    Limits lim;
    lim.max_user_ids = 3;
    lim.max_filter_items = 4;
    lim.max_top_n = 50;
    const char* bodies[] = {
        R"({"user_ids":[10,25,42],"top_n":5})",
        R"({"user_ids":[7,7,3,7],"top_n":10,"include_items":[6,16,31,41],"exclude_items":[]})",
        " {\n\t\"include_items\" : [ 1 , -2 ] ,\r\"user_ids\":[0], \"exclude_seen\":false,\"details\":true } ",
        R"({"user_ids":[2147483647,-2147483648]})",
        R"({"user_ids":[2147483648]})",            // out of the integer range (fine as bigint)
        R"({"user_ids":[999999999999999999]})",    // 18 digits
        R"({"user_ids":[9223372036854775808]})",   // 19 digits: the general path decides
        R"({"user_ids":[-0]})",
        R"({"user_ids":[01]})",
        R"({"user_ids":[1.0]})",
        R"({"user_ids":[1e2]})",
        R"({"user_ids":[1],"top_n":0})",
        R"({"user_ids":[1],"top_n":51})",
        R"({"user_ids":[1],"top_n":50})",
        R"({"user_ids":[1],"top_n":5.0})",
        R"({"user_ids":[1,2,3,4]})",               // too many
        R"({"user_ids":[1],"include_items":[1,2,3,4,5]})",
        R"({"user_ids":[]})",
        R"({"user_ids":[1],"user_ids":[2]})",      // a repeated member
        R"({"user_ids":[1],"top_n":3,"top_n":4})",
        R"({"user_ids":[1],})",
        R"({"user_ids":[1,]})",
        R"({"user_ids":[1]} x)",
        R"({"user_ids":[1]}})",
        R"({"user_ids":["1"]})",
        R"({"user_ids":[1],"include_items":null})",
        R"({"user_ids":[1],"details":"true"})",
        R"({"user_ids":[1],"details":truex})",
        R"({"user_ids":[1],"detail":true})",
        R"({"user\u005fids":[1]})",
        R"({"top_n":3})",
        R"({})",
        R"([1])",
        "",
    };
    for (IdType t : {IdType::Integer, IdType::Bigint, IdType::Text, IdType::Uuid}) {
        for (const char* body : bodies) {
            SCOPED_TRACE(std::string(body) + " as " + id_type_sql(t));
            RecRequest a, b;
            ApiError ea, eb;
            const bool ok_a = parse_rec_request(body, lim, a, ea, IdTypes{t, t});
            const bool ok_b = parse_rec_request_general(body, lim, b, eb, IdTypes{t, t});
            ASSERT_EQ(ok_a, ok_b);
            if (ok_a) {
                EXPECT_EQ(a.user_ids, b.user_ids);
                EXPECT_EQ(a.top_n, b.top_n);
                EXPECT_EQ(a.details, b.details);
                EXPECT_EQ(a.exclude_seen, b.exclude_seen);
                EXPECT_EQ(a.include_items.given, b.include_items.given);
                EXPECT_EQ(a.include_items.ids, b.include_items.ids);
                EXPECT_EQ(a.exclude_items.given, b.exclude_items.given);
                EXPECT_EQ(a.exclude_items.ids, b.exclude_items.ids);
                EXPECT_TRUE(a.types == b.types);
            } else {
                EXPECT_EQ(error_json(ea), error_json(eb));
            }
        }
    }
    // The values themselves, by hand.
    RecRequest r;
    ApiError e;
    ASSERT_TRUE(parse_rec_request(R"({"user_ids":[7,7,-3],"include_items":[6,16],"exclude_seen":false})", lim, r, e));
    EXPECT_EQ(r.user_ids, (std::vector<std::string>{"7", "-3"}));
    EXPECT_EQ(r.include_items.ids, (std::vector<std::string>{"6", "16"}));
    EXPECT_TRUE(r.include_items.given);
    EXPECT_FALSE(r.exclude_items.given);
    EXPECT_EQ(r.exclude_seen, 0);
    EXPECT_EQ(r.top_n, 10);
}

TEST(ParseRequest, Valid) {
    RecRequest r;
    ApiError e;
    ASSERT_TRUE(parse(R"({"user_ids":[10,25,42],"top_n":5})", r, e));
    EXPECT_EQ(r.user_ids, (std::vector<std::string>{"10", "25", "42"}));
    EXPECT_EQ(r.top_n, 5);
    EXPECT_FALSE(r.details);
}

TEST(ParseRequest, DefaultsDetailsAndDuplicates) {
    RecRequest r;
    ApiError e;
    ASSERT_TRUE(parse(R"({"user_ids":[7,-3,7,0],"details":true})", r, e));
    EXPECT_EQ(r.user_ids, (std::vector<std::string>{"7", "-3", "0"}));
    EXPECT_EQ(r.top_n, 10);
    EXPECT_TRUE(r.details);
}

TEST(ParseRequest, Int32Bounds) {
    RecRequest r;
    ApiError e;
    EXPECT_TRUE(parse(R"({"user_ids":[2147483647,-2147483648]})", r, e));
    EXPECT_FALSE(parse(R"({"user_ids":[2147483648]})", r, e));
    EXPECT_EQ(e.status, 422);
    EXPECT_FALSE(parse(R"({"user_ids":[-2147483649]})", r, e));
    EXPECT_EQ(e.status, 422);
    EXPECT_FALSE(parse(R"({"user_ids":[18446744073709551615]})", r, e));
    EXPECT_EQ(e.status, 422);
}

TEST(ParseRequest, MalformedIs400) {
    const char* bad[] = {"", "{", "[1,2]", "null", "\"x\"", "{\"user_ids\":[1,]}", "{\"user_ids\":[1]} x",
                         "{\"user_ids\":[1]", "\xff\xfe"};
    for (const char* b : bad) {
        RecRequest r;
        ApiError e;
        EXPECT_FALSE(parse(b, r, e)) << b;
        EXPECT_EQ(e.status, 400) << b;
        EXPECT_EQ(e.code, "PX400");
    }
}

TEST(ParseRequest, WrongTypesAndMissingAre400) {
    const char* bad[] = {
        R"({"top_n":5})",                          // missing user_ids
        R"({"user_ids":"1,2"})",                   // not an array
        R"({"user_ids":[1.5]})",                   // float
        R"({"user_ids":[1.0]})",                   // float, even if integral
        R"({"user_ids":["x"]})",                   // a string that is not an integer
        R"({"user_ids":["01"]})",                  // nor in canonical form
        R"({"user_ids":[true]})",                  // boolean
        R"({"user_ids":[null]})",                  // null
        R"({"user_ids":[[1]]})",                   // nested
        R"({"user_ids":[1],"top_n":"5"})",         // top_n string
        R"({"user_ids":[1],"top_n":5.5})",         // top_n float
        R"({"user_ids":[1],"top_n":null})",        // top_n null
        R"({"user_ids":[1],"details":"yes"})",     // details not bool
        R"({"user_ids":null})",
    };
    for (const char* b : bad) {
        RecRequest r;
        ApiError e;
        EXPECT_FALSE(parse(b, r, e)) << b;
        EXPECT_EQ(e.status, 400) << b;
    }
}

TEST(ParseRequest, OutOfBoundsIs422) {
    Limits lim;
    lim.max_user_ids = 3;
    lim.max_top_n = 50;
    const char* bad[] = {R"({"user_ids":[]})",          R"({"user_ids":[1,2,3,4]})",
                         R"({"user_ids":[1],"top_n":0})", R"({"user_ids":[1],"top_n":-1})",
                         R"({"user_ids":[1],"top_n":51})", R"({"user_ids":[1],"top_n":18446744073709551615})"};
    for (const char* b : bad) {
        RecRequest r;
        ApiError e;
        EXPECT_FALSE(parse(b, r, e, lim)) << b;
        EXPECT_EQ(e.status, 422) << b;
    }
    RecRequest r;
    ApiError e;
    EXPECT_TRUE(parse(R"({"user_ids":[1,2,3],"top_n":50})", r, e, lim));
}

TEST(ParseRequest, DeepNestingDoesNotCrash) {
    std::string deep(20000, '[');
    RecRequest r;
    ApiError e;
    EXPECT_FALSE(parse("{\"user_ids\":" + deep, r, e));
    bool ok = parse("{\"x\":" + deep + std::string(20000, ']') + ",\"user_ids\":[1]}", r, e);
    EXPECT_FALSE(ok);  // an unknown field is refused, however deep
    EXPECT_EQ(e.status, 422);
}

TEST(ParseRequest, UnknownFieldsAre422) {
    for (const char* b : {R"({"user_ids":[1],"extra":"x"})", R"({"user_id":[1]})", R"({"user_ids":[1],"top_N":3})",
                          R"({"user_ids":[1],"details":true,"exclude":[2]})"}) {
        RecRequest r;
        ApiError e;
        EXPECT_FALSE(parse(b, r, e)) << b;
        EXPECT_EQ(e.status, 422) << b;
        EXPECT_EQ(e.code, "PX422");
        EXPECT_EQ(e.message.rfind("unknown field \"", 0), 0u) << e.message;
    }
    RecRequest r;
    ApiError e;
    ASSERT_FALSE(parse(R"({"user_ids":[1],"top_N":3})", r, e));
    EXPECT_EQ(e.message, "unknown field \"top_N\"");
}

TEST(ParseRequest, TypicalResponseBytes) {
    // 8 bytes a plain item, 80 + 20 per product column with details, 16 per user, 32 overall.
    EXPECT_EQ(typical_response_bytes(1, 10, false, 3), 32u + 16 + 80);
    EXPECT_EQ(typical_response_bytes(1000, 1000, true, 3), 32u + 1000 * (16 + 1000 * 140));
    EXPECT_EQ(typical_response_bytes(2, 5, true, 0), 32u + 2 * (16 + 5 * 80));
    auto e = response_too_large(1024, "x");
    EXPECT_EQ(e.status, 413);
    EXPECT_NE(e.details.find("1024"), std::string::npos);
}

// --------------------------------------------------------------- scalars --

TEST(Scalars, ParseInt32) {
    int32_t v;
    EXPECT_TRUE(parse_int32("0", v));
    EXPECT_EQ(v, 0);
    EXPECT_TRUE(parse_int32("-2147483648", v));
    EXPECT_EQ(v, INT32_MIN);
    EXPECT_TRUE(parse_int32("2147483647", v));
    for (const char* b : {"", "-", "+1", "01", " 1", "1 ", "2147483648", "1e3", "abc", "-0", "99999999999"})
        EXPECT_FALSE(parse_int32(b, v)) << b;
}

TEST(Scalars, QueryParam) {
    std::string v;
    EXPECT_TRUE(query_param("a=1&top_n=5&b", "top_n", v));
    EXPECT_EQ(v, "5");
    EXPECT_TRUE(query_param("b", "b", v));
    EXPECT_EQ(v, "");
    EXPECT_FALSE(query_param("top=1", "top_n", v));
    EXPECT_FALSE(query_param("", "top_n", v));
}

TEST(Scalars, IntArrayLiteral) {
    EXPECT_EQ(int_array_literal({}), "{}");
    EXPECT_EQ(int_array_literal({1, -2, 2147483647}), "{1,-2,2147483647}");
}

TEST(Scalars, JsonEscapingRoundTrips) {
    std::string s;
    std::string raw = std::string("a\"b\\c\n\t\x01 é", 12);
    append_json_string(s, raw);
    EXPECT_EQ(nlohmann::json::parse(s).get<std::string>(), raw);
    std::string f;
    append_json_float(f, "NaN");
    EXPECT_EQ(f, "null");
    f.clear();
    append_json_float(f, "-1.5e-07");
    EXPECT_EQ(f, "-1.5e-07");
}

// ----------------------------------------------------------------- errors --

TEST(Errors, SqlstateMapping) {
    struct Case {
        const char* s;
        int status;
    } cases[] = {{"22023", 400}, {"22004", 400}, {"22P02", 400}, {"23505", 409}, {"23503", 409},
                 {"42501", 403}, {"42883", 404}, {"42P01", 404}, {"53100", 503}, {"53300", 503},
                 {"54000", 413}, {"55000", 503}, {"55P03", 500}, {"57014", 504}, {"08006", 503},
                 {"08001", 503}, {"57P01", 503}, {"XX000", 500}, {"42601", 500}, {"P0001", 500},
                 {"22003", 500}, {"22012", 500}, {"22000", 500}, {"2202E", 400},
                 {"28P01", 403}, {"25006", 405}, {"", 500},      {"123", 500}};
    for (const auto& c : cases) EXPECT_EQ(http_status_for_sqlstate(c.s), c.status) << c.s;
}

TEST(Errors, JsonShape) {
    auto j = nlohmann::json::parse(error_json(make_error(503, "55000", "no model", "", "run SELECT recsys_train()")));
    EXPECT_EQ(j["code"], "55000");
    EXPECT_EQ(j["message"], "no model");
    EXPECT_TRUE(j["details"].is_null());
    EXPECT_EQ(j["hint"], "run SELECT recsys_train()");
    EXPECT_EQ(j.size(), 4u);
}

// ------------------------------------------------------------------- auth --

TEST(Auth, ConstantTimeEquals) {
    EXPECT_TRUE(constant_time_equals("secret", "secret"));
    EXPECT_FALSE(constant_time_equals("secret", "secreT"));
    EXPECT_FALSE(constant_time_equals("secret", "secret2"));
    EXPECT_FALSE(constant_time_equals("", "x"));
    EXPECT_TRUE(constant_time_equals("", ""));
    EXPECT_FALSE(constant_time_equals(std::string("a\0b", 3), "a"));
}

TEST(Auth, KeysAndHeaders) {
    std::vector<std::string> keys{"k1", "k2"};
    EXPECT_TRUE(key_matches(keys, "k2"));
    EXPECT_FALSE(key_matches(keys, "k3"));
    EXPECT_FALSE(key_matches(keys, ""));
    EXPECT_EQ(bearer_key("Bearer abc"), "abc");
    EXPECT_EQ(bearer_key("bearer  abc "), "abc");
    EXPECT_EQ(bearer_key("Basic Zm9v"), "");
    EXPECT_EQ(bearer_key(""), "");
    EXPECT_TRUE(request_authorized(keys, "Bearer k1", ""));
    EXPECT_TRUE(request_authorized(keys, "", " k2 "));
    EXPECT_TRUE(request_authorized(keys, "Basic Zm9v", "k2"));     // another scheme does not hide the key
    EXPECT_TRUE(request_authorized(keys, "Bearer wrong", "k1"));   // nor does a wrong bearer
    EXPECT_TRUE(request_authorized(keys, "Bearer k2", "wrong"));
    EXPECT_FALSE(request_authorized(keys, "Bearer wrong", "wrong"));
    EXPECT_FALSE(request_authorized(keys, "", ""));
    EXPECT_FALSE(request_authorized(keys, "k1", ""));  // no scheme
}

// ------------------------------------------------------------- formatting --

static const std::string N = "\x01NULL";

TEST(Format, PlainInRequestOrderAndRankOrder) {
    RecRequest req;
    req.user_ids = {"42", "10", "25"};
    req.top_n = 3;
    VectorRows rows(5, {"10", "18", "0.5", "2", "cf",      //
                        "10", "93", "0.9", "1", "cf",      //
                        "42", "7", "12", "1", "popular",   //
                        "10", "161", "0.1", "3", "popular"});
    std::string out;
    ApiError e;
    ASSERT_TRUE(format_recommendations(req, rows, out, e));
    EXPECT_EQ(out, R"({"results":{"42":[7],"10":[93,18,161],"25":[]}})");
    auto j = nlohmann::json::parse(out);
    EXPECT_EQ(j["results"]["10"][0], 93);
}

TEST(Format, DetailsWithAndWithoutProducts) {
    RecRequest req;
    req.user_ids = {"1"};
    req.details = true;
    // The product column is the JSON object json_build_object() gives (its spacing included).
    VectorRows with(6, {"1", "5", "0.25", "1", "cf", R"({"product_name" : "Lamp \"X\"", "category" : "home", "price" : 19.99})",
                        "1", "6", "NaN", "2", "popular", R"({"product_name" : null, "category" : null, "price" : null})"});
    std::string out;
    ApiError e;
    ASSERT_TRUE(format_recommendations(req, with, out, e));
    auto j = nlohmann::json::parse(out)["results"]["1"];
    ASSERT_EQ(j.size(), 2u);
    EXPECT_EQ(j[0]["product_id"], 5);
    EXPECT_EQ(j[0]["product_name"], "Lamp \"X\"");
    EXPECT_DOUBLE_EQ(j[0]["price"].get<double>(), 19.99);
    EXPECT_EQ(j[0]["source"], "cf");
    EXPECT_TRUE(j[1]["score"].is_null());
    EXPECT_TRUE(j[1]["product_name"].is_null());
    // The product members are spliced in without json_build_object's spacing (strings untouched).
    EXPECT_NE(out.find(R"("source":"cf","product_name":"Lamp \"X\"","category":"home","price":19.99})"), std::string::npos)
        << out;
    VectorRows spaced(6, {"1", "5", "1", "1", "cf", R"({"a b" : "x : y, z", "c" : [1, 2]})"});
    ASSERT_TRUE(format_recommendations(req, spaced, out, e));
    EXPECT_NE(out.find(R"("source":"cf","a b":"x : y, z","c":[1,2]})"), std::string::npos) << out;
    VectorRows empty(6, {"1", "5", "1", "1", "cf", "{}"});
    ASSERT_TRUE(format_recommendations(req, empty, out, e));
    EXPECT_NE(out.find(R"("source":"cf"})"), std::string::npos) << out;
    VectorRows without(5, {"1", "5", "0.25", "1", "cf"});
    ASSERT_TRUE(format_recommendations(req, without, out, e));
    auto k = nlohmann::json::parse(out)["results"]["1"][0];
    EXPECT_EQ(k.size(), 4u);
    EXPECT_FALSE(k.contains("product_name"));
}

TEST(Format, BoundedBytesAre413) {
    RecRequest req;
    req.user_ids = {"1", "2"};
    VectorRows rows(5, {"1", "1000001", "0.5", "1", "cf", "2", "1000002", "0.5", "1", "cf"});
    std::string out;
    ApiError e;
    ASSERT_TRUE(format_recommendations(req, rows, out, e, 1000));
    EXPECT_EQ(out, R"({"results":{"1":[1000001],"2":[1000002]}})");
    // 32 + (9 + 16) for the first user, + (9 + 16) for the second: 82 bytes counted.
    EXPECT_TRUE(format_recommendations(req, rows, out, e, 82));
    EXPECT_FALSE(format_recommendations(req, rows, out, e, 81));
    EXPECT_EQ(e.status, 413);
    EXPECT_NE(e.details.find("81 bytes"), std::string::npos) << e.details;
}

TEST(Format, MalformedRowsAre500) {
    RecRequest req;
    req.user_ids = {"1"};
    std::string out;
    ApiError e;
    VectorRows narrow(2, {"1", "2"});
    EXPECT_FALSE(format_recommendations(req, narrow, out, e));
    EXPECT_EQ(e.status, 500);
    VectorRows garbage(5, {"1", "x", "1", "1", "cf"});  // a product id that is not an integer
    EXPECT_FALSE(format_recommendations(req, garbage, out, e));
    VectorRows nullpid(5, {"1", N, "1", "1", "cf"});
    EXPECT_FALSE(format_recommendations(req, nullpid, out, e));
}

TEST(Format, JsonCell) {
    VectorRows none(1, {});
    EXPECT_EQ(json_cell_or(none, "[]"), "[]");
    VectorRows null1(1, {N});
    EXPECT_EQ(json_cell_or(null1, "[]"), "[]");
    VectorRows one(1, {"[1]"});
    EXPECT_EQ(json_cell_or(one, "[]"), "[1]");
}

// ------------------------------------------------------------------ cache --

TEST(Cache, LruEvictionTtlAndModelInvalidation) {
    using namespace std::chrono;
    LruCache c(2, milliseconds(100));
    auto t0 = LruCache::Clock::now();
    std::string v;
    c.put({1, "10", 5, false}, "[1]", t0);
    c.put({1, "11", 5, false}, "[2]", t0);
    ASSERT_TRUE(c.get({1, "10", 5, false}, v, t0));  // 10 becomes most recent
    EXPECT_EQ(v, "[1]");
    c.put({1, "12", 5, false}, "[3]", t0);  // evicts 11
    EXPECT_FALSE(c.get({1, "11", 5, false}, v, t0));
    EXPECT_TRUE(c.get({1, "12", 5, false}, v, t0));
    EXPECT_FALSE(c.get({1, "12", 6, false}, v, t0));  // other top_n
    EXPECT_FALSE(c.get({1, "12", 5, true}, v, t0));   // other details flag
    EXPECT_FALSE(c.get({1, "12", 5, false, 0}, v, t0));  // exclude_seen given
    EXPECT_FALSE(c.get({2, "12", 5, false}, v, t0));  // other model
    EXPECT_FALSE(c.get({1, "10", 5, false}, v, t0 + milliseconds(101)));  // expired
    c.put({2, "12", 5, false}, "[9]", t0);
    c.retain_model(2);
    EXPECT_EQ(c.size(), 1u);
    EXPECT_TRUE(c.get({2, "12", 5, false}, v, t0));
    LruCache off(0, milliseconds(100));
    off.put({1, "1", 1, false}, "x");
    EXPECT_FALSE(off.get({1, "1", 1, false}, v));
}

// ---------------------------------------------------------------- metrics --

TEST(Metrics, RenderPrometheus) {
    Metrics m({"/recommendations", "other"});
    m.observe(0, 200, 0.002);
    m.observe(0, 200, 0.2);
    m.observe(0, 503, 0.0001);
    m.observe(7, 404, 0.0001);  // out of range: counted as "other"
    m.cache_hit(3);
    m.cache_miss();
    m.db_error("55000");
    std::string t = m.render(PoolGauges{1, 2, 4, 1, 2, {{true, 5}, {false, 0}}}, 7, 42);
    EXPECT_NE(t.find("recsys_proxy_requests_total{route=\"/recommendations\",status=\"200\"} 2\n"), std::string::npos);
    EXPECT_NE(t.find("recsys_proxy_requests_total{route=\"/recommendations\",status=\"503\"} 1\n"), std::string::npos);
    EXPECT_NE(t.find("recsys_proxy_request_duration_seconds_bucket{route=\"/recommendations\",le=\"0.0025\"} 2\n"),
              std::string::npos);
    EXPECT_NE(t.find("recsys_proxy_request_duration_seconds_bucket{route=\"/recommendations\",le=\"+Inf\"} 3\n"),
              std::string::npos);
    EXPECT_NE(t.find("recsys_proxy_request_duration_seconds_count{route=\"/recommendations\"} 3\n"), std::string::npos);
    EXPECT_NE(t.find("recsys_proxy_pool_in_use 1\n"), std::string::npos);
    EXPECT_NE(t.find("recsys_proxy_pool_waiting 2\n"), std::string::npos);
    EXPECT_NE(t.find("recsys_proxy_cache_hits_total 3\n"), std::string::npos);
    EXPECT_NE(t.find("recsys_proxy_cache_misses_total 1\n"), std::string::npos);
    EXPECT_NE(t.find("recsys_proxy_db_errors_total{sqlstate=\"55000\"} 1\n"), std::string::npos);
    EXPECT_NE(t.find("recsys_proxy_dsn_up{dsn=\"1\"} 0\n"), std::string::npos);
    EXPECT_NE(t.find("recsys_proxy_dsn_statements_total{dsn=\"0\"} 5\n"), std::string::npos);
    EXPECT_NE(t.find("recsys_proxy_requests_total{route=\"other\",status=\"404\"} 1\n"), std::string::npos);
}

static const std::string kNull = "\x01NULL";

TEST(Metrics, ModelStatusFromRows) {
    ModelStatus st;
    ASSERT_TRUE(parse_model_status(VectorRows(4, {"7", "1795000000.25", "93.5", "t"}), st));
    EXPECT_TRUE(st.known);
    EXPECT_EQ(st.active_model_id, 7);
    EXPECT_DOUBLE_EQ(st.created_epoch, 1795000000.25);
    EXPECT_DOUBLE_EQ(st.age_seconds, 93.5);
    EXPECT_TRUE(st.runs_readable);
    ASSERT_TRUE(parse_last_training(VectorRows(3, {"failed", "0.75", "1795000100.5"}), st));
    EXPECT_TRUE(st.has_training);
    EXPECT_EQ(st.status, "failed");
    EXPECT_DOUBLE_EQ(st.duration_seconds.value(), 0.75);
    EXPECT_DOUBLE_EQ(st.end_epoch.value(), 1795000100.5);
    // A terminated run has no end and no duration.
    ASSERT_TRUE(parse_last_training(VectorRows(3, {"terminated", kNull, kNull}), st));
    EXPECT_FALSE(st.duration_seconds.has_value());
    EXPECT_FALSE(st.end_epoch.has_value());
    // No finished training yet.
    ASSERT_TRUE(parse_last_training(VectorRows(3, {}), st));
    EXPECT_FALSE(st.has_training);
    // No active model, view not readable.
    ModelStatus none;
    ASSERT_TRUE(parse_model_status(VectorRows(4, {kNull, kNull, kNull, "f"}), none));
    EXPECT_EQ(none.active_model_id, -1);
    EXPECT_FALSE(none.runs_readable);
    // Wrong shapes leave the status untouched.
    ModelStatus bad;
    EXPECT_FALSE(parse_model_status(VectorRows(4, {}), bad));
    EXPECT_FALSE(parse_model_status(VectorRows(3, {"7", "1", "2"}), bad));
    EXPECT_FALSE(parse_model_status(VectorRows(4, {"x", "1", "2", "t"}), bad));
    EXPECT_FALSE(parse_model_status(VectorRows(4, {"7", kNull, "2", "t"}), bad));
    EXPECT_FALSE(bad.known);
    EXPECT_FALSE(parse_last_training(VectorRows(2, {"failed", "1"}), bad));
    EXPECT_FALSE(parse_last_training(VectorRows(3, {kNull, "1", "2"}), bad));
    EXPECT_FALSE(bad.has_training);
}

TEST(Metrics, RenderModelStatus) {
    EXPECT_EQ(render_model_status(ModelStatus{}), "");  // not read: nothing at all
    ModelStatus st;
    st.known = true;
    st.active_model_id = 12;
    st.created_epoch = 1795000000.5;
    st.age_seconds = 3600.25;
    std::string t = render_model_status(st);
    EXPECT_NE(t.find("# TYPE recsys_active_model_id gauge\nrecsys_active_model_id 12\n"), std::string::npos);
    EXPECT_NE(t.find("\nrecsys_active_model_created_timestamp_seconds 1795000000.500\n"), std::string::npos);
    EXPECT_NE(t.find("\nrecsys_active_model_age_seconds 3600.250\n"), std::string::npos);
    EXPECT_EQ(t.find("recsys_last_training"), std::string::npos);  // none read
    st.has_training = true;
    st.status = "failed";
    st.duration_seconds = 1.5;
    st.end_epoch = 1795000100.0;
    t = render_model_status(st);
    EXPECT_NE(t.find("\nrecsys_last_training_success 0\n"), std::string::npos);
    EXPECT_NE(t.find("\nrecsys_last_training_status{status=\"failed\"} 1\n"), std::string::npos);
    EXPECT_NE(t.find("\nrecsys_last_training_status{status=\"succeeded\"} 0\n"), std::string::npos);
    EXPECT_NE(t.find("\nrecsys_last_training_status{status=\"rolled back\"} 0\n"), std::string::npos);
    EXPECT_NE(t.find("\nrecsys_last_training_duration_seconds 1.500000\n"), std::string::npos);
    EXPECT_NE(t.find("\nrecsys_last_training_end_timestamp_seconds 1795000100.000\n"), std::string::npos);
    // Exactly one status is 1.
    std::size_t ones = 0;
    for (std::size_t p = t.find("recsys_last_training_status{"); p != std::string::npos;
         p = t.find("recsys_last_training_status{", p + 1))
        ones += t.compare(t.find('}', p), 4, "} 1\n") == 0;
    EXPECT_EQ(ones, 1u);
    st.status = "succeeded";
    st.duration_seconds.reset();
    st.end_epoch.reset();
    t = render_model_status(st);
    EXPECT_NE(t.find("\nrecsys_last_training_success 1\n"), std::string::npos);
    EXPECT_EQ(t.find("recsys_last_training_duration_seconds"), std::string::npos);
    EXPECT_EQ(t.find("recsys_last_training_end_timestamp_seconds"), std::string::npos);
    // A status this build does not know is still reported, its label escaped.
    st.status = "odd\"one\\";
    t = render_model_status(st);
    EXPECT_NE(t.find("recsys_last_training_status{status=\"odd\\\"one\\\\\"} 1\n"), std::string::npos);
    // No active model: the id is -1 and there is no age.
    ModelStatus none;
    none.known = true;
    t = render_model_status(none);
    EXPECT_NE(t.find("\nrecsys_active_model_id -1\n"), std::string::npos);
    EXPECT_EQ(t.find("recsys_active_model_age_seconds"), std::string::npos);
    // render() appends it after the proxy's own metrics, and only when given.
    Metrics m;
    PoolGauges g{0, 0, 2, 1, 1, {{true, 0}}};
    EXPECT_EQ(m.render(g, 0, 12).find("recsys_active_model_id"), std::string::npos);
    EXPECT_NE(m.render(g, 0, 12, &st).find("\nrecsys_active_model_id 12\n"), std::string::npos);
}

// ----------------------------------------------------------------- config --

static const char* fake_env(const char* name) {
    std::string n = name;
    if (n == "RECSYS_LISTEN") return "0.0.0.0:9000";
    if (n == "RECSYS_DSN") return "host=a; host=b";
    if (n == "RECSYS_API_KEYS") return "x, y";
    if (n == "RECSYS_POOL_SIZE") return "3";
    return nullptr;
}
static const char* no_env(const char*) { return nullptr; }

TEST(Config, EnvThenFlags) {
    Config c;
    std::string msg;
    bool exit_now;
    const char* argv[] = {"p", "--pool-size", "7", "--cache-size=100", "--max-top-n", "50", nullptr};
    ASSERT_EQ(parse_config(6, const_cast<char**>(argv), c, msg, exit_now, &fake_env), 0) << msg;
    EXPECT_FALSE(exit_now);
    EXPECT_EQ(c.listen_host, "0.0.0.0");
    EXPECT_EQ(c.listen_port, 9000);
    EXPECT_EQ(c.dsns, (std::vector<std::string>{"host=a", "host=b"}));
    EXPECT_EQ(c.api_keys, (std::vector<std::string>{"x", "y"}));
    EXPECT_EQ(c.pool_size, 7);
    EXPECT_EQ(c.cache_size, 100u);
    EXPECT_EQ(c.limits.max_top_n, 50);
}

TEST(Config, RepeatedFlagsReplaceEnv) {
    Config c;
    std::string msg;
    bool exit_now;
    const char* argv[] = {"p", "--dsn", "host=c", "--dsn", "host=d", "--api-key", "z", nullptr};
    ASSERT_EQ(parse_config(7, const_cast<char**>(argv), c, msg, exit_now, &fake_env), 0);
    EXPECT_EQ(c.dsns, (std::vector<std::string>{"host=c", "host=d"}));
    EXPECT_EQ(c.api_keys, (std::vector<std::string>{"z"}));
}

TEST(Config, DefaultsHelpAndErrors) {
    Config c;
    std::string msg;
    bool exit_now;
    const char* a0[] = {"p", nullptr};
    ASSERT_EQ(parse_config(1, const_cast<char**>(a0), c, msg, exit_now, &no_env), 0);
    EXPECT_EQ(c.listen_port, 8000);
    EXPECT_EQ(c.listen_host, "127.0.0.1");
    EXPECT_EQ(c.dsns.size(), 1u);
    const char* a1[] = {"p", "--help", nullptr};
    Config c1;
    EXPECT_EQ(parse_config(2, const_cast<char**>(a1), c1, msg, exit_now, &no_env), 0);
    EXPECT_TRUE(exit_now);
    for (const char* f : {"--listen", "--dsn", "--pool-size", "--acquire-timeout", "--statement-timeout",
                          "--max-body-bytes", "--max-user-ids", "--max-top-n", "--api-key", "--cache-size",
                          "--cache-ttl", "RECSYS_LISTEN", "RECSYS_DSN", "RECSYS_API_KEYS"})
        EXPECT_NE(msg.find(f), std::string::npos) << f;
    const char* bad[][3] = {{"p", "--pool-size", "0"}, {"p", "--nope", "1"}, {"p", "--listen", "noport"},
                            {"p", "--threads", "x"}};
    for (auto& b : bad) {
        Config cb;
        EXPECT_EQ(parse_config(3, const_cast<char**>(b), cb, msg, exit_now, &no_env), 2) << b[1];
        EXPECT_TRUE(exit_now);
    }
}

// ------------------------------------------- the binary, database unreachable --

namespace {

int free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    int p = ntohs(a.sin_port);
    ::close(fd);
    return p;
}

struct HttpResult {
    int status = 0;
    std::string head, body;
};

// A connected socket (SO_RCVTIMEO 10 s), or -1.
int connect_to(int port) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(fd);
        return -1;
    }
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

HttpResult http(int port, const std::string& raw) {
    HttpResult r;
    int fd = connect_to(port);
    if (fd < 0) return r;
    std::size_t off = 0;
    while (off < raw.size()) {
        ssize_t n = ::send(fd, raw.data() + off, raw.size() - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += static_cast<std::size_t>(n);
    }
    std::string all;
    char buf[4096];
    while (true) {
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        all.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    auto sep = all.find("\r\n\r\n");
    if (sep == std::string::npos || all.size() < 12) return r;
    r.head = all.substr(0, sep);
    r.body = all.substr(sep + 4);
    r.status = std::atoi(all.c_str() + 9);
    return r;
}

// A connection the server holds as a session, idle: a keep-alive GET
// /healthz answered 200 and read whole; -1 if none after many tries.  At
// --max-connections a session of an earlier client may still be closing, so
// a connection refused with 503 is retried (and counted in *refused).
int held_session(int port, int* refused) {
    for (int tries = 0; tries < 200; ++tries) {
        int fd = connect_to(port);
        if (fd < 0) return -1;
        const std::string r = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        ::send(fd, r.data(), r.size(), MSG_NOSIGNAL);
        std::string all;
        std::size_t need = std::string::npos;
        char buf[1024];
        while (need == std::string::npos || all.size() < need) {
            ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n <= 0) break;
            all.append(buf, static_cast<std::size_t>(n));
            const auto sep = all.find("\r\n\r\n");
            const auto cl = all.find("Content-Length: ");
            if (need == std::string::npos && sep != std::string::npos && cl != std::string::npos && cl < sep)
                need = sep + 4 + static_cast<std::size_t>(std::atol(all.c_str() + cl + 16));
        }
        if (all.compare(0, 12, "HTTP/1.1 200") == 0 && need != std::string::npos && all.size() == need) return fd;
        if (all.compare(0, 12, "HTTP/1.1 503") == 0) ++*refused;
        ::close(fd);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
}

std::string req(const std::string& method, const std::string& path, const std::string& body = "",
                const std::string& extra = "") {
    std::string s = method + " " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra;
    if (method == "POST" && extra.find("Content-Type") == std::string::npos) s += "Content-Type: application/json\r\n";
    if (!body.empty() || method == "POST") s += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    return s + "\r\n" + body;
}

class ProxyProcess : public ::testing::Test {
protected:
    void SetUp() override {
        if (!std::getenv("RECSYS_PROXY_BIN")) GTEST_SKIP() << "RECSYS_PROXY_BIN not set";
        start({});
    }
    // (Re)starts the binary with the base flags plus `extra`.
    void start(const std::vector<std::string>& extra) {
        TearDown();
        const char* bin = std::getenv("RECSYS_PROXY_BIN");
        port_ = free_port();
        int dead = free_port();  // nothing listens there: the database is unreachable
        while (dead == port_) dead = free_port();  // (not the proxy's own port)
        std::vector<std::string> args = {bin, "--listen", "127.0.0.1:" + std::to_string(port_), "--dsn",
                                         "host=127.0.0.1 port=" + std::to_string(dead) + " dbname=x user=x",
                                         "--api-key", "k1,k2", "--max-body-bytes", "1000", "--max-user-ids", "5",
                                         "--max-top-n", "100", "--pool-size", "2", "--max-response-bytes", "20000"};
        args.insert(args.end(), extra.begin(), extra.end());
        pid_ = fork();
        if (pid_ == 0) {
            int devnull = ::open("/dev/null", O_WRONLY);
            if (devnull >= 0) dup2(devnull, 2);
            std::vector<char*> argv;
            for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
            argv.push_back(nullptr);
            execv(bin, argv.data());
            _exit(127);
        }
        for (int i = 0; i < 100; ++i) {
            if (http(port_, req("GET", "/healthz")).status == 200) return;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        FAIL() << "proxy did not start";
    }
    void TearDown() override {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        pid_ = -1;
    }
    int port_ = 0;
    pid_t pid_ = -1;
};

const std::string kAuth = "Authorization: Bearer k2\r\n";

}  // namespace

TEST_F(ProxyProcess, StatusCodesWithoutDatabase) {
    EXPECT_EQ(http(port_, req("GET", "/healthz")).status, 200);
    auto ready = http(port_, req("GET", "/readyz"));
    EXPECT_EQ(ready.status, 503);
    auto page = http(port_, req("GET", "/"));
    EXPECT_EQ(page.status, 200);
    EXPECT_NE(page.head.find("text/html"), std::string::npos);
    auto api = http(port_, req("GET", "/openapi.json"));
    EXPECT_EQ(api.status, 200);
    EXPECT_EQ(nlohmann::json::parse(api.body)["openapi"].get<std::string>().substr(0, 2), "3.");
    EXPECT_EQ(http(port_, req("GET", "/metrics")).status, 200);
    EXPECT_EQ(http(port_, req("GET", "/nope")).status, 404);

    const std::string ok = R"({"user_ids":[1,2],"top_n":5})";
    EXPECT_EQ(http(port_, req("POST", "/recommendations", ok)).status, 401);
    EXPECT_EQ(http(port_, req("POST", "/recommendations", ok, "X-API-Key: wrong\r\n")).status, 401);
    auto down = http(port_, req("POST", "/recommendations", ok, kAuth));
    EXPECT_EQ(down.status, 503);
    EXPECT_NE(down.head.find("Retry-After:"), std::string::npos);
    EXPECT_EQ(http(port_, req("POST", "/recommendations", ok, "X-API-Key: k1\r\n")).status, 503);
    auto j = nlohmann::json::parse(down.body);
    for (const char* k : {"code", "message", "details", "hint"}) EXPECT_TRUE(j.contains(k)) << k;

    EXPECT_EQ(http(port_, req("POST", "/recommendations", "{oops", kAuth)).status, 400);
    EXPECT_EQ(http(port_, req("POST", "/recommendations", R"({"user_ids":["a"]})", kAuth)).status, 400);
    EXPECT_EQ(http(port_, req("POST", "/recommendations", R"({"top_n":1})", kAuth)).status, 400);
    EXPECT_EQ(http(port_, req("POST", "/recommendations", R"({"user_ids":[]})", kAuth)).status, 422);
    EXPECT_EQ(http(port_, req("POST", "/recommendations", R"({"user_ids":[1,2,3,4,5,6]})", kAuth)).status, 422);
    EXPECT_EQ(http(port_, req("POST", "/recommendations", R"({"user_ids":[1],"top_n":101})", kAuth)).status, 422);
    std::string big = "{\"user_ids\":[1],\"pad\":\"" + std::string(2000, 'x') + "\"}";
    EXPECT_EQ(http(port_, req("POST", "/recommendations", big, kAuth)).status, 413);
    EXPECT_EQ(http(port_, req("GET", "/recommendations", "", kAuth)).status, 405);
    EXPECT_EQ(http(port_, req("GET", "/similar/abc", "", kAuth)).status, 400);
    EXPECT_EQ(http(port_, req("GET", "/similar/5?top_n=0", "", kAuth)).status, 422);
    EXPECT_EQ(http(port_, req("GET", "/similar/5?top_n=3", "", kAuth)).status, 503);
    EXPECT_EQ(http(port_, req("GET", "/users/5/history?limit=x", "", kAuth)).status, 400);
    EXPECT_EQ(http(port_, req("GET", "/models/active", "", kAuth)).status, 503);
    EXPECT_EQ(http(port_, req("GET", "/evaluations")).status, 401);
    // Garbage on the wire: 400 and the server keeps serving.
    EXPECT_EQ(http(port_, "NOT HTTP AT ALL\r\n\r\n").status, 400);
    EXPECT_EQ(http(port_, req("GET", "/healthz")).status, 200);
}

TEST_F(ProxyProcess, SigtermExitsZero) {
    ASSERT_EQ(::kill(pid_, SIGTERM), 0);
    int st = 0;
    for (int i = 0; i < 300; ++i) {
        if (::waitpid(pid_, &st, WNOHANG) == pid_) {
            pid_ = -1;
            EXPECT_TRUE(WIFEXITED(st));
            EXPECT_EQ(WEXITSTATUS(st), 0);
            return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL() << "proxy did not exit within 3 s of SIGTERM";
}

// A header's value in a raw response head ("" when absent), case-insensitive name.
static std::string header(const std::string& head, const std::string& name) {
    std::string h = "\r\n" + head, n = "\r\n" + name + ":";
    auto lower = [](std::string v) {
        for (auto& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        return v;
    };
    std::string lh = lower(h);
    auto p = lh.find(lower(n));
    if (p == std::string::npos) return "";
    p += n.size();
    auto e = h.find("\r\n", p);
    std::string v = h.substr(p, e == std::string::npos ? std::string::npos : e - p);
    while (!v.empty() && v.front() == ' ') v.erase(0, 1);
    return v;
}

TEST_F(ProxyProcess, HttpConventions) {
    const std::string ok = R"({"user_ids":[1,2],"top_n":5})";
    // POST needs application/json (415), parameters allowed; the database is down, so passing means 503.
    EXPECT_EQ(http(port_, req("POST", "/recommendations", ok, kAuth + "Content-Type: text/plain\r\n")).status, 415);
    std::string no_ct = "POST /recommendations HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + kAuth +
                        "Content-Length: " + std::to_string(ok.size()) + "\r\n\r\n" + ok;
    auto r415 = http(port_, no_ct);
    EXPECT_EQ(r415.status, 415);
    EXPECT_EQ(nlohmann::json::parse(r415.body)["code"], "PX415");
    EXPECT_EQ(http(port_, req("POST", "/recommendations", ok, kAuth + "Content-Type: Application/JSON; charset=utf-8\r\n"))
                  .status,
              503);
    // Unknown fields: 422.
    auto unk = http(port_, req("POST", "/recommendations", R"({"user_ids":[1],"top":5})", kAuth));
    EXPECT_EQ(unk.status, 422);
    EXPECT_EQ(nlohmann::json::parse(unk.body)["message"], "unknown field \"top\"");
    // A wrong Authorization header does not hide a valid X-API-Key (and the reverse).
    EXPECT_EQ(http(port_, req("POST", "/recommendations", ok, "Authorization: Bearer nope\r\nX-API-Key: k1\r\n")).status, 503);
    EXPECT_EQ(http(port_, req("POST", "/recommendations", ok, "Authorization: Basic Zm9v\r\nX-API-Key: k2\r\n")).status, 503);
    EXPECT_EQ(http(port_, req("POST", "/recommendations", ok, "Authorization: Bearer k1\r\nX-API-Key: nope\r\n")).status, 503);
    EXPECT_EQ(http(port_, req("POST", "/recommendations", ok, "Authorization: Bearer no\r\nX-API-Key: nope\r\n")).status, 401);
    // HEAD: the GET's status and headers, Content-Length included, no body.
    auto get = http(port_, req("GET", "/openapi.json"));
    auto head = http(port_, req("HEAD", "/openapi.json"));
    EXPECT_EQ(head.status, 200);
    EXPECT_EQ(header(head.head, "Content-Length"), std::to_string(get.body.size()));
    EXPECT_TRUE(head.body.empty());
    EXPECT_EQ(http(port_, req("HEAD", "/healthz")).status, 200);
    EXPECT_EQ(http(port_, req("HEAD", "/similar/5", "", kAuth)).status, 503);
    EXPECT_EQ(http(port_, req("HEAD", "/similar/5")).status, 401);
    auto h405 = http(port_, req("HEAD", "/recommendations", "", kAuth));
    EXPECT_EQ(h405.status, 405);
    EXPECT_EQ(header(h405.head, "Allow"), "POST, OPTIONS");
    auto g405 = http(port_, req("DELETE", "/similar/5", "", kAuth));
    EXPECT_EQ(g405.status, 405);
    EXPECT_EQ(header(g405.head, "Allow"), "GET, HEAD, OPTIONS");
    // OPTIONS without CORS configured: 204 with Allow; a preflight is refused (403), never 401.
    auto opt = http(port_, req("OPTIONS", "/recommendations"));
    EXPECT_EQ(opt.status, 204);
    EXPECT_EQ(header(opt.head, "Allow"), "POST, OPTIONS");
    auto pre = http(port_, req("OPTIONS", "/recommendations", "",
                               "Origin: https://evil.example\r\nAccess-Control-Request-Method: POST\r\n"));
    EXPECT_EQ(pre.status, 403);
    EXPECT_EQ(header(pre.head, "Access-Control-Allow-Origin"), "");
    EXPECT_EQ(http(port_, req("GET", "/healthz/")).status, 404);
    EXPECT_EQ(http(port_, req("GET", "/similar/")).status, 404);
    // Bounded responses: 2 users x top_n 100 with details come to ~28 kB > --max-response-bytes 20000.
    auto big = http(port_, req("POST", "/recommendations", R"({"user_ids":[1,2],"top_n":100,"details":true})", kAuth));
    EXPECT_EQ(big.status, 413);
    auto bj = nlohmann::json::parse(big.body);
    EXPECT_EQ(bj["code"], "PX413");
    EXPECT_NE(bj["details"].get<std::string>().find("20000"), std::string::npos);
    EXPECT_EQ(http(port_, req("POST", "/recommendations", R"({"user_ids":[1],"top_n":100,"details":true})", kAuth)).status,
              503);
    // The OpenAPI document shows this configuration.
    auto doc = nlohmann::json::parse(get.body);
    auto rq = doc["components"]["schemas"]["RecommendationsRequest"];
    EXPECT_EQ(rq["properties"]["user_ids"]["maxItems"], 5);
    EXPECT_EQ(rq["properties"]["top_n"]["maximum"], 100);
    EXPECT_EQ(rq["additionalProperties"], false);
    EXPECT_EQ(doc["x-recsys-proxy"]["max_response_bytes"], 20000);
    EXPECT_EQ(doc["x-recsys-proxy"]["max_body_bytes"], 1000);
    EXPECT_TRUE(doc["paths"]["/recommendations"]["post"].contains("security"));
    EXPECT_FALSE(doc["paths"]["/healthz"]["get"].contains("security"));
}

TEST_F(ProxyProcess, Cors) {
    start({"--cors-origin", "https://shop.example, http://localhost:3000"});
    auto pre = http(port_, req("OPTIONS", "/recommendations", "",
                               "Origin: https://shop.example\r\nAccess-Control-Request-Method: POST\r\n"
                               "Access-Control-Request-Headers: content-type, x-api-key\r\n"));
    EXPECT_EQ(pre.status, 204);
    EXPECT_EQ(header(pre.head, "Access-Control-Allow-Origin"), "https://shop.example");
    EXPECT_EQ(header(pre.head, "Access-Control-Allow-Methods"), "POST, OPTIONS");
    EXPECT_NE(header(pre.head, "Access-Control-Allow-Headers").find("X-API-Key"), std::string::npos);
    EXPECT_EQ(header(pre.head, "Vary"), "Origin");
    auto pre_get = http(port_, req("OPTIONS", "/similar/3", "",
                                   "Origin: http://localhost:3000\r\nAccess-Control-Request-Method: GET\r\n"));
    EXPECT_EQ(pre_get.status, 204);
    EXPECT_EQ(header(pre_get.head, "Access-Control-Allow-Methods"), "GET, HEAD, OPTIONS");
    // Actual requests carry the header for an allowed origin, errors included; others get none.
    auto h = http(port_, req("GET", "/healthz", "", "Origin: https://shop.example\r\n"));
    EXPECT_EQ(header(h.head, "Access-Control-Allow-Origin"), "https://shop.example");
    auto e = http(port_, req("POST", "/recommendations", "{}", "Origin: https://shop.example\r\n"));
    EXPECT_EQ(e.status, 401);
    EXPECT_EQ(header(e.head, "Access-Control-Allow-Origin"), "https://shop.example");
    EXPECT_EQ(header(http(port_, req("GET", "/healthz", "", "Origin: https://other.example\r\n")).head,
                     "Access-Control-Allow-Origin"),
              "");
    EXPECT_EQ(http(port_, req("OPTIONS", "/recommendations", "",
                              "Origin: https://other.example\r\nAccess-Control-Request-Method: POST\r\n"))
                  .status,
              403);
    start({"--cors-origin", "*"});
    auto any = http(port_, req("GET", "/healthz", "", "Origin: https://anyone.example\r\n"));
    EXPECT_EQ(header(any.head, "Access-Control-Allow-Origin"), "*");
}


TEST_F(ProxyProcess, MaxConnectionsAndIdleTimeout) {
    start({"--max-connections", "2", "--idle-timeout", "3"});
    // Two connections the server holds: start()'s readiness probe may still
    // be a session while it closes, and would make b the refused one.
    int refused = 0;
    int a = held_session(port_, &refused), b = held_session(port_, &refused);
    ASSERT_GE(a, 0);
    ASSERT_GE(b, 0);
    // A third connection is told 503 at once and closed.
    auto full = http(port_, req("GET", "/healthz"));
    EXPECT_EQ(full.status, 503);
    EXPECT_EQ(header(full.head, "Retry-After"), "1");
    EXPECT_EQ(nlohmann::json::parse(full.body)["message"], "too many connections");
    // The idle ones are closed by the server after --idle-timeout (recv returns 0, not the 10 s SO_RCVTIMEO).
    char c;
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(::recv(a, &c, 1, 0), 0);
    EXPECT_EQ(::recv(b, &c, 1, 0), 0);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(9));
    ::close(a);
    ::close(b);
    // Then there is room again.
    int ok = 0;
    for (int i = 0; i < 100 && ok != 200; ++i) {
        ok = http(port_, req("GET", "/healthz")).status;
        if (ok != 200) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_EQ(ok, 200);
    auto m = http(port_, req("GET", "/metrics")).body;
    EXPECT_NE(m.find("recsys_proxy_http_connections_refused_total " + std::to_string(1 + refused) + "\n"),
              std::string::npos);
}

TEST_F(ProxyProcess, BadFlagsExit2) {
    const char* bin = std::getenv("RECSYS_PROXY_BIN");
    const std::vector<std::vector<std::string>> bad = {
        {"--cors-origin", "shop.example"},   {"--cors-origin", "https://shop.example/path"},
        {"--max-connections", "-1"},         {"--max-response-bytes", "10"},
        {"--product-columns", "name,score"}, {"--product-columns", "a,a"},
        {"--product-id-column", ""},         {"--idle-timeout", "0"}};
    for (const auto& b : bad) {
        pid_t p = fork();
        if (p == 0) {
            int devnull = ::open("/dev/null", O_WRONLY);
            if (devnull >= 0) dup2(devnull, 2);
            execl(bin, bin, b[0].c_str(), b[1].c_str(), static_cast<char*>(nullptr));
            _exit(127);
        }
        int st = 0;
        ::waitpid(p, &st, 0);
        EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 2) << b[0] << " " << b[1];
    }
}

// ------------------------------------------------------- routes and config --

TEST(Routes, MatchPath) {
    std::vector<std::string> p;
    EXPECT_TRUE(match_path("/", "/", p));
    EXPECT_FALSE(match_path("/", "/x", p));
    EXPECT_TRUE(match_path("/users/{user_id}/history", "/users/10/history", p));
    EXPECT_EQ(p, (std::vector<std::string>{"10"}));
    p.clear();
    EXPECT_FALSE(match_path("/users/{user_id}/history", "/users//history", p));
    EXPECT_FALSE(match_path("/users/{user_id}/history", "/users/10/history/", p));
    EXPECT_FALSE(match_path("/users/{user_id}/history", "/users/10", p));
    EXPECT_FALSE(match_path("/similar/{product_id}", "/similar/5/x", p));
    EXPECT_TRUE(p.empty());  // a failed match adds nothing
    EXPECT_TRUE(match_path("/similar/{product_id}", "/similar/abc", p));
    EXPECT_EQ(p, (std::vector<std::string>{"abc"}));
    // Every table entry is reachable by its own pattern, and labels are unique with "other" last.
    for (const auto& r : route_table()) {
        std::string path = r.pattern;
        for (auto b = path.find('{'); b != std::string::npos; b = path.find('{')) path.replace(b, path.find('}') - b + 1, "7");
        std::vector<std::string> q;
        EXPECT_TRUE(match_path(r.pattern, path, q)) << r.pattern;
    }
    EXPECT_EQ(route_labels().back(), "other");
    EXPECT_EQ(static_cast<int>(route_labels().size()) - 1, other_route_label());
}

TEST(Routes, MediaTypeAndCors) {
    EXPECT_TRUE(is_json_media_type("application/json"));
    EXPECT_TRUE(is_json_media_type(" Application/JSON ; charset=utf-8"));
    EXPECT_FALSE(is_json_media_type("application/jsonx"));
    EXPECT_FALSE(is_json_media_type("text/plain"));
    EXPECT_FALSE(is_json_media_type(""));
    Config c;
    EXPECT_EQ(cors_allow_origin(c, "https://a.example"), "");
    c.cors_origins = {"https://a.example"};
    EXPECT_EQ(cors_allow_origin(c, "https://a.example"), "https://a.example");
    EXPECT_EQ(cors_allow_origin(c, "https://b.example"), "");
    EXPECT_EQ(cors_allow_origin(c, ""), "");
    c.cors_origins = {"*"};
    EXPECT_EQ(cors_allow_origin(c, "https://b.example"), "*");
}

TEST(Config, NewOptions) {
    Config c;
    std::string msg;
    bool exit_now;
    const char* argv[] = {"p", "--cors-origin", "https://shop.example/, *", "--products", "shop.\"Products\"",
                          "--product-id-column", "Sku", "--product-columns", "name, price",
                          "--max-connections", "100", "--max-response-bytes", "4096", nullptr};
    ASSERT_EQ(parse_config(13, const_cast<char**>(argv), c, msg, exit_now, &no_env), 0) << msg;
    EXPECT_EQ(c.cors_origins, (std::vector<std::string>{"https://shop.example", "*"}));
    EXPECT_EQ(c.products_relation, "shop.\"Products\"");
    EXPECT_EQ(c.product_id_column, "Sku");
    EXPECT_EQ(c.product_columns, (std::vector<std::string>{"name", "price"}));
    EXPECT_TRUE(c.products_explicit);
    EXPECT_EQ(c.max_connections, 100);
    EXPECT_EQ(c.max_response_bytes, 4096u);
    Config d;
    const char* a0[] = {"p", nullptr};
    ASSERT_EQ(parse_config(1, const_cast<char**>(a0), d, msg, exit_now, &no_env), 0);
    EXPECT_FALSE(d.products_explicit);
    EXPECT_EQ(d.products_relation, "products");
    EXPECT_EQ(d.product_columns, (std::vector<std::string>{"product_name", "category", "price"}));
    const char* off[] = {"p", "--products=", nullptr};
    Config e;
    ASSERT_EQ(parse_config(2, const_cast<char**>(off), e, msg, exit_now, &no_env), 0);
    EXPECT_TRUE(e.products_relation.empty());
    const char* bad[] = {"p", "--product-columns", "price,rank", nullptr};
    Config f;
    EXPECT_EQ(parse_config(3, const_cast<char**>(bad), f, msg, exit_now, &no_env), 2);
    EXPECT_NE(msg.find("'rank' is a field every item already has"), std::string::npos) << msg;
}

TEST(Db, ConnectParamsKeepOptionsAndApplicationName) {
    ::unsetenv("PGAPPNAME");
    ::unsetenv("PGOPTIONS");
    ::unsetenv("PGCONNECT_TIMEOUT");
    auto get = [](const ConnParams& p, const std::string& k) {
        for (std::size_t i = 0; i < p.keys.size(); ++i)
            if (p.keys[i] == k) return p.values[i];
        return std::string("<absent>");
    };
    auto p = connect_params("host=h dbname=d application_name=shopapp options='-c search_path=app,public'", 1500, 2500);
    EXPECT_TRUE(p.error.empty());
    EXPECT_EQ(get(p, "application_name"), "shopapp");
    EXPECT_EQ(get(p, "options"),
              "-c search_path=app,public -c statement_timeout=1500 -c DateStyle=ISO,YMD -c extra_float_digits=1");
    EXPECT_EQ(get(p, "connect_timeout"), "3");
    auto u = connect_params("postgresql://u@h/d?application_name=uri-app&connect_timeout=7", 5000, 2000);
    EXPECT_EQ(get(u, "application_name"), "uri-app");
    EXPECT_EQ(get(u, "connect_timeout"), "<absent>");  // the DSN's own wins
    EXPECT_EQ(get(u, "options"), "-c statement_timeout=5000 -c DateStyle=ISO,YMD -c extra_float_digits=1");
    auto e = connect_params("", 5000, 2000);
    EXPECT_EQ(get(e, "dbname"), "<absent>");
    EXPECT_EQ(get(e, "application_name"), "recsys-proxy");
    ::setenv("PGAPPNAME", "from-env", 1);
    ::setenv("PGOPTIONS", "-c work_mem=8MB", 1);
    auto v = connect_params("", 5000, 2000);
    EXPECT_EQ(get(v, "application_name"), "from-env");
    EXPECT_EQ(get(v, "options").rfind("-c work_mem=8MB -c statement_timeout=5000", 0), 0u);
    ::unsetenv("PGAPPNAME");
    ::unsetenv("PGOPTIONS");
    EXPECT_FALSE(connect_params("host='unterminated", 5000, 2000).error.empty());
}

TEST(Db, StatementsQuoteTheProductRelation) {
    ProductSql off;
    EXPECT_EQ(stmt_sql(Stmt::RecommendDetails, off), stmt_sql(Stmt::Recommend, off));
    EXPECT_EQ(stmt_sql(Stmt::SimilarDetails, off).find("JOIN"), std::string::npos);
    ProductSql on{true, "\"Shop\".\"My Products\"", "\"Sku\"", "'name', p.name"};
    std::string r = stmt_sql(Stmt::RecommendDetails, on);
    EXPECT_NE(r.find("LEFT JOIN \"Shop\".\"My Products\" p ON p.\"Sku\" = r.product_id"), std::string::npos) << r;
    EXPECT_NE(r.find("json_build_object('name', p.name)::text"), std::string::npos) << r;
    EXPECT_NE(stmt_sql(Stmt::HistoryDetails, on).find("p.\"Sku\" = h.product_id"), std::string::npos);
    EXPECT_NE(stmt_sql(Stmt::SimilarDetails, on).find("'rank', s.rank, 'name', p.name)"), std::string::npos);
}

TEST(OpenApi, FollowsTheConfiguration) {
    Config c;
    c.limits.max_user_ids = 7;
    c.limits.max_top_n = 33;
    c.limits.default_top_n = 4;
    c.max_response_bytes = 12345;
    c.product_columns = {"name", "stock"};
    auto d = nlohmann::json::parse(openapi_document(std::string_view(kOpenApiJson, kOpenApiJsonLen), c));
    EXPECT_EQ(d["components"]["schemas"]["RecommendationsRequest"]["properties"]["user_ids"]["maxItems"], 7);
    EXPECT_EQ(d["components"]["schemas"]["RecommendationsRequest"]["properties"]["top_n"]["default"], 4);
    auto sim = d["paths"]["/similar/{product_id}"]["get"]["parameters"];
    bool seen = false;
    for (auto& p : sim)
        if (p["name"] == "top_n") {
            EXPECT_EQ(p["schema"]["maximum"], 33);
            seen = true;
        }
    EXPECT_TRUE(seen);
    auto item = d["components"]["schemas"]["RecommendedItem"]["properties"];
    EXPECT_TRUE(item.contains("name") && item.contains("stock"));
    EXPECT_FALSE(item.contains("product_name"));
    // No --api-key: no route asks for security.
    for (auto& [path, ops] : d["paths"].items())
        for (auto& [m, op] : ops.items()) EXPECT_FALSE(op.contains("security")) << path << " " << m;
    EXPECT_FALSE(d["components"].contains("securitySchemes"));
    c.api_keys = {"k"};
    auto s = nlohmann::json::parse(openapi_document(std::string_view(kOpenApiJson, kOpenApiJsonLen), c));
    EXPECT_TRUE(s["paths"]["/recommendations"]["post"].contains("security"));
    EXPECT_EQ(s["x-recsys-proxy"]["max_response_bytes"], 12345);
}

TEST(Cache, ModelIdIsPartOfTheKey) {
    LruCache c(10, std::chrono::milliseconds(100000));
    c.put(CacheKey{1, "5", 10, false}, "[1,2]");
    std::string v;
    EXPECT_FALSE(c.get(CacheKey{2, "5", 10, false}, v));
    c.put(CacheKey{2, "5", 10, false}, "[3]");
    ASSERT_TRUE(c.get(CacheKey{1, "5", 10, false}, v));
    EXPECT_EQ(v, "[1,2]");
    ASSERT_TRUE(c.get(CacheKey{2, "5", 10, false}, v));
    EXPECT_EQ(v, "[3]");
}

// ---------------------------------------------------------------- id types --

static int idt(std::string_view s, IdType t, std::string& out) {
    std::string why;
    return parse_id_text(s, t, out, why);
}

TEST(IdTypes, TextForms) {
    std::string o;
    EXPECT_EQ(idt("42", IdType::Integer, o), 0);
    EXPECT_EQ(o, "42");
    EXPECT_EQ(idt("-2147483648", IdType::Integer, o), 0);
    EXPECT_EQ(idt("2147483648", IdType::Integer, o), 422);
    EXPECT_EQ(idt("2147483648", IdType::Bigint, o), 0);
    EXPECT_EQ(idt("9223372036854775807", IdType::Bigint, o), 0);
    EXPECT_EQ(idt("-9223372036854775808", IdType::Bigint, o), 0);
    EXPECT_EQ(idt("9223372036854775808", IdType::Bigint, o), 422);
    EXPECT_EQ(idt("123456789012345678901234567890", IdType::Bigint, o), 422);
    for (const char* bad : {"", "-", "+1", " 1", "1 ", "01", "-0", "1e3", "0x10", "1.0", "abc"})
        EXPECT_EQ(idt(bad, IdType::Bigint, o), 400) << bad;
    EXPECT_EQ(idt("0", IdType::Integer, o), 0);
    EXPECT_EQ(idt("SKU-1 \"x\"", IdType::Text, o), 0);
    EXPECT_EQ(o, "SKU-1 \"x\"");
    EXPECT_EQ(idt("", IdType::Text, o), 422);
    EXPECT_EQ(idt(std::string("a\0b", 3), IdType::Text, o), 422);
    EXPECT_EQ(idt(std::string(kMaxTextIdBytes, 'x'), IdType::Text, o), 0);
    EXPECT_EQ(idt(std::string(kMaxTextIdBytes + 1, 'x'), IdType::Text, o), 422);
    EXPECT_EQ(idt("\xc3\xa9t\xc3\xa9", IdType::Text, o), 0);  // été
    for (const char* bad : {"\xff", "\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80"})
        EXPECT_EQ(idt(bad, IdType::Text, o), 422) << bad;
    EXPECT_EQ(idt("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", IdType::Uuid, o), 0);
    EXPECT_EQ(o, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    for (const char* bad : {"a0eebc999c0b4ef8bb6d6bb9bd380a11", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
                            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1", "x"})
        EXPECT_EQ(idt(bad, IdType::Uuid, o), 400) << bad;
    IdType t;
    EXPECT_TRUE(id_type_from_sql("character varying", t) && t == IdType::Text);
    EXPECT_TRUE(id_type_from_sql("smallint", t) && t == IdType::Integer);
    EXPECT_FALSE(id_type_from_sql("numeric", t));
    std::string j;
    append_json_id(j, IdType::Bigint, "9000000010");
    append_json_id(j, IdType::Text, "a\"b");
    EXPECT_EQ(j, R"(9000000010"a\"b")");
}

TEST(IdTypes, RequestsFollowTheTypes) {
    Limits lim;
    RecRequest r;
    ApiError e;
    const IdTypes bt{IdType::Bigint, IdType::Text}, ub{IdType::Uuid, IdType::Bigint};
    ASSERT_TRUE(parse_rec_request(R"({"user_ids":[9000000010,"9000000011",9000000010],"include_items":["A",7]})", lim,
                                  r, e, bt)) << e.message;
    EXPECT_EQ(r.user_ids, (std::vector<std::string>{"9000000010", "9000000011"}));
    EXPECT_TRUE(r.include_items.given);
    EXPECT_EQ(r.include_items.ids, (std::vector<std::string>{"A", "7"}));  // an integer taken as its text
    EXPECT_FALSE(r.exclude_items.given);
    EXPECT_TRUE(r.filtered());
    EXPECT_FALSE(parse_rec_request(R"({"user_ids":[9223372036854775808]})", lim, r, e, bt));
    EXPECT_EQ(e.status, 422);
    EXPECT_FALSE(parse_rec_request(R"({"user_ids":[1],"include_items":[""]})", lim, r, e, bt));
    EXPECT_EQ(e.status, 422);
    EXPECT_FALSE(parse_rec_request(R"({"user_ids":[1],"include_items":[1.5]})", lim, r, e, bt));
    EXPECT_EQ(e.status, 400);
    ASSERT_TRUE(parse_rec_request(R"({"user_ids":["A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"],"exclude_items":["5"],)"
                                  R"("exclude_seen":false})", lim, r, e, ub)) << e.message;
    EXPECT_EQ(r.user_ids[0], "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    EXPECT_EQ(r.exclude_seen, 0);
    EXPECT_EQ(r.exclude_items.ids, (std::vector<std::string>{"5"}));
    EXPECT_FALSE(parse_rec_request(R"({"user_ids":[1]})", lim, r, e, ub));  // a uuid must be a string
    EXPECT_EQ(e.status, 400);
    EXPECT_NE(e.hint.find("uuid"), std::string::npos) << e.hint;
    // Type errors (400) come before range errors (422) wherever they are.
    EXPECT_FALSE(parse_rec_request(R"({"user_ids":[],"exclude_seen":"no"})", lim, r, e));
    EXPECT_EQ(e.status, 400);
}

TEST(IdTypes, FiltersAndExcludeSeen) {
    Limits lim;
    lim.max_filter_items = 3;
    RecRequest r;
    ApiError e;
    ASSERT_TRUE(parse_rec_request(R"({"user_ids":[1],"include_items":[],"exclude_items":[1,2,3]})", lim, r, e));
    EXPECT_TRUE(r.include_items.given && r.include_items.ids.empty());  // nothing allowed: an empty answer
    EXPECT_EQ(r.exclude_seen, -1);
    struct Case {
        const char* body;
        int status;
    };
    for (const Case& c : {Case{R"({"user_ids":[1],"include_items":[1,2,3,4]})", 422},
                          Case{R"({"user_ids":[1],"exclude_items":[2147483648]})", 422},
                          Case{R"({"user_ids":[1],"include_items":"1,2"})", 400},
                          Case{R"({"user_ids":[1],"include_items":null})", 400},
                          Case{R"({"user_ids":[1],"exclude_items":[null]})", 400},
                          Case{R"({"user_ids":[1],"exclude_seen":1})", 400},
                          Case{R"({"user_ids":[1],"exclude_seen":null})", 400},
                          Case{R"({"user_ids":[1],"include":[1]})", 422}}) {
        EXPECT_FALSE(parse_rec_request(c.body, lim, r, e)) << c.body;
        EXPECT_EQ(e.status, c.status) << c.body << " " << e.message;
    }
    ASSERT_FALSE(parse_rec_request(R"({"user_ids":[1],"include_items":[1,2,3,4]})", lim, r, e));
    EXPECT_NE(e.details.find("--max-filter-items"), std::string::npos) << e.details;
}

TEST(IdTypes, BasketRequests) {
    Limits lim;
    lim.max_user_ids = 3;
    ItemsRequest r;
    ApiError e;
    ASSERT_TRUE(parse_items_request(R"({"item_ids":[5,"7"],"weights":[1,0.5],"top_n":4,"exclude_items":[9]})", lim, r, e))
        << e.message;
    EXPECT_EQ(r.item_ids, (std::vector<std::string>{"5", "7"}));
    EXPECT_TRUE(r.has_weights);
    EXPECT_EQ(r.weights, (std::vector<double>{1, 0.5}));
    EXPECT_EQ(r.top_n, 4);
    EXPECT_EQ(float_array_literal(r.weights), "{1,0.5}");
    struct Case {
        const char* body;
        int status;
    };
    for (const Case& c : {Case{R"({"top_n":3})", 400}, Case{R"({"item_ids":5})", 400},
                          Case{R"({"item_ids":[]})", 422}, Case{R"({"item_ids":[1,2,3,4]})", 422},
                          Case{R"({"item_ids":[1],"weights":[1,2]})", 422}, Case{R"({"item_ids":[1],"weights":["1"]})", 400},
                          Case{R"({"item_ids":[1],"weights":1})", 400}, Case{R"({"item_ids":[1],"top_n":0})", 422},
                          Case{R"({"item_ids":[1],"user_ids":[1]})", 422}, Case{R"({"item_ids":[1],"details":1})", 400},
                          Case{R"({"item_ids":[1],"include_items":[true]})", 400}}) {
        EXPECT_FALSE(parse_items_request(c.body, lim, r, e)) << c.body;
        EXPECT_EQ(e.status, c.status) << c.body << " " << e.message;
    }
}

TEST(IdTypes, ExplainRequests) {
    ExplainRequest r;
    ApiError e;
    const IdTypes ut{IdType::Uuid, IdType::Text};
    ASSERT_TRUE(parse_explain_request(R"({"user_id":"A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11","product_id":"SKU 1"})", r, e, ut));
    EXPECT_EQ(r.user_id, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    EXPECT_EQ(r.product_id, "SKU 1");
    struct Case {
        const char* body;
        int status;
    };
    for (const Case& c : {Case{R"({"user_id":1})", 400}, Case{R"({"product_id":1})", 400},
                          Case{R"({"user_id":1,"product_id":2,"x":1})", 422},
                          Case{R"({"user_id":[1],"product_id":2})", 400},
                          Case{R"({"user_id":1,"product_id":2147483648})", 422}}) {
        EXPECT_FALSE(parse_explain_request(c.body, r, e)) << c.body;
        EXPECT_EQ(e.status, c.status) << c.body << " " << e.message;
    }
    EXPECT_FALSE(parse_explain_request(R"({"user_id":"x","product_id":""})", r, e, ut));
    EXPECT_EQ(e.status, 400);  // "x" is no uuid
}

TEST(IdTypes, ArrayLiteralsArePostgresArrays) {
    EXPECT_EQ(array_literal({}), "{}");
    EXPECT_EQ(array_literal({"1", "NULL", "a\"b", "c\\d", "{e,f}", " g "}),
              R"({"1","NULL","a\"b","c\\d","{e,f}"," g "})");
    std::string out;
    EXPECT_TRUE(percent_decode("SKU%201%2Fb", out));
    EXPECT_EQ(out, "SKU 1/b");
    EXPECT_FALSE(percent_decode("a%2", out));
    EXPECT_FALSE(percent_decode("a%zz", out));
    EXPECT_FALSE(percent_decode("a%00", out));
}

TEST(IdTypes, FormatTextItemsAndKeys) {
    RecRequest req;
    req.types = IdTypes{IdType::Text, IdType::Uuid};
    req.user_ids = {"b\"1", "a"};
    VectorRows rows(5, {"a", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "0.5", "1", "cf",  //
                        "b\"1", "00000000-0000-0000-0000-000000000001", "0.2", "1", "popular"});
    std::string out;
    ApiError e;
    ASSERT_TRUE(format_recommendations(req, rows, out, e)) << e.message;
    EXPECT_EQ(out, R"({"results":{"b\"1":["00000000-0000-0000-0000-000000000001"],"a":["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]}})");
    req.details = true;
    ASSERT_TRUE(format_recommendations(req, rows, out, e));
    auto j = nlohmann::json::parse(out);
    EXPECT_EQ(j["results"]["a"][0]["product_id"], "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    std::vector<std::string> frags;
    ASSERT_TRUE(format_user_fragments(req.user_ids, false, IdType::Uuid, rows, frags, e));
    EXPECT_EQ(assemble_results(req.user_ids, frags), R"({"results":{"b\"1":["00000000-0000-0000-0000-000000000001"],"a":["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]}})");
}

TEST(IdTypes, StatementsCastToTheTypes) {
    ProductSql off;
    const IdTypes bt{IdType::Bigint, IdType::Text};
    EXPECT_EQ(stmt_sql(Stmt::Recommend, off), "SELECT user_id, product_id, score, rank, source FROM recsys_recommend($1::integer[], $2)");
    EXPECT_NE(stmt_sql(Stmt::Recommend, off, bt).find("recsys_recommend($1::bigint[], $2)"), std::string::npos);
    EXPECT_NE(stmt_sql(Stmt::RecommendSeen, off, bt).find("recsys_recommend($1::bigint[], $2, $3::boolean)"), std::string::npos);
    EXPECT_NE(stmt_sql(Stmt::RecommendFiltered, off, bt).find("($1::bigint[], $2, $3::boolean, $4::text[], $5::text[])"),
              std::string::npos);
    EXPECT_NE(stmt_sql(Stmt::SimilarDetails, off, bt).find("recsys_similar_items($1::text, $2::int)"), std::string::npos);
    EXPECT_NE(stmt_sql(Stmt::HistoryDetails, off, bt).find("recsys_user_history($1::bigint, $2::int)"), std::string::npos);
    EXPECT_NE(stmt_sql(Stmt::ItemsRecommend, off, bt).find("recsys_recommend_for_items($1::text[], $2::integer, $3::float8[], $4::text[], $5::text[])"),
              std::string::npos);
    EXPECT_NE(stmt_sql(Stmt::Explain, off, bt).find("recsys_explain($1::bigint, $2::text)"), std::string::npos);
    ProductSql on{true, "\"shop\".\"items\"", "\"sku\"", "'name', p.\"name\""};
    EXPECT_NE(stmt_sql(Stmt::Explain, on, bt).find("p.\"sku\" = e.history_item"), std::string::npos);
    EXPECT_NE(stmt_sql(Stmt::ItemsRecommendDetails, on, bt).find("p.\"sku\" = r.product_id"), std::string::npos);
    IdTypes t;
    VectorRows types(2, {"bigint", "character varying"});
    ASSERT_TRUE(read_id_types(types, t));
    EXPECT_TRUE(t == (IdTypes{IdType::Bigint, IdType::Text}));
    VectorRows absent(2, {N, N});
    EXPECT_FALSE(read_id_types(absent, t));
}

TEST(OpenApi, NewRoutesTypesAndLimits) {
    Config c;
    c.limits.max_filter_items = 77;
    c.limits.max_user_ids = 9;
    c.limits.max_top_n = 33;
    auto d = nlohmann::json::parse(
        openapi_document(std::string_view(kOpenApiJson, kOpenApiJsonLen), c, IdTypes{IdType::Uuid, IdType::Bigint}));
    EXPECT_TRUE(d["paths"].contains("/recommendations/items"));
    EXPECT_TRUE(d["paths"].contains("/explanations"));
    auto& sc = d["components"]["schemas"];
    EXPECT_EQ(sc["RecommendationsRequest"]["properties"]["include_items"]["maxItems"], 77);
    EXPECT_EQ(sc["RecommendationsRequest"]["properties"]["exclude_items"]["maxItems"], 77);
    EXPECT_TRUE(sc["RecommendationsRequest"]["properties"].contains("exclude_seen"));
    EXPECT_EQ(sc["ItemsRequest"]["properties"]["item_ids"]["maxItems"], 9);
    EXPECT_EQ(sc["ItemsRequest"]["properties"]["top_n"]["maximum"], 33);
    EXPECT_EQ(sc["UserId"]["format"], "uuid");
    EXPECT_EQ(sc["ItemId"]["oneOf"][0]["format"], "int64");
    EXPECT_EQ(d["x-recsys-proxy"]["user_type"], "uuid");
    EXPECT_EQ(d["x-recsys-proxy"]["item_type"], "bigint");
    EXPECT_EQ(d["x-recsys-proxy"]["max_filter_items"], 77);
    EXPECT_NE(d["paths"]["/explanations"]["post"]["description"].get<std::string>().find("501"), std::string::npos);
}

// The answer's head server.cpp writes (response_head) against Beast's
// serializer for the same message, built as server.cpp built it before.
TEST(ResponseHead, SameAsBeastSerializer) {
    namespace http = boost::beast::http;
    auto beast_head = [](const Reply& r, const std::string& acao, bool ka, std::size_t bytes, bool head_request) {
        http::response<http::string_body> res;
        res.version(11);
        res.result(static_cast<unsigned>(r.status));
        res.set(http::field::server, "recsys-proxy");
        if (!r.content_type.empty()) res.set(http::field::content_type, r.content_type);
        if (r.retry_after > 0) res.set(http::field::retry_after, std::to_string(r.retry_after));
        if (!r.allow.empty()) res.set(http::field::allow, r.allow);
        if (r.www_authenticate) res.set(http::field::www_authenticate, "Bearer");
        if (r.content_type.rfind("application/json", 0) == 0) res.set(http::field::cache_control, "no-store");
        if (!acao.empty()) {
            res.set(http::field::access_control_allow_origin, acao);
            res.set(http::field::access_control_expose_headers, "Retry-After");
            if (acao != "*") res.set(http::field::vary, "Origin");
        }
        for (auto& [k, v] : r.headers) res.set(k, v);
        res.keep_alive(ka);
        res.body() = std::string(bytes, 'x');
        res.prepare_payload();
        if (head_request) {
            res.body().clear();
            res.content_length(bytes);
        }
        std::ostringstream os;
        os << res.base();
        return os.str();
    };
    std::vector<Reply> replies;
    replies.push_back(json_ok("{\"results\":{}}"));
    replies.push_back(error_reply(make_error(503, "PX503", "the database is unavailable")));  // Retry-After
    Reply html;
    html.content_type = "text/html; charset=utf-8";
    html.body = "<p>x</p>";
    replies.push_back(html);
    Reply unauth = error_reply(make_error(401, "PX401", "missing or invalid API key"));
    unauth.www_authenticate = true;
    replies.push_back(unauth);
    Reply options;  // a CORS preflight: 204 (Beast wrote Content-Length: 0 on it too)
    options.status = 204;
    options.allow = "GET, POST, OPTIONS";
    options.content_type.clear();
    options.headers = {{"Access-Control-Allow-Methods", "GET, POST, OPTIONS"}, {"Access-Control-Max-Age", "600"}};
    replies.push_back(options);
    Reply replaced = json_ok("{}");  // a header of r.headers replaces a field of its name (any case)
    replaced.headers = {{"cache-control", "max-age=5"}, {"X-Extra", "1"}};
    replies.push_back(replaced);
    Reply teapot = error_reply(make_error(413, "PX413", "request body too large"));
    teapot.close = true;
    replies.push_back(teapot);
    int compared = 0;
    for (const Reply& r : replies)
        for (const std::string acao : {"", "*", "https://shop.example"})
            for (bool ka : {true, false})
                for (bool head_request : {false, true}) {
                    const std::size_t bytes = r.status == 204 ? 0 : r.body.size();
                    EXPECT_EQ(response_head(r, acao, ka, bytes), beast_head(r, acao, ka, bytes, head_request))
                        << r.status << " acao=" << acao << " ka=" << ka;
                    ++compared;
                }
    EXPECT_EQ(compared, 7 * 3 * 2 * 2);
    // And by hand, one answer in full.
    EXPECT_EQ(response_head(json_ok("{}"), "", false, 2),
              "HTTP/1.1 200 OK\r\nServer: recsys-proxy\r\nContent-Type: application/json\r\n"
              "Cache-Control: no-store\r\nConnection: close\r\nContent-Length: 2\r\n\r\n");
}
