//! Storage service messages: fragments in, byte ranges out.

use crate::ids::{FragmentId, LogId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Codec ids recorded in fragment and segment headers, so the format can change later.
pub const CODEC_RS_GF8_RSE: u8 = 1;

/// What the writer tells the server about a fragment; stored in the fragment's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentMeta {
    /// Erasure codec of the stripe (`CODEC_*`).
    pub codec: u8,
    pub k: u8,
    pub m: u8,
    /// Length of the whole segment before striping.
    pub segment_len: u32,
    /// CRC32C (iSCSI) of the payload as sent; the server rejects a mismatch.
    pub crc32c: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum StorageRequest {
    /// Store a fragment; the payload is the bulk part. Answered with `Stored` once durable.
    PutFragment { id: FragmentId, meta: FragmentMeta },
    /// Read `len` bytes at `offset` of a fragment's payload; the bytes come back as bulk.
    ReadRange {
        id: FragmentId,
        offset: u32,
        len: u32,
    },
    /// Delete a fragment (idempotent).
    Delete { id: FragmentId },
    /// Every fragment of a log that this server holds.
    ListLog { log: LogId },
    /// Every log this server holds fragments of.
    ListLogs,
    /// Capacity and use.
    Stat,
}

impl fmt::Display for StorageRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageRequest::PutFragment { id, meta } => {
                write!(f, "PutFragment({id}, seglen {})", meta.segment_len)
            }
            StorageRequest::ReadRange { id, offset, len } => {
                write!(f, "ReadRange({id}, {offset}+{len})")
            }
            StorageRequest::Delete { id } => write!(f, "Delete({id})"),
            StorageRequest::ListLog { log } => write!(f, "ListLog({log})"),
            StorageRequest::ListLogs => write!(f, "ListLogs"),
            StorageRequest::Stat => write!(f, "Stat"),
        }
    }
}

/// A fragment as listed by a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentInfo {
    pub id: FragmentId,
    pub meta: FragmentMeta,
    /// Payload length in bytes.
    pub len: u32,
}

/// Capacity and use of one storage server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageStat {
    /// Bytes of the file system holding the data directory.
    pub capacity_bytes: u64,
    /// Bytes free on that file system.
    pub free_bytes: u64,
    /// Bytes of fragment payload stored by this server.
    pub used_bytes: u64,
    pub fragments: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum StorageResponse {
    Stored,
    /// The range follows as bulk bytes.
    Range,
    Deleted {
        existed: bool,
    },
    Fragments(Vec<FragmentInfo>),
    Logs(Vec<LogId>),
    Stat(StorageStat),
}
