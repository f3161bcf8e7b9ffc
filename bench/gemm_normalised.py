#!/usr/bin/env python3
"""Compare two bench_train builds by their perf samples per GEMM sample.

The default circuit's epoch is about half Eigen's float GEMM (gebp kernel and packing), which is
the same work in any two builds of eisim with the same Eigen and network. On a shared machine the
wall and CPU times of a run vary by +-15 % between runs (bench/README.md), but a slow run is slow
in its GEMM too: perf's samples of the whole run divided by its samples in the GEMM cancel most
of that noise. Runs the two binaries alternately under `perf record` (cpu-clock) and prints, per
run, total / GEMM samples and, at the end, the ratio of the means with the symbols that differ
most (per 1000 GEMM samples).

    bench/gemm_normalised.py --old OLD/bench_train --new NEW/bench_train --rounds 3 \
        -- --rule implicit --batch 32 --threads 1 --reps 5 --profile 0 --gemm-seconds 0 \
           --limit 20000

Arguments after `--` go to both binaries; `--new-args` adds arguments for the new one only
(e.g. `--set fixed_point.stability=off`, a key the old build does not know).
Needs `perf` (linux-perf) and permission to record (perf_event_paranoid <= 2 for user space).
"""
import argparse
import collections
import os
import subprocess
import sys
import tempfile


def is_gemm(symbol):
    return "gebp_kernel" in symbol or "gemm_pack" in symbol


def samples_by_symbol(data):
    out = subprocess.run(
        ["perf", "report", "-i", data, "-n", "--no-children", "--sort", "symbol", "--stdio"],
        capture_output=True, text=True, check=True).stdout
    counts = collections.defaultdict(int)
    for line in out.splitlines():
        if line.startswith("#") or "%" not in line:
            continue
        parts = line.split()
        try:
            n = int(parts[1])
        except (IndexError, ValueError):
            continue
        counts[" ".join(parts[3:])[:100]] += n
    return counts


def record(binary, args, data):
    cmd = ["perf", "record", "-q", "-F", "4000", "-o", data, binary] + args
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    counts = samples_by_symbol(data)
    gemm = sum(n for s, n in counts.items() if is_gemm(s))
    if gemm == 0:
        sys.exit(f"{binary}: no GEMM samples (is it a bench_train run of the default circuit?)")
    return counts, gemm


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True)
    ap.add_argument("--new", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--new-args", default="", help="extra arguments for the new binary")
    ap.add_argument("--top", type=int, default=15, help="symbols to list")
    ap.add_argument("args", nargs=argparse.REMAINDER)
    o = ap.parse_args()
    common = o.args[1:] if o.args[:1] == ["--"] else o.args
    per = {"old": [], "new": []}
    sym = {"old": collections.defaultdict(float), "new": collections.defaultdict(float)}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(o.rounds):
            for which, binary, extra in (("old", o.old, []), ("new", o.new, o.new_args.split())):
                counts, gemm = record(binary, common + extra, os.path.join(tmp, which + ".data"))
                total = sum(counts.values())
                per[which].append(total / gemm)
                for s, n in counts.items():
                    sym[which][s] += 1000.0 * n / gemm / o.rounds
                print(f"round {r + 1} {which}: {total} samples, {gemm} in GEMM, "
                      f"total/GEMM {total / gemm:.4f}", flush=True)
    mo = sum(per["old"]) / len(per["old"])
    mn = sum(per["new"]) / len(per["new"])
    print(f"mean total/GEMM: old {mo:.4f}, new {mn:.4f}: new/old {mn / mo:.4f} "
          f"({100 * (mn / mo - 1):+.1f} %)")
    print(f"min  total/GEMM: old {min(per['old']):.4f}, new {min(per['new']):.4f}: new/old "
          f"{min(per['new']) / min(per['old']):.4f}")
    rows = sorted((sym["new"][s] - sym["old"][s], sym["old"][s], sym["new"][s], s)
                  for s in set(sym["old"]) | set(sym["new"]))
    print("per 1000 GEMM samples: new - old, old, new, symbol")
    for d, a, b, s in rows[:o.top] + rows[-o.top:]:
        print(f"{d:8.1f} {a:8.1f} {b:8.1f}  {s}")


if __name__ == "__main__":
    main()
