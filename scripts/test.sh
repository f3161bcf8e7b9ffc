#!/usr/bin/env bash
# The README's test command: install what is missing, build, run every test (CTest).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install_deps.sh
build=${EISIM_BUILD_DIR:-build}
# Tests ON explicitly: scripts/quickstart.sh configures the same build directory with
# EISIM_BUILD_TESTS=OFF and CMake's cache would otherwise keep that (issue 9, defect 13).
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DEISIM_BUILD_TESTS=ON
cmake --build "$build" -j"$(nproc)"
# Zero tests is a failure, not a pass.
ctest --test-dir "$build" --output-on-failure --no-tests=error -j"$(nproc)"
