//! Where the manager's journal goes: `LogBackend` (one segment per append, in the manager's
//! own log) and `StorageLog` over the striped log of the storage servers (the in-memory
//! `MemLog` for tests is in `testing`). Must not: interpret the entries (that is `journal`
//! and `recovery`).

use crate::error::ManagerError;
use bytes::Bytes;
use proto::config::ClusterConfig;
use proto::ids::{LogId, SegmentAddr, SegmentId};
use proto::transport::{BoxFuture, Transport};
use std::sync::{Arc, Mutex, OnceLock};
use storage::log::{LogReader, LogWriter};
use storage::segment::{EntryKind, SegmentBuilder, SegmentView};

/// The manager's log, one segment per append.
pub trait LogBackend: Send + Sync + 'static {
    /// Appends one segment holding one entry; returns once durable.
    fn append(
        &self,
        kind: EntryKind,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<SegmentAddr, ManagerError>>;
    /// Every segment of the log, sorted by id.
    fn list(&self) -> BoxFuture<'_, Result<Vec<SegmentAddr>, ManagerError>>;
    /// The entries of one segment.
    fn read(
        &self,
        seg: SegmentAddr,
    ) -> BoxFuture<'_, Result<Vec<(EntryKind, Bytes)>, ManagerError>>;
    fn delete(&self, seg: SegmentAddr) -> BoxFuture<'_, Result<(), ManagerError>>;
    /// Where appends continue (set once recovery knows the log's end).
    fn set_next(&self, next: SegmentId);
    /// The id the next append will use.
    fn next_segment(&self) -> SegmentId;
}

/// The manager's log in the striped, erasure-coded log of the storage servers.
pub struct StorageLog {
    config: Arc<ClusterConfig>,
    transport: Arc<Transport>,
    log: LogId,
    writer: tokio::sync::Mutex<Option<LogWriter>>,
    reader: OnceLock<LogReader>,
    next: Mutex<SegmentId>,
}

impl StorageLog {
    pub fn new(config: Arc<ClusterConfig>, transport: Arc<Transport>, log: LogId) -> StorageLog {
        StorageLog {
            config,
            transport,
            log,
            writer: tokio::sync::Mutex::new(None),
            reader: OnceLock::new(),
            next: Mutex::new(SegmentId(0)),
        }
    }

    fn reader(&self) -> &LogReader {
        self.reader
            .get_or_init(|| LogReader::new(self.config.clone(), self.transport.clone()))
    }
}

impl LogBackend for StorageLog {
    fn append(
        &self,
        kind: EntryKind,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<SegmentAddr, ManagerError>> {
        Box::pin(async move {
            let mut guard = self.writer.lock().await;
            let writer = match guard.as_mut() {
                Some(w) => w,
                None => {
                    let next = *self.next.lock().unwrap_or_else(|e| e.into_inner());
                    guard.insert(LogWriter::new(
                        self.config.clone(),
                        self.transport.clone(),
                        self.log,
                        next,
                    ))
                }
            };
            let seg = writer.next_segment();
            let mut b = SegmentBuilder::new(self.log, seg);
            b.push(kind, payload);
            let (bytes, _) = b.finish().map_err(|e| ManagerError::Log(e.into()))?;
            let addr = writer.append(bytes).await?;
            *self.next.lock().unwrap_or_else(|e| e.into_inner()) = writer.next_segment();
            Ok(addr)
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<SegmentAddr>, ManagerError>> {
        Box::pin(async move {
            let mut v = self.reader().list_segments(self.log).await?;
            v.sort_by_key(|s| s.segment);
            Ok(v)
        })
    }

    fn read(
        &self,
        seg: SegmentAddr,
    ) -> BoxFuture<'_, Result<Vec<(EntryKind, Bytes)>, ManagerError>> {
        Box::pin(async move {
            let bytes = self.reader().read_segment(seg).await?;
            let view = SegmentView::parse(bytes).map_err(|e| ManagerError::Log(e.into()))?;
            Ok((0..view.entries.len())
                .map(|i| (view.entries[i].kind, view.entry_bytes(i)))
                .collect())
        })
    }

    fn delete(&self, seg: SegmentAddr) -> BoxFuture<'_, Result<(), ManagerError>> {
        Box::pin(async move { Ok(self.reader().delete_segment(seg).await?) })
    }

    fn set_next(&self, next: SegmentId) {
        *self.next.lock().unwrap_or_else(|e| e.into_inner()) = next;
        if let Ok(mut w) = self.writer.try_lock() {
            *w = None;
        }
    }

    fn next_segment(&self) -> SegmentId {
        *self.next.lock().unwrap_or_else(|e| e.into_inner())
    }
}
