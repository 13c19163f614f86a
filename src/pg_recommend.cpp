// pg_recommend.cpp - recsys_recommend(user_ids <user type>[], top_n int,
// exclude_seen bool, include_items, exclude_items),
// recsys_recommend_for_items(item_ids, top_n, weights, include_items,
// exclude_items) and recsys_explain(user_id, product_id), in the id types
// they are declared with (pg_ids.hpp).
//
// Reads the users' current events, the neighbours of the items in their
// history in indexed queries, scores each user in the core among the
// allowed items (the per-call filters and the recommendable relation, as
// sorted arrays of item indices the core searches), and fills short lists
// from the popularity list (kept per backend and model, walked over the
// allowed items only when there is an allowed set; read in rank order only
// as far as needed when it is not kept).  Rows
// come in the order of the input array.  Every item a user has an event on
// is excluded (unless exclude_seen is false), whatever its weight: refunds
// and weight-0 events included.
#include <algorithm>
#include <cmath>
#include <vector>

#include "pg_limits.hpp"
#include "pg_ids.hpp"
#include "pg_model.hpp"
#include "pg_settings.hpp"

extern "C" {
#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "lib/stringinfo.h"
#include "utils/acl.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"

PG_FUNCTION_INFO_V1(recsys_recommend);
PG_FUNCTION_INFO_V1(recsys_recommend_for_items);
PG_FUNCTION_INFO_V1(recsys_explain);
}

// Plans kept for the life of the backend; the plan cache replans them after DDL.
static SPIPlanPtr neighbors_plan = NULL;
static SPIPlanPtr popular_plan = NULL;
static SPIPlanPtr popularity_of_plan = NULL;

// Builds an int4[] datum from n ints.
static Datum int_array(const int32* v, int n)
{
    Datum* d = (Datum*) palloc(sizeof(Datum) * Max(n, 1));
    for (int i = 0; i < n; i++)
        d[i] = Int32GetDatum(v[i]);
    return PointerGetDatum(construct_array(d, n, INT4OID, 4, true, TYPALIGN_INT));
}

// A requested id, its key and where it came in the array.
struct ReqUser {
    IdKey key;
    Datum id;
    int pos;
};
static int cmp_requser(const void* a, const void* b)
{
    const ReqUser* x = (const ReqUser*) a;
    const ReqUser* y = (const ReqUser*) b;
    int c = id_key_cmp(&x->key, &y->key);
    if (c != 0)
        return c;
    return x->pos < y->pos ? -1 : (x->pos > y->pos ? 1 : 0);
}

// Sorts v and removes duplicates; returns the new length.
static int sort_unique(int32* v, int n)
{
    if (n == 0)
        return 0;
    if (!std::is_sorted(v, v + n))   // filters often come sorted
        std::sort(v, v + n);
    int m = 1;
    for (int i = 1; i < n; i++)
        if (v[i] != v[m - 1])
            v[m++] = v[i];
    return m;
}

// The elements of an array argument, checked: one-dimensional (2202E), at
// most `max` elements (54000), no NULL (22004).  `given` is false when the
// argument is NULL or absent.
struct ArrayArg {
    bool given;
    Datum* elems;        // NULL when ints holds the elements
    const int32* ints;   // an int4[] without NULLs: its data, not deconstructed
    int n;
    Oid elem;
};

// Element i of an array argument.
static inline Datum arg_elem(const ArrayArg* a, int i)
{
    return a->ints != NULL ? Int32GetDatum(a->ints[i]) : a->elems[i];
}
static void read_array_arg(FunctionCallInfo fcinfo, int arg, const char* name, int max, ArrayArg* out)
{
    out->given = false;
    out->elems = NULL;
    out->ints = NULL;
    out->n = 0;
    out->elem = InvalidOid;
    if (arg >= PG_NARGS() || PG_ARGISNULL(arg))
        return;
    ArrayType* arr = PG_GETARG_ARRAYTYPE_P(arg);
    if (ARR_NDIM(arr) > 1)
        ereport(ERROR, (errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
                        errmsg("%s must be a one-dimensional array, not %d-dimensional", name, ARR_NDIM(arr))));
    int n = ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));
    if (n > max)
        ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                        errmsg("%s has %d elements, at most %d are allowed", name, n, max)));
    out->given = true;
    out->elem = ARR_ELEMTYPE(arr);
    if (n == 0)
        return;
    if (out->elem == INT4OID && !ARR_HASNULL(arr)) {
        out->ints = (const int32*) ARR_DATA_PTR(arr);
        out->n = n;
        return;
    }
    int16 typlen;
    bool typbyval;
    char typalign;
    get_typlenbyvalalign(out->elem, &typlen, &typbyval, &typalign);
    bool* nulls;
    deconstruct_array(arr, out->elem, typlen, typbyval, typalign, &out->elems, &nulls, &out->n);
    for (int i = 0; i < out->n; i++)
        if (nulls[i])
            ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                            errmsg("%s must not contain NULL (element %d is NULL)", name, i + 1)));
}

// The model indices of the item ids of an array argument, in input order;
// -1 for the items the model does not know.
static int32* item_indices_of(int64 model_id, Oid item_type, const ArrayArg* a)
{
    int32* idx = (int32*) palloc(sizeof(int32) * Max(a->n, 1));
    if (item_type == INT4OID) {
        if (a->ints != NULL)
            memcpy(idx, a->ints, sizeof(int32) * a->n);
        else
            for (int i = 0; i < a->n; i++)
                idx[i] = DatumGetInt32(a->elems[i]);
        return idx;
    }
    char** keys = (char**) palloc(sizeof(char*) * Max(a->n, 1));
    for (int i = 0; i < a->n; i++)
        keys[i] = id_key_text(arg_elem(a, i), a->elem);
    item_indices(model_id, keys, a->n, idx);
    return idx;
}

// The model indices of the items of a filter argument: sorted, distinct,
// the unknown ones dropped.
static int32* filter_indices(int64 model_id, Oid item_type, const ArrayArg* a, int* n_out)
{
    int32* idx = item_indices_of(model_id, item_type, a);
    int m = 0;
    for (int i = 0; i < a->n; i++)
        if (item_type == INT4OID || idx[i] >= 0)
            idx[m++] = idx[i];
    *n_out = sort_unique(idx, m);
    return idx;
}

// The type a column of type t is served as (a domain as its base type);
// InvalidOid for a type recsys cannot use as an id.
static Oid served_type_of(Oid t)
{
    switch (getBaseType(t)) {
    case INT2OID:
    case INT4OID:
        return INT4OID;
    case INT8OID:
        return INT8OID;
    case TEXTOID:
    case VARCHAROID:
        return TEXTOID;
    case UUIDOID:
        return UUIDOID;
    default:
        return InvalidOid;
    }
}

