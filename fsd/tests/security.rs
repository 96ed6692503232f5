//! Identities, the role matrix, revocation, fail-closed leases and frame limits, on a real
//! in-process cluster with real certificates (issue 10). Each refusal is checked for the
//! named error: the identity and the missing right.

mod common;

use bytes::Bytes;
use common::TestCluster;
use fuse_client::error::FsError;
use proto::identity::{ExportOptions, PeerMismatch, Role};
use proto::ids::*;
use proto::msg::*;
use proto::transport::{Transport, TransportError};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROOT: Caller = Caller { uid: 0, gid: 0 };

async fn call(
    t: &Transport,
    to: std::net::SocketAddr,
    req: Request,
) -> Result<Response, TransportError> {
    t.call_timeout(to, &req, Bytes::new(), Duration::from_secs(10))
        .await
        .map(|(r, _)| r)
}

/// Asserts a `Denied` naming `who` and `right`.
fn assert_denied(r: Result<Response, TransportError>, who: &str, right: &str) {
    match r {
        Ok(Response::Error(RemoteError::Denied {
            identity,
            right: got,
            detail,
        })) => {
            assert!(identity.starts_with(who), "identity {identity} for {who}");
            assert_eq!(got, right, "{detail}");
        }
        other => panic!("expected {who} to be denied `{right}`, got {other:?}"),
    }
}

