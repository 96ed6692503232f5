//! Where the manager's journal goes: `LogBackend` (one segment per append, in the manager's
//! own log) and `StorageLog` over the striped log of the storage servers (the in-memory
//! `MemLog` for tests is in `testing`). Must not: interpret the entries (that is `journal`
//! and `recovery`).

use crate::error::ManagerError;
use bytes::Bytes;
use proto::config::ClusterConfig;
use proto::ids::{LogId, SegmentAddr, SegmentId};
use proto::live::LiveConfig;
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
    live: Arc<LiveConfig>,
    transport: Arc<Transport>,
    log: LogId,
    writer: tokio::sync::Mutex<Option<LogWriter>>,
    reader: OnceLock<LogReader>,
    next: Mutex<SegmentId>,
    /// The highest segment id of which a listing found any fragment: `set_next` never
    /// goes to or below it (segment ids are never reused, also across restarts).
    seen: Mutex<Option<SegmentId>>,
}

impl StorageLog {
    pub fn new(config: Arc<ClusterConfig>, transport: Arc<Transport>, log: LogId) -> StorageLog {
        StorageLog::following(LiveConfig::new(config), transport, log)
    }

    /// A log whose segments are placed by the config `live` holds at each append.
    pub fn following(live: Arc<LiveConfig>, transport: Arc<Transport>, log: LogId) -> StorageLog {
        StorageLog {
            live,
            transport,
            log,
            writer: tokio::sync::Mutex::new(None),
            reader: OnceLock::new(),
            next: Mutex::new(SegmentId(0)),
            seen: Mutex::new(None),
        }
    }

    fn reader(&self) -> &LogReader {
        self.reader
            .get_or_init(|| LogReader::following(self.live.clone(), self.transport.clone()))
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
                    guard.insert(LogWriter::following(
                        self.live.clone(),
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
            let (mut v, highest) = self.reader().list_segments_seen(self.log).await?;
            v.sort_by_key(|s| s.segment);
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            *seen = (*seen).max(highest);
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
        let seen = *self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let next = match seen {
            Some(s) if s.0 >= next.0 => {
                tracing::warn!(log = %self.log, "fragments of segment {s} are on the storage servers though it is not listed (an append that failed): continuing at {} so that no segment id is reused", s.0 + 1);
                SegmentId(s.0 + 1)
            }
            _ => next,
        };
        *self.next.lock().unwrap_or_else(|e| e.into_inner()) = next;
        if let Ok(mut w) = self.writer.try_lock() {
            *w = None;
        }
    }

    fn next_segment(&self) -> SegmentId {
        *self.next.lock().unwrap_or_else(|e| e.into_inner())
    }
}
