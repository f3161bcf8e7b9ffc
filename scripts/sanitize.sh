#!/usr/bin/env bash
# The test suite under AddressSanitizer + UndefinedBehaviorSanitizer (run by .ci/run after
# scripts/test.sh). Any sanitizer report aborts the test that triggered it, so a clean run means
# no report. Usage: scripts/sanitize.sh [extra ctest arguments]
#   EISIM_ASAN_BUILD_DIR  build directory (default build-asan)
#   ASAN_OPTIONS, UBSAN_OPTIONS  override the defaults below
#
# - -O1 -g1: line tables only (faster to build than -g), usable stack traces; assertions stay on
#   (no -DNDEBUG), so Eigen's bounds checks run too.
# - No benchmarks, no quickstart-only targets: only the tests and the eisim binary they call.
# - The Python analysis tests and the clang-format check do not exercise C++ code compiled here:
#   they are excluded (scripts/test.sh runs them).
# - OpenMP: libgomp is not instrumented; its thread pool is not reported as a leak with GCC's
#   runtime, and the tests that use two threads run under ASan too.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install_deps.sh
build=${EISIM_ASAN_BUILD_DIR:-build-asan}
flags="-O1 -g1"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$flags" -DCMAKE_C_FLAGS_RELWITHDEBINFO="$flags" \
  -DEISIM_SANITIZE=ON -DEISIM_BUILD_TESTS=ON -DEISIM_BUILD_BENCH=OFF -DEISIM_FUZZ=OFF
cmake --build "$build" -j"$(nproc)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir "$build" --output-on-failure --no-tests=error -j"$(nproc)" \
  -E '^(analysis|style): ' "$@"
