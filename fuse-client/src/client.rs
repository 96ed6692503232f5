//! The composition root of the client: connects to the cluster, owns the parts and starts
//! and stops the background workers.
//!
//! Owns: the `Client` value every operation runs on, with the manager-RPC layer (`meta`),
//! the data state (`data::DataState`: dirty files, block cache, extent cache, write leases),
//! the attribute and listing caches, the log writer and its reclaim horizon, the write
//! verifier, open counts, and the workers (flusher, renewer) with their status; and the
//! transport's callback handler, which hands manager callbacks to the lease runtime
//! (`lease::session`). The operations live in `ops` (namespace, attributes, I/O, listing),
//! `data` (read path, write-back) and `lease::session`; they import this module, and this
//! module imports none of them (the workers and the callback handler call their methods).
//! Must not: implement file-system operations, or hold a lock across an await.

use crate::data::cache::BlockCache;
use crate::data::dir_parents::DirParents;
use crate::data::extents::ExtentCache;
use crate::data::no_caps::NoCaps;
use crate::data::open_dirs::OpenDirs;
use crate::data::open_files::OpenFiles;
use crate::data::write_errors::WriteErrors;
use crate::data::{DataState, Which};
use crate::error::ClientError;
use crate::handle::Handles;
use crate::horizon::Horizon;
use crate::kernel::notify::KernelCache;
use crate::meta::{LeaseActions, Meta, Target};
use crate::stats::ClientStats;
use crate::verifier::Unsynced;
use bytes::Bytes;
use dashmap::DashMap;
use proto::config::ClusterConfig;
use proto::ids::{InodeId, LogId, SessionId};
use proto::msg::{Attr, ManagerRequest, ManagerResponse, RemoteError, Request, Response};
use proto::transport::{BoxFuture, Handler, Peer, Transport};
use proto::worker::{Worker, WorkerStatus, Workers};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;
use storage::log::{LogReader, LogWriter};
use tokio::sync::{watch, Notify};

/// Dirty memory at which writers wait for the flusher (at least two segments).
const DIRTY_LIMIT: u64 = 64 << 20;
/// Timeout of a `Ping` at connect and of a storage `Stat`.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub use crate::handle::FileHandle;

/// A Shoal client: talks to managers for metadata and to its own log for data.
pub struct Client {
    pub(crate) config: Arc<ClusterConfig>,
    pub(crate) transport: Arc<Transport>,
    /// The manager-RPC layer: routing, retry, errno mapping, volume leases, counters.
    pub(crate) meta: Arc<Meta>,
    pub(crate) log_id: LogId,
    /// The reclaim horizon of `log_id` (pins of flights and resends, next segment).
    pub(crate) horizon: Horizon,
    /// Per manager: the (incarnation, horizon) last promised with `LogHorizon`.
    pub(crate) promised: DashMap<proto::ids::NodeId, (Option<u64>, u64)>,
    pub(crate) state: Mutex<DataState>,
    /// The log writer, created at the first flush; its lock serialises segment appends
    /// (never held across a manager call).
    pub(crate) log: tokio::sync::Mutex<Option<LogWriter>>,
    /// Commits accepted without sync, until a sync of the same manager incarnation covers
    /// them (the write verifier, see `verifier`).
    pub(crate) unsynced: Mutex<Unsynced>,
    /// Inodes whose write lease this client reclaimed from a restarted manager, with that
    /// manager's incarnation: their suspect commits may be sent again (nobody else can have
    /// written in between).
    pub(crate) reclaimed: DashMap<InodeId, u64>,
    /// This client, for work it starts in the background (reclaims).
    pub(crate) this: OnceLock<std::sync::Weak<Client>>,
    /// Commit locks of inodes being flushed (see `writeback::InodeCommit`).
    pub(crate) commits: DashMap<InodeId, Arc<tokio::sync::Mutex<()>>>,
    pub(crate) reader: OnceLock<LogReader>,
    /// Latest attributes seen from the managers (without local overlay).
    pub(crate) attrs: DashMap<InodeId, Attr>,
    /// Bumped whenever cached attributes are dropped (a callback, a lost lease): an
    /// attribute answer that was in flight meanwhile is not cached (`manager_attr`).
    pub(crate) attr_drops: AtomicU64,
    /// Per inode, the attribute version of this client's latest own change (a commit of
    /// its writes, a setattr): an answer with an older version left the manager before
    /// that change landed and must not be cached or shown (it may show an older, shorter
    /// size). Never dropped by callbacks (they drop `attrs`); one entry per inode written.
    pub(crate) own_versions: DashMap<InodeId, u64>,
    /// Inodes with unflushed writes whose write lease a manager restart took away: the
    /// lease is asked for again before they are committed.
    pub(crate) reacquire: DashMap<InodeId, ()>,
    /// Local open counts per inode (their own part).
    pub(crate) opens: OpenFiles,
    /// Parents of directories we looked up (for `..` in readdir; their own part).
    pub(crate) parents: DirParents,
    /// Open directory streams and listing generations (their own part).
    pub(crate) open_dirs: OpenDirs,
    /// Inodes known to have no `security.capability` (the kernel asks before every write).
    pub(crate) no_caps: NoCaps,
    /// Serialises `AcquireWrite` of one inode (never taken by a callback).
    pub(crate) acquiring: DashMap<InodeId, Arc<tokio::sync::Mutex<()>>>,
    /// The kernel's invalidation channel while mounted.
    notifier: Mutex<Option<Arc<dyn KernelCache>>>,
    /// The background workers (flusher, renewer) and their status.
    workers: Workers,
    /// Write errors found by background flushes, reported at the next flush/fsync.
    pub(crate) errors: WriteErrors,
    handles: Handles,
    flush_ids: AtomicU64,
    pub(crate) space: Notify,
    pub(crate) kick: Arc<Notify>,
    stop: watch::Sender<bool>,
    pub(crate) dirty_limit: u64,
    /// Set when a flush found the storage servers full (ENOSPC): new writes fail at once
    /// with ENOSPC until a flush succeeds, an unlink frees space, or `NO_SPACE_HOLD` passes.
    pub(crate) no_space: Mutex<Option<std::time::Instant>>,
}

