//! Test harness: real storage servers (in-memory stores) on mTLS QUIC loopback endpoints,
//! and a small in-memory fake manager that serves the metadata requests the client sends.
//! The fake keeps extents in commit order and never checks permissions.

#![allow(dead_code)]

use bytes::Bytes;
use proto::config::{ClusterConfig, ErasureConfig};
use proto::ids::InodeId;
use proto::msg::{
    Attr, DirEntry, Extent, FileKind, FsCounts, ManagerRequest, ManagerResponse, NewNode, NodeInfo,
    RemoteError, Request, Response, Timestamp,
};
use proto::tls::{write_pem, CertAuthority, Identity};
use proto::transport::{BoxFuture, Handler, Peer, Transport};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
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
}

pub struct FakeManager {
    pub state: Mutex<FakeState>,
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
    RemoteError::errno(code, "fake manager")
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
        Arc::new(FakeManager {
            state: Mutex::new(st),
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
                ManagerResponse::Committed(out)
            }
            Open { ino, .. } => {
                *st.opens.entry(ino).or_default() += 1;
                ManagerResponse::Done
            }
            Release { ino, .. } => {
                *st.opens.entry(ino).or_default() -= 1;
                ManagerResponse::Done
            }
            Sync => ManagerResponse::Done,
            Counts => ManagerResponse::Counts(FsCounts {
                inodes: st.nodes.len() as u64,
                bytes: 0,
            }),
            other => return Err(RemoteError::Invalid(format!("fake manager: {other}"))),
        })
    }
}

impl Handler for FakeManager {
    fn handle(&self, _peer: Peer, req: Request, _bulk: Bytes) -> BoxFuture<'_, (Response, Bytes)> {
        let resp = match req {
            Request::Ping => Response::Pong(NodeInfo {
                name: "manager-1".into(),
                roles: vec!["manager".into()],
                version: proto::VERSION.into(),
            }),
            Request::Manager(r) => match self.apply(r) {
                Ok(r) => Response::Manager(r),
                Err(e) => Response::Error(e),
            },
            Request::Storage(_) => Response::Error(RemoteError::NoRole("storage".into())),
        };
        Box::pin(async move { (resp, Bytes::new()) })
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
