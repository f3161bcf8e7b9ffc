#!/usr/bin/env bash
# Ctrl-C (SIGINT) and SIGTERM at many moments of a run: no temporary file is ever left behind and
# the output, if there is one, is a complete HDF5 file of eisim (it verifies as a checkpoint).
set -u
eisim=$1 config=$2 dir=$3
rm -rf "$dir" && mkdir -p "$dir" && cd "$dir" || exit 1
fail() { echo "interrupt.sh: $*"; exit 1; }
for i in $(seq 1 24); do
  sig=INT; [ $((i % 2)) -eq 0 ] && sig=TERM
  delay=$(awk -v i="$i" 'BEGIN { printf "%.3f", 0.03 + 0.05 * i }')
  "$eisim" train --config "$config" --out run$i.h5 --set train.epochs=8 --set data.train_limit=2048 >/dev/null 2>&1 &
  pid=$!
  sleep "$delay"
  kill -s $sig $pid 2>/dev/null
  wait $pid
  rc=$?
  left=$(ls | grep -E '\.tmp$')
  [ -z "$left" ] || fail "SIG$sig after ${delay}s left $left"
  if [ -e run$i.h5 ]; then
    /usr/bin/python3 -c "import h5py,sys; f=h5py.File(sys.argv[1],'r'); assert f.attrs['status'] in ('running','complete'), f.attrs['status']; f['checkpoint/checksum'][0]" run$i.h5 \
      || fail "run$i.h5 is not a complete file after SIG$sig at ${delay}s"
  fi
  echo "SIG$sig after ${delay}s: exit $rc, $( [ -e run$i.h5 ] && echo 'output intact' || echo 'no output yet')"
done
echo "interrupt.sh: no temporary file left in 24 interruptions"
