//! One mount, four worker processes on their own directories (the reported setup of issue
//! [durability] item 6): a short CI run and a long `#[ignore]`d soak.

use crate::{long_secs, run_workload};
use anyhow::Result;

/// Run time of the CI version (cluster start, final checks and remount come on top).
const CI_SECS: u64 = 40;

#[test]
fn t10_concurrent_workload() -> Result<()> {
    run_workload(1, 4, CI_SECS, 50_000, false)
}

#[test]
#[ignore = "soak: several minutes; run through bench/soak-durability.sh"]
fn t11_concurrent_workload_long() -> Result<()> {
    run_workload(1, 4, long_secs(300), 10_000_000, false)
}
