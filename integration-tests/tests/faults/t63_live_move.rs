//! Issue [failover]: live moves of manager groups with `shoal manager move`, while a
//! mount keeps creating, writing and fsyncing files in directories of every manager.
//! Three managers, all running the whole time.
//! (a) manager-2's group moves to manager-1;
//! (b) it is given back to manager-2 (whose own manager starts again);
//! (c) a move to a manager that does not answer (manager-3, stopped) fails: the group is
//!     served where it was, and the command says why;
//! (d) manager-3's group moves to manager-2 and back;
//! (e) manager-1's group moves to manager-3 and back: the cleaner, reclaimer and rebuild
//!     move to manager-2 (then the lowest manager serving its own group) and back.
//! Wrong moves are refused with their reason first. No operation of the writer fails (a
//! hand-over makes everything it answered durable before the group stops); every file
//! whose fsync succeeded reads back byte-exact on the same mount and on a fresh one. The
//! time from each command to the first successful operation in the moved directory is
//! logged.

use crate::t60_manager_takeover::{
    check_files, dir_of, dirs_by_manager, first_op_in, spawn_writer, write_first_files,
    writer_result,
};
use crate::t61_automatic_takeover::log_of;
use anyhow::{ensure, Result};
use integration_tests::{CmdOutput, TestCluster};
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;

fn move_group(c: &TestCluster, name: &str, to: &str) -> Result<CmdOutput> {
    let args: Vec<OsString> = vec![
        "manager".into(),
        "move".into(),
        "--cluster".into(),
        c.dir().as_os_str().to_owned(),
        name.into(),
        "--to".into(),
        to.into(),
    ];
    c.env().run(args, Duration::from_secs(120))
}

/// What a node logs when it starts, and stops, the cleaner, reclaimer and rebuild.
const DUTIES_START: &str = "starting the cleaner, the reclaimer";
const DUTIES_STOP: &str = "stopped the cleaner, reclaimer and rebuild";

/// Moves `name`'s group to `to`, then waits for an operation in `dir` (on `name`'s
/// group) to succeed; the time from the command to it.
fn moved(c: &TestCluster, m: &Path, name: &str, to: &str, dir: &str) -> Result<Duration> {
    let start = Instant::now();
    let out = move_group(c, name, to)?;
    ensure!(
        out.success() && out.stdout.contains(&format!("{to} serves {name}'s slots")),
        "shoal manager move {name} --to {to}: {out}"
    );
    let took = first_op_in(m, dir, start)?;
    info!(?took, name, to, "live move: command to first operation");
    Ok(took)
}

#[test]
fn t63_manager_groups_move_while_everything_runs() -> Result<()> {
    let c = TestCluster::init(6, 3, "4+2")?;
    c.start_all()?;
    let m = c.mount()?;
    let dirs = dirs_by_manager(&c, m.path())?;
    info!(?dirs, "directories by manager");
    write_first_files(m.path(), &dirs)?;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(m.path(), &dirs, &stop);
    std::thread::sleep(Duration::from_secs(2));

    info!("--- wrong moves are refused");
    for (to, why) in [
        ("storage-1", "not a manager"),
        ("manager-2", "already serves"),
        ("nobody", "not a manager"),
    ] {
        let out = move_group(&c, "manager-2", to)?;
        ensure!(
            !out.success() && out.stderr.contains(why),
            "a move of manager-2's group to {to} was not refused with \"{why}\": {out}"
        );
    }

    info!("--- (a) manager-2's group to manager-1");
    let d2 = dir_of(&dirs, "manager-2");
    moved(&c, m.path(), "manager-2", "manager-1", &d2)?;
    ensure!(
        log_of(&c, "manager-2").contains("manager group handed over"),
        "manager-2 does not say it handed its group over"
    );
    let out = c.status()?;
    ensure!(
        out.success() && out.stdout.contains("its slots are served by manager-1"),
        "shoal status after the move: {out}"
    );

    info!("--- (b) given back to manager-2");
    moved(&c, m.path(), "manager-2", "manager-2", &d2)?;
    ensure!(
        log_of(&c, "manager-2").contains("own manager group is back"),
        "manager-2 does not say it serves its own group again"
    );

    info!("--- (c) a move to a manager that does not answer fails; the group stays");
    c.env()
        .with_proc("manager-3", |p| p.signal(Signal::SIGSTOP))??;
    let out = move_group(&c, "manager-2", "manager-3");
    c.env()
        .with_proc("manager-3", |p| p.signal(Signal::SIGCONT))??;
    let out = out?;
    ensure!(
        !out.success()
            && out.stderr.contains("failed")
            && out.stderr.contains("manager-2 serves it"),
        "a move to a stopped manager did not fail with the group served where it was: {out}"
    );
    first_op_in(m.path(), &d2, Instant::now())?;

    info!("--- (d) manager-3's group to manager-2 and back");
    let d3 = dir_of(&dirs, "manager-3");
    moved(&c, m.path(), "manager-3", "manager-2", &d3)?;
    moved(&c, m.path(), "manager-3", "manager-3", &d3)?;

    info!("--- (e) manager-1's group away and back: the cluster's duties follow");
    let starts = |node: &str| log_of(&c, node).matches(DUTIES_START).count();
    let (before1, before2) = (starts("manager-1"), starts("manager-2"));
    ensure!(
        before1 == 1 && before2 == 0,
        "the duties ran where they should not: manager-1 {before1}, manager-2 {before2}"
    );
    let d1 = dir_of(&dirs, "manager-1");
    moved(&c, m.path(), "manager-1", "manager-3", &d1)?;
    c.wait_until(
        Duration::from_secs(30),
        "manager-2 (now the lowest manager serving its own group) runs the duties",
        || starts("manager-2") == 1 && log_of(&c, "manager-1").contains(DUTIES_STOP),
    )?;
    moved(&c, m.path(), "manager-1", "manager-1", &d1)?;
    c.wait_until(
        Duration::from_secs(30),
        "manager-1 runs the duties again, manager-2 no longer",
        || starts("manager-1") == 2 && log_of(&c, "manager-2").contains(DUTIES_STOP),
    )?;

    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    // A hand-over loses nothing: no file may fail.
    let made = writer_result(writer, 0)?;
    let config = proto::config::ClusterConfig::load(c.dir())?;
    ensure!(
        config.manager_nodes().iter().all(|n| !n.is_hosted()),
        "cluster.toml does not have every manager serve its own group again"
    );

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
