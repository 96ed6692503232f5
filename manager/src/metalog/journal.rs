//! `Journal`, the group committer of the manager's metadata log. Mutations are admitted
//! (`admit`: refused with E2BIG when their records could never fit in a segment, with EIO
//! while the log makes no progress), push their records and return; the committer writes
//! what is queued as one segment of at most `JournalLimits::batch_bytes` encoded bytes
//! every `commit_interval_ms`, or at once when someone waits for durability. Failed appends
//! are retried with the next segment id (LSNs make the replay idempotent); a log that
//! completes no append for `journal_stall_ms` makes waiters and new mutations fail with EIO
//! (the committer keeps retrying, and mutations are accepted again once it succeeds).
//!
//! Checkpoints (`checkpoint` has the format) are queued in LSN order with the records and
//! written in chunks of bounded size, interleaved with record batches, from inode pieces
//! taken from a `CheckpointSource` under short holds of the state lock. Once the manifest is
//! written and the whole checkpoint read back, segments before the *previous* checkpoint
//! are deleted, so the two newest checkpoints (and the records after the older one) stay.
//! Must not: hold the state lock, or block a runtime thread.

pub use crate::backend::{LogBackend, StorageLog};
use crate::checkpoint::{self, ChunkRef, InodePiece, Manifest, CHUNK_HEADER};
use crate::error::{code, CheckpointReadError, Errno, ManagerError, Refusal};
use crate::record::{encode_records, Logged, Lsn, Record};
#[cfg(any(test, feature = "testing"))]
pub use crate::testing::MemLog;
use bytes::Bytes;
use futures::StreamExt;
use proto::config::ManagerTunables;
use proto::ids::{InodeId, SegmentAddr};
use proto::transport::BoxFuture;
use proto::worker::Worker;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use storage::segment::{EntryKind, MAX_SEGMENT};
use tokio::sync::{watch, Notify};

/// Smallest metadata segment a config may ask for.
pub const MIN_SEGMENT_BYTES: u64 = 16 << 10;
/// Old segments deleted at once, and per slice (see `delete_doomed`).
const DELETE_PARALLEL: usize = 32;
const DELETE_SLICE: usize = 64;

/// Room kept free in every metadata segment for the segment header and entry framing.
pub const SEGMENT_SLACK: usize = 4096;
/// Bytes of inodes encoded per hold of the state lock while a checkpoint is written.
pub const PIECE_BUDGET: usize = 256 << 10;
/// Framing of a record batch beyond its records (magic, version, length varint).
const BATCH_FRAMING: usize = 16;
/// Attempts of a failed append while shutting down before giving up.
const SHUTDOWN_ATTEMPTS: u32 = 5;

/// Size limits and the progress bound of the journal (from `[manager]` in the config).
#[derive(Clone, Copy, Debug)]
pub struct JournalLimits {
    /// Largest segment written (at most the storage limit, `MAX_SEGMENT`).
    pub segment_bytes: usize,
    /// Waiters and new mutations fail with EIO after this long without a completed append.
    pub stall: Duration,
}

impl JournalLimits {
    pub fn from_tunables(t: &ManagerTunables) -> JournalLimits {
        JournalLimits {
            segment_bytes: t.segment_bytes.clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT) as usize,
            stall: Duration::from_millis(t.journal_stall_ms.max(1)),
        }
    }

    /// Largest encoded record batch, and largest checkpoint chunk entry.
    pub fn batch_bytes(&self) -> usize {
        self.segment_bytes - SEGMENT_SLACK
    }

    fn stall_ms(&self) -> u64 {
        self.stall.as_millis() as u64
    }
}

impl Default for JournalLimits {
    fn default() -> JournalLimits {
        JournalLimits::from_tunables(&ManagerTunables::default())
    }
}

