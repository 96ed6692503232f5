//! Write-back: dirty data → segments of this client's log → `CommitWrites` at the managers.
//!
//! Owns `WriteBack`, the write-back part of the client: the log writer and its reclaim
//! horizon (with what was last promised to each manager), the commit locks, the write
//! verifier's unsynced commits and the inodes whose suspects may be sent again, the
//! background write errors, the dirty-memory limit with its wake-ups (`space`, `kick`) and
//! the ENOSPC hold. Its methods are what write-back does on its own: append segments,
//! commit to a manager (through `meta::Meta`, which it holds), sync and verify, resend,
//! promise the horizon, hold writers on ENOSPC or a full dirty memory.
//!
//! The flush procedure that drives it lives in `data::flush` (it also needs the data
//! state, the attribute cache and the write lease). Each inode's flush holds that inode's
//! commit lock (`InodeCommit`) from taking its data to the commit's answer, so commits of
//! one inode apply in order; the log writer's lock covers only the segment appends.
//! Must not: import `client` (the composition root owns this part), hold the log lock
//! across a manager call, or hold a std lock across an await.

use crate::data::write_errors::WriteErrors;
use crate::error::FsError;
use crate::horizon::{Horizon, Pin};
use crate::meta::{self as remote, Meta, Target};
use crate::verifier::Unsynced;
use bytes::Bytes;
use dashmap::DashMap;
use futures::StreamExt;
use proto::chunksum::ChunkSums;
use proto::config::ClusterConfig;
use proto::ids::{InodeId, LogId, LogPtr, NodeId, SegmentId};
use proto::live::LiveConfig;
use proto::msg::{Attr, Extent, InodeWrite, ManagerRequest, ManagerResponse, Standing, Timestamp};
use proto::transport::Transport;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use storage::log::LogWriter;
use storage::segment::{EntryKind, SegmentBuilder};
use tokio::sync::Notify;

/// The commit lock of one inode, held from taking its dirty data until the commit is
/// answered: an inode has at most one flush under way, so its commits apply in order,
/// and flushes of different inodes never wait for each other's manager calls.
pub(crate) type InodeCommit = tokio::sync::OwnedMutexGuard<()>;

/// One inode's share of a flush.
pub(crate) struct Taken {
    pub ino: InodeId,
    pub chunks: Vec<(u64, Bytes)>,
    pub size: u64,
    pub mtime: Timestamp,
    /// `FileWrites::standing` of the inode's writes.
    pub standing: Option<Standing>,
}

/// What one taken inode's data became in the log: its extents, and the end-to-end
/// checksums (`proto::chunksum`) of the segments they are in, for the commit.
#[derive(Clone, Debug, Default)]
pub(crate) struct Written {
    pub extents: Vec<Extent>,
    pub sums: Vec<ChunkSums>,
}

/// A piece of a taken chunk placed in a segment: `(item, start within item, len)`.
pub type Placed = (usize, u64, u64);

/// Splits items of the given lengths over segments holding at most `limit` data bytes each
/// (items larger than the room left are split). Pure, for tests.
pub fn plan_segments(lens: &[u64], limit: u64) -> Vec<Vec<Placed>> {
    let limit = limit.max(1);
    let mut segs: Vec<Vec<Placed>> = Vec::new();
    let mut cur: Vec<Placed> = Vec::new();
    let mut room = limit;
    for (i, &len) in lens.iter().enumerate() {
        let mut at = 0;
        while at < len {
            if room == 0 {
                segs.push(std::mem::take(&mut cur));
                room = limit;
            }
            let n = (len - at).min(room);
            cur.push((i, at, n));
            at += n;
            room -= n;
        }
    }
    if !cur.is_empty() {
        segs.push(cur);
    }
    segs
}

/// Largest segment this client builds, whatever the config says.
const MAX_SEGMENT: u64 = 64 << 20;
/// Segments of one flush being put at once: the next segment is built, summed and
/// encoded while the storage servers store (and fsync) the one before.
const SEGMENTS_IN_FLIGHT: usize = 2;
/// Dirty memory at which writers wait for the flusher (at least two segments).
const DIRTY_LIMIT: u64 = 64 << 20;
/// Bound of one `LogHorizon` attempt.
const PROMISE_WAIT: Duration = Duration::from_secs(1);
/// How long an fsync after a manager restart waits for this client's reclaim to ask for its
/// write leases (it starts once a renewal or Hello shows the restart, within about a
/// lease): leases, plus a margin.
const RECLAIM_WAIT_LEASES: u32 = 2;
const RECLAIM_WAIT_EXTRA: Duration = Duration::from_secs(1);