fn addr_of(tc: &TestCluster, name: &str) -> std::net::SocketAddr {
    tc.cluster.config.node_by_name(name).expect("node").address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_roles_are_refused_with_the_named_error() {
    let tc = TestCluster::start(6, 2, 4, 2).await;
    let config = tc.cluster.config.clone();
    let (st, mgr) = (addr_of(&tc, "storage-1"), addr_of(&tc, "manager-1"));

    // A mount with a storage server's certificate: the managers refuse it.
    let as_storage = fsd::cluster::transport_as(&config, "storage-1").expect("transport");
    assert_denied(
        call(
            &as_storage,
            mgr,
            Request::Manager(ManagerRequest::Hello {
                session: SessionId(1),
            }),
        )
        .await,
        "storage-1",
        "fs-write",
    );
    let refused = fuse_client::Client::connect(config.clone(), as_storage.clone()).await;
    assert!(refused.is_err(), "a mount as storage-1 must fail");

    // The default client identity: storage and manager rights it does not hold.
    let client = fsd::cluster::client_transport(&config).expect("transport");
    let frag = |log| FragmentId {
        log,
        segment: SegmentId(0),
        index: 0,
    };
    let manager_log = LogId::manager(NodeId(7));
    assert_denied(
        call(
            &client,
            st,
            Request::Storage(StorageRequest::Delete {
                id: frag(manager_log),
            }),
        )
        .await,
        "client",
        "fragment-delete",
    );
    assert_denied(
        call(&client, st, Request::Storage(StorageRequest::ListLogs)).await,
        "client",
        "list-logs",
    );
    assert_denied(
        call(&client, st, Request::Storage(StorageRequest::ScrubNow)).await,
        "client",
        "scrub-control",
    );
    let meta = FragmentMeta {
        codec: CODEC_RS_GF8_RSE,
        k: 4,
        m: 2,
        segment_len: 4,
        crc32c: proto::crc32c(b"evil"),
        nodes: 0,
    };
    let put = Request::Storage(StorageRequest::PutFragment {
        id: frag(manager_log),
        meta,
    });
    let r = client
        .call_timeout(
            st,
            &put,
            Bytes::from_static(b"evil"),
            Duration::from_secs(10),
        )
        .await
        .map(|(r, _)| r);
    assert_denied(r, "client", "write-own-log");
    assert_denied(
        call(
            &client,
            mgr,
            Request::Manager(ManagerRequest::TxFinish {
                tx: TxId {
                    coordinator: NodeId(1),
                    seq: 1,
                },
                commit: true,
                session: None,
            }),
        )
        .await,
        "client",
        "manager-txn",
    );
    assert_denied(
        call(
            &client,
            mgr,
            Request::Admin(AdminRequest::InstallDenyList {
                list: vec![],
                signature: vec![],
            }),
        )
        .await,
        "client",
        "admin",
    );
    // Another identity's session cannot be used (sessions carry the identity's tag).
    let alice_tag = proto::identity::log_tag("alice");
    assert_denied(
        call(
            &client,
            mgr,
            Request::Manager(ManagerRequest::Hello {
                session: proto::authz::session_of(alice_tag, 5),
            }),
        )
        .await,
        "client",
        "own-session",
    );
    // Commits of another identity's log are refused.
    let commit = Request::Manager(ManagerRequest::CommitWrites {
        writes: vec![InodeWrite {
            sums: Vec::new(),
            ino: InodeId::ROOT,
            extents: vec![Extent {
                offset: 0,
                ptr: LogPtr {
                    seg: SegmentAddr {
                        log: LogId::client_of(alice_tag, 1),
                        segment: SegmentId(0),
                        len: 1,
                        k: 4,
                        m: 2,
                        nodes: 0,
                    },
                    offset: 0,
                    len: 1,
                },
            }],
            size: 1,
            mtime: Timestamp::default(),
        }],
        sync: false,
        standing: None,
    });
    assert_denied(call(&client, mgr, commit).await, "client", "commit-own-log");

    // Leases fail closed: a client identity without a session is not served (by a
    // manager that serves: one still recovering answers every request `Unavailable`).
    let m1 = tc.cluster.manager_service("manager-1").expect("manager-1");
    tokio::time::timeout(Duration::from_secs(60), m1.wait_ready())
        .await
        .expect("manager-1 recovers within 60 s");
    match call(
        &client,
        mgr,
        Request::Manager(ManagerRequest::GetAttr { ino: InodeId::ROOT }),
    )
    .await
    {
        Ok(Response::Error(RemoteError::LeaseExpired(_))) => {}
        other => panic!("a request without a session must be answered LeaseExpired: {other:?}"),
    }

    // The admin identity may list logs; a real client still mounts and works.
    let admin = fsd::cluster::admin_transport(&config).expect("admin");
    assert!(matches!(
        call(&admin, st, Request::Storage(StorageRequest::ListLogs)).await,
        Ok(Response::Storage(StorageResponse::Logs(_)))
    ));
    let c = tc.client().await;
    let (a, _) = c
        .create(InodeId::ROOT, "ok", 0o644, 0o022, ROOT)
        .await
        .expect("create");
    c.write(a.ino, 0, b"fine").await.expect("write");
    c.fsync(a.ino).await.expect("fsync");
    c.shutdown();
    tc.cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_client_is_refused_within_seconds_while_its_neighbour_works() {
    let tc = TestCluster::start(6, 2, 4, 2).await;
    let config = tc.cluster.config.clone();
    let year = Duration::from_secs(365 * 86400);
    // Trusted (no root squash): they create in the root directory as root.
    let trusted = ExportOptions {
        trusted: true,
        ..Default::default()
    };
    fsd::certs::issue(&config, Role::Client, "alice", year, trusted).expect("issue alice");
    fsd::certs::issue(&config, Role::Client, "bob", year, trusted).expect("issue bob");
    assert!(
        fsd::certs::issue(&config, Role::Client, "alice", year, Default::default()).is_err(),
        "a name is issued once"
    );
    assert!(
        fsd::certs::issue(&config, Role::Client, "storage-1", year, Default::default()).is_err(),
        "node names are not client names"
    );
    let connect = |name: &'static str| {
        let config = config.clone();
        async move {
            let t = fsd::cluster::transport_as(&config, name).expect("transport");
            fuse_client::Client::connect(config, t)
                .await
                .expect("connect")
        }
    };
    let alice = connect("alice").await;
    let bob = connect("bob").await;
    for (c, n) in [(&alice, "a"), (&bob, "b")] {
        let (a, _) = c
            .create(InodeId::ROOT, n, 0o644, 0o022, ROOT)
            .await
            .expect("create");
        c.write(a.ino, 0, b"before").await.expect("write");
        c.fsync(a.ino).await.expect("fsync");
    }

    let (list, pushed) = fsd::certs::revoke(&config, "alice").await.expect("revoke");
    assert_eq!(list.names, vec!["alice".to_string()]);
    for p in &pushed {
        assert_eq!(p.result.as_ref().ok(), Some(&list.seq), "{p:?}");
    }
    let revoked_at = Instant::now();
    // Alice's next change fails (her connections are closed and new ones refused).
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        alice.create(InodeId::ROOT, "a2", 0o644, 0o022, ROOT),
    )
    .await
    .expect("alice's request must end, not retry forever");
    assert!(r.is_err(), "a revoked client must be refused: {r:?}");
    tracing::info!(after = ?revoked_at.elapsed(), "alice refused");
    let t = fsd::cluster::transport_as(&config, "alice").expect("transport");
    match call(&t, addr_of(&tc, "manager-1"), Request::Ping).await {
        Err(TransportError::Certificate { reason, .. }) => {
            assert!(reason.contains("revoked"), "{reason}")
        }
        other => panic!("a new connection of alice must be refused: {other:?}"),
    }
    // Bob goes on.
    let (b2, _) = bob
        .create(InodeId::ROOT, "b2", 0o644, 0o022, ROOT)
        .await
        .expect("bob creates after alice's revocation");
    bob.write(b2.ino, 0, b"after").await.expect("write");
    bob.fsync(b2.ino).await.expect("fsync");
    bob.shutdown();

    // The deny list survives a node restart (persisted in the node's state directory).
    let mut tc = tc;
    tc.cluster
        .stop_node("manager-2", false)
        .await
        .expect("stop");
    std::fs::remove_file(fsd::node::revoked_list_path(&config)).expect("remove the cluster copy");
    tc.cluster.start_node("manager-2").await.expect("start");
    match call(&t, addr_of(&tc, "manager-2"), Request::Ping).await {
        Err(TransportError::Certificate { .. }) => {}
        other => panic!("alice refused after manager-2 restarted: {other:?}"),
    }
    tc.cluster.stop().await;
}

