//! Test harness: real storage servers (in-memory stores) on mTLS QUIC loopback endpoints,
//! and a small in-memory fake manager that serves the metadata requests the client sends.
//! The fake keeps extents in commit order and never checks permissions. It implements the
//! lease protocol in a simplified form (Hello/Renew/AcquireWrite, readers and writer per
//! inode, Flush before reads, Flush+Invalidate around mutations, callbacks over
//! `Transport::call_peer`, `LeaseExpired` for sessions marked lost); `leases = false` makes
//! it answer like a manager without leases.

#![allow(dead_code)]

use bytes::Bytes;
use proto::config::{ClusterConfig, ErasureConfig};
use proto::ids::{InodeId, SessionId};
use proto::msg::{
    Attr, ClientCallback, DirEntry, Extent, FileKind, FsCounts, LeaseGrant, ManagerRequest,
    ManagerResponse, NewNode, NodeInfo, RemoteError, Request, Response, Timestamp,
};
use proto::tls::{write_pem, CertAuthority, Identity};
use proto::transport::{BoxFuture, Handler, Peer, Transport};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use storage::{MemStore, Server, ServerHandler};

pub struct Node {
    pub inode: Attr,
    pub entries: BTreeMap<String, InodeId>,
    pub parent: InodeId,
    pub extents: Vec<Extent>,
    pub target: Option<String>,
}

#[derive(Default)]
pub struct FakeState {
    pub nodes: HashMap<InodeId, Node>,
    pub next_seq: u64,
    pub commits: u64,
    pub synced_commits: u64,
    pub opens: HashMap<InodeId, i64>,
    /// Lease protocol on (default) or answered `Invalid` like an old manager.
    pub leases: bool,
    pub lease_ms: u32,
    pub incarnation: u64,
    pub sessions: HashMap<SocketAddr, SessionId>,
    pub addrs: HashMap<SessionId, SocketAddr>,
    pub readers: HashMap<InodeId, HashSet<SessionId>>,
    pub writer: HashMap<InodeId, SessionId>,
    /// Sessions that get `lost: true` at their next Renew and `LeaseExpired` until then.
    pub lost: HashSet<SessionId>,
    /// Every callback sent: (session, callback).
    pub callbacks: Vec<(SessionId, ClientCallback)>,
    /// When set, the next `GetAttr` answer is held back once it is computed: `.0` is
    /// notified then, and the answer goes out when `.1` is notified (a reply in flight
    /// while a callback overtakes it).
    pub hold_getattr: Option<(Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>)>,
}

pub struct FakeManager {
    pub state: Mutex<FakeState>,
    pub transport: OnceLock<Arc<Transport>>,
}

/// What a request does to the lease table.
enum LeaseEffect {
    Read(Vec<InodeId>),
    Mutate(Vec<InodeId>, Vec<(InodeId, String)>),
    Acquire(InodeId),
    None,
}

fn lease_effect(st: &FakeState, req: &ManagerRequest) -> LeaseEffect {
    use ManagerRequest::*;
    let child = |parent: &InodeId, name: &str| {
        st.nodes
            .get(parent)
            .and_then(|p| p.entries.get(name).copied())
    };
    match req {
        Lookup { parent, name } => {
            let mut v = vec![*parent];
            v.extend(child(parent, name));
            LeaseEffect::Read(v)
        }
        GetAttr { ino }
        | ReadDir { ino, .. }
        | ReadLink { ino }
        | Open { ino, .. }
        | GetXattr { ino, .. }
        | ListXattr { ino }
        | GetExtents { ino, .. } => LeaseEffect::Read(vec![*ino]),
        SetAttr { ino, .. } | SetXattr { ino, .. } | RemoveXattr { ino, .. } => {
            LeaseEffect::Mutate(vec![*ino], Vec::new())
        }
        Create { parent, name, .. } => {
            LeaseEffect::Mutate(vec![*parent], vec![(*parent, name.clone())])
        }
        Unlink { parent, name, .. } | Rmdir { parent, name, .. } => {
            let mut v = vec![*parent];
            v.extend(child(parent, name));
            LeaseEffect::Mutate(v, vec![(*parent, name.clone())])
        }
        CommitWrites { writes, .. } => {
            LeaseEffect::Mutate(writes.iter().map(|w| w.ino).collect(), Vec::new())
        }
        AcquireWrite { ino, .. } => LeaseEffect::Acquire(*ino),
        _ => LeaseEffect::None,
    }
}

