//! The in-process test cluster shared by the `fsd` integration tests: every node of a real
//! cluster (storage servers, managers) in the test process on loopback, with real QUIC and
//! real files, and `fuse_client::Client`s (the file system core, without a kernel mount).

#![allow(dead_code)]

use fsd::cluster::{init, InitParams, LocalCluster};
use fsd::config_group::GroupOptions;
use proto::config::{ClusterConfig, ErasureConfig};
use proto::ids::InodeId;
use std::sync::Arc;

pub struct TestCluster {
    _dir: tempfile::TempDir,
    pub cluster: LocalCluster,
}

impl TestCluster {
    /// `storage` servers with `k`+`m` erasure coding and `managers` managers, started.
    pub async fn start(storage: usize, managers: usize, k: u8, m: u8) -> TestCluster {
        TestCluster::start_with(storage, managers, k, m, |_| GroupOptions::default()).await
    }

    /// `start`, with the config group members' options made from the config.
    pub async fn start_with(
        storage: usize,
        managers: usize,
        k: u8,
        m: u8,
        group: impl FnOnce(&ClusterConfig) -> GroupOptions,
    ) -> TestCluster {
        TestCluster::start_full(storage, managers, k, m, |_| {}, group).await
    }

    /// `start`, with the cluster file edited by `edit` before any node starts.
    pub async fn start_editing(
        storage: usize,
        managers: usize,
        k: u8,
        m: u8,
        edit: impl FnOnce(&mut proto::config::ClusterFile),
    ) -> TestCluster {
        TestCluster::start_full(storage, managers, k, m, edit, |_| GroupOptions::default()).await
    }

    async fn start_full(
        storage: usize,
        managers: usize,
        k: u8,
        m: u8,
        edit: impl FnOnce(&mut proto::config::ClusterFile),
        group: impl FnOnce(&ClusterConfig) -> GroupOptions,
    ) -> TestCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let base_port = fsd::cluster::free_port_range((storage + managers) as u16).expect("ports");
        let p = InitParams {
            name: "t".into(),
            storage,
            managers,
            erasure: ErasureConfig { data: k, parity: m },
            base_port,
        };
        init(dir.path(), &p).expect("init");
        let mut file = ClusterConfig::load(dir.path()).expect("load").file;
        edit(&mut file);
        std::fs::write(
            dir.path().join(proto::config::CONFIG_FILE),
            ClusterConfig::render(&file),
        )
        .expect("write cluster.toml");
        let config = Arc::new(ClusterConfig::load(dir.path()).expect("load"));
        let options = group(&config);
        let cluster = LocalCluster::start_with(config, options)
            .await
            .expect("start");
        TestCluster { _dir: dir, cluster }
    }

    /// A connected client.
    pub async fn client(&self) -> Arc<fuse_client::Client> {
        let t = fsd::cluster::client_transport(&self.cluster.config).expect("transport");
        fuse_client::Client::connect(self.cluster.config.clone(), t)
            .await
            .expect("connect")
    }
}

/// Reads `len` bytes of `ino` from offset 0 (shorter at end of file).
pub async fn read_all(c: &fuse_client::Client, ino: InodeId, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let chunk = c
            .read(ino, out.len() as u64, (1 << 20).min(len - out.len()) as u32)
            .await
            .expect("read");
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    out
}
