//! The composition root of the client: connects to the cluster, owns the parts and starts
//! and stops the background workers.
//!
//! Owns: the `Client` value every operation runs on, with the manager-RPC layer (`meta`),
//! the write-back part (`data::writeback::WriteBack`: log writer, horizon, commit locks,
//! write verifier, write errors), the data state (`data::DataState`: dirty files, block
//! cache, extent cache, write leases), the lease session's state
//! (`lease::session_state::SessionState`), the attribute cache (`data::attrs`), listing caches, open counts, and
//! the workers (flusher, renewer) with their status; and the
//! transport's callback handler, which hands manager callbacks to the lease runtime
//! (`lease::session`). The operations live in `ops` (namespace, attributes, I/O, listing),
//! `data` (read path, write-back) and `lease::session`; they import this module, and this
//! module imports none of them (the workers and the callback handler call their methods).
//! Must not: implement file-system operations, or hold a lock across an await.

use crate::coop::Coop;
use crate::data::attrs::AttrCache;
use crate::data::cache::BlockCache;
use crate::data::dir_names::DirNames;
use crate::data::dir_parents::DirParents;
use crate::data::no_caps::NoCaps;
use crate::data::open_dirs::OpenDirs;
use crate::data::open_files::OpenFiles;
use crate::data::writeback::WriteBack;
use crate::data::{DataState, Which};
use crate::error::{ClientError, FsError};
use crate::handle::Handles;
use crate::kernel::notify::KernelCache;
use crate::lease::session_state::SessionState;
use crate::meta::{LeaseActions, Meta, Target};
use crate::stats::ClientStats;
use bytes::Bytes;
use proto::config::ClusterConfig;
use proto::ids::{InodeId, LogId, SessionId};
use proto::live::LiveConfig;
use proto::msg::{ManagerRequest, ManagerResponse, RemoteError, Request, Response};
use proto::transport::{BoxFuture, Handler, Peer, Transport};
use proto::worker::{Worker, WorkerStatus, Workers};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;
use storage::log::LogReader;
use tokio::sync::{watch, Notify};

/// Timeout of a `Ping` at connect and of a storage `Stat`.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub use crate::handle::FileHandle;

/// A Shoal client: talks to managers for metadata and to its own log for data.
pub struct Client {
    pub(crate) config: Arc<ClusterConfig>,
    /// The config the mount's writers and readers follow (storage nodes added while
    /// mounted, `proto::follow`); `config` stays the one mounted with, for slots and
    /// tunables.
    pub(crate) live: Arc<LiveConfig>,
    pub(crate) transport: Arc<Transport>,
    /// The manager-RPC layer: routing, retry, errno mapping, volume leases, counters.
    pub(crate) meta: Arc<Meta>,
    /// Write-back: the log writer, its horizon, commit locks, the write verifier, write
    /// errors, the dirty-memory limit and the ENOSPC hold (`data::writeback`).
    pub(crate) writeback: WriteBack,
    /// Dirty files, block and extent caches, write leases under one short-held lock (one
    /// invariant spans them; outside `data/` only `DataState`'s methods reach them).
    pub(crate) state: Mutex<DataState>,
    /// This client, for work it starts in the background (reclaims).
    pub(crate) this: OnceLock<std::sync::Weak<Client>>,
    pub(crate) reader: OnceLock<LogReader>,
    /// What this client is called in metrics: its mountpoint once mounted.
    label: OnceLock<Arc<str>>,
    /// The attribute cache: what the managers last said, the drop count and the floors of
    /// our own changes (`data::attrs`).
    pub(crate) attrs: AttrCache,
    /// Local open counts per inode (their own part).
    pub(crate) opens: OpenFiles,
    /// Wakes the releaser: a last close owes its manager a release (`data::open_files`).
    pub(crate) releases_due: Arc<Notify>,
    /// Parents of directories we looked up (for `..` in readdir; their own part).
    pub(crate) parents: DirParents,
    /// Open directory streams and listing generations (their own part).
    pub(crate) open_dirs: OpenDirs,
    /// Inodes known to have no `security.capability` (the kernel asks before every write).
    pub(crate) no_caps: NoCaps,
    /// Directories whose every name we know (made by us, held since): negative lookups in
    /// them are answered locally (their own part).
    pub(crate) dir_names: DirNames,
    /// The lease session's state: `AcquireWrite` gates, inodes whose write lease must be
    /// asked for again, the kernel's invalidation channel (`lease::session_state`).
    pub(crate) lease_session: SessionState,
    /// Cooperative caching: peer-read counters and the peers that failed lately (`coop`).
    pub(crate) coop: Coop,
    /// The background workers (flusher, renewer) and their status.
    workers: Workers,
    handles: Handles,
    stop: watch::Sender<bool>,
}