/// Encoded bytes of a group of records once numbered (an upper bound: each LSN varint is
/// counted at its longest).
pub fn group_bytes<'a>(recs: impl Iterator<Item = &'a Record>) -> usize {
    recs.map(|r| postcard::experimental::serialized_size(r).unwrap_or(usize::MAX / 4) + 10)
        .fold(0usize, usize::saturating_add)
}

/// Where the committer takes inode pieces of a checkpoint from (the service's state).
pub trait CheckpointSource: Send + Sync + 'static {
    /// Inodes after `after`, about `budget` bytes, taken under the state lock; `None`
    /// once the manager is gone.
    fn inode_piece(
        &self,
        after: Option<InodeId>,
        budget: usize,
    ) -> BoxFuture<'_, Option<InodePiece>>;
}

enum Item {
    Records { recs: Vec<Logged>, bytes: usize },
    Checkpoint { head: Vec<u8>, lsn: Lsn },
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    since_checkpoint: u64,
    /// Record segments written since the last checkpoint was queued.
    segments_since_checkpoint: u64,
    /// Segments (chunks and manifest) of the last complete checkpoint.
    checkpoint_size: u64,
    /// A checkpoint is queued or being written.
    checkpoint_busy: bool,
    closed: bool,
    /// No change is admitted any more (`refuse_changes`): the manager is stopping.
    refusing: bool,
    /// The committer gave up (at shutdown, or on an error retrying cannot fix).
    failed: Option<String>,
    /// The committer has failed for longer than the stall bound; cleared on success.
    stalled: Option<String>,
}

/// How often a checkpoint is due (`[manager]` `checkpoint_records`, `checkpoint_segments`).
#[derive(Clone, Copy, Debug)]
pub struct CheckpointEvery {
    pub records: u64,
    pub segments: u64,
}

impl CheckpointEvery {
    pub fn of(m: &proto::config::ManagerTunables) -> CheckpointEvery {
        CheckpointEvery {
            records: m.checkpoint_records,
            segments: m.checkpoint_segments,
        }
    }
}

/// The group committer's shared side.
pub struct Journal {
    queue: Mutex<Queue>,
    work: Notify,
    urgent: Notify,
    durable: watch::Sender<Lsn>,
    /// Appends completed (any kind): what "progress" means for the stall bound.
    progress: watch::Sender<u64>,
    /// LSN of the newest checkpoint written and read back.
    checkpointed: watch::Sender<Lsn>,
    /// First segment of the newest complete checkpoint (older checkpoint's segments are
    /// deleted once the next one is complete).
    kept: Mutex<Option<u64>>,
    interval: Duration,
    limits: JournalLimits,
}

