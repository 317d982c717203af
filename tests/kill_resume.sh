#!/usr/bin/env bash
# kill -9 a run (or sweep) at three random points, resuming each time, then
# compare its final outputs with an uninterrupted run byte for byte.
#   tests/kill_resume.sh CLI run|sweep WORKDIR ARGS...
# Exit 0 when identical; prints what differs otherwise.
set -u
cli=$1 mode=$2 work=$3
shift 3
ref=$work/ref out=$work/killed
rm -rf "$ref" "$out"
"$cli" "$mode" "$@" --quiet --out "$ref" >/dev/null || { echo "reference run failed"; exit 1; }
kills=0 legs=0
while :; do
    legs=$((legs + 1))
    [ $legs -gt 40 ] && { echo "too many legs"; exit 1; }
    res=""
    [ -f "$out/checkpoint.bnck" ] && res="--resume $out"
    if [ $kills -ge 3 ]; then
        "$cli" "$mode" "$@" --quiet --out "$out" --checkpoint-every 40 $res >/dev/null || { echo "final leg failed"; exit 1; }
        break
    fi
    "$cli" "$mode" "$@" --quiet --out "$out" --checkpoint-every 40 $res >/dev/null 2>"$work/leg.err" &
    pid=$!
    # A random point: 50..800 ms into the leg.
    sleep "0.$(printf '%03d' $((50 + RANDOM % 750)))"
    if kill -9 "$pid" 2>/dev/null; then kills=$((kills + 1)); fi
    wait "$pid" 2>/dev/null
    rc=$?
    if [ $rc -eq 0 ] && [ ! -f "$out/checkpoint.bnck" ]; then
        # Finished before the kill: start over so each kill lands in a run.
        rm -rf "$out"
    fi
    if [ $rc -ne 0 ] && [ $rc -ne 137 ]; then echo "leg exited $rc:"; cat "$work/leg.err"; exit 1; fi
done
# No temporary files may be left behind by the kills.
status=0
if ls -A "$out" | grep -q '\.tmp\.'; then echo "temporary files left: $(ls -A "$out")"; status=1; fi
for f in "$ref"/*; do
    name=$(basename "$f")
    case $name in run.json) continue ;; esac
    cmp -s "$f" "$out/$name" || { echo "$name differs after $kills kills"; status=1; }
done
[ $status -eq 0 ] && echo "identical after $kills kills and $legs legs"
exit $status
