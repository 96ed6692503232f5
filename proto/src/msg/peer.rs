//! Client-to-client messages: cooperative caching (DESIGN.md §5, issue 12).
//!
//! A client asks another client for bytes it caches, named by their immutable log address
//! (`LogPtr`: log, segment, offset, length). The log is append-only and segment ids are
//! never reused, so an address names one content forever: an answer for the address asked
//! is never stale (see `notes/leases.md`, "Cooperative caching"). Owns the wire types only.

use crate::ids::LogPtr;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Blocks one `FetchBlocks` may ask for at most.
pub const MAX_FETCH_BLOCKS: usize = 32;

/// What a client asks a peer client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
pub enum PeerRequest {
    /// The bytes of log range `ptr` if the peer caches them. Answered `PeerResponse::Block`
    /// with the bytes as bulk, or `NotCached`.
    FetchBlock { ptr: LogPtr },
    /// `FetchBlock` for several blocks at once (at most `MAX_FETCH_BLOCKS`): answered
    /// `Blocks`, the bulk holding the found ranges one after another.
    FetchBlocks { ptrs: Vec<LogPtr> },
    /// N-chance forwarding: keep log bytes `ptr` (an evicted singlet) for the cluster, with
    /// `recirc` chances left. The bulk holds log range `range` (`ptr`, or `ptr` widened to
    /// whole checksum chunks). Answered `Accepted` or `Refused` (the receiver bounds what
    /// it keeps).
    ForwardBlock {
        ptr: LogPtr,
        range: LogPtr,
        recirc: u8,
    },
}

/// A peer client's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerResponse {
    /// The bulk holds the bytes of `range`: either the range asked for, or that range
    /// widened to whole checksum chunks (`chunksum::widen`), so that the asker can check
    /// them against the end-to-end checksums it got from the manager.
    Block { range: LogPtr },
    /// The peer does not cache those bytes (any more).
    NotCached,
    /// The answer to `FetchBlocks`: per block asked, the log range sent (as for `Block`)
    /// or `None` (not cached); the bulk holds the sent ranges in order.
    Blocks { ranges: Vec<Option<LogPtr>> },
    /// A forwarded block was kept.
    Accepted,
    /// A forwarded block was not kept.
    Refused,
}

impl fmt::Display for PeerRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerRequest::FetchBlock { ptr } => write!(f, "FetchBlock({ptr})"),
            PeerRequest::FetchBlocks { ptrs } => write!(f, "FetchBlocks({} blocks)", ptrs.len()),
            PeerRequest::ForwardBlock { ptr, recirc, .. } => {
                write!(f, "ForwardBlock({ptr}, {recirc} chances)")
            }
        }
    }
}
