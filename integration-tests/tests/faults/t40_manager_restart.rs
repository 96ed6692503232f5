//! Managers stopped (SIGTERM) or killed (SIGKILL) under a live mount: operations issued
//! while it is down complete once it is back (bounded), and every fsynced file and its
//! metadata is intact, on the same mount and on a fresh one.

use crate::{check_pattern, sync_dir, write_pattern};
use anyhow::{ensure, Context, Result};
use integration_tests::sys::{get_xattr, set_xattr};
use integration_tests::{wait_for, with_timeout, TestCluster};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::info;

const DIRS: usize = 8;
/// How long the manager stays down: the fault itself, not a synchronisation.
const OUTAGE: Duration = Duration::from_secs(2);
/// Bound for the mount to work again once the managers are back.
const RECOVER_BOUND: Duration = Duration::from_secs(60);
/// Bound for an operation issued during the outage, counted from its start.
const OP_BOUND: Duration = Duration::from_secs(120);

fn seed(d: usize, f: usize) -> u64 {
    (d * 10 + f) as u64
}

fn size(d: usize, f: usize) -> usize {
    1000 + d * 70_001 + f * 300_007
}

fn check_setup(m: &Path, extra: &[String]) -> Result<()> {
    for d in 0..DIRS {
        for f in 0..3 {
            check_pattern(&m.join(format!("dir{d}/file{f}")), seed(d, f), size(d, f))?;
        }
        let md = fs::metadata(m.join(format!("dir{d}/file0")))?;
        ensure!(
            md.mode() & 0o777 == 0o640,
            "mode of dir{d}/file0: {:o}",
            md.mode() & 0o777
        );
        ensure!(
            get_xattr(&m.join(format!("dir{d}/file1")), "user.tag")?
                == format!("tag{d}").into_bytes()
        );
        ensure!(fs::read_link(m.join(format!("dir{d}/link")))? == PathBuf::from("file2"));
    }
    for name in extra {
        ensure!(
            fs::read_to_string(m.join(name))? == *name,
            "file made during an outage: {name}"
        );
    }
    Ok(())
}

/// Creates, writes and fsyncs `during-<tag>` in every dir, on another thread, bounded.
fn ops_during_outage(m: &Path, tag: &str) -> std::thread::JoinHandle<Result<Vec<String>>> {
    let m = m.to_path_buf();
    let tag = tag.to_string();
    std::thread::spawn(move || {
        let mut made = Vec::new();
        for d in 0..DIRS {
            let name = format!("dir{d}/during-{tag}");
            fs::write(m.join(&name), &name)
                .with_context(|| format!("create {name} during the outage"))?;
            fs::File::open(m.join(&name))?.sync_all()?;
            fs::metadata(m.join(format!("dir{d}/file0")))
                .with_context(|| format!("stat in dir{d} during the outage"))?;
            made.push(name);
        }
        sync_dir(&m)?;
        Ok(made)
    })
}

fn finish(h: std::thread::JoinHandle<Result<Vec<String>>>, what: &str) -> Result<Vec<String>> {
    let r = with_timeout(OP_BOUND, what, move || h.join())?;
    r.map_err(|_| anyhow::anyhow!("{what}: thread panicked"))?
}

/// The files every phase checks: fsynced data, a mode, an xattr and a symlink per dir.
fn setup(c: &TestCluster, m: &Path) -> Result<()> {
    for d in 0..DIRS {
        let dir = m.join(format!("dir{d}"));
        fs::create_dir(&dir)?;
        info!(dir = d, owner = %c.manager_of(fs::metadata(&dir)?.ino())?, "directory owner");
        for f in 0..3 {
            write_pattern(&dir.join(format!("file{f}")), seed(d, f), size(d, f), true)?;
        }
        fs::set_permissions(dir.join("file0"), fs::Permissions::from_mode(0o640))?;
        set_xattr(
            &dir.join("file1"),
            "user.tag",
            format!("tag{d}").as_bytes(),
            0,
        )?;
        std::os::unix::fs::symlink("file2", dir.join("link"))?;
        sync_dir(&dir)?;
    }
    sync_dir(m)?;
    check_setup(m, &[])
}

