#!/usr/bin/env bash
# Device check of the sweep/events/theory code (issue 5) on a CUDA machine:
# the same 640-trajectory sweep on --backend cpu and --backend cuda must give
# the same events (steps exactly, values within the rounding amplification
# 64·u/rho_min), sharpness at onset on both, then timings of a 10,000-
# trajectory sweep in fp64 and fp32 and `theory --compare` on CUDA.
#   OUT=dir scripts/gpu_sweep_check.sh      (BN_DEBS: .deb folder, default .debs)
set -u
OUT=${OUT:-gpu-sweep-out}
mkdir -p "$OUT"
W=$(mktemp -d)
RES=$OUT/result.txt
: > "$RES"
say() { echo "$*" | tee -a "$RES"; }
M=x86_64-linux-gnu
missing=0
for h in cblas.h lapacke.h zlib.h Random123/philox.h; do
    echo "#include <$h>" | gcc -E -x c - -o /dev/null >/dev/null 2>&1 || missing=1
done
if [ $missing = 1 ]; then
    PRE=$W/prefix
    mkdir -p "$PRE"
    for f in "${BN_DEBS:-.debs}"/*.deb; do dpkg-deb -x "$f" "$PRE"; done
    export C_INCLUDE_PATH=$PRE/usr/include/$M/openblas-pthread:$PRE/usr/include/$M:$PRE/usr/include
    export CPLUS_INCLUDE_PATH=$C_INCLUDE_PATH
    export LIBRARY_PATH=$PRE/usr/lib/$M/openblas-pthread:$PRE/usr/lib/$M:$PRE/lib/$M:$PRE/usr/lib/$M/lapack:$PRE/usr/lib/$M/blas
    export LD_LIBRARY_PATH=$LIBRARY_PATH
    say "unpacked build dependencies from ${BN_DEBS:-.debs}"
fi
mkdir -p build-gpu && touch build-gpu/.deps-ok
t0=$(date +%s)
if ! make -j"$(nproc)" BUILD=build-gpu CUDA=1 build-gpu/bnspike > "$OUT/build.log" 2>&1; then
    say "BUILD FAILED"; tail -40 "$OUT/build.log" | tee -a "$RES"; exit 1
fi
say "build: $(( $(date +%s) - t0 )) s"
B=build-gpu/bnspike
$B backends | tee -a "$RES"
D=whitened:n=400,d=20,noise=0.5,wnorm=4,seed=1
START="--w0-scale 0.5 --w0-align 1 --w0-noise 0.05"
GRID="--steps 1000 --seeds 2 --grid eta-w=log:0.1:3:20 --grid gamma0=lin:0.05:1.2:16"
for be in cpu cuda; do
    t0=$(date +%s.%N)
    $B sweep --data $D $START $GRID --backend $be --save-trajectories --every 100 --sharpness-every 10 \
        --quiet --out "$W/sw_$be" || say "sweep on $be FAILED"
    say "$be: 640 trajectories x 1000 steps, sharpness every 10: $(awk "BEGIN{print $(date +%s.%N) - $t0}") s"
    cp "$W/sw_$be/summary.csv" "$OUT/summary_$be.csv"
done
python3 - "$OUT/summary_cpu.csv" "$OUT/summary_cuda.csv" <<'PY' | tee -a "$RES"
import sys, numpy as np
a = np.genfromtxt(sys.argv[1], delimiter=',', names=True)
b = np.genfromtxt(sys.argv[2], delimiter=',', names=True)
u = 2.0 ** -53
steps = ['n_spikes', 'onset_step', 'peak_step', 'end_step', 'diverged']
same = np.ones(len(a), bool)
for c in steps: same &= a[c] == b[c]
floor = (a['floor_before_onset'] == 1) | (b['floor_before_onset'] == 1)
print(f"rows {len(a)}: spike count and onset/peak/end steps equal in {same.sum()}; "
      f"of the {(~same).sum()} others, {(~same & floor).sum()} are flagged floor_before_onset")
ok = same & (a['n_spikes'] > 0)
tol = np.maximum(1e-12, 64 * u / a['rho_min'][ok])
for c in ['rho_peak', 'loss_ratio', 'kappa_onset', 'rho_min']:
    r = np.abs(a[c][ok] - b[c][ok]) / np.abs(a[c][ok])
    print(f"  {c}: max rel diff {np.nanmax(r):.2e}; within 64u/rho_min in {(r <= tol).sum()} of {ok.sum()}")
for c in ['sharpness_onset', 'sharpness_weighted_onset']:
    r = np.abs(a[c][ok] - b[c][ok]) / np.abs(a[c][ok])
    print(f"  {c}: finite cpu {np.isfinite(a[c][ok]).sum()} cuda {np.isfinite(b[c][ok]).sum()}, "
          f"median rel diff {np.nanmedian(r):.2e}, max {np.nanmax(r):.2e}")
th = (a['th_onset_step'] == a['onset_step']) & (a['n_spikes'] > 0)
print(f"  theory onset == cpu onset in {th.sum()} of {(a['n_spikes'] > 0).sum()} spiking rows")
PY
for p in fp64 fp32; do
    t0=$(date +%s.%N)
    $B sweep --data $D $START --steps 2000 --seeds 4 --grid eta-w=log:0.1:3:50 --grid gamma0=lin:0.05:1.2:50 \
        --backend cuda --precision $p --quiet --out "$W/big_$p" || say "big sweep $p FAILED"
    say "cuda $p: 10000 trajectories x 2000 steps (events every step + theory): $(awk "BEGIN{print $(date +%s.%N) - $t0}") s"
    grep -E '"(batches|batch_size|sim_wall_seconds|wall_seconds|trajectories_with_spikes|floor_reached_trajectories)"' \
        "$W/big_$p/run.json" | tr -s ' ' | tee -a "$RES"
done
$B theory --data $D $START --seeds 4 --steps 400 --compare --backend cuda 2>&1 | tail -3 | tee -a "$RES"
$B theory --data $D $START --seeds 4 --steps 400 --compare --backend cuda --precision fp32 2>&1 | tail -1 | tee -a "$RES"
rm -rf "$W"
