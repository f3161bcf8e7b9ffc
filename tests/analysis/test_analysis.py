#!/usr/bin/python3
"""The analysis scripts turn eisim HDF5 files into valid, non-blank figures and a report.

Usage:
  /usr/bin/python3 tests/analysis/test_analysis.py               synthetic files of all layouts
  /usr/bin/python3 tests/analysis/test_analysis.py FILE.h5 ...   real eisim output files

Without arguments the test writes small synthetic files of the three layouts of docs/hdf5.md
(simulate, train, merged sweep summary) into a temporary directory: the simulate file's circuit
has four populations (E, PV, SST, VIP) and a stimulus protocol (/simulate/protocol: two segments,
two perturbation windows, two layers), the train file's circuit the default three (E, I, D), and
the merged file's first traces use the layout before /populations (r_I, r_D). For every file it runs
analysis/plot_training.py, analysis/plot_traces.py and analysis/report.py as subprocesses and
checks that every expected PNG exists, is a PNG (signature, IHDR width and height > 0) and is not
blank (pixel standard deviation > 0), that each trace figure draws every population of its layer
(the script's note lists them), that protocol.png is drawn when (and only when) the file has a
protocol, with every layer, population and window (the note lists them), that report.md references every PNG, and that a missing
file, a non-HDF5 file and a missing dataset each give a non-zero exit with a message naming it.
The expected figures are derived from the file independently of the scripts.
Prints one line per failed check and ends with the line 'N passed, M failed'.
"""

import concurrent.futures
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ANALYSIS = os.path.join(ROOT, "analysis")
PYTHON = sys.executable
TRAINING_PNGS = ["learning_curves.png", "accuracy_vs_eps.png", "activity_moments.png",
                 "gradient_alignment.png", "solver_iterations.png", "silent_inhibition.png"]
STR = h5py.string_dtype("utf-8")


# --------------------------------------------------------------------------------------------
# Checks


class Results:
    def __init__(self, verbose=False):
        self.passed, self.failed, self.verbose = 0, 0, verbose

    def check(self, ok, what, detail=""):
        if ok:
            self.passed += 1
            if self.verbose:
                print(f"ok    {what}")
        else:
            self.failed += 1
            print(f"FAIL  {what}" + (f"\n      {detail}" if detail else ""))
        return ok


def png_problem(path):
    """None if `path` is a non-blank PNG, else what is wrong."""
    if not os.path.isfile(path):
        return "missing"
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return "no PNG signature / IHDR chunk"
    width, height = struct.unpack(">II", head[16:24])
    if width <= 0 or height <= 0:
        return f"IHDR size {width} x {height}"
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image
    pixels = matplotlib.image.imread(path)
    if pixels.shape[0] != height or pixels.shape[1] != width:
        return f"decoded size {pixels.shape} differs from IHDR {width} x {height}"
    if not float(np.std(pixels)) > 0:
        return "blank image (pixel standard deviation 0)"
    return None


def run(args):
    t0 = time.time()
    p = subprocess.run([PYTHON] + args, capture_output=True, text=True, timeout=300)
    return {"args": args, "rc": p.returncode, "out": p.stdout, "err": p.stderr,
            "seconds": time.time() - t0}


def script(name):
    return os.path.join(ANALYSIS, name)


def describe(r):
    cmd = " ".join(os.path.basename(a) if a.endswith(".py") else a for a in r["args"])
    return f"`{cmd}` (exit {r['rc']})"


# --------------------------------------------------------------------------------------------
# What a file should produce, read independently of the analysis code


def string_list(ds):
    return [x.decode() if isinstance(x, bytes) else str(x) for x in np.asarray(ds[()]).reshape(-1)]


