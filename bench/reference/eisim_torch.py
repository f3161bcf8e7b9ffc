#!/usr/bin/python3
"""The eisim default network written the way a PyTorch user would write it (bench/README.md).

784 -> H -> H -> 10. Each hidden layer is the default circuit's equilibrium, which is exactly
sqrt(theta) * LayerNorm(W_EX x + b) with no epsilon (docs/concepts.md, "the exact default"),
followed by ReLU. The readout is the E/I layer z = W_EX x - W_EI (W_IX x) + b with one inhibitory
unit. Loss: cross-entropy with label smoothing. Plain SGD: lr_E for W_EX and b, lr_I for the
readout's W_EI and W_IX (eisim's two parameter groups), then Dale's law: every weight except the
biases is clamped to >= 0 after each step.

Learning rules:
  implicit  LayerNorm's exact autograd backward (= eisim's implicit gradient for this circuit);
  frozen    LayerNorm forward, backward only divides the error by the spread:
            dL/de = g_v * sqrt(theta) / sd(e) (no centring, no projection removal).

Commands:
  train  time one epoch (or --limit samples) of Fashion-MNIST with brightness jitter;
  dump   one forward, backward and SGD step on the weights and batch of an eisim HDF5 file
         (/weights/layer_<l>/<name>, /batch/x as 784 x B, /batch/labels), written in the layout
         of `bench_train --dump` (matrices as eisim stores them: one sample per column).

Row layout (batch x features) and F.linear are used inside, as a PyTorch user would.
The script needs numpy and h5py; torch is imported after the thread count is set.
"""
import argparse
import gzip
import math
import os
import sys
import time

import numpy as np

DATA_DIR = "/usr/share/datasets/fashion-mnist"


def load_fashion_mnist(data_dir, train=True, limit=0):
    """Images as float32 (N, 784) in [0, 1] and int64 labels, from the gzip IDX files."""
    prefix = "train" if train else "t10k"
    with gzip.open(os.path.join(data_dir, prefix + "-images-idx3-ubyte.gz"), "rb") as f:
        raw = f.read()
    magic, n, rows, cols = np.frombuffer(raw, ">i4", 4, 0)
    if magic != 0x803 or rows * cols != 784:
        sys.exit(f"{data_dir}: bad image file (magic {magic:#x})")
    images = np.frombuffer(raw, np.uint8, n * 784, 16).reshape(n, 784)
    with gzip.open(os.path.join(data_dir, prefix + "-labels-idx1-ubyte.gz"), "rb") as f:
        raw = f.read()
    labels = np.frombuffer(raw, np.uint8, n, 8).astype(np.int64)
    if limit > 0:
        images, labels = images[:limit], labels[:limit]
    return (images.astype(np.float32) / np.float32(255.0)), labels


def loaded_blas():
    """Names of the BLAS libraries mapped into this process (after a matmul has run)."""
    names = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            base = os.path.basename(path)
            if "blas" in base or "mkl" in base:
                names.add(path)
    return sorted(names)


def build(torch, theta):
    """The model and its two learning rules, as closures over torch."""
    import torch.nn.functional as F

    st = math.sqrt(theta)

    class FrozenNorm(torch.autograd.Function):
        """LayerNorm forward (eps = 0); backward divides the error by the spread only."""

        @staticmethod
        def forward(ctx, e):
            c = e - e.mean(dim=1, keepdim=True)
            sd = c.square().mean(dim=1, keepdim=True).sqrt()
            ctx.save_for_backward(sd)
            return c * (st / sd)

        @staticmethod
        def backward(ctx, g):
            (sd,) = ctx.saved_tensors
            return g * (st / sd)

    class Net(torch.nn.Module):
        def __init__(self, hidden, rule):
            super().__init__()
            self.hidden = torch.nn.ParameterList()
            self.bias = torch.nn.ParameterList()
            for w in hidden:
                self.hidden.append(torch.nn.Parameter(torch.empty(w)))
                self.bias.append(torch.nn.Parameter(torch.zeros(w[0])))
            self.rule = rule

        def set_readout(self, W_EX, b, W_EI, W_IX):
            self.W_EX = torch.nn.Parameter(W_EX)
            self.b = torch.nn.Parameter(b)
            self.W_EI = torch.nn.Parameter(W_EI)
            self.W_IX = torch.nn.Parameter(W_IX)

        def forward(self, x, keep=None):
            h = x
            for W, b in zip(self.hidden, self.bias):
                e = F.linear(h, W, b)
                if self.rule == "implicit":
                    v = st * F.layer_norm(e, (e.shape[1],), eps=0.0)
                else:
                    v = FrozenNorm.apply(e)
                if keep is not None:
                    keep.append(v)
                h = torch.relu(v)
            return F.linear(h, self.W_EX, self.b) - F.linear(F.linear(h, self.W_IX), self.W_EI)

        def groups(self, lr_E, lr_I):
            exc = list(self.hidden) + list(self.bias) + [self.W_EX, self.b]
            return [{"params": exc, "lr": lr_E}, {"params": [self.W_EI, self.W_IX], "lr": lr_I}]

        def dale(self):
            return list(self.hidden) + [self.W_EX, self.W_EI, self.W_IX]

    return Net