fn as_user(uid: u32, gid: u32) -> Option<Credentials> {
    Some(Credentials {
        uid,
        gid,
        groups: vec![],
    })
}

/// Runs `fut` as a local process of `cred` would (what a FUSE request carries).
async fn run_as<F: std::future::Future>(cred: Option<Credentials>, fut: F) -> F::Output {
    fuse_client::credentials::scope(cred, fut).await
}

const READ: OpenAccess = OpenAccess {
    read: true,
    write: false,
};
const WRITE: OpenAccess = OpenAccess {
    read: false,
    write: true,
};

/// Issue 10 item 3: the manager checks every request with the caller's credentials, which
/// the client sends (no kernel here: requests made by hand through the client library, so
/// no `default_permissions` in front), mapped by the identity's export options.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_manager_checks_permissions_with_the_callers_credentials() {
    let tc = TestCluster::start(6, 2, 4, 2).await;
    let config = tc.cluster.config.clone();
    let year = Duration::from_secs(365 * 86400);
    let issue = |name: &str, export| {
        fsd::certs::issue(&config, Role::Client, name, year, export).expect("issue");
    };
    issue("alice", ExportOptions::default());
    issue(
        "reader",
        ExportOptions {
            read_only: true,
            ..Default::default()
        },
    );
    let connect = |name: &'static str| {
        let config = config.clone();
        async move {
            let t = fsd::cluster::transport_as(&config, name).expect("transport");
            fuse_client::Client::connect(config, t)
                .await
                .expect("connect")
        }
    };
    // The cluster's own `client` identity is trusted: root there is root.
    let admin = tc.client().await;
    let alice = connect("alice").await;
    let reader = connect("reader").await;
    let (u1, u2) = (1000, 1001);

    let shared = run_as(
        as_user(0, 0),
        admin.mkdir(InodeId::ROOT, "shared", 0o777, 0, ROOT),
    )
    .await
    .expect("mkdir");
    assert_eq!((shared.uid, shared.perm), (0, 0o777));
    let (secret, _) = run_as(
        as_user(u1, u1),
        admin.create(shared.ino, "secret", 0o600, 0, ROOT),
    )
    .await
    .expect("create as 1000");
    assert_eq!((secret.uid, secret.gid), (u1, u1), "owned by the caller");
    admin
        .write(secret.ino, 0, b"top secret")
        .await
        .expect("write");
    admin.fsync(secret.ino).await.expect("fsync");
    admin.release(secret.ino).await.expect("release");

    // Another user cannot open it, nor get at its data.
    let r = run_as(as_user(u2, u2), alice.open(secret.ino, READ)).await;
    assert_eq!(r.err(), Some(FsError::EACCES), "0600 file of another user");
    let r = run_as(as_user(u2, u2), alice.read(secret.ino, 0, 10)).await;
    assert_eq!(
        r.err(),
        Some(FsError::EACCES),
        "its extents are refused too"
    );
    let r = run_as(as_user(u2, u2), alice.open(secret.ino, WRITE)).await;
    assert_eq!(r.err(), Some(FsError::EACCES));
    // Nor share its extents into a file of its own (copy_file_range): the manager
    // checks the copy like a read of the source.
    let (own, _) = run_as(
        as_user(u2, u2),
        alice.create(shared.ino, "mine", 0o644, 0, ROOT),
    )
    .await
    .expect("create as 1001");
    let r = run_as(
        as_user(u2, u2),
        alice.copy_file_range(secret.ino, 0, own.ino, 0, 10),
    )
    .await;
    assert_eq!(r.err(), Some(FsError::EACCES), "copy of a 0600 file");
    let got = run_as(as_user(u2, u2), alice.read(own.ino, 0, 10))
        .await
        .expect("read own");
    assert!(got.is_empty(), "nothing was shared: {got:?}");
    alice.release(own.ino).await.expect("release");
    // Nor chmod, chown or truncate it.
    let set = |perm, uid, size| SetAttrs {
        perm,
        uid,
        size,
        ..Default::default()
    };
    for s in [set(Some(0o644), None, None), set(None, Some(u2), None)] {
        let r = run_as(as_user(u2, u2), alice.setattr(secret.ino, s, ROOT)).await;
        assert_eq!(r.err(), Some(FsError::EPERM));
    }
    let r = run_as(
        as_user(u2, u2),
        alice.setattr(secret.ino, set(None, None, Some(0)), ROOT),
    )
    .await;
    assert_eq!(r.err(), Some(FsError::EACCES));
    // Its owner can, on the same client.
    let fh = run_as(as_user(u1, u1), alice.open(secret.ino, READ)).await;
    assert!(fh.is_ok(), "{fh:?}");
    let got = run_as(as_user(u1, u1), alice.read(secret.ino, 0, 10))
        .await
        .expect("owner reads");
    assert_eq!(&got[..], b"top secret");
    alice.release(secret.ino).await.expect("release");

    // Root squash (the default for an issued identity): root on alice is nobody.
    let (rootfile, _) = run_as(as_user(0, 0), alice.create(shared.ino, "r", 0o644, 0, ROOT))
        .await
        .expect("create as squashed root");
    assert_eq!((rootfile.uid, rootfile.gid), (65534, 65534));
    alice.release(rootfile.ino).await.expect("release");
    let (root_secret, _) = run_as(
        as_user(0, 0),
        admin.create(InodeId::ROOT, "rs", 0o600, 0, ROOT),
    )
    .await
    .expect("create as root");
    admin.release(root_secret.ino).await.expect("release");
    let r = run_as(as_user(0, 0), alice.open(root_secret.ino, READ)).await;
    assert_eq!(
        r.err(),
        Some(FsError::EACCES),
        "squashed root reads no 0600 root file"
    );
    // Without any credentials (a hand-made request): this client's root, squashed too.
    let r = alice.open(root_secret.ino, READ).await;
    assert_eq!(r.err(), Some(FsError::EACCES));
    let r = run_as(
        as_user(0, 0),
        alice.create(InodeId::ROOT, "x", 0o644, 0, ROOT),
    )
    .await;
    assert_eq!(
        r.err(),
        Some(FsError::EACCES),
        "squashed root may not write /"
    );
    let r = run_as(
        as_user(u1, u1),
        alice.setattr(secret.ino, set(None, Some(0), None), ROOT),
    )
    .await;
    assert_eq!(r.err(), Some(FsError::EPERM), "no giving files to root");

    // A truncate by a non-owner clears set-user-ID (and set-group-ID with group execute).
    let (suid, _) = run_as(
        as_user(u1, u1),
        admin.create(shared.ino, "suid", 0o6777, 0, ROOT),
    )
    .await
    .expect("create");
    admin.release(suid.ino).await.expect("release");
    let a = run_as(
        as_user(u1, u1),
        admin.setattr(suid.ino, set(Some(0o6777), None, None), ROOT),
    )
    .await
    .expect("owner chmod");
    assert_eq!(a.perm, 0o6777);
    let a = run_as(
        as_user(u2, u2),
        alice.setattr(suid.ino, set(None, None, Some(0)), ROOT),
    )
    .await
    .expect("truncate by a writer that is not the owner");
    assert_eq!(a.perm, 0o777, "set-ID bits cleared");

    // A read-only identity: EROFS for every change, reads work.
    let r = run_as(
        as_user(u1, u1),
        reader.create(shared.ino, "n", 0o644, 0, ROOT),
    )
    .await;
    assert_eq!(r.err(), Some(FsError::EROFS));
    let r = run_as(as_user(u1, u1), reader.open(secret.ino, WRITE)).await;
    assert_eq!(r.err(), Some(FsError::EROFS));
    let r = run_as(as_user(u1, u1), reader.unlink(shared.ino, "r", ROOT)).await;
    assert_eq!(r.err(), Some(FsError::EROFS));
    run_as(as_user(u1, u1), reader.open(secret.ino, READ))
        .await
        .expect("read-only open");
    let got = run_as(as_user(u1, u1), reader.read(secret.ino, 0, 10))
        .await
        .expect("read");
    assert_eq!(&got[..], b"top secret");
    reader.release(secret.ino).await.expect("release");
    for c in [alice, reader, admin] {
        c.shutdown();
    }
    tc.cluster.stop().await;
}

