// pg_tune.cpp - model settings from SQL, and recsys.tune_core(): the C++ half
// of recsys_tune().
//
// tune_core reads one time split of the events relation once (the cells
// before the cutoff, the touches after it) and evaluates every candidate
// setting on that in-memory matrix (core_tune.hpp), reporting each trial as
// a NOTICE as it ends.  Nothing is written: recsys_tune() records the trials.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core_tune.hpp"
#include "pg_fetch.hpp"
#include "pg_limits.hpp"
#include "pg_progress.hpp"
#include "pg_read.hpp"
#include "pg_tune.hpp"

extern "C" {
#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(recsys_resolve_settings);
PG_FUNCTION_INFO_V1(recsys_tune_grid);
PG_FUNCTION_INFO_V1(recsys_tune_core);
}

// Longest settings JSON the core writes (every key, 15-digit numbers).
#define SETTINGS_JSON_MAX 512

// A key's value in a jsonb object; false when absent or JSON null.
static bool settings_key(JsonbContainer* c, const char* key, JsonbValue* out)
{
    JsonbValue k;
    k.type = jbvString;
    k.val.string.val = (char*) key;
    k.val.string.len = (int) strlen(key);
    JsonbValue* v = findJsonbValueFromContainer(c, JB_FOBJECT, &k);
    if (v == NULL || v->type == jbvNull)
        return false;
    *out = *v;
    return true;
}

static void settings_name(JsonbContainer* c, const char* key, const char* whose, char* dst, size_t cap)
{
    JsonbValue v;
    dst[0] = '\0';
    if (!settings_key(c, key, &v))
        return;
    if (v.type != jbvString)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("%s: setting \"%s\" must be a string", whose, key),
                        errhint("See docs/sql.md, \"Model settings\", for the accepted names.")));
    if ((size_t) v.val.string.len >= cap || memchr(v.val.string.val, '\0', v.val.string.len) != NULL)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("%s: unknown %s \"%.*s\"", whose, key, Min(v.val.string.len, 60), v.val.string.val)));
    memcpy(dst, v.val.string.val, v.val.string.len);
    dst[v.val.string.len] = '\0';
}

static bool settings_number(JsonbContainer* c, const char* key, const char* whose, double* dst)
{
    JsonbValue v;
    if (!settings_key(c, key, &v))
        return false;
    if (v.type != jbvNumeric)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("%s: setting \"%s\" must be a number", whose, key)));
    *dst = DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(v.val.numeric)));
    return true;
}

static void settings_from_container(JsonbContainer* c, const char* whose, ModelSettings* out)
{
    memset(out, 0, sizeof *out);
    if (!JsonContainerIsObject(c))
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("%s: model settings must be a JSON object", whose),
                        errhint("For example '{\"weighting\": \"tfidf\", \"shrink\": 200}'.")));
    settings_name(c, "weighting", whose, out->weighting, sizeof out->weighting);
    settings_name(c, "similarity", whose, out->similarity, sizeof out->similarity);
    out->has_shrink = settings_number(c, "shrink", whose, &out->shrink);
    out->has_alpha = settings_number(c, "alpha", whose, &out->alpha);
    out->has_beta = settings_number(c, "beta", whose, &out->beta);
    out->has_k1 = settings_number(c, "k1", whose, &out->k1);
    out->has_b = settings_number(c, "b", whose, &out->b);
    double nb;
    out->has_neighbors = settings_number(c, "neighbors", whose, &nb);
    if (out->has_neighbors) {
        if (!(nb >= 0 && nb <= 100000 && nb == (double) (int) nb))
            ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                            errmsg("%s: neighbors must be an integer between 0 and 100000, not %g", whose, nb),
                            errhint("0 keeps every neighbour with a positive similarity.")));
        out->neighbors = (int) nb;
    }
}

void model_settings_from_jsonb(Datum settings, const char* whose, ModelSettings* out)
{
    Jsonb* jb = DatumGetJsonbP(settings);
    settings_from_container(&jb->root, whose, out);
}

