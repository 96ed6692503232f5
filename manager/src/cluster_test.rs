//! In-process cluster on loopback QUIC: 6 storage servers (`storage::Server`) and 2
//! managers over the real striped log. Cross-manager mkdir/rename/link, then a restart of
//! a manager brings back everything committed.

use crate::service::Service;
use bytes::Bytes;
use proto::config::{ClusterConfig, ErasureConfig};
use proto::ids::{FragmentId, InodeId, LogId, NodeId};
use proto::msg::{
    Caller, ManagerRequest as R, ManagerResponse as A, NewNode, RemoteError, RenameFlags, Request,
    Response,
};
use proto::route::ManagerClient;
use proto::tls::{write_pem, CertAuthority, Identity};
use proto::transport::{BoxFuture, Handler, Peer, Transport};
use std::path::Path;
use std::sync::{Arc, Mutex};

const USER: Caller = Caller { uid: 1, gid: 1 };
const ROOT: InodeId = InodeId::ROOT;

/// Serves the manager role of one node; the service can be swapped on restart.
struct ManagerHandler(Mutex<Option<Arc<Service>>>);

impl Handler for ManagerHandler {
    fn handle(&self, peer: Peer, req: Request, _bulk: Bytes) -> BoxFuture<'_, (Response, Bytes)> {
        Box::pin(async move {
            let svc = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let resp = match (req, svc) {
                (Request::Manager(r), Some(s)) => match s.handle(Some(peer.addr), r).await {
                    Ok(a) => Response::Manager(a),
                    Err(e) => Response::Error(e),
                },
                (Request::Manager(_), None) => {
                    Response::Error(RemoteError::Unavailable("manager not started".into()))
                }
                _ => Response::Error(RemoteError::NoRole("storage".into())),
            };
            (resp, Bytes::new())
        })
    }
}

fn identity(dir: &Path, ca: &CertAuthority, name: &str) -> Identity {
    let (cert, key) = ca.issue(name).expect("issue");
    let (cp, kp, cap) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
        dir.join("ca.pem"),
    );
    write_pem(&cp, &cert, false).expect("write cert");
    write_pem(&kp, &key, true).expect("write key");
    write_pem(&cap, &ca.cert_pem, false).expect("write ca");
    Identity::load(&cap, &cp, &kp).expect("identity")
}

/// Six storage servers (file stores under the temp dir) and two managers on loopback QUIC.
struct Net {
    dir: tempfile::TempDir,
    config: Arc<ClusterConfig>,
    transports: Vec<Arc<Transport>>,
    serving: Vec<tokio::task::JoinHandle<()>>,
    handlers: Vec<Arc<ManagerHandler>>,
    mgr_ids: Vec<(usize, NodeId)>,
    client: ManagerClient,
}

