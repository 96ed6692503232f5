//! Cooperative caching in an in-process cluster (issue 12): clients serve each other's
//! misses from their block caches by log address, an overwritten block is never served,
//! and a dead peer costs only a fallback to the storage servers.

mod common;

use common::{read_all, TestCluster};
use fuse_client::coop::fetch::{self, PeerReadError};
use proto::ids::InodeId;
use proto::msg::Caller;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROOT: Caller = Caller { uid: 0, gid: 0 };
const LEN: usize = 1 << 20;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 16) as u8)
        .collect()
}

async fn client(tc: &TestCluster) -> (Arc<fuse_client::Client>, Arc<proto::transport::Transport>) {
    let t = fsd::cluster::client_transport(&tc.cluster.config).expect("transport");
    let c = fuse_client::Client::connect(tc.cluster.config.clone(), t.clone())
        .await
        .expect("connect");
    (c, t)
}

/// Waits until a manager names `holder` for the first extent window of `ino`: a client
/// reports the windows its cache holds blocks of in batches, once a second.
async fn until_named(tc: &TestCluster, ino: InodeId, holder: &fuse_client::Client) {
    let addr = holder.peer_address().expect("serves peers");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !tc
        .cluster
        .manager_services()
        .iter()
        .any(|m| m.extent_holders_of(ino, 0).contains(&addr))
    {
        assert!(
            Instant::now() < deadline,
            "no manager names {addr} for {ino}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_serve_misses_never_stale_and_dead_peers_fall_back() {
    let tc = TestCluster::start(6, 1, 4, 2).await;
    let (writer, _wt) = client(&tc).await;
    let (b, bt) = client(&tc).await;
    let (c, ct) = client(&tc).await;
    let data = pattern(LEN, 1);
    let ino: InodeId;
    {
        tracing::info!("--- the writer writes 1 MiB and fsyncs it");
        let (a, _fh) = writer
            .create(InodeId::ROOT, "f", 0o644, 0o022, ROOT)
            .await
            .expect("create");
        writer.write(a.ino, 0, &data).await.expect("write");
        writer.fsync(a.ino).await.expect("fsync");
        writer.release(a.ino).await.expect("release");
        ino = a.ino;
    }
    {
        tracing::info!("--- client B reads it from the storage servers");
        let got = read_all(&b, ino, LEN).await;
        assert!(got == data, "B read other bytes");
        let s = b.coop_stats();
        assert!(s.reads_storage >= 16, "{s:?}");
        assert_eq!(s.reads_peer, 0, "{s:?}");
        tracing::info!("--- B reports (batched) that it holds the file's blocks");
        until_named(&tc, ino, &b).await;
    }
    {
        tracing::info!("--- client C reads it: its misses are served by B, bytes identical");
        let got = read_all(&c, ino, LEN).await;
        assert!(got == data, "C read other bytes");
        let s = c.coop_stats();
        assert!(s.reads_peer >= 8, "most blocks from the peer: {s:?}");
        let served = b.coop_stats();
        assert!(
            served.bytes_served_to_peers >= s.reads_peer * 65536,
            "B served {served:?}, C got {s:?}"
        );
    }
    let old = c
        .block_address(ino, 0)
        .await
        .expect("address")
        .expect("one extent");
    {
        tracing::info!("--- the writer overwrites block 0: the new bytes have a new address");
        let new_bytes = pattern(65536, 99);
        writer.write(ino, 0, &new_bytes).await.expect("overwrite");
        writer.fsync(ino).await.expect("fsync");
        let new = c
            .block_address(ino, 0)
            .await
            .expect("address")
            .expect("one extent");
        assert_ne!(new, old, "an overwrite must commit a new log address");
        tracing::info!("--- B, which caches the old block, refuses the new address");
        let peer = b.peer_address().expect("B serves peers");
        let asker = fsd::cluster::client_transport(&tc.cluster.config).expect("transport");
        match fetch::fetch(&asker, peer, new, None, Duration::from_secs(5)).await {
            Err(PeerReadError::NotCached { .. }) => {}
            Err(e) => panic!("B answered the new address with an error: {e}"),
            Ok(_) => panic!("B served bytes for an address it never read"),
        }
        tracing::info!("--- C reads the file again: the new block, the rest unchanged");
        let got = read_all(&c, ino, LEN).await;
        assert!(
            got[..65536] == new_bytes[..],
            "C read stale bytes of block 0"
        );
        assert!(
            got[65536..] == data[65536..],
            "C read other bytes past block 0"
        );
        asker.close();
    }
    {
        tracing::info!(
            "--- B and C die (endpoints closed, sessions not yet expired): D falls back"
        );
        let before = c.coop_stats();
        b.shutdown();
        c.shutdown();
        bt.close();
        ct.close();
        let (d, _dt) = client(&tc).await;
        let started = Instant::now();
        let got = tokio::time::timeout(Duration::from_secs(30), read_all(&d, ino, LEN))
            .await
            .expect("a read with dead peers is bounded");
        assert!(got[65536..] == data[65536..], "D read other bytes");
        let s = d.coop_stats();
        assert_eq!(s.reads_peer, 0, "{s:?}");
        assert!(s.reads_storage >= 16, "{s:?}");
        assert!(s.peer_failures >= 1, "the dead peers were asked: {s:?}");
        tracing::info!(elapsed = ?started.elapsed(), ?before, "read with dead peers done");
        d.shutdown();
    }
    writer.shutdown();
    tc.cluster.stop().await;
}

/// A client whose block cache holds `blocks` blocks.
async fn small_client(tc: &TestCluster, blocks: u64) -> Arc<fuse_client::Client> {
    let mut cfg = (*tc.cluster.config).clone();
    cfg.file.client.cache_bytes = blocks * 65536;
    let t = fsd::cluster::client_transport(&cfg).expect("transport");
    fuse_client::Client::connect(Arc::new(cfg), t)
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_evicted_singlet_is_forwarded_and_read_back_from_the_peer() {
    let tc = TestCluster::start(6, 1, 4, 2).await;
    let (f1, f2) = (pattern(8 * 65536, 3), pattern(32 * 65536, 4));
    let (i1, i2);
    {
        tracing::info!("--- a writer writes F1 (8 blocks) and F2 (32 blocks), then leaves");
        let (w, _wt) = client(&tc).await;
        let mut inos = Vec::new();
        for (name, data) in [("f1", &f1), ("f2", &f2)] {
            let (a, _fh) = w
                .create(InodeId::ROOT, name, 0o644, 0o022, ROOT)
                .await
                .expect("create");
            w.write(a.ino, 0, data).await.expect("write");
            w.fsync(a.ino).await.expect("fsync");
            w.release(a.ino).await.expect("release");
            inos.push(a.ino);
        }
        (i1, i2) = (inos[0], inos[1]);
        w.goodbye().await;
        w.shutdown();
    }
    // Caches of 8 blocks: reading F2 evicts everything read before.
    let b = small_client(&tc, 8).await;
    let a = small_client(&tc, 8).await;
    {
        tracing::info!("--- B reads F2; A reads F1 (singlets: nobody else holds them)");
        assert!(read_all(&b, i2, f2.len()).await == f2);
        assert!(read_all(&a, i1, f1.len()).await == f1);
        until_named(&tc, i2, &b).await;
    }
    {
        tracing::info!("--- A reads F2 (and learns of B): F1's singlets are forwarded to B");
        assert!(read_all(&a, i2, f2.len()).await == f2);
        let deadline = Instant::now() + Duration::from_secs(20);
        while b.coop_stats().forwards_accepted < 4 {
            assert!(
                Instant::now() < deadline,
                "B accepted no forwards: A {:?}, B {:?}",
                a.coop_stats(),
                b.coop_stats()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The forwards' answers reach A just after B counted them.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    {
        tracing::info!("--- A tells the manager (batched) that B holds F1's blocks now");
        let m = tc.cluster.manager_services().pop().expect("a manager");
        let bp = b.peer_address().expect("B serves peers");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !m.extent_holders_of(i1, 0).contains(&bp) {
            assert!(
                Instant::now() < deadline,
                "the manager never learned B holds F1"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!("--- a new client D reads F1: the hint names B, which serves it");
        let d = small_client(&tc, 8).await;
        assert!(read_all(&d, i1, f1.len()).await == f1, "D read F1 wrong");
        let s = d.coop_stats();
        assert!(s.reads_peer >= 4, "D did not find F1 at B: {s:?}");
        d.shutdown();
    }
    {
        tracing::info!("--- A reads F1 again: from B's memory, not from storage");
        let (a0, b0) = (a.coop_stats(), b.coop_stats());
        assert!(read_all(&a, i1, f1.len()).await == f1, "F1 read back wrong");
        let (a1, b1) = (a.coop_stats(), b.coop_stats());
        assert!(
            a1.reads_peer >= a0.reads_peer + 4,
            "A's singlets were not read back from B: {a0:?} -> {a1:?}, B {b1:?}"
        );
        assert!(b1.bytes_served_to_peers > b0.bytes_served_to_peers);
        tracing::info!(?a1, ?b1, "N-chance: singlets survived an eviction");
    }
    a.shutdown();
    b.shutdown();
    tc.cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_peer_reads_xattr_switches_cooperation_at_runtime() {
    let tc = TestCluster::start(6, 1, 4, 2).await;
    let (writer, _wt) = client(&tc).await;
    let (b, _bt) = client(&tc).await;
    let (c, _ct) = client(&tc).await;
    let data = pattern(LEN, 7);
    let ino: InodeId;
    let switch = fuse_client::PEER_READS_XATTR;
    {
        tracing::info!("--- the writer writes 1 MiB; B reads it from the storage servers");
        let (a, _fh) = writer
            .create(InodeId::ROOT, "g", 0o644, 0o022, ROOT)
            .await
            .expect("create");
        writer.write(a.ino, 0, &data).await.expect("write");
        writer.fsync(a.ino).await.expect("fsync");
        writer.release(a.ino).await.expect("release");
        ino = a.ino;
        assert!(read_all(&b, ino, LEN).await == data, "B read other bytes");
        until_named(&tc, ino, &b).await;
    }
    {
        tracing::info!("--- C switched off: every miss goes to the storage servers");
        assert_eq!(c.getxattr(ino, switch).await.expect("get"), b"1");
        c.setxattr(ino, switch, b"0", 0, ROOT).await.expect("off");
        assert_eq!(c.getxattr(ino, switch).await.expect("get"), b"0");
        assert!(!c.coop_stats().peer_reads);
        let before = c.coop_stats();
        assert!(read_all(&c, ino, LEN).await == data, "C read other bytes");
        let s = c.coop_stats();
        assert_eq!(
            s.reads_peer, before.reads_peer,
            "peer reads while off: {s:?}"
        );
        assert!(s.reads_storage >= before.reads_storage + 16, "{s:?}");
    }
    {
        tracing::info!("--- C switched on again, its cache dropped: misses served by B");
        let e = c.setxattr(ino, switch, b"yes", 0, ROOT).await;
        assert_eq!(e.expect_err("bad value").0, libc::EINVAL);
        c.setxattr(ino, switch, b"1\n", 0, ROOT).await.expect("on");
        c.setxattr(ino, fuse_client::DROP_CACHES_XATTR, b"1", 0, ROOT)
            .await
            .expect("drop");
        let before = c.coop_stats();
        assert!(read_all(&c, ino, LEN).await == data, "C read other bytes");
        let s = c.coop_stats();
        assert!(s.peer_reads, "{s:?}");
        assert!(
            s.reads_peer >= before.reads_peer + 8,
            "most blocks from B: {s:?}"
        );
        assert_eq!(s.cache_bytes, tc.cluster.config.file.client.cache_bytes);
    }
    {
        tracing::info!("--- B drops its caches: it reports the window gone, and is not named");
        b.setxattr(ino, fuse_client::DROP_CACHES_XATTR, b"1", 0, ROOT)
            .await
            .expect("drop");
        let addr = b.peer_address().expect("B serves peers");
        let deadline = Instant::now() + Duration::from_secs(20);
        while tc
            .cluster
            .manager_services()
            .iter()
            .any(|m| m.extent_holders_of(ino, 0).contains(&addr))
        {
            assert!(Instant::now() < deadline, "B is still named after its drop");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
