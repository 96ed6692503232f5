//! The copying cleaner through real processes: files are written, then every other MiB of
//! them is overwritten, so the first segments are about half live. `shoal clean --now`
//! copies their live half into the cleaner's log and remaps it; the reclaimer then deletes
//! the old segments. Storage use must fall to about the live data (within 1.5x of it, in
//! data bytes, plus the fixed reserve), and every file must read back byte-exact from a
//! fresh mount (no client cache) against the model. Reports write amplification and the
//! cleaner's throughput (measured, not asserted). `shoal df` shows every server and the live
//! bytes afterwards.

use crate::dir_bytes;
use anyhow::{bail, ensure, Context, Result};
use integration_tests::{pattern, TestCluster};
use proto::config::{ClusterConfig, CONFIG_FILE};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::Duration;
use tracing::info;

const FILES: u64 = 8;
const FILE: u64 = 8 << 20;
const CHUNK: u64 = 1 << 20;
/// The managers' metadata logs and checkpoints.
const RESERVE: u64 = 32 << 20;

/// The seed of chunk `i` of file `f`: odd chunks were overwritten.
fn seed(f: u64, i: u64) -> u64 {
    if i % 2 == 1 {
        1000 + f
    } else {
        f
    }
}

/// `key=value` numbers of the `clean-stats:` line.
fn stat(out: &str, key: &str) -> Result<f64> {
    let line = out
        .lines()
        .find(|l| l.starts_with("clean-stats:"))
        .with_context(|| format!("no clean-stats line:\n{out}"))?;
    for kv in line.split_whitespace() {
        if let Some(v) = kv.strip_prefix(&format!("{key}=")) {
            return Ok(v.parse()?);
        }
    }
    bail!("no {key} in {line}")
}

#[test]
fn t62_cleaner_frees_overwritten_space_and_data_reads_back() -> Result<()> {
    let c = TestCluster::init(6, 2, "4+2")?;
    // No background cleaning: on a host disk with less than the default 20% free it would
    // clean before the test measures, and this test is about `shoal clean --now`.
    let mut cfg = ClusterConfig::load(c.dir()).context("load cluster.toml")?;
    cfg.file.manager.clean_below_free_pct = 0;
    std::fs::write(c.dir().join(CONFIG_FILE), ClusterConfig::render(&cfg.file))?;
    c.start_all()?;
    c.wait_ready()?;
    let m = c.mount()?;
    let used = || -> Result<u64> {
        let mut t = 0;
        for s in c.storage_names() {
            t += dir_bytes(&c.fragment_dir(&s))?;
        }
        Ok(t)
    };
    for f in 0..FILES {
        let mut h = File::create(m.join(format!("f{f}")))?;
        for i in 0..FILE / CHUNK {
            h.write_all(&pattern::bytes(f, i * CHUNK, CHUNK as usize))?;
        }
        h.sync_all()?;
    }
    for f in 0..FILES {
        let h = OpenOptions::new()
            .write(true)
            .open(m.join(format!("f{f}")))?;
        for i in (1..FILE / CHUNK).step_by(2) {
            h.write_all_at(
                &pattern::bytes(seed(f, i), i * CHUNK, CHUNK as usize),
                i * CHUNK,
            )?;
        }
        h.sync_all()?;
    }
    let client_bytes = FILES * FILE * 3 / 2;
    let live = FILES * FILE;
    // Fully dead segments (none here) go in the background; wait for that to settle.
    std::thread::sleep(Duration::from_secs(5));
    let before = used()?;
    info!(before, live, "written and half overwritten");
    // Raw bytes of the live data with 4+2 parity, plus the reserve.
    let limit = live * 3 / 2 + RESERVE;
    ensure!(
        before > limit,
        "before cleaning, {before} bytes of fragments is already within {limit}: nothing to show"
    );

    let mut runs = 0;
    let (mut copied, mut secs) = (0.0, 0.0);
    let mut freed = false;
    while runs < 3 && !freed {
        runs += 1;
        let out = c.env().run(
            vec![
                OsString::from("clean"),
                "--cluster".into(),
                c.dir().as_os_str().to_owned(),
                "--now".into(),
            ],
            Duration::from_secs(120),
        )?;
        ensure!(out.success(), "shoal clean --now failed: {out}");
        let text = out.text();
        info!("shoal clean --now:\n{text}");
        ensure!(stat(&text, "failed")? == 0.0, "a segment failed:\n{text}");
        copied += stat(&text, "copied")?;
        secs += stat(&text, "secs")?;
        freed = c
            .wait_until(
                Duration::from_secs(30),
                "the cleaned segments are reclaimed",
                || used().is_ok_and(|u| u <= limit),
            )
            .is_ok();
    }
    let after = used()?;
    ensure!(
        freed,
        "after {runs} clean runs, {after} bytes of fragments (before {before}, limit {limit})"
    );
    let wa = (client_bytes as f64 + copied) / client_bytes as f64;
    info!(
        before,
        after,
        runs,
        copied,
        secs,
        write_amplification = wa,
        cleaner_mb_s = copied / 1e6 / secs.max(1e-3),
        "cleaned"
    );
    println!(
        "t62: fragments {before} -> {after} bytes; cleaner copied {copied} bytes in {secs:.2} s ({:.1} MB/s) over {runs} run(s); write amplification {wa:.3} (client {client_bytes} bytes)",
        copied / 1e6 / secs.max(1e-3)
    );

    let df = c.env().run(
        vec![
            OsString::from("df"),
            "--cluster".into(),
            c.dir().as_os_str().to_owned(),
        ],
        Duration::from_secs(60),
    )?;
    info!("shoal df:\n{}", df.stdout);
    ensure!(
        df.success()
            && df.stdout.contains("writable: ")
            && df.stdout.contains("64.0 MiB live")
            && c.storage_names()
                .iter()
                .all(|n| df.stdout.contains(n.as_str())),
        "shoal df does not show every server, the writable space and 64 MiB live: {df}"
    );

    // Read everything back from a fresh mount: from the log, not a client cache.
    let m = c.remount(m)?;
    let mut buf = vec![0u8; CHUNK as usize];
    for f in 0..FILES {
        let h = File::open(m.join(format!("f{f}")))?;
        ensure!(h.metadata()?.len() == FILE, "f{f} has the wrong size");
        for i in 0..FILE / CHUNK {
            h.read_exact_at(&mut buf, i * CHUNK)?;
            pattern::check(seed(f, i), i * CHUNK, &buf)
                .map_err(|e| anyhow::anyhow!("f{f} chunk {i}: {e}"))?;
        }
    }
    m.unmount(Duration::from_secs(30))?;
    c.done();
    Ok(())
}