def expectations(path):
    """layout, expected training PNGs, expected trace PNGs, simulate path, conditions."""
    with h5py.File(path, "r") as f:
        if "summary" in f:
            layout = "merged"
        elif "train" in f:
            layout = "train"
        else:
            layout = "simulate"
        train_pngs, conditions, paired = [], [], False
        if layout != "simulate":
            train_pngs = list(TRAINING_PNGS)
        if layout == "merged":
            runs = string_list(f["summary/run"])
            conds = string_list(f["summary/condition"])
            eps = np.asarray(f["summary/eps"][()]).reshape(-1)
            seeds = np.asarray(f["summary/seed"][()]).reshape(-1)
            conditions = list(dict.fromkeys(conds))
            base = "implicit" if "implicit" in conditions else conditions[0]
            keys = {(e, s) for c, e, s in zip(conds, eps, seeds) if c == base}
            for c in conditions:
                if c != base and sum((e, s) in keys for cc, e, s in zip(conds, eps, seeds)
                                     if cc == c) >= 2:
                    paired = True
            if paired:
                train_pngs.append("paired_comparison.png")
        elif layout == "train":
            # A single run's condition: its kind, or for circuits its rule (+ error transform).
            a = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in f.attrs.items()}
            kind, rule = a.get("kind", "circuit"), a.get("rule", "run")
            et = a.get("error_transform", "none")
            conditions = [kind if kind != "circuit" else rule if et == "none" else f"{rule}+{et}"]
        sim = None
        if "simulate" in f:
            sim = "/simulate"
        elif layout == "merged":
            for r in runs:
                if f"runs/{r}/simulate" in f:
                    sim = f"/runs/{r}/simulate"
                    break
        trace_pngs, first_circuit, populations = [], None, {}
        protocol_note, protocol_layer = None, None
        if sim is not None:
            for name in f[sim]:
                m = re.fullmatch(r"layer_(\d+)", name)
                if m and f[sim][name].attrs.get("kind") in ("circuit", b"circuit"):
                    png = f"traces_layer{m.group(1)}.png"
                    trace_pngs.append(png)
                    first_circuit = first_circuit or f"{sim}/{name}"
                    # Every population of the layer, in the circuit's order (E first); files
                    # written before /populations have the fixed circuit E, I, D.
                    if "populations" in f[sim][name]:
                        pg = f[sim][name]["populations"]
                        populations[png] = sorted(pg, key=lambda k: int(pg[k].attrs["index"]))
                    else:
                        populations[png] = ["E", "I", "D"]
            trace_pngs.append("equilibrium_moments.png")
            if "protocol" in f[sim]:
                trace_pngs.append("protocol.png")
                pr = f[sim]["protocol"]
                layers = sorted((int(k.split("_")[1]) for k in pr if k.startswith("layer_")))
                pops = pr[f"layer_{layers[0]}"].attrs["populations"]
                pops = pops.decode() if isinstance(pops, bytes) else str(pops)
                windows = []
                pp = pr["perturbations"]
                for i, name in enumerate(string_list(pp["population"])):
                    what = "silenced" if pp["silence"][i] else f"{float(pp['current'][i]):+g}"
                    windows.append(f"{name} {what} [{float(pp['start'][i]):g}, "
                                   f"{float(pp['end'][i]):g}) ms")
                protocol_note = (f"note: protocol.png: layers {', '.join(map(str, layers))}; "
                                 f"populations {pops.replace(',', ', ')}; windows "
                                 + ("; ".join(windows) or "none"))
                protocol_layer = f"{sim}/protocol/layer_{layers[0]}"
        first_run = None
        if layout == "merged":
            first_run = runs[0]
    return {"layout": layout, "train_pngs": train_pngs, "trace_pngs": trace_pngs, "sim": sim,
            "first_circuit": first_circuit, "populations": populations,
            "conditions": conditions, "paired": paired, "first_run": first_run,
            "protocol_note": protocol_note, "protocol_layer": protocol_layer}


# --------------------------------------------------------------------------------------------
# Synthetic files (layouts of docs/hdf5.md)

CONFIG = """seed: {seed}
precision: float64
data:
  train_eps: {eps}
  eval_eps: [0.0, 0.25, 0.75]
network:
  hidden_layers: 2
  width: 12
  kind: {kind}
  circuit:
    theta: 1.0
learning:
  rule: {rule}
  error_transform: none
train:
  epochs: 4
"""


def root_attrs(obj, seed=1, kind="circuit", rule="implicit", eps=0.75, train=False):
    obj.attrs["eisim_version"] = "0.1.0"
    obj.attrs["git_commit"] = "0123456789ab"
    obj.attrs["build_type"] = "Release"
    obj.attrs["seed"] = np.uint64(seed)
    obj.attrs["precision"] = "float64"
    obj.attrs["config"] = CONFIG.format(seed=seed, eps=eps, kind=kind, rule=rule)
    obj.attrs["command"] = "eisim synthetic --for tests"
    obj.attrs["created"] = "2026-01-01T00:00:00Z"
    obj.attrs["hostname"] = "test"
    if train:
        obj.attrs["rule"] = rule
        obj.attrs["error_transform"] = "none"
        obj.attrs["kind"] = kind
        obj.attrs["status"] = "complete"


# Circuits of the synthetic files: (name, units or None for n_E, dynamics, state variable).
# "legacy" is the layout before /populations (fixed E, I, D; datasets r_I, r_D, r_I_eq, r_D_eq).
CIRCUITS = {
    "default": [("E", None, "leaky", "v"), ("I", 1, "integrator", "r"),
                ("D", 1, "multiplicative", "r")],
    "pv_sst_vip": [("E", None, "leaky", "v"), ("PV", 3, "leaky", "v"), ("SST", 2, "leaky", "v"),
                   ("VIP", 1, "leaky", "v")],
    "legacy": [("E", None, "leaky", "v"), ("I", 1, "integrator", "r"),
               ("D", 1, "multiplicative", "r")],
}