fn attr(ino: InodeId, kind: FileKind, perm: u16) -> Attr {
    let now = Timestamp::now();
    Attr {
        ino,
        kind,
        perm,
        nlink: if kind == FileKind::Dir { 2 } else { 1 },
        uid: 0,
        gid: 0,
        size: 0,
        blocks_bytes: 0,
        atime: now,
        mtime: now,
        ctime: now,
        rdev: 0,
        version: 1,
    }
}

fn errno(code: i32) -> RemoteError {
    RemoteError::errno(proto::errno::Errno(code), "fake manager")
}

impl FakeManager {
    pub fn new() -> Arc<FakeManager> {
        let mut st = FakeState {
            next_seq: 2,
            ..Default::default()
        };
        st.nodes.insert(
            InodeId::ROOT,
            Node {
                inode: attr(InodeId::ROOT, FileKind::Dir, 0o755),
                entries: BTreeMap::new(),
                parent: InodeId::ROOT,
                extents: Vec::new(),
                target: None,
            },
        );
        st.leases = true;
        st.lease_ms = 5000;
        st.incarnation = 1;
        Arc::new(FakeManager {
            state: Mutex::new(st),
            transport: OnceLock::new(),
        })
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `n` empty files named `f{i}` to directory `dir` directly.
    pub fn fill_dir(&self, dir: InodeId, n: usize) {
        let mut st = self.lock();
        for i in 0..n {
            let ino = InodeId::new(dir.slot(), st.next_seq);
            st.next_seq += 1;
            st.nodes.insert(
                ino,
                Node {
                    inode: attr(ino, FileKind::File, 0o644),
                    entries: BTreeMap::new(),
                    parent: dir,
                    extents: Vec::new(),
                    target: None,
                },
            );
            if let Some(d) = st.nodes.get_mut(&dir) {
                d.entries.insert(format!("f{i}"), ino);
            }
        }
    }

    fn apply(&self, req: ManagerRequest) -> Result<ManagerResponse, RemoteError> {
        use ManagerRequest::*;
        let mut st = self.lock();
        let get = |st: &FakeState, ino: InodeId| -> Result<Attr, RemoteError> {
            st.nodes
                .get(&ino)
                .map(|n| n.inode.clone())
                .ok_or_else(|| errno(libc::ENOENT))
        };
        Ok(match req {
            GetAttr { ino } => ManagerResponse::Attr(get(&st, ino)?),
            Lookup { parent, name } => {
                let p = st.nodes.get(&parent).ok_or_else(|| errno(libc::ENOENT))?;
                let ino = if name == ".." {
                    p.parent
                } else {
                    *p.entries.get(&name).ok_or_else(|| errno(libc::ENOENT))?
                };
                ManagerResponse::Attr(get(&st, ino)?)
            }
            Create {
                parent,
                name,
                node,
                perm,
                umask,
                caller,
                session,
            } => {
                let p = st.nodes.get(&parent).ok_or_else(|| errno(libc::ENOENT))?;
                if p.entries.contains_key(&name) {
                    return Err(errno(libc::EEXIST));
                }
                let ino = InodeId::new(parent.slot(), st.next_seq);
                st.next_seq += 1;
                let (kind, target) = match node {
                    NewNode::File => (FileKind::File, None),
                    NewNode::Dir => (FileKind::Dir, None),
                    NewNode::Symlink { target } => (FileKind::Symlink, Some(target)),
                    NewNode::Special { kind, .. } => (kind, None),
                };
                let mut a = attr(ino, kind, perm & !umask);
                a.uid = caller.uid;
                a.gid = caller.gid;
                if let Some(t) = &target {
                    a.size = t.len() as u64;
                }
                st.nodes.insert(
                    ino,
                    Node {
                        inode: a.clone(),
                        entries: BTreeMap::new(),
                        parent,
                        extents: Vec::new(),
                        target,
                    },
                );
                if let Some(p) = st.nodes.get_mut(&parent) {
                    p.entries.insert(name, ino);
                }
                if session.is_some() {
                    *st.opens.entry(ino).or_default() += 1;
                }
                ManagerResponse::Attr(a)
            }
            Unlink { parent, name, .. } | Rmdir { parent, name, .. } => {
                let p = st
                    .nodes
                    .get_mut(&parent)
                    .ok_or_else(|| errno(libc::ENOENT))?;
                p.entries.remove(&name).ok_or_else(|| errno(libc::ENOENT))?;
                ManagerResponse::Done
            }
            ReadDir { ino, offset, max } => {
                let d = st.nodes.get(&ino).ok_or_else(|| errno(libc::ENOENT))?;
                let mut out = Vec::new();
                for (i, (name, child)) in d.entries.iter().enumerate().skip(offset as usize) {
                    if out.len() >= max as usize {
                        break;
                    }
                    let kind = st
                        .nodes
                        .get(child)
                        .map(|n| n.inode.kind)
                        .unwrap_or(FileKind::File);
                    out.push(DirEntry {
                        name: name.clone(),
                        ino: *child,
                        kind,
                        next: i as u64 + 1,
                    });
                }
                ManagerResponse::Entries(out)
            }
            ReadLink { ino } => {
                let n = st.nodes.get(&ino).ok_or_else(|| errno(libc::ENOENT))?;
                ManagerResponse::Target(n.target.clone().ok_or_else(|| errno(libc::EINVAL))?)
            }
            SetAttr { ino, set, .. } => {
                let n = st.nodes.get_mut(&ino).ok_or_else(|| errno(libc::ENOENT))?;
                if let Some(p) = set.perm {
                    n.inode.perm = p;
                }
                if let Some(size) = set.size {
                    n.inode.size = size;
                    let mut kept = Vec::new();
                    for mut e in n.extents.drain(..) {
                        if e.offset >= size {
                            continue;
                        }
                        e.ptr.len = e.ptr.len.min((size - e.offset) as u32);
                        kept.push(e);
                    }
                    n.extents = kept;
                }
                n.inode.version += 1;
                ManagerResponse::Attr(n.inode.clone())
            }
            GetExtents { ino, offset, len } => {
                let n = st.nodes.get(&ino).ok_or_else(|| errno(libc::ENOENT))?;
                let end = offset.saturating_add(len);
                let ex = n
                    .extents
                    .iter()
                    .filter(|e| e.offset < end && e.offset + e.ptr.len as u64 > offset)
                    .copied()
                    .collect();
                ManagerResponse::Extents(ex)
            }
            CommitWrites { writes, sync } => {
                st.commits += 1;
                if sync {
                    st.synced_commits += 1;
                }
                let mut out = Vec::new();
                for w in writes {
                    let n = st
                        .nodes
                        .get_mut(&w.ino)
                        .ok_or_else(|| errno(libc::ENOENT))?;
                    n.extents.extend(w.extents);
                    n.inode.size = w.size;
                    n.inode.mtime = w.mtime;
                    n.inode.blocks_bytes = w.size;
                    n.inode.version += 1;
                    out.push(n.inode.clone());
                }
                ManagerResponse::Committed {
                    attrs: out,
                    incarnation: st.incarnation,
                }
            }
            AcquireWrite { .. } => ManagerResponse::Done,
            Open { ino, .. } => {
                *st.opens.entry(ino).or_default() += 1;
                ManagerResponse::Done
            }
            Release { ino, .. } => {
                *st.opens.entry(ino).or_default() -= 1;
                ManagerResponse::Done
            }
            Sync => ManagerResponse::Synced {
                incarnation: st.incarnation,
            },
            Counts => ManagerResponse::Counts(FsCounts {
                inodes: st.nodes.len() as u64,
                bytes: 0,
            }),
            other => return Err(RemoteError::Invalid(format!("fake manager: {other}"))),
        })
    }
}

/// Why the fake manager could not deliver a callback.
#[derive(Debug, thiserror::Error)]
pub enum CallbackFailed {
    #[error("unknown session {0:x}")]
    UnknownSession(SessionId),
    #[error("the fake manager has no transport yet")]
    NoTransport,
    #[error(transparent)]
    Transport(#[from] proto::transport::TransportError),
}

impl FakeManager {
    /// Marks `session` lost: `LeaseExpired` to its requests, `lost: true` at its next Renew.
    pub fn mark_lost(&self, session: SessionId) {
        self.lock().lost.insert(session);
    }

