//! The QUIC transport on loopback: mutual TLS, refusal of foreign certificates, callbacks
//! over a client's own connection, and malformed frames.

use bytes::Bytes;
use proto::msg::{NodeInfo, RemoteError, Request, Response};
use proto::tls::{write_pem, CertAuthority, Identity};
use proto::transport::{BoxFuture, Handler, Peer, Transport, TransportError};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

struct Echo(&'static str);

impl Handler for Echo {
    fn handle(&self, _peer: Peer, req: Request, bulk: Bytes) -> BoxFuture<'_, (Response, Bytes)> {
        Box::pin(async move {
            match req {
                Request::Ping => (
                    Response::Pong(NodeInfo {
                        name: self.0.into(),
                        roles: vec![],
                        version: "t".into(),
                        workers: Vec::new(),
                        config_group: None,
                        config_epoch: 0,
                    }),
                    bulk,
                ),
                _ => (
                    Response::Error(RemoteError::NoRole("test".into())),
                    Bytes::new(),
                ),
            }
        })
    }
}

fn identity(dir: &Path, ca: &CertAuthority, name: &str) -> Identity {
    let (cert, key) = ca.issue(name).expect("issue");
    let ca_path = dir.join(format!("ca-{name}.pem"));
    let c = dir.join(format!("{name}.pem"));
    let k = dir.join(format!("{name}.key"));
    write_pem(&ca_path, &ca.cert_pem, false).expect("write");
    write_pem(&c, &cert, false).expect("write");
    write_pem(&k, &key, true).expect("write");
    Identity::load(&ca_path, &c, &k).expect("load")
}

/// Like `identity`, with a certificate that names a client identity (budgets are per name).
fn client_identity(dir: &Path, ca: &CertAuthority, name: &str) -> Identity {
    let id = proto::identity::PeerIdentity::new(name, &[proto::identity::Role::Client])
        .expect("identity");
    let (cert, key) = ca.issue_identity(&id, None).expect("issue");
    let ca_path = dir.join(format!("ca-{name}.pem"));
    let c = dir.join(format!("{name}.pem"));
    let k = dir.join(format!("{name}.key"));
    write_pem(&ca_path, &ca.cert_pem, false).expect("write");
    write_pem(&c, &cert, false).expect("write");
    write_pem(&k, &key, true).expect("write");
    Identity::load(&ca_path, &c, &k).expect("load")
}

fn any() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

#[tokio::test]
async fn mtls_call_callback_and_refusal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = CertAuthority::generate("t").expect("ca");
    let server = Transport::bind(any(), &identity(dir.path(), &ca, "server"), true).expect("bind");
    let _serving = server.serve(Arc::new(Echo("server")));
    let addr = server.local_addr().expect("addr");

    // A client of the same CA: request and bulk bytes round-trip.
    let client = Transport::bind(any(), &identity(dir.path(), &ca, "client"), false).expect("bind");
    client.set_callback_handler(Arc::new(Echo("client")));
    let payload = Bytes::from(vec![7u8; 3 << 20]);
    let (resp, bulk) = client
        .call(addr, &Request::Ping, payload.clone())
        .await
        .expect("call");
    assert!(
        matches!(resp, Response::Pong(ref i) if i.name == "server"),
        "{resp}"
    );
    assert_eq!(bulk, payload);

    // The server calls the client back over the connection the client opened.
    let client_addr = client.local_addr().expect("addr");
    let (resp, _) = server
        .call_peer(
            client_addr,
            &Request::Ping,
            Bytes::new(),
            Duration::from_secs(5),
        )
        .await
        .expect("callback");
    assert!(
        matches!(resp, Response::Pong(ref i) if i.name == "client"),
        "{resp}"
    );

    // A client with a certificate from another CA is refused, quickly and clearly.
    let other = CertAuthority::generate("other").expect("ca");
    let other_dir = tempfile::tempdir().expect("tempdir");
    let stranger =
        Transport::bind(any(), &identity(other_dir.path(), &other, "client"), false).expect("bind");
    let err = stranger
        .call_timeout(addr, &Request::Ping, Bytes::new(), Duration::from_secs(10))
        .await
        .expect_err("a foreign certificate must be refused");
    assert!(
        matches!(err, TransportError::Certificate { .. }),
        "expected a certificate error, got {err}"
    );
    assert!(err.to_string().contains("certificate"), "{err}");

    // Nothing listens: unreachable, not a hang.
    server.close();
    let dead = "127.0.0.1:9".parse().expect("addr");
    let err = client
        .call_timeout(dead, &Request::Ping, Bytes::new(), Duration::from_secs(10))
        .await
        .expect_err("nobody listens there");
    assert!(err.is_unavailable(), "{err}");
}

