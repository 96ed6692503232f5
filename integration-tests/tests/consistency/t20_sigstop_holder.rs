//! A lease holder that stops answering (its mount process SIGSTOPped): B's conflicting
//! write/truncate completes within lease_ms + margin, B's operations on unrelated files
//! are not blocked beyond that, and after SIGCONT A reads B's data — both when A held only
//! cached (clean) state and when A held the write lease with unflushed data.
//! A's mountpoint is only touched after SIGCONT (syscalls on it block while A is stopped).

use crate::{cluster_with_mounts, names, Problems, Stopped};
use anyhow::{ensure, Context, Result};
use integration_tests::{pattern, with_timeout};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::info;

const LEASE_MS: u64 = 2000;
/// Upper bound of any operation of B while A is stopped: the lease plus a generous margin
/// (the spec promises lease + a small margin; the slack absorbs a loaded machine).
const BOUND: Duration = Duration::from_millis(LEASE_MS + 10_000);
/// How long a bounded call may hang before the test stops waiting for it.
const HANG: Duration = Duration::from_secs(60);

/// Runs `f` on a thread, returns its result and how long it took; fails when it takes more
/// than `BOUND` (after at most `HANG`).
fn timed<T: Send + 'static>(
    waits: &mut Vec<(String, Duration)>,
    what: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let start = Instant::now();
    let r = with_timeout(HANG, what, f);
    let took = start.elapsed();
    info!("B: {what}: {took:?}");
    waits.push((what.to_string(), took));
    let v = r??;
    ensure!(
        took <= BOUND,
        "{what} took {took:?} while A was stopped (bound: lease {LEASE_MS} ms + 10 s)"
    );
    Ok(v)
}

fn pread_all(f: &File, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len + 16];
    let mut off = 0;
    while off < buf.len() {
        let n = f.read_at(&mut buf[off..], off as u64)?;
        if n == 0 {
            break;
        }
        off += n;
    }
    buf.truncate(off);
    Ok(buf)
}

/// `got` is pattern `seed` of `len` bytes.
fn is_pattern(what: &str, got: &[u8], seed: u64, len: usize) -> Result<()> {
    ensure!(
        got.len() == len,
        "{what}: {} bytes, expected {len} (pattern {seed}){}",
        got.len(),
        guess(got)
    );
    pattern::check(seed, 0, got).map_err(|e| anyhow::anyhow!("{what}: {e}{}", guess(got)))
}

/// Names the pattern the data starts with, for messages.
fn guess(got: &[u8]) -> String {
    for seed in [1u64, 2, 3, 4, 5, 6] {
        let n = got.len().min(4096);
        if n > 0 && pattern::check(seed, 0, &got[..n]).is_ok() {
            return format!(" (starts with pattern {seed})");
        }
    }
    String::new()
}

/// Unrelated work of B while A is stopped: in directory `bonly`, which A never saw.
fn unrelated(waits: &mut Vec<(String, Duration)>, b: &Path, tag: &str) -> Result<()> {
    let d = b.join("bonly");
    let p = d.join(format!("f-{tag}"));
    let data = pattern::bytes(9, 0, 100_000);
    {
        let (p, data) = (p.clone(), data.clone());
        timed(
            waits,
            &format!("unrelated create+write+fsync ({tag})"),
            move || {
                let mut f = File::create(&p)?;
                f.write_all(&data)?;
                f.sync_all()?;
                Ok(())
            },
        )?;
    }
    let got = {
        let p = p.clone();
        timed(waits, &format!("unrelated read ({tag})"), move || {
            Ok(fs::read(&p)?)
        })?
    };
    ensure!(got == data, "unrelated file reads wrong data");
    let n = {
        let d = d.clone();
        timed(waits, &format!("unrelated readdir ({tag})"), move || {
            names(&d)
        })?
    };
    ensure!(n.contains(&format!("f-{tag}")), "listing {n:?}");
    let old = b.join("bonly/seed");
    let text = format!("seed-{tag}");
    timed(
        waits,
        &format!("unrelated overwrite of a B-only file ({tag})"),
        move || Ok(fs::write(&old, text)?),
    )?;
    Ok(())
}

