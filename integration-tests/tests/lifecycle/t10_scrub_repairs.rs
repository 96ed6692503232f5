//! Test (c) of issue 9: bytes flipped in every fragment file of one storage server are
//! found by `shoal scrub --now` and repaired (counted); a second scrub finds nothing bad;
//! and with two *other* servers killed, every file still reads back byte-exact — which needs
//! the repaired server's fragments (4+2 over 6 servers: with two down, all four others are
//! needed), so the reads need no reconstruction from its stripe-mates' parity.

use crate::{check_pattern, scrub_totals, write_pattern};
use anyhow::{ensure, Context, Result};
use integration_tests::faults::{corrupt_middle, fragment_files};
use integration_tests::TestCluster;
use std::time::Duration;
use tracing::info;

const BIG: usize = 24 << 20;
const SCRUB_TIMEOUT: Duration = Duration::from_secs(120);

fn sizes() -> Vec<usize> {
    (0..8).map(|i| 1 + i * 53_001).collect()
}

fn check_all(m: &std::path::Path) -> Result<()> {
    check_pattern(&m.join("big"), 1, BIG)?;
    for (i, len) in sizes().into_iter().enumerate() {
        check_pattern(&m.join(format!("small-{i}")), 100 + i as u64, len)?;
    }
    Ok(())
}

fn scrub(c: &TestCluster) -> Result<(u64, u64, u64, u64)> {
    let out = c.env().run(
        [
            "scrub".as_ref(),
            "--cluster".as_ref(),
            c.dir().as_os_str(),
            "--now".as_ref(),
        ],
        SCRUB_TIMEOUT,
    )?;
    info!("shoal scrub --now:\n{}", out.stdout);
    scrub_totals(&out.stdout).with_context(|| format!("no totals in scrub output: {out}"))
}

#[test]
fn t10_scrub_finds_and_repairs_flipped_bytes() -> Result<()> {
    let c = TestCluster::init(6, 2, "4+2")?;
    c.start_all()?;
    let m = c.mount()?;
    info!("--- write a 24 MiB file and 8 small files, fsync, unmount");
    write_pattern(&m.join("big"), 1, BIG)?;
    for (i, len) in sizes().into_iter().enumerate() {
        write_pattern(&m.join(format!("small-{i}")), 100 + i as u64, len)?;
    }
    m.unmount(Duration::from_secs(60))?;

    info!("--- flip 16 bytes in the middle of every fragment file of storage-1");
    let files = fragment_files(&c.fragment_dir("storage-1"))?;
    ensure!(!files.is_empty(), "storage-1 holds no fragment files");
    for f in &files {
        corrupt_middle(f, 16)?;
    }
    info!(files = files.len(), "corrupted");

    info!("--- scrub finds and repairs them");
    let (checked, bad, repaired, unrepaired) = scrub(&c)?;
    ensure!(
        checked >= files.len() as u64,
        "checked {checked} < {} files",
        files.len()
    );
    // Managers may delete old metadata segments meanwhile, so allow fewer than all files.
    ensure!(
        bad > 0 && bad <= files.len() as u64,
        "bad {bad} of {} corrupted files",
        files.len()
    );
    ensure!(
        repaired == bad && unrepaired == 0,
        "repaired {repaired} of {bad}, unrepaired {unrepaired}"
    );
    let status = c.status()?;
    ensure!(
        status.stdout.contains("last scrub"),
        "status shows no scrub results: {status}"
    );

    info!("--- a second scrub finds nothing bad");
    let (_, bad2, _, unrepaired2) = scrub(&c)?;
    ensure!(
        bad2 == 0 && unrepaired2 == 0,
        "second scrub: bad {bad2}, unrepaired {unrepaired2}"
    );

    info!("--- kill two other storage servers: reads need storage-1's repaired fragments");
    c.kill9("storage-2")?;
    c.kill9("storage-3")?;
    let m = c.mount()?;
    check_all(m.path())?;
    m.unmount(Duration::from_secs(60))?;
    c.done();
    Ok(())
}
