//! Persistence of the manager's records: `LogBackend` (one segment per append, in the
//! manager's own log; `StorageLog` over the striped log, `MemLog` in memory for tests) and
//! `Journal`, the group committer. Mutations push their records and return; the committer
//! writes everything queued as one segment every `commit_interval_ms`, or at once when
//! someone waits for durability. Failed appends are retried with the next segment id (LSNs
//! make the replay idempotent). Checkpoints are queued in LSN order with the records, and
//! once one is durable the older segments are deleted.
//! Must not: hold the state lock, or block a runtime thread.

use crate::error::ManagerError;
use crate::record::{encode_records, Logged, Lsn};
use bytes::Bytes;
use proto::config::ClusterConfig;
use proto::ids::{LogId, SegmentAddr, SegmentId};
use proto::transport::{BoxFuture, Transport};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use storage::log::{LogReader, LogWriter};
use storage::segment::{EntryKind, SegmentBuilder, SegmentView};
use tokio::sync::{watch, Notify};

/// A record batch segment is cut at this size (at record-group boundaries).
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// Attempts of a failed append while shutting down before giving up.
const SHUTDOWN_ATTEMPTS: u32 = 5;

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

#[derive(Default)]
struct MemInner {
    segments: BTreeMap<u64, Vec<(EntryKind, Bytes)>>,
    unreadable: BTreeSet<u64>,
    next: u64,
}

/// An in-memory log with fault knobs, for tests: clones share the same segments, so a
/// "restarted" manager sees what the previous one wrote.
#[derive(Clone, Default)]
pub struct MemLog {
    inner: Arc<Mutex<MemInner>>,
    fail_appends: Arc<AtomicUsize>,
    unlisted: Arc<AtomicUsize>,
}

