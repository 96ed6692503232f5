//! [consistency-faults] A fault-injecting linearizability run: three mounts, two threads
//! each, doing reads, writes (half of them fsynced) and rename-replaces of a few shared
//! 8-byte registers, while a bounded fault loop kills -9 and restarts managers and
//! SIGSTOPs and resumes mounts. Every operation's invoke and complete time is recorded;
//! a call that failed (EIO after a lost lease, a refused reclaim) has an unknown effect:
//! a failed write stays in the history as one that may take effect at any time after its
//! invoke, a failed read is dropped. Each file's history, closed by a read of every mount
//! after the faults, must be linearizable (`integration_tests::linearizability`): so no
//! write that returned (and no fsync that returned 0) is missing at the end.
//! `t55` runs for 60 s in the normal suite; `t56` (ignored) runs `SHOAL_FAULT_SECS`
//! (default 600) seconds: `cargo test --release -p integration-tests --test consistency
//! -- --ignored t56`. Not covered yet: cutting one client's network (a partition).
//! Known gap it counts (does not fail on): an open() of a register path racing with a
//! rename that replaces it can fail with ENOENT (the client looked up the old inode, which
//! the rename freed, and does not look the name up again); such an operation did nothing.

use crate::{set_lease_ms, Problems, Stopped};
use anyhow::{Context, Result};
use integration_tests::linearizability::{
    check_register, latency_range, Operation, RegOp, Verdict,
};
use integration_tests::{MountGuard, TestCluster};
use rand::{Rng, SeedableRng};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use tracing::info;

const MOUNTS: usize = 3;
const THREADS_PER_MOUNT: usize = 2;
const FILES: usize = 3;
/// Short leases keep each grace period (lease + 0.5 s) and each SIGSTOP short.
const LEASE_MS: u64 = 2000;
/// How long a mount stays stopped: longer than its lease, so the managers give up on it.
const STOP_FOR: Duration = Duration::from_millis(LEASE_MS + 1500);
/// Pause between two faults.
const FAULT_EVERY: Duration = Duration::from_secs(6);
/// A failed write may take effect at any time after its invoke: it completes "never".
const NEVER: Duration = Duration::from_secs(86_400 * 365);
/// Bound for the workers to finish their last operation after the fault loop ended.
const DRAIN_BOUND: Duration = Duration::from_secs(120);

struct Rec {
    file: usize,
    op: Operation,
}

#[derive(Default)]
struct Outcome {
    recs: Vec<Rec>,
    failed_reads: u64,
    failed_writes: u64,
    renames: u64,
    /// open() of a register path that failed (ENOENT while a rename replaced it): the
    /// operation did not happen.
    failed_opens: u64,
}

fn reg(root: &Path, f: usize) -> PathBuf {
    root.join(format!("reg{f}"))
}

fn read_reg(p: &Path) -> Result<u64> {
    let f = File::open(p).context("open")?;
    let mut buf = [0u8; 8];
    let n = f.read_at(&mut buf, 0)?;
    anyhow::ensure!(n == 8, "read {n} bytes: {buf:?}");
    Ok(u64::from_le_bytes(buf))
}

/// pwrite of 8 bytes at 0 to an open register, fsynced when `sync`.
fn write_reg(f: &File, v: u64, sync: bool) -> Result<()> {
    let n = f.write_at(&v.to_le_bytes(), 0)?;
    anyhow::ensure!(n == 8, "wrote {n} bytes");
    if sync {
        f.sync_all()?;
    }
    Ok(())
}

/// Writes `v` to a new file and renames it over the register. `Ok(false)`: the new file
/// could not be written, so the register was not touched.
fn rename_reg(root: &Path, f: usize, tmp: &str, v: u64) -> Result<bool> {
    let t = root.join(tmp);
    let made = (|| -> Result<()> {
        let file = File::create(&t)?;
        file.write_all_at(&v.to_le_bytes(), 0)?;
        file.sync_all()?;
        Ok(())
    })();
    if made.is_err() {
        let _ = fs::remove_file(&t);
        return Ok(false);
    }
    fs::rename(&t, reg(root, f))?;
    Ok(true)
}