#[tokio::test]
async fn malformed_header_gets_an_error_reply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = CertAuthority::generate("t").expect("ca");
    let server = Transport::bind(any(), &identity(dir.path(), &ca, "server"), true).expect("bind");
    let _serving = server.serve(Arc::new(Echo("server")));
    let addr = server.local_addr().expect("addr");
    // Speak raw quinn with a valid prefix but a garbage header.
    let id = identity(dir.path(), &ca, "client");
    let mut ep = quinn::Endpoint::client(any()).expect("endpoint");
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(id.client_config().expect("cfg"))
            .expect("quic");
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = ep
        .connect(addr, proto::tls::SERVER_NAME)
        .expect("connect")
        .await
        .expect("handshake");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let mut frame = proto::frame::MAGIC.to_vec();
    frame.extend_from_slice(&4u32.to_le_bytes());
    frame.extend_from_slice(&0u64.to_le_bytes());
    frame.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    send.write_all(&frame).await.expect("write");
    send.finish().expect("finish");
    let reply = recv.read_to_end(1 << 20).await.expect("reply");
    let mut p = [0u8; proto::frame::PREFIX_LEN];
    p.copy_from_slice(&reply[..proto::frame::PREFIX_LEN]);
    let prefix = proto::frame::decode_prefix(&p).expect("prefix");
    let resp: Response = proto::frame::decode_header(
        &reply[proto::frame::PREFIX_LEN..][..prefix.header_len as usize],
    )
    .expect("decode");
    assert!(
        matches!(resp, Response::Error(RemoteError::Invalid(_))),
        "{resp}"
    );
    // The server is still fine afterwards.
    let client = Transport::bind(any(), &id, false).expect("bind");
    client
        .call(addr, &Request::Ping, Bytes::new())
        .await
        .expect("still serving");
}

/// Opens a raw quinn connection as `id` (to send frames the transport never would).
async fn raw_connection(id: &Identity, addr: std::net::SocketAddr) -> quinn::Connection {
    let mut ep = quinn::Endpoint::client(any()).expect("endpoint");
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(id.client_config().expect("cfg"))
            .expect("quic");
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    ep.connect(addr, proto::tls::SERVER_NAME)
        .expect("connect")
        .await
        .expect("handshake")
}

/// Starts `streams` requests on `conn` that each send `sent` bytes of a much larger bulk
/// payload and then stall (never finishing their frame).
async fn stalled_requests(
    conn: &quinn::Connection,
    streams: usize,
    sent: usize,
) -> Vec<(quinn::SendStream, quinn::RecvStream)> {
    let mut out = Vec::new();
    for _ in 0..streams {
        let (mut send, recv) = conn.open_bi().await.expect("stream");
        let head = proto::frame::encode_head(&Request::Ping, 64 << 20).expect("head");
        send.write_all(&head).await.expect("head");
        send.write_all(&vec![0x5a; sent]).await.expect("bulk");
        out.push((send, recv));
    }
    out
}

