#!/usr/bin/env bash
# One check of bnspike's CUDA backend on a machine with an NVIDIA GPU (built
# for an H200/H100, sm_90): environment, build, the CUDA test suite, the GPU
# benchmark, the PyTorch peer (correctness on identical inputs, then timing),
# the rest of the test suite if time is left, and a summary.  Made to finish well
# under 8 minutes on an H200; each phase has its own time limit and a failing
# phase does not stop the others.
#
#   bench/gpu_check.sh [OUTDIR]               OUT (env) wins over OUTDIR; default gpu-check-out
#   bench/gpu_check.sh --fetch-debs DIR       on a Debian 12 machine with network: download the
#                                             .deb files that BN_DEBS=DIR can supply later
# Environment:
#   BN_DEBS    folder of .deb files, unpacked (dpkg-deb -x) into a private prefix when the
#              build's headers or libraries (OpenBLAS, LAPACKE, zlib, Criterion, Random123)
#              are missing; nothing is installed system-wide
#   BN_FORCE_DEBS=1  unpack BN_DEBS even when nothing is missing (to test that path)
#   BUDGET_S   total seconds for all phases (default 450); later phases are skipped, and say
#              so, when the time is spent
#   JOBS       parallel make jobs (default: nproc)      BUILD  build folder (default build-gpu)
#   PYTHON     the Python with torch (default python3)
#
# Everything goes under OUT, at most 8 files (the device tool's limit):
#   summary.txt      phase results and the key numbers (also printed at the end)
#   logs.txt         every phase's full output, in order, streamed as it runs
#   env.txt          nvidia-smi, toolchain, what the build found
#   bench_gpu.csv    the GPU benchmark, machine-readable
#   torch_check.json the peer's comparison with bnspike on identical inputs
#   torch_peer.jsonl the peer's timings
#   profile.txt      gpu_profile: each op of a step alone, the captured graphs, a run
#   bench_table.csv  make bench's table with its GPU rows
# Exit status: 0 only when every phase passed (a skipped phase counts as not passed).
set -u

PKGS_DEBIAN12="libopenblas-dev libopenblas-pthread-dev libopenblas0 libopenblas0-pthread libgfortran5
 libquadmath0 liblapacke liblapacke-dev liblapack3 liblapack-dev libblas3 libblas-dev libtmglib3
 libtmglib-dev zlib1g zlib1g-dev librandom123-dev libcriterion3 libcriterion-dev libgit2-1.5
 libnanomsg5 libmbedtls14 libmbedx509-1 libmbedcrypto7 libhttp-parser2.9 libssh2-1 libgssapi-krb5-2
 libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1 libcom-err2 libssl3 libffi8 libpcre2-8-0"

