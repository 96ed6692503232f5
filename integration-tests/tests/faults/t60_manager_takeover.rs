//! Issue [failover]: a manager's slots served by another node, with no remount. Three
//! managers, one mount that keeps creating and fsyncing files in directories of every
//! manager the whole time.
//! (a) manager-3 is stopped (SIGSTOP) and its group handed to manager-1 with `shoal
//!     manager takeover`; when manager-3 runs again it finds itself deposed, stops its
//!     manager, and the storage servers refuse its writes;
//! (b) manager-2 is killed (SIGKILL) for good, its state directory deleted, and its group
//!     handed to manager-1 too, which then serves three groups;
//! (c) a takeover by a manager whose own group was taken over is refused, and the
//!     deposed manager-3, restarted, runs no manager; `shoal status` says where the
//!     moved slots are served.
//! First of all, a takeover of a manager that still answers is refused.
//! Every operation of the writer succeeds (delayed), except at most the one file in flight
//! at each fault, which may fail its fsync with EIO when its create was lost (see
//! `writer_result`); every file whose fsync succeeded reads back byte-exact on the same
//! mount and on a fresh one. The time from the fault to the
//! first successful operation in a moved directory is logged.

use crate::{check_pattern, sync_dir, write_pattern};
use anyhow::{ensure, Context, Result};
use integration_tests::{with_timeout, TestCluster};
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;

pub(crate) const DIRS_PER_MANAGER: usize = 2;
/// Files the writer makes per directory, at most (it stops earlier when told).
pub(crate) const WRITER_FILES: usize = 400;
pub(crate) const SIZE: usize = 70_001;

pub(crate) fn seed(dir: &str, f: usize) -> u64 {
    dir.bytes().map(u64::from).sum::<u64>() * 1000 + f as u64
}

/// Directories at the root until each manager serves `DIRS_PER_MANAGER` of them.
pub(crate) fn dirs_by_manager(c: &TestCluster, m: &Path) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for i in 0..200 {
        let name = format!("d{i}");
        std::fs::create_dir(m.join(&name))?;
        let owner = c.manager_of(std::fs::metadata(m.join(&name))?.ino())?;
        if out.iter().filter(|(o, _)| *o == owner).count() < DIRS_PER_MANAGER {
            out.push((owner, name));
        }
        if out.len() == 3 * DIRS_PER_MANAGER {
            sync_dir(m)?;
            return Ok(out);
        }
    }
    anyhow::bail!("200 directories did not give every manager {DIRS_PER_MANAGER}: {out:?}")
}

fn takeover(c: &TestCluster, name: &str, by: &str) -> Result<integration_tests::CmdOutput> {
    let args: Vec<OsString> = vec![
        "manager".into(),
        "takeover".into(),
        "--cluster".into(),
        c.dir().as_os_str().to_owned(),
        name.into(),
        "--by".into(),
        by.into(),
    ];
    c.env().run(args, Duration::from_secs(90))
}

/// Waits until a create + fsync + stat in `dir` succeeds; the time it took.
pub(crate) fn first_op_in(m: &Path, dir: &str, since: Instant) -> Result<Duration> {
    let p = m.join(dir).join("probe");
    with_timeout(
        Duration::from_secs(120),
        "an operation in a moved directory",
        {
            let p = p.clone();
            move || -> Result<()> {
                std::fs::write(&p, b"probe").with_context(|| format!("create {}", p.display()))?;
                std::fs::File::open(&p)
                    .and_then(|f| f.sync_all())
                    .with_context(|| format!("open and fsync {}", p.display()))?;
                std::fs::metadata(&p).with_context(|| format!("stat {}", p.display()))?;
                Ok(())
            }
        },
    )??;
    Ok(since.elapsed())
}

/// What the writer did: the files whose create, write and fsync all succeeded, and the
/// ones whose fsync failed.
pub(crate) struct Written {
    pub made: Vec<(PathBuf, u64)>,
    pub failed: Vec<(PathBuf, String)>,
}

