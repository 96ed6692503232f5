//! The runtime shell: `Service` answers `ManagerRequest`s from the in-memory `MetaState`
//! (behind one async mutex), queues records in the `Journal`, runs cross-manager
//! transactions through `TxDriver` and `Peers`, and recovers in the background at start.
//! Must not: hold a std lock across `.await`, or hold the state lock across a network call.

use crate::error::{code, enoent, Errno, ManagerError};
use crate::journal::{Journal, LogBackend, StorageLog};
use crate::plan::{Ctx, Plan, Reply, TxPlan, TxReply, MAX_DEPTH};
use crate::record::{Record, TxIntent};
use crate::recovery::{checkpoint_bytes, recover};
use crate::state::MetaState;
use crate::txn::{Command, TxDriver};
use proto::config::{ClusterConfig, Role};
use proto::ids::{InodeId, LogId, NodeId, SlotId, TxId, SLOT_COUNT};
use proto::msg::{Attr, FileKind, ManagerRequest, ManagerResponse, RemoteError, Timestamp, TxOp};
use proto::route::{CallError, ManagerClient};
use proto::transport::{BoxFuture, Transport};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Attempts to reach a participant before a transaction is left to background re-drive.
const TX_ATTEMPTS: u32 = 4;

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
    ready: AtomicBool,
    ready_tx: tokio::sync::watch::Sender<bool>,
    stopped: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    committer: Mutex<Option<JoinHandle<()>>>,
    this: std::sync::Weak<Service>,
}

fn errno(e: Errno) -> RemoteError {
    e.into()
}

