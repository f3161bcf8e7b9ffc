#!/usr/bin/python3
"""Learning-rate selection on the validation split (experiments/paper/lr_selection.yaml).

Reads the run files (or the merged summary) of the selection sweep, whose conditions are named
``<condition>-lr<rate>`` (for example ``circuit_frozen-lr3e-3``), and prints per condition the
final validation accuracy of every rate and the chosen one (best validation accuracy at the run's
train eps; ties go to the smaller rate). Test accuracies are neither read nor printed: the test
set takes no part in the selection.

    /usr/bin/python3 analysis/select_lr.py results/paper_lr --epoch 10 [--yaml]

--yaml prints the chosen rates as the `set` entries of experiments/paper/sweep.yaml.
"""

import argparse
import glob
import os
import re
import sys
from collections import defaultdict

import eisim_h5

NAME = re.compile(r"^(?P<cond>.+)-lr(?P<rate>[0-9.]+e-?[0-9]+|[0-9.]+)$")


def run_rows(path, epoch):
    """[(condition, run, validation accuracy)] of the run files in directory `path` or of the
    merged summary `path`, after `epoch` (None: the last), at the eval eps nearest each run's
    train eps."""
    out = []
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "*.h5")))
        if not files:
            raise eisim_h5.EisimFileError(f"{path}: no .h5 run files")
        for fp in files:
            with eisim_h5.open_h5(fp) as f:
                if "train/validation_accuracy" not in f:
                    raise eisim_h5.EisimFileError(
                        f"{fp}: /train/validation_accuracy is missing: no validation split "
                        "(data.validation = 0), so no rate can be selected without the test set")
                va = eisim_h5.read_matrix(f, "train/validation_accuracy")
                ev = eisim_h5.read_vector(f, "train/eval_eps")
                cfg = str(eisim_h5.attr(f, "config", required=True))
                eps = float(eisim_h5.config_lookup(cfg, "data.train_eps"))
                status = str(eisim_h5.attr(f, "status", default="?"))
            run = os.path.basename(fp)[:-3]
            cond = re.sub(r"_eps[0-9.e-]+_seed\d+$", "", run)
            e = va.shape[0] if epoch is None else epoch
            if e > va.shape[0] or (epoch is None and status != "complete"):
                # Not finished: its condition gets no choice (see select()).
                out.append((cond, run, None))
                continue
            out.append((cond, run, float(va[e - 1, eisim_h5.nearest_index(ev, eps)])))
        return out
    if epoch is not None:
        raise eisim_h5.EisimFileError("--epoch needs a directory of run files, not a summary")
    with eisim_h5.open_h5(path) as f:
        if "summary" not in f:
            raise eisim_h5.EisimFileError(f"{path}: not a merged sweep summary (eisim sweep --merge)")
        if "validation_accuracy" not in f["summary"]:
            raise eisim_h5.EisimFileError(
                f"{path}: /summary/validation_accuracy is missing: the runs had no validation "
                "split (data.validation = 0), so no rate can be selected without the test set")
        conds = eisim_h5.read_strings(f, "summary/condition")
        runs = eisim_h5.read_strings(f, "summary/run")
        val = eisim_h5.read_vector(f, "summary/validation_accuracy")
    return list(zip(conds, runs, (float(v) for v in val)))


def select(path, epoch=None):
    """{condition: [(rate, validation accuracy, run), ...] sorted by rate}, and the choices."""
    table = defaultdict(list)
    for cond, run, v in run_rows(path, epoch):
        m = NAME.match(cond)
        if not m:
            raise eisim_h5.EisimFileError(
                f"{path}: condition '{cond}' is not named <condition>-lr<rate>")
        table[m.group("cond")].append((float(m.group("rate")), v, run))
    choice = {}
    for cond, rows in table.items():
        if any(v is None for _, v, _ in rows):
            print(f"note: {cond}: not every run is complete; no rate chosen", file=sys.stderr)
            continue
        rows.sort()
        finite = [r for r in rows if r[1] == r[1]]
        if not finite:
            raise eisim_h5.EisimFileError(f"{path}: every run of '{cond}' has a NaN validation accuracy")
        best = max(finite, key=lambda r: (r[1], -r[0]))
        choice[cond] = best[0]
    return table, choice


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", help="directory of the run files of experiments/paper/lr_selection.yaml, "
                    "or their merged summary")
    ap.add_argument("--epoch", type=int, help="select on the validation accuracy after this epoch "
                    "(default: the last; needs a directory)")
    ap.add_argument("--yaml", action="store_true", help="print the chosen rates as YAML")
    a = ap.parse_args()
    table, choice = select(a.path, a.epoch)
    rates = sorted({r for rows in table.values() for r, _, _ in rows})
    print("condition".ljust(20) + "".join(f"val@lr_E={r:g}".rjust(16) for r in rates) + "  chosen")
    for cond in table:
        by_rate = {r: v for r, v, _ in table[cond]}
        cells = "".join((f"{100 * by_rate[r]:.2f}" if by_rate.get(r) is not None else "-").rjust(16)
                        for r in rates)
        print(cond.ljust(20) + cells + (f"  {choice[cond]:g}" if cond in choice else "  -"))
    if a.yaml:
        for cond in choice:
            print(f"{cond}: {{learning.lr_E: {choice[cond]:g}, learning.lr_I: {choice[cond] / 10:g}}}")
    return 0


if __name__ == "__main__":
    eisim_h5.run_cli(main)
