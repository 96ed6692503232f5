//! QUIC transport with mutual TLS: one endpoint per process, one connection per peer, one
//! bidirectional stream per RPC. Owns sockets, connections and framing on the wire; knows
//! nothing of what the messages mean (that is the roles' business).

use crate::budget::{ConnectionBudget, FrameLimits, Held, NodeBudget, READ_CHUNK};
use crate::frame::{self, FrameError, PREFIX_LEN};
use crate::identity::{ExpectedPeer, PeerIdentity, PeerMismatch};
use crate::msg::{RemoteError, Request, Response};
use crate::tls::{Identity, TlsError, SERVER_NAME};
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a connection attempt may take before the peer counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// After a failed connect, calls to that peer fail at once for this long.
const DOWN_BACKOFF: Duration = Duration::from_millis(500);
const SOCKET_BUFFER: usize = 4 << 20;
/// MTU used on loopback (measured best with GSO, MEASURED.md §3).
const LOOPBACK_MTU: u16 = 6500;
/// A request's frame must keep arriving: at most this long between two chunks (and for
/// the prefix after the stream opened), or the stream is reset and the reason logged.
pub const READ_IDLE: Duration = Duration::from_secs(20);
/// Bytes of request frames one incoming connection may hold in memory at once (frames
/// being read plus requests being handled). Allocation follows arriving bytes, never a
/// size prefix; a stream that cannot get budget within `READ_IDLE` is reset. The identity
/// and node levels are in `budget::FrameLimits` (set with `Transport::set_frame_limits`).
pub const CONNECTION_BUDGET: usize = 4 * frame::MAX_BULK as usize;
/// Incoming connections one identity may hold open at a node (each mount or tool process
/// opens one per node). Past it new connections of that identity are closed.
pub const MAX_CONNECTIONS_PER_IDENTITY: usize = 64;
/// Concurrent request streams per connection (QUIC stream credit).
const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// QUIC flow-control windows: per stream, per connection (receive) and send.
const STREAM_WINDOW: u32 = 4 << 20;
const CONNECTION_WINDOW: u32 = 64 << 20;
const SEND_WINDOW: u64 = 64 << 20;
/// Application close codes.
const CLOSE_REVOKED: u32 = 2;
const CLOSE_MISBEHAVING: u32 = 3;
const CLOSE_TOO_MANY: u32 = 4;
const CLOSE_WRONG_PEER: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot bind {addr}: {source} (is another process using this port?)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(#[from] TlsError),
    #[error("peer {addr} refused our certificate or presented one not signed by the cluster CA: {reason}")]
    Certificate { addr: SocketAddr, reason: String },
    /// The node we dialled is not the one the cluster config names at its address (another
    /// identity, or one without every role that node has: a storage server's or a client's
    /// certificate answering at a manager's address).
    #[error("peer {addr} refused: {mismatch}")]
    WrongPeer {
        addr: SocketAddr,
        #[source]
        mismatch: PeerMismatch,
    },
    #[error("peer {addr} is unreachable: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
    #[error("peer {addr} did not answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("connection to {addr} failed: {reason}")]
    Connection { addr: SocketAddr, reason: String },
    #[error("bad frame from {addr}: {source}")]
    Frame {
        addr: SocketAddr,
        source: FrameError,
    },
}

impl TransportError {
    /// Whether the failure says nothing about the data (the peer may be down or slow), so
    /// a reader should try elsewhere.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            TransportError::Unreachable { .. }
                | TransportError::Timeout { .. }
                | TransportError::Connection { .. }
        )
    }
}

/// Who sent a request: its address (for the way back) and the identity its verified
/// certificate carries (`None` when it carries none; `authz` refuses such peers).
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    pub identity: Option<Arc<PeerIdentity>>,
}

/// The identity of a connection's verified peer certificate.
fn peer_identity_of(conn: &quinn::Connection) -> Option<Arc<PeerIdentity>> {
    let any = conn.peer_identity()?;
    let certs = any
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    let first = certs.first()?;
    PeerIdentity::from_cert_der(first.as_ref())
        .ok()
        .map(Arc::new)
}

fn identity_key(id: &Option<Arc<PeerIdentity>>) -> String {
    id.as_ref()
        .map(|i| i.name.clone())
        .unwrap_or_else(|| "<no identity>".into())
}

