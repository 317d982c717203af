#!/usr/bin/env python3
"""The batched bnspike run written in plain numpy.

The same computation as torch_batched.py, without autograd: S trajectories
of full-batch gradient descent on a batch-normalized linear model share one
data set, W is d x S (one column per trajectory), the gradient is MODEL.md's
one-product formula (grad_w L = (gamma/s) Xc^T (r - c u), dL/dgamma = u^T r/s)
and the Hessian-vector products are MODEL.md's forward-over-reverse formulas
(two products each).  The diagnostics are bnspike's: every record field and,
with --sharpness-every K, the three sharpness values by bnspike's batched
shifted power iteration (see torch_batched.py).  float64 by default; square
or logistic loss.  numpy's matrix products go to the BLAS numpy was built
with (OpenBLAS in the wheels; `--serve` and the timing JSON report which
kernel and how many threads).

Modes as torch_batched.py (no --device):
    numpy_batched.py --n 64 --d 256 --S 1024 --steps 1000 --every 10      timing, random problem
    numpy_batched.py --inputs DIR --time --S 256 --steps 500              timing, dumped problem
    numpy_batched.py --inputs DIR --check-out DIR/numpy.npz --compare-tol 1e-9
    numpy_batched.py --serve                                              JSON commands on stdin
The thread count of numpy's BLAS is set by the environment (OPENBLAS_NUM_THREADS,
OMP_NUM_THREADS) before numpy is imported; --threads sets them when they are unset.
"""
import argparse
import ctypes
import glob
import json
import math
import os
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--threads", type=int, default=0, help="BLAS threads (sets OPENBLAS_NUM_THREADS if unset)")
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
    p.add_argument("--inputs", help="folder with X.npy, y.npy, w0.npy, ref.npy, meta.json")
    p.add_argument("--time", action="store_true", help="with --inputs: time instead of checking")
    p.add_argument("--check-out", help="write the records of every step to this .npz (with --inputs)")
    p.add_argument("--compare-tol", type=float, help="compare with INPUTS/bnspike.npz at this relative tolerance")
    p.add_argument("--json", help="also write the JSON result to this file")
    p.add_argument("--serve", action="store_true", help="answer JSON commands on stdin (torch_batched.py's protocol)")
    return p.parse_args(argv)


ARGS = parse_args()
if ARGS.threads > 0:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(ARGS.threads))
import numpy as np  # noqa: E402  (after the thread settings)

from peer_common import compare, rss_kb, settings  # noqa: E402

FIELDS = ["step", "loss", "gamma", "w_norm", "w_norm_sigma", "alpha", "beta", "rho", "eta_eff",
          "grad_norm_w", "grad_gamma", "alpha_sigma", "beta_sigma", "rho_sigma"]
SHARP_NAMES = ["sharpness", "sharpness_weighted", "sharpness_sphere"]
SHARP_OPS = [(False, False), (True, False), (True, True)]  # (weighted, projected), as bnspike


def blas_info():
    """numpy's BLAS: threadpoolctl when installed, else the OpenBLAS library
    numpy loaded, asked through ctypes (scipy-openblas symbol names first)."""
    info = {}
    try:
        import threadpoolctl
        for lib in threadpoolctl.threadpool_info():
            if lib.get("user_api") == "blas":
                return {"blas": "%s %s" % (lib.get("internal_api"), lib.get("version")),
                        "blas_kernel": lib.get("architecture"), "blas_threads": lib.get("num_threads"),
                        "blas_threading": lib.get("threading_layer"), "via": "threadpoolctl"}
    except Exception:
        pass
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["blas"] = "%s %s" % (cfg.get("name"), cfg.get("version"))
    except Exception:
        pass
    libs = []
    for d in (os.path.dirname(np.__file__) + ".libs", os.path.join(os.path.dirname(np.__file__), ".libs")):
        libs += glob.glob(os.path.join(d, "*openblas*"))
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for pre, suf in (("scipy_openblas_", "64_"), ("scipy_openblas_", ""), ("openblas_", "64_"), ("openblas_", "")):
            try:
                core = getattr(lib, pre + "get_corename" + suf)
                conf = getattr(lib, pre + "get_config" + suf)
                nth = getattr(lib, pre + "get_num_threads" + suf)
            except AttributeError:
                continue
            core.restype = conf.restype = ctypes.c_char_p
            info.update({"blas_kernel": core().decode(), "blas_config": conf().decode(), "blas_threads": nth(),
                         "via": "ctypes " + os.path.basename(path)})
            return info
    return info


