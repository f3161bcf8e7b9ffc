#!/usr/bin/python3
"""Figures of eisim training runs, from one `eisim train` file or a merged sweep summary.

Writes, next to the input file unless --out is given:
  learning_curves.png     test accuracy at each run's jitter eps, training accuracy and training
                          loss against epoch; one line per condition, mean +- sd over seeds;
  accuracy_vs_eps.png     final-epoch test accuracy against the evaluation jitter eps per condition;
  activity_moments.png    mean and variance over units of each hidden layer's equilibrium
                          potentials (averaged over the probe images) against epoch;
  gradient_alignment.png  cosine between each rule's gradient and the implicit (exact) gradient;
  solver_iterations.png   distribution of Newton iterations per sample, mean/max per epoch, and
                          solver failures;
  silent_inhibition.png   per hidden layer, the share of training samples whose subtractive
                          interneurons onto E are all silent (rate 0), against epoch (circuits);
  paired_comparison.png   merged files with several seeds: per-seed differences of final accuracy
                          from a baseline condition (--baseline, default 'implicit').

Example: /usr/bin/python3 analysis/plot_training.py results/quickstart.h5 --out results/quickstart
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eisim_h5 as eh  # noqa: E402

EPS_TEXT = "brightness jitter $\\epsilon$ (pixel value)"


# --------------------------------------------------------------------------------------------
# Data


class Series:
    """The per-epoch datasets of one run's /train group, read and shape-checked."""

    def __init__(self, ef, run):
        g = ef.train_group(run)
        self.run = run
        self.epoch = eh.read_vector(g, "epoch").astype(int)
        E = self.epoch.size
        self.loss = self._vec(g, "loss", E)
        self.accuracy = self._vec(g, "accuracy", E)
        self.eval_eps = eh.read_vector(g, "eval_eps").astype(float)
        self.test_accuracy = self._mat(g, "test_accuracy", E, self.eval_eps.size)
        self.seconds = self._vec(g, "seconds", E)
        self.it_mean = self._vec(g, "forward_iterations_mean", E)
        self.it_max = self._vec(g, "forward_iterations_max", E)
        self.fw_fail = self._vec(g, "forward_failures", E)
        self.adj_fail = self._vec(g, "adjoint_failures", E)
        self.activity_mean = self._mat(g, "activity_mean", E)
        self.activity_var = self._mat(g, "activity_var", E, self.activity_mean.shape[1])
        self.alignment = self._mat(g, "grad_alignment", E)
        self.alignment_total = self._vec(g, "grad_alignment_total", E)
        self.iter_hist = self._mat(g, "iterations_histogram", E)
        # Silent subtractive inhibition of E (files from before it was recorded have none).
        self.silent = (self._mat(g, "silent_inhibition_samples", E)
                       if "silent_inhibition_samples" in g else None)
        k = eh.nearest_index(self.eval_eps, run.eps)
        self.test_at_eps = self.test_accuracy[:, k] if E else np.zeros(0)

    @staticmethod
    def _check(g, name, a, E, cols=None):
        if a.shape[0] != E or (cols is not None and a.shape[1] != cols):
            want = f"({E},)" if a.ndim == 1 else f"({E}, {cols if cols is not None else 'n'})"
            raise eh.EisimFileError(f"{g.file.filename}: dataset '{g.name}/{name}' has shape "
                                    f"{a.shape}, expected {want} (one row per epoch)")
        return a.astype(float)

    def _vec(self, g, name, E):
        return self._check(g, name, eh.read_vector(g, name), E)

    def _mat(self, g, name, E, cols=None):
        return self._check(g, name, eh.read_matrix(g, name, rows=E), E, cols)


def by_epoch(series_list, get):
    """(epochs, mean, sd, n) over runs of a per-epoch quantity, aligned on the epoch numbers."""
    values = {}
    for s in series_list:
        y = get(s)
        for e, v in zip(s.epoch, y):
            values.setdefault(int(e), []).append(v)
    epochs = np.array(sorted(values))
    stats = [eh.mean_sd(values[e]) for e in epochs]
    return (epochs, np.array([m for m, _, _ in stats]), np.array([s for _, s, _ in stats]),
            np.array([n for _, _, n in stats]))


