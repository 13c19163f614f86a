#!/usr/bin/env bash
# Fuzzes recsys-proxy's request parser with libFuzzer (clang) for a bounded
# time: scripts/fuzz.sh [seconds]   (default 60).  Exits non-zero on a crash,
# leaving the crashing input in proxy/build/.
set -euo pipefail
cd "$(dirname "$0")/.."
make -C proxy fuzz FUZZ_SECONDS="${1:-60}"