def init_like_eisim(torch, Net, width, layers, rule, seed):
    """eisim's initialisation: lognormal W_EX with mean = sd = sqrt(2 n_E / (n_in (n_E - 1))),
    zero biases; readout W_IX = mean row of W_EX, W_EI = 1 (one inhibitory unit)."""
    g = torch.Generator().manual_seed(seed)

    def lognormal(n_out, n_in):
        m = math.sqrt(2.0 * n_out / (n_in * max(n_out - 1.0, 1.0)))
        s2 = math.log(2.0)  # sd = mean
        z = torch.randn(n_out, n_in, generator=g)
        return torch.exp(math.log(m) - s2 / 2 + math.sqrt(s2) * z)

    shapes = [(width, 784)] + [(width, width)] * (layers - 1)
    net = Net(shapes, rule)
    with torch.no_grad():
        for W, (o, i) in zip(net.hidden, shapes):
            W.copy_(lognormal(o, i))
    W_EX = lognormal(10, width)
    net.set_readout(W_EX, torch.zeros(10), torch.ones(10, 1), W_EX.mean(dim=0, keepdim=True))
    return net


def load_eisim_weights(torch, Net, path, rule):
    import h5py

    with h5py.File(path, "r") as f:
        w = f["weights"]
        n = len([k for k in w.keys() if k.startswith("layer_")])
        hidden = [np.asarray(w[f"layer_{l}/W_EX"], np.float32) for l in range(n - 1)]
        net = Net([h.shape for h in hidden], rule)
        with torch.no_grad():
            for l in range(n - 1):
                net.hidden[l].copy_(torch.from_numpy(hidden[l]))
                net.bias[l].copy_(torch.from_numpy(np.asarray(w[f"layer_{l}/b"], np.float32)[:, 0]))
        r = f"layer_{n - 1}/"
        t = lambda name: torch.from_numpy(np.asarray(w[r + name], np.float32).copy())
        net.set_readout(t("W_EX"), t("b")[:, 0].contiguous(), t("W_EI"), t("W_IX"))
        batch = None
        if "batch" in f:
            x = np.asarray(f["batch/x"], np.float32).T.copy()
            y = np.asarray(f["batch/labels"]).astype(np.int64)
            batch = (torch.from_numpy(x), torch.from_numpy(y))
    return net, batch


def cmd_dump(args):
    import h5py

    torch = import_torch(args.threads)
    Net = build(torch, args.theta)
    net, batch = load_eisim_weights(torch, Net, args.weights, args.rule)
    if batch is None:
        sys.exit(f"{args.weights}: no /batch group")
    x, y = batch
    if args.double:  # a float64 answer, to tell float32 rounding from disagreement
        net = net.double()
        x = x.double()
    opt = torch.optim.SGD(net.groups(args.lr_E, args.lr_I), lr=args.lr_E, momentum=0.0)
    keep = []
    z = net(x, keep)
    loss = torch.nn.functional.cross_entropy(z, y, label_smoothing=args.smoothing)
    opt.zero_grad()
    loss.backward()
    L = len(net.hidden)
    col = lambda t: t.detach().numpy().reshape(-1, 1)
    grads = {}
    for l in range(L):
        grads[f"layer_{l}/W_EX"] = net.hidden[l].grad.numpy().copy()
        grads[f"layer_{l}/b"] = col(net.bias[l].grad).copy()
    r = f"layer_{L}/"
    grads[r + "W_EX"] = net.W_EX.grad.numpy().copy()
    grads[r + "b"] = col(net.b.grad).copy()
    grads[r + "W_EI"] = net.W_EI.grad.numpy().copy()
    grads[r + "W_IX"] = net.W_IX.grad.numpy().copy()
    opt.step()
    with torch.no_grad():
        for p in net.dale():
            p.clamp_(min=0.0)
    with h5py.File(args.out, "w") as f:
        f.attrs["rule"] = args.rule
        f.attrs["dtype"] = "float64" if args.double else "float32"
        f["logits"] = z.detach().numpy().T
        f["loss"] = float(loss)
        for l in range(L):
            f[f"hidden/layer_{l}/v"] = keep[l].detach().numpy().T
        for k, v in grads.items():
            f["grad/" + k] = v
        for l in range(L):
            f[f"updated/layer_{l}/W_EX"] = net.hidden[l].detach().numpy()
            f[f"updated/layer_{l}/b"] = col(net.bias[l])
        f[r.replace("layer", "updated/layer") + "W_EX"] = net.W_EX.detach().numpy()
        f[r.replace("layer", "updated/layer") + "b"] = col(net.b)
        f[r.replace("layer", "updated/layer") + "W_EI"] = net.W_EI.detach().numpy()
        f[r.replace("layer", "updated/layer") + "W_IX"] = net.W_IX.detach().numpy()
    print(
        f"dump: rule {args.rule}, {x.dtype}, batch {x.shape[0]}, loss {float(loss):.7f}; "
        f"wrote {args.out}"
    )


