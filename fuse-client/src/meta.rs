//! The one manager-RPC layer of the client: routing, retry, errno mapping and the volume
//! lease with every manager.
//!
//! Owns: retrying a request while its manager recovers (`Unavailable`, `NotOwner`, a
//! connection that could not be made, a connection that broke or a call that timed out —
//! the manager crashed, restarted or hangs) for up to `RETRY_FOR`, like an NFS hard mount,
//! and turning every other failure into an errno; numbering every call that must not take
//! effect twice (`CallId`, the same on each try: the manager answers a retry of an applied
//! call with its first result instead of EEXIST/ENOENT); per manager
//! the pure lease engine (`VolumeLease`) fed with every answer (`Hello`, `Renew`, the
//! `LeaseExtension` an ordinary answer carries — the lease is extended only from what the
//! manager granted), renewing and retrying when a manager answers `LeaseExpired`; counting
//! every message.
//! Must not: know the caches, the kernel or the write leases — what the engine asks of them
//! (`Action::DropCaches`, `Action::Reclaim`) goes up through `LeaseActions`, installed by the
//! composition root; must not hold a lease lock across an await except the per-manager
//! renewal lock.

use crate::error::FsError;
use crate::lease::{Action, BootInstant, CacheEpoch, Event, HeldLease, VolumeLease};
use crate::stats::Counters;
use futures::future::BoxFuture;
use proto::ids::{CallId, InodeId, NodeId, SessionId};
use proto::live::LiveConfig;
use proto::msg::{LeaseExtension, ManagerRequest, ManagerResponse, RemoteError, Standing};
use proto::route::{CallError, ManagerClient};
use proto::transport::{Transport, TransportError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// How long a request is retried while its manager is unavailable.
pub const RETRY_FOR: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What to do about a failed call.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Retry,
    /// The manager no longer honours our volume lease: renew, drop caches, retry.
    LeaseExpired,
    Fail(FsError),
}

/// Why `Meta::send` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// The manager answered `LeaseExpired`.
    LeaseExpired,
    Errno(FsError),
}

impl From<Failure> for FsError {
    fn from(f: Failure) -> FsError {
        match f {
            Failure::LeaseExpired => FsError::EIO,
            Failure::Errno(e) => e,
        }
    }
}

/// Maps a remote error to the errno the kernel gets.
pub fn remote_errno(e: &RemoteError) -> FsError {
    match e {
        RemoteError::Errno { code, .. } if code.0 > 0 => *code,
        RemoteError::Errno { .. } => FsError::EIO,
        RemoteError::NotFound(_) => FsError::ENOENT,
        RemoteError::NoSpace(_) => FsError::ENOSPC,
        RemoteError::Invalid(_) => FsError::EINVAL,
        RemoteError::Denied { .. } => FsError::EACCES,
        RemoteError::Corrupt(_)
        | RemoteError::Io(_)
        | RemoteError::NoRole(_)
        | RemoteError::NotOwner { .. }
        | RemoteError::Unavailable(_)
        | RemoteError::LeaseExpired(_) => FsError::EIO,
    }
}

/// Classifies a failed manager call.
pub fn verdict(e: &CallError) -> Verdict {
    match e {
        CallError::Remote(RemoteError::Unavailable(_) | RemoteError::NotOwner { .. }) => {
            Verdict::Retry
        }
        CallError::Remote(RemoteError::LeaseExpired(_)) => Verdict::LeaseExpired,
        CallError::Remote(r) => Verdict::Fail(remote_errno(r)),
        // Connecting failed: the request never left, so sending it again is safe.
        CallError::Transport(TransportError::Unreachable { .. }) => Verdict::Retry,
        // The connection broke (the manager crashed or restarted): retry until the manager
        // is back, as an NFS hard mount does. A request that must not take effect twice
        // carries one call number on every try (`call_as`), and a manager that applied an
        // earlier try answers with its result (manager::calls) instead of EEXIST or ENOENT.
        // A certificate refusal is final.
        CallError::Transport(
            TransportError::Connection { .. } | TransportError::Timeout { .. },
        ) => Verdict::Retry,
        CallError::Transport(_) | CallError::Unexpected { .. } | CallError::Unroutable(_) => {
            Verdict::Fail(FsError::EIO)
        }
    }
}

