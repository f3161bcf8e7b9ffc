#!/usr/bin/python3
"""Per-condition table of a directory of eisim run files (a sweep's out_dir): the final test
accuracy at the train eps and at eps 0, the silent share of the subtractive inhibition, and the
solver's counts, as mean +- sd over the complete runs of each condition (run files named
``<condition>_eps<eps>_seed<seed>.h5``, as `eisim sweep` writes them). Unfinished runs are
counted but left out of the means. Runs that eisim stopped and marked failed (status = failed:
the network stayed at chance, or diverged) are in the means with their last recorded epoch, and
the runs column says how many and why.

    /usr/bin/python3 analysis/run_table.py results/frozen_remedies [--out table.md]

Columns:
  runs             complete and failed runs (and unfinished ones, if any);
  test % at eps X  /train/test_accuracy after the last epoch at each run's train eps, and at 0;
  silent L0 last   /train/silent_inhibition_samples of hidden layer 0 in the last epoch (%):
                   the share of training samples whose subtractive inhibition of E is silent;
  silent L0 max    its maximum over epochs; silent L1 last: the same for layer 1;
  fallbacks, failed, not stable
                   /train/forward_{fallbacks,failures} and /train/forward_{unstable,oscillatory},
                   summed over epochs, mean over runs: ODE fallbacks of the fixed-point solver,
                   failed solves, and checked equilibria found unstable or oscillatory
                   (marginal ones, /train/forward_marginal, are not counted);
  s/epoch          /train/seconds, mean over epochs and runs.
One row per condition and train eps, in the order of the sorted file names, unless --order
lists the conditions.
"""

import argparse
import glob
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eisim_h5 as eh  # noqa: E402

RUN = re.compile(r"^(?P<cond>.+)_eps(?P<eps>[0-9.e-]+)_seed(?P<seed>\d+)$")


def _optional(f, name):
    """A /train dataset as a float array, or None if the file predates it."""
    return eh.read_array(f, name).astype(float) if name in f else None


def read_run(path):
    """(condition, complete, {column: value}) of one run file."""
    run = os.path.basename(path)[:-3]
    m = RUN.match(run)
    if not m:
        raise eh.EisimFileError(f"{path}: not named <condition>_eps<eps>_seed<seed>.h5")
    with eh.open_h5(path) as f:
        status = str(eh.attr(f, "status", default="?"))
        if status not in ("complete", "failed"):
            return m.group("cond"), False, {}
        why = str(eh.attr(f, "failure", default=""))
        failed = {"why_failed": ("at chance" if "learned nothing" in why else
                                 "diverged" if "diverge" in why or "not finite" in why else
                                 "failed")} if status == "failed" else {}
        if "train/test_accuracy" not in f or eh.read_array(f, "train/test_accuracy").shape[0] == 0:
            if failed:  # failed before its first epoch ended: counted, no numbers
                return m.group("cond"), True, failed
            raise eh.EisimFileError(f"{path}: complete, but /train/test_accuracy has no rows")
        cfg = str(eh.attr(f, "config", required=True))
        train_eps = float(eh.config_lookup(cfg, "data.train_eps"))
        ev = eh.read_vector(f, "train/eval_eps")
        acc = eh.read_matrix(f, "train/test_accuracy")
        row = {"acc_train": 100 * acc[-1, eh.nearest_index(ev, train_eps)],
               "acc_0": 100 * acc[-1, eh.nearest_index(ev, 0.0)]}
        s = _optional(f, "train/silent_inhibition_samples")
        if s is not None and s.ndim == 2 and s.shape[0] >= 1 and s.shape[1] >= 1:
            row["silent0_last"] = 100 * s[-1, 0]
            row["silent0_max"] = 100 * np.nanmax(s[:, 0]) if np.isfinite(s[:, 0]).any() else np.nan
            row["silent1_last"] = 100 * s[-1, 1] if s.shape[1] > 1 else np.nan
        for key, names in (("fallbacks", ["train/forward_fallbacks"]),
                           ("failed", ["train/forward_failures"]),
                           ("not_stable", ["train/forward_unstable", "train/forward_oscillatory"])):
            parts = [_optional(f, n) for n in names]
            row[key] = sum(float(np.nansum(p)) for p in parts) if all(
                p is not None for p in parts) else np.nan
        t = _optional(f, "train/seconds")
        row["epoch_s"] = float(np.mean(t)) if t is not None and t.size else np.nan
        row["train_eps"] = train_eps
        row.update(failed)
    return m.group("cond"), True, row


def cell(values, digits=2, sd=True):
    m, s, n = eh.mean_sd(values)
    if n == 0:
        return "-"
    if n == 1 or not sd:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} +- {s:.{digits}f}"


def table(directory, order=None):
    files = sorted(glob.glob(os.path.join(directory, "*.h5")))
    files = [p for p in files if RUN.match(os.path.basename(p)[:-3])]
    if not files:
        raise eh.EisimFileError(f"{directory}: no run files named <condition>_eps<eps>_seed<seed>.h5")
    rows, unfinished, seen = {}, {}, []
    for p in files:
        cond, complete, row = read_run(p)
        key = (cond, float(RUN.match(os.path.basename(p)[:-3]).group("eps")))
        if key not in seen:
            seen.append(key)
        if complete:
            rows.setdefault(key, []).append(row)
        else:
            unfinished[key] = unfinished.get(key, 0) + 1
    eps = sorted({k[1] for k in seen})
    first = {}
    for c, _ in seen:
        first.setdefault(c, len(first))
    seen.sort(key=lambda k: (first[k[0]], k[1]))
    if order:
        unknown = [c for c in order if c not in first]
        if unknown:
            raise eh.EisimFileError(f"--order: no runs of {', '.join(unknown)} in {directory} "
                                    f"(conditions: {', '.join(first)})")
        seen = [k for c in order for k in seen if k[0] == c]
    eps_label = ", ".join(f"{e:g}" for e in eps)
    header = ["condition", "runs", f"test % at train eps ({eps_label})", "test % at eps 0",
              "silent L0 last (%)", "silent L0 max (%)", "silent L1 last (%)",
              "fallbacks / run", "failed / run", "not stable / run", "s/epoch"]
    out = []
    for key in seen:
        rs = rows.get(key, [])
        cond = key[0] if len(eps) == 1 else f"{key[0]}, eps {key[1]:g}"
        n = f"{len(rs)}"
        failed = sorted({r["why_failed"] for r in rs if "why_failed" in r})
        if failed:
            n += (f" ({sum('why_failed' in r for r in rs)} marked failed by eisim: "
                  + ", ".join(failed) + ")")
        if key in unfinished:
            n += f" (+{unfinished[key]} unfinished)"
        col = lambda k, d=2, sd=True: cell([r.get(k, np.nan) for r in rs], d, sd)  # noqa: E731
        out.append([cond, n, col("acc_train"), col("acc_0"), col("silent0_last"),
                    col("silent0_max"), col("silent1_last"), col("fallbacks", 1, False),
                    col("failed", 1, False), col("not_stable", 1, False),
                    col("epoch_s", 1, False)])
    return header, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("directory", help="directory of run files (a sweep's out_dir)")
    ap.add_argument("--order", nargs="+", help="conditions to list, in this order")
    ap.add_argument("--out", help="also write the Markdown table to this file")
    args = ap.parse_args()
    if not os.path.isdir(args.directory):
        raise eh.EisimFileError(f"{args.directory}: not a directory")
    header, rows = table(args.directory, args.order)
    text = eh.markdown_table(header, rows)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    eh.run_cli(main)
