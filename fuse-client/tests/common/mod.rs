//! Test harness: real storage servers (in-memory stores) and the real manager
//! (`manager::Service`, in-process over a `MemLog`) on mTLS QUIC loopback endpoints.
//! Owns only the glue a node would provide: the role check, "leases fail closed" (a
//! client identity without a lease session on its connection gets `LeaseExpired`), the
//! caller's credentials mapped through the client certificate's export options, and
//! callbacks over the client's own connection (`QuicCallbacks`). Test-only faults live in
//! the glue, never in the manager: callbacks to an address can be cut (a client the
//! manager cannot reach), one `GetAttr` answer can be held back on its way out (an
//! answer in flight), a manager can be muted (it takes requests and never answers, over a
//! connection that stays up) or hold back only its answers to `Renew`, and a manager can be
//! crash-restarted on the same log.
//! Must not: answer metadata requests or keep lease state itself (the manager does).

#![allow(dead_code)]

use bytes::Bytes;
use futures::StreamExt;
use manager::error::CallbackError;
use manager::service::{CallbackSender, QuicCallbacks, Service};
use manager::testing::{LoopbackPeers, MemLog};
use manager::MetaState;
use proto::config::{ClusterConfig, ClusterFile, ErasureConfig};
use proto::identity::{ExportOptions, PeerIdentity, Role};
use proto::ids::{InodeId, NodeId, SessionId};
use proto::msg::{
    Caller, ClientCallback, Extent, ManagerRequest, ManagerResponse, NewNode, NodeInfo,
    RemoteError, Request, Response,
};
use proto::tls::{write_pem, CertAuthority, Identity};
use proto::transport::{BoxFuture, Handler, Peer, Transport};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use storage::{MemStore, Server, ServerHandler};
use tokio::sync::Notify;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The real callback sender, with callbacks to some addresses cut.
struct Callbacks {
    quic: QuicCallbacks,
    cut: Mutex<HashSet<SocketAddr>>,
}

impl CallbackSender for Callbacks {
    fn send(
        &self,
        to: SocketAddr,
        cb: ClientCallback,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(), CallbackError>> {
        if lock(&self.cut).contains(&to) {
            return Box::pin(async move { Err(CallbackError::NoChannel(to)) });
        }
        self.quic.send(to, cb, timeout)
    }
}

/// A GetAttr answer held on its way out: `.0` is notified when it is ready, and it goes
/// out when `.1` is notified.
type Gate = (Arc<Notify>, Arc<Notify>);

/// The real manager served on a QUIC endpoint, as a node serves it.
pub struct ManagerNode {
    config: Arc<ClusterConfig>,
    node: NodeId,
    log: MemLog,
    peers: Arc<LoopbackPeers>,
    callbacks: Arc<Callbacks>,
    service: Mutex<Arc<Service>>,
    /// Lease sessions by the connection that said `Hello` (to call a session back).
    addrs: Mutex<HashMap<SessionId, SocketAddr>>,
    hold_getattr: Mutex<Option<Gate>>,
    /// While set, requests are taken and never answered (the connection stays up: a
    /// peer that hangs, or a connection that died without either side noticing yet).
    mute: std::sync::atomic::AtomicBool,
    /// While set, `Renew` requests are taken and never answered (the rest is answered).
    hold_renewals: std::sync::atomic::AtomicBool,
    name: String,
}

impl ManagerNode {
    async fn start_service(&self) -> Arc<Service> {
        let svc = Service::start_with(
            self.config.clone(),
            self.node,
            Arc::new(self.log.clone()),
            self.peers.clone(),
            self.callbacks.clone(),
        )
        .await
        .expect("start the manager");
        self.peers.register(&svc);
        if let Err(e) = svc.wait_recovered().await {
            panic!("the manager refused to recover: {e}");
        }
        svc
    }

    /// The manager's node id.
    pub fn id(&self) -> NodeId {
        self.node
    }

    /// The running manager.
    pub fn service(&self) -> Arc<Service> {
        lock(&self.service).clone()
    }

