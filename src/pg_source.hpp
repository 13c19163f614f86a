// pg_source.hpp - the events relation: finding it, building the queries that
// read it, and running them the way PostgreSQL's own maintenance commands
// (ANALYZE, REFRESH MATERIALIZED VIEW) read another owner's relation.
//
// Every query recsys runs over the events relation is built here, from the
// relation's OID: its name is quoted with quote_qualified_identifier, every
// operator is OPERATOR(pg_catalog.x) and every function pg_catalog.f, and the
// event weights are parameters, so the query touches nothing but the relation.
// It runs as the relation's owner inside a security-restricted operation with
// search_path = pg_catalog, pg_temp: code the relation runs (a view's
// functions, its policies) never gets the caller's rights.  The caller must
// have SELECT on the relation.
//
// C-style code (see pg_guard.hpp): call with SPI connected.
#pragma once

#include "pg_guard.hpp"

extern "C" {
#include "access/htup.h"
#include "access/tupdesc.h"
#include "executor/spi.h"
#include "nodes/params.h"
}

// A resolved events relation, and how its columns map (issue #7).
struct SourceRel {
    Oid relid;
    Oid owner;
    char* qualified;   // "schema"."name", quoted as needed
    // The mapped columns, quoted as identifiers: the seed's names unless
    // source_set_mapping says otherwise.  vcol NULL: no value column.
    const char* ucol;
    const char* icol;
    const char* ecol;
    const char* tcol;
    const char* vcol;
    const char* item_attname;   // the item column's name, unquoted
    // The id types the serving functions use (INT4OID, INT8OID, TEXTOID or
    // UUIDOID), and the half-life in days (0: no decay).
    Oid user_type;
    Oid item_type;
    double half_life_days;
};

// Prepares a query once per backend and keeps its generic plan (the plan
// cache replans it after DDL).
SPIPlanPtr keep_plan(const char* sql, int nargs, Oid* types);

// Resolves a stored relation name (schema-qualified text, as recsys.models
// and recsys.config keep it) without the caller's search_path.  A name that
// no longer resolves is an error (42P01) that names `whose` ("the active
// model 12", "recsys.config.source_relation") and what to do.
Oid source_lookup(const char* name, const char* whose);

// Checks that the caller may read relid (42501 otherwise) and fills src,
// with the seed's column names and integer ids.
void source_open(Oid relid, SourceRel* src);

// Takes the mapping recorded in a settings jsonb (recsys.source_settings'
// keys; a key that is missing, as in a model from before the mapping, keeps
// the seed's value).
void source_set_mapping(SourceRel* src, Datum settings);

// All event types with a numeric weight, any sign, from a settings jsonb:
// palloc'd parallel arrays (names NUL-terminated).
struct EventWeights {
    int n;
    char** types;
    int* lens;
    double* weights;
};
void source_event_weights(Datum settings, const char* whose, EventWeights* w);
// The weight of an event type, or NaN when it has none.
double event_weight(const EventWeights* w, const char* type, int len);

// recsys_user_item_matrix still reads through the aggregating query below
// (SOURCE_MATRIX): integer ids and the positive weights only.  A mapping those would compute differently from
// training (other id types, a value column, negative weights, decay) is
// refused (0A000, naming `fn`) rather than answered with another matrix.
void check_aggregating_mapping(const SourceRel* src, Datum settings, const char* fn);
// The event types of ew with a weight > 0, as the queries' parameters.
void source_weights_positive(const EventWeights* ew, struct SourceWeights* w);

// What ANALYZE recorded of src (pg_class.reltuples, pg_statistic for its
// product_id column): its rows and distinct products, estimated.  Both -1
// when there are no statistics (a view; a table never analyzed).
void source_estimate(const SourceRel* src, double* rows, double* items);

// The event weights a query uses: parallel text[] and float8[] Datums of the
// event types with a weight > 0.
struct SourceWeights {
    Datum types;
    Datum weights;
    int n;
};

// SQL for the weights recorded in a settings jsonb (the expression `js`):
// three columns, the event types with a weight > 0 (text[]) and their
// weights (float8[]) in event-type order, and the jsonb type of the
// "weights" member ('object' when there is one).
#define RECSYS_WEIGHTS_SQL(js)                                                                           \
    "ARRAY(SELECT e.key FROM pg_catalog.jsonb_each(" js " OPERATOR(pg_catalog.->) 'weights') e " \
    "WHERE pg_catalog.jsonb_typeof(e.value) OPERATOR(pg_catalog.=) 'number' "                          \
    "AND e.value::pg_catalog.float8 OPERATOR(pg_catalog.>) 0 ORDER BY e.key), "                        \
    "ARRAY(SELECT e.value::pg_catalog.float8 FROM pg_catalog.jsonb_each(" js                 \
    " OPERATOR(pg_catalog.->) 'weights') e "                                                           \
    "WHERE pg_catalog.jsonb_typeof(e.value) OPERATOR(pg_catalog.=) 'number' "                          \
    "AND e.value::pg_catalog.float8 OPERATOR(pg_catalog.>) 0 ORDER BY e.key), "                        \
    "pg_catalog.jsonb_typeof(" js " OPERATOR(pg_catalog.->) 'weights')"

