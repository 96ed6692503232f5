//! The in-process cluster harness: every node of a real cluster (storage servers, two
//! managers) runs in this test process on loopback with real QUIC and real files, and a
//! `fuse_client::Client` (the file system core, without a kernel mount) drives it.

mod common;

use common::{read_all, TestCluster};
use proto::ids::InodeId;
use proto::msg::Caller;
use std::time::Duration;

const ROOT: Caller = Caller { uid: 0, gid: 0 };

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_fsync_degraded_read_and_manager_crash() {
    let mut tc = TestCluster::start(6, 2, 4, 2).await;
    let data = pattern(5 << 20, 7);
    let (file, dir);
    {
        tracing::info!("--- write a file in a directory and fsync it");
        let c = tc.client().await;
        let d = c
            .mkdir(InodeId::ROOT, "d", 0o755, 0o022, ROOT)
            .await
            .expect("mkdir");
        let (a, _fh) = c
            .create(d.ino, "f", 0o644, 0o022, ROOT)
            .await
            .expect("create");
        c.write(a.ino, 0, &data).await.expect("write");
        c.fsync(a.ino).await.expect("fsync");
        c.release(a.ino).await.expect("release");
        assert_eq!(read_all(&c, a.ino, data.len()).await, data);
        file = a.ino;
        dir = d.ino;
        c.shutdown();
    }
    {
        tracing::info!("--- every node names its background workers in its Ping answer");
        let s = fsd::cluster::status(&tc.cluster.config)
            .await
            .expect("status");
        for n in &s.nodes {
            let info = n.reachable.as_ref().expect("reachable");
            let names: Vec<&str> = info.workers.iter().map(|w| w.name.as_str()).collect();
            if n.roles.contains(&proto::config::Role::Manager) {
                assert!(names.contains(&"journal"), "{}: {names:?}", n.name);
                let j = info.workers.iter().find(|w| w.name == "journal");
                // The file above was fsynced: the committer has written batches.
                assert!(j.is_some_and(|j| j.rounds > 0), "{}: {j:?}", n.name);
            }
            if n.roles.contains(&proto::config::Role::Storage) {
                assert!(names.contains(&"scrub"), "{}: {names:?}", n.name);
            }
        }
    }
    {
        tracing::info!("--- two storage servers down: a fresh client still reads everything");
        tc.cluster.stop_node("storage-2", true).await.expect("stop");
        tc.cluster.stop_node("storage-5", true).await.expect("stop");
        let c = tc.client().await;
        assert_eq!(read_all(&c, file, data.len()).await, data);
        c.shutdown();
        tc.cluster.start_node("storage-2").await.expect("start");
        tc.cluster.start_node("storage-5").await.expect("start");
    }
    {
        tracing::info!("--- both managers crash and restart from the storage servers alone");
        tc.cluster.stop_node("manager-1", true).await.expect("stop");
        tc.cluster.stop_node("manager-2", true).await.expect("stop");
        tc.cluster.start_node("manager-1").await.expect("start");
        tc.cluster.start_node("manager-2").await.expect("start");
        let c = tc.client().await;
        let found = tokio::time::timeout(Duration::from_secs(60), c.lookup(dir, "f"))
            .await
            .expect("bounded")
            .expect("lookup");
        assert_eq!(found.ino, file);
        assert_eq!(found.size, data.len() as u64);
        assert_eq!(read_all(&c, file, data.len()).await, data);
        c.shutdown();
    }
    tc.cluster.stop().await;
}

/// A new client's log is protected from the reclaimer before its first write: straight after
/// `connect` (well inside the first renewal period, when the renewer has promised nothing
/// yet) every manager already knows the client as the log's writer with horizon 0, so a
/// seal of the log up to any segment leaves the floor at 0. Before the promise at connect,
/// a reclaim pass in a mount's first half second could seal the log above segments the
/// client had appended but not yet committed, and its fsync failed (CI, lifecycle t10).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_client_is_a_known_writer_before_its_first_write() {
    use proto::ids::SegmentId;
    use proto::msg::{ManagerRequest, ManagerResponse};
    let tc = TestCluster::start(6, 2, 4, 2).await;
    let c = tc.client().await;
    let admin = fsd::cluster::admin_transport(&tc.cluster.config).expect("admin transport");
    let managers = proto::route::ManagerClient::new(tc.cluster.config.clone(), admin);
    for n in tc.cluster.config.manager_nodes() {
        let r = managers
            .call_node(
                n.id,
                ManagerRequest::SealLog {
                    log: c.log_id(),
                    upto: SegmentId(1_000),
                },
            )
            .await
            .expect("SealLog");
        match r {
            ManagerResponse::Sealed { floor, .. } => {
                assert_eq!(floor, SegmentId(0), "{}: the new log was sealed", n.name)
            }
            other => panic!("{}: SealLog answered {other:?}", n.name),
        }
    }
    // The client writes and syncs as usual afterwards.
    let (a, _fh) = c
        .create(InodeId::ROOT, "f", 0o644, 0o022, ROOT)
        .await
        .expect("create");
    let data = pattern(3 << 20, 9);
    c.write(a.ino, 0, &data).await.expect("write");
    c.fsync(a.ino).await.expect("fsync");
    assert_eq!(read_all(&c, a.ino, data.len()).await, data);
    c.shutdown();
}
