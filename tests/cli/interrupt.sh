#!/usr/bin/env bash
# Ctrl-C (SIGINT), SIGTERM and SIGHUP while an output is being written: the temporary file is
# removed, the process ends with the signal's status, and the output keeps its last complete
# state, which --resume verifies (checksum included). EISIM_TEST_DELAY_RENAME_MS holds every
# atomic write for a while between writing its temporary file and renaming it, so the signal
# lands exactly there. An ignored SIGHUP (nohup) stays ignored.
set -u
eisim=$1 config=$2 dir=$3
rm -rf "$dir" && mkdir -p "$dir" && cd "$dir" || exit 1
fail() { echo "interrupt.sh: $*"; exit 1; }
tmps() { ls | grep -E '\.tmp$'; }
# wait_tmp: wait until a temporary file exists (at most 60 s).
wait_tmp() {
  for _ in $(seq 1 600); do
    [ -n "$(tmps)" ] && return 0
    sleep 0.1
  done
  fail "no temporary file appeared"
}
# A background job of a script starts with SIGINT ignored; env --default-signal gives eisim the
# default disposition that an interactive Ctrl-C would meet.
run() {
  exec env --default-signal=INT,TERM,HUP EISIM_TEST_DELAY_RENAME_MS=1500 "$eisim" train \
    --config "$config" --set train.epochs=2 "$@" >/dev/null 2>&1
}

for sig in INT TERM HUP; do
  # 1. A signal during the first write: nothing is left, not even a partial output.
  (run --out first_$sig.h5) &
  pid=$!
  wait_tmp
  kill -s $sig $pid
  wait $pid
  rc=$?
  [ $rc -gt 128 ] || fail "SIG$sig during the first write: exit $rc, expected death by the signal"
  [ -z "$(tmps)" ] || fail "SIG$sig left $(tmps)"
  [ ! -e first_$sig.h5 ] || fail "SIG$sig during the first write left an output"
  # 2. A signal during the second write: the output keeps epoch 1, intact.
  (run --out second_$sig.h5) &
  pid=$!
  wait_tmp
  while [ ! -e second_$sig.h5 ] || [ -z "$(tmps)" ]; do sleep 0.05; done
  kill -s $sig $pid
  wait $pid
  rc=$?
  [ $rc -gt 128 ] || fail "SIG$sig during the second write: exit $rc"
  [ -z "$(tmps)" ] || fail "SIG$sig left $(tmps)"
  "$eisim" train --config "$config" --set train.epochs=2 --out second_$sig.h5 --resume >resume.log 2>&1 \
    || { cat resume.log; fail "the output interrupted by SIG$sig does not resume"; }
  grep -q "resuming second_$sig.h5 after epoch 1" resume.log || fail "SIG$sig: not resumed from epoch 1"
  echo "SIG$sig: exit $rc, no temporary file, the output kept epoch 1 and resumed"
done

# 3. nohup: an ignored SIGHUP stays ignored.
(trap '' HUP; exec env EISIM_TEST_DELAY_RENAME_MS=300 "$eisim" train --config "$config" \
   --set train.epochs=1 --out nohup.h5 >/dev/null 2>&1) &
pid=$!
wait_tmp
kill -s HUP $pid
wait $pid
rc=$?
[ $rc -eq 0 ] && [ -e nohup.h5 ] || fail "an ignored SIGHUP killed the run (exit $rc)"
echo "interrupt.sh: all interruptions cleaned up"