fn worker(
    mount: usize,
    thread: usize,
    root: PathBuf,
    seed: u64,
    start: Arc<Barrier>,
    stop: Arc<AtomicBool>,
) -> Outcome {
    let tid = (mount * THREADS_PER_MOUNT + thread) as u64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (tid + 1).wrapping_mul(0x9e37_79b9));
    let client = format!("m{mount}/t{thread}");
    let mut out = Outcome::default();
    start.wait();
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) && seq < 1_000_000 {
        seq += 1;
        let file = rng.random_range(0..FILES);
        let p = reg(&root, file);
        let roll: f64 = rng.random();
        let invoke = Instant::now();
        if roll < 0.5 {
            match read_reg(&p) {
                Ok(v) => out.recs.push(Rec {
                    file,
                    op: Operation {
                        client: client.clone(),
                        op: RegOp::Read(v),
                        invoke,
                        complete: Instant::now(),
                    },
                }),
                Err(e) => {
                    out.failed_reads += 1;
                    tracing::info!("{client}: read reg{file} failed: {e:#}");
                }
            }
            continue;
        }
        let v = ((tid + 1) << 32) | seq;
        let done = if roll < 0.9 {
            match OpenOptions::new().write(true).open(&p) {
                Ok(f) => write_reg(&f, v, rng.random_bool(0.5)).map(|()| true),
                Err(e) => {
                    out.failed_opens += 1;
                    tracing::info!("{client}: open reg{file} for writing failed: {e}");
                    continue;
                }
            }
        } else {
            out.renames += 1;
            rename_reg(&root, file, &format!(".tmp-{tid}-{seq}"), v)
        };
        let complete = match done {
            Ok(true) => Instant::now(),
            Ok(false) => continue,
            Err(e) => {
                out.failed_writes += 1;
                tracing::info!(
                    "{client}: write {v:#x} to reg{file} failed (effect unknown): {e:#}"
                );
                invoke + NEVER
            }
        };
        out.recs.push(Rec {
            file,
            op: Operation {
                client: client.clone(),
                op: RegOp::Write(v),
                invoke,
                complete,
            },
        });
    }
    out
}

/// Counts of faults injected.
#[derive(Default, Debug)]
struct Faults {
    manager_kills: u64,
    mount_stops: u64,
}

fn fault_loop(c: &TestCluster, mounts: &[MountGuard], secs: u64, seed: u64) -> Result<Faults> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let managers = c.manager_names();
    let mut faults = Faults::default();
    let end = Instant::now() + Duration::from_secs(secs);
    for round in 0..100_000u64 {
        if Instant::now() >= end {
            break;
        }
        std::thread::sleep(FAULT_EVERY);
        if round % 2 == 0 {
            let m = &managers[rng.random_range(0..managers.len())];
            info!("--- fault {round}: kill -9 {m} and restart it");
            c.kill9(m)?;
            c.start(m).with_context(|| format!("restart {m}"))?;
            faults.manager_kills += 1;
        } else {
            let m = &mounts[rng.random_range(0..mounts.len())];
            info!("--- fault {round}: SIGSTOP {} for {STOP_FOR:?}", m.name());
            let s = Stopped::stop(c.env(), m)?;
            std::thread::sleep(STOP_FOR);
            s.resume()?;
            faults.mount_stops += 1;
        }
    }
    Ok(faults)
}

