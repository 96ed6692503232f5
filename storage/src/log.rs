//! The striped log (API skeleton; the storage work fills it in).

use bytes::Bytes;
use proto::config::ClusterConfig;
use proto::ids::{LogId, LogPtr, SegmentAddr, SegmentId};
use proto::transport::Transport;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("only {acked} of {needed} fragments of {seg} became durable: {detail}")]
    NotDurable { seg: String, acked: usize, needed: usize, detail: String },
    #[error("cannot read {what}: only {available} of the {needed} fragments needed are readable ({detail})")]
    Unreadable { what: String, available: usize, needed: usize, detail: String },
    #[error("bad segment: {0}")]
    Segment(#[from] crate::segment::SegmentError),
}

/// Appends segments to one writer's log.
pub struct LogWriter {
    _private: (),
}

impl LogWriter {
    /// A writer for `log` whose next segment is `next`.
    pub fn new(config: Arc<ClusterConfig>, transport: Arc<Transport>, log: LogId, next: SegmentId) -> LogWriter {
        let _ = (config, transport, log, next);
        todo!("storage: log writer")
    }
    pub fn log(&self) -> LogId {
        todo!()
    }
    /// The id the next `append` will use.
    pub fn next_segment(&self) -> SegmentId {
        todo!()
    }
    /// Stripes `segment` (bytes from `SegmentBuilder::finish` for `next_segment()`) and
    /// returns once durable. On error the id is burnt and the next append uses the next one.
    pub async fn append(&mut self, segment: Bytes) -> Result<SegmentAddr, LogError> {
        let _ = segment;
        todo!()
    }
}

/// Reads any log; shared and cheap to clone.
#[derive(Clone)]
pub struct LogReader {
    _private: Arc<()>,
}

impl LogReader {
    pub fn new(config: Arc<ClusterConfig>, transport: Arc<Transport>) -> LogReader {
        let _ = (config, transport);
        todo!()
    }
    /// Reads the bytes at `ptr`, reconstructing from parity when needed.
    pub async fn read(&self, ptr: LogPtr) -> Result<Bytes, LogError> {
        let _ = ptr;
        todo!()
    }
    /// Reads a whole segment.
    pub async fn read_segment(&self, seg: SegmentAddr) -> Result<Bytes, LogError> {
        let _ = seg;
        todo!()
    }
    /// Every segment of `log` found on the storage servers, in order (for recovery).
    pub async fn list_segments(&self, log: LogId) -> Result<Vec<SegmentAddr>, LogError> {
        let _ = log;
        todo!()
    }
    /// Deletes every fragment of a segment (best effort on unreachable servers).
    pub async fn delete_segment(&self, seg: SegmentAddr) -> Result<(), LogError> {
        let _ = seg;
        todo!()
    }
}
