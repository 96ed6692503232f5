//! A manager answers a create before its group commit. Killed right after, it loses the
//! new inode: the program that created the file (and wrote to it) must hear of the loss at
//! its next fsync, never be told 0 for a file that no longer exists; and the inode number
//! it holds must never name another file. The group commit interval is set to ten minutes
//! so that the creates are still in memory when the manager is killed (nothing else
//! forces one: only the test's syncs do).
//!
//! Each file's fsync after the restart must return EIO, or 0 with the file and its bytes
//! there (on the same mount and on a fresh one); the directory's fsync likewise.

use anyhow::{bail, ensure, Context, Result};
use integration_tests::{pattern, with_timeout, TestCluster};
use proto::config::{ClusterConfig, CONFIG_FILE};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;
use tracing::info;

const LEN: usize = 200_000;
const OP_BOUND: Duration = Duration::from_secs(120);

fn slow_group_commit(dir: &Path) -> Result<()> {
    let mut cfg = ClusterConfig::load(dir).context("load cluster.toml")?;
    cfg.file.manager.commit_interval_ms = 600_000;
    fs::write(dir.join(CONFIG_FILE), ClusterConfig::render(&cfg.file))?;
    Ok(())
}

/// What an fsync after the restart said about `name`, checked against what is there.
fn judge(what: &str, r: std::io::Result<()>, there: bool) -> Result<bool> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(true),
        Err(e) => bail!("{what}: fsync failed with {e}, not EIO"),
        Ok(()) if there => Ok(false),
        Ok(()) => bail!("{what}: fsync returned 0, but the file is gone"),
    }
}

#[test]
fn t45_a_create_lost_in_a_manager_crash_is_reported_not_dropped() -> Result<()> {
    let c = TestCluster::init(6, 1, "4+2")?;
    slow_group_commit(c.dir())?;
    c.start_all()?;
    let m = c.mount()?;
    let d = m.join("d");
    fs::create_dir(&d)?;
    File::open(&d)?.sync_all().context("fsync d")?;

    // a: written, not synced; b: empty; both kept open across the crash.
    let mut a = File::create(d.join("a"))?;
    a.write_all(&pattern::bytes(1, 0, LEN))?;
    let b = File::create(d.join("b"))?;
    let ino_a = fs::metadata(d.join("a"))?.ino();
    let ino_b = fs::metadata(d.join("b"))?.ino();
    info!(ino_a, ino_b, "created without a sync; killing the manager");

    c.kill9("manager-1")?;
    c.start("manager-1")?;
    c.wait_ready()?;

    let ra = with_timeout(OP_BOUND, "fsync a", move || a.sync_all())?;
    let rb = with_timeout(OP_BOUND, "fsync b", move || b.sync_all())?;
    let dd = d.clone();
    let rd = with_timeout(OP_BOUND, "fsync d", move || File::open(&dd)?.sync_all())?;
    info!(?ra, ?rb, ?rd, "fsyncs after the restart");

    let fresh = c.mount()?;
    let fd = fresh.join("d");
    let there = |n: &str| fd.join(n).exists();
    ensure!(
        !there("a") && !there("b"),
        "the creates survived the crash: this test did not exercise a lost create"
    );
    let lost_a = judge("a", ra, there("a"))?;
    let lost_b = judge("b", rb, there("b"))?;
    ensure!(lost_a && lost_b, "a lost create was reported as durable");
    judge("d", rd, true)
        .ok()
        .filter(|lost| *lost)
        .context("fsync of the directory whose creates were lost did not report EIO")?;

    // New files get numbers the lost creates were never answered with.
    for (i, mp) in [m.path(), fresh.path()].into_iter().enumerate() {
        let p = mp.join(format!("d/new{i}"));
        let mut f = File::create(&p)?;
        f.write_all(&pattern::bytes(2, 0, LEN))?;
        f.sync_all()
            .with_context(|| format!("fsync {}", p.display()))?;
        let ino = fs::metadata(&p)?.ino();
        ensure!(
            ino != ino_a && ino != ino_b,
            "new{i} got inode {ino}, which a lost create was answered with"
        );
    }
    for mp in [m.path(), fresh.path()] {
        for i in 0..2 {
            pattern::check_file(&mp.join(format!("d/new{i}")), 2, LEN)?;
        }
    }
    fresh.unmount(Duration::from_secs(30))?;
    m.unmount(Duration::from_secs(30))?;
    c.done();
    Ok(())
}
