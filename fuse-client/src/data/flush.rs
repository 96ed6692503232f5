//! The flush procedure: dirty data → segments of this client's log (`WriteBack::append`)
//! → `CommitWrites` at the managers, then the dirty layers released or restored.
//!
//! Owns no state: it is the part of write-back that needs the whole client (the data state
//! shared with the read path and the lease code, the attribute cache, the write lease asked
//! for again before a commit), as methods of `Client` over `Client::writeback`. Each
//! inode's flush holds that inode's commit lock from taking its data to the commit's
//! answer. Must not drop dirty bytes before their commit succeeded (except for inodes the
//! manager says no longer exist, with an error when their create may have been lost),
//! must record a commit's attributes before retiring the writes they cover, and must not
//! hold the data lock across an await.

use crate::client::Client;
use crate::data::writeback::{InodeCommit, Taken, Written};
use crate::data::Which;
use crate::error::FsError;
use proto::ids::{InodeId, NodeId};
use proto::msg::{Attr, InodeWrite, Standing};
use std::collections::{BTreeMap, HashMap};

impl Client {
    /// Flushes dirty data of `which` and commits it (durably with `sync`). Returns whether
    /// anything was written. The log lock is held only while segments are written to the
    /// storage servers (which never call back), never across a manager call: a callback
    /// handler that flushes must not wait behind a commit that waits for a manager.
    pub(crate) async fn flush_inodes(&self, which: Which, sync: bool) -> Result<bool, FsError> {
        let wb = &self.writeback;
        let held = match which {
            Which::One(ino) => vec![(ino, wb.commit_lock(ino).await)],
            Which::All => {
                let inos: Vec<InodeId> = self.lock_state().files.keys().copied().collect();
                let mut inos = self.reacquire_unlocked(inos, true).await;
                inos.sort_unstable();
                let mut held = Vec::with_capacity(inos.len());
                // In inode order: two waiting flushes never hold each other's locks.
                for ino in inos {
                    held.push((ino, wb.commit_lock(ino).await));
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
                let inos = self.reacquire_unlocked(inos, false).await;
                inos.into_iter()
                    .filter_map(|ino| wb.try_commit_lock(ino).map(|g| (ino, g)))
                    .collect()
            }
        };
        // The background flusher does not wait for an unavailable manager under its commit
        // locks (a Flush callback for one of these inodes would wait behind it).
        let patient = !matches!(which, Which::Ready);
        let r = self.flush_held_as(&held, sync, patient).await;
        let inos: Vec<InodeId> = held.iter().map(|(i, _)| *i).collect();
        drop(held);
        wb.forget_commit_locks(&inos);
        r
    }

    /// Asks again for the write leases that must be re-acquired before these inodes'
    /// commits (marked after a manager restart), before any commit lock is taken: a flush
    /// holding the commit locks of several inodes must not wait on a manager for one of
    /// them, or a Flush callback for another waits behind it past its deadline, and the
    /// manager gives up on this client and its buffered writes are lost (t55: an
    /// AcquireWrite refused through the grace period held a reclaimed inode's lock).
    /// Returns the inodes to flush now: those whose lease could not be had yet stay
    /// buffered for a later round, unless `all` (a sync, which must report the failure:
    /// their commit asks once more and fails).
    async fn reacquire_unlocked(&self, inos: Vec<InodeId>, all: bool) -> Vec<InodeId> {
        let mut now = Vec::with_capacity(inos.len());
        for ino in inos {
            if !self.lease_session.take_reacquire(ino) {
                now.push(ino);
                continue;
            }
            match self.acquire_write(ino).await {
                // Gone: its commit is answered so and the data dropped.
                Ok(()) => now.push(ino),
                Err(e) if is_gone(e) => now.push(ino),
                Err(e) => {
                    tracing::debug!(inode = %ino, "write lease not re-acquired yet ({e}); flushed later");
                    self.lease_session.must_reacquire(ino);
                    if all {
                        now.push(ino);
                    }
                }
            }
        }
        now
    }

    /// Flushes the inodes whose commit locks the caller holds (`held`).
    pub(crate) async fn flush_held(
        &self,
        held: &[(InodeId, InodeCommit)],
        sync: bool,
    ) -> Result<bool, FsError> {
        self.flush_held_as(held, sync, true).await
    }

    /// `flush_held`; without `patient`, commits do not wait for an unavailable manager.
    async fn flush_held_as(
        &self,
        held: &[(InodeId, InodeCommit)],
        sync: bool,
        patient: bool,
    ) -> Result<bool, FsError> {
        for (ino, _) in held {
            self.resend_suspects(*ino).await;
        }
        let id = self.writeback.next_flush_id();
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
                        standing: w.standing,
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
        // The pin lasts until every commit is answered (see `WriteBack::append`).
        let (written, pin) = self.writeback.append(&taken).await;
        let outcomes = match written {
            Ok(written) => self.commit_all(&taken, written, sync, patient).await,
            Err(e) => taken.iter().map(|t| (t.ino, Outcome::Failed(e))).collect(),
        };
        drop(pin);
        // The committed attributes are recorded before the local writes they cover are
        // retired below: an attribute answer in flight meanwhile (a getattr that left
        // before the commit) must find either our writes or these newer attributes, never
        // neither (it would tell the kernel the old, shorter size).
        for (_, outcome) in &outcomes {
            if let Outcome::Committed(Some(a)) = outcome {
                self.attrs.keep_newest(a.clone());
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
                    // ENOLCK: buffered before the manager gave up on us (see `Standing`);
                    // the application hears of it as of any lost write.
                    let reported = if e == FsError::ENOLCK {
                        FsError::EIO
                    } else {
                        e
                    };
                    self.writeback.errors.record(ino, reported);
                    first_err.get_or_insert(e);
                    let released = w.complete_flight(id);
                    st.dirty_bytes = st.dirty_bytes.saturating_sub(released);
                    st.cache.invalidate(ino);
                }
                Outcome::Gone | Outcome::Lost => {
                    if matches!(outcome, Outcome::Lost) {
                        // Reported by the inode's next fsync or close (`lost_create`).
                        first_err.get_or_insert(FsError::EIO);
                    }
                    self.writeback.lock_unsynced().forget(ino);
                    let released = w.complete_flight(id);
                    st.dirty_bytes = st.dirty_bytes.saturating_sub(released);
                    st.cache.invalidate(ino);
                    self.attrs.forget(ino);
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
        self.writeback.space_freed();
        self.writeback.flush_ended(first_err);
        match first_err {
            Some(e) => Err(e),
            None => Ok(true),
        }
    }

    /// Commits the extents, one request per manager, all managers at once. Returns one
    /// outcome per taken inode, in `taken` order.
    async fn commit_all(
        &self,
        taken: &[Taken],
        written: Vec<Written>,
        sync: bool,
        patient: bool,
    ) -> Vec<(InodeId, Outcome)> {
        // One request per manager and standing (entries buffered across a loss the client
        // has not learned of yet stand apart; the manager refuses only those).
        let mut groups: BTreeMap<(NodeId, Option<Standing>), Vec<InodeWrite>> = BTreeMap::new();
        for (t, w) in taken.iter().zip(written) {
            groups
                .entry((self.meta.owner(t.ino), t.standing))
                .or_default()
                .push(InodeWrite {
                    ino: t.ino,
                    extents: w.extents,
                    size: t.size,
                    mtime: t.mtime,
                    sums: w.sums,
                });
        }
        let results = futures::future::join_all(
            groups
                .into_iter()
                .map(|((_, standing), w)| self.commit_group(w, sync, standing, patient)),
        )
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
    async fn commit_group(
        &self,
        writes: Vec<InodeWrite>,
        sync: bool,
        standing: Option<Standing>,
        patient: bool,
    ) -> Vec<(InodeId, Outcome)> {
        let inos: Vec<InodeId> = writes.iter().map(|w| w.ino).collect();
        let single = writes.len() == 1;
        match self.commit(writes.clone(), sync, standing, patient).await {
            Ok(attrs) => {
                let mut by_ino: HashMap<InodeId, Attr> =
                    attrs.into_iter().map(|a| (a.ino, a)).collect();
                inos.into_iter()
                    .map(|i| (i, Outcome::Committed(by_ino.remove(&i))))
                    .collect()
            }
            Err(e) if single || is_transient(e) => {
                let outcome = |ino| {
                    if is_gone(e) {
                        self.gone(ino)
                    } else {
                        Outcome::Failed(e)
                    }
                };
                inos.into_iter().map(|i| (i, outcome(i))).collect()
            }
            Err(_) => {
                let mut out = Vec::new();
                for w in writes {
                    let ino = w.ino;
                    let o = match self.commit(vec![w], sync, standing, patient).await {
                        Ok(a) => Outcome::Committed(a.into_iter().next()),
                        Err(e) if is_gone(e) => self.gone(ino),
                        Err(e) => Outcome::Failed(e),
                    };
                    out.push((ino, o));
                }
                out
            }
        }
    }

    /// What a commit answered "no such inode" means: the file was removed, or, for a
    /// create no sync covered yet, the create was lost in a manager restart or takeover
    /// (reported, never taken for a removal: the data would go and the fsync return 0).
    fn gone(&self, ino: InodeId) -> Outcome {
        if self.writeback.lost_create(ino) {
            Outcome::Lost
        } else {
            Outcome::Gone
        }
    }

    /// Commits. Unlike other requests, a commit refused with `LeaseExpired` is not
    /// retried after renewing when the manager gave up on this client: the renewal drops
    /// the data (see `drop_manager_caches`) instead of writing it over newer changes. When
    /// the renewal finds a new incarnation instead (a restart, a takeover, a hand-over) and
    /// no renewal meanwhile discarded writes, they were kept and their write leases marked
    /// to be asked for again: the
    /// commit goes once more under them, as a later flush would, so that an fsync across
    /// the restart does not fail. A write lease that a manager restart took away is asked
    /// for again first.
    async fn commit(
        &self,
        writes: Vec<InodeWrite>,
        sync: bool,
        standing: Option<Standing>,
        patient: bool,
    ) -> Result<Vec<Attr>, FsError> {
        let owner = writes.first().map(|w| self.meta.owner(w.ino));
        let incarnation = || owner.and_then(|n| self.meta.lease(n).incarnation());
        let mut again = true;
        loop {
            for w in &writes {
                if self.lease_session.take_reacquire(w.ino) {
                    if let Err(e) = self.acquire_write(w.ino).await {
                        self.lease_session.must_reacquire(w.ino);
                        return Err(e);
                    }
                }
            }
            let (before, discards) = (incarnation(), self.lease_session.discards());
            let r = self
                .writeback
                .commit(writes.clone(), sync, standing, patient)
                .await;
            // Only when no renewal meanwhile found that a manager gave up on us: then the
            // writes were discarded, and sending them would put them over newer ones.
            let kept = self.lease_session.discards() == discards;
            match r {
                Err(FsError::EIO)
                    if again && kept && before.is_some() && incarnation() != before =>
                {
                    tracing::info!(
                        manager = ?owner,
                        "the manager restarted during the commit: committing again under the reclaimed write leases"
                    );
                    again = false;
                }
                r => return r,
            }
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
        let (writes, _pin) = self.writeback.take_suspects(node, ino, current);
        if writes.is_empty() {
            return;
        }
        tracing::info!(inode = %ino, commits = writes.len(), "sending commits a manager restart may have lost again");
        // No standing: these go to a new incarnation, which applies its reclaim rules.
        if let Err(e) = self.commit(writes, true, None, true).await {
            tracing::warn!(inode = %ino, "commits lost in a manager restart could not be sent again: {e}");
            self.writeback.errors.record(ino, e);
        }
    }

    /// Writes every dirty byte and makes every manager's state durable (unmount, syncfs).
    /// Fails EIO if a commit or create was found lost in a manager restart or takeover
    /// meanwhile (also one this sync's checks found: it was recorded for its inode only).
    pub async fn sync_all(&self) -> Result<(), FsError> {
        let losses = self.writeback.losses();
        self.flush_inodes(Which::All, false).await?;
        let syncs = self
            .config
            .manager_nodes()
            .into_iter()
            .map(|m| self.writeback.sync_node(m.id));
        for r in futures::future::join_all(syncs).await {
            r?;
        }
        // A sync answered by a restarted manager before this client's reclaim decided
        // left the earlier incarnation's commits alone: once it has, they are checked.
        for m in self.config.manager_nodes() {
            if self.writeback.has_earlier_commits(m.id) {
                self.writeback.await_reclaim_decided(m.id).await;
                self.writeback.sync_node(m.id).await?;
            }
        }
        if self.writeback.losses() > losses {
            return Err(FsError::EIO);
        }
        Ok(())
    }

    /// Waits until buffered dirty data is below the limit (see `WriteBack::wait_for_space`).
    pub(crate) async fn wait_for_space(&self) -> Result<(), FsError> {
        self.writeback
            .wait_for_space(|| self.lock_state().dirty_bytes)
            .await
    }
}

/// What became of one inode's data in a flush.
enum Outcome {
    Committed(Option<Attr>),
    /// The inode no longer exists: its data is dropped.
    Gone,
    /// The inode's create was lost: its data is dropped, the error recorded for it.
    Lost,
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
