// pg_read.hpp - training's reading path (issues #7 and #9): the plainest
// query over the mapped events relation (source_events_sql: SOURCE_EVENTS, no
// GROUP BY, no CASE, no join; over a plain table every column in its place,
// so that no projection runs and the rows are read from the heap tuples in
// place), streamed through the executor as the relation's owner, and
// aggregated in C++ (core_source.hpp): dense indices for the user and item
// keys, w(u,i) = sum weight(event type) * value, decayed when the mapping has
// a half-life, cells with w <= 0 left out.
//
// Memory: the aggregation and the dictionaries get half of
// maintenance_work_mem (the cell buffer, which spills, has the other half).
// The source is scanned once.  When the aggregation outgrows its half, the
// events from then on (and the aggregation so far, each cell as one event
// that restores it exactly) are written to temporary files (BufFile) by a
// hash of the user, and each part is then aggregated from its file within
// the budget (a part that still does not fit is split in two): slower, never
// a failure, unless the item dictionary alone outgrows it.
//
// The dense indices follow the keys' order (integers by value, text and
// uuid by their bytes), users within each part: the matrix, and so the
// model's ties, do not depend on the physical order of the rows.
//
// C-style code (see pg_guard.hpp): call with SPI connected.
#pragma once

#include "pg_fetch.hpp"

namespace recsys {
class KeyDict;
}

struct EventsRead {
    int64 events;         // rows used: keys and time present, event type weighted (weight != 0)
    int64 ignored_null;   // rows with a NULL user, item or time
    int64 ignored_type;   // rows whose event type has no weight, or weight 0
    int64 cells_dropped;  // cells with w <= 0 (seen, not in the matrix)
    int64 scans;          // scans of the source (1)
    int64 parts;          // parts of the users aggregated from temporary files (0: all in memory)
    int64 users;          // distinct users with a used event
    TimestampTz newest;   // the newest used event (decay's reference)
    bool any;             // some event was used
    // The item dictionary: its obj is NULL when the items are integers
    // (their own index).
    OwnedByContext<recsys::KeyDict>* items;
};

// Evaluation's split of the same scan at a cutoff: the events before it make
// the matrix (and res->newest is the newest of them), the events in
// [cutoff, end) with a positive weight are the test touches, in the same user
// and item indices as the cells; events at or after `end` are not read (a
// validation window ends where the test window begins).  With keep_histories,
// while each part of the users is emitted, the cells of the users touched in
// the window are also kept aside in out->kept (pg_fetch.hpp), for scoring.
struct EventsSplit {
    TimestampTz cutoff;
    TimestampTz end;       // DT_NOEND: no end
    bool keep_histories;
    TouchBuffer touches;   // filled by read_events
    // Evaluation in one scan (find_cutoff): the cutoff is not known before
    // the scan; read_events finds the newest usable event (keys and time
    // present, event type weighted > 0: the newest SOURCE_MAX_TIME would
    // find) itself and asks cutoff_of for the cutoff (which errors out when
    // there is none), then sets `cutoff`.  The events within hold_days + 2
    // days of the newest so far are held back, by their keys (no dictionary
    // sees them), and each cell's are released in arrival order once they
    // are certainly before the cutoff, or split at it after the scan.  When
    // one scan cannot give exactly what the two-step read gives (see
    // pg_read.cpp: the users would be read in parts, a key or a value that
    // the read may reject, ...), the scan only finds the newest event, or
    // stops (by_query: cutoff_of runs SOURCE_MAX_TIME itself), and the
    // events are read a second time split at the cutoff, as before.
    bool find_cutoff;
    int hold_days;
    TimestampTz (*cutoff_of)(void* arg, bool by_query, bool found, TimestampTz newest);
    void* cutoff_arg;
    const char* two_scans;   // out: why the second scan was needed (NULL: one scan)
};

// Reads src's events with the weights w into out (from cell_buffer_init);
// split NULL: every event goes into the matrix.
void read_events(const SourceRel* src, const EventWeights* w, CellBuffer* out, EventsRead* res,
                 EventsSplit* split = NULL);

// Writes the keys of the items in item_ids[0..n) (indices of res->items)
// to recsys.item_keys under model_id; nothing when the items are integers.
void write_item_keys(int64 model_id, const SourceRel* src, const EventsRead* res, const int32* item_ids, int64 n);
