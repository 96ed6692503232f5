//! Wire messages: one request/response enum per service, wrapped in one envelope.
//!
//! Every RPC travels on its own QUIC stream as one frame (see `frame`): a small serialized
//! header (these types, postcard) followed by raw bulk bytes that never go through serde.

pub mod manager;
pub mod peer;
pub mod storage;

use crate::errno::Errno;
use crate::ids::{CallId, NodeId, SlotId};
use serde::{Deserialize, Serialize};
use std::fmt;

pub use manager::*;
pub use peer::*;
pub use storage::*;

/// How an `Unavailable` answer of a manager that will not serve at all begins (a refused
/// recovery, or a config that contradicts the committed one), as opposed to one that is
/// still recovering: `shoal status` shows the rest as the reason.
pub const REFUSED_PREFIX: &str = "manager recovery refused: ";

/// What a client sends to a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    /// Liveness and identity; answered by every node.
    Ping,
    Storage(StorageRequest),
    Manager(ManagerRequest),
    /// A client's file system request on behalf of a local process with these
    /// credentials: the manager checks permissions with them (after the export options of
    /// the client's identity: root squash, all squash, read-only). A client identity's
    /// `Manager` request without credentials runs as that client's root (squashed unless
    /// the identity is trusted).
    ManagerAs {
        cred: Credentials,
        /// Set for a call that must not take effect twice (`ManagerRequest::once`): the
        /// same on every retry, so the manager answers a retry of an applied call with its
        /// first result.
        call: Option<CallId>,
        req: ManagerRequest,
    },
    /// A manager calling back a client over the client's own connection.
    Client(ClientCallback),
    /// Cluster administration answered by every node (needs the admin role).
    Admin(AdminRequest),
    /// A client asking another client for cached bytes (cooperative caching; only clients
    /// answer it, only client identities may send it).
    Peer(PeerRequest),
    /// A raft RPC between members of the config group (`fsd::config_group`); only node
    /// identities may send it, only group members answer it.
    ConfigGroup(ConfigGroupRequest),
    /// The newest cluster config this node knows to be committed by the config group
    /// (`Response::Config`); every identity may ask (it is what `cluster.toml` holds).
    /// Running nodes and mounts follow the cluster with it (`proto::follow`).
    ConfigRead,
}

/// The raft RPCs of the config group (the cluster config kept by openraft on the manager
/// nodes). The openraft request itself travels postcard-encoded in the frame's bulk bytes,
/// and the answer (`Response::ConfigGroup`) likewise: proto carries them without knowing
/// openraft's types, which live in `fsd::config_group`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, strum::IntoStaticStr)]
pub enum ConfigGroupRequest {
    /// openraft `AppendEntriesRequest` (also the leader's heartbeat).
    AppendEntries,
    /// openraft `VoteRequest` (an election).
    Vote,
    /// A whole snapshot at once: the leader's vote, the snapshot's meta and its bytes.
    FullSnapshot,
    /// From a member that does not lead, to the leader: propose this command (the
    /// compare-and-set on the epoch decides, as for the leader's own proposals).
    Propose,
    /// From a member that does not lead, to the leader: the committed config, confirmed
    /// with a majority (a linearizable read).
    ReadCommitted,
    /// From a manager host to every member (automatic takeover): renew the host's
    /// membership lease. The body is the host's `NodeId` (postcard); every member records
    /// it, and the leader grants it after confirming its leadership. Answered with a
    /// postcard `Result<(), String>`.
    Renew,
    /// From the leader to the manager chosen to take over a silent host's group: take it
    /// over (pick an address, propose the takeover). The body is `{group, expect_epoch}`;
    /// answered with a postcard `Result<u64, String>` (the committed epoch).
    Adopt,
}

