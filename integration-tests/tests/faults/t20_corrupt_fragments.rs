//! Bytes flipped in the fragment files of two storage servers (4+2) are detected by
//! checksums and repaired by degraded reads: the file system returns the right data, also
//! after the managers recover from the same corrupted log.

use crate::{check_pattern, sync_dir, write_pattern};
use anyhow::{ensure, Result};
use integration_tests::faults::{corrupt_middle, fragment_files};
use integration_tests::TestCluster;
use std::time::Duration;
use tracing::info;

const BIG: usize = 24 << 20;

fn small_sizes() -> Vec<usize> {
    (0..16).map(|i| 1 + i * 37_001).collect()
}

fn check_all(m: &std::path::Path) -> Result<()> {
    check_pattern(&m.join("big"), 1, BIG)?;
    for (i, len) in small_sizes().into_iter().enumerate() {
        check_pattern(&m.join(format!("small/{i}")), 100 + i as u64, len)?;
    }
    Ok(())
}

#[test]
fn t20_corrupted_fragments_are_read_around() -> Result<()> {
    let c = TestCluster::init(6, 2, "4+2")?;
    c.start_all()?;
    let m = c.mount()?;
    {
        info!("--- write a 24 MiB file and 16 small files, fsync");
        write_pattern(&m.join("big"), 1, BIG, true)?;
        std::fs::create_dir(m.join("small"))?;
        for (i, len) in small_sizes().into_iter().enumerate() {
            write_pattern(&m.join(format!("small/{i}")), 100 + i as u64, len, true)?;
        }
        sync_dir(&m.join("small"))?;
        sync_dir(m.path())?;
    }
    {
        info!("--- unmount (drops every client cache)");
        m.unmount(Duration::from_secs(60))?;
    }
    {
        info!("--- flip 16 bytes in the middle of every fragment file of storage-1 and storage-3");
        for node in ["storage-1", "storage-3"] {
            let files = fragment_files(&c.fragment_dir(node))?;
            ensure!(
                !files.is_empty(),
                "{node} holds no fragment files under {}",
                c.fragment_dir(node).display()
            );
            for f in &files {
                corrupt_middle(f, 16)?;
            }
            info!(node, files = files.len(), "corrupted");
        }
    }
    let m = c.mount()?;
    {
        info!("--- mount again: every byte reads back correctly");
        check_all(m.path())?;
    }
    {
        info!(
            "--- restart both managers (they recover from the corrupted log), remount, read again"
        );
        m.unmount(Duration::from_secs(60))?;
        c.restart("manager-1")?;
        c.restart("manager-2")?;
        c.wait_ready()?;
    }
    let m = c.mount()?;
    {
        check_all(m.path())?;
        let n = std::fs::read_dir(m.join("small"))?.count();
        ensure!(n == small_sizes().len(), "small/ lists {n} files");
    }
    c.done();
    Ok(())
}