#[test]
fn t20_sigstopped_holder_delays_by_at_most_a_lease() -> Result<()> {
    let (c, mounts) = cluster_with_mounts(Some(LEASE_MS), 2)?;
    let (a, b) = (
        mounts[0].path().to_path_buf(),
        mounts[1].path().to_path_buf(),
    );
    let mut problems = Problems::default();
    let mut waits: Vec<(String, Duration)> = Vec::new();

    info!("--- setup: B makes its own directory; A writes, fsyncs and reads two files");
    fs::create_dir(b.join("bonly"))?;
    fs::write(b.join("bonly/seed"), b"seed")?;
    let (held, dirty) = (PathBuf::from("held"), PathBuf::from("dirty"));
    for (name, seed) in [(&held, 1u64), (&dirty, 3)] {
        let mut f = File::create(a.join(name))?;
        f.write_all(&pattern::bytes(seed, 0, 64 * 1024))?;
        f.sync_all()?;
    }
    // Both mounts know both files; A caches them (attrs, pages, leases).
    for name in [&held, &dirty] {
        fs::metadata(b.join(name))?;
    }

    {
        info!("--- phase 1: A holds clean cached state of `held`; SIGSTOP A; B truncates and rewrites it");
        let fa = OpenOptions::new()
            .read(true)
            .write(true)
            .open(a.join(&held))?;
        is_pattern(
            "A's read before the stop",
            &pread_all(&fa, 65536)?,
            1,
            65536,
        )?;
        is_pattern("A's second read", &fs::read(a.join(&held))?, 1, 65536)?;
        let stopped = Stopped::stop(c.env(), &mounts[0])?;
        problems.check(
            "phase 1: B's unrelated operations before the conflict",
            unrelated(&mut waits, &b, "p1-before"),
        );
        let pb = b.join(&held);
        let r = timed(
            &mut waits,
            "phase 1: B truncates `held` to 0 (A stopped)",
            move || Ok(OpenOptions::new().write(true).open(&pb)?.set_len(0)?),
        );
        problems.check("phase 1: B's truncate completes within the bound", r);
        let pb = b.join(&held);
        let r = timed(
            &mut waits,
            "phase 1: B writes 40000 bytes of pattern 2 to `held`",
            move || {
                let mut f = OpenOptions::new().write(true).open(&pb)?;
                f.write_all(&pattern::bytes(2, 0, 40_000))?;
                Ok(())
            },
        );
        problems.check("phase 1: B's write completes within the bound", r);
        problems.check(
            "phase 1: B's unrelated operations after the conflict",
            unrelated(&mut waits, &b, "p1-after"),
        );
        problems.check(
            "phase 1: B reads its own data",
            (|| is_pattern("B's read", &fs::read(b.join(&held))?, 2, 40_000))(),
        );
        stopped.resume()?;
        info!("--- phase 1: A continued; A must read B's data (no stale read)");
        problems.check(
            "phase 1: A reads B's data through the handle opened before the stop",
            (|| {
                is_pattern(
                    "A pread on the old handle",
                    &pread_all(&fa, 65536)?,
                    2,
                    40_000,
                )
            })(),
        );
        problems.check(
            "phase 1: A stat size",
            (|| {
                let n = fs::metadata(a.join(&held))?.len();
                ensure!(n == 40_000, "A stat size {n}, expected 40000");
                Ok(())
            })(),
        );
        problems.check(
            "phase 1: A reads B's data through a fresh open",
            (|| is_pattern("A fresh read", &fs::read(a.join(&held))?, 2, 40_000))(),
        );
        problems.check(
            "phase 1: A sees B's unrelated files",
            (|| {
                let n = names(&a.join("bonly"))?;
                ensure!(
                    n.contains("f-p1-before") && n.contains("f-p1-after"),
                    "A lists bonly as {n:?}"
                );
                Ok(())
            })(),
        );
        drop(fa);
    }

    {
        info!("--- phase 2: A holds the write lease of `dirty` with unflushed data; SIGSTOP A; B overwrites it");
        let fa = OpenOptions::new()
            .read(true)
            .write(true)
            .open(a.join(&dirty))?;
        is_pattern(
            "A's read before its write",
            &pread_all(&fa, 65536)?,
            3,
            65536,
        )?;
        // Buffered in A (no fsync, handle stays open): pattern 4 over the first 64 KiB.
        fa.write_all_at(&pattern::bytes(4, 0, 65536), 0)?;
        is_pattern("A reads its own write", &pread_all(&fa, 65536)?, 4, 65536)?;
        let stopped = Stopped::stop(c.env(), &mounts[0])?;
        let pb = b.join(&dirty);
        let r = timed(
            &mut waits,
            "phase 2: B opens `dirty` with O_TRUNC and writes 30000 bytes of pattern 5",
            move || {
                let mut f = OpenOptions::new().write(true).truncate(true).open(&pb)?;
                f.write_all(&pattern::bytes(5, 0, 30_000))?;
                f.sync_all()?;
                Ok(())
            },
        );
        problems.check("phase 2: B's overwrite completes within the bound", r);
        problems.check(
            "phase 2: B's unrelated operations",
            unrelated(&mut waits, &b, "p2"),
        );
        let b_read = fs::read(b.join(&dirty)).unwrap_or_else(|e| {
            tracing::error!("B read of `dirty`: {e}");
            Vec::new()
        });
        info!(
            "B reads `dirty` while A is stopped: {} bytes{}",
            b_read.len(),
            guess(&b_read)
        );
        problems.check(
            "phase 2: B reads its own overwrite while A is stopped",
            is_pattern("B's read", &b_read, 5, 30_000),
        );
        stopped.resume()?;
        info!("--- phase 2: A continued; A must read B's data, and A's old dirty data must not come back");
        problems.check(
            "phase 2: A reads B's data through its old handle",
            (|| {
                is_pattern(
                    "A pread on the old handle",
                    &pread_all(&fa, 65536)?,
                    5,
                    30_000,
                )
            })(),
        );
        problems.check(
            "phase 2: A reads B's data through a fresh open",
            (|| is_pattern("A fresh read", &fs::read(a.join(&dirty))?, 5, 30_000))(),
        );
        // fsync and close of A's old handle: may report the lost write (EIO) or succeed,
        // but must not resurrect the data B overwrote.
        let fsync = fa.sync_all();
        info!("A fsync of its old handle after SIGCONT: {fsync:?}");
        drop(fa);
        for (who, m) in [("A", &a), ("B", &b)] {
            problems.check(
                &format!("phase 2: {who} reads B's data after A's fsync and close"),
                (|| {
                    is_pattern(
                        &format!("{who} read after A's fsync"),
                        &fs::read(m.join(&dirty))?,
                        5,
                        30_000,
                    )
                })(),
            );
        }
        let fresh = c.mount()?;
        problems.check(
            "phase 2: a fresh mount reads B's data",
            (|| is_pattern("fresh mount", &fs::read(fresh.join(&dirty))?, 5, 30_000))(),
        );
        problems.check(
            "phase 1: a fresh mount reads B's data",
            (|| is_pattern("fresh mount", &fs::read(fresh.join(&held))?, 2, 40_000))(),
        );
    }

    info!("--- waits of B while A was stopped (lease {LEASE_MS} ms):");
    for (what, d) in &waits {
        info!("    {d:>12.3?}  {what}");
    }
    let worst = waits.iter().map(|w| w.1).max().unwrap_or_default();
    info!("longest: {worst:?}");
    problems.finish().context("t20")?;
    c.done();
    Ok(())
}
