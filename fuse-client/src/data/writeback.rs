//! Write-back: dirty data → segments of this client's log → `CommitWrites` at the managers.
//!
//! Owns the flush procedure (take dirty layers as flights, build segments, append them,
//! commit the extents grouped per manager, then release or restore the flights) and the
//! background flusher. Each inode's flush holds that inode's commit lock from taking its
//! data to the commit's answer, so commits of one inode apply in order; the log writer's
//! lock covers only the segment appends. Must not drop dirty bytes before their commit
//! succeeded (except for inodes the manager says no longer exist), and must not hold the log
//! lock across a manager call.

use crate::client::Client;
use crate::data::Which;
use crate::error::FsError;
use crate::meta::{self as remote, Target};
use bytes::Bytes;
use proto::ids::{InodeId, LogPtr, NodeId, SegmentId};
use proto::msg::{Attr, Extent, InodeWrite, ManagerRequest, ManagerResponse, Timestamp};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use storage::log::LogWriter;
use storage::segment::{EntryKind, SegmentBuilder};

/// The commit lock of one inode, held from taking its dirty data until the commit is
/// answered: an inode has at most one flush under way, so its commits apply in order,
/// and flushes of different inodes never wait for each other's manager calls.
pub(crate) type InodeCommit = tokio::sync::OwnedMutexGuard<()>;

/// One inode's share of a flush.
struct Taken {
    ino: InodeId,
    chunks: Vec<(u64, Bytes)>,
    size: u64,
    mtime: Timestamp,
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

impl Client {
    /// Flushes dirty data of `which` and commits it (durably with `sync`). Returns whether
    /// anything was written. The log lock is held only while segments are written to the
    /// storage servers (which never call back), never across a manager call: a callback
    /// handler that flushes must not wait behind a commit that waits for a manager.
    pub(crate) async fn flush_inodes(&self, which: Which, sync: bool) -> Result<bool, FsError> {
        let held = match which {
            Which::One(ino) => vec![(ino, self.commit_lock(ino).await)],
            Which::All => {
                let mut inos: Vec<InodeId> = self.lock_state().files.keys().copied().collect();
                inos.sort_unstable();
                let mut held = Vec::with_capacity(inos.len());
                // In inode order: two waiting flushes never hold each other's locks.
                for ino in inos {
                    held.push((ino, self.commit_lock(ino).await));
                }
                held
            }
            Which::Ready => {
                let inos: Vec<InodeId> = self
                    .lock_state()
                    .files
                    .iter()
                    .filter(|(_, w)| !w.dirty.is_empty())
                    .map(|(i, _)| *i)
                    .collect();
                inos.into_iter()
                    .filter_map(|ino| self.try_commit_lock(ino).map(|g| (ino, g)))
                    .collect()
            }
        };
        let r = self.flush_held(&held, sync).await;
        let inos: Vec<InodeId> = held.iter().map(|(i, _)| *i).collect();
        drop(held);
        self.forget_commit_locks(&inos);
        r
    }

    /// The commit lock of `ino` (waits for a flush of it under way).
    pub(crate) async fn commit_lock(&self, ino: InodeId) -> InodeCommit {
        let lock = self.commits.entry(ino).or_default().clone();
        lock.lock_owned().await
    }

