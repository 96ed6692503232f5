//! Stable node identities (issue 13): a node's id is written once into `cluster.toml`, so
//! reordering the `[[node]]` entries and adding a storage node move no data and hand no
//! manager another node's metadata log. Real nodes in this process on loopback, real QUIC,
//! real files; the cluster is stopped and started again from its directory between steps.

mod common;

use common::read_all;
use fsd::cluster::{add_storage_node, init, InitParams, LocalCluster};
use proto::config::{ClusterConfig, ClusterFile, ErasureConfig, CONFIG_FILE};
use proto::ids::InodeId;
use proto::msg::Caller;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const ROOT: Caller = Caller { uid: 0, gid: 0 };

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed))
        .collect()
}

async fn start(dir: &Path) -> LocalCluster {
    let config = Arc::new(ClusterConfig::load(dir).expect("load"));
    LocalCluster::start(config).await.expect("start")
}

async fn client(c: &LocalCluster) -> Arc<fuse_client::Client> {
    let t = fsd::cluster::client_transport(&c.config).expect("transport");
    fuse_client::Client::connect(c.config.clone(), t)
        .await
        .expect("connect")
}

fn rewrite(dir: &Path, edit: impl FnOnce(&mut ClusterFile)) {
    let mut file = ClusterConfig::load(dir).expect("load").file;
    edit(&mut file);
    std::fs::write(dir.join(CONFIG_FILE), ClusterConfig::render(&file)).expect("write config");
}

/// Every file of `model` (directory name → (file name → bytes)) reads back byte for byte,
/// looked up by path from the root.
async fn check(c: &fuse_client::Client, model: &BTreeMap<String, BTreeMap<String, Vec<u8>>>) {
    for (d, files) in model {
        let dir = tokio::time::timeout(Duration::from_secs(60), c.lookup(InodeId::ROOT, d))
            .await
            .expect("bounded lookup")
            .expect("lookup dir");
        for (f, data) in files {
            let a = c.lookup(dir.ino, f).await.expect("lookup file");
            assert_eq!(a.size, data.len() as u64, "{d}/{f}");
            assert!(
                read_all(c, a.ino, data.len()).await == *data,
                "{d}/{f} differs"
            );
        }
    }
}

async fn write_round(
    c: &fuse_client::Client,
    model: &mut BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    round: u8,
) {
    // Directories land on both managers (slots are split between them), files of several
    // segments' worth in all.
    for d in 0..4u8 {
        let name = format!("d{round}-{d}");
        let dir = c
            .mkdir(InodeId::ROOT, &name, 0o755, 0o022, ROOT)
            .await
            .expect("mkdir");
        let mut files = BTreeMap::new();
        for f in 0..3u8 {
            let data = pattern((300 << 10) + f as usize * 4099, round * 16 + d * 4 + f);
            let fname = format!("f{f}");
            let (a, _fh) = c
                .create(dir.ino, &fname, 0o644, 0o022, ROOT)
                .await
                .expect("create");
            c.write(a.ino, 0, &data).await.expect("write");
            c.fsync(a.ino).await.expect("fsync");
            c.release(a.ino).await.expect("release");
            files.insert(fname, data);
        }
        model.insert(name, files);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reordering_nodes_and_adding_one_keeps_every_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let base_port = fsd::cluster::free_port_range(9).expect("ports");
    init(
        dir,
        &InitParams {
            name: "ids".into(),
            storage: 6,
            managers: 2,
            erasure: ErasureConfig { data: 4, parity: 2 },
            base_port,
        },
    )
    .expect("init");
    let before = ClusterConfig::load(dir).expect("load");
    let ids: BTreeMap<String, u32> = before
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.id.0))
        .collect();
    let mut model = BTreeMap::new();

    tracing::info!("--- write files on both managers");
    let cluster = start(dir).await;
    let c = client(&cluster).await;
    write_round(&c, &mut model, 0).await;
    c.shutdown();
    cluster.stop().await;

    tracing::info!("--- reverse the [[node]] entries: every id, owner and home stays");
    rewrite(dir, |f| {
        f.nodes.reverse();
        f.epoch += 1;
    });
    let reordered = ClusterConfig::load(dir).expect("load");
    assert_eq!(reordered.nodes[0].name, "manager-2");
    for n in &reordered.nodes {
        assert_eq!(ids[&n.name], n.id.0, "{} changed id", n.name);
    }
    let cluster = start(dir).await;
    let c = client(&cluster).await;
    check(&c, &model).await;
    write_round(&c, &mut model, 1).await;
    c.shutdown();
    cluster.stop().await;

    tracing::info!("--- add a seventh storage server: it gets a new id, old data stays put");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], base_port + 8));
    let added = add_storage_node(dir, "storage-7", addr, None).expect("add node");
    assert_eq!(added.node_by_name("storage-7").expect("new").id.0, 9);
    assert_eq!(added.file.last_node_id, 9);
    let cluster = start(dir).await;
    let c = client(&cluster).await;
    check(&c, &model).await;
    write_round(&c, &mut model, 2).await;
    c.shutdown();
    cluster.stop().await;

    tracing::info!("--- and once more from a fresh start, with storage-1 down");
    let mut cluster = start(dir).await;
    cluster.stop_node("storage-1", true).await.expect("stop");
    let c = client(&cluster).await;
    check(&c, &model).await;
    c.shutdown();
    cluster.stop().await;
}

#[test]
fn a_file_without_ids_gets_its_positional_ids_written_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let base_port = fsd::cluster::free_port_range(8).expect("ports");
    init(
        dir,
        &InitParams {
            name: "legacy".into(),
            storage: 6,
            managers: 2,
            erasure: ErasureConfig { data: 4, parity: 2 },
            base_port,
        },
    )
    .expect("init");
    // As written before ids existed, with a storage node appended after the managers.
    rewrite(dir, |f| {
        for n in f.nodes.iter_mut() {
            n.id = None;
        }
        f.last_node_id = 0;
        let mut late = f.nodes[0].clone();
        late.name = "storage-late".into();
        late.address = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
        f.nodes.push(late);
    });
    let legacy = ClusterConfig::load(dir).expect("load");
    assert!(fsd::cluster::write_node_ids(&legacy).expect("write ids"));
    let upgraded = ClusterConfig::load(dir).expect("load");
    assert!(upgraded.file.nodes.iter().all(|n| n.id.is_some()));
    for n in &legacy.nodes {
        assert_eq!(upgraded.node_by_name(&n.name).expect("node").id, n.id);
    }
    assert_eq!(upgraded.node_by_name("storage-late").expect("late").id.0, 9);
    assert_eq!(upgraded.file.last_node_id, 9);
    assert_eq!(upgraded.file.epoch, legacy.file.epoch);
    assert!(!fsd::cluster::write_node_ids(&upgraded).expect("again"));
}
