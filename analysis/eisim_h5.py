#!/usr/bin/python3
"""Shared reader for eisim's HDF5 files (layouts in docs/hdf5.md).

One file is one of three layouts:

* ``simulate``: a file with a root ``/simulate`` group and no ``/train`` (``eisim simulate``);
* ``train``: a file with ``/train`` (``eisim train``, one run), maybe with ``/simulate``;
* ``merged``: a sweep summary with ``/summary`` and ``/runs/<run>/...`` (``eisim sweep --merge``).

Every read goes through :func:`dataset`, which raises :class:`EisimFileError` naming the file and
the full path of a missing dataset, so that the command-line scripts can exit with a clear message.
The readers tolerate the harmless variations a C++ writer may produce: vectors stored as (n, 1) or
(1, n) matrices, scalars stored as 1-element arrays, integers stored as floats, strings stored as
variable- or fixed-length byte strings.
"""

import math
import os
import re
import sys

import h5py
import numpy as np

# Fashion-MNIST class names, by label.
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot"]

PROVENANCE_ATTRS = ["eisim_version", "git_commit", "build_type", "seed", "precision", "command",
                    "created", "hostname", "cpu_model", "isa", "compiler", "eigen_version",
                    "native"]


class EisimFileError(Exception):
    """A missing, unreadable or malformed eisim file; the message names the file and the object."""


# --------------------------------------------------------------------------------------------
# Low-level reading


def print_outputs(written, notes):
    """Print a script's notes, then the paths it wrote (one per line)."""
    for n in notes:
        print(f"note: {n}")
    for w in written:
        print(w)


def open_h5(path):
    """Opens an HDF5 file for reading, with a clear error for a missing or non-HDF5 file."""
    if not os.path.exists(path):
        raise EisimFileError(f"{path}: no such file")
    if os.path.isdir(path):
        raise EisimFileError(f"{path}: is a directory, not an HDF5 file")
    try:
        if not h5py.is_hdf5(path):
            raise EisimFileError(f"{path}: not an HDF5 file")
        return h5py.File(path, "r")
    except OSError as e:
        raise EisimFileError(f"{path}: cannot open as HDF5 ({e})") from e


def _where(obj):
    return obj.file.filename


def child(group, name, kind=None):
    """Member `name` of `group` (relative path allowed); raises naming its full path if missing."""
    full = group.name.rstrip("/") + "/" + name
    if name not in group:
        what = {"group": "group", "dataset": "dataset"}.get(kind, "object")
        raise EisimFileError(f"{_where(group)}: missing {what} '{full}'")
    obj = group[name]
    if kind == "group" and not isinstance(obj, h5py.Group):
        raise EisimFileError(f"{_where(group)}: '{full}' is not a group")
    if kind == "dataset" and not isinstance(obj, h5py.Dataset):
        raise EisimFileError(f"{_where(group)}: '{full}' is not a dataset")
    return obj


def dataset(group, name):
    """The h5py dataset `name` under `group`, or an error naming it."""
    return child(group, name, "dataset")


def _bad(ds, what):
    return EisimFileError(f"{_where(ds)}: dataset '{ds.name}' {what} (shape {ds.shape}, "
                          f"dtype {ds.dtype})")


def read_array(group, name, ndim=None, numeric=True):
    """Reads a numeric dataset as a numpy array; `ndim` reshapes harmless variants."""
    ds = dataset(group, name)
    if numeric and ds.dtype.kind not in "biuf":
        raise _bad(ds, "is not numeric")
    a = np.asarray(ds[()])
    if ndim is None:
        return a
    if ndim == 0:
        if a.size != 1:
            raise _bad(ds, "should be a scalar")
        return a.reshape(())
    if ndim == 1:
        if a.ndim == 1:
            return a
        if a.ndim == 0:
            return a.reshape(1)
        if a.ndim == 2 and 1 in a.shape:
            return a.reshape(-1)
        raise _bad(ds, "should be a vector")
    if a.ndim == ndim:
        return a
    raise _bad(ds, f"should have {ndim} dimensions")


def read_vector(group, name):
    return read_array(group, name, 1)


def read_matrix(group, name, rows=None):
    """Reads a 2-D dataset; a vector is accepted as a one-column matrix when it has `rows` rows."""
    ds = dataset(group, name)
    a = read_array(group, name)
    if a.ndim == 1 and rows is not None and a.shape[0] == rows:
        return a.reshape(rows, 1)
    if a.ndim != 2:
        raise _bad(ds, "should be a matrix")
    return a


