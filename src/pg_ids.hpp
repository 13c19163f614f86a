// pg_ids.hpp - ids in the source's own types at the serving functions
// (issue #7): keys of any id type (integer, bigint, text, uuid), the model's
// item indices and back, and the users' events read at call time.
//
// The serving functions are declared by recsys.create_serving_functions with
// the source's id types; the C functions read those types from their own
// declaration (argument and result types), so one C function serves every
// type pair.  Integer item ids are their own index; other item ids are
// mapped through recsys.item_keys, the dictionary training wrote.
//
// C-style code (see pg_guard.hpp): call with SPI connected.
#pragma once

#include "pg_model.hpp"

extern "C" {
#include "datatype/timestamp.h"
}

// One id: an integer (served as integer or bigint) or bytes (text, uuid).
struct IdKey {
    int64 i;
    const char* p;
    int n;
};

// Compares two ids of the same kind (bytes when p is set).
int id_key_cmp(const IdKey* a, const IdKey* b);

// The id a Datum of column type `type` holds (text and uuid point into
// the Datum, detoasted in the current memory context).
IdKey id_key_of(Datum v, Oid type);

// The Datum of served type `served` for an id read from a column of
// `coltype` (integers widened or narrowed, varchar as text); `ok` false when
// an integer does not fit integer.
Datum id_datum_as(Datum v, Oid coltype, Oid served, bool* ok);

// The text form recsys.item_keys stores for an id of served type `served`.
char* id_key_text(Datum v, Oid coltype);

// Checks that the active model's id types are the ones the calling function
// is declared with (42804 otherwise, naming both).
void check_model_types(const ActiveModel* m, Oid user_type, Oid item_type, const char* fn);

// Indices of the given item keys (text forms) in the model; -1 for keys the
// model does not know.  Only for models whose items are not integers.
void item_indices(int64 model_id, char** keys, int n, int32* out);

// The ids (Datums of served type `item_type`) of model item indices.
// Integer items are their own index.
void item_ids_of(int64 model_id, Oid item_type, const int32* idx, int n, Datum* out);

// One event of a user read at call time: the user's position among the
// requested ids, the item's model index (-1: not in the model), the
// weight(event type) * value with the model's decay from now() (0 for
// types without a weight), the event time, and whether the type has a
// weight at all.
struct UserEvent {
    int user;
    int32 item;
    bool known;         // the item is in the model (item is its index)
    double w;
    TimestampTz time;
    bool weighted;
    Datum item_datum;   // the item id as the source holds it (coltype below)
};

// Reads the events of the `n` distinct users `users` (Datums of the served
// user type, sorted by id_key_cmp of their keys in `keys`) from the model's
// source.  Returns palloc'd events and the item column's type.
UserEvent* read_user_events(const ActiveModel* m, const SourceRel* src, const Datum* users, const IdKey* keys,
                            int n, int* n_out, Oid* item_coltype);
