//! Three mounts, several threads each, random reads and writes of unique values on a few
//! shared files, each file a single 8-byte register (pwrite/pread of exactly 8 bytes at
//! offset 0). Every operation's invoke and complete time is recorded; each file's history
//! must be linearizable (checked by `integration_tests::linearizability`). The seed is
//! printed; set `SHOAL_LIN_SEED` to replay a workload (timing still differs).

use crate::{cluster_with_mounts, Problems};
use anyhow::{bail, ensure, Context, Result};
use integration_tests::linearizability::{
    check_register, describe, latency_range, Operation, RegOp, Verdict,
};
use rand::{Rng, SeedableRng};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use tracing::info;

const MOUNTS: usize = 3;
const THREADS_PER_MOUNT: usize = 2;
const FILES: usize = 3;
/// Operations per thread: 6 threads × 150 = 900, about 300 per file.
const OPS_PER_THREAD: usize = 150;
const READ_PERCENT: f64 = 0.5;
/// Bound of the whole workload (a hung operation fails the test instead of hanging it).
const WORKLOAD_BOUND: Duration = Duration::from_secs(150);

/// One recorded operation, with the file it touched.
struct Rec {
    file: usize,
    op: Operation,
}

fn worker(
    mount: usize,
    thread: usize,
    root: PathBuf,
    seed: u64,
    start: Arc<Barrier>,
) -> Result<Vec<Rec>> {
    let tid = (mount * THREADS_PER_MOUNT + thread) as u64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (tid + 1).wrapping_mul(0x9e37_79b9));
    let files: Vec<File> = (0..FILES)
        .map(|f| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(root.join(format!("reg{f}")))
                .with_context(|| format!("m{mount}/t{thread}: open reg{f}"))
        })
        .collect::<Result<_>>()?;
    let client = format!("m{mount}/t{thread}");
    let mut out = Vec::with_capacity(OPS_PER_THREAD);
    start.wait();
    for seq in 0..OPS_PER_THREAD as u64 {
        let file = rng.random_range(0..FILES);
        let f = &files[file];
        let op = if rng.random_bool(READ_PERCENT) {
            let mut buf = [0u8; 8];
            let invoke = Instant::now();
            let n = f.read_at(&mut buf, 0);
            let complete = Instant::now();
            let n = n.with_context(|| format!("{client}: pread reg{file} (op {seq})"))?;
            if n != 8 {
                bail!("{client}: pread of reg{file} returned {n} bytes, expected 8 (op {seq}): {buf:?}");
            }
            Operation {
                client: client.clone(),
                op: RegOp::Read(u64::from_le_bytes(buf)),
                invoke,
                complete,
            }
        } else {
            let v = ((tid + 1) << 32) | (seq + 1);
            let invoke = Instant::now();
            let n = f.write_at(&v.to_le_bytes(), 0);
            let complete = Instant::now();
            let n = n.with_context(|| format!("{client}: pwrite reg{file} (op {seq})"))?;
            if n != 8 {
                bail!("{client}: pwrite of reg{file} wrote {n} bytes, expected 8 (op {seq})");
            }
            Operation {
                client: client.clone(),
                op: RegOp::Write(v),
                invoke,
                complete,
            }
        };
        out.push(Rec { file, op });
    }
    Ok(out)
}

/// Reads the 8-byte register with O_DIRECT (diagnostic: bypasses the kernel page cache).
fn read_direct(p: &std::path::Path) -> Result<u64> {
    #[repr(align(4096))]
    struct Page([u8; 4096]);
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(p)?;
    let mut page = Page([0u8; 4096]);
    let n = f.read_at(&mut page.0, 0)?;
    ensure!(n == 8, "O_DIRECT read returned {n} bytes");
    let mut b = [0u8; 8];
    b.copy_from_slice(&page.0[..8]);
    Ok(u64::from_le_bytes(b))
}

