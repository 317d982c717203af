#!/usr/bin/env bash
# Builds the library and the test suite with the CUDA backend compiled by g++
# against the host emulator in this folder (no GPU, no CUDA toolkit needed),
# then runs the "cuda" test suite on it.  A check of the CUDA backend's own
# logic (kernel indexing, reductions, barriers, graph capture and replay,
# record-slot and ring handling, launch limits) on any machine; it says
# nothing about speed or about the real cuBLAS/driver.
#
#   src/cuda/emu/run_emu_tests.sh [criterion options]     (from the repository root)
#   BUILD=dir  build folder (default build-emu)
# A later --filter replaces the default one, e.g. only the sharpness ops and
# runs (issue 3; cuda_hvp.cu): --filter 'cuda/sharpness*' --verbose
# The whole "cuda" suite takes a few minutes here (every CUDA thread is a fiber).
set -eu
cd "$(dirname "$0")/../../.."
BUILD=${BUILD:-build-emu}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
EMU_FLAGS="-x c++ -std=c++17 -O2 -g -Isrc/cuda/emu -Iinclude -Isrc -Wall -Wextra -Wno-unknown-pragmas"
make -j"$JOBS" BUILD="$BUILD" CUDA=1 NVCC=g++ NVFLAGS="$EMU_FLAGS" \
    LDLIBS="-llapacke -lopenblas -lz -lm -lstdc++" "$BUILD/bnspike_tests"
BNSPIKE_CLI="$PWD/$BUILD/bnspike" "$BUILD/bnspike_tests" --filter 'cuda/*' "$@"