/// Where a request goes.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The owner of the request's routing inode.
    Route,
    Node(NodeId),
}

/// How often a request answered `LeaseExpired` is renewed and sent again.
const LEASE_RETRIES: u32 = 8;
/// The pause before sending again after a renewal that got no grant, doubled at each try
/// up to `LEASE_RETRY_PAUSE_MAX` (3.5 s in all). A manager that has just restarted answers
/// a request of a session it does not know yet with `LeaseExpired` while the renewal that
/// would tell us of the restart is still on its way: sent again at once, the request used
/// up its tries in 2 ms and failed EIO (faults/t40 in CI, 2026-12-06).
const LEASE_RETRY_PAUSE: Duration = Duration::from_millis(50);
const LEASE_RETRY_PAUSE_MAX: Duration = Duration::from_secs(1);
/// Shortest time a renewal waits for its answer.
const MIN_RENEW_WAIT: Duration = Duration::from_secs(1);
/// Added to the end of every TTL handed to the kernel: the kernel counts it from when the
/// reply reaches it, a little after the TTL was computed.
const KERNEL_REPLY_SLACK: Duration = Duration::from_millis(100);
/// Shortest background renewal interval, whatever the lease.
const MIN_RENEW_EVERY: Duration = Duration::from_millis(50);

/// What the lease engine asks of the parts above this layer (the caches, the write
/// leases). Installed once by the composition root (`Meta::attach`).
pub trait LeaseActions: Send + Sync {
    /// Drop every cached copy of `node`'s inodes (ours and the kernel's) and every write
    /// lease taken from it; with `discard_writes` also the unflushed writes to them.
    fn drop_caches(&self, node: NodeId, discard_writes: bool) -> BoxFuture<'_, ()>;
    /// `node` restarted and is in its grace period: re-assert the write leases of inodes
    /// with buffered or unsynced writes (in the background: it sends requests, which may
    /// have to renew, while the renewal lock may be held by the caller).
    fn reclaim(&self, node: NodeId);
}

/// One manager's lease and the lock that serialises its renewals.
struct LeaseSlot {
    state: Mutex<VolumeLease>,
    renewing: tokio::sync::Mutex<()>,
}

/// The manager-RPC layer (see the module doc).
pub struct Meta {
    mc: ManagerClient,
    session: SessionId,
    counters: Counters,
    slots: HashMap<NodeId, LeaseSlot>,
    actions: OnceLock<Weak<dyn LeaseActions>>,
    /// The number of the last call that must not take effect twice (`CallId`).
    calls: std::sync::atomic::AtomicU64,
    /// When the last entry or attributes handed to the kernel expire there at the latest
    /// (microseconds since boot; see `kernel_cache_left`).
    kernel_ttl_until: std::sync::atomic::AtomicU64,
}

/// How a call treats a `LeaseExpired` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OnExpired {
    /// Renew and send again (at most `LEASE_RETRIES` times).
    RenewAndRetry,
    /// Renew and fail with EIO (commits: the manager gave up on us, and the renewal drops
    /// the data instead of writing it over newer changes).
    RenewAndFail,
}

impl Meta {
    /// Calls go where the config `live` holds at the time names each manager (a takeover
    /// moves a manager's group to another address).
    pub fn new(live: Arc<LiveConfig>, transport: Arc<Transport>, session: SessionId) -> Meta {
        let slots = live
            .current()
            .manager_nodes()
            .into_iter()
            .map(|m| {
                let slot = LeaseSlot {
                    state: Mutex::new(VolumeLease::default()),
                    renewing: tokio::sync::Mutex::new(()),
                };
                (m.id, slot)
            })
            .collect();
        Meta {
            mc: ManagerClient::following(live, transport),
            session,
            counters: Counters::default(),
            calls: std::sync::atomic::AtomicU64::new(0),
            kernel_ttl_until: std::sync::atomic::AtomicU64::new(0),
            slots,
            actions: OnceLock::new(),
        }
    }

