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
MIB=${MIB:-256}; FILES=${FILES:-3}
WORK_PREFIX=shoal-seqwrite-ab
. "$(dirname "${BASH_SOURCE[0]}")/ab-lib.sh"
run() {
    local bin=$1 label=$2
    up "$bin" "$label"
    local out=()
    for f in $(seq 1 "$FILES"); do
        out+=("$(dd if=/dev/zero of="$MNT/f$f" bs=1M count="$MIB" conv=fsync 2>&1 | awk '/copied/ {print $(NF-1) $NF}')")
    done
    echo "$label ${out[*]}"
    down
}
for r in $(seq 1 "$ROUNDS"); do
    run "$A" "A($r)"
    run "$B" "B($r)"
done
