//! Two of six storage servers (4+2) die by SIGKILL while a 64 MiB file is being read; every
//! read still returns the right bytes (degraded reads), also through a fresh mount.

use crate::{check_pattern, write_pattern};
use anyhow::{Context, Result};
use integration_tests::{pattern, wait_until, TestCluster};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use tracing::info;

const SIZE: usize = 64 << 20;
const SEED: u64 = 0x6464;
const CHUNK: usize = 1 << 20;

#[test]
fn t10_kill_two_storage_servers_during_a_read() -> Result<()> {
    let c = TestCluster::init(6, 2, "4+2")?;
    c.start_all()?;
    let m = c.mount()?;
    {
        info!("--- write a 64 MiB file and fsync it");
        write_pattern(&m.join("big"), SEED, SIZE, true)?;
    }
    let m = c.remount(m)?;
    {
        info!("--- read it in 1 MiB pieces; kill -9 storage-2 at 16 MiB and storage-5 at 24 MiB, mid-read");
        let done = Arc::new(AtomicU64::new(0));
        let (killed_tx, killed_rx) = mpsc::channel::<()>();
        let path = m.join("big");
        let progress = done.clone();
        let reader = std::thread::spawn(move || -> Result<()> {
            let f = File::open(&path)?;
            let mut buf = vec![0u8; CHUNK];
            for i in 0..SIZE / CHUNK {
                let off = (i * CHUNK) as u64;
                if off == 32 << 20 {
                    // The second half is read only after both kills.
                    killed_rx
                        .recv_timeout(Duration::from_secs(120))
                        .context("kills never reported")?;
                }
                f.read_exact_at(&mut buf, off)
                    .with_context(|| format!("read at {off}"))?;
                pattern::check(SEED, off, &buf).map_err(anyhow::Error::msg)?;
                progress.store(off + CHUNK as u64, Ordering::SeqCst);
            }
            Ok(())
        });
        wait_until(Duration::from_secs(120), "the reader passed 16 MiB", || {
            done.load(Ordering::SeqCst) >= 16 << 20 || reader.is_finished()
        })?;
        c.kill9("storage-2")?;
        wait_until(Duration::from_secs(120), "the reader passed 24 MiB", || {
            done.load(Ordering::SeqCst) >= 24 << 20 || reader.is_finished()
        })?;
        c.kill9("storage-5")?;
        let _ = killed_tx.send(());
        wait_until(Duration::from_secs(240), "the reader finished", || {
            reader.is_finished()
        })?;
        reader
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))??;
        info!(
            bytes = done.load(Ordering::SeqCst),
            "read loop verified every byte"
        );
    }
    {
        info!("--- a second, fresh mount (no cached data) with two servers down: the whole file reads back");
        let fresh = c.mount()?;
        check_pattern(&fresh.join("big"), SEED, SIZE)?;
        fresh.kill9()?; // its unmount would need the metadata log (see t11)
    }
    {
        info!("--- the two servers come back; a third mount reads the file");
        c.start("storage-2")?;
        c.start("storage-5")?;
        let third = c.mount()?;
        check_pattern(&third.join("big"), SEED, SIZE)?;
        third.unmount(Duration::from_secs(60))?;
        m.unmount(Duration::from_secs(60))?;
    }
    c.done();
    Ok(())
}

/// A client that only read unmounts cleanly while two of six storage servers are down.
#[test]
fn t11_reader_unmounts_cleanly_with_two_servers_down() -> Result<()> {
    let c = TestCluster::init(6, 2, "4+2")?;
    c.start_all()?;
    let m = c.mount()?;
    {
        info!("--- write 4 MiB, fsync, remount");
        write_pattern(&m.join("f"), SEED, 4 << 20, true)?;
    }
    let m = c.remount(m)?;
    {
        info!("--- kill -9 storage-2 and storage-5; read the file");
        c.kill9("storage-2")?;
        c.kill9("storage-5")?;
        check_pattern(&m.join("f"), SEED, 4 << 20)?;
    }
    {
        info!("--- unmount: exit 0, within 60 s");
        m.unmount(Duration::from_secs(60))?;
    }
    c.done();
    Ok(())
}