recsys::TrainOptions model_train_options(const ModelSettings* s, int neighbors)
{
    recsys::TrainOptions o;
    o.neighbors = s->has_neighbors ? s->neighbors : neighbors;
    if (s->weighting[0] != '\0')
        o.weighting = recsys::parse_weighting(s->weighting);
    if (s->similarity[0] != '\0')
        o.similarity = recsys::parse_similarity(s->similarity);
    if (s->has_shrink)
        o.shrink = s->shrink;
    if (s->has_alpha)
        o.alpha = s->alpha;
    if (s->has_beta)
        o.beta = s->beta;
    if (s->has_k1)
        o.k1 = s->k1;
    if (s->has_b)
        o.b = s->b;
    return o;
}

// Copies a core string into a plain buffer (inside core_call).
static void copy_out(const std::string& s, char* dst, size_t cap)
{
    size_t n = s.size() < cap - 1 ? s.size() : cap - 1;
    memcpy(dst, s.data(), n);
    dst[n] = '\0';
}

static Datum json_datum(const char* text)
{
    return DirectFunctionCall1(jsonb_in, CStringGetDatum(text));
}

// recsys.resolve_settings(settings jsonb) -> jsonb: the model settings of
// `settings` validated by the core, with every parameter they read and its
// default filled in (neighbors and other keys are not part of the result).
extern "C" Datum recsys_resolve_settings(PG_FUNCTION_ARGS)
{
    ModelSettings s;
    model_settings_from_jsonb(PG_GETARG_DATUM(0), "model settings", &s);
    char json[SETTINGS_JSON_MAX];
    core_call_or_error("checking the model settings", [&] {
        copy_out(recsys::settings_json(model_train_options(&s, 50), false), json, sizeof json);
    });
    PG_RETURN_DATUM(json_datum(json));
}

// recsys.tune_grid() -> jsonb: the candidates recsys_tune() tries by
// default, in order, each with its neighbour count.
extern "C" Datum recsys_tune_grid(PG_FUNCTION_ARGS)
{
    char json[SETTINGS_JSON_MAX * 32];
    core_call_or_error("listing the tuning candidates", [&] {
        std::string out = "[";
        const std::vector<recsys::TrainOptions> grid = recsys::default_tune_grid();
        for (size_t i = 0; i < grid.size(); ++i)
            out += (i ? ", " : "") + recsys::settings_json(grid[i], true);
        out += "]";
        if (out.size() >= sizeof json)
            throw std::runtime_error("the default grid does not fit its buffer");
        copy_out(out, json, sizeof json);
    });
    PG_RETURN_DATUM(json_datum(json));
}

// One finished trial, as plain data for the result rows.
struct TrialRow {
    char settings[SETTINGS_JSON_MAX];
    recsys::EvalResult res;   // trivially destructible (plain numbers)
    double seconds;
};

#define TUNE_COLS 22