def read_scalar(group, name):
    return read_array(group, name, 0).item()


def _decode(x):
    if isinstance(x, bytes):
        return x.decode("utf-8", "replace")
    if isinstance(x, np.bytes_):
        return bytes(x).decode("utf-8", "replace")
    return str(x)


def read_strings(group, name):
    """Reads a string dataset (variable- or fixed-length) as a list of Python strings."""
    ds = dataset(group, name)
    if ds.dtype.kind not in "OSU":
        raise _bad(ds, "is not a string dataset")
    a = np.asarray(ds[()], dtype=object).reshape(-1)
    return [_decode(x) for x in a]


def attr(obj, name, default=None, required=False):
    """Attribute `name` of `obj` as a Python value (strings decoded), or `default`."""
    if name not in obj.attrs:
        if required:
            raise EisimFileError(f"{_where(obj)}: missing attribute '{name}' on '{obj.name}'")
        return default
    v = obj.attrs[name]
    if isinstance(v, np.ndarray):
        items = [_plain(x) for x in v.reshape(-1)]
        return items[0] if len(items) == 1 else items
    return _plain(v)


def _plain(x):
    if isinstance(x, (bytes, np.bytes_)):
        return _decode(x)
    if isinstance(x, np.generic):
        return x.item()
    return x


def attrs_dict(obj):
    return {k: attr(obj, k) for k in obj.attrs}


# --------------------------------------------------------------------------------------------
# The resolved YAML configuration stored in the `config` attribute (a small subset parser: nested
# mappings and scalar values, which is all the analysis needs; no YAML package is required).


def _yaml_scalar(text):
    t = text.strip()
    if " #" in t:
        t = t.split(" #", 1)[0].strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    if t.startswith("[") and t.endswith("]"):
        inner = t[1:-1].strip()
        return [_yaml_scalar(x) for x in inner.split(",")] if inner else []
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        if re.fullmatch(r"[-+]?\d+", t):
            return int(t)
        return float(t)
    except ValueError:
        return t


def config_lookup(config_text, key, default=None):
    """Value of a dotted key (e.g. 'network.circuit.theta') in the YAML text, or `default`."""
    if not config_text:
        return default
    stack = []  # (indent, key)
    for raw in config_text.splitlines():
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        body = line.strip()
        if body.startswith("-"):
            continue  # list items (sweep conditions) are not looked up
        m = re.match(r"([A-Za-z0-9_.]+)\s*:(.*)$", body)
        if not m:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [m.group(1)])
        value = m.group(2).strip()
        if value == "":
            stack.append((indent, m.group(1)))
        elif path == key:
            return _yaml_scalar(value)
    return default


def config_sections(config_text, names):
    """The text of the named top-level sections of the YAML config, in file order."""
    out, keep = [], False
    for line in (config_text or "").splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            key = line.split(":", 1)[0].strip()
            keep = key in names
        if keep:
            out.append(line)
    return "\n".join(out)


def theta_from_config(config_text):
    """The circuit's set point theta (variance of the E potentials), default 1."""
    v = config_lookup(config_text, "network.circuit.theta")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 1.0


# --------------------------------------------------------------------------------------------
# Runs


def condition_from_attrs(a):
    """The condition name of a single training run from its root attributes."""
    kind = str(a.get("kind", "circuit") or "circuit")
    if kind != "circuit":
        return kind
    rule = str(a.get("rule", "") or "run")
    et = str(a.get("error_transform", "") or "none")
    return rule if et == "none" else f"{rule}+{et}"


class Run:
    """One training run: its name, condition, eps, seed and groups (train may be None)."""

    def __init__(self, name, condition, eps, seed, attrs, train, simulate):
        self.name, self.condition, self.eps, self.seed = name, condition, eps, seed
        self.attrs, self.train, self.simulate = attrs, train, simulate
        self.final_accuracy = None      # final-epoch test accuracy at the run's eps, in [0, 1]
        self.accuracy_per_eps = None    # final-epoch test accuracy per eval eps, (K,)
        self.eval_eps = None
        self.seconds = None
        self.epochs = None

    @property
    def config(self):
        return self.attrs.get("config", "") or ""

    def label(self, several_eps):
        return f"{self.condition} (eps={self.eps:g})" if several_eps and self.eps is not None \
            else self.condition

    def __repr__(self):
        return f"Run({self.name!r}, {self.condition!r}, eps={self.eps}, seed={self.seed})"


