//! Measurement, not a pass/fail check of speed (ignored: it only prints rates): a client's
//! write rate (8 MiB files, each fsynced) on 7 storage servers with 4+2 for
//! `SHOAL_T71_SECS` (default 10) seconds, then again right after a kill -9 of one storage
//! server. Run:
//! `cargo test --release -p integration-tests --test lifecycle t71 -- --ignored --nocapture`

use crate::write_pattern;
use anyhow::Result;
use integration_tests::TestCluster;
use std::time::{Duration, Instant};

/// MB/s of 8 MiB files written and fsynced under `dir` for `secs`.
fn rate(dir: &std::path::Path, secs: u64, seed: u64) -> Result<f64> {
    std::fs::create_dir_all(dir)?;
    let t = Instant::now();
    let mut bytes = 0u64;
    let mut i = 0;
    while t.elapsed() < Duration::from_secs(secs) {
        write_pattern(&dir.join(format!("w{i}")), seed + i, 8 << 20)?;
        bytes += 8 << 20;
        i += 1;
    }
    Ok(bytes as f64 / 1e6 / t.elapsed().as_secs_f64())
}

#[test]
#[ignore = "measurement: prints write rates before and after a storage server dies"]
fn t71_write_rate_with_a_dead_server() -> Result<()> {
    let secs: u64 = std::env::var("SHOAL_T71_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let c = TestCluster::init(7, 2, "4+2")?;
    c.start_all()?;
    c.wait_ready()?;
    let m = c.mount()?;
    let before = rate(&m.join("before"), secs, 100)?;
    c.kill9(&c.storage_names()[3])?;
    let dead = rate(&m.join("dead"), secs, 10_000)?;
    println!(
        "t71: client writes {before:.1} MB/s with 7 servers, {dead:.1} MB/s in the {secs} s after one is killed ({:.0}%)",
        100.0 * dead / before.max(0.001)
    );
    m.unmount(Duration::from_secs(120))?;
    c.done();
    Ok(())
}
