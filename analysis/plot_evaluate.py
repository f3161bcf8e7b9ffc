#!/usr/bin/python3
"""Figures of `eisim evaluate` files: accuracy against each test-set transformation.

Each input is an evaluation file (`eisim evaluate --run RUN --out FILE`, with --transforms for
the shift, contrast and noise rows). Files whose source runs differ only by seed (run names
ending in `_seed<N>`) are one condition: mean +- sd over seeds. Writes, in --out (default: the
first file's directory):
  evaluate_accuracy.png  test accuracy against brightness jitter eps, fixed brightness shift,
                         contrast factor and noise sd (one panel per transformation present);
  evaluate_silent.png    the fraction of test images whose subtractive inhibition of E is silent
                         in hidden layer 0, against the same axes (circuit layers only);
  evaluate_table.md      the numbers of both figures.
An evaluation of a run that was not finished (its source_status is not `complete`: evaluate reads
the latest checkpoint of a running run) is included but named in a note and in the table file.

Example: /usr/bin/python3 analysis/plot_evaluate.py results/evaluate/*.h5 --out results/evaluate
"""

import argparse
import os
import re
import sys
from collections import OrderedDict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eisim_h5 as eh  # noqa: E402

AXES = [("jitter", "eval_eps", "brightness jitter $\\epsilon$ (random per image)"),
        ("shift", "value", "brightness shift (pixel value)"),
        ("contrast", "value", "contrast factor"),
        ("noise", "value", "Gaussian noise sd (pixel value)")]


def read_evaluation(path, split):
    """{transform: (values, accuracy, silent layer-0 fraction)} of one evaluation file."""
    with eh.open_h5(path) as f:
        if eh.attr(f, "file_kind") != "evaluation":
            raise eh.EisimFileError(f"{path}: not an evaluation file written by eisim evaluate")
        source = os.path.basename(str(eh.attr(f, "source_run", required=True)))
        status = str(eh.attr(f, "source_status", default="complete"))
        epoch = eh.attr(f, "source_epoch")
        caveat = None
        if status != "complete":
            when = f"as it was at epoch {epoch}" if epoch is not None else "before it finished"
            caveat = (f"{path}: evaluates {source} {when} (its status was '{status}'), not a "
                      "finished run")
        base = f"evaluate/{split}"
        if base not in f:
            raise eh.EisimFileError(f"{path}: no /{base} (evaluated with another --split?)")
        out = {}
        for name, key, _ in AXES:
            g = f[base] if name == "jitter" else f[base].get(name)
            if g is None or key not in g:
                continue
            values = eh.read_vector(g, key)
            acc = eh.read_vector(g, "accuracy")
            silent = np.full(values.size, np.nan)
            if "silent_inhibition" in g:
                s = np.asarray(g["silent_inhibition"], dtype=float)
                if s.ndim == 2 and s.shape[0] == values.size and s.shape[1] > 0:
                    silent = s[:, 0]
            order = np.argsort(values)
            out[name] = (values[order], acc[order], silent[order])
    return source, out, caveat


def condition_of(source):
    name = re.sub(r"\.h5$", "", source)
    return re.sub(r"_seed\d+$", "", name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help="evaluation files (eisim evaluate --out)")
    ap.add_argument("--out", help="output directory (default: the first file's)")
    ap.add_argument("--split", default="test", choices=["test", "validation"])
    a = ap.parse_args()
    groups = OrderedDict()
    caveats = []
    for path in a.files:
        source, data, caveat = read_evaluation(path, a.split)
        groups.setdefault(condition_of(source), []).append((path, data))
        if caveat:
            caveats.append(caveat)
    present = [ax for ax in AXES if any(ax[0] in d for runs in groups.values() for _, d in runs)]
    if not present:
        raise eh.EisimFileError("no evaluation rows in " + ", ".join(a.files))
    out_dir = eh.default_out_dir(a.files[0], a.out)
    plt = eh.setup_matplotlib()
    written, notes, table = [], list(caveats), []

    def stack(runs, name, which):
        rows = [d[name] for _, d in runs if name in d]
        values = rows[0][0]
        same = [r for r in rows if r[0].shape == values.shape and np.allclose(r[0], values)]
        if len(same) != len(rows):
            notes.append(f"{name}: files of one condition evaluated different values; "
                         "only those matching the first are averaged")
        return values, np.array([r[which] for r in same])

    for which, fname, ylabel in [(1, "evaluate_accuracy.png", "test accuracy (%)"),
                                 (2, "evaluate_silent.png", "images with silent I, layer 0 (%)")]:
        fig, axs = plt.subplots(1, len(present), figsize=(3.6 * len(present), 3.2), squeeze=False)
        drawn = False
        for ax, (name, _, xlabel) in zip(axs[0], present):
            for cond, runs in groups.items():
                if not any(name in d for _, d in runs):
                    continue
                values, ys = stack(runs, name, which)
                if np.all(np.isnan(ys)):
                    continue
                m = 100 * np.nanmean(ys, axis=0)
                # Sample sd (ddof 1), as eps_sweep.py and run_table.py.
                sd = 100 * np.nanstd(ys, axis=0, ddof=1) if ys.shape[0] > 1 else np.zeros_like(m)
                ax.errorbar(values, m, yerr=sd, marker="o", ms=3, capsize=2,
                            label=f"{cond} (n={ys.shape[0]})")
                drawn = True
                if which == 1:
                    for v, mm, s in zip(values, m, sd):
                        table.append((cond, name, v, mm, s, ys.shape[0]))
                else:
                    for v, mm in zip(values, m):
                        table.append((cond, name + " silent I", v, mm, float("nan"), ys.shape[0]))
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
        if not drawn:
            plt.close(fig)
            notes.append(f"{fname}: nothing to draw (no circuit layers with subtractive "
                         "inhibition)" if which == 2 else f"{fname}: nothing to draw")
            continue
        axs[0][0].legend()
        fig.tight_layout()
        eh.save(fig, out_dir, fname, written)
    header = ["condition", "transform", "value", "mean %", "sd %", "runs"]
    rows = [[c, t, f"{v:g}", f"{m:.2f}", "-" if np.isnan(s) else f"{s:.2f}", str(n)]
            for c, t, v, m, s, n in table]
    path = os.path.join(out_dir, "evaluate_table.md")
    with open(path, "w") as fh:
        fh.write(eh.markdown_table(header, rows))
        if caveats:
            fh.write("\nNot finished when evaluated (included above):\n\n"
                     + "".join(f"- {c}\n" for c in caveats))
    written.append(path)
    eh.print_outputs(written, notes)
    return 0


if __name__ == "__main__":
    eh.run_cli(main)
