#!/usr/bin/env bash
# The long fault-injecting linearizability run (issue 15): consistency/t56, three mounts
# doing reads, head writes, appends and rename-replaces on shared files while a fault
# loop kills -9 and restarts managers, SIGSTOPs mounts and cuts one mount's network (UDP
# proxies dropping its datagrams); every file's history is checked by the WGL checker.
# Prints the seed, the operations and the faults covered (per kind). Needs root,
# /dev/fuse and fusermount3.
#
#   sudo bench/fault-run.sh                 # 10 minutes of faults
#   SECS=180 sudo bench/fault-run.sh        # shorter
#   SEED=16786440175150733222 sudo bench/fault-run.sh   # replay a workload and fault order
#
# Environment knobs:
#   SECS=600          seconds of faults (SHOAL_FAULT_SECS)
#   SEED=n            seed (SHOAL_LIN_SEED; default random, printed)
#   NO_BUILD=1        use the binaries already built
#   SHOAL_IT_KEEP=1   keep the test's temp dir (logs of every process)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export SHOAL_FAULT_SECS=${SECS:-600}
[ -n "${SEED:-}" ] && export SHOAL_LIN_SEED=$SEED
if [ "${NO_BUILD:-0}" != 1 ]; then
    cargo build --release -p tools
    cargo test --release -p integration-tests --test consistency --no-run
fi
exec cargo test --release -p integration-tests --test consistency -- \
    --ignored --exact --nocapture t55_faults_linearizable::t56_faults_linearizable_long
