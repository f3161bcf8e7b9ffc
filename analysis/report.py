#!/usr/bin/python3
"""A Markdown report of an eisim HDF5 file: figures, accuracy tables and provenance.

Runs plot_training.py (train files and merged sweep summaries) and plot_traces.py (any file with a
/simulate group) and writes into the output directory (default: next to the input file):
  report.md          the figures embedded by relative path, per-condition tables (mean +- sd over
                     seeds of the final test accuracy, accuracy per evaluation eps, training time),
                     per-run table, equilibrium-solver table, provenance and a config excerpt;
  summary_table.txt  the per-condition table as aligned plain text;
  *.png              the figures of both plotters.

Example: /usr/bin/python3 analysis/report.py results/quickstart.h5 --out results/quickstart
"""

import argparse
import datetime
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eisim_h5 as eh  # noqa: E402
import plot_traces  # noqa: E402
import plot_training  # noqa: E402

CAPTIONS = {
    "protocol.png": (
        "Stimulus protocol",
        "Population-mean rates of every circuit layer through the protocol's segments (dashed "
        "lines, labelled with image and brightness); perturbation windows are shaded (hatched on "
        "the perturbed population's panel). Layer l > 0 is driven by layer l - 1's rates, held "
        "constant over each record interval."),
    "learning_curves.png": (
        "Learning curves",
        "Left: test accuracy at each run's own training jitter eps after every epoch; middle: "
        "training accuracy on jittered training images; right: training loss. Lines are means "
        "over seeds, bands +- 1 sd."),
    "accuracy_vs_eps.png": (
        "Final accuracy against brightness jitter",
        "Final-epoch test accuracy when the test images are jittered by d ~ U(-eps, eps), for "
        "each evaluation eps; error bars are +- 1 sd over seeds, the dotted line marks the "
        "training jitter."),
    "activity_moments.png": (
        "Activity of the hidden layers",
        "Mean (top) and variance (bottom) over units of each hidden layer's equilibrium "
        "potentials, averaged over the probe images, after each epoch. A normalising layer sits "
        "on the set points (mean 0, variance theta)."),
    "gradient_alignment.png": (
        "Alignment with the exact gradient",
        "Cosine between each rule's gradient of the excitatory weights and the implicit (exact) "
        "gradient on a fixed probe batch: all layers together per epoch, per layer at the final "
        "epoch, and the distribution over epochs, layers and seeds. 1 means the same direction."),
    "solver_iterations.png": (
        "Equilibrium solver",
        "Distribution of Newton iterations per sample of the forward fixed-point solve over all "
        "epochs, mean and maximum per epoch, and the number of samples whose forward or adjoint "
        "solve did not converge."),
    "silent_inhibition.png": (
        "Silent subtractive inhibition",
        "Per hidden layer, the share of each epoch's training samples in which every unit of the "
        "inhibitory populations that subtract from E has rate 0 at the equilibrium: there the "
        "circuit no longer removes E's mean drive (docs/concepts.md). Empty for layers without "
        "such inhibition (layernorm, none)."),
    "paired_comparison.png": (
        "Paired comparison over seeds",
        "Final test accuracy per seed, and each condition's difference from the baseline "
        "condition for the same seed (and eps), in percentage points."),
    "equilibrium_moments.png": (
        "Equilibrium moments",
        "Histograms over the simulated images of the mean and the variance over units of each "
        "layer's equilibrium E potentials (fixed-point solver), with the set points of the "
        "normalising layers."),
}


def trace_caption(name):
    layer = name[len("traces_layer"):-len(".png")]
    return (f"Circuit dynamics, layer {layer}",
            "ODE integration of the circuit for the first simulated images: E potentials of a "
            "few units (circles: the fixed-point solution), their mean and variance over units, "
            "the rate of every other population of the circuit (mean over its units), and the "
            "largest distance of the state to the fixed point, against time in ms.")


# --------------------------------------------------------------------------------------------
# Tables


