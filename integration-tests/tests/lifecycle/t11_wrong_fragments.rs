//! End-to-end checksums (issue [lifecycle] item 4): data fragments replaced by well-formed
//! fragments holding other bytes (another fragment of the same stripe, written through the
//! storage server's own format, so every storage checksum passes) are caught by the
//! reader against the writer's checksums and decoded around from parity: with one and with
//! two such fragments per 4+2 stripe every byte reads back right, counted in the mount's
//! `shoal_checksum_mismatches_total`; with three (more than m) the read fails with EIO
//! and never returns wrong bytes.

use crate::{check_pattern, write_pattern};
use anyhow::{bail, ensure, Result};
use integration_tests::faults::misplace_fragments;
use integration_tests::scrape::{free_tcp_addr, get, sum};
use integration_tests::TestCluster;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::info;

const BIG: usize = 6 << 20;

fn small_sizes() -> Vec<usize> {
    (0..8).map(|i| 1 + i * 23_003).collect()
}

fn check_all(m: &Path) -> Result<()> {
    check_pattern(&m.join("big"), 7, BIG)?;
    for (i, len) in small_sizes().into_iter().enumerate() {
        check_pattern(&m.join(format!("small{i}")), 200 + i as u64, len)?;
    }
    Ok(())
}

/// Stops every node, replaces fragment `victim` of every client segment with fragment
/// `source`, starts them again. The managers stop first: a manager's cleaner still running
/// while storage servers go down would write stripes missing a fragment (durable with 5
/// of 6), which the wrong fragments planted here would then push below k.
fn misplace(c: &TestCluster, victim: u8, source: u8) -> Result<()> {
    let mut order = c.manager_names();
    order.extend(c.storage_names());
    for n in order {
        c.stop(&n)?;
    }
    let dirs: Vec<PathBuf> = c
        .storage_names()
        .iter()
        .map(|n| c.fragment_dir(n))
        .collect();
    let n = misplace_fragments(&dirs, victim, source)?;
    info!(
        victim,
        source,
        segments = n,
        "fragments replaced by well-formed wrong ones"
    );
    ensure!(
        n > 0,
        "no client segment had a fragment {victim} to replace"
    );
    c.start_all()
}

fn mismatches(addr: std::net::SocketAddr, outcome: &str) -> Result<f64> {
    let t = get(addr, "/metrics", Duration::from_secs(10))?;
    Ok(sum(
        &t,
        "shoal_checksum_mismatches_total",
        &[("outcome", outcome)],
    ))
}

#[test]
fn t11_wrong_but_well_formed_fragments_are_caught() -> Result<()> {
    let c = TestCluster::init(6, 1, "4+2")?;
    c.start_all()?;
    {
        info!("--- write a 6 MiB file and 8 small files, fsync each");
        let m = c.mount()?;
        write_pattern(&m.join("big"), 7, BIG)?;
        for (i, len) in small_sizes().into_iter().enumerate() {
            write_pattern(&m.join(format!("small{i}")), 200 + i as u64, len)?;
        }
        m.unmount(Duration::from_secs(60))?;
    }
    for (victim, source, wrong) in [(1u8, 2u8, 1), (3, 0, 2)] {
        info!("--- {wrong} wrong data fragment(s) per stripe: reads decode around them");
        misplace(&c, victim, source)?;
        let addr = free_tcp_addr()?;
        let m = c.mount_with(&["--http", &addr.to_string()])?;
        check_all(m.path())?;
        let repaired = mismatches(addr, "repaired")?;
        ensure!(repaired >= 1.0, "no repaired checksum mismatch counted");
        ensure!(mismatches(addr, "failed")? == 0.0, "a read failed");
        info!(repaired, "mismatches decoded around");
        m.unmount(Duration::from_secs(60))?;
    }
    {
        info!("--- 3 wrong data fragments per stripe (more than m = 2): EIO, never wrong bytes");
        misplace(&c, 0, 2)?;
        let addr = free_tcp_addr()?;
        let m = c.mount_with(&["--http", &addr.to_string()])?;
        match std::fs::read(m.join("big")) {
            Ok(b) => {
                let want = integration_tests::pattern::bytes(7, 0, BIG);
                if b == want {
                    bail!(
                        "read back right with 3 of 6 fragments wrong: the test corrupted nothing"
                    );
                }
                bail!("read returned {} wrong bytes instead of failing", b.len());
            }
            Err(e) => ensure!(
                e.raw_os_error() == Some(libc::EIO),
                "read failed with {e}, expected EIO"
            ),
        }
        ensure!(
            mismatches(addr, "failed")? >= 1.0,
            "no failed mismatch counted"
        );
        m.unmount(Duration::from_secs(60))?;
    }
    c.done();
    Ok(())
}
