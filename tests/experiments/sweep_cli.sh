#!/usr/bin/env bash
# sweep_cli.sh EISIM CONFIG DIR SCENARIO: end-to-end checks of `eisim sweep` (exit codes, messages,
# child processes) on a very small grid (2 points, about 0.1 s each). Exits non-zero on failure.
set -u
eisim=$1 config=$2 dir=$3 scenario=$4
rm -rf "$dir"
mkdir -p "$dir"
small=(--set "sweep.out_dir=$dir/runs" --set "sweep.seeds=[1]" --set train.epochs=1
  --set data.train_limit=1024 --set data.test_limit=128 --set network.hidden_layers=1
  --set network.width=16 --set learning.lr_E=0.05 --set train.batch_size=16
  --set "simulate.images=[0]")

# expect RC REGEX COMMAND...: COMMAND exits with RC and its output matches REGEX.
expect() {
  local want=$1 regex=$2
  shift 2
  local out rc
  out=$("$@" 2>&1)
  rc=$?
  printf '%s\n' "$out" | tail -n 4
  if [ "$rc" -ne "$want" ]; then
    echo "FAIL: exit code $rc, expected $want: $*"
    exit 1
  fi
  if ! printf '%s\n' "$out" | grep -Eq -- "$regex"; then
    echo "FAIL: no line matches /$regex/: $*"
    exit 1
  fi
}

case $scenario in
  task-id-negative)
    expect 2 "task -1 is negative" "$eisim" sweep --config "$config" --task-id -1
    ;;
  no-action)
    expect 2 "nothing to do" "$eisim" sweep --config "$config"
    ;;
  merged-csv)
    expect 2 "must end in \.h5" "$eisim" sweep --config "$config" "${small[@]}" --local --merge \
      --merged "$dir/summary.csv"
    [ ! -e "$dir/runs/implicit_eps0.5_seed1.h5" ] || { echo "FAIL: trained before refusing"; exit 1; }
    ;;
  stale-jobs)
    # Two child processes; then an edited configuration is refused before any child starts,
    # and --rerun is passed down to the children.
    expect 0 "merged 2 runs" "$eisim" sweep --config "$config" "${small[@]}" --local --jobs 2 --merge
    expect 2 "network.width \(16 vs 12\)" "$eisim" sweep --config "$config" "${small[@]}" \
      --set network.width=12 --local --jobs 2 --merge
    expect 0 "2 to train again" "$eisim" sweep --config "$config" "${small[@]}" \
      --set network.width=12 --local --jobs 2 --rerun
    expect 0 "merged 2 runs" "$eisim" sweep --config "$config" "${small[@]}" \
      --set network.width=12 --merge
    expect 0 "^1 frozen_eps0.5_seed1 complete" "$eisim" sweep --config "$config" "${small[@]}" \
      --set network.width=12 --list
    expect 0 "stale: .*network.width \(12 vs 16\)" "$eisim" sweep --config "$config" "${small[@]}" \
      --list
    ;;
  busy)
    # A point locked by another process: --task-id exits 5 naming the lock; --local skips it.
    mkdir -p "$dir/runs"
    lock=$dir/runs/implicit_eps0.5_seed1.h5.lock
    /usr/bin/python3 -c '
import fcntl, os, struct, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0))
open(sys.argv[1] + ".held", "w").close()
time.sleep(60)' "$lock" &
    holder=$!
    for _ in $(seq 100); do [ -e "$lock.held" ] && break; sleep 0.1; done
    expect 5 "grid point implicit_eps0.5_seed1 is being written by another process \(lock $lock" \
      "$eisim" sweep --config "$config" "${small[@]}" --task-id 0
    expect 0 "1 running elsewhere" "$eisim" sweep --config "$config" "${small[@]}" --local --jobs 2
    kill "$holder"
    wait "$holder" 2>/dev/null
    [ ! -e "$dir/runs/implicit_eps0.5_seed1.h5" ] || { echo "FAIL: a locked point ran"; exit 1; }
    [ -e "$dir/runs/frozen_eps0.5_seed1.h5" ] || { echo "FAIL: the free point did not run"; exit 1; }
    expect 0 "1 to run" "$eisim" sweep --config "$config" "${small[@]}" --local
    ;;
  *)
    echo "unknown scenario $scenario"
    exit 1
    ;;
esac
echo "sweep_cli.sh $scenario: ok"