/// A boxed future returned by handlers.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The receiving side of a role: turns one request (with its bulk bytes) into one response.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, peer: Peer, req: Request, bulk: Bytes) -> BoxFuture<'_, (Response, Bytes)>;
}

/// Where one connection stood (`Transport::ack_snapshot`).
#[derive(Clone, Copy, Debug)]
pub struct AckMark {
    addr: SocketAddr,
    id: usize,
    acks: u64,
    sent: u64,
}

#[derive(Default)]
struct PeerSlot {
    conn: tokio::sync::Mutex<Option<quinn::Connection>>,
    down_until: Mutex<Option<Instant>>,
}

/// One QUIC endpoint: it can call peers and, when `serve` is running, answer them.
pub struct Transport {
    endpoint: quinn::Endpoint,
    client_cfg: quinn::ClientConfig,
    peers: Mutex<HashMap<SocketAddr, Arc<PeerSlot>>>,
    /// Connections peers opened to us, by their address: the way back to a client that
    /// does not listen (manager callbacks).
    incoming: Arc<Mutex<HashMap<SocketAddr, quinn::Connection>>>,
    /// Answers requests that peers send back over connections we opened (callbacks).
    callback_handler: std::sync::OnceLock<Arc<dyn Handler>>,
    /// This endpoint's own identity (from its certificate).
    local_identity: Option<Arc<PeerIdentity>>,
    /// Names refused at once (the installed deny list) and every live connection by the
    /// peer identity's name, so a revocation closes them.
    guard: Arc<ConnGuard>,
    /// Memory for incoming request frames, per connection, identity and node.
    budget: Mutex<Arc<NodeBudget>>,
    /// Who must answer at an address we dial (the cluster's nodes); empty: anyone the CA
    /// signed.
    expected: Mutex<HashMap<SocketAddr, ExpectedPeer>>,
    /// This endpoint's identity name, the `node` label of its metrics.
    node_name: Arc<str>,
    /// Whether it was bound to accept connections (`bind` with `server`).
    accepts: bool,
}

/// Connections by identity, and the identities refused.
#[derive(Default)]
struct ConnGuard {
    denied: Mutex<HashSet<String>>,
    live: Mutex<HashMap<String, Vec<quinn::Connection>>>,
}

impl ConnGuard {
    fn is_denied(&self, name: &str) -> bool {
        self.denied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }

    /// Records a connection; `Err` with the reason when it must be closed instead.
    fn admit(
        &self,
        key: &str,
        conn: &quinn::Connection,
        cap: Option<usize>,
    ) -> Result<(), (u32, String)> {
        if self.is_denied(key) {
            return Err((CLOSE_REVOKED, format!("identity {key} is revoked")));
        }
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let list = live.entry(key.to_string()).or_default();
        list.retain(|c| c.close_reason().is_none());
        if let Some(cap) = cap {
            if list.len() >= cap {
                return Err((
                    CLOSE_TOO_MANY,
                    format!("identity {key} already holds {cap} connections to this node"),
                ));
            }
        }
        list.push(conn.clone());
        Ok(())
    }
}

fn transport_config(loopback: bool) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    if loopback {
        t.initial_mtu(LOOPBACK_MTU).min_mtu(LOOPBACK_MTU);
    }
    t.max_concurrent_bidi_streams(MAX_STREAMS_PER_CONNECTION.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.stream_receive_window(STREAM_WINDOW.into());
    t.receive_window(CONNECTION_WINDOW.into());
    t.send_window(SEND_WINDOW);
    t.keep_alive_interval(Some(Duration::from_secs(2)));
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(10)) {
        t.max_idle_timeout(Some(idle));
    }
    t
}

