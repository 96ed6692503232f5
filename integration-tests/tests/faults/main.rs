//! Fault tests through real processes and a real mount: storage servers killed during
//! reads, corrupted fragment files, every process killed at once, managers restarted under
//! a live mount. All bounded in time.

mod t10_kill_storage_during_read;
mod t20_corrupt_fragments;
mod t30_kill_everything;
mod t40_manager_restart;

use anyhow::{Context, Result};
use integration_tests::pattern;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Writes `len` bytes of pattern stream `seed` to a new file `p` in 1 MiB pieces; fsyncs
/// it when `sync`.
pub fn write_pattern(p: &Path, seed: u64, len: usize, sync: bool) -> Result<()> {
    let mut f = File::create(p).with_context(|| format!("create {}", p.display()))?;
    let mut off = 0;
    while off < len {
        let n = (len - off).min(1 << 20);
        f.write_all(&pattern::bytes(seed, off as u64, n))?;
        off += n;
    }
    if sync {
        f.sync_all()
            .with_context(|| format!("fsync {}", p.display()))?;
    }
    Ok(())
}

/// Reads `p` in 1 MiB pieces and checks size and every byte against stream `seed`.
pub fn check_pattern(p: &Path, seed: u64, len: usize) -> Result<()> {
    let f = File::open(p).with_context(|| format!("open {}", p.display()))?;
    let size = f.metadata()?.len();
    anyhow::ensure!(
        size == len as u64,
        "{}: size {size}, expected {len}",
        p.display()
    );
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(buf.len());
        f.read_exact_at(&mut buf[..n], off as u64)
            .with_context(|| format!("read {} at {off}", p.display()))?;
        pattern::check(seed, off as u64, &buf[..n])
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        off += n;
    }
    Ok(())
}

/// fsync of a directory (makes its entries durable).
pub fn sync_dir(p: &Path) -> Result<()> {
    File::open(p)?
        .sync_all()
        .with_context(|| format!("fsync dir {}", p.display()))
}