impl Client {
    /// Connects to the cluster: every manager must answer a ping, and the root directory
    /// must be served (waiting up to a minute while managers recover). Starts the flusher.
    pub async fn connect(
        config: Arc<ClusterConfig>,
        transport: Arc<Transport>,
    ) -> Result<Arc<Client>, ClientError> {
        let managers: Vec<_> = config.manager_nodes().into_iter().cloned().collect();
        if managers.is_empty() {
            return Err(ClientError::NoManagers);
        }
        // Before the first request: callbacks arrive over the connections we open.
        let callbacks = CallbackHandler::new();
        transport.set_callback_handler(callbacks.clone());
        let pings = managers.iter().map(|m| {
            let t = transport.clone();
            async move {
                (
                    m,
                    t.call_timeout(m.address, &Request::Ping, Default::default(), PROBE_TIMEOUT)
                        .await,
                )
            }
        });
        for (m, r) in futures::future::join_all(pings).await {
            match r {
                Ok((Response::Pong(_), _)) => {}
                Ok((other, _)) => {
                    return Err(ClientError::ManagerUnreachable {
                        name: m.name.clone(),
                        addr: m.address,
                        reason: format!("answered {other}"),
                    });
                }
                Err(e) => {
                    return Err(ClientError::ManagerUnreachable {
                        name: m.name.clone(),
                        addr: m.address,
                        reason: e.to_string(),
                    });
                }
            }
        }
        let client = Arc::new(Client::new(config, transport));
        let _ = client.this.set(Arc::downgrade(&client));
        callbacks.attach(&client);
        client
            .meta
            .attach(Arc::downgrade(&client) as Weak<dyn LeaseActions>);
        if let Err((node, e)) = client.meta.hello_all().await {
            let m = client.config.node(node);
            return Err(ClientError::ManagerUnreachable {
                name: m.map(|m| m.name.clone()).unwrap_or_default(),
                addr: m
                    .map(|m| m.address)
                    .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
                reason: format!("Hello failed: {e}"),
            });
        }
        match client
            .meta
            .call(
                Target::Route,
                ManagerRequest::GetAttr { ino: InodeId::ROOT },
            )
            .await
        {
            Ok(ManagerResponse::Attr(a)) => {
                client.attrs.insert(a.ino, a);
            }
            Ok(other) => return Err(ClientError::NoRoot(format!("unexpected answer {other:?}"))),
            Err(e) => return Err(ClientError::NoRoot(e.to_string())),
        }
        let interval = Duration::from_millis(client.config.file.client.flush_interval_ms.max(1));
        tokio::spawn(flusher(
            Arc::downgrade(&client),
            client.kick.clone(),
            client.stop.subscribe(),
            interval,
            client.workers.register("flusher"),
        ));
        tokio::spawn(renewer(
            Arc::downgrade(&client),
            client.stop.subscribe(),
            client.workers.register("renewer"),
        ));
        tracing::info!(log = %client.log_id, session = %format_args!("{:x}", client.meta.session()), "client connected");
        Ok(client)
    }

