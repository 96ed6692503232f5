//! Micro benchmark of manager metadata operations on the request handler itself
//! (`Service::handle`, no network): two managers with in-memory logs (`MemLog`) and
//! in-process peers, as the crate's own tests build them. Measures Create of a new file in a
//! directory, GetAttr of an existing file and Lookup of an existing name; each sample is one
//! request routed to the owning manager.
//!
//! Run: `cargo bench -p manager --bench metadata`. Reports timings only; asserts nothing.

use divan::Bencher;
use manager::journal::MemLog;
use manager::service::Service;
use manager::testing::{LoopbackPeers, NoCallbacks};
use proto::config::{ClusterConfig, ErasureConfig};
use proto::ids::InodeId;
use proto::msg::{Attr, Caller, ManagerRequest as R, ManagerResponse as A, NewNode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const USER: Caller = Caller { uid: 1, gid: 1 };

fn main() {
    divan::main();
}

/// Two managers over memory logs, on a tokio runtime of their own.
struct Managers {
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    config: Arc<ClusterConfig>,
    managers: Vec<Arc<Service>>,
    _peers: Arc<LoopbackPeers>,
    next: AtomicU64,
}

impl Managers {
    fn start() -> Managers {
        let dir = tempfile::tempdir().expect("tempdir");
        let file =
            ClusterConfig::generate("bench", 6, 2, ErasureConfig { data: 4, parity: 2 }, 41000)
                .expect("config");
        let config = Arc::new(ClusterConfig::from_file(dir.path(), file).expect("config"));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let peers = LoopbackPeers::new();
        let managers = rt.block_on(async {
            let mut v = Vec::new();
            for m in config.manager_nodes() {
                let svc = Service::start_with(
                    config.clone(),
                    m.id,
                    Arc::new(MemLog::new()),
                    peers.clone(),
                    Arc::new(NoCallbacks),
                )
                .await
                .expect("start manager");
                peers.register(&svc);
                svc.wait_ready().await;
                v.push(svc);
            }
            v
        });
        Managers {
            _dir: dir,
            rt,
            config,
            managers,
            _peers: peers,
            next: AtomicU64::new(0),
        }
    }

    /// Sends a request to the manager owning its routing inode.
    fn call(&self, req: R) -> A {
        let ino = proto::route::routing_inode(&req).unwrap_or(InodeId::ROOT);
        let owner = self.config.slot_owner(ino.slot());
        let svc = self
            .managers
            .iter()
            .find(|m| m.node() == owner)
            .expect("owner runs");
        match self.rt.block_on(svc.handle(None, req)) {
            Ok(a) => a,
            Err(e) => panic!("request failed: {e}"),
        }
    }

    fn attr(&self, req: R) -> Attr {
        match self.call(req) {
            A::Attr(a) => a,
            other => panic!("expected attributes, got {other:?}"),
        }
    }

    fn create(&self, parent: InodeId, node: NewNode) -> (String, Attr) {
        let name = format!("f{}", self.next.fetch_add(1, Ordering::Relaxed));
        let a = self.attr(R::Create {
            parent,
            name: name.clone(),
            node,
            perm: 0o755,
            umask: 0o022,
            caller: USER,
            session: None,
        });
        (name, a)
    }
}

impl Drop for Managers {
    fn drop(&mut self) {
        for m in &self.managers {
            m.kill();
        }
    }
}

/// Create of a new regular file in a directory (a local commit: no durability wait).
#[divan::bench(sample_count = 200, sample_size = 10)]
fn create(bencher: Bencher) {
    let m = Managers::start();
    let (_, dir) = m.create(InodeId::ROOT, NewNode::Dir);
    bencher.bench_local(|| m.create(dir.ino, NewNode::File));
}

/// GetAttr of an existing file.
#[divan::bench]
fn getattr(bencher: Bencher) {
    let m = Managers::start();
    let (_, dir) = m.create(InodeId::ROOT, NewNode::Dir);
    let (_, f) = m.create(dir.ino, NewNode::File);
    bencher.bench_local(|| m.attr(R::GetAttr { ino: f.ino }));
}

/// Lookup of an existing name in a directory of 1,000 entries.
#[divan::bench]
fn lookup(bencher: Bencher) {
    let m = Managers::start();
    let (_, dir) = m.create(InodeId::ROOT, NewNode::Dir);
    let names: Vec<String> = (0..1000)
        .map(|_| m.create(dir.ino, NewNode::File).0)
        .collect();
    let name = names[500].clone();
    bencher.bench_local(|| {
        m.attr(R::Lookup {
            parent: dir.ino,
            name: name.clone(),
        })
    });
}