def condition_rows(ef):
    """Per (condition, eps): [condition, eps, seeds, final, acc per eval eps..., seconds]."""
    rows = []
    eval_eps = ef.runs[0].eval_eps
    for (cond, eps), label, runs in eh.groups_of_runs(ef.runs):
        acc = np.array([r.accuracy_per_eps if r.accuracy_per_eps is not None
                        else np.full(eval_eps.size, np.nan) for r in runs], dtype=float)
        row = [cond, f"{eps:g}" if eps is not None else "?", str(len(runs)),
               eh.fmt_mean_sd_pct([r.final_accuracy for r in runs])]
        row += [eh.fmt_mean_sd_pct(acc[:, k]) for k in range(eval_eps.size)]
        m, s, n = eh.mean_sd([r.seconds for r in runs])
        row.append("n/a" if n == 0 else f"{m:.1f}")
        rows.append(row)
    header = ["rule/condition", "train eps", "seeds", "final test acc %"]
    header += [f"acc % @ eps={e:g}" for e in eval_eps]
    header.append("seconds/run")
    return header, rows


def run_rows(ef, series):
    header = ["run", "condition", "eps", "seed", "epochs", "status", "final test acc %",
              "seconds", "forward failures", "adjoint failures"]
    rows = []
    for r in ef.runs:
        s = series.get(r.name)
        rows.append([r.name, r.condition, f"{r.eps:g}" if r.eps is not None else "?",
                     "?" if r.seed is None else str(r.seed), str(r.epochs),
                     str(r.attrs.get("status", "?")), eh.fmt_pct(r.final_accuracy),
                     f"{r.seconds:.1f}" if r.seconds is not None else "n/a",
                     str(int(np.nansum(s.fw_fail))) if s else "n/a",
                     str(int(np.nansum(s.adj_fail))) if s else "n/a"])
    return header, rows


def solver_rows(sim):
    header = ["layer", "kind", "n_E", "fixed point converged", "max iterations", "max residual",
              "ODE converged", "max abs(v_ODE - v_eq)", "eq_mean range", "eq_var range"]
    rows = []
    for l, g in eh.layer_groups(sim):
        kind, n_e = plot_traces.read_layer_kind(g)
        m = eh.read_vector(g, "eq_mean").astype(float)
        v = eh.read_vector(g, "eq_var").astype(float)
        cell = kind
        if kind == "circuit" and eh.attr(g, "populations") is not None:
            pops = str(eh.attr(g, "populations")).replace(",", ", ")
            cell = f"circuit ({eh.attr(g, 'preset', '?')}: {pops})"
        row = [str(l), cell, str(n_e)]
        if kind == "circuit":
            row += [plot_traces.status_summary(eh.read_strings(g, "fp_status")),
                    str(int(np.max(eh.read_vector(g, "fp_iterations")))),
                    f"{np.nanmax(eh.read_vector(g, 'fp_residual')):.2g}",
                    plot_traces.status_summary(eh.read_strings(g, "ode_status")),
                    f"{eh.read_scalar(g, 'ode_fp_max_abs_diff'):.2g}"]
        else:
            row += ["-"] * 5
        row += [f"[{np.nanmin(m):.3g}, {np.nanmax(m):.3g}]",
                f"[{np.nanmin(v):.3g}, {np.nanmax(v):.3g}]"]
        rows.append(row)
    return header, rows


def provenance(ef, sim_run):
    a = ef.root_attrs
    rows = [[k, f"`{a[k]}`" if k == "command" else str(a[k])]
            for k in eh.PROVENANCE_ATTRS + ["rule", "error_transform", "kind", "status"]
            if k in a]
    if ef.layout == "merged":
        for key in ["git_commit", "eisim_version", "precision", "status"]:
            vals = sorted({str(r.attrs[key]) for r in ef.runs if key in r.attrs})
            if vals:
                rows.append([f"runs' {key}", ", ".join(vals)])
    if sim_run:
        rows.append(["traces from run", sim_run])
    return rows


# --------------------------------------------------------------------------------------------


def has_simulate(ef):
    return "simulate" in ef.h5 or any(r.simulate is not None for r in ef.runs)


