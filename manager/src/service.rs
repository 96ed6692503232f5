//! The runtime shell: `Service` answers `ManagerRequest`s from the in-memory `MetaState`
//! (behind one async mutex), queues records in the `Journal`, runs cross-manager
//! transactions through `TxDriver` and `Peers`, keeps clients' volume leases in a
//! `LeaseTable` and sends its callbacks through a `CallbackSender`, and recovers in the
//! background at start.
//! Must not: hold a std lock across `.await`, or hold the state lock (or the gate) while
//! waiting for a callback or a network call.

use crate::access::{self, Access, Facts, Need};
use crate::checkpoint::{head_piece, inode_piece, InodePiece};
use crate::error::{code, enoent, CallbackError, Errno, ManagerError};
use crate::journal::{CheckpointSource, Journal, JournalLimits, LogBackend, StorageLog};
use crate::lease::{Affected, Callback, LeaseStats, LeaseTable, Requester, SessionId, Step};
use crate::plan::{Ctx, Plan, Reply, TxPlan, TxReply, MAX_DEPTH};
use crate::record::{Lsn, Record, TxIntent};
use crate::recovery::recover;
use crate::state::MetaState;
use crate::txn::{Command, TxDriver};
use proto::config::{ClusterConfig, Role};
use proto::ids::{InodeId, LogId, NodeId, SlotId, TxId, SLOT_COUNT};
use proto::msg::{
    Attr, ClientCallback, FileKind, LeaseExtension, ManagerRequest, ManagerResponse, RemoteError,
    Request, Response, Timestamp, TxOp,
};
use proto::route::{CallError, ManagerClient};
use proto::transport::{BoxFuture, Transport};
use proto::worker::{WorkerStatus, Workers};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

mod two_phase;

/// Rounds of callbacks (or waits for others' callbacks) an operation goes through before
/// it gives up with `Unavailable` (only under pathological contention).
const LEASE_ROUNDS: u32 = 64;
/// Pause between attempts to deliver a callback that failed (no connection, error).
const RESEND_PAUSE: Duration = Duration::from_millis(50);
/// Shortest wait for others' callbacks (their deadline may just have passed).
const MIN_WAIT: Duration = Duration::from_millis(5);

/// How a manager calls back clients (the real one goes over the client's own connection).
pub trait CallbackSender: Send + Sync + 'static {
    /// Sends `cb` to the client whose connection comes from `to`, and waits up to
    /// `timeout` for `CallbackDone`.
    fn send(
        &self,
        to: SocketAddr,
        cb: ClientCallback,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(), CallbackError>>;
}

/// Callbacks over QUIC, on the connection the client opened (`Transport::call_peer`).
pub struct QuicCallbacks(pub Arc<Transport>);

impl CallbackSender for QuicCallbacks {
    fn send(
        &self,
        to: SocketAddr,
        cb: ClientCallback,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(), CallbackError>> {
        Box::pin(async move {
            let req = Request::Client(cb);
            match self
                .0
                .call_peer(to, &req, bytes::Bytes::new(), timeout)
                .await
            {
                Ok((Response::CallbackDone, _)) => Ok(()),
                Ok((Response::Error(error), _)) => {
                    Err(CallbackError::Refused { client: to, error })
                }
                Ok((other, _)) => Err(CallbackError::Unexpected {
                    client: to,
                    answer: other.to_string(),
                }),
                Err(e) => Err(e.into()),
            }
        })
    }
}

/// `WriteLeaseEnd` records for the recorded write leases that are over (see
/// `LeaseTable::ended_writes`), computed only when a writer was dropped (or grace ended)
/// since the last time, so that commits do not scan the recorded leases each time; call
/// with the state and the lease table held together, and commit what it returns.
fn lease_ends(lt: &mut LeaseTable, st: &MetaState, now: Instant) -> Vec<Record> {
    if !lt.take_writers_dropped(now) {
        return Vec::new();
    }
    lt.ended_writes(st.write_leases().iter().map(|(i, (s, _))| (i, *s)), now)
        .into_iter()
        .map(|(ino, session)| Record::WriteLeaseEnd { ino, session })
        .collect()
}

/// Whether a request changes state and so is refused during the grace period.
pub(crate) fn refused_in_grace(req: &ManagerRequest) -> bool {
    use ManagerRequest as R;
    matches!(
        req,
        R::SetAttr { .. }
            | R::Fallocate { .. }
            | R::Create { .. }
            | R::Unlink { .. }
            | R::Rmdir { .. }
            | R::Rename { .. }
            | R::Link { .. }
            | R::SetXattr { .. }
            | R::RemoveXattr { .. }
            | R::TxApply { .. }
            | R::TxPrepare { .. }
            | R::Relocate { .. }
    )
}

/// How long a stopping manager waits for its shutdown checkpoint (and then its committer).
const SHUTDOWN_CHECKPOINT_WAIT: Duration = Duration::from_secs(5);

fn grace_refusal() -> RemoteError {
    RemoteError::Unavailable(
        "grace period after a manager restart: leases of the previous incarnation may still \
         be in use, retry"
            .into(),
    )
}

fn contention(what: &str) -> RemoteError {
    RemoteError::Unavailable(format!("{what}: too many rounds of lease callbacks, retry"))
}

/// How a manager calls other managers (the real one goes through the transport).
pub trait Peers: Send + Sync + 'static {
    fn call(
        &self,
        node: NodeId,
        req: ManagerRequest,
    ) -> BoxFuture<'_, Result<ManagerResponse, RemoteError>>;
}

/// Peers over QUIC.
pub struct ClientPeers(pub ManagerClient);

impl Peers for ClientPeers {
    fn call(
        &self,
        node: NodeId,
        req: ManagerRequest,
    ) -> BoxFuture<'_, Result<ManagerResponse, RemoteError>> {
        Box::pin(async move {
            self.0.call_node(node, req).await.map_err(|e| match e {
                CallError::Remote(r) => r,
                other => RemoteError::Unavailable(other.to_string()),
            })
        })
    }
}

mod clean_rpc;
mod once;
mod usage_rpc;

/// A metadata manager.
pub struct Service {
    me: NodeId,
    config: Arc<ClusterConfig>,
    owners: Vec<NodeId>,
    state: tokio::sync::Mutex<MetaState>,
    /// Ordinary mutations take it shared; a coordinated transaction takes it exclusively
    /// (participants' `TxApply` never takes it, so two coordinators cannot deadlock).
    gate: tokio::sync::RwLock<()>,
    journal: Arc<Journal>,
    backend: Arc<dyn LogBackend>,
    peers: Arc<dyn Peers>,
    leases: Mutex<LeaseTable>,
    /// This run's incarnation (random per start): the lease incarnation and the write
    /// verifier of `Committed`/`Synced` answers.
    incarnation: u64,
    /// Bumped whenever a callback is reported (operations waiting for others' callbacks
    /// and renewals waiting for their session's callbacks look again).
    lease_events: tokio::sync::watch::Sender<u64>,
    callbacks: Arc<dyn CallbackSender>,
    ready: AtomicBool,
    ready_tx: tokio::sync::watch::Sender<bool>,
    stopped: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    committer: Mutex<Option<JoinHandle<()>>>,
    /// The cluster-wide directory-move lock (served when this node owns the root's slot).
    move_lock: Mutex<crate::txn::movelock::MoveLock>,
    /// Why recovery refused to serve (the manager stays unavailable).
    recovery_error: Mutex<Option<Arc<ManagerError>>>,
    /// The manager's named background workers (the journal committer) and their status.
    workers: Workers,
    /// Numbered client calls running or answered in this incarnation (`once`).
    calls: Mutex<crate::calls::CallTable<Result<ManagerResponse, RemoteError>>>,
    /// Notified whenever a numbered call finishes (its retries wait for it).
    calls_done: tokio::sync::Notify,
    this: std::sync::Weak<Service>,
}

