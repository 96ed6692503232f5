#!/usr/bin/env bash
# Cross-directory rename rate on a `shoal up` mount ([durability] item 8): N files moved
# back and forth between two directories (which land on different managers about half the
# time), next to same-directory renames, on one mount; then between two mounts of one
# cluster (`--clients 2`, each mount moving its own files). Prints renames/s per case.
# Everything it starts it stops by PID, unmounts and removes on exit.
#
#   sudo bench/rename-rate.sh            # N=300 SHOAL_BIN=target/release/shoal
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHOAL_BIN=${SHOAL_BIN:-$ROOT/target/release/shoal}
N=${N:-300}
WORK=$(mktemp -d /tmp/shoal-rename-XXXXXX)
PID=
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -INT "$PID"
        for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$PID" 2>/dev/null || true
    fi
    for m in "$WORK/mnt" "$WORK/mnt-2"; do
        mountpoint -q "$m" 2>/dev/null && fusermount3 -u "$m" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/mnt"
"$SHOAL_BIN" up "$WORK/mnt" --state "$WORK/state" --clients 2 >"$WORK/up.log" 2>&1 &
PID=$!
for _ in $(seq 1 300); do
    mountpoint -q "$WORK/mnt" && mountpoint -q "$WORK/mnt-2" && break
    sleep 0.2
done
mountpoint -q "$WORK/mnt-2" || { tail -20 "$WORK/up.log"; exit 1; }

rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN {printf "%.0f", n / (b - a)}'; }
# moves MNT TAG FROM TO: N files created in FROM, moved to TO under new names, timed
# (FROM = TO: renames within one directory).
moves() {
    local m=$1 tag=$2 from=$3 to=$4 i t0 t1
    mkdir -p "$m/$from" "$m/$to"
    for i in $(seq 1 "$N"); do : > "$m/$from/$tag$i"; done
    t0=$(date +%s.%N)
    for i in $(seq 1 "$N"); do mv "$m/$from/$tag$i" "$m/$to/${tag}moved$i"; done
    t1=$(date +%s.%N)
    rate "$N" "$t0" "$t1"
}
same=$(moves "$WORK/mnt" s same same)
cross=""
for i in 1 2 3 4; do
    cross="$cross $(moves "$WORK/mnt" c "x$i" "y$i")"
done
# Two mounts at once, each moving its own files between two directories.
moves "$WORK/mnt" u v1 v2 >"$WORK/two-a" &
PA=$!
two_b=$(moves "$WORK/mnt-2" w w1 w2)
wait $PA
two_a=$(cat "$WORK/two-a")
echo "renames/s, N=$N each ($SHOAL_BIN):"
echo "  same directory, one mount:                 $same"
echo "  between 4 directory pairs, one mount:     $cross"
echo "  between directories, two mounts at once:   $two_a + $two_b"