/// The writer: one file per directory per round, each created, written and fsynced in turn
/// (one file in flight at a time), until told to stop.
pub(crate) type Writer = std::thread::JoinHandle<Result<Written>>;

pub(crate) fn spawn_writer(
    root: &Path,
    dirs: &[(String, String)],
    stop: &Arc<AtomicBool>,
) -> Writer {
    let (root, dirs, stop) = (root.to_path_buf(), dirs.to_vec(), stop.clone());
    std::thread::spawn(move || -> Result<Written> {
        let mut w = Written {
            made: Vec::new(),
            failed: Vec::new(),
        };
        for f in 0..WRITER_FILES {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            for (_, d) in &dirs {
                let p = root.join(format!("{d}/w{f}"));
                let s = seed(d, 100 + f);
                match write_pattern(&p, s, SIZE, true) {
                    Ok(()) => w.made.push((p, s)),
                    Err(e) => w.failed.push((p, format!("{e:#}"))),
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(w)
    })
}

/// Waits for the writer and checks what failed: at most `faults` files (the writer has one
/// file in flight, so a fault can catch at most one), each only at its fsync with EIO. A
/// manager answers a create before its group commit makes it durable (the 50 ms metadata
/// group commit; fsync forces one): a create answered by a manager that then stops or dies
/// within that window is lost with it, and the fsync that follows must fail, never succeed.
/// Clients do not replay such creates to the new host yet (CephFS clients replay their
/// unsafe requests to a recovering MDS).
pub(crate) fn writer_result(writer: Writer, faults: usize) -> Result<Vec<(PathBuf, u64)>> {
    let w = with_timeout(Duration::from_secs(180), "the writer ends", move || {
        writer.join()
    })?
    .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    info!(
        files = w.made.len(),
        failed = w.failed.len(),
        ?w.failed,
        "the writer ended"
    );
    ensure!(
        w.failed.len() <= faults
            && w
                .failed
                .iter()
                .all(|(_, e)| e.starts_with("fsync") && e.contains("Input/output error")),
        "the writer failed more than the one file in flight per fault, or not at its fsync with EIO: {:?}",
        w.failed
    );
    Ok(w.made)
}

/// The first test directory of manager `who`.
pub(crate) fn dir_of(dirs: &[(String, String)], who: &str) -> String {
    dirs.iter()
        .find(|(o, _)| o == who)
        .map(|(_, d)| d.clone())
        .expect("a directory per manager")
}

/// Writes the files every test directory starts with.
pub(crate) fn write_first_files(m: &Path, dirs: &[(String, String)]) -> Result<()> {
    for (_, d) in dirs {
        for f in 0..3 {
            write_pattern(&m.join(format!("{d}/pre{f}")), seed(d, f), SIZE, true)?;
        }
    }
    sync_dir(m)
}

/// Checks, under `root`, the first files and every file the writer made (under `mounted`).
pub(crate) fn check_files(
    mounted: &Path,
    root: &Path,
    dirs: &[(String, String)],
    made: &[(PathBuf, u64)],
) -> Result<()> {
    for (_, d) in dirs {
        for f in 0..3 {
            check_pattern(&root.join(format!("{d}/pre{f}")), seed(d, f), SIZE)?;
        }
    }
    for (p, s) in made {
        let rel = p.strip_prefix(mounted)?;
        check_pattern(&root.join(rel), *s, SIZE)?;
    }
    Ok(())
}

#[test]
fn t60_a_down_managers_slots_are_served_by_another_without_remounting() -> Result<()> {
    let c = TestCluster::init(6, 3, "4+2")?;
    c.start_all()?;
    let m = c.mount()?;
    let dirs = dirs_by_manager(&c, m.path())?;
    info!(?dirs, "directories by manager");
    write_first_files(m.path(), &dirs)?;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(m.path(), &dirs, &stop);
    std::thread::sleep(Duration::from_secs(2));
    let moved_dir = |who: &str| dir_of(&dirs, who);

    info!("--- a takeover of a manager that answers is refused");
    let out = takeover(&c, "manager-3", "manager-1")?;
    ensure!(
        !out.success() && out.stderr.contains("answers"),
        "a takeover of a running manager was not refused for that: {out}"
    );

    info!("--- (a) manager-3 stopped, its group handed to manager-1");
    c.env()
        .with_proc("manager-3", |p| p.signal(Signal::SIGSTOP))??;
    let fault = Instant::now();
    let out = takeover(&c, "manager-3", "manager-1")?;
    ensure!(
        out.success(),
        "shoal manager takeover manager-3 failed: {out}"
    );
    let took = first_op_in(m.path(), &moved_dir("manager-3"), fault)?;
    info!(
        ?took,
        "takeover of a stopped manager: fault to first operation"
    );
    c.env()
        .with_proc("manager-3", |p| p.signal(Signal::SIGCONT))??;
    let log3 = c.env().log_path("manager-3");
    c.wait_until(
        Duration::from_secs(30),
        "manager-3 finds itself deposed",
        || String::from_utf8_lossy(&std::fs::read(&log3).unwrap_or_default()).contains("deposed"),
    )?;

    info!("--- (b) manager-2 killed for good, its group handed to manager-1");
    std::thread::sleep(Duration::from_secs(1));
    c.kill9("manager-2")?;
    let fault = Instant::now();
    std::fs::remove_dir_all(c.dir().join("nodes").join("manager-2"))?;
    let out = takeover(&c, "manager-2", "manager-1")?;
    ensure!(
        out.success(),
        "shoal manager takeover manager-2 failed: {out}"
    );
    let took = first_op_in(m.path(), &moved_dir("manager-2"), fault)?;
    info!(
        ?took,
        "takeover of a killed manager: fault to first operation"
    );
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let made = writer_result(writer, 2)?;

    // `shoal status`: the cluster can serve (every group is served), and says where.
    let out = c.status()?;
    ensure!(
        out.success() && out.stdout.contains("its slots are served by manager-1"),
        "shoal status after the takeovers: {out}"
    );

    info!("--- (c) what must be refused");
    let out = takeover(&c, "manager-1", "manager-2")?;
    ensure!(
        !out.success() && out.stderr.contains("not a manager serving its own group"),
        "a takeover by a hosted manager was not refused for that: {out}"
    );
    let config = proto::config::ClusterConfig::load(c.dir())?;
    ensure!(
        config
            .node_by_name("manager-2")
            .is_some_and(|n| n.is_hosted()),
        "cluster.toml does not record the takeover"
    );
    // The deposed manager-3 restarted (its config group state kept): it runs no manager.
    let log3_before = std::fs::metadata(&log3).map(|m| m.len()).unwrap_or(0) as usize;
    c.stop("manager-3")?;
    c.env().spawn(
        "manager-3",
        [
            "node".as_ref(),
            "run".as_ref(),
            "--cluster".as_ref(),
            c.dir().as_os_str(),
            "--node".as_ref(),
            "manager-3".as_ref(),
        ],
    )?;
    c.wait_until(
        Duration::from_secs(60),
        "the restarted manager-3 says manager-1 serves its group",
        || {
            let text = std::fs::read(&log3).unwrap_or_default();
            String::from_utf8_lossy(text.get(log3_before..).unwrap_or_default())
                .contains("is served by manager-1")
        },
    )?;

    info!("--- every file, on the same mount and on a fresh one");
    let check_all = |root: &Path| check_files(m.path(), root, &dirs, &made);
    check_all(m.path())?;
    let fresh = c.mount()?;
    check_all(fresh.path())?;
    fresh.unmount(Duration::from_secs(30))?;
    m.unmount(Duration::from_secs(30))?;
    c.done();
    Ok(())
}