def import_torch(threads):
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    return torch


def cmd_train(args):
    torch = import_torch(args.threads)
    import torch.nn.functional as F

    t0 = time.perf_counter()
    images, labels = load_fashion_mnist(args.data_dir, True, args.limit)
    X = torch.from_numpy(images)
    Y = torch.from_numpy(labels)
    load_s = time.perf_counter() - t0
    Net = build(torch, args.theta)
    N, B = X.shape[0], args.batch
    times = []
    for rep in range(args.reps):
        torch.manual_seed(args.seed)
        net = init_like_eisim(torch, Net, args.width, args.layers, args.rule, args.seed)
        opt = torch.optim.SGD(net.groups(args.lr_E, args.lr_I), lr=args.lr_E, momentum=0.0)
        dale = net.dale()
        gen = torch.Generator().manual_seed(args.seed + rep)
        split = dict(data=0.0, forward=0.0, backward=0.0, optimizer=0.0)
        loss_sum, hits = 0.0, 0
        pc = time.perf_counter
        t_epoch = pc()
        perm = torch.randperm(N, generator=gen)
        for start in range(0, N, B):
            t = pc()
            idx = perm[start : start + B]
            x = X[idx]
            d = (torch.rand(x.shape[0], 1, generator=gen) * 2.0 - 1.0) * args.eps
            x = (x + d).clamp_(0.0, 1.0)
            y = Y[idx]
            t1 = pc()
            z = net(x)
            loss = F.cross_entropy(z, y, label_smoothing=args.smoothing)
            t2 = pc()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            t3 = pc()
            opt.step()
            with torch.no_grad():
                for p in dale:
                    p.clamp_(min=0.0)
            t4 = pc()
            split["data"] += t1 - t
            split["forward"] += t2 - t1
            split["backward"] += t3 - t2
            split["optimizer"] += t4 - t3
            if args.stats:
                loss_sum += float(loss) * x.shape[0]
                hits += int((z.argmax(dim=1) == y).sum())
        secs = pc() - t_epoch
        times.append(secs)
        us = {k: 1e6 * v / N for k, v in split.items()}
        acc = f", loss {loss_sum / N:.4f}, train acc {100.0 * hits / N:.2f} %" if args.stats else ""
        print(
            f"rep {rep + 1}: epoch {secs:.3f} s ({N / secs:.0f} samples/s){acc}; us/sample: "
            + ", ".join(f"{k} {v:.1f}" for k, v in us.items()),
            flush=True,
        )
    med = float(np.median(times))
    blas = ",".join(os.path.basename(p) for p in loaded_blas()) or "none"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), BLAS {blas}; "
        f"data loaded in {load_s:.2f} s"
    )
    print(
        f"RESULT torch rule={args.rule} batch={B} width={args.width} threads={args.threads} "
        f"samples={N} epoch_s={med:.6f} epoch60k_s={med * 60000.0 / N:.6f} sps={N / med:.1f} "
        f"blas={blas}"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("train", "dump"):
        s = sub.add_parser(name)
        s.add_argument("--rule", choices=["implicit", "frozen"], default="implicit")
        s.add_argument("--threads", type=int, default=1)
        s.add_argument("--lr-E", dest="lr_E", type=float, default=0.01)
        s.add_argument("--lr-I", dest="lr_I", type=float, default=0.001)
        s.add_argument("--smoothing", type=float, default=0.1)
        s.add_argument("--theta", type=float, default=1.0)
    t = sub.choices["train"]
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--width", type=int, default=283)
    t.add_argument("--layers", type=int, default=2, help="hidden layers")
    t.add_argument("--limit", type=int, default=0, help="training samples (0 = all 60000)")
    t.add_argument("--reps", type=int, default=1)
    t.add_argument("--eps", type=float, default=0.75, help="brightness jitter half-width")
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--data-dir", default=DATA_DIR)
    t.add_argument("--stats", action="store_true", help="also report loss and accuracy")
    d = sub.choices["dump"]
    d.add_argument("--weights", required=True, help="HDF5 file with /weights and /batch")
    d.add_argument("--out", required=True)
    d.add_argument("--double", action="store_true", help="compute in float64")
    args = p.parse_args()
    {"train": cmd_train, "dump": cmd_dump}[args.cmd](args)


if __name__ == "__main__":
    main()
