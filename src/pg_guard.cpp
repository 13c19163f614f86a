// pg_guard.cpp - turns the C++ core's failures into PostgreSQL errors.
#include "pg_guard.hpp"

extern "C" {
#include "miscadmin.h"
}

// True once a cancel, statement_timeout or termination is pending.  Not
// InterruptPending alone: it is also set for requests a backend serves and
// goes on (ProcSignal barriers, catch-up and memory-context-logging
// requests...), which stopped long trainings in passes with a bogus
// "training was cancelled"; those are served by the next CHECK_FOR_INTERRUPTS.
bool recsys_interrupt_pending() noexcept
{
    return InterruptPending && (QueryCancelPending || ProcDiePending);
}

// The core's CancelCheck: a flag read, nothing more.
recsys::CancelCheck pg_cancel_check()
{
    return [] { return recsys_interrupt_pending(); };
}

// Raises err as an ereport.  Called C-style, after the C++ frames are gone.
void report_core_error(const CoreError* err, const char* what)
{
    switch (err->kind) {
    case CORE_CANCELLED:
        // The pending interrupt raises the proper error (57014 for a cancel
        // or timeout, 57P01 for termination).
        CHECK_FOR_INTERRUPTS();
        ereport(ERROR, (errcode(ERRCODE_QUERY_CANCELED),
                        errmsg("recsys: %s was cancelled", what)));
        break;
    case CORE_INVALID_INPUT:
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("recsys: %s: %s", what, err->message)));
        break;
    case CORE_OUT_OF_MEMORY:
        ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY),
                        errmsg("recsys: out of memory during %s", what),
                        errhint("Lower the neighbour count or train on fewer interactions.")));
        break;
    case CORE_INTERNAL:
    default:
        ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
                        errmsg("recsys: internal error during %s: %s", what, err->message)));
        break;
    }
    pg_unreachable();
}
