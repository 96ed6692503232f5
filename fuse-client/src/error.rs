//! Errors of the client: `FsError` (an errno, what a file system operation returns to the
//! kernel) and `ClientError` (connecting and mounting, with what to do about it).

use std::path::PathBuf;

/// A POSIX error number returned by a file system operation: the workspace's one errno
/// type (`proto::errno::Errno`).
pub use proto::errno::Errno as FsError;

/// Failures of `Client::connect`, `mount` and `Mount::unmount`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "manager {name} at {addr} did not answer: {reason} (is `shoal node run` running there?)"
    )]
    ManagerUnreachable {
        name: String,
        addr: std::net::SocketAddr,
        reason: String,
    },
    #[error("the cluster config names no manager; add a node with the manager role")]
    NoManagers,
    #[error("the managers did not serve the root directory: {0}")]
    NoRoot(String),
    #[error("mountpoint {0} does not exist; create it with `mkdir -p {0}`")]
    MountpointMissing(PathBuf),
    #[error("mountpoint {0} is not a directory")]
    MountpointNotDir(PathBuf),
    #[error("/dev/fuse is missing: install fuse3 (`apt-get install fuse3`) and load the module (`modprobe fuse`)")]
    NoDevFuse,
    #[error(
        "fusermount3 is not on PATH: install fuse3 (`apt-get install fuse3`), or mount as root"
    )]
    NoFusermount,
    #[error(
        "allow_other needs root or `user_allow_other` in /etc/fuse.conf; mount as root or add that line"
    )]
    AllowOther,
    #[error("cannot mount at {path}: {source} (is something already mounted there? try `fusermount3 -u {path}`)")]
    Mount {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dirty data could not be written before unmount: {0}; files written since the last fsync may be incomplete")]
    Flush(FsError),
    #[error(
        "cannot unmount {path}: {reason} (close files open under it, then `fusermount3 -u {path}`)"
    )]
    Unmount { path: PathBuf, reason: String },
}
