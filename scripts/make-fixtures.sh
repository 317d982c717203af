#!/bin/sh
# Regenerates the small folders under tests/fixtures/ that tests/test_plot.c
# draws (a run and a sweep of MODEL.md's whitened demo data).  Deterministic
# apart from the timestamps in run.json.
#   sh scripts/make-fixtures.sh [build/bnspike]
set -e
B=${1:-build/bnspike}
D="whitened:n=400,d=20,noise=0.5,wnorm=4,seed=1"
S="--w0-scale 0.5 --w0-align 1 --w0-noise 0.05 --backend cpu --threads 1 --quiet"
rm -rf tests/fixtures/plot-run tests/fixtures/plot-sweep
$B run --data "$D" $S --steps 80 --seeds 2 --out tests/fixtures/plot-run
$B sweep --data "$D" $S --steps 100 --seeds 2 --grid eta-w=log:0.3:3:4 --grid gamma0=0.05,0.2,0.5 \
    --out tests/fixtures/plot-sweep
# The plot of a sweep reads summary.csv and run.json only.
rm -f tests/fixtures/plot-sweep/summary.json tests/fixtures/plot-sweep/events.csv \
      tests/fixtures/plot-sweep/theory-events.csv
ls -l tests/fixtures/plot-run tests/fixtures/plot-sweep
