//! Cooperative caching through real mounts (issue 12): `shoal up --clients 3`; a file read
//! on mount 1 is served to mount 2 from mount 1's cache (counted in `shoal.stats`), with
//! identical bytes; after mount 3 overwrites it, mount 2 reads the new bytes.

use anyhow::{bail, ensure, Context, Result};
use integration_tests::{is_mounted, pattern, wait_for, TestEnv};
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tracing::info;

const T: Duration = Duration::from_secs(20);
const LEN: usize = 4 << 20;

/// `getfattr -n shoal.stats --only-values MNT`, parsed (bounded by `T`).
fn stats(mnt: &Path) -> Result<serde_json::Value> {
    let mut child = Command::new("getfattr")
        .args(["-n", "shoal.stats", "--only-values"])
        .arg(mnt)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("getfattr (apt-get install attr)")?;
    let started = Instant::now();
    while child.try_wait()?.is_none() {
        if started.elapsed() > T {
            let _ = child.kill();
            let _ = child.wait();
            bail!("getfattr on {} did not finish within {T:?}", mnt.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "getfattr failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn count(v: &serde_json::Value, key: &str) -> Result<u64> {
    v.get(key)
        .and_then(|x| x.as_u64())
        .with_context(|| format!("shoal.stats has no {key}: {v}"))
}

#[test]
fn t80_coop_peer_reads_through_real_mounts() -> Result<()> {
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
    {
        info!("--- every mount shows the counters");
        for p in [&mnt, &mnt2, &mnt3] {
            let s = stats(p)?;
            for k in [
                "reads_local",
                "reads_peer",
                "reads_storage",
                "bytes_served_to_peers",
                "forwards_accepted",
                "forwards_dropped",
            ] {
                count(&s, k)?;
            }
        }
    }
    let data = pattern::bytes(80, 0, LEN);
    {
        info!("--- mount 3 writes 4 MiB; mount 1 reads it from the storage servers");
        let mut f = fs::File::create(mnt3.join("shared"))?;
        f.write_all(&data)?;
        f.sync_all()?;
        drop(f);
        let before = stats(&mnt)?;
        ensure!(
            fs::read(mnt.join("shared"))? == data,
            "mount 1 read other bytes"
        );
        let after = stats(&mnt)?;
        ensure!(
            count(&after, "reads_storage")? > count(&before, "reads_storage")?,
            "mount 1 read nothing from storage: {before} -> {after}"
        );
    }
    {
        info!("--- mount 2 reads it: served by mount 1's cache, bytes identical");
        let (b1, b2) = (stats(&mnt)?, stats(&mnt2)?);
        ensure!(
            fs::read(mnt2.join("shared"))? == data,
            "mount 2 read other bytes"
        );
        let (a1, a2) = (stats(&mnt)?, stats(&mnt2)?);
        let peer_blocks = count(&a2, "reads_peer")? - count(&b2, "reads_peer")?;
        ensure!(
            peer_blocks >= (LEN as u64 / 65536) / 2,
            "mount 2 took only {peer_blocks} blocks from a peer: {b2} -> {a2}"
        );
        let served = count(&a1, "bytes_served_to_peers")? - count(&b1, "bytes_served_to_peers")?;
        ensure!(
            served >= peer_blocks * 65536,
            "mount 1 served {served} bytes for {peer_blocks} peer blocks"
        );
        info!(peer_blocks, served, "peer reads counted");
    }
    {
        info!("--- mount 3 overwrites the file: mount 2 reads the new bytes");
        let new = pattern::bytes(81, 0, LEN);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(mnt3.join("shared"))?;
        f.write_all(&new)?;
        f.sync_all()?;
        drop(f);
        let got = fs::read(mnt2.join("shared"))?;
        ensure!(
            got == new,
            "mount 2 read stale bytes after the overwrite (first difference at {:?})",
            pattern::first_difference(&got, &new)
        );
        ensure!(
            fs::read(mnt.join("shared"))? == new,
            "mount 1 read stale bytes"
        );
    }
    let status = env.stop(m.name(), Signal::SIGTERM, T)?;
    ensure!(status.success(), "shoal up exited with {status}");
    env.done();
    Ok(())
}