// The kept plan of the recommendable relation's query, and what it reads.
static SPIPlanPtr rec_plan = NULL;
static Oid rec_plan_rel = InvalidOid;
static AttrNumber rec_plan_att = InvalidAttrNumber;
static Oid rec_plan_type = InvalidOid;
static char* rec_plan_name = NULL;

// The items of the recommendable relation (recsys_set_recommendable) as
// sorted distinct model indices.  Returns false
// when none is configured.
static bool read_recommendable(const ActiveModel* model, Oid item_type, int32** out, int* n_out)
{
    int64 model_id = model->model_id;
    const char* name = model->rec_relation;
    const char* col = model->rec_column;
    if (name == NULL || col == NULL)
        return false;
    RangeVar* rv = makeRangeVarFromNameList(stringToQualifiedNameList(name));
    Oid relid = OidIsValid(get_namespace_oid(rv->schemaname ? rv->schemaname : "", true))
                    ? RangeVarGetRelid(rv, NoLock, true)
                    : InvalidOid;
    if (!OidIsValid(relid))
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE),
                        errmsg("relation \"%s\", the recommendable items, does not exist", name),
                        errdetail("It was dropped or renamed after recsys_set_recommendable() configured it."),
                        errhint("Restore it, or configure another: SELECT recsys_set_recommendable('schema.relation', "
                                "'column'); NULL clears it.")));
    AttrNumber att = get_attnum(relid, col);
    if (att == InvalidAttrNumber || att < 0)
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_COLUMN),
                        errmsg("column \"%s\" of relation \"%s\", the recommendable items, does not exist", col, name),
                        errhint("SELECT recsys_set_recommendable('%s', 'column') names the item id column.", name)));
    Oid coltype = get_atttype(relid, att);
    if (served_type_of(coltype) != item_type)
        ereport(ERROR, (errcode(ERRCODE_DATATYPE_MISMATCH),
                        errmsg("column \"%s\" of relation \"%s\", the recommendable items, has type %s, but the active "
                               "model " INT64_FORMAT " has %s item ids",
                               col, name, format_type_be(coltype), model_id, format_type_be(item_type))));
    // As the events relation (pg_source.hpp): the caller must be allowed to
    // read it; it is read as its owner in a security-restricted operation,
    // so code in a view never runs with the caller's rights.
    Oid user = GetUserId();
    if (pg_class_aclcheck(relid, user, ACL_SELECT) != ACLCHECK_OK) {
        const char* role = quote_identifier(GetUserNameFromId(user, false));
        ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                        errmsg("permission denied for relation %s, the recommendable items", name),
                        errdetail("recsys reads it with its owner's rights, for callers that may read it."),
                        errhint("GRANT SELECT ON %s TO %s;", name, role)));
    }
    SourceRel rel;
    source_open(relid, &rel);
    // The query is prepared once per relation, column and type (in the
    // reading context, as source_keep_plan does) and run on every call: the
    // items are read in the call's snapshot, every change seen at once.
    if (rec_plan == NULL || rec_plan_rel != relid || rec_plan_att != att || rec_plan_type != item_type ||
        strcmp(rec_plan_name, rel.qualified) != 0) {
        if (rec_plan != NULL)
            SPI_freeplan(rec_plan);
        rec_plan = NULL;
        const char* qcol = quote_identifier(col);
        StringInfoData sql;
        initStringInfo(&sql);
        appendStringInfo(&sql, "SELECT DISTINCT r.%s::pg_catalog.%s FROM %s r WHERE r.%s IS NOT NULL", qcol,
                         item_type == INT4OID ? "int4" : "text", rel.qualified, qcol);
        SourceSwitch psw;
        source_enter(&rel, &psw);
        SPIPlanPtr plan = keep_plan(sql.data, 0, NULL);
        source_leave(&psw);
        if (rec_plan_name != NULL)
            pfree(rec_plan_name);
        rec_plan_name = MemoryContextStrdup(TopMemoryContext, rel.qualified);
        rec_plan_rel = relid;
        rec_plan_att = att;
        rec_plan_type = item_type;
        rec_plan = plan;
    }
    SourceSwitch sw;
    source_enter(&rel, &sw);
    int rc = SPI_execute_plan(rec_plan, NULL, NULL, true, 0);
    source_leave(&sw);
    if (rc != SPI_OK_SELECT)
        elog(ERROR, "recsys: reading the recommendable items %s failed: %s", rel.qualified,
             SPI_result_code_string(rc));
    int n = (int) SPI_processed;
    SPITupleTable* tt = SPI_tuptable;
    int32* v = (int32*) palloc(sizeof(int32) * Max(n, 1));
    bool isnull;
    if (item_type == INT4OID) {
        for (int i = 0; i < n; i++)
            v[i] = DatumGetInt32(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
    } else {
        char** keys = (char**) palloc(sizeof(char*) * Max(n, 1));
        for (int i = 0; i < n; i++)
            keys[i] = SPI_getvalue(tt->vals[i], tt->tupdesc, 1);
        item_indices(model_id, keys, n, v);
        int m = 0;
        for (int i = 0; i < n; i++)
            if (v[i] >= 0)
                v[m++] = v[i];
        n = m;
    }
    *n_out = sort_unique(v, n);
    *out = v;
    return true;
}

// Intersects two sorted distinct arrays into a (in place).
static int intersect_sorted(int32* a, int na, const int32* b, int nb)
{
    int m = 0;
    for (int i = 0, j = 0; i < na && j < nb;) {
        if (a[i] < b[j])
            i++;
        else if (a[i] > b[j])
            j++;
        else {
            a[m++] = a[i];
            i++;
            j++;
        }
    }
    return m;
}

// The filter of a call: include_items (argument inc) and the recommendable
// relation allow, exclude_items (argument exc) denies.  Arrays were checked
// by read_array_arg.
static void build_filter(const ActiveModel* model, Oid item_type, const ArrayArg* inc, const ArrayArg* exc,
                         recsys::ItemFilter* f)
{
    static const int32 empty_set[1] = {0};
    int64 model_id = model->model_id;
    f->allowed = NULL;
    f->n_allowed = 0;
    f->denied = NULL;
    f->n_denied = 0;
    int32* allowed = NULL;
    int n_allowed = 0;
    if (inc->given)
        allowed = filter_indices(model_id, item_type, inc, &n_allowed);
    int32* rec;
    int n_rec;
    if (read_recommendable(model, item_type, &rec, &n_rec)) {
        if (allowed == NULL) {
            allowed = rec;
            n_allowed = n_rec;
        } else {
            n_allowed = intersect_sorted(allowed, n_allowed, rec, n_rec);
        }
    }
    if (allowed != NULL) {
        f->allowed = n_allowed > 0 ? allowed : empty_set;
        f->n_allowed = (size_t) n_allowed;
    }
    if (exc->given) {
        int n_denied;
        int32* denied = filter_indices(model_id, item_type, exc, &n_denied);
        f->denied = denied;
        f->n_denied = (size_t) n_denied;
    }
}