fn errno(e: Errno) -> RemoteError {
    e.into()
}

fn fatal(e: ManagerError) -> RemoteError {
    match e {
        // The log made no progress: the outcome is unknown, as with a disk error.
        ManagerError::Stalled { .. } => Errno::new(code::EIO, e.to_string()).into(),
        e => RemoteError::Unavailable(e.to_string()),
    }
}

/// Inode pieces of a checkpoint, from the live state under short holds of its lock.
struct StateSource(std::sync::Weak<Service>);

impl CheckpointSource for StateSource {
    fn inode_piece(
        &self,
        after: Option<InodeId>,
        budget: usize,
    ) -> BoxFuture<'_, Option<InodePiece>> {
        Box::pin(async move {
            let svc = self.0.upgrade()?;
            let st = svc.state.lock().await;
            Some(inode_piece(&st, after, budget))
        })
    }
}

impl Service {
    /// Starts the manager of `node` over the striped log; recovery runs in the background
    /// and requests are answered `Unavailable` until it is done.
    pub async fn start(
        config: Arc<ClusterConfig>,
        node: NodeId,
        transport: Arc<Transport>,
    ) -> Result<Arc<Service>, ManagerError> {
        let backend = Arc::new(StorageLog::new(
            config.clone(),
            transport.clone(),
            LogId::manager(node),
        ));
        let peers = Arc::new(ClientPeers(ManagerClient::new(
            config.clone(),
            transport.clone(),
        )));
        let callbacks = Arc::new(QuicCallbacks(transport));
        Service::start_with(config, node, backend, peers, callbacks).await
    }

