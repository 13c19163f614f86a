// pg_guard.hpp - the one place where C++ and PostgreSQL meet.
//
// The rules every pg_*.cpp file follows:
//  1. Code that calls PostgreSQL (SPI, palloc, ereport, detoasting) is written
//     C-style: no C++ object with a destructor is alive in any frame it runs
//     in, so an ereport(ERROR) longjmp skips nothing that needed cleaning up.
//  2. Code that calls the C++ core runs only inside core_call(), which calls
//     no PostgreSQL function, catches every exception and hands back a plain
//     CoreError.  report_core_error() then raises it as an ereport once the
//     C++ frames are gone (a cancel becomes CHECK_FOR_INTERRUPTS()).
//  3. A C++ object that must outlive one core_call() is owned by a memory
//     context (OwnedByContext): the context's reset - also on error - deletes it.
//
// Include this before postgres.h.
#pragma once

#include <cstddef>
#include <exception>
#include <new>

#include "core.hpp"

extern "C" {
#include "postgres.h"
#include "utils/memutils.h"
}

enum CoreErrorKind {
    CORE_OK = 0,
    CORE_CANCELLED,
    CORE_INVALID_INPUT,
    CORE_OUT_OF_MEMORY,
    CORE_INTERNAL
};

// What a failed core_call() leaves behind: plain data, safe to carry across
// the boundary.
struct CoreError {
    CoreErrorKind kind;
    char message[512];
};

// Copies a message into err (no snprintf: port.h redefines it below).
inline void core_error_set(CoreError* err, CoreErrorKind kind, const char* msg) noexcept
{
    err->kind = kind;
    size_t i = 0;
    for (; msg != nullptr && msg[i] != '\0' && i + 1 < sizeof err->message; i++)
        err->message[i] = msg[i];
    err->message[i] = '\0';
}

// Runs f(), which must not call PostgreSQL; returns false and fills err when
// it throws.
template <typename F>
bool core_call(CoreError* err, F&& f) noexcept
{
    err->kind = CORE_OK;
    err->message[0] = '\0';
    try {
        f();
        return true;
    } catch (const recsys::Cancelled&) {
        err->kind = CORE_CANCELLED;
    } catch (const recsys::InvalidInput& e) {
        core_error_set(err, CORE_INVALID_INPUT, e.what());
    } catch (const std::bad_alloc&) {
        err->kind = CORE_OUT_OF_MEMORY;
    } catch (const std::exception& e) {
        core_error_set(err, CORE_INTERNAL, e.what());
    } catch (...) {
        core_error_set(err, CORE_INTERNAL, "unknown C++ exception");
    }
    return false;
}

// Raises the error a core_call() left (never returns); `what` names the work.
pg_attribute_noreturn() void report_core_error(const CoreError* err, const char* what);

// Runs f via core_call and reports a failure at once.  f must not call
// PostgreSQL; the caller's frame must hold no C++ objects (rule 1).
template <typename F>
inline void core_call_or_error(const char* what, F&& f)
{
    CoreError err;
    if (!core_call(&err, static_cast<F&&>(f)))
        report_core_error(&err, what);
}

// The cancel check handed to the core: true once a cancel, timeout or
// termination is pending (QueryCancelPending or ProcDiePending, not any
// pending interrupt).  Reads flags only; calls no PostgreSQL function.
bool recsys_interrupt_pending() noexcept;
recsys::CancelCheck pg_cancel_check();

// A heap object deleted when a memory context is reset or deleted, or
// earlier by release().
template <typename T>
struct OwnedByContext {
    MemoryContextCallback cb;
    T* obj;

    static void destroy(void* arg) noexcept
    {
        auto* self = static_cast<OwnedByContext*>(arg);
        delete self->obj;
        self->obj = nullptr;
    }

    // Allocates the holder in `cxt` (may ereport) and registers its callback;
    // obj is set later, inside a core_call.
    static OwnedByContext* create(MemoryContext cxt)
    {
        auto* self = static_cast<OwnedByContext*>(MemoryContextAllocZero(cxt, sizeof(OwnedByContext)));
        self->cb.func = &OwnedByContext::destroy;
        self->cb.arg = self;
        MemoryContextRegisterResetCallback(cxt, &self->cb);
        return self;
    }

    void release() noexcept { destroy(this); }
};
