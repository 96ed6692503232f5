//! Measurement, not a pass/fail check of speed (ignored: minutes of I/O): rebuild
//! throughput of `shoal rebuild --now` (and `--now --nice`, paced) after a kill -9 on 7 storage servers with 4+2, on an
//! idle cluster and again on a second cluster while a client writes and fsyncs files, next
//! to that client's write throughput before the kill. Run:
//! `cargo test --release -p integration-tests --test lifecycle t70 -- --ignored --nocapture`
//! (`SHOAL_T70_MIB`, default 256, sets the data written before the kill;
//! `SHOAL_T70_IDLE_ONLY=1` measures only the idle rebuild; `SHOAL_T70_PARALLEL=N` passes
//! `--parallel N`).

use crate::write_pattern;
use anyhow::{ensure, Context, Result};
use integration_tests::faults::fragment_files;
use integration_tests::TestCluster;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FILE: usize = 16 << 20;

/// Writes and fsyncs 8 MiB files under `dir` until `stop`; counts bytes.
fn writer(dir: PathBuf, stop: Arc<AtomicBool>, bytes: Arc<AtomicU64>) -> Result<()> {
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        write_pattern(&dir.join(format!("load{i}")), 500 + i, 8 << 20)?;
        bytes.fetch_add(8 << 20, Ordering::SeqCst);
        i += 1;
    }
    Ok(())
}

/// MB/s of the `rebuilt ... (X MB/s)` summary.
fn rebuild_rate(out: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.starts_with("rebuilt "))?;
    let end = line.find(" MB/s)")?;
    let start = line[..end].rfind('(')? + 1;
    line[start..end].parse().ok()
}

/// One cluster: write, (optionally measure a client's baseline and load it during the
/// rebuild), kill -9 the fullest server, `shoal rebuild --now`. Returns (rebuild MB/s,
/// client MB/s before the kill, after it without a rebuild, and during the rebuild).
fn one(mib: usize, load: bool, nice: bool) -> Result<(f64, f64, f64, f64)> {
    let c = TestCluster::init(7, 2, "4+2")?;
    c.start_all()?;
    let m = c.mount()?;
    for i in 0..mib * (1 << 20) / FILE {
        write_pattern(&m.join(format!("f{i}")), i as u64, FILE)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    // A client's write rate for 10 s, in a directory of its own.
    let measure = |name: &str| -> Result<f64> {
        let d = m.join(name);
        std::fs::create_dir_all(&d)?;
        let t = Instant::now();
        let h = {
            let (s, b) = (stop.clone(), bytes.clone());
            std::thread::spawn(move || writer(d, s, b))
        };
        std::thread::sleep(Duration::from_secs(10));
        stop.store(true, Ordering::SeqCst);
        h.join().expect("writer thread")?;
        let rate = bytes.load(Ordering::SeqCst) as f64 / 1e6 / t.elapsed().as_secs_f64();
        stop.store(false, Ordering::SeqCst);
        bytes.store(0, Ordering::SeqCst);
        Ok(rate)
    };
    let baseline = if load { measure("before")? } else { 0.0 };
    let mut by_bytes = Vec::new();
    for name in c.storage_names() {
        let mut b = 0;
        for f in fragment_files(&c.fragment_dir(&name))? {
            b += std::fs::metadata(&f)?.len();
        }
        by_bytes.push((b, name));
    }
    by_bytes.sort();
    let (_, first) = by_bytes.pop().context("servers")?;
    c.kill9(&first)?;
    let dead = if load { measure("dead")? } else { 0.0 };
    let sub = m.join("during");
    std::fs::create_dir_all(&sub)?;
    let h = load.then(|| {
        let (s, b) = (stop.clone(), bytes.clone());
        std::thread::spawn(move || writer(sub, s, b))
    });
    let t = Instant::now();
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "rebuild".as_ref(),
        "--cluster".as_ref(),
        c.dir().as_os_str(),
        "--now".as_ref(),
    ];
    if nice {
        args.push("--nice".as_ref());
    }
    let parallel = std::env::var("SHOAL_T70_PARALLEL").unwrap_or_default();
    if !parallel.is_empty() {
        args.push("--parallel".as_ref());
        args.push(parallel.as_ref());
    }
    let out = c.env().run(args, Duration::from_secs(600))?;
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    if let Some(h) = h {
        h.join().expect("writer thread")?;
    }
    let during = bytes.load(Ordering::SeqCst) as f64 / 1e6 / secs;
    // Under load the scan also sees stripes still being appended (a few fragments landed):
    // they are reported as not rebuildable now, which makes the exit code 1.
    ensure!(
        out.success() || (load && out.stdout.contains(" 0 stripes failed")),
        "rebuild failed: {out}"
    );
    let rate = rebuild_rate(&out.stdout).context("no rebuild rate")?;
    println!("t70 (load={load}, nice={nice}): {}", out.stdout.trim());
    m.unmount(Duration::from_secs(120))?;
    c.done();
    Ok((rate, baseline, dead, during))
}

#[test]
#[ignore = "measurement: minutes of I/O; run by hand for the README numbers"]
fn t70_rebuild_rate_with_and_without_load() -> Result<()> {
    let mib: usize = std::env::var("SHOAL_T70_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let (idle, _, _, _) = one(mib, false, false)?;
    if std::env::var_os("SHOAL_T70_IDLE_ONLY").is_some() {
        println!("t70: {mib} MiB written; rebuild {idle:.1} MB/s idle");
        return Ok(());
    }
    let (loaded, base, dead, during) = one(mib, true, false)?;
    println!(
        "t70: {mib} MiB written; rebuild {idle:.1} MB/s idle, {loaded:.1} MB/s under load; client writes {base:.1} MB/s before the kill, {dead:.1} MB/s with the server dead and no rebuild, {during:.1} MB/s during the rebuild"
    );
    // The same under load with the rebuild paced by the Nice controller (--nice, as the
    // background rebuild runs).
    let (n_loaded, n_base, n_dead, n_during) = one(mib, true, true)?;
    println!(
        "t70 nice: rebuild {n_loaded:.1} MB/s under load; client writes {n_base:.1} MB/s before the kill, {n_dead:.1} MB/s dead, {n_during:.1} MB/s during the paced rebuild ({:.0}% of before, {:.0}% of dead)",
        100.0 * n_during / n_base.max(0.001),
        100.0 * n_during / n_dead.max(0.001)
    );
    Ok(())
}

#[test]
fn t70_parses_the_rebuild_summary() {
    let s = "scanning\nrebuilt 12 fragments of 12 stripes (40.0 MiB) in 0.5 s (83.9 MB/s); 0 stripes failed\n";
    assert_eq!(rebuild_rate(s), Some(83.9));
}
