//! `shoal up MNT --state DIR`: an all-in-one cluster; SIGINT unmounts and exits 0 within
//! seconds; a second run on the same state shows the same files.

use anyhow::{ensure, Result};
use integration_tests::{is_mounted, pattern, TestEnv};
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::fs;
use std::time::Duration;
use tracing::info;

const EXIT_BOUND: Duration = Duration::from_secs(15);

#[test]
fn t40_up_runs_stops_and_comes_back() -> Result<()> {
    let env = TestEnv::new()?;
    let mnt = env.path().join("mnt");
    let state = env.path().join("state");
    fs::create_dir(&mnt)?;
    let up_args = || -> Vec<OsString> {
        vec![
            "up".into(),
            mnt.clone().into(),
            "--state".into(),
            state.clone().into(),
        ]
    };
    {
        info!("--- shoal up in the background; write files");
        let m = env.spawn_mount(up_args(), &mnt)?;
        fs::write(m.join("hello"), b"hello from up")?;
        fs::create_dir(m.join("dir"))?;
        fs::write(m.join("dir/data"), pattern::bytes(9, 0, 1 << 20))?;
        fs::File::open(m.join("dir/data"))?.sync_all()?;
        info!("--- SIGINT: exit 0 within {EXIT_BOUND:?}, unmounted");
        let status = env.stop(m.name(), Signal::SIGINT, EXIT_BOUND)?;
        ensure!(status.success(), "shoal up exited with {status} on SIGINT");
        ensure!(
            !is_mounted(&mnt),
            "{} still mounted after shoal up exited",
            mnt.display()
        );
    }
    {
        info!("--- the state dir holds a cluster");
        ensure!(
            state.join("cluster.toml").is_file(),
            "no cluster.toml in the state dir"
        );
    }
    {
        info!("--- shoal up again on the same state: the same files");
        let m = env.spawn_mount(up_args(), &mnt)?;
        ensure!(
            fs::read(m.join("hello"))? == b"hello from up",
            "hello differs after restart"
        );
        pattern::check(9, 0, &fs::read(m.join("dir/data"))?).map_err(anyhow::Error::msg)?;
        let status = env.stop(m.name(), Signal::SIGTERM, EXIT_BOUND)?;
        ensure!(status.success(), "shoal up exited with {status} on SIGTERM");
        ensure!(!is_mounted(&mnt), "still mounted after the second stop");
    }
    env.done();
    Ok(())
}