pub fn run(secs: u64) -> Result<()> {
    let seed: u64 = std::env::var("SHOAL_LIN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("t55 fault linearizability seed: {seed} ({secs} s)");
    let c = TestCluster::init(6, 2, "4+2")?;
    set_lease_ms(c.dir(), LEASE_MS)?;
    c.env().set_deadline(Duration::from_secs(secs + 600));
    c.start_all()?;
    let mounts: Vec<MountGuard> = (0..MOUNTS).map(|_| c.mount()).collect::<Result<_>>()?;

    info!("--- create {FILES} registers (8 zero bytes each, fsynced)");
    for f in 0..FILES {
        let file = File::create(reg(mounts[0].path(), f))?;
        file.write_all_at(&0u64.to_le_bytes(), 0)?;
        file.sync_all()?;
    }

    info!(
        "--- {} threads for {secs} s under faults",
        MOUNTS * THREADS_PER_MOUNT
    );
    let start = Arc::new(Barrier::new(MOUNTS * THREADS_PER_MOUNT + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for (mi, m) in mounts.iter().enumerate() {
        for t in 0..THREADS_PER_MOUNT {
            let (root, start, stop) = (m.path().to_path_buf(), start.clone(), stop.clone());
            handles.push(std::thread::spawn(move || {
                worker(mi, t, root, seed, start, stop)
            }));
        }
    }
    start.wait();
    let origin = Instant::now();
    let faults = fault_loop(&c, &mounts, secs, seed);
    stop.store(true, Ordering::SeqCst);
    let joined =
        integration_tests::with_timeout(DRAIN_BOUND, "the workers' last operations", move || {
            handles
                .into_iter()
                .map(|h| h.join().map_err(|_| anyhow::anyhow!("worker panicked")))
                .collect::<Result<Vec<Outcome>>>()
        })??;
    let faults = faults?;
    let took = origin.elapsed();

    let mut per_file: Vec<Vec<Operation>> = (0..FILES).map(|_| Vec::new()).collect();
    let (mut failed_reads, mut failed_writes, mut renames, mut failed_opens) = (0, 0, 0, 0);
    for o in joined {
        failed_opens += o.failed_opens;
        failed_reads += o.failed_reads;
        failed_writes += o.failed_writes;
        renames += o.renames;
        for r in o.recs {
            per_file[r.file].push(r.op);
        }
    }
    info!("--- after the faults: every mount reads every register once more");
    for (mi, m) in mounts.iter().enumerate() {
        for (f, ops) in per_file.iter_mut().enumerate() {
            let invoke = Instant::now();
            let p = reg(m.path(), f);
            let v =
                integration_tests::with_timeout(DRAIN_BOUND, "final read", move || read_reg(&p))??;
            ops.push(Operation {
                client: format!("final/m{mi}"),
                op: RegOp::Read(v),
                invoke,
                complete: Instant::now(),
            });
        }
    }
    // A failed write whose value nobody read may as well not have happened: in any
    // linearization another write overwrites it before the next read. Dropping those keeps
    // the checker's search small (each failed write is otherwise pending to the end).
    let mut dropped_unread = 0;
    for ops in per_file.iter_mut() {
        let read: std::collections::HashSet<u64> = ops
            .iter()
            .filter_map(|o| match o.op {
                RegOp::Read(v) => Some(v),
                RegOp::Write(_) => None,
            })
            .collect();
        let before = ops.len();
        ops.retain(|o| match o.op {
            RegOp::Write(v) => o.complete < o.invoke + NEVER || read.contains(&v),
            RegOp::Read(_) => true,
        });
        dropped_unread += before - ops.len();
    }
    info!("{dropped_unread} failed writes were never read: left out of the histories");
    let total: usize = per_file.iter().map(Vec::len).sum();
    info!(
        "workload: {total} ops in {took:?} ({renames} rename-replaces attempted; {failed_writes} writes and \
         {failed_reads} reads failed); faults: {} manager kills, {} mount stops",
        faults.manager_kills, faults.mount_stops
    );
    eprintln!(
        "t55: {total} ops ({failed_writes} failed writes, {failed_reads} failed reads, {failed_opens} failed opens for writing, {renames} renames) in {took:?}; \
         {} manager kills, {} mount stops",
        faults.manager_kills, faults.mount_stops
    );
    let mut problems = Problems::default();
    for (f, ops) in per_file.iter().enumerate() {
        let (lo, hi) = latency_range(ops);
        info!("reg{f}: {} ops, latency {lo:?} .. {hi:?}", ops.len());
        let r = match check_register(0, ops, origin) {
            Verdict::Linearizable => Ok(()),
            Verdict::Violation(s) => Err(anyhow::anyhow!("reg{f} (seed {seed}): {s}")),
            Verdict::Unknown(s) => Err(anyhow::anyhow!("reg{f} (seed {seed}): checker: {s}")),
        };
        problems.check(&format!("reg{f} history under faults is linearizable"), r);
    }
    problems.finish()?;
    c.done();
    Ok(())
}

#[test]
#[ignore = "finds stale reads under faults (notes/leases.md, 'Found by consistency/t56'); \
            still fails with replies carrying the granting incarnation"]
fn t55_faults_linearizable_60s() -> Result<()> {
    run(60)
}

#[test]
#[ignore = "long: SHOAL_FAULT_SECS seconds (default 600)"]
fn t56_faults_linearizable_long() -> Result<()> {
    let secs = std::env::var("SHOAL_FAULT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    run(secs)
}
