//! fallocate(PUNCH_HOLE) gives space back: the cleaner's survey (`shoal clean`) counts the
//! punched bytes as no longer live, and after `shoal clean --now` the file still reads
//! back with its hole.

use crate::write_pattern;
use anyhow::{ensure, Result};
use integration_tests::{pattern, TestCluster};
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::time::Duration;

const SIZE: usize = 16 << 20;

fn clean(c: &TestCluster, now: bool) -> Result<String> {
    let mut args: Vec<OsString> = vec![
        "clean".into(),
        "--cluster".into(),
        c.dir().as_os_str().to_owned(),
    ];
    if now {
        args.push("--now".into());
    }
    let out = c.env().run(args, Duration::from_secs(60))?;
    ensure!(out.success(), "shoal clean failed: {out}");
    Ok(out.text())
}

/// Whether the survey shows a data log with `mib` MiB live.
fn shows_live(survey: &str, mib: &str) -> bool {
    survey.lines().any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        l.starts_with("log") && cols.len() > 5 && cols[4] == mib && cols[5] == "MiB"
    })
}

#[test]
fn t66_punched_bytes_stop_being_live() -> Result<()> {
    let c = TestCluster::init(6, 2, "4+2")?;
    c.start_all()?;
    c.wait_ready()?;
    let m = c.mount()?;
    let p = m.join("file");
    write_pattern(&p, 3, SIZE)?;
    let survey = clean(&c, false)?;
    ensure!(
        shows_live(&survey, "16.0"),
        "the survey does not show 16 MiB live before the punch:\n{survey}"
    );
    let (at, len) = (4u64 << 20, 8u64 << 20);
    {
        let f = OpenOptions::new().read(true).write(true).open(&p)?;
        let mode = nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
            | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE;
        nix::fcntl::fallocate(f.as_raw_fd(), mode, at as libc::off_t, len as libc::off_t)?;
        f.sync_all()?;
    }
    let survey = clean(&c, false)?;
    ensure!(
        shows_live(&survey, "8.0"),
        "the survey does not show 8 MiB live after punching 8 MiB:\n{survey}"
    );
    let ran = clean(&c, true)?;
    ensure!(ran.contains("reclaimed"), "no reclaim report:\n{ran}");
    let mut want = pattern::bytes(3, 0, SIZE);
    want[at as usize..(at + len) as usize].fill(0);
    let m = c.remount(m)?;
    let got = std::fs::read(m.join("file"))?;
    ensure!(
        pattern::first_difference(&got, &want).is_none(),
        "after cleaning, the file differs at byte {:?}",
        pattern::first_difference(&got, &want)
    );
    m.unmount(Duration::from_secs(30))?;
    c.done();
    Ok(())
}