def write_populations(lg, rng, circuit, relax, v_eq):
    """The per-population groups of docs/hdf5.md (or the legacy r_I/r_D datasets)."""
    N, n_e = v_eq.shape
    if circuit == "legacy":
        r_i_eq = np.maximum(v_eq.mean(1), 0.0)[:, None] + 0.5
        r_d_eq = v_eq.var(1)[:, None] + 0.5
        lg["r_I"] = (relax[:, None, None] * r_i_eq[None]).astype(np.float32)
        lg["r_D"] = (1.0 + relax[:, None, None] * (r_d_eq[None] - 1.0)).astype(np.float32)
        lg["r_I_eq"] = r_i_eq
        lg["r_D_eq"] = r_d_eq
        return
    pops = CIRCUITS[circuit]
    lg.attrs["populations"] = ",".join(p[0] for p in pops)
    lg.attrs["preset"] = circuit
    for k, (name, size, dyn, state) in enumerate(pops):
        n = n_e if size is None else size
        eq = v_eq if name == "E" else rng.uniform(0.2, 2.0, (N, n))
        z0 = 1.0 if dyn == "multiplicative" else 0.0
        trace = z0 + relax[:, None, None] * (eq[None] - z0)
        rate = np.maximum(trace, 0.0)
        pg = lg.create_group(f"populations/{name}")
        pg["eq"] = eq
        pg["rate_eq"] = np.maximum(eq, 0.0)
        pg["trace"] = trace.astype(np.float32)
        pg["rate"] = rate.astype(np.float32)
        pg["ode_fp_max_abs_diff"] = np.float64(1e-7)
        pg.attrs["index"] = np.int64(k)
        pg.attrs["size"] = np.int64(n)
        pg.attrs["dynamics"] = dyn
        pg.attrs["state"] = state
        pg.attrs["tau"] = 10.0
        pg.attrs["rate_function"] = "relu" if dyn == "leaky" else "rectified"


def write_simulate(g, rng, kind="circuit", N=5, T=41, n_e=12, theta=1.0, circuit="default"):
    g["images"] = np.arange(N, dtype=np.int64)
    g["labels"] = rng.integers(0, 10, N).astype(np.int64)
    g["eps"] = np.float64(0.75)
    t = np.linspace(0.0, 200.0, T)
    g["t"] = t
    relax = 1.0 - np.exp(-t / 30.0)                                  # (T,)
    for l, lk in enumerate([kind, kind, "none"]):
        ne = n_e if l < 2 else 10
        lg = g.create_group(f"layer_{l}")
        lg.attrs["kind"] = lk
        lg.attrs["n_E"] = np.int64(ne)
        e = rng.normal(0.3, 1.0, (N, ne))
        if lk in ("circuit", "layernorm"):
            z = (e - e.mean(1, keepdims=True)) / e.std(1, keepdims=True)
            v_eq = np.sqrt(theta) * z
        else:
            v_eq = e
        lg["v_eq"] = v_eq
        lg["eq_mean"] = v_eq.mean(1)
        lg["eq_var"] = v_eq.var(1)
        if lk != "circuit":
            continue
        lg["v"] = (relax[:, None, None] * v_eq[None]).astype(np.float32)
        write_populations(lg, rng, circuit, relax, v_eq)
        lg["fp_iterations"] = rng.integers(1, 4, N).astype(np.int64)
        lg["fp_residual"] = 10.0 ** rng.uniform(-14, -9, N)
        lg["fp_status"] = np.array(["converged"] * (N - 1) + ["max_iterations"], dtype=object) \
            .astype(STR)
        lg["ode_steps"] = np.int64(500)
        lg["ode_residual"] = 10.0 ** rng.uniform(-9, -7, N)
        lg["ode_status"] = np.array(["converged"] * N, dtype=object).astype(STR)
        lg["ode_fp_max_abs_diff"] = np.float64(3e-7)
    g["logits"] = rng.normal(0, 1, (N, 10))


