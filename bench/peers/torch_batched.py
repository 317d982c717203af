#!/usr/bin/env python3
"""The batched bnspike run written the way a PyTorch user would write it.

S trajectories of full-batch gradient descent on a batch-normalized linear
model share one data set: W is d x S (one column per trajectory), gamma has S
entries, the loss is summed over trajectories so autograd gives every column
its own gradient, and the same diagnostics as bnspike are taken at every
recorded step: every field of bnspike's records (loss, gamma, |w|, |w|_Sigma,
alpha = <w, e>, beta = |w - alpha e|, rho = beta/alpha with e = ref/|ref|,
eta_eff, |grad_w L|, dL/dgamma, and the Sigma-geometry alpha/beta/rho) and,
with --sharpness-every K, the three sharpness values of bnspike (lambda_max of
H, of P^1/2 H P^1/2 and of that operator on the sphere, P = diag(eta_w I,
eta_gamma)) by bnspike's batched shifted power iteration (warm starts, the
same convergence test), each Hessian-vector product by double backward
through autograd.  Plain eager PyTorch, fp64 by default; square or logistic
loss (softplus).

Timing on a random problem (prints one JSON object):
    torch_batched.py --device cuda --n 64 --d 256 --S 16384 --steps 2000 --every 10

Correctness against bnspike on identical inputs (files from
`build/bench_gpu --dump-check DIR` or `build/bench --dump DIR`: X.npy, y.npy,
w0.npy, ref.npy, meta.json, bnspike.npz):
    torch_batched.py --device cuda --inputs DIR --check-out DIR/torch.npz --compare-tol 1e-9
writes every record field (S x R, every step 0..T of meta.json) and, with
--compare-tol, compares loss, gamma and rho with DIR/bnspike.npz: relative
error per entry for loss and gamma, and for rho relative down to |rho| = 1e-5
and absolute below (rho is resolved only to ~eps*|w|/alpha).  Exit status 0 =
within the tolerance, 1 = not, 2 = usage or setup error.

Server mode (what `make bench` uses, so that torch is imported once):
    torch_batched.py --serve --device cpu --threads 2
reads one JSON command per line on stdin and answers one JSON line each:
    {"cmd": "run", "inputs": DIR, "S": 256, "dtype": "float64", "steps": 500,
     "every": 10, "sharpness_every": 0, "out": null}
runs the first S rows of DIR/w0.npy for `steps` GD updates on DIR's data and
settings (meta.json: loss, eta_w, eta_gamma, gamma0, sharpness tol/maxiter)
and answers {"ok": true, "seconds": ..., "hvps": ..., "finite": ...}; the
time covers the run and the records' arrival on the host, not the loading of
the inputs (bnspike's setup is not timed either).  "out": PATH also writes
the records to PATH (.npz).  {"cmd": "quit"} ends it.
"""
import argparse
import json
import math
import os
import re
import sys
import time

import numpy as np

from peer_common import compare, rss_kb, settings

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:  # the message says what is missing, not a traceback
    print(json.dumps({"peer": "torch", "error": "cannot import torch: %s" % e}))
    sys.exit(2)

FIELDS = ["step", "loss", "gamma", "w_norm", "w_norm_sigma", "alpha", "beta", "rho", "eta_eff",
          "grad_norm_w", "grad_gamma", "alpha_sigma", "beta_sigma", "rho_sigma"]
