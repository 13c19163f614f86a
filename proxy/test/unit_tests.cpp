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

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "api.hpp"
#include "cache.hpp"
#include "config.hpp"
#include "metrics.hpp"

using namespace rsproxy;

// ------------------------------------------------------------ request body --

static bool parse(const std::string& body, RecRequest& r, ApiError& e, Limits lim = {}) {
    return parse_rec_request(body, lim, r, e);
}

TEST(ParseRequest, Valid) {
    RecRequest r;
    ApiError e;
    ASSERT_TRUE(parse(R"({"user_ids":[10,25,42],"top_n":5})", r, e));
    EXPECT_EQ(r.user_ids, (std::vector<int32_t>{10, 25, 42}));
    EXPECT_EQ(r.top_n, 5);
    EXPECT_FALSE(r.details);
}

TEST(ParseRequest, DefaultsDetailsAndDuplicates) {
    RecRequest r;
    ApiError e;
    ASSERT_TRUE(parse(R"({"user_ids":[7,-3,7,0],"details":true,"extra":"ignored"})", r, e));
    EXPECT_EQ(r.user_ids, (std::vector<int32_t>{7, -3, 0}));
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
        R"({"user_ids":["1"]})",                   // string
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
    EXPECT_TRUE(ok);  // unknown fields are ignored, however deep
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
                 {"08001", 503}, {"57P01", 503}, {"XX000", 500}, {"42601", 500}, {"P0001", 400},
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
    EXPECT_EQ(presented_key("Bearer abc", ""), "abc");
    EXPECT_EQ(presented_key("bearer  abc ", ""), "abc");
    EXPECT_EQ(presented_key("", "xyz"), "xyz");
    EXPECT_EQ(presented_key("Basic Zm9v", "xyz"), "xyz");
    EXPECT_EQ(presented_key("", ""), "");
}

// ------------------------------------------------------------- formatting --

static const std::string N = "\x01NULL";

TEST(Format, PlainInRequestOrderAndRankOrder) {
    RecRequest req;
    req.user_ids = {42, 10, 25};
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
    req.user_ids = {1};
    req.details = true;
    VectorRows with(8, {"1", "5", "0.25", "1", "cf", "Lamp \"X\"", "home", "19.99",  //
                        "1", "6", "NaN", "2", "popular", N, N, N});
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
    VectorRows without(5, {"1", "5", "0.25", "1", "cf"});
    ASSERT_TRUE(format_recommendations(req, without, out, e));
    auto k = nlohmann::json::parse(out)["results"]["1"][0];
    EXPECT_EQ(k.size(), 4u);
    EXPECT_FALSE(k.contains("product_name"));
}

TEST(Format, MalformedRowsAre500) {
    RecRequest req;
    req.user_ids = {1};
    std::string out;
    ApiError e;
    VectorRows narrow(2, {"1", "2"});
    EXPECT_FALSE(format_recommendations(req, narrow, out, e));
    EXPECT_EQ(e.status, 500);
    VectorRows garbage(5, {"x", "2", "1", "1", "cf"});
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
    c.put({1, 10, 5, false}, "[1]", t0);
    c.put({1, 11, 5, false}, "[2]", t0);
    ASSERT_TRUE(c.get({1, 10, 5, false}, v, t0));  // 10 becomes most recent
    EXPECT_EQ(v, "[1]");
    c.put({1, 12, 5, false}, "[3]", t0);  // evicts 11
    EXPECT_FALSE(c.get({1, 11, 5, false}, v, t0));
    EXPECT_TRUE(c.get({1, 12, 5, false}, v, t0));
    EXPECT_FALSE(c.get({1, 12, 6, false}, v, t0));  // other top_n
    EXPECT_FALSE(c.get({1, 12, 5, true}, v, t0));   // other details flag
    EXPECT_FALSE(c.get({2, 12, 5, false}, v, t0));  // other model
    EXPECT_FALSE(c.get({1, 10, 5, false}, v, t0 + milliseconds(101)));  // expired
    c.put({2, 12, 5, false}, "[9]", t0);
    c.retain_model(2);
    EXPECT_EQ(c.size(), 1u);
    EXPECT_TRUE(c.get({2, 12, 5, false}, v, t0));
    LruCache off(0, milliseconds(100));
    off.put({1, 1, 1, false}, "x");
    EXPECT_FALSE(off.get({1, 1, 1, false}, v));
}

// ---------------------------------------------------------------- metrics --

TEST(Metrics, RenderPrometheus) {
    Metrics m;
    m.observe(Route::Recommendations, 200, 0.002);
    m.observe(Route::Recommendations, 200, 0.2);
    m.observe(Route::Recommendations, 503, 0.0001);
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

HttpResult http(int port, const std::string& raw) {
    HttpResult r;
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(fd);
        return r;
    }
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
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

std::string req(const std::string& method, const std::string& path, const std::string& body = "",
                const std::string& extra = "") {
    std::string s = method + " " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra;
    if (!body.empty() || method == "POST") s += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    return s + "\r\n" + body;
}

class ProxyProcess : public ::testing::Test {
protected:
    void SetUp() override {
        const char* bin = std::getenv("RECSYS_PROXY_BIN");
        if (!bin) GTEST_SKIP() << "RECSYS_PROXY_BIN not set";
        port_ = free_port();
        int dead = free_port();  // nothing listens there: the database is unreachable
        std::string listen = "127.0.0.1:" + std::to_string(port_);
        std::string dsn = "host=127.0.0.1 port=" + std::to_string(dead) + " dbname=x user=x";
        pid_ = fork();
        if (pid_ == 0) {
            int devnull = ::open("/dev/null", O_WRONLY);
            if (devnull >= 0) dup2(devnull, 2);
            execl(bin, bin, "--listen", listen.c_str(), "--dsn", dsn.c_str(), "--api-key", "k1,k2",
                  "--max-body-bytes", "1000", "--max-user-ids", "5", "--max-top-n", "100", "--pool-size", "2",
                  static_cast<char*>(nullptr));
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