impl Transport {
    /// Binds `addr` (use port 0 for clients). With `server`, incoming connections are
    /// accepted (call `serve`); a client endpoint only dials out.
    pub fn bind(
        addr: SocketAddr,
        identity: &Identity,
        server: bool,
    ) -> Result<Arc<Transport>, TransportError> {
        let loopback = addr.ip().is_loopback();
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .map_err(|source| TransportError::Bind { addr, source })?;
        let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
        sock.bind(&addr.into())
            .map_err(|source| TransportError::Bind { addr, source })?;
        sock.set_nonblocking(true)
            .map_err(|source| TransportError::Bind { addr, source })?;
        let udp: std::net::UdpSocket = sock.into();

        let mut ep_cfg = quinn::EndpointConfig::new(Arc::new(stateless_reset_key(identity)));
        if loopback {
            let _ = ep_cfg.max_udp_payload_size(LOOPBACK_MTU);
        }
        let server_cfg = if server {
            let rustls_cfg = identity.server_config()?;
            let quic = quinn::crypto::rustls::QuicServerConfig::try_from(rustls_cfg)
                .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
            let mut sc = quinn::ServerConfig::with_crypto(Arc::new(quic));
            sc.transport_config(Arc::new(transport_config(loopback)));
            Some(sc)
        } else {
            None
        };
        let endpoint = quinn::Endpoint::new(ep_cfg, server_cfg, udp, Arc::new(quinn::TokioRuntime))
            .map_err(|source| TransportError::Bind { addr, source })?;
        let quic_client =
            quinn::crypto::rustls::QuicClientConfig::try_from(identity.client_config()?)
                .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
        let mut client_cfg = quinn::ClientConfig::new(Arc::new(quic_client));
        client_cfg.transport_config(Arc::new(transport_config(loopback)));
        // No address-validation tokens (NEW_TOKEN): with quinn's default token store, a
        // reconnect to a live peer from this endpoint that presented the token the old
        // connection got stalled under CPU load, now and then until the 10 s idle timeout
        // (transport test `a_dropped_connection_reconnects_at_once` with 4 busy loops on
        // the 2 cores: 3 of 16 runs with a 10 s stall; without tokens 0 of 16, slowest
        // reconnect 58 ms). A token only saves a Retry round trip, which we never ask for.
        client_cfg.token_store(Arc::new(quinn::NoneTokenStore));
        let local_identity = identity
            .chain
            .first()
            .and_then(|c| PeerIdentity::from_cert_der(c.as_ref()).ok())
            .map(Arc::new);
        Ok(Arc::new(Transport {
            endpoint,
            client_cfg,
            peers: Mutex::new(HashMap::new()),
            incoming: Arc::new(Mutex::new(HashMap::new())),
            callback_handler: std::sync::OnceLock::new(),
            guard: Arc::new(ConnGuard::default()),
            budget: Mutex::new(NodeBudget::new(FrameLimits {
                connection: CONNECTION_BUDGET,
                ..FrameLimits::default()
            })),
            expected: Mutex::new(HashMap::new()),
            node_name: identity_key(&local_identity).into(),
            local_identity,
            accepts: server,
        }))
    }

    /// Sets the memory limits for incoming request frames. Connections accepted before the
    /// call keep the budget they started with; call it before `serve`.
    pub fn set_frame_limits(&self, limits: FrameLimits) {
        *self.budget.lock().unwrap_or_else(|e| e.into_inner()) = NodeBudget::new(limits);
    }

    /// Names who must answer at each of these addresses (the cluster config's nodes):
    /// connections we open to them are refused, with the reason, when the peer's
    /// certificate is not that node's. Replaces the previous expectations.
    pub fn expect_peers(&self, peers: HashMap<SocketAddr, ExpectedPeer>) {
        *self.expected.lock().unwrap_or_else(|e| e.into_inner()) = peers;
    }

