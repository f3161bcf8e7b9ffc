#!/usr/bin/env bash
# A full disk while writing outputs: train and simulate must fail with the system's reason and
# exit code 1 (not crash), leave no temporary file, and leave an existing output intact.
# The file-size limit (ulimit -f, with SIGXFSZ ignored) makes write() fail like a full disk.
set -u
eisim=$1 config=$2 dir=$3
rm -rf "$dir" && mkdir -p "$dir" && cd "$dir" || exit 1
fail() { echo "full_disk.sh: $*"; exit 1; }
"$eisim" train --config "$config" --out run.h5 --set train.epochs=1 >/dev/null 2>&1 || fail "setup run failed"
sum=$(md5sum run.h5)
for cmd in "train --config $config --out run.h5 --overwrite --set train.epochs=1" \
           "train --config $config --out new.h5 --set train.epochs=1" \
           "simulate --config $config --out sim.h5"; do
  out=$(bash -c "trap '' XFSZ; ulimit -f 8; exec $eisim $cmd" 2>&1)
  rc=$?
  echo "$cmd -> exit $rc: $(printf '%s\n' "$out" | tail -n 1)"
  [ $rc -eq 1 ] || fail "exit code $rc (expected 1)"
  printf '%s\n' "$out" | grep -q "File too large" || fail "the system's reason is not reported"
done
[ "$(md5sum run.h5)" = "$sum" ] || fail "the existing output was changed"
[ -z "$(ls | grep -E '\.tmp$')" ] || fail "temporary files left: $(ls)"
[ ! -e new.h5 ] && [ ! -e sim.h5 ] || fail "a partial output was left"
echo "full_disk.sh: all outputs failed cleanly"