// Reads and checks the user ids; returns the distinct ids sorted by key
// (their first position in `pos`).
static ReqUser* read_user_ids(FunctionCallInfo fcinfo, int* n_out, int* top_n_out, bool* exclude_seen)
{
    if (PG_ARGISNULL(0))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                        errmsg("user_ids must not be NULL"),
                        errhint("Pass an array of user ids, e.g. ARRAY[10, 25, 42].")));
    if (PG_ARGISNULL(1))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                        errmsg("top_n must not be NULL")));
    if (PG_NARGS() > 2 && PG_ARGISNULL(2))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                        errmsg("exclude_seen must not be NULL")));
    *exclude_seen = PG_NARGS() > 2 ? PG_GETARG_BOOL(2) : true;
    int top_n = PG_GETARG_INT32(1);
    if (top_n < 1 || top_n > RECSYS_MAX_TOP_N)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("top_n must be between 1 and %d, not %d", RECSYS_MAX_TOP_N, top_n)));
    ArrayType* arr = PG_GETARG_ARRAYTYPE_P(0);
    if (ARR_NDIM(arr) > 1)
        ereport(ERROR, (errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
                        errmsg("user_ids must be a one-dimensional array, not %d-dimensional", ARR_NDIM(arr))));
    int n = ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));
    if (n > RECSYS_MAX_USER_IDS)
        ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                        errmsg("too many user ids: %d, at most %d per call", n, RECSYS_MAX_USER_IDS),
                        errhint("Split the ids into several calls.")));
    if ((int64) n * top_n > RECSYS_MAX_ROWS_PER_CALL)
        ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                        errmsg("a call returns at most %d rows (user ids x top_n), not %d x %d = " INT64_FORMAT,
                               RECSYS_MAX_ROWS_PER_CALL, n, top_n, (int64) n * top_n),
                        errhint("Ask for a smaller top_n, or split the ids into several calls.")));
    *top_n_out = top_n;
    *n_out = 0;
    if (n == 0)
        return NULL;
    Oid elem = ARR_ELEMTYPE(arr);
    int16 typlen;
    bool typbyval;
    char typalign;
    get_typlenbyvalalign(elem, &typlen, &typbyval, &typalign);
    Datum* elems;
    bool* nulls;
    int nelems;
    deconstruct_array(arr, elem, typlen, typbyval, typalign, &elems, &nulls, &nelems);
    ReqUser* sorted = (ReqUser*) palloc(sizeof(ReqUser) * nelems);
    for (int i = 0; i < nelems; i++) {
        if (nulls[i])
            ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                            errmsg("user_ids must not contain NULL (element %d is NULL)", i + 1)));
        sorted[i].key = id_key_of(elems[i], elem);
        sorted[i].id = elems[i];
        sorted[i].pos = i;
    }
    qsort(sorted, nelems, sizeof(ReqUser), cmp_requser);
    int m = 0;
    for (int i = 0; i < nelems; i++)
        if (i == 0 || id_key_cmp(&sorted[i].key, &sorted[i - 1].key) != 0)
            sorted[m++] = sorted[i];
    *n_out = m;
    return sorted;
}

// Orders distinct users by their first position in the input.
static int cmp_first_pos(const void* a, const void* b)
{
    const ReqUser* x = *(const ReqUser* const*) a;
    const ReqUser* y = *(const ReqUser* const*) b;
    return x->pos < y->pos ? -1 : (x->pos > y->pos ? 1 : 0);
}

// The (user, item) cells of n users: w(u,i) summed per item (> 0: history,
// else seen), sorted by user then item; cells of user j are
// [first[j], first[j+1]).  Events of items the model does not know are
// dropped.  Sorts and compacts ev in place.
static int user_cells(UserEvent* ev, int n_ev, int n_users, int** first_out, int* max_cells)
{
    int n_known = 0;
    for (int i = 0; i < n_ev; i++)
        if (ev[i].known)
            ev[n_known++] = ev[i];
    std::sort(ev, ev + n_known, [](const UserEvent& x, const UserEvent& y) {
        return x.user != y.user ? x.user < y.user : x.item < y.item;
    });
    int n_cells = 0;
    for (int i = 0; i < n_known; i++) {
        if (n_cells > 0 && ev[n_cells - 1].user == ev[i].user && ev[n_cells - 1].item == ev[i].item) {
            ev[n_cells - 1].w += ev[i].w;
            continue;
        }
        ev[n_cells++] = ev[i];
    }
    int* first = (int*) palloc(sizeof(int) * (n_users + 1));
    int max_seen = 0;
    for (int j = 0, c = 0; j <= n_users; j++) {
        first[j] = c;
        while (c < n_cells && ev[c].user == j)
            c++;
        if (j < n_users)
            max_seen = Max(max_seen, c - first[j]);
    }
    *first_out = first;
    *max_cells = max_seen;
    return n_cells;
}

// The stored neighbours of some items, sorted by item: item[k]'s list is
// ids[k][0..len[k]) with sims[k][...] (in the neighbour cache or the call's
// memory).
struct NeighborTable {
    int32* item;
    const int32** ids;
    const double** sims;
    int32* len;
    int n;
};

// The neighbour cache: the lists of the items served so far, of one model
// (and one recsys.neighbors relation), kept for the backend's life.  A
// model's rows never change after its training committed and model ids are
// never reused, so entries need no other invalidation; the cache starts
// over when another model is served, and when it has outgrown
// recsys.neighbor_cache_size (checked before each call's reads, so the
// lists a call holds stay valid).  An item without a row is kept with
// length 0.
//
// An open-addressing table of (item, length, block) slots, Fibonacci-hashed
// and at most half full: a lookup costs one cache line, where a dynahash
// lookup walked a directory, a bucket and a chain.  A list's ids and sims
// are one block (ids, padded to 8 bytes, then sims), read front to back,
// cut from 64 kB arenas one after the other (no allocator header or
// rounding to a power of two: ~650 bytes an item at K = 50, slots
// included).
struct NbSlot {
    int32 item;
    int32 len;
    const char* block;   // NULL: a free slot
};
static MemoryContext nb_cxt = NULL;
static NbSlot* nb_slots = NULL;
static int nb_bits = 0;   // the table has 1 << nb_bits slots
static int nb_count = 0;
static int64 nb_model = -1;
static Oid nb_rel = InvalidOid;
static char* nb_arena = NULL;   // the free part of the current arena
static size_t nb_arena_left = 0;
static const double nb_empty_list[1] = {0};   // the block of a list of length 0

static inline uint32 nb_home(int32 item, int bits)
{
    return ((uint32) item * 2654435761u) >> (32 - bits);
}

static inline size_t nb_sims_offset(int32 len)
{
    return TYPEALIGN(sizeof(double), sizeof(int32) * (size_t) len);
}

