#!/usr/bin/python3
"""Where the equilibria of a leaky heterogeneous circuit stop being stable (issue 11): runs
`eisim simulate` over a grid of leaks lambda (lambda_I = lambda_D) and pooling heterogeneities,
on the same jittered test images, and tabulates the linear stability of each hidden layer's
equilibrium (the `stability` per image that simulate records: the leading eigenvalue of the full
circuit's Jacobian at the solved fixed point, docs/numerics.md, "Stability").

    /usr/bin/python3 analysis/stability_map.py --eisim build/eisim --out results/stability_map \\
        [--lambdas 0.03 0.1 0.3 1] [--heterogeneity 0 0.25 0.5 1] [--images 32] [--jobs 2]

The circuit is the default preset with n_I = n_D = 28 heterogeneous interneurons per class
(issue 11's circuit), the weights of experiments/simulate.yaml's initial network (seed 1), and
the images 0 .. N-1 of the test set with brightness jitter eps 0.75. Writes in --out:
  sim_l<lambda>_h<heterogeneity>.h5  the simulate files (kept: rerunning reuses them);
  stability_map.md    per grid point and layer: images with a stable / unstable / oscillatory /
                      marginal / unknown equilibrium, or none found, and the median leading real part;
                      and, per image at lambda = 0.1 (heterogeneity 0.5 if on the grid), its
                      class against E's equilibrium mean (how much of the mean drive the
                      subtractive interneurons fail to remove);
  stability_map.png   the share of stable equilibria over the grid, one panel per layer.
--set passes further overrides to every simulate run (e.g. --set network.circuit.k_I=10).
"""

import argparse
import concurrent.futures
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import eisim_h5 as eh  # noqa: E402

# simulate's classes: "unchecked" where no fixed point was found (Newton, the continuation and
# the ODE fallback all failed), so there is nothing to classify.
CLASSES = ["stable", "unstable", "oscillatory", "marginal", "unknown", "unchecked"]


def point_file(out, lam, het):
    return os.path.join(out, f"sim_l{lam:g}_h{het:g}.h5")


def simulate(args, lam, het):
    """Run eisim simulate for one grid point unless its file exists; (path, error or None)."""
    path = point_file(args.out, lam, het)
    if os.path.exists(path):
        return path, None
    config = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "experiments",
                          "simulate.yaml")
    images = "[" + ",".join(str(i) for i in range(args.images)) + "]"
    sets = [f"network.circuit.n_I={args.units}", f"network.circuit.n_D={args.units}",
            "network.circuit.pooling=heterogeneous", f"network.circuit.heterogeneity={het:g}",
            f"network.circuit.lambda_I={lam:g}", f"network.circuit.lambda_D={lam:g}",
            f"simulate.images={images}", "simulate.eps=0.75", "simulate.t_max=1",
            "simulate.record_points=2", f"ode.t_max={args.ode_t_max:g}"] + (args.set or [])
    cmd = [args.eisim, "--threads", "1", "simulate", "--config", config, "--out", path]
    for s in sets:
        cmd += ["--set", s]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0 or not os.path.exists(path):
        return path, f"exit {p.returncode}: {p.stderr.strip()[-500:]}"
    return path, None