#[test]
fn t30_shared_registers_are_linearizable() -> Result<()> {
    let seed: u64 = std::env::var("SHOAL_LIN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    info!("linearizability workload seed: {seed} (replay with SHOAL_LIN_SEED={seed})");
    eprintln!("t30 linearizability seed: {seed}");
    let (c, mounts) = cluster_with_mounts(None, MOUNTS)?;

    info!("--- create {FILES} registers (8 zero bytes each) on mount 0; every mount sees them");
    for f in 0..FILES {
        let p = mounts[0].join(format!("reg{f}"));
        let file = File::create(&p)?;
        file.write_all_at(&0u64.to_le_bytes(), 0)?;
        file.sync_all()?;
    }
    for m in &mounts {
        for f in 0..FILES {
            let n = fs::metadata(m.join(format!("reg{f}")))?.len();
            ensure!(n == 8, "{}: reg{f} has size {n}", m.name());
        }
    }

    info!(
        "--- {} threads ({THREADS_PER_MOUNT} per mount) × {OPS_PER_THREAD} random ops",
        MOUNTS * THREADS_PER_MOUNT
    );
    let start = Arc::new(Barrier::new(MOUNTS * THREADS_PER_MOUNT + 1));
    let mut handles = Vec::new();
    for (mi, m) in mounts.iter().enumerate() {
        for t in 0..THREADS_PER_MOUNT {
            let (root, start) = (m.path().to_path_buf(), start.clone());
            handles.push(std::thread::spawn(move || worker(mi, t, root, seed, start)));
        }
    }
    start.wait();
    let origin = Instant::now();
    let joined = integration_tests::with_timeout(WORKLOAD_BOUND, "the workload", move || {
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("worker panicked"))
                    .and_then(|r| r)
            })
            .collect::<Vec<Result<Vec<Rec>>>>()
    })?;
    let took = origin.elapsed();
    let mut problems = Problems::default();
    let mut per_file: Vec<Vec<Operation>> = (0..FILES).map(|_| Vec::new()).collect();
    for r in joined {
        match r {
            Ok(recs) => {
                for rec in recs {
                    per_file[rec.file].push(rec.op);
                }
            }
            Err(e) => problems.check("worker", Err(e)),
        }
    }
    let total: usize = per_file.iter().map(Vec::len).sum();
    info!(
        "workload done: {total} ops in {took:?} ({:.0} ops/s)",
        total as f64 / took.as_secs_f64().max(1e-9)
    );

    for (f, ops) in per_file.iter().enumerate() {
        let writes = ops
            .iter()
            .filter(|o| matches!(o.op, RegOp::Write(_)))
            .count();
        let (lo, hi) = latency_range(ops);
        info!(
            "reg{f}: {} ops ({writes} writes, {} reads), latency {lo:?} .. {hi:?}",
            ops.len(),
            ops.len() - writes
        );
        let t = Instant::now();
        let verdict = check_register(0, ops, origin);
        info!(
            "reg{f}: checked in {:?}: {}",
            t.elapsed(),
            match &verdict {
                Verdict::Linearizable => "linearizable",
                Verdict::Violation(_) => "NOT linearizable",
                Verdict::Unknown(_) => "unknown",
            }
        );
        let r = match verdict {
            Verdict::Linearizable => Ok(()),
            Verdict::Violation(s) => Err(anyhow::anyhow!("reg{f} (seed {seed}): {s}")),
            Verdict::Unknown(s) => Err(anyhow::anyhow!("reg{f} (seed {seed}): checker: {s}")),
        };
        problems.check(&format!("reg{f} history is linearizable"), r);
    }

    info!("--- final values agree on every mount");
    problems.check(
        "final values agree on every mount",
        (|| {
            for (f, ops) in per_file.iter().enumerate() {
                let vals: Vec<Vec<u8>> = mounts
                    .iter()
                    .map(|m| fs::read(m.join(format!("reg{f}"))))
                    .collect::<std::io::Result<_>>()?;
                if !vals.iter().all(|v| v == &vals[0] && v.len() == 8) {
                    let direct: Vec<String> = mounts
                        .iter()
                        .map(|m| match read_direct(&m.join(format!("reg{f}"))) {
                            Ok(v) => format!("{v:#x}"),
                            Err(e) => format!("error {e}"),
                        })
                        .collect();
                    let shown: Vec<String> = vals
                        .iter()
                        .map(|v| match <[u8; 8]>::try_from(v.as_slice()) {
                            Ok(b) => format!("{:#x}", u64::from_le_bytes(b)),
                            Err(_) => format!("{v:?}"),
                        })
                        .collect();
                    // Diagnostic: do they converge later (e.g. after a write-back interval)?
                    let name = format!("reg{f}");
                    let later = integration_tests::wait_for(
                        Duration::from_secs(10),
                        "the mounts agree",
                        || {
                            let v: Vec<u64> = mounts
                                .iter()
                                .map(|m| read_direct(&m.join(&name)))
                                .collect::<Result<_>>()?;
                            ensure!(v.iter().all(|x| *x == v[0]), "{v:x?}");
                            Ok(v[0])
                        },
                    );
                    bail!(
                        "reg{f}: after every handle was closed, mounts 0..{MOUNTS} read {shown:?}; \
                         with O_DIRECT (bypassing the kernel page cache) they read {direct:?}; \
                         polling for 10 s: {later:#x?}"
                    );
                }
                let last = u64::from_le_bytes(vals[0][..8].try_into()?);
                // The final value must be one a write could have left last.
                if !ops.is_empty() && last != 0 {
                    let i = ops.iter().position(|o| o.op == RegOp::Write(last));
                    ensure!(
                        i.is_some(),
                        "reg{f}: final value {last:#x} was never written"
                    );
                    let i = i.unwrap_or_default();
                    // No write may have been invoked after this one completed.
                    let later: Vec<usize> = (0..ops.len())
                        .filter(|&j| {
                            matches!(ops[j].op, RegOp::Write(_)) && ops[j].invoke > ops[i].complete
                        })
                        .collect();
                    ensure!(
                        later.is_empty(),
                        "reg{f}: final value {last:#x} but later writes exist:\n{}{}",
                        describe(ops, &[i], origin),
                        describe(ops, &later[..later.len().min(5)], origin)
                    );
                }
            }
            Ok(())
        })(),
    );
    problems.finish()?;
    c.done();
    Ok(())
}