def band(ax, x, m, s, n, style, label):
    """Mean line (style: dict of color, ls, marker) with a +- sd band when n > 1."""
    ok = np.isfinite(m)
    if not ok.any():
        return
    ax.plot(x[ok], m[ok], ms=4, label=label, **style)
    if np.nanmax(n) > 1:
        ax.fill_between(x[ok], (m - s)[ok], (m + s)[ok], color=style["color"], alpha=0.2, lw=0)


def integer_x(ax):
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def seeds_text(runs):
    n = len(runs)
    return f"{n} seed" + ("s" if n != 1 else "")


def no_data(ax, text):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9,
            color="0.3", wrap=True)


# --------------------------------------------------------------------------------------------
# Figures


def fig_learning_curves(plt, groups, series, styles, title):
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    for (key, label, runs), c in zip(groups, styles):
        ss = [series[r.name] for r in runs]
        lab = f"{label} ({seeds_text(runs)})"
        band(axes[0], *by_epoch(ss, lambda s: 100 * s.test_at_eps), c, lab)
        band(axes[1], *by_epoch(ss, lambda s: 100 * s.accuracy), c, lab)
        band(axes[2], *by_epoch(ss, lambda s: s.loss), c, lab)
    axes[0].set_title("Test accuracy at the run's training jitter $\\epsilon$")
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].set_title("Training accuracy (jittered training images)")
    axes[1].set_ylabel("training accuracy (%)")
    axes[2].set_title("Training loss (cross-entropy, label smoothing)")
    axes[2].set_ylabel("mean training loss per sample")
    for ax in axes:
        ax.set_xlabel("epoch")
        integer_x(ax)
        ax.legend(loc="best")
    fig.suptitle(f"{title}Learning curves (line: mean over seeds; band: +- 1 sd)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def fig_accuracy_vs_eps(plt, groups, runs_all, styles, title):
    fig, ax = plt.subplots(figsize=(8, 5.5))
    eval_eps = runs_all[0].eval_eps
    span = (eval_eps.max() - eval_eps.min()) if eval_eps.size > 1 else 1.0
    offsets = (np.arange(len(groups)) - (len(groups) - 1) / 2) * 0.012 * span
    for (key, label, runs), c, off in zip(groups, styles, offsets):
        acc = np.array([r.accuracy_per_eps if r.accuracy_per_eps is not None
                        else np.full(eval_eps.size, np.nan) for r in runs], dtype=float)
        stats = [eh.mean_sd(acc[:, k]) for k in range(acc.shape[1])]
        m = 100 * np.array([s[0] for s in stats])
        sd = 100 * np.array([s[1] for s in stats])
        ax.errorbar(eval_eps + off, m, yerr=sd if len(runs) > 1 else None, ms=5, capsize=4,
                    color=c["color"], ls=c["ls"], marker=c["marker"],
                    label=f"{label} ({seeds_text(runs)})")
    train_eps = sorted({r.eps for r in runs_all if r.eps is not None})
    for e in train_eps:
        ax.axvline(e, color="0.6", ls=":", lw=1)
    ax.set_xticks(eval_eps)
    ax.set_xlabel(f"test-image {EPS_TEXT}")
    ax.set_ylabel("final-epoch test accuracy (%)")
    ax.set_title(f"{title}Final test accuracy vs brightness jitter\n(mean +- sd over seeds; "
                 f"dotted: training jitter {', '.join(f'{e:g}' for e in train_eps)})")
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


def fig_activity(plt, groups, series, styles, theta, title, normalised=True):
    """`normalised`: some run's hidden layers normalise (the set points are drawn)."""
    H = max(s.activity_mean.shape[1] for s in series.values())
    fig, axes = plt.subplots(2, max(H, 1), figsize=(5.5 * max(H, 1) + 0.5, 8), squeeze=False)
    for h in range(H):
        for r, (attr, target, ylabel, what) in enumerate([
                ("activity_mean", 0.0, "mean over units (model units)", "mean"),
                ("activity_var", theta, "variance over units (model units$^2$)", "variance")]):
            ax = axes[r, h]
            for (key, label, runs), c in zip(groups, styles):
                ss = [series[x.name] for x in runs if getattr(series[x.name], attr).shape[1] > h]
                if ss:
                    band(ax, *by_epoch(ss, lambda s: getattr(s, attr)[:, h]), c,
                         f"{label} ({seeds_text(ss)})")
            if normalised:
                ax.axhline(target, color="k", ls="--", lw=1,
                           label="set point 0" if r == 0 else f"set point theta = {theta:g}")
            ax.set_title(f"Hidden layer {h + 1}: per-image {what} of the equilibrium potentials")
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            integer_x(ax)
            ax.ticklabel_format(axis="y", useOffset=False)
            if r == 1:
                vals = np.concatenate([getattr(s, attr)[:, h] for s in series.values()
                                       if getattr(s, attr).shape[1] > h])
                vals = vals[np.isfinite(vals)]
                if vals.size and vals.min() > 0 and vals.max() / vals.min() > 100:
                    ax.set_yscale("log")
            eh.min_span(ax, 0.2 * (np.sqrt(theta) if r == 0 else theta))
            ax.legend(loc="best")
    fig.suptitle(f"{title}Activity of the hidden layers on the probe images, averaged over images "
                 f"(normalised layers sit on the set points)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def fig_alignment(plt, groups, series, styles, title):
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    ax = axes[0]
    empty = []
    for (key, label, runs), c in zip(groups, styles):
        ss = [series[r.name] for r in runs]
        x, m, s, n = by_epoch(ss, lambda q: q.alignment_total)
        if not np.isfinite(m).any():
            empty.append(label)
            continue
        band(ax, x, m, s, n, c, f"{label} ({seeds_text(runs)})")
    ax.axhline(1.0, color="k", ls="--", lw=1, label="identical to the implicit gradient")
    ax.set_title("All layers together")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cosine(rule's gradient, implicit gradient)")
    integer_x(ax)
    ax.legend(loc="best")

    ax = axes[1]
    n_layers = max(s.alignment.shape[1] for s in series.values())
    width = 0.8 / max(len(groups), 1)
    lowest = 0.0
    for gi, ((key, label, runs), c) in enumerate(zip(groups, styles)):
        vals = [series[r.name].alignment[-1] for r in runs if series[r.name].epoch.size]
        if not vals:
            continue
        a = np.full((len(vals), n_layers), np.nan)
        for i, v in enumerate(vals):
            a[i, :v.size] = v
        stats = [eh.mean_sd(a[:, j]) for j in range(n_layers)]
        m = np.array([s[0] for s in stats])
        sd = np.array([s[1] for s in stats])
        if not np.isfinite(m).any():
            continue
        xs = np.arange(n_layers) + (gi - (len(groups) - 1) / 2) * width
        ax.bar(xs, m, width, yerr=sd if len(runs) > 1 else None, color=c["color"], capsize=3,
               label=label)
        lowest = min(lowest, float(np.nanmin(m - np.nan_to_num(sd))))
    ax.set_xticks(np.arange(n_layers))
    ax.set_xticklabels([f"hidden {j + 1}" for j in range(n_layers - 1)] + ["readout"])
    ax.axhline(1.0, color="k", ls="--", lw=1)
    ax.set_title("Per layer, final epoch (mean +- sd over seeds)")
    ax.set_xlabel("layer (excitatory weights W_EX)")
    ax.set_ylabel("cosine with the implicit gradient")
    ax.set_ylim(lowest - 0.05, 1.3)   # room for the legend above the bars
    ax.legend(loc="upper center", ncol=min(4, max(len(groups), 1)))

    ax = axes[2]
    bins = np.linspace(-1, 1, 41)
    for (key, label, runs), c in zip(groups, styles):
        v = np.concatenate([series[r.name].alignment.reshape(-1) for r in runs])
        v = v[np.isfinite(v)]
        if v.size:
            ax.hist(np.clip(v, -1, 1), bins=bins, histtype="step", lw=1.5, color=c["color"],
                    label=f"{label} ({v.size} values)")
    ax.set_title("Distribution over epochs, layers and seeds")
    ax.set_xlabel("cosine with the implicit gradient")
    ax.set_ylabel("count (epoch x layer x seed)")
    ax.legend(loc="best")
    note = f" No alignment recorded (NaN) for: {', '.join(empty)}." if empty else ""
    fig.suptitle(f"{title}Alignment of each rule's weight gradient with the exact (implicit) "
                 f"gradient on a fixed probe batch.{note}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def fig_iterations(plt, groups, series, styles, title):
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    ax = axes[0]
    no_solves, top = [], 0
    for (key, label, runs), c in zip(groups, styles):
        h = sum(series[r.name].iter_hist.sum(axis=0) for r in runs)
        total = float(np.sum(h))
        if total <= 0:
            no_solves.append(label)
            continue
        nz = np.nonzero(h)[0]
        top = max(top, int(nz[-1]))
        frac = 100 * h / total
        x = np.arange(h.size)
        ax.step(x, np.where(frac > 0, frac, np.nan), where="mid", color=c["color"], ls=c["ls"],
                lw=1.5, label=f"{label} ({total:.3g} solves)")
        ax.plot(x[nz], frac[nz], "o", ms=3, color=c["color"])
    if top or not no_solves:
        ax.set_yscale("log")
        ax.set_xlim(-0.5, max(top, 4) + 0.5)
    nbins = max(s.iter_hist.shape[1] for s in series.values())
    ax.set_title("Newton iterations per sample, all epochs")
    ax.set_xlabel(f"Newton iterations of the forward fixed-point solve (bin {nbins - 1} = "
                  f"{nbins - 1} or more)")
    ax.set_ylabel("share of samples (%)")
    if no_solves:
        if top == 0:
            no_data(ax, "no fixed-point solves: " + ", ".join(no_solves))
        ax.plot([], [], " ", label="no solves: " + ", ".join(no_solves))
    ax.legend(loc="best")

    ax = axes[1]
    for (key, label, runs), c in zip(groups, styles):
        if label in no_solves:
            continue
        ss = [series[r.name] for r in runs]
        band(ax, *by_epoch(ss, lambda s: s.it_mean), c, f"{label}: mean")
        x, m, _, _ = by_epoch(ss, lambda s: s.it_max)
        ax.plot(x, m, ls="--", marker="^", ms=3, color=c["color"], label=f"{label}: max")
    ax.set_title("Newton iterations per sample, per epoch (mean over seeds)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("Newton iterations")
    integer_x(ax)
    ax.legend(loc="best")

    ax = axes[2]
    for (key, label, runs), c in zip(groups, styles):
        ss = [series[r.name] for r in runs]
        x, m, _, _ = by_epoch(ss, lambda s: s.fw_fail)
        ax.plot(x, m, marker="o", ms=3, color=c["color"], label=f"{label}: forward")
        x, m, _, _ = by_epoch(ss, lambda s: s.adj_fail)
        ax.plot(x, m, ls="--", marker="s", ms=3, color=c["color"], label=f"{label}: adjoint")
    ax.set_title("Samples whose solve did not converge, per epoch (mean over seeds)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("failed samples per epoch")
    integer_x(ax)
    ax.legend(loc="best")
    fig.suptitle(f"{title}Cost and health of the equilibrium solver", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def paired_data(ef, baseline):
    """(baseline, {(condition, eps): [(seed, acc, baseline acc)]}) or (None, reason)."""
    if ef.layout != "merged":
        return None, "not a merged sweep file (one run only)"
    conds = ef.conditions()
    if len(conds) < 2:
        return None, "only one condition"
    if baseline is None:
        baseline = "implicit" if "implicit" in conds else conds[0]
    elif baseline not in conds:
        raise eh.EisimFileError(f"{ef.path}: --baseline {baseline}: no such condition (the file "
                                f"has {', '.join(conds)})")
    base = {(r.eps, r.seed): r.final_accuracy for r in ef.runs if r.condition == baseline}
    pairs = {}
    for r in ef.runs:
        if r.condition != baseline and (r.eps, r.seed) in base:
            pairs.setdefault((r.condition, r.eps), []).append(
                (r.seed, r.final_accuracy, base[(r.eps, r.seed)]))
    pairs = {k: v for k, v in pairs.items() if len(v) >= 2}
    if not pairs:
        return None, (f"no condition shares at least two seeds (at the same eps) with the "
                      f"baseline '{baseline}'")
    return (baseline, pairs), None


def fig_paired(plt, ef, baseline, pairs, colors_by_cond, title):
    several_eps = len({k[1] for k in pairs}) > 1
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.5))
    keys = list(pairs)

    def lab(k):
        return f"{k[0]}\n(eps={k[1]:g})" if several_eps else k[0]

    ax = axes[0]
    conds = [baseline] + [c for c in ef.conditions() if c != baseline]
    by_seed = {}
    for r in ef.runs:
        by_seed.setdefault((r.eps, r.seed), {})[r.condition] = r.final_accuracy
    xs = np.arange(len(conds))
    for (eps, seed), accs in sorted(by_seed.items(), key=lambda x: (x[0][0], x[0][1])):
        y = np.array([100 * accs.get(c, np.nan) for c in conds])
        if np.isfinite(y).sum() < 2:
            continue
        ax.plot(xs, y, "-o", ms=4, alpha=0.8,
                label=f"seed {seed}" + (f", eps={eps:g}" if several_eps else ""))
    ax.set_xticks(xs)
    ax.set_xticklabels(conds)
    ax.set_xlabel("condition")
    ax.set_ylabel("final test accuracy at the run's $\\epsilon$ (%)")
    ax.set_title("Final accuracy per seed (lines join runs with the same seed)")
    ax.legend(loc="best", ncol=2)

    ax = axes[1]
    rng = np.random.default_rng(0)
    for i, k in enumerate(keys):
        d = np.array([100 * (a - b) for _, a, b in pairs[k]])
        c = {"color": colors_by_cond.get(k[0], "C0")}
        ax.plot(i + rng.uniform(-0.12, 0.12, d.size), d, "o", color=c["color"], alpha=0.7, ms=6)
        m, s, n = eh.mean_sd(d)
        ax.errorbar([i + 0.3], [m], yerr=[s], fmt="D", color="k", capsize=5, ms=6)
        below = int(np.sum(d < 0))
        ax.annotate(f"mean {m:+.2f} pp\nsd {s:.2f}, n = {n}\n{below}/{n} below",
                    (i + 0.4, m), fontsize=8, va="center")
    ax.axhline(0, color="k", ls="--", lw=1, label=f"no difference from {baseline}")
    ax.set_xticks(np.arange(len(keys)))
    ax.set_xticklabels([lab(k) for k in keys])
    ax.set_xlim(-0.5, len(keys) - 0.5 + 0.6)
    ax.set_xlabel("condition")
    ax.set_ylabel(f"final accuracy minus {baseline}'s, same seed (percentage points)")
    ax.set_title(f"Paired differences from the baseline '{baseline}' (dots: seeds; "
                 f"diamond: mean +- sd)")
    ax.legend(loc="best")
    fig.suptitle(f"{title}Paired comparison over seeds", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


# --------------------------------------------------------------------------------------------


def fig_silent(plt, groups, series, styles, title):
    """Per hidden layer: share of training samples with silent subtractive inhibition of E."""
    layers = max((s.silent.shape[1] for s in series.values() if s.silent is not None), default=0)
    fig, axes = plt.subplots(1, max(layers, 1), figsize=(6 * max(layers, 1), 4.5), squeeze=False)
    axes = axes[0]
    drawn = False
    for l, ax in enumerate(axes):
        for (key, label, runs), c in zip(groups, styles):
            ss = [series[r.name] for r in runs if series[r.name].silent is not None]
            if not ss or l >= ss[0].silent.shape[1]:
                continue
            x, m, s, n = by_epoch(ss, lambda q: 100 * q.silent[:, l])
            if np.isfinite(m).any():
                band(ax, x, m, s, n, c, f"{label} ({seeds_text(runs)})")
                drawn = True
        ax.set_title(f"Hidden layer {l}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training samples with every subtractive I unit silent (%)")
        integer_x(ax)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best")
    if not drawn:
        no_data(axes[0], "no circuit layer with subtractive inhibition of E, or files from "
                "before /train/silent_inhibition_samples existed")
    fig.suptitle(f"{title}Silent subtractive inhibition: the circuit no longer centres E "
                 "(line: mean over seeds; band: +- 1 sd)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def make_figures(ef, out_dir, baseline=None):
    """Writes the figures; returns (paths written, notes)."""
    runs = ef.require_runs()
    if not runs:
        raise eh.EisimFileError(f"{ef.path}: '/summary/run' lists no runs")
    series = {r.name: Series(ef, r) for r in runs}   # reads and checks everything first
    plt = eh.setup_matplotlib()
    groups = eh.groups_of_runs(runs)
    conds = ef.conditions()
    palette = plt.cm.tab10.colors
    colors_by_cond = {c: palette[i % 10] for i, c in enumerate(conds)}
    several_eps = len({r.eps for r in runs}) > 1
    # One colour per condition (per group when there are several eps); line style and marker
    # vary too, so that coinciding curves (implicit and layernorm often do) stay visible.
    styles = [palette[i % 10] if several_eps else colors_by_cond[cond]
              for i, ((cond, eps), _, _) in enumerate(groups)]
    line_styles = ["-", "--", "-.", ":"]
    markers = ["o", "s", "^", "D", "v", "P", "X"]
    styles = [{"color": c, "ls": line_styles[i % 4], "marker": markers[i % 7]}
              for i, c in enumerate(styles)]
    title = f"{os.path.basename(ef.path)}: "
    theta = eh.theta_from_config(runs[0].config or ef.config)
    written, notes = [], []
    eh.save(fig_learning_curves(plt, groups, series, styles, title), out_dir,
            "learning_curves.png", written)
    eh.save(fig_accuracy_vs_eps(plt, groups, runs, styles, title), out_dir,
            "accuracy_vs_eps.png", written)
    normalised = any(eh.config_normalises(r.config or ef.config) for r in runs)
    eh.save(fig_activity(plt, groups, series, styles, theta, title, normalised), out_dir,
            "activity_moments.png", written)
    eh.save(fig_alignment(plt, groups, series, styles, title), out_dir,
            "gradient_alignment.png", written)
    eh.save(fig_iterations(plt, groups, series, styles, title), out_dir,
            "solver_iterations.png", written)
    eh.save(fig_silent(plt, groups, series, styles, title), out_dir, "silent_inhibition.png",
            written)
    data, reason = paired_data(ef, baseline)
    if data is None:
        notes.append(f"paired_comparison.png skipped: {reason}")
    else:
        eh.save(fig_paired(plt, ef, data[0], data[1], colors_by_cond, title), out_dir,
                "paired_comparison.png", written)
    return written, notes


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("file", help="eisim train file or merged sweep summary (HDF5)")
    p.add_argument("--out", help="output directory (default: the input file's directory)")
    p.add_argument("--baseline", help="baseline condition of paired_comparison.png "
                                      "(default: 'implicit' if present, else the first)")
    a = p.parse_args()
    with eh.EisimFile(a.file) as ef:
        out = eh.default_out_dir(a.file, a.out)
        written, notes = make_figures(ef, out, a.baseline)
    eh.print_outputs(written, notes)
    return 0


if __name__ == "__main__":
    eh.run_cli(main)