impl Journal {
    /// A journal whose records up to `durable` are already in the log.
    pub fn new(interval: Duration, durable: Lsn, limits: JournalLimits) -> Arc<Journal> {
        Arc::new(Journal {
            queue: Mutex::new(Queue::default()),
            work: Notify::new(),
            urgent: Notify::new(),
            durable: watch::Sender::new(durable),
            progress: watch::Sender::new(0),
            checkpointed: watch::Sender::new(Lsn::ZERO),
            kept: Mutex::new(None),
            interval,
            limits,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn limits(&self) -> JournalLimits {
        self.limits
    }

    /// Whether a mutation with these records may be committed: E2BIG if they could never
    /// fit in one segment, EIO while the log is stalled or failed. Call before applying them.
    pub fn admit(&self, recs: &[Record]) -> Result<(), Refusal> {
        {
            let q = self.lock();
            if q.refusing || q.closed {
                return Err(Refusal::Stopping);
            }
            if let Some(f) = q.failed.as_ref().or(q.stalled.as_ref()) {
                return Err(Refusal::Errno(Errno::new(
                    code::EIO,
                    format!("metadata log is not accepting changes: {f}"),
                )));
            }
        }
        let bytes = group_bytes(recs.iter()).saturating_add(BATCH_FRAMING);
        let limit = self.limits.batch_bytes();
        if bytes > limit {
            return Err(Refusal::Errno(Errno::new(
                code::E2BIG,
                format!(
                    "the change needs {bytes} bytes of metadata log but a metadata segment holds \
                     {limit} (manager.segment_bytes = {}); split it into smaller changes \
                     (e.g. a smaller xattr value or fewer extents per commit)",
                    self.limits.segment_bytes
                ),
            )));
        }
        Ok(())
    }

    /// Admits no change from now on (`admit` answers `Refusal::Stopping`): a stopping
    /// manager calls it under its state lock before it takes the LSN it makes durable, so
    /// that no change is answered after it that the stop would not make durable.
    pub fn refuse_changes(&self) {
        self.lock().refusing = true;
    }

    /// Queues records (call under the state lock, so the queue is in LSN order).
    pub fn push(&self, recs: Vec<Logged>) {
        if recs.is_empty() {
            return;
        }
        let bytes = group_bytes(recs.iter().map(|l| &l.rec));
        let mut q = self.lock();
        q.since_checkpoint += recs.len() as u64;
        q.items.push_back(Item::Records { recs, bytes });
        drop(q);
        self.work.notify_one();
    }

    /// Whether a checkpoint is due (none in progress): `every.records` records since the
    /// last one, or `every.segments` record segments (at least four times the segments of
    /// the last checkpoint, so that checkpoints of a large state stay a fraction of the
    /// log written).
    pub fn checkpoint_due(&self, every: CheckpointEvery) -> bool {
        let q = self.lock();
        let segments = every
            .segments
            .max(1)
            .max(q.checkpoint_size.saturating_mul(4));
        !q.checkpoint_busy
            && (q.since_checkpoint >= every.records.max(1)
                || q.segments_since_checkpoint >= segments)
    }

    /// Queues a checkpoint whose head (`checkpoint::head_piece`) is the state at `lsn`
    /// (call under the state lock).
    pub fn push_checkpoint(&self, head: Vec<u8>, lsn: Lsn) {
        let mut q = self.lock();
        q.since_checkpoint = 0;
        q.segments_since_checkpoint = 0;
        q.checkpoint_busy = true;
        q.items.push_back(Item::Checkpoint { head, lsn });
        drop(q);
        self.work.notify_one();
        self.urgent.notify_one();
    }

    /// Sets what recovery found: the durable LSN, the checkpoint it loaded (LSN, first
    /// segment) and the record segments it replayed after it. Call before any record is
    /// queued. The records and segments replayed count towards the next checkpoint: a
    /// manager restarted more often than it writes a checkpoint's worth would otherwise
    /// never checkpoint, and each recovery would replay the whole log (consistency/t56:
    /// 21,455 segments, 15 s, after 20 restarts).
    pub fn set_recovered(&self, durable: Lsn, checkpoint: Option<(Lsn, u64)>, segments: u64) {
        self.durable.send_replace(durable);
        let base = checkpoint.map_or(0, |(lsn, _)| lsn.0);
        {
            let mut q = self.lock();
            q.since_checkpoint = durable.0.saturating_sub(base);
            q.segments_since_checkpoint = segments;
        }
        if let Some((lsn, first)) = checkpoint {
            self.checkpointed.send_replace(lsn);
            *self.kept.lock().unwrap_or_else(|e| e.into_inner()) = Some(first);
        }
    }

    /// Records queued since the last checkpoint.
    pub fn since_checkpoint(&self) -> u64 {
        self.lock().since_checkpoint
    }

    /// Every record up to this LSN is durable.
    pub fn durable_lsn(&self) -> Lsn {
        *self.durable.borrow()
    }

    /// LSN of the newest complete checkpoint.
    pub fn checkpointed_lsn(&self) -> Lsn {
        *self.checkpointed.borrow()
    }

    /// Returns once every record up to `lsn` is durable; fails (EIO to clients) when the
    /// log completes no append for the stall bound.
    pub async fn wait_durable(&self, lsn: Lsn) -> Result<(), ManagerError> {
        self.wait_for(&self.durable, lsn).await
    }

    /// Returns once a checkpoint covering `lsn` is complete (same bound as `wait_durable`).
    pub async fn wait_checkpoint(&self, lsn: Lsn) -> Result<(), ManagerError> {
        self.wait_for(&self.checkpointed, lsn).await
    }

    async fn wait_for(&self, what: &watch::Sender<Lsn>, lsn: Lsn) -> Result<(), ManagerError> {
        let mut rx = what.subscribe();
        if *rx.borrow() >= lsn {
            return Ok(());
        }
        self.urgent.notify_one();
        self.work.notify_one();
        let mut progress = self.progress.subscribe();
        let mut since = Instant::now();
        let tick = (self.limits.stall / 4).clamp(Duration::from_millis(5), Duration::from_secs(1));
        loop {
            {
                let q = self.lock();
                if let Some(f) = &q.failed {
                    return Err(ManagerError::Backend(f.clone()));
                }
                if let Some(s) = &q.stalled {
                    return Err(ManagerError::Stalled {
                        ms: self.limits.stall_ms(),
                        detail: s.clone(),
                    });
                }
            }
            if *rx.borrow_and_update() >= lsn {
                return Ok(());
            }
            if progress.has_changed().unwrap_or(false) {
                progress.borrow_and_update();
                since = Instant::now();
            }
            if since.elapsed() >= self.limits.stall {
                return Err(ManagerError::Stalled {
                    ms: self.limits.stall_ms(),
                    detail: "no append completed while waiting".into(),
                });
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Err(ManagerError::ShutDown) },
                _ = progress.changed() => {}
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// Stops accepting work; the committer drains the queue and ends.
    pub fn close(&self) {
        self.lock().closed = true;
        self.work.notify_one();
        self.urgent.notify_one();
    }

    /// Takes consecutive record groups up to `batch_bytes` encoded bytes.
    fn take_batch(&self) -> Option<(Vec<Logged>, usize)> {
        let limit = self.limits.batch_bytes().saturating_sub(BATCH_FRAMING);
        let mut q = self.lock();
        let (mut recs, mut bytes) = match q.items.pop_front()? {
            Item::Records { recs, bytes } => (recs, bytes),
            other => {
                q.items.push_front(other);
                return None;
            }
        };
        while let Some(Item::Records { bytes: b, .. }) = q.items.front() {
            if bytes + *b > limit {
                break;
            }
            if let Some(Item::Records {
                recs: next,
                bytes: b,
            }) = q.items.pop_front()
            {
                recs.extend(next);
                bytes += b;
            }
        }
        Some((recs, bytes))
    }

    fn put_back(&self, recs: Vec<Logged>, bytes: usize) {
        self.lock().items.push_front(Item::Records { recs, bytes });
    }

    /// The committer: runs until `close` and an empty queue. Each step (a batch of
    /// records, a checkpoint chunk) is reported through `worker`.
    pub async fn run(
        self: Arc<Self>,
        backend: Arc<dyn LogBackend>,
        source: Arc<dyn CheckpointSource>,
        worker: Arc<Worker>,
    ) {
        let doomed = Doomed::default();
        // Old segments are deleted beside the committer, never in its way: while a slice
        // of deletions ran inside the group-commit wait, a record someone waited for
        // waited for the rest of the slice too (50-100 ms on a busy disk, three times
        // per cross-manager rename: worst latencies of 0.3-0.6 s in the file-server mix
        // of `shoal bench`, issue 11).
        tokio::join!(
            self.commit_loop(&*backend, &*source, &worker, &doomed),
            delete_doomed(&*backend, &doomed),
        );
    }

    /// The committer: group commits, checkpoints, and the old segments they make
    /// deletable handed to `delete_doomed` (told to stop once this returns).
    async fn commit_loop(
        &self,
        backend: &dyn LogBackend,
        source: &dyn CheckpointSource,
        worker: &Worker,
        doomed: &Doomed,
    ) {
        let mut c = Committer {
            j: self,
            backend,
            source,
            active: None,
            failures: 0,
            failing_since: None,
            doomed,
        };
        let _stop = StopDeleting(doomed);
        let mut draining = false;
        // While a checkpoint is written, batches and chunks alternate, so that neither a
        // steady stream of records starves the checkpoint nor a checkpoint delays fsync by
        // more than one chunk.
        let mut chunk_turn = false;
        loop {
            let (records, marker, closed) = {
                let q = self.lock();
                (
                    matches!(q.items.front(), Some(Item::Records { .. })),
                    matches!(q.items.front(), Some(Item::Checkpoint { .. })),
                    q.closed,
                )
            };
            if !records && !marker && c.active.is_none() {
                if closed {
                    worker.stopped();
                    return;
                }
                draining = false;
                self.work.notified().await;
                continue;
            }
            if records && !draining && !closed && c.active.is_none() {
                // Group commit: wait for the interval unless someone waits for durability.
                tokio::select! {
                    _ = tokio::time::sleep(self.interval) => {}
                    _ = self.urgent.notified() => {}
                }
            }
            worker.busy();
            let step = if records && !(chunk_turn && c.active.is_some()) {
                draining = true;
                chunk_turn = true;
                c.write_batch().await
            } else if c.active.is_some() {
                chunk_turn = false;
                c.advance_checkpoint().await
            } else {
                c.start_checkpoint();
                Ok(())
            };
            match step {
                Ok(()) => {
                    worker.idle();
                    c.succeeded()
                }
                Err(e) => {
                    worker.failed(&e);
                    draining = false;
                    if c.failed(e).await {
                        worker.stopped();
                        return;
                    }
                }
            }
        }
    }
}

/// Old segments to delete, queued by the committer and deleted by `delete_doomed`.
#[derive(Default)]
struct Doomed {
    state: Mutex<DoomedState>,
    wake: Notify,
}

#[derive(Default)]
struct DoomedState {
    queue: VecDeque<SegmentAddr>,
    /// Taken from the queue and being deleted (a listing meanwhile must not queue them
    /// again).
    deleting: std::collections::BTreeSet<u64>,
    /// The committer ended: delete no more.
    stopped: bool,
}

impl Doomed {
    fn lock(&self) -> std::sync::MutexGuard<'_, DoomedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Tells `delete_doomed` to stop when the committer ends, however it ends.
struct StopDeleting<'a>(&'a Doomed);

impl Drop for StopDeleting<'_> {
    fn drop(&mut self) {
        self.0.lock().stopped = true;
        self.0.wake.notify_one();
    }
}

/// Deletes the queued old segments, up to `DELETE_SLICE` at a time with `DELETE_PARALLEL`
/// in flight, beside the committer (no record waits for a deletion), until the committer
/// ends. A segment that cannot be deleted is left (the listing after the next checkpoint
/// finds it again).
async fn delete_doomed(backend: &dyn LogBackend, doomed: &Doomed) {
    loop {
        let slice: Vec<SegmentAddr> = {
            let mut d = doomed.lock();
            if d.stopped {
                return;
            }
            let n = d.queue.len().min(DELETE_SLICE);
            let slice: Vec<SegmentAddr> = d.queue.drain(..n).collect();
            d.deleting.extend(slice.iter().map(|s| s.segment.0));
            slice
        };
        if slice.is_empty() {
            doomed.wake.notified().await;
            continue;
        }
        let failed = futures::stream::iter(slice.iter().copied())
            .map(|s| async move { (s, backend.delete(s).await) })
            .buffer_unordered(DELETE_PARALLEL)
            .filter_map(|(s, r)| async move { r.err().map(|e| (s, e)) })
            .collect::<Vec<_>>()
            .await;
        if let Some((s, e)) = failed.first() {
            tracing::warn!(segment = %s.segment, failed = failed.len(), "cannot delete segments older than the previous checkpoint (retried after the next one): {e}");
        }
        let mut d = doomed.lock();
        for s in &slice {
            d.deleting.remove(&s.segment.0);
        }
        if d.queue.is_empty() {
            tracing::info!("deleted the log before the previous checkpoint");
        }
    }
}

/// A checkpoint being written.
struct Active {
    lsn: Lsn,
    /// Stream bytes not yet in a chunk.
    buf: Vec<u8>,
    cursor: Option<InodeId>,
    inodes_done: bool,
    chunks: Vec<(SegmentAddr, ChunkRef)>,
    pieces: u64,
    inodes: u64,
    covers: Lsn,
    from_segment: u64,
    started: Instant,
}

struct Committer<'a> {
    j: &'a Journal,
    backend: &'a dyn LogBackend,
    source: &'a dyn CheckpointSource,
    active: Option<Active>,
    failures: u32,
    failing_since: Option<Instant>,
    /// Segments before the previous checkpoint, still to delete (`delete_doomed`).
    doomed: &'a Doomed,
}

impl Committer<'_> {
    async fn append(&self, kind: EntryKind, bytes: Bytes) -> Result<SegmentAddr, ManagerError> {
        match tokio::time::timeout(self.j.limits.stall, self.backend.append(kind, bytes)).await {
            Ok(r) => r,
            Err(_) => Err(ManagerError::Stalled {
                ms: self.j.limits.stall_ms(),
                detail: "an append did not complete".into(),
            }),
        }
    }

    async fn write_batch(&mut self) -> Result<(), ManagerError> {
        let Some((recs, bytes)) = self.j.take_batch() else {
            return Ok(());
        };
        let (recs, encoded) = tokio::task::spawn_blocking(move || {
            let b = Bytes::from(encode_records(&recs));
            (recs, b)
        })
        .await
        .map_err(|e| ManagerError::Backend(format!("record encoding task failed: {e}")))?;
        let started = Instant::now();
        match self.append(EntryKind::MetaRecords, encoded).await {
            Ok(addr) => {
                proto::ops_metrics::journal_commit(
                    &addr.log.to_string(),
                    recs.len(),
                    started.elapsed(),
                );
                let last = recs.last().map_or(Lsn::ZERO, |r| r.lsn);
                tracing::trace!(segment = %addr.segment, records = recs.len(), bytes, last = last.0, "records durable");
                self.j.lock().segments_since_checkpoint += 1;
                self.j.durable.send_if_modified(|d| {
                    let changed = last > *d;
                    *d = (*d).max(last);
                    changed
                });
                Ok(())
            }
            Err(e) => {
                self.j.put_back(recs, bytes);
                Err(e)
            }
        }
    }

    fn start_checkpoint(&mut self) {
        let item = self.j.lock().items.pop_front();
        if let Some(Item::Checkpoint { head, lsn }) = item {
            tracing::info!(lsn = lsn.0, "checkpoint started");
            self.active = Some(Active {
                lsn,
                buf: head,
                cursor: None,
                inodes_done: false,
                chunks: Vec::new(),
                pieces: 1,
                inodes: 0,
                covers: lsn,
                from_segment: self.backend.next_segment().0,
                started: Instant::now(),
            });
        } else if let Some(other) = item {
            self.j.lock().items.push_front(other);
        }
    }

    /// Writes the next chunk, or the manifest once every chunk is written.
    async fn advance_checkpoint(&mut self) -> Result<(), ManagerError> {
        let chunk = self.j.limits.batch_bytes() - CHUNK_HEADER;
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        while a.buf.len() < chunk && !a.inodes_done {
            let Some(p) = self
                .source
                .inode_piece(a.cursor, PIECE_BUDGET.min(chunk))
                .await
            else {
                return Err(ManagerError::ShutDown);
            };
            a.buf.extend_from_slice(&p.bytes);
            a.cursor = p.last;
            a.inodes_done = p.done;
            a.pieces += 1;
            a.inodes += p.count;
            a.covers = a.covers.max(p.lsn);
        }
        if !a.buf.is_empty() {
            let n = a.buf.len().min(chunk);
            let entry = checkpoint::encode_chunk(a.lsn, a.chunks.len() as u32, &a.buf[..n]);
            let crc = proto::crc32c(&a.buf[..n]);
            let (lsn, index) = (a.lsn, a.chunks.len());
            let addr = self.append(EntryKind::Checkpoint, entry).await?;
            tracing::debug!(lsn = lsn.0, index, segment = %addr.segment, bytes = n, "checkpoint chunk written");
            let Some(a) = self.active.as_mut() else {
                return Ok(());
            };
            a.chunks.push((
                addr,
                ChunkRef {
                    segment: addr.segment.0,
                    len: n as u32,
                    crc,
                },
            ));
            a.buf.drain(..n);
            return Ok(());
        }
        // The pieces saw every change up to `covers`: those records are queued ahead of
        // anything newer and go first; the manifest waits for them.
        if *self.j.durable.borrow() < a.covers {
            let queued = matches!(self.j.lock().items.front(), Some(Item::Records { .. }));
            if !queued {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            return Ok(());
        }
        let manifest = Manifest {
            lsn: a.lsn,
            covers: a.covers,
            from_segment: a.from_segment,
            chunks: a.chunks.iter().map(|(_, c)| *c).collect(),
            pieces: a.pieces,
            inodes: a.inodes,
        };
        let bytes = checkpoint::encode_manifest(&manifest);
        if bytes.len() > self.j.limits.batch_bytes() {
            return Err(ManagerError::TooLarge {
                bytes: bytes.len(),
                limit: self.j.limits.batch_bytes(),
                what: format!(
                    "checkpoint manifest of {} chunks (raise manager.segment_bytes)",
                    manifest.chunks.len()
                ),
            });
        }
        let addr = self.append(EntryKind::Checkpoint, bytes.clone()).await?;
        let Some(a) = self.active.take() else {
            return Ok(());
        };
        let written = a.started.elapsed();
        let verified = self.read_back(&a, addr, &bytes).await;
        self.j.lock().checkpoint_busy = false;
        match verified {
            Err(e) => {
                tracing::error!(lsn = a.lsn.0, segment = %addr.segment, "checkpoint does not read back, keeping the older segments: {e}");
            }
            Ok(()) => {
                let first = manifest.from_segment;
                tracing::info!(lsn = a.lsn.0, covers = a.covers.0, segment = %addr.segment, chunks = a.chunks.len(), inodes = a.inodes, ms = written.as_millis() as u64, "checkpoint durable and read back");
                self.j.checkpointed.send_modify(|c| *c = (*c).max(a.lsn));
                self.j.lock().checkpoint_size = a.chunks.len() as u64 + 1;
                let prev = self
                    .j
                    .kept
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .replace(first);
                if let Some(prev) = prev {
                    self.doom_before(prev).await;
                }
            }
        }
        Ok(())
    }

    /// Reads the whole checkpoint back and checks it against what was written.
    async fn read_back(
        &self,
        a: &Active,
        manifest_addr: SegmentAddr,
        manifest: &Bytes,
    ) -> Result<(), CheckpointReadError> {
        for (addr, c) in &a.chunks {
            let segment = addr.segment.0;
            let entries = self.backend.read(*addr).await.map_err(|e| {
                CheckpointReadError::ChunkUnreadable {
                    segment,
                    source: Box::new(e),
                }
            })?;
            let Some((_, bytes)) = entries.first() else {
                return Err(CheckpointReadError::NotAChunk(segment));
            };
            let (lsn, _, data) = checkpoint::decode_chunk(bytes)
                .map_err(|source| CheckpointReadError::ChunkCodec { segment, source })?;
            if lsn != a.lsn || data.len() != c.len as usize || proto::crc32c(&data) != c.crc {
                return Err(CheckpointReadError::ChunkMismatch(segment));
            }
        }
        let segment = manifest_addr.segment.0;
        let entries = self.backend.read(manifest_addr).await.map_err(|e| {
            CheckpointReadError::ManifestUnreadable {
                segment,
                source: Box::new(e),
            }
        })?;
        match entries.first() {
            Some((EntryKind::Checkpoint, b)) if b == manifest => Ok(()),
            _ => Err(CheckpointReadError::ManifestMismatch(segment)),
        }
    }

    /// Queues every segment before `first` (the previous checkpoint's first segment) for
    /// deletion. They are deleted a slice at a time beside the committer
    /// (`delete_doomed`): deleted here, one at a time, the ~10,000 segments between two
    /// checkpoints took about 20 s, during which every mutation and sync of this manager
    /// waited (consistency/t56, at every checkpoint after the first; 32 at a time, 8.6 s).
    async fn doom_before(&mut self, first: u64) {
        let segs = match self.backend.list().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(
                    "cannot list the log to drop segments before the previous checkpoint: {e}"
                );
                return;
            }
        };
        let mut d = self.doomed.lock();
        let known: std::collections::BTreeSet<u64> = d
            .queue
            .iter()
            .map(|s| s.segment.0)
            .chain(d.deleting.iter().copied())
            .collect();
        let old: Vec<SegmentAddr> = segs
            .into_iter()
            .filter(|s| s.segment.0 < first && !known.contains(&s.segment.0))
            .collect();
        if !old.is_empty() {
            tracing::info!(
                segments = old.len(),
                "deleting the log before the previous checkpoint, in the background"
            );
        }
        d.queue.extend(old);
        drop(d);
        self.doomed.wake.notify_one();
    }

    fn succeeded(&mut self) {
        if self.failing_since.take().is_some() {
            let was = self.j.lock().stalled.take();
            if was.is_some() {
                tracing::info!("metadata log appends succeed again; accepting changes");
            }
        }
        self.failures = 0;
        self.j.progress.send_modify(|p| *p += 1);
    }

    /// Counts a failed step; returns true when the committer must end.
    async fn failed(&mut self, e: ManagerError) -> bool {
        self.failures += 1;
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        let closed = self.j.lock().closed;
        let permanent = matches!(e, ManagerError::TooLarge { .. })
            || matches!(&e, ManagerError::Log(storage::log::LogError::Segment(_)));
        if permanent || (closed && self.failures >= SHUTDOWN_ATTEMPTS) {
            let msg = if permanent {
                format!("metadata log append cannot succeed by retrying: {e}")
            } else {
                format!(
                    "metadata log unwritable at shutdown after {} attempts: {e}",
                    self.failures
                )
            };
            tracing::error!("{msg}");
            self.j.lock().failed = Some(msg);
            self.j.durable.send_modify(|_| {});
            self.j.checkpointed.send_modify(|_| {});
            return true;
        }
        tracing::warn!(
            attempt = self.failures,
            "metadata log append failed, retrying with the next segment: {e}"
        );
        if since.elapsed() >= self.j.limits.stall {
            let mut q = self.j.lock();
            if q.stalled.is_none() {
                let msg = format!(
                    "no metadata log append succeeded for {} ms, last error: {e}",
                    since.elapsed().as_millis()
                );
                tracing::error!("{msg}; fsync and new mutations fail with EIO until it recovers");
                q.stalled = Some(msg);
                drop(q);
                self.j.durable.send_modify(|_| {});
                self.j.checkpointed.send_modify(|_| {});
            }
        }
        let backoff = Duration::from_millis(20u64 << self.failures.min(6)).min(self.j.limits.stall);
        tokio::time::sleep(backoff).await;
        false
    }
}
