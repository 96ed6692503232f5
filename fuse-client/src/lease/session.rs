//! The lease runtime: runs the engine's actions against the managers and the caches.
//!
//! Owns: per manager a `VolumeLease` (the pure engine) behind a lock, Hello at connect,
//! the background renewer, synchronous renewal before cached state is used, dropping every
//! cached copy of a manager's inodes when the engine says so, the write lease of each inode
//! (`AcquireWrite`, given up on a Flush callback), reclaim after a manager restart, and the
//! callback handler (`Invalidate`, `Flush`). Every manager answer is fed to the engine as
//! an event; the lease is extended only from the grant or `LeaseExtension` the answer
//! carries. A manager that does not implement leases (answers `Invalid` to `Hello`) is
//! used without them, as before.
//! Must not hold the state lock across an await, must not wait on a lock a request in flight
//! to a manager holds while answering a callback, must never drop dirty data unless the
//! engine says the manager gave up on us, and must not import the fuser adapter.

use super::clock::BootInstant;
use super::engine::{Action, CacheEpoch, Event, HeldLease, VolumeLease};
use crate::client::Client;
use crate::error::FsError;
use crate::remote::{self, Failure, Target};
use crate::writeback::Which;
use bytes::Bytes;
use proto::ids::{InodeId, NodeId};
use proto::msg::{ClientCallback, ManagerRequest, ManagerResponse, RemoteError, Request, Response};
use proto::transport::{BoxFuture, Handler, Peer};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// How often a request answered `LeaseExpired` is renewed and sent again.
const LEASE_RETRIES: usize = 4;
/// Shortest time a renewal waits for its answer.
const MIN_RENEW_WAIT: Duration = Duration::from_secs(1);
/// Shortest background renewal interval, whatever the lease.
const MIN_RENEW_EVERY: Duration = Duration::from_millis(50);

/// One manager's lease and the lock that serialises its renewals.
pub(crate) struct LeaseSlot {
    state: Mutex<VolumeLease>,
    renewing: tokio::sync::Mutex<()>,
}

/// Volume leases of every manager of the cluster.
pub(crate) struct Leases {
    slots: HashMap<NodeId, LeaseSlot>,
}

impl Leases {
    pub fn new(managers: impl IntoIterator<Item = NodeId>) -> Leases {
        Leases {
            slots: managers
                .into_iter()
                .map(|n| {
                    let slot = LeaseSlot {
                        state: Mutex::new(VolumeLease::default()),
                        renewing: tokio::sync::Mutex::new(()),
                    };
                    (n, slot)
                })
                .collect(),
        }
    }

    /// A copy of `node`'s lease state (default for unknown nodes).
    pub fn get(&self, node: NodeId) -> VolumeLease {
        self.slots
            .get(&node)
            .map(|s| *s.state.lock().unwrap_or_else(|e| e.into_inner()))
            .unwrap_or_default()
    }

    pub(crate) fn update<R>(
        &self,
        node: NodeId,
        f: impl FnOnce(&mut VolumeLease) -> R,
    ) -> Option<R> {
        self.slots
            .get(&node)
            .map(|s| f(&mut s.state.lock().unwrap_or_else(|e| e.into_inner())))
    }

    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.slots.keys().copied()
    }
}

/// Answers manager callbacks for a client (install with `Transport::set_callback_handler`
/// before the first request).
#[derive(Default)]
pub struct CallbackHandler {
    client: OnceLock<Weak<Client>>,
}

impl CallbackHandler {
    pub fn new() -> Arc<CallbackHandler> {
        Arc::new(CallbackHandler::default())
    }

    pub(crate) fn attach(&self, client: &Arc<Client>) {
        let _ = self.client.set(Arc::downgrade(client));
    }
}

