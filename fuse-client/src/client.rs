//! The file system core, independent of FUSE: every operation as an async method that
//! returns an errno on failure. Usable from tests without a mount.
//!
//! Owns the client's state: the attribute cache, dirty data and the block cache (through
//! `DataState`), open counts per inode (for `Open`/`Release` at the manager), directory
//! streams and the log writer. Namespace and attribute operations live here; I/O is in
//! `io.rs`, write-back in `writeback.rs`, directory listing in `dir.rs`.
//! Must not block a runtime thread: locks held here are short and never across an await,
//! except the async per-inode commit locks (one flush of an inode at a time) and the log
//! lock (segment appends only).

use crate::attr::overlay;
use crate::cache::BlockCache;
use crate::dirty::FileWrites;
use crate::error::{ClientError, FsError};
use crate::extents::ExtentCache;
use crate::lease::{CallbackHandler, HeldLease, Leases, WriteLease};
use crate::remote::{self, Target};
use crate::stats::{ClientStats, Counters};
use crate::writeback::{self, Which};
use dashmap::DashMap;
use proto::config::ClusterConfig;
use proto::ids::{InodeId, LogId};
use proto::msg::{
    Attr, Caller, FsCounts, ManagerRequest, ManagerResponse, NewNode, RenameFlags, Request,
    Response, SetAttrs, StorageRequest, StorageResponse,
};
use proto::route::ManagerClient;
use proto::transport::Transport;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use storage::log::{LogReader, LogWriter};
use tokio::sync::{watch, Notify};

/// Setting this extended attribute (any value, on any inode) drops this client's block,
/// extent and attribute caches; the managers are not told (benchmarks use it to read cold).
pub const DROP_CACHES_XATTR: &str = "shoal.drop_caches";
/// Longest name a directory entry may have.
pub const NAME_MAX: usize = 255;
/// Dirty memory at which writers wait for the flusher (at least two segments).
const DIRTY_LIMIT: u64 = 64 << 20;
/// Timeout of a `Ping` at connect and of a storage `Stat`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Data state guarded by one short-held lock.
pub(crate) struct DataState {
    pub files: HashMap<InodeId, FileWrites>,
    /// Bytes held in every dirty layer of every file.
    pub dirty_bytes: u64,
    pub cache: BlockCache,
    pub extents: ExtentCache,
    /// Write leases per inode (checked and used under this lock, see `lease`).
    pub leases: HashMap<InodeId, WriteLease>,
}

/// File system totals for statfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}

