//! Storage service messages: fragments in, byte ranges out.

use crate::ids::{FragmentId, LogId, SegmentId};
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
    /// The stripe's placement width (`SegmentAddr::nodes`), so that a listing of the
    /// servers gives back the segment's address; 0 = unknown.
    pub nodes: u16,
}

#[derive(Clone, Debug, Serialize, Deserialize, strum::IntoStaticStr)]
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
    /// The fragments of one segment this server holds (readable ones). Readers and rebuild
    /// ask every server to find fragments that are not on their placement's home server.
    Locate { log: LogId, segment: SegmentId },
    /// Start a scrub pass now (verify every fragment's checksums, repair bad ones from the
    /// rest of their stripe) unless one is running. Answered with `ScrubStatus` at once.
    ScrubNow,
    /// Progress of the running scrub pass and the results of the last finished one.
    ScrubStatus,
    /// Start (`on`) or stop draining: a draining server refuses every new fragment with
    /// "no space" (writers place stripes around it) while `shoal node drain` moves its
    /// fragments off. Answered with `Draining`.
    Drain { on: bool },
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
            StorageRequest::Locate { log, segment } => write!(f, "Locate({log}/{segment})"),
            StorageRequest::ScrubNow => write!(f, "ScrubNow"),
            StorageRequest::ScrubStatus => write!(f, "ScrubStatus"),
            StorageRequest::Drain { on } => write!(f, "Drain({on})"),
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
    /// Bytes this server may store: its configured `capacity`, else the size of the file
    /// system holding the data directory.
    pub capacity_bytes: u64,
    /// Bytes of client data this server still takes: below its capacity and the file
    /// system's free space, minus the reserve.
    pub free_bytes: u64,
    /// Bytes of fragment payload stored by this server.
    pub used_bytes: u64,
    pub fragments: u64,
    /// Identifies the file system holding the data directory (statvfs `f_fsid`, 0 when
    /// unknown): servers reporting the same id share their free space, so honest space
    /// counts it once.
    pub fs_id: u64,
    /// Size of that file system, and bytes free on it (shared by the servers on it).
    pub fs_capacity_bytes: u64,
    pub fs_free_bytes: u64,
    /// Bytes kept for metadata logs, the cleaner and rebuild (refused to client data).
    pub reserve_bytes: u64,
    /// The server is being drained (takes no new fragments).
    pub draining: bool,
}

/// Counters of one scrub pass of one storage server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubCounts {
    /// Fragments read completely and checked.
    pub checked: u64,
    /// Payload bytes read and checked.
    pub bytes: u64,
    /// Fragments that failed a checksum (or could not be read).
    pub bad: u64,
    /// Bad fragments rebuilt from their stripe, written back and read back clean.
    pub repaired: u64,
    /// Bad fragments that could not be repaired (not enough of the stripe reachable).
    pub unrepaired: u64,
}

/// Scrub state of one storage server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubReport {
    /// A pass is running; `current` is its progress.
    pub running: bool,
    /// Fragments the running pass has to check in total.
    pub current_total: u64,
    pub current: ScrubCounts,
    /// Passes finished since the server started.
    pub passes: u64,
    /// Results of the last finished pass, and when it finished (Unix seconds, 0 = never).
    pub last: ScrubCounts,
    pub last_finished_unix: u64,
    /// Configured pace: every fragment is read once per this many seconds.
    pub period_secs: u64,
    /// `ScrubNow` requests received (the answer to `ScrubNow` carries the new count), and
    /// the count of requests covered by finished full-speed passes: a caller waits until
    /// `now_served` reaches the count it was given.
    pub now_requests: u64,
    pub now_served: u64,
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
    Located(Vec<FragmentInfo>),
    Scrub(ScrubReport),
    /// Whether the server is draining now.
    Draining(bool),
}