fn fatal(e: ManagerError) -> RemoteError {
    RemoteError::Unavailable(e.to_string())
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
        let peers = Arc::new(ClientPeers(ManagerClient::new(config.clone(), transport)));
        Service::start_with(config, node, backend, peers).await
    }

    /// Starts with a given log backend and peer caller (tests use `MemLog` and in-process peers).
    pub async fn start_with(
        config: Arc<ClusterConfig>,
        node: NodeId,
        backend: Arc<dyn LogBackend>,
        peers: Arc<dyn Peers>,
    ) -> Result<Arc<Service>, ManagerError> {
        if !config.node(node).is_some_and(|n| n.has(Role::Manager)) {
            return Err(ManagerError::NotAManager(node));
        }
        let owners = (0..SLOT_COUNT)
            .map(|s| config.slot_owner(SlotId(s)))
            .collect();
        let interval = Duration::from_millis(config.file.manager.commit_interval_ms.max(1));
        let svc = Arc::new_cyclic(|this| Service {
            me: node,
            config,
            owners,
            state: tokio::sync::Mutex::new(MetaState::new()),
            gate: tokio::sync::RwLock::new(()),
            journal: Journal::new(interval, 0),
            backend,
            peers,
            ready: AtomicBool::new(false),
            ready_tx: tokio::sync::watch::Sender::new(false),
            stopped: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
            committer: Mutex::new(None),
            this: this.clone(),
        });
        tracing::info!(node = %node, slots = svc.config.slots_of(node).len(), "manager: starting recovery");
        let s = svc.clone();
        let h = tokio::spawn(async move {
            if let Err(e) = s.clone().recover_and_open().await {
                tracing::error!(node = %s.me, "manager recovery failed: {e}");
            }
        });
        svc.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(h);
        Ok(svc)
    }

    async fn recover_and_open(self: Arc<Self>) -> Result<(), ManagerError> {
        let rec = recover(&*self.backend).await?;
        self.backend.set_next(rec.next_segment);
        self.journal.reset_durable(rec.state.last_lsn());
        let pending: Vec<TxIntent>;
        {
            let mut st = self.state.lock().await;
            *st = rec.state;
            pending = st.pending_txs().cloned().collect();
        }
        let j = self.journal.clone();
        let committer = tokio::spawn(j.clone().run(self.backend.clone()));
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
        self.ready.store(true, Ordering::SeqCst);
        self.ready_tx.send_replace(true);
        tracing::info!(node = %self.me, pending = pending.len(), "manager: ready");
        for intent in pending {
            self.spawn_redrive(intent);
        }
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
            self.journal.push_checkpoint(
                checkpoint_bytes(&st, self.backend.next_segment()),
                st.last_lsn(),
            );
            st.last_lsn()
        };
        let r = self.journal.wait_durable(lsn).await;
        self.journal.close();
        let committer = self
            .committer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(c) = committer {
            let _ = c.await;
        }
        tracing::info!(node = %self.me, lsn, "manager: shut down with a checkpoint");
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
        let hint = self
            .config
            .node(owner)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| owner.to_string());
        Err(RemoteError::NotOwner { slot: slot.0, hint })
    }

    /// Answers one request.
    pub async fn handle(&self, req: ManagerRequest) -> Result<ManagerResponse, RemoteError> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(RemoteError::Unavailable("manager shut down".into()));
        }
        if !self.ready.load(Ordering::SeqCst) {
            return Err(RemoteError::Unavailable("manager recovering".into()));
        }
        if let Some(ino) = proto::route::routing_inode(&req) {
            self.check_owned(ino)?;
        }
        use ManagerRequest as R;
        use ManagerResponse as A;
        match req {
            R::Hello { .. } | R::Renew { .. } | R::AcquireWrite { .. } => {
                Err(RemoteError::Invalid(
                    "volume leases are not implemented by this manager yet".into(),
                ))
            }
            R::Lookup { parent, name } => self.lookup(parent, &name).await.map(A::Attr),
            R::GetAttr { ino } => self
                .state
                .lock()
                .await
                .get(ino)
                .map(|i| A::Attr(i.attr.clone()))
                .map_err(errno),
            R::SetAttr { ino, set, caller } => {
                self.mutate(|st, c| st.plan_setattr(c, ino, &set, caller))
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
                self.mutate(|st, c| {
                    st.plan_create(c, parent, &name, &node, perm, umask, caller, session)
                })
                .await
            }
            R::Unlink { parent, name, .. } => {
                self.mutate(|st, c| st.plan_unlink(c, parent, &name)).await
            }
            R::Rmdir { parent, name, .. } => {
                self.mutate(|st, c| st.plan_rmdir(c, parent, &name)).await
            }
            R::Link {
                ino,
                new_parent,
                new_name,
                ..
            } => {
                self.mutate(|st, c| st.plan_link(c, ino, new_parent, &new_name))
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
                self.rename(parent, &name, new_parent, &new_name, flags)
                    .await
            }
            R::ReadDir { ino, offset, max } => self
                .state
                .lock()
                .await
                .readdir(ino, offset, max)
                .map(A::Entries)
                .map_err(errno),
            R::ReadLink { ino } => self
                .state
                .lock()
                .await
                .readlink(ino)
                .map(A::Target)
                .map_err(errno),
            R::Open { ino, session } => self.mutate(|st, _| st.plan_open(ino, session)).await,
            R::Release { ino, session } => {
                self.mutate(|st, c| st.plan_release(c, ino, session)).await
            }
            R::GetXattr { ino, name } => self
                .state
                .lock()
                .await
                .getxattr(ino, &name)
                .map(A::Xattr)
                .map_err(errno),
            R::SetXattr {
                ino,
                name,
                value,
                flags,
                ..
            } => {
                self.mutate(|st, c| st.plan_setxattr(c, ino, &name, &value, flags))
                    .await
            }
            R::ListXattr { ino } => self
                .state
                .lock()
                .await
                .listxattr(ino)
                .map(A::XattrNames)
                .map_err(errno),
            R::RemoveXattr { ino, name, .. } => {
                self.mutate(|st, c| st.plan_removexattr(c, ino, &name))
                    .await
            }
            R::GetExtents { ino, offset, len } => self
                .state
                .lock()
                .await
                .get_extents(ino, offset, len)
                .map(A::Extents)
                .map_err(errno),
            R::CommitWrites { writes, sync } => {
                for w in &writes {
                    self.check_owned(w.ino)?;
                }
                let resp = self
                    .mutate(|st, c| st.plan_commit_writes(c, &writes))
                    .await?;
                if sync {
                    self.sync().await?;
                }
                Ok(resp)
            }
            R::Sync => self.sync().await.map(|_| A::Done),
            R::Counts => Ok(A::Counts(self.state.lock().await.counts())),
            R::TxApply { tx, op } => self.tx_apply(tx, op).await,
            R::TxOutcome { tx } => match self.state.lock().await.tx_outcome(tx) {
                Some(committed) => Ok(A::TxOutcome { committed }),
                None => Err(RemoteError::Unavailable(format!(
                    "{tx} is still in progress"
                ))),
            },
        }
    }

    async fn sync(&self) -> Result<(), RemoteError> {
        let lsn = self.state.lock().await.last_lsn();
        self.journal.wait_durable(lsn).await.map_err(fatal)
    }

    async fn lookup(&self, parent: InodeId, name: &str) -> Result<Attr, RemoteError> {
        let (ino, _) = {
            let st = self.state.lock().await;
            let found = st.lookup(parent, name).map_err(errno)?;
            if let Some(i) = st.inode(found.0) {
                return Ok(i.attr.clone());
            }
            found
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

    /// Looks up `name` in a directory of any manager.
    async fn lookup_anywhere(&self, dir: InodeId, name: &str) -> Result<Attr, RemoteError> {
        if self.owner(dir) == self.me {
            return self.lookup(dir, name).await;
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

    async fn rename(
        &self,
        parent: InodeId,
        name: &str,
        new_parent: InodeId,
        new_name: &str,
        flags: proto::msg::RenameFlags,
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
        if new_parent != parent {
            if xk == FileKind::Dir && self.is_ancestor(x, new_parent).await? {
                return Err(errno(Errno::new(
                    code::EINVAL,
                    "cannot move a directory into its own subtree",
                )));
            }
            if let (true, Some((y, FileKind::Dir))) = (flags.exchange, remote_target) {
                if self.is_ancestor(y, parent).await? {
                    return Err(errno(Errno::new(
                        code::EINVAL,
                        "cannot move a directory into its own subtree",
                    )));
                }
            }
        }
        let nn = new_name.to_string();
        self.mutate(|st, c| st.plan_rename(c, parent, name, new_parent, &nn, flags, remote_target))
            .await
    }

    /// Plans and runs a mutation: local plans commit at once; transactions run with the
    /// gate held exclusively.
    async fn mutate<F>(&self, plan: F) -> Result<ManagerResponse, RemoteError>
    where
        F: Fn(&MetaState, &Ctx) -> Result<Plan, Errno>,
    {
        {
            let _shared = self.gate.read().await;
            let mut st = self.state.lock().await;
            if let Plan::Local { records, reply } = plan(&st, &self.ctx()).map_err(errno)? {
                return self.commit_local(&mut st, records, reply);
            }
        }
        let _exclusive = self.gate.write().await;
        let p = {
            let st = self.state.lock().await;
            plan(&st, &self.ctx()).map_err(errno)?
        };
        match p {
            Plan::Local { records, reply } => {
                let mut st = self.state.lock().await;
                self.commit_local(&mut st, records, reply)
            }
            Plan::Tx(tx) => self.run_tx(tx).await,
        }
    }

    fn commit_local(
        &self,
        st: &mut MetaState,
        records: Vec<Record>,
        reply: Reply,
    ) -> Result<ManagerResponse, RemoteError> {
        let logged = st.commit(records);
        self.journal.push(logged);
        self.maybe_checkpoint(st);
        let attr = |ino: InodeId| st.get(ino).map(|i| i.attr.clone()).map_err(errno);
        Ok(match reply {
            Reply::Done => ManagerResponse::Done,
            Reply::Attr(ino) => ManagerResponse::Attr(attr(ino)?),
            Reply::Attrs(inos) => {
                ManagerResponse::Committed(inos.into_iter().map(attr).collect::<Result<_, _>>()?)
            }
        })
    }

    fn maybe_checkpoint(&self, st: &MetaState) {
        if self.journal.since_checkpoint() >= self.config.file.manager.checkpoint_records.max(1) {
            self.journal.push_checkpoint(
                checkpoint_bytes(st, self.backend.next_segment()),
                st.last_lsn(),
            );
        }
    }

    /// Commits records and waits until they are durable.
    async fn commit_durable(&self, records: Vec<Record>) -> Result<(), RemoteError> {
        let lsn = {
            let mut st = self.state.lock().await;
            let logged = st.commit(records);
            self.journal.push(logged);
            self.maybe_checkpoint(&st);
            st.last_lsn()
        };
        self.journal.wait_durable(lsn).await.map_err(fatal)
    }

    /// Coordinator: logs the intent, drives it, answers. The caller holds the gate exclusively.
    async fn run_tx(&self, plan: TxPlan) -> Result<ManagerResponse, RemoteError> {
        let reply = plan.reply;
        let intent = {
            let st = self.state.lock().await;
            plan.into_intent(TxId {
                coordinator: self.me,
                seq: st.next_tx(),
            })
        };
        tracing::debug!(tx = %intent.tx, remote = intent.remote.len(), "transaction: intent");
        self.commit_durable(vec![Record::TxIntent(intent.clone())])
            .await?;
        match self.drive(&intent, TX_ATTEMPTS).await {
            Ok(result) => Ok(match reply {
                TxReply::Done => ManagerResponse::Done,
                TxReply::ResultAttr => match result {
                    Some(a) => ManagerResponse::Attr(a),
                    None => {
                        return Err(RemoteError::Io(format!(
                            "{}: participant returned no attributes",
                            intent.tx
                        )))
                    }
                },
            }),
            Err(DriveError::Refused(e)) => Err(errno(e)),
            Err(DriveError::Unreachable(e)) => {
                self.spawn_redrive(intent.clone());
                Err(RemoteError::Unavailable(format!(
                    "{} pending, it completes in the background: {e}",
                    intent.tx
                )))
            }
            Err(DriveError::Local(e)) => Err(e),
        }
    }

    /// Runs the driver's commands until the transaction commits or aborts.
    async fn drive(&self, intent: &TxIntent, attempts: u32) -> Result<Option<Attr>, DriveError> {
        let mut driver = TxDriver::new(intent.clone());
        let mut failures = 0;
        loop {
            match driver.command() {
                Command::Send { index, node, op } => {
                    let req = ManagerRequest::TxApply { tx: intent.tx, op };
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
                let r = {
                    let _exclusive = svc.gate.write().await;
                    svc.drive(&intent, 1).await
                };
                match r {
                    Ok(_) | Err(DriveError::Refused(_)) => {
                        tracing::info!(tx = %intent.tx, "pending transaction finished");
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
    async fn tx_apply(&self, tx: TxId, op: TxOp) -> Result<ManagerResponse, RemoteError> {
        let slot = match &op {
            TxOp::CreateInode { ino_slot, .. } => SlotId(*ino_slot % SLOT_COUNT),
            TxOp::AddEntry { dir, .. }
            | TxOp::RemoveEntry { dir, .. }
            | TxOp::SetParent { dir, .. }
            | TxOp::RemoveDir { dir } => dir.slot(),
            TxOp::AdjustNlink { ino, .. } => ino.slot(),
        };
        self.check_slot(slot)?;
        let (lsn, attr) = {
            let mut st = self.state.lock().await;
            match st.applied_result(tx, &op) {
                Some(attr) => (st.last_lsn(), attr),
                None => {
                    let (recs, attr) = st.plan_tx_apply(&self.ctx(), tx, &op).map_err(errno)?;
                    let logged = st.commit(recs);
                    self.journal.push(logged);
                    self.maybe_checkpoint(&st);
                    (st.last_lsn(), attr)
                }
            }
        };
        self.journal.wait_durable(lsn).await.map_err(fatal)?;
        Ok(ManagerResponse::TxApplied { attr })
    }
}

#[derive(Debug)]
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

/// In-process peers for tests and single-process clusters: calls go straight to the
/// `Service` of the target node.
#[derive(Default)]
pub struct LoopbackPeers {
    services: Mutex<std::collections::HashMap<NodeId, std::sync::Weak<Service>>>,
    down: Mutex<std::collections::HashSet<NodeId>>,
}

impl LoopbackPeers {
    pub fn new() -> Arc<LoopbackPeers> {
        Arc::new(LoopbackPeers::default())
    }

    pub fn register(&self, svc: &Arc<Service>) {
        self.services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(svc.me, Arc::downgrade(svc));
    }

    /// Makes calls to `node` fail as unreachable (or reachable again).
    pub fn set_down(&self, node: NodeId, down: bool) {
        let mut d = self.down.lock().unwrap_or_else(|e| e.into_inner());
        if down {
            d.insert(node);
        } else {
            d.remove(&node);
        }
    }
}

impl Peers for LoopbackPeers {
    fn call(
        &self,
        node: NodeId,
        req: ManagerRequest,
    ) -> BoxFuture<'_, Result<ManagerResponse, RemoteError>> {
        Box::pin(async move {
            if self
                .down
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&node)
            {
                return Err(RemoteError::Unavailable(format!("{node} is down (test)")));
            }
            let svc = self
                .services
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&node)
                .and_then(|w| w.upgrade());
            match svc {
                Some(s) => s.handle(req).await,
                None => Err(RemoteError::Unavailable(format!("{node} is not running"))),
            }
        })
    }
}