/// Administration requests every node answers.
#[derive(Clone, Debug, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum AdminRequest {
    /// Install this deny list (`proto::revoke`): `list` is its encoding, `signature` the
    /// cluster CA's signature over it. The node checks the signature against the CA
    /// certificate it trusts, keeps the newest list (by its sequence number), persists it,
    /// refuses the listed identities and closes their connections. Answered with
    /// `Response::DenyList { seq }` (the sequence number the node now holds).
    InstallDenyList {
        #[serde(with = "serde_bytes")]
        list: Vec<u8>,
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    /// Propose `file` (a `cluster.toml` text) to the config group as the config after
    /// `expect_epoch` (compare-and-set; `file`'s epoch must be the next one). Answered by
    /// group members only, through the group's leader, with `Response::Config` holding the
    /// committed file.
    ProposeConfig { expect_epoch: u64, file: String },
    /// Hand manager `group`'s group (its slots and metadata log), which the receiving node
    /// serves, over to manager `to` while both run (`shoal manager move`): the node stops
    /// serving it after making everything it answered durable, and `to` adopts it through
    /// the config group. Answered with `Response::Config` holding the committed file, or
    /// an error after which the group is served here again.
    MoveGroup { group: String, to: String },
}

/// Callbacks from a manager to a client holding leases (DESIGN.md §4). The client answers
/// `Response::CallbackDone` only once it has done what the callback asks, including
/// telling the kernel to drop its caches.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, strum::IntoStaticStr)]
pub enum ClientCallback {
    /// Drop every cached copy of these inodes (attributes, data, extents, listings; the
    /// kernel's too) and of these directory entries (parent, name).
    Invalidate {
        inodes: Vec<crate::ids::InodeId>,
        entries: Vec<(crate::ids::InodeId, String)>,
    },
    /// Write back and commit the dirty data of `ino`, then give up the write lease. With
    /// `drop_cache`, also drop every cached copy of it (another client is changing it).
    Flush {
        ino: crate::ids::InodeId,
        drop_cache: bool,
    },
}

/// What a node answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Response {
    Pong(NodeInfo),
    Storage(StorageResponse),
    Manager(ManagerResponse),
    /// A manager's answer to a request from a client session in good standing, with the
    /// lease it confirms (the client extends its volume lease only from such answers).
    ManagerLeased(ManagerResponse, LeaseExtension),
    /// A client has carried out a callback.
    CallbackDone,
    Error(RemoteError),
    /// The deny list a node holds after `AdminRequest::InstallDenyList`.
    DenyList {
        seq: u64,
    },
    /// A client's answer to a `Request::Peer`.
    Peer(PeerResponse),
    /// A config group member's answer to a `Request::ConfigGroup`: the openraft result,
    /// postcard-encoded in the bulk bytes.
    ConfigGroup,
    /// The committed cluster config as `cluster.toml` text (`Request::ConfigRead`,
    /// `AdminRequest::ProposeConfig`); `None` from a node that knows of none (not a member
    /// of the config group, or the group is not seeded yet).
    Config {
        file: Option<String>,
    },
}

/// A node's self-description for `Ping`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub roles: Vec<String>,
    pub version: String,
    /// The node's named background workers (journal, cleaner, scrub, rebuild) as of the
    /// answer.
    pub workers: Vec<crate::worker::WorkerStatus>,
    /// The node's view of the config group, if it is a member (manager nodes).
    pub config_group: Option<GroupView>,
    /// The epoch of the cluster config the node runs by (`proto::live`): a takeover's new
    /// host waits until the storage servers have it, so that they fence the old host.
    #[serde(default)]
    pub config_epoch: u64,
}

/// A config group member's view as of a `Ping` answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupView {
    /// The epoch of the config this member has applied (None before the group's first
    /// config is committed).
    pub epoch: Option<u64>,
    /// The leader this member knows of, by node id.
    pub leader: Option<crate::ids::NodeId>,
    /// The member's raft term (a newer term's view wins).
    pub term: u64,
}

/// An error carried over the wire. Retryable kinds are kept apart from final ones.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// A POSIX error for a file system operation (ENOENT, EEXIST, ...).
    #[error("errno {}: {message}", code.0)]
    Errno { code: Errno, message: String },
    #[error("not found: {0}")]
    NotFound(String),
    /// Stored bytes failed their checksum; the caller should reconstruct from parity.
    #[error("corrupt: {0}")]
    Corrupt(String),
    #[error("no space left: {0}")]
    NoSpace(String),
    /// The request was malformed or out of bounds.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The node does not run the role the request is for.
    #[error("node does not run the {0} role")]
    NoRole(String),
    /// The slot is not owned by this manager (retry at `hint`, its owner).
    #[error("{slot} is not owned here; try {hint}")]
    NotOwner { slot: SlotId, hint: NodeId },
    /// A transient failure; the caller may retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("i/o error: {0}")]
    Io(String),
    /// The caller's volume lease with this manager has expired and callbacks may have been
    /// missed: renew (`Renew`) and drop every cached copy before retrying.
    #[error("volume lease expired: {0}")]
    LeaseExpired(String),
    /// The role matrix (`proto::authz`) refused the request: `identity` lacks `right`.
    #[error("permission denied: {identity} lacks the right `{right}` ({detail})")]
    Denied {
        identity: String,
        right: String,
        detail: String,
    },
}