impl Handler for CallbackHandler {
    fn handle(&self, peer: Peer, req: Request, _bulk: Bytes) -> BoxFuture<'_, (Response, Bytes)> {
        let client = self.client.get().and_then(Weak::upgrade);
        Box::pin(async move {
            let resp = match (client, req) {
                (Some(c), Request::Client(cb)) => c.on_callback(cb).await,
                (None, Request::Client(_)) => {
                    Response::Error(RemoteError::Unavailable("client is not connected".into()))
                }
                (_, other) => {
                    tracing::warn!(from = %peer.addr, "a client answers only callbacks, not {other}");
                    Response::Error(RemoteError::NoRole(format!("{other}")))
                }
            };
            (resp, Bytes::new())
        })
    }
}

impl Client {
    /// The manager owning `ino`.
    pub(crate) fn owner(&self, ino: InodeId) -> NodeId {
        self.mc.owner_of(ino)
    }

    /// Sends a manager request: counts it, renews and retries on `LeaseExpired` (dropping
    /// caches when the lease was lost), and extends the lease only as far as the answer
    /// confirms (`LeaseExtension`).
    pub(crate) async fn call(
        &self,
        target: Target,
        req: ManagerRequest,
    ) -> Result<ManagerResponse, FsError> {
        let node = match target {
            Target::Node(n) => Some(n),
            Target::Route => proto::route::routing_inode(&req).map(|i| self.owner(i)),
        };
        for _ in 0..LEASE_RETRIES {
            let seen = node.map(|n| self.leases.get(n).renewals()).unwrap_or(0);
            let sent = BootInstant::now();
            match remote::call_leased(&self.mc, target, req.clone(), Some(&self.counters)).await {
                Ok((r, ext)) => {
                    if let (Some(n), Some(ext)) = (node, ext) {
                        self.lease_event(n, Event::Confirmed { sent, ext }).await;
                    }
                    return Ok(r);
                }
                Err(Failure::LeaseExpired) => {
                    let Some(n) = node else {
                        return Err(FsError::EIO);
                    };
                    tracing::info!(%req, "volume lease expired at the manager: renewing");
                    self.renew_after(n, seen, true).await;
                }
                Err(Failure::Errno(e)) => return Err(e),
            }
        }
        tracing::warn!(%req, "manager kept answering LeaseExpired after renewals");
        Err(FsError::EIO)
    }

    /// Feeds `ev` to the engine of `node` and runs the actions it asks for.
    pub(crate) async fn lease_event(&self, node: NodeId, ev: Event) {
        let actions = self
            .leases
            .update(node, |v| v.on_event(ev))
            .unwrap_or_default();
        self.run_lease_actions(node, actions).await;
    }

