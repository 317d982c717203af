#!/usr/bin/env python3
"""The batched bnspike run written the way a PyTorch user would write it.

S trajectories of full-batch gradient descent on a batch-normalized linear
model share one data set: W is d x S (one column per trajectory), gamma has S
entries, the loss is summed over trajectories so autograd gives every column
its own gradient, and the same diagnostics as bnspike are taken at every
recorded step (loss, gamma, |w|, alpha = <w, e>, beta = |w - alpha e|,
rho = beta/alpha, with e = ref/|ref|).  Plain eager PyTorch, fp64 by default.

Timing (prints one JSON object):
    torch_batched.py --device cuda --n 64 --d 256 --S 16384 --steps 2000 --every 10

Correctness against bnspike on identical inputs (files from
`build/bench_gpu --dump-check DIR`: X.npy, y.npy, w0.npy, ref.npy, meta.json,
bnspike.npz):
    torch_batched.py --device cuda --inputs DIR --check-out DIR/torch.npz --compare-tol 1e-9
writes loss/gamma/rho/w_norm/alpha/beta (S x R, every step 0..T) and, with
--compare-tol, compares them with DIR/bnspike.npz: relative error per entry
for loss and gamma, and for rho relative down to |rho| = 1e-5 and absolute
below (rho is resolved only to ~eps*|w|/alpha).  Exit status 0 = within the
tolerance, 1 = not, 2 = usage or setup error.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

try:
    import torch
except ImportError as e:  # the message says what is missing, not a traceback
    print(json.dumps({"peer": "torch", "error": "cannot import torch: %s" % e}))
    sys.exit(2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--S", type=int, default=1024)
    p.add_argument("--steps", type=int, default=1000, help="GD updates T (records cover t=0..T)")
    p.add_argument("--every", type=int, default=10, help="record step 0, every K-th step and T")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps before the timed run")
    p.add_argument("--eta-w", type=float, default=0.9)
    p.add_argument("--eta-gamma", type=float, default=0.05)
    p.add_argument("--gamma0", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--inputs", help="folder with X.npy, y.npy, w0.npy, ref.npy, meta.json (bench_gpu --dump-check)")
    p.add_argument("--check-out", help="write the records of every step to this .npz (with --inputs)")
    p.add_argument("--compare-tol", type=float, help="compare with INPUTS/bnspike.npz at this relative tolerance")
    p.add_argument("--json", help="also write the JSON result to this file")
    return p.parse_args(argv)


def random_problem(n, d, S, seed, dtype, device):
    """Hilbert-like ill-conditioned data of the paper's shape (the timing does
    not depend on the values), a least-squares reference, random starts."""
    g = np.random.default_rng(seed)
    i = np.arange(n)[:, None]
    j = np.arange(d)[None, :]
    H = 1.0 / (i + j + 1.0)
    Qn, _ = np.linalg.qr(g.standard_normal((n, n)))
    Qd, _ = np.linalg.qr(g.standard_normal((d, d)))
    X = Qn @ H @ Qd
    X *= math.sqrt(n * d) / np.linalg.norm(X)
    X += 0.01 * g.standard_normal((n, d))
    Xc = X - X.mean(axis=0, keepdims=True)
    w_true = g.standard_normal(d)
    w_true /= np.linalg.norm(w_true)
    y = Xc @ w_true
    ref = np.linalg.lstsq(Xc, y, rcond=None)[0]
    W0 = g.standard_normal((S, d))
    t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)
    return t(X), t(y), t(W0), t(ref)


def load_inputs(folder, dtype, device):
    meta = json.load(open(os.path.join(folder, "meta.json")))
    t = lambda name: torch.as_tensor(np.load(os.path.join(folder, name)), dtype=dtype, device=device)
    return t("X.npy"), t("y.npy"), t("w0.npy"), t("ref.npy"), meta


def run(X, y, W0, ref, gamma0, eta_w, eta_gamma, steps, every):
    """Steps t = 0..T: record the state (w_t, gamma_t) when t is scheduled,
    then move to t+1 unless t = T.  Returns the records as a tensor of shape
    (6, S, R): loss, gamma, |w|, alpha, beta, rho, all still on the device."""
    Xc = X - X.mean(dim=0, keepdim=True)
    yc = y[:, None]
    e = ref / torch.linalg.vector_norm(ref)
    W = W0.T.contiguous().requires_grad_(True)  # d x S: one column per trajectory
    gamma = torch.full((W.shape[1],), gamma0, dtype=X.dtype, device=X.device, requires_grad=True)
    recs = []
    for t in range(steps + 1):
        U = Xc @ W  # n x S
        s = U.pow(2).mean(dim=0).sqrt()  # ||Xc w|| / sqrt(n), per column
        Z = gamma * U / s
        L = 0.5 * (Z - yc).pow(2).mean(dim=0)  # S losses
        if t % every == 0 or t == steps:
            with torch.no_grad():
                alpha = e @ W
                beta = torch.linalg.vector_norm(W - e[:, None] * alpha, dim=0)
                recs.append(torch.stack([L, gamma, torch.linalg.vector_norm(W, dim=0), alpha, beta, beta / alpha]))
        if t == steps:
            break
        L.sum().backward()  # columns do not interact: each gets its own gradient
        with torch.no_grad():
            W -= eta_w * W.grad
            gamma -= eta_gamma * gamma.grad
        W.grad = None
        gamma.grad = None
    return torch.stack(recs, dim=2).detach()


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def compare(ours, theirs):
    """Max relative error per field; rho relative down to 1e-5, absolute below."""
    out = {}
    for name in ("loss", "gamma", "rho"):
        a, b = ours[name], theirs[name]
        if a.shape != b.shape:
            out[name] = float("inf")
            continue
        floor = 1e-5 if name == "rho" else 1e-300
        err = np.abs(a - b) / np.maximum(np.abs(b), floor)
        err[np.isnan(a) & np.isnan(b)] = 0.0
        err[np.isnan(err)] = np.inf
        out[name] = float(err.max()) if err.size else 0.0
    return out


def main(argv=None):
    args = parse_args(argv)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"peer": "torch", "error": "CUDA is not available to torch"}))
        return 2
    dev = args.device
    result = {"peer": "torch", "torch": torch.__version__, "device": dev, "dtype": args.dtype}
    if dev == "cuda":
        result["gpu"] = torch.cuda.get_device_name(0)
        # Full-precision products, as bnspike (no TF32 for float32).
        torch.backends.cuda.matmul.allow_tf32 = False

    if args.inputs:
        X, y, W0, ref, meta = load_inputs(args.inputs, dtype, dev)
        steps = int(meta["steps"])
        recs = run(X, y, W0, ref, float(meta["gamma0"]), float(meta["eta_w"]), float(meta["eta_gamma"]), steps, 1)
        sync(dev)
        R = recs.cpu().numpy()
        names = ["loss", "gamma", "w_norm", "alpha", "beta", "rho"]
        ours = {k: R[i] for i, k in enumerate(names)}
        if args.check_out:
            np.savez(args.check_out, **ours)
        result.update({"mode": "check", "n": X.shape[0], "d": X.shape[1], "S": W0.shape[0], "steps": steps})
        status = 0
        if args.compare_tol is not None:
            z = np.load(os.path.join(args.inputs, "bnspike.npz"))
            theirs = {k: z[k] for k in ("loss", "gamma", "rho")}
            errs = compare(ours, theirs)
            ok = all(v <= args.compare_tol for v in errs.values())
            result.update({"check_max_rel_err": errs, "check_tol": args.compare_tol, "check_pass": ok,
                           "bnspike_backend": meta.get("backend_desc", meta.get("backend"))})
            status = 0 if ok else 1
        text = json.dumps(result)
        print(text)
        if args.json:
            open(args.json, "w").write(text + "\n")
        return status

    X, y, W0, ref = random_problem(args.n, args.d, args.S, args.seed, dtype, dev)
    # Warm-up: kernel selection, allocator, autograd graph.
    run(X, y, W0, ref, args.gamma0, args.eta_w, args.eta_gamma, args.warmup, args.every)
    sync(dev)
    t0 = time.perf_counter()
    recs = run(X, y, W0, ref, args.gamma0, args.eta_w, args.eta_gamma, args.steps, args.every)
    host = recs.cpu().numpy()  # the records reach the host, as bnspike's do
    sync(dev)
    sec = time.perf_counter() - t0
    evals = args.steps  # GD updates, as bench_gpu counts them
    result.update({
        "mode": "timing", "n": args.n, "d": args.d, "S": args.S, "steps": args.steps, "every": args.every,
        "seconds": sec, "ms_per_step": 1e3 * sec / evals, "seed_steps_per_s": args.S * evals / sec,
        "finite_records": bool(np.isfinite(host[:3]).all()),
    })
    text = json.dumps(result)
    print(text)
    if args.json:
        open(args.json, "w").write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
