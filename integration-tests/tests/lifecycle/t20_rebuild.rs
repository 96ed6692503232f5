//! Test (b) of issue 9, seven storage servers and 4+2: write and fsync files, kill -9 one
//! storage server, force the rebuild (`shoal rebuild --now`), then kill two *other*
//! servers: every fsynced file still reads back byte-exact (three servers are gone, more
//! than the parity covers, so this needs the rebuilt fragments, found on servers other than
//! their placement's home).

use crate::{check_pattern, write_pattern};
use anyhow::{ensure, Result};
use integration_tests::faults::fragment_files;
use integration_tests::TestCluster;
use std::time::Duration;
use tracing::info;

const REBUILD_TIMEOUT: Duration = Duration::from_secs(180);

fn sizes() -> Vec<usize> {
    let mut v = vec![16 << 20];
    v.extend((0..10).map(|i| 1 + i * 71_003));
    v
}

#[test]
fn t20_rebuild_then_lose_two_more() -> Result<()> {
    let c = TestCluster::init(7, 2, "4+2")?;
    c.start_all()?;
    let m = c.mount()?;
    info!("--- write and fsync files, unmount");
    for (i, len) in sizes().into_iter().enumerate() {
        write_pattern(&m.join(format!("f{i}")), 7 + i as u64, len)?;
    }
    m.unmount(Duration::from_secs(60))?;

    // The server holding the most fragment bytes (so file data surely needs the rebuild),
    // and two others.
    let mut by_bytes = Vec::new();
    for name in c.storage_names() {
        let mut bytes = 0;
        for f in fragment_files(&c.fragment_dir(&name))? {
            bytes += std::fs::metadata(&f)?.len();
        }
        by_bytes.push((bytes, name));
    }
    by_bytes.sort();
    let (first_bytes, first) = by_bytes.pop().expect("seven servers");
    let others: Vec<String> = by_bytes
        .iter()
        .rev()
        .take(2)
        .map(|(_, n)| n.clone())
        .collect();
    info!(
        first,
        first_bytes,
        ?others,
        "--- kill -9 the fullest server, rebuild now"
    );
    c.kill9(&first)?;
    let run = |now: bool| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "rebuild".as_ref(),
            "--cluster".as_ref(),
            c.dir().as_os_str(),
        ];
        if now {
            args.push("--now".as_ref());
        }
        c.env().run(args, REBUILD_TIMEOUT)
    };
    let before = run(false)?;
    info!("shoal rebuild:\n{}", before.stdout);
    ensure!(
        !before.success() && before.stdout.contains("missing 1 fragment"),
        "rebuild shows no stripe missing a fragment with {first} dead: {before}"
    );
    let out = run(true)?;
    info!("shoal rebuild --now:\n{}", out.stdout);
    ensure!(out.success(), "rebuild failed: {out}");
    ensure!(out.stdout.contains("rebuilt "), "no summary: {out}");
    let after = run(false)?;
    ensure!(
        after.stdout.contains(" 0 degraded"),
        "stripes still degraded after the rebuild: {after}"
    );

    info!("--- kill two other storage servers, read everything back");
    for o in &others {
        c.kill9(o)?;
    }
    let m = c.mount()?;
    for (i, len) in sizes().into_iter().enumerate() {
        check_pattern(&m.join(format!("f{i}")), 7 + i as u64, len)?;
    }
    m.unmount(Duration::from_secs(60))?;
    c.done();
    Ok(())
}