// The slot of item in the table: its own, or the free one it would take.
static inline NbSlot* nb_slot(NbSlot* slots, int bits, int32 item)
{
    uint32 mask = (1u << bits) - 1;
    uint32 pos = nb_home(item, bits);
    while (slots[pos].block != NULL && slots[pos].item != item)
        pos = (pos + 1) & mask;
    return &slots[pos];
}

// Readies the cache for model_id; false when it is turned off.
static bool nb_cache_ready(int64 model_id)
{
    Oid rel = get_relname_relid("neighbors", get_namespace_oid("recsys", false));
    Size limit = (Size) recsys_neighbor_cache_kb * 1024;
    if (nb_cxt != NULL &&
        (nb_model != model_id || nb_rel != rel || limit == 0 || MemoryContextMemAllocated(nb_cxt, true) > limit)) {
        MemoryContextDelete(nb_cxt);
        nb_cxt = NULL;
        nb_slots = NULL;
        nb_arena = NULL;
        nb_arena_left = 0;
    }
    if (limit == 0)
        return false;
    if (nb_cxt == NULL) {
        MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "recsys neighbour cache", ALLOCSET_DEFAULT_SIZES);
        const int bits = 4;   // small, so that even the test suite's models grow it
        nb_slots = (NbSlot*) MemoryContextAllocZero(cxt, sizeof(NbSlot) << bits);
        nb_bits = bits;
        nb_count = 0;
        nb_cxt = cxt;
        nb_model = model_id;
        nb_rel = rel;
    }
    return true;
}

// The cached list of item, or NULL.
static inline const NbSlot* nb_cache_get(int32 item)
{
    const NbSlot* s = nb_slot(nb_slots, nb_bits, item);
    return s->block != NULL ? s : NULL;
}

// Keeps a list in the cache and returns its slot.  The block, and a bigger
// table when this one would be more than half full, are allocated before the
// table changes, so an error leaves it as it was.
static const NbSlot* nb_cache_put(int32 item, int32 len, const void* ids, const void* sims)
{
    const char* block = (const char*) nb_empty_list;
    if (len > 0) {
        size_t off = nb_sims_offset(len);
        size_t size = off + sizeof(double) * (size_t) len;   // a multiple of 8
        const size_t arena = (size_t) 64 * 1024;
        char* b;
        if (size > arena / 4)
            b = (char*) MemoryContextAlloc(nb_cxt, size);   // a long list: a block of its own
        else {
            if (size > nb_arena_left) {
                nb_arena = (char*) MemoryContextAlloc(nb_cxt, arena);
                nb_arena_left = arena;
            }
            b = nb_arena;
            nb_arena += size;
            nb_arena_left -= size;
        }
        memcpy(b, ids, sizeof(int32) * (size_t) len);
        memcpy(b + off, sims, sizeof(double) * (size_t) len);
        block = b;
    }
    if (2 * (nb_count + 1) > (1 << nb_bits)) {
        int bits = nb_bits + 1;
        NbSlot* slots = (NbSlot*) MemoryContextAllocZero(nb_cxt, sizeof(NbSlot) << bits);
        for (int i = 0; i < (1 << nb_bits); i++)
            if (nb_slots[i].block != NULL)
                *nb_slot(slots, bits, nb_slots[i].item) = nb_slots[i];
        pfree(nb_slots);
        nb_slots = slots;
        nb_bits = bits;
    }
    NbSlot* s = nb_slot(nb_slots, nb_bits, item);
    if (s->block == NULL)
        nb_count++;
    s->item = item;
    s->len = len;
    s->block = block;
    return s;
}

// Reads the neighbours of the history items (w > 0) of the cells: from the
// cache, the others in one indexed query (kept in the cache).
static void read_neighbors(int64 model_id, const UserEvent* cells, int n_cells, NeighborTable* t)
{
    int32* items = (int32*) palloc(sizeof(int32) * Max(n_cells, 1));
    int n_items = 0;
    for (int i = 0; i < n_cells; i++)
        if (cells[i].w > 0)
            items[n_items++] = cells[i].item;
    n_items = sort_unique(items, n_items);
    // Slot k holds items[k]'s list (length 0: none); compacted at the end.
    t->item = items;
    t->ids = (const int32**) palloc(sizeof(int32*) * Max(n_items, 1));
    t->sims = (const double**) palloc(sizeof(double*) * Max(n_items, 1));
    t->len = (int32*) palloc0(sizeof(int32) * Max(n_items, 1));
    t->n = 0;
    if (n_items == 0)
        return;
    bool caching = nb_cache_ready(model_id);
    int32* miss = (int32*) palloc(sizeof(int32) * n_items);
    int* miss_slot = (int*) palloc(sizeof(int) * n_items);
    int n_miss = 0;
    for (int k = 0; k < n_items; k++) {
        const NbSlot* e = caching ? nb_cache_get(items[k]) : NULL;
        if (e == NULL) {
            miss_slot[n_miss] = k;
            miss[n_miss++] = items[k];
        } else {
            t->ids[k] = (const int32*) e->block;
            t->sims[k] = (const double*) (e->block + nb_sims_offset(e->len));
            t->len[k] = e->len;
        }
    }
    if (n_miss > 0) {
        if (neighbors_plan == NULL) {
            Oid types[2] = {INT8OID, INT4ARRAYOID};
            neighbors_plan = keep_plan("SELECT item_id, neighbor_ids, sims FROM recsys.neighbors "
                                       "WHERE model_id OPERATOR(pg_catalog.=) $1 "
                                       "AND item_id OPERATOR(pg_catalog.=) ANY ($2) ORDER BY item_id",
                                       2, types);
        }
        Datum nargs[2] = {Int64GetDatum(model_id), int_array(miss, n_miss)};
        if (SPI_execute_plan(neighbors_plan, nargs, NULL, true, 0) != SPI_OK_SELECT)
            elog(ERROR, "recsys: reading neighbours failed");
        int n_nb = (int) SPI_processed;
        bool isnull;
        int m = 0;
        for (int i = 0; i < n_nb; i++) {
            HeapTuple tup = SPI_tuptable->vals[i];
            int32 item = DatumGetInt32(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));
            ArrayType* ids = DatumGetArrayTypeP(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull));
            ArrayType* sims = DatumGetArrayTypeP(SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull));
            int len = ArrayGetNItems(ARR_NDIM(ids), ARR_DIMS(ids));
            if (ARR_HASNULL(ids) || ARR_HASNULL(sims) || ArrayGetNItems(ARR_NDIM(sims), ARR_DIMS(sims)) != len)
                ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
                                errmsg("recsys: neighbour arrays of item %d in model " INT64_FORMAT " are damaged",
                                       item, model_id),
                                errhint("Retrain with SELECT * FROM recsys_train();")));
            // Rows come by item; the misses before this one have none.
            for (; m < n_miss && miss[m] < item; m++)
                if (caching)
                    (void) nb_cache_put(miss[m], 0, NULL, NULL);
            if (m == n_miss || miss[m] != item)
                continue;   // cannot happen: the query asked for the misses only
            int k = miss_slot[m++];
            t->len[k] = len;
            if (caching) {
                const NbSlot* e = nb_cache_put(item, len, ARR_DATA_PTR(ids), ARR_DATA_PTR(sims));
                t->ids[k] = (const int32*) e->block;
                t->sims[k] = (const double*) (e->block + nb_sims_offset(len));
            } else {
                int32* i2 = (int32*) palloc(sizeof(int32) * Max(len, 1));
                double* s2 = (double*) palloc(sizeof(double) * Max(len, 1));
                memcpy(i2, ARR_DATA_PTR(ids), sizeof(int32) * len);
                memcpy(s2, ARR_DATA_PTR(sims), sizeof(double) * len);
                t->ids[k] = i2;
                t->sims[k] = s2;
            }
        }
        for (; m < n_miss; m++)
            if (caching)
                (void) nb_cache_put(miss[m], 0, NULL, NULL);
        SPI_freetuptable(SPI_tuptable);
    }
    // Keep the items that have neighbours, in item order.
    for (int k = 0; k < n_items; k++) {
        if (t->len[k] == 0)
            continue;
        t->item[t->n] = t->item[k];
        t->ids[t->n] = t->ids[k];
        t->sims[t->n] = t->sims[k];
        t->len[t->n] = t->len[k];
        t->n++;
    }
}

