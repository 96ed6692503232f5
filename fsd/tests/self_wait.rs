//! A busy client never waits for itself and is never declared lost by its own managers
//! ([durability] items 6 and 8), on the in-process cluster: real storage servers, two real
//! managers, real QUIC, and `fuse_client::Client` driving them without a kernel mount.
//!
//! - A cross-manager rename, link and unlink by one client costs it no callback (the
//!   participant manager knows the requesting session and does not call it back).
//! - Concurrent writers, truncaters and cross-manager renamers on one client and on two,
//!   with readers on the other client calling the writers back: every byte matches a model
//!   at the end, and no callback ran into a lease expiry (no session was lost).

mod common;

use common::{read_all, TestCluster};
use proto::ids::InodeId;
use proto::msg::{Caller, RenameFlags, SetAttrs};
use std::time::Duration;

const ROOT: Caller = Caller { uid: 0, gid: 0 };
/// Bound of every step that talks to the cluster.
const STEP: Duration = Duration::from_secs(60);

use std::sync::Arc;

/// Ownership and lease counters over the cluster's managers.
trait Managers {
    fn owner(&self, ino: InodeId) -> proto::ids::NodeId;
    fn lost(&self) -> (u64, u64, usize);
}

impl Managers for TestCluster {
    fn owner(&self, ino: InodeId) -> proto::ids::NodeId {
        self.cluster.config.slot_owner(ino.slot())
    }

    /// Callbacks that ran into a holder's lease expiry, holders that had expired, and
    /// sessions marked lost, over every manager.
    fn lost(&self) -> (u64, u64, usize) {
        let mut timed_out = 0;
        let mut expired = 0;
        let mut lost = 0;
        for s in self.cluster.manager_services() {
            let st = s.lease_stats();
            timed_out += st.callbacks_timed_out;
            expired += st.expired_holders;
            lost += st.lost_sessions;
        }
        (timed_out, expired, lost)
    }
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {STEP:?}"),
    }
}

/// Two directories in the root whose inodes live on different managers.
async fn dirs_on_two_managers(
    tc: &TestCluster,
    c: &fuse_client::Client,
    prefix: &str,
) -> (InodeId, InodeId) {
    let mut first: Option<InodeId> = None;
    for i in 0..64 {
        let d = c
            .mkdir(InodeId::ROOT, &format!("{prefix}{i}"), 0o755, 0o022, ROOT)
            .await
            .expect("mkdir");
        match first {
            None => first = Some(d.ino),
            Some(f) if tc.owner(f) != tc.owner(d.ino) => return (f, d.ino),
            Some(_) => {}
        }
    }
    panic!("64 directories all landed on one manager");
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(31).wrapping_add(seed * 7) % 251) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cross_manager_operations_do_not_call_back_the_requester() {
    let tc = TestCluster::start(6, 2, 4, 2).await;
    let c = tc.client().await;
    let (d1, d2) = dirs_on_two_managers(&tc, &c, "d").await;
    let before = c.stats();
    let data = pattern(300_000, 3);
    {
        tracing::info!("--- a file with buffered writes moves between two managers and back");
        let (a, _fh) = c.create(d1, "f", 0o644, 0o022, ROOT).await.expect("create");
        c.write(a.ino, 0, &data).await.expect("write");
        for (from, to) in [(d1, d2), (d2, d1), (d1, d2)] {
            bounded(
                "rename",
                c.rename(from, "f", to, "f", RenameFlags::default(), ROOT),
            )
            .await
            .expect("rename");
        }
        bounded("link", c.link(a.ino, d1, "hard", ROOT))
            .await
            .expect("link");
        bounded("unlink", c.unlink(d1, "hard", ROOT))
            .await
            .expect("unlink");
        tracing::info!("--- a directory moves too");
        c.mkdir(d1, "sub", 0o755, 0o022, ROOT).await.expect("mkdir");
        bounded(
            "rename dir",
            c.rename(d1, "sub", d2, "sub", RenameFlags::default(), ROOT),
        )
        .await
        .expect("rename dir");
        c.fsync(a.ino).await.expect("fsync");
        c.release(a.ino).await.expect("release");
        let found = c.lookup(d2, "f").await.expect("lookup");
        assert_eq!(found.ino, a.ino);
        assert_eq!(read_all(&c, a.ino, data.len()).await, data);
    }
    let after = c.stats();
    assert_eq!(
        (
            after.flush_callbacks - before.flush_callbacks,
            after.invalidate_callbacks - before.invalidate_callbacks
        ),
        (0, 0),
        "the only client was called back for its own cross-manager operations"
    );
    assert_eq!(tc.lost(), (0, 0, 0), "a live client was declared lost");
    c.shutdown();
    tc.cluster.stop().await;
}

