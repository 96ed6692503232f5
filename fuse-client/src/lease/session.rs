//! The lease runtime above the manager-RPC layer: carries out what the volume-lease engine
//! (run by `meta`) asks of the caches, the write lease of each inode, and manager
//! callbacks.
//!
//! Owns: dropping every cached copy of a manager's inodes when the engine says so
//! (`LeaseActions` for `Client`), the write lease of each inode (`AcquireWrite`, given up
//! on a Flush callback), reclaim after a manager restart, and carrying out callbacks (`Invalidate`, `Flush`) handed over by the
//! transport's handler (`client::CallbackHandler`).
//! Must not hold the state lock across an await, must not wait on a lock a request in flight
//! to a manager holds while answering a callback, must never drop dirty data unless the
//! engine says the manager gave up on us, and must not import fuser (the kernel is told
//! through `kernel::notify::KernelCache`).

use super::engine::CacheEpoch;
use crate::client::Client;
use crate::data::{DataState, Which};
use crate::error::FsError;
use crate::kernel::notify;
use crate::meta::{self as remote, LeaseActions, Target};
use futures::future::BoxFuture;
use futures::StreamExt;

/// Reclaims in flight at once after a manager restart (a client may hold many write leases).
const RECLAIM_PARALLEL: usize = 16;
use proto::ids::{InodeId, NodeId};
use proto::msg::{ClientCallback, ManagerRequest, ManagerResponse, RemoteError, Response};

impl LeaseActions for Client {
    fn drop_caches(&self, node: NodeId, discard_writes: bool) -> BoxFuture<'_, ()> {
        Box::pin(self.drop_manager_caches(node, discard_writes))
    }

    fn reclaim(&self, node: NodeId) {
        // In its own task: a reclaim sends requests, which may have to renew, and a
        // renewal may be running this action under the renewal lock.
        if let Some(c) = self.this.get().and_then(std::sync::Weak::upgrade) {
            tokio::spawn(async move { c.reclaim_write_leases(node).await });
        }
    }
}

impl Client {
    /// After `node` restarted: re-asserts the write lease of every inode of it that still
    /// has buffered writes or unsynced commits, or whose write lease it held (`AcquireWrite`
    /// with `reclaim`), so that its readers wait for them instead of reading what the log
    /// had, and readers of clean files do not wait out the reclaim window. A reclaim
    /// refused because the grace period is over (others may have written since) discards
    /// the writes: the next fsync or close of the file reports EIO. Other failures leave the
    /// inode to be re-acquired before its commit.
    async fn reclaim_write_leases(&self, node: NodeId) {
        {
            let mut inos: Vec<InodeId> = self
                .lock_state()
                .buffered_where(|i| self.meta.owner(i) == node);
            // Also files whose commits the restart may have lost: they are sent again.
            let unsynced = self.writeback.lock_unsynced().inodes(node);
            inos.extend(unsynced.iter().copied());
            let with_data: std::collections::HashSet<InodeId> = inos.iter().copied().collect();
            // And clean files whose write lease we held: the manager recorded it, and their
            // readers would wait until the reclaim window ends (4 leases) without a reclaim.
            inos.extend(self.lease_session.take_held_at_drop(node));
            inos.sort_unstable();
            inos.dedup();
            let incarnation = self.meta.lease(node).incarnation().unwrap_or_default();
            if inos.is_empty() {
                tracing::info!(manager = %node, "manager restarted: no write lease to reclaim");
                self.writeback.note_reclaim_asked(node, incarnation);
                return;
            }
            tracing::info!(manager = %node, inodes = inos.len(), with_data = with_data.len(), "manager restarted: reclaiming write leases");
            let with_data = &with_data;
            futures::stream::iter(inos)
                .for_each_concurrent(RECLAIM_PARALLEL, |ino| async move {
                    self.reclaim_one(node, ino, incarnation, with_data.contains(&ino))
                        .await
                })
                .await;
            // Until now syncs answered by the new incarnation left the earlier commits alone
            // (see `WriteBack::after_sync`).
            self.writeback.note_reclaim_asked(node, incarnation);
            // Commits that may be lost go again now, before any reader is let through:
            // each inode on its own (a Flush callback for one waits only for its own).
            futures::stream::iter(unsynced)
                .for_each_concurrent(RECLAIM_PARALLEL, |ino| async move {
                    if let Err(e) = self.flush_inodes(Which::One(ino), false).await {
                        tracing::warn!(inode = %ino, "flush after a reclaim failed: {e}");
                    }
                })
                .await;
            // The earlier commits of inodes not reclaimed are checked now (a lost one is
            // reported by the inode's next fsync or close).
            if self
                .writeback
                .lock_unsynced()
                .has_other_incarnation(node, incarnation)
            {
                if let Err(e) = self.writeback.sync_node(node).await {
                    tracing::debug!(manager = %node, "sync after a reclaim failed: {e}");
                }
            }
            self.writeback.kick().notify_one();
        }
    }