    /// Sends a callback to `session` and waits for its answer.
    pub async fn callback(
        &self,
        session: SessionId,
        cb: ClientCallback,
    ) -> Result<Response, CallbackFailed> {
        let addr = self
            .lock()
            .addrs
            .get(&session)
            .copied()
            .ok_or(CallbackFailed::UnknownSession(session))?;
        self.lock().callbacks.push((session, cb.clone()));
        let t = self.transport.get().ok_or(CallbackFailed::NoTransport)?;
        let (r, _) = t
            .call_peer(
                addr,
                &Request::Client(cb),
                Bytes::new(),
                Duration::from_secs(10),
            )
            .await?;
        Ok(r)
    }

    /// Sends every callback at once; a holder that does not answer is marked lost.
    async fn callbacks(&self, cbs: Vec<(SessionId, ClientCallback)>) {
        let calls = cbs.into_iter().map(|(s, cb)| async move {
            match self.callback(s, cb).await {
                Ok(Response::CallbackDone) => {}
                other => {
                    eprintln!("fake manager: callback to {s:x} failed: {other:?}");
                    self.mark_lost(s);
                }
            }
        });
        futures::future::join_all(calls).await;
    }

    fn grant(&self, lost: bool) -> ManagerResponse {
        let st = self.lock();
        ManagerResponse::Lease(LeaseGrant {
            lease_ms: st.lease_ms,
            valid_ms: st.lease_ms,
            incarnation: st.incarnation,
            lost,
            losses: 0,
        })
    }

