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