/// Polls the server's held frame bytes until `done` says so (for at most `bound`),
/// checking `limit` on every poll; returns the last figure.
async fn held_until(
    server: &Transport,
    limit: usize,
    done: impl Fn(usize) -> bool,
    bound: Duration,
    what: &str,
) -> usize {
    let start = std::time::Instant::now();
    loop {
        let (held, _) = server.frame_bytes_held();
        assert!(
            held <= limit,
            "{what}: {held} bytes held, over the limit {limit}"
        );
        if done(held) {
            return held;
        }
        if start.elapsed() > bound {
            panic!("{what}: the server held {held} bytes after {bound:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_memory_is_bounded_per_identity_and_per_node() {
    use proto::budget::{FrameLimits, READ_CHUNK};
    const MIB: usize = 1 << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = CertAuthority::generate("t").expect("ca");
    let server = Transport::bind(any(), &identity(dir.path(), &ca, "server"), true).expect("bind");
    let limits = FrameLimits {
        connection: 2 * MIB,
        identity: 3 * MIB,
        node: 4 * MIB,
    };
    server.set_frame_limits(limits);
    let _serving = server.serve(Arc::new(Echo("server")));
    let addr = server.local_addr().expect("addr");

    // One misbehaving identity with two connections of stalled requests: each connection
    // could hold 2 MiB, the identity only 3.
    let mallory = client_identity(dir.path(), &ca, "mallory");
    let m1 = raw_connection(&mallory, addr).await;
    let m2 = raw_connection(&mallory, addr).await;
    let _s1 = stalled_requests(&m1, 4, 3 * MIB / 2).await;
    let _s2 = stalled_requests(&m2, 4, 3 * MIB / 2).await;
    held_until(
        &server,
        limits.identity,
        |h| h + READ_CHUNK > limits.identity,
        Duration::from_secs(10),
        "one identity",
    )
    .await;

    // Another identity is served meanwhile, bulk payload included.
    let alice =
        Transport::bind(any(), &client_identity(dir.path(), &ca, "alice"), false).expect("bind");
    let payload = Bytes::from(vec![3u8; MIB / 2]);
    let (resp, bulk) = alice
        .call_timeout(
            addr,
            &Request::Ping,
            payload.clone(),
            Duration::from_secs(10),
        )
        .await
        .expect("another identity is served while one misbehaves");
    assert!(matches!(resp, Response::Pong(_)), "{resp}");
    assert_eq!(bulk, payload);

    // A second misbehaving identity: together they stop at the node's limit.
    let trudy = client_identity(dir.path(), &ca, "trudy");
    let t1 = raw_connection(&trudy, addr).await;
    let _s3 = stalled_requests(&t1, 4, 3 * MIB / 2).await;
    held_until(
        &server,
        limits.node,
        |h| h + READ_CHUNK > limits.node,
        Duration::from_secs(10),
        "two identities",
    )
    .await;

    // Closing their connections gives everything back; then large requests pass again.
    // The server learns of a close from the peer's close packet, or, should that be lost
    // (a loaded machine drops loopback datagrams too), when the connection idles out
    // (10 s): the bound covers both. CI saw a close that took the second path.
    for c in [&m1, &m2, &t1] {
        c.close(0u32.into(), b"done");
    }
    held_until(
        &server,
        limits.node,
        |h| h == 0,
        Duration::from_secs(25),
        "after the close",
    )
    .await;
    let payload = Bytes::from(vec![4u8; 3 * MIB / 2]);
    let (_, bulk) = alice
        .call_timeout(
            addr,
            &Request::Ping,
            payload.clone(),
            Duration::from_secs(10),
        )
        .await
        .expect("served after the misbehaving peers left");
    assert_eq!(bulk, payload);
}

#[tokio::test]
async fn a_dialled_peer_must_be_the_node_the_config_names() {
    use proto::identity::{ExpectedPeer, PeerMismatch, Role};
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = CertAuthority::generate("t").expect("ca");
    // Whoever answers at this address has a valid certificate of the cluster CA, but a
    // client's, under the name the config gives the node.
    let server =
        Transport::bind(any(), &client_identity(dir.path(), &ca, "st-1"), true).expect("bind");
    let _serving = server.serve(Arc::new(Echo("st-1")));
    let addr = server.local_addr().expect("addr");
    let dialler =
        Transport::bind(any(), &client_identity(dir.path(), &ca, "m-1"), false).expect("bind");
    let expect = |name: &str, roles: &[Role]| {
        [(
            addr,
            ExpectedPeer {
                name: name.into(),
                roles: roles.to_vec(),
            },
        )]
        .into_iter()
        .collect()
    };
    dialler.expect_peers(expect("st-1", &[Role::Storage]));
    let err = dialler
        .call_timeout(addr, &Request::Ping, Bytes::new(), Duration::from_secs(10))
        .await
        .expect_err("a client certificate cannot pose as a storage server");
    assert!(
        matches!(
            &err,
            TransportError::WrongPeer {
                mismatch: PeerMismatch::MissingRoles { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("expected node `st-1` (storage) per the cluster config, but it presented `st-1 (client)"),
        "{err}"
    );
    // The right expectation (after the down back-off) is served.
    dialler.expect_peers(expect("st-1", &[Role::Client]));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (resp, _) = dialler
        .call_timeout(addr, &Request::Ping, Bytes::new(), Duration::from_secs(10))
        .await
        .expect("the named node is served");
    assert!(matches!(resp, Response::Pong(_)), "{resp}");
}

/// A server on a runtime of its own, which the test can freeze: while frozen its only
/// thread sleeps, so it reads no datagram and acknowledges nothing (a cut-off or stopped
/// peer, as the client sees it); thawed, it goes on with what queued in its socket.
struct FreezableServer {
    addr: std::net::SocketAddr,
    frozen: Arc<std::sync::atomic::AtomicBool>,
    /// Set by the server's thread while it sleeps frozen.
    parked: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FreezableServer {
    fn start(id: Identity) -> FreezableServer {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (frozen, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let parked = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (f, s, p) = (frozen.clone(), stop.clone(), parked.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let server = Transport::bind(any(), &id, true).expect("bind");
                let _serving = server.serve(Arc::new(Echo("frozen")));
                tx.send(server.local_addr().expect("addr")).expect("send");
                while !s.load(Ordering::SeqCst) {
                    if f.load(Ordering::SeqCst) {
                        // Blocks the runtime's only thread: nothing of the server runs.
                        p.store(true, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(10));
                    } else {
                        p.store(false, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            });
        });
        let addr = rx.recv().expect("server address");
        FreezableServer {
            addr,
            frozen,
            parked,
            stop,
            thread: Some(thread),
        }
    }

    /// Freezes or thaws the server, and waits (bounded) until its thread did.
    fn set_frozen(&self, on: bool) {
        use std::sync::atomic::Ordering;
        self.frozen.store(on, Ordering::SeqCst);
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while self.parked.load(Ordering::SeqCst) != on && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            self.parked.load(Ordering::SeqCst),
            on,
            "the server thread did not follow"
        );
    }
}

impl Drop for FreezableServer {
    fn drop(&mut self) {
        self.frozen
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A connection that sent and got nothing acknowledged since a snapshot is closed by
/// `drop_unacknowledged`, so the next call opens a new one (after an outage, QUIC's
/// backed-off probes would keep the old one mute for seconds); an idle connection and one
/// whose peer answers are left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_dropped_idle_and_live_ones_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = CertAuthority::generate("t").expect("ca");
    let live = Transport::bind(any(), &identity(dir.path(), &ca, "live"), true).expect("bind");
    let _serving = live.serve(Arc::new(Echo("live")));
    let live_addr = live.local_addr().expect("addr");
    let mute = FreezableServer::start(identity(dir.path(), &ca, "mute"));
    let client = Transport::bind(any(), &identity(dir.path(), &ca, "client"), false).expect("bind");
    for a in [live_addr, mute.addr] {
        client
            .call(a, &Request::Ping, Bytes::new())
            .await
            .expect("ping");
    }
    // Nothing sent since: both are idle, neither is dropped.
    let snap = client.ack_snapshot();
    assert_eq!(snap.len(), 2);
    assert_eq!(client.drop_unacknowledged(&snap), 0);
    // One peer stops answering while a call waits on it; the other stays live.
    let snap = client.ack_snapshot();
    mute.set_frozen(true);
    let stuck = tokio::time::timeout(
        Duration::from_millis(600),
        client.call(mute.addr, &Request::Ping, Bytes::new()),
    )
    .await;
    assert!(stuck.is_err(), "a call to the frozen server was answered");
    client
        .call(live_addr, &Request::Ping, Bytes::new())
        .await
        .expect("live ping");
    assert_eq!(client.drop_unacknowledged(&snap), 1, "only the mute one");
    assert_eq!(client.ack_snapshot().len(), 1, "the mute one is closed");
    // The peer is back: the next call opens a new connection and is answered.
    mute.set_frozen(false);
    tokio::time::timeout(
        Duration::from_secs(5),
        client.call(mute.addr, &Request::Ping, Bytes::new()),
    )
    .await
    .expect("a call after the thaw was not answered within 5 s")
    .expect("ping after the thaw");
}

/// A connection closed by `drop_connection` is replaced at once by a new one to the same
/// live peer. With TLS session resumption on, the resumed handshake never completed and the
/// call failed after the 10 s idle timeout (2026-12-06); a new endpoint was not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_reconnects_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = CertAuthority::generate("t").expect("ca");
    let server = Transport::bind(any(), &identity(dir.path(), &ca, "server"), true).expect("bind");
    let _serving = server.serve(Arc::new(Echo("server")));
    let addr = server.local_addr().expect("addr");
    let client = Transport::bind(any(), &identity(dir.path(), &ca, "client"), false).expect("bind");
    for round in 0..3 {
        client
            .call(addr, &Request::Ping, Bytes::new())
            .await
            .expect("ping");
        client.drop_connection(addr);
        let again = tokio::time::timeout(
            Duration::from_secs(3),
            client.call(addr, &Request::Ping, Bytes::new()),
        )
        .await;
        assert!(
            matches!(again, Ok(Ok(_))),
            "round {round}: the call after a dropped connection: {again:?}"
        );
    }
}
