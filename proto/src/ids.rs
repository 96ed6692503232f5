//! Typed identifiers shared by every role.
//!
//! Each id says who allocates it and when it dies. Nothing here does I/O.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Number of manager slots. Fixed for the life of a file system: inode ids embed their slot.
pub const SLOT_COUNT: u16 = 1024;
/// Bits of an inode id below the slot number.
const INODE_SEQ_BITS: u32 = 40;

/// A node of the cluster, by its index in the cluster config (`storage-1` … then `manager-1` …).
/// Allocated by `shoal init`; lives as long as the node stays in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node#{}", self.0)
    }
}

/// A manager slot: a share of the inode space. Slots map to managers through the manager map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SlotId(pub u16);

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "slot{}", self.0)
    }
}

/// An inode. The high bits name the slot that owns it; the low 40 bits are a per-slot
/// sequence allocated by that slot's manager at create time. Dies when its link count and
/// open count both reach zero. The kernel sees this number unchanged as its `ino`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InodeId(pub u64);

impl InodeId {
    /// The root directory: slot 0, sequence 1 (also FUSE's root id).
    pub const ROOT: InodeId = InodeId(1);

    /// Builds the id of sequence `seq` in `slot`.
    pub fn new(slot: SlotId, seq: u64) -> InodeId {
        InodeId(((slot.0 as u64) << INODE_SEQ_BITS) | (seq & ((1 << INODE_SEQ_BITS) - 1)))
    }

    /// The slot whose manager owns this inode.
    pub fn slot(self) -> SlotId {
        SlotId(((self.0 >> INODE_SEQ_BITS) % SLOT_COUNT as u64) as u16)
    }

    /// The per-slot sequence number.
    pub fn seq(self) -> u64 {
        self.0 & ((1 << INODE_SEQ_BITS) - 1)
    }
}

impl fmt::Display for InodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ino{}:{}", self.slot().0, self.seq())
    }
}

/// A writer's log. Managers use `LogId::manager(node)`; clients pick a random id with the
/// top bit set when they mount. A log lives until its last segment is cleaned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LogId(pub u64);

impl LogId {
    const CLIENT_BIT: u64 = 1 << 63;

    /// The metadata log of the manager running on `node`.
    pub fn manager(node: NodeId) -> LogId {
        LogId(0x4d00_0000_0000 | node.0 as u64)
    }

    /// The manager whose metadata log this is (`None` for other logs).
    pub fn manager_of(self) -> Option<NodeId> {
        (self.0 >> 32 == 0x4d00).then_some(NodeId(self.0 as u32))
    }

    /// Bits of a client log id below its identity tag (random per mount).
    const CLIENT_RANDOM_BITS: u32 = 39;

    /// A client log from a random 64-bit value (tests; real clients use `client_of`).
    pub fn client(random: u64) -> LogId {
        LogId(random | Self::CLIENT_BIT)
    }

    /// A client log of the identity with log tag `tag` (24 bits, `identity::log_tag`):
    /// bit 63 set, the tag in bits 39..63, 39 random bits below. Servers accept a client's
    /// fragments and commits only in logs carrying its tag.
    pub fn client_of(tag: u32, random: u64) -> LogId {
        let low = random & ((1u64 << Self::CLIENT_RANDOM_BITS) - 1);
        LogId(Self::CLIENT_BIT | ((tag as u64 & 0xff_ffff) << Self::CLIENT_RANDOM_BITS) | low)
    }

    /// The identity tag of a client log (`None` for other logs).
    pub fn client_tag(self) -> Option<u32> {
        self.is_client()
            .then_some(((self.0 >> Self::CLIENT_RANDOM_BITS) & 0xff_ffff) as u32)
    }

    /// Whether this is a client (data) log.
    pub fn is_client(self) -> bool {
        self.0 & Self::CLIENT_BIT != 0
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "log{:016x}", self.0)
    }
}

