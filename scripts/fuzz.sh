#!/usr/bin/env bash
# Build the libFuzzer targets (fuzz/, clang + ASan + UBSan) and run each for a while.
# Usage: scripts/fuzz.sh [seconds per target, default 600] [target ...]
#   targets: config (YAML config + --set), idx (Fashion-MNIST IDX reader), runfile (run files)
#   EISIM_FUZZ_BUILD_DIR  build directory (default build-fuzz)
#   EISIM_FUZZ_OUT        where the working corpora, logs and findings go (default
#                         <build dir>/out, outside git); findings are <out>/findings/<target>/crash-*
#   EISIM_FUZZ_JOBS       targets run at the same time (default 1)
#   EISIM_FUZZ_SEED       libFuzzer's -seed (CI fixes it, so that a smoke run explores the same
#                         inputs each time and fails only on a new bug, not by luck)
#   EISIM_FUZZ_KEEP_GOING=1  do not stop at the first finding (libFuzzer -fork=1, crashes,
#                         timeouts and out-of-memory inputs are saved and fuzzing goes on)
# First every file of fuzz/regressions/<target>/ (inputs that once failed, now fixed) and of the
# committed seed corpus fuzz/corpus/<target>/ is replayed; then the target is fuzzed from a copy
# of the seed corpus (the committed corpus is not modified; to update it, run libFuzzer with
# -merge=1 into fuzz/corpus/<target>, keeping it small). Exit status 1 if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config idx runfile)
build=${EISIM_FUZZ_BUILD_DIR:-build-fuzz}
out=${EISIM_FUZZ_OUT:-$build/out}
jobs=${EISIM_FUZZ_JOBS:-1}

# eisim's packages plus clang and libFuzzer (Debian: clang, libclang-rt-14-dev).
./scripts/install_deps.sh clang libclang-rt-14-dev
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1" \
  -DEISIM_FUZZ=ON -DEISIM_BUILD_TESTS=OFF -DEISIM_BUILD_BENCH=OFF -DEISIM_NATIVE=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target "${targets[@]/#/fuzz_}"

# Per target: longest input and per-input time limit.
declare -A max_len=([config]=4096 [idx]=8192 [runfile]=131072)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/fuzz/lsan.supp:print_suppressions=0}
extra_args=()
if [ -n "${EISIM_FUZZ_SEED:-}" ]; then extra_args+=(-seed="$EISIM_FUZZ_SEED"); fi
if [ "${EISIM_FUZZ_KEEP_GOING:-0}" = 1 ]; then
  extra_args+=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
fi
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_target() {
  local t=$1 bin="$build/fuzz/fuzz_$1"
  local corpus="$out/corpus/$t" findings="$out/findings/$t" log="$out/logs/$t.log"
  mkdir -p "$corpus" "$findings" "$out/logs"
  local replay=()
  for d in "fuzz/regressions/$t" "fuzz/corpus/$t"; do
    [ -d "$d" ] && replay+=($(find "$d" -type f ! -name '.*' | sort))
  done
  if [ ${#replay[@]} -gt 0 ] &&
     ! "$bin" -rss_limit_mb=2048 -timeout=30 "${replay[@]}" >"$out/logs/$t.replay.log" 2>&1; then
    echo "fuzz $t: FAILED replaying fuzz/regressions or fuzz/corpus (see $out/logs/$t.replay.log)"
    tail -30 "$out/logs/$t.replay.log"
    return 1
  fi
  local status=0
  "$bin" "$corpus" "fuzz/corpus/$t" -max_total_time="$seconds" -max_len="${max_len[$t]}" \
    -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=20 -print_final_stats=1 \
    -artifact_prefix="$findings/" -dict="fuzz/$t.dict" "${extra_args[@]}" >"$log" 2>&1 ||
    status=$?
  local runs eps cov ft corp crashes
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1) || true
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1) || true
  if [ -z "$runs" ]; then  # -fork mode: "#<runs>: cov: .. exec/s: .." status lines
    runs=$( (grep -o '^#[0-9]*: cov' "$log" || true) | tail -1 | tr -dc '0-9')
    eps=$( (grep -o 'exec/s:\? [0-9]*' "$log" || true) | tail -1 | cut -d' ' -f2)
  fi
  cov=$( (grep -o 'cov: [0-9]*' "$log" || true) | tail -1 | cut -d' ' -f2)
  ft=$( (grep -o 'ft: [0-9]*' "$log" || true) | tail -1 | cut -d' ' -f2)
  corp=$( (grep -o 'corp: [0-9/]*[a-zA-Z]*' "$log" || true) | tail -1 | cut -d' ' -f2)
  crashes=$(find "$findings" -type f | wc -l)
  echo "fuzz $t: ${seconds}s, ${runs:-?} executions (${eps:-?}/s), cov ${cov:-?}, ft ${ft:-?}," \
       "corpus ${corp:-?}, replayed ${#replay[@]}, findings in $findings: $crashes"
  if [ $status -ne 0 ]; then
    echo "fuzz $t: FINDING (exit $status); log $log:"
    grep -E 'ERROR|FINDING|SUMMARY|#[0-9]+ 0x|Test unit written|exiting' "$log" | head -40 || true
    return 1
  fi
}

failed=0
pids=()
for t in "${targets[@]}"; do
  run_target "$t" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$jobs" ]; then
    wait "${pids[0]}" || failed=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || failed=1; done
exit $failed