// The neighbour list of an item in t (empty when it has none).
static recsys::NeighborList neighbors_in(const NeighborTable* t, int32 item)
{
    recsys::NeighborList l;
    const int32* p = std::lower_bound(t->item, t->item + t->n, item);
    if (p != t->item + t->n && *p == item) {
        size_t k = (size_t) (p - t->item);
        l.ids = t->ids[k];
        l.sims = t->sims[k];
        l.size = (size_t) t->len[k];
    }
    return l;
}

// Splits the cells of one user into history (w > 0) and seen items.
static void split_cells(const UserEvent* cells, int from, int to, recsys::HistoryItem* h, int* n_hist, int32* seen,
                        int* n_seen)
{
    *n_hist = 0;
    *n_seen = 0;
    for (int c = from; c < to; c++) {
        if (cells[c].w > 0) {
            h[*n_hist].item = cells[c].item;
            h[*n_hist].weight = cells[c].w;
            (*n_hist)++;
        } else {
            seen[(*n_seen)++] = cells[c].item;   // ascending: the cells are sorted by item
        }
    }
}

// The popularity cache: the popularity list of one model (and one
// recsys.popularity relation), in rank order, kept for the backend's life
// like the neighbour cache and for the same reasons (a model's rows never
// change after its training committed, model ids are never reused), so a
// fill costs no query.  by_item holds the positions sorted by item, to find
// an allowed set's entries.  12 bytes an item (600 kB at 50k items); kept
// when that is at most a quarter of recsys.neighbor_cache_size, else (and
// with the setting 0) every fill reads the list in chunks.
struct PopCache {
    MemoryContext cxt;
    int64 model;
    Oid rel;
    int n;
    int32* ids;
    int32* users;
    int32* by_item;
};
static PopCache pop_cache = {NULL, -1, InvalidOid, 0, NULL, NULL, NULL};
static int64 pop_too_big_model = -1;   // the model whose list was too big to keep,
static Size pop_too_big_limit = 0;     // at this setting
static SPIPlanPtr popular_all_plan = NULL;

// Whether the cache holds model_id's list as recsys.popularity (rel) has it.
static bool pop_cache_holds(int64 model_id, Oid rel)
{
    return pop_cache.cxt != NULL && pop_cache.model == model_id && pop_cache.rel == rel;
}

// recsys.popularity's oid now (a new one after the extension is recreated).
static Oid popularity_relid(void)
{
    return get_relname_relid("popularity", get_namespace_oid("recsys", false));
}

// Readies the popularity cache for model_id; false when it is not kept.
static bool pop_cache_ready(int64 model_id)
{
    Oid rel = popularity_relid();
    Size limit = (Size) recsys_neighbor_cache_kb * 1024;
    if (pop_cache.cxt != NULL && (!pop_cache_holds(model_id, rel) || limit == 0)) {
        MemoryContextDelete(pop_cache.cxt);
        pop_cache.cxt = NULL;
    }
    if (limit == 0 || (pop_too_big_model == model_id && pop_too_big_limit == limit))
        return false;
    if (pop_cache.cxt != NULL)
        return true;
    if (popular_all_plan == NULL) {
        Oid types[1] = {INT8OID};
        popular_all_plan = keep_plan("SELECT item_id, users FROM recsys.popularity "
                                     "WHERE model_id OPERATOR(pg_catalog.=) $1 ORDER BY rank",
                                     1, types);
    }
    Datum args[1] = {Int64GetDatum(model_id)};
    if (SPI_execute_plan(popular_all_plan, args, NULL, true, 0) != SPI_OK_SELECT)
        elog(ERROR, "recsys: reading popularity failed");
    int n = (int) SPI_processed;
    if ((Size) n * 12 > limit / 4) {
        SPI_freetuptable(SPI_tuptable);
        pop_too_big_model = model_id;
        pop_too_big_limit = limit;
        return false;
    }
    MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "recsys popularity cache", ALLOCSET_SMALL_SIZES);
    int32* ids = (int32*) MemoryContextAlloc(cxt, sizeof(int32) * Max(n, 1));
    int32* users = (int32*) MemoryContextAlloc(cxt, sizeof(int32) * Max(n, 1));
    int32* by_item = (int32*) MemoryContextAlloc(cxt, sizeof(int32) * Max(n, 1));
    bool isnull;
    for (int i = 0; i < n; i++) {
        HeapTuple t = SPI_tuptable->vals[i];
        ids[i] = DatumGetInt32(SPI_getbinval(t, SPI_tuptable->tupdesc, 1, &isnull));
        users[i] = DatumGetInt32(SPI_getbinval(t, SPI_tuptable->tupdesc, 2, &isnull));
        by_item[i] = i;
    }
    SPI_freetuptable(SPI_tuptable);
    std::sort(by_item, by_item + n, [ids](int32 a, int32 b) { return ids[a] < ids[b]; });
    pop_cache.cxt = cxt;
    pop_cache.model = model_id;
    pop_cache.rel = rel;
    pop_cache.n = n;
    pop_cache.ids = ids;
    pop_cache.users = users;
    pop_cache.by_item = by_item;
    return true;
}

// The position (rank - 1) of item in the cached popularity list, or -1.
static int32 pop_cache_find(int32 item)
{
    const int32* ids = pop_cache.ids;
    const int32* begin = pop_cache.by_item;
    const int32* end = begin + pop_cache.n;
    const int32* p = std::lower_bound(begin, end, item, [ids](int32 q, int32 v) { return ids[q] < v; });
    return p != end && ids[*p] == item ? *p : -1;
}

