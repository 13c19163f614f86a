// pg_module.cpp - the module's identity for the server.
#include "pg_guard.hpp"

extern "C" {
#include "fmgr.h"

PG_MODULE_MAGIC;
}