// recsys.tune_core(source regclass, settings jsonb, candidates jsonb,
//                  test_days, validation, k, count_repeats, max_configs,
//                  max_seconds) -> one row per trial
// settings: the snapshot whose event weights build the matrix.  The split:
// with validation false, recsys_evaluate's (cells before the newest usable
// event minus test_days, touches at or after it); with validation true, the
// same moved back by test_days inside the training period (cells before
// cutoff - test_days, touches from there up to the cutoff), so the test
// window is never read.  Candidates run in order within the budget:
// max_configs (NULL: all) and max_seconds (NULL: no limit).
extern "C" Datum recsys_tune_core(PG_FUNCTION_ARGS)
{
    for (int i = 0; i < 7; i++)
        if (PG_ARGISNULL(i))
            ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                            errmsg("recsys.tune_core: arguments must not be NULL")));
    int test_days = PG_GETARG_INT32(3);
    bool validation = PG_GETARG_BOOL(4);
    int k = PG_GETARG_INT32(5);
    bool count_repeats = PG_GETARG_BOOL(6);
    int max_configs = PG_ARGISNULL(7) ? 0 : PG_GETARG_INT32(7);
    double max_seconds = PG_ARGISNULL(8) ? 0 : PG_GETARG_FLOAT8(8);
    if (k < 1 || k > RECSYS_MAX_K)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("k must be between 1 and %d, not %d", RECSYS_MAX_K, k)));
    if (test_days < 1 || test_days > RECSYS_MAX_TEST_DAYS / 2)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("test_days must be between 1 and %d, not %d", RECSYS_MAX_TEST_DAYS / 2, test_days)));
    if (!PG_ARGISNULL(7) && max_configs < 1)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("max_configs must be at least 1, not %d", max_configs)));
    if (!PG_ARGISNULL(8) && !(max_seconds > 0 && max_seconds < 1e9))
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("max_seconds must be positive, not %g", max_seconds)));

    // The candidates, checked before anything is read.
    Jsonb* cands = PG_GETARG_JSONB_P(2);
    if (!JsonContainerIsArray(&cands->root) || JsonContainerIsScalar(&cands->root) ||
        JsonContainerSize(&cands->root) == 0)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("candidates must be a non-empty JSON array of model settings"),
                        errhint("For example '[{\"weighting\": \"binary\", \"shrink\": 50}]'.")));
    int n_cands = (int) JsonContainerSize(&cands->root);
    ModelSettings* cand = (ModelSettings*) palloc0(sizeof(ModelSettings) * n_cands);
    for (int i = 0; i < n_cands; i++) {
        JsonbValue* v = getIthJsonbValueFromContainer(&cands->root, (uint32) i);
        char whose[64];
        snprintf(whose, sizeof whose, "candidate %d", i + 1);
        if (v == NULL || v->type != jbvBinary)
            ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                            errmsg("%s: model settings must be a JSON object", whose)));
        settings_from_container(v->val.binary.data, whose, &cand[i]);
    }

    InitMaterializedSRF(fcinfo, 0);
    ReturnSetInfo* rsinfo = (ReturnSetInfo*) fcinfo->resultinfo;

    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "recsys: SPI_connect failed");
    // The mapped source in one scan (pg_read.hpp), split at the cutoff: the
    // matrix before it, the touches in the window after it.  The validation
    // window ends where the test window begins: nothing after it is read.
    SourceRel src;
    SourceWeights weights;
    EventWeights ew;
    source_open(PG_GETARG_OID(0), &src);
    source_set_mapping(&src, PG_GETARG_DATUM(1));
    source_event_weights(PG_GETARG_DATUM(1), "the tuning's settings", &ew);
    source_weights_positive(&ew, &weights);   // for the cutoff query
    TimestampTz cutoff = evaluation_cutoff(&src, &weights, test_days);
    TimestampTz end = DT_NOEND;
    if (validation) {
        end = cutoff;
        Interval* days = (Interval*) palloc0(sizeof(Interval));
        days->day = test_days;
        cutoff = DatumGetTimestampTz(
            DirectFunctionCall2(timestamptz_mi_interval, TimestampTzGetDatum(end), PointerGetDatum(days)));
    }
    CellBuffer before;
    cell_buffer_init(&before, false);
    EventsRead read;
    EventsSplit split;
    memset(&split, 0, sizeof split);   // the cutoff is known: no find_cutoff
    split.cutoff = cutoff;
    split.end = end;
    split.keep_histories = false;   // the tuner scores from every cell
    read_events(&src, &ew, &before, &read, &split);
    TouchBuffer after = split.touches;

    if (before.n == 0) {
        // No history before the cutoff: nobody to evaluate (the caller says so).
        SPI_finish();
        return (Datum) 0;
    }

    // Memory: the tuner's copy of the cells and touches, evaluate()'s copies
    // and histories, and the largest training among the candidates.
    Size need = 0;
    int planned = max_configs > 0 ? Min(max_configs, n_cands) : n_cands;
    core_call_or_error("tuning", [&] {
        recsys::MatrixShape shape = recsys::measure(before.data, (size_t) before.n);
        size_t train = 0;
        for (int i = 0; i < planned; i++) {
            recsys::TrainOptions o = model_train_options(&cand[i], 50);
            train = std::max(train, recsys::estimate_train_bytes(before.n, shape.users, shape.items, o));
        }
        need = 2 * cell_buffer_bytes(before.n) + (Size) after.n * sizeof(recsys::Touch) * 4 + train;
    });
    check_memory_budget(need, validation ? "tuning" : "evaluating the tuned settings");

    auto* owned = OwnedByContext<recsys::Tuner>::create(CurrentMemoryContext);
    core_call_or_error("tuning", [&] {
        std::vector<recsys::TrainOptions> list;
        for (int i = 0; i < n_cands; i++)
            list.push_back(model_train_options(&cand[i], 50));
        recsys::TuneOptions opt;
        opt.k = k;
        opt.count_repeats = count_repeats;
        opt.max_configs = (size_t) max_configs;
        opt.max_seconds = max_seconds;
        // Validation scores by nDCG alone: its trials skip the bootstrap
        // (n users x 1000 draws each, about as long as a training on large
        // logs); the test window's evaluations have their 95% CIs.
        opt.bootstrap_resamples = validation ? 0 : 1000;
        opt.progress = pg_progress();
        owned->obj = new recsys::Tuner(std::vector<recsys::Triplet>(before.data, before.data + before.n),
                                       std::vector<recsys::Touch>(after.data, after.data + after.n),
                                       std::move(list), opt);
    });
    if (before.data != NULL)
        pfree(before.data);
    before.data = NULL;

    TrialRow* rows = (TrialRow*) palloc0(sizeof(TrialRow) * n_cands);
    int done = 0;
    for (;;) {
        bool more = false;
        core_call_or_error("tuning", [&] { more = owned->obj->more(); });
        if (!more)
            break;
        progress_set_phase("training");
        TrialRow* row = &rows[done];
        core_call_or_error("tuning", [&] {
            const recsys::TuneTrial& t = owned->obj->run_next(pg_cancel_check());
            row->res = t.result;
            row->seconds = t.seconds;
            copy_out(recsys::settings_json(t.settings, true), row->settings, sizeof row->settings);
        });
        done++;
        ereport(NOTICE, (errmsg("recsys_tune: %s trial %d of %d: nDCG@%d %.4f, P@%d %.4f (%lld users) in %.1f s: %s",
                                validation ? "validation" : "test", done, planned, k, row->res.ndcg, k,
                                row->res.precision, (long long) row->res.users_evaluated, row->seconds,
                                row->settings)));
    }
    long best = -1;
    core_call_or_error("tuning", [&] { best = recsys::best_trial(owned->obj->trials()); });
    owned->release();

    for (int i = 0; i < done; i++) {
        const recsys::EvalResult& r = rows[i].res;
        Datum v[TUNE_COLS];
        bool nulls[TUNE_COLS];
        memset(nulls, 0, sizeof nulls);
        int c = 0;
        v[c++] = Int32GetDatum(i + 1);
        v[c++] = json_datum(rows[i].settings);
        v[c++] = BoolGetDatum(i == best);
        v[c++] = Int64GetDatum(r.users_evaluated);
        v[c++] = Int64GetDatum(r.users_without_history);
        const double metric[9] = {r.precision, r.precision_ci.lo, r.precision_ci.hi, r.recall, r.recall_ci.lo,
                                  r.recall_ci.hi, r.ndcg, r.ndcg_ci.lo, r.ndcg_ci.hi};
        for (double m : metric) {
            nulls[c] = std::isnan(m);
            v[c++] = Float8GetDatum(m);
        }
        v[c++] = Float8GetDatum(r.hit_rate);
        v[c++] = Float8GetDatum(r.map);
        v[c++] = Float8GetDatum(r.coverage);
        v[c++] = Float8GetDatum(r.pop_precision);
        v[c++] = Float8GetDatum(r.pop_recall);
        v[c++] = Int64GetDatum(r.model_items);
        v[c++] = TimestampTzGetDatum(cutoff);
        v[c++] = Float8GetDatum(rows[i].seconds);
        Assert(c == TUNE_COLS);
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, v, nulls);
    }
    SPI_finish();
    return (Datum) 0;
}