    /// The node-level budget new connections draw from.
    fn node_budget(&self) -> Arc<NodeBudget> {
        self.budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Bytes of incoming request frames this endpoint holds right now, and its node limit.
    pub fn frame_bytes_held(&self) -> (usize, usize) {
        let b = self.node_budget();
        (b.held(), b.limits().node)
    }

    /// This endpoint's own identity, from its certificate (`None` if it carries none).
    pub fn local_identity(&self) -> Option<Arc<PeerIdentity>> {
        self.local_identity.clone()
    }

    /// Refuses these identity names from now on: new connections of theirs are closed at
    /// once and every open connection with them (either direction) is closed now.
    pub fn set_denied(&self, names: HashSet<String>) {
        *self.guard.denied.lock().unwrap_or_else(|e| e.into_inner()) = names.clone();
        let live = self.guard.live.lock().unwrap_or_else(|e| e.into_inner());
        for name in &names {
            for c in live.get(name).into_iter().flatten() {
                if c.close_reason().is_none() {
                    tracing::warn!(identity = %name, addr = %c.remote_address(), "closing the connection of a revoked identity");
                    c.close(CLOSE_REVOKED.into(), b"identity revoked");
                }
            }
        }
    }

    /// Whether this endpoint accepts connections (bound with `server`): only then does
    /// `serve` answer anyone.
    pub fn accepts(&self) -> bool {
        self.accepts
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    fn slot(&self, addr: SocketAddr) -> Arc<PeerSlot> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.entry(addr).or_default().clone()
    }

    async fn connection(&self, addr: SocketAddr) -> Result<quinn::Connection, TransportError> {
        let slot = self.slot(addr);
        if let Some(until) = *slot.down_until.lock().unwrap_or_else(|e| e.into_inner()) {
            if Instant::now() < until {
                return Err(TransportError::Unreachable {
                    addr,
                    reason: "recently failed to connect".into(),
                });
            }
        }
        let mut guard = slot.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        *guard = None;
        let connecting = self
            .endpoint
            .connect_with(self.client_cfg.clone(), addr, SERVER_NAME)
            .map_err(|e| TransportError::Unreachable {
                addr,
                reason: e.to_string(),
            })?;
        let result = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Err(_) => Err(TransportError::Unreachable {
                addr,
                reason: format!("no handshake within {CONNECT_TIMEOUT:?}"),
            }),
            Ok(Err(e)) => Err(classify_connection_error(addr, e)),
            Ok(Ok(c)) => {
                let id = peer_identity_of(&c);
                let expected = self
                    .expected
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&addr)
                    .map(|e| e.check(id.as_deref()));
                match expected {
                    Some(Err(mismatch)) => {
                        tracing::warn!(%addr, "refusing the peer we dialled: {mismatch}");
                        c.close(CLOSE_WRONG_PEER.into(), mismatch.to_string().as_bytes());
                        Err(TransportError::WrongPeer { addr, mismatch })
                    }
                    _ => match self.guard.admit(&identity_key(&id), &c, None) {
                        Ok(()) => Ok((c, id)),
                        Err((code, reason)) => {
                            c.close(code.into(), reason.as_bytes());
                            Err(TransportError::Certificate { addr, reason })
                        }
                    },
                }
            }
        };
        match result {
            Ok((c, id)) => {
                *slot.down_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
                *guard = Some(c.clone());
                if let Some(handler) = self.callback_handler.get() {
                    let budget = self.node_budget().connection(&identity_key(&id));
                    tokio::spawn(accept_streams(
                        c.clone(),
                        addr,
                        id,
                        handler.clone(),
                        budget,
                        self.node_name.clone(),
                    ));
                }
                Ok(c)
            }
            Err(e) => {
                if !matches!(
                    e,
                    TransportError::Certificate { .. } | TransportError::WrongPeer { .. }
                ) {
                    *slot.down_until.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(Instant::now() + DOWN_BACKOFF);
                }
                Err(e)
            }
        }
    }

    /// Sends one request with its bulk bytes and waits for the response, up to `timeout`.
    pub async fn call_timeout(
        &self,
        addr: SocketAddr,
        req: &Request,
        bulk: Bytes,
        timeout: Duration,
    ) -> Result<(Response, Bytes), TransportError> {
        let started = Instant::now();
        let r = match tokio::time::timeout(timeout, self.call_inner(addr, req, bulk)).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout { addr, timeout }),
        };
        crate::rpc_metrics::called(&self.node_name, req.op(), &r, started.elapsed());
        r
    }

    /// `call_timeout` with a generous default (60 s) for bulk transfers.
    pub async fn call(
        &self,
        addr: SocketAddr,
        req: &Request,
        bulk: Bytes,
    ) -> Result<(Response, Bytes), TransportError> {
        self.call_timeout(addr, req, bulk, Duration::from_secs(60))
            .await
    }

    async fn call_inner(
        &self,
        addr: SocketAddr,
        req: &Request,
        bulk: Bytes,
    ) -> Result<(Response, Bytes), TransportError> {
        let conn = self.connection(addr).await?;
        call_on(&conn, addr, req, bulk).await
    }

    /// Sets the handler for requests that peers send back over connections this endpoint
    /// opened (a client answering manager callbacks). Set it before the first call.
    pub fn set_callback_handler(&self, handler: Arc<dyn Handler>) {
        let _ = self.callback_handler.set(handler);
    }

    /// Calls a peer over the connection *it* opened to us (e.g. a manager calling back a
    /// client). Fails with `Unreachable` when that peer has no open connection.
    pub async fn call_peer(
        &self,
        addr: SocketAddr,
        req: &Request,
        bulk: Bytes,
        timeout: Duration,
    ) -> Result<(Response, Bytes), TransportError> {
        let conn = {
            let map = self.incoming.lock().unwrap_or_else(|e| e.into_inner());
            map.get(&addr).cloned()
        };
        let Some(conn) = conn.filter(|c| c.close_reason().is_none()) else {
            return Err(TransportError::Unreachable {
                addr,
                reason: "no open connection from this peer".into(),
            });
        };
        let started = Instant::now();
        let r = match tokio::time::timeout(timeout, call_on(&conn, addr, req, bulk)).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout { addr, timeout }),
        };
        crate::rpc_metrics::called(&self.node_name, req.op(), &r, started.elapsed());
        r
    }
}

