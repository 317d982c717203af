#!/bin/sh
# Regenerates the README's figures in docs/figures/ (`make figures`): runs and
# sweeps into build/figures-work/, drawn by `bnspike plot` (gnuplot).
# A few seconds on two CPU cores.
#   sh scripts/figures.sh [build/bnspike]
set -e
B=${1:-build/bnspike}
W=${FIGURES_WORK:-build/figures-work}
OUT=docs/figures
mkdir -p "$W" "$OUT"
DEMO="whitened:n=400,d=20,noise=0.5,wnorm=4,seed=1"
START="--w0-scale 0.5 --w0-align 1 --w0-noise 0.05"
EXEC="--backend cpu --threads 1 --quiet"
# Sharpness panels once `bnspike run` can record sharpness (issue 3).
SHARP=""
if $B run --help 2>/dev/null | grep -q -- '--sharpness-every'; then SHARP="--sharpness-every 1"; fi

# 1. MODEL.md's delayed spike: Figure 3 panels of the demo's two seeds.
$B run --data "$DEMO" $START $EXEC $SHARP --steps 200 --seeds 2 --out "$W/demo"
$B plot "$W/demo" --traj 0,1 --out "$OUT/demo-figure3.png" \
    --title "MODEL.md example: whitened square loss (n=400, d=20), eta_w=0.9, eta_gamma=0.05, gamma0=0.1, seeds 0 and 1"

# 2. Where and when spikes happen: eta_w x gamma0 on the same data, 2 seeds per cell.
$B sweep --data "$DEMO" $START $EXEC --steps 1000 --seeds 2 \
    --grid eta-w=log:0.1:3:20 --grid gamma0=lin:0.05:1.2:16 --out "$W/phase-whitened"
$B plot "$W/phase-whitened" --metric onset_step,rho_peak,loss_ratio,kappa_onset --out "$OUT/phase-whitened.png" \
    --title "First spike over eta_w x gamma0, whitened square loss (MODEL.md data), 1000 steps, median of 2 seeds"

# 3. The theory overlay off its home ground: non-whitened Gaussian data.
$B sweep --data gaussian:n=200,d=50,noise=0.5,wnorm=4,seed=1 $START $EXEC --steps 400 --seeds 2 \
    --grid eta-w=log:0.05:3:20 --grid gamma0=lin:0.05:1.2:16 --out "$W/theory-gaussian"
$B plot "$W/theory-gaussian" --metric onset_step,th_onset_step,onset_minus_theory,kappa_onset \
    --out "$OUT/theory-gaussian.png" \
    --title "Simulation vs the three-variable map on NON-whitened data (gaussian n=200, d=50): first spike, median of 2 seeds"

# 4. Precision: the same whitened sweep in fp32, where rho reaches its floor (~1e-7).
$B sweep --data "$DEMO" $START $EXEC --precision fp32 --steps 1000 --seeds 2 \
    --grid eta-w=log:0.1:3:20 --grid gamma0=lin:0.05:1.2:16 --out "$W/phase-fp32"
$B plot "$W/phase-fp32" --metric rho_min,floor_before_onset,onset_minus_theory --out "$OUT/theory-fp32.png" \
    --title "fp32: rho's floor before the onset shifts the spike against the exact map (whitened data, median of 2 seeds)"

# 5. Logistic loss on the paper's active-margin data (every sample a support vector).
$B run --data active-margin:n=64,d=256,margin=1,noise=1,seed=1 --loss logistic $START $EXEC $SHARP \
    --eta-w 0.1 --gamma0 0.1 --steps 400 --seeds 2 --out "$W/logistic"
$B plot "$W/logistic" --traj 0,1 --out "$OUT/logistic-figure3.png" \
    --title "Logistic loss, active-margin data (n=64, d=256), eta_w=0.1, eta_gamma=0.05, gamma0=0.1"
ls -l "$OUT"