impl MemLog {
    pub fn new() -> MemLog {
        MemLog::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn addr(seg: u64) -> SegmentAddr {
        SegmentAddr {
            log: LogId(0),
            segment: SegmentId(seg),
            len: 0,
            k: 1,
            m: 0,
        }
    }

    /// The next `n` appends fail (their segment ids are burnt, as with the real log).
    pub fn fail_next_appends(&self, n: usize) {
        self.fail_appends.store(n, Ordering::SeqCst);
    }

    /// The next `n` listings fail (storage unreachable).
    pub fn fail_next_lists(&self, n: usize) {
        self.unlisted.store(n, Ordering::SeqCst);
    }

    /// Makes a segment unreadable (e.g. a torn write at the tail).
    pub fn make_unreadable(&self, seg: u64) {
        self.lock().unreadable.insert(seg);
    }

    /// Ids of the segments present.
    pub fn segment_ids(&self) -> Vec<u64> {
        self.lock().segments.keys().copied().collect()
    }

    /// Kinds of the entries of each segment present.
    pub fn kinds(&self) -> Vec<(u64, Vec<EntryKind>)> {
        self.lock()
            .segments
            .iter()
            .map(|(s, e)| (*s, e.iter().map(|(k, _)| *k).collect()))
            .collect()
    }

    /// Drops every segment from `seg` on (a crash that lost them before they were acked).
    pub fn truncate_from(&self, seg: u64) {
        self.lock().segments.retain(|s, _| *s < seg);
    }
}

fn take_one(a: &AtomicUsize) -> bool {
    a.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl LogBackend for MemLog {
    fn append(
        &self,
        kind: EntryKind,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<SegmentAddr, ManagerError>> {
        Box::pin(async move {
            let mut g = self.lock();
            let seg = g.next;
            g.next += 1;
            if take_one(&self.fail_appends) {
                return Err(ManagerError::Backend(format!(
                    "injected append failure of seg{seg}"
                )));
            }
            g.segments.insert(seg, vec![(kind, payload)]);
            Ok(MemLog::addr(seg))
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<SegmentAddr>, ManagerError>> {
        Box::pin(async move {
            if take_one(&self.unlisted) {
                return Err(ManagerError::Backend(
                    "injected: storage unreachable".into(),
                ));
            }
            Ok(self
                .lock()
                .segments
                .keys()
                .map(|s| MemLog::addr(*s))
                .collect())
        })
    }

    fn read(
        &self,
        seg: SegmentAddr,
    ) -> BoxFuture<'_, Result<Vec<(EntryKind, Bytes)>, ManagerError>> {
        Box::pin(async move {
            let g = self.lock();
            if g.unreadable.contains(&seg.segment.0) {
                return Err(ManagerError::Backend(format!(
                    "injected: seg{} unreadable",
                    seg.segment.0
                )));
            }
            g.segments
                .get(&seg.segment.0)
                .cloned()
                .ok_or_else(|| ManagerError::Backend(format!("no seg{}", seg.segment.0)))
        })
    }

    fn delete(&self, seg: SegmentAddr) -> BoxFuture<'_, Result<(), ManagerError>> {
        Box::pin(async move {
            self.lock().segments.remove(&seg.segment.0);
            Ok(())
        })
    }

    fn set_next(&self, next: SegmentId) {
        self.lock().next = next.0;
    }

    fn next_segment(&self) -> SegmentId {
        SegmentId(self.lock().next)
    }
}

enum Item {
    Records(Vec<Logged>),
    Checkpoint { bytes: Bytes, lsn: Lsn },
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    since_checkpoint: u64,
    closed: bool,
    failed: Option<String>,
}

/// The group committer's shared side.
pub struct Journal {
    queue: Mutex<Queue>,
    work: Notify,
    urgent: Notify,
    durable: watch::Sender<Lsn>,
    interval: Duration,
}

impl Journal {
    /// A journal whose records up to `durable` are already in the log.
    pub fn new(interval: Duration, durable: Lsn) -> Arc<Journal> {
        Arc::new(Journal {
            queue: Mutex::new(Queue::default()),
            work: Notify::new(),
            urgent: Notify::new(),
            durable: watch::Sender::new(durable),
            interval,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues records (call under the state lock, so the queue is in LSN order).
    pub fn push(&self, recs: Vec<Logged>) {
        if recs.is_empty() {
            return;
        }
        let mut q = self.lock();
        q.since_checkpoint += recs.len() as u64;
        q.items.push_back(Item::Records(recs));
        drop(q);
        self.work.notify_one();
    }

    /// Queues a checkpoint covering everything up to `lsn`.
    pub fn push_checkpoint(&self, bytes: Bytes, lsn: Lsn) {
        let mut q = self.lock();
        q.since_checkpoint = 0;
        q.items.push_back(Item::Checkpoint { bytes, lsn });
        drop(q);
        self.work.notify_one();
        self.urgent.notify_one();
    }

    /// Sets the durable LSN found by recovery (before any record is queued).
    pub fn reset_durable(&self, lsn: Lsn) {
        self.durable.send_replace(lsn);
    }

    /// Records queued since the last checkpoint.
    pub fn since_checkpoint(&self) -> u64 {
        self.lock().since_checkpoint
    }

    /// Every record up to this LSN is durable.
    pub fn durable_lsn(&self) -> Lsn {
        *self.durable.borrow()
    }

    /// Returns once every record up to `lsn` is durable.
    pub async fn wait_durable(&self, lsn: Lsn) -> Result<(), ManagerError> {
        let mut rx = self.durable.subscribe();
        if *rx.borrow() >= lsn {
            return Ok(());
        }
        self.urgent.notify_one();
        self.work.notify_one();
        loop {
            {
                let q = self.lock();
                if let Some(f) = &q.failed {
                    return Err(ManagerError::Backend(f.clone()));
                }
            }
            if *rx.borrow_and_update() >= lsn {
                return Ok(());
            }
            if rx.changed().await.is_err() {
                return Err(ManagerError::ShutDown);
            }
        }
    }

    /// Stops accepting work; the committer drains the queue and ends.
    pub fn close(&self) {
        self.lock().closed = true;
        self.work.notify_one();
        self.urgent.notify_one();
    }

    /// Takes the next unit of work: consecutive record groups (up to `MAX_BATCH_BYTES`) or one checkpoint.
    fn take(&self) -> Option<Item> {
        let mut q = self.lock();
        match q.items.pop_front()? {
            Item::Checkpoint { bytes, lsn } => Some(Item::Checkpoint { bytes, lsn }),
            Item::Records(mut recs) => {
                let mut approx = recs.len() * 64;
                while let Some(Item::Records(next)) = q.items.front() {
                    approx += next.len() * 64;
                    if approx > MAX_BATCH_BYTES {
                        break;
                    }
                    if let Some(Item::Records(next)) = q.items.pop_front() {
                        recs.extend(next);
                    }
                }
                Some(Item::Records(recs))
            }
        }
    }

    fn put_back(&self, item: Item) {
        self.lock().items.push_front(item);
    }

    /// The committer: runs until `close` and an empty queue.
    pub async fn run(self: Arc<Self>, backend: Arc<dyn LogBackend>) {
        let mut failures: u32 = 0;
        loop {
            let (empty, closed) = {
                let q = self.lock();
                (q.items.is_empty(), q.closed)
            };
            if empty {
                if closed {
                    return;
                }
                self.work.notified().await;
                continue;
            }
            if !closed {
                // Group commit: wait for the interval unless someone waits for durability.
                tokio::select! {
                    _ = tokio::time::sleep(self.interval) => {}
                    _ = self.urgent.notified() => {}
                }
            }
            while let Some(item) = self.take() {
                match self.write(&*backend, &item).await {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        failures += 1;
                        self.put_back(item);
                        tracing::warn!(
                            attempt = failures,
                            "metadata log append failed, retrying with the next segment: {e}"
                        );
                        if self.lock().closed && failures >= SHUTDOWN_ATTEMPTS {
                            let msg = format!("metadata log unwritable at shutdown after {failures} attempts: {e}");
                            tracing::error!("{msg}");
                            self.lock().failed = Some(msg);
                            self.durable.send_modify(|_| {});
                            return;
                        }
                        let backoff = Duration::from_millis(20u64 << failures.min(6));
                        tokio::time::sleep(backoff).await;
                        break;
                    }
                }
            }
        }
    }

    async fn write(&self, backend: &dyn LogBackend, item: &Item) -> Result<(), ManagerError> {
        match item {
            Item::Records(recs) => {
                let bytes = Bytes::from(encode_records(recs));
                let addr = backend.append(EntryKind::MetaRecords, bytes).await?;
                let last = recs.last().map(|r| r.lsn).unwrap_or(0);
                tracing::trace!(segment = %addr.segment, records = recs.len(), last, "records durable");
                self.durable.send_if_modified(|d| {
                    let changed = last > *d;
                    *d = (*d).max(last);
                    changed
                });
            }
            Item::Checkpoint { bytes, lsn } => {
                let addr = backend.append(EntryKind::Checkpoint, bytes.clone()).await?;
                tracing::info!(segment = %addr.segment, lsn, bytes = bytes.len(), "checkpoint durable");
                self.durable.send_if_modified(|d| {
                    let changed = *lsn > *d;
                    *d = (*d).max(*lsn);
                    changed
                });
                match backend.list().await {
                    Ok(segs) => {
                        for s in segs.into_iter().filter(|s| s.segment < addr.segment) {
                            if let Err(e) = backend.delete(s).await {
                                tracing::warn!(segment = %s.segment, "cannot delete a segment older than the checkpoint: {e}");
                            }
                        }
                    }
                    Err(e) => tracing::warn!(
                        "cannot list the log to drop segments before the checkpoint: {e}"
                    ),
                }
            }
        }
        Ok(())
    }
}
