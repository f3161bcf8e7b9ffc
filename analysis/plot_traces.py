#!/usr/bin/python3
"""Figures of the circuit dynamics recorded by `eisim simulate` (or the /simulate group of a
training file or a merged sweep summary).

Writes, next to the input file unless --out is given:
  traces_layer<l>.png     for each circuit layer: E potentials of a few units, their mean and
                          variance over units, the rates of every other population of the circuit
                          (mean over its units) and the distance of the whole state to the fixed
                          point, all against time (ms), one colour per image;
  equilibrium_moments.png histograms over images of the mean and variance over units of the
                          equilibrium E potentials, per layer, with the set point (0 and theta)
                          of the layers that normalise;
  protocol.png            (files with /simulate/protocol) the stimulus protocol: the mean rate
                          of every population of every circuit layer against time, with the
                          perturbation windows shaded and the segment boundaries marked.

Example: /usr/bin/python3 analysis/plot_traces.py results/simulate.h5 --out results/figures
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eisim_h5 as eh  # noqa: E402

UNIT_STYLES = ["-", "--", ":", "-."]
ALL_LAYERS = ["v_eq", "eq_mean", "eq_var"]
CIRCUIT_LAYERS = ["v", "fp_iterations", "fp_status", "ode_status", "ode_fp_max_abs_diff"]


def image_labels(sim, n):
    """Legend labels 'image 12 (Trouser)' of the first n images, tolerant of missing data."""
    try:
        images = eh.read_vector(sim, "images").astype(int)
    except eh.EisimFileError:
        images = np.arange(n)
    try:
        labels = eh.read_vector(sim, "labels").astype(int)
    except eh.EisimFileError:
        labels = np.full(n, -1)
    out = []
    for i in range(n):
        img = images[i] if i < len(images) else i
        lab = labels[i] if i < len(labels) else -1
        name = eh.CLASS_NAMES[lab] if 0 <= lab < len(eh.CLASS_NAMES) else f"label {lab}"
        out.append(f"test image {img} ({name})")
    return out


def status_summary(statuses):
    n = len(statuses)
    ok = sum(1 for s in statuses if s == "converged")
    bad = sorted({s for s in statuses if s != "converged"})
    return f"{ok}/{n} converged" + (f" (others: {', '.join(bad)})" if bad else "")


def read_layer_kind(g):
    kind = eh.attr(g, "kind", required=True)
    n_e = eh.attr(g, "n_E")
    return str(kind), (int(n_e) if n_e is not None else None)


def _maybe_log(ax, arrays):
    vals = np.concatenate([np.asarray(a, float).reshape(-1) for a in arrays])
    vals = vals[np.isfinite(vals)]
    if vals.size and vals.min() > 0 and vals.max() / vals.min() > 100:
        ax.set_yscale("log")


def plot_layer_traces(plt, sim, l, g, theta, max_images, n_units, title_prefix):
    """The trace figure of one circuit layer: E potentials (three panels), the mean rate of every
    other population, and the distance to the fixed point. Returns (figure, population names)."""
    kind, n_e = read_layer_kind(g)
    t = eh.read_vector(sim, "t").astype(float)
    v_ds = eh.dataset(g, "v")
    if v_ds.ndim != 3:
        raise eh.EisimFileError(f"{sim.file.filename}: dataset '{v_ds.name}' should be "
                                f"(T, N, n_E), has shape {v_ds.shape}")
    T, N, nE = v_ds.shape
    if T != t.size:
        raise eh.EisimFileError(f"{sim.file.filename}: dataset '{v_ds.name}' has {T} time "
                                f"points but '{sim.name}/t' has {t.size}")
    pops = eh.circuit_populations(g, T, N)
    m = min(N, max_images)
    v = np.asarray(v_ds[:, :m, :], dtype=float)            # (T, m, n_E)
    v_eq = eh.read_matrix(g, "v_eq").astype(float)
    fp_status = eh.read_strings(g, "fp_status")
    ode_status = eh.read_strings(g, "ode_status")
    fp_iter = eh.read_vector(g, "fp_iterations")
    diff = eh.read_scalar(g, "ode_fp_max_abs_diff")
    if v_eq.shape != (N, nE):
        raise eh.EisimFileError(f"{sim.file.filename}: dataset '{g.name}/v_eq' has shape "
                                f"{v_eq.shape}, expected ({N}, {nE}) like '{v_ds.name}'")
    normalises = eh.layer_normalises(g)
    preset = eh.attr(g, "preset")

    labels = image_labels(sim, m)
    colors = plt.cm.tab10(np.arange(m) % 10)
    units = np.unique(np.linspace(0, nE - 1, min(n_units, nE)).round().astype(int))

    # Three panels of E potentials, one per other population, one distance to the fixed point.
    others = pops[1:]
    n_panels = 3 + len(others) + 1
    ncols = 3 if n_panels <= 6 else 4
    nrows = -(-n_panels // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 4.25 * nrows + 0.5), squeeze=False)
    panels = list(axes.reshape(-1))
    for ax in panels[n_panels:]:
        ax.set_visible(False)

    ax = panels[0]
    for i in range(m):
        for j, u in enumerate(units):
            ax.plot(t, v[:, i, u], UNIT_STYLES[j % len(UNIT_STYLES)], color=colors[i], lw=1.2)
            ax.plot([t[-1]], [v_eq[i, u]], "o", mfc="none", color=colors[i], ms=5)
    ax.set_title(f"E potentials of units {', '.join(map(str, units))}\n"
                 f"(line style = unit; o = fixed point)")
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("E potential v (model units)")

    ax = panels[1]
    for i in range(m):
        ax.plot(t, v[:, i, :].mean(axis=1), color=colors[i], label=labels[i])
    # Rounding noise is not drawn as dynamics: at least 20 % of the potentials' natural scale.
    scale = theta if normalises else max(float(np.nanmean(v_eq.var(axis=1))), 1e-12)
    if normalises:
        ax.axhline(0.0, color="k", ls="--", lw=1, label="normalised set point (mean 0)")
    eh.min_span(ax, 0.2 * np.sqrt(scale))
    ax.set_title(f"Mean of v over the {nE} E units")
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("mean E potential (model units)")
    ax.legend(loc="best", fontsize=8)

    ax = panels[2]
    for i in range(m):
        ax.plot(t, v[:, i, :].var(axis=1), color=colors[i])
    if normalises:
        ax.axhline(theta, color="k", ls="--", lw=1, label=f"set point theta = {theta:g}")
        ax.legend(loc="best")
    eh.min_span(ax, 0.2 * scale)
    ax.set_title(f"Variance of v over the {nE} E units")
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("variance of E potentials (model units$^2$)")

    for ax, p in zip(panels[3:], others):
        r = np.asarray(p.rate[:, :m, :], dtype=float)       # (T, m, n)
        series = [r[:, i, :].mean(axis=1) for i in range(m)]
        eq = p.rate_eq[:m].mean(axis=1)
        for i in range(m):
            ax.plot(t, series[i], color=colors[i])
            ax.plot([t[-1]], [eq[i]], "o", mfc="none", color=colors[i], ms=5)
        _maybe_log(ax, series + [eq])
        avg = f"mean over the {p.size} units" if p.size > 1 else "1 unit"
        dyn = f", {p.dynamics}" if p.dynamics else ""
        ax.set_title(f"population {p.name}{dyn}: rate\n({avg}; o = fixed point)")
        ax.set_xlabel("time (ms)")
        ax.set_ylabel(f"{p.name} rate (model units)")

    ax = panels[3 + len(others)]
    with_states = [p for p in pops if p.trace is not None and p.eq is not None]
    if len(with_states) < 2:
        with_states = []  # only E's: the distance of v, drawn from v and v_eq below
    for i in range(m):
        if with_states:
            d = np.zeros(T)
            for p in with_states:
                z = np.asarray(p.trace[:, i, :], dtype=float)
                d = np.maximum(d, np.abs(z - p.eq[i][None, :]).max(axis=1))
        else:
            d = np.abs(v[:, i, :] - v_eq[i][None, :]).max(axis=1)
        ax.plot(t, np.maximum(d, 1e-16), color=colors[i])
    ax.set_yscale("log")
    if with_states:
        ax.set_title("Distance to the fixed point: max over\nthe populations' states "
                     f"({', '.join(p.state + '_' + p.name for p in with_states)}) of |z(t) - z_eq|")
        ax.set_ylabel("max |z - z_eq| (model units)")
    else:
        ax.set_title("Distance to the fixed point: max over units |v(t) - v_eq|")
        ax.set_ylabel("max |v - v_eq| (model units)")
    ax.set_xlabel("time (ms)")

    fp_it = f"{int(np.max(fp_iter))}" if len(fp_iter) else "n/a"
    sizes = ", ".join(f"{p.size} {p.name}" for p in pops)
    circuit = f"circuit '{preset}'" if preset else kind
    fig.suptitle(
        f"{title_prefix}Layer {l} ({circuit}): {sizes} units; first {m} of {N} images\n"
        f"fixed-point solver: {status_summary(fp_status)}, max Newton iterations {fp_it}; "
        f"ODE: {status_summary(ode_status)}; max |v_ODE(end) - v_eq| = {diff:.2g} "
        f"(the ODE may run past the recorded window)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / (4.25 * nrows + 0.5)))
    return fig, [p.name for p in pops]


def plot_equilibrium_moments(plt, sim, layers, theta, title_prefix):
    L = len(layers)
    fig, axes = plt.subplots(2, L, figsize=(4.2 * L + 0.8, 7), squeeze=False)
    for c, (l, g) in enumerate(layers):
        kind, n_e = read_layer_kind(g)
        readout = c == L - 1
        name = f"layer {l}: " + ("readout, " if readout else "") + kind \
            + (f", {n_e} E units" if n_e is not None else "")
        normalised = eh.layer_normalises(g)
        means = eh.read_vector(g, "eq_mean").astype(float)
        variances = eh.read_vector(g, "eq_var").astype(float)
        fin_var = variances[np.isfinite(variances)]
        scale = float(np.mean(fin_var)) if fin_var.size and np.mean(fin_var) > 0 else 1.0
        for r, (x, target, width, xlabel) in enumerate([
                (means, 0.0, 0.1 * np.sqrt(scale), "mean over units of v_eq (model units)"),
                (variances, theta, 0.1 * scale,
                 "variance over units of v_eq (model units$^2$)")]):
            ax = axes[r, c]
            finite = x[np.isfinite(x)]
            bad = x.size - finite.size
            if finite.size:
                # The range includes the set point and is at least 10 % of the layer's natural
                # scale wide, so that values on the set point to rounding show as one bar there.
                lo, hi = finite.min(), finite.max()
                if normalised:
                    lo, hi = min(lo, target), max(hi, target)
                if hi - lo < width:
                    mid = 0.5 * (lo + hi)
                    lo, hi = mid - width / 2, mid + width / 2
                ax.hist(finite, bins=max(5, min(31, finite.size)) | 1, range=(lo, hi),
                        color="C0" if r == 0 else "C1", alpha=0.8, label=f"{finite.size} images")
            if normalised:
                dev = np.max(np.abs(finite - target)) if finite.size else np.nan
                lab = ("set point 0" if r == 0 else f"set point theta = {theta:g}") \
                    + f"\n(max deviation {dev:.1e})"
                ax.axvline(target, color="k", ls="--", lw=1, label=lab)
            ax.set_title(f"{name}" + (f"\n({bad} non-finite values omitted)" if bad else ""))
            ax.set_xlabel(xlabel)
            ax.set_ylabel("number of images")
            ax.ticklabel_format(axis="x", useOffset=False)
            ax.legend(loc="best")
    fig.suptitle(f"{title_prefix}Per-image moments of the equilibrium E potentials "
                 f"(normalised layers should sit on the set points)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def window_label(p):
    what = "silenced" if p["silence"] else f"{p['current']:+g}"
    return f"{p['population']} {what} [{p['start']:g}, {p['end']:g}) ms"


def plot_protocol(plt, protocol, title_prefix):
    """The protocol figure: one row per circuit layer, one panel per population (mean rate over
    its units against time); windows shaded (hatched on the perturbed population's own panel),
    segment boundaries dashed and labelled with the segment's image and brightness."""
    t = protocol.t
    rows = protocol.layers
    ncols = max(len(rates) for _, _, rates in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(4.2 * ncols, 3.2 * len(rows) + 1.0),
                             squeeze=False)
    colors = plt.cm.tab10(np.arange(10))
    for r, (l, status, rates) in enumerate(rows):
        windows = protocol.windows_of(l)
        for c in range(ncols):
            ax = axes[r, c]
            if c >= len(rates):
                ax.set_visible(False)
                continue
            name, rate = rates[c]
            ax.plot(t, rate.mean(axis=1), color="k", lw=1.3)
            for i, p in enumerate(windows):
                own = p["population"] == name
                ax.axvspan(p["start"], p["end"], color=colors[i % 10], alpha=0.3 if own else 0.12,
                           hatch="//" if own else None, lw=0,
                           label=window_label(p) if c == 0 or own else None)
            for k, seg in enumerate(protocol.segments):
                if k > 0:
                    ax.axvline(seg["start"], color="0.3", ls="--", lw=1)
                if r == 0:
                    ax.text(seg["start"], 1.01, f" image {seg['image']} x{seg['brightness']:g}",
                            transform=ax.get_xaxis_transform(), fontsize=7, va="bottom")
            n = rate.shape[1]
            ax.set_title(f"layer {l}: {name} ({n} unit{'s' if n > 1 else ''})"
                         + ("" if status == "converged" else f" [{status}]"), pad=14 if r == 0
                         else 4)
            ax.set_xlabel("time (ms)")
            ax.set_ylabel(f"mean {name} rate (model units)")
            ax.set_xlim(t[0], t[-1])
            if windows and (c == 0 or any(p["population"] == name for p in windows)):
                ax.legend(loc="best", fontsize=7)
    fig.suptitle(f"{title_prefix}stimulus protocol: {len(protocol.segments)} segments "
                 f"(dashed: boundaries), {len(protocol.perturbations)} perturbation windows "
                 f"(shaded; hatched on the perturbed population)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (3.2 * len(rows) + 1.0)))
    return fig


def make_figures(ef, out_dir, run_name=None, max_images=4, n_units=3):
    """Writes the figures; returns (paths written, notes, (simulate group, run name))."""
    sim, run = ef.simulate_group(run_name)
    theta = eh.theta_from_config(ef.run_config(run))
    layers = eh.layer_groups(sim)
    eh.read_vector(sim, "t")
    protocol = eh.read_protocol(sim)
    for l, g in layers:  # fail on a missing dataset before drawing anything
        circuit = read_layer_kind(g)[0] == "circuit"
        for name in ALL_LAYERS + (CIRCUIT_LAYERS if circuit else []):
            eh.dataset(g, name)
        if circuit:
            v = eh.dataset(g, "v")
            if v.ndim == 3:
                eh.circuit_populations(g, v.shape[0], v.shape[1])
    plt = eh.setup_matplotlib()
    prefix = f"{os.path.basename(ef.path)}" + (f", run {run}" if run else "") + ": "
    written, notes = [], []
    circuit = [(l, g) for l, g in layers if read_layer_kind(g)[0] == "circuit"]
    for l, g in circuit:
        fig, names = plot_layer_traces(plt, sim, l, g, theta, max_images, n_units, prefix)
        eh.save(fig, out_dir, f"traces_layer{l}.png", written)
        notes.append(f"traces_layer{l}.png: populations {', '.join(names)}")
    if not circuit:
        notes.append(f"no circuit layers in '{sim.name}': no traces_layer<l>.png written")
    fig = plot_equilibrium_moments(plt, sim, layers, theta, prefix)
    eh.save(fig, out_dir, "equilibrium_moments.png", written)
    if protocol is not None:
        fig = plot_protocol(plt, protocol, prefix)
        eh.save(fig, out_dir, "protocol.png", written)
        names = [n for n, _ in protocol.layers[0][2]]
        notes.append(f"protocol.png: layers {', '.join(str(l) for l, _, _ in protocol.layers)}; "
                     f"populations {', '.join(names)}; windows "
                     + ("; ".join(window_label(p) for p in protocol.perturbations) or "none"))
    return written, notes, (sim, run)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("file", help="eisim HDF5 file with a /simulate group (simulate, train, merged)")
    p.add_argument("--out", help="output directory (default: the input file's directory)")
    p.add_argument("--run", help="run name in a merged file (default: the first run that has "
                                 "/runs/<run>/simulate)")
    p.add_argument("--images", type=int, default=4, help="images drawn in the traces (default 4)")
    p.add_argument("--units", type=int, default=3, help="E units drawn per image (default 3)")
    a = p.parse_args()
    if a.images < 1 or a.units < 1:
        p.error("--images and --units must be >= 1")
    with eh.EisimFile(a.file) as ef:
        out = eh.default_out_dir(a.file, a.out)
        written, notes, _ = make_figures(ef, out, a.run, a.images, a.units)
    eh.print_outputs(written, notes)
    return 0


if __name__ == "__main__":
    eh.run_cli(main)
