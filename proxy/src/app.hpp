// app.hpp - the recsys-proxy process: checks the configuration against the
// database, raises the fd limit, serves until SIGTERM/SIGINT and shuts down
// within --shutdown-timeout.
#pragma once

#include "config.hpp"

namespace rsproxy {

// Returns the process exit status.
int run_proxy(const Config& cfg);

}  // namespace rsproxy
