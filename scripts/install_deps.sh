#!/usr/bin/env bash
# Installs what recsys needs to build, test and run on Debian bookworm (as root).
# Idempotent: skips apt when everything is already there.
set -euo pipefail
PKGS=(
    build-essential pkg-config
    postgresql-15 postgresql-server-dev-15 libpq-dev postgresql-15-cron
    libeigen3-dev libgtest-dev nlohmann-json3-dev libcpp-httplib-dev libboost-dev
    clang libclang-rt-14-dev
    bc wrk hyperfine python3-fastapi python3-uvicorn python3-psycopg2
    chromium nodejs npm
    prometheus
)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm may come from elsewhere than Debian's packages: accept them on PATH.
if command -v node >/dev/null && command -v npm >/dev/null; then
    tmp=(); for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || tmp+=("$p"); done
    missing=("${tmp[@]+"${tmp[@]}"}")
fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "install_deps: missing packages (${missing[*]}); run as root" >&2; exit 1
    fi
    echo "install_deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