// The cached popularity entries of the items f allows, in rank order.
static void pop_allowed(const recsys::ItemFilter* f, const int32** ids_out, const int32** users_out, int* n_out)
{
    const int32* ids = pop_cache.ids;
    int32* pos = (int32*) palloc(sizeof(int32) * Max(f->n_allowed, 1));
    int n = 0;
    for (size_t a = 0; a < f->n_allowed; a++) {
        int32 item = f->allowed[a];
        if (a > 0 && item == f->allowed[a - 1])
            continue;
        int32 p = pop_cache_find(item);
        if (p >= 0)
            pos[n++] = p;
    }
    std::sort(pos, pos + n);
    int32* rids = (int32*) palloc(sizeof(int32) * Max(n, 1));
    int32* rusers = (int32*) palloc(sizeof(int32) * Max(n, 1));
    for (int k = 0; k < n; k++) {
        rids[k] = ids[pos[k]];
        rusers[k] = pop_cache.users[pos[k]];
    }
    pfree(pos);
    *ids_out = rids;
    *users_out = rusers;
    *n_out = n;
}

// The product's distinct users in model_id's popularity list, from the
// popularity cache when this backend holds it for the model, else read;
// false when the list does not hold it.  The list has no index by item
// (each training would enter all its items into one at random places: 0.1 s
// of the backend's time during the 10M bench's similarity pass,
// docs/benchmarks.md), so the read walks the list in rank order from the
// most popular: a fill item is found among the first few, a rare item after
// a scan of the model's list (10 ms at 50,000 items).
static bool popularity_of(int64 model_id, int32 product, int32* users)
{
    if (recsys_neighbor_cache_kb > 0 && pop_cache_holds(model_id, popularity_relid())) {
        int32 p = pop_cache_find(product);
        if (p < 0)
            return false;
        *users = pop_cache.users[p];
        return true;
    }
    if (popularity_of_plan == NULL) {
        Oid types[2] = {INT8OID, INT4OID};
        popularity_of_plan = keep_plan("SELECT users FROM recsys.popularity "
                                       "WHERE model_id OPERATOR(pg_catalog.=) $1 "
                                       "AND item_id OPERATOR(pg_catalog.=) $2 ORDER BY rank LIMIT 1",
                                       2, types);
    }
    Datum args[2] = {Int64GetDatum(model_id), Int32GetDatum(product)};
    if (SPI_execute_plan(popularity_of_plan, args, NULL, true, 1) != SPI_OK_SELECT)
        elog(ERROR, "recsys: reading popularity failed");
    if (SPI_processed != 1)
        return false;
    bool isnull;
    *users = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
    return true;
}

// The next `limit` entries of the popularity list after rank *after (read,
// not cached); *after becomes the last rank read.
static int read_popular_chunk(int64 model_id, int32* after, int limit, const int32** ids_out,
                              const int32** users_out)
{
    if (popular_plan == NULL) {
        Oid types[3] = {INT8OID, INT4OID, INT4OID};
        popular_plan = keep_plan("SELECT item_id, users, rank FROM recsys.popularity "
                                 "WHERE model_id OPERATOR(pg_catalog.=) $1 AND rank OPERATOR(pg_catalog.>) $2 "
                                 "ORDER BY rank LIMIT $3",
                                 3, types);
    }
    Datum pargs[3] = {Int64GetDatum(model_id), Int32GetDatum(*after), Int32GetDatum(limit)};
    if (SPI_execute_plan(popular_plan, pargs, NULL, true, 0) != SPI_OK_SELECT)
        elog(ERROR, "recsys: reading popularity failed");
    int n_pop = (int) SPI_processed;
    int32* pop_ids = (int32*) palloc(sizeof(int32) * Max(n_pop, 1));
    int32* pop_users = (int32*) palloc(sizeof(int32) * Max(n_pop, 1));
    bool isnull;
    for (int i = 0; i < n_pop; i++) {
        HeapTuple t = SPI_tuptable->vals[i];
        pop_ids[i] = DatumGetInt32(SPI_getbinval(t, SPI_tuptable->tupdesc, 1, &isnull));
        pop_users[i] = DatumGetInt32(SPI_getbinval(t, SPI_tuptable->tupdesc, 2, &isnull));
        *after = DatumGetInt32(SPI_getbinval(t, SPI_tuptable->tupdesc, 3, &isnull));
    }
    SPI_freetuptable(SPI_tuptable);
    *ids_out = pop_ids;
    *users_out = pop_users;
    return n_pop;
}

// Scores n_users histories (cells as user_cells leaves them) among the items
// f allows: the top_n collaborative items of each, then the popularity fill,
// read in rank order only as far as some list needs it.  Lists go to
// out[j * top_n ...], their lengths to n_out[j].
static void score_lists(int64 model_id, const UserEvent* cells, int n_cells, const int* first, int max_cells,
                        int n_users, int top_n, bool exclude_seen, const recsys::ItemFilter* f,
                        recsys::Recommendation* out, int* n_out)
{
    NeighborTable nb;
    read_neighbors(model_id, cells, n_cells, &nb);
    recsys::HistoryItem* h_item = (recsys::HistoryItem*) palloc(sizeof(recsys::HistoryItem) * Max(max_cells, 1));
    int32* seen = (int32*) palloc(sizeof(int32) * Max(max_cells, 1));
    bool short_list = false;
    for (int j = 0; j < n_users; j++) {
        CHECK_FOR_INTERRUPTS();
        int n_hist, n_seen;
        split_cells(cells, first[j], first[j + 1], h_item, &n_hist, seen, &n_seen);
        recsys::Recommendation* o = out + (size_t) j * top_n;
        int n = 0;
        core_call_or_error("recommending", [&] {
            std::vector<recsys::HistoryItem> history(h_item, h_item + n_hist);
            std::vector<int32_t> also_seen(seen, seen + n_seen);
            auto lookup = [&](int32_t item) { return neighbors_in(&nb, item); };
            auto recs = recsys::recommend_cf(history, lookup, top_n, exclude_seen, also_seen, *f);
            n = (int) std::min(recs.size(), (size_t) top_n);
            std::copy(recs.begin(), recs.begin() + n, o);
        });
        n_out[j] = n;
        short_list = short_list || n < top_n;
    }
    if (!short_list)
        return;

    // The popularity fill.  Without an allowed set, top_n + max_cells +
    // n_denied entries are enough: a list skips at most its history and seen
    // items, its listed items and the denied ones.  With one, read on in
    // growing chunks until every list is full or the list ends.  From the
    // popularity cache, the list walked with an allowed set holds only the
    // allowed items (in rank order: the fill skips the others anyway).
    const int32* list_ids = NULL;
    const int32* list_users = NULL;
    int n_list = 0;
    bool cached = pop_cache_ready(model_id);
    if (cached && f->allowed != NULL)
        pop_allowed(f, &list_ids, &list_users, &n_list);
    else if (cached) {
        list_ids = pop_cache.ids;
        list_users = pop_cache.users;
        n_list = pop_cache.n;
    }
    int64 chunk = (int64) top_n + max_cells + (int64) f->n_denied;
    int32 after = PG_INT32_MIN;   // reading: the last rank read
    int from = 0;                 // cached: the next entry of the list
    for (;;) {
        int limit = (int) Min(chunk, (int64) PG_INT32_MAX);
        int n_pop;
        const int32* pop_ids;
        const int32* pop_users;
        if (cached) {
            n_pop = Min(limit, n_list - from);
            pop_ids = list_ids + from;
            pop_users = list_users + from;
            from += n_pop;
        } else
            n_pop = read_popular_chunk(model_id, &after, limit, &pop_ids, &pop_users);
        short_list = false;
        for (int j = 0; j < n_users; j++) {
            if (n_out[j] >= top_n)
                continue;
            CHECK_FOR_INTERRUPTS();
            int n_hist, n_seen;
            split_cells(cells, first[j], first[j + 1], h_item, &n_hist, seen, &n_seen);
            recsys::Recommendation* o = out + (size_t) j * top_n;
            int n = n_out[j];
            core_call_or_error("recommending", [&] {
                std::vector<recsys::Recommendation> recs(o, o + n);
                std::vector<recsys::HistoryItem> history(h_item, h_item + n_hist);
                std::vector<int32_t> also_seen(seen, seen + n_seen);
                std::vector<int32_t> pids(pop_ids, pop_ids + n_pop);
                std::vector<int32_t> pusers(pop_users, pop_users + n_pop);
                recsys::fill_popular(recs, history, pids, pusers, top_n, exclude_seen, also_seen, *f);
                n = (int) std::min(recs.size(), (size_t) top_n);
                std::copy(recs.begin(), recs.begin() + n, o);
            });
            n_out[j] = n;
            short_list = short_list || n < top_n;
        }
        if (!short_list || n_pop < limit || f->allowed == NULL)
            break;
        chunk = Min(chunk * 4, (int64) 1 << 20);
    }
}

