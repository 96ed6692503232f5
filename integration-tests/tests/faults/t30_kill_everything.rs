//! kill -9 of every process (all nodes and the mount) after files were written, some
//! fsynced and some not; after a restart every fsynced file is intact and the rest is
//! readable. Done twice, so that recovery of a recovered state is covered too.

use crate::{check_pattern, sync_dir, write_pattern};
use anyhow::{ensure, Context, Result};
use integration_tests::{MountGuard, TestCluster};
use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use tracing::info;

const SIZES: [usize; 8] = [0, 1, 4095, 4096, 65_537, (1 << 20) + 3, 3 << 20, 8 << 20];

/// The durable files: (relative path, seed, size).
fn durable(round: u64) -> Vec<(String, u64, usize)> {
    SIZES
        .iter()
        .enumerate()
        .map(|(i, len)| (format!("durable{round}/f{i}"), round * 100 + i as u64, *len))
        .collect()
}

fn crash_all(c: &TestCluster, m: MountGuard) -> Result<()> {
    m.kill9()?;
    for n in c.node_names() {
        c.kill9(&n)?;
    }
    Ok(())
}

fn check_round(m: &Path, round: u64) -> Result<()> {
    let files = durable(round);
    for (p, seed, len) in &files {
        check_pattern(&m.join(p), *seed, *len).with_context(|| format!("fsynced file {p}"))?;
    }
    let mut names: Vec<String> = fs::read_dir(m.join(format!("durable{round}")))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    let mut want: Vec<String> = (0..SIZES.len()).map(|i| format!("f{i}")).collect();
    want.push("renamed".into());
    want.sort();
    ensure!(names == want, "durable{round}/ lists {names:?}");
    ensure!(fs::read(m.join(format!("durable{round}/renamed")))? == b"renamed and fsynced");
    Ok(())
}

/// Whatever survived of the unsynced files must be readable and no longer than written.
fn check_volatile(m: &Path, round: u64) -> Result<()> {
    let dir = m.join(format!("volatile{round}"));
    let Ok(rd) = fs::read_dir(&dir) else {
        info!(round, "the unsynced directory did not survive (allowed)");
        return Ok(());
    };
    let mut survivors = 0;
    for e in rd {
        let e = e?;
        let mut data = Vec::new();
        fs::File::open(e.path())?
            .read_to_end(&mut data)
            .with_context(|| format!("read {}", e.path().display()))?;
        ensure!(
            data.len() <= 2 << 20,
            "{} grew to {}",
            e.path().display(),
            data.len()
        );
        survivors += 1;
    }
    info!(round, survivors, "unsynced files readable after the crash");
    Ok(())
}

fn write_round(m: &Path, round: u64) -> Result<()> {
    let d = m.join(format!("durable{round}"));
    fs::create_dir(&d)?;
    for (p, seed, len) in durable(round) {
        write_pattern(&m.join(p), seed, len, true)?;
    }
    fs::write(d.join("to-rename"), b"renamed and fsynced")?;
    fs::File::open(d.join("to-rename"))?.sync_all()?;
    fs::rename(d.join("to-rename"), d.join("renamed"))?;
    {
        // An fsynced overwrite in the middle of the 3 MiB file: the new bytes must win.
        let (p, seed, _) = &durable(round)[6];
        let f = fs::OpenOptions::new().write(true).open(m.join(p))?;
        let piece = integration_tests::pattern::bytes(*seed, 1 << 20, 4096);
        f.write_all_at(&piece, 1 << 20)?;
        f.sync_all()?;
    }
    sync_dir(&d)?;
    sync_dir(m)?;
    let v = m.join(format!("volatile{round}"));
    fs::create_dir(&v)?;
    for i in 0..5 {
        write_pattern(&v.join(format!("v{i}")), 999, (i + 1) * 300_000, false)?;
    }
    Ok(())
}

#[test]
fn t30_kill_every_process_and_recover() -> Result<()> {
    let c = TestCluster::init(6, 2, "4+2")?;
    c.start_all()?;
    let m = c.mount()?;
    {
        info!(
            "--- round 1: fsynced files (0 B .. 8 MiB, a rename, an overwrite) and unsynced ones"
        );
        write_round(m.path(), 1)?;
    }
    {
        info!("--- kill -9 the mount and all 8 nodes");
        crash_all(&c, m)?;
    }
    let m = {
        info!("--- restart everything and mount");
        c.start_all()?;
        c.mount()?
    };
    {
        info!("--- every fsynced file is intact; unsynced ones are readable");
        check_round(m.path(), 1)?;
        check_volatile(m.path(), 1)?;
    }
    {
        info!("--- round 2 on the recovered cluster, then crash again");
        write_round(m.path(), 2)?;
        crash_all(&c, m)?;
        c.start_all()?;
    }
    let m = c.mount()?;
    {
        info!("--- both rounds are intact after the second crash");
        check_round(m.path(), 1)?;
        check_round(m.path(), 2)?;
        check_volatile(m.path(), 2)?;
    }
    c.done();
    Ok(())
}