/// A Shoal client: talks to managers for metadata and to its own log for data.
pub struct Client {
    pub(crate) config: Arc<ClusterConfig>,
    pub(crate) transport: Arc<Transport>,
    pub(crate) mc: ManagerClient,
    /// This mount's session id for `Open`/`Release`/`Create`.
    pub(crate) session: u64,
    pub(crate) log_id: LogId,
    /// The reclaim horizon of `log_id` (pins of flights and resends, next segment).
    pub(crate) horizon: crate::horizon::Horizon,
    /// Per manager: the (incarnation, horizon) last promised with `LogHorizon`.
    pub(crate) promised: DashMap<proto::ids::NodeId, (Option<u64>, u64)>,
    pub(crate) state: Mutex<DataState>,
    /// The log writer, created at the first flush; its lock serialises segment appends
    /// (never held across a manager call).
    pub(crate) log: tokio::sync::Mutex<Option<LogWriter>>,
    /// Commits accepted without sync, until a sync of the same manager incarnation covers
    /// them (the write verifier, see `verifier`).
    pub(crate) unsynced: Mutex<crate::verifier::Unsynced>,
    /// Inodes whose write lease this client reclaimed from a restarted manager, with that
    /// manager's incarnation: their suspect commits may be sent again (nobody else can have
    /// written in between).
    pub(crate) reclaimed: DashMap<InodeId, u64>,
    /// This client, for work it starts in the background (reclaims).
    pub(crate) this: OnceLock<std::sync::Weak<Client>>,
    /// Commit locks of inodes being flushed (see `writeback::InodeCommit`).
    pub(crate) commits: DashMap<InodeId, Arc<tokio::sync::Mutex<()>>>,
    reader: OnceLock<LogReader>,
    /// Latest attributes seen from the managers (without local overlay).
    pub(crate) attrs: DashMap<InodeId, Attr>,
    /// Inodes with unflushed writes whose write lease a manager restart took away: the
    /// lease is asked for again before they are committed.
    pub(crate) reacquire: DashMap<InodeId, ()>,
    /// Local open count per inode; the mutex orders `Open`/`Release` RPCs of one inode.
    opens: DashMap<InodeId, Arc<tokio::sync::Mutex<u32>>>,
    /// Parent of directories we looked up (for `..` in readdir).
    pub(crate) parents: DashMap<InodeId, InodeId>,
    pub(crate) dirs: DashMap<u64, Arc<tokio::sync::Mutex<crate::dir::DirStream>>>,
    /// Inodes known to have no `security.capability` (the kernel asks before every write).
    pub(crate) no_caps: DashMap<InodeId, ()>,
    /// Volume leases per manager.
    pub(crate) leases: Leases,
    /// Serialises `AcquireWrite` of one inode (never taken by a callback).
    pub(crate) acquiring: DashMap<InodeId, Arc<tokio::sync::Mutex<()>>>,
    /// Bumped per directory when its cached listing is invalidated.
    dir_gens: DashMap<InodeId, u64>,
    /// Bumped when every cached listing is invalidated.
    dir_epoch: AtomicU64,
    /// The kernel's invalidation channel while mounted.
    notifier: Mutex<Option<Arc<dyn crate::notify::KernelCache>>>,
    /// Kernel entry invalidations sent and not yet done (`notify.rs`).
    pub(crate) entry_invals_pending: Arc<AtomicU64>,
    /// Bumped whenever cached attributes are dropped (a callback, a lost lease): an
    /// attribute answer that was in flight meanwhile is not cached (`note_attr_since`).
    pub(crate) attr_drops: AtomicU64,
    /// The background workers (flusher, renewer) and their status.
    workers: crate::worker::Workers,
    pub(crate) counters: Counters,
    /// Write errors found by background flushes, reported at the next flush/fsync.
    pub(crate) errors: DashMap<InodeId, FsError>,
    next_fh: AtomicU64,
    flush_ids: AtomicU64,
    pub(crate) space: Notify,
    pub(crate) kick: Arc<Notify>,
    stop: watch::Sender<bool>,
    pub(crate) dirty_limit: u64,
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
        if let Err((node, e)) = client.hello_all().await {
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
        tokio::spawn(writeback::flusher(
            Arc::downgrade(&client),
            client.kick.clone(),
            client.stop.subscribe(),
            interval,
            client.workers.register("flusher"),
        ));
        tokio::spawn(crate::lease::renewer(
            Arc::downgrade(&client),
            client.stop.subscribe(),
            client.workers.register("renewer"),
        ));
        tracing::info!(log = %client.log_id, session = client.session, "client connected");
        Ok(client)
    }

