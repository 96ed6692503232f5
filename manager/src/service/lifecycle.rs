//! The service's lifecycle: `start` (the real log, peers and callbacks; `start_after` with a
//! gate its recovery waits for first, the node's config check) and `start_with`
//! (given ones), recovery in the background (checkpoint and roll forward, the root on an
//! empty cluster, the grace period, re-driving pending transactions), readiness, `kill`
//! (a crash, for tests) and `shutdown` (commit, checkpoint, stop the committer).
//! Must not: answer requests (the dispatch refuses them until `ready`), or wait unbounded
//! at shutdown for storage that may already be gone.

use super::{CallbackSender, ClientPeers, Peers, QuicCallbacks, Service};
use crate::checkpoint::{head_piece, inode_piece, InodePiece};
use crate::error::ManagerError;
use crate::journal::{CheckpointSource, Journal, JournalLimits, LogBackend, StorageLog};
use crate::lease::{LeaseTable, SessionId};
use crate::record::{Lsn, Record, TxIntent};
use crate::recovery::recover;
use crate::state::MetaState;
use proto::config::{ClusterConfig, Role};
use proto::ids::{InodeId, LogId, NodeId, SlotId, SLOT_COUNT};
use proto::live::LiveConfig;
use proto::msg::Timestamp;
use proto::route::ManagerClient;
use proto::transport::{BoxFuture, Transport};
use proto::worker::{WorkerStatus, Workers};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// What a manager's recovery waits for before it reads the log (`Service::start_after`).
pub type StartGate = BoxFuture<'static, Result<(), String>>;

/// How long a stopping manager waits for its shutdown checkpoint (and then its committer).
const SHUTDOWN_CHECKPOINT_WAIT: Duration = Duration::from_secs(5);

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

/// How far above the log's inode numbers each incarnation starts handing out new ones per
/// slot: more than one incarnation can answer creates for in one slot before they are
/// durable (mutations stop once the journal stalls, `journal_stall_ms`). Inode numbers
/// have 40 bits per slot: 2^18 restarts of one manager before they run out.
const SEQ_RESERVE: u64 = 1 << 22;

impl Service {
    /// Starts the manager of `node` over the striped log; recovery runs in the background
    /// and requests are answered `Unavailable` until it is done.
    pub async fn start(
        config: Arc<ClusterConfig>,
        node: NodeId,
        transport: Arc<Transport>,
    ) -> Result<Arc<Service>, ManagerError> {
        Service::start_after(LiveConfig::new(config), node, transport, None).await
    }

    /// `start`, with recovery (reading the log at all) waiting for `gate` first: the node's
    /// check that its config agrees with the cluster's committed one. A gate that fails
    /// keeps the manager from ever serving, as a refused recovery does, with its reason.
    /// The journal is placed by the config `live` holds at each append (storage nodes added
    /// while running); who serves which slot stays as in the config at the start.
    pub async fn start_after(
        live: Arc<LiveConfig>,
        node: NodeId,
        transport: Arc<Transport>,
        gate: Option<StartGate>,
    ) -> Result<Arc<Service>, ManagerError> {
        let config = live.current();
        let peers = Arc::new(ClientPeers(ManagerClient::following(
            live.clone(),
            transport.clone(),
        )));
        let backend = Arc::new(StorageLog::following(
            live,
            transport.clone(),
            LogId::manager(node),
        ));
        let callbacks = Arc::new(QuicCallbacks(transport));
        Service::start_gated(config, node, backend, peers, callbacks, gate).await
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
        Service::start_gated(config, node, backend, peers, callbacks, None).await
    }

    async fn start_gated(
        config: Arc<ClusterConfig>,
        node: NodeId,
        backend: Arc<dyn LogBackend>,
        peers: Arc<dyn Peers>,
        callbacks: Arc<dyn CallbackSender>,
        gate: Option<StartGate>,
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
            tx_requesters: Mutex::new(Default::default()),
            recovery_error: Mutex::new(None),
            workers: Workers::default(),
            calls: Mutex::new(crate::calls::CallTable::new(crate::calls::KEPT_RESULTS)),
            calls_done: tokio::sync::Notify::new(),
            holders: Mutex::new(Default::default()),
            serving: std::sync::OnceLock::new(),
            this: this.clone(),
        });
        tracing::info!(node = %node, slots = svc.config.slots_of(node).len(), "manager: starting recovery");
        let s = svc.clone();
        let h = tokio::spawn(async move {
            if let Some(gate) = gate {
                if let Err(why) = gate.await {
                    tracing::error!(node = %s.me, "manager not serving: {why}");
                    *s.recovery_error.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(Arc::new(ManagerError::ConfigConflict(why)));
                    s.ready_tx.send_modify(|_| {});
                    return;
                }
            }
            if let Err(e) = s.clone().recover_and_open().await {
                tracing::error!(node = %s.me, "manager recovery failed, not serving: {e}");
                *s.recovery_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(e));
                s.ready_tx.send_modify(|_| {});
            }
        });
        svc.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(h);
        Ok(svc)
    }

    /// Raises the next inode number of each slot this manager owns by `SEQ_RESERVE`, durably,
    /// before it serves (see `Record::SeqFloors`): numbers an earlier incarnation answered
    /// creates with but had not made durable lie below the new floor.
    async fn reserve_inode_numbers(&self) -> Result<(), ManagerError> {
        let mut st = self.state.lock().await;
        let floors: Vec<(u16, u64)> = (0..SLOT_COUNT)
            .filter(|&s| self.owners[s as usize] == self.me)
            .map(|s| (s, st.next_seq(SlotId(s)) + SEQ_RESERVE))
            .collect();
        let logged = st.commit(vec![Record::SeqFloors(floors)]);
        let lsn = st.last_lsn();
        self.journal.push(logged);
        drop(st);
        self.journal.wait_durable(lsn).await?;
        Ok(())
    }

    async fn recover_and_open(self: Arc<Self>) -> Result<(), ManagerError> {
        let rec = recover(&*self.backend).await?;
        self.backend.set_next(rec.next_segment);
        self.journal.set_recovered(
            rec.state.last_lsn(),
            rec.checkpoint,
            rec.segments_replayed as u64,
        );
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
        self.reserve_inode_numbers().await?;
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

    /// Serves requests only while `lease` is held from now on (automatic takeover: a
    /// host whose membership lease ran out answers `Unavailable`, which clients retry).
    /// Set once; a second call is ignored.
    pub fn require_serving_lease(&self, lease: Arc<crate::serving_lease::ServingLease>) {
        let _ = self.serving.set(lease);
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

    /// Whether the manager was stopped (`kill`, `shutdown`).
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
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
            // A change that waited for the state lock must not be answered after this: the
            // stop makes durable only what is logged up to `lsn` (a hand-over's new host
            // would not know it). It is refused `Unavailable` and retried there.
            self.journal.refuse_changes();
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
