#!/usr/bin/env bash
# A/B of sequential writes between two `shoal` binaries, alternated, one fresh `shoal up`
# per run: each run writes FILES files of MIB MiB with `dd conv=fsync` (the write and its
# fsync), and prints the MB/s dd reports. Everything it starts it stops by PID, unmounts
# and removes on exit, also on failure or Ctrl-C.
#
#   sudo bench/seqwrite-ab.sh BIN_A BIN_B [ROUNDS]
#
# Environment: MIB (default 256), FILES (default 3), UP_TIMEOUT (seconds, default 60).
set -euo pipefail
A=${1:?binary A}; B=${2:?binary B}; ROUNDS=${3:-2}
MIB=${MIB:-256}; FILES=${FILES:-3}; UP_TIMEOUT=${UP_TIMEOUT:-60}
[ "$(id -u)" -eq 0 ] || { echo "run as root (FUSE mounts)" >&2; exit 1; }
WORK=$(mktemp -d /tmp/shoal-seqwrite-ab.XXXXXX)
PID=
MNT=
is_mounted() { awk -v m="$1" '$2==m {f=1} END {exit !f}' /proc/self/mounts; }
stop() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -INT "$PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$PID" 2>/dev/null || true
    fi
    PID=
    if [ -n "$MNT" ] && is_mounted "$MNT"; then umount -l "$MNT" || true; fi
}
cleanup() { stop; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM
run() {
    local bin=$1 label=$2 dir
    dir=$(mktemp -d "$WORK/run.XXXX"); MNT=$dir/mnt; mkdir -p "$MNT"
    "$bin" up "$MNT" --state "$dir/state" > "$dir/up.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 $((UP_TIMEOUT * 5))); do is_mounted "$MNT" && break; sleep 0.2; done
    is_mounted "$MNT" || { echo "$label: not mounted within ${UP_TIMEOUT}s" >&2; tail -20 "$dir/up.log" >&2; exit 1; }
    local out=()
    for f in $(seq 1 "$FILES"); do
        out+=("$(dd if=/dev/zero of="$MNT/f$f" bs=1M count="$MIB" conv=fsync 2>&1 | awk '/copied/ {print $(NF-1) $NF}')")
    done
    echo "$label ${out[*]}"
    stop
    rm -rf "$dir"
}
for r in $(seq 1 "$ROUNDS"); do
    run "$A" "A($r)"
    run "$B" "B($r)"
done