// Emits one list as rows (user id first when with_user).
static void emit_list(ReturnSetInfo* rsinfo, int64 model_id, Oid item_type, bool with_user, Datum user,
                      const recsys::Recommendation* recs, int n)
{
    int32* idx = (int32*) palloc(sizeof(int32) * Max(n, 1));
    Datum* ids = (Datum*) palloc(sizeof(Datum) * Max(n, 1));
    for (int r = 0; r < n; r++)
        idx[r] = recs[r].item;
    item_ids_of(model_id, item_type, idx, n, ids);
    for (int r = 0; r < n; r++) {
        Datum values[5];
        bool nulls[5] = {false, false, false, false, false};
        int c = 0;
        if (with_user)
            values[c++] = user;
        values[c++] = ids[r];
        values[c++] = Float8GetDatum(recs[r].score);
        values[c++] = Int32GetDatum(r + 1);
        values[c++] = CStringGetTextDatum(recs[r].from_cf ? "cf" : "popular");
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }
    pfree(idx);
    pfree(ids);
}

// recsys_recommend(user_ids <user type>[], top_n int, exclude_seen bool,
//                  include_items <item type>[], exclude_items <item type>[])
//   -> (user_id, product_id, score, rank, source)
extern "C" Datum recsys_recommend(PG_FUNCTION_ARGS)
{
    int n_users, top_n;
    bool exclude_seen;
    ReqUser* users = read_user_ids(fcinfo, &n_users, &top_n, &exclude_seen);
    ArrayArg inc, exc;
    read_array_arg(fcinfo, 3, "include_items", RECSYS_MAX_FILTER_ITEMS, &inc);
    read_array_arg(fcinfo, 4, "exclude_items", RECSYS_MAX_FILTER_ITEMS, &exc);

    InitMaterializedSRF(fcinfo, 0);
    ReturnSetInfo* rsinfo = (ReturnSetInfo*) fcinfo->resultinfo;
    if (n_users == 0)
        return (Datum) 0;
    Oid user_type = TupleDescAttr(rsinfo->setDesc, 0)->atttypid;
    Oid item_type = TupleDescAttr(rsinfo->setDesc, 1)->atttypid;

    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "recsys: SPI_connect failed");

    // The active model, and the events of every requested user at call
    // time (with the model's weights and decay).
    ActiveModel model;
    active_model_read(&model);
    check_model_types(&model, user_type, item_type, "recsys_recommend");
    int64 model_id = model.model_id;
    recsys::ItemFilter filter;
    build_filter(&model, item_type, &inc, &exc, &filter);
    SourceRel src;
    active_model_source(&model, &src);
    Datum* ids = (Datum*) palloc(sizeof(Datum) * n_users);
    IdKey* keys = (IdKey*) palloc(sizeof(IdKey) * n_users);
    for (int i = 0; i < n_users; i++) {
        ids[i] = users[i].id;
        keys[i] = users[i].key;
    }
    int n_ev;
    Oid item_coltype;
    UserEvent* ev = read_user_events(&model, &src, ids, keys, n_users, &n_ev, &item_coltype);
    int* first;
    int max_cells;
    int n_cells = user_cells(ev, n_ev, n_users, &first, &max_cells);

    recsys::Recommendation* out =
        (recsys::Recommendation*) palloc(sizeof(recsys::Recommendation) * (size_t) n_users * top_n);
    int* n_out = (int*) palloc(sizeof(int) * n_users);
    score_lists(model_id, ev, n_cells, first, max_cells, n_users, top_n, exclude_seen, &filter, out, n_out);

    // Rows in input order.
    ReqUser** order = (ReqUser**) palloc(sizeof(ReqUser*) * n_users);
    for (int j = 0; j < n_users; j++)
        order[j] = &users[j];
    qsort(order, n_users, sizeof(ReqUser*), cmp_first_pos);
    for (int o = 0; o < n_users; o++) {
        int j = (int) (order[o] - users);
        emit_list(rsinfo, model_id, item_type, true, users[j].id, out + (size_t) j * top_n, n_out[j]);
    }
    SPI_finish();
    return (Datum) 0;
}