    fn try_commit_lock(&self, ino: InodeId) -> Option<InodeCommit> {
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

    /// Flushes the inodes whose commit locks the caller holds (`held`).
    pub(crate) async fn flush_held(
        &self,
        held: &[(InodeId, InodeCommit)],
        sync: bool,
    ) -> Result<bool, FsError> {
        for (ino, _) in held {
            self.resend_suspects(*ino).await;
        }
        let id = self.next_flush_id();
        let taken: Vec<Taken> = {
            let mut st = self.lock_state();
            let mut out = Vec::new();
            let mut take = |ino: InodeId, w: &mut crate::data::dirty::FileWrites| {
                if let Some(f) = w.take_flight(id) {
                    out.push(Taken {
                        ino,
                        chunks: f.chunks,
                        size: w.size,
                        mtime: w.mtime,
                    });
                }
            };
            for (ino, _) in held {
                if let Some(w) = st.files.get_mut(ino) {
                    take(*ino, w);
                }
            }
            out
        };
        if taken.is_empty() {
            return Ok(false);
        }
        let (written, pin) = {
            let mut log = self.log.lock().await;
            // Pinned from before the first append until every commit is answered: the
            // reclaimer must not take these segments while a commit naming them may land.
            let next = log.as_ref().map_or(SegmentId(0), |w| w.next_segment());
            let pin = self.horizon.pin(next);
            let written = self.write_segments(&mut log, &taken).await;
            if let Some(w) = log.as_ref() {
                self.horizon.set_next(w.next_segment());
            }
            (written, pin)
        };
        let outcomes = match written {
            Ok(extents) => self.commit_all(&taken, extents, sync).await,
            Err(e) => taken.iter().map(|t| (t.ino, Outcome::Failed(e))).collect(),
        };
        drop(pin);
        // The committed attributes are recorded before the local writes they cover are
        // retired below: an attribute answer in flight meanwhile (a getattr that left
        // before the commit) must find either our writes or these newer attributes, never
        // neither (it would tell the kernel the old, shorter size).
        for (_, outcome) in &outcomes {
            if let Outcome::Committed(Some(a)) = outcome {
                self.keep_newest(a.clone());
            }
        }
        let mut first_err = None;
        let mut st = self.lock_state();
        for (t, (ino, outcome)) in taken.iter().zip(outcomes) {
            debug_assert_eq!(t.ino, ino);
            let Some(w) = st.files.get_mut(&ino) else {
                continue;
            };
            match outcome {
                Outcome::Failed(e) if is_transient(e) => {
                    let delta = w.restore_flight(id);
                    st.dirty_bytes = (st.dirty_bytes as i64 + delta).max(0) as u64;
                    first_err.get_or_insert(e);
                    continue;
                }
                Outcome::Failed(e) => {
                    tracing::warn!(inode = %ino, "manager refused the commit ({e}); dropping the data");
                    self.errors.record(ino, e);
                    first_err.get_or_insert(e);
                    let released = w.complete_flight(id);
                    st.dirty_bytes = st.dirty_bytes.saturating_sub(released);
                    st.cache.invalidate(ino);
                }
                Outcome::Gone => {
                    self.lock_unsynced().forget(ino);
                    let released = w.complete_flight(id);
                    st.dirty_bytes = st.dirty_bytes.saturating_sub(released);
                    st.cache.invalidate(ino);
                    self.attrs.remove(&ino);
                }
                Outcome::Committed(_) => {
                    let released = w.complete_flight(id);
                    st.dirty_bytes = st.dirty_bytes.saturating_sub(released);
                    for (off, b) in &t.chunks {
                        st.cache.apply_write(ino, *off, b);
                    }
                }
            }
            st.extents.invalidate(ino);
            if st.files.get(&ino).is_some_and(|w| w.is_clean()) {
                tracing::debug!(target: "shoal_attrs", inode = %ino, "dirty file retired");
                st.files.remove(&ino);
            }
        }
        drop(st);
        self.space.notify_waiters();
        match first_err {
            Some(e) => {
                if e == FsError::ENOSPC {
                    *lock_mutex(&self.no_space) = Some(std::time::Instant::now());
                }
                Err(e)
            }
            None => {
                *lock_mutex(&self.no_space) = None;
                Ok(true)
            }
        }
    }

    /// Appends the taken data as segments of our log; returns the extents of every taken
    /// inode (in `taken` order).
    async fn write_segments(
        &self,
        log: &mut Option<LogWriter>,
        taken: &[Taken],
    ) -> Result<Vec<Vec<Extent>>, FsError> {
        let writer = log.get_or_insert_with(|| {
            LogWriter::new(
                self.config.clone(),
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
        let mut extents: Vec<Vec<Extent>> = vec![Vec::new(); taken.len()];
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
            let (bytes, entries) = builder.finish().map_err(|e| {
                tracing::warn!(log = %self.log_id, segment = %seg_id, "cannot build segment: {e}");
                FsError::EIO
            })?;
            let addr = writer.append(bytes).await.map_err(|e| {
                tracing::warn!(log = %self.log_id, segment = %seg_id, "cannot write segment: {e}");
                match e {
                    storage::LogError::NoSpace { .. } => FsError::ENOSPC,
                    _ => FsError::EIO,
                }
            })?;
            for (ti, file_offset, idx, len) in placed {
                let Some(entry) = entries.get(idx) else {
                    tracing::warn!(segment = %seg_id, "segment builder lost entry {idx}");
                    return Err(FsError::EIO);
                };
                if entry.len as u64 != len {
                    tracing::warn!(segment = %seg_id, "entry {idx} holds {} bytes, expected {len}", entry.len);
                    return Err(FsError::EIO);
                }
                extents[ti].push(Extent {
                    offset: file_offset,
                    ptr: LogPtr {
                        seg: addr,
                        offset: entry.offset,
                        len: entry.len,
                    },
                });
            }
        }
        Ok(extents)
    }

    /// Commits the extents, one request per manager, all managers at once. Returns one
    /// outcome per taken inode, in `taken` order.
    async fn commit_all(
        &self,
        taken: &[Taken],
        extents: Vec<Vec<Extent>>,
        sync: bool,
    ) -> Vec<(InodeId, Outcome)> {
        let mut groups: BTreeMap<NodeId, Vec<InodeWrite>> = BTreeMap::new();
        for (t, ex) in taken.iter().zip(extents) {
            groups
                .entry(self.meta.owner(t.ino))
                .or_default()
                .push(InodeWrite {
                    ino: t.ino,
                    extents: ex,
                    size: t.size,
                    mtime: t.mtime,
                });
        }
        let results =
            futures::future::join_all(groups.into_values().map(|w| self.commit_group(w, sync)))
                .await;
        let mut by_ino: HashMap<InodeId, Outcome> = results.into_iter().flatten().collect();
        taken
            .iter()
            .map(|t| {
                (
                    t.ino,
                    by_ino
                        .remove(&t.ino)
                        .unwrap_or(Outcome::Failed(FsError::EIO)),
                )
            })
            .collect()
    }

    /// Commits the writes of one manager. When the group fails for a reason that is not
    /// transient, each inode is committed alone so that one bad inode (say, unlinked and
    /// closed meanwhile) does not hold back the others.
    async fn commit_group(&self, writes: Vec<InodeWrite>, sync: bool) -> Vec<(InodeId, Outcome)> {
        let inos: Vec<InodeId> = writes.iter().map(|w| w.ino).collect();
        let single = writes.len() == 1;
        match self.commit(writes.clone(), sync).await {
            Ok(attrs) => {
                let mut by_ino: HashMap<InodeId, Attr> =
                    attrs.into_iter().map(|a| (a.ino, a)).collect();
                inos.into_iter()
                    .map(|i| (i, Outcome::Committed(by_ino.remove(&i))))
                    .collect()
            }
            Err(e) if single || is_transient(e) => {
                let outcome = || {
                    if is_gone(e) {
                        Outcome::Gone
                    } else {
                        Outcome::Failed(e)
                    }
                };
                inos.into_iter().map(|i| (i, outcome())).collect()
            }
            Err(_) => {
                let mut out = Vec::new();
                for w in writes {
                    let ino = w.ino;
                    let o = match self.commit(vec![w], sync).await {
                        Ok(a) => Outcome::Committed(a.into_iter().next()),
                        Err(e) if is_gone(e) => Outcome::Gone,
                        Err(e) => Outcome::Failed(e),
                    };
                    out.push((ino, o));
                }
                out
            }
        }
    }

    /// Commits once. Unlike other requests, a commit refused with `LeaseExpired` is not
    /// retried after renewing: the manager gave up on this client, so the renewal drops the
    /// data (see `drop_manager_caches`) instead of writing it over newer changes.
    async fn commit(&self, writes: Vec<InodeWrite>, sync: bool) -> Result<Vec<Attr>, FsError> {
        for w in &writes {
            if self.reacquire.remove(&w.ino).is_some() {
                if let Err(e) = self.acquire_write(w.ino).await {
                    self.reacquire.insert(w.ino, ());
                    return Err(e);
                }
            }
        }
        let kept = writes.clone();
        let req = ManagerRequest::CommitWrites { writes, sync };
        let node = proto::route::routing_inode(&req).map(|i| self.meta.owner(i));
        let mark = self.lock_unsynced().mark();
        match self.meta.call_commit(req).await? {
            ManagerResponse::Committed { attrs, incarnation } => {
                if let Some(n) = node {
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

    /// Sends again, durably and in order, the commits of `ino` that a restarted manager
    /// may have lost, if this client reclaimed the inode's write lease from that very
    /// incarnation (no one else can have written since). The caller holds `ino`'s commit
    /// lock. A failure is left to the verifier (the next fsync reports EIO).
    pub(crate) async fn resend_suspects(&self, ino: InodeId) {
        let node = self.meta.owner(ino);
        let Some(current) = self.meta.lease(node).incarnation() else {
            return;
        };
        if self.reclaimed.get(&ino).map(|r| *r) != Some(current) {
            return;
        }
        // Taken and pinned under the verifier's lock, which `promise_horizon` also takes
        // first: the horizon never passes these segments while they are being sent again.
        let (writes, _pin) = {
            let mut unsynced = self.lock_unsynced();
            let writes = unsynced.take_suspects(node, ino, current);
            let lowest = writes
                .iter()
                .flat_map(|w| w.extents.iter())
                .filter(|e| e.ptr.seg.log == self.log_id)
                .map(|e| e.ptr.seg.segment)
                .min();
            (writes, lowest.map(|s| self.horizon.pin(s)))
        };
        if writes.is_empty() {
            return;
        }
        tracing::info!(inode = %ino, commits = writes.len(), "sending commits a manager restart may have lost again");
        if let Err(e) = self.commit(writes, true).await {
            tracing::warn!(inode = %ino, "commits lost in a manager restart could not be sent again: {e}");
            self.errors.record(ino, e);
        }
    }

    /// Writes every dirty byte and makes every manager's state durable (unmount, syncfs).
    pub async fn sync_all(&self) -> Result<(), FsError> {
        self.flush_inodes(Which::All, false).await?;
        let syncs = self
            .config
            .manager_nodes()
            .into_iter()
            .map(|m| self.sync_node(m.id));
        for r in futures::future::join_all(syncs).await {
            r?;
        }
        Ok(())
    }

    /// Makes `node`'s state durable, then checks the commits it accepted without sync
    /// before: those of an earlier incarnation are verified (see `after_sync`).
    pub(crate) async fn sync_node(&self, node: proto::ids::NodeId) -> Result<(), FsError> {
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

    pub(crate) fn lock_unsynced(&self) -> std::sync::MutexGuard<'_, crate::verifier::Unsynced> {
        self.unsynced.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A sync marked `mark` was answered by `node` in `incarnation`: forgets what it covers
    /// and verifies the suspects (commits an earlier incarnation accepted without sync):
    /// one whose extents are no longer in the manager's map may have been lost in the
    /// restart, and its inode's next fsync or close reports EIO (never 0).
    pub(crate) async fn after_sync(&self, node: proto::ids::NodeId, incarnation: u64, mark: u64) {
        let suspects = self.lock_unsynced().synced(node, incarnation, mark);
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
                Ok(ManagerResponse::Extents(actual)) => {
                    crate::verifier::survived(&p.write.extents, &actual)
                }
                // Gone: nobody can read the data any more.
                Err(e) if e.0 == libc::ENOENT || e.0 == libc::ESTALE => true,
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
            }
        }
    }

    /// ENOSPC while a flush recently found the storage servers full (see `no_space`).
    pub(crate) fn check_no_space(&self) -> Result<(), FsError> {
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

    /// Waits until buffered dirty data is below the limit (kicking the flusher); ENOSPC
    /// when the storage servers are full.
    pub(crate) async fn wait_for_space(&self) -> Result<(), FsError> {
        let deadline = tokio::time::Instant::now() + SPACE_WAIT;
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.check_no_space()?;
            if self.lock_state().dirty_bytes < self.dirty_limit {
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

/// How long new writes fail with ENOSPC after a flush found the servers full.
const NO_SPACE_HOLD: Duration = Duration::from_secs(5);

/// Locks a std mutex, ignoring poisoning (the guarded value is a plain timestamp).
fn lock_mutex<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a writer waits for dirty memory before failing with EIO.
const SPACE_WAIT: Duration = Duration::from_secs(120);

/// What became of one inode's data in a flush.
enum Outcome {
    Committed(Option<Attr>),
    /// The inode no longer exists: its data is dropped.
    Gone,
    Failed(FsError),
}

fn is_gone(e: FsError) -> bool {
    e.0 == libc::ENOENT || e.0 == libc::ESTALE
}

/// Failures after which the data is kept and the flush retried later.
fn is_transient(e: FsError) -> bool {
    matches!(
        e.0,
        libc::EIO | libc::ENOSPC | libc::EAGAIN | libc::ETIMEDOUT
    )
}

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
