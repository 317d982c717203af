#!/bin/sh
# `make test-mpi`: mpirun -np 2 and -np 3 of the MPI build of bnspike sweep
# give exactly the single-process sweep's outputs (summary.csv, events.csv,
# theory-events.csv, summary.json and trajectories.npz compared byte for
# byte: row for row, and every array bit for bit), run.json says merged_from,
# no shard folder is left behind; a rank that fails makes every rank fail
# with nothing merged.  Exits non-zero on any mismatch.
#
#   sh tests/mpi_check.sh MPI_CLI [CLI]     (CLI: the single-process
#                                           reference, default MPI_CLI itself)
#   MPIRUN=...                              the launcher (mpirun)
set -u
MPI_CLI=${1:?usage: mpi_check.sh MPI_CLI [CLI]}
CLI=${2:-$MPI_CLI}
MPIRUN=${MPIRUN:-mpirun}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
fail() {
    echo "mpi_check: FAIL: $*" >&2
    fails=$((fails + 1))
}
flags="--oversubscribe"
[ "$(id -u)" = 0 ] && flags="$flags --allow-run-as-root"
# One thread per rank (the ranks share this machine's cores).
export OMP_NUM_THREADS=1
# The same OpenBLAS kernels everywhere: the single-process CLI restarts on the
# kernels for this CPU where OpenBLAS falls back to old ones
# (bn_blas_kernels_suggested), the MPI build cannot (its launcher owns the
# process), and the set-up's SVDs round differently on other kernels.
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
    core=$(OPENBLAS_VERBOSE=2 "$CLI" --help 2>&1 | sed -n 's/^Core: //p' | tail -n 1)
    [ -n "$core" ] && export OPENBLAS_CORETYPE="$core"
fi

# 7 × 2 settings × 2 seeds = 28 trajectories: 14/14 on 2 ranks, 9/9/10 on 3;
# adaptive records and sharpness (rows of different lengths per shard).
ARGS="--data whitened:n=60,d=8,noise=0.5,wnorm=4,seed=1 --w0-scale 0.5 --w0-align 1 --w0-noise 0.05
      --steps 60 --seeds 2 --grid eta-w=0.5,1,2,3,4,5,6 --grid gamma0=0.1,0.3
      --save-trajectories --every 10 --sharpness-every 5 --threads 1 --quiet"

# shellcheck disable=SC2086
"$CLI" sweep $ARGS --out "$T/single" || fail "the single-process sweep failed"

for np in 2 3; do
    out="$T/mpi$np"
    before=$fails
    # shellcheck disable=SC2086
    if ! $MPIRUN -np $np $flags "$MPI_CLI" sweep $ARGS --out "$out" >"$T/log$np" 2>&1; then
        cat "$T/log$np" >&2
        fail "mpirun -np $np failed"
        continue
    fi
    for f in summary.csv events.csv theory-events.csv summary.json trajectories.npz; do
        if ! cmp -s "$T/single/$f" "$out/$f"; then
            fail "mpirun -np $np: $f differs from the single-process sweep's"
            if [ "$f" = trajectories.npz ] && /usr/bin/python3 -c 'import numpy' 2>/dev/null; then
                /usr/bin/python3 - "$T/single/$f" "$out/$f" <<'EOF' >&2
import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
for k in sorted(set(a.files) | set(b.files)):
    if k not in a.files or k not in b.files:
        print("  only in one:", k)
    elif a[k].dtype != b[k].dtype or not np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == 'f'):
        print("  differs:", k, a[k].shape, b[k].shape)
EOF
            fi
        fi
    done
    grep -q "\"merged_from\"" "$out/run.json" 2>/dev/null || fail "mpirun -np $np: run.json has no merged_from"
    grep -q "\"shards\": $np" "$out/run.json" 2>/dev/null || fail "mpirun -np $np: run.json does not say $np shards"
    [ -e "$out/.mpi-shards" ] && fail "mpirun -np $np: the shard folders were left in $out/.mpi-shards"
    [ "$fails" = "$before" ] && echo "mpi_check: mpirun -np $np: outputs equal the single-process sweep's"
done

before=$fails
# A rank that fails (its shard folder cannot be created) fails them all:
# non-zero exit, nothing merged, no shard folder of the other rank left.
out="$T/bad"
mkdir -p "$out/.mpi-shards" && : >"$out/.mpi-shards/1-of-2"
# shellcheck disable=SC2086
if $MPIRUN -np 2 $flags "$MPI_CLI" sweep $ARGS --out "$out" >"$T/logbad" 2>&1; then
    fail "mpirun -np 2 with a failing rank exited 0"
fi
grep -q "1 of 2 MPI ranks failed" "$T/logbad" || { cat "$T/logbad" >&2; fail "no message naming the failed rank"; }
[ -e "$out/summary.csv" ] && fail "a failed MPI sweep wrote summary.csv"
[ -e "$out/.mpi-shards/0-of-2" ] && fail "a failed MPI sweep left rank 0's shard folder"
[ "$fails" = "$before" ] && echo "mpi_check: a failing rank fails the whole MPI sweep cleanly"

if [ "$fails" != 0 ]; then
    echo "mpi_check: $fails check(s) failed" >&2
    exit 1
fi
echo "mpi_check: all MPI checks passed"