    /// Reclaims the write lease of `ino` from `node` (restarted as `incarnation`);
    /// `with_data`: it has buffered writes or unsynced commits (a refusal then discards
    /// them and is worth a warning; for a clean inode it only means another session wrote
    /// later, or the file is gone).
    async fn reclaim_one(&self, node: NodeId, ino: InodeId, incarnation: u64, with_data: bool) {
        let Some(epoch) = self.meta.lease_epoch(ino) else {
            return;
        };
        let revocations = self.revocations(ino);
        let req = ManagerRequest::AcquireWrite {
            ino,
            session: self.meta.session(),
            reclaim: true,
        };
        match self.meta.call(Target::Node(node), req).await {
            Ok(ManagerResponse::Done) => {
                self.record_write_lease(ino, epoch, revocations);
                self.lease_session.take_reacquire(ino);
                self.writeback.note_reclaimed(ino, incarnation);
            }
            Ok(other) => {
                let _ = remote::unexpected("AcquireWrite", &other);
            }
            // Gone, but created by this client and covered by no sync yet: the create was
            // lost with the earlier incarnation (answered before its group commit), not
            // removed. Its data goes; its next fsync or close reports EIO.
            Err(e) if e.0 == libc::ENOENT && self.writeback.lost_create(ino) => {
                self.forget_gone(ino);
            }
            Err(e) if !with_data && (e.0 == libc::ESTALE || e.0 == libc::ENOENT) => {
                tracing::debug!(inode = %ino, "clean write lease not reclaimed: {e}");
            }
            Err(e) if e.0 == libc::ENOENT => {
                // The file is gone (removed before the restart): its writes go with it,
                // as at the last close of an unlinked file. Left buffered, they would be
                // committed with other inodes' writes and refused for the grace period,
                // holding those inodes' commit locks.
                self.forget_gone(ino);
            }
            Err(e) if e.0 == libc::ESTALE => {
                tracing::warn!(inode = %ino, "write lease not reclaimed after a manager restart: {e}");
                self.discard_writes(ino);
            }
            Err(e) => {
                tracing::warn!(inode = %ino, "reclaim failed ({e}); re-acquired before the commit");
            }
        }
    }

    /// Forgets the buffered writes and unsynced commits of `ino`, which its manager says no
    /// longer exists (no error: nobody can read them any more).
    fn forget_gone(&self, ino: InodeId) {
        let mut st = self.lock_state();
        if let Some(bytes) = st.discard(ino) {
            tracing::debug!(inode = %ino, bytes, "file gone: its buffered writes go with it");
        }
        st.forget_clean(ino);
        drop(st);
        self.writeback.lock_unsynced().forget(ino);
        self.lease_session.take_reacquire(ino);
        self.attrs.forget(ino);
        self.writeback.space_freed();
    }

    /// Drops the unflushed writes of `ino` (their lease is gone and others may have
    /// written since); its next fsync or close reports EIO.
    fn discard_writes(&self, ino: InodeId) {
        let mut st = self.lock_state();
        if let Some(bytes) = st.discard(ino) {
            tracing::warn!(inode = %ino, bytes, "lease lost: discarding unflushed writes");
            // Under the data lock: an fsync never finds the writes gone and no error yet.
            self.writeback.errors.record(ino, FsError::EIO);
        }
        drop(st);
        self.lease_session.take_reacquire(ino);
        self.writeback.space_freed();
    }

    /// Whether the write lease of `ino` is held (always true without leases).
    pub(crate) fn write_lease_held(&self, st: &DataState, ino: InodeId) -> bool {
        let volume = self.meta.lease_epoch(ino);
        match st.write_lease(ino) {
            Some(l) => l.held_under(volume),
            None => volume.is_none(),
        }
    }

    /// Revocation count of `ino`'s write lease (take it before asking for the lease).
    pub(crate) fn revocations(&self, ino: InodeId) -> u64 {
        self.lock_state()
            .write_lease(ino)
            .map(|l| l.revocations())
            .unwrap_or(0)
    }

    /// Records a write lease granted in `epoch` unless a Flush revoked it meanwhile.
    pub(crate) fn record_write_lease(
        &self,
        ino: InodeId,
        epoch: CacheEpoch,
        revocations: u64,
    ) -> bool {
        self.lock_state()
            .write_lease_mut(ino)
            .record(epoch, revocations)
    }

    /// Makes sure the write lease of `ino` is held (AcquireWrite unless it is).
    pub(crate) async fn acquire_write(&self, ino: InodeId) -> Result<(), FsError> {
        let Some(epoch) = self.meta.lease_epoch(ino) else {
            return Ok(());
        };
        if self.write_lease_held(&self.lock_state(), ino) {
            return Ok(());
        }
        let gate = self.lease_session.acquire_gate(ino);
        let _one = gate.lock().await;
        if self.write_lease_held(&self.lock_state(), ino) {
            return Ok(());
        }
        let revocations = self.revocations(ino);
        let req = ManagerRequest::AcquireWrite {
            ino,
            session: self.meta.session(),
            reclaim: false,
        };
        match self.meta.call(Target::Route, req).await? {
            ManagerResponse::Done => {}
            other => return Err(remote::unexpected("AcquireWrite", &other)),
        }
        // A Flush that raced with the grant: the caller checks again and re-acquires.
        self.record_write_lease(ino, epoch, revocations);
        Ok(())
    }