def write_train(g, rng, kind, rule, E=4, H=2, eps=0.75, quality=0.0):
    eval_eps = np.array([0.0, 0.25, 0.75])
    ep = np.arange(1, E + 1)
    base = 0.6 + 0.2 * (1 - np.exp(-ep / 2.0)) + quality + rng.normal(0, 0.01, E)
    g["epoch"] = ep.astype(np.int64)
    g["loss"] = 1.5 * np.exp(-ep / 3.0) + 0.5 - quality
    g["accuracy"] = np.clip(base + 0.02, 0, 1)
    g["eval_eps"] = eval_eps
    g["test_accuracy"] = np.clip(base[:, None] - 0.05 * eval_eps[None, :]
                                 + rng.normal(0, 0.005, (E, 3)), 0, 1)
    g["seconds"] = rng.uniform(2, 3, E)
    g["samples_per_second"] = 512 / g["seconds"][()]
    circuit = kind == "circuit"
    g["forward_iterations_mean"] = np.full(E, 1.6 if circuit else 0.0)
    g["forward_iterations_max"] = np.full(E, 5 if circuit else 0, dtype=np.int64)
    g["forward_failures"] = np.array([0, 1, 0, 0][:E] if circuit else [0] * E, dtype=np.int64)
    g["adjoint_failures"] = np.zeros(E, dtype=np.int64)
    if rule == "implicit" or not circuit:
        align = np.ones((E, H + 1))
    else:
        align = np.clip(rng.uniform(0.1, 0.4, (E, H + 1)), -1, 1)
    if kind == "none":
        align[:] = np.nan   # e.g. no implicit gradient defined: the plots must cope with NaN
    g["grad_alignment"] = align
    g["grad_alignment_total"] = np.nanmean(align, axis=1) if kind != "none" else np.full(E, np.nan)
    normal = kind != "none"
    g["activity_mean"] = rng.normal(0, 1e-9 if normal else 0.3, (E, H))
    g["activity_var"] = 1.0 + rng.normal(0, 1e-7 if normal else 0.4, (E, H)) ** (1 if normal else 2)
    hist = np.zeros((E, 64), dtype=np.int64)
    if circuit:
        hist[:, 1], hist[:, 2], hist[:, 5], hist[:, 63] = 400, 100, 10, 2
    g["iterations_histogram"] = hist
    if circuit and rule == "frozen":  # a file with the silence fractions; the others without
        g["silent_inhibition_samples"] = np.clip(rng.uniform(0.0, 0.6, (E, H)), 0, 1)
        g["silent_inhibition_units"] = g["silent_inhibition_samples"][()]


def write_protocol(g, rng, n_e=12, T=61):
    """/simulate/protocol of docs/hdf5.md: two segments, two windows, two pv_sst_vip layers."""
    p = g.create_group("protocol")
    t = np.linspace(0.0, 600.0, T)
    p["t"] = t
    p.attrs["duration"] = 600.0
    p.attrs["record_interval"] = 10.0
    s = p.create_group("segments")
    s["start"] = np.array([0.0, 300.0])
    s["end"] = np.array([300.0, 600.0])
    s["image"] = np.array([0, 0], dtype=np.int64)
    s["label"] = np.array([9, 9], dtype=np.int64)
    s["brightness"] = np.array([1.0, 0.5])
    q = p.create_group("perturbations")
    q["population"] = np.array(["VIP", "SST"], dtype=object).astype(STR)
    q["layer"] = np.array([-1, 0], dtype=np.int64)
    q["start"] = np.array([100.0, 400.0])
    q["end"] = np.array([200.0, 500.0])
    q["current"] = np.array([0.5, 0.0])
    q["silence"] = np.array([0, 1], dtype=np.int64)
    vip = ((t >= 100) & (t < 200)).astype(float)
    sst_off = ((t >= 400) & (t < 500)).astype(float)
    bright = np.where(t < 300, 1.0, 0.5) * (1 - np.exp(-t / 20.0))
    for l in range(2):
        lg = p.create_group(f"layer_{l}")
        pops = CIRCUITS["pv_sst_vip"]
        lg.attrs["populations"] = ",".join(x[0] for x in pops)
        lg.attrs["preset"] = "pv_sst_vip"
        lg.attrs["n_E"] = np.int64(n_e)
        lg.attrs["status"] = "converged"
        lg["ode_steps"] = np.float64(1234)
        for k, (name, size, dyn, state) in enumerate(pops):
            n = n_e if size is None else size
            shape = {"E": 1 + 0.3 * vip + 0.5 * sst_off * (l == 0), "VIP": 1 + vip,
                     "SST": (1 - 0.4 * vip) * (1 - sst_off * (l == 0)), "PV": 1 + 0.2 * vip}[name]
            rate = (bright * shape)[:, None] * rng.uniform(0.5, 1.5, n)[None, :]
            pg = lg.create_group(f"populations/{name}")
            pg["trace"] = rate
            pg["rate"] = rate
            pg.attrs["index"] = np.int64(k)
            pg.attrs["size"] = np.int64(n)
            pg.attrs["dynamics"] = dyn
            pg.attrs["state"] = state
            pg.attrs["tau"] = 10.0


def make_simulate_file(path, rng):
    with h5py.File(path, "w") as f:
        root_attrs(f)
        # A four-population circuit (E, PV, SST, VIP): every population must be drawn; and a
        # stimulus protocol: protocol.png.
        write_simulate(f.create_group("simulate"), rng, circuit="pv_sst_vip")
        write_protocol(f["simulate"], rng)


def make_train_file(path, rng):
    with h5py.File(path, "w") as f:
        root_attrs(f, seed=3, train=True)
        write_train(f.create_group("train"), rng, "circuit", "implicit")
        f["weights/layer_0/W_EX"] = rng.uniform(0, 1, (12, 784)).astype(np.float32)
        f["checkpoint/epoch"] = np.array([4], dtype=np.int64)
        write_simulate(f.create_group("simulate"), rng)


