//! Fault tests through real processes and a real mount: storage servers killed during
//! reads, corrupted fragment files, every process killed at once, managers restarted under
//! a live mount. All bounded in time.

mod t10_kill_storage_during_read;
mod t20_corrupt_fragments;
mod t30_kill_everything;
mod t40_manager_restart;
mod t45_lost_create;
mod t50_stopped_mount_teardown;
mod t60_manager_takeover;
mod t61_automatic_takeover;
mod t62_takeover_time;
mod t63_live_move;

use anyhow::{Context, Result};
use integration_tests::pattern;
use std::fs::File;
use std::io::Write;
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

pub use integration_tests::pattern::check_file as check_pattern;

/// fsync of a directory (makes its entries durable).
pub fn sync_dir(p: &Path) -> Result<()> {
    File::open(p)?
        .sync_all()
        .with_context(|| format!("fsync dir {}", p.display()))
}
