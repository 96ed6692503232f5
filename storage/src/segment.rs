//! Segment format (API skeleton; the storage work fills it in).

use bytes::Bytes;
use proto::ids::{InodeId, LogId, SegmentId};

/// What a segment entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EntryKind {
    /// File data of `ino` at file offset `file_offset` (client logs).
    FileData { ino: InodeId, file_offset: u64 },
    /// A batch of manager metadata records.
    MetaRecords,
    /// A manager checkpoint (whole state).
    Checkpoint,
}

/// One entry of a segment summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub kind: EntryKind,
    /// Offset of the entry's bytes from the start of the segment.
    pub offset: u32,
    pub len: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("segment header is malformed: {0}")]
    Malformed(String),
    #[error("segment would exceed {0} bytes")]
    TooLarge(u64),
}

/// Builds one segment: a self-describing header (magic, version, codec, log, segment,
/// entries) followed by the entries' bytes.
pub struct SegmentBuilder {
    _private: (),
}

impl SegmentBuilder {
    pub fn new(log: LogId, segment: SegmentId) -> SegmentBuilder {
        let _ = (log, segment);
        todo!("storage: segment builder")
    }
    /// Adds an entry; returns its index.
    pub fn push(&mut self, kind: EntryKind, data: Bytes) -> usize {
        let _ = (kind, data);
        todo!()
    }
    /// Bytes the finished segment will take.
    pub fn len(&self) -> u64 {
        todo!()
    }
    pub fn is_empty(&self) -> bool {
        todo!()
    }
    /// Finishes: the segment bytes and the final entry table (with absolute offsets).
    pub fn finish(self) -> Result<(Bytes, Vec<Entry>), SegmentError> {
        todo!()
    }
}

/// A parsed segment.
pub struct SegmentView {
    pub log: LogId,
    pub segment: SegmentId,
    pub entries: Vec<Entry>,
    pub bytes: Bytes,
}

impl SegmentView {
    pub fn parse(bytes: Bytes) -> Result<SegmentView, SegmentError> {
        let _ = bytes;
        todo!()
    }
    /// The bytes of entry `i`.
    pub fn entry_bytes(&self, i: usize) -> Bytes {
        let _ = i;
        todo!()
    }
}
