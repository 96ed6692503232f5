//! Errors of the manager: `Errno` for refused file system operations (what a client sees as
//! a POSIX error) and `ManagerError` for failures of the role itself (log, codec, startup).
//! Must not: hide which of the two a failure is.

use proto::msg::RemoteError;
use std::fmt;

/// POSIX error numbers used by the manager (the workspace's one errno type, from libc).
pub mod code {
    pub use proto::errno::Errno;
    pub const EPERM: Errno = Errno::EPERM;
    pub const ENOENT: Errno = Errno::ENOENT;
    pub const EIO: Errno = Errno::EIO;
    pub const E2BIG: Errno = Errno::E2BIG;
    pub const EAGAIN: Errno = Errno::EAGAIN;
    pub const EEXIST: Errno = Errno::EEXIST;
    pub const EXDEV: Errno = Errno::EXDEV;
    pub const ENOTDIR: Errno = Errno::ENOTDIR;
    pub const EISDIR: Errno = Errno::EISDIR;
    pub const EINVAL: Errno = Errno::EINVAL;
    pub const EFBIG: Errno = Errno::EFBIG;
    pub const ERANGE: Errno = Errno::ERANGE;
    pub const ENAMETOOLONG: Errno = Errno::ENAMETOOLONG;
    pub const ENOTEMPTY: Errno = Errno::ENOTEMPTY;
    pub const ENODATA: Errno = Errno::ENODATA;
    pub const ESTALE: Errno = Errno::ESTALE;
    pub const EACCES: Errno = Errno::EACCES;
    pub const EROFS: Errno = Errno::EROFS;
    pub const EOPNOTSUPP: Errno = Errno::EOPNOTSUPP;
    pub const ENOLCK: Errno = Errno::ENOLCK;
}

/// A refused operation: a POSIX error number plus a message for logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Errno {
    pub code: code::Errno,
    pub message: String,
}

impl Errno {
    pub fn new(code: code::Errno, message: impl Into<String>) -> Errno {
        Errno {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "errno {}: {}", self.code.0, self.message)
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for RemoteError {
    fn from(e: Errno) -> RemoteError {
        RemoteError::Errno {
            code: e.code,
            message: e.message,
        }
    }
}

/// Why the journal admits no change now (`Journal::admit`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The manager is stopping (a shutdown, or a hand-over of its group to another host):
    /// nothing more is logged here, and the change was not made. Clients retry, and reach
    /// the group's next incarnation.
    Stopping,
    /// The change is refused for good (E2BIG) or while the log makes no progress (EIO).
    Errno(Errno),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Stopping => write!(f, "the manager is stopping: the change was not made"),
            Refusal::Errno(e) => e.fmt(f),
        }
    }
}

impl From<Refusal> for RemoteError {
    fn from(r: Refusal) -> RemoteError {
        match r {
            Refusal::Stopping => RemoteError::Unavailable(r.to_string()),
            Refusal::Errno(e) => e.into(),
        }
    }
}

/// Shorthands: `enoent("...")` etc.
macro_rules! errno_fns {
    ($($name:ident => $code:ident),* $(,)?) => {
        $(pub fn $name(msg: impl Into<String>) -> Errno { Errno::new(code::$code, msg) })*
    };
}
errno_fns!(
    eperm => EPERM, enoent => ENOENT, eexist => EEXIST, enotdir => ENOTDIR, eisdir => EISDIR,
    einval => EINVAL, enotempty => ENOTEMPTY, enametoolong => ENAMETOOLONG, enodata => ENODATA,
    erange => ERANGE, e2big => E2BIG, eacces => EACCES, erofs => EROFS,
    eopnotsupp => EOPNOTSUPP,
);

/// Decoding of durable records and checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("bad magic {found:?} (expected {expected:?}): not a Shoal manager {what}")]
    Magic {
        what: &'static str,
        found: [u8; 4],
        expected: [u8; 4],
    },
    #[error("{what} version {version} is not supported by this build (newest known: {known})")]
    Version {
        what: &'static str,
        version: u16,
        known: u16,
    },
    #[error("{what} is truncated")]
    Truncated { what: &'static str },
    #[error("{what} does not decode: {source}")]
    Postcard {
        what: &'static str,
        source: postcard::Error,
    },
}

