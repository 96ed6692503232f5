//! Errors of the storage crate: the server side (`StorageError`), the log (`LogError`), the
//! segment format (`SegmentError`), erasure coding (`ErasureError`) and typed storage RPCs
//! (`ClientCallError`). This module only defines errors and their mapping to wire errors.

use proto::ids::FragmentId;
use proto::msg::RemoteError;
use proto::transport::TransportError;

/// What the fragment store and the storage server can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("fragment {0} is not stored here")]
    NotFound(FragmentId),
    /// Stored bytes or a stored header failed their checksum; read from parity instead.
    #[error("fragment {id} is corrupt: {detail}")]
    Corrupt { id: FragmentId, detail: String },
    #[error("no space left on the storage device: {0} (free space or add storage nodes)")]
    NoSpace(String),
    /// The request was malformed or out of bounds.
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// A blocking task died (a bug); the operation's outcome is unknown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl StorageError {
    /// Wraps an I/O error, turning ENOSPC/EDQUOT into `NoSpace`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> StorageError {
        let context = context.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
                StorageError::NoSpace(format!("{context}: {source}"))
            }
            _ => StorageError::Io { context, source },
        }
    }
}

impl From<StorageError> for RemoteError {
    fn from(e: StorageError) -> RemoteError {
        match e {
            StorageError::NotFound(_) => RemoteError::NotFound(e.to_string()),
            StorageError::Corrupt { .. } => RemoteError::Corrupt(e.to_string()),
            StorageError::NoSpace(m) => RemoteError::NoSpace(m),
            StorageError::Invalid(m) => RemoteError::Invalid(m),
            StorageError::Io { .. } | StorageError::Internal(_) => RemoteError::Io(e.to_string()),
        }
    }
}

/// Errors of the striped log (writer and reader).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("only {acked} of {needed} fragments of {seg} became durable: {detail}")]
    NotDurable {
        seg: String,
        acked: usize,
        needed: usize,
        detail: String,
    },
    #[error("cannot read {what}: only {available} of the {needed} fragments needed are readable ({detail})")]
    Unreadable {
        what: String,
        available: usize,
        needed: usize,
        detail: String,
    },
    #[error("bad segment: {0}")]
    Segment(#[from] SegmentError),
    /// Storage servers of the stripe refused for want of space (and no spare had room).
    #[error("no space for {seg}: {detail}")]
    NoSpace { seg: String, detail: String },
    /// Storage servers refused the request to this node's identity (the role matrix: its
    /// certificate lacks the right), so too few answered; asking again cannot help.
    #[error("storage servers refused {what} to this node: {detail}")]
    Refused { what: String, detail: String },
    /// The bytes read do not match the writer's end-to-end checksums, and no k fragments
    /// of the stripe decode to bytes that do (more than m fragments hold wrong bytes).
    #[error("{what} does not match its end-to-end checksum at segment offset {offset}, and no {needed} fragments decode to bytes that do ({detail})")]
    Corrupt {
        what: String,
        offset: u32,
        needed: usize,
        detail: String,
    },
}

/// Errors of the segment format.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("segment header is malformed: {0}")]
    Malformed(String),
    #[error("segment would exceed {0} bytes")]
    TooLarge(u64),
}

/// Errors of the erasure codec.
#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error("erasure layout {k}+{m} is not usable: {reason}")]
    Layout { k: usize, m: usize, reason: String },
    #[error("shards do not fit the layout: {0}")]
    Shards(String),
    #[error("only {present} of the {needed} shards needed are present")]
    TooFewShards { present: usize, needed: usize },
}

/// A typed storage RPC failed: either the server answered with an error (`Remote`), or it
/// could not be reached / did not answer (`Transport`).
#[derive(Debug, thiserror::Error)]
pub enum ClientCallError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("storage server answered: {0}")]
    Remote(RemoteError),
    #[error("unexpected answer from storage server: {0}")]
    Unexpected(String),
}

/// Why one piece of a fragment could not be read by the log reader.
#[derive(Debug, thiserror::Error)]
pub enum PieceError {
    /// The server failed recently: not asked again until its suspicion runs out.
    #[error("{0} recently unreachable")]
    Suspect(std::net::SocketAddr),
    #[error(transparent)]
    Call(#[from] ClientCallError),
    /// The fragment moved (rebuilt elsewhere) and the read at its new place failed too.
    #[error("{first}; moved to {to}: {then}")]
    Moved {
        first: Box<PieceError>,
        to: std::net::SocketAddr,
        then: Box<PieceError>,
    },
}

impl ClientCallError {
    /// Whether the failure says nothing about the data (peer down or slow).
    pub fn is_unavailable(&self) -> bool {
        match self {
            ClientCallError::Transport(t) => t.is_unavailable(),
            ClientCallError::Remote(RemoteError::Unavailable(_)) => true,
            _ => false,
        }
    }

    /// Whether the server refused a write for want of space.
    pub fn is_no_space(&self) -> bool {
        matches!(self, ClientCallError::Remote(RemoteError::NoSpace(_)))
    }

    /// Whether the server reported the stored bytes as corrupt.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, ClientCallError::Remote(RemoteError::Corrupt(_)))
    }

    /// Whether the server does not hold the fragment.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientCallError::Remote(RemoteError::NotFound(_)))
    }
}

/// A stripe does not fit the cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {k}+{m} stripe needs {} storage nodes, the config has {nodes}", *k as usize + *m as usize)]
pub struct PlacementError {
    pub k: u8,
    pub m: u8,
    pub nodes: usize,
}

/// A fragment could not be rebuilt from the rest of its stripe.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("cannot rebuild {what}: only {available} of the {needed} fragments needed are readable ({detail})")]
    NotEnough {
        what: String,
        available: usize,
        needed: usize,
        detail: String,
    },
    #[error("rebuilding {what} failed: {detail}")]
    Failed { what: String, detail: String },
}
