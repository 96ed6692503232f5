//! Issue [lifecycle] test (a): rounds of write / fsync / delete. Storage use (the bytes of
//! every fragment file on every storage server) must stay within 2x of the live data plus a
//! fixed reserve: after each delete the deleted data's segments are reclaimed, so the disks
//! do not grow round after round.

use crate::{dir_bytes, write_pattern};
use anyhow::{ensure, Result};
use integration_tests::{pattern, TestCluster};
use std::fs;
use std::os::unix::fs::FileExt;
use std::time::Duration;
use tracing::info;

/// Data per round (scaled down from the 256 MiB for CI time; the rounds are kept).
const ROUND: usize = 64 << 20;
const ROUNDS: u64 = 10;
/// Fixed reserve: the managers' metadata logs and checkpoints.
const RESERVE: u64 = 32 << 20;
/// Bound for the reclaimer to give a deleted file's space back.
const RECLAIM_BOUND: Duration = Duration::from_secs(60);

#[test]
fn t60_write_delete_rounds_give_space_back() -> Result<()> {
    let c = TestCluster::init(6, 2, "4+2")?;
    c.start_all()?;
    c.wait_ready()?;
    let m = c.mount()?;
    let used = || -> Result<u64> {
        let mut t = 0;
        for s in c.storage_names() {
            t += dir_bytes(&c.fragment_dir(&s))?;
        }
        Ok(t)
    };
    for r in 0..ROUNDS {
        let p = m.join(format!("round{r}"));
        write_pattern(&p, r, ROUND)?;
        let after_write = used()?;
        info!(round = r, after_write, "written and fsynced");
        ensure!(
            after_write <= 2 * ROUND as u64 + RESERVE,
            "round {r}: {after_write} bytes of fragments with {ROUND} live bytes (limit 2x + {RESERVE})"
        );
        // The data reads back before it goes (a spot check at both ends).
        let f = fs::File::open(&p)?;
        let mut buf = vec![0u8; 4096];
        for off in [0u64, ROUND as u64 - 4096] {
            f.read_exact_at(&mut buf, off)?;
            pattern::check(r, off, &buf).map_err(|e| anyhow::anyhow!("round {r}: {e}"))?;
        }
        drop(f);
        fs::remove_file(&p)?;
        fs::File::open(m.path())?.sync_all()?;
        c.wait_until(
            RECLAIM_BOUND,
            "the deleted round's segments are reclaimed",
            || used().is_ok_and(|u| u <= RESERVE),
        )?;
        info!(round = r, after_delete = used()?, "reclaimed");
    }
    m.unmount(Duration::from_secs(30))?;
    c.done();
    Ok(())
}