SHARP_NAMES = ["sharpness", "sharpness_weighted", "sharpness_sphere"]
# bnspike's operators per sharpness record: H, P^1/2 H P^1/2, and the latter on range(Pi).
SHARP_OPS = [(False, False), (True, False), (True, True)]  # (weighted, projected)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (CPU); 0 = torch's default")
    p.add_argument("--loss", default="square", choices=["square", "logistic"])
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--S", type=int, default=1024)
    p.add_argument("--steps", type=int, default=1000, help="GD updates T (records cover t=0..T)")
    p.add_argument("--every", type=int, default=10, help="record step 0, every K-th step and T")
    p.add_argument("--sharpness-every", type=int, default=0, help="sharpness at steps 0, K, 2K, ... and T (0 = off)")
    p.add_argument("--sharpness-tol", type=float, default=1e-6)
    p.add_argument("--sharpness-maxiter", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=20, help="untimed steps before the timed run")
    p.add_argument("--eta-w", type=float, default=0.9)
    p.add_argument("--eta-gamma", type=float, default=0.05)
    p.add_argument("--gamma0", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--inputs", help="folder with X.npy, y.npy, w0.npy, ref.npy, meta.json (bench_gpu --dump-check)")
    p.add_argument("--time", action="store_true",
                   help="with --inputs: time --steps steps of the first --S rows of w0.npy instead of checking")
    p.add_argument("--check-out", help="write the records of every step to this .npz (with --inputs)")
    p.add_argument("--compare-tol", type=float, help="compare with INPUTS/bnspike.npz at this relative tolerance")
    p.add_argument("--json", help="also write the JSON result to this file")
    p.add_argument("--serve", action="store_true", help="answer JSON commands on stdin (see above)")
    return p.parse_args(argv)


def describe(device):
    """What this peer runs on: versions, BLAS, threads."""
    info = {"peer": "torch", "torch": torch.__version__, "numpy": np.__version__, "device": device,
            "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads()}
    cfg = torch.__config__.show()
    for line in cfg.splitlines():
        line = line.strip()
        if "Math Kernel Library" in line:
            m = re.search(r"Version ([0-9.]+)", line)
            info["blas"] = "MKL " + (m.group(1) if m else "?")
        elif line.startswith("- OpenMP"):
            info["openmp"] = line.lstrip("- ")
    try:
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:  # older torch
        pass
    info["mkl"] = bool(torch.backends.mkl.is_available())
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def random_problem(n, d, S, seed, dtype, device, loss="square"):
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
    if loss == "logistic":
        y = np.where(y >= 0, 1.0, -1.0)
    ref = np.linalg.lstsq(Xc, y, rcond=None)[0]
    W0 = g.standard_normal((S, d))
    t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)
    return t(X), t(y), t(W0), t(ref)


def load_inputs(folder, dtype, device, S=None):
    """X, y, the first S rows of w0 (all when S is None), ref and meta.json."""
    meta = json.load(open(os.path.join(folder, "meta.json")))
    t = lambda a: torch.as_tensor(np.array(a), dtype=dtype, device=device)  # a writable copy
    w0 = np.load(os.path.join(folder, "w0.npy"), mmap_mode="r")
    if S is not None:
        if S > w0.shape[0]:
            raise ValueError("%s/w0.npy has %d rows, %d asked" % (folder, w0.shape[0], S))
        w0 = w0[:S]
    return (t(np.load(os.path.join(folder, "X.npy"))), t(np.load(os.path.join(folder, "y.npy"))), t(w0),
            t(np.load(os.path.join(folder, "ref.npy"))), meta)


class Sharpness:
    """bnspike's batched shifted power iteration (src/sharpness.h) on the
    Hessian of the summed loss, products by double backward.  Per operator it
    keeps the last vector (warm start of the next record) and the shift."""

    def __init__(self, S, d, tol, maxiter, dtype, device, seed=0):
        self.tol, self.maxiter = tol, maxiter
        self.eps = (np.finfo(np.float32).eps if dtype == torch.float32 else np.finfo(np.float64).eps) / 2
        self.tol = max(tol, 4.0 * self.eps * math.sqrt(d + 1))  # bnspike's floor on the tolerance
        self.V = [None] * len(SHARP_OPS)
        self.vg = [None] * len(SHARP_OPS)
        self.sigma = [np.zeros(S) for _ in SHARP_OPS]
        self.gen = torch.Generator(device="cpu").manual_seed(seed)
        self.dtype, self.device, self.S, self.d = dtype, device, S, d
        self.hvps = 0

    def _random(self):
        V = torch.randn(self.d, self.S, generator=self.gen, dtype=torch.float64).to(self.dtype).to(self.device)
        vg = torch.randn(self.S, generator=self.gen, dtype=torch.float64).to(self.dtype).to(self.device)
        return V, vg

    def record(self, f, W, gamma, sw, sg):
        """lambda_max of the three operators at (W, gamma): three numpy arrays (S)."""
        Wd = W.detach().requires_grad_(True)
        gd = gamma.detach().requires_grad_(True)
        L = f(Wd, gd)[0].sum()
        gW, gg = torch.autograd.grad(L, (Wd, gd), create_graph=True)
        wn = W.detach() / torch.linalg.vector_norm(W.detach(), dim=0)

        def hvp(V, vg):
            with torch.enable_grad():  # the power iteration runs under no_grad
                hW, hg = torch.autograd.grad((gW * V).sum() + (gg * vg).sum(), (Wd, gd), retain_graph=True)
            self.hvps += 1
            return hW, hg

        out = []
        for k, (weighted, projected) in enumerate(SHARP_OPS):
            if weighted:
                A = lambda V, vg: tuple(a * b for a, b in zip(hvp(V * sw, vg * sg), (sw, sg)))
            else:
                A = hvp
            out.append(self._power(k, A, wn if projected else None))
        return out

    def _power(self, k, A, wn):
        proj = (lambda V: V - wn * (wn * V).sum(dim=0)) if wn is not None else (lambda V: V)
        if self.V[k] is None:
            V, vg = self._random()
            V = proj(V)
        else:
            V, vg = proj(self.V[k]), self.vg[k]
            nrm = torch.sqrt((V * V).sum(dim=0) + vg * vg)
            bad = ~(torch.isfinite(nrm) & (nrm > 0))
            if bool(bad.any()):
                R, rg = self._random()
                V = torch.where(bad, proj(R), V)
                vg = torch.where(bad, rg, vg)
        nrm = torch.sqrt((V * V).sum(dim=0) + vg * vg)
        V, vg = V / nrm, vg / nrm
        Vsave, vgsave = V.clone(), vg.clone()
        S = self.S
        sigma = self.sigma[k]
        sig_t = torch.as_tensor(sigma, dtype=self.dtype, device=self.device)
        nv = torch.ones(S, dtype=self.dtype, device=self.device)
        mu_prev = np.full(S, np.nan)
        d_prev = np.full(S, np.nan)
        best = np.full(S, -np.inf)
        lam = np.full(S, np.nan)
        active = np.ones(S, dtype=bool)
        act_t = torch.ones(S, dtype=torch.bool, device=self.device)
        tol = self.tol
        with torch.no_grad():
            for _ in range(self.maxiter):
                if not active.any():
                    break
                X, xg = A(V, vg)
                a = (V * X).sum(dim=0) + vg * xg
                inv = 1.0 / nv
                Y = (X - sig_t * V) * inv
                if wn is not None:
                    Y = proj(Y)
                yg = (xg - sig_t * vg) * inv
                mu_t = a * inv * inv
                nv_new = torch.sqrt((Y * Y).sum(dim=0) + yg * yg)
                V = torch.where(act_t, Y, V)
                vg = torch.where(act_t, yg, vg)
                nv = torch.where(act_t, nv_new, nv)
                m = mu_t.double().cpu().numpy()
                nvh = nv.double().cpu().numpy()
                with np.errstate(invalid="ignore"):
                    dead = active & ~np.isfinite(m)
                    lam[dead] = np.nan
                    active &= ~dead
                    best = np.where(active & (m > best), m, best)
                    stop = active & ~(np.isfinite(nvh) & (nvh > 0))
                    lam[stop] = best[stop]
                    active &= ~stop
                    dm = m - mu_prev
                    gap = m - sigma
                    scale = np.maximum(np.abs(m), np.abs(gap))
                    shift = active & (gap < 0) & (np.abs(dm) <= 1e-2 * np.abs(gap))
                    ok = active & ~shift & (np.abs(dm) <= tol * scale) & (gap >= 0)
                    r = np.abs(dm) / np.abs(d_prev)
                    extra = ok & np.isfinite(d_prev) & (d_prev != 0) & (r < 1)
                    ok[extra] = (np.abs(dm[extra]) / (1 - r[extra])) <= tol * scale[extra]
                lam[ok] = best[ok]
                active &= ~ok
                cont = active & ~shift
                d_prev = np.where(cont, dm, d_prev)
                mu_prev = np.where(cont, m, mu_prev)
                if shift.any():
                    sigma[shift] = m[shift]
                    mu_prev[shift] = np.nan
                    d_prev[shift] = np.nan
                    sh_t = torch.as_tensor(shift, device=self.device)
                    V = torch.where(sh_t, Vsave, V)
                    vg = torch.where(sh_t, vgsave, vg)
                    nv = torch.where(sh_t, torch.ones_like(nv), nv)
                    sig_t = torch.as_tensor(sigma, dtype=self.dtype, device=self.device)
                act_t = torch.as_tensor(active, device=self.device)
        lam[active] = best[active]
        self.V[k], self.vg[k] = V, vg
        return lam


def run(X, y, W0, ref, gamma0, eta_w, eta_gamma, steps, every, loss="square", sharpness_every=0,
        sharpness_tol=1e-6, sharpness_maxiter=1000):
    """Steps t = 0..T: record the state (w_t, gamma_t) when t is scheduled,
    then move to t+1 unless t = T.  Returns (records, sharpness, hvps):
    records a tensor (len(FIELDS), S, R) still on the device, sharpness a list
    of three (S, Rs) numpy arrays (empty without sharpness)."""
    n = X.shape[0]
    Xc = X - X.mean(dim=0, keepdim=True)
    yc = y[:, None]
    e = ref / torch.linalg.vector_norm(ref)
    uhat = Xc @ e
    uhat = uhat / torch.linalg.vector_norm(uhat)
    sqrt_n = math.sqrt(n)

    def f(W, gamma):
        U = Xc @ W  # n x S
        s = U.pow(2).mean(dim=0).sqrt()  # ||Xc w|| / sqrt(n), per column
        Z = gamma * U / s
        if loss == "square":
            L = 0.5 * (Z - yc).pow(2).mean(dim=0)  # S losses
        else:
            L = F.softplus(-yc * Z).mean(dim=0)
        return L, U, s

    W = W0.T.contiguous().requires_grad_(True)  # d x S: one column per trajectory
    S = W.shape[1]
    gamma = torch.full((S,), gamma0, dtype=X.dtype, device=X.device, requires_grad=True)
    sharp = None
    if sharpness_every > 0:
        sharp = Sharpness(S, W.shape[0], sharpness_tol, sharpness_maxiter, X.dtype, X.device)
        sw, sg = math.sqrt(eta_w), math.sqrt(eta_gamma)
    recs, lams = [], []
    for t in range(steps + 1):
        if sharp is not None and (t % sharpness_every == 0 or t == steps):
            lams.append(sharp.record(f, W, gamma, sw, sg))
        L, U, s = f(W, gamma)
        L.sum().backward()  # columns do not interact: each gets its own gradient
        with torch.no_grad():
            if t % every == 0 or t == steps:
                alpha = e @ W
                beta = torch.linalg.vector_norm(W - e[:, None] * alpha, dim=0)
                a_s = uhat @ U
                b_s = torch.linalg.vector_norm(U - uhat[:, None] * a_s, dim=0) / sqrt_n
                a_s = a_s / sqrt_n
                recs.append(torch.stack([
                    torch.full_like(L, t), L, gamma, torch.linalg.vector_norm(W, dim=0), s, alpha, beta,
                    beta / alpha, eta_w * gamma / (s * s), torch.linalg.vector_norm(W.grad, dim=0), gamma.grad,
                    a_s, b_s, b_s / a_s]))
            if t == steps:
                break
            W -= eta_w * W.grad
            gamma -= eta_gamma * gamma.grad
        W.grad = None
        gamma.grad = None
    sh = [np.stack([r[k] for r in lams], axis=1) for k in range(3)] if lams else []
    return torch.stack(recs, dim=2).detach(), sh, (sharp.hvps if sharp else 0)


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def records_dict(recs, sharp):
    R = recs.double().cpu().numpy()
    out = {k: R[i] for i, k in enumerate(FIELDS)}
    for k, a in zip(SHARP_NAMES, sharp):
        out[k] = a
    return out


def serve(args):
    """One JSON command per stdin line, one JSON answer per line (see the docstring)."""
    dev = args.device
    cache = {}
    print(json.dumps(dict(describe(dev), ready=True, rss_base_kb=rss_kb())), flush=True)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line)
            if cmd.get("cmd") == "quit":
                break
            if cmd.get("cmd") != "run":
                raise ValueError("unknown command %r" % cmd.get("cmd"))
            dtype = torch.float64 if cmd.get("dtype", "float64") == "float64" else torch.float32
            key = (cmd["inputs"], int(cmd["S"]), str(dtype))
            if key not in cache:
                cache.clear()
                cache[key] = load_inputs(cmd["inputs"], dtype, dev, int(cmd["S"]))
            X, y, W0, ref, meta = cache[key]
            sync(dev)
            t0 = time.perf_counter()
            recs, sharp, hvps = run(X, y, W0, ref, steps=int(cmd["steps"]), every=int(cmd.get("every", 1)),
                                    sharpness_every=int(cmd.get("sharpness_every", 0)), **settings(meta))
            host = recs.cpu().numpy()  # the records reach the host, as bnspike's do
            sync(dev)
            sec = time.perf_counter() - t0
            if cmd.get("out"):
                np.savez(cmd["out"], **records_dict(recs, sharp))
            ans = {"ok": True, "seconds": sec, "hvps": hvps, "records": int(host.shape[2]),
                   "finite": bool(np.isfinite(host[1:4]).all()), "rss_peak_kb": rss_kb()}
        except Exception as ex:  # answer, keep serving
            ans = {"ok": False, "error": "%s: %s" % (type(ex).__name__, ex)}
        print(json.dumps(ans), flush=True)
    return 0