def describe():
    return dict({"peer": "numpy", "numpy": np.__version__,
                 "env_threads": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")},
                 "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}, **blas_info())


def sigmoid(t):
    return 0.5 * (1.0 + np.tanh(0.5 * t))  # no overflow for either sign


class Problem:
    """Centered data, the derivatives of the loss, and the state-dependent
    pieces of the gradient and of the HVP."""

    def __init__(self, X, y, ref, loss):
        self.n = X.shape[0]
        self.Xc = np.ascontiguousarray(X - X.mean(axis=0, keepdims=True))
        self.y = y[:, None]
        self.logistic = loss == "logistic"
        self.e = ref / np.linalg.norm(ref)
        u = self.Xc @ self.e
        self.uhat = u / np.linalg.norm(u)

    def forward(self, W, gamma):
        """U, s, Z, r = l'(z)/n, the column losses, u^T r."""
        n = self.n
        U = self.Xc @ W
        s = np.sqrt((U * U).sum(axis=0) / n)
        Z = (gamma / s) * U
        if self.logistic:
            L = np.logaddexp(0, -self.y * Z).sum(axis=0) / n
            r = -self.y * sigmoid(-self.y * Z) / n
        else:
            E = Z - self.y
            L = 0.5 * (E * E).sum(axis=0) / n
            r = E / n
        ur = (U * r).sum(axis=0)
        return U, s, Z, r, L, ur

    def gradient(self, W, gamma):
        n = self.n
        U, s, Z, r, L, ur = self.forward(W, gamma)
        c = ur / (n * s * s)
        Q = (gamma / s) * (r - c * U)
        G = self.Xc.T @ Q
        return G, ur / s, U, s, L

    def hvp_setup(self, W, gamma):
        U, s, Z, r, L, ur = self.forward(W, gamma)
        if self.logistic:
            p = sigmoid(self.y * Z)
            h2 = p * (1 - p)
        else:
            h2 = 1.0
        c = ur / (self.n * s * s)
        return (U, s, r, h2, ur, c, gamma)

    def hvp(self, st, V, vg):
        """MODEL.md's exact Hessian-vector product, every column at once."""
        U, s, r, h2, ur, c, gamma = st
        n = self.n
        Ud = self.Xc @ V
        sd = (U * Ud).sum(axis=0) / (n * s)
        Zd = (vg / s) * U + (gamma / s) * Ud - (gamma * sd / (s * s)) * U
        rd = h2 * Zd / n
        cd = ((Ud * r).sum(axis=0) + (U * rd).sum(axis=0)) / (n * s * s) - 2 * ur * sd / (n * s ** 3)
        Qd = (vg / s - gamma * sd / (s * s)) * (r - c * U) + (gamma / s) * (rd - cd * U - c * Ud)
        hW = self.Xc.T @ Qd
        hg = ((rd * U).sum(axis=0) + (r * Ud).sum(axis=0)) / s - ur * sd / (s * s)
        return hW, hg


class Sharpness:
    """bnspike's batched shifted power iteration (as torch_batched.Sharpness)."""

    def __init__(self, S, d, tol, maxiter, dtype, seed=0):
        eps = np.finfo(dtype).eps / 2
        self.tol = max(tol, 4.0 * eps * math.sqrt(d + 1))
        self.maxiter = maxiter
        self.V = [None] * 3
        self.vg = [None] * 3
        self.sigma = [np.zeros(S) for _ in range(3)]
        self.rng = np.random.default_rng(seed)
        self.S, self.d, self.dtype = S, d, dtype
        self.hvps = 0

    def record(self, prob, W, gamma, sw, sg):
        st = prob.hvp_setup(W, gamma)
        wn = W / np.linalg.norm(W, axis=0)

        def hvp(V, vg):
            self.hvps += 1
            return prob.hvp(st, V, vg)

        out = []
        for k, (weighted, projected) in enumerate(SHARP_OPS):
            if weighted:
                def A(V, vg):
                    hW, hg = hvp(V * sw, vg * sg)
                    return hW * sw, hg * sg
            else:
                A = hvp
            out.append(self._power(k, A, wn if projected else None))
        return out

    def _power(self, k, A, wn):
        proj = (lambda V: V - wn * (wn * V).sum(axis=0)) if wn is not None else (lambda V: V)
        S, dt = self.S, self.dtype
        rand = lambda: (self.rng.standard_normal((self.d, S)).astype(dt), self.rng.standard_normal(S).astype(dt))
        if self.V[k] is None:
            V, vg = rand()
            V = proj(V)
        else:
            V, vg = proj(self.V[k]), self.vg[k]
            nrm = np.sqrt((V * V).sum(axis=0) + vg * vg)
            bad = ~(np.isfinite(nrm) & (nrm > 0))
            if bad.any():
                R, rg = rand()
                V = np.where(bad, proj(R), V)
                vg = np.where(bad, rg, vg)
        nrm = np.sqrt((V * V).sum(axis=0) + vg * vg)
        V, vg = V / nrm, vg / nrm
        Vsave, vgsave = V.copy(), vg.copy()
        sigma = self.sigma[k]
        nv = np.ones(S, dtype=dt)
        mu_prev = np.full(S, np.nan)
        d_prev = np.full(S, np.nan)
        best = np.full(S, -np.inf)
        lam = np.full(S, np.nan)
        active = np.ones(S, dtype=bool)
        tol = self.tol
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            for _ in range(self.maxiter):
                if not active.any():
                    break
                sig = sigma.astype(dt)
                X, xg = A(V, vg)
                a = (V * X).sum(axis=0) + vg * xg
                inv = 1 / nv
                Y = proj((X - sig * V) * inv)
                yg = (xg - sig * vg) * inv
                m = (a * inv * inv).astype(np.float64)
                V = np.where(active, Y, V)
                vg = np.where(active, yg, vg)
                nv = np.where(active, np.sqrt((Y * Y).sum(axis=0) + yg * yg), nv)
                nvh = nv.astype(np.float64)
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
                    V = np.where(shift, Vsave, V)
                    vg = np.where(shift, vgsave, vg)
                    nv = np.where(shift, 1, nv).astype(dt)
        lam[active] = best[active]
        self.V[k], self.vg[k] = V, vg
        return lam


def run(X, y, W0, ref, gamma0, eta_w, eta_gamma, steps, every, loss="square", sharpness_every=0,
        sharpness_tol=1e-6, sharpness_maxiter=1000):
    """As torch_batched.run: returns (records (len(FIELDS), S, R), sharpness list, hvps)."""
    dt = X.dtype
    prob = Problem(X, y, ref, loss)
    e, uhat, n = prob.e, prob.uhat, prob.n
    sqrt_n = math.sqrt(n)
    W = np.array(W0.T, order="C")  # d x S, a copy: updated in place
    S = W.shape[1]
    gamma = np.full(S, gamma0, dtype=dt)
    eta_w, eta_gamma = dt.type(eta_w), dt.type(eta_gamma)
    sharp = None
    if sharpness_every > 0:
        sharp = Sharpness(S, W.shape[0], sharpness_tol, sharpness_maxiter, dt)
        sw, sg = dt.type(math.sqrt(eta_w)), dt.type(math.sqrt(eta_gamma))
    recs, lams = [], []
    for t in range(steps + 1):
        if sharp is not None and (t % sharpness_every == 0 or t == steps):
            lams.append(sharp.record(prob, W, gamma, sw, sg))
        G, g_gamma, U, s, L = prob.gradient(W, gamma)
        if t % every == 0 or t == steps:
            alpha = e @ W
            beta = np.linalg.norm(W - e[:, None] * alpha, axis=0)
            a_s = uhat @ U
            b_s = np.linalg.norm(U - uhat[:, None] * a_s, axis=0) / sqrt_n
            a_s = a_s / sqrt_n
            with np.errstate(divide="ignore", invalid="ignore"):
                recs.append(np.stack([
                    np.full(S, t, dtype=dt), L, gamma, np.linalg.norm(W, axis=0), s, alpha, beta, beta / alpha,
                    eta_w * gamma / (s * s), np.linalg.norm(G, axis=0), g_gamma, a_s, b_s, b_s / a_s]))
        if t == steps:
            break
        W -= eta_w * G
        gamma = gamma - eta_gamma * g_gamma
    sh = [np.stack([r[k] for r in lams], axis=1) for k in range(3)] if lams else []
    return np.stack(recs, axis=2), sh, (sharp.hvps if sharp else 0)


def random_problem(n, d, S, seed, dtype, loss):
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
    y = Xc @ (w_true / np.linalg.norm(w_true))
    if loss == "logistic":
        y = np.where(y >= 0, 1.0, -1.0)
    ref = np.linalg.lstsq(Xc, y, rcond=None)[0]
    W0 = g.standard_normal((S, d))
    return X.astype(dtype), y.astype(dtype), W0.astype(dtype), ref.astype(dtype)


def load_inputs(folder, dtype, S=None):
    meta = json.load(open(os.path.join(folder, "meta.json")))
    w0 = np.load(os.path.join(folder, "w0.npy"), mmap_mode="r")
    if S is not None:
        if S > w0.shape[0]:
            raise ValueError("%s/w0.npy has %d rows, %d asked" % (folder, w0.shape[0], S))
        w0 = w0[:S]
    a = lambda v: np.array(v, dtype=dtype)  # copies (w0 is memory-mapped)
    return (a(np.load(os.path.join(folder, "X.npy"))), a(np.load(os.path.join(folder, "y.npy"))), a(w0),
            a(np.load(os.path.join(folder, "ref.npy"))), meta)


def records_dict(recs, sharp):
    out = {k: recs[i].astype(np.float64) for i, k in enumerate(FIELDS)}
    for k, a in zip(SHARP_NAMES, sharp):
        out[k] = a
    return out


def serve():
    cache = {}
    print(json.dumps(dict(describe(), ready=True, rss_base_kb=rss_kb())), flush=True)
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
            dtype = np.float64 if cmd.get("dtype", "float64") == "float64" else np.float32
            key = (cmd["inputs"], int(cmd["S"]), dtype)
            if key not in cache:
                cache.clear()
                cache[key] = load_inputs(cmd["inputs"], dtype, int(cmd["S"]))
            X, y, W0, ref, meta = cache[key]
            t0 = time.perf_counter()
            recs, sharp, hvps = run(X, y, W0, ref, steps=int(cmd["steps"]), every=int(cmd.get("every", 1)),
                                    sharpness_every=int(cmd.get("sharpness_every", 0)), **settings(meta))
            sec = time.perf_counter() - t0
            if cmd.get("out"):
                np.savez(cmd["out"], **records_dict(recs, sharp))
            ans = {"ok": True, "seconds": sec, "hvps": hvps, "records": int(recs.shape[2]),
                   "finite": bool(np.isfinite(recs[1:4]).all()), "rss_peak_kb": rss_kb()}
        except Exception as ex:
            ans = {"ok": False, "error": "%s: %s" % (type(ex).__name__, ex)}
        print(json.dumps(ans), flush=True)
    return 0


def main(args):
    if args.serve:
        return serve()
    dtype = np.float64 if args.dtype == "float64" else np.float32
    result = dict(describe(), dtype=args.dtype)
    if args.inputs and not args.time:
        X, y, W0, ref, meta = load_inputs(args.inputs, dtype)
        steps = int(meta["steps"])
        recs, sharp, _ = run(X, y, W0, ref, steps=steps, every=1,
                             sharpness_every=int(meta.get("sharpness_every", 0)), **settings(meta))
        ours = records_dict(recs, sharp)
        if args.check_out:
            np.savez(args.check_out, **ours)
        result.update({"mode": "check", "n": X.shape[0], "d": X.shape[1], "S": W0.shape[0], "steps": steps})
        status = 0
        if args.compare_tol is not None:
            z = np.load(os.path.join(args.inputs, "bnspike.npz"))
            errs = compare(ours, {k: z[k] for k in ("loss", "gamma", "rho")})
            ok = all(v <= args.compare_tol for v in errs.values())
            result.update({"check_max_rel_err": errs, "check_tol": args.compare_tol, "check_pass": ok})
            status = 0 if ok else 1
        text = json.dumps(result)
        print(text)
        if args.json:
            open(args.json, "w").write(text + "\n")
        return status

    base = rss_kb()
    if args.inputs:
        X, y, W0, ref, meta = load_inputs(args.inputs, dtype, args.S)
        kw = settings(meta)
    else:
        X, y, W0, ref = random_problem(args.n, args.d, args.S, args.seed, dtype, args.loss)
        kw = dict(gamma0=args.gamma0, eta_w=args.eta_w, eta_gamma=args.eta_gamma, loss=args.loss,
                  sharpness_tol=args.sharpness_tol, sharpness_maxiter=args.sharpness_maxiter)
    kw["sharpness_every"] = args.sharpness_every
    if args.warmup > 0:
        run(X, y, W0, ref, steps=args.warmup, every=args.every, **kw)
    t0 = time.perf_counter()
    recs, _, hvps = run(X, y, W0, ref, steps=args.steps, every=args.every, **kw)
    sec = time.perf_counter() - t0
    result.update({
        "mode": "timing", "n": X.shape[0], "d": X.shape[1], "S": W0.shape[0], "steps": args.steps,
        "every": args.every, "loss": kw["loss"], "sharpness_every": args.sharpness_every, "hvps": hvps,
        "seconds": sec, "ms_per_step": 1e3 * sec / args.steps, "seed_steps_per_s": W0.shape[0] * args.steps / sec,
        "finite_records": bool(np.isfinite(recs[1:4]).all()), "rss_base_kb": base, "rss_peak_kb": rss_kb(),
    })
    text = json.dumps(result)
    print(text)
    if args.json:
        open(args.json, "w").write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