async fn accept_streams(
    conn: quinn::Connection,
    addr: SocketAddr,
    identity: Option<Arc<PeerIdentity>>,
    handler: Arc<dyn Handler>,
    budget: ConnectionBudget,
    node: Arc<str>,
) {
    while let Ok((send, recv)) = conn.accept_bi().await {
        let peer = Peer {
            addr,
            identity: identity.clone(),
        };
        tokio::spawn(serve_stream(
            peer,
            handler.clone(),
            conn.clone(),
            budget.clone(),
            node.clone(),
            send,
            recv,
        ));
    }
}

async fn call_on(
    conn: &quinn::Connection,
    addr: SocketAddr,
    req: &Request,
    bulk: Bytes,
) -> Result<(Response, Bytes), TransportError> {
    // A stream error says little ("connection lost"); the connection's close reason says
    // why (a refused certificate arrives this way: TLS 1.3 clients finish their handshake
    // before the server has checked their certificate).
    let broken = |what: String| match conn.close_reason() {
        Some(reason) => classify_connection_error(addr, reason),
        None => TransportError::Connection { addr, reason: what },
    };
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| classify_connection_error(addr, e))?;
    let head = frame::encode_head(req, bulk.len() as u64)
        .map_err(|source| TransportError::Frame { addr, source })?;
    send.write_all(&head)
        .await
        .map_err(|e| broken(e.to_string()))?;
    if !bulk.is_empty() {
        send.write_chunk(bulk)
            .await
            .map_err(|e| broken(e.to_string()))?;
    }
    send.finish().map_err(|e| broken(e.to_string()))?;
    read_frame::<Response>(&mut recv, None)
        .await
        .map_err(|e| match e {
            ReadError::Frame(source) => TransportError::Frame { addr, source },
            ReadError::Io(reason) | ReadError::Idle(reason) | ReadError::Budget(reason) => {
                broken(reason)
            }
        })
}