/// The write-back part of a client (see the module docs).
pub(crate) struct WriteBack {
    config: Arc<ClusterConfig>,
    /// Segments are placed by the config this holds when they start (storage nodes added
    /// while mounted); the tunables stay those of `config`.
    live: Arc<LiveConfig>,
    transport: Arc<Transport>,
    /// The manager-RPC layer (commits, syncs, extent checks, horizon promises).
    meta: Arc<Meta>,
    log_id: LogId,
    /// The log writer, created at the first flush; its lock serialises segment appends
    /// (never held across a manager call).
    log: tokio::sync::Mutex<Option<LogWriter>>,
    /// The reclaim horizon of `log_id` (pins of flights and resends, next segment).
    horizon: Horizon,
    /// Per manager: the (incarnation, horizon) last promised with `LogHorizon`.
    promised: DashMap<NodeId, (Option<u64>, u64)>,
    /// Commits accepted without sync, until a sync of the same manager incarnation covers
    /// them (the write verifier, see `verifier`).
    unsynced: Mutex<Unsynced>,
    /// Commit locks of inodes being flushed (see `InodeCommit`).
    commits: DashMap<InodeId, Arc<tokio::sync::Mutex<()>>>,
    /// Inodes whose write lease this client reclaimed from a restarted manager, with that
    /// manager's incarnation: their suspect commits may be sent again (nobody else can have
    /// written in between).
    reclaimed: DashMap<InodeId, u64>,
    /// Per manager: the incarnation whose reclaim has asked for every write lease it
    /// reclaims (`note_reclaim_asked`); bumped through `reclaim_asked_tx`.
    reclaim_asked: Mutex<HashMap<NodeId, u64>>,
    reclaim_asked_tx: tokio::sync::watch::Sender<u64>,
    /// Write errors found by background flushes, reported at the next flush/fsync.
    pub(crate) errors: WriteErrors,
    /// Commits and creates found lost in a manager restart or takeover so far (a sync of
    /// the whole file system that saw one reports EIO, `Client::sync_all`).
    losses: AtomicU64,
    /// The verifier's mark at the last round of `sync_aged_creates`.
    aged_mark: AtomicU64,
    flush_ids: AtomicU64,
    /// Woken whenever dirty bytes are released (writers waiting for room).
    space: Notify,
    /// Wakes the flusher.
    kick: Arc<Notify>,
    /// Dirty memory at which writers wait for the flusher.
    dirty_limit: u64,
    /// Set when a flush found the storage servers full (ENOSPC): new writes fail at once
    /// with ENOSPC until a flush succeeds, an unlink frees space, or `NO_SPACE_HOLD` passes.
    no_space: Mutex<Option<std::time::Instant>>,
}

impl WriteBack {
    pub(crate) fn new(
        live: Arc<LiveConfig>,
        transport: Arc<Transport>,
        meta: Arc<Meta>,
        log_id: LogId,
    ) -> WriteBack {
        let config = live.current();
        let dirty_limit = DIRTY_LIMIT.max(config.file.client.segment_bytes.saturating_mul(2));
        WriteBack {
            config,
            live,
            transport,
            meta,
            log_id,
            log: tokio::sync::Mutex::new(None),
            horizon: Horizon::default(),
            promised: DashMap::new(),
            unsynced: Mutex::new(Default::default()),
            commits: DashMap::new(),
            reclaimed: DashMap::new(),
            reclaim_asked: Mutex::new(HashMap::new()),
            reclaim_asked_tx: tokio::sync::watch::Sender::new(0),
            errors: WriteErrors::default(),
            losses: AtomicU64::new(0),
            aged_mark: AtomicU64::new(0),
            flush_ids: AtomicU64::new(1),
            space: Notify::new(),
            kick: Arc::new(Notify::new()),
            dirty_limit,
            no_space: Mutex::new(None),
        }
    }

    /// This client's log.
    pub(crate) fn log_id(&self) -> LogId {
        self.log_id
    }

    /// The flusher's wake-up (the flusher waits on it; writers and reclaims notify it).
    pub(crate) fn kick(&self) -> &Arc<Notify> {
        &self.kick
    }

    /// Dirty bytes were released: writers waiting for room look again.
    pub(crate) fn space_freed(&self) {
        self.space.notify_waiters();
    }