def main(argv=None):
    args = parse_args(argv)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"peer": "torch", "error": "CUDA is not available to torch"}), flush=True)
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dev = args.device
    if dev == "cuda":
        # Full-precision products, as bnspike (no TF32 for float32).
        torch.backends.cuda.matmul.allow_tf32 = False
    if args.serve:
        return serve(args)
    result = {"peer": "torch", "torch": torch.__version__, "device": dev, "dtype": args.dtype,
              "threads": torch.get_num_threads()}
    if dev == "cuda":
        result["gpu"] = torch.cuda.get_device_name(0)

    if args.inputs and not args.time:
        X, y, W0, ref, meta = load_inputs(args.inputs, dtype, dev)
        steps = int(meta["steps"])
        recs, sharp, _ = run(X, y, W0, ref, steps=steps, every=1,
                             sharpness_every=int(meta.get("sharpness_every", 0)), **settings(meta))
        sync(dev)
        ours = records_dict(recs, sharp)
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

    base = rss_kb()
    if args.inputs:  # --time: the dumped problem, its settings
        X, y, W0, ref, meta = load_inputs(args.inputs, dtype, dev, args.S)
        kw = settings(meta)
    else:
        X, y, W0, ref = random_problem(args.n, args.d, args.S, args.seed, dtype, dev, args.loss)
        kw = dict(gamma0=args.gamma0, eta_w=args.eta_w, eta_gamma=args.eta_gamma, loss=args.loss,
                  sharpness_tol=args.sharpness_tol, sharpness_maxiter=args.sharpness_maxiter)
    kw["sharpness_every"] = args.sharpness_every
    # Warm-up: kernel selection, allocator, autograd graph.
    if args.warmup > 0:
        run(X, y, W0, ref, steps=args.warmup, every=args.every, **kw)
    sync(dev)
    t0 = time.perf_counter()
    recs, _, hvps = run(X, y, W0, ref, steps=args.steps, every=args.every, **kw)
    host = recs.cpu().numpy()  # the records reach the host, as bnspike's do
    sync(dev)
    sec = time.perf_counter() - t0
    evals = args.steps  # GD updates, as bench_gpu counts them
    result.update({
        "mode": "timing", "n": X.shape[0], "d": X.shape[1], "S": W0.shape[0], "steps": args.steps,
        "every": args.every, "loss": kw["loss"], "sharpness_every": args.sharpness_every, "hvps": hvps,
        "seconds": sec, "ms_per_step": 1e3 * sec / evals, "seed_steps_per_s": W0.shape[0] * evals / sec,
        "finite_records": bool(np.isfinite(host[1:4]).all()), "rss_base_kb": base, "rss_peak_kb": rss_kb(),
    })
    text = json.dumps(result)
    print(text)
    if args.json:
        open(args.json, "w").write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
