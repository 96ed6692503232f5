//! Issue [failover]: automatic takeover by membership leases, no command and no remount.
//! Three managers with `[manager] auto_takeover = true` (membership lease 2 s), one mount
//! that keeps creating and fsyncing files in directories of every manager the whole time.
//! (a) manager-3 is stopped (SIGSTOP): the config group's leader hands its group to a live
//!     manager once its lease and the margin ran out; when manager-3 runs again it finds its
//!     lease gone and itself deposed;
//! (b) manager-2 is killed (SIGKILL) for good and its state directory deleted: its group
//!     moves too, to the one live manager left serving its own group.
//! Every operation of the writer succeeds (delayed), except at most the file in flight at
//! each fault (`writer_result`); every file whose fsync succeeded reads back byte-exact on
//! the same mount and on a fresh one. The time from the fault to the
//! first successful operation in a moved directory is logged.

use crate::t60_manager_takeover::{
    check_files, dir_of, dirs_by_manager, first_op_in, spawn_writer, write_first_files,
    writer_result,
};
use anyhow::{ensure, Context, Result};
use integration_tests::TestCluster;
use nix::sys::signal::Signal;
use proto::config::{ClusterConfig, CONFIG_FILE};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;

/// What node `node` logged so far.
pub(crate) fn log_of(c: &TestCluster, node: &str) -> String {
    String::from_utf8_lossy(&std::fs::read(c.env().log_path(node)).unwrap_or_default()).into_owned()
}

pub(crate) fn turn_on_auto_takeover(dir: &Path) -> Result<()> {
    let mut cfg = ClusterConfig::load(dir).context("load cluster.toml")?;
    cfg.file.manager.auto_takeover = true;
    std::fs::write(dir.join(CONFIG_FILE), ClusterConfig::render(&cfg.file))?;
    ensure!(ClusterConfig::load(dir)?.file.manager.auto_takeover);
    Ok(())
}

#[test]
fn t61_a_silent_managers_slots_move_to_a_live_one_by_themselves() -> Result<()> {
    let c = TestCluster::init(6, 3, "4+2")?;
    turn_on_auto_takeover(c.dir())?;
    c.start_all()?;
    let m = c.mount()?;
    let dirs = dirs_by_manager(&c, m.path())?;
    info!(?dirs, "directories by manager");
    write_first_files(m.path(), &dirs)?;
    for name in ["manager-1", "manager-2", "manager-3"] {
        ensure!(
            log_of(&c, name).contains("membership lease granted"),
            "{name} serves without a membership lease: {}",
            log_of(&c, name)
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(m.path(), &dirs, &stop);
    std::thread::sleep(Duration::from_secs(2));
    let moved_dir = |who: &str| dir_of(&dirs, who);

    info!("--- (a) manager-3 stopped: its group moves by itself");
    c.env()
        .with_proc("manager-3", |p| p.signal(Signal::SIGSTOP))??;
    let fault = Instant::now();
    let took = first_op_in(m.path(), &moved_dir("manager-3"), fault)?;
    info!(
        ?took,
        "automatic takeover of a stopped manager: fault to first operation"
    );
    let adopted = |text: &str| text.contains("took over the manager group of a host");
    ensure!(
        adopted(&log_of(&c, "manager-1")) || adopted(&log_of(&c, "manager-2")),
        "no live manager says it took manager-3's group over"
    );
    c.env()
        .with_proc("manager-3", |p| p.signal(Signal::SIGCONT))??;
    c.wait_until(
        Duration::from_secs(30),
        "manager-3 finds itself deposed",
        || log_of(&c, "manager-3").contains("deposed"),
    )?;

    info!("--- (b) manager-2 killed for good: its group moves by itself");
    std::thread::sleep(Duration::from_secs(1));
    c.kill9("manager-2")?;
    let fault = Instant::now();
    std::fs::remove_dir_all(c.dir().join("nodes").join("manager-2"))?;
    let took = first_op_in(m.path(), &moved_dir("manager-2"), fault)?;
    info!(
        ?took,
        "automatic takeover of a killed manager: fault to first operation"
    );
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let made = writer_result(writer, 2)?;
    let adoptions = log_of(&c, "manager-1")
        .matches("took over the manager group of a host")
        .count();
    ensure!(
        adoptions >= 2,
        "manager-1, the one live manager serving its own group, did not take manager-2's group ({adoptions} adoptions)"
    );

    info!("--- every file, on the same mount and on a fresh one");
    check_files(m.path(), m.path(), &dirs, &made)?;
    let fresh = c.mount()?;
    check_files(m.path(), fresh.path(), &dirs, &made)?;
    fresh.unmount(Duration::from_secs(30))?;
    m.unmount(Duration::from_secs(30))?;
    c.done();
    Ok(())
}