impl Transport {
    /// Accepts connections and answers requests with `handler` until the endpoint is closed.
    pub fn serve(self: &Arc<Self>, handler: Arc<dyn Handler>) -> tokio::task::JoinHandle<()> {
        let endpoint = self.endpoint.clone();
        let incoming_map = self.incoming.clone();
        let guard = self.guard.clone();
        let node_budget = self.node_budget();
        let node_name = self.node_name.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let handler = handler.clone();
                let incoming_map = incoming_map.clone();
                let guard = guard.clone();
                let node_budget = node_budget.clone();
                let node_name = node_name.clone();
                tokio::spawn(async move {
                    let addr = incoming.remote_address();
                    let conn = match incoming.await {
                        Ok(c) => c,
                        Err(e) => {
                            crate::warn_limited!(%addr, "refused connection: {e}");
                            return;
                        }
                    };
                    let identity = peer_identity_of(&conn);
                    let key = identity_key(&identity);
                    if let Err((code, reason)) =
                        guard.admit(&key, &conn, Some(MAX_CONNECTIONS_PER_IDENTITY))
                    {
                        crate::warn_limited!(%addr, identity = %key, "refused connection: {reason}");
                        conn.close(code.into(), reason.as_bytes());
                        return;
                    }
                    let budget = node_budget.connection(&key);
                    incoming_map
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(addr, conn.clone());
                    loop {
                        let (send, recv) = match conn.accept_bi().await {
                            Ok(s) => s,
                            Err(_) => {
                                let mut map =
                                    incoming_map.lock().unwrap_or_else(|e| e.into_inner());
                                if map.get(&addr).map(|c| c.stable_id()) == Some(conn.stable_id()) {
                                    map.remove(&addr);
                                }
                                return;
                            }
                        };
                        let handler = handler.clone();
                        let peer = Peer {
                            addr,
                            identity: identity.clone(),
                        };
                        tokio::spawn(serve_stream(
                            peer,
                            handler,
                            conn.clone(),
                            budget.clone(),
                            node_name.clone(),
                            send,
                            recv,
                        ));
                    }
                });
            }
        })
    }

    /// The current connection to `addr` and the ACK frames received on it so far (`None`
    /// without an open connection, or while one is being set up). Only the peer process
    /// holding the connection's keys can send an ACK, so a count that grows while a call
    /// waits says the peer is alive and only holding back its answer; a peer killed (and
    /// restarted on the same address) acknowledges nothing.
    pub fn acks_received(&self, addr: SocketAddr) -> Option<(usize, u64)> {
        let slot = self.slot(addr);
        let conn = slot.conn.try_lock().ok().and_then(|g| g.clone())?;
        if conn.close_reason().is_some() {
            return None;
        }
        Some((conn.stable_id(), conn.stats().frame_rx.acks))
    }

    /// Where every open connection this endpoint dialled stands: ACK frames received and
    /// packets sent so far. With `drop_unacknowledged`, finds the connections that went
    /// silent.
    pub fn ack_snapshot(&self) -> Vec<AckMark> {
        let slots: Vec<(SocketAddr, Arc<PeerSlot>)> = {
            let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            peers.iter().map(|(a, s)| (*a, s.clone())).collect()
        };
        slots
            .into_iter()
            .filter_map(|(addr, slot)| {
                let conn = slot.conn.try_lock().ok().and_then(|g| g.clone())?;
                if conn.close_reason().is_some() {
                    return None;
                }
                let st = conn.stats();
                Some(AckMark {
                    addr,
                    id: conn.stable_id(),
                    acks: st.frame_rx.acks,
                    sent: st.path.sent_packets,
                })
            })
            .collect()
    }

    /// Closes every connection of `before` (an `ack_snapshot`) that is still the current
    /// one to its address, has sent at least 4 packets since and received at most one ACK
    /// frame (one already on its way when the snapshot was taken); returns how many. A live
    /// peer acknowledges at least every second packet within its ACK delay, so such a
    /// connection is cut off. After an outage QUIC backs its probes off exponentially
    /// (quinn doubles the probe timeout at each one), so it can stay mute for seconds after
    /// the network is back, and every call on it with it; a new connection handshakes at
    /// once. Idle connections (nothing sent, or a keep-alive) are left.
    pub fn drop_unacknowledged(&self, before: &[AckMark]) -> usize {
        let mut dropped = 0;
        for m in before {
            let slot = self.slot(m.addr);
            let Some(conn) = slot.conn.try_lock().ok().and_then(|g| g.clone()) else {
                continue;
            };
            let st = conn.stats();
            if conn.stable_id() == m.id
                && conn.close_reason().is_none()
                && st.frame_rx.acks <= m.acks + 1
                && st.path.sent_packets >= m.sent + 4
            {
                conn.close(0u32.into(), b"nothing acknowledged");
                dropped += 1;
            }
        }
        dropped
    }

    /// Closes the connection to `addr`, if one is open, so that the next call opens a new
    /// one and calls waiting on it fail at once (callers retry). For a caller that knows
    /// the peer stopped answering on it (a lease renewal timed out): a peer killed and
    /// restarted on the same address does not always reset the old connection, whose calls
    /// then wait for the idle timeout.
    pub fn drop_connection(&self, addr: SocketAddr) {
        let slot = self.slot(addr);
        // A connection being set up right now is new: left alone.
        let conn = slot.conn.try_lock().ok().and_then(|g| g.clone());
        if let Some(c) = conn {
            c.close(0u32.into(), b"peer unresponsive");
        }
    }

    /// Closes the endpoint: open connections are told we are going away.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"shutdown");
    }

    /// Waits until every connection has been closed cleanly (bounded by the caller).
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }
}