def nearest_index(values, x):
    values = np.asarray(values, dtype=float)
    if x is None or not np.isfinite(x) or values.size == 0:
        return int(values.size - 1)
    return int(np.argmin(np.abs(values - x)))


class EisimFile:
    """An opened eisim file: `layout` in {'simulate', 'train', 'merged'}; `runs` (train, merged)."""

    def __init__(self, path):
        self.path = path
        self.h5 = open_h5(path)
        self.root_attrs = attrs_dict(self.h5)
        if "summary" in self.h5:
            self.layout = "merged"
            self.runs = self._merged_runs()
        elif "train" in self.h5:
            self.layout = "train"
            self.runs = [self._train_run()]
        elif "simulate" in self.h5:
            self.layout = "simulate"
            self.runs = []
        else:
            raise EisimFileError(f"{path}: not an eisim file (no '/summary', '/train' or "
                                 f"'/simulate' group)")

    def close(self):
        self.h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def config(self):
        return self.root_attrs.get("config", "") or ""

    # -- train file -------------------------------------------------------------------------
    def _train_run(self):
        f = self.h5
        a = self.root_attrs
        train = child(f, "train", "group")
        eps = config_lookup(a.get("config", ""), "data.train_eps")
        eps = float(eps) if isinstance(eps, (int, float)) else None
        seed = a.get("seed")
        seed = int(seed) if isinstance(seed, (int, float, np.integer)) else None
        name = os.path.splitext(os.path.basename(self.path))[0]
        run = Run(name, condition_from_attrs(a), eps, seed, a, train,
                  f["simulate"] if isinstance(f.get("simulate"), h5py.Group) else None)
        eval_eps = read_vector(train, "eval_eps").astype(float)
        n_epochs = len(read_vector(train, "epoch"))
        acc = read_matrix(train, "test_accuracy", rows=n_epochs).astype(float)
        if acc.shape[1] != eval_eps.size:
            raise _bad(dataset(train, "test_accuracy"),
                       f"should have one column per eval eps ({eval_eps.size})")
        if run.eps is None:
            run.eps = float(eval_eps[-1])
        run.eval_eps = eval_eps
        run.epochs = acc.shape[0]
        if acc.shape[0] > 0:
            run.accuracy_per_eps = acc[-1].astype(float)
            run.final_accuracy = float(acc[-1, nearest_index(eval_eps, run.eps)])
        run.seconds = float(np.nansum(read_vector(train, "seconds")))
        return run

    # -- merged sweep summary ---------------------------------------------------------------
    def _merged_runs(self):
        s = child(self.h5, "summary", "group")
        names = read_strings(s, "run")
        conds = read_strings(s, "condition")
        eps = read_vector(s, "eps").astype(float)
        seeds = read_vector(s, "seed")
        final = read_vector(s, "final_accuracy").astype(float)
        eval_eps = read_vector(s, "eval_eps").astype(float)
        per_eps = read_matrix(s, "accuracy_per_eps", rows=len(names) if eval_eps.size == 1
                              else None).astype(float)
        seconds = read_vector(s, "seconds").astype(float)
        epochs = read_vector(s, "epochs")
        for nm, arr in [("condition", conds), ("eps", eps), ("seed", seeds),
                        ("final_accuracy", final), ("accuracy_per_eps", per_eps),
                        ("seconds", seconds), ("epochs", epochs)]:
            if len(arr) != len(names):
                raise EisimFileError(f"{self.path}: dataset '/summary/{nm}' has {len(arr)} rows "
                                     f"but '/summary/run' has {len(names)}")
        if per_eps.shape[1] != eval_eps.size:
            raise EisimFileError(f"{self.path}: dataset '/summary/accuracy_per_eps' has "
                                 f"{per_eps.shape[1]} columns but '/summary/eval_eps' has "
                                 f"{eval_eps.size} values")
        runs_group = child(self.h5, "runs", "group")
        runs = []
        for i, nm in enumerate(names):
            g = child(runs_group, nm, "group")
            a = attrs_dict(g)
            train = g["train"] if isinstance(g.get("train"), h5py.Group) else None
            sim = g["simulate"] if isinstance(g.get("simulate"), h5py.Group) else None
            r = Run(nm, conds[i], float(eps[i]), int(seeds[i]), a, train, sim)
            r.final_accuracy = float(final[i])
            r.accuracy_per_eps = per_eps[i]
            r.eval_eps = eval_eps
            r.seconds = float(seconds[i])
            r.epochs = int(epochs[i])
            runs.append(r)
        return runs

    # -- helpers ----------------------------------------------------------------------------
    def require_runs(self):
        """The runs, or an error for a simulate-only file."""
        if self.layout == "simulate":
            raise EisimFileError(f"{self.path}: no '/train' or '/summary' group: this is a "
                                 f"simulate file; use plot_traces.py")
        return self.runs

    def train_group(self, run):
        if run.train is None:
            where = f"/runs/{run.name}/train" if self.layout == "merged" else "/train"
            raise EisimFileError(f"{self.path}: missing group '{where}'")
        return run.train

    def simulate_group(self, run_name=None):
        """(group, run name or None) of the /simulate group to plot.

        Root /simulate first; in a merged file the named run's, else the first run that has one."""
        if run_name:
            if self.layout != "merged":
                raise EisimFileError(f"{self.path}: --run {run_name} given but this is not a "
                                     f"merged sweep file (no '/summary')")
            names = [r.name for r in self.runs]
            if run_name not in names:
                raise EisimFileError(f"{self.path}: --run {run_name}: no such run (runs: "
                                     f"{', '.join(names)})")
            g = child(child(self.h5, "runs", "group"), run_name, "group")
            return child(g, "simulate", "group"), run_name
        if isinstance(self.h5.get("simulate"), h5py.Group):
            return self.h5["simulate"], None
        for r in self.runs:
            if r.simulate is not None:
                return r.simulate, r.name
        raise EisimFileError(f"{self.path}: no '/simulate' group"
                             + (" (and no run has '/runs/<run>/simulate')"
                                if self.layout == "merged" else ""))

    def run_config(self, run_name=None):
        if run_name is not None:
            g = self.h5["runs"][run_name]
            c = attr(g, "config")
            if c:
                return c
        return self.config

    def conditions(self):
        out = []
        for r in self.runs:
            if r.condition not in out:
                out.append(r.condition)
        return out