if [ "${1:-}" = "--fetch-debs" ]; then
    dir=${2:?usage: bench/gpu_check.sh --fetch-debs DIR}
    mkdir -p "$dir" && cd "$dir" || exit 2
    # shellcheck disable=SC2086
    if ! apt-get download $PKGS_DEBIAN12; then
        echo "gpu_check: apt-get download failed (run 'apt-get update' first?)" >&2
        exit 1
    fi
    echo "gpu_check: $(ls ./*.deb | wc -l) packages, $(du -sh . | cut -f1) in $PWD; pass BN_DEBS=$PWD"
    exit 0
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-${1:-gpu-check-out}}
mkdir -p "$OUT" || { echo "gpu_check: cannot create $OUT" >&2; exit 2; }
OUT=$(cd "$OUT" && pwd)
cd "$ROOT" || exit 2
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bnspike-gpu-check.XXXXXX")
BUILD=${BUILD:-build-gpu}
case $BUILD in /*) BUILD_ABS=$BUILD ;; *) BUILD_ABS=$ROOT/$BUILD ;; esac
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
PY=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-450}
T0=$(date +%s)
DEADLINE=$((T0 + BUDGET_S))
SUMMARY=$OUT/summary.txt
LOG=$OUT/logs.txt
ENVF=$OUT/env.txt
: > "$SUMMARY"
: > "$LOG"
: > "$ENVF"
ALL_OK=1
BN_LDPATH=""   # library path for the bnspike binaries when BN_DEBS supplied libraries

note() { echo "$*" | tee -a "$LOG"; }
record() { # NAME STATUS SECONDS DETAIL (summary.txt grows as phases end, in case the run is cut)
    printf '%-12s %-8s %5ss  %s\n' "$1" "$2" "$3" "$4" | tee -a "$SUMMARY" >> "$WORK/phases.txt"
    note "----- $1: $2 ($3 s) $4"
    [ "$2" = PASS ] || ALL_OK=0
}

# phase NAME MAX_SECONDS COMMAND...: runs under timeout(1) within what is left
# of the budget, streams its output into logs.txt and WORK/NAME.log.
phase() {
    local name=$1 max=$2
    shift 2
    local now left lim t rc status
    now=$(date +%s)
    left=$((DEADLINE - now))
    if [ "$left" -lt 20 ]; then
        record "$name" SKIPPED 0 "no time left in the ${BUDGET_S}s budget"
        return 1
    fi
    lim=$max
    [ "$left" -lt "$lim" ] && lim=$left
    note ""
    note "===== $name (limit ${lim}s, at +$((now - T0))s): $*"
    t=$(date +%s)
    timeout -k 10 "$lim" "$@" 2>&1 | tee "$WORK/$name.log" >> "$LOG"
    rc=${PIPESTATUS[0]}
    t=$(($(date +%s) - t))
    case $rc in
    0) status=PASS ;;
    124 | 137) status=TIMEOUT ;;
    *) status=FAIL ;;
    esac
    record "$name" "$status" "$t" "exit $rc"
    return "$rc"
}

# ------------------------------------------------------------------ env
env_info() {
    echo "date: $(date -u)  host: $(uname -a)"
    [ -r /etc/os-release ] && grep -E '^(PRETTY_NAME|VERSION_ID)=' /etc/os-release
    echo "--- nvidia-smi"
    nvidia-smi 2>&1 || echo "nvidia-smi failed or missing"
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw,power.limit --format=csv 2>&1
    echo "--- toolchain"
    NVCC_BIN=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
    echo "nvcc: ${NVCC_BIN:-none}"
    [ -n "${NVCC_BIN:-}" ] && "$NVCC_BIN" --version | tail -2
    gcc --version 2>&1 | head -1
    make --version 2>&1 | head -1
    echo "nproc: $(nproc)  memory: $(free -g 2>/dev/null | awk '/Mem:/{print $2 " GiB"}')"
    echo "--- python"
    "$PY" - <<'EOF' 2>&1
import sys
print("python", sys.version.split()[0], sys.executable)
try:
    import numpy; print("numpy", numpy.__version__)
except Exception as e: print("numpy: missing", e)
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except Exception as e: print("torch: missing", e)
EOF
    echo "--- libraries (ldconfig)"
    ldconfig -p 2>/dev/null | grep -E 'libopenblas|liblapacke|libcriterion|libz\.so|libcublas\.|libcudart\.' | head -20
    echo "--- repository"
    git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null && git -C "$ROOT" status --short 2>/dev/null | head -20
}

# ------------------------------------------------------------------ deps
have_header() { echo "#include <$1>" | gcc -E -x c - -o /dev/null >/dev/null 2>&1; }
have_lib() { echo 'int main(void){return 0;}' | gcc -x c - -o "$WORK/probe.out" "-l$1" >/dev/null 2>&1; }
probe_deps() {
    MISSING=""
    for h in cblas.h lapacke.h zlib.h criterion/criterion.h Random123/philox.h; do
        have_header "$h" || MISSING="$MISSING $h"
    done
    for l in openblas lapacke z criterion; do
        have_lib "$l" || MISSING="$MISSING -l$l"
    done
}

use_debs() {
    local pre=$WORK/prefix f n=0
    mkdir -p "$pre"
    for f in "$BN_DEBS"/*.deb; do
        [ -e "$f" ] || continue
        if command -v dpkg-deb >/dev/null; then
            dpkg-deb -x "$f" "$pre" || note "dpkg-deb -x $f failed"
        else
            (cd "$WORK" && ar x "$f" && tar -xf data.tar.* -C "$pre" && rm -f data.tar.* control.tar.* debian-binary) ||
                note "unpacking $f with ar/tar failed"
        fi
        n=$((n + 1))
    done
    note "unpacked $n .deb files from $BN_DEBS into $pre"
    local M=x86_64-linux-gnu inc lib
    inc="$pre/usr/include/$M/openblas-pthread:$pre/usr/include/$M:$pre/usr/include"
    lib="$pre/usr/lib/$M/openblas-pthread:$pre/usr/lib/$M:$pre/lib/$M:$pre/usr/lib/$M/lapack:$pre/usr/lib/$M/blas"
    # As -isystem (not CPATH's -I), so warnings inside these headers stay quiet as for /usr/include.
    export C_INCLUDE_PATH="$inc${C_INCLUDE_PATH:+:$C_INCLUDE_PATH}"
    export CPLUS_INCLUDE_PATH="$inc${CPLUS_INCLUDE_PATH:+:$CPLUS_INCLUDE_PATH}"
    export LIBRARY_PATH="$lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
    # Only for bnspike's own commands (build, tests, benchmark), never for Python/torch.
    BN_LDPATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

# bn CMD...: a bnspike command, with the unpacked libraries when there are any.
bn() {
    if [ -n "$BN_LDPATH" ]; then LD_LIBRARY_PATH="$BN_LDPATH" "$@"; else "$@"; fi
}

# ------------------------------------------------------------------ run
note "gpu_check: repository $ROOT, output $OUT, work $WORK, budget ${BUDGET_S}s, build folder $BUILD"

t=$(date +%s)
timeout 60 bash -c "$(declare -f env_info); PY='$PY' ROOT='$ROOT' env_info" > "$ENVF" 2>&1
cat "$ENVF" >> "$LOG"
record env "$( [ -s "$ENVF" ] && echo PASS || echo FAIL)" $(($(date +%s) - t)) "see env.txt"

t=$(date +%s)
probe_deps
if [ -n "$MISSING" ] || [ "${BN_FORCE_DEBS:-0}" = 1 ]; then
    note "build dependencies missing:${MISSING:- none (BN_FORCE_DEBS=1)}"
    if [ -n "${BN_DEBS:-}" ] && ls "$BN_DEBS"/*.deb >/dev/null 2>&1; then
        use_debs
        probe_deps
    else
        note "BN_DEBS is not set (or has no .deb files): nothing to unpack. On a Debian 12 machine with" \
            "network, 'bench/gpu_check.sh --fetch-debs DIR' downloads them; carry DIR and set BN_DEBS=DIR."
    fi
fi
{
    echo "--- build dependencies after probing: ${MISSING:-all present}"
    echo "C_INCLUDE_PATH=${C_INCLUDE_PATH:-}"
    echo "LIBRARY_PATH=${LIBRARY_PATH:-}"
    echo "bnspike LD_LIBRARY_PATH=${BN_LDPATH:-}"
} | tee -a "$ENVF" >> "$LOG"
record deps "$([ -z "$MISSING" ] && echo PASS || echo FAIL)" $(($(date +%s) - t)) "${MISSING:-all present}"

# The Makefile's dependency step (scripts/install-deps.sh) needs the network;
# this script probed the dependencies itself above.
mkdir -p "$BUILD" && touch "$BUILD/.deps-ok"
NVCC_BIN=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
export BN_LDPATH
# -k: build every target that can be built, even when one cannot (e.g. no Criterion).
phase build 300 bash -c "$(declare -f bn); bn make -k -j$JOBS BUILD='$BUILD' CUDA=1 ${NVCC_BIN:+NVCC=$NVCC_BIN} \
    '$BUILD/libbnspike.a' '$BUILD/bench_gpu' '$BUILD/bnspike' '$BUILD/bnspike_tests' '$BUILD/gpu_profile' \
    '$BUILD/bench_table'"
for f in libbnspike.a bench_gpu bnspike bnspike_tests gpu_profile bench_table; do
    if [ -e "$BUILD/$f" ]; then note "built $BUILD/$f"; else note "NOT BUILT: $BUILD/$f"; fi
done
BUILD_WARN=$(grep -ciE 'warning' "$WORK/build.log" 2>/dev/null)
if [ "${BUILD_WARN:-0}" -gt 0 ]; then
    note "build warnings ($BUILD_WARN lines):"
    grep -iE 'warning' "$WORK/build.log" | head -30 >> "$LOG"
fi

export BNSPIKE_CLI="$BUILD_ABS/bnspike"
TESTS_CUDA="not run"
if [ -x "$BUILD/bnspike_tests" ]; then
    phase tests-cuda 240 bash -c "$(declare -f bn); bn '$BUILD/bnspike_tests' --filter 'cuda/*' --verbose --jobs 1 --timeout 150"
    TESTS_CUDA=$(grep -a 'Synthesis' "$WORK/tests-cuda.log" 2>/dev/null | tail -1 | sed 's/.*Synthesis: //')
    grep -aE '^\[(FAIL|SKIP|PASS)\]|Assertion|rel err|onset|bitwise|refusal|steps via|backend:' "$WORK/tests-cuda.log" \
        2>/dev/null | grep -v -e 'Test is disabled' -e '^\[RUN' | head -80 > "$WORK/tests-cuda.brief"
else
    record tests-cuda FAIL 0 "no test binary (see the build phase; Criterion missing?)"
fi

# Where a step's time goes, op by op, and what a run adds on the host.
if [ -x "$BUILD/gpu_profile" ]; then
    phase profile 90 bash -c "$(declare -f bn); bn '$BUILD/gpu_profile'"
    cp "$WORK/profile.log" "$OUT/profile.txt" 2>/dev/null
fi

BENCH_LINE="not run"
if [ -x "$BUILD/bench_gpu" ]; then
    phase bench 260 bash -c "$(declare -f bn); bn '$BUILD/bench_gpu' --csv '$OUT/bench_gpu.csv'"
    BENCH_LINE=$(grep -a '^SUMMARY' "$WORK/bench.log" 2>/dev/null | tail -1)
    # The GPU's clocks right after the benchmark (were they throttled?).
    nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv >> "$ENVF" 2>&1
else
    record bench FAIL 0 "no benchmark binary"
fi

PEER_CHECK="not run"
if [ -x "$BUILD/bench_gpu" ]; then
    phase peer-check 150 bash -c "$(declare -f bn); set -e
        bn '$BUILD/bench_gpu' --dump-check '$WORK/peer_in' --steps 30 --seeds 8 --backend cuda
        '$PY' bench/peers/torch_batched.py --device cuda --inputs '$WORK/peer_in' \
            --check-out '$WORK/peer_in/torch.npz' --compare-tol 1e-9 --json '$OUT/torch_check.json'"
    PEER_CHECK=$(grep -a 'check_max_rel_err' "$WORK/peer-check.log" 2>/dev/null | tail -1)
else
    record peer-check FAIL 0 "no benchmark binary to write the inputs"
fi

: > "$OUT/torch_peer.jsonl"
phase peer-bench 150 bash -c "
    '$PY' bench/peers/torch_batched.py --device cuda --n 64 --d 256 --S 16384 --steps 500 --every 10 &&
    '$PY' bench/peers/torch_batched.py --device cuda --n 64 --d 256 --S 1024 --steps 1000 --every 10"
grep -a '^{' "$WORK/peer-bench.log" > "$OUT/torch_peer.jsonl" 2>/dev/null

# make bench's table with its GPU rows (issue 7): every case on both backends,
# the floor through cuBLAS and the PyTorch-CUDA peer, side by side.
if [ -x "$BUILD/bench_table" ]; then
    phase bench-table 200 bash -c "$(declare -f bn); GOMP_SPINCOUNT=10000 bn '$BUILD/bench_table' --quick \
        --no-memory --no-scaling --python '$PY' --csv '$OUT/bench_table.csv'"
fi

# The rest of the suite (the cuda suite ran above, alone, so its allocation
# test sees a quiet device), in parallel.
TESTS_REST="not run"
if [ -x "$BUILD/bnspike_tests" ]; then
    phase tests-rest 400 bash -c "$(declare -f bn); bn '$BUILD/bnspike_tests' --filter '!(cuda)/*' --jobs $JOBS --timeout 150"
    TESTS_REST=$(grep -a 'Synthesis' "$WORK/tests-rest.log" 2>/dev/null | tail -1 | sed 's/.*Synthesis: //')
    grep -aE '^\[(FAIL|CRASH)|Assertion' "$WORK/tests-rest.log" 2>/dev/null | head -40 > "$WORK/tests-rest.brief"
fi

# ------------------------------------------------------------------ summary
torch_rate() { # S -> seed-steps/s from torch_peer.jsonl
    "$PY" -c "
import json,sys
for l in open('$OUT/torch_peer.jsonl'):
    try: j=json.loads(l)
    except Exception: continue
    if j.get('S')==$1 and 'seed_steps_per_s' in j: print('%.4g' % j['seed_steps_per_s'])
" 2>/dev/null | tail -1
}
bench_rate() { # CASE -> seed-steps/s from bench_gpu.csv
    awk -F, -v c="$1" '$2==c && $13==1 {print $12}' "$OUT/bench_gpu.csv" 2>/dev/null | tail -1
}
{
    echo ""
    echo "=============== bnspike GPU check: $(date -u), $(($(date +%s) - T0)) s"
    echo "device: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
    echo "tests (cuda suite): $TESTS_CUDA"
    [ -s "$WORK/tests-cuda.brief" ] && sed 's/^/    /' "$WORK/tests-cuda.brief" | grep -E 'FAIL|SKIP|Assertion|onset|bitwise|refusal|worst|steps via' | head -40
    echo "tests (rest of the suite): $TESTS_REST"
    [ -s "$WORK/tests-rest.brief" ] && sed 's/^/    /' "$WORK/tests-rest.brief"
    echo "build warnings: ${BUILD_WARN:-?} lines (in logs.txt)"
    echo "benchmark: $BENCH_LINE"
    b16=$(bench_rate paper_S16384_gpu)
    b1k=$(bench_rate paper_S1024_gpu)
    f16=$(bench_rate paper_S16384_gpu_fused)
    t16=$(torch_rate 16384)
    t1k=$(torch_rate 1024)
    echo "paper size fp64 seed-steps/s: bnspike S=16384 ${b16:-?} (fused path ${f16:-?}), S=1024 ${b1k:-?}; torch S=16384 ${t16:-?}, S=1024 ${t1k:-?}"
    if [ -n "$b16" ] && [ -n "$t16" ]; then
        echo "bnspike / torch at S=16384: $(awk -v a="$b16" -v b="$t16" 'BEGIN{printf "%.2f", a/b}')x"
    fi
    if [ -n "$b1k" ] && [ -n "$t1k" ]; then
        echo "bnspike / torch at S=1024: $(awk -v a="$b1k" -v b="$t1k" 'BEGIN{printf "%.2f", a/b}')x"
    fi
    echo "torch peer vs bnspike on identical inputs: ${PEER_CHECK:-not run}"
    echo ""
    echo "phases:"
    cat "$WORK/phases.txt"
    echo "overall: $([ $ALL_OK = 1 ] && echo 'ALL PASSED' || echo 'NOT ALL PASSED')"
} > "$WORK/final.txt"
cat "$WORK/final.txt" >> "$SUMMARY"
cat "$WORK/final.txt" >> "$LOG"
cat "$WORK/final.txt"
rm -rf "$WORK"
[ $ALL_OK = 1 ]
