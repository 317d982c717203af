#!/bin/sh
# One libFuzzer target (mk/fuzz.mk calls this; see docs/fuzzing.md):
#   fuzz/run.sh TARGET BUILD_DIR SECONDS|replay [libFuzzer flags...]
# Fuzzes BUILD_DIR/fuzz_TARGET for SECONDS from a scratch copy of
# tests/fuzz_corpus/TARGET/ (seeds and regress/), so new corpus entries stay
# out of the repository; "replay" runs every corpus file once instead.  A
# crash, leak, timeout or out-of-memory input is copied to
# tests/fuzz_corpus/TARGET/regress/ and the exit status is non-zero.
set -u
t=$1 build=$2 secs=$3
shift 3
bin=$build/fuzz_$t
seeds=tests/fuzz_corpus/$t
work=$build/work/$t
[ -x "$bin" ] || { echo "fuzz/run.sh: $bin is not built" >&2; exit 2; }
[ -d "$seeds" ] || { echo "fuzz/run.sh: no seed corpus $seeds" >&2; exit 2; }
rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts"
# Flat copy: regress/ inputs run first thing, as part of the corpus.
find "$seeds" -type f -exec cp {} "$work/corpus/" \;
nseeds=$(ls "$work/corpus" | wc -l)

root=$(pwd)
case $bin in /*) ;; *) bin=$root/$bin ;; esac
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
log=$work/fuzz.log
# Run inside the scratch folder (with absolute paths), so that anything a
# target might write by mistake lands there and not in the repository.
if [ "$secs" = replay ]; then
    echo "== fuzz_$t: replaying $nseeds corpus files"
    (cd "$work" && "$bin" "$@" -artifact_prefix=artifacts/ \
        $(find "$root/$seeds" -type f | sort)) >"$log" 2>&1
    rc=$?
else
    echo "== fuzz_$t: ${secs}s from $nseeds corpus files ($*)"
    (cd "$work" && "$bin" "$@" -max_total_time="$secs" -print_final_stats=1 \
        -artifact_prefix=artifacts/ corpus) >"$log" 2>&1
    rc=$?
    grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)' "$log" | sed 's/^/   /'
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb|new_units_added)' "$log" |
        sed 's/^/   /' | tr '\n' ' '
    echo
fi
found=0
for a in "$work"/artifacts/crash-* "$work"/artifacts/leak-* "$work"/artifacts/timeout-* "$work"/artifacts/oom-*; do
    [ -f "$a" ] || continue
    mkdir -p "$seeds/regress"
    cp "$a" "$seeds/regress/"
    echo "   kept $seeds/regress/$(basename "$a")"
    # The input itself, so a CI log is enough to recreate the file.
    echo "   base64: $(base64 -w0 <"$a")"
    found=1
done
if [ $rc != 0 ] || [ $found != 0 ]; then
    # The sanitizer's or libFuzzer's report, from its first line.
    at=$(grep -n -m1 -E '==[0-9]+==ERROR|runtime error:|ERROR: libFuzzer|^==[0-9]+== ERROR' "$log" | cut -d: -f1)
    echo "== fuzz_$t: FAILED (exit $rc); from $log:"
    if [ -n "$at" ]; then sed -n "$at,$((at + 45))p" "$log"; else grep -v -E '^#[0-9]+[[:space:]]' "$log" | tail -n 45; fi
    exit 1
fi
echo "== fuzz_$t: ok"
