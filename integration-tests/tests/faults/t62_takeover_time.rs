//! Issue [failover], measured: the time an automatic takeover takes as a function of the
//! size of the group taken over. Three managers with `auto_takeover`; the mount creates
//! `SHOAL_TAKEOVER_INODES` files (default 10 000) in directories of manager-3, syncs, and
//! manager-3 is killed (SIGKILL). Logged: the time from the kill to the first create +
//! fsync in one of its directories. Checked: every file is still listed and a sample stats.
//! A measurement, not a CI test: `cargo test --release -p integration-tests --test faults
//! t62 -- --ignored --nocapture`.

use crate::sync_dir;
use crate::t60_manager_takeover::{dir_of, dirs_by_manager, first_op_in};
use crate::t61_automatic_takeover::turn_on_auto_takeover;
use anyhow::{ensure, Result};
use integration_tests::TestCluster;
use std::fs;
use std::time::{Duration, Instant};
use tracing::info;

/// Files per subdirectory (directories stay small enough to list quickly).
const PER_DIR: usize = 1000;

#[test]
#[ignore = "measurement: SHOAL_TAKEOVER_INODES files in the group taken over (default 10000)"]
fn t62_takeover_time_by_group_size() -> Result<()> {
    let inodes: usize = std::env::var("SHOAL_TAKEOVER_INODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let c = TestCluster::init(6, 3, "4+2")?;
    turn_on_auto_takeover(c.dir())?;
    c.start_all()?;
    c.env().set_deadline(Duration::from_secs(3600));
    let m = c.mount()?;
    let dirs = dirs_by_manager(&c, m.path())?;
    let victim = dir_of(&dirs, "manager-3");
    let filled = Instant::now();
    let subdirs = inodes.div_ceil(PER_DIR);
    for s in 0..subdirs {
        let sub = m.join(format!("{victim}/s{s}"));
        fs::create_dir(&sub)?;
        for f in 0..PER_DIR.min(inodes - s * PER_DIR) {
            fs::File::create(sub.join(format!("f{f}")))?;
        }
    }
    sync_dir(&m.join(&victim))?;
    info!(inodes, took = ?filled.elapsed(), "files made in manager-3's directory");

    c.kill9("manager-3")?;
    let fault = Instant::now();
    let took = first_op_in(m.path(), &victim, fault)?;
    info!(
        inodes,
        ?took,
        "automatic takeover of a killed manager: fault to first operation"
    );

    let mut listed = 0;
    for s in 0..subdirs {
        listed += fs::read_dir(m.join(format!("{victim}/s{s}")))?.count();
    }
    ensure!(
        listed == inodes,
        "{listed} of {inodes} files listed after the takeover"
    );
    for s in (0..subdirs).step_by(7) {
        fs::metadata(m.join(format!("{victim}/s{s}/f0")))?;
    }
    m.unmount(Duration::from_secs(60))?;
    c.done();
    Ok(())
}