/// The key of stateless resets, derived from this peer's private key so that it survives a
/// restart: a node restarted on the same address then resets its peers' old connections at
/// once (they recognise the token), instead of leaving them to wait for the idle timeout.
fn stateless_reset_key(identity: &Identity) -> ring::hmac::Key {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"shoal stateless reset v1");
    ctx.update(identity.key.secret_der());
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, ctx.finish().as_ref())
}

fn classify_connection_error(addr: SocketAddr, e: quinn::ConnectionError) -> TransportError {
    let text = e.to_string();
    // Closed by the peer because our identity is revoked: final, like a refused certificate.
    if let quinn::ConnectionError::ApplicationClosed(c) = &e {
        if c.error_code == CLOSE_REVOKED.into() {
            return TransportError::Certificate {
                addr,
                reason: format!("our identity is revoked: {text}"),
            };
        }
    }
    let lower = text.to_lowercase();
    if lower.contains("certificate")
        || lower.contains("unknownissuer")
        || lower.contains("crypto")
        || lower.contains("alert")
    {
        TransportError::Certificate { addr, reason: text }
    } else if matches!(e, quinn::ConnectionError::TimedOut) {
        TransportError::Unreachable { addr, reason: text }
    } else {
        TransportError::Connection { addr, reason: text }
    }
}

enum ReadError {
    Frame(FrameError),
    Io(String),
    /// Nothing arrived for `READ_IDLE`.
    Idle(String),
    /// A level of the memory budget stayed exhausted for `READ_IDLE`.
    Budget(String),
}

/// Reads exactly `len` bytes, allocating only as they arrive (never from `len` alone),
/// each chunk (at most `READ_CHUNK`) within `READ_IDLE`. With a budget, room for each
/// chunk is taken as it arrives, before the next is read; a frame whose room does not
/// come within `READ_IDLE` fails. Room is taken for bytes that came, never for bytes a
/// prefix promises: a peer that sends nothing holds nothing.
async fn read_exact_bounded(
    recv: &mut quinn::RecvStream,
    len: usize,
    budget: Option<&ConnectionBudget>,
    held: &mut Held,
) -> Result<Bytes, ReadError> {
    // The chunks as they arrived (slices of the received packets), joined once at the
    // end: growing one buffer chunk by chunk copied every byte again at each doubling.
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut got = 0;
    while got < len {
        let want = len - got;
        let want = if budget.is_some() {
            want.min(READ_CHUNK)
        } else {
            want
        };
        let chunk = match tokio::time::timeout(READ_IDLE, recv.read_chunk(want, true)).await {
            Err(_) => {
                return Err(ReadError::Idle(format!(
                    "no data for {READ_IDLE:?} with {want} bytes of the frame still to come"
                )))
            }
            Ok(Err(e)) => return Err(ReadError::Io(e.to_string())),
            Ok(Ok(None)) => {
                return Err(ReadError::Io(format!(
                    "stream finished {want} bytes before the end of its frame"
                )))
            }
            Ok(Ok(Some(c))) => c.bytes,
        };
        if let Some(b) = budget {
            match b.take(chunk.len(), READ_IDLE).await {
                Ok(t) => {
                    let n = t.len();
                    held.keep(t, n);
                }
                Err(e) => return Err(ReadError::Budget(e.to_string())),
            }
        }
        got += chunk.len();
        chunks.push(chunk);
    }
    Ok(join(chunks, len))
}

/// The bytes of `chunks` (`len` in all) as one buffer: the chunk itself when there is one,
/// else one allocation of `len` and one copy of each chunk.
fn join(mut chunks: Vec<Bytes>, len: usize) -> Bytes {
    if chunks.len() == 1 {
        return chunks.pop().unwrap_or_default();
    }
    let mut buf = BytesMut::with_capacity(len);
    for c in &chunks {
        buf.extend_from_slice(c);
    }
    buf.freeze()
}