def read_point(path):
    """Per hidden layer: {class counts, fixed-point failures, median leading real part,
    per-image (class, E's equilibrium mean, leading real part)}."""
    layers = []
    with eh.open_h5(path) as f:
        sim = eh.child(f, "simulate", "group")
        names = sorted((k for k in sim if k.startswith("layer_")), key=lambda k: int(k[6:]))
        for name in names:
            g = sim[name]
            if "stability" not in g:
                continue  # the readout layer
            cls = [str(c) for c in eh.read_strings(g, "stability")]
            other = sorted(set(cls) - set(CLASSES))
            if other:
                raise eh.EisimFileError(f"{path}: {name}/stability has unknown classes {other}")
            mr = eh.read_vector(g, "eig_max_real")
            mean = eh.read_vector(g, "eq_mean")
            layers.append({
                "counts": {c: cls.count(c) for c in CLASSES},
                "median_max_real": float(np.nanmedian(mr)) if np.isfinite(mr).any() else np.nan,
                "images": list(zip(cls, mean, mr)),
            })
    return layers


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eisim", default="build/eisim", help="the eisim binary")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.03, 0.1, 0.3, 1.0])
    ap.add_argument("--heterogeneity", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0])
    ap.add_argument("--images", type=int, default=32, help="test images 0 .. N-1")
    ap.add_argument("--units", type=int, default=28, help="n_I = n_D")
    ap.add_argument("--ode-t-max", type=float, default=2000.0,
                    help="ms of simulate's ODE reference (its status is not used here)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--set", action="append", help="another override for every run")
    args = ap.parse_args()
    if not os.access(args.eisim, os.X_OK):
        raise eh.EisimFileError(f"{args.eisim}: not an executable (build eisim first)")
    for o in args.set or []:
        if o.split("=")[0].strip() in ("fixed_point.stability", "fixed_point.stability_samples"):
            # simulate then records "unchecked" for samples it did not check, which this script
            # counts as "no fixed point found".
            raise eh.EisimFileError(f"--set {o}: the map needs every equilibrium checked")
    if args.images < 1 or args.jobs < 1 or args.units < 1:
        raise eh.EisimFileError("--images, --units and --jobs must be >= 1")
    os.makedirs(args.out, exist_ok=True)
    grid = [(lam, het) for lam in args.lambdas for het in args.heterogeneity]
    results, errors = {}, []
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(simulate, args, lam, het): (lam, het) for lam, het in grid}
        for k, fut in enumerate(concurrent.futures.as_completed(futures), 1):
            lam, het = futures[fut]
            path, err = fut.result()
            print(f"[{k}/{len(grid)}] lambda {lam:g}, heterogeneity {het:g}: "
                  + ("failed: " + err if err else os.path.basename(path)), flush=True)
            if err:
                errors.append((lam, het, err))
            else:
                results[(lam, het)] = read_point(path)
    if not results:
        raise eh.EisimFileError("no grid point ran: " + "; ".join(e[2] for e in errors))

    rows = []
    for lam, het in grid:
        if (lam, het) not in results:
            rows.append([f"{lam:g}", f"{het:g}", "-", "failed", "", "", "", "", "", ""])
            continue
        for li, L in enumerate(results[(lam, het)]):
            c = L["counts"]
            rows.append([f"{lam:g}", f"{het:g}", str(li), str(c["stable"]), str(c["unstable"]),
                         str(c["oscillatory"]), str(c["marginal"]), str(c["unchecked"]),
                         str(c["unknown"]),
                         f"{L['median_max_real']:.2e}"])
    header = ["lambda", "heterogeneity", "layer", "stable", "unstable", "oscillatory", "marginal",
              "no fixed point found", "unknown", "median leading Re (1/ms)"]
    text = [f"# Stability of the equilibria over (lambda, heterogeneity)\n",
            f"{args.images} test images (eps 0.75), n_I = n_D = {args.units}, "
            f"eisim: {args.eisim}\n", eh.markdown_table(header, rows)]
    lam0 = min(results, key=lambda k: (abs(k[0] - 0.1), abs(k[1] - 0.5)))
    text.append(f"\n## Per image at lambda {lam0[0]:g}, heterogeneity {lam0[1]:g}\n\n"
                "E's equilibrium mean (0 where the circuit centres E) and the leading real "
                "part of the spectrum, by class:\n")
    per = []
    for li, L in enumerate(results[lam0]):
        for c in CLASSES:
            ims = [(m, r) for cls, m, r in L["images"] if cls == c]
            if not ims:
                continue
            m = np.array([x[0] for x in ims])
            r = np.array([x[1] for x in ims])
            per.append([str(li), c, str(len(ims)), f"{np.median(m):.3f}",
                        f"{m.min():.3f} .. {m.max():.3f}", f"{np.median(r):.2e}"])
    text.append(eh.markdown_table(["layer", "class", "images", "median E mean", "E mean range",
                                   "median leading Re (1/ms)"], per))
    if errors:
        text.append("\nFailed grid points:\n\n" + "\n".join(
            f"- lambda {lam:g}, heterogeneity {het:g}: {e}" for lam, het, e in errors) + "\n")
    md = os.path.join(args.out, "stability_map.md")
    with open(md, "w") as fh:
        fh.write("\n".join(text))
    print("\n".join(text))

    plt = eh.setup_matplotlib()
    n_layers = max(len(v) for v in results.values())
    fig, axes = plt.subplots(1, n_layers, figsize=(4.6 * n_layers, 3.8), squeeze=False,
                             constrained_layout=True)
    for li in range(n_layers):
        share = np.full((len(args.lambdas), len(args.heterogeneity)), np.nan)
        for a, lam in enumerate(args.lambdas):
            for b, het in enumerate(args.heterogeneity):
                L = results.get((lam, het))
                if L and li < len(L):
                    share[a, b] = L[li]["counts"]["stable"] / max(1, sum(L[li]["counts"].values()))
        ax = axes[0, li]
        im = ax.imshow(share, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
        ax.set_xticks(range(len(args.heterogeneity)), [f"{h:g}" for h in args.heterogeneity])
        ax.set_yticks(range(len(args.lambdas)), [f"{x:g}" for x in args.lambdas])
        ax.set_xlabel("pooling heterogeneity (lognormal sigma)")
        ax.set_ylabel("leak lambda_I = lambda_D")
        ax.set_title(f"layer {li}: share of images with a stable equilibrium")
        ax.grid(False)
        for a in range(share.shape[0]):
            for b in range(share.shape[1]):
                if np.isfinite(share[a, b]):
                    ax.text(b, a, f"{share[a, b]:.2f}", ha="center", va="center",
                            color="w" if share[a, b] < 0.6 else "k", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046)
    written = []
    eh.save(fig, args.out, "stability_map.png", written)
    eh.print_outputs(written + [md], [])
    return 1 if errors else 0


if __name__ == "__main__":
    eh.run_cli(main)
