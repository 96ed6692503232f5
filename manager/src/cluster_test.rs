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
    client_transport: Arc<Transport>,
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
        let client = ManagerClient::new(config.clone(), ct.clone());
        Net {
            client_transport: ct,
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
        .expect_err("recovery must refuse")
        .to_string();
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

/// The copying cleaner over the real striped log, crashed between its steps: a copy whose
/// swap never happened leaves only garbage the reclaimer deletes; a swap lets an overwrite
/// that landed after the copy win; a swap survives a crash of the manager (it was durable
/// before the answer); and the cleaned segment is reclaimed. The file reads back exactly
/// after every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cleaner_crashed_between_steps_never_loses_or_dangles() {
    use crate::cleaner::policy::Policy;
    use crate::cleaner::worker::{CleanReport, Cleaner};
    use crate::reclaim::Reclaimer;
    use proto::ids::{LogPtr, SegmentAddr, SegmentId};
    use proto::msg::{Extent, InodeWrite, Timestamp};
    use storage::log::LogReader;
    use storage::segment::{EntryKind, SegmentBuilder};
    use storage::LogWriter;

    const HALF: usize = 64 << 10;
    let net = Net::start().await;
    let (config, ct, client) = (
        net.config.clone(),
        net.client_transport.clone(),
        &net.client,
    );
    let f = match client
        .call(R::Create {
            parent: ROOT,
            name: "f".into(),
            node: NewNode::File,
            perm: 0o644,
            umask: 0,
            caller: USER,
            session: None,
        })
        .await
    {
        Ok(A::Attr(a)) => a,
        other => panic!("create: {other:?}"),
    };
    let owner = config.slot_owner(f.ino.slot());
    let k = net
        .mgr_ids
        .iter()
        .position(|(_, id)| *id == owner)
        .expect("owner runs");
    let svc = || {
        net.handlers[k]
            .0
            .lock()
            .expect("lock")
            .clone()
            .expect("svc")
    };

    // A "client" log: its writes go straight to the storage servers and the owner.
    let log = LogId::client(0x5eed);
    let mut writer = LogWriter::new(config.clone(), ct.clone(), log, SegmentId(0));
    let reader = LogReader::new(config.clone(), ct.clone());
    let pattern = |tag: u8| -> Vec<u8> { (0..HALF).map(|i| tag ^ (i % 251) as u8).collect() };
    // Appends one segment holding `pieces` (file offset, bytes) and commits them.
    let write = |seg: SegmentId, pieces: Vec<(u64, Vec<u8>)>| {
        let mut b = SegmentBuilder::new(log, seg);
        for (off, data) in &pieces {
            b.push(
                EntryKind::FileData {
                    ino: f.ino,
                    file_offset: *off,
                },
                Bytes::from(data.clone()),
            );
        }
        let (bytes, entries) = b.finish().expect("segment");
        (bytes, entries, pieces)
    };
    let mut model = vec![0u8; 2 * HALF];
    let commit = |addr: SegmentAddr,
                  entries: Vec<storage::segment::Entry>,
                  pieces: Vec<(u64, Vec<u8>)>,
                  model: &mut Vec<u8>| {
        let extents: Vec<Extent> = entries
            .iter()
            .zip(&pieces)
            .map(|(e, (off, data))| {
                model[*off as usize..*off as usize + data.len()].copy_from_slice(data);
                Extent {
                    offset: *off,
                    ptr: LogPtr {
                        seg: addr,
                        offset: e.offset,
                        len: e.len,
                    },
                }
            })
            .collect();
        let req = R::CommitWrites {
            writes: vec![InodeWrite {
                sums: Vec::new(),
                ino: f.ino,
                extents,
                size: 2 * HALF as u64,
                mtime: Timestamp::now(),
            }],
            sync: true,
            standing: None,
        };
        let s = svc();
        async move { s.handle(None, req).await.expect("commit") }
    };
    let read_back = |svc: Arc<Service>| {
        let reader = &reader;
        async move {
            let ext = match svc
                .handle(
                    None,
                    R::GetExtents {
                        ino: f.ino,
                        offset: 0,
                        len: 2 * HALF as u64,
                    },
                )
                .await
                .expect("extents")
            {
                A::SummedExtents { extents: e, .. } => e,
                other => panic!("GetExtents: {other:?}"),
            };
            let mut out = vec![0u8; 2 * HALF];
            for e in &ext {
                let b = reader.read(e.ptr).await.expect("every extent reads");
                out[e.offset as usize..e.offset as usize + b.len()].copy_from_slice(&b);
            }
            (out, ext)
        }
    };

    // Segment 0 holds both halves; the second half is then overwritten (segment 1), so
    // segment 0 is half live: the cleaner's candidate.
    let (bytes, entries, pieces) = write(
        writer.next_segment(),
        vec![(0, pattern(1)), (HALF as u64, pattern(2))],
    );
    let s0 = writer.append(bytes).await.expect("append");
    commit(s0, entries, pieces, &mut model).await;
    let (bytes, entries, pieces) = write(writer.next_segment(), vec![(HALF as u64, pattern(3))]);
    let s1 = writer.append(bytes).await.expect("append");
    commit(s1, entries, pieces, &mut model).await;
    assert_eq!(read_back(svc()).await.0, model);

    let policy = Policy {
        start_below_free: 0.0,
        max_utilisation: 0.8,
        batch_live_bytes: u64::MAX,
    };
    let reclaimer = Reclaimer::new(config.clone(), ct.clone());
    let list = |l: LogId| {
        let reader = &reader;
        async move {
            reader
                .list_segments(l)
                .await
                .expect("list")
                .iter()
                .map(|s| s.segment.0)
                .collect::<Vec<u64>>()
        }
    };

    tracing::info!("--- crash after the copy, before the swap");
    let c1 = Cleaner::new(config.clone(), ct.clone()).with_policy(policy);
    let (cands, skipped) = c1.candidates().await;
    assert_eq!(skipped, 0);
    let mine: Vec<_> = cands.iter().filter(|(c, _)| c.seg.0 == log).collect();
    assert_eq!(mine.len(), 2);
    assert_eq!(mine[0].0.live, HALF as u64, "segment 0 is half live");
    let mut rep = CleanReport::default();
    let copied = c1.copy_out(&[s0], &mut rep).await.expect("copy");
    assert_eq!(rep.copied, HALF as u64);
    assert_eq!(rep.written_segments, 1);
    let c1_log = c1.log().await;
    assert_eq!(list(c1_log).await, vec![0], "the copy is durable");
    drop((c1, copied)); // the crash: the swap never comes
    assert_eq!(read_back(svc()).await.0, model);
    reclaimer.pass().await;
    assert!(
        list(c1_log).await.is_empty(),
        "the orphaned copy is reclaimed"
    );
    assert_eq!(list(log).await, vec![0, 1], "the old segment is still live");
    assert_eq!(read_back(svc()).await.0, model);

    tracing::info!("--- copy, an overwrite lands, then the swap");
    let c2 = Cleaner::new(config.clone(), ct.clone()).with_policy(policy);
    let mut rep = CleanReport::default();
    let copied = c2.copy_out(&[s0], &mut rep).await.expect("copy");
    let (bytes, entries, pieces) = write(
        writer.next_segment(),
        vec![(0, pattern(4)[..4096].to_vec())],
    );
    let s2 = writer.append(bytes).await.expect("append");
    commit(s2, entries, pieces, &mut model).await;
    c2.swap(copied, &mut rep).await.expect("swap");
    assert_eq!((rep.moved, rep.skipped), (HALF as u64 - 4096, 4096));
    let c2_log = c2.log().await;
    let (data, ext) = read_back(svc()).await;
    assert_eq!(data, model);
    assert!(
        ext.iter().any(|e| e.ptr.seg.log == c2_log),
        "the extents point at the cleaner's copy: {ext:?}"
    );
    assert!(ext
        .iter()
        .all(|e| e.ptr.seg.segment != s0.segment || e.ptr.seg.log != log));

    tracing::info!("--- the owner crashes after the swap: the swap was durable");
    {
        let (i, id) = net.mgr_ids[k];
        let old = net.handlers[k].0.lock().expect("lock").take().expect("svc");
        old.kill();
        let s = Service::start(config.clone(), id, net.transports[i].clone())
            .await
            .expect("restart");
        s.wait_ready().await;
        *net.handlers[k].0.lock().expect("lock") = Some(s);
    }
    let (data, ext) = read_back(svc()).await;
    assert_eq!(data, model);
    assert!(ext.iter().any(|e| e.ptr.seg.log == c2_log));

    tracing::info!("--- the cleaned segment is reclaimed; the copy is not");
    // The restarted owner seals nothing during its grace period and reclaim window (4
    // leases of 5 s): bounded at 40 s.
    let mut gone = false;
    for _ in 0..80 {
        reclaimer.pass().await;
        if !list(log).await.contains(&0) {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(gone, "segment 0 of the client log was reclaimed");
    assert_eq!(list(c2_log).await, vec![0]);
    assert_eq!(read_back(svc()).await.0, model);
    net.stop();
}

/// Segment ids are never reused across a manager restart: a failed append left one
/// fragment of the next segment (fewer than k: not listed), and the restarted manager
/// continues its log above it instead of writing that id again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_manager_writes_above_a_failed_appends_leftovers() {
    use proto::msg::{FragmentMeta, CODEC_RS_GF8_RSE};
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
    let create = |svc: Arc<Service>, name: &'static str| async move {
        let req = R::Create {
            parent: ROOT,
            name: name.into(),
            node: NewNode::File,
            perm: 0o644,
            umask: 0,
            caller: USER,
            session: None,
        };
        // A restarted manager refuses changes in its grace period: bounded retries.
        let mut last = None;
        for _ in 0..150 {
            match svc.handle(None, req.clone()).await {
                Ok(A::Attr(_)) => {
                    last = None;
                    break;
                }
                other => last = Some(format!("{other:?}")),
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        assert_eq!(last, None, "create {name}");
        svc.handle(None, R::Sync).await.expect("sync");
    };
    create(svc.clone(), "before").await;
    svc.kill();
    let log = LogId::manager(id);
    let reader = storage::LogReader::new(net.config.clone(), net.transports[i].clone());
    let last = reader
        .list_segments(log)
        .await
        .expect("list")
        .last()
        .expect("a segment")
        .segment;
    let burnt = proto::ids::SegmentId(last.0 + 1);
    let payload = Bytes::from(vec![9u8; 100]);
    let meta = FragmentMeta {
        codec: CODEC_RS_GF8_RSE,
        k: 4,
        m: 2,
        segment_len: 400,
        crc32c: proto::crc32c(&payload),
        nodes: 0,
    };
    let storage_addr = net.config.storage_nodes()[0].address;
    storage::StorageClient::new(net.transports[i].clone())
        .put_fragment(
            storage_addr,
            FragmentId {
                log,
                segment: burnt,
                index: 0,
            },
            meta,
            payload,
        )
        .await
        .expect("put the leftover");
    let svc = Service::start(net.config.clone(), id, net.transports[i].clone())
        .await
        .expect("start");
    *net.handlers[k].0.lock().expect("lock") = Some(svc.clone());
    svc.wait_ready().await;
    create(svc.clone(), "after").await;
    let (listed, seen) = reader.list_segments_seen(log).await.expect("list");
    assert!(
        listed.iter().all(|s| s.segment != burnt),
        "segment {burnt} was written again: {listed:?}"
    );
    assert!(listed.last().expect("segments").segment > burnt);
    assert!(seen > Some(burnt));
    net.stop();
}