    /// A client without network checks and without a flusher (for `connect` and tests).
    pub(crate) fn new(config: Arc<ClusterConfig>, transport: Arc<Transport>) -> Client {
        let tun = &config.file.client;
        let dirty_limit = DIRTY_LIMIT.max(tun.segment_bytes.saturating_mul(2));
        let cache = BlockCache::new(tun.cache_bytes);
        // Sessions and logs carry the tag of this client's identity: servers accept its
        // fragments, commits and session requests only with that tag (`proto::authz`).
        let tag = transport.local_identity().map(|i| i.log_tag()).unwrap_or(0);
        Client {
            meta: Arc::new(Meta::new(
                config.clone(),
                transport.clone(),
                proto::authz::session_of(tag, rand::random::<u64>()),
            )),
            log_id: LogId::client_of(tag, rand::random::<u64>()),
            horizon: Default::default(),
            promised: DashMap::new(),
            state: Mutex::new(DataState {
                files: HashMap::new(),
                dirty_bytes: 0,
                cache,
                extents: ExtentCache::default(),
                leases: HashMap::new(),
                readahead: Default::default(),
            }),
            log: tokio::sync::Mutex::new(None),
            commits: DashMap::new(),
            this: OnceLock::new(),
            reclaimed: DashMap::new(),
            unsynced: Mutex::new(Default::default()),
            reader: OnceLock::new(),
            attrs: DashMap::new(),
            attr_drops: AtomicU64::new(0),
            own_versions: DashMap::new(),
            reacquire: DashMap::new(),
            opens: OpenFiles::default(),
            parents: DirParents::default(),
            open_dirs: OpenDirs::default(),
            no_caps: NoCaps::default(),
            acquiring: DashMap::new(),
            notifier: Mutex::new(None),
            workers: Workers::default(),
            errors: WriteErrors::default(),
            handles: Handles::default(),
            flush_ids: AtomicU64::new(1),
            space: Notify::new(),
            kick: Arc::new(Notify::new()),
            stop: watch::channel(false).0,
            dirty_limit,
            no_space: Mutex::new(None),
            config,
            transport,
        }
    }

    pub fn config(&self) -> &Arc<ClusterConfig> {
        &self.config
    }

    /// This client's log.
    pub fn log_id(&self) -> LogId {
        self.log_id
    }

    /// This mount's session id.
    pub fn session(&self) -> SessionId {
        self.meta.session()
    }

    /// Message counters: callbacks received, renewals and manager requests sent.
    pub fn stats(&self) -> ClientStats {
        self.meta.counters().snapshot()
    }

    /// Renews every manager's lease now (the background renewer does this every lease/4).
    pub async fn renew_all(&self) {
        self.meta.renew_all().await
    }

    /// The entry/attribute TTL to hand the kernel for `ino` now: never longer than the
    /// lease time left.
    pub fn kernel_ttl(&self, ino: InodeId) -> Duration {
        self.meta.kernel_ttl(ino)
    }

    /// The background workers (flusher, renewer) and what each is doing.
    pub fn workers(&self) -> Vec<WorkerStatus> {
        self.workers.statuses()
    }

    /// Installs (at mount) or removes (at unmount) the kernel's invalidation channel.
    pub fn set_notifier(&self, notifier: Option<Arc<dyn KernelCache>>) {
        *self.notifier.lock().unwrap_or_else(|e| e.into_inner()) = notifier;
    }