// The live weights (recsys.event_weights) as a settings jsonb, for
// RECSYS_WEIGHTS_SQL: what the next training would record.
#define RECSYS_LIVE_WEIGHTS                                                                            \
    "pg_catalog.jsonb_build_object('weights', (SELECT COALESCE(pg_catalog.jsonb_object_agg(w.event_type, " \
    "w.weight), '{}') FROM recsys.event_weights w))"

// Fills w from the three RECSYS_WEIGHTS_SQL columns starting at column
// `col` of an SPI result row; no weights object is an error naming `whose`.
void source_weights_from_row(HeapTuple row, TupleDesc desc, int col, const char* whose, SourceWeights* w);

// The weights recorded in a settings jsonb ({"weights": {"view": 1, ...}}).
// A settings value without weights is an error naming `whose`.
void source_weights_from_settings(Datum settings, const char* whose, SourceWeights* w);

// The queries.  Parameters: $1 text[] event types, $2 float8[] weights, then
// as listed.
enum SourceQuery {
    // (user int4, product int4, weight float8, events int8): the weighted
    // matrix, plus the two rows of ignored counts (recsys.matrix_sql's shape:
    // NULL user, product -1 for NULL keys, -2 for unweighted types).
    SOURCE_MATRIX,
    // (timestamptz): the newest usable event; no row when there is none.
    SOURCE_MAX_TIME,
    // (count int8): the distinct products of the usable events; a light scan
    // (one hashed column) that tells what training will need.
    SOURCE_ITEM_COUNT,
    // (user int4, product int4, weight float8) of the users in $3 int4[],
    // summed per cell, ordered by user and product.
    SOURCE_HISTORY,
    // (product int4, weight float8, last_event timestamptz) of user $3 int4,
    // newest first, at most $4 int4 rows.
    SOURCE_USER_HISTORY,
    // The plainest query (issue #9): every row, (user, item, event text,
    // time timestamptz, value float8 or NULL), no parameters.
    SOURCE_EVENTS,
    // The same for the users in $1 (an array of src->user_type).
    SOURCE_EVENTS_OF_USERS
};
// Number of parameters each query takes.
int source_query_nargs(SourceQuery q);
// The query text for src (palloc'd) and its parameter types.
char* source_query_sql(const SourceRel* src, SourceQuery q, Oid* argtypes);

// SOURCE_EVENTS as training's read runs it (issue #9): when the relation
// is a table (plain, partitioned, materialized) without dropped columns whose
// event type column is text or varchar, time column timestamptz and value
// column (if any) float8, the query lists every column in its place, so that
// the scan hands its own slot to the receiver with no projection (the
// executor's per-row copy into a second slot) and the receiver deforms only
// up to the last column it needs; the same rows and values as SOURCE_EVENTS.
// Otherwise it is SOURCE_EVENTS.  cols[0..5): where the user, item, event
// type, time and value are in the result (value -1: none).  Takes the
// relation's AccessShareLock (the scan would) so that its columns stay as
// read here.
char* source_events_sql(const SourceRel* src, int* cols, int* natts);

// Switches to the owner's identity for reading src; source_leave switches
// back.  An error in between needs no cleanup: transaction and
// subtransaction abort restore the user and the settings.
struct SourceSwitch {
    Oid save_uid;
    int save_sec;
    int nest;
};
void source_enter(const SourceRel* src, SourceSwitch* sw);
void source_leave(SourceSwitch* sw);

// Prepares query q over src and keeps its generic plan for the backend's
// life.  It is prepared in the context it runs in (the owner, the reading
// search_path): a plan prepared under another search_path would be
// re-planned at every execution.
SPIPlanPtr source_keep_plan(const SourceRel* src, SourceQuery q);

// Runs a query over src (built by source_query_sql, kept or not) read-only
// as src's owner, erroring out unless it succeeds.  Results as SPI leaves them.
void source_execute_plan(const SourceRel* src, SPIPlanPtr plan, Datum* args);
void source_execute(const SourceRel* src, SourceQuery q, Datum* args, long tcount);