    async fn manager(
        &self,
        from: SocketAddr,
        req: ManagerRequest,
    ) -> Result<ManagerResponse, RemoteError> {
        let not_yet =
            || RemoteError::Invalid("volume leases are not implemented by this manager yet".into());
        let leases = self.lock().leases;
        match req {
            ManagerRequest::Hello { session } => {
                if !leases {
                    return Err(not_yet());
                }
                {
                    let mut st = self.lock();
                    st.sessions.insert(from, session);
                    st.addrs.insert(session, from);
                    st.lost.remove(&session);
                }
                return Ok(self.grant(false));
            }
            ManagerRequest::Renew { session } => {
                if !leases {
                    return Err(not_yet());
                }
                let lost = {
                    let mut st = self.lock();
                    let known = st.addrs.contains_key(&session);
                    st.lost.remove(&session) || !known
                };
                return Ok(self.grant(lost));
            }
            ManagerRequest::AcquireWrite { .. } if !leases => return Err(not_yet()),
            _ => {}
        }
        if !leases {
            return self.apply(req);
        }
        let (me, effect) = {
            let st = self.lock();
            let me = st.sessions.get(&from).copied().unwrap_or(SessionId(0));
            if st.lost.contains(&me) {
                return Err(RemoteError::LeaseExpired(
                    "fake manager: session lost".into(),
                ));
            }
            (me, lease_effect(&st, &req))
        };
        // Before: flush other writers (and for AcquireWrite invalidate other readers).
        let before: Vec<(SessionId, ClientCallback)> = {
            let st = self.lock();
            let mut cbs = Vec::new();
            let (inos, drop_cache) = match &effect {
                LeaseEffect::Read(v) => (v.clone(), false),
                LeaseEffect::Mutate(v, _) => (v.clone(), true),
                LeaseEffect::Acquire(i) => (vec![*i], true),
                LeaseEffect::None => (Vec::new(), false),
            };
            for ino in &inos {
                if let Some(&w) = st.writer.get(ino) {
                    if w != me {
                        cbs.push((
                            w,
                            ClientCallback::Flush {
                                ino: *ino,
                                drop_cache,
                            },
                        ));
                    }
                }
            }
            if let LeaseEffect::Acquire(ino) = &effect {
                for r in st.readers.get(ino).into_iter().flatten() {
                    if *r != me && st.writer.get(ino) != Some(r) {
                        cbs.push((
                            *r,
                            ClientCallback::Invalidate {
                                inodes: vec![*ino],
                                entries: vec![],
                            },
                        ));
                    }
                }
            }
            cbs
        };
        self.callbacks(before.clone()).await;
        {
            let mut st = self.lock();
            for (s, cb) in &before {
                let ClientCallback::Flush { ino, drop_cache } = cb else {
                    continue;
                };
                st.writer.remove(ino);
                let readers = st.readers.entry(*ino).or_default();
                if *drop_cache {
                    readers.remove(s);
                } else {
                    readers.insert(*s);
                }
            }
            if let LeaseEffect::Acquire(ino) = &effect {
                st.writer.insert(*ino, me);
                st.readers.insert(*ino, HashSet::from([me]));
            }
        }
        let resp = self.apply(req.clone())?;
        // After: register readers, invalidate other holders of what changed.
        let after: Vec<(SessionId, ClientCallback)> = {
            let mut st = self.lock();
            match &effect {
                LeaseEffect::Read(v) => {
                    let mut v = v.clone();
                    if let ManagerResponse::Attr(a) = &resp {
                        v.push(a.ino);
                    }
                    for ino in v {
                        st.readers.entry(ino).or_default().insert(me);
                    }
                    Vec::new()
                }
                LeaseEffect::Mutate(v, entries) => {
                    let mut per: HashMap<SessionId, Vec<InodeId>> = HashMap::new();
                    for ino in v {
                        let holders: Vec<SessionId> = st
                            .readers
                            .get(ino)
                            .into_iter()
                            .flatten()
                            .copied()
                            .chain(st.writer.get(ino).copied())
                            .filter(|h| *h != me)
                            .collect();
                        for h in holders {
                            per.entry(h).or_default().push(*ino);
                        }
                        if let Some(r) = st.readers.get_mut(ino) {
                            r.retain(|h| *h == me);
                        }
                    }
                    if let (
                        ManagerRequest::Create {
                            session: Some(_), ..
                        },
                        ManagerResponse::Attr(a),
                    ) = (&req, &resp)
                    {
                        st.writer.insert(a.ino, me);
                        st.readers.entry(a.ino).or_default().insert(me);
                    }
                    per.into_iter()
                        .map(|(h, mut inodes)| {
                            inodes.sort_unstable();
                            inodes.dedup();
                            (
                                h,
                                ClientCallback::Invalidate {
                                    inodes,
                                    entries: entries.clone(),
                                },
                            )
                        })
                        .collect()
                }
                _ => Vec::new(),
            }
        };
        self.callbacks(after).await;
        if matches!(req, ManagerRequest::GetAttr { .. }) {
            let gate = self.lock().hold_getattr.take();
            if let Some((held, release)) = gate {
                held.notify_one();
                release.notified().await;
            }
        }
        Ok(resp)
    }
}

impl Handler for FakeManager {
    fn handle(&self, peer: Peer, req: Request, _bulk: Bytes) -> BoxFuture<'_, (Response, Bytes)> {
        Box::pin(async move {
            let resp = match req {
                Request::Ping => Response::Pong(NodeInfo {
                    name: "manager-1".into(),
                    roles: vec!["manager".into()],
                    version: proto::VERSION.into(),
                    workers: Vec::new(),
                }),
                // The fake does not check permissions: credentials are ignored.
                Request::Manager(r) | Request::ManagerAs { req: r, .. } => {
                    match self.manager(peer.addr, r).await {
                        Ok(r) => Response::Manager(r),
                        Err(e) => Response::Error(e),
                    }
                }
                Request::Storage(_) => Response::Error(RemoteError::NoRole("storage".into())),
                Request::Client(_) => Response::Error(RemoteError::NoRole("client".into())),
                Request::Admin(_) => Response::Error(RemoteError::NoRole("admin".into())),
            };
            (resp, Bytes::new())
        })
    }
}

pub struct TestCluster {
    pub tmp: tempfile::TempDir,
    pub config: Arc<ClusterConfig>,
    pub manager: Arc<FakeManager>,
    pub servers: Vec<Arc<Transport>>,
    tls: std::path::PathBuf,
    ca: CertAuthority,
}

fn identity(tls: &Path, ca: &CertAuthority, name: &str) -> Identity {
    let (cert, key) = ca.issue(name).expect("issue");
    let (c, k) = (
        tls.join(format!("{name}.pem")),
        tls.join(format!("{name}.key")),
    );
    write_pem(&c, &cert, false).expect("cert");
    write_pem(&k, &key, true).expect("key");
    Identity::load(&tls.join("ca.pem"), &c, &k).expect("identity")
}

impl TestCluster {
    /// Three storage servers (2+1) and one fake manager; `segment_bytes` for the clients.
    pub async fn start(segment_bytes: u64) -> TestCluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let tls = tmp.path().join("tls");
        std::fs::create_dir_all(&tls).expect("tls dir");
        let ca = CertAuthority::generate("test").expect("ca");
        write_pem(&tls.join("ca.pem"), &ca.cert_pem, false).expect("ca pem");
        let any = "127.0.0.1:0".parse().expect("addr");
        let mut file = ClusterConfig::generate("t", 3, 1, ErasureConfig { data: 2, parity: 1 }, 1)
            .expect("generate");
        let mut servers = Vec::new();
        for i in 0..3 {
            let name = format!("storage-{}", i + 1);
            let t = Transport::bind(any, &identity(&tls, &ca, &name), true).expect("bind");
            let server = Server::with_store(Arc::new(MemStore::new()));
            t.serve(Arc::new(ServerHandler { server, name }));
            file.nodes[i].address = t.local_addr().expect("addr");
            servers.push(t);
        }
        let manager = FakeManager::new();
        let t = Transport::bind(any, &identity(&tls, &ca, "manager-1"), true).expect("bind");
        t.serve(manager.clone());
        let _ = manager.transport.set(t.clone());
        file.nodes[3].address = t.local_addr().expect("addr");
        servers.push(t);
        file.client.segment_bytes = segment_bytes;
        file.client.flush_interval_ms = 60_000;
        file.client.cache_bytes = 4 << 20;
        let config = Arc::new(ClusterConfig::from_file(tmp.path(), file).expect("config"));
        TestCluster {
            tmp,
            config,
            manager,
            servers,
            tls,
            ca,
        }
    }

    /// A fresh client transport (each client gets its own endpoint).
    pub fn client_transport(&self) -> Arc<Transport> {
        let any = "127.0.0.1:0".parse().expect("addr");
        Transport::bind(any, &identity(&self.tls, &self.ca, "client"), false).expect("client")
    }

    pub async fn client(&self) -> Arc<fuse_client::Client> {
        fuse_client::Client::connect(self.config.clone(), self.client_transport())
            .await
            .expect("connect")
    }
}

/// A deterministic byte pattern.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
