//! Micro benchmarks of the storage layer, one layer at a time, so a regression shows where
//! it is: Reed-Solomon 4+2 encode and reconstruct (`RsCodec`) at 64 KiB and 1 MiB shards,
//! and a fragment put/get on one `FileStore` in a temp directory (4 KiB and 1 MiB).
//!
//! Run: `cargo bench -p storage --bench storage`. Reports timings only; asserts nothing.

use bytes::Bytes;
use divan::counter::BytesCount;
use divan::Bencher;
use proto::ids::{FragmentId, LogId, SegmentId};
use proto::msg::storage::{FragmentMeta, CODEC_RS_GF8_RSE};
use std::sync::atomic::{AtomicU64, Ordering};
use storage::erasure::{Erasure, RsCodec};
use storage::store::{FileStore, FragmentStore};

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
