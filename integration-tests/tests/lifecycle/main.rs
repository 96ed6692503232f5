//! Lifecycle tests through real processes: scrub finds and repairs corrupted fragments;
//! (rebuild and space follow). All bounded in time.

mod t10_scrub_repairs;
mod t20_rebuild;

use anyhow::{Context, Result};
use integration_tests::pattern;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Writes `len` bytes of pattern stream `seed` to a new file `p` and fsyncs it.
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

/// Reads `p` and checks size and every byte against stream `seed`.
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

/// The numbers of `shoal scrub`'s "total:" line: (checked, bad, repaired, unrepaired).
pub fn scrub_totals(stdout: &str) -> Option<(u64, u64, u64, u64)> {
    let line = stdout.lines().find(|l| l.starts_with("total: checked "))?;
    let num = |after: &str| -> Option<u64> {
        let rest = &line[line.find(after)? + after.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some((
        num("checked ")?,
        num("bad ")?,
        num("repaired ")?,
        num("unrepaired ")?,
    ))
}

#[test]
fn scrub_totals_parse() {
    let out = "x\ntotal: checked 12 fragments (3.0 MiB), bad 4, repaired 3, unrepaired 1\n";
    assert_eq!(scrub_totals(out), Some((12, 4, 3, 1)));
    assert_eq!(scrub_totals("nothing"), None);
}
