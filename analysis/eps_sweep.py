#!/usr/bin/python3
"""The eps sweep's table and figure (docs/results.md, section 2), from a merged sweep summary.

For each condition and training jitter eps: the final test accuracy at that eps (mean +- sd over
seeds), and for pairs of conditions (--pair A:B, default the study's comparisons) the per-seed
difference A - B (mean +- sd), which says whether the benefit of normalised errors grows with eps.
Writes, in --out (default: next to the summary):
  eps_sweep.md   the two tables (Markdown);
  eps_sweep.png  accuracy against eps per condition (left) and the paired differences (right).

Example: /usr/bin/python3 analysis/eps_sweep.py results/paper/summary.h5 --out results/paper/report
"""

import argparse
import os
import sys
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eisim_h5 as eh  # noqa: E402

DEFAULT_PAIRS = ["layernorm:none", "inorm_full:inorm_frozen", "circuit_implicit:circuit_frozen",
                 "circuit_center:circuit_frozen", "inorm_frozen:none"]


def read(path):
    """{(condition, eps): {seed: accuracy}} of the summary's runs."""
    with eh.open_h5(path) as f:
        if "summary" not in f:
            raise eh.EisimFileError(f"{path}: not a merged sweep summary (eisim sweep --merge)")
        cond = eh.read_strings(f, "summary/condition")
        eps = eh.read_vector(f, "summary/eps")
        seed = eh.read_vector(f, "summary/seed").astype(int)
        acc = eh.read_vector(f, "summary/final_accuracy")
    out = defaultdict(dict)
    for c, e, s, a in zip(cond, eps, seed, acc):
        out[(c, float(e))][int(s)] = float(a)
    return out


def fmt(values):
    v = 100 * np.asarray(values, dtype=float)
    if v.size == 0:
        return "-"
    sd = f" +- {v.std(ddof=1):.2f}" if v.size > 1 else ""
    return f"{v.mean():.2f}{sd} (n={v.size})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("summary", help="merged summary of experiments/paper/sweep.yaml")
    ap.add_argument("--out", help="output directory (default: the summary's)")
    ap.add_argument("--pair", action="append", help="A:B, difference A - B per seed (repeatable)")
    a = ap.parse_args()
    data = read(a.summary)
    conds = list(dict.fromkeys(c for c, _ in data))
    eps = sorted({e for _, e in data})
    pairs = [p.split(":") for p in (a.pair or DEFAULT_PAIRS)]
    pairs = [(x, y) for x, y in pairs if x in conds and y in conds]
    lines = ["| condition | " + " | ".join(f"eps {e:g}" for e in eps) + " |",
             "|---|" + "---|" * len(eps)]
    for c in conds:
        lines.append(f"| {c} | " + " | ".join(fmt(list(data.get((c, e), {}).values()))
                                             for e in eps) + " |")
    lines += ["", "| difference (same seed) | " + " | ".join(f"eps {e:g}" for e in eps) + " |",
              "|---|" + "---|" * len(eps)]
    diffs = {}
    for x, y in pairs:
        row = []
        for e in eps:
            dx, dy = data.get((x, e), {}), data.get((y, e), {})
            d = [dx[s] - dy[s] for s in sorted(set(dx) & set(dy))]
            diffs[(x, y, e)] = d
            row.append(fmt(d))
        lines.append(f"| {x} - {y} | " + " | ".join(row) + " |")
    out_dir = eh.default_out_dir(a.summary, a.out)
    md = os.path.join(out_dir, "eps_sweep.md")
    with open(md, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    plt = eh.setup_matplotlib()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.8))
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    for i, c in enumerate(conds):
        m = [100 * np.mean(list(data[(c, e)].values())) if (c, e) in data else np.nan for e in eps]
        s = [100 * np.std(list(data[(c, e)].values()), ddof=1)
             if len(data.get((c, e), {})) > 1 else 0.0 for e in eps]
        ax.errorbar(eps, m, yerr=s, marker=markers[i % 8], capsize=3, label=c)
    ax.set_xlabel("training and test brightness jitter $\\epsilon$")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title("Accuracy against eps (mean +- sd over seeds)")
    ax.legend(fontsize=7)
    for i, (x, y) in enumerate(pairs):
        m = [100 * np.mean(diffs[(x, y, e)]) if diffs[(x, y, e)] else np.nan for e in eps]
        s = [100 * np.std(diffs[(x, y, e)], ddof=1) if len(diffs[(x, y, e)]) > 1 else 0.0
             for e in eps]
        bx.errorbar(eps, m, yerr=s, marker=markers[i % 8], capsize=3, label=f"{x} - {y}")
    bx.axhline(0, color="0.5", lw=0.8)
    bx.set_xlabel("training and test brightness jitter $\\epsilon$")
    bx.set_ylabel("difference in test accuracy (points)")
    bx.set_title("Benefit of normalised errors: paired differences (same seed)")
    bx.legend(fontsize=7)
    fig.tight_layout()
    written = [md]
    eh.save(fig, out_dir, "eps_sweep.png", written)
    eh.print_outputs(written, [])
    return 0


if __name__ == "__main__":
    eh.run_cli(main)
