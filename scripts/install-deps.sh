#!/bin/sh
# Installs the Debian packages bnspike needs, only those that are missing.
# Called by the Makefile; safe to run again.  Needs root (or sudo) only when
# something is missing.
#   install-deps.sh            what `make`, `make demo` and `make test` need
#   install-deps.sh all        also the fuzzing (clang + libFuzzer) and MPI
#                              (Open MPI) toolchains: what .ci/run needs
set -e
need=""
if [ "${1:-}" = all ]; then
    command -v clang >/dev/null || need="$need clang"
    ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 ||
        need="$need libclang-rt-14-dev"
    command -v mpicc >/dev/null || need="$need libopenmpi-dev"
    command -v mpirun >/dev/null || need="$need openmpi-bin"
fi
have_hdr() { [ -e "/usr/include/$1" ] || [ -e "/usr/include/x86_64-linux-gnu/$1" ] || [ -e "/usr/include/aarch64-linux-gnu/$1" ]; }
# cblas.h alone is not enough: liblapacke-dev pulls in the reference BLAS,
# whose cblas.h satisfies a header check while -lopenblas still fails to link.
have_lib() { for dir in /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib; do
    [ -e "$dir/$1" ] && return 0; done; return 1; }
have_lib libopenblas.so     || need="$need libopenblas-dev"
have_hdr lapacke.h          || need="$need liblapacke-dev"
have_hdr zlib.h             || need="$need zlib1g-dev"
have_hdr criterion/criterion.h || need="$need libcriterion-dev"
have_hdr Random123/philox.h || need="$need librandom123-dev"
command -v gcc >/dev/null   || need="$need gcc"
command -v make >/dev/null  || need="$need make"
command -v gnuplot >/dev/null || need="$need gnuplot-nox"
/usr/bin/python3 -c 'import numpy' 2>/dev/null || need="$need python3-numpy"
[ -z "$need" ] && exit 0
echo "install-deps: installing:$need"
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then SUDO=sudo; else
        echo "install-deps: missing packages:$need — run as root or install them" >&2; exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $need