def write_report(ef, out_dir, run_name=None, baseline=None):
    written, notes = [], []
    series = {}
    if ef.layout in ("train", "merged"):
        w, n = plot_training.make_figures(ef, out_dir, baseline)
        written += w
        notes += n
        series = {r.name: plot_training.Series(ef, r) for r in ef.runs}
    sim, sim_run = None, None
    if run_name or has_simulate(ef):
        w, n, (sim, sim_run) = plot_traces.make_figures(ef, out_dir, run_name)
        written += w
        notes += n
    else:
        notes.append("no /simulate group: no traces_layer<l>.png or equilibrium_moments.png")

    name = os.path.basename(ef.path)
    what = {"merged": f"merged sweep summary of {len(ef.runs)} runs",
            "train": "one training run (eisim train)",
            "simulate": "circuit simulation (eisim simulate)"}[ef.layout]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md = [f"# eisim report: {name}", "",
          f"Input: `{os.path.abspath(ef.path)}`, {what}. Written {now} by `analysis/report.py`.",
          ""]
    table_txt = [f"eisim summary of {os.path.abspath(ef.path)} ({what})", ""]

    if ef.layout in ("train", "merged"):
        header, rows = condition_rows(ef)
        md += ["## Results per condition", "",
               "Test accuracy after the last epoch in %, mean +- sd over seeds (just the value "
               "for one seed); `final` is at the run's own training jitter eps; seconds are the "
               "total training time of one run.", "",
               eh.markdown_table(header, rows)]
        table_txt += ["Test accuracy % after the last epoch (mean +- sd over seeds)", "",
                      eh.text_table(header, rows)]
        header, rows = run_rows(ef, series)
        md += ["## Runs", "", eh.markdown_table(header, rows)]
        bad = [r.name for r in ef.runs if r.attrs.get("status", "complete") != "complete"]
        if bad:
            md += [f"**Warning:** runs not complete: {', '.join(bad)}.", ""]
    if sim is not None:
        header, rows = solver_rows(sim)
        where = f" of run `{sim_run}`" if sim_run else ""
        md += ["## Equilibrium solver on the simulated images", "",
               f"From `{sim.name}`{where}; eps of the simulated images: "
               f"{eh.read_scalar(sim, 'eps'):g}.", "", eh.markdown_table(header, rows)]
        if ef.layout == "simulate":
            table_txt += ["Equilibrium solver per layer", "", eh.text_table(header, rows)]

    md += ["## Figures", ""]
    for path in written:
        fn = os.path.basename(path)
        title, cap = CAPTIONS.get(fn) or trace_caption(fn)
        rel = os.path.relpath(path, out_dir)
        md += [f"### {title}", "", f"![{title}]({rel})", "", cap, ""]
    if notes:
        md += ["Not drawn:", ""] + [f"- {n}" for n in notes] + [""]

    md += ["## Provenance", "", eh.markdown_table(["attribute", "value"], provenance(ef, sim_run))]
    cfg = ef.config or (ef.runs[0].config if ef.runs else "")
    excerpt = eh.config_sections(cfg, {"seed", "precision", "data", "network", "learning", "train",
                                       "sweep"})
    if excerpt:
        md += ["Configuration excerpt (the full resolved YAML is the file's `config` attribute):",
               "", "```yaml", excerpt, "```", ""]

    report = os.path.join(out_dir, "report.md")
    with open(report, "w") as f:
        f.write("\n".join(md))
    table = os.path.join(out_dir, "summary_table.txt")
    with open(table, "w") as f:
        f.write("\n".join(table_txt))
    return written + [report, table], notes


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("file", help="eisim HDF5 file (simulate, train or merged sweep summary)")
    p.add_argument("--out", help="output directory (default: the input file's directory)")
    p.add_argument("--run", help="merged files: run whose /simulate traces are drawn "
                                 "(default: the first run that has one)")
    p.add_argument("--baseline", help="baseline condition of the paired comparison "
                                      "(default: 'implicit' if present, else the first)")
    a = p.parse_args()
    with eh.EisimFile(a.file) as ef:
        out = eh.default_out_dir(a.file, a.out)
        written, notes = write_report(ef, out, a.run, a.baseline)
    eh.print_outputs(written, notes)
    return 0


if __name__ == "__main__":
    eh.run_cli(main)
