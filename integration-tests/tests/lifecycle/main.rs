//! The life of a cluster's space (issue [lifecycle]) through real processes and a real
//! mount: scrub finds and repairs corrupted fragments (t10), readers catch well-formed
//! fragments holding wrong bytes by the writers' end-to-end checksums (t11), rebuild restores a lost
//! server's fragments (t20; t21 without a command, after `rebuild_delay_secs`), files written with a server dead land with every fragment
//! (t22), data that is deleted or overwritten is given back (dead
//! segments reclaimed, t60, t61), and the copying cleaner frees half-overwritten segments
//! with every byte reading back (t62), and a cluster filled to ENOSPC deletes its way out
//! and takes writes again (t63), and a seventh storage server added with `shoal node add`
//! to a running cluster leaves old data in place and takes new stripes from the running
//! mount and managers, which follow the committed config without restarts (t64), and `shoal node drain` empties a
//! server so that data survives without it (t65), also when it is already dead (t67,
//! reconstructed from parity), and copy_file_range shares extents instead of copying data
//! (t68). All bounded in time.

mod t10_scrub_repairs;
mod t11_wrong_fragments;
mod t20_rebuild;
mod t21_auto_rebuild;
mod t22_dead_server_writes;
mod t60_write_delete_rounds;
mod t61_clean_command;
mod t62_clean_overwritten;
mod t63_full_cluster;
mod t64_add_node;
mod t65_drain;
mod t66_punch_frees;
mod t67_drain_dead;
mod t68_copy_file_range;
mod t70_rebuild_rate;
mod t71_dead_write_rate;

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

pub use integration_tests::pattern::check_file as check_pattern;

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