/// Virtual memory of the process: a buffer allocated from a size prefix counts at once
/// (zeroed allocations do not touch their pages, so the resident size would not show it).
const CONNS: usize = 32;
const STREAMS: usize = 64;

/// Resident memory of the process.
fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

fn vm_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmSize")
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_large_size_prefixes_leave_the_node_serving_with_bounded_memory() {
    let tc = TestCluster::start(6, 2, 4, 2).await;
    let config = tc.cluster.config.clone();
    let st = addr_of(&tc, "storage-1");
    // A raw QUIC peer with a valid client certificate that sends frame prefixes claiming
    // the largest header and bulk, and then nothing.
    let id = fsd::node::identity(&config, "client").expect("identity");
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(id.client_config().expect("tls"))
        .expect("quic");
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let conn = ep
        .connect(st, proto::tls::SERVER_NAME)
        .expect("connect")
        .await
        .expect("handshake");
    // Many connections (under the per-identity cap of 64), each with many streams.
    let mut conns = vec![conn.clone()];
    for _ in 1..CONNS {
        conns.push(
            ep.connect(st, proto::tls::SERVER_NAME)
                .expect("connect")
                .await
                .expect("handshake"),
        );
    }
    let before = vm_bytes();
    let rss_before = rss_bytes();
    let mut streams = Vec::new();
    for i in 0..(CONNS * STREAMS) as u32 {
        let (mut send, recv) = conns[i as usize % CONNS].open_bi().await.expect("stream");
        let mut prefix = Vec::new();
        prefix.extend_from_slice(&proto::frame::MAGIC);
        // Even streams claim the largest header; odd ones send a whole Ping header and
        // claim the largest bulk.
        let header: u32 = if i % 2 == 0 {
            proto::frame::MAX_HEADER
        } else {
            1
        };
        prefix.extend_from_slice(&header.to_le_bytes());
        prefix.extend_from_slice(&proto::frame::MAX_BULK.to_le_bytes());
        if header == 1 {
            prefix.extend_from_slice(
                &proto::frame::encode_head(&Request::Ping, 0).expect("ping")
                    [proto::frame::PREFIX_LEN..],
            );
        }
        send.write_all(&prefix).await.expect("prefix");
        streams.push((send, recv));
    }
    // The node keeps serving others meanwhile.
    let admin = fsd::cluster::admin_transport(&config).expect("admin");
    for _ in 0..5 {
        assert!(matches!(
            call(&admin, st, Request::Storage(StorageRequest::Stat)).await,
            Ok(Response::Storage(StorageResponse::Stat(_)))
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let c = tc.client().await;
    let (a, _) = c
        .create(InodeId::ROOT, "f", 0o644, 0o022, ROOT)
        .await
        .expect("create");
    c.write(a.ino, 0, &vec![7u8; 1 << 20]).await.expect("write");
    c.fsync(a.ino).await.expect("fsync");
    let grown = vm_bytes().saturating_sub(before);
    let rss_after = rss_bytes();
    eprintln!(
        "{CONNS} connections x {STREAMS} streams of maximal size prefixes: VmSize +{} MiB, \
         VmRSS {} -> {} MiB (the whole test process: every node and the client)",
        grown >> 20,
        rss_before >> 20,
        rss_after >> 20
    );
    // Allocating from the prefixes alone would take 1024 x 16 MiB + 1024 x 64 MiB.
    assert!(
        grown < 1 << 30,
        "memory grew by {grown} bytes for frames that never came"
    );
    // Bad magic disconnects the peer, with a logged reason.
    let (mut send, _recv) = conn.open_bi().await.expect("stream");
    send.write_all(b"HTTP/1.1 GET / xx").await.expect("write");
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("a misbehaving peer is disconnected");
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(_)),
        "{closed:?}"
    );
    drop(streams);
    drop(conns);
    c.shutdown();
    tc.cluster.stop().await;
}

/// Answers every request with a pong, as whoever it is bound as.
struct Impostor;

impl proto::transport::Handler for Impostor {
    fn handle(
        &self,
        _peer: proto::transport::Peer,
        _req: Request,
        _bulk: Bytes,
    ) -> proto::transport::BoxFuture<'_, (Response, Bytes)> {
        Box::pin(async {
            (
                Response::Pong(NodeInfo {
                    name: "storage-1".into(),
                    roles: vec![],
                    version: "x".into(),
                    workers: Vec::new(),
                    config_group: None,
                    config_epoch: 0,
                }),
                Bytes::new(),
            )
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_machine_at_a_nodes_address_with_another_certificate_is_refused() {
    let mut tc = TestCluster::start(6, 2, 4, 2).await;
    let config = tc.cluster.config.clone();
    let st = addr_of(&tc, "storage-1");
    tc.cluster.stop_node("storage-1", true).await.expect("stop");
    // A client machine takes over storage-1's address with its own (valid) certificate.
    let client_id = fsd::node::identity(&config, "client").expect("identity");
    let impostor = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match Transport::bind(st, &client_id, true) {
                Ok(t) => break t,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("bind {st}: {e}"),
            }
        }
    };
    let _serving = impostor.serve(Arc::new(Impostor));
    // Admin tools, mounts and nodes dial it expecting storage-1: refused, with the reason.
    let admin = fsd::cluster::admin_transport(&config).expect("admin");
    let err = call(&admin, st, Request::Ping)
        .await
        .expect_err("an impostor is refused");
    assert!(
        matches!(
            &err,
            TransportError::WrongPeer {
                mismatch: PeerMismatch::OtherName { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("expected node `storage-1` (storage)"),
        "{err}"
    );
    let node_t = &tc
        .cluster
        .node_transport("manager-1")
        .expect("manager-1 runs");
    // manager-1 may have dialled storage-1 while it was down: wait out its back-off.
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        let err = call(node_t, st, Request::Ping)
            .await
            .expect_err("a node refuses the impostor too");
        if !err.to_string().contains("recently failed to connect") || Instant::now() > deadline {
            break err;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        err.to_string()
            .contains("expected node `storage-1` (storage)"),
        "{err}"
    );
    impostor.close();
    tc.cluster.stop().await;
}

/// Puts the certificate and key of identity `from` in place of `to`'s (a node whose key pair
/// is really another identity's).
fn swap_key_pair(config: &proto::config::ClusterConfig, from: &str, to: &str) {
    let (from_cert, from_key) = config.cert_paths(from);
    let (to_cert, to_key) = config.cert_paths(to);
    std::fs::copy(from_cert, to_cert).expect("copy certificate");
    std::fs::copy(from_key, to_key).expect("copy key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_manager_whose_key_pair_is_a_clients_fails_its_recovery() {
    let mut tc = TestCluster::start(6, 2, 4, 2).await;
    let config = tc.cluster.config.clone();
    // Restarted with a client's key pair, manager-2 cannot reach the config group: it gets
    // to its recovery only if it applied the committed config before (`standing`).
    tc.cluster
        .config_group("manager-2")
        .expect("a member")
        .wait_for_epoch(config.file.epoch, Duration::from_secs(30))
        .await
        .expect("the seed reaches manager-2");
    tc.cluster
        .stop_node("manager-2", false)
        .await
        .expect("stop");
    swap_key_pair(&config, "client", "manager-2");
    tc.cluster.start_node("manager-2").await.expect("start");
    let svc = tc
        .cluster
        .manager_service("manager-2")
        .expect("manager-2 runs");
    // The storage servers refuse what recovery asks of them (its log is a manager's):
    // recovery refuses to serve, with the storage servers' named error.
    let err = tokio::time::timeout(Duration::from_secs(60), svc.wait_recovered())
        .await
        .expect("recovery ends")
        .expect_err("a manager with a client's key pair must not recover");
    let text = err.to_string();
    assert!(
        text.contains("storage servers refused the segment list")
            && text.contains(
                "permission denied: client (client) [trusted] lacks the right `list-logs`"
            ),
        "{text}"
    );
    // And it answers no one: requests get the refusal of its recovery.
    let admin = fsd::cluster::admin_transport(&config).expect("admin");
    match call(
        &admin,
        addr_of(&tc, "manager-2"),
        Request::Manager(ManagerRequest::Counts),
    )
    .await
    {
        // Dialled as `manager-2`, the node presents `client`: refused by the dialler too.
        Err(TransportError::WrongPeer {
            mismatch: PeerMismatch::OtherName { .. },
            ..
        }) => {}
        other => panic!("manager-2 as client must not be served: {other:?}"),
    }
    tc.cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_refuses_a_manager_address_answered_by_a_storage_or_client_certificate() {
    let mut tc = TestCluster::start(6, 2, 4, 2).await;
    let config = tc.cluster.config.clone();
    let mgr = addr_of(&tc, "manager-1");
    tc.cluster
        .stop_node("manager-1", false)
        .await
        .expect("stop");
    for who in ["storage-1", "client"] {
        let id = fsd::node::identity(&config, who).expect("identity");
        let impostor = {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match Transport::bind(mgr, &id, true) {
                    Ok(t) => break t,
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("bind {mgr}: {e}"),
                }
            }
        };
        let _serving = impostor.serve(Arc::new(Impostor));
        // A client's transport (fresh, so no back-off from earlier tries) refuses it.
        let t = fsd::cluster::client_transport(&config).expect("transport");
        let err = call(&t, mgr, Request::Manager(ManagerRequest::Counts))
            .await
            .expect_err("a client must refuse the impostor");
        match &err {
            TransportError::WrongPeer {
                mismatch: PeerMismatch::OtherName { expected, got },
                ..
            } => {
                assert_eq!(expected.name, "manager-1");
                assert_eq!(got.name, who);
            }
            other => panic!("{who} at manager-1's address: {other:?}"),
        }
        assert!(
            err.to_string()
                .contains("expected node `manager-1` (manager) per the cluster config"),
            "{err}"
        );
        // A mount needs every manager's lease: it refuses to mount.
        let mount = fuse_client::Client::connect(config.clone(), t).await;
        assert!(
            mount.is_err(),
            "a mount through {who} as manager-1 must fail"
        );
        impostor.close();
    }
    tc.cluster.stop().await;
}