    /// The commit lock of `ino` (waits for a flush of it under way).
    pub(crate) async fn commit_lock(&self, ino: InodeId) -> InodeCommit {
        let lock = self.commits.entry(ino).or_default().clone();
        lock.lock_owned().await
    }

    /// Inodes whose commit lock is held now: a flush (or an operation that waits for one)
    /// is under way, its data taken from the buffer but not yet answered by the manager.
    pub(crate) fn commits_under_way(&self) -> Vec<InodeId> {
        self.commits
            .iter()
            .filter(|e| e.value().try_lock().is_err())
            .map(|e| *e.key())
            .collect()
    }

    pub(crate) fn try_commit_lock(&self, ino: InodeId) -> Option<InodeCommit> {
        let lock = self.commits.entry(ino).or_default().clone();
        lock.try_lock_owned().ok()
    }

    /// Drops commit locks nobody holds or waits for (the map stays bounded by the inodes
    /// being flushed).
    pub(crate) fn forget_commit_locks(&self, inos: &[InodeId]) {
        for ino in inos {
            self.commits
                .remove_if(ino, |_, l| Arc::strong_count(l) == 1);
        }
    }

    pub(crate) fn next_flush_id(&self) -> u64 {
        self.flush_ids.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn lock_unsynced(&self) -> MutexGuard<'_, Unsynced> {
        self.unsynced.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `ino`'s write lease was reclaimed from `node`'s `incarnation`.
    pub(crate) fn note_reclaimed(&self, ino: InodeId, incarnation: u64) {
        self.reclaimed.insert(ino, incarnation);
    }

    /// The reclaim after `node` restarted as `incarnation` has asked for every write lease
    /// it reclaims (its resends come after): syncs answered by `incarnation` may now tell
    /// the commits it sends again from those to check.
    pub(crate) fn note_reclaim_asked(&self, node: NodeId, incarnation: u64) {
        self.reclaim_asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node, incarnation);
        self.reclaim_asked_tx
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    fn reclaim_asked_of(&self, node: NodeId) -> Option<u64> {
        self.reclaim_asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node)
            .copied()
    }

    /// Whether this client's reclaim after `node` restarted as `incarnation` has asked for
    /// every write lease it reclaims (always true without leases: nothing is reclaimed).
    fn reclaim_decided(&self, node: NodeId, incarnation: u64) -> bool {
        !self.meta.lease(node).enabled() || self.reclaim_asked_of(node) == Some(incarnation)
    }