    /// A client without network checks and without a flusher (for `connect` and tests).
    pub(crate) fn new(config: Arc<ClusterConfig>, transport: Arc<Transport>) -> Client {
        let tun = &config.file.client;
        let dirty_limit = DIRTY_LIMIT.max(tun.segment_bytes.saturating_mul(2));
        let cache = BlockCache::new(tun.cache_bytes);
        Client {
            mc: ManagerClient::new(config.clone(), transport.clone()),
            session: rand::random::<u64>(),
            log_id: LogId::client(rand::random::<u64>()),
            horizon: Default::default(),
            promised: DashMap::new(),
            state: Mutex::new(DataState {
                files: HashMap::new(),
                dirty_bytes: 0,
                cache,
                extents: ExtentCache::default(),
                leases: HashMap::new(),
            }),
            log: tokio::sync::Mutex::new(None),
            commits: DashMap::new(),
            this: OnceLock::new(),
            reclaimed: DashMap::new(),
            unsynced: Mutex::new(Default::default()),
            reader: OnceLock::new(),
            attrs: DashMap::new(),
            reacquire: DashMap::new(),
            opens: DashMap::new(),
            parents: DashMap::new(),
            dirs: DashMap::new(),
            no_caps: DashMap::new(),
            leases: Leases::new(config.manager_nodes().into_iter().map(|m| m.id)),
            acquiring: DashMap::new(),
            dir_gens: DashMap::new(),
            dir_epoch: AtomicU64::new(0),
            notifier: Mutex::new(None),
            entry_invals_pending: Arc::new(AtomicU64::new(0)),
            attr_drops: AtomicU64::new(0),
            workers: crate::worker::Workers::default(),
            counters: Counters::default(),
            errors: DashMap::new(),
            next_fh: AtomicU64::new(1),
            flush_ids: AtomicU64::new(1),
            space: Notify::new(),
            kick: Arc::new(Notify::new()),
            stop: watch::channel(false).0,
            dirty_limit,
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
    pub fn session(&self) -> u64 {
        self.session
    }

    /// Message counters: callbacks received, renewals and manager requests sent.
    pub fn stats(&self) -> ClientStats {
        self.counters.snapshot()
    }

    /// The background workers (flusher, renewer) and what each is doing.
    pub fn workers(&self) -> Vec<crate::worker::WorkerStatus> {
        self.workers.statuses()
    }

    /// Installs (at mount) or removes (at unmount) the kernel's invalidation channel.
    pub fn set_notifier(&self, notifier: Option<fuser::Notifier>) {
        let cache = notifier.map(|n| Arc::new(n) as Arc<dyn crate::notify::KernelCache>);
        *self.notifier.lock().unwrap_or_else(|e| e.into_inner()) = cache;
    }

    pub(crate) fn notifier(&self) -> Option<Arc<dyn crate::notify::KernelCache>> {
        self.notifier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The generation of `dir`'s listing; a buffered page of another generation is stale.
    pub(crate) fn dir_generation(&self, dir: InodeId) -> (u64, u64) {
        (
            self.dir_epoch.load(Ordering::Acquire),
            self.dir_gens.get(&dir).map(|g| *g).unwrap_or(0),
        )
    }

    pub(crate) fn bump_dir_generation(&self, dir: InodeId) {
        *self.dir_gens.entry(dir).or_insert(0) += 1;
    }

    pub(crate) fn bump_dir_generations(&self) {
        self.dir_epoch.fetch_add(1, Ordering::AcqRel);
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

    pub(crate) fn next_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
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
        match self.call(Target::Node(node), ManagerRequest::Sync).await? {
            ManagerResponse::Synced { incarnation } => {
                self.after_sync(node, incarnation, mark).await;
                Ok(())
            }
            other => Err(remote::unexpected("Sync", &other)),
        }
    }

    pub(crate) fn lock_unsynced(&self) -> MutexGuard<'_, crate::verifier::Unsynced> {
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
            let ok = match self.call(Target::Route, req).await {
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
                self.errors.insert(ino, FsError::EIO);
            }
        }
    }

    /// Ends this client's session at every manager (a clean unmount, after `sync_all`):
    /// they forget what it held instead of calling it back. Best effort, bounded.
    pub async fn goodbye(&self) {
        let byes = self.config.manager_nodes().into_iter().map(|m| {
            let req = ManagerRequest::Goodbye {
                session: self.session,
            };
            let node = m.id;
            async move {
                match tokio::time::timeout(PROBE_TIMEOUT, self.mc.call_node(node, req)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::debug!(manager = %node, "goodbye failed: {e}"),
                    Err(_) => tracing::debug!(manager = %node, "goodbye not answered"),
                }
            }
        });
        futures::future::join_all(byes).await;
    }

    /// Stops the background flusher (after `sync_all`, at unmount).
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Records attributes from a manager. A new version of data we cache (changed by
    /// another client, or by us in a way we did not apply locally) drops our clean copies.
    /// Returns the freshest attributes known: an answer overtaken by a newer one already
    /// seen (a commit's answer arriving before an earlier getattr's) is not used.
    pub(crate) fn note_attr(&self, attr: &Attr) -> Attr {
        let newer = self
            .attrs
            .get(&attr.ino)
            .filter(|old| old.version > attr.version)
            .map(|old| old.clone());
        if let Some(newer) = newer {
            return newer;
        }
        let changed = self
            .attrs
            .get(&attr.ino)
            .is_some_and(|old| old.version != attr.version);
        self.attrs.insert(attr.ino, attr.clone());
        if changed {
            let mut st = self.lock_state();
            if !st.files.contains_key(&attr.ino) {
                st.cache.invalidate(attr.ino);
                st.extents.invalidate(attr.ino);
            }
            drop(st);
            self.no_caps.remove(&attr.ino);
        }
        attr.clone()
    }

    /// Records attributes from the answer to our own change unless a newer version is
    /// already known; returns the freshest.
    pub(crate) fn keep_newest(&self, attr: Attr) -> Attr {
        match self.attrs.entry(attr.ino) {
            dashmap::mapref::entry::Entry::Occupied(e) if e.get().version > attr.version => {
                e.get().clone()
            }
            dashmap::mapref::entry::Entry::Occupied(mut e) => {
                e.insert(attr.clone());
                attr
            }
            dashmap::mapref::entry::Entry::Vacant(e) => {
                e.insert(attr.clone());
                attr
            }
        }
    }

    /// The manager's attributes with local uncommitted state laid over them.
    pub(crate) fn local_view(&self, attr: Attr) -> Attr {
        let st = self.lock_state();
        let ino = attr.ino;
        overlay(attr, st.files.get(&ino))
    }

    async fn attr_call(&self, req: ManagerRequest) -> Result<Attr, FsError> {
        let a = self.manager_attr(req).await?;
        Ok(self.local_view(a))
    }

    /// The manager's answer to `req` (attributes as committed, without local writes laid
    /// over), recorded in the attribute cache unless a callback dropped attributes while it
    /// was in flight. Callers use the returned value, not the cache (it may not be cached).
    pub(crate) async fn manager_attr(&self, req: ManagerRequest) -> Result<Attr, FsError> {
        let what = req.to_string();
        let drops = self.attr_drops.load(Ordering::SeqCst);
        match self.call(Target::Route, req).await? {
            ManagerResponse::Attr(a) => {
                let a = self.note_attr(&a);
                // A callback dropped attributes while this answer was in flight: it may
                // predate the change announced, so it serves this call only. (Checked
                // after the insert; droppers bump the count before removing.)
                if self.attr_drops.load(Ordering::SeqCst) != drops {
                    self.attrs.remove(&a.ino);
                }
                Ok(a)
            }
            other => Err(remote::unexpected(&what, &other)),
        }
    }

    async fn done_call(&self, req: ManagerRequest) -> Result<(), FsError> {
        let what = req.to_string();
        match self.call(Target::Route, req).await? {
            ManagerResponse::Done => Ok(()),
            other => Err(remote::unexpected(&what, &other)),
        }
    }

    pub async fn lookup(&self, parent: InodeId, name: &str) -> Result<Attr, FsError> {
        check_name(name)?;
        let mut a = self
            .attr_call(ManagerRequest::Lookup {
                parent,
                name: name.to_string(),
            })
            .await?;
        if self.owner(a.ino) != self.owner(parent) {
            // The child's owner registers us as a reader only if we ask it.
            a = self.getattr(a.ino).await?;
        }
        if a.kind == proto::msg::FileKind::Dir && name != ".." && name != "." {
            self.parents.insert(a.ino, parent);
        }
        Ok(a)
    }

    pub async fn getattr(&self, ino: InodeId) -> Result<Attr, FsError> {
        self.attr_call(ManagerRequest::GetAttr { ino }).await
    }

    /// The committed size as last seen under `held` (asks the manager if unknown, or
    /// when the lease is not held: then nothing cached may be used).
    pub(crate) async fn committed_size(
        &self,
        held: Option<&HeldLease>,
        ino: InodeId,
    ) -> Result<u64, FsError> {
        if let (Some(_), Some(a)) = (held, self.attrs.get(&ino)) {
            return Ok(a.size);
        }
        let a = self.manager_attr(ManagerRequest::GetAttr { ino }).await?;
        Ok(a.size)
    }

    /// chmod/chown/utimes/truncate. A size or mtime change first writes this inode's dirty
    /// data (so that neither a later flush of older writes nor their write time overrides
    /// it), then changes it at the manager, then locally (holding the inode's commit lock
    /// throughout, so no flush of it interleaves; flushes of other inodes go on).
    pub async fn setattr(
        &self,
        ino: InodeId,
        set: SetAttrs,
        caller: Caller,
    ) -> Result<Attr, FsError> {
        if set.size.is_none() && set.mtime.is_none() {
            let a = self
                .attr_call(ManagerRequest::SetAttr { ino, set, caller })
                .await?;
            return Ok(self.local_view(a));
        }
        let held = [(ino, self.commit_lock(ino).await)];
        // Commits not yet durable go first, durably: a truncate that survives a crash must
        // not be undone by sending them again afterwards.
        if self.lock_unsynced().has(ino) {
            if let Err(e) = self.sync_node(self.owner(ino)).await {
                tracing::debug!(inode = %ino, "sync before a truncate failed: {e}");
            }
        }
        let r = self.setattr_held(ino, set, caller, &held).await;
        drop(held);
        self.forget_commit_locks(&[ino]);
        r
    }

    async fn setattr_held(
        &self,
        ino: InodeId,
        set: SetAttrs,
        caller: Caller,
        held: &[(InodeId, crate::writeback::InodeCommit)],
    ) -> Result<Attr, FsError> {
        let size = set.size;
        self.flush_held(held, false).await?;
        let req = ManagerRequest::SetAttr { ino, set, caller };
        let a = match self.call(Target::Route, req).await? {
            ManagerResponse::Attr(a) => a,
            other => return Err(remote::unexpected("SetAttr", &other)),
        };
        {
            let mut st = self.lock_state();
            if let Some(w) = st.files.get_mut(&ino) {
                // Writes buffered after the flush above keep their own (later) times.
                if let Some(size) = size {
                    let released = w.truncate(size);
                    st.dirty_bytes = st.dirty_bytes.saturating_sub(released);
                }
            }
            if st.files.get(&ino).is_some_and(|w| w.is_clean()) {
                st.files.remove(&ino);
            }
            if let Some(size) = size {
                st.cache.invalidate_from(ino, size);
                st.extents.invalidate(ino);
            }
        }
        let a = self.keep_newest(a);
        self.space.notify_waiters();
        Ok(self.local_view(a))
    }

    async fn create_node(
        &self,
        parent: InodeId,
        name: &str,
        node: NewNode,
        (perm, umask): (u16, u16),
        caller: Caller,
        session: Option<u64>,
    ) -> Result<Attr, FsError> {
        check_name(name)?;
        let is_dir = node == NewNode::Dir;
        let req = ManagerRequest::Create {
            parent,
            name: name.to_string(),
            node,
            perm: perm & 0o7777,
            umask: umask & 0o7777,
            caller,
            session,
        };
        let a = self.attr_call(req).await?;
        if is_dir {
            self.parents.insert(a.ino, parent);
        }
        Ok(a)
    }

    /// Creates and opens a regular file; returns its attributes and a file handle.
    pub async fn create(
        &self,
        parent: InodeId,
        name: &str,
        perm: u16,
        umask: u16,
        caller: Caller,
    ) -> Result<(Attr, u64), FsError> {
        let a = self
            .create_node(
                parent,
                name,
                NewNode::File,
                (perm, umask),
                caller,
                Some(self.session),
            )
            .await?;
        // Create with our session made us the holder of the write lease.
        if let Some(epoch) = self.lease_epoch(a.ino) {
            self.record_write_lease(a.ino, epoch, 0);
        }
        self.opened_by_create(a.ino).await;
        Ok((a, self.next_fh()))
    }

    /// mknod: regular files, FIFOs, sockets and device nodes, by the type bits of `mode`.
    pub async fn mknod(
        &self,
        parent: InodeId,
        name: &str,
        mode: u32,
        umask: u16,
        rdev: u32,
        caller: Caller,
    ) -> Result<Attr, FsError> {
        use proto::msg::FileKind;
        let node = match mode & libc::S_IFMT {
            0 | libc::S_IFREG => NewNode::File,
            _ => match crate::attr::kind_of_mode(mode) {
                Some(
                    kind @ (FileKind::Fifo
                    | FileKind::Socket
                    | FileKind::CharDev
                    | FileKind::BlockDev),
                ) => NewNode::Special { kind, rdev },
                _ => return Err(FsError::EINVAL),
            },
        };
        self.create_node(
            parent,
            name,
            node,
            ((mode & 0o7777) as u16, umask),
            caller,
            None,
        )
        .await
    }

    pub async fn mkdir(
        &self,
        parent: InodeId,
        name: &str,
        perm: u16,
        umask: u16,
        caller: Caller,
    ) -> Result<Attr, FsError> {
        self.create_node(parent, name, NewNode::Dir, (perm, umask), caller, None)
            .await
    }

    pub async fn symlink(
        &self,
        parent: InodeId,
        name: &str,
        target: &str,
        caller: Caller,
    ) -> Result<Attr, FsError> {
        if target.is_empty() || target.len() > 4095 {
            return Err(if target.is_empty() {
                FsError::ENOENT
            } else {
                FsError(libc::ENAMETOOLONG)
            });
        }
        let node = NewNode::Symlink {
            target: target.to_string(),
        };
        self.create_node(parent, name, node, (0o777, 0), caller, None)
            .await
    }

    pub async fn unlink(&self, parent: InodeId, name: &str, caller: Caller) -> Result<(), FsError> {
        check_name(name)?;
        self.done_call(ManagerRequest::Unlink {
            parent,
            name: name.to_string(),
            caller,
        })
        .await
    }

    pub async fn rmdir(&self, parent: InodeId, name: &str, caller: Caller) -> Result<(), FsError> {
        check_name(name)?;
        self.done_call(ManagerRequest::Rmdir {
            parent,
            name: name.to_string(),
            caller,
        })
        .await
    }

    pub async fn rename(
        &self,
        parent: InodeId,
        name: &str,
        new_parent: InodeId,
        new_name: &str,
        flags: RenameFlags,
        caller: Caller,
    ) -> Result<(), FsError> {
        check_name(name)?;
        check_name(new_name)?;
        if flags.noreplace && flags.exchange {
            return Err(FsError::EINVAL);
        }
        let req = ManagerRequest::Rename {
            parent,
            name: name.to_string(),
            new_parent,
            new_name: new_name.to_string(),
            flags,
            caller,
        };
        self.done_call(req).await?;
        if parent != new_parent {
            // A moved directory has a new `..`; we no longer know which inode moved.
            self.parents.retain(|_, p| *p != parent);
        }
        Ok(())
    }

    pub async fn link(
        &self,
        ino: InodeId,
        new_parent: InodeId,
        new_name: &str,
        caller: Caller,
    ) -> Result<Attr, FsError> {
        check_name(new_name)?;
        self.attr_call(ManagerRequest::Link {
            ino,
            new_parent,
            new_name: new_name.to_string(),
            caller,
        })
        .await
    }

    pub async fn readlink(&self, ino: InodeId) -> Result<String, FsError> {
        match self
            .call(Target::Route, ManagerRequest::ReadLink { ino })
            .await?
        {
            ManagerResponse::Target(t) => Ok(t),
            other => Err(remote::unexpected("ReadLink", &other)),
        }
    }

    /// Counts a local open; the first one registers this session at the manager.
    pub(crate) async fn open_ref(&self, ino: InodeId) -> Result<(), FsError> {
        // Bounded: a retry happens only when a concurrent last close removed the slot.
        for _ in 0..16 {
            let slot = self.opens.entry(ino).or_default().clone();
            let mut n = slot.lock().await;
            if !self.opens.get(&ino).is_some_and(|s| Arc::ptr_eq(&s, &slot)) {
                continue;
            }
            if *n == 0 {
                let req = ManagerRequest::Open {
                    ino,
                    session: self.session,
                };
                self.done_call(req).await?;
            }
            *n += 1;
            return Ok(());
        }
        Err(FsError::EIO)
    }

    /// A create with our session counts as the first open.
    async fn opened_by_create(&self, ino: InodeId) {
        let slot = self.opens.entry(ino).or_default().clone();
        *slot.lock().await += 1;
    }

    /// Drops a local open; the last one releases this session at the manager.
    pub(crate) async fn close_ref(&self, ino: InodeId) -> Result<(), FsError> {
        let Some(slot) = self.opens.get(&ino).map(|s| s.clone()) else {
            return Ok(());
        };
        let mut n = slot.lock().await;
        if *n == 0 {
            return Ok(());
        }
        *n -= 1;
        if *n > 0 {
            return Ok(());
        }
        let res = self
            .done_call(ManagerRequest::Release {
                ino,
                session: self.session,
            })
            .await;
        // Removed only after the Release went out, so a new open re-registers after it.
        self.opens.remove_if(&ino, |_, s| Arc::ptr_eq(s, &slot));
        res
    }

    /// How many local opens `ino` has.
    pub fn open_count(&self, ino: InodeId) -> u32 {
        self.opens
            .get(&ino)
            .and_then(|s| s.try_lock().ok().map(|n| *n))
            .unwrap_or(0)
    }

    pub async fn getxattr(&self, ino: InodeId, name: &str) -> Result<Vec<u8>, FsError> {
        let caps = name == "security.capability";
        if caps {
            self.ensure_lease(ino).await;
        }
        if caps && self.no_caps.contains_key(&ino) {
            return Err(FsError(libc::ENODATA));
        }
        let req = ManagerRequest::GetXattr {
            ino,
            name: name.to_string(),
        };
        match self.call(Target::Route, req).await {
            Ok(ManagerResponse::Xattr(v)) => Ok(v),
            Ok(other) => Err(remote::unexpected("GetXattr", &other)),
            Err(e) => {
                if caps && e.0 == libc::ENODATA {
                    self.no_caps.insert(ino, ());
                }
                Err(e)
            }
        }
    }

    pub async fn setxattr(
        &self,
        ino: InodeId,
        name: &str,
        value: &[u8],
        flags: i32,
        caller: Caller,
    ) -> Result<(), FsError> {
        if name.is_empty() || name.len() > 255 {
            return Err(FsError::ERANGE);
        }
        if value.len() > 64 << 10 {
            return Err(FsError(libc::E2BIG));
        }
        if name == DROP_CACHES_XATTR {
            self.drop_caches();
            return Ok(());
        }
        self.no_caps.remove(&ino);
        let req = ManagerRequest::SetXattr {
            ino,
            name: name.to_string(),
            value: value.to_vec(),
            flags,
            caller,
        };
        self.done_call(req).await
    }

    pub async fn listxattr(&self, ino: InodeId) -> Result<Vec<String>, FsError> {
        match self
            .call(Target::Route, ManagerRequest::ListXattr { ino })
            .await?
        {
            ManagerResponse::XattrNames(n) => Ok(n),
            other => Err(remote::unexpected("ListXattr", &other)),
        }
    }

    pub async fn removexattr(
        &self,
        ino: InodeId,
        name: &str,
        caller: Caller,
    ) -> Result<(), FsError> {
        self.no_caps.remove(&ino);
        self.done_call(ManagerRequest::RemoveXattr {
            ino,
            name: name.to_string(),
            caller,
        })
        .await
    }

    /// Space from every storage server's `Stat` (usable share k/(k+m)), inode counts from
    /// every manager's `Counts`.
    pub async fn statfs(&self) -> Result<StatFs, FsError> {
        let nodes: Vec<_> = self
            .config
            .storage_nodes()
            .into_iter()
            .map(|n| n.address)
            .collect();
        let stats = futures::future::join_all(nodes.into_iter().map(|addr| {
            let t = self.transport.clone();
            async move {
                let req = Request::Storage(StorageRequest::Stat);
                t.call_timeout(addr, &req, Default::default(), PROBE_TIMEOUT)
                    .await
            }
        }))
        .await;
        // Honest space: what stripes of k+m distinct servers can use, with servers on one
        // file system sharing it (storage::space).
        let (mut caps, mut frees) = (Vec::new(), Vec::new());
        for r in stats {
            match r {
                Ok((Response::Storage(StorageResponse::Stat(s)), _)) => {
                    let space = |bytes| storage::space::ServerSpace {
                        fs_id: s.fs_id,
                        bytes,
                    };
                    caps.push(space(s.capacity_bytes));
                    frees.push(space(s.free_bytes));
                }
                Ok((other, _)) => tracing::debug!("storage Stat answered {other}"),
                Err(e) => tracing::debug!("storage Stat failed: {e}"),
            }
        }
        let counts = futures::future::join_all(
            self.config
                .manager_nodes()
                .into_iter()
                .map(|m| self.call(Target::Node(m.id), ManagerRequest::Counts)),
        )
        .await;
        let mut total = FsCounts::default();
        for c in counts {
            match c? {
                ManagerResponse::Counts(c) => {
                    total.inodes += c.inodes;
                    total.bytes += c.bytes;
                }
                other => return Err(remote::unexpected("Counts", &other)),
            }
        }
        let width =
            self.config.file.erasure.data as usize + self.config.file.erasure.parity as usize;
        let cap = storage::space::usable_raw(&caps, width) as u128;
        let free = storage::space::usable_raw(&frees, width) as u128;
        Ok(statfs_from(&self.config, cap, free, total))
    }
}

/// Builds statfs numbers: usable bytes are raw bytes × k/(k+m), in 4 KiB blocks.
pub(crate) fn statfs_from(
    config: &ClusterConfig,
    cap: u128,
    free: u128,
    counts: FsCounts,
) -> StatFs {
    let k = config.file.erasure.data.max(1) as u128;
    let km = k + config.file.erasure.parity as u128;
    let bs = crate::attr::BLKSIZE as u128;
    let blocks = (cap * k / km / bs) as u64;
    let bfree = (free * k / km / bs) as u64;
    let ffree = bfree.max(1 << 20);
    StatFs {
        blocks,
        bfree,
        bavail: bfree,
        files: counts.inodes.saturating_add(ffree),
        ffree,
        bsize: crate::attr::BLKSIZE,
        namelen: NAME_MAX as u32,
    }
}

/// Rejects names no directory can hold.
pub(crate) fn check_name(name: &str) -> Result<(), FsError> {
    if name.is_empty() || name.contains('/') || name.contains('\0') {
        return Err(FsError::EINVAL);
    }
    if name.len() > NAME_MAX {
        return Err(FsError(libc::ENAMETOOLONG));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::config::ErasureConfig;

    #[test]
    fn statfs_counts_usable_space_only() {
        let f = ClusterConfig::generate("t", 6, 1, ErasureConfig { data: 4, parity: 2 }, 7000)
            .expect("gen");
        let c = ClusterConfig::from_file(std::path::Path::new("/tmp/x"), f).expect("config");
        let s = statfs_from(
            &c,
            6 * 6 * 4096,
            3 * 6 * 4096,
            FsCounts {
                inodes: 7,
                bytes: 0,
            },
        );
        assert_eq!(s.blocks, 24);
        assert_eq!(s.bfree, 12);
        assert_eq!(s.files, 7 + s.ffree);
        assert_eq!(s.bsize, 4096);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("a").is_ok());
        assert_eq!(check_name(""), Err(FsError::EINVAL));
        assert_eq!(check_name("a/b"), Err(FsError::EINVAL));
        assert_eq!(
            check_name(&"x".repeat(256)),
            Err(FsError(libc::ENAMETOOLONG))
        );
    }
}