    /// Runs the engine's actions for `node`, in order.
    fn run_lease_actions(
        &self,
        node: NodeId,
        actions: Vec<Action>,
    ) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(async move {
            for a in actions {
                match a {
                    Action::DropCaches { discard_writes } => {
                        tracing::info!(manager = %node, discard_writes, "volume lease lost or manager restarted: dropping caches");
                        self.drop_manager_caches(node, discard_writes).await;
                    }
                    Action::Hello => {
                        // A manager that lost us (or restarted) may no longer know where to
                        // call back.
                        if let Err(e) = self.hello(node).await {
                            tracing::info!(manager = %node, "hello after a lost lease failed: {e}");
                        }
                    }
                    Action::Reclaim => {
                        // In its own task: a reclaim sends requests, which may have to
                        // renew, and a renewal may be running this action under the
                        // renewal lock.
                        match self.this.get().and_then(std::sync::Weak::upgrade) {
                            Some(c) => {
                                tokio::spawn(async move { c.reclaim(node).await });
                            }
                            None => self.reclaim(node).await,
                        }
                    }
                }
            }
        })
    }

    /// Hello to every manager (at connect). A manager that answers `Invalid` does not
    /// implement leases and is used without them.
    pub(crate) async fn hello_all(&self) -> Result<(), (NodeId, FsError)> {
        let nodes: Vec<NodeId> = self.leases.nodes().collect();
        let hellos = nodes
            .iter()
            .map(|&n| async move { (n, self.hello(n).await) });
        for (n, r) in futures::future::join_all(hellos).await {
            if let Err(e) = r {
                return Err((n, e));
            }
        }
        Ok(())
    }

    async fn hello(&self, node: NodeId) -> Result<(), FsError> {
        let sent = BootInstant::now();
        let req = ManagerRequest::Hello {
            session: self.session,
        };
        match remote::call_with(&self.mc, Target::Node(node), req, Some(&self.counters)).await {
            Ok(ManagerResponse::Lease(grant)) => {
                let ev = Event::Granted {
                    sent,
                    grant,
                    hello: true,
                };
                self.lease_event(node, ev).await;
                Ok(())
            }
            Ok(other) => Err(remote::unexpected("Hello", &other)),
            Err(Failure::Errno(e)) if e == FsError::EINVAL => {
                tracing::warn!(
                    manager = %node,
                    "manager does not implement volume leases; caches are used without callbacks"
                );
                self.lease_event(node, Event::Unleased).await;
                Ok(())
            }
            Err(f) => Err(f.into()),
        }
    }

    /// Renews after the manager answered `LeaseExpired` (drops what it caches).
    pub(crate) async fn renew_lost(&self, node: NodeId) {
        let seen = self.leases.get(node).renewals();
        self.renew_after(node, seen, true).await;
    }

    /// Renews the lease with `node` unless another renewal succeeded since `seen` (and,
    /// unless `force`, unless the lease is still held).
    async fn renew_after(&self, node: NodeId, seen: u64, force: bool) {
        let Some(slot) = self.leases.slots.get(&node) else {
            return;
        };
        let _one = slot.renewing.lock().await;
        let st = self.leases.get(node);
        if st.renewals() != seen || (!force && st.check(BootInstant::now()).is_some()) {
            return;
        }
        self.renew(node).await;
    }

    /// Sends one `Renew` to `node` and feeds the answer to the engine.
    async fn renew(&self, node: NodeId) {
        let sent = BootInstant::now();
        self.counters.renewal_sent();
        let req = ManagerRequest::Renew {
            session: self.session,
        };
        self.counters.rpc(&req);
        // One attempt, bounded: a manager that does not answer must not hold up renewals
        // (the lease then runs out and the caches of its inodes are dropped).
        let wait = self.leases.get(node).lease().max(MIN_RENEW_WAIT);
        let answer = tokio::time::timeout(wait, self.mc.call_node(node, req)).await;
        let ev = match answer {
            Ok(Ok(ManagerResponse::Lease(grant))) => Event::Granted {
                sent,
                grant,
                hello: false,
            },
            Ok(Ok(other)) => {
                let _ = remote::unexpected("Renew", &other);
                Event::RenewFailed {
                    now: BootInstant::now(),
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(manager = %node, "renewal failed: {e}");
                Event::RenewFailed {
                    now: BootInstant::now(),
                }
            }
            Err(_) => {
                tracing::info!(manager = %node, "renewal: no answer within {wait:?}; reconnecting");
                // A manager killed and restarted on the same address may leave the old
                // connection hanging until its idle timeout (10 s): the Hello that follows
                // and every other call would wait on it, past the reclaim window (found by
                // consistency/t55: buffered writes then lost). A new connection reaches
                // the new incarnation at once.
                self.mc.drop_connection(node);
                Event::RenewFailed {
                    now: BootInstant::now(),
                }
            }
        };
        self.lease_event(node, ev).await;
    }

    /// After `node` restarted: re-asserts the write lease of every inode of it that still
    /// has buffered writes (`AcquireWrite` with `reclaim`), so that its readers wait for
    /// them instead of reading what the log had. A reclaim refused because the grace
    /// period is over (others may have written since) discards the writes: the next fsync or
    /// close of the file reports EIO. Other failures leave the inode to be re-acquired
    /// before its commit.
    fn reclaim(&self, node: NodeId) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut inos: Vec<InodeId> = self
                .lock_state()
                .files
                .keys()
                .copied()
                .filter(|i| self.owner(*i) == node)
                .collect();
            // Also files whose commits the restart may have lost: they are sent again.
            let unsynced = self.lock_unsynced().inodes(node);
            inos.extend(unsynced.iter().copied());
            inos.sort_unstable();
            inos.dedup();
            if inos.is_empty() {
                tracing::info!(manager = %node, "manager restarted: no write lease to reclaim");
                return;
            }
            let incarnation = self.leases.get(node).incarnation().unwrap_or_default();
            tracing::info!(manager = %node, inodes = inos.len(), "manager restarted: reclaiming write leases");
            for ino in inos {
                let Some(epoch) = self.lease_epoch(ino) else {
                    continue;
                };
                let revocations = self.revocations(ino);
                let req = ManagerRequest::AcquireWrite {
                    ino,
                    session: self.session,
                    reclaim: true,
                };
                match self.call(Target::Node(node), req).await {
                    Ok(ManagerResponse::Done) => {
                        self.record_write_lease(ino, epoch, revocations);
                        self.reacquire.remove(&ino);
                        self.reclaimed.insert(ino, incarnation);
                    }
                    Ok(other) => {
                        let _ = remote::unexpected("AcquireWrite", &other);
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
            // Commits that may be lost go again now, before any reader is let through.
            for ino in unsynced {
                if let Err(e) = self
                    .flush_inodes(crate::writeback::Which::One(ino), false)
                    .await
                {
                    tracing::warn!(inode = %ino, "flush after a reclaim failed: {e}");
                }
            }
            self.kick.notify_one();
        })
    }

    /// Drops the unflushed writes of `ino` (their lease is gone and others may have
    /// written since); its next fsync or close reports EIO.
    fn discard_writes(&self, ino: InodeId) {
        let mut st = self.lock_state();
        if let Some(w) = st.files.remove(&ino) {
            let bytes = w.bytes();
            st.dirty_bytes = st.dirty_bytes.saturating_sub(bytes);
            tracing::warn!(inode = %ino, bytes, "lease lost: discarding unflushed writes");
            self.errors.insert(ino, FsError::EIO);
        }
        drop(st);
        self.reacquire.remove(&ino);
        self.space.notify_waiters();
    }

    /// Renews every manager's lease now (the background renewer does this every lease/4).
    pub async fn renew_all(&self) {
        let nodes: Vec<NodeId> = self
            .leases
            .nodes()
            .filter(|n| self.leases.get(*n).enabled())
            .collect();
        futures::future::join_all(nodes.into_iter().map(|n| async move {
            let seen = self.leases.get(n).renewals();
            self.renew_after(n, seen, true).await
        }))
        .await;
    }

    /// Promises this log's reclaim horizon (see `horizon`) to every manager whose last
    /// promise is older (or made to another incarnation): one attempt each, bounded by
    /// `PROMISE_WAIT`, never retried here (the renewer tries again next period).
    pub(crate) async fn promise_horizon(&self) {
        let horizon = {
            let unsynced = self.lock_unsynced();
            self.horizon.get(unsynced.min_segment(self.log_id))
        };
        let nodes: Vec<NodeId> = self.leases.nodes().collect();
        futures::future::join_all(nodes.into_iter().map(|n| async move {
            let incarnation = self.leases.get(n).incarnation();
            if self.promised.get(&n).map(|p| *p) == Some((incarnation, horizon.0)) {
                return;
            }
            let req = ManagerRequest::LogHorizon {
                session: self.session,
                log: self.log_id,
                horizon,
            };
            self.counters.rpc(&req);
            let answer = tokio::time::timeout(PROMISE_WAIT, self.mc.call_node(n, req)).await;
            match answer {
                Ok(Ok(ManagerResponse::Done)) => {
                    self.promised.insert(n, (incarnation, horizon.0));
                }
                Ok(Ok(other)) => {
                    let _ = remote::unexpected("LogHorizon", &other);
                }
                Ok(Err(e)) => {
                    tracing::debug!(manager = %n, "reclaim horizon not promised: {e}");
                }
                Err(_) => {
                    tracing::debug!(manager = %n, "reclaim horizon not promised within {PROMISE_WAIT:?}");
                }
            }
        }))
        .await;
    }

    /// Before using cached state of `ino`: renews first when the lease of its manager is
    /// not held for the kernel TTL (dropping caches if it was lost). The lease, if held
    /// now; without it nothing cached of `ino` may be used.
    pub(crate) async fn ensure_lease(&self, ino: InodeId) -> Option<HeldLease> {
        let node = self.owner(ino);
        let st = self.leases.get(node);
        if let Some(held) = st.check(BootInstant::now()) {
            return Some(held);
        }
        self.renew_after(node, st.renewals(), false).await;
        self.leases.get(node).check(BootInstant::now())
    }

    /// The entry/attribute TTL to hand the kernel for `ino` now: never longer than the
    /// lease time left (see `VolumeLease::kernel_ttl`).
    pub fn kernel_ttl(&self, ino: InodeId) -> Duration {
        self.leases
            .get(self.owner(ino))
            .kernel_ttl(BootInstant::now())
    }

    /// The current cache epoch of `ino`'s manager, or `None` when it has no leases.
    pub(crate) fn lease_epoch(&self, ino: InodeId) -> Option<CacheEpoch> {
        let st = self.leases.get(self.owner(ino));
        st.enabled().then_some(st.epoch())
    }

    /// Whether the write lease of `ino` is held (always true without leases).
    pub(crate) fn write_lease_held(&self, st: &crate::client::DataState, ino: InodeId) -> bool {
        let volume = self.lease_epoch(ino);
        match st.leases.get(&ino) {
            Some(l) => l.held_under(volume),
            None => volume.is_none(),
        }
    }

    /// Revocation count of `ino`'s write lease (take it before asking for the lease).
    pub(crate) fn revocations(&self, ino: InodeId) -> u64 {
        self.lock_state()
            .leases
            .get(&ino)
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
            .leases
            .entry(ino)
            .or_default()
            .record(epoch, revocations)
    }

    /// Makes sure the write lease of `ino` is held (AcquireWrite unless it is).
    pub(crate) async fn acquire_write(&self, ino: InodeId) -> Result<(), FsError> {
        let Some(epoch) = self.lease_epoch(ino) else {
            return Ok(());
        };
        if self.write_lease_held(&self.lock_state(), ino) {
            return Ok(());
        }
        let gate = self.acquiring.entry(ino).or_default().clone();
        let _one = gate.lock().await;
        if self.write_lease_held(&self.lock_state(), ino) {
            return Ok(());
        }
        let revocations = self.revocations(ino);
        let req = ManagerRequest::AcquireWrite {
            ino,
            session: self.session,
            reclaim: false,
        };
        match self.call(Target::Route, req).await? {
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
        // The engine bumped the cache epoch already: write leases of older epochs are gone.
        let owned = |ino: &InodeId| self.owner(*ino) == node;
        let mut known: Vec<InodeId> = self
            .attrs
            .iter()
            .map(|e| *e.key())
            .filter(|i| owned(i))
            .collect();
        self.attr_drops.fetch_add(1, Ordering::SeqCst);
        self.attrs.retain(|i, _| !owned(i));
        self.parents.retain(|i, _| !owned(i));
        self.no_caps.retain(|i, _| !owned(i));
        {
            let mut st = self.lock_state();
            known.extend(st.files.keys().copied().filter(|i| owned(i)));
            // When the manager gave up on us, unflushed writes to these inodes are lost, as
            // after a crash: another client may have changed the files since, and
            // committing them now would put older writes over newer ones. The next fsync or
            // close of each file reports EIO.
            let lost: Vec<InodeId> = st.files.keys().copied().filter(|i| owned(i)).collect();
            for ino in lost {
                if !discard_writes {
                    // Kept: committed once the write lease is granted again.
                    self.reacquire.insert(ino, ());
                    continue;
                }
                if let Some(w) = st.files.remove(&ino) {
                    let bytes = w.bytes();
                    st.dirty_bytes = st.dirty_bytes.saturating_sub(bytes);
                    tracing::warn!(inode = %ino, bytes, "lease lost: discarding unflushed writes");
                    self.errors.insert(ino, FsError::EIO);
                }
            }
            st.cache.invalidate_where(|i| owned(&i));
            st.extents.invalidate_where(|i| owned(&i));
            for (ino, l) in st.leases.iter_mut() {
                if owned(ino) {
                    l.forget();
                }
            }
        }
        self.bump_dir_generations();
        known.sort_unstable();
        known.dedup();
        self.kernel_invalidate(known, Vec::new()).await;
    }

    /// Drops every cached copy of `ino` in this client (not its dirty data: a callback
    /// comes while the lease is valid, and a Flush commits the data first).
    pub(crate) fn drop_inode_caches(&self, ino: InodeId) {
        self.attr_drops.fetch_add(1, Ordering::SeqCst);
        self.attrs.remove(&ino);
        self.parents.remove(&ino);
        self.no_caps.remove(&ino);
        {
            let mut st = self.lock_state();
            st.cache.invalidate(ino);
            st.extents.invalidate(ino);
        }
        self.bump_dir_generation(ino);
    }

    /// Drops this client's block, extent and attribute caches (every inode); the kernel's
    /// are left alone. For benchmarks that read cold (`setxattr shoal.drop_caches`).
    pub fn drop_caches(&self) {
        self.attr_drops.fetch_add(1, Ordering::SeqCst);
        self.attrs.clear();
        self.no_caps.clear();
        let mut st = self.lock_state();
        st.cache.invalidate_where(|_| true);
        st.extents.invalidate_where(|_| true);
        drop(st);
        self.bump_dir_generations();
    }

    /// Carries out a manager callback and answers it.
    pub(crate) async fn on_callback(&self, cb: ClientCallback) -> Response {
        match cb {
            ClientCallback::Invalidate { inodes, entries } => {
                self.counters.invalidate_received();
                for ino in &inodes {
                    self.drop_inode_caches(*ino);
                }
                for (parent, _) in &entries {
                    self.bump_dir_generation(*parent);
                }
                self.kernel_invalidate(inodes, entries).await;
                Response::CallbackDone
            }
            ClientCallback::Flush { ino, drop_cache } => {
                self.counters.flush_received();
                {
                    // Given up first: a write from now on asks for the lease again.
                    let mut st = self.lock_state();
                    st.leases.entry(ino).or_default().revoke();
                }
                if let Err(e) = self.flush_inodes(Which::One(ino), false).await {
                    tracing::warn!(inode = %ino, "flush asked by the manager failed: {e}");
                    return Response::Error(RemoteError::Io(format!(
                        "cannot write back inode {ino}: {e}"
                    )));
                }
                if drop_cache {
                    self.drop_inode_caches(ino);
                    self.kernel_invalidate(vec![ino], Vec::new()).await;
                }
                Response::CallbackDone
            }
        }
    }
}

/// Bound of one `LogHorizon` attempt.
const PROMISE_WAIT: Duration = Duration::from_secs(1);

/// The background renewer: every lease/4 renews every manager that grants leases. Ends
/// when `stop` turns true or the client is gone.
pub(crate) async fn renewer(
    client: Weak<Client>,
    mut stop: watch::Receiver<bool>,
    worker: Arc<crate::worker::Worker>,
) {
    loop {
        let every = {
            let Some(c) = client.upgrade() else {
                worker.stopped();
                return;
            };
            c.leases
                .nodes()
                .map(|n| c.leases.get(n))
                .filter(|s| s.enabled())
                .map(|s| s.lease() / 4)
                .min()
                .unwrap_or(Duration::from_secs(1))
                .max(MIN_RENEW_EVERY)
        };
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            worker.stopped();
            return;
        }
        let Some(c) = client.upgrade() else {
            worker.stopped();
            return;
        };
        worker.busy();
        c.renew_all().await;
        worker.idle();
        // In its own task, one bounded attempt per manager: a manager that is down must
        // not hold up the next renewal (which is how a restart is noticed and reclaimed).
        tokio::spawn(async move { c.promise_horizon().await });
    }
}
