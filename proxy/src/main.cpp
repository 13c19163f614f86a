// main.cpp - recsys-proxy: HTTP/JSON server (Boost.Beast over Asio) in front
// of the recsys PostgreSQL extension.  The parts:
//   config.*    flags and RECSYS_* variables
//   app.*       the process: start checks, fd limit, signals, model polling, shutdown
//   server.*    listener and sessions (Beast)
//   routes.*    the route table and dispatch (method, auth, media type, CORS, HEAD)
//   handlers.*  one handler per route
//   db.*        the libpq pool and the SQL; services.hpp ties them for the handlers
//   api.*       parsing, validation and JSON (no network, no PostgreSQL)
#include <csignal>
#include <cstdio>
#include <exception>

#include "app.hpp"
#include "config.hpp"

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    rsproxy::Config cfg;
    std::string msg;
    bool exit_now = false;
    int rc = rsproxy::parse_config(argc, argv, cfg, msg, exit_now);
    if (exit_now) {
        std::fputs(msg.c_str(), rc == 0 ? stdout : stderr);
        return rc;
    }
    try {
        return rsproxy::run_proxy(cfg);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "recsys-proxy: fatal: %s\n", e.what());
        return 1;
    }
}