    /// Drops every cached copy of `node`'s inodes (ours and the kernel's) and every write
    /// lease taken from it. Dirty data stays (it is committed later).
    pub(crate) async fn drop_manager_caches(&self, node: NodeId, discard_writes: bool) {
        if discard_writes {
            self.lease_session.note_discard();
        }
        // The engine bumped the cache epoch already: write leases of older epochs are gone.
        let owned = |ino: &InodeId| self.meta.owner(*ino) == node;
        let mut known: Vec<InodeId> = self.attrs.drop_where(owned);
        self.parents.forget_where(owned);
        self.no_caps.forget_where(owned);
        self.dir_names.forget_where(owned);
        {
            let mut st = self.lock_state();
            let lost = st.buffered_where(|i| owned(&i));
            known.extend(lost.iter().copied());
            // When the manager gave up on us, unflushed writes to these inodes are lost, as
            // after a crash: another client may have changed the files since, and
            // committing them now would put older writes over newer ones. The next fsync or
            // close of each file reports EIO.
            for ino in lost {
                if !discard_writes {
                    // Kept: committed once the write lease is granted again.
                    self.lease_session.must_reacquire(ino);
                    continue;
                }
                if let Some(bytes) = st.discard(ino) {
                    tracing::warn!(inode = %ino, bytes, "lease lost: discarding unflushed writes");
                    self.writeback.errors.record(ino, FsError::EIO);
                }
            }
            st.forget_clean_where(|i| owned(&i));
            let held = st.forget_write_leases_where(|i| owned(&i));
            // A lease given up because the manager gave up on us is not ours to reclaim.
            if discard_writes {
                self.lease_session.take_held_at_drop(node);
            } else {
                self.lease_session.note_held_at_drop(node, held);
            }
        }
        self.bump_dir_generations();
        known.sort_unstable();
        known.dedup();
        notify::invalidate(
            self.lease_session.notifier(),
            known,
            Vec::new(),
            self.meta.kernel_cache_left(),
        )
        .await;
    }

    /// Drops every cached copy of `ino` in this client (not its dirty data: a callback
    /// comes while the lease is valid, and a Flush commits the data first).
    pub(crate) fn drop_inode_caches(&self, ino: InodeId) {
        tracing::debug!(target: "shoal_attrs", inode = %ino, "caches dropped (callback)");
        self.attrs.drop_one(ino);
        self.parents.forget(ino);
        self.no_caps.forget(ino);
        self.dir_names.forget(ino);
        {
            self.lock_state().forget_clean(ino);
        }
        self.bump_dir_generation(ino);
    }

    /// Drops this client's block, extent and attribute caches (every inode); the kernel's
    /// are left alone. For benchmarks that read cold (`setxattr shoal.drop_caches`).
    pub fn drop_caches(&self) {
        self.attrs.drop_all();
        self.no_caps.clear();
        self.dir_names.clear();
        self.lock_state().forget_clean_where(|_| true);
        self.bump_dir_generations();
    }

    /// Carries out a manager callback and answers it.
    pub(crate) async fn on_callback(&self, cb: ClientCallback) -> Response {
        match cb {
            ClientCallback::Invalidate { inodes, entries } => {
                self.meta.counters().invalidate_received();
                for ino in &inodes {
                    self.drop_inode_caches(*ino);
                }
                for (parent, _) in &entries {
                    self.dir_names.forget(*parent);
                    self.bump_dir_generation(*parent);
                }
                notify::invalidate(
                    self.lease_session.notifier(),
                    inodes,
                    entries,
                    self.meta.kernel_cache_left(),
                )
                .await;
                Response::CallbackDone
            }
            ClientCallback::Flush { ino, drop_cache } => {
                self.meta.counters().flush_received();
                {
                    // Given up first: a write from now on asks for the lease again.
                    self.lock_state().write_lease_mut(ino).revoke();
                }
                if let Err(e) = self.flush_inodes(Which::One(ino), false).await {
                    tracing::warn!(inode = %ino, "flush asked by the manager failed: {e}");
                    return Response::Error(RemoteError::Io(format!(
                        "cannot write back inode {ino}: {e}"
                    )));
                }
                if drop_cache {
                    self.drop_inode_caches(ino);
                    notify::invalidate(
                        self.lease_session.notifier(),
                        vec![ino],
                        Vec::new(),
                        self.meta.kernel_cache_left(),
                    )
                    .await;
                }
                Response::CallbackDone
            }
        }
    }
}