    /// Installs the receiver of the engine's cache and reclaim actions (once).
    pub fn attach(&self, actions: Weak<dyn LeaseActions>) {
        let _ = self.actions.set(actions);
    }

    /// This mount's session id.
    pub fn session(&self) -> SessionId {
        self.session
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The manager owning `ino`.
    pub fn owner(&self, ino: InodeId) -> NodeId {
        self.mc.owner_of(ino)
    }

    /// Every manager of the cluster.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.slots.keys().copied()
    }

    /// Where this client stands with the manager of `ino` (see `proto::msg::Standing`).
    pub fn standing(&self, ino: InodeId) -> Option<Standing> {
        self.lease(self.owner(ino)).standing()
    }

    /// A copy of `node`'s lease state (default for unknown nodes).
    pub fn lease(&self, node: NodeId) -> VolumeLease {
        self.slots
            .get(&node)
            .map(|s| *s.state.lock().unwrap_or_else(|e| e.into_inner()))
            .unwrap_or_default()
    }

    /// Sends a manager request: counts it, retries while the manager recovers, renews and
    /// sends again on `LeaseExpired` (dropping caches when the lease was lost), and extends
    /// the lease only as far as the answer confirms (`LeaseExtension`).
    pub async fn call(
        &self,
        target: Target,
        req: ManagerRequest,
    ) -> Result<ManagerResponse, FsError> {
        self.call_as(target, req, OnExpired::RenewAndRetry, true)
            .await
    }

    /// `call` for a commit: a `LeaseExpired` answer is not retried after renewing (the
    /// manager gave up on this client, so the renewal drops the data instead of writing
    /// it over newer changes); the commit fails with EIO. Without `patient` (the background
    /// flusher, which holds commit locks a Flush callback may need), a manager that is
    /// unavailable (recovering, or in its grace period) is not waited for: the commit fails
    /// at once with EAGAIN and its data stays buffered for a later round.
    pub async fn call_commit(
        &self,
        req: ManagerRequest,
        patient: bool,
    ) -> Result<ManagerResponse, FsError> {
        self.call_as(Target::Route, req, OnExpired::RenewAndFail, patient)
            .await
    }