    pub(crate) fn notifier(&self) -> Option<Arc<dyn KernelCache>> {
        self.notifier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `dir`'s buffered listing pages are stale (forwarded to `open_dirs`).
    pub(crate) fn bump_dir_generation(&self, dir: InodeId) {
        self.open_dirs.bump(dir);
    }

    /// Every buffered listing page is stale (forwarded to `open_dirs`).
    pub(crate) fn bump_dir_generations(&self) {
        self.open_dirs.bump_all();
    }

    /// Bytes written locally and not yet committed.
    pub fn dirty_bytes(&self) -> u64 {
        self.lock_state().dirty_bytes
    }

    pub(crate) fn lock_state(&self) -> MutexGuard<'_, DataState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn reader(&self) -> &LogReader {
        self.reader
            .get_or_init(|| LogReader::new(self.config.clone(), self.transport.clone()))
    }

    pub(crate) fn next_fh(&self) -> FileHandle {
        self.handles.next()
    }

    pub(crate) fn next_flush_id(&self) -> u64 {
        self.flush_ids.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn has_dirty(&self) -> bool {
        self.lock_state()
            .files
            .values()
            .any(|w| !w.dirty.is_empty())
    }

    /// Ends this client's session at every manager (a clean unmount, after `sync_all`):
    /// they forget what it held instead of calling it back. Best effort, bounded.
    pub async fn goodbye(&self) {
        let byes = self.config.manager_nodes().into_iter().map(|m| {
            let req = ManagerRequest::Goodbye {
                session: self.meta.session(),
            };
            let node = m.id;
            async move {
                if let Err(e) = self.meta.call_once(node, req, PROBE_TIMEOUT).await {
                    tracing::debug!(manager = %node, "goodbye failed: {e}");
                }
            }
        });
        futures::future::join_all(byes).await;
    }

    /// Stops the background flusher (after `sync_all`, at unmount).
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

/// Answers manager callbacks for a client (installed with `Transport::set_callback_handler`
/// before the first request; the lease runtime carries them out).
#[derive(Default)]
pub struct CallbackHandler {
    client: OnceLock<Weak<Client>>,
}

impl CallbackHandler {
    pub fn new() -> Arc<CallbackHandler> {
        Arc::new(CallbackHandler::default())
    }

    fn attach(&self, client: &Arc<Client>) {
        let _ = self.client.set(Arc::downgrade(client));
    }
}

impl Handler for CallbackHandler {
    fn handle(&self, peer: Peer, req: Request, _bulk: Bytes) -> BoxFuture<'_, (Response, Bytes)> {
        let client = self.client.get().and_then(Weak::upgrade);
        Box::pin(async move {
            // Callbacks come over connections this client opened to configured nodes; a
            // peer whose certificate names an identity must hold the callback right.
            if let Some(id) = &peer.identity {
                if let Err(d) = proto::authz::check(Some(id), &req) {
                    tracing::warn!(from = %peer.addr, "refused: {d}");
                    return (Response::Error(d.into()), Bytes::new());
                }
            }
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

/// The background flusher: writes dirty data when kicked (enough is buffered) and at least
/// every `interval`. Ends when `stop` turns true or the client is gone.
async fn flusher(
    client: Weak<Client>,
    kick: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    interval: Duration,
    worker: Arc<Worker>,
) {
    loop {
        tokio::select! {
            _ = kick.notified() => {}
            _ = tokio::time::sleep(interval) => {}
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
        if c.has_dirty() {
            worker.busy();
            match c.flush_inodes(Which::Ready, false).await {
                Ok(_) => worker.idle(),
                Err(e) => {
                    tracing::warn!("background flush failed, will retry: {e}");
                    worker.failed(e);
                }
            }
        }
    }
}

/// The background renewer: every lease/4 renews every manager that grants leases, then
/// promises the log's reclaim horizon. Ends when `stop` turns true or the client is gone.
async fn renewer(client: Weak<Client>, mut stop: watch::Receiver<bool>, worker: Arc<Worker>) {
    loop {
        let every = {
            let Some(c) = client.upgrade() else {
                worker.stopped();
                return;
            };
            c.meta.renew_every()
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
        c.meta.renew_all().await;
        worker.idle();
        // In its own task, one bounded attempt per manager: a manager that is down must
        // not hold up the next renewal (which is how a restart is noticed and reclaimed).
        tokio::spawn(async move { c.promise_horizon().await });
    }
}
