//! One directory with 100,000 entries: create, count through readdir, look up, remove some.

use crate::mounted_cluster;
use anyhow::{ensure, Result};
use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tracing::info;

const ENTRIES: usize = 100_000;
const THREADS: usize = 2;

fn name(i: usize) -> String {
    format!("file-{i:06}")
}

#[test]
fn t90_hundred_thousand_entries() -> Result<()> {
    let (c, m) = mounted_cluster(&[])?;
    c.env().set_deadline(Duration::from_secs(900));
    let dir = m.join("big");
    fs::create_dir(&dir)?;
    {
        info!("--- create {ENTRIES} empty files from {THREADS} threads");
        let start = Instant::now();
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let dir: PathBuf = dir.clone();
                std::thread::spawn(move || -> std::io::Result<()> {
                    for i in (t..ENTRIES).step_by(THREADS) {
                        fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .open(dir.join(name(i)))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("creator thread panicked"))??;
        }
        info!(elapsed = ?start.elapsed(), "created");
    }
    {
        info!("--- readdir returns exactly {ENTRIES} distinct names");
        let start = Instant::now();
        let mut seen = HashSet::with_capacity(ENTRIES);
        let mut total = 0usize;
        for e in fs::read_dir(&dir)? {
            seen.insert(e?.file_name().to_string_lossy().into_owned());
            total += 1;
        }
        info!(elapsed = ?start.elapsed(), "listed");
        ensure!(
            total == ENTRIES,
            "readdir returned {total} entries, expected {ENTRIES}"
        );
        ensure!(
            seen.len() == ENTRIES,
            "readdir returned {} distinct names of {total}",
            seen.len()
        );
        let missing: Vec<String> = (0..ENTRIES)
            .map(name)
            .filter(|n| !seen.contains(n))
            .take(5)
            .collect();
        ensure!(
            missing.is_empty(),
            "names missing from readdir, e.g. {missing:?}"
        );
    }
    {
        info!("--- lookups of a sample, and remove 1000 entries");
        for i in (0..ENTRIES).step_by(997) {
            ensure!(fs::metadata(dir.join(name(i)))?.is_file());
        }
        for i in 0..1000 {
            fs::remove_file(dir.join(name(i * 100)))?;
        }
        let count = fs::read_dir(&dir)?.count();
        ensure!(count == ENTRIES - 1000, "after removing 1000: {count}");
    }
    let m = c.remount(m)?;
    {
        info!("--- after remount: the count holds");
        let count = fs::read_dir(m.join("big"))?.count();
        ensure!(count == ENTRIES - 1000, "after remount: {count}");
    }
    c.done();
    Ok(())
}
