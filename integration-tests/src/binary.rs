//! Finds the `shoal` binary the tests run. Owns the lookup order only; it never builds
//! anything (`cargo build -p tools` must have run first).

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static BINARY: OnceLock<std::result::Result<PathBuf, std::sync::Arc<anyhow::Error>>> =
    OnceLock::new();

/// The `shoal` binary: `$SHOAL_BIN`, else the most recently built of
/// `target/<profile of this test>/shoal`, `target/release/shoal` and `target/debug/shoal`
/// (so `cargo build --release -p tools` followed by `cargo test --release` uses the binary
/// just built). Errors with the build command when none exists.
pub fn shoal_binary() -> Result<PathBuf> {
    let found = BINARY.get_or_init(|| locate().map_err(std::sync::Arc::new));
    match found {
        Ok(p) => Ok(p.clone()),
        Err(e) => bail!("{e:#}"),
    }
}

fn locate() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("SHOAL_BIN") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("SHOAL_BIN={} is not a file", p.display());
    }
    let candidates = candidates();
    // The newest build wins, so that a stale binary of the other profile is never used.
    let newest = candidates
        .iter()
        .filter_map(|c| {
            std::fs::metadata(c)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| (m.modified().ok(), c))
        })
        .max_by_key(|(t, _)| *t);
    if let Some((_, c)) = newest {
        tracing::info!(binary = %c.display(), "using the shoal binary");
        return Ok(c.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
    bail!(
        "the shoal binary was not found (looked at: {}); build it first with \
         `cargo build --release -p tools` (same profile as `cargo test --release`), \
         or point SHOAL_BIN at it",
        looked.join(", ")
    )
}

fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    // A test executable lives in target/<profile>/deps/<name>-<hash>.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            out.push(profile_dir.join("shoal"));
        }
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target"),
    };
    out.push(target.join("release").join("shoal"));
    out.push(target.join("debug").join("shoal"));
    out
}
