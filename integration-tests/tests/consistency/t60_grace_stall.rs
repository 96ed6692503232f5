//! [consistency-faults] Measurement (ignored; run by hand): the stall of reads and writes
//! right after both managers are killed (-9) and restarted: no write leases held, a client
//! holding write leases on files it made durable, and one holding them with buffered data;
//! and the reclaim messages per client (from the mount's log line "reclaiming write
//! leases", plus its Renew and Hello). Prints a table; asserts only that every read returns
//! the latest completed write.
//! `cargo test --release -p integration-tests --test consistency -- --ignored t60 --nocapture`

use anyhow::{ensure, Result};
use integration_tests::{with_timeout, TestCluster};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};
use tracing::info;

const FILES: usize = 20;
const BOUND: Duration = Duration::from_secs(120);

fn restart_managers(c: &TestCluster) -> Result<()> {
    for m in c.manager_names() {
        c.kill9(&m)?;
    }
    for m in c.manager_names() {
        c.start(&m)?;
    }
    Ok(())
}

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    if v.is_empty() {
        return "-".into();
    }
    format!("median {:?}, worst {:?}", v[v.len() / 2], v[v.len() - 1])
}

fn write(p: &Path, v: u64, sync: bool) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(p)?;
    f.write_all_at(&v.to_le_bytes(), 0)?;
    if sync {
        f.sync_all()?;
    }
    Ok(())
}

fn read(p: &Path) -> Result<u64> {
    let f = File::open(p)?;
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, 0)?;
    Ok(u64::from_le_bytes(b))
}

/// Reclaimed inodes logged by a mount so far.
fn reclaimed_inodes(log: &Path) -> (u64, u64) {
    let text = fs::read_to_string(log).unwrap_or_default();
    let mut rounds = 0;
    let mut inodes = 0;
    for l in text
        .lines()
        .filter(|l| l.contains("reclaiming write leases"))
    {
        rounds += 1;
        if let Some(n) = l
            .split("inodes=")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<u64>().ok())
        {
            inodes += n;
        }
    }
    (rounds, inodes)
}

#[test]
#[ignore = "measurement: prints stall numbers"]
fn t60_grace_stall() -> Result<()> {
    let c = TestCluster::init(6, 2, "4+2")?;
    c.start_all()?;
    let (a, b) = (c.mount()?, c.mount()?);
    let mut report = Vec::new();
    for (n, (case, held, buffered)) in [
        ("no write leases held", false, false),
        ("A holds write leases on files it made durable", true, false),
        ("A holds write leases with buffered writes", true, true),
    ]
    .into_iter()
    .enumerate()
    {
        info!("--- {case}");
        let dir = format!("d{n}");
        fs::create_dir(a.path().join(&dir))?;
        for i in 0..FILES {
            write(&a.path().join(&dir).join(format!("f{i}")), 1, true)?;
        }
        if !held {
            // B reads every file: A's write leases are flushed away (and their ends logged).
            for i in 0..FILES {
                ensure!(read(&b.path().join(&dir).join(format!("f{i}")))? == 1);
            }
        }
        if buffered {
            for i in 0..FILES {
                write(&a.path().join(&dir).join(format!("f{i}")), 2, false)?;
            }
        }
        // Let the ends of flushed leases reach the log (group commit runs in the background).
        std::thread::sleep(Duration::from_secs(2));
        let before = reclaimed_inodes(&c.env().log_path(a.name()));
        restart_managers(&c)?;
        let want = if buffered { 2 } else { 1 };
        let (bp, ap) = (b.path().join(&dir), a.path().join(&dir));
        let (reads, writes) = with_timeout(
            BOUND,
            "reads and writes after the restart",
            move || -> Result<_> {
                let mut reads = Vec::new();
                let mut writes = Vec::new();
                for i in 0..FILES {
                    let t = Instant::now();
                    let v = read(&bp.join(format!("f{i}")))?;
                    reads.push(t.elapsed());
                    ensure!(
                        v == want,
                        "B read {v} from f{i}, the latest completed write is {want}"
                    );
                }
                for i in 0..FILES {
                    let t = Instant::now();
                    write(&ap.join(format!("g{i}")), 3, true)?;
                    writes.push(t.elapsed());
                }
                Ok((reads, writes))
            },
        )??;
        let after = reclaimed_inodes(&c.env().log_path(a.name()));
        let line = format!(
            "{case}: B's reads {} | A's create+write+fsync {} | A reclaimed {} inodes in {} round(s): {} messages",
            stats(reads),
            stats(writes),
            after.1 - before.1,
            after.0 - before.0,
            // Per manager that restarted: the Renew that learns it, a Hello, one reclaim per inode.
            if after.0 > before.0 { 2 * (after.0 - before.0) + (after.1 - before.1) } else { 0 }
        );
        info!("{line}");
        report.push(line);
    }
    for l in &report {
        eprintln!("t60: {l}");
    }
    c.done();
    Ok(())
}
