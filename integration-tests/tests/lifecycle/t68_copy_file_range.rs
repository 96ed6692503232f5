//! Issue [lifecycle] item 7: copy_file_range(2) as extent sharing, through a real mount.
//! A 64 MiB copy moves no data (the storage servers' fragment bytes do not grow by the
//! copied size), both files read back byte-exact, overwriting either leaves the other
//! alone, the cleaner relocating extents both files share keeps both correct, and deleting
//! the source keeps the copy readable after a cleaner pass.

use crate::{check_pattern, dir_bytes, write_pattern};
use anyhow::{ensure, Context, Result};
use integration_tests::{pattern, TestCluster};
use proto::config::{ClusterConfig, CONFIG_FILE};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::Duration;
use tracing::info;

const SIZE: usize = 64 << 20;
const MIB: usize = 1 << 20;

/// Copies all of `src` to a new file `dst` with copy_file_range(2), in as many calls as
/// the kernel needs; the bytes copied.
fn copy_file_range(src: &Path, dst: &Path) -> Result<u64> {
    let from = File::open(src).with_context(|| format!("open {}", src.display()))?;
    let to = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dst)
        .with_context(|| format!("create {}", dst.display()))?;
    let len = from.metadata()?.len();
    let (mut off_in, mut off_out) = (0i64, 0i64);
    let mut calls = 0;
    while (off_in as u64) < len {
        calls += 1;
        ensure!(calls < 10_000, "copy_file_range makes no progress");
        let left = (len - off_in as u64) as usize;
        let n =
            integration_tests::sys::copy_file_range(&from, &mut off_in, &to, &mut off_out, left)
                .context("copy_file_range")?;
        if n == 0 {
            break;
        }
    }
    to.sync_all()?;
    Ok(off_out as u64)
}

fn clean_now(c: &TestCluster) -> Result<String> {
    let args: Vec<OsString> = vec![
        "clean".into(),
        "--cluster".into(),
        c.dir().as_os_str().to_owned(),
        "--now".into(),
    ];
    let out = c.env().run(args, Duration::from_secs(120))?;
    ensure!(out.success(), "shoal clean --now failed: {out}");
    Ok(out.text())
}

/// A number of the `clean-stats:` line of `shoal clean`.
fn stat(report: &str, key: &str) -> Option<u64> {
    let line = report.lines().find(|l| l.starts_with("clean-stats:"))?;
    let field = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))?;
    field.parse().ok()
}

/// Overwrites `[off, off + len)` of `p` with pattern `seed` (at the same offsets) and fsyncs.
fn overwrite(p: &Path, seed: u64, off: usize, len: usize) -> Result<()> {
    let f = OpenOptions::new().write(true).open(p)?;
    f.write_all_at(&pattern::bytes(seed, off as u64, len), off as u64)?;
    f.sync_all()?;
    Ok(())
}

/// What a file of pattern `base` reads as after `(seed, off, len)` overwrites.
fn expected(base: u64, overwrites: &[(u64, usize, usize)]) -> Vec<u8> {
    let mut want = pattern::bytes(base, 0, SIZE);
    for (seed, off, len) in overwrites {
        want[*off..off + len].copy_from_slice(&pattern::bytes(*seed, *off as u64, *len));
    }
    want
}

fn check_exact(p: &Path, want: &[u8]) -> Result<()> {
    let got = std::fs::read(p).with_context(|| format!("read {}", p.display()))?;
    ensure!(
        got.len() == want.len(),
        "{}: {} bytes, want {}",
        p.display(),
        got.len(),
        want.len()
    );
    if let Some(at) = pattern::first_difference(&got, want) {
        anyhow::bail!("{} differs at byte {at}", p.display());
    }
    Ok(())
}