def groups_of_runs(runs):
    """Runs grouped by (condition, eps), in order of first appearance: [(key, label, [runs])]."""
    several_eps = len({r.eps for r in runs}) > 1
    order, members = [], {}
    for r in runs:
        k = (r.condition, r.eps)
        if k not in members:
            order.append(k)
            members[k] = []
        members[k].append(r)
    return [(k, members[k][0].label(several_eps), members[k]) for k in order]


def layer_groups(simulate):
    """[(l, group)] of the /simulate/layer_<l> groups, sorted by l."""
    out = []
    for name, g in simulate.items():
        m = re.fullmatch(r"layer_(\d+)", name)
        if m and isinstance(g, h5py.Group):
            out.append((int(m.group(1)), g))
    if not out:
        raise EisimFileError(f"{_where(simulate)}: no '{simulate.name}/layer_<l>' groups")
    return sorted(out, key=lambda x: x[0])


# Circuit presets whose E potentials are normalised to mean 0 and variance theta at equilibrium
# (docs/concepts.md); a circuit layer without a `preset` attribute predates the presets.
NORMALISING_PRESETS = ("default", "inorm")


def layer_normalises(g):
    """True if the /simulate/layer_<l> group `g` is a layer whose equilibrium sits on the set
    points (a layernorm layer, or a circuit of a normalising preset)."""
    kind = str(attr(g, "kind", ""))
    if kind == "layernorm":
        return True
    if kind != "circuit":
        return False
    return str(attr(g, "preset", "default")) in NORMALISING_PRESETS


def config_normalises(config_text):
    """True if the run's hidden layers normalise their equilibrium (see layer_normalises), from its
    stored configuration; True when the configuration does not say (older files)."""
    kind = config_lookup(config_text, "network.kind", "circuit")
    if kind == "layernorm":
        return True
    if kind == "none":
        return False
    preset = config_lookup(config_text, "network.circuit.preset")
    return preset is None or str(preset) in NORMALISING_PRESETS


