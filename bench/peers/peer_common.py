"""Helpers shared by the bnspike peers (numpy_batched.py, torch_batched.py):
process memory, the run settings of a bench_gpu --dump-check folder, and the
comparison of a peer's records with bnspike's.  Standard library + numpy only,
so importing it never changes a peer's thread settings."""
import numpy as np


def rss_kb(field="VmHWM"):
    """Peak (VmHWM) or current (VmRSS) resident set of this process, kB."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


def settings(meta):
    return dict(gamma0=float(meta["gamma0"]), eta_w=float(meta["eta_w"]), eta_gamma=float(meta["eta_gamma"]),
                loss=meta.get("loss", "square"), sharpness_tol=float(meta.get("sharpness_tol", 1e-6)),
                sharpness_maxiter=int(meta.get("sharpness_maxiter", 1000)))


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