#[test]
fn t68_copy_file_range_shares_extents() -> Result<()> {
    let c = TestCluster::init(6, 2, "4+2")?;
    // No background cleaning: on a host disk with less than the default 20% free, the
    // managers' own cleaner cleaned the same segments during `shoal clean --now` and the
    // command's remaps then found them moved (CI, 2026-12-06: "copied 26214400 bytes and
    // remapped 0"); this test is about the command.
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
    // Both in one directory: one manager owns both files, so their extents can be shared.
    let (src, dst) = (m.join("src"), m.join("dst"));
    write_pattern(&src, 11, SIZE)?;
    let before = used()?;
    let copied = copy_file_range(&src, &dst)?;
    ensure!(copied == SIZE as u64, "copied {copied} bytes of {SIZE}");
    std::fs::File::open(m.path())?.sync_all()?;
    let after = used()?;
    info!(before, after, "fragment bytes around a {SIZE}-byte copy");
    // A data copy would add SIZE * 6/4 bytes of fragments; sharing adds metadata only.
    ensure!(
        after < before + (SIZE / 8) as u64,
        "storage grew by {} bytes for a {SIZE}-byte copy: data was copied, not shared",
        after - before
    );
    check_pattern(&src, 11, SIZE)?;
    check_pattern(&dst, 11, SIZE)?;

    // Overwriting the source leaves the copy alone, and the other way round.
    overwrite(&src, 12, 0, 3 * MIB)?;
    overwrite(&dst, 13, 40 * MIB, 2 * MIB + 17)?;
    let mut src_writes = vec![(12, 0, 3 * MIB)];
    let mut dst_writes = vec![(13, 40 * MIB, 2 * MIB + 17)];
    check_exact(&src, &expected(11, &src_writes))?;
    check_exact(&dst, &expected(11, &dst_writes))?;

    // Every other MiB overwritten in both files: the original segments are half dead and
    // their other half is shared by both files. The cleaner relocates those shared extents.
    for i in (8..SIZE / MIB).step_by(2) {
        overwrite(&src, 14, i * MIB, MIB)?;
        overwrite(&dst, 15, i * MIB, MIB)?;
        src_writes.push((14, i * MIB, MIB));
        dst_writes.push((15, i * MIB, MIB));
    }
    let report = clean_now(&c)?;
    info!("first cleaner pass:\n{report}");
    // The live halves are shared: each is copied once and remapped in both files.
    let (copied, moved) = (
        stat(&report, "copied").context("clean-stats copied")?,
        stat(&report, "moved").context("clean-stats moved")?,
    );
    ensure!(
        copied > 0 && moved >= copied * 3 / 2,
        "the cleaner copied {copied} bytes and remapped {moved}: shared extents were not copied once"
    );
    let m = c.remount(m)?;
    let (src, dst) = (m.join("src"), m.join("dst"));
    check_exact(&src, &expected(11, &src_writes))?;
    check_exact(&dst, &expected(11, &dst_writes))?;

    // Deleting the source keeps the copy readable after a cleaner pass.
    std::fs::remove_file(&src)?;
    std::fs::File::open(m.path())?.sync_all()?;
    let report = clean_now(&c)?;
    info!("second cleaner pass:\n{report}");
    let m = c.remount(m)?;
    check_exact(&m.join("dst"), &expected(11, &dst_writes))?;
    m.unmount(Duration::from_secs(30))?;
    c.done();
    Ok(())
}

/// One copy_file_range call loop of `len` bytes between open files at the given offsets.
fn copy_range(from: &File, mut off_in: i64, to: &File, mut off_out: i64, len: usize) -> Result<()> {
    let end = off_in + len as i64;
    let mut calls = 0;
    while off_in < end {
        calls += 1;
        ensure!(calls < 10_000, "copy_file_range makes no progress");
        let left = (end - off_in) as usize;
        let n = integration_tests::sys::copy_file_range(from, &mut off_in, to, &mut off_out, left)
            .context("copy_file_range")?;
        ensure!(
            n > 0,
            "copy_file_range stopped {} bytes short",
            end - off_in
        );
    }
    Ok(())
}

/// Unaligned ranges, a source whose data is still buffered (not fsynced) and destinations
/// in directories of either manager (shared there, or copied as data by the client when the
/// source's manager is another): every copy reads back byte-exact.
#[test]
fn t68_unaligned_dirty_and_cross_manager_copies_read_back() -> Result<()> {
    let c = TestCluster::init(6, 2, "4+2")?;
    c.start_all()?;
    c.wait_ready()?;
    let m = c.mount()?;
    let len = 3 * MIB + 12_345;
    // Written without fsync: the copy must see the buffered bytes.
    let src_path = m.join("src");
    std::fs::write(&src_path, pattern::bytes(21, 0, len))?;
    let src = File::open(&src_path)?;
    let src_manager = c.manager_of(src.metadata()?.ino())?;
    let (mut shared, mut across) = (0, 0);
    // Eight directories: new directories spread over both managers (by a stable hash of
    // their names, so which are where is the same every run).
    for d in 0..8 {
        let dir = m.join(format!("d{d}"));
        std::fs::create_dir(&dir)?;
        let p = dir.join("copy");
        // The destination has data of its own around the copied range.
        std::fs::write(&p, pattern::bytes(22, 0, len + 4096))?;
        let dst = OpenOptions::new().read(true).write(true).open(&p)?;
        if c.manager_of(dst.metadata()?.ino())? == src_manager {
            shared += 1;
        } else {
            across += 1;
        }
        let (at_in, at_out, n) = (777usize, 4099usize, len - 777 - 1001);
        copy_range(&src, at_in as i64, &dst, at_out as i64, n)?;
        dst.sync_all()?;
        drop(dst);
        let mut want = pattern::bytes(22, 0, len + 4096);
        want[at_out..at_out + n].copy_from_slice(&pattern::bytes(21, at_in as u64, n));
        check_exact(&p, &want)?;
    }
    ensure!(
        shared > 0 && across > 0,
        "copies to {shared} file(s) of the source's manager and {across} of the other: \
         both the shared and the data-copy path must run"
    );
    // Within one directory too, after the source is synced.
    src.sync_all()?;
    let p = m.join("same");
    let dst = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&p)?;
    copy_range(&src, 1, &dst, 0, len - 1)?;
    dst.sync_all()?;
    drop(dst);
    check_exact(&p, &pattern::bytes(21, 1, len - 1))?;
    drop(src);
    let m = c.remount(m)?;
    check_exact(&m.join("same"), &pattern::bytes(21, 1, len - 1))?;
    m.unmount(Duration::from_secs(30))?;
    c.done();
    Ok(())
}