class Population:
    """One population of a circuit layer of a /simulate group (docs/hdf5.md, section 1).

    `trace` and `rate` are (T, N, n) h5py datasets of the state and the rates along the ODE
    integration (read lazily); `eq` and `rate_eq` are (N, n) arrays at the fixed point. `trace`
    and `eq` are None in files written before the populations were recorded (only rates there).
    """

    def __init__(self, name, size, dynamics, state, trace, rate, eq, rate_eq):
        self.name, self.size, self.dynamics, self.state = name, size, dynamics, state
        self.trace, self.rate, self.eq, self.rate_eq = trace, rate, eq, rate_eq

    def __repr__(self):
        return f"Population({self.name}, {self.size} units, {self.dynamics})"


def _population_dataset(pg, name, T, N, n):
    ds = dataset(pg, name)
    if ds.ndim != 3 or ds.shape[:2] != (T, N) or (n is not None and ds.shape[2] != n):
        want = f"({T}, {N}, {n if n is not None else 'n'})"
        raise EisimFileError(f"{_where(pg)}: dataset '{ds.name}' should be {want} (T time points, "
                             f"N images, units), has shape {ds.shape}")
    return ds


def _population_matrix(pg, name, N, n):
    a = read_matrix(pg, name, rows=N)
    if a.shape != (N, n):
        raise EisimFileError(f"{_where(pg)}: dataset '{pg.name}/{name}' should be ({N}, {n}), "
                             f"has shape {a.shape}")
    return a.astype(float)


def circuit_populations(g, T, N):
    """The populations of the circuit layer group `g` in the circuit's order (E first), as
    Population objects; T recorded times and N images (for shape checks).

    Files with /simulate/layer_<l>/populations/<name> groups list them in the layer attribute
    `populations` (comma-separated); older files had the fixed circuit E, I, D with the datasets
    v, r_I, r_D, r_I_eq, r_D_eq, read here as the same objects (rates only for I and D)."""
    if "populations" in g:
        pops_group = child(g, "populations", "group")
        listed = attr(g, "populations")
        if listed is not None:
            names = [x for x in str(listed).split(",") if x]
        else:
            names = sorted(pops_group, key=lambda k: int(attr(pops_group[k], "index", 0)))
        out = []
        for name in names:
            pg = child(pops_group, name, "group")
            size = attr(pg, "size")
            trace = _population_dataset(pg, "trace", T, N, None if size is None else int(size))
            n = int(trace.shape[2])
            rate = _population_dataset(pg, "rate", T, N, n)
            out.append(Population(name, n, str(attr(pg, "dynamics", "?")),
                                  str(attr(pg, "state", "z")), trace, rate,
                                  _population_matrix(pg, "eq", N, n),
                                  _population_matrix(pg, "rate_eq", N, n)))
        if not out:
            raise EisimFileError(f"{_where(g)}: '{pops_group.name}' lists no populations")
        return out
    # Before populations/: the default circuit's fixed names.
    v = _population_dataset(g, "v", T, N, None)
    out = [Population("E", int(v.shape[2]), "leaky", "v", v, None,
                      read_matrix(g, "v_eq").astype(float), None)]
    for name in ("I", "D"):
        r = _population_dataset(g, f"r_{name}", T, N, None)
        n = int(r.shape[2])
        out.append(Population(name, n, "", "r", None, r, None,
                              _population_matrix(g, f"r_{name}_eq", N, n)))
    return out


class Protocol:
    """The stimulus protocol of a /simulate group (docs/hdf5.md, "Stimulus protocol").

    `t` (T',) ms; `segments`: list of dicts (start, end, image, label, brightness);
    `perturbations`: list of dicts (population, layer (-1 = every layer), start, end, current,
    silence); `layers`: list of (l, status, [(name, rate (T', n) array)]) in layer order, E first.
    """

    def __init__(self, t, segments, perturbations, layers):
        self.t, self.segments, self.perturbations, self.layers = t, segments, perturbations, layers

    def windows_of(self, l):
        """The perturbations that apply to layer l."""
        return [p for p in self.perturbations if p["layer"] < 0 or p["layer"] == l]