def make_merged_file(path, rng):
    conds = [("implicit", "circuit", "implicit", 0.02), ("frozen", "circuit", "frozen", 0.0),
             ("layernorm", "layernorm", "implicit", 0.025), ("none", "none", "implicit", -0.02)]
    seeds = [1, 2, 3]
    eps = 0.75
    names, cnames, finals, per_eps, secs = [], [], [], [], []
    with h5py.File(path, "w") as f:
        root_attrs(f)
        for cname, kind, rule, q in conds:
            for s in seeds:
                name = f"{cname}_eps{eps:g}_seed{s}"
                g = f.create_group(f"runs/{name}")
                root_attrs(g, seed=s, kind=kind, rule=rule, eps=eps, train=True)
                write_train(g.create_group("train"), rng, kind, rule, quality=q)
                # The first run has no traces: plot_traces must take the next run that has some,
                # written in the layout before /populations (files of earlier versions).
                if not (cname == "implicit" and s == 1):
                    write_simulate(g.create_group("simulate"), rng, kind,
                                   circuit="legacy" if cname == "implicit" else "default")
                acc = g["train/test_accuracy"][()]
                names.append(name)
                cnames.append(cname)
                finals.append(acc[-1, 2])
                per_eps.append(acc[-1])
                secs.append(g["train/seconds"][()].sum())
        s = f.create_group("summary")
        s["run"] = np.array(names, dtype=object).astype(STR)
        s["condition"] = np.array(cnames, dtype=object).astype(STR)
        s["eps"] = np.full(len(names), eps)
        s["seed"] = np.array(seeds * len(conds), dtype=np.int64)
        s["final_accuracy"] = np.array(finals)
        s["eval_eps"] = np.array([0.0, 0.25, 0.75])
        s["accuracy_per_eps"] = np.array(per_eps)
        s["seconds"] = np.array(secs)
        s["epochs"] = np.full(len(names), 4, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# The checks on one file


def figure_jobs(path, tmp, tag, exp, plotters=True):
    """[(job name, args)] of the plotting runs for one file (the report alone if not plotters)."""
    jobs = []
    if not plotters:
        pass
    elif exp["layout"] != "simulate":
        jobs.append(("training", [script("plot_training.py"), path, "--out",
                                  os.path.join(tmp, tag, "training")]))
    if plotters and exp["sim"] is not None:
        jobs.append(("traces", [script("plot_traces.py"), path, "--out",
                                os.path.join(tmp, tag, "traces")]))
    jobs.append(("report", [script("report.py"), path, "--out", os.path.join(tmp, tag, "report")]))
    return jobs


def check_printed_paths(res, r, what):
    lines = [x.strip() for x in r["out"].splitlines() if x.strip() and not x.startswith("note:")]
    missing = [x for x in lines if not os.path.exists(x)]
    res.check(lines and not missing, f"{what}: prints the paths it wrote, and they exist",
              f"printed {lines}; missing {missing}")


def check_pngs(res, out_dir, names, what):
    for n in names:
        problem = png_problem(os.path.join(out_dir, n))
        res.check(problem is None, f"{what}: {n} is a valid, non-blank PNG", problem or "")


def check_figures(res, tag, exp, results, tmp):
    for job, r in results.items():
        ok = res.check(r["rc"] == 0, f"{tag}: {job} exits 0",
                       f"{describe(r)}\n      stderr: {r['err'].strip()[-2000:]}")
        if not ok:
            continue
        check_printed_paths(res, r, f"{tag}: {job}")
        out = os.path.join(tmp, tag, job)
        expected = {"training": exp["train_pngs"], "traces": exp["trace_pngs"],
                    "report": exp["train_pngs"] + exp["trace_pngs"]}[job]
        check_pngs(res, out, expected, f"{tag}: {job}")
        made = sorted(x for x in os.listdir(out) if x.endswith(".png"))
        res.check(sorted(expected) == made, f"{tag}: {job} writes exactly the expected figures",
                  f"expected {sorted(expected)}, got {made}")
        if job == "traces":
            for png, names in exp["populations"].items():
                note = f"note: {png}: populations {', '.join(names)}"
                res.check(note in r["out"].splitlines(),
                          f"{tag}: {job}: {png} draws every population ({', '.join(names)})",
                          f"expected the line '{note}' in\n{r['out']}")
        if job == "traces" and exp["protocol_note"]:
            res.check(exp["protocol_note"] in r["out"].splitlines(),
                      f"{tag}: {job}: protocol.png draws every layer, population and window",
                      f"expected the line '{exp['protocol_note']}' in\n{r['out']}")
        if job in ("training", "report") and exp["layout"] != "simulate" and not exp["paired"]:
            res.check("paired_comparison.png skipped" in r["out"],
                      f"{tag}: {job} prints a note when the paired comparison does not apply",
                      r["out"])
        if job != "report":
            continue
        md_path = os.path.join(out, "report.md")
        if not res.check(os.path.isfile(md_path), f"{tag}: report.md written"):
            continue
        md = open(md_path).read()
        refs = set(re.findall(r"\]\(([^)]+\.png)\)", md))
        unref = [p for p in made if p not in refs]
        res.check(not unref, f"{tag}: report.md references every PNG (relative paths)",
                  f"not referenced: {unref}")
        broken = [p for p in refs if not os.path.isfile(os.path.join(out, p))]
        res.check(not broken, f"{tag}: every image in report.md exists", f"broken: {broken}")
        res.check("## Provenance" in md, f"{tag}: report.md has a provenance section")
        table_path = os.path.join(out, "summary_table.txt")
        table = open(table_path).read() if os.path.isfile(table_path) else ""
        res.check(table.strip() != "", f"{tag}: summary_table.txt written and not empty")
        for c in exp["conditions"]:
            res.check(re.search(rf"^{re.escape(c)}\s", table, re.M) is not None,
                      f"{tag}: summary_table.txt has a row for condition '{c}'", table)
            res.check(f"| {c} |" in md, f"{tag}: report.md has a row for condition '{c}'")


def broken_copies(path, tmp, tag, exp):
    """[(job name, args, text the error must contain)] on damaged copies of the file."""
    jobs = []

    def damaged(suffix, dataset):
        p = os.path.join(tmp, f"{tag}_without_{suffix}.h5")
        shutil.copyfile(path, p)
        with h5py.File(p, "a") as f:
            del f[dataset]
        return p

    if exp["layout"] == "merged":
        p = damaged("final_accuracy", "/summary/final_accuracy")
        jobs.append(("plot_training, no /summary/final_accuracy",
                     [script("plot_training.py"), p, "--out", os.path.join(tmp, "junk")],
                     "/summary/final_accuracy"))
        loss = f"/runs/{exp['first_run']}/train/loss"
        p = damaged("run_loss", loss)
        jobs.append((f"plot_training, no {loss}",
                     [script("plot_training.py"), p, "--out", os.path.join(tmp, "junk")], loss))
        jobs.append((f"report, no {loss}",
                     [script("report.py"), p, "--out", os.path.join(tmp, "junk")], loss))
    elif exp["layout"] == "train":
        p = damaged("loss", "/train/loss")
        for s in ("plot_training.py", "report.py"):
            jobs.append((f"{s}, no /train/loss",
                         [script(s), p, "--out", os.path.join(tmp, "junk")], "/train/loss"))
    if exp["sim"] is not None:
        ds = f"{exp['first_circuit']}/v" if exp["first_circuit"] \
            else f"{exp['sim']}/layer_0/eq_mean"
        p = damaged("traces", ds)
        jobs.append((f"plot_traces, no {ds}",
                     [script("plot_traces.py"), p, "--out", os.path.join(tmp, "junk")], ds))
        pops = exp["populations"].get(
            "traces_layer" + exp["first_circuit"].rsplit("_", 1)[1] + ".png", []) \
            if exp["first_circuit"] else []
        if pops:
            with h5py.File(path, "r") as f:
                new_layout = "populations" in f[exp["first_circuit"]]
            ds = f"{exp['first_circuit']}/" + (f"populations/{pops[-1]}/rate" if new_layout
                                               else f"r_{pops[-1]}")
            p = damaged("population", ds)
            jobs.append((f"plot_traces, no {ds}",
                         [script("plot_traces.py"), p, "--out", os.path.join(tmp, "junk")], ds))
    if exp["protocol_layer"]:
        with h5py.File(path, "r") as f:
            last = f[exp["protocol_layer"]].attrs["populations"]
            last = (last.decode() if isinstance(last, bytes) else str(last)).split(",")[-1]
        ds = f"{exp['protocol_layer']}/populations/{last}/rate"
        p = damaged("protocol", ds)
        jobs.append((f"plot_traces, no {ds}",
                     [script("plot_traces.py"), p, "--out", os.path.join(tmp, "junk")], ds))
    return jobs


def generic_error_jobs(tmp):
    missing = os.path.join(tmp, "does_not_exist.h5")
    bogus = os.path.join(tmp, "not_hdf5.h5")
    with open(bogus, "w") as f:
        f.write("this is not an HDF5 file\n")
    jobs = []
    for s in ("plot_training.py", "plot_traces.py", "report.py"):
        jobs.append((f"{s}, missing file", [script(s), missing], missing))
        jobs.append((f"{s}, not an HDF5 file", [script(s), bogus], "not an HDF5 file"))
    return jobs


def check_errors(res, jobs, results):
    for name, args, needle in jobs:
        r = results[name]
        res.check(r["rc"] != 0, f"error: {name} exits non-zero", describe(r))
        res.check(needle in r["err"], f"error: {name}: message names '{needle}'",
                  f"stderr: {r['err'].strip()}")
        res.check("Traceback" not in r["err"], f"error: {name}: a message, not a traceback",
                  r["err"].strip()[-1500:])


def check_run_table(res, tmp, rng):
    """analysis/run_table.py on a directory of synthetic sweep run files: the means it prints are
    those of the files, unfinished runs are counted and left out, runs marked failed are counted
    with their reason, a bad path is an error."""
    d = os.path.join(tmp, "run_table")
    os.makedirs(d)
    expect = {}
    for cond, rule, seed, status in [("frozen", "frozen", 1, "complete"),
                                     ("frozen", "frozen", 2, "complete"),
                                     ("frozen", "frozen", 3, "running"),
                                     ("implicit", "implicit", 1, "complete"),
                                     ("implicit", "implicit", 2, "failed")]:
        with h5py.File(os.path.join(d, f"{cond}_eps0.75_seed{seed}.h5"), "w") as f:
            root_attrs(f, seed=seed, rule=rule, train=True)
            f.attrs["status"] = status
            if status == "failed":
                f.attrs["failure"] = "the test accuracy is at chance: the network learned nothing"
            write_train(f.create_group("train"), rng, "circuit", rule)
            # Per-run counts that differ between seeds: the table shows their mean.
            del f["train/forward_failures"]
            f["train/forward_failures"] = np.array([seed, 0, 2 * seed, 0], dtype=np.int64)
            if status in ("complete", "failed"):
                g = f["train"]
                row = (100 * g["test_accuracy"][-1, 2], 100 * g["test_accuracy"][-1, 0],
                       100 * g["silent_inhibition_samples"][-1, 0] if rule == "frozen" else None)
                expect.setdefault(cond, []).append(row)
    r = run([script("run_table.py"), d])
    res.check(r["rc"] == 0, "run_table.py exits 0 on a directory of run files", describe(r))
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in r["out"].splitlines() if line.startswith("| ") and "---" not in line}
    fr, im = rows.get("frozen"), rows.get("implicit")
    if res.check(fr is not None and im is not None, "run_table.py prints a row per condition",
                 r["out"]):
        acc = np.array([e[0] for e in expect["frozen"]])
        res.check(fr[0] == "2 (+1 unfinished)", "run_table.py counts complete and unfinished runs",
                  fr[0])
        res.check(fr[1] == f"{acc.mean():.2f} +- {acc.std(ddof=1):.2f}",
                  "run_table.py: mean +- sd of the final test accuracy at the train eps",
                  f"{fr[1]} against {acc.mean():.2f} +- {acc.std(ddof=1):.2f}")
        acc0 = np.array([e[1] for e in expect["frozen"]])
        sil = np.array([e[2] for e in expect["frozen"]])
        res.check(fr[2] == f"{acc0.mean():.2f} +- {acc0.std(ddof=1):.2f}"
                  and fr[3] == f"{sil.mean():.2f} +- {sil.std(ddof=1):.2f}",
                  "run_table.py: the eps-0 accuracy and the last silent share of layer 0",
                  f"{fr[2]}, {fr[3]}")
        # Seeds 1 and 2 failed 3 and 6 solves: the mean per run is 4.5, not the first run's 3.
        res.check(fr[7] == "4.5", "run_table.py: per-run counts are the mean over runs", fr[7])
        acc = np.array([e[0] for e in expect["implicit"]])
        res.check(im[0] == "2 (1 marked failed by eisim: at chance)",
                  "run_table.py counts a run eisim marked failed, with the reason", im[0])
        res.check(im[1] == f"{acc.mean():.2f} +- {acc.std(ddof=1):.2f}" and im[4] == "-",
                  "run_table.py: a failed run's last epoch is in the mean; no silent share "
                  "where none was recorded", str(im))
    r = run([script("run_table.py"), os.path.join(d, "frozen_eps0.75_seed1.h5")])
    res.check(r["rc"] != 0 and "not a directory" in r["err"] and "Traceback" not in r["err"],
              "run_table.py on a file, not a directory, is a one-line error", describe(r))


