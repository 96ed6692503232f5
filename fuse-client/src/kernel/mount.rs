//! Mounting: checks that say what to do, the fuser background session, and an unmount that
//! writes dirty data and syncs every manager first.
//!
//! Owns the `Mount` handle and its session thread. Must not run file system logic.

use crate::client::Client;
use crate::error::ClientError;
use crate::kernel::fs::ShoalFs;
use fuser::{BackgroundSession, Config, MountOption, SessionACL};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a mount is set up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// Let other users access the mount (needs root or `user_allow_other` in /etc/fuse.conf).
    pub allow_other: bool,
    /// Extra mount options passed to the kernel as-is (e.g. "noatime", "ro"). Mounts are
    /// nosuid,nodev unless these hold "suid" / "dev".
    pub extra: Vec<String>,
}

impl MountOptions {
    /// The fuser configuration: fsname "shoal", kernel permission checks, nosuid and nodev
    /// unless the extras say "suid" / "dev", and the extras.
    pub fn to_config(&self) -> Config {
        let mut opts = vec![
            MountOption::FSName("shoal".into()),
            MountOption::Subtype("shoal".into()),
            MountOption::DefaultPermissions,
        ];
        if !self.extra.iter().any(|e| e == "suid") {
            opts.push(MountOption::NoSuid);
        }
        if !self.extra.iter().any(|e| e == "dev") {
            opts.push(MountOption::NoDev);
        }
        for e in &self.extra {
            opts.push(match e.as_str() {
                "ro" => MountOption::RO,
                "rw" => MountOption::RW,
                "noatime" => MountOption::NoAtime,
                "atime" => MountOption::Atime,
                "nosuid" => MountOption::NoSuid,
                "suid" => MountOption::Suid,
                "nodev" => MountOption::NoDev,
                "dev" => MountOption::Dev,
                "noexec" => MountOption::NoExec,
                "exec" => MountOption::Exec,
                "sync" => MountOption::Sync,
                "async" => MountOption::Async,
                "dirsync" => MountOption::DirSync,
                other => MountOption::CUSTOM(other.to_string()),
            });
        }
        let mut config = Config::default();
        config.mount_options = opts;
        config.acl = if self.allow_other {
            SessionACL::All
        } else {
            SessionACL::Owner
        };
        config
    }
}

/// A live FUSE mount. Call `unmount` to end it cleanly; dropping it unmounts without
/// writing dirty data.
pub struct Mount {
    client: Arc<Client>,
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
}

/// Checks what a mount needs, with errors that say what to do.
pub fn preflight(mountpoint: &Path, opts: &MountOptions) -> Result<(), ClientError> {
    match std::fs::metadata(mountpoint) {
        Err(_) => return Err(ClientError::MountpointMissing(mountpoint.to_path_buf())),
        Ok(m) if !m.is_dir() => {
            return Err(ClientError::MountpointNotDir(mountpoint.to_path_buf()))
        }
        Ok(_) => {}
    }
    if !Path::new("/dev/fuse").exists() {
        return Err(ClientError::NoDevFuse);
    }
    let root = nix::unistd::geteuid().is_root();
    if !root && find_fusermount().is_none() {
        return Err(ClientError::NoFusermount);
    }
    if opts.allow_other && !root {
        let conf = std::fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
        let allowed = conf.lines().any(|l| l.trim() == "user_allow_other");
        if !allowed {
            return Err(ClientError::AllowOther);
        }
    }
    Ok(())
}

fn find_fusermount() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FUSERMOUNT_PATH") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| [d.join("fusermount3"), d.join("fusermount")])
        .find(|p| p.is_file())
}

/// Mounts `client` at `mountpoint`. FUSE callbacks run on `rt` (use a multi-threaded
/// runtime: a thread of it blocked in a syscall on the mount would otherwise deadlock).
pub fn mount(
    client: Arc<Client>,
    rt: tokio::runtime::Handle,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<Mount, ClientError> {
    preflight(mountpoint, opts)?;
    client.set_metrics_label(&mountpoint.display().to_string());
    let fs = ShoalFs::new(client.clone(), rt);
    let session = fuser::spawn_mount(fs, mountpoint, &opts.to_config()).map_err(|source| {
        ClientError::Mount {
            path: mountpoint.to_path_buf(),
            source,
        }
    })?;
    client.set_notifier(Some(Arc::new(session.notifier())));
    tracing::info!(mountpoint = %mountpoint.display(), log = %client.log_id(), "mounted");
    Ok(Mount {
        client,
        session: Some(session),
        mountpoint: mountpoint.to_path_buf(),
    })
}

impl Mount {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// Whether the FUSE session ended by itself (the file system was unmounted from
    /// outside, e.g. `umount MOUNTPOINT`).
    pub fn session_ended(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    /// Writes dirty data, syncs every manager, unmounts and waits for the session to end.
    /// Dirty data is written even if the unmount then fails.
    pub async fn unmount(mut self) -> Result<(), ClientError> {
        let flushed = self.client.sync_all().await;
        self.client.set_notifier(None);
        let session = self.session.take();
        let path = self.mountpoint.clone();
        let failed = |reason: String| ClientError::Unmount {
            path: path.clone(),
            reason,
        };
        let unmounted = match session {
            Some(s) => {
                // Unmounted from outside already: only the session thread is left to join.
                let outside = s.guard.is_finished();
                tokio::task::spawn_blocking(move || {
                    if outside {
                        s.join()
                    } else {
                        s.umount_and_join()
                    }
                })
                .await
                .map_err(|e| failed(e.to_string()))?
                .map_err(|e| failed(e.to_string()))
            }
            None => Ok(()),
        };
        // Anything written between the sync and the unmount.
        let flushed = match flushed {
            Ok(()) => self.client.sync_all().await,
            Err(e) => Err(e),
        };
        // The releases of the last closes, before the session ends.
        self.client.send_releases().await;
        self.client.shutdown();
        if flushed.is_ok() && self.client.dirty_bytes() == 0 {
            self.client.goodbye().await;
        }
        unmounted?;
        flushed.map_err(ClientError::Flush)?;
        tracing::info!(mountpoint = %path.display(), "unmounted");
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            self.client.set_notifier(None);
            tracing::warn!(
                mountpoint = %self.mountpoint.display(),
                "mount dropped without unmount(): unmounting; unwritten data is lost"
            );
            drop(s);
            self.client.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_file_mountpoints_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let err = preflight(&missing, &MountOptions::default()).expect_err("missing");
        assert!(err.to_string().contains("mkdir -p"), "{err}");
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").expect("write");
        let err = preflight(&file, &MountOptions::default()).expect_err("file");
        assert!(matches!(err, ClientError::MountpointNotDir(_)), "{err}");
    }

    #[test]
    fn options_become_mount_options() {
        let o = MountOptions {
            allow_other: true,
            extra: vec!["noatime".into(), "max_read=4096".into()],
        };
        let c = o.to_config();
        assert!(c.mount_options.contains(&MountOption::DefaultPermissions));
        assert!(c.mount_options.contains(&MountOption::NoAtime));
        assert!(c
            .mount_options
            .contains(&MountOption::CUSTOM("max_read=4096".into())));
        assert_eq!(c.acl, SessionACL::All);
        assert_eq!(MountOptions::default().to_config().acl, SessionACL::Owner);
    }
}