async fn read_frame<T: serde::de::DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    budget: Option<(&ConnectionBudget, &mut Held)>,
) -> Result<(T, Bytes), ReadError> {
    let mut scratch = Held::default();
    let (budget, held) = match budget {
        Some((b, h)) => (Some(b), h),
        None => (None, &mut scratch),
    };
    let prefix = read_exact_bounded(recv, PREFIX_LEN, budget, held).await?;
    let mut p = [0u8; PREFIX_LEN];
    p.copy_from_slice(&prefix);
    let p = frame::decode_prefix(&p).map_err(ReadError::Frame)?;
    let header = read_exact_bounded(recv, p.header_len as usize, budget, held).await?;
    let msg = frame::decode_header::<T>(&header).map_err(ReadError::Frame)?;
    drop(header);
    let bulk = if p.bulk_len == 0 {
        Bytes::new()
    } else {
        read_exact_bounded(recv, p.bulk_len as usize, budget, held).await?
    };
    Ok((msg, bulk))
}

async fn serve_stream(
    peer: Peer,
    handler: Arc<dyn Handler>,
    conn: quinn::Connection,
    budget: ConnectionBudget,
    node: Arc<str>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    // Permits for the bytes of this request, held until it has been answered.
    let mut held = Held::default();
    let who = identity_key(&peer.identity);
    // A closed connection ends the read at once, also one waiting for budget (which the
    // stream itself would only notice at `READ_IDLE`), so its room is given back.
    let read = tokio::select! {
        r = read_frame::<Request>(&mut recv, Some((&budget, &mut held))) => r,
        _ = conn.closed() => return,
    };
    let (resp, bulk) = match read {
        Ok((req, bulk)) => {
            tracing::trace!(addr = %peer.addr, identity = %who, "request {req}");
            let op = req.op();
            let started = Instant::now();
            let (resp, out) = handler.handle(peer, req, bulk).await;
            crate::rpc_metrics::served(
                &node,
                op,
                &resp,
                started.elapsed(),
                held.bytes(),
                out.len(),
            );
            (resp, out)
        }
        Err(ReadError::Frame(
            e @ (FrameError::BadMagic(_)
            | FrameError::HeaderTooLarge(_)
            | FrameError::BulkTooLarge(_)),
        )) => {
            crate::warn_limited!(addr = %peer.addr, identity = %who, "disconnecting a misbehaving peer: {e}");
            conn.close(CLOSE_MISBEHAVING.into(), e.to_string().as_bytes());
            return;
        }
        Err(ReadError::Frame(e)) => (
            Response::Error(RemoteError::Invalid(e.to_string())),
            Bytes::new(),
        ),
        Err(ReadError::Idle(reason) | ReadError::Budget(reason)) => {
            crate::warn_limited!(addr = %peer.addr, identity = %who, "resetting a request stream: {reason}");
            let _ = send.reset(1u32.into());
            let _ = recv.stop(1u32.into());
            return;
        }
        Err(ReadError::Io(_)) => return,
    };
    drop(held);
    let head = match frame::encode_head(&resp, bulk.len() as u64) {
        Ok(h) => h,
        Err(e) => {
            match frame::encode_head(&Response::Error(RemoteError::Invalid(e.to_string())), 0) {
                Ok(h) => {
                    let _ = send.write_all(&h).await;
                    let _ = send.finish();
                    return;
                }
                Err(_) => return,
            }
        }
    };
    if send.write_all(&head).await.is_err() {
        return;
    }
    if !bulk.is_empty() && send.write_chunk(bulk).await.is_err() {
        return;
    }
    let _ = send.finish();
    let _ = send.stopped().await;
}

#[cfg(test)]
mod tests {
    use super::join;
    use bytes::Bytes;

    #[test]
    fn join_keeps_order_and_a_single_chunk_uncopied() {
        let one = Bytes::from(vec![7u8; 10]);
        let joined = join(vec![one.clone()], 10);
        assert_eq!(joined.as_ptr(), one.as_ptr());
        let parts = vec![
            Bytes::from_static(b"ab"),
            Bytes::from_static(b""),
            Bytes::from_static(b"cde"),
            Bytes::from_static(b"f"),
        ];
        assert_eq!(&join(parts, 6)[..], b"abcdef");
        assert!(join(Vec::new(), 0).is_empty());
    }
}
