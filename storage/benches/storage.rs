//! Micro benchmarks of the storage layer, one layer at a time, so a regression shows where
//! it is: Reed-Solomon 4+2 encode (parity allocated per call, and into preallocated
//! buffers) and reconstruct (`RsCodec`) at 64 KiB and 1 MiB shards, a fragment put/get on
//! one `FileStore` in a temp directory (4 KiB and 1 MiB), and a fragment put through a real
//! storage server over mTLS QUIC on loopback (`StorageClient::put_fragment`).
//!
//! Run: `cargo bench -p storage --bench storage`. Reports timings only; asserts nothing.

use bytes::Bytes;
use divan::counter::BytesCount;
use divan::Bencher;
use proto::ids::{FragmentId, LogId, SegmentId};
use proto::msg::storage::{FragmentMeta, CODEC_RS_GF8_RSE};
use proto::tls::{write_pem, CertAuthority, Identity};
use proto::transport::Transport;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use storage::erasure::{Erasure, RsCodec};
use storage::store::{FileStore, FragmentStore};
use storage::{Server, ServerHandler, StorageClient};

const K: usize = 4;
const M: usize = 2;
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn main() {
    divan::main();
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn codec() -> RsCodec {
    RsCodec::new(K, M).expect("4+2 codec")
}

/// Parity of 4 data shards of `shard` bytes each; throughput counts the data bytes.
#[divan::bench(args = [64 * KIB, MIB])]
fn rs_encode(bencher: Bencher, shard: usize) {
    let rs = codec();
    let data: Vec<Vec<u8>> = (0..K).map(|i| pattern(shard, i as u8)).collect();
    bencher.counter(BytesCount::new(K * shard)).bench_local(|| {
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        rs.encode(divan::black_box(&refs)).expect("encode")
    });
}

/// The same, with the parity computed into buffers allocated once (what `LogWriter` does
/// with the parity buffers of its previous segment).
#[divan::bench(args = [64 * KIB, MIB])]
fn rs_encode_into(bencher: Bencher, shard: usize) {
    let rs = codec();
    let data: Vec<Vec<u8>> = (0..K).map(|i| pattern(shard, i as u8)).collect();
    let mut parity = vec![vec![0u8; shard]; M];
    bencher.counter(BytesCount::new(K * shard)).bench_local(|| {
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let mut outs: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
        rs.encode_into(divan::black_box(&refs), &mut outs)
            .expect("encode")
    });
}

/// Rebuilds two lost data shards (the worst case for 4+2) from the four survivors.
#[divan::bench(args = [64 * KIB, MIB])]
fn rs_reconstruct(bencher: Bencher, shard: usize) {
    let rs = codec();
    let data: Vec<Vec<u8>> = (0..K).map(|i| pattern(shard, i as u8)).collect();
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let parity = rs.encode(&refs).expect("encode");
    let full: Vec<Option<Vec<u8>>> = data
        .iter()
        .chain(parity.iter())
        .cloned()
        .map(Some)
        .collect();
    bencher
        .counter(BytesCount::new(K * shard))
        .with_inputs(|| {
            let mut shards = full.clone();
            shards[0] = None;
            shards[1] = None;
            shards
        })
        .bench_local_refs(|shards| rs.reconstruct_data(shards).expect("reconstruct"));
}

/// A store in a temp directory (removed when dropped) and fresh fragment ids.
struct Store {
    _dir: tempfile::TempDir,
    store: FileStore,
    next: AtomicU64,
}

impl Store {
    fn new() -> Store {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path()).expect("open store");
        Store {
            _dir: dir,
            store,
            next: AtomicU64::new(1),
        }
    }

    fn fresh_id(&self) -> FragmentId {
        FragmentId {
            log: LogId(0xbe_0001),
            segment: SegmentId(self.next.fetch_add(1, Ordering::Relaxed)),
            index: 0,
        }
    }
}

fn meta(payload: &[u8]) -> FragmentMeta {
    FragmentMeta {
        codec: CODEC_RS_GF8_RSE,
        k: K as u8,
        m: M as u8,
        segment_len: (payload.len() * K) as u32,
        crc32c: proto::crc32c(payload),
        nodes: 0,
    }
}

/// A durable put of a new fragment (write, fsync, rename, directory sync as the store does).
#[divan::bench(args = [4 * KIB, MIB], sample_count = 40)]
fn fragment_put(bencher: Bencher, len: usize) {
    let s = Store::new();
    let payload = Bytes::from(pattern(len, 3));
    let m = meta(&payload);
    bencher
        .counter(BytesCount::new(len))
        .with_inputs(|| s.fresh_id())
        .bench_local_values(|id| s.store.put(id, m, payload.clone()).expect("put"));
}

/// A checksum-verified read of a whole fragment (page cache warm).
#[divan::bench(args = [4 * KIB, MIB])]
fn fragment_get(bencher: Bencher, len: usize) {
    let s = Store::new();
    let payload = Bytes::from(pattern(len, 5));
    let id = s.fresh_id();
    s.store.put(id, meta(&payload), payload).expect("put");
    bencher
        .counter(BytesCount::new(len))
        .bench_local(|| s.store.read_range(id, 0, len as u32).expect("read"));
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

/// One storage server on its own endpoint and a client endpoint, on loopback.
struct Remote {
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    client: StorageClient,
    server: Arc<Transport>,
    client_transport: Arc<Transport>,
    addr: SocketAddr,
    next: AtomicU64,
}

impl Remote {
    fn new() -> Remote {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = CertAuthority::generate("bench").expect("ca");
        write_pem(&dir.path().join("ca.pem"), &ca.cert_pem, false).expect("ca pem");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let (server, client_transport, addr) = rt.block_on(async {
            let store = Server::open(&dir.path().join("data"))
                .await
                .expect("open server");
            let server = Transport::bind(any, &identity(dir.path(), &ca, "storage-1"), true)
                .expect("bind server");
            let _serve = server.serve(Arc::new(ServerHandler {
                server: store,
                name: "storage-1".into(),
            }));
            let client = Transport::bind(any, &identity(dir.path(), &ca, "client"), false)
                .expect("bind client");
            let addr = server.local_addr().expect("server address");
            (server, client, addr)
        });
        Remote {
            _dir: dir,
            rt,
            client: StorageClient::new(client_transport.clone()),
            server,
            client_transport,
            addr,
            next: AtomicU64::new(1),
        }
    }

    fn put(&self, payload: &Bytes) {
        let id = FragmentId {
            log: LogId(0xbe_0002),
            segment: SegmentId(self.next.fetch_add(1, Ordering::Relaxed)),
            index: 0,
        };
        self.rt
            .block_on(
                self.client
                    .put_fragment(self.addr, id, meta(payload), payload.clone()),
            )
            .expect("put");
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.client_transport.close();
        self.server.close();
    }
}

/// A durable fragment put through a real storage server over mTLS QUIC on loopback (the
/// network path, the server's admission and the store's write + fsync + rename).
#[divan::bench(args = [4 * KIB, MIB], sample_count = 40)]
fn fragment_put_loopback(bencher: Bencher, len: usize) {
    let r = Remote::new();
    let payload = Bytes::from(pattern(len, 9));
    for _ in 0..5 {
        r.put(&payload);
    }
    bencher
        .counter(BytesCount::new(len))
        .bench_local(|| r.put(&payload));
}
