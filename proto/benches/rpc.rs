//! Micro benchmark of one RPC round trip: `Transport::call` of a `Ping` carrying a small
//! bulk payload, over mTLS QUIC on loopback, to an endpoint that echoes the bulk back with
//! its `Pong`. The connection is opened during warm-up, so a sample is one request stream.
//!
//! Run: `cargo bench -p proto --bench rpc`. Reports timings only; asserts nothing.

use bytes::Bytes;
use divan::counter::BytesCount;
use divan::Bencher;
use proto::msg::{NodeInfo, Request, Response};
use proto::tls::{write_pem, CertAuthority, Identity};
use proto::transport::{BoxFuture, Handler, Peer, Transport};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

fn main() {
    divan::main();
}

/// Answers `Ping` with `Pong` and the request's bulk bytes.
struct Echo(NodeInfo);

impl Handler for Echo {
    fn handle(&self, _peer: Peer, req: Request, bulk: Bytes) -> BoxFuture<'_, (Response, Bytes)> {
        Box::pin(async move {
            match req {
                Request::Ping => (Response::Pong(self.0.clone()), bulk),
                _ => (Response::CallbackDone, Bytes::new()),
            }
        })
    }
}

fn identity(dir: &Path, ca: &CertAuthority, name: &str) -> Identity {
    let (cert, key) = ca.issue(name).expect("issue");
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    write_pem(&c, &cert, false).expect("cert");
    write_pem(&k, &key, true).expect("key");
    Identity::load(&dir.join("ca.pem"), &c, &k).expect("identity")
}

/// A server and a client endpoint on loopback with certificates of one CA.
struct Pair {
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    client: Arc<Transport>,
    server: Arc<Transport>,
    addr: SocketAddr,
}

impl Pair {
    fn new() -> Pair {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = CertAuthority::generate("bench").expect("ca");
        write_pem(&dir.path().join("ca.pem"), &ca.cert_pem, false).expect("ca pem");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let (server, client, addr) = rt.block_on(async {
            let server = Transport::bind(any, &identity(dir.path(), &ca, "server"), true)
                .expect("bind server");
            let info = NodeInfo {
                name: "server".into(),
                roles: vec![],
                version: proto::VERSION.into(),
                workers: Vec::new(),
                config_group: None,
                config_epoch: 0,
            };
            let _serve = server.serve(Arc::new(Echo(info)));
            let client = Transport::bind(any, &identity(dir.path(), &ca, "client"), false)
                .expect("bind client");
            let addr = server.local_addr().expect("server address");
            (server, client, addr)
        });
        Pair {
            _dir: dir,
            rt,
            client,
            server,
            addr,
        }
    }

    fn ping(&self, bulk: &Bytes) {
        let r = self
            .rt
            .block_on(self.client.call(self.addr, &Request::Ping, bulk.clone()));
        match r {
            Ok((Response::Pong(_), b)) if b.len() == bulk.len() => {}
            other => panic!("ping failed: {other:?}"),
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.client.close();
        self.server.close();
    }
}

/// One `Ping` round trip with `bulk` bytes each way (64 B: the RPC overhead itself).
#[divan::bench(args = [64, 64 * 1024])]
fn ping_round_trip(bencher: Bencher, bulk: usize) {
    let p = Pair::new();
    let payload = Bytes::from(vec![0x5a; bulk]);
    for _ in 0..100 {
        p.ping(&payload);
    }
    bencher
        .counter(BytesCount::new(2 * bulk))
        .bench_local(|| p.ping(&payload));
}