    /// For fsync only (it holds no commit lock): waits, bounded, until this client's
    /// reclaim after `node`'s restart has decided which inodes it reclaimed, so that the
    /// fsync can send an inode's earlier commits again or check them. Never called while
    /// answering a callback: a Flush must not wait for the whole reclaim.
    pub(crate) async fn await_reclaim_decided(&self, node: NodeId) {
        let lease = self.meta.lease(node);
        let Some(incarnation) = lease.incarnation() else {
            return;
        };
        if self.reclaim_decided(node, incarnation) {
            return;
        }
        let bound = lease.lease() * RECLAIM_WAIT_LEASES + RECLAIM_WAIT_EXTRA;
        let mut rx = self.reclaim_asked_tx.subscribe();
        let waited = tokio::time::timeout(bound, async {
            loop {
                if self.reclaim_decided(node, incarnation) {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        if waited.is_err() {
            tracing::warn!(manager = %node, "no reclaim after the manager's restart within {bound:?}: earlier commits are checked instead");
        }
    }

    /// Whether `node` has unsynced commits an earlier incarnation accepted (not yet sent
    /// again or checked).
    pub(crate) fn has_earlier_commits(&self, node: NodeId) -> bool {
        let Some(current) = self.meta.lease(node).incarnation() else {
            return false;
        };
        self.lock_unsynced().has_other_incarnation(node, current)
    }

    /// Whether `ino` has commits an earlier incarnation of its manager accepted (not yet
    /// sent again or checked).
    pub(crate) fn has_suspects(&self, ino: InodeId) -> bool {
        let node = self.meta.owner(ino);
        let Some(current) = self.meta.lease(node).incarnation() else {
            return false;
        };
        self.lock_unsynced().has_suspects(node, ino, current)
    }

    /// Whether `ino` has commits an earlier incarnation of its manager accepted that are to
    /// be sent again under the write lease reclaimed from the current one.
    pub(crate) fn awaits_resend(&self, ino: InodeId) -> bool {
        let node = self.meta.owner(ino);
        let Some(current) = self.meta.lease(node).incarnation() else {
            return false;
        };
        self.reclaimed.get(&ino).map(|r| *r) == Some(current)
            && self.lock_unsynced().has_suspects(node, ino, current)
    }

    /// Appends the taken data as segments of our log, pinned from before the first append:
    /// the reclaimer must not take these segments while a commit naming them may land, so
    /// the caller keeps the pin until every commit is answered. Returns the extents of every
    /// taken inode (in `taken` order).
    pub(crate) async fn append(&self, taken: &[Taken]) -> (Result<Vec<Written>, FsError>, Pin<'_>) {
        let mut log = self.log.lock().await;
        let next = log.as_ref().map_or(SegmentId(0), |w| w.next_segment());
        let pin = self.horizon.pin(next);
        let written = self.write_segments(&mut log, taken).await;
        if let Some(w) = log.as_ref() {
            self.horizon.set_next(w.next_segment());
        }
        (written, pin)
    }

    /// Appends the taken data as segments of our log; returns the extents of every taken
    /// inode (in `taken` order) with the end-to-end checksums of the segments they are in.
    async fn write_segments(
        &self,
        log: &mut Option<LogWriter>,
        taken: &[Taken],
    ) -> Result<Vec<Written>, FsError> {
        let writer = log.get_or_insert_with(|| {
            LogWriter::following(
                self.live.clone(),
                self.transport.clone(),
                self.log_id,
                SegmentId(0),
            )
        });
        // Items: every chunk of every inode, in inode order.
        let mut items: Vec<(usize, u64, &Bytes)> = Vec::new();
        for (ti, t) in taken.iter().enumerate() {
            for (off, b) in &t.chunks {
                items.push((ti, *off, b));
            }
        }
        let lens: Vec<u64> = items.iter().map(|(_, _, b)| b.len() as u64).collect();
        let limit = self
            .config
            .file
            .client
            .segment_bytes
            .clamp(64 << 10, MAX_SEGMENT);
        let mut out: Vec<Written> = vec![Written::default(); taken.len()];
        // Segments in flight, oldest first, each a task of its own (so that its puts go on
        // while this one builds the next).
        let mut flight = std::collections::VecDeque::new();
        let mut failed = None;
        for seg in plan_segments(&lens, limit) {
            let seg_id = writer.next_segment();
            let mut builder = SegmentBuilder::new(self.log_id, seg_id);
            let mut placed = Vec::with_capacity(seg.len());
            for (item, start, len) in seg {
                let (ti, off, b) = items[item];
                let file_offset = off + start;
                let data = b.slice(start as usize..(start + len) as usize);
                let idx = builder.push(
                    EntryKind::FileData {
                        ino: taken[ti].ino,
                        file_offset,
                    },
                    data,
                );
                placed.push((ti, file_offset, idx, len));
            }
            let (bytes, entries) = match builder.finish() {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(log = %self.log_id, segment = %seg_id, "cannot build segment: {e}");
                    failed = Some(FsError::EIO);
                    break;
                }
            };
            // The checksums travel with the commits, apart from the data (`chunksum`).
            let summed = bytes.clone();
            let log_id = self.log_id;
            let sums = match tokio::task::spawn_blocking(move || {
                proto::chunksum::segment_sums(log_id, seg_id, &summed)
            })
            .await
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(log = %self.log_id, segment = %seg_id, "checksum task failed: {e}");
                    failed = Some(FsError::EIO);
                    break;
                }
            };
            // Its puts start now; the next segment is built and summed meanwhile.
            flight.push_back(InFlight {
                task: tokio::spawn(writer.start(bytes)),
                seg_id,
                placed,
                entries,
                sums,
            });
            if flight.len() >= SEGMENTS_IN_FLIGHT {
                if let Some(f) = flight.pop_front() {
                    if let Err(e) = f.record(self.log_id, &mut out).await {
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        while let Some(f) = flight.pop_front() {
            if failed.is_none() {
                if let Err(e) = f.record(self.log_id, &mut out).await {
                    failed = Some(e);
                }
            } else {
                // After a failure the others still run to their end (none is abandoned
                // with puts in flight); what they wrote is never committed.
                let _ = f.task.await;
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(out)
    }

    /// Commits `writes` at their manager once (the flush asks for a write lease a manager
    /// restart took away first), keeping them for the verifier unless `sync`; without
    /// `patient`, an unavailable manager is not waited for (`Meta::call_commit`).
    pub(crate) async fn commit(
        &self,
        writes: Vec<InodeWrite>,
        sync: bool,
        standing: Option<Standing>,
        patient: bool,
    ) -> Result<Vec<Attr>, FsError> {
        let kept = writes.clone();
        let req = ManagerRequest::CommitWrites {
            writes,
            sync,
            standing,
        };
        let node = proto::route::routing_inode(&req).map(|i| self.meta.owner(i));
        let mark = self.lock_unsynced().mark();
        match self.meta.call_commit(req, patient).await? {
            ManagerResponse::Committed { attrs, incarnation } => {
                if let Some(n) = node {
                    if self.resend_overtaken(n, incarnation, &kept).await {
                        // Sent again after the earlier commits, so that it is the last
                        // one applied (the same extents and size: applying it twice
                        // leaves what applying it once does).
                        return Box::pin(self.commit(kept, sync, standing, patient)).await;
                    }
                    if sync {
                        self.after_sync(n, incarnation, mark).await;
                    } else {
                        let unsynced = self.lock_unsynced().committed(n, incarnation, kept);
                        if unsynced >= MAX_UNSYNCED {
                            // Bounded memory: a sync makes them durable and forgettable.
                            if let Err(e) = self.sync_node(n).await {
                                tracing::debug!(manager = %n, "sync of unsynced commits failed: {e}");
                            }
                        }
                    }
                }
                Ok(attrs)
            }
            other => Err(remote::unexpected("CommitWrites", &other)),
        }
    }

    /// After a commit of `writes` answered by `node`'s `incarnation`: sends again, durably
    /// and in order, the commits of those inodes that an earlier incarnation accepted and
    /// may have lost, where this client reclaimed the inode from `incarnation`
    /// (`take_suspects`). Returns whether any were sent: the commit just answered then
    /// overtook them and must be sent once more, to be applied last. A flush sends them
    /// first when it knows of the restart (`resend_suspects`), but a commit whose first try
    /// went to the incarnation that was killed is retried to the new one without knowing:
    /// applied first, it was then written over by the older data the fsync sent again
    /// after it, and the fsync returned 0 with the file holding the previous write
    /// (consistency/t56, seed 8613786633363467120).
    async fn resend_overtaken(
        &self,
        node: NodeId,
        incarnation: u64,
        writes: &[InodeWrite],
    ) -> bool {
        let mut inos: Vec<InodeId> = writes.iter().map(|w| w.ino).collect();
        inos.sort_unstable();
        inos.dedup();
        let mut any = false;
        for ino in inos {
            let (earlier, _pin) = self.take_suspects(node, ino, incarnation);
            if earlier.is_empty() {
                continue;
            }
            any = true;
            tracing::info!(inode = %ino, commits = earlier.len(), "a commit retried to a restarted manager overtook earlier ones it may have lost: sending those again first");
            if let Err(e) = Box::pin(self.commit(earlier, true, None, true)).await {
                tracing::warn!(inode = %ino, "commits lost in a manager restart could not be sent again: {e}");
                self.errors.record(ino, e);
            }
        }
        any
    }

    /// The commits of `ino` that `node`'s incarnation `current` may have lost, if this
    /// client reclaimed the inode's write lease from that very incarnation, pinned in the
    /// horizon until the returned pin is dropped. Taken and pinned under the verifier's
    /// lock, which `promise_horizon` also takes first: the horizon never passes these
    /// segments while they are being sent again.
    pub(crate) fn take_suspects(
        &self,
        node: NodeId,
        ino: InodeId,
        current: u64,
    ) -> (Vec<InodeWrite>, Option<Pin<'_>>) {
        if self.reclaimed.get(&ino).map(|r| *r) != Some(current) {
            return (Vec::new(), None);
        }
        let mut unsynced = self.lock_unsynced();
        let writes = unsynced.take_suspects(node, ino, current);
        let lowest = writes
            .iter()
            .flat_map(|w| w.extents.iter())
            .filter(|e| e.ptr.seg.log == self.log_id)
            .map(|e| e.ptr.seg.segment)
            .min();
        (writes, lowest.map(|s| self.horizon.pin(s)))
    }

    /// Makes `node`'s state durable, then checks the commits it accepted without sync
    /// before: those of an earlier incarnation are verified (see `after_sync`).
    pub(crate) async fn sync_node(&self, node: NodeId) -> Result<(), FsError> {
        let mark = self.lock_unsynced().mark();
        match self
            .meta
            .call(Target::Node(node), ManagerRequest::Sync)
            .await?
        {
            ManagerResponse::Synced { incarnation } => {
                self.after_sync(node, incarnation, mark).await;
                Ok(())
            }
            other => Err(remote::unexpected("Sync", &other)),
        }
    }

    /// A sync marked `mark` was answered by `node` in `incarnation`: forgets what it covers
    /// and verifies the suspects (commits an earlier incarnation accepted without sync):
    /// one whose extents are no longer in the manager's map may have been lost in the
    /// restart, and its inode's next fsync or close reports EIO (never 0).
    ///
    /// It never waits for the reclaim (it runs inside commits, under commit locks, also while
    /// answering a Flush callback). A sync needs no session, so the new incarnation can
    /// answer one before this client's reclaim has listed its inodes (found by
    /// consistency/t55 in CI); until the reclaim has decided, every earlier incarnation's
    /// commit stays: the reclaim sends a reclaimed inode's commits again, and its closing
    /// sync checks the others.
    async fn after_sync(&self, node: NodeId, incarnation: u64, mark: u64) {
        let decided = self.reclaim_decided(node, incarnation);
        let resent =
            |ino: InodeId| !decided || self.reclaimed.get(&ino).map(|r| *r) == Some(incarnation);
        let suspects = self.lock_unsynced().synced(node, incarnation, mark, resent);
        for p in suspects {
            let ino = p.write.ino;
            let Some((start, end)) = crate::verifier::span(&p.write) else {
                continue;
            };
            let req = ManagerRequest::GetExtents {
                ino,
                offset: start,
                len: end - start,
            };
            let ok = match self.meta.call(Target::Route, req).await {
                Ok(ManagerResponse::Extents(actual))
                | Ok(ManagerResponse::SummedExtents {
                    extents: actual, ..
                }) => crate::verifier::survived(&p.write.extents, &actual),
                // Gone at the new incarnation: removed since, or its create was lost with
                // the earlier incarnation (answered before its group commit, then a crash
                // or a takeover). The two cannot be told apart here, and a lost create
                // must never let this fsync return 0: reported as lost (faults/t60).
                Ok(_) | Err(_) => false,
            };
            if !ok {
                tracing::warn!(
                    inode = %ino,
                    manager = %node,
                    "writes committed without sync may have been lost in a manager restart: \
                     the next fsync or close reports EIO"
                );
                self.errors.record(ino, FsError::EIO);
                self.losses.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Creates another incarnation answered: each is checked where its inode lives now
        // (several at once: this may run under commit locks). Numbers are never handed out
        // twice (`manager::Record::SeqFloors`), so an inode that exists is that create.
        let unsure = self.lock_unsynced().synced_creates(node, incarnation, mark);
        futures::stream::iter(unsure)
            .for_each_concurrent(CHECK_PARALLEL, |c| async move {
                let req = ManagerRequest::GetAttr { ino: c.ino };
                match self.meta.call(Target::Route, req).await {
                    Ok(ManagerResponse::Attr(_)) => {
                        self.lock_unsynced().take_create(c.ino);
                    }
                    Err(e) if e.0 == libc::ENOENT || e.0 == libc::ESTALE => {
                        self.lost_create(c.ino);
                    }
                    // Not known either way yet: checked again after the next sync.
                    Ok(_) | Err(_) => {}
                }
            })
            .await;
    }

    /// `node` answered the create of `ino` as `name` in `parent`, sent while this client
    /// knew `node` as `incarnation` (see `verifier::PendingCreate`). Returns whether `node`
    /// now has so many unsynced creates that a sync should make them forgettable
    /// (`sync_node`, once the create is done).
    pub(crate) fn created(
        &self,
        node: NodeId,
        incarnation: Option<u64>,
        ino: InodeId,
        (parent, name): (InodeId, &str),
    ) -> bool {
        let unsynced = self
            .lock_unsynced()
            .created(node, incarnation, ino, (parent, name));
        unsynced >= MAX_UNSYNCED
    }

    /// One round of the renewer: syncs every manager with a create this client recorded
    /// before the previous round and no sync covered since, one bounded attempt each. A
    /// create is then known durable (or found lost) within about two renewal periods, so
    /// the records stay few and a removal by another client long after is never mistaken
    /// for a loss in a later restart.
    pub(crate) async fn sync_aged_creates(&self) {
        let (nodes, mark) = {
            let mut unsynced = self.lock_unsynced();
            let before = self.aged_mark.load(Ordering::Relaxed);
            let nodes = unsynced.creates_before(before);
            let mark = unsynced.mark();
            (nodes, mark)
        };
        self.aged_mark.store(mark, Ordering::Relaxed);
        futures::future::join_all(nodes.into_iter().map(|n| async move {
            let mark = self.lock_unsynced().mark();
            match self
                .meta
                .call_once(n, ManagerRequest::Sync, PROMISE_WAIT)
                .await
            {
                Ok(ManagerResponse::Synced { incarnation }) => {
                    self.after_sync(n, incarnation, mark).await;
                }
                Ok(other) => {
                    let _ = remote::unexpected("Sync", &other);
                }
                Err(e) => tracing::debug!(manager = %n, "sync of aged creates: {e}"),
            }
        }))
        .await;
    }

    /// Commits and creates found lost so far (see `losses`).
    pub(crate) fn losses(&self) -> u64 {
        self.losses.load(Ordering::Relaxed)
    }

    /// `ino` was found gone (a commit, a reclaim or a check answered ENOENT). Returns
    /// whether that is a lost create: one that no sync covered yet, so a manager restart
    /// or takeover may have lost it rather than anyone having removed it. Its next fsync
    /// or close, and its parent's next fsync, then report EIO: a program told that the
    /// file was written must not find it missing (faults/t45, t60).
    pub(crate) fn lost_create(&self, ino: InodeId) -> bool {
        let Some(c) = self.lock_unsynced().take_create(ino) else {
            return false;
        };
        self.report_lost(&c);
        true
    }

    fn report_lost(&self, c: &crate::verifier::PendingCreate) {
        let ino = c.ino;
        tracing::warn!(
            inode = %ino,
            parent = %c.parent,
            name = %c.name,
            "a create answered before its manager made it durable is gone (lost in a \
             manager restart or takeover): the next fsync or close reports EIO"
        );
        self.errors.record(ino, FsError::EIO);
        self.errors.record(c.parent, FsError::EIO);
        self.losses.fetch_add(1, Ordering::Relaxed);
    }

    /// Promises this log's reclaim horizon (see `horizon`) to every manager whose last
    /// promise is older (or made to another incarnation): one attempt each, bounded by
    /// `PROMISE_WAIT`, never retried here (the renewer tries again next period).
    pub(crate) async fn promise_horizon(&self) {
        let horizon = {
            let unsynced = self.lock_unsynced();
            self.horizon.get(unsynced.min_segment(self.log_id))
        };
        let nodes: Vec<NodeId> = self.meta.nodes().collect();
        futures::future::join_all(nodes.into_iter().map(|n| async move {
            let incarnation = self.meta.lease(n).incarnation();
            if self.promised.get(&n).map(|p| *p) == Some((incarnation, horizon.0)) {
                return;
            }
            let req = ManagerRequest::LogHorizon {
                session: self.meta.session(),
                log: self.log_id,
                horizon,
            };
            match self.meta.call_once(n, req, PROMISE_WAIT).await {
                Ok(ManagerResponse::Done) => {
                    self.promised.insert(n, (incarnation, horizon.0));
                }
                Ok(other) => {
                    let _ = remote::unexpected("LogHorizon", &other);
                }
                Err(e) => {
                    tracing::debug!(manager = %n, "reclaim horizon not promised: {e}");
                }
            }
        }))
        .await;
    }

    /// A flush ended with `first_err`: ENOSPC holds new writes for `NO_SPACE_HOLD`, success
    /// lets them through again.
    pub(crate) fn flush_ended(&self, first_err: Option<FsError>) {
        match first_err {
            Some(e) if e == FsError::ENOSPC => {
                *lock_mutex(&self.no_space) = Some(std::time::Instant::now());
            }
            Some(_) => {}
            None => *lock_mutex(&self.no_space) = None,
        }
    }

    /// Space was freed at the servers (an unlink): new writes may try again.
    pub(crate) fn clear_no_space(&self) {
        *lock_mutex(&self.no_space) = None;
    }

    /// ENOSPC while a flush recently found the storage servers full (see `no_space`).
    fn check_no_space(&self) -> Result<(), FsError> {
        let mut ns = lock_mutex(&self.no_space);
        match *ns {
            Some(at) if at.elapsed() < NO_SPACE_HOLD => Err(FsError::ENOSPC),
            Some(_) => {
                *ns = None;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Waits until buffered dirty data (`dirty_bytes()`, read under the data lock by the
    /// caller's closure) is below the limit, kicking the flusher; ENOSPC when the storage
    /// servers are full.
    pub(crate) async fn wait_for_space(
        &self,
        dirty_bytes: impl Fn() -> u64,
    ) -> Result<(), FsError> {
        let deadline = tokio::time::Instant::now() + SPACE_WAIT;
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.check_no_space()?;
            if dirty_bytes() < self.dirty_limit {
                return Ok(());
            }
            self.kick.notify_one();
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!(
                    "dirty data could not be written for {SPACE_WAIT:?}; are the storage servers up?"
                );
                return Err(FsError::EIO);
            }
        }
    }
}

/// Commits kept for the write verifier per manager before the client asks for a sync.
const MAX_UNSYNCED: usize = 4096;

/// Creates checked at once after a restart (`after_sync`).
const CHECK_PARALLEL: usize = 32;

/// How long new writes fail with ENOSPC after a flush found the servers full.
const NO_SPACE_HOLD: Duration = Duration::from_secs(5);

/// A segment of a flush whose append runs as a task of its own, with where each piece
/// went (`(taken index, file offset, entry index, length)`), the builder's entries and the
/// segment's checksums.
struct InFlight {
    task: tokio::task::JoinHandle<Result<proto::ids::SegmentAddr, storage::LogError>>,
    seg_id: SegmentId,
    placed: Vec<(usize, u64, usize, u64)>,
    entries: Vec<storage::segment::Entry>,
    sums: ChunkSums,
}

impl InFlight {
    /// Waits for the append (a task that panicked is a failed append) and records the
    /// durable segment's extents and checksums in `out` (per taken inode); an append that
    /// failed is the flush's error.
    async fn record(self, log: LogId, out: &mut [Written]) -> Result<(), FsError> {
        let InFlight {
            task,
            seg_id,
            placed,
            entries,
            sums,
        } = self;
        let appended = task.await.unwrap_or_else(|e| {
            Err(storage::LogError::NotDurable {
                seg: seg_id.to_string(),
                acked: 0,
                needed: 0,
                detail: format!("append task failed: {e}"),
            })
        });
        let addr = appended.map_err(|e| {
            tracing::warn!(log = %log, segment = %seg_id, "cannot write segment: {e}");
            match e {
                storage::LogError::NoSpace { .. } => FsError::ENOSPC,
                _ => FsError::EIO,
            }
        })?;
        let mut spans: std::collections::BTreeMap<usize, (u32, u32)> = Default::default();
        for (ti, file_offset, idx, len) in placed {
            let Some(entry) = entries.get(idx) else {
                tracing::warn!(segment = %seg_id, "segment builder lost entry {idx}");
                return Err(FsError::EIO);
            };
            if entry.len as u64 != len {
                tracing::warn!(segment = %seg_id, "entry {idx} holds {} bytes, expected {len}", entry.len);
                return Err(FsError::EIO);
            }
            out[ti].extents.push(Extent {
                offset: file_offset,
                ptr: LogPtr {
                    seg: addr,
                    offset: entry.offset,
                    len: entry.len,
                },
            });
            let (first, end) = proto::chunksum::chunk_span(entry.offset, entry.len);
            let span = spans.entry(ti).or_insert((first, end));
            *span = (span.0.min(first), span.1.max(end));
        }
        // Each inode's commit carries the checksums of the chunks its extents touch.
        for (ti, (first, end)) in spans {
            out[ti].sums.extend(sums.slice(first, end));
        }
        Ok(())
    }
}

/// Locks a std mutex, ignoring poisoning (the guarded value is a plain timestamp).
fn lock_mutex<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a writer waits for dirty memory before failing with EIO.
const SPACE_WAIT: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_items_share_a_segment() {
        assert_eq!(
            plan_segments(&[10, 20, 5], 100),
            vec![vec![(0, 0, 10), (1, 0, 20), (2, 0, 5)]]
        );
        assert!(plan_segments(&[], 100).is_empty());
    }

    #[test]
    fn large_items_are_split_at_the_limit() {
        let p = plan_segments(&[150, 30, 120], 100);
        assert_eq!(
            p,
            vec![
                vec![(0, 0, 100)],
                vec![(0, 100, 50), (1, 0, 30), (2, 0, 20)],
                vec![(2, 20, 100)],
            ]
        );
        // Every byte is placed exactly once.
        let total: u64 = p.iter().flatten().map(|(_, _, n)| n).sum();
        assert_eq!(total, 300);
        assert!(p
            .iter()
            .all(|s| s.iter().map(|(_, _, n)| n).sum::<u64>() <= 100));
    }
}
