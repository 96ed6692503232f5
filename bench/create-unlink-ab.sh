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
N=${N:-2000}; ROUNDS_PER_UP=${ROUNDS_PER_UP:-3}
WORK_PREFIX=shoal-create-unlink-ab
. "$(dirname "${BASH_SOURCE[0]}")/ab-lib.sh"
run() {
    local bin=$1 label=$2
    up "$bin" "$label"
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
    down
}
for r in $(seq 1 "$RUNS"); do
    run "$A" "A($r)"
    run "$B" "B($r)"
done
