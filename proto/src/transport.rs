//! QUIC transport with mutual TLS: one endpoint per process, one connection per peer, one
//! bidirectional stream per RPC. Owns sockets, connections and framing on the wire; knows
//! nothing of what the messages mean (that is the roles' business).

use crate::frame::{self, FrameError, PREFIX_LEN};
use crate::msg::{RemoteError, Request, Response};
use crate::tls::{Identity, TlsError, SERVER_NAME};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
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

/// Who sent a request.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
}

/// A boxed future returned by handlers.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The receiving side of a role: turns one request (with its bulk bytes) into one response.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, peer: Peer, req: Request, bulk: Bytes) -> BoxFuture<'_, (Response, Bytes)>;
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
}

fn transport_config(loopback: bool) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    if loopback {
        t.initial_mtu(LOOPBACK_MTU).min_mtu(LOOPBACK_MTU);
    }
    t.max_concurrent_bidi_streams(1024u32.into());
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
        Ok(Arc::new(Transport {
            endpoint,
            client_cfg,
            peers: Mutex::new(HashMap::new()),
            incoming: Arc::new(Mutex::new(HashMap::new())),
            callback_handler: std::sync::OnceLock::new(),
        }))
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
            Ok(Ok(c)) => Ok(c),
        };
        match result {
            Ok(c) => {
                *slot.down_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
                *guard = Some(c.clone());
                if let Some(handler) = self.callback_handler.get() {
                    tokio::spawn(accept_streams(c.clone(), addr, handler.clone()));
                }
                Ok(c)
            }
            Err(e) => {
                if !matches!(e, TransportError::Certificate { .. }) {
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
        match tokio::time::timeout(timeout, self.call_inner(addr, req, bulk)).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout { addr, timeout }),
        }
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
        match tokio::time::timeout(timeout, call_on(&conn, addr, req, bulk)).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout { addr, timeout }),
        }
    }
}

async fn accept_streams(conn: quinn::Connection, addr: SocketAddr, handler: Arc<dyn Handler>) {
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(serve_stream(Peer { addr }, handler.clone(), send, recv));
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
    read_frame::<Response>(&mut recv)
        .await
        .map_err(|e| match e {
            ReadError::Frame(source) => TransportError::Frame { addr, source },
            ReadError::Io(reason) => broken(reason),
        })
}

impl Transport {
    /// Accepts connections and answers requests with `handler` until the endpoint is closed.
    pub fn serve(self: &Arc<Self>, handler: Arc<dyn Handler>) -> tokio::task::JoinHandle<()> {
        let endpoint = self.endpoint.clone();
        let incoming_map = self.incoming.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let handler = handler.clone();
                let incoming_map = incoming_map.clone();
                tokio::spawn(async move {
                    let addr = incoming.remote_address();
                    let conn = match incoming.await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(%addr, "refused connection: {e}");
                            return;
                        }
                    };
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
                        tokio::spawn(serve_stream(Peer { addr }, handler, send, recv));
                    }
                });
            }
        })
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
}

async fn read_frame<T: serde::de::DeserializeOwned>(
    recv: &mut quinn::RecvStream,
) -> Result<(T, Bytes), ReadError> {
    let mut prefix = [0u8; PREFIX_LEN];
    recv.read_exact(&mut prefix)
        .await
        .map_err(|e| ReadError::Io(e.to_string()))?;
    let p = frame::decode_prefix(&prefix).map_err(ReadError::Frame)?;
    let mut header = vec![0u8; p.header_len as usize];
    recv.read_exact(&mut header)
        .await
        .map_err(|e| ReadError::Io(e.to_string()))?;
    let msg = frame::decode_header::<T>(&header).map_err(ReadError::Frame)?;
    let bulk = if p.bulk_len == 0 {
        Bytes::new()
    } else {
        let mut buf = BytesMut::zeroed(p.bulk_len as usize);
        recv.read_exact(&mut buf)
            .await
            .map_err(|e| ReadError::Io(e.to_string()))?;
        buf.freeze()
    };
    Ok((msg, bulk))
}

async fn serve_stream(
    peer: Peer,
    handler: Arc<dyn Handler>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let (resp, bulk) = match read_frame::<Request>(&mut recv).await {
        Ok((req, bulk)) => {
            tracing::trace!(addr = %peer.addr, "request {req}");
            handler.handle(peer, req, bulk).await
        }
        Err(ReadError::Frame(FrameError::BadMagic(_))) => {
            let _ = send.reset(1u32.into());
            return;
        }
        Err(ReadError::Frame(e)) => (
            Response::Error(RemoteError::Invalid(e.to_string())),
            Bytes::new(),
        ),
        Err(ReadError::Io(_)) => return,
    };
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
