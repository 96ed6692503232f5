//! `shoal bench coop` on the mounts of `shoal up --clients 3` with a tiny working set: the
//! JSON parses, its counts are consistent (peer reads with cooperation on, none with it
//! off, every byte checked), and the bench leaves no files and every mount's switch as it
//! found it. Timings are never asserted.

use anyhow::{ensure, Context, Result};
use integration_tests::{is_mounted, wait_for, TestEnv};
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::fs;
use std::time::Duration;
use tracing::info;

const T: Duration = Duration::from_secs(20);

fn num(v: &serde_json::Value, path: &[&str]) -> Result<u64> {
    let mut x = v;
    for k in path {
        x = x.get(k).with_context(|| format!("no {path:?} in {v}"))?;
    }
    x.as_u64()
        .with_context(|| format!("{path:?} is not a count in {v}"))
}

#[test]
fn t81_bench_coop_counts_where_reads_were_served() -> Result<()> {
    let env = TestEnv::new()?;
    let mnt = env.path().join("mnt");
    let (mnt2, mnt3) = (env.path().join("mnt-2"), env.path().join("mnt-3"));
    let state = env.path().join("state");
    fs::create_dir(&mnt)?;
    let args: Vec<OsString> = vec![
        "up".into(),
        mnt.clone().into(),
        "--state".into(),
        state.into(),
        "--clients".into(),
        "3".into(),
    ];
    let m = env.spawn_mount(args, &mnt)?;
    wait_for(T, "the second and third mounts", || {
        ensure!(is_mounted(&mnt2) && is_mounted(&mnt3), "not mounted yet");
        Ok(())
    })?;
    let json = env.path().join("coop.json");
    {
        info!("--- a bench needs two mounts of one cluster");
        let out = env.run(["bench", "coop", mnt.to_str().context("path")?], T)?;
        ensure!(!out.success(), "one mount must be refused: {out}");
    }
    {
        info!("--- shoal bench coop on the three mounts, 8 MiB working set");
        let out = env.run(
            [
                OsString::from("bench"),
                "coop".into(),
                mnt.clone().into(),
                mnt2.clone().into(),
                mnt3.clone().into(),
                "--working-set-mb".into(),
                "8".into(),
                "--latency-samples".into(),
                "8".into(),
                "--json".into(),
                json.clone().into(),
            ],
            Duration::from_secs(180),
        )?;
        ensure!(out.success(), "shoal bench coop failed: {out}");
        ensure!(out.stdout.contains("peer_hit_fraction"), "no table: {out}");
    }
    {
        info!("--- the JSON parses and its counts are consistent");
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&json)?)?;
        info!(%v, "report");
        ensure!(num(&v, &["version"])? == 1, "{v}");
        ensure!(num(&v, &["working_set_bytes"])? == 8 << 20, "{v}");
        let passes = num(&v, &["passes"])?;
        let read = 3 * passes * (8 << 20);
        ensure!(num(&v, &["on", "bytes_read"])? == read, "{v}");
        ensure!(num(&v, &["off", "bytes_read"])? == read, "{v}");
        // Latency: mount 1 reads 8 samples, mount 2 a warm-up block and the 8 samples twice,
        // and a third time when it could drop the page cache (as root).
        let dropped = v["latency"]["page_cache_dropped"]
            .as_bool()
            .with_context(|| format!("no latency.page_cache_dropped: {v}"))?;
        let latency = if dropped { 4 * 8 + 3 } else { 3 * 8 + 2 } * 65536;
        ensure!(
            num(&v, &["verified_bytes"])? == 2 * read + latency,
            "not every byte read was checked: {v}"
        );
        ensure!(
            num(&v, &["on", "reads_peer"])? > 0,
            "no peer reads with cooperation on: {v}"
        );
        ensure!(
            num(&v, &["off", "reads_peer"])? == 0,
            "peer reads with cooperation off: {v}"
        );
        ensure!(
            num(&v, &["off", "reads_storage"])? > 0,
            "cold reads without storage reads: {v}"
        );
        ensure!(
            num(&v, &["off", "local_misses"])? == num(&v, &["off", "reads_storage"])?,
            "{v}"
        );
        for (phase, mounts) in [("on", 3), ("off", 3)] {
            let per = v[phase]["per_mount"].as_array().context("per_mount")?;
            ensure!(per.len() == mounts, "{v}");
            let sum: u64 = per.iter().filter_map(|c| c["reads_storage"].as_u64()).sum();
            ensure!(sum == num(&v, &[phase, "reads_storage"])?, "{v}");
        }
        let f = v["peer_hit_fraction"]
            .as_f64()
            .context("peer_hit_fraction")?;
        ensure!(f > 0.0 && f <= 1.0, "{v}");
        ensure!(v["storage_read_ratio"].is_number(), "{v}");
        ensure!(
            num(&v, &["latency", "peer_samples"])? > 0,
            "no peer-served sample: {v}"
        );
        ensure!(
            num(&v, &["latency", "storage_samples"])? > 0,
            "no storage-served sample: {v}"
        );
        ensure!(v["peer_vs_storage_latency"].is_number(), "{v}");
    }
    {
        info!("--- no files left, every mount cooperates again");
        for p in [&mnt, &mnt2, &mnt3] {
            let left: Vec<_> = fs::read_dir(p)?.collect::<Result<_, _>>()?;
            ensure!(left.is_empty(), "{} holds {left:?}", p.display());
            let out = std::process::Command::new("getfattr")
                .args(["-n", "shoal.peer_reads", "--only-values"])
                .arg(p)
                .output()?;
            ensure!(out.stdout == b"1", "{}: peer_reads {:?}", p.display(), out);
        }
    }
    let status = env.stop(m.name(), Signal::SIGTERM, T)?;
    ensure!(status.success(), "shoal up exited with {status}");
    env.done();
    Ok(())
}
