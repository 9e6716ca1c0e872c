#!/usr/bin/env bash
# Builds keyfleet into build/ (release with debug info). Usage: scripts/build.sh [extra cmake args]
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKF_TEST_HOOKS=OFF "$@" > /dev/null
cmake --build build -j"$(nproc)"