impl Net {
    async fn start() -> Net {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = CertAuthority::generate("t").expect("ca");
        let mut file = ClusterConfig::generate("t", 6, 2, ErasureConfig { data: 4, parity: 2 }, 1)
            .expect("config");
        let mut transports = Vec::new();
        for n in file.nodes.iter_mut() {
            let id = identity(dir.path(), &ca, &n.name);
            let t = Transport::bind("127.0.0.1:0".parse().expect("addr"), &id, true).expect("bind");
            n.address = t.local_addr().expect("local addr");
            transports.push(t);
        }
        let config = Arc::new(ClusterConfig::from_file(dir.path(), file).expect("config"));
        let mut serving = Vec::new();
        for (i, node) in config
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.name.starts_with("storage"))
        {
            let server = storage::Server::open(&dir.path().join(&node.name))
                .await
                .expect("storage server");
            serving.push(transports[i].serve(Arc::new(storage::ServerHandler {
                server,
                name: node.name.clone(),
            })));
        }
        let mgr_ids: Vec<(usize, NodeId)> = config
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.name.starts_with("manager"))
            .map(|(i, n)| (i, n.id))
            .collect();
        let mut handlers = Vec::new();
        for (i, id) in &mgr_ids {
            let h = Arc::new(ManagerHandler(Mutex::new(None)));
            serving.push(transports[*i].serve(h.clone()));
            let svc = Service::start(config.clone(), *id, transports[*i].clone())
                .await
                .expect("start");
            *h.0.lock().expect("lock") = Some(svc);
            handlers.push(h);
        }
        for h in &handlers {
            let svc = h.0.lock().expect("lock").clone().expect("svc");
            svc.wait_ready().await;
        }
        let client_id = identity(dir.path(), &ca, "client");
        let ct = Transport::bind("127.0.0.1:0".parse().expect("addr"), &client_id, false)
            .expect("bind client");
        let client = ManagerClient::new(config.clone(), ct);
        Net {
            dir,
            config,
            transports,
            serving,
            handlers,
            mgr_ids,
            client,
        }
    }

    fn stop(self) {
        for h in &self.handlers {
            if let Some(s) = h.0.lock().expect("lock").take() {
                s.kill();
            }
        }
        for s in self.serving {
            s.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_over_the_striped_log_survive_restart() {
    let net = Net::start().await;
    let (config, transports, handlers, mgr_ids, client) = (
        net.config.clone(),
        &net.transports,
        &net.handlers,
        &net.mgr_ids,
        &net.client,
    );
    let attr = |r: Result<A, proto::route::CallError>| match r {
        Ok(A::Attr(a)) => a,
        other => panic!("expected attributes: {other:?}"),
    };

    tracing::info!("--- cross-manager namespace operations");
    let mut dirs = Vec::new();
    for i in 0..6 {
        let req = R::Create {
            parent: ROOT,
            name: format!("d{i}"),
            node: NewNode::Dir,
            perm: 0o755,
            umask: 0,
            caller: USER,
            session: None,
        };
        dirs.push(attr(client.call(req).await));
    }
    let on = |n: NodeId| {
        dirs.iter()
            .find(|d| config.slot_owner(d.ino.slot()) == n)
            .expect("a dir on each manager")
            .clone()
    };
    let (a, b) = (on(mgr_ids[0].1), on(mgr_ids[1].1));
    let f = attr(
        client
            .call(R::Create {
                parent: a.ino,
                name: "f".into(),
                node: NewNode::File,
                perm: 0o644,
                umask: 0,
                caller: USER,
                session: None,
            })
            .await,
    );
    let rename = R::Rename {
        parent: a.ino,
        name: "f".into(),
        new_parent: b.ino,
        new_name: "g".into(),
        flags: RenameFlags::default(),
        caller: USER,
    };
    client.call(rename).await.expect("rename across managers");
    let linked = attr(
        client
            .call(R::Link {
                ino: f.ino,
                new_parent: a.ino,
                new_name: "back".into(),
                caller: USER,
            })
            .await,
    );
    assert_eq!(linked.nlink, 2);
    for (_, id) in mgr_ids {
        client.call_node(*id, R::Sync).await.expect("sync");
    }

    tracing::info!("--- restart both managers");
    for (k, (i, id)) in mgr_ids.iter().enumerate() {
        let old = handlers[k].0.lock().expect("lock").take().expect("svc");
        old.shutdown().await.expect("shutdown");
        let svc = Service::start(config.clone(), *id, transports[*i].clone())
            .await
            .expect("restart");
        svc.wait_ready().await;
        *handlers[k].0.lock().expect("lock") = Some(svc);
    }
    for (i, d) in dirs.iter().enumerate() {
        assert_eq!(
            attr(
                client
                    .call(R::Lookup {
                        parent: ROOT,
                        name: format!("d{i}")
                    })
                    .await
            )
            .ino,
            d.ino
        );
    }
    assert_eq!(
        attr(
            client
                .call(R::Lookup {
                    parent: b.ino,
                    name: "g".into()
                })
                .await
        )
        .ino,
        f.ino
    );
    assert_eq!(
        attr(
            client
                .call(R::Lookup {
                    parent: a.ino,
                    name: "back".into()
                })
                .await
        )
        .nlink,
        2
    );
    assert_eq!(attr(client.call(R::GetAttr { ino: ROOT }).await).nlink, 8);

    net.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_segment_destroyed_beyond_parity_stops_recovery_naming_it() {
    let net = Net::start().await;
    let k = net
        .mgr_ids
        .iter()
        .position(|(_, n)| *n == net.config.slot_owner(ROOT.slot()))
        .expect("root's manager");
    let (i, id) = net.mgr_ids[k];
    let svc = net.handlers[k]
        .0
        .lock()
        .expect("lock")
        .clone()
        .expect("svc");
    let inos: Vec<InodeId> = {
        let mut v = Vec::new();
        for n in 0..4 {
            let req = R::Create {
                parent: ROOT,
                name: format!("f{n}"),
                node: NewNode::File,
                perm: 0o644,
                umask: 0,
                caller: USER,
                session: None,
            };
            match svc.handle(None, req).await {
                Ok(A::Attr(a)) => v.push(a.ino),
                other => panic!("create: {other:?}"),
            }
            svc.handle(None, R::Sync).await.expect("sync");
        }
        v
    };
    assert_eq!(inos.len(), 4);
    svc.kill();
    tracing::info!("--- corrupt 3 of the 6 fragments (k=4, m=2) of a middle segment");
    let reader = storage::LogReader::new(net.config.clone(), net.transports[i].clone());
    let segs = reader
        .list_segments(LogId::manager(id))
        .await
        .expect("list");
    assert!(segs.len() >= 3, "{segs:?}");
    let victim = segs[segs.len() / 2].segment;
    let mut corrupted = 0;
    for index in 0..6u8 {
        let fid = FragmentId {
            log: LogId::manager(id),
            segment: victim,
            index,
        };
        for node in net
            .config
            .nodes
            .iter()
            .filter(|n| n.name.starts_with("storage"))
        {
            if corrupted < 3
                && storage::testing::corrupt_fragment_file(&net.dir.path().join(&node.name), fid, 7)
                    .is_ok()
            {
                corrupted += 1;
            }
        }
    }
    assert_eq!(corrupted, 3);
    let svc = Service::start(net.config.clone(), id, net.transports[i].clone())
        .await
        .expect("start");
    let err = svc
        .wait_recovered()
        .await
        .expect_err("recovery must refuse");
    assert!(
        err.contains(&format!("{}/{victim} ", LogId::manager(id))),
        "{err}"
    );
    match svc.handle(None, R::GetAttr { ino: ROOT }).await {
        Err(RemoteError::Unavailable(m)) => assert!(m.contains("recovery refused"), "{m}"),
        other => panic!("a manager that refused recovery answered {other:?}"),
    }
    svc.kill();
    net.stop();
}