/// A tiny deterministic generator (no shared RNG state between workers).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One worker: its own file, moved between two directories on different managers, with
/// writes, truncates, xattrs and fsyncs, checked against a model at the end. Returns the
/// file's inode and its expected bytes.
async fn worker(
    c: Arc<fuse_client::Client>,
    dirs: (InodeId, InodeId),
    id: u64,
    ops: usize,
) -> (InodeId, Vec<u8>) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (id + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let name = format!("w{id}");
    // Half the files live on each manager, so that a cross-manager operation on one file
    // meets commits and truncates of another on the coordinator.
    let mut at = if id.is_multiple_of(2) { dirs.0 } else { dirs.1 };
    let (a, _fh) = c
        .create(at, &name, 0o644, 0o022, ROOT)
        .await
        .expect("create");
    let ino = a.ino;
    let mut model: Vec<u8> = Vec::new();
    for op in 0..ops {
        match rng.below(12) {
            0..=4 => {
                let off = rng.below(200_000) as usize;
                let len = 1 + rng.below(40_000) as usize;
                let data = pattern(len, id * 100_000 + op as u64);
                bounded("write", c.write(ino, off as u64, &data))
                    .await
                    .expect("write");
                if model.len() < off + len {
                    model.resize(off + len, 0);
                }
                model[off..off + len].copy_from_slice(&data);
            }
            5 => {
                let size = rng.below(220_000);
                let set = SetAttrs {
                    size: Some(size),
                    ..SetAttrs::default()
                };
                bounded("truncate", c.setattr(ino, set, ROOT))
                    .await
                    .expect("truncate");
                model.resize(size as usize, 0);
            }
            6 | 7 => {
                let to = if at == dirs.0 { dirs.1 } else { dirs.0 };
                bounded(
                    "rename",
                    c.rename(at, &name, to, &name, RenameFlags::default(), ROOT),
                )
                .await
                .expect("rename");
                at = to;
            }
            8 => {
                // A link in the other manager's directory and its removal: the file's
                // owner adjusts the link count for the other manager's transaction.
                let other = if at == dirs.0 { dirs.1 } else { dirs.0 };
                let l = format!("{name}.l");
                bounded("link", c.link(ino, other, &l, ROOT))
                    .await
                    .expect("link");
                bounded("unlink", c.unlink(other, &l, ROOT))
                    .await
                    .expect("unlink");
            }
            9 => {
                let v = format!("{op}");
                bounded("setxattr", c.setxattr(ino, "user.v", v.as_bytes(), 0, ROOT))
                    .await
                    .expect("setxattr");
            }
            _ => {
                bounded("fsync", c.fsync(ino)).await.expect("fsync");
            }
        }
    }
    bounded("fsync", c.fsync(ino)).await.expect("final fsync");
    c.release(ino).await.expect("release");
    (ino, model)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn busy_clients_are_never_declared_lost() {
    let tc = TestCluster::start(6, 2, 4, 2).await;
    let a = tc.client().await;
    let b = tc.client().await;
    let dirs = dirs_on_two_managers(&tc, &a, "d").await;
    const OPS: usize = 150;
    tracing::info!("--- 4 workers on client A, 2 on client B; B also reads A's files");
    let mut jobs = Vec::new();
    for id in 0..4 {
        jobs.push(tokio::spawn(worker(a.clone(), dirs, id, OPS)));
    }
    for id in 4..6 {
        jobs.push(tokio::spawn(worker(b.clone(), dirs, id, OPS)));
    }
    // Reads and stats of A's files from B: every one calls A back (Flush) while A is busy.
    let reader = {
        let b = b.clone();
        tokio::spawn(async move {
            let mut rng = Rng(77);
            for _ in 0..200 {
                let name = format!("w{}", rng.below(4));
                for d in [dirs.0, dirs.1] {
                    if let Ok(attr) = b.lookup(d, &name).await {
                        let _ = bounded("read", b.read(attr.ino, 0, 4096)).await;
                    }
                }
            }
        })
    };
    let mut files = Vec::new();
    for j in jobs {
        files.push(bounded("worker", j).await.expect("worker"));
    }
    bounded("reader", reader).await.expect("reader");
    tracing::info!("--- every file reads back as its worker wrote it, from both clients");
    for (ino, model) in &files {
        for c in [&a, &b] {
            let got = read_all(c, *ino, model.len() + 1).await;
            assert_eq!(got.len(), model.len(), "size of {ino}");
            assert!(got == *model, "contents of {ino} differ from the model");
        }
    }
    assert_eq!(
        tc.lost(),
        (0, 0, 0),
        "callbacks timed out, holders expired or sessions were lost: a live client was declared lost"
    );
    a.shutdown();
    b.shutdown();
    tc.cluster.stop().await;
}
