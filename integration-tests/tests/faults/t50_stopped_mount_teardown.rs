//! [consistency-faults] Test teardown leaves no mount behind: a mount guard dropped while
//! its `shoal mount` process is stopped (SIGSTOP) takes the mount down in bounded time
//! (t50), and a test process killed without running its Drop guards (as a timeout around a
//! long consistency/t56 run does) takes its mounts with it (t51).

use anyhow::{ensure, Context, Result};
use integration_tests::{is_mounted, wait_for, with_timeout, TestCluster};
use nix::sys::signal::Signal;
use std::path::PathBuf;
use std::time::Duration;

#[test]
fn t50_guard_drop_unmounts_a_stopped_mount() -> Result<()> {
    let c = TestCluster::init(6, 1, "4+2")?;
    c.start_all()?;
    let m = c.mount()?;
    std::fs::write(m.join("f"), b"x")?;
    let path = m.path().to_path_buf();
    c.env()
        .with_proc(m.name(), |p| p.signal(Signal::SIGSTOP))??;
    // Let the kernel's attribute TTL of the root run out, so that a stat would ask the
    // stopped daemon.
    std::thread::sleep(Duration::from_secs(2));
    let p = path.clone();
    let mounted = with_timeout(
        Duration::from_secs(5),
        "is_mounted on a stopped mount",
        move || is_mounted(&p),
    )?;
    ensure!(mounted, "{} not seen as mounted", path.display());
    // The guard's Drop: SIGTERM (pending while stopped), lazy unmount, SIGKILL.
    with_timeout(
        Duration::from_secs(90),
        "dropping the guard of a stopped mount",
        move || drop(m),
    )?;
    ensure!(
        !is_mounted(&path),
        "{} still mounted after the guard's Drop",
        path.display()
    );
    c.done();
    Ok(())
}

/// Set for the child test process of t51.
const CHILD_ENV: &str = "SHOAL_IT_T51_CHILD";

/// A test process killed with SIGKILL (as by a timeout around `cargo test`) runs no Drop
/// guard; its mount processes must still go away and take their mounts with them (they get
/// SIGTERM when the test process dies, `PR_SET_PDEATHSIG`). Runs the helper test below in a
/// child test process, kills that process once it has mounted, and waits for the mount to
/// disappear.
#[test]
fn t51_killed_test_process_leaves_no_mount() -> Result<()> {
    use std::io::BufRead;
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .args([
            "t51_child_mounts_and_waits",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let out = child.stdout.take().context("child stdout")?;
    let line = with_timeout(
        Duration::from_secs(120),
        "the child test mounts",
        move || {
            std::io::BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .find_map(|l| l.strip_prefix("T51 MOUNTED ").map(str::to_string))
        },
    );
    let Ok(Some(line)) = line else {
        let _ = child.kill();
        let _ = child.wait();
        anyhow::bail!("the child test did not report its mount");
    };
    let (dir, mnt) = line.split_once(' ').context("T51 line")?;
    let (dir, mnt) = (PathBuf::from(dir), PathBuf::from(mnt));
    ensure!(is_mounted(&mnt), "{} not mounted", mnt.display());
    child.kill()?;
    child.wait()?;
    let gone = wait_for(
        Duration::from_secs(90),
        "the killed test's mount is gone",
        || {
            ensure!(!is_mounted(&mnt), "still mounted");
            Ok(())
        },
    );
    if gone.is_err() {
        integration_tests::mount::lazy_unmount(&mnt);
    }
    gone?;
    // The child's temp dir (its Drop never ran); its nodes died with it.
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Helper of t51 (does nothing unless t51 runs it): mounts, says where, and waits to be
/// killed.
#[test]
#[ignore = "helper of t51, run by it in a child test process"]
fn t51_child_mounts_and_waits() -> Result<()> {
    if std::env::var_os(CHILD_ENV).is_none() {
        return Ok(());
    }
    let c = TestCluster::init(6, 1, "4+2")?;
    c.start_all()?;
    let m = c.mount()?;
    println!(
        "T51 MOUNTED {} {}",
        c.env().path().display(),
        m.path().display()
    );
    std::thread::sleep(Duration::from_secs(120));
    Ok(())
}