/// One outage of `managers`: stopped with SIGTERM (`kill9` false) or SIGKILL, operations
/// issued while they are down, restart, then the checks of `after_outage`.
fn outage(
    c: &TestCluster,
    m: &Path,
    managers: &[&str],
    kill9: bool,
    problems: &mut Vec<String>,
    extra: &mut Vec<String>,
) -> Result<()> {
    for name in managers {
        if kill9 {
            c.kill9(name)?;
        } else {
            let status = c.stop(name)?;
            if !status.success() {
                problems.push(format!("{name} exited with {status} on SIGTERM"));
            }
        }
    }
    let how = if kill9 { "kill" } else { "stop" };
    let tag = format!("{how}-{}", managers.join("-"));
    let ops = ops_during_outage(m, &tag);
    std::thread::sleep(OUTAGE);
    for name in managers {
        c.start(name)?;
    }
    after_outage(
        problems,
        extra,
        m,
        ops,
        &format!("operations during the {tag} outage"),
    )
}

#[test]
fn t40_manager_sigterm_under_a_live_mount() -> Result<()> {
    let c = TestCluster::init(6, 2, "4+2")?;
    c.start_all()?;
    let m = c.mount()?;
    let mut extra = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    {
        info!("--- {DIRS} directories with 3 fsynced files each, a mode, an xattr and a symlink");
        setup(&c, m.path())?;
    }
    {
        info!("--- SIGTERM manager-1; operations issued while it is down finish once it is back");
        outage(
            &c,
            m.path(),
            &["manager-1"],
            false,
            &mut problems,
            &mut extra,
        )?;
    }
    {
        info!("--- SIGTERM manager-2; the same");
        outage(
            &c,
            m.path(),
            &["manager-2"],
            false,
            &mut problems,
            &mut extra,
        )?;
    }
    {
        info!("--- SIGTERM both managers, restart both");
        outage(
            &c,
            m.path(),
            &["manager-1", "manager-2"],
            false,
            &mut problems,
            &mut extra,
        )?;
    }
    {
        info!("--- status is healthy again");
        c.wait_ready()?;
    }
    let m = c.remount(m)?;
    {
        info!("--- a fresh mount sees all of it");
        check_setup(m.path(), &extra)?;
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    c.done();
    Ok(())
}

#[test]
fn t41_manager_kill9_under_a_live_mount() -> Result<()> {
    let c = TestCluster::init(6, 2, "4+2")?;
    c.start_all()?;
    let m = c.mount()?;
    let mut extra = Vec::new();
    // Every outage is tried; problems are collected and reported together at the end.
    let mut problems: Vec<String> = Vec::new();
    {
        info!("--- {DIRS} directories with 3 fsynced files each, a mode, an xattr and a symlink");
        setup(&c, m.path())?;
    }
    {
        info!("--- kill -9 manager-1; operations issued while it is down finish once it is back");
        outage(
            &c,
            m.path(),
            &["manager-1"],
            true,
            &mut problems,
            &mut extra,
        )?;
    }
    {
        info!("--- kill -9 manager-2; the same");
        outage(
            &c,
            m.path(),
            &["manager-2"],
            true,
            &mut problems,
            &mut extra,
        )?;
    }
    {
        info!("--- kill -9 both managers at once, restart both");
        outage(
            &c,
            m.path(),
            &["manager-1", "manager-2"],
            true,
            &mut problems,
            &mut extra,
        )?;
    }
    {
        info!("--- status is healthy again");
        c.wait_ready()?;
    }
    let m = c.remount(m)?;
    {
        info!("--- a fresh mount sees all of it");
        check_setup(m.path(), &extra)?;
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    c.done();
    Ok(())
}

/// Collects the outcome of the outage's operations, then requires the mount to work again
/// (bounded) and every earlier file to be intact.
fn after_outage(
    problems: &mut Vec<String>,
    extra: &mut Vec<String>,
    m: &Path,
    ops: std::thread::JoinHandle<Result<Vec<String>>>,
    what: &str,
) -> Result<()> {
    match finish(ops, what) {
        Ok(made) => extra.extend(made),
        Err(e) => {
            tracing::warn!("{what} failed: {e:#}");
            problems.push(format!("{what}: {e:#}"));
        }
    }
    wait_for(
        RECOVER_BOUND,
        &format!("the mount works again after {what}"),
        || {
            for d in 0..DIRS {
                let probe = m.join(format!("dir{d}/probe"));
                fs::write(&probe, b"probe")?;
                ensure!(fs::read(&probe)? == b"probe", "probe content in dir{d}");
                fs::remove_file(&probe)?;
            }
            Ok(())
        },
    )?;
    check_setup(m, extra)
}