def check_plot_evaluate(res, tmp, rng):
    """analysis/plot_evaluate.py on synthetic `eisim evaluate` files: per condition, the table's
    means are the files' (mean over seeds), and an evaluation of an unfinished run is named."""
    d = os.path.join(tmp, "plot_evaluate")
    os.makedirs(d)
    files, acc = [], {}
    for seed, status in [(1, "complete"), (2, "running")]:
        path = os.path.join(d, f"eval_seed{seed}.h5")
        with h5py.File(path, "w") as f:
            f.attrs["file_kind"] = "evaluation"
            f.attrs["source_run"] = f"results/paper/implicit_eps0.75_seed{seed}.h5"
            f.attrs["source_status"] = status
            f.attrs["source_epoch"] = np.int64(20 if status == "complete" else 3)
            g = f.create_group("evaluate/test")
            g["eval_eps"] = np.array([0.0, 0.75])
            g["accuracy"] = rng.uniform(0.7, 0.9, 2)
            h = g.create_group("shift")
            h["value"] = np.array([-0.5, 0.0, 0.5])
            h["accuracy"] = rng.uniform(0.5, 0.9, 3)
            h["silent_inhibition"] = rng.uniform(0, 1, (3, 2))
            acc[seed] = (g["accuracy"][()], h["accuracy"][()])
        files.append(path)
    r = run([script("plot_evaluate.py")] + files + ["--out", d])
    res.check(r["rc"] == 0, "plot_evaluate.py exits 0 on two evaluation files", describe(r))
    table = os.path.join(d, "evaluate_table.md")
    text = open(table).read() if os.path.exists(table) else ""
    want = 100 * (acc[1][1][0] + acc[2][1][0]) / 2
    res.check(f"| implicit_eps0.75 | shift | -0.5 | {want:.2f} |" in text,
              "plot_evaluate.py: the table's mean at shift -0.5 is the two files' mean",
              text[:400])
    res.check("eval_seed2.h5: evaluates implicit_eps0.75_seed2.h5 as it was at epoch 3" in r["out"]
              and "epoch 3" in text,
              "plot_evaluate.py names an evaluation of a run that was not finished",
              r["out"][-400:])
    check_pngs(res, d, ["evaluate_accuracy.png", "evaluate_silent.png"], "plot_evaluate.py")