    async fn call_as(
        &self,
        target: Target,
        req: ManagerRequest,
        on_expired: OnExpired,
        patient: bool,
    ) -> Result<ManagerResponse, FsError> {
        let node = match target {
            Target::Node(n) => Some(n),
            Target::Route => proto::route::routing_inode(&req).map(|i| self.owner(i)),
        };
        // One number for every try of a call that must not take effect twice: a manager
        // that applied an earlier try answers with its result (a retried rename would
        // otherwise fail ENOENT after a lost answer).
        let call = req.once().then(|| {
            CallId(
                self.calls
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    .wrapping_add(1),
            )
        });
        for attempt in 0..LEASE_RETRIES {
            let seen = node.map(|n| self.lease(n).renewals()).unwrap_or(0);
            let sent = BootInstant::now();
            match self.send(target, call, req.clone(), patient).await {
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
                    // A commit renews whatever renewal ran meanwhile: the renewal is what
                    // tells it whether the manager gave up on us.
                    let seen = match on_expired {
                        OnExpired::RenewAndFail => self.lease(n).renewals(),
                        OnExpired::RenewAndRetry => seen,
                    };
                    let before = self.lease(n).renewals();
                    self.renew_after(n, seen, true).await;
                    if on_expired == OnExpired::RenewAndFail {
                        return Err(FsError::EIO);
                    }
                    if self.lease(n).renewals() == before {
                        let pause = LEASE_RETRY_PAUSE
                            .saturating_mul(1 << attempt.min(5))
                            .min(LEASE_RETRY_PAUSE_MAX);
                        tokio::time::sleep(pause).await;
                    }
                }
                Err(Failure::Errno(e)) => return Err(e),
            }
        }
        tracing::warn!(%req, "manager kept answering LeaseExpired after renewals");
        Err(FsError::EIO)
    }

    /// Sends `req` with retries while the manager recovers (only once unless `patient`:
    /// EAGAIN then); the answer and the volume lease it confirms (if any). `LeaseExpired`
    /// is reported apart.
    async fn send(
        &self,
        target: Target,
        call: Option<CallId>,
        req: ManagerRequest,
        patient: bool,
    ) -> Result<(ManagerResponse, Option<LeaseExtension>), Failure> {
        let node = match target {
            Target::Node(n) => n,
            Target::Route => match proto::route::routing_inode(&req) {
                Some(ino) => self.owner(ino),
                None => {
                    tracing::warn!(%req, "request names no inode to route it by");
                    return Err(Failure::Errno(FsError::EIO));
                }
            },
        };
        let deadline = Instant::now() + RETRY_FOR;
        let mut backoff = FIRST_BACKOFF;
        // Bounded by the deadline: every round sleeps at least FIRST_BACKOFF.
        loop {
            self.counters.rpc(&req);
            // Routed again every round: a NotOwner answer may come with a new owner.
            let to = match target {
                Target::Route => proto::route::routing_inode(&req).map_or(node, |i| self.owner(i)),
                Target::Node(n) => n,
            };
            let cred = crate::credentials::current();
            let err = match self
                .mc
                .call_node_leased_as(to, cred, call, req.clone())
                .await
            {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            match verdict(&err) {
                Verdict::LeaseExpired => {
                    tracing::debug!(%req, "manager answered {err}");
                    return Err(Failure::LeaseExpired);
                }
                Verdict::Fail(errno) => {
                    if matches!(err, CallError::Remote(RemoteError::Errno { .. })) {
                        tracing::debug!(%req, "manager answered {err}");
                    } else {
                        tracing::warn!(%req, "manager call failed: {err}");
                    }
                    return Err(Failure::Errno(errno));
                }
                Verdict::Retry if !patient => {
                    tracing::debug!(%req, "manager unavailable, not waited for: {err}");
                    return Err(Failure::Errno(FsError::EAGAIN));
                }
                Verdict::Retry => {
                    let now = Instant::now();
                    if now >= deadline {
                        tracing::warn!(%req, "manager still unavailable after {RETRY_FOR:?}: {err}");
                        return Err(Failure::Errno(FsError::EIO));
                    }
                    tracing::debug!(%req, "manager unavailable, retrying in {backoff:?}: {err}");
                    tokio::time::sleep(backoff.min(deadline - now)).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// One attempt at `node`, bounded by `wait`, counted, without lease handling (renewals,
    /// horizon promises, goodbye: callers that must not hold anything up).
    pub async fn call_once(
        &self,
        node: NodeId,
        req: ManagerRequest,
        wait: Duration,
    ) -> Result<ManagerResponse, FsError> {
        self.counters.rpc(&req);
        match tokio::time::timeout(wait, self.mc.call_node(node, req)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                tracing::debug!(manager = %node, "call failed: {e}");
                Err(match verdict(&e) {
                    Verdict::Fail(errno) => errno,
                    Verdict::Retry | Verdict::LeaseExpired => FsError::EIO,
                })
            }
            Err(_) => {
                tracing::debug!(manager = %node, "no answer within {wait:?}");
                Err(FsError(libc::ETIMEDOUT))
            }
        }
    }

    /// Feeds `ev` to the engine of `node` and runs the actions it asks for.
    async fn lease_event(&self, node: NodeId, ev: Event) {
        let actions = self
            .slots
            .get(&node)
            .map(|s| {
                s.state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .on_event(ev)
            })
            .unwrap_or_default();
        self.run_lease_actions(node, actions).await;
    }

    /// Runs the engine's actions for `node`, in order: `Hello` here, the others above.
    fn run_lease_actions(&self, node: NodeId, actions: Vec<Action>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let above = self.actions.get().and_then(Weak::upgrade);
            for a in actions {
                match a {
                    Action::DropCaches { discard_writes } => {
                        tracing::info!(manager = %node, discard_writes, "volume lease lost or manager restarted: dropping caches");
                        if let Some(up) = &above {
                            up.drop_caches(node, discard_writes).await;
                        }
                    }
                    Action::Hello => {
                        // A manager that lost us (or restarted) may no longer know where to
                        // call back. Bounded like a renewal, and for the same reason: it
                        // runs under this manager's renewal lock, and a connection that
                        // died silently would hold it (and every renewal of this manager)
                        // until the transport's idle timeout. The next renewal says Hello
                        // again if this one did not get through.
                        let wait = self.renew_wait(node) * 2;
                        let acks = self.mc.acks_received(node);
                        let all = self.mc.ack_snapshot();
                        match tokio::time::timeout(wait, self.hello(node)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => {
                                tracing::info!(manager = %node, "hello after a lost lease failed: {e}");
                            }
                            Err(_) => {
                                tracing::info!(manager = %node, "hello after a lost lease: no answer within {wait:?}");
                                self.drop_if_silent(node, acks, &all);
                            }
                        }
                    }
                    Action::Reclaim => {
                        if let Some(up) = &above {
                            up.reclaim(node);
                        }
                    }
                }
            }
        })
    }

    /// Hello to every manager (at connect). Leases fail closed: a manager that grants no
    /// lease (refuses, answers `Invalid`, is unreachable) fails the connect, so the mount is
    /// refused rather than run without callbacks.
    pub async fn hello_all(&self) -> Result<(), (NodeId, FsError)> {
        let nodes: Vec<NodeId> = self.nodes().collect();
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
        match self.send(Target::Node(node), None, req, true).await {
            Ok((ManagerResponse::Lease(grant), _)) => {
                let ev = Event::Granted {
                    sent,
                    grant,
                    hello: true,
                };
                self.lease_event(node, ev).await;
                Ok(())
            }
            Ok((other, _)) => Err(unexpected("Hello", &other)),
            Err(f) => Err(f.into()),
        }
    }

    /// Renews the lease with `node` unless another renewal succeeded since `seen` (and,
    /// unless `force`, unless the lease is still held).
    async fn renew_after(&self, node: NodeId, seen: u64, force: bool) {
        let Some(slot) = self.slots.get(&node) else {
            return;
        };
        let _one = slot.renewing.lock().await;
        let st = self.lease(node);
        if st.renewals() != seen || (!force && st.check(BootInstant::now()).is_some()) {
            return;
        }
        self.renew(node).await;
    }

    /// Renews the lease with `node` now, unless a renewal is running (then waits for it):
    /// an answer from a new incarnation starts the reclaim.
    pub async fn renew_now(&self, node: NodeId) {
        let seen = self.lease(node).renewals();
        self.renew_after(node, seen, true).await;
    }

    /// Sends one `Renew` to `node` and feeds the answer to the engine.
    async fn renew(&self, node: NodeId) {
        let sent = BootInstant::now();
        self.counters.renewal_sent();
        let req = ManagerRequest::Renew {
            session: self.session,
        };
        // One attempt, bounded: a manager that does not answer must not hold up renewals
        // (the lease then runs out and the caches of its inodes are dropped).
        let wait = self.renew_wait(node);
        let acks = self.mc.acks_received(node);
        let all = self.mc.ack_snapshot();
        let ev = match self.call_once(node, req, wait).await {
            Ok(ManagerResponse::Lease(grant)) => Event::Granted {
                sent,
                grant,
                hello: false,
            },
            Ok(other) => {
                let _ = unexpected("Renew", &other);
                Event::RenewFailed {
                    now: BootInstant::now(),
                }
            }
            Err(e) => {
                tracing::debug!(manager = %node, "renewal failed: {e}");
                if e.0 == libc::ETIMEDOUT {
                    tracing::info!(manager = %node, "renewal: no answer within {wait:?}");
                    self.drop_if_silent(node, acks, &all);
                }
                Event::RenewFailed {
                    now: BootInstant::now(),
                }
            }
        };
        self.lease_event(node, ev).await;
    }

    /// After a renewal or Hello to `node` went unanswered: closes the connection unless the
    /// manager acknowledged packets on it since `before` (`acks_received` then). A manager
    /// killed and restarted on the same address may leave the old connection hanging until
    /// its idle timeout (10 s): the Hello that follows and every other call would wait on
    /// it, past the reclaim window (found by consistency/t55: buffered writes then lost),
    /// while a new connection reaches the new incarnation at once. But a live manager holds
    /// a Renew back on purpose while a callback to us is out (the lease must not grow
    /// meanwhile), and closing its connection then cuts our answers to those callbacks:
    /// the manager gave up on us and the buffered writes were dropped (consistency/t56,
    /// seed 1305288955663068895).
    ///
    /// The other connections that sent and got nothing acknowledged meanwhile (`all`: where
    /// they stood before) are closed too: a silent manager often means a cut network, and
    /// the connections to the storage servers went through it. QUIC backs its probes off
    /// at each loss, so after a few seconds of outage such a connection stays mute for
    /// seconds after the network is back; a flush appending through it (also the one a
    /// `Flush` callback asks for) then missed the lease and the manager gave up on us a
    /// second time (consistency/t56, seed 9062346174120464157).
    fn drop_if_silent(
        &self,
        node: NodeId,
        before: Option<(usize, u64)>,
        all: &[proto::transport::AckMark],
    ) {
        let alive = match (before, self.mc.acks_received(node)) {
            (Some((id, a)), Some((now_id, b))) => id == now_id && b > a,
            _ => false,
        };
        if alive {
            tracing::info!(manager = %node, "the manager acknowledges our packets (an answer held back while a callback to us is out?): keeping the connection");
        } else {
            tracing::info!(manager = %node, "nothing acknowledged meanwhile: reconnecting");
            self.counters.connection_dropped();
            self.mc.drop_connection(node);
            let others = self.mc.drop_unacknowledged(all);
            if others > 0 {
                tracing::info!(manager = %node, connections = others, "other connections got nothing acknowledged either: reconnecting them too");
            }
        }
    }

    /// How long one renewal of `node` waits for its answer: a lease (at least
    /// `MIN_RENEW_WAIT`).
    fn renew_wait(&self, node: NodeId) -> Duration {
        self.lease(node).lease().max(MIN_RENEW_WAIT)
    }

    /// The background renewer's round: renews every manager that grants leases, each on
    /// its own and skipping one whose renewal is still running. One manager's renewal that
    /// hangs (its Hello waiting on a connection that died silently, found by
    /// consistency/t56) must not hold up another's: that one's restart would go unnoticed
    /// past its reclaim window, and the buffered writes it must reclaim would be lost.
    pub async fn renew_each(&self) {
        let nodes: Vec<NodeId> = self.nodes().filter(|n| self.lease(*n).enabled()).collect();
        futures::future::join_all(nodes.into_iter().map(|n| async move {
            let Some(slot) = self.slots.get(&n) else {
                return;
            };
            let Ok(_one) = slot.renewing.try_lock() else {
                return;
            };
            self.renew(n).await;
        }))
        .await;
    }

    /// Renews every manager's lease now (the background renewer does this every lease/4).
    pub async fn renew_all(&self) {
        let nodes: Vec<NodeId> = self.nodes().filter(|n| self.lease(*n).enabled()).collect();
        futures::future::join_all(nodes.into_iter().map(|n| async move {
            let seen = self.lease(n).renewals();
            self.renew_after(n, seen, true).await
        }))
        .await;
    }

    /// How often the background renewer renews: a quarter of the shortest lease.
    pub fn renew_every(&self) -> Duration {
        self.nodes()
            .map(|n| self.lease(n))
            .filter(|s| s.enabled())
            .map(|s| s.lease() / 4)
            .min()
            .unwrap_or(Duration::from_secs(1))
            .max(MIN_RENEW_EVERY)
    }

    /// Before using cached state of `ino`: renews first when the lease of its manager is
    /// not held for the kernel TTL (dropping caches if it was lost). The lease, if held
    /// now; without it nothing cached of `ino` may be used.
    pub async fn ensure_lease(&self, ino: InodeId) -> Option<HeldLease> {
        let node = self.owner(ino);
        let st = self.lease(node);
        if let Some(held) = st.check(BootInstant::now()) {
            return Some(held);
        }
        self.renew_after(node, st.renewals(), false).await;
        self.lease(node).check(BootInstant::now())
    }

    /// The entry/attribute TTL to hand the kernel for `ino` now: never longer than the
    /// lease time left (see `VolumeLease::kernel_ttl`).
    /// Every TTL handed to the kernel comes from here, so that `kernel_cache_left` knows
    /// how long the kernel may still keep any of them.
    pub fn kernel_ttl(&self, ino: InodeId) -> Duration {
        let now = BootInstant::now();
        let ttl = self.lease(self.owner(ino)).kernel_ttl(now);
        let until = (now.since_boot() + ttl + KERNEL_REPLY_SLACK).as_micros() as u64;
        self.kernel_ttl_until
            .fetch_max(until, std::sync::atomic::Ordering::Relaxed);
        ttl
    }

    /// How long an entry or attributes this client handed the kernel may still be cached
    /// there: what a callback must wait for when the kernel cannot drop them at once. While
    /// a manager holds our renewals back (a callback to us is out), the TTLs handed out
    /// shrink with the lease left, and so does this.
    pub fn kernel_cache_left(&self) -> Duration {
        let until = Duration::from_micros(
            self.kernel_ttl_until
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        until.saturating_sub(BootInstant::now().since_boot())
    }

    /// The current cache epoch of `ino`'s manager, or `None` when it has no leases.
    pub fn lease_epoch(&self, ino: InodeId) -> Option<CacheEpoch> {
        self.node_epoch(self.owner(ino))
    }

    /// The current cache epoch of manager `node`, or `None` when it has no leases.
    pub fn node_epoch(&self, node: NodeId) -> Option<CacheEpoch> {
        let st = self.lease(node);
        st.enabled().then_some(st.epoch())
    }

    /// The cache epoch of every manager now (for an answer whose inode's manager is
    /// known only once it arrives: a directory made by a cross-manager create).
    pub fn node_epochs(&self) -> Vec<(NodeId, Option<CacheEpoch>)> {
        self.nodes().map(|n| (n, self.node_epoch(n))).collect()
    }
}

/// An answer of an unexpected kind.
pub fn unexpected(req: &str, resp: &ManagerResponse) -> FsError {
    tracing::warn!("unexpected answer to {req}: {resp:?}");
    FsError::EIO
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors_are_kept_apart() {
        assert_eq!(
            verdict(&CallError::Remote(RemoteError::Unavailable("x".into()))),
            Verdict::Retry
        );
        let not_owner = RemoteError::NotOwner {
            slot: proto::ids::SlotId(3),
            hint: NodeId(7),
        };
        assert_eq!(verdict(&CallError::Remote(not_owner)), Verdict::Retry);
        let addr = "127.0.0.1:1".parse().expect("addr");
        let unreachable = TransportError::Unreachable {
            addr,
            reason: "down".into(),
        };
        assert_eq!(verdict(&CallError::Transport(unreachable)), Verdict::Retry);
        let timeout = TransportError::Timeout {
            addr,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(verdict(&CallError::Transport(timeout)), Verdict::Retry);
        let broken = TransportError::Connection {
            addr,
            reason: "connection lost".into(),
        };
        assert_eq!(verdict(&CallError::Transport(broken)), Verdict::Retry);
        let refused = TransportError::Certificate {
            addr,
            reason: "unknown issuer".into(),
        };
        assert_eq!(
            verdict(&CallError::Transport(refused)),
            Verdict::Fail(FsError::EIO)
        );
        let expired = CallError::Remote(RemoteError::LeaseExpired("x".into()));
        assert_eq!(verdict(&expired), Verdict::LeaseExpired);
    }

    #[test]
    fn errnos_pass_through() {
        let e = CallError::Remote(RemoteError::errno(FsError::ENOTEMPTY, "dir not empty"));
        assert_eq!(verdict(&e), Verdict::Fail(FsError(libc::ENOTEMPTY)));
        let e = CallError::Remote(RemoteError::NotFound("x".into()));
        assert_eq!(verdict(&e), Verdict::Fail(FsError::ENOENT));
        assert_eq!(
            remote_errno(&RemoteError::errno(FsError(0), "bogus")),
            FsError::EIO
        );
    }
}