/// The position of a segment in its log, counted from 0 by the log's writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SegmentId(pub u64);

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seg{}", self.0)
    }
}

/// One fragment of a segment's stripe: data fragments have index `0..k`, parity `k..k+m`.
/// Written once by the log writer, deleted by the cleaner (or the manager's log truncation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FragmentId {
    pub log: LogId,
    pub segment: SegmentId,
    pub index: u8,
}

impl fmt::Display for FragmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/f{}", self.log, self.segment, self.index)
    }
}

/// Configuration epoch; bumped whenever the cluster config changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch{}", self.0)
    }
}

/// A cross-manager transaction, allocated by its coordinating manager: (coordinator, sequence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TxId {
    pub coordinator: NodeId,
    pub seq: u64,
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tx{}.{}", self.coordinator.0, self.seq)
    }
}

/// A client's lease session: a random number the client picks at mount and names in
/// `Hello`, `Renew`, opens and write leases. Lives until the client unmounts (`Goodbye`)
/// or its lease runs out at every manager. Encoded as a bare `u64` (postcard newtype).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session{:x}", self.0)
    }
}

impl fmt::LowerHex for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

/// A client's number for one file system call that must not take effect twice (a rename,
/// a create, ...): the same on every retry of that call, so that a manager that applied it
/// before the answer was lost answers the retry with the first result (its duplicate-call
/// table, `manager::calls`). Unique within the client's session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CallId(pub u64);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call{}", self.0)
    }
}

/// A log sequence number: a manager numbers the metadata records it logs 1, 2, ...;
/// 0 means "nothing logged". Encoded as a bare `u64` (postcard newtype), so records and
/// checkpoints written before the type existed decode unchanged.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Before the first record.
    pub const ZERO: Lsn = Lsn(0);

    /// The number of the record after this one.
    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A callback a manager's lease table has outstanding, numbered by that table; dies when
/// the client answers it or its deadline passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CallbackId(pub u64);

impl fmt::Display for CallbackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cb{}", self.0)
    }
}

/// Where bytes live in the log: a segment plus the (k, m) it was striped with, so that a
/// reader needs no other lookup to find and reconstruct the fragments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SegmentAddr {
    pub log: LogId,
    pub segment: SegmentId,
    /// Total bytes of the segment (before striping).
    pub len: u32,
    pub k: u8,
    pub m: u8,
    /// How many storage nodes (the first of the config's list, in order) the stripe was
    /// placed over when written: placement is recorded with the segment, so adding storage
    /// nodes (at the end of the list) moves no existing data. 0: unknown (placed over the
    /// current list).
    pub nodes: u16,
}

impl fmt::Display for SegmentAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}({}B,{}+{})",
            self.log, self.segment, self.len, self.k, self.m
        )
    }
}

/// A byte range inside a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogPtr {
    pub seg: SegmentAddr,
    pub offset: u32,
    pub len: u32,
}

impl fmt::Display for LogPtr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}+{}..{}",
            self.seg,
            self.offset,
            self.offset as u64 + self.len as u64
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_slot_roundtrip() {
        assert_eq!(InodeId::ROOT.slot(), SlotId(0));
        let i = InodeId::new(SlotId(1023), 77);
        assert_eq!(i.slot(), SlotId(1023));
        assert_eq!(i.seq(), 77);
    }

    #[test]
    fn client_logs_are_marked() {
        assert!(LogId::client(5).is_client());
        assert!(!LogId::manager(NodeId(3)).is_client());
        assert_eq!(LogId::manager(NodeId(3)).manager_of(), Some(NodeId(3)));
        assert_eq!(LogId::client(0x4d00_0000_0003).manager_of(), None);
        let l = LogId::client_of(0xabcdef, u64::MAX);
        assert!(l.is_client());
        assert_eq!(l.client_tag(), Some(0xabcdef));
        assert_eq!(LogId::manager(NodeId(3)).client_tag(), None);
    }
}
