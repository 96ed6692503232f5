//! Readdir with stable cookies: a directory emptied by unlinking each entry as it is read
//! (what `rm -rf` does), and a listing while another mount creates and removes files. An
//! entry present for the whole listing must be returned exactly once.

use crate::mounted_cluster;
use anyhow::{ensure, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;

const FILES: usize = 10_000;

fn create_files(dir: &Path, prefix: &str, n: usize) -> Result<()> {
    let handles: Vec<_> = (0..2)
        .map(|t| {
            let dir: PathBuf = dir.to_path_buf();
            let prefix = prefix.to_string();
            std::thread::spawn(move || -> std::io::Result<()> {
                for i in (t..n).step_by(2) {
                    fs::File::create_new(dir.join(format!("{prefix}{i:05}")))?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("creator thread panicked"))??;
    }
    Ok(())
}

/// Names returned more than once, and `expected` names never returned.
fn once_each(seen: &[String], expected: &BTreeSet<String>) -> (Vec<String>, Vec<String>) {
    let mut counts = BTreeMap::<&str, usize>::new();
    for n in seen {
        *counts.entry(n).or_default() += 1;
    }
    let twice = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, _)| n.to_string())
        .collect();
    let missed = expected
        .iter()
        .filter(|n| !counts.contains_key(n.as_str()))
        .cloned()
        .collect();
    (twice, missed)
}

#[test]
fn t95_unlink_while_listing_empties_the_directory() -> Result<()> {
    let (c, m) = mounted_cluster(&[])?;
    c.env().set_deadline(Duration::from_secs(600));
    let dir = m.join("doomed");
    fs::create_dir(&dir)?;
    {
        info!("--- create {FILES} files");
        let start = Instant::now();
        create_files(&dir, "f", FILES)?;
        info!(elapsed = ?start.elapsed(), "created");
    }
    {
        info!("--- readdir and unlink each name as it is read, then rmdir");
        let start = Instant::now();
        let mut seen = Vec::with_capacity(FILES);
        for e in fs::read_dir(&dir)? {
            let name = e?.file_name().to_string_lossy().into_owned();
            fs::remove_file(dir.join(&name)).with_context(|| format!("unlink {name}"))?;
            seen.push(name);
        }
        info!(elapsed = ?start.elapsed(), returned = seen.len(), "listed and unlinked");
        let expected: BTreeSet<String> = (0..FILES).map(|i| format!("f{i:05}")).collect();
        let (twice, missed) = once_each(&seen, &expected);
        ensure!(
            twice.is_empty(),
            "{} names returned twice, e.g. {:?}",
            twice.len(),
            &twice[..twice.len().min(5)]
        );
        ensure!(
            missed.is_empty(),
            "{} names never returned, e.g. {:?}",
            missed.len(),
            &missed[..missed.len().min(5)]
        );
        let left = fs::read_dir(&dir)?.count();
        ensure!(left == 0, "{left} entries left after the loop");
        fs::remove_dir(&dir).context("rmdir after delete-while-listing")?;
    }
    {
        info!("--- the same with rm -rf");
        let dir = m.join("rmrf");
        fs::create_dir(&dir)?;
        create_files(&dir, "g", 3000)?;
        let out = std::process::Command::new("rm")
            .arg("-rf")
            .arg(&dir)
            .output()?;
        ensure!(
            out.status.success(),
            "rm -rf failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(!dir.exists(), "rm -rf left the directory");
    }
    c.done();
    Ok(())
}

#[test]
fn t95_listing_while_another_mount_creates_and_removes() -> Result<()> {
    let (c, m) = mounted_cluster(&[])?;
    c.env().set_deadline(Duration::from_secs(600));
    let other = c.mount()?;
    let dir = m.join("busy");
    fs::create_dir(&dir)?;
    let stable = 4000;
    let doomed = 1000;
    {
        info!("--- create {stable} files that stay and {doomed} that the other mount removes");
        create_files(&dir, "keep", stable)?;
        create_files(&dir, "gone", doomed)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let churned = Arc::new(AtomicUsize::new(0));
    let churn = {
        info!("--- the other mount creates and removes files in the directory meanwhile");
        let dir = other.join("busy");
        let (stop, churned) = (stop.clone(), churned.clone());
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                fs::File::create_new(dir.join(format!("new{i:06}")))?;
                if i < doomed {
                    fs::remove_file(dir.join(format!("gone{i:05}")))?;
                }
                i += 1;
                churned.store(i, Ordering::Release);
            }
            Ok(())
        })
    };
    let (seen, during) = {
        info!("--- list slowly, a few entries at a time");
        // Let the churn start before the listing.
        let start = Instant::now();
        while churned.load(Ordering::Acquire) < 20 && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let before = churned.load(Ordering::Acquire);
        let mut seen = Vec::new();
        for (k, e) in fs::read_dir(&dir)?.enumerate() {
            seen.push(e?.file_name().to_string_lossy().into_owned());
            if k % 32 == 0 {
                // Give the other mount time to change the directory between pages.
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        (seen, churned.load(Ordering::Acquire) - before)
    };
    stop.store(true, Ordering::Release);
    churn
        .join()
        .map_err(|_| anyhow::anyhow!("churn thread panicked"))??;
    let churned = churned.load(Ordering::Acquire);
    info!(
        returned = seen.len(),
        churned, during, "listed while churning"
    );
    {
        info!("--- every file present throughout was returned exactly once");
        ensure!(
            during >= 50,
            "the other mount made only {during} changes while listing"
        );
        let expected: BTreeSet<String> = (0..stable).map(|i| format!("keep{i:05}")).collect();
        let (twice, missed) = once_each(&seen, &expected);
        ensure!(
            twice.is_empty(),
            "{} names returned twice, e.g. {:?}",
            twice.len(),
            &twice[..twice.len().min(5)]
        );
        ensure!(
            missed.is_empty(),
            "{} files present throughout never returned, e.g. {:?}",
            missed.len(),
            &missed[..missed.len().min(5)]
        );
        let removed_early = seen.iter().filter(|n| n.starts_with("gone")).count();
        info!(
            removed_early,
            "entries removed meanwhile that were still returned"
        );
    }
    c.done();
    Ok(())
}