/// How often a mount compares the wall clock with the boot clock (`proto::wall_clock`).
const CLOCK_CHECK: Duration = Duration::from_secs(2);

/// `config`, or the newer one the config group's members answer if a running mount would
/// install it (`proto::live::accepts`).
async fn newest_to_follow(
    config: Arc<ClusterConfig>,
    transport: &Arc<Transport>,
) -> Arc<ClusterConfig> {
    let Some(newer) = proto::follow::newer_to_follow(transport, &config).await else {
        return config;
    };
    tracing::info!(
        local = config.file.epoch,
        committed = newer.file.epoch,
        "starting from the committed cluster config (newer than cluster.toml here)"
    );
    if let Ok(peers) = proto::identity::expected_peers(&newer) {
        transport.expect_peers(peers);
    }
    Arc::new(newer)
}

impl Client {
    /// Connects to the cluster: every manager must answer a ping, and the root directory
    /// must be served (waiting up to a minute while managers recover). Starts the flusher.
    pub async fn connect(
        config: Arc<ClusterConfig>,
        transport: Arc<Transport>,
    ) -> Result<Arc<Client>, ClientError> {
        // Before the first request: callbacks arrive over the connections we open (one
        // opened before the handler is set never serves them).
        let callbacks = CallbackHandler::new();
        transport.set_callback_handler(callbacks.clone());
        // Start from the members' committed config when it is newer and this mount may
        // follow it (a takeover made since `cluster.toml` was written here): the groups are
        // then pinged where they are served now.
        let config = newest_to_follow(config, &transport).await;
        let managers: Vec<_> = config.manager_nodes().into_iter().cloned().collect();
        if managers.is_empty() {
            return Err(ClientError::NoManagers);
        }
        let pings = managers.iter().map(|m| {
            let t = transport.clone();
            async move {
                (
                    m,
                    t.call_timeout(
                        m.group_address,
                        &Request::Ping,
                        Default::default(),
                        PROBE_TIMEOUT,
                    )
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
                        addr: m.group_address,
                        reason: format!("answered {other}"),
                    });
                }
                Err(e) => {
                    return Err(ClientError::ManagerUnreachable {
                        name: m.name.clone(),
                        addr: m.group_address,
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
                    .map(|m| m.group_address)
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
                client.attrs.insert(a);
            }
            Ok(other) => return Err(ClientError::NoRoot(format!("unexpected answer {other:?}"))),
            Err(e) => return Err(ClientError::NoRoot(e.to_string())),
        }
        // Promise the log's horizon (nothing below segment 0 yet) before the first write:
        // until a manager knows this session's horizon, the reclaimer may seal the new log
        // above segments it is about to commit, which a commit then learns as a refusal
        // (an fsync in the first renewal period of a mount failed so in CI).
        client.writeback.promise_horizon().await;
        let interval = Duration::from_millis(client.config.file.client.flush_interval_ms.max(1));
        // Cooperative caching: peers reach us at the address our connections to the
        // managers come from (the endpoint we dial from also accepts when bound so), which
        // is what the managers' holder hints name. Only peer reads are answered there.
        if client.coop.configured() && client.transport.accepts() {
            let serving = client
                .transport
                .serve(Arc::new(PeerServer::new(Arc::downgrade(&client))));
            let mut stop = client.stop.subscribe();
            tokio::spawn(async move {
                let _ = stop.wait_for(|s| *s).await;
                serving.abort();
            });
        }
        if client.coop.configured() {
            tokio::spawn(hint_sender(
                Arc::downgrade(&client),
                client.stop.subscribe(),
                client.workers.register("holder-hints"),
            ));
        }
        tokio::spawn(flusher(
            Arc::downgrade(&client),
            client.writeback.kick().clone(),
            client.stop.subscribe(),
            interval,
            client.workers.register("flusher"),
        ));
        tokio::spawn(releaser(
            Arc::downgrade(&client),
            client.releases_due.clone(),
            client.stop.subscribe(),
            client.workers.register("releaser"),
        ));
        tokio::spawn(renewer(
            Arc::downgrade(&client),
            client.stop.subscribe(),
            client.workers.register("renewer"),
        ));
        {
            let (live, t, mut stop) = (
                client.live.clone(),
                client.transport.clone(),
                client.stop.subscribe(),
            );
            let follower = tokio::spawn(proto::follow::run(live, t.clone(), move |c| {
                match proto::identity::expected_peers(c) {
                    Ok(peers) => t.expect_peers(peers),
                    Err(e) => {
                        tracing::warn!(error = %e, "the new config names a node identity that cannot be: keeping the peers expected before")
                    }
                }
            }));
            tokio::spawn(async move {
                let _ = stop.wait_for(|s| *s).await;
                follower.abort();
            });
        }
        tokio::spawn(proto::wall_clock::watch(
            format!("client {}", client.log_id()),
            CLOCK_CHECK,
            client.stop.subscribe(),
        ));
        tracing::info!(log = %client.log_id(), session = %format_args!("{:x}", client.meta.session()), "client connected");
        Ok(client)
    }

    /// A client without network checks and without a flusher (for `connect` and tests).
    pub(crate) fn new(config: Arc<ClusterConfig>, transport: Arc<Transport>) -> Client {
        let live = LiveConfig::new(config.clone());
        let cache = BlockCache::new(config.file.client.cache_bytes);
        // Sessions and logs carry the tag of this client's identity: servers accept its
        // fragments, commits and session requests only with that tag (`proto::authz`).
        let tag = transport.local_identity().map(|i| i.log_tag()).unwrap_or(0);
        let meta = Arc::new(Meta::new(
            live.clone(),
            transport.clone(),
            proto::authz::session_of(tag, rand::random::<u64>()),
        ));
        let writeback = WriteBack::new(
            live.clone(),
            transport.clone(),
            meta.clone(),
            LogId::client_of(tag, rand::random::<u64>()),
        );
        Client {
            meta,
            writeback,
            state: Mutex::new(DataState::new(cache)),
            this: OnceLock::new(),
            reader: OnceLock::new(),
            label: OnceLock::new(),
            attrs: AttrCache::default(),
            opens: OpenFiles::default(),
            releases_due: Arc::new(Notify::new()),
            parents: DirParents::default(),
            open_dirs: OpenDirs::default(),
            no_caps: NoCaps::default(),
            dir_names: DirNames::default(),
            lease_session: SessionState::default(),
            coop: Coop::new(
                config.file.client.peer_reads,
                &transport,
                // Forwarded blocks kept for peers: an eighth of the cache, at least 16.
                ((config.file.client.cache_bytes / crate::data::cache::BLOCK) as usize / 8).max(16),
            ),
            workers: Workers::default(),
            handles: Handles::default(),
            stop: watch::channel(false).0,
            config,
            live,
            transport,
        }
    }

    pub fn config(&self) -> &Arc<ClusterConfig> {
        &self.config
    }

    /// The epoch of the cluster config this client follows (`proto::follow`).
    pub fn config_epoch(&self) -> u64 {
        self.live.epoch()
    }

    /// This client's log.
    pub fn log_id(&self) -> LogId {
        self.writeback.log_id()
    }

    /// This mount's session id.
    pub fn session(&self) -> SessionId {
        self.meta.session()
    }

    /// Message counters: callbacks received, renewals and manager requests sent.
    pub fn stats(&self) -> ClientStats {
        self.meta.counters().snapshot()
    }

    /// Where peers reach this client for peer reads (`None` when it does not serve them).
    pub fn peer_address(&self) -> Option<std::net::SocketAddr> {
        if self.coop.configured() && self.transport.accepts() {
            self.transport.local_addr().ok()
        } else {
            None
        }
    }

    /// Cooperative-caching counters: where block reads were served from, what peers got
    /// from us (also the virtual xattr `shoal.stats`).
    pub fn coop_stats(&self) -> crate::coop::stats::CoopStats {
        crate::coop::stats::CoopStats {
            cache_bytes: self.config.file.client.cache_bytes,
            peer_reads: self.coop.enabled(),
            ..self.coop.counters.snapshot()
        }
    }

    /// Switches cooperative caching on or off at runtime (the `shoal.peer_reads` xattr).
    pub fn set_peer_reads(&self, on: bool) -> Result<(), crate::coop::NotConfigured> {
        self.coop.set_enabled(on)?;
        tracing::info!(log = %self.log_id(), on, "cooperative caching switched");
        Ok(())
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
        self.lease_session.set_notifier(notifier);
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
        self.lock_state().dirty_bytes()
    }

    /// Inodes with writes this client accepted and no manager has yet: buffered, or taken
    /// by a flush whose commit is not answered yet. What a mount cut off now could lose
    /// (its next fsync or close of such an inode reports EIO). Sorted, no repeats.
    pub fn unflushed_inodes(&self) -> Vec<InodeId> {
        let mut inos = self.lock_state().buffered_where(|_| true);
        inos.extend(self.writeback.commits_under_way());
        inos.sort_unstable();
        inos.dedup();
        inos
    }

    pub(crate) fn lock_state(&self) -> MutexGuard<'_, DataState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `mount` label of this client's metrics: the mountpoint given to
    /// `set_metrics_label`, else `client LOG`.
    pub fn metrics_label(&self) -> Arc<str> {
        let label = self
            .label
            .get_or_init(|| Arc::from(format!("client {}", self.log_id())))
            .clone();
        self.coop.counters.set_label(label.clone());
        label
    }

    /// Names this client in metrics (its mountpoint); only the first name given counts.
    pub fn set_metrics_label(&self, label: &str) {
        let _ = self.label.set(Arc::from(label));
        // The forward metrics, counted in background tasks, carry it too.
        let _ = self.metrics_label();
    }

    pub(crate) fn reader(&self) -> &LogReader {
        self.reader
            .get_or_init(|| LogReader::following(self.live.clone(), self.transport.clone()))
    }

    pub(crate) fn next_fh(&self) -> FileHandle {
        self.handles.next()
    }

    pub(crate) fn has_dirty(&self) -> bool {
        self.lock_state().has_dirty_data()
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

/// Answers the requests peers send over connections they open to this client: peer reads
/// only (cooperative caching), only from client identities; the work is in `coop::server`.
pub struct PeerServer {
    client: Weak<Client>,
}

impl PeerServer {
    fn new(client: Weak<Client>) -> PeerServer {
        PeerServer { client }
    }
}

impl Handler for PeerServer {
    fn handle(&self, peer: Peer, req: Request, bulk: Bytes) -> BoxFuture<'_, (Response, Bytes)> {
        let client = self.client.upgrade();
        Box::pin(async move {
            if let Err(d) = proto::authz::check(peer.identity.as_deref(), &req) {
                proto::warn_limited!(from = %peer.addr, "refused: {d}");
                return (Response::Error(d.into()), Bytes::new());
            }
            match (client, req) {
                (Some(c), Request::Peer(p)) => c.serve_peer(peer.addr, p, bulk),
                (None, Request::Peer(_)) => (
                    Response::Error(RemoteError::Unavailable("client is not connected".into())),
                    Bytes::new(),
                ),
                (_, other) => (
                    Response::Error(RemoteError::NoRole(format!(
                        "a client answers only peer reads on connections peers open, not {other}"
                    ))),
                    Bytes::new(),
                ),
            }
        })
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
                Err(e) if e == FsError::EAGAIN => {
                    // A manager is unavailable (recovering, or in its grace period): the
                    // data stays buffered; a pause keeps writers waiting for room from
                    // kicking a flusher that cannot commit yet in a tight loop.
                    tracing::debug!("background flush: a manager is unavailable, will retry");
                    worker.failed(e);
                    drop(c);
                    tokio::select! {
                        _ = tokio::time::sleep(UNAVAILABLE_PAUSE) => {}
                        _ = stop.changed() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!("background flush failed, will retry: {e}");
                    worker.failed(e);
                }
            }
        }
    }
}

/// The background releaser: a moment after a last close, sends every release owed
/// (`Client::send_releases`), so that a burst of closes costs one request per manager.
/// Ends when `stop` turns true or the client is gone (an unmount sends what is left first).
async fn releaser(
    client: Weak<Client>,
    due: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    worker: Arc<Worker>,
) {
    loop {
        tokio::select! {
            _ = due.notified() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            worker.stopped();
            return;
        }
        // Gather the closes of the next moment into the same batch.
        tokio::select! {
            _ = tokio::time::sleep(RELEASE_GATHER) => {}
            _ = stop.changed() => {}
        }
        let Some(c) = client.upgrade() else {
            worker.stopped();
            return;
        };
        worker.busy();
        c.send_releases().await;
        worker.idle();
    }
}

/// How long the releaser gathers closes before it sends their releases.
const RELEASE_GATHER: Duration = Duration::from_millis(20);

/// How long the background flusher pauses after a manager answered that it is unavailable.
const UNAVAILABLE_PAUSE: Duration = Duration::from_millis(100);

/// How often holder hints are reported to the managers (in batches).
const HINT_EVERY: Duration = Duration::from_secs(1);
/// Every this many rounds of the hint sender, every window the cache holds blocks of is
/// reported again (well within the managers' `holders::MAX_AGE` of 10 minutes, after which
/// an unreported holder is no longer named).
const REPORT_ALL_EVERY: u64 = 300;

/// One entry of a `HolderHints` batch.
enum HintEntry {
    /// We forwarded a block of the window to that peer.
    Forwarded(proto::msg::HolderHint),
    /// Our cache holds blocks of the window now (`true`), or none any more (`false`).
    Own(proto::msg::HolderWindow, bool),
}

/// The background holder-hint sender (cooperative caching): every `HINT_EVERY`, tells each
/// manager, for its inodes, where this client forwarded blocks and which extent windows its
/// block cache started or stopped holding blocks of, and every `REPORT_ALL_EVERY` rounds all
/// the windows it holds blocks of (`HolderHints`, one batch of at most
/// `MAX_HOLDER_HINTS` entries per manager and request; best effort: a lost batch costs
/// readers a fallback or a storage read). Ends when `stop` turns true or the client is
/// gone.
async fn hint_sender(client: Weak<Client>, mut stop: watch::Receiver<bool>, worker: Arc<Worker>) {
    use proto::msg::HolderWindow;
    let mut round: u64 = 0;
    loop {
        round += 1;
        tokio::select! {
            _ = tokio::time::sleep(HINT_EVERY) => {}
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
        let forwarded = c.coop.forwarding.take_hints();
        let own = c
            .lock_state()
            .take_window_changes(round.is_multiple_of(REPORT_ALL_EVERY));
        // Only a client that answers peers is named as a holder of its own blocks.
        let serving = c.transport.accepts();
        let window = |(ino, offset)| HolderWindow { ino, offset };
        let entries: Vec<HintEntry> = forwarded
            .into_iter()
            .map(HintEntry::Forwarded)
            .chain(
                own.held
                    .into_iter()
                    .filter(|_| serving)
                    .map(|w| HintEntry::Own(window(w), true)),
            )
            .chain(
                own.gone
                    .into_iter()
                    .map(|w| HintEntry::Own(window(w), false)),
            )
            .collect();
        if entries.is_empty() {
            continue;
        }
        worker.busy();
        let mut by_node: std::collections::BTreeMap<proto::ids::NodeId, Vec<HintEntry>> =
            Default::default();
        for e in entries {
            let ino = match &e {
                HintEntry::Forwarded(h) => h.ino,
                HintEntry::Own(w, _) => w.ino,
            };
            by_node
                .entry(c.config.slot_owner(ino.slot()))
                .or_default()
                .push(e);
        }
        for (node, entries) in by_node {
            for batch in entries.chunks(proto::msg::MAX_HOLDER_HINTS) {
                let (mut hints, mut held, mut gone) = (Vec::new(), Vec::new(), Vec::new());
                for e in batch {
                    match e {
                        HintEntry::Forwarded(h) => hints.push(*h),
                        HintEntry::Own(w, true) => held.push(*w),
                        HintEntry::Own(w, false) => gone.push(*w),
                    }
                }
                let req = ManagerRequest::HolderHints {
                    session: c.session(),
                    hints,
                    held,
                    gone,
                };
                if let Err(e) = c.meta.call(Target::Node(node), req).await {
                    tracing::debug!(manager = %node, "holder hints not sent: {e}");
                }
            }
        }
        worker.idle();
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
        // In its own task, so that the next round comes on time whatever this one waits
        // for: a manager whose renewal still runs is skipped (`renew_each`), the others
        // are renewed, which is how a restart is noticed and reclaimed. Then one bounded
        // attempt per manager to promise the reclaim horizon, and to sync a manager that
        // answered creates of ours a round ago and no sync covered since.
        worker.busy();
        tokio::spawn(async move {
            c.meta.renew_each().await;
            c.writeback.promise_horizon().await;
            c.writeback.sync_aged_creates().await
        });
        worker.idle();
    }
}