def read_protocol(sim):
    """The Protocol of the /simulate group `sim`, or None if it has none; a missing or misshapen
    dataset is an error naming it."""
    if "protocol" not in sim:
        return None
    g = child(sim, "protocol", "group")
    t = read_vector(g, "t").astype(float)
    T = t.size
    sg = child(g, "segments", "group")
    cols = {k: read_vector(sg, k) for k in ("start", "end", "image", "brightness")}
    labels = read_vector(sg, "label") if "label" in sg else np.full(cols["start"].size, -1)
    for k, a in list(cols.items()) + [("label", labels)]:
        if a.size != cols["start"].size:
            raise EisimFileError(f"{_where(sg)}: '{sg.name}/{k}' has {a.size} entries, "
                                 f"'{sg.name}/start' {cols['start'].size}")
    segments = [{"start": float(cols["start"][i]), "end": float(cols["end"][i]),
                 "image": int(cols["image"][i]), "label": int(labels[i]),
                 "brightness": float(cols["brightness"][i])}
                for i in range(cols["start"].size)]
    pg = child(g, "perturbations", "group")
    names = read_strings(pg, "population")
    pc = {k: read_vector(pg, k) for k in ("layer", "start", "end", "current", "silence")}
    for k, a in pc.items():
        if a.size != len(names):
            raise EisimFileError(f"{_where(pg)}: '{pg.name}/{k}' has {a.size} entries, "
                                 f"'{pg.name}/population' {len(names)}")
    perturbations = [{"population": names[i], "layer": int(pc["layer"][i]),
                      "start": float(pc["start"][i]), "end": float(pc["end"][i]),
                      "current": float(pc["current"][i]), "silence": bool(pc["silence"][i])}
                     for i in range(len(names))]
    layers = []
    for name, lg in g.items():
        m = re.fullmatch(r"layer_(\d+)", name)
        if not (m and isinstance(lg, h5py.Group)):
            continue
        pops_group = child(lg, "populations", "group")
        listed = attr(lg, "populations")
        pops = [x for x in str(listed).split(",") if x] if listed is not None else \
            sorted(pops_group, key=lambda k: int(attr(pops_group[k], "index", 0)))
        rates = []
        for p in pops:
            r = read_matrix(child(pops_group, p, "group"), "rate", rows=T).astype(float)
            if r.shape[0] != T:
                raise EisimFileError(f"{_where(lg)}: dataset '{pops_group.name}/{p}/rate' should "
                                     f"have {T} rows like '{g.name}/t', has shape {r.shape}")
            rates.append((p, r))
        layers.append((int(m.group(1)), str(attr(lg, "status", "?")), rates))
    if not layers:
        raise EisimFileError(f"{_where(g)}: no '{g.name}/layer_<l>' groups")
    return Protocol(t, segments, perturbations, sorted(layers, key=lambda x: x[0]))


# --------------------------------------------------------------------------------------------
# Statistics and formatting


def mean_sd(values):
    """(mean, sample sd, n) over the finite values; sd is 0 for one value, NaN for none."""
    v = np.asarray([x for x in np.asarray(values, dtype=float).reshape(-1) if np.isfinite(x)])
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def fmt_pct(x, digits=2):
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.{digits}f}"


def fmt_mean_sd_pct(values, digits=2):
    m, s, n = mean_sd(values)
    if n == 0:
        return "n/a"
    return f"{100 * m:.{digits}f}" if n == 1 else f"{100 * m:.{digits}f} +- {100 * s:.{digits}f}"


def text_table(header, rows, align=None):
    """A plain-text table with aligned columns (first column left, others right by default)."""
    cols = len(header)
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(cols)]
    align = align or ["<"] + [">"] * (cols - 1)

    def line(r):
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(r, align, widths)).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out) + "\n"


def markdown_table(header, rows):
    out = ["| " + " | ".join(str(h) for h in header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Command-line plumbing


def default_out_dir(path, out):
    d = out if out else os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    return d


def run_cli(main):
    """Runs `main()`; a file problem exits with status 2 and one 'error: ...' line."""
    prog = os.path.basename(sys.argv[0])
    try:
        rc = main()
    except EisimFileError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(rc or 0)


def setup_matplotlib():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3,
                         "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
                         "xtick.labelsize": 8, "ytick.labelsize": 8})
    return plt


def min_span(ax, span):
    """Widens the y range to at least `span`, so that rounding noise is not drawn as dynamics."""
    lo, hi = ax.get_ylim()
    if ax.get_yscale() == "linear" and hi - lo < span:
        mid = 0.5 * (lo + hi)
        ax.set_ylim(mid - span / 2, mid + span / 2)


def save(fig, out_dir, name, written):
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt
    plt.close(fig)
    written.append(path)
    return path
