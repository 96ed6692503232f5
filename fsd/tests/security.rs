//! Identities, the role matrix, revocation, fail-closed leases and frame limits, on a real
//! in-process cluster with real certificates (issue 10). Each refusal is checked for the
//! named error: the identity and the missing right.

mod common;

use bytes::Bytes;
use common::TestCluster;
use proto::identity::Role;
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
    });
    assert_denied(call(&client, mgr, commit).await, "client", "commit-own-log");

    // Leases fail closed: a client identity without a session is not served.
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
    fsd::certs::issue(&config, Role::Client, "alice", year).expect("issue alice");
    fsd::certs::issue(&config, Role::Client, "bob", year).expect("issue bob");
    assert!(
        fsd::certs::issue(&config, Role::Client, "alice", year).is_err(),
        "a name is issued once"
    );
    assert!(
        fsd::certs::issue(&config, Role::Client, "storage-1", year).is_err(),
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

/// Virtual memory of the process: a buffer allocated from a size prefix counts at once
/// (zeroed allocations do not touch their pages, so the resident size would not show it).
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
    let before = vm_bytes();
    let mut streams = Vec::new();
    for i in 0..200u32 {
        let (mut send, recv) = conn.open_bi().await.expect("stream");
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
    // Allocating from the prefixes alone would take 100 x 16 MiB + 100 x 64 MiB.
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
    c.shutdown();
    tc.cluster.stop().await;
}
