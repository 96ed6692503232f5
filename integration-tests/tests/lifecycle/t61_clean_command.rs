//! `shoal clean --cluster DIR [--now]` against a live cluster: the survey lists the data
//! log of a mount with its live bytes, and after a delete, `--now` (or the background
//! reclaimer, whichever comes first) gives the space back.

use crate::{dir_bytes, write_pattern};
use anyhow::{ensure, Result};
use integration_tests::TestCluster;
use std::ffi::OsString;
use std::fs;
use std::time::Duration;

const SIZE: usize = 16 << 20;
const RESERVE: u64 = 32 << 20;

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

#[test]
fn t61_clean_shows_and_reclaims() -> Result<()> {
    let c = TestCluster::init(6, 2, "4+2")?;
    c.start_all()?;
    c.wait_ready()?;
    let m = c.mount()?;
    let p = m.join("file");
    write_pattern(&p, 7, SIZE)?;
    let survey = clean(&c, false)?;
    // One data log (the mount's), holding the file's bytes as live data.
    ensure!(
        survey.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            l.starts_with("log") && cols.len() > 5 && cols[4] == "16.0" && cols[5] == "MiB"
        }),
        "the survey does not show the mount's log with 16 MiB live:\n{survey}"
    );
    ensure!(survey.contains("total"), "no total line:\n{survey}");
    fs::remove_file(&p)?;
    fs::File::open(m.path())?.sync_all()?;
    let used = || -> u64 {
        c.storage_names()
            .iter()
            .map(|s| dir_bytes(&c.fragment_dir(s)).unwrap_or(u64::MAX / 8))
            .sum()
    };
    let ran = clean(&c, true)?;
    ensure!(ran.contains("reclaimed"), "no reclaim report:\n{ran}");
    c.wait_until(
        Duration::from_secs(60),
        "the deleted file's space is back",
        || used() <= RESERVE,
    )?;
    m.unmount(Duration::from_secs(30))?;
    c.done();
    Ok(())
}
