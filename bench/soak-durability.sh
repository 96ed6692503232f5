#!/usr/bin/env bash
# Durability soak: the long, #[ignore]d versions of the `durability` integration tests
# (worker processes running a seeded random mix of writes, mmap writes, truncates, renames,
# links, xattrs, fsync and unlink on real mounts, checked byte for byte against their
# models; no client may be declared lost). Needs root, /dev/fuse and fusermount3.
#
#   sudo bench/soak-durability.sh            # 10 minutes per test
#   SECS=1800 sudo bench/soak-durability.sh  # 30 minutes per test
#
# Environment knobs:
#   SECS=600          run time of each soak test (SHOAL_DURABILITY_SECS)
#   SEED=n            base seed (SHOAL_DURABILITY_SEED; default from the clock, logged)
#   TESTS="t11 t21"   which soak tests (t11: one mount x 4 workers; t21: 2 mounts x 2)
#   NO_BUILD=1        use the binaries already built
#   SHOAL_IT_KEEP=1   keep each test's temp dir (logs of every process)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SECS=${SECS:-600}
TESTS=${TESTS:-t11 t21}
export SHOAL_DURABILITY_SECS=$SECS
# The test sets its own watchdog from SECS; this bounds everything else.
export SHOAL_IT_TIMEOUT_SECS=$((SECS + 900))
[ -n "${SEED:-}" ] && export SHOAL_DURABILITY_SEED=$SEED

if [ "${NO_BUILD:-0}" != 1 ]; then
    cargo build --release -p tools
    cargo test --release -p integration-tests --test durability --no-run
fi
status=0
for t in $TESTS; do
    echo "=== durability soak $t: ${SECS}s"
    start=$(date +%s)
    if cargo test --release -p integration-tests --test durability -- \
        --ignored --exact --nocapture "$(case $t in
            t11) echo t10_concurrent_workload::t11_concurrent_workload_long ;;
            t21) echo t20_two_mounts_workload::t21_two_mounts_workload_long ;;
            *) echo "$t" ;;
        esac)"; then
        echo "=== $t passed in $(($(date +%s) - start))s"
    else
        echo "=== $t FAILED after $(($(date +%s) - start))s"
        status=1
    fi
done
exit $status