    /// Starts with a given log backend, peer caller and callback sender (tests use
    /// `MemLog`, in-process peers and a fake sender).
    pub async fn start_with(
        config: Arc<ClusterConfig>,
        node: NodeId,
        backend: Arc<dyn LogBackend>,
        peers: Arc<dyn Peers>,
        callbacks: Arc<dyn CallbackSender>,
    ) -> Result<Arc<Service>, ManagerError> {
        if !config.node(node).is_some_and(|n| n.has(Role::Manager)) {
            return Err(ManagerError::NotAManager(node));
        }
        let owners = (0..SLOT_COUNT)
            .map(|s| config.slot_owner(SlotId(s)))
            .collect();
        let interval = Duration::from_millis(config.file.manager.commit_interval_ms.max(1));
        let lease = Duration::from_millis(config.file.manager.lease_ms.max(1));
        let incarnation = rand::random::<u64>();
        let limits = JournalLimits::from_tunables(&config.file.manager);
        let svc = Arc::new_cyclic(|this| Service {
            me: node,
            config,
            owners,
            state: tokio::sync::Mutex::new(MetaState::new()),
            gate: tokio::sync::RwLock::new(()),
            journal: Journal::new(interval, Lsn::ZERO, limits),
            backend,
            peers,
            leases: Mutex::new(LeaseTable::new(lease, incarnation)),
            incarnation,
            lease_events: tokio::sync::watch::Sender::new(0),
            callbacks,
            ready: AtomicBool::new(false),
            ready_tx: tokio::sync::watch::Sender::new(false),
            stopped: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
            committer: Mutex::new(None),
            move_lock: Mutex::new(Default::default()),
            recovery_error: Mutex::new(None),
            workers: Workers::default(),
            calls: Mutex::new(crate::calls::CallTable::new(crate::calls::KEPT_RESULTS)),
            calls_done: tokio::sync::Notify::new(),
            this: this.clone(),
        });
        tracing::info!(node = %node, slots = svc.config.slots_of(node).len(), "manager: starting recovery");
        let s = svc.clone();
        let h = tokio::spawn(async move {
            if let Err(e) = s.clone().recover_and_open().await {
                tracing::error!(node = %s.me, "manager recovery failed, not serving: {e}");
                *s.recovery_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(e));
                s.ready_tx.send_modify(|_| {});
            }
        });
        svc.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(h);
        Ok(svc)
    }

    async fn recover_and_open(self: Arc<Self>) -> Result<(), ManagerError> {
        let rec = recover(&*self.backend).await?;
        self.backend.set_next(rec.next_segment);
        self.journal
            .set_recovered(rec.state.last_lsn(), rec.checkpoint);
        let pending: Vec<TxIntent>;
        let recorded: Vec<(InodeId, SessionId)>;
        {
            let mut st = self.state.lock().await;
            *st = rec.state;
            pending = st.pending_txs().cloned().collect();
            recorded = st
                .write_leases()
                .iter()
                .map(|(i, (s, _))| (*i, *s))
                .collect();
        }
        let j = self.journal.clone();
        let source = Arc::new(StateSource(self.this.clone()));
        let worker = self.workers.register("journal");
        let committer = tokio::spawn(j.clone().run(self.backend.clone(), source, worker));
        *self.committer.lock().unwrap_or_else(|e| e.into_inner()) = Some(committer);
        if rec.empty && self.owners[0] == self.me {
            let (uid, gid) = process_ids().await;
            let mut st = self.state.lock().await;
            let recs = st.plan_root(Timestamp::now(), uid, gid);
            let logged = st.commit(recs);
            let lsn = st.last_lsn();
            j.push(logged);
            drop(st);
            j.wait_durable(lsn).await?;
            tracing::info!(node = %self.me, uid, gid, "manager: created the root directory");
        }
        if !rec.empty {
            // Clients may still use leases of the previous incarnation: no mutation until
            // they have run out (or been renewed, and so learnt that they are lost). Only
            // the inodes with a recorded write lease wait for a reclaim before reads.
            tracing::info!(node = %self.me, write_leases = recorded.len(), "manager: grace period; recorded write leases await their reclaim");
            self.leases().start_grace(Instant::now(), recorded);
        }
        self.ready.store(true, Ordering::SeqCst);
        self.ready_tx.send_replace(true);
        tracing::info!(node = %self.me, pending = pending.len(), "manager: ready");
        for intent in pending {
            self.spawn_redrive(intent);
        }
        self.resume_coordinated(&*self.state.lock().await);
        self.spawn_prepared_watch();
        Ok(())
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.stopped.load(Ordering::SeqCst)
    }

    /// Returns once recovery is done (at once if it already is).
    pub async fn wait_ready(&self) {
        let mut rx = self.ready_tx.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// The manager's background workers (the journal committer) and what each is doing.
    pub fn workers(&self) -> Vec<WorkerStatus> {
        self.workers.statuses()
    }

    /// Why recovery refused to serve, if it did.
    pub fn recovery_error(&self) -> Option<Arc<ManagerError>> {
        self.recovery_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Returns once recovery is done or has refused (with its error).
    pub async fn wait_recovered(&self) -> Result<(), Arc<ManagerError>> {
        let mut rx = self.ready_tx.subscribe();
        let _ = rx.wait_for(|r| *r || self.recovery_error().is_some()).await;
        self.recovery_error().map_or(Ok(()), Err)
    }

    /// Stops at once without committing or checkpointing, as a crash would: records not yet
    /// durable are lost. For fault tests and harnesses.
    pub fn kill(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        for t in std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner())) {
            t.abort();
        }
        if let Some(c) = self
            .committer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            c.abort();
        }
        self.journal.close();
    }

    pub fn node(&self) -> NodeId {
        self.me
    }

    fn leases(&self) -> MutexGuard<'_, LeaseTable> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a lease session is bound to the connection from `addr` (`LeaseTable::knows_addr`).
    pub fn has_session(&self, addr: SocketAddr) -> bool {
        self.leases().knows_addr(addr)
    }

    /// Counters of leases and callbacks (for benchmarks and status).
    pub fn lease_stats(&self) -> LeaseStats {
        self.leases().stats()
    }

    /// The sessions caching `ino` and the one holding its write lease (diagnostics).
    pub fn lease_holders(&self, ino: InodeId) -> (Vec<SessionId>, Option<SessionId>) {
        self.leases().holders(ino)
    }

    /// Whether mutations are still refused after a restart.
    pub fn in_grace(&self) -> bool {
        self.leases().in_grace(Instant::now())
    }

    /// Whether reads of `ino` wait for the reclaim of a write lease recorded before the
    /// restart (grace is on and its writer has not reclaimed it yet).
    pub fn awaits_reclaim(&self, ino: InodeId) -> bool {
        self.leases().awaits_reclaim(ino, Instant::now())
    }

    /// Recorded write leases of previous incarnations not reclaimed yet (0 once grace ends).
    pub fn unclaimed_write_leases(&self) -> usize {
        self.leases().unclaimed(Instant::now())
    }

    /// Returns once the grace period after a restart is over (at once if there is none).
    pub async fn wait_grace(&self) {
        let until = self.leases().grace_until();
        if let Some(u) = until {
            tokio::time::sleep_until(tokio::time::Instant::from_std(u)).await;
        }
    }

    /// Commits everything, writes a checkpoint and stops background work.
    pub async fn shutdown(&self) -> Result<(), ManagerError> {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in &tasks {
            t.abort();
        }
        if !self.ready.load(Ordering::SeqCst) {
            self.journal.close();
            return Ok(());
        }
        let _g = self.gate.write().await;
        let lsn = {
            let st = self.state.lock().await;
            if self.journal.checkpointed_lsn() < st.last_lsn() {
                self.journal.push_checkpoint(head_piece(&st), st.last_lsn());
            }
            st.last_lsn()
        };
        let mut checkpointed = true;
        let r = match self.journal.wait_durable(lsn).await {
            // The records are durable: the checkpoint only shortens the next recovery, so
            // a stop does not wait long for it (storage may already be going away).
            Ok(()) => match tokio::time::timeout(
                SHUTDOWN_CHECKPOINT_WAIT,
                self.journal.wait_checkpoint(lsn),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => {
                    checkpointed = false;
                    tracing::warn!(node = %self.me, lsn = lsn.0, "no checkpoint within {SHUTDOWN_CHECKPOINT_WAIT:?} at shutdown; recovery replays the log instead");
                    Ok(())
                }
            },
            Err(e) => Err(e),
        };
        self.journal.close();
        let committer = self
            .committer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut c) = committer {
            if tokio::time::timeout(SHUTDOWN_CHECKPOINT_WAIT, &mut c)
                .await
                .is_err()
            {
                c.abort();
            }
        }
        if checkpointed {
            tracing::info!(node = %self.me, lsn = lsn.0, "manager: shut down with a checkpoint");
        } else {
            tracing::info!(node = %self.me, lsn = lsn.0, "manager: shut down (records durable, no new checkpoint)");
        }
        r
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            me: self.me,
            owners: &self.owners,
            now: Timestamp::now(),
        }
    }

    fn owner(&self, ino: InodeId) -> NodeId {
        self.owners[ino.slot().0 as usize % self.owners.len()]
    }

    fn check_owned(&self, ino: InodeId) -> Result<(), RemoteError> {
        self.check_slot(ino.slot())
    }

    fn check_slot(&self, slot: SlotId) -> Result<(), RemoteError> {
        let owner = self.owners[slot.0 as usize % self.owners.len()];
        if owner == self.me {
            return Ok(());
        }
        Err(RemoteError::NotOwner { slot, hint: owner })
    }

    /// `handle`, plus the volume lease the answer confirms to the caller's session
    /// (`Response::ManagerLeased`): the session's lease time left once the request was
    /// handled, from the lease table, so never an extension the table did not make (it
    /// does not extend while callbacks to the session are outstanding). `Hello`/`Renew`
    /// answers carry theirs in the `LeaseGrant`; errors confirm nothing.
    pub async fn handle_leased(
        &self,
        from: Option<SocketAddr>,
        req: ManagerRequest,
    ) -> Result<(ManagerResponse, Option<LeaseExtension>), RemoteError> {
        self.handle_leased_as(from, None, None, req).await
    }

    /// `handle_leased` for a client's request, checked first with the caller's effective
    /// credentials (`access`, from the verified identity's export options; `None` for
    /// managers and admins, which are not checked).
    /// A numbered `call` of a request that must not take effect twice runs at most once
    /// per lease session: its retries get the first result (`once`).
    pub async fn handle_leased_as(
        &self,
        from: Option<SocketAddr>,
        access: Option<&Access>,
        call: Option<proto::ids::CallId>,
        req: ManagerRequest,
    ) -> Result<(ManagerResponse, Option<LeaseExtension>), RemoteError> {
        let resp = self.handle_numbered(from, access, call, req).await?;
        let ext = match resp {
            ManagerResponse::Lease(_) => None,
            _ => self.leases().extension_for(from, Instant::now()),
        };
        Ok((resp, ext))
    }

    /// Answers one request; `from` is the caller's transport address (`None` for
    /// in-process callers), by which the caller's lease session is known.
    pub async fn handle(
        &self,
        from: Option<SocketAddr>,
        req: ManagerRequest,
    ) -> Result<ManagerResponse, RemoteError> {
        self.handle_as(from, None, req).await
    }

    /// `handle`, with the permission check (`access`) of a client's request first.
    pub async fn handle_as(
        &self,
        from: Option<SocketAddr>,
        access: Option<&Access>,
        req: ManagerRequest,
    ) -> Result<ManagerResponse, RemoteError> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(RemoteError::Unavailable("manager shut down".into()));
        }
        if !self.ready.load(Ordering::SeqCst) {
            if let Some(e) = self.recovery_error() {
                return Err(RemoteError::Unavailable(format!(
                    "manager recovery refused: {e}"
                )));
            }
            return Err(RemoteError::Unavailable("manager recovering".into()));
        }
        if let Some(ino) = proto::route::routing_inode(&req) {
            self.check_owned(ino)?;
        }
        // The one place client requests are checked against POSIX permissions.
        let req = match access {
            Some(a) => self.authorize(from, a, req).await?,
            None => req,
        };
        use ManagerRequest as R;
        use ManagerResponse as A;
        let now = Instant::now();
        let who = match req {
            R::Hello { session } => {
                let grant = self.leases().hello(session, from, now);
                self.release_forgotten();
                return Ok(A::Lease(grant));
            }
            R::Renew { session } => {
                let r = self.renew(session, from).await;
                self.release_forgotten();
                return r;
            }
            R::Goodbye { session } => {
                return if self.leases().goodbye(session, from) {
                    self.lease_events.send_modify(|n| *n = n.wrapping_add(1));
                    Ok(A::Done)
                } else {
                    Err(RemoteError::Invalid(format!(
                        "Goodbye of session {session:x} from another connection"
                    )))
                };
            }
            _ => self.leases().identify(from, now),
        };
        let who = match who {
            Requester::Lost(s) => {
                return Err(RemoteError::LeaseExpired(format!(
                    "session {s:x} missed callbacks: renew and drop cached state"
                )))
            }
            r => r.session(),
        };
        if refused_in_grace(&req) && self.leases().in_grace(now) {
            return Err(grace_refusal());
        }
        match req {
            R::Hello { .. } | R::Renew { .. } | R::Goodbye { .. } => Err(RemoteError::Invalid(
                "Hello/Renew/Goodbye reached the request dispatch".into(),
            )),
            R::AcquireWrite {
                ino,
                session,
                reclaim,
            } => self.acquire_write(who, ino, session, reclaim).await,
            R::Lookup { parent, name } => self.lookup(who, parent, &name).await.map(A::Attr),
            R::GetAttr { ino } => {
                self.read_inode(who, ino, |st| {
                    st.get(ino).map(|i| A::Attr(i.attr.clone())).map_err(errno)
                })
                .await
            }
            R::SetAttr { ino, set, caller } => {
                self.mutate(who, None, |st, c| st.plan_setattr(c, ino, &set, caller))
                    .await
            }
            R::Create {
                parent,
                name,
                node,
                perm,
                umask,
                caller,
                session,
            } => {
                self.mutate(who, session, |st, c| {
                    st.plan_create(c, parent, &name, &node, perm, umask, caller, session)
                })
                .await
            }
            R::Unlink { parent, name, .. } => {
                self.mutate(who, None, |st, c| st.plan_unlink(c, parent, &name))
                    .await
            }
            R::Rmdir { parent, name, .. } => {
                self.mutate(who, None, |st, c| st.plan_rmdir(c, parent, &name))
                    .await
            }
            R::Link {
                ino,
                new_parent,
                new_name,
                ..
            } => {
                self.mutate(who, None, |st, c| {
                    st.plan_link(c, ino, new_parent, &new_name)
                })
                .await
            }
            R::Rename {
                parent,
                name,
                new_parent,
                new_name,
                flags,
                ..
            } => {
                self.rename(who, parent, &name, new_parent, &new_name, flags)
                    .await
            }
            R::ReadDir { ino, offset, max } => {
                self.read_inode(who, ino, |st| {
                    st.readdir(ino, offset, max).map(A::Entries).map_err(errno)
                })
                .await
            }
            R::ReadLink { ino } => {
                self.read_inode(who, ino, |st| {
                    st.readlink(ino).map(A::Target).map_err(errno)
                })
                .await
            }
            R::Open { ino, session, .. } => {
                self.read_inode(who, ino, |st| st.get(ino).map(|_| ()).map_err(errno))
                    .await?;
                self.mutate(who, None, |st, _| st.plan_open(ino, session))
                    .await
            }
            R::Release { ino, session } => {
                self.mutate(who, None, |st, c| st.plan_release(c, ino, session))
                    .await
            }
            R::GetXattr { ino, name } => {
                self.read_inode(who, ino, |st| {
                    st.getxattr(ino, &name).map(A::Xattr).map_err(errno)
                })
                .await
            }
            R::SetXattr {
                ino,
                name,
                value,
                flags,
                ..
            } => {
                self.mutate(who, None, |st, c| {
                    st.plan_setxattr(c, ino, &name, &value, flags)
                })
                .await
            }
            R::ListXattr { ino } => {
                self.read_inode(who, ino, |st| {
                    st.listxattr(ino).map(A::XattrNames).map_err(errno)
                })
                .await
            }
            R::RemoveXattr { ino, name, .. } => {
                self.mutate(who, None, |st, c| st.plan_removexattr(c, ino, &name))
                    .await
            }
            R::GetExtents { ino, offset, len } => {
                self.read_inode(who, ino, |st| {
                    st.get_extents(ino, offset, len)
                        .map(A::Extents)
                        .map_err(errno)
                })
                .await
            }
            R::CommitWrites { writes, sync } => {
                for w in &writes {
                    self.check_owned(w.ino)?;
                }
                if who.is_none() && from.is_some() {
                    // Fail closed: a client connection without a session (forgotten, or
                    // not yet introduced to this incarnation) must renew first.
                    return Err(RemoteError::LeaseExpired(
                        "CommitWrites from a connection without a session: send Hello".into(),
                    ));
                }
                {
                    // During the grace period only a reclaimed writer commits (its buffered
                    // writes from before the restart), and only to what it reclaimed.
                    let lt = self.leases();
                    if lt.in_grace(now)
                        && writes
                            .iter()
                            .any(|w| who.is_none() || lt.holders(w.ino).1 != who)
                    {
                        return Err(grace_refusal());
                    }
                }
                if let Some(s) = who {
                    // A session this manager once gave up on may still hold writes buffered
                    // before that; they would land over newer ones. Unless it holds the
                    // write lease again, it is told so, and its renewal answers `lost`, so it
                    // drops them. (Other sessions committing without the lease — after a
                    // manager restart — go through the mutation path, which flushes and
                    // invalidates the other holders first.)
                    let mut leases = self.leases();
                    let stale = |l: &LeaseTable, ino| l.ever_lost(s) && l.holders(ino).1 != Some(s);
                    if let Some(w) = writes.iter().find(|w| stale(&leases, w.ino)) {
                        leases.mark_lost(s);
                        return Err(RemoteError::LeaseExpired(format!(
                            "session {s:x} does not hold the write lease of {}",
                            w.ino
                        )));
                    }
                }
                let resp = self
                    .mutate(who, None, |st, c| st.plan_commit_writes(c, &writes))
                    .await?;
                if sync {
                    self.sync().await?;
                }
                Ok(resp)
            }
            R::Sync => self.sync().await.map(|_| A::Synced {
                incarnation: self.incarnation,
            }),
            R::Counts => Ok(A::Counts(self.state.lock().await.counts())),
            R::TxApply { tx, op, session } => self.tx_apply(tx, op, session).await,
            R::TxOutcome { tx } => self.tx_outcome_answer(tx).await,
            R::TxPrepare { tx, ops, session } => self.tx_prepare(tx, ops, session).await,
            R::TxFinish {
                tx,
                commit,
                session,
            } => self.tx_finish(tx, commit, session).await,
            R::DirMoveLock { token, acquire } => self.serve_move_lock(token, acquire),
            R::LogHorizon {
                session,
                log,
                horizon,
            } => self.log_horizon(who, session, log, horizon).await,
            R::SealLog { log, upto } => self.seal_log(log, upto).await,
            R::LiveExtents { log, segments } => self.live_extents(log, segments).await,
            R::Relocate { moves } => self.relocate(moves).await,
            R::Fallocate {
                ino,
                offset,
                len,
                punch,
                keep_size,
            } => {
                self.mutate(who, None, |st, c| {
                    st.plan_fallocate(c, ino, offset, len, punch, keep_size)
                })
                .await
            }
        }
    }

    /// Releases, in the background, what sessions forgotten by the lease table still had
    /// open, so that their unlinked files are freed (a crashed mount never sends Release).
    fn release_forgotten(&self) {
        let gone = self.leases().take_forgotten();
        if gone.is_empty() {
            return;
        }
        let weak = self.this.clone();
        let h = tokio::spawn(async move {
            let Some(svc) = weak.upgrade() else { return };
            let opens: Vec<(InodeId, SessionId)> = {
                let st = svc.state.lock().await;
                st.open_sessions(&gone)
            };
            tracing::info!(
                sessions = gone.len(),
                opens = opens.len(),
                "releasing the open files of long-expired sessions"
            );
            for (ino, s) in opens {
                let r = svc
                    .mutate(None, None, |st, c| st.plan_release(c, ino, s))
                    .await;
                if let Err(e) = r {
                    tracing::warn!(inode = %ino, session = format_args!("{s:x}"), "release of an expired session's open file failed: {e}");
                }
            }
        });
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(h);
    }

    /// `Renew`: answered at once unless callbacks to the session are outstanding; then
    /// only once they are answered or given up on (so `lost` is truthful).
    async fn renew(
        &self,
        session: SessionId,
        from: Option<SocketAddr>,
    ) -> Result<ManagerResponse, RemoteError> {
        for _ in 0..LEASE_ROUNDS {
            let mut rx = self.lease_events.subscribe();
            let r = self.leases().renew(session, from, Instant::now());
            match r {
                Ok(grant) => return Ok(ManagerResponse::Lease(grant)),
                Err(until) => self.wait_lease_event(&mut rx, until).await,
            }
        }
        Err(contention("renew"))
    }

    /// `AcquireWrite`: calls back the other holders of `ino` until `who` is its writer.
    async fn acquire_write(
        &self,
        who: Option<SessionId>,
        ino: InodeId,
        session: SessionId,
        reclaim: bool,
    ) -> Result<ManagerResponse, RemoteError> {
        let Some(who) = who else {
            return Err(RemoteError::LeaseExpired(format!(
                "AcquireWrite({ino}) for session {session:x} from a connection without a \
                 session: send Hello first"
            )));
        };
        if who != session {
            return Err(RemoteError::Invalid(format!(
                "AcquireWrite({ino}) names session {session:x} but comes from session {who:x}"
            )));
        }
        self.state.lock().await.get(ino).map_err(errno)?;
        let (in_grace, in_reclaim) = {
            let lt = self.leases();
            let now = Instant::now();
            (lt.in_grace(now), lt.in_reclaim(now))
        };
        if reclaim {
            if !in_reclaim {
                return Err(errno(Errno::new(
                    code::ESTALE,
                    format!(
                        "reclaim of the write lease of {ino} refused: the reclaim window after \
                         this manager's restart is over (others may have changed the file)"
                    ),
                )));
            }
            let r = self.leases().reclaim_write(who, ino);
            self.lease_events.send_modify(|n| *n = n.wrapping_add(1));
            return match r {
                Ok(()) => {
                    self.record_write_lease(who, ino).await?;
                    Ok(ManagerResponse::Done)
                }
                Err(why) => Err(errno(Errno::new(
                    code::ESTALE,
                    format!("reclaim of the write lease of {ino} refused: {why}"),
                ))),
            };
        }
        if in_grace {
            return Err(grace_refusal());
        }
        for _ in 0..LEASE_ROUNDS {
            let mut rx = self.lease_events.subscribe();
            let step = {
                // Shared: no coordinator transaction runs between its lease check and its
                // commit while a new writer appears.
                let _shared = self.gate.read().await;
                self.leases().acquire_write(who, ino, Instant::now())
            };
            if matches!(step, Step::Go) {
                self.record_write_lease(who, ino).await?;
                return Ok(ManagerResponse::Done);
            }
            self.follow(step, &mut rx).await;
        }
        Err(contention("AcquireWrite"))
    }

    /// Logs (without waiting) the ends of recorded write leases that are over.
    fn log_lease_ends(&self, lt: &mut LeaseTable, st: &mut MetaState, now: Instant) {
        let ends = lease_ends(lt, st, now);
        if ends.is_empty() {
            return;
        }
        if let Err(e) = self.journal.admit(&ends) {
            tracing::warn!(node = %self.me, "write lease ends not logged yet: {e}");
            return;
        }
        let logged = st.commit(ends);
        self.journal.push(logged);
        self.maybe_checkpoint(st);
    }

    /// Logs that `who` holds the write lease of `ino` (with the ends of recorded leases that
    /// are over) and waits until that is durable: a client buffers writes under a write
    /// lease only once a restart cannot forget the lease (notes/leases.md, "How a restarted
    /// manager knows"). Nothing new is logged when the log already records this lease, nor
    /// when `who` lost it meanwhile (a Flush revoked it: the client saw the Flush and asks
    /// again before it buffers).
    async fn record_write_lease(&self, who: SessionId, ino: InodeId) -> Result<(), RemoteError> {
        let lsn = {
            let mut st = self.state.lock().await;
            let mut lt = self.leases();
            if lt.writer(ino) != Some(who) {
                return Ok(());
            }
            let mut recs = lease_ends(&mut lt, &st, Instant::now());
            let recorded = st
                .write_leases()
                .get(&ino)
                .filter(|(s, _)| *s == who)
                .map(|(_, lsn)| *lsn);
            if recorded.is_none() {
                recs.push(Record::WriteLease { ino, session: who });
            }
            if !recs.is_empty() {
                self.journal.admit(&recs).map_err(errno)?;
                let logged = st.commit(recs);
                self.journal.push(logged);
                self.maybe_checkpoint(&st);
            }
            drop(lt);
            // Already recorded: its record may still be on its way to the log.
            recorded.unwrap_or(st.last_lsn())
        };
        self.journal.wait_durable(lsn).await.map_err(fatal)
    }

    /// Carries out a lease step that is not `Go`: sends callbacks and waits for them, or
    /// waits for other operations' callbacks.
    async fn follow(&self, step: Step, rx: &mut tokio::sync::watch::Receiver<u64>) {
        match step {
            Step::Go => {}
            Step::Call(calls) => self.run_callbacks(calls).await,
            Step::Wait(until) => self.wait_lease_event(rx, until).await,
        }
    }

    async fn wait_lease_event(&self, rx: &mut tokio::sync::watch::Receiver<u64>, until: Instant) {
        let until = until.max(Instant::now() + MIN_WAIT);
        let _ = tokio::time::timeout_at(tokio::time::Instant::from_std(until), rx.changed()).await;
    }

    /// Sends callbacks in parallel and waits for each: its answer, or its deadline (the
    /// holder is then lost). Never called with the state lock or the gate held.
    async fn run_callbacks(&self, calls: Vec<Callback>) {
        if calls.is_empty() {
            return;
        }
        futures::future::join_all(calls.into_iter().map(|c| self.run_callback(c))).await;
    }

    async fn run_callback(&self, cb: Callback) {
        let mut addr = cb.addr;
        let mut acked = false;
        let mut last_error = CallbackError::NoAddress;
        for _ in 0..100_000 {
            let now = Instant::now();
            if now >= cb.deadline {
                break;
            }
            if !self.leases().knows(cb.session) {
                // It said goodbye (a clean unmount flushed everything first).
                acked = true;
                break;
            }
            if let Some(a) = addr {
                match self
                    .callbacks
                    .send(a, cb.msg.clone(), cb.deadline - now)
                    .await
                {
                    Ok(()) => {
                        acked = true;
                        break;
                    }
                    Err(e) => last_error = e,
                }
            }
            let left = cb.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(left.min(RESEND_PAUSE)).await;
            // The client may have reconnected from another address.
            addr = self.leases().addr_of(cb.session);
        }
        if !acked {
            tracing::warn!(
                session = format_args!("{:x}", cb.session),
                "callback {:?} not answered by the holder's lease expiry ({last_error}): \
                 the client is lost",
                cb.msg
            );
        }
        self.leases().callback_done(cb.id, acked);
        self.lease_events.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A read-type request: `targets` are the inodes whose state the caller will cache.
    /// Writers of them are flushed first; the caller is registered as a reader in the same
    /// critical section as `answer` runs.
    /// `read_op` for a request that reads (and the caller then caches) the one inode `ino`.
    async fn read_inode<T>(
        &self,
        who: Option<SessionId>,
        ino: InodeId,
        answer: impl FnOnce(&mut MetaState) -> Result<T, RemoteError>,
    ) -> Result<T, RemoteError> {
        self.read_op(who, move |_| vec![ino], answer).await
    }

    async fn read_op<T>(
        &self,
        who: Option<SessionId>,
        targets: impl Fn(&MetaState) -> Vec<InodeId>,
        answer: impl FnOnce(&mut MetaState) -> Result<T, RemoteError>,
    ) -> Result<T, RemoteError> {
        let mut answer = Some(answer);
        for _ in 0..LEASE_ROUNDS {
            let mut rx = self.lease_events.subscribe();
            let step = {
                let mut st = self.state.lock().await;
                let inodes = targets(&st);
                let now = Instant::now();
                let mut lt = self.leases();
                // During the grace period a file nobody has reclaimed may still have writes
                // buffered under a lease of the previous incarnation: its readers wait until
                // a writer reclaims it (and is flushed) or the grace period is over.
                // (Also for requests without a session: a client the restarted manager does
                // not know yet looks like one.)
                // Only inodes whose write lease the log recorded can have such writes (a grant
                // is durable before it is answered); every other read goes on at once.
                let unclaimed = inodes.iter().any(|i| lt.awaits_reclaim(*i, now));
                let step = match lt.reclaim_until() {
                    Some(until) if unclaimed => Step::Wait(until),
                    _ => lt.read(who, &inodes, now),
                };
                // A read that flushed a writer logs the end of its recorded lease now (not
                // awaited), so that a restart does not hold this file's readers.
                self.log_lease_ends(&mut lt, &mut st, now);
                drop(lt);
                if matches!(step, Step::Go) {
                    return match answer.take() {
                        Some(f) => f(&mut st),
                        None => Err(RemoteError::Io("read answered twice".into())),
                    };
                }
                step
            };
            self.follow(step, &mut rx).await;
        }
        Err(contention("read"))
    }

    async fn sync(&self) -> Result<(), RemoteError> {
        let lsn = self.state.lock().await.last_lsn();
        self.journal.wait_durable(lsn).await.map_err(fatal)
    }

    /// Lookup: the caller caches the parent's entry and, for a local child, its
    /// attributes (a remote child's owner registers the caller when it asks there).
    async fn lookup(
        &self,
        who: Option<SessionId>,
        parent: InodeId,
        name: &str,
    ) -> Result<Attr, RemoteError> {
        let me = self.me;
        let found = self
            .read_op(
                who,
                |st| {
                    let mut v = vec![parent];
                    if let Ok((c, _)) = st.lookup(parent, name) {
                        if self.owner(c) == me {
                            v.push(c);
                        }
                    }
                    v
                },
                |st| {
                    let found = st.lookup(parent, name).map_err(errno)?;
                    Ok(match st.inode(found.0) {
                        Some(i) => Ok(i.attr.clone()),
                        None => Err(found),
                    })
                },
            )
            .await?;
        let ino = match found {
            Ok(attr) => return Ok(attr),
            Err((ino, _)) => ino,
        };
        if self.owner(ino) == self.me {
            return Err(errno(enoent(format!(
                "{name:?} names {ino}, which no longer exists"
            ))));
        }
        match self
            .peers
            .call(self.owner(ino), ManagerRequest::GetAttr { ino })
            .await?
        {
            ManagerResponse::Attr(a) => Ok(a),
            other => Err(RemoteError::Io(format!(
                "GetAttr({ino}) answered {other:?}"
            ))),
        }
    }

    /// Checks a client's request with `access::decide`, after gathering the attributes it
    /// needs (from this manager's state or the inode's owner). Returns the request to run.
    async fn authorize(
        &self,
        from: Option<SocketAddr>,
        who: &Access,
        req: ManagerRequest,
    ) -> Result<ManagerRequest, RemoteError> {
        let mut facts = Facts::default();
        let session = self.leases().session_at(from);
        for need in access::needs(&req) {
            match need {
                Need::Inode(ino) => {
                    if facts.inodes.contains_key(&ino) {
                        continue;
                    }
                    let local = self.state.lock().await.inode(ino).map(|i| {
                        if session.is_some_and(|s| i.sessions.contains(&s)) {
                            facts.opened.insert(ino);
                        }
                        i.attr.clone()
                    });
                    let attr = match local {
                        Some(a) => a,
                        None if self.owner(ino) == self.me => {
                            return Err(errno(enoent(format!("{ino} does not exist"))))
                        }
                        None => match self
                            .peers
                            .call(self.owner(ino), ManagerRequest::GetAttr { ino })
                            .await?
                        {
                            ManagerResponse::Attr(a) => a,
                            other => {
                                return Err(RemoteError::Io(format!(
                                    "GetAttr({ino}) answered {other:?}"
                                )))
                            }
                        },
                    };
                    facts.inodes.insert(ino, attr);
                }
                Need::Entry(dir, name) => {
                    let found = match self.lookup_anywhere(dir, &name).await {
                        Ok(a) => Some(a),
                        Err(RemoteError::Errno { code, .. }) if code == code::ENOENT => None,
                        Err(e) => return Err(e),
                    };
                    facts.entries.insert((dir, name), found);
                }
            }
        }
        access::decide(who, req, &facts).map_err(|e| {
            tracing::debug!("permission check refused: {e}");
            RemoteError::from(e)
        })
    }

    /// Looks up `name` in a directory of any manager.
    async fn lookup_anywhere(&self, dir: InodeId, name: &str) -> Result<Attr, RemoteError> {
        if self.owner(dir) == self.me {
            return self.lookup(None, dir, name).await;
        }
        match self
            .peers
            .call(
                self.owner(dir),
                ManagerRequest::Lookup {
                    parent: dir,
                    name: name.to_string(),
                },
            )
            .await?
        {
            ManagerResponse::Attr(a) => Ok(a),
            other => Err(RemoteError::Io(format!("Lookup answered {other:?}"))),
        }
    }

    /// Whether `anc` is `d` or an ancestor of it, walking `..` through every manager.
    async fn is_ancestor(&self, anc: InodeId, mut d: InodeId) -> Result<bool, RemoteError> {
        for _ in 0..MAX_DEPTH {
            if d == anc {
                return Ok(true);
            }
            if d == InodeId::ROOT {
                return Ok(false);
            }
            let local = self.state.lock().await.inode(d).map(|i| i.parent);
            d = match local {
                Some(Some(p)) => p,
                Some(None) => return Ok(false),
                None => self.lookup_anywhere(d, "..").await?.ino,
            };
        }
        Err(errno(Errno::new(
            code::EINVAL,
            "directory tree deeper than the walk bound",
        )))
    }

    #[allow(clippy::too_many_arguments)]
    async fn rename(
        &self,
        who: Option<SessionId>,
        parent: InodeId,
        name: &str,
        new_parent: InodeId,
        new_name: &str,
        flags: proto::msg::RenameFlags,
    ) -> Result<ManagerResponse, RemoteError> {
        let (_, xk) = self
            .state
            .lock()
            .await
            .lookup(parent, name)
            .map_err(errno)?;
        // A directory moving to another parent (either way, for an exchange) holds the
        // cluster-wide directory-move lock from its ancestry check to its commit on every
        // manager (`txn::movelock` says why that excludes cycles).
        let moves_dir = new_parent != parent && (xk == FileKind::Dir || flags.exchange);
        if !moves_dir {
            return self
                .rename_checked(who, parent, name, new_parent, new_name, flags, false)
                .await;
        }
        let token = self.acquire_move_lock().await?;
        let r = self
            .rename_checked(who, parent, name, new_parent, new_name, flags, true)
            .await;
        self.release_move_lock(token).await;
        r
    }

    /// A rename; with `check_ancestry` (the caller holds the directory-move lock) the
    /// ancestry checks run here, and the plan is refused if the source entry changed since.
    #[allow(clippy::too_many_arguments)]
    async fn rename_checked(
        &self,
        who: Option<SessionId>,
        parent: InodeId,
        name: &str,
        new_parent: InodeId,
        new_name: &str,
        flags: proto::msg::RenameFlags,
        check_ancestry: bool,
    ) -> Result<ManagerResponse, RemoteError> {
        let (x, xk) = self
            .state
            .lock()
            .await
            .lookup(parent, name)
            .map_err(errno)?;
        let mut remote_target = None;
        if self.owner(new_parent) != self.me {
            remote_target = match self.lookup_anywhere(new_parent, new_name).await {
                Ok(a) => Some((a.ino, a.kind)),
                Err(RemoteError::Errno { code: c, .. }) if c == code::ENOENT => None,
                Err(e) => return Err(e),
            };
        }
        if check_ancestry {
            if xk == FileKind::Dir && self.is_ancestor(x, new_parent).await? {
                return Err(errno(Errno::new(
                    code::EINVAL,
                    "cannot move a directory into its own subtree",
                )));
            }
            if flags.exchange {
                let target = match remote_target {
                    Some(t) => Some(t),
                    None => self.state.lock().await.lookup(new_parent, new_name).ok(),
                };
                if let Some((y, FileKind::Dir)) = target {
                    if self.is_ancestor(y, parent).await? {
                        return Err(errno(Errno::new(
                            code::EINVAL,
                            "cannot move a directory into its own subtree",
                        )));
                    }
                }
            }
        }
        let nn = new_name.to_string();
        self.mutate(who, None, |st, c| {
            if check_ancestry && st.lookup(parent, name).ok().map(|(i, _)| i) != Some(x) {
                return Err(Errno::new(
                    code::EAGAIN,
                    "the renamed entry changed during the ancestry check, retry",
                ));
            }
            st.plan_rename(c, parent, name, new_parent, &nn, flags, remote_target)
        })
        .await
    }

    /// Plans and runs a mutation by `who`: other writers of what it changes are flushed
    /// first, local plans commit at once (under the shared gate); plans that need other
    /// managers log their begin under the state lock and then run the two-phase commit
    /// (`two_phase`) with no lock held across the network. After the change, every other
    /// holder is invalidated before the reply. `writer` (Create with a session) becomes the
    /// writer of the new inode. Neither the gate nor the state lock is held while callbacks
    /// or other managers are awaited.
    async fn mutate<F>(
        &self,
        who: Option<SessionId>,
        writer: Option<SessionId>,
        plan: F,
    ) -> Result<ManagerResponse, RemoteError>
    where
        F: Fn(&MetaState, &Ctx) -> Result<Plan, Errno>,
    {
        for _ in 0..LEASE_ROUNDS {
            let mut rx = self.lease_events.subscribe();
            let step = {
                let shared = self.gate.read().await;
                let mut st = self.state.lock().await;
                match plan(&st, &self.ctx()).map_err(errno)? {
                    Plan::Local { records, reply } => {
                        match self.commit_leased(&mut st, records, reply, who, writer) {
                            Ok((resp, calls)) => {
                                drop(st);
                                drop(shared);
                                self.run_callbacks(calls).await;
                                return resp;
                            }
                            Err(step) => step,
                        }
                    }
                    Plan::Tx(tx) => match self.begin_tx(&mut st, &tx, who) {
                        Ok(Ok(begin)) => {
                            drop(st);
                            drop(shared);
                            return self.run_two_phase(who, &plan, (begin, tx.reply)).await;
                        }
                        Ok(Err(e)) => return Err(e),
                        Err(step) => step,
                    },
                }
            };
            self.follow(step, &mut rx).await;
        }
        Err(contention("mutation"))
    }

    /// Commits a local plan if no other writer must be flushed first (else the step to
    /// follow); the lease check, the commit and the holder snapshot happen under the
    /// state lock and the lease lock together.
    #[allow(clippy::type_complexity)]
    fn commit_leased(
        &self,
        st: &mut MetaState,
        records: Vec<Record>,
        reply: Reply,
        who: Option<SessionId>,
        writer: Option<SessionId>,
    ) -> Result<(Result<ManagerResponse, RemoteError>, Vec<Callback>), Step> {
        let now = Instant::now();
        if let Some(tx) = crate::txn::locks::records_conflict(st, &records) {
            // A cross-manager transaction holds an intent lock on what this changes.
            tracing::debug!(%tx, "mutation waits for an intent lock");
            return Err(Step::Wait(now + two_phase::INTENT_LOCK_WAIT));
        }
        let affected = Affected::of_records(&records);
        let mut lt = self.leases();
        let step = lt.mutation(who, &affected, now);
        if !matches!(step, Step::Go) {
            return Err(step);
        }
        let returned: Vec<InodeId> = match &reply {
            Reply::Done => Vec::new(),
            Reply::Attr(i) => vec![*i],
            Reply::Attrs(v) => v.clone(),
        };
        // Ends of recorded write leases ride along; the write lease a creator gets on its new
        // file is recorded *before* the file's records, so that if the file survives a crash
        // its lease does too (the creator may buffer writes as soon as it has the reply).
        let mut batch = lease_ends(&mut lt, st, now);
        if let (Some(w), Reply::Attr(i)) = (writer, &reply) {
            if self.owner(*i) == self.me && Some(w) == who && lt.is_live(w) {
                batch.push(Record::WriteLease {
                    ino: *i,
                    session: w,
                });
            }
        }
        batch.extend(records);
        // A numbered call is logged as applied with its change, so that a retry after a
        // restart gets this answer instead of applying it again (`once`).
        if let (Some(session), Some(call)) = (who, once::current_call()) {
            let answer = match &reply {
                Reply::Attr(i) => Some(*i),
                Reply::Done | Reply::Attrs(_) => None,
            };
            batch.push(Record::Replied {
                session,
                call,
                answer,
            });
        }
        let resp = self.commit_local(st, batch, reply);
        let calls = lt.after_mutation(who, &affected, &returned, now);
        if let (Some(w), Ok(ManagerResponse::Attr(a))) = (writer, &resp) {
            if self.owner(a.ino) == self.me && Some(w) == who {
                lt.set_writer(w, a.ino);
            }
        }
        Ok((resp, calls))
    }

    fn commit_local(
        &self,
        st: &mut MetaState,
        records: Vec<Record>,
        reply: Reply,
    ) -> Result<ManagerResponse, RemoteError> {
        self.journal.admit(&records).map_err(errno)?;
        let logged = st.commit(records);
        self.journal.push(logged);
        self.maybe_checkpoint(st);
        let attr = |ino: InodeId| st.get(ino).map(|i| i.attr.clone()).map_err(errno);
        Ok(match reply {
            Reply::Done => ManagerResponse::Done,
            Reply::Attr(ino) => ManagerResponse::Attr(attr(ino)?),
            Reply::Attrs(inos) => ManagerResponse::Committed {
                attrs: inos.into_iter().map(attr).collect::<Result<_, _>>()?,
                incarnation: self.incarnation,
            },
        })
    }

    fn maybe_checkpoint(&self, st: &MetaState) {
        if self
            .journal
            .checkpoint_due(self.config.file.manager.checkpoint_records)
        {
            self.journal.push_checkpoint(head_piece(st), st.last_lsn());
        }
    }

    /// Commits records and waits until they are durable.
    async fn commit_durable(&self, records: Vec<Record>) -> Result<(), RemoteError> {
        let lsn = {
            let mut st = self.state.lock().await;
            self.journal.admit(&records).map_err(errno)?;
            let logged = st.commit(records);
            self.journal.push(logged);
            self.maybe_checkpoint(&st);
            st.last_lsn()
        };
        self.journal.wait_durable(lsn).await.map_err(fatal)
    }

    /// Runs the driver's commands until the transaction commits or aborts.
    async fn drive(
        &self,
        intent: &TxIntent,
        attempts: u32,
        who: Option<SessionId>,
    ) -> Result<Option<Attr>, DriveError> {
        let mut driver = TxDriver::new(intent.clone());
        let mut failures = 0;
        loop {
            match driver.command() {
                Command::Send { index, node, op } => {
                    let req = ManagerRequest::TxApply {
                        tx: intent.tx,
                        op,
                        session: who,
                    };
                    match self.peers.call(node, req).await {
                        Ok(ManagerResponse::TxApplied { attr }) => {
                            driver.on_applied(index, attr);
                        }
                        Err(RemoteError::Errno { code, message }) => {
                            driver.on_refused(index, Errno::new(code, message));
                        }
                        Ok(other) => {
                            return Err(DriveError::Unreachable(format!(
                                "{node} answered TxApply with {other:?}"
                            )));
                        }
                        Err(e) => {
                            failures += 1;
                            if failures >= attempts {
                                return Err(DriveError::Unreachable(format!("{node}: {e}")));
                            }
                            tokio::time::sleep(Duration::from_millis(100 << failures.min(5))).await;
                        }
                    }
                }
                Command::Commit { result } => {
                    let recs = self.state.lock().await.plan_tx_done(
                        Timestamp::now(),
                        intent,
                        result.as_ref(),
                    );
                    self.commit_durable(recs).await.map_err(DriveError::Local)?;
                    tracing::debug!(tx = %intent.tx, "transaction: done");
                    return Ok(result);
                }
                Command::Abort { errno } => {
                    self.commit_durable(vec![Record::TxAborted { tx: intent.tx }])
                        .await
                        .map_err(DriveError::Local)?;
                    tracing::debug!(tx = %intent.tx, "transaction: aborted: {errno}");
                    return Err(DriveError::Refused(errno));
                }
            }
        }
    }

    /// Re-drives a pending intent in the background until it commits or aborts.
    fn spawn_redrive(&self, intent: TxIntent) {
        let weak = self.this.clone();
        let h = tokio::spawn(async move {
            let mut wait = Duration::from_millis(200);
            for _ in 0..10_000 {
                let Some(svc) = weak.upgrade() else { return };
                if svc.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let still_pending = svc.state.lock().await.tx_outcome(intent.tx).is_none();
                if !still_pending {
                    return;
                }
                let r = svc.drive(&intent, 1, None).await;
                match r {
                    Ok(_) | Err(DriveError::Refused(_)) => {
                        tracing::info!(tx = %intent.tx, "pending transaction finished");
                        if r.is_ok() {
                            let affected = Affected::of_ops(&intent.local);
                            let calls =
                                svc.leases()
                                    .after_mutation(None, &affected, &[], Instant::now());
                            svc.run_callbacks(calls).await;
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(tx = %intent.tx, "pending transaction waits for its participant: {e:?}")
                    }
                }
                drop(svc);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        });
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(h);
    }

    /// Participant: applies one op of another manager's transaction (idempotently).
    async fn tx_apply(
        &self,
        tx: TxId,
        op: TxOp,
        session: Option<SessionId>,
    ) -> Result<ManagerResponse, RemoteError> {
        // The requesting client of the coordinator, if it holds a session here: treated as
        // the requester of a local mutation (not called back for its own change).
        let who = session.filter(|s| self.leases().is_live(*s));
        let slot = match &op {
            TxOp::CreateInode { ino_slot, .. } => SlotId(*ino_slot % SLOT_COUNT),
            TxOp::AddEntry { dir, .. }
            | TxOp::RemoveEntry { dir, .. }
            | TxOp::SetParent { dir, .. }
            | TxOp::RemoveDir { dir } => dir.slot(),
            TxOp::AdjustNlink { ino, .. } => ino.slot(),
        };
        self.check_slot(slot)?;
        let mut result = None;
        for _ in 0..LEASE_ROUNDS {
            let mut rx = self.lease_events.subscribe();
            let step = {
                let mut st = self.state.lock().await;
                match st.applied_result(tx, &op) {
                    Some(attr) => {
                        result = Some((st.last_lsn(), attr, Vec::new()));
                        break;
                    }
                    None => {
                        let (recs, attr) = st.plan_tx_apply(&self.ctx(), tx, &op).map_err(errno)?;
                        // Every holder but the requesting client is called back.
                        let affected = Affected::of_records(&recs);
                        let now = Instant::now();
                        let mut lt = self.leases();
                        let step = lt.mutation(who, &affected, now);
                        if matches!(step, Step::Go) {
                            self.journal.admit(&recs).map_err(errno)?;
                            let logged = st.commit(recs);
                            self.journal.push(logged);
                            self.maybe_checkpoint(&st);
                            let calls = lt.after_mutation(who, &affected, &[], now);
                            result = Some((st.last_lsn(), attr, calls));
                            break;
                        }
                        step
                    }
                }
            };
            self.follow(step, &mut rx).await;
        }
        let Some((lsn, attr, calls)) = result else {
            return Err(contention("TxApply"));
        };
        self.journal.wait_durable(lsn).await.map_err(fatal)?;
        self.run_callbacks(calls).await;
        Ok(ManagerResponse::TxApplied { attr })
    }
}

/// Legacy driver errors (their texts reach the logs through `Debug`).
#[derive(Debug)]
#[allow(dead_code)]
enum DriveError {
    /// The first remote op was refused; the transaction aborted.
    Refused(Errno),
    /// A participant could not be reached; the intent stays pending.
    Unreachable(String),
    /// Our own log failed.
    Local(RemoteError),
}

/// uid and gid of this process (the owner of `/proc/self`), for the root directory.
async fn process_ids() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    match tokio::fs::metadata("/proc/self").await {
        Ok(m) => (m.uid(), m.gid()),
        Err(e) => {
            tracing::warn!(
                "cannot read /proc/self to find our uid/gid, the root belongs to 0:0: {e}"
            );
            (0, 0)
        }
    }
}