// recsys_recommend_for_items(item_ids <item type>[], top_n int,
//     weights float8[], include_items <item type>[], exclude_items <item type>[])
//   -> (product_id, score, rank, source)
// The given items are the history (weight 1 each, or the given weights);
// the items the model does not know are ignored.
extern "C" Datum recsys_recommend_for_items(PG_FUNCTION_ARGS)
{
    if (PG_ARGISNULL(0))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                        errmsg("item_ids must not be NULL"),
                        errhint("Pass the basket's items, e.g. ARRAY[10, 25, 42].")));
    if (PG_ARGISNULL(1))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("top_n must not be NULL")));
    int top_n = PG_GETARG_INT32(1);
    if (top_n < 1 || top_n > RECSYS_MAX_TOP_N)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("top_n must be between 1 and %d, not %d", RECSYS_MAX_TOP_N, top_n)));
    ArrayArg items, weights, inc, exc;
    read_array_arg(fcinfo, 0, "item_ids", RECSYS_MAX_BASKET_ITEMS, &items);
    read_array_arg(fcinfo, 2, "weights", RECSYS_MAX_BASKET_ITEMS, &weights);
    read_array_arg(fcinfo, 3, "include_items", RECSYS_MAX_FILTER_ITEMS, &inc);
    read_array_arg(fcinfo, 4, "exclude_items", RECSYS_MAX_FILTER_ITEMS, &exc);
    if (weights.given && weights.n != items.n)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("weights has %d elements but item_ids has %d", weights.n, items.n),
                        errhint("Give one weight per item, or leave weights NULL for weight 1 each.")));
    for (int i = 0; weights.given && i < weights.n; i++) {
        double w = DatumGetFloat8(weights.elems[i]);
        if (!(w > 0) || std::isinf(w))
            ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                            errmsg("weights must be positive and finite, not %g (element %d)", w, i + 1)));
    }

    InitMaterializedSRF(fcinfo, 0);
    ReturnSetInfo* rsinfo = (ReturnSetInfo*) fcinfo->resultinfo;
    Oid item_type = TupleDescAttr(rsinfo->setDesc, 0)->atttypid;
    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "recsys: SPI_connect failed");
    ActiveModel model;
    active_model_read(&model);
    check_model_types(&model, InvalidOid, item_type, "recsys_recommend_for_items");
    int64 model_id = model.model_id;
    recsys::ItemFilter filter;
    build_filter(&model, item_type, &inc, &exc, &filter);

    // The basket as the cells of one user.
    int32* idx = item_indices_of(model_id, item_type, &items);
    UserEvent* cells = (UserEvent*) palloc0(sizeof(UserEvent) * Max(items.n, 1));
    for (int i = 0; i < items.n; i++) {
        cells[i].user = 0;
        cells[i].item = idx[i];
        cells[i].known = item_type == INT4OID || idx[i] >= 0;
        cells[i].w = weights.given ? DatumGetFloat8(weights.elems[i]) : 1.0;
    }
    int* first;
    int max_cells;
    int n_cells = user_cells(cells, items.n, 1, &first, &max_cells);
    recsys::Recommendation* out = (recsys::Recommendation*) palloc(sizeof(recsys::Recommendation) * top_n);
    int n_out;
    score_lists(model_id, cells, n_cells, first, max_cells, 1, top_n, true, &filter, out, &n_out);
    emit_list(rsinfo, model_id, item_type, false, (Datum) 0, out, n_out);
    SPI_finish();
    return (Datum) 0;
}

// recsys_explain(user_id <user type>, product_id <item type>)
//   -> (history_item, weight, similarity, contribution, source)
// One row per history item whose neighbours include the product, adding up
// to the score recsys_recommend gives it; without a collaborative score, one
// row with the product's popularity (source 'popular'); none for a product
// the model does not know.
extern "C" Datum recsys_explain(PG_FUNCTION_ARGS)
{
    if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                        errmsg("user_id and product_id must not be NULL")));
    InitMaterializedSRF(fcinfo, 0);
    ReturnSetInfo* rsinfo = (ReturnSetInfo*) fcinfo->resultinfo;
    Oid user_type = get_fn_expr_argtype(fcinfo->flinfo, 0);
    Oid arg_item_type = get_fn_expr_argtype(fcinfo->flinfo, 1);
    Oid item_type = TupleDescAttr(rsinfo->setDesc, 0)->atttypid;
    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "recsys: SPI_connect failed");
    ActiveModel model;
    active_model_read(&model);
    check_model_types(&model, user_type, item_type, "recsys_explain");
    int64 model_id = model.model_id;
    int32 product;
    if (item_type == INT4OID) {
        product = PG_GETARG_INT32(1);
    } else {
        char* key = id_key_text(PG_GETARG_DATUM(1), arg_item_type);
        item_indices(model_id, &key, 1, &product);
        if (product < 0) {
            SPI_finish();
            return (Datum) 0;   // a product the model does not know has no score
        }
    }
    SourceRel src;
    active_model_source(&model, &src);
    Datum user = PG_GETARG_DATUM(0);
    IdKey key = id_key_of(user, user_type);
    int n_ev;
    Oid item_coltype;
    UserEvent* ev = read_user_events(&model, &src, &user, &key, 1, &n_ev, &item_coltype);
    int* first;
    int max_cells;
    int n_cells = user_cells(ev, n_ev, 1, &first, &max_cells);
    NeighborTable nb;
    read_neighbors(model_id, ev, n_cells, &nb);
    recsys::HistoryItem* h_item = (recsys::HistoryItem*) palloc(sizeof(recsys::HistoryItem) * Max(max_cells, 1));
    int32* seen = (int32*) palloc(sizeof(int32) * Max(max_cells, 1));
    int n_hist, n_seen;
    split_cells(ev, first[0], first[1], h_item, &n_hist, seen, &n_seen);
    recsys::Contribution* parts = (recsys::Contribution*) palloc(sizeof(recsys::Contribution) * Max(n_hist, 1));
    int n_parts = 0;
    double score = 0;
    core_call_or_error("explaining", [&] {
        std::vector<recsys::HistoryItem> history(h_item, h_item + n_hist);
        auto lookup = [&](int32_t item) { return neighbors_in(&nb, item); };
        auto c = recsys::explain(history, lookup, product);
        n_parts = (int) std::min(c.size(), (size_t) Max(n_hist, 1));
        std::copy(c.begin(), c.begin() + n_parts, parts);
        for (int i = 0; i < n_parts; i++)
            score += parts[i].contribution;
    });
    if (n_parts > 0 && score > 0) {
        int32* hidx = (int32*) palloc(sizeof(int32) * n_parts);
        Datum* hids = (Datum*) palloc(sizeof(Datum) * n_parts);
        for (int i = 0; i < n_parts; i++)
            hidx[i] = parts[i].history_item;
        item_ids_of(model_id, item_type, hidx, n_parts, hids);
        for (int i = 0; i < n_parts; i++) {
            Datum values[5];
            bool nulls[5] = {false, false, false, false, false};
            values[0] = hids[i];
            values[1] = Float8GetDatum(parts[i].weight);
            values[2] = Float8GetDatum(parts[i].similarity);
            values[3] = Float8GetDatum(parts[i].contribution);
            values[4] = CStringGetTextDatum("cf");
            tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
        }
    } else {
        int32 pop;
        if (popularity_of(model_id, product, &pop)) {
            Datum values[5];
            bool nulls[5] = {true, true, true, false, false};
            values[0] = values[1] = values[2] = (Datum) 0;
            values[3] = Float8GetDatum((double) pop);
            values[4] = CStringGetTextDatum("popular");
            tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
        }
    }
    SPI_finish();
    return (Datum) 0;
}
