#!/usr/bin/python3
"""eisim against the same network in PyTorch (bench/README.md, "bench_train").

Sections (run one, several, or `all`):
  agree    one forward pass, one backward pass and one SGD step on the same weights and batch,
           eisim (bench_train --dump) against PyTorch (eisim_torch.py dump); max abs/rel diffs
  timing   epochs of eisim and PyTorch alternating, implicit and frozen, 1 and 2 threads
  scaling  eisim (and PyTorch) time per epoch against the hidden width and the batch size
  memory   peak resident memory (/usr/bin/time -v) of an `eisim train` quickstart run

PyTorch is timed with two BLAS libraries: Debian's default for python3-torch (the reference
netlib BLAS, /usr/lib/x86_64-linux-gnu/blas) and OpenBLAS, put in front with LD_LIBRARY_PATH
(--openblas-dir; get it without touching the system's alternatives with
`apt-get download libopenblas0-openmp && dpkg-deb -x libopenblas0-openmp_*.deb DIR`).
A PyTorch from pip would bring its own optimised BLAS (MKL or OpenBLAS), so the OpenBLAS
column is the fair comparison.

All timings are of the training loop only (no process start, no data loading), as medians of
interleaved repetitions; the machine is shared, so the load average is printed with them.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TORCH = os.path.join(HERE, "eisim_torch.py")
PY = "/usr/bin/python3"
DEFAULT_OPENBLAS = "/tmp/openblas/root/usr/lib/x86_64-linux-gnu/openblas-openmp"


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def run(cmd, env=None, check=True):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
    return p


def result_line(out):
    """The key=value pairs of the RESULT line of bench_train or eisim_torch.py."""
    for line in out.splitlines():
        if line.startswith("RESULT"):
            return dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
    sys.exit("no RESULT line in:\n" + out)


class Runner:
    def __init__(self, args):
        self.args = args
        self.build = args.build
        self.bench = os.path.join(self.build, "bench", "bench_train")
        self.eisim = os.path.join(self.build, "eisim")
        for exe in (self.bench, self.eisim):
            if not os.access(exe, os.X_OK):
                sys.exit(f"{exe} not found: build with cmake --build {self.build} -j2")
        self.openblas = args.openblas_dir if os.path.isdir(args.openblas_dir) else None

    def torch_env(self, blas):
        env = dict(os.environ)
        if blas == "openblas":
            if not self.openblas:
                return None
            env["LD_LIBRARY_PATH"] = self.openblas + ":" + env.get("LD_LIBRARY_PATH", "")
        return env

    def eisim_epoch(self, rule, threads, limit, batch=None, width=None):
        cmd = [self.bench, "--rule", rule, "--threads", str(threads), "--reps", "1",
               "--profile", "0", "--gemm-seconds", "0", "--limit", str(limit)]
        if batch:
            cmd += ["--batch", str(batch)]
        if width:
            cmd += ["--width", str(width)]
        return result_line(run(cmd).stdout)

    def torch_epoch(self, rule, threads, limit, blas, batch=32, width=283):
        env = self.torch_env(blas)
        if env is None:
            return None
        cmd = [PY, TORCH, "train", "--rule", rule, "--threads", str(threads), "--reps", "1",
               "--limit", str(limit), "--batch", str(batch), "--width", str(width)]
        r = result_line(run(cmd, env=env).stdout)
        if blas == "openblas" and "openblas" not in r.get("blas", ""):
            sys.exit(f"OpenBLAS was not loaded (BLAS {r.get('blas')}); check --openblas-dir")
        return r


# ------------------------------------------------------------------------------------ agree


def hidden_v64(f, X):
    """Hidden pre-activations v (layers x (H, B)) in float64 from the weights in h5 file f:
    the exact default-circuit equilibrium sqrt(theta) LayerNorm(W_EX x + b), theta = 1."""
    out, h = [], X.T.astype(np.float64)
    l = 0
    while f"weights/layer_{l + 1}/W_EX" in f:
        e = np.asarray(f[f"weights/layer_{l}/W_EX"], np.float64) @ h + np.asarray(
            f[f"weights/layer_{l}/b"], np.float64)
        c = e - e.mean(axis=0)
        v = c / np.sqrt((c * c).mean(axis=0))
        out.append(v)
        h = np.maximum(v, 0.0)
        l += 1
    return out


def diff_table(files, names):
    """Rows (name, shape, max|ref|, then max abs diff and rel for each (a, b) pair)."""
    import h5py

    hs = {k: h5py.File(v, "r") for k, v in files.items()}
    rows = []
    for n in names:
        arr = {k: np.asarray(h[n], np.float64) for k, h in hs.items()}
        ref = arr["torch64"]
        row = [n, "x".join(map(str, ref.shape)) or "scalar", float(np.max(np.abs(ref)))]
        for a, b in (("eisim", "torch32"), ("eisim", "torch64"), ("torch32", "torch64")):
            d = float(np.max(np.abs(arr[a] - arr[b])))
            sc = float(np.max(np.abs(arr[b])))
            row += [d, d / sc if sc > 0 else d]
        rows.append(row)
    for h in hs.values():
        h.close()
    return rows


def agree(R, args):
    import h5py

    sys.path.insert(0, HERE)
    from eisim_torch import load_fashion_mnist

    tmp = tempfile.mkdtemp(prefix="eisim_agree_")
    weights = os.path.join(tmp, "weights.h5")
    cfg = os.path.join(REPO, "experiments", "compare_rules.yaml")
    # Weights after a short eisim training run, so that they are not the initial ones.
    run([R.eisim, "train", "--config", cfg, "--out", weights, "--set", "train.epochs=1",
         "--set", f"data.train_limit={args.agree_train}", "--set", "data.test_limit=100",
         "--set", "simulate.images=[0]", "--set", "simulate.t_max=10"])
    B = args.agree_batch
    X, y = load_fashion_mnist(args.data_dir, False, 4 * B)
    rng = np.random.default_rng(7)
    d = rng.uniform(-0.75, 0.75, size=(X.shape[0], 1)).astype(np.float32)
    X = np.clip(X + d, 0.0, 1.0).astype(np.float32)
    # ReLU kinks: a hidden unit with |v| below the float32 noise of v (about 5e-5 here: the
    # drive e = W_EX x is summed in float32 in a different order by Eigen and by the BLAS, and
    # LayerNorm divides its error by sd(e)) can be on different sides of 0 in the two programs;
    # its whole error term then differs. The "kink-free" batch leaves out samples with
    # |v| < margin in any hidden unit (float64 forward pass).
    with h5py.File(weights, "r") as f:
        vs = hidden_v64(f, X)
    near = np.min(np.stack([np.abs(v).min(axis=0) for v in vs]), axis=0)
    keep = np.flatnonzero(near >= args.kink_margin)[:B]
    batches = {"kink-free": keep, "unfiltered": np.arange(B)}
    print(f"weights: `eisim train` on {args.agree_train} samples (compare_rules.yaml, 1 epoch); "
          f"batch: test images with brightness jitter eps = 0.75")
    print(f"kink-free batch: the first {len(keep)} of the first {4 * B} test images whose hidden "
          f"|v| >= {args.kink_margin:g} everywhere ({int(np.sum(near[:B] < args.kink_margin))} of "
          f"the first {B} have a unit closer to the ReLU kink); unfiltered batch: the first {B}")
    print("diff = max |a - b|; rel = diff / max |b|; target: eisim vs PyTorch float32 within "
          "1e-4 (diff and rel);\nyes* = not within 1e-4 of PyTorch float32 but within 1e-4 of "
          "the float64 answer (PyTorch float32 is the one off)\n")
    ok = True
    for label, idx in batches.items():
        inp = os.path.join(tmp, f"in_{label}.h5")
        shutil.copy(weights, inp)
        with h5py.File(inp, "a") as f:
            f["batch/x"] = X[idx].T.astype(np.float64)  # exact float32 values, 784 x B
            f["batch/labels"] = y[idx]
        for rule in ("implicit", "frozen"):
            files = {k: os.path.join(tmp, f"{k}_{label}_{rule}.h5")
                     for k in ("eisim", "torch32", "torch64")}
            run([R.bench, "--dump", inp, "--out", files["eisim"], "--rule", rule])
            run([PY, TORCH, "dump", "--weights", inp, "--out", files["torch32"], "--rule", rule])
            run([PY, TORCH, "dump", "--weights", inp, "--out", files["torch64"], "--rule", rule,
                 "--double"])
            names = []
            with h5py.File(files["torch32"], "r") as ft:
                ft.visit(lambda n: names.append(n) if isinstance(ft[n], h5py.Dataset) else None)
            rows = diff_table(files, names)
            # A row passes if eisim is within 1e-4 of PyTorch float32, or else within 1e-4 of
            # the float64 answer (the difference is then PyTorch's own float32 rounding; marked).
            for r in rows:
                r.append("yes" if r[3] <= 1e-4 and r[4] <= 1e-4 else
                         "yes*" if r[5] <= 1e-4 and r[6] <= 1e-4 else "NO")
            w32 = max(max(r[3], r[4]) for r in rows)
            w64 = max(max(r[5], r[6]) for r in rows)
            passed = all(r[9] != "NO" for r in rows)
            if label == "kink-free":
                ok &= passed
            print(f"{label} batch ({len(idx)} samples), rule {rule}: "
                  f"{'PASS' if passed else 'FAIL'}; worst diff or rel: eisim vs PyTorch float32 "
                  f"{w32:.2e}, eisim vs float64 {w64:.2e}")
            if label != "kink-free" and not args.agree_verbose:
                for r in rows:
                    if r[9] != "yes":
                        print(f"  {r[0]}: eisim vs torch32 diff {r[3]:.1e} rel {r[4]:.1e}; eisim "
                              f"vs torch64 diff {r[5]:.1e} rel {r[6]:.1e}; torch32 vs torch64 "
                              f"diff {r[7]:.1e} rel {r[8]:.1e}")
                continue
            print(f"  {'quantity':24s} {'shape':>9s} {'max|f64|':>9s} | {'eisim vs torch32':>19s}"
                  f" | {'eisim vs torch64':>19s} | {'torch32 vs torch64':>19s} | ok")
            print(f"  {'':24s} {'':>9s} {'':>9s} | {'diff':>9s} {'rel':>9s} | {'diff':>9s} "
                  f"{'rel':>9s} | {'diff':>9s} {'rel':>9s} |")
            for r in rows:
                print(f"  {r[0]:24s} {r[1]:>9s} {r[2]:9.2e} | {r[3]:9.2e} {r[4]:9.2e} | "
                      f"{r[5]:9.2e} {r[6]:9.2e} | {r[7]:9.2e} {r[8]:9.2e} | {r[9]}")
        print()
    print("agreement (kink-free batch):", "all within 1e-4" if ok else "SOME EXCEED 1e-4")
    shutil.rmtree(tmp, ignore_errors=True)
    return ok


# ----------------------------------------------------------------------------------- timing


def timing(R, args):
    configs = [(rule, t) for t in args.threads for rule in ("implicit", "frozen")]
    times = {c: {"eisim": [], "openblas": [], "netlib": []} for c in configs}
    print(f"load average at the start: {load_average()}")
    print(f"eisim and PyTorch/OpenBLAS: {args.limit} samples per epoch; PyTorch/netlib: "
          f"{args.netlib_limit} samples; all times scaled linearly to a 60000-sample epoch\n")
    for rep in range(args.reps):
        for rule, t in configs:
            e = R.eisim_epoch(rule, t, args.limit)
            o = R.torch_epoch(rule, t, args.limit, "openblas")
            n = R.torch_epoch(rule, t, args.netlib_limit, "netlib") if args.netlib_limit else None
            c = times[(rule, t)]
            c["eisim"].append(float(e["epoch60k_s"]))
            c["openblas"].append(float(o["epoch60k_s"]) if o else None)
            c["netlib"].append(float(n["epoch60k_s"]) if n else None)
            print(f"rep {rep + 1} {rule:8s} {t} thr: eisim {c['eisim'][-1]:7.2f} s, torch/OpenBLAS "
                  f"{c['openblas'][-1] or float('nan'):7.2f} s, torch/netlib "
                  f"{c['netlib'][-1] or float('nan'):7.2f} s  (load {load_average()})", flush=True)
    print(f"\nload average at the end: {load_average()}\n")
    print("seconds per 60000-sample epoch, batch 32, width 283 (median of "
          f"{args.reps}; min-max in brackets); speed-up = PyTorch time / eisim time, "
          "median of the per-repetition ratios")
    head = (f"{'rule':8s} {'thr':>3s} {'eisim s':>17s} {'torch+OpenBLAS s':>19s} {'speed-up':>8s} "
            f"{'torch+netlib s':>19s} {'speed-up':>8s}")
    print(head)
    print("-" * len(head))

    def cell(v):
        v = [x for x in v if x is not None]
        if not v:
            return f"{'n/a':>17s}"
        return f"{statistics.median(v):6.2f} [{min(v):5.2f}-{max(v):5.2f}]"

    def speedup(base, other):
        r = [o / b for b, o in zip(base, other) if o is not None]
        return f"{statistics.median(r):7.2f}x" if r else "     n/a"

    for rule, t in configs:
        c = times[(rule, t)]
        print(f"{rule:8s} {t:3d} {cell(c['eisim']):>17s} {cell(c['openblas']):>19s} "
              f"{speedup(c['eisim'], c['openblas'])} {cell(c['netlib']):>19s} "
              f"{speedup(c['eisim'], c['netlib'])}")


# ---------------------------------------------------------------------------------- scaling


def scaling(R, args):
    rule = "implicit"
    points = [("width", w) for w in args.widths] + [("batch", b) for b in args.batches]
    res = {p: {"eisim": [], "torch": []} for p in points}
    print(f"load average at the start: {load_average()}")
    print(f"rule {rule}, 1 thread, {args.scaling_limit} samples per epoch (batch 1: "
          f"{args.batch1_limit}), scaled linearly to 60000; PyTorch with OpenBLAS\n")
    for rep in range(args.reps):
        for kind, val in points:
            batch = val if kind == "batch" else 32
            width = val if kind == "width" else 283
            limit = args.batch1_limit if batch == 1 else args.scaling_limit
            e = R.eisim_epoch(rule, 1, limit, batch=batch, width=width)
            res[(kind, val)]["eisim"].append(float(e["epoch60k_s"]))
            if not args.no_torch:
                o = R.torch_epoch(rule, 1, limit, "openblas", batch=batch, width=width)
                res[(kind, val)]["torch"].append(float(o["epoch60k_s"]) if o else None)
            print(f"rep {rep + 1} width {width:4d} batch {batch:3d}: eisim "
                  f"{res[(kind, val)]['eisim'][-1]:7.2f} s"
                  + (f", torch {res[(kind, val)]['torch'][-1]:7.2f} s" if not args.no_torch
                     and res[(kind, val)]["torch"][-1] else "")
                  + f"  (load {load_average()})", flush=True)
    print(f"\nload average at the end: {load_average()}\n")
    for kind in ("width", "batch"):
        print(f"seconds per 60000-sample epoch vs {kind} (median of {args.reps})")
        head = (f"{kind:>6s} {'eisim s':>8s} {'samples/s':>10s} {'GFLOP/s':>8s} "
                f"{'torch s':>8s} {'speed-up':>8s}")
        print(head)
        print("-" * len(head))
        for k, val in points:
            if k != kind:
                continue
            width = val if kind == "width" else 283
            e = statistics.median(res[(k, val)]["eisim"])
            flops = flops_per_sample(width)
            tv = [x for x in res[(k, val)]["torch"] if x is not None]
            t = statistics.median(tv) if tv else None
            r = [o / b for b, o in zip(res[(k, val)]["eisim"], res[(k, val)]["torch"]) if o]
            print(f"{val:6d} {e:8.2f} {60000 / e:10.0f} {flops * 60000 / e / 1e9:8.1f} "
                  + (f"{t:8.2f} {statistics.median(r):7.2f}x" if t else f"{'n/a':>8s} {'n/a':>8s}"))
        print()


def flops_per_sample(h, n_in=784, n_out=10):
    """Useful GEMM flops per sample (bench_train's count): forward, weight gradients, errors."""
    fwd = 2 * (h * n_in + h * h + n_out * h + h + n_out)
    down = 2 * (h * h + n_out * h + h + n_out)
    return 2 * fwd + down


# ----------------------------------------------------------------------------------- memory


def max_rss(cmd, env=None):
    p = run(["/usr/bin/time", "-v"] + cmd, env=env)
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    w = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", p.stderr)
    return int(m.group(1)), w.group(1) if w else "?"


def memory(R, args):
    out = os.path.join(tempfile.mkdtemp(prefix="eisim_mem_"), "q.h5")
    cmd = [R.eisim, "train", "--config", os.path.join(REPO, "experiments", "quickstart.yaml"),
           "--out", out, "--set", "train.epochs=1"]
    print("$ /usr/bin/time -v " + " ".join(cmd))
    kb, wall = max_rss(cmd)
    print(f"eisim train (quickstart, 1 epoch, 60000 samples, test 4 x 10000, 4 simulated "
          f"images): max RSS {kb / 1024:.1f} MiB, wall {wall}")
    env = R.torch_env("openblas") or dict(os.environ)
    cmd = [PY, TORCH, "train", "--limit", "60000", "--reps", "1"]
    kb2, wall2 = max_rss(cmd, env=env)
    print(f"PyTorch reference (train, 1 epoch, same data in memory): max RSS {kb2 / 1024:.1f} MiB,"
          f" wall {wall2}")
    shutil.rmtree(os.path.dirname(out), ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("sections", nargs="*", default=["all"],
                   choices=["all", "agree", "timing", "scaling", "memory"])
    p.add_argument("--build", default=os.path.join(REPO, "build-perf"), help="eisim build tree")
    p.add_argument("--openblas-dir", default=DEFAULT_OPENBLAS,
                   help="directory holding OpenBLAS's libblas.so.3 for PyTorch")
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--limit", type=int, default=60000, help="samples per timed epoch")
    p.add_argument("--netlib-limit", type=int, default=6000,
                   help="samples per PyTorch/netlib epoch (0 = skip; it is slow)")
    p.add_argument("--scaling-limit", type=int, default=12000)
    p.add_argument("--batch1-limit", type=int, default=6000)
    p.add_argument("--widths", type=int, nargs="+", default=[128, 283, 512, 1024])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    p.add_argument("--no-torch", action="store_true", help="scaling: eisim only")
    p.add_argument("--agree-batch", type=int, default=64)
    p.add_argument("--agree-train", type=int, default=2048,
                   help="training samples of the eisim run that makes the weights")
    p.add_argument("--kink-margin", type=float, default=5e-4,
                   help="kink-free batch: min |v| of every hidden unit")
    p.add_argument("--agree-verbose", action="store_true",
                   help="full tables for the unfiltered batch too")
    args = p.parse_args()
    R = Runner(args)
    secs = ["agree", "timing", "scaling", "memory"] if "all" in args.sections else args.sections
    print(f"compare.py: {' '.join(sys.argv[1:])}; load average {load_average()}; "
          f"OpenBLAS for PyTorch: {R.openblas or 'not found'}")
    ok = True
    for s in secs:
        print(f"\n=== {s} ===")
        t0 = time.time()
        if s == "agree":
            ok &= agree(R, args)
        else:
            {"timing": timing, "scaling": scaling, "memory": memory}[s](R, args)
        print(f"({s}: {time.time() - t0:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
