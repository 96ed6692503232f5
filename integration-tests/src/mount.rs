//! FUSE mounts made by tests: `MountGuard` (a running `shoal mount`, unmounted on Drop,
//! also on panic), and the mount table checks and fallbacks (`fusermount3 -u -z`,
//! `umount -l`). Touches only mountpoints the tests created.

use crate::env::ProcTable;
use crate::process::{run_command, CmdOutput};
use anyhow::{bail, Result};
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A mounted file system served by a `shoal mount` process held in a test's process table.
/// Drop unmounts: SIGTERM, up to ~10 s, then `fusermount3 -u -z` / `umount -l`, then
/// SIGKILL.
pub struct MountGuard {
    procs: ProcTable,
    name: String,
    path: PathBuf,
}

impl MountGuard {
    pub(crate) fn new(procs: ProcTable, name: String, path: PathBuf) -> MountGuard {
        MountGuard { procs, name, path }
    }

    /// The mountpoint.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the mount.
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }

    /// Name of the mount process in the logs (`mount-N`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Clean unmount: SIGTERM, the process must exit 0 within `timeout` and the mount must
    /// be gone.
    pub fn unmount(self, timeout: Duration) -> Result<()> {
        let guard = self
            .procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.name);
        let Some(mut p) = guard else {
            bail!("{} is no longer running", self.name)
        };
        let status = p.stop_with(Signal::SIGTERM, timeout)?;
        if !status.success() {
            bail!(
                "{} exited with {status} on SIGTERM; log tail:\n{}",
                self.name,
                p.log_tail(30)
            );
        }
        if is_mounted(&self.path) {
            bail!(
                "{} exited but {} is still mounted",
                self.name,
                self.path.display()
            );
        }
        Ok(())
    }

    /// Crash the client: SIGKILL the mount process, then detach the dead mount.
    pub fn kill9(self) -> Result<()> {
        let guard = self
            .procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.name);
        if let Some(mut p) = guard {
            p.kill9()?;
        }
        if is_mounted(&self.path) {
            lazy_unmount(&self.path);
        }
        if is_mounted(&self.path) {
            bail!(
                "{} is still mounted after kill -9 and lazy unmount",
                self.path.display()
            );
        }
        Ok(())
    }

    /// Whether the mount process still runs.
    pub fn is_running(&self) -> bool {
        let mut t = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        t.get_mut(&self.name)
            .map(|p| p.is_running())
            .unwrap_or(false)
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let guard = self
            .procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.name);
        drop(guard); // ProcessGuard's Drop runs the unmount sequence.
        if is_mounted(&self.path) {
            lazy_unmount(&self.path);
        }
    }
}

/// Whether `path` is a mountpoint in this process's mount namespace. Never touches `path`
/// itself: a stat of a FUSE mountpoint whose daemon is stopped or wedged blocks without a
/// timeout, which hung a failed test's teardown (before the unmount fallbacks ran) and left
/// its mount behind. Only the parent directory is resolved.
pub fn is_mounted(path: &Path) -> bool {
    let want = resolve_parent(path);
    mount_points().contains(&want)
}

/// `path` with its parent directory canonicalized and its last component kept as is (no
/// system call on `path` itself).
fn resolve_parent(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) if !dir.as_os_str().is_empty() => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// Every mountpoint in this process's mount namespace (from /proc/self/mountinfo).
pub fn mount_points() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .collect()
}

/// Lazily unmounts every mount below `dir` that is still there (a test's teardown: a guard
/// that was leaked or whose unmount failed must not leave a mount behind, and the temp dir
/// must not be removed through a mount). Returns the mountpoints it found.
pub fn unmount_all_below(dir: &Path) -> Vec<PathBuf> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    // Deepest first, so that nested mounts go before their parents.
    let mut found: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|m| m.starts_with(&dir) && *m != dir)
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in &found {
        lazy_unmount(m);
    }
    found
}

/// Undoes the octal escapes of /proc/self/mountinfo (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Detaches a mount: `fusermount3 -u -z`, falling back to `umount -l`.
pub fn lazy_unmount(path: &Path) {
    // `umount -c`: no canonicalization (it would stat a path inside a hung mount).
    let attempts: [(&str, &[&str]); 2] =
        [("fusermount3", &["-u", "-z"]), ("umount", &["-l", "-c"])];
    for (prog, args) in attempts {
        let mut cmd = Command::new(prog);
        cmd.args(args).arg(path);
        match run_command(cmd, Duration::from_secs(10)) {
            Ok(CmdOutput { code: Some(0), .. }) => return,
            Ok(o) => tracing::warn!("{prog} {}: {}", path.display(), o.stderr.trim()),
            Err(e) => tracing::warn!("{prog} {}: {e:#}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_mountinfo_octal() {
        assert_eq!(unescape(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }

    #[test]
    fn mountpoints_below_a_fresh_dir_are_none() {
        let d = tempfile::tempdir().expect("tempdir");
        assert!(unmount_all_below(d.path()).is_empty());
        assert!(mount_points().iter().any(|m| m == Path::new("/")));
    }

    #[test]
    fn root_is_mounted_and_a_fresh_dir_is_not() {
        assert!(is_mounted(Path::new("/")));
        let d = tempfile::tempdir().expect("tempdir");
        assert!(!is_mounted(d.path()));
    }
}