impl From<crate::authz::Denied> for RemoteError {
    fn from(d: crate::authz::Denied) -> RemoteError {
        RemoteError::Denied {
            identity: d.identity,
            right: d.right.to_string(),
            detail: d.detail,
        }
    }
}

impl Request {
    /// The manager request inside `Manager` or `ManagerAs`.
    pub fn manager_request(&self) -> Option<&ManagerRequest> {
        match self {
            Request::Manager(r) | Request::ManagerAs { req: r, .. } => Some(r),
            _ => None,
        }
    }
}

impl RemoteError {
    pub fn errno(code: Errno, message: impl Into<String>) -> RemoteError {
        RemoteError::Errno {
            code,
            message: message.into(),
        }
    }
}

impl Request {
    /// The operation's name, for metrics and logs: the request variant (`Ping`, `Lookup`,
    /// `PutFragment`, ...), the same for a manager request with or without credentials.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Ping => "Ping",
            Request::Storage(r) => r.into(),
            Request::Manager(r) | Request::ManagerAs { req: r, .. } => r.into(),
            Request::Client(c) => c.into(),
            Request::Admin(a) => a.into(),
            Request::Peer(p) => p.into(),
            Request::ConfigGroup(r) => r.into(),
            Request::ConfigRead => "ConfigRead",
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Ping => write!(f, "Ping"),
            Request::Storage(r) => write!(f, "{r}"),
            Request::Manager(r) => write!(f, "{r}"),
            Request::ManagerAs { cred, call, req } => {
                write!(f, "{req} as {}:{}", cred.uid, cred.gid)?;
                match call {
                    Some(c) => write!(f, " ({c})"),
                    None => Ok(()),
                }
            }
            Request::Client(c) => write!(f, "{c:?}"),
            Request::Admin(AdminRequest::InstallDenyList { list, .. }) => {
                write!(f, "InstallDenyList({} bytes)", list.len())
            }
            Request::Peer(p) => write!(f, "{p}"),
            Request::ConfigGroup(r) => write!(f, "ConfigGroup({r:?})"),
            Request::ConfigRead => write!(f, "ConfigRead"),
            Request::Admin(AdminRequest::ProposeConfig { expect_epoch, .. }) => {
                write!(f, "ProposeConfig(after epoch {expect_epoch})")
            }
            Request::Admin(AdminRequest::MoveGroup { group, to }) => {
                write!(f, "MoveGroup({group} to {to})")
            }
        }
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Pong(i) => write!(f, "Pong({})", i.name),
            Response::Storage(r) => write!(f, "{r:?}"),
            Response::Manager(_) => write!(f, "ManagerResponse"),
            Response::ManagerLeased(_, l) => write!(f, "ManagerResponse(lease {}ms)", l.valid_ms),
            Response::CallbackDone => write!(f, "CallbackDone"),
            Response::Error(e) => write!(f, "Error({e})"),
            Response::DenyList { seq } => write!(f, "DenyList({seq})"),
            Response::Peer(PeerResponse::Block { range }) => write!(f, "PeerBlock({range})"),
            Response::Peer(PeerResponse::NotCached) => write!(f, "PeerNotCached"),
            Response::Peer(PeerResponse::Blocks { ranges }) => write!(
                f,
                "PeerBlocks({} of {})",
                ranges.iter().flatten().count(),
                ranges.len()
            ),
            Response::Peer(PeerResponse::Accepted) => write!(f, "PeerAccepted"),
            Response::Peer(PeerResponse::Refused) => write!(f, "PeerRefused"),
            Response::ConfigGroup => write!(f, "ConfigGroup"),
            Response::Config { file } => {
                write!(
                    f,
                    "Config({})",
                    if file.is_some() { "a file" } else { "none" }
                )
            }
        }
    }
}
