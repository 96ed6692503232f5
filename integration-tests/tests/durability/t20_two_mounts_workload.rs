//! Two mounts of one cluster, two worker processes on each; every worker also reads, at its
//! checkpoints, the snapshots its peer on the other mount froze and fsynced.

use crate::{long_secs, run_workload};
use anyhow::Result;

const CI_SECS: u64 = 30;

#[test]
fn t20_two_mounts_workload() -> Result<()> {
    run_workload(2, 2, CI_SECS, 50_000, true)
}

#[test]
#[ignore = "soak: several minutes; run through bench/soak-durability.sh"]
fn t21_two_mounts_workload_long() -> Result<()> {
    run_workload(2, 2, long_secs(300), 10_000_000, true)
}
