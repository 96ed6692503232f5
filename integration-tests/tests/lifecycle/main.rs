//! The life of a cluster's space (issue [lifecycle]) through real processes and a real
//! mount: data that is deleted or overwritten is given back (dead segments reclaimed).
//! All bounded in time.

mod t60_write_delete_rounds;
mod t61_clean_command;

use anyhow::{Context, Result};
use integration_tests::pattern;
use std::fs::File;
use std::io::Write;
use std::path::Path;

/// Writes `len` bytes of pattern stream `seed` to a new file `p` in 1 MiB pieces and fsyncs.
pub fn write_pattern(p: &Path, seed: u64, len: usize) -> Result<()> {
    let mut f = File::create(p).with_context(|| format!("create {}", p.display()))?;
    let mut off = 0;
    while off < len {
        let n = (len - off).min(1 << 20);
        f.write_all(&pattern::bytes(seed, off as u64, n))?;
        off += n;
    }
    f.sync_all()
        .with_context(|| format!("fsync {}", p.display()))
}

/// Bytes of every file under `dir` (recursively); a missing directory holds 0.
pub fn dir_bytes(dir: &Path) -> Result<u64> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
    };
    let mut total = 0;
    for e in rd {
        let e = e?;
        let md = match e.metadata() {
            Ok(md) => md,
            // A temp file renamed or a fragment deleted while we walk.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err.into()),
        };
        if md.is_dir() {
            total += dir_bytes(&e.path())?;
        } else {
            total += md.len();
        }
    }
    Ok(total)
}