    /// Kills the manager (as a crash: sessions and leases are forgotten) and starts a new
    /// incarnation on the same log, behind the same endpoint.
    pub async fn crash_restart(&self) {
        self.service().kill();
        let svc = self.start_service().await;
        *lock(&self.service) = svc;
    }

    /// Callbacks to `session` fail from now on (`cut`) or are delivered again.
    pub fn cut_callbacks(&self, session: SessionId, cut: bool) {
        let addr = self.addr_of(session).expect("the session said Hello");
        let mut c = lock(&self.callbacks.cut);
        if cut {
            c.insert(addr);
        } else {
            c.remove(&addr);
        }
    }

    fn addr_of(&self, session: SessionId) -> Option<SocketAddr> {
        lock(&self.addrs).get(&session).copied()
    }

    /// Sends `cb` to `session` through the manager's callback sender.
    pub async fn callback(
        &self,
        session: SessionId,
        cb: ClientCallback,
    ) -> Result<(), CallbackError> {
        let addr = self.addr_of(session).ok_or(CallbackError::NoAddress)?;
        self.callbacks.send(addr, cb, Duration::from_secs(10)).await
    }

    /// From now on takes requests without ever answering them (`true`), or answers again.
    /// A request taken while muted is never answered, also after.
    pub fn mute(&self, on: bool) {
        self.mute.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// From now on takes `Renew` requests without answering them (`true`), or answers again
    /// (a Renew taken meanwhile stays unanswered).
    pub fn hold_renewals(&self, on: bool) {
        self.hold_renewals
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Holds back the next `GetAttr` answer (see `Gate`).
    pub fn hold_next_getattr(&self, gate: Gate) {
        *lock(&self.hold_getattr) = Some(gate);
    }

    /// A request answered in-process (no session, no permission check).
    pub async fn call(&self, req: ManagerRequest) -> ManagerResponse {
        let svc = self.service();
        // After a restart, mutations are refused until grace is over.
        svc.wait_grace().await;
        let what = req.to_string();
        svc.handle(None, req)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// The extents the manager maps for `ino`.
    pub async fn extents(&self, ino: InodeId) -> Vec<Extent> {
        let req = ManagerRequest::GetExtents {
            ino,
            offset: 0,
            len: u64::MAX,
        };
        match self.call(req).await {
            ManagerResponse::SummedExtents { extents: e, .. } => e,
            other => panic!("GetExtents answered {other:?}"),
        }
    }

    /// The metadata a crash-restarted manager would recover from its log now (after a
    /// `Sync`, so that everything answered is in it).
    pub async fn durable_state(&self) -> MetaState {
        self.call(ManagerRequest::Sync).await;
        manager::recovery::recover(&self.log)
            .await
            .expect("recover")
            .state
    }

    /// Adds `n` empty files named `f{i}` to directory `dir` (in-process, many at once).
    pub async fn fill_dir(&self, dir: InodeId, n: usize) {
        let svc = self.service();
        let creates = futures::stream::iter(0..n)
            .map(|i| {
                let svc = svc.clone();
                async move {
                    let req = ManagerRequest::Create {
                        parent: dir,
                        name: format!("f{i}"),
                        node: NewNode::File,
                        perm: 0o644,
                        umask: 0,
                        caller: Caller { uid: 0, gid: 0 },
                        session: None,
                    };
                    svc.handle(None, req).await.expect("create");
                }
            })
            .buffer_unordered(1024);
        creates.collect::<Vec<()>>().await;
    }

    async fn manager_request(&self, peer: &Peer, req: Request) -> Response {
        let (cred, call, r) = match req {
            Request::Manager(r) => (None, None, r),
            Request::ManagerAs { cred, call, req } => (Some(cred), call, req),
            other => return Response::Error(RemoteError::Invalid(format!("{other}"))),
        };
        let id = peer.identity.as_deref();
        let client = id.is_some_and(|i| !i.has(Role::Manager) && !i.has(Role::Admin));
        let svc = self.service();
        use ManagerRequest as R;
        let opens_session = matches!(
            r,
            R::Hello { .. } | R::Renew { .. } | R::Goodbye { .. } | R::Counts
        );
        if client && !opens_session && !svc.has_session(peer.addr) {
            return Response::Error(RemoteError::LeaseExpired(
                "no lease session on this connection: send Hello first".into(),
            ));
        }
        if matches!(r, R::Renew { .. })
            && self.hold_renewals.load(std::sync::atomic::Ordering::SeqCst)
        {
            std::future::pending::<()>().await;
        }
        if let R::Hello { session } = &r {
            lock(&self.addrs).insert(*session, peer.addr);
        }
        let getattr = matches!(r, R::GetAttr { .. });
        let access = id
            .filter(|_| client)
            .map(|i| manager::access::effective(&i.export, cred.as_ref()));
        let resp = match svc
            .handle_leased_as(Some(peer.addr), access.as_ref(), call, r)
            .await
        {
            Ok((resp, None)) => Response::Manager(resp),
            Ok((resp, Some(lease))) => Response::ManagerLeased(resp, lease),
            Err(e) => Response::Error(e),
        };
        let gate = if getattr {
            lock(&self.hold_getattr).take()
        } else {
            None
        };
        if let Some((ready, release)) = gate {
            ready.notify_one();
            release.notified().await;
        }
        resp
    }
}

impl Handler for ManagerNode {
    fn handle(&self, peer: Peer, req: Request, _bulk: Bytes) -> BoxFuture<'_, (Response, Bytes)> {
        Box::pin(async move {
            if let Err(d) = proto::authz::check(peer.identity.as_deref(), &req) {
                return (Response::Error(d.into()), Bytes::new());
            }
            if self.mute.load(std::sync::atomic::Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            let resp = match req {
                Request::Ping => Response::Pong(NodeInfo {
                    name: self.name.clone(),
                    roles: vec!["manager".into()],
                    version: proto::VERSION.into(),
                    workers: self.service().workers(),
                    config_group: None,
                    config_epoch: 0,
                }),
                Request::Manager(_) | Request::ManagerAs { .. } => {
                    self.manager_request(&peer, req).await
                }
                other => Response::Error(RemoteError::NoRole(format!("{other}"))),
            };
            (resp, Bytes::new())
        })
    }
}

pub struct TestCluster {
    pub tmp: tempfile::TempDir,
    pub config: Arc<ClusterConfig>,
    /// The first manager (slots from 0, the root directory's).
    pub manager: Arc<ManagerNode>,
    /// Every manager, `manager` first.
    pub managers: Vec<Arc<ManagerNode>>,
    pub servers: Vec<Arc<Transport>>,
    tls: std::path::PathBuf,
    ca: CertAuthority,
}

/// Writes a certificate for `name` (with the Shoal identity `id`, if any) and loads it.
fn identity(tls: &Path, ca: &CertAuthority, name: &str, id: Option<PeerIdentity>) -> Identity {
    let (cert, key) = match id {
        Some(id) => ca.issue_identity(&id, None),
        None => ca.issue(name),
    }
    .expect("issue");
    let (c, k) = (
        tls.join(format!("{name}.pem")),
        tls.join(format!("{name}.key")),
    );
    write_pem(&c, &cert, false).expect("cert");
    write_pem(&k, &key, true).expect("key");
    Identity::load(&tls.join("ca.pem"), &c, &k).expect("identity")
}

impl TestCluster {
    /// Three storage servers (2+1) and one manager; `segment_bytes` for the clients.
    pub async fn start(segment_bytes: u64) -> TestCluster {
        TestCluster::start_with(segment_bytes, |_| {}).await
    }

    /// `start`, with the cluster file as `tune` changes it.
    pub async fn start_with(
        segment_bytes: u64,
        tune: impl FnOnce(&mut ClusterFile),
    ) -> TestCluster {
        TestCluster::start_managers(segment_bytes, 1, tune).await
    }

    /// `start_with`, with `managers` managers sharing the slots.
    pub async fn start_managers(
        segment_bytes: u64,
        managers: usize,
        tune: impl FnOnce(&mut ClusterFile),
    ) -> TestCluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let tls = tmp.path().join("tls");
        std::fs::create_dir_all(&tls).expect("tls dir");
        let ca = CertAuthority::generate("test").expect("ca");
        write_pem(&tls.join("ca.pem"), &ca.cert_pem, false).expect("ca pem");
        let any = "127.0.0.1:0".parse().expect("addr");
        let mut file =
            ClusterConfig::generate("t", 3, managers, ErasureConfig { data: 2, parity: 1 }, 1)
                .expect("generate");
        let mut servers = Vec::new();
        for i in 0..3 {
            let name = format!("storage-{}", i + 1);
            let t = Transport::bind(any, &identity(&tls, &ca, &name, None), true).expect("bind");
            let server = Server::with_store(Arc::new(MemStore::new()));
            t.serve(Arc::new(ServerHandler { server, name }));
            file.nodes[i].address = t.local_addr().expect("addr");
            servers.push(t);
        }
        let mut endpoints = Vec::new();
        for i in 0..managers {
            let name = format!("manager-{}", i + 1);
            let id = PeerIdentity::new(&name, &[Role::Manager]).expect("id");
            let t =
                Transport::bind(any, &identity(&tls, &ca, &name, Some(id)), true).expect("bind");
            file.nodes[3 + i].address = t.local_addr().expect("addr");
            endpoints.push((name, t));
        }
        file.client.segment_bytes = segment_bytes;
        file.client.flush_interval_ms = 60_000;
        file.client.cache_bytes = 4 << 20;
        tune(&mut file);
        let config = Arc::new(ClusterConfig::from_file(tmp.path(), file).expect("config"));
        let peers = LoopbackPeers::new();
        let mut nodes = Vec::new();
        for ((name, t), m) in endpoints.into_iter().zip(config.manager_nodes()) {
            let callbacks = Arc::new(Callbacks {
                quic: QuicCallbacks(t.clone()),
                cut: Mutex::default(),
            });
            let log = MemLog::new();
            let svc = Service::start_with(
                config.clone(),
                m.id,
                Arc::new(log.clone()),
                peers.clone(),
                callbacks.clone(),
            )
            .await
            .expect("start the manager");
            peers.register(&svc);
            svc.wait_recovered().await.expect("recover");
            let manager = Arc::new(ManagerNode {
                config: config.clone(),
                node: m.id,
                log,
                peers: peers.clone(),
                callbacks,
                service: Mutex::new(svc),
                addrs: Mutex::default(),
                hold_getattr: Mutex::default(),
                mute: Default::default(),
                hold_renewals: Default::default(),
                name,
            });
            t.serve(manager.clone());
            servers.push(t);
            nodes.push(manager);
        }
        TestCluster {
            tmp,
            config,
            manager: nodes[0].clone(),
            managers: nodes,
            servers,
            tls,
            ca,
        }
    }

    /// A fresh client transport (each client gets its own endpoint), with a client
    /// identity whose root is not squashed (the tests act as uid 0).
    pub fn client_transport(&self) -> Arc<Transport> {
        let any = "127.0.0.1:0".parse().expect("addr");
        let id = PeerIdentity::new("client", &[Role::Client])
            .expect("id")
            .with_export(ExportOptions {
                trusted: true,
                ..Default::default()
            });
        let id = identity(&self.tls, &self.ca, "client", Some(id));
        Transport::bind(any, &id, false).expect("client")
    }

    pub async fn client(&self) -> Arc<fuse_client::Client> {
        fuse_client::Client::connect(self.config.clone(), self.client_transport())
            .await
            .expect("connect")
    }
}

/// Waits, looking every 20 ms, while `busy` holds, for at most `bound` (the caller then
/// asserts what it waited for).
pub async fn wait_while(bound: Duration, mut busy: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + bound;
    while busy() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A deterministic byte pattern.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
