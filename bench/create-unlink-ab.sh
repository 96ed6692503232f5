#!/usr/bin/env bash
# A/B of creates and unlinks between two `shoal` binaries, alternated, one fresh `shoal up`
# per run: each run does ROUNDS_PER_UP rounds of N `open(O_CREAT)+close` in a fresh
# directory and then, once the kernel's dentries have timed out (1.2 s), N unlinks, and
# prints files/s of each. Everything it starts it stops by PID, unmounts and removes on
# exit, also on failure or Ctrl-C.
#
#   sudo bench/create-unlink-ab.sh BIN_A BIN_B [RUNS]
#
# Environment: N (default 2000), ROUNDS_PER_UP (default 3), UP_TIMEOUT (seconds, default 60).
set -euo pipefail
A=${1:?binary A}; B=${2:?binary B}; RUNS=${3:-3}
N=${N:-2000}; ROUNDS_PER_UP=${ROUNDS_PER_UP:-3}; UP_TIMEOUT=${UP_TIMEOUT:-60}
[ "$(id -u)" -eq 0 ] || { echo "run as root (FUSE mounts)" >&2; exit 1; }
WORK=$(mktemp -d /tmp/shoal-create-unlink-ab.XXXXXX)
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
    echo "$label $(python3 - "$MNT" "$N" "$ROUNDS_PER_UP" <<'PY'
import os, sys, time
mnt, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = []
for r in range(rounds):
    d = f"{mnt}/c{r}"
    os.mkdir(d)
    t = time.time()
    for i in range(n):
        os.close(os.open(f"{d}/f{i}", os.O_CREAT | os.O_WRONLY, 0o644))
    c = n / (time.time() - t)
    time.sleep(1.2)
    t = time.time()
    for i in range(n):
        os.unlink(f"{d}/f{i}")
    u = n / (time.time() - t)
    out.append(f"create {c:.0f} unlink {u:.0f}")
print(" | ".join(out))
PY
)"
    stop
    rm -rf "$dir"
}
for r in $(seq 1 "$RUNS"); do
    run "$A" "A($r)"
    run "$B" "B($r)"
done
