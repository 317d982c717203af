#!/usr/bin/env python3
"""Scaling figure of the benchmark: time per GD step against n*d*S (log-log)
for bnspike, the two-GEMM floor and the peers, on the CPU and (when a GPU
run's CSV is given) the GPU; and peak memory against S.

    python3 bench/plot_scaling.py CPU.csv [GPU.csv ...] [-o docs/figures/bench_scaling.png]

The CSVs are what `build/bench_table --csv FILE` writes.  Drawn: fp64,
square loss, no sharpness, rows of the table and of the scaling section.
From the second file on only the GPU rows are drawn (that file's CPU rows
were measured on another machine).  Needs matplotlib.
"""
import argparse
import csv
import math
import os
import sys

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError as e:
    sys.exit("plot_scaling.py: matplotlib is needed (%s)" % e)

STYLE = {  # impl -> (label, colour, marker, line style)
    "bnspike": ("bnspike CPU", "tab:blue", "o", "-"),
    "floor": ("floor CPU (2 OpenBLAS GEMMs)", "black", "s", "--"),
    "torch": ("PyTorch CPU peer", "tab:red", "^", "-"),
    "numpy": ("numpy peer", "tab:green", "v", "-"),
    "bnspike-gpu": ("bnspike GPU", "tab:cyan", "o", "-"),
    "floor-gpu": ("floor GPU (2 cuBLAS GEMMs)", "tab:gray", "s", "--"),
    "torch-cuda": ("PyTorch CUDA peer", "tab:orange", "^", "-"),
}


def read(path):
    head, rows = [], []
    with open(path) as f:
        lines = []
        for line in f:
            if line.startswith("#"):
                head.append(line[1:].strip())
            else:
                lines.append(line)
    for r in csv.DictReader(lines):
        rows.append(r)
    return head, rows


def num(r, k):
    try:
        return float(r.get(k) or "nan")
    except ValueError:
        return float("nan")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv", nargs="+")
    p.add_argument("-o", "--out", default="docs/figures/bench_scaling.png")
    a = p.parse_args(argv)

    timing, memory, heads = {}, {}, []  # timing[impl][(n, d, S)] = (ms, min, max, case)
    for i, path in enumerate(a.csv):
        head, rows = read(path)
        heads += head[:1]
        for r in rows:
            if i > 0 and r.get("device") != "gpu":
                continue
            impl = r.get("impl", "")
            if r.get("section") in ("table", "scaling"):
                if (r.get("loss") != "square" or r.get("precision") != "fp64" or r.get("sharpness_every") != "0"
                        or r.get("status") != "ok"):
                    continue
                ms = num(r, "ms_per_step")
                if not ms > 0:
                    continue
                key = (int(num(r, "n")), int(num(r, "d")), int(num(r, "S")))
                timing.setdefault(impl, {})[key] = (ms, num(r, "ms_min"), num(r, "ms_max"), r.get("case", ""))
            elif r.get("section") == "memory":
                kb = num(r, "rss_peak_kb")
                if kb > 0:
                    memory.setdefault(impl, {})[num(r, "S")] = (kb / 1024.0, num(r, "rss_base_kb") / 1024.0)
    if not timing:
        sys.exit("plot_scaling.py: no timing rows (fp64, square, no sharpness) in %s" % ", ".join(a.csv))

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 5.6), gridspec_kw={"width_ratios": [1.4, 1]})
    paper = lambda k: k[0] == 64 and k[1] == 256
    for impl in STYLE:
        if impl not in timing:
            continue
        lab, col, mk, ls = STYLE[impl]
        for grp, (fill, lsty, suffix) in enumerate([(True, ls, ""), (False, ":", None)]):
            pts = sorted(((k[0] * k[1] * k[2], k, v) for k, v in timing[impl].items() if paper(k) == (grp == 0)))
            if not pts:
                continue
            x = [p[0] for p in pts]
            y = [p[2][0] for p in pts]
            lo = [max(p[2][0] - p[2][1], 0) if p[2][1] == p[2][1] else 0 for p in pts]
            hi = [max(p[2][2] - p[2][0], 0) if p[2][2] == p[2][2] else 0 for p in pts]
            ax.errorbar(x, y, yerr=[lo, hi], color=col, marker=mk, ls=lsty, lw=1.3, ms=5, capsize=2,
                        mfc=col if fill else "white", label=lab if suffix is not None else None)
    # A slope-1 guide: cost proportional to n*d*S, through the largest floor point.
    ref = timing.get("floor") or timing.get("floor-gpu") or next(iter(timing.values()))
    kmax = max(ref, key=lambda k: k[0] * k[1] * k[2])
    xmax = kmax[0] * kmax[1] * kmax[2]
    xs = [min(k[0] * k[1] * k[2] for v in timing.values() for k in v), xmax]
    ax.plot(xs, [ref[kmax][0] * x / xmax for x in xs], color="0.6", lw=0.8, ls=":", label=r"$\propto n\,d\,S$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("n·d·S  (a step's two products: 4·n·d·S flops)")
    ax.set_ylabel("ms per GD step (median; bars: min–max of repetitions)")
    ax.set_title("Time per step, fp64, square loss, records every 10 steps\n"
                 "filled, solid: paper size n=64, d=256, S = 1 … 16384;  hollow, dotted: larger n, d", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper left")
    base = timing.get("floor") or timing.get("floor-gpu") or {}
    for k, v in base.items():
        txt = "S=%d" % k[2] if paper(k) else "n=%d d=%d S=%d" % k
        ax.annotate(txt, (k[0] * k[1] * k[2], v[0]), fontsize=6.5, color="0.3", xytext=(5, -11),
                    textcoords="offset points")

    mstyle = {"bnspike": STYLE["bnspike"], "torch": STYLE["torch"], "numpy": STYLE["numpy"]}
    for impl, (lab, col, mk, ls) in mstyle.items():
        if impl not in memory:
            continue
        pts = sorted(memory[impl].items())
        bx.plot([k for k, _ in pts], [v[0] for _, v in pts], color=col, marker=mk, ls="-", label=lab + ": peak RSS")
        if impl != "bnspike" and all(v[1] == v[1] for _, v in pts):
            bx.plot([k for k, _ in pts], [max(v[0] - v[1], 0.1) for _, v in pts], color=col, marker=mk, ls=":",
                    mfc="none", label=lab + ": above its imports")
    if memory:
        S = sorted({s for m in memory.values() for s in m})
        per_s = 256 * 8 / 2**20  # one d-vector per trajectory, fp64, MiB
        S = [s for s in S if per_s * s >= 1] or S
        bx.plot(S, [per_s * s for s in S], color="0.6", lw=0.8, ls=":", label="S·d·8 bytes (one copy of W)")
    bx.set_xscale("log")
    bx.set_yscale("log")
    bx.set_xlabel("S (trajectories)")
    bx.set_ylabel("MiB")
    bx.set_title("Peak memory (VmHWM), paper size n=64, d=256,\nfp64, 100 steps, one process per point", fontsize=10)
    bx.grid(True, which="both", alpha=0.25)
    bx.legend(fontsize=8, loc="upper left")
    if heads:
        fig.suptitle(heads[0][:160], fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    fig.savefig(a.out, dpi=130)
    print("wrote %s (%d timing series, %d memory series)" % (a.out, len(timing), len(memory)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
