#!/usr/bin/env bash
# The README's test command: install what is missing, build, run every test (CTest).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install_deps.sh
build=${EISIM_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure -j"$(nproc)"