/// A serialized directory whose cookies are inconsistent.
#[derive(Debug, thiserror::Error)]
pub enum DirDecodeError {
    #[error("directory entry {name:?} has cookie {cookie}, not below the next cookie {next}")]
    CookieAhead {
        name: String,
        cookie: u64,
        next: u64,
    },
    #[error("directory entry {name:?} or its cookie {cookie} appears twice")]
    Duplicate { name: String, cookie: u64 },
}

/// Failures of the manager role (not of a single operation).
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("metadata log: {0}")]
    Log(#[from] storage::log::LogError),
    #[error("metadata log backend: {0}")]
    Backend(String),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("node {0} is not a manager in the cluster config")]
    NotAManager(proto::ids::NodeId),
    #[error("manager is shut down")]
    ShutDown,
    #[error("{0}")]
    ConfigConflict(String),
    #[error("recovery failed: {0} (the metadata log cannot be read; check the storage servers)")]
    Recovery(String),
    #[error(transparent)]
    Refused(#[from] RecoveryError),
    #[error("metadata log made no progress for {ms} ms ({detail}); the change may or may not be durable: check that the storage servers are up and reachable (`shoal status`)")]
    Stalled { ms: u64, detail: String },
    #[error("a metadata batch of {bytes} bytes does not fit in a {limit}-byte segment: {what}")]
    TooLarge {
        bytes: usize,
        limit: usize,
        what: String,
    },
}

/// Why a checkpoint cannot be used: one just written does not read back as written, or
/// one found at recovery is incomplete (the one before it is tried instead).
#[derive(Debug, thiserror::Error)]
pub enum CheckpointReadError {
    #[error("its chunk seg{0} is missing from the log")]
    ChunkMissing(u64),
    #[error("chunk seg{segment} cannot be read: {source}")]
    ChunkUnreadable {
        segment: u64,
        source: Box<ManagerError>,
    },
    #[error("seg{0} is not a checkpoint chunk")]
    NotAChunk(u64),
    #[error("chunk seg{segment}: {source}")]
    ChunkCodec { segment: u64, source: CodecError },
    #[error("chunk seg{0} does not match its manifest")]
    ChunkMismatch(u64),
    #[error("manifest seg{segment} cannot be read: {source}")]
    ManifestUnreadable {
        segment: u64,
        source: Box<ManagerError>,
    },
    #[error("manifest seg{0} does not match what was written")]
    ManifestMismatch(u64),
    #[error("decoding task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Why recovery stopped instead of serving a namespace it cannot prove complete. The
/// manager does not serve until the cause is fixed and it is restarted.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("metadata segment {log}/{segment} cannot be read ({detail}) and no later segment proves its records redundant; recovery stops rather than serve an incomplete namespace: bring back (or repair) the storage servers holding its fragments, check them with `shoal status`, then restart the manager")]
    Unreadable {
        log: proto::ids::LogId,
        segment: proto::ids::SegmentId,
        detail: String,
    },
    #[error("metadata log {log}: segment {segment} starts at LSN {found} but LSN {expected} comes next (records {expected}..{found} are missing, e.g. a deleted or lost segment); recovery stops rather than serve an older namespace: restore the missing segments' storage servers, then restart the manager")]
    Gap {
        log: proto::ids::LogId,
        segment: proto::ids::SegmentId,
        expected: proto::ids::Lsn,
        found: proto::ids::Lsn,
    },
    #[error("metadata log {log} ends at LSN {found} but checkpoint {checkpoint} (segment {segment}) includes changes up to LSN {needed}; the log's tail is missing: restore the storage servers that held it, then restart the manager")]
    ShortTail {
        log: proto::ids::LogId,
        segment: proto::ids::SegmentId,
        checkpoint: proto::ids::Lsn,
        needed: proto::ids::Lsn,
        found: proto::ids::Lsn,
    },
}

/// Why a callback to a client was not answered `CallbackDone`.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("client {client} refused: {error}")]
    Refused {
        client: std::net::SocketAddr,
        error: RemoteError,
    },
    #[error("client {client} answered {answer}")]
    Unexpected {
        client: std::net::SocketAddr,
        answer: String,
    },
    #[error(transparent)]
    Transport(#[from] proto::transport::TransportError),
    #[error("no callback channel to {0}")]
    NoChannel(std::net::SocketAddr),
    #[error("no address for the session")]
    NoAddress,
    #[error("client {client} did not answer within {within:?}")]
    NoAnswer {
        client: std::net::SocketAddr,
        within: std::time::Duration,
    },
}
