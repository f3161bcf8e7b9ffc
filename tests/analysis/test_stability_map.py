#!/usr/bin/python3
"""analysis/stability_map.py against the simulate files it writes: on a tiny grid (2 points,
3 images, 4 interneurons per class) its table's class counts equal the `stability` datasets
counted here, it reuses existing files, and a missing binary is a one-line error.

Usage: test_stability_map.py EISIM_BINARY SCRATCH_DIR
"""

import os
import shutil
import subprocess
import sys

import h5py

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "analysis", "stability_map.py")


def main():
    eisim, scratch = sys.argv[1], sys.argv[2]
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    failed = []

    def check(ok, what):
        print(("ok    " if ok else "FAIL  ") + what)
        if not ok:
            failed.append(what)

    cmd = [sys.executable, SCRIPT, "--eisim", eisim, "--out", scratch, "--lambdas", "0.5",
           "--heterogeneity", "0", "1", "--images", "3", "--units", "4", "--jobs", "2"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    check(p.returncode == 0, f"stability_map.py exits 0 (exit {p.returncode}: {p.stderr[-500:]})")
    rows = {}
    for line in p.stdout.splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) == 10 and cells[0] == "0.5":
            rows[(cells[1], cells[2])] = cells
    for het in ("0", "1"):
        path = os.path.join(scratch, f"sim_l0.5_h{het}.h5")
        check(os.path.exists(path), f"the simulate file of heterogeneity {het} is kept")
        if not os.path.exists(path):
            continue
        with h5py.File(path, "r") as f:
            for layer in ("0", "1"):
                cls = [c.decode() for c in f[f"simulate/layer_{layer}/stability"][:]]
                row = rows.get((het, layer))
                expect = [str(cls.count(c)) for c in
                          ("stable", "unstable", "oscillatory", "marginal", "unchecked", "unknown")]
                check(row is not None and row[3:9] == expect,
                      f"heterogeneity {het}, layer {layer}: table counts {row and row[3:9]} "
                      f"equal the file's {expect}")
    mtime = os.path.getmtime(os.path.join(scratch, "sim_l0.5_h0.h5"))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    check(p.returncode == 0 and os.path.getmtime(os.path.join(scratch, "sim_l0.5_h0.h5")) == mtime,
          "a second run reuses the existing simulate files")
    p = subprocess.run([sys.executable, SCRIPT, "--eisim", os.path.join(scratch, "missing"),
                        "--out", scratch], capture_output=True, text=True, timeout=60)
    check(p.returncode == 2 and "not an executable" in p.stderr and "Traceback" not in p.stderr,
          "a missing eisim binary is a one-line error, exit 2")
    print(f"{len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
