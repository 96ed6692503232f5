//! [consistency-faults] reproduction: a write buffered under a write lease (not fsynced)
//! survives a kill -9 of both managers, and another mount reading at once sees it, never
//! the older value from the log. The restarted managers let the writer reclaim its lease
//! during their grace period and hold reads of unclaimed files until then.
//! Then the write verifier: fsync after the restart reports the truth.

use anyhow::{ensure, Context, Result};
use integration_tests::with_timeout;
use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::Duration;
use tracing::info;

/// Bound of one read or fsync across a manager restart (grace period and recovery).
const BOUND: Duration = Duration::from_secs(90);

fn value(v: u8) -> Vec<u8> {
    (0..64 * 1024)
        .map(|i| (i as u8).wrapping_mul(7) ^ v)
        .collect()
}

fn restart_managers(c: &integration_tests::TestCluster) -> Result<()> {
    for m in ["manager-1", "manager-2"] {
        c.kill9(m)?;
    }
    for m in ["manager-1", "manager-2"] {
        c.start(m)?;
    }
    Ok(())
}

fn read_on(path: std::path::PathBuf) -> Result<Vec<u8>> {
    with_timeout(BOUND, "read across a manager restart", move || {
        fs::read(&path).with_context(|| format!("read {}", path.display()))
    })?
}

#[test]
fn t40_buffered_write_is_read_after_both_managers_crash() -> Result<()> {
    let (c, mounts) = crate::cluster_with_mounts(None, 2)?;
    let (a, b) = (&mounts[0], &mounts[1]);
    let (xa, xb) = (a.path().join("x"), b.path().join("x"));
    {
        info!("--- A writes v1 and fsyncs; B reads v1");
        let mut f = fs::File::create(&xa)?;
        f.write_all(&value(1))?;
        f.sync_all()?;
        ensure!(read_on(xb.clone())? == value(1), "B did not read v1");
    }
    {
        info!("--- both managers crash and restart; A writes v2 and fsyncs; B reads v2");
        restart_managers(&c)?;
        let xa2 = xa.clone();
        with_timeout(
            BOUND,
            "write v2 after the restart",
            move || -> Result<()> {
                let f = fs::OpenOptions::new().write(true).open(&xa2)?;
                f.write_all_at(&value(2), 0)?;
                f.sync_all()?;
                Ok(())
            },
        )??;
        ensure!(read_on(xb.clone())? == value(2), "B did not read v2");
    }
    {
        info!("--- A writes v3 without fsync and closes; both managers crash; B reads at once");
        let f = fs::OpenOptions::new().write(true).open(&xa)?;
        f.write_all_at(&value(3), 0)?;
        drop(f);
        restart_managers(&c)?;
        let got = read_on(xb.clone())?;
        ensure!(
            got == value(3),
            "B read {} after the restart, not A's completed write v3 (stale read)",
            if got == value(2) {
                "v2".to_string()
            } else {
                format!("{} other bytes", got.len())
            }
        );
    }
    {
        info!("--- A's fsync afterwards succeeds and both mounts read v3");
        let xa2 = xa.clone();
        with_timeout(BOUND, "fsync after the restart", move || -> Result<()> {
            fs::OpenOptions::new().write(true).open(&xa2)?.sync_all()?;
            Ok(())
        })??;
        ensure!(read_on(xa.clone())? == value(3), "A does not read v3");
        ensure!(read_on(xb.clone())? == value(3), "B does not read v3");
    }
    Ok(())
}

#[test]
fn t41_fsync_after_a_crash_in_the_commit_window_tells_the_truth() -> Result<()> {
    let (c, mounts) = crate::cluster_with_mounts(None, 1)?;
    let m = &mounts[0];
    let mut outcomes = Vec::new();
    for round in 0..4u8 {
        let p = m.path().join(format!("f{round}"));
        info!(round, "--- a durable file; a new value, committed in the background; kill -9 the managers; fsync");
        {
            let mut f = fs::File::create(&p)?;
            f.write_all(&value(0))?;
            f.sync_all()?;
            fs::File::open(m.path())?.sync_all()?;
        }
        let f = fs::OpenOptions::new().write(true).open(&p)?;
        f.write_all_at(&value(10 + round), 0)?;
        // The flusher commits within its interval; the managers' group commit may or may
        // not have made it durable when they die.
        std::thread::sleep(Duration::from_millis(20 + 40 * round as u64));
        restart_managers(&c)?;
        let r = with_timeout(BOUND, "fsync after the crash", move || f.sync_all())?;
        match r {
            Ok(()) => {
                let got = read_on(p.clone())?;
                ensure!(
                    got == value(10 + round),
                    "round {round}: fsync returned 0 but the file holds {} bytes of other data",
                    got.len()
                );
                outcomes.push("durable");
            }
            Err(e) => {
                ensure!(
                    e.raw_os_error() == Some(libc::EIO),
                    "round {round}: fsync failed with {e}, expected EIO"
                );
                outcomes.push("EIO");
            }
        }
    }
    info!(
        ?outcomes,
        "fsync outcomes after a crash in the commit window"
    );
    Ok(())
}