# --------------------------------------------------------------------------------------------


def main():
    args = [a for a in sys.argv[1:] if a not in ("-v", "--verbose")]
    res = Results(verbose=len(args) != len(sys.argv) - 1)
    t0 = time.time()
    tmp = tempfile.mkdtemp(prefix="eisim_analysis_test_")
    try:
        files = []
        if args:
            for a in args:
                if not res.check(os.path.isfile(a), f"input file {a} exists"):
                    continue
                files.append((os.path.splitext(os.path.basename(a))[0], os.path.abspath(a)))
        else:
            rng = np.random.default_rng(2026)
            for tag, make in [("simulate", make_simulate_file), ("train", make_train_file),
                              ("merged", make_merged_file)]:
                p = os.path.join(tmp, tag + ".h5")
                make(p, rng)
                files.append((tag, p))

        jobs, plans, error_jobs = [], [], generic_error_jobs(tmp)
        for tag, path in files:
            try:
                exp = expectations(path)
            except (OSError, KeyError) as e:
                res.check(False, f"{tag}: {path} is readable as an eisim HDF5 file", str(e))
                continue
            plans.append((tag, path, exp))
            # Synthetic files: the report runs on every layout (it calls both plotters' code),
            # plot_traces.py on the simulate file and plot_training.py on the merged file, and
            # plot_training.py without --out on the train file below; real files get all three.
            # This keeps the test well under 30 s on two cores.
            for job, a in figure_jobs(path, tmp, tag, exp, plotters=bool(args) or tag != "train"):
                if not args and ((tag, job) == ("merged", "traces")):
                    continue
                jobs.append(((tag, job), a))
            error_jobs += broken_copies(path, tmp, tag, exp)
        if not args:
            # --out defaults to the input file's directory.
            d = os.path.join(tmp, "default_out")
            os.makedirs(d)
            shutil.copyfile(os.path.join(tmp, "train.h5"), os.path.join(d, "train.h5"))
            jobs.append((("default", "out"), [script("plot_training.py"),
                                              os.path.join(d, "train.h5")]))
        for name, a, _ in error_jobs:
            jobs.append((("error", name), a))

        workers = max(2, min(8, os.cpu_count() or 2))
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            done = dict(zip([k for k, _ in jobs], pool.map(run, [a for _, a in jobs])))

        for tag, path, exp in plans:
            results = {job: r for (t, job), r in done.items() if t == tag}
            check_figures(res, tag, exp, results, tmp)
        if not args:
            r = done[("default", "out")]
            d = os.path.join(tmp, "default_out")
            res.check(r["rc"] == 0, "plot_training without --out exits 0", r["err"])
            check_pngs(res, d, TRAINING_PNGS, "without --out, next to the input file")
        check_errors(res, error_jobs, {name: r for (t, name), r in done.items() if t == "error"})
        if not args:
            check_run_table(res, tmp, np.random.default_rng(7))
            check_plot_evaluate(res, tmp, np.random.default_rng(8))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"({time.time() - t0:.1f} s)")
    print(f"{res.passed} passed, {res.failed} failed")
    return 1 if res.failed or res.passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
