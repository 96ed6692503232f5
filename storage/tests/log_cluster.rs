//! In-process cluster: 6 real storage servers on their own mTLS QUIC endpoints (loopback,
//! port 0), a 4+2 log writer and reader, and faults: corrupt fragment files, servers shut
//! down, a server restarted on its data directory.

use bytes::Bytes;
use proto::config::{ClusterConfig, ErasureConfig};
use proto::ids::{FragmentId, LogId, LogPtr, SegmentAddr, SegmentId};
use proto::tls::{write_pem, CertAuthority, Identity};
use proto::transport::Transport;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use storage::segment::{EntryKind, SegmentBuilder, SegmentView};
use storage::stripe::stripe_group;
use storage::testing::{corrupt_fragment_file, pattern};
use storage::{LogError, LogReader, LogWriter, Server, ServerHandler, StorageClient};

struct Node {
    name: String,
    dir: PathBuf,
    addr: SocketAddr,
    transport: Arc<Transport>,
    serve: tokio::task::JoinHandle<()>,
}

struct Cluster {
    _tmp: tempfile::TempDir,
    tls: PathBuf,
    ca: CertAuthority,
    config: Arc<ClusterConfig>,
    nodes: Vec<Node>,
    client: Arc<Transport>,
}

fn identity(tls: &Path, ca: &CertAuthority, name: &str) -> Identity {
    let (cert, key) = ca.issue(name).expect("issue");
    let (c, k) = (
        tls.join(format!("{name}.pem")),
        tls.join(format!("{name}.key")),
    );
    write_pem(&c, &cert, false).expect("cert");
    write_pem(&k, &key, true).expect("key");
    Identity::load(&tls.join("ca.pem"), &c, &k).expect("identity")
}

async fn start(
    tls: &Path,
    ca: &CertAuthority,
    name: &str,
    dir: &Path,
    addr: SocketAddr,
) -> (Arc<Transport>, tokio::task::JoinHandle<()>) {
    let server = Server::open(dir).await.expect("open server");
    let transport = Transport::bind(addr, &identity(tls, ca, name), true).expect("bind");
    let serve = transport.serve(Arc::new(ServerHandler {
        server,
        name: name.to_string(),
    }));
    (transport, serve)
}

impl Cluster {
    async fn start(storage: usize) -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let tls = tmp.path().join("tls");
        std::fs::create_dir_all(&tls).expect("tls dir");
        let ca = CertAuthority::generate("test").expect("ca");
        write_pem(&tls.join("ca.pem"), &ca.cert_pem, false).expect("ca pem");
        let mut nodes = Vec::new();
        for i in 1..=storage {
            let name = format!("storage-{i}");
            let dir = tmp.path().join(&name);
            let (transport, serve) =
                start(&tls, &ca, &name, &dir, "127.0.0.1:0".parse().expect("addr")).await;
            let addr = transport.local_addr().expect("local addr");
            nodes.push(Node {
                name,
                dir,
                addr,
                transport,
                serve,
            });
        }
        let mut file =
            ClusterConfig::generate("test", storage, 1, ErasureConfig { data: 4, parity: 2 }, 1)
                .expect("generate");
        for (entry, node) in file.nodes.iter_mut().zip(&nodes) {
            assert_eq!(entry.name, node.name);
            entry.address = node.addr;
        }
        // The manager is never started; port 7 on loopback is only a distinct address.
        file.nodes[storage].address = "127.0.0.1:7".parse().expect("addr");
        let config = Arc::new(ClusterConfig::from_file(tmp.path(), file).expect("config"));
        let client = Transport::bind(
            "127.0.0.1:0".parse().expect("addr"),
            &identity(&tls, &ca, "client"),
            false,
        )
        .expect("client");
        Cluster {
            _tmp: tmp,
            tls,
            ca,
            config,
            nodes,
            client,
        }
    }

    /// A writer of `log` from its first segment, through the test's client endpoint.
    fn writer(&self, log: LogId) -> LogWriter {
        LogWriter::new(self.config.clone(), self.client.clone(), log, SegmentId(0))
    }

    /// A reader through the test's client endpoint.
    fn reader(&self) -> LogReader {
        LogReader::new(self.config.clone(), self.client.clone())
    }

    /// Shuts a server down: its endpoint refuses every connection from now on.
    fn stop(&self, i: usize) {
        self.nodes[i].transport.close();
    }

    /// Restarts a stopped server on the same data directory and address.
    async fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.transport.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), node.transport.wait_idle()).await;
        node.serve.abort();
        let (name, dir, addr) = (node.name.clone(), node.dir.clone(), node.addr);
        // The old socket goes away once quinn's driver notices the endpoint is gone.
        let placeholder = Transport::bind(
            "127.0.0.1:0".parse().expect("addr"),
            &identity(&self.tls, &self.ca, "x"),
            false,
        )
        .expect("bind");
        let old = std::mem::replace(&mut node.transport, placeholder);
        drop(old);
        let server = Server::open(&dir).await.expect("reopen server");
        let ident = identity(&self.tls, &self.ca, &name);
        let mut transport = None;
        for _ in 0..100 {
            match Transport::bind(addr, &ident, true) {
                Ok(t) => {
                    transport = Some(t);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let transport = transport.expect("rebind the old address within 2 s");
        node.serve = transport.serve(Arc::new(ServerHandler { server, name }));
        node.transport = transport;
    }

    fn node_of(&self, seg: SegmentAddr, index: u8) -> usize {
        let group = stripe_group(&self.config, seg.log, seg.segment, seg.k, seg.m, seg.nodes)
            .expect("group");
        let addr = group[index as usize].addr;
        self.nodes
            .iter()
            .position(|n| n.addr == addr)
            .expect("node")
    }
}

async fn check_random_ranges(
    reader: &LogReader,
    segs: &[(SegmentAddr, Bytes)],
    rng: &mut rand::rngs::StdRng,
    per_seg: usize,
) {
    for (seg, data) in segs {
        assert_eq!(
            reader.read_segment(*seg).await.expect("read segment"),
            *data,
            "{seg}"
        );
        for _ in 0..per_seg {
            let offset = rng.random_range(0..seg.len);
            let len = rng.random_range(0..=(seg.len - offset).min(3 << 20));
            let got = reader
                .read(LogPtr {
                    seg: *seg,
                    offset,
                    len,
                })
                .await
                .expect("read range");
            assert!(
                got[..] == data[offset as usize..(offset + len) as usize],
                "{seg} {offset}+{len}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn striped_log_survives_faults() {
    let mut cluster = Cluster::start(6).await;
    let log = LogId::client(0x1234);
    let mut writer = cluster.writer(log);
    let reader = cluster.reader();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut segs: Vec<(SegmentAddr, Bytes)> = Vec::new();

    // --- append tiny and multi-MiB segments, read them back
    for (i, size) in [1usize, 3, 5, 4096 * 4 + 1, (3 << 20) + 5, 8 << 20]
        .into_iter()
        .enumerate()
    {
        let data = pattern(i as u64, size);
        let addr = writer.append(data.clone()).await.expect("append");
        assert_eq!(
            (addr.segment, addr.len, addr.k, addr.m),
            (SegmentId(i as u64), size as u32, 4, 2)
        );
        segs.push((addr, data));
    }
    let mut b = SegmentBuilder::new(log, writer.next_segment());
    b.push(EntryKind::MetaRecords, Bytes::from_static(b"records"));
    b.push(EntryKind::Checkpoint, pattern(99, 100_000));
    let (bytes, entries) = b.finish().expect("finish");
    let addr = writer
        .append(bytes.clone())
        .await
        .expect("append built segment");
    let view = SegmentView::parse(reader.read_segment(addr).await.expect("read")).expect("parse");
    assert_eq!(view.entries, entries);
    assert_eq!(view.segment, addr.segment);
    let e = entries[1];
    let entry = reader
        .read(LogPtr {
            seg: addr,
            offset: e.offset,
            len: e.len,
        })
        .await
        .expect("read entry");
    assert_eq!(entry, pattern(99, 100_000));
    segs.push((addr, bytes));
    check_random_ranges(&reader, &segs, &mut rng, 8).await;
    let bad = reader
        .read(LogPtr {
            seg: segs[0].0,
            offset: 0,
            len: 2,
        })
        .await;
    assert!(
        matches!(bad, Err(LogError::Unreadable { .. })),
        "range past the segment: {bad:?}"
    );

    // --- list_segments finds every appended segment
    let listed = reader.list_segments(log).await.expect("list");
    assert_eq!(listed, segs.iter().map(|(a, _)| *a).collect::<Vec<_>>());
    assert!(reader
        .list_segments(LogId(5))
        .await
        .expect("list empty")
        .is_empty());

    // --- a corrupt fragment file: reads still return correct data
    let (big, big_data) = segs[4].clone();
    let victim = cluster.node_of(big, 1);
    let fs = big.len.div_ceil(4);
    let frag = FragmentId {
        log,
        segment: big.segment,
        index: 1,
    };
    corrupt_fragment_file(&cluster.nodes[victim].dir, frag, 1000).expect("corrupt");
    let client = StorageClient::new(cluster.client.clone());
    let direct = client
        .read_range(cluster.nodes[victim].addr, frag, 0, 4096)
        .await;
    assert!(
        direct.as_ref().is_err_and(|e| e.is_corrupt()),
        "server must refuse corrupt bytes: {direct:?}"
    );
    let oob = client
        .read_range(cluster.nodes[victim].addr, frag, u32::MAX, 1)
        .await;
    assert!(
        matches!(
            &oob,
            Err(storage::ClientCallError::Remote(
                proto::msg::RemoteError::Invalid(_)
            ))
        ),
        "out of bounds is a remote Invalid, not unavailability: {oob:?}"
    );
    let stat = client.stat(cluster.nodes[victim].addr).await.expect("stat");
    assert!(stat.fragments >= segs.len() as u64 && stat.used_bytes > 0 && stat.capacity_bytes > 0);
    let ptr = LogPtr {
        seg: big,
        offset: fs - 10,
        len: 5000,
    };
    let got = reader
        .read(ptr)
        .await
        .expect("degraded read of a corrupt fragment");
    assert_eq!(
        got,
        big_data.slice((fs - 10) as usize..(fs - 10 + 5000) as usize)
    );
    check_random_ranges(&reader, &segs[4..5], &mut rng, 8).await;

    // --- two servers down (one holding the corrupt fragment): reads still succeed
    let other = (victim + 3) % 6;
    cluster.stop(victim);
    cluster.stop(other);
    check_random_ranges(&reader, &segs, &mut rng, 4).await;
    let listed = reader.list_segments(log).await.expect("list with 2 down");
    assert_eq!(listed.len(), segs.len());
    // With 4 of 6 servers left (the other two unreachable), a 4+2 append cannot reach
    // k+1 but is accepted with k fragments and no redundancy, and reads back.
    let tight = pattern(50, 1000);
    let addr = writer
        .append(tight.clone())
        .await
        .expect("append with m servers down");
    let got = reader
        .read_segment(addr)
        .await
        .expect("read the no-redundancy segment");
    assert_eq!(got, tight);
    segs.push((addr, tight));
    assert_eq!(
        reader.list_segments(log).await.expect("list").len(),
        segs.len()
    );
    // A third server down: fewer than k fragments, the append fails and its id is burnt.
    let third = (victim + 1) % 6;
    assert!(third != other);
    cluster.stop(third);
    let next = writer.next_segment();
    let r = writer.append(pattern(50, 1001)).await;
    assert!(
        matches!(
            r,
            Err(LogError::NotDurable {
                acked: 3,
                needed: 5,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(writer.next_segment(), SegmentId(next.0 + 1));
    cluster.restart(third).await;
    // The restarted server may take a moment to answer (the client backs off a peer
    // briefly after a refused connection); with two others still down, listing needs it.
    let mut listed = None;
    for _ in 0..50 {
        match reader.list_segments(log).await {
            Ok(l) => {
                listed = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(
        listed.expect("listing within 5 s of the restart").len(),
        segs.len(),
        "failed append is not listed"
    );

    // --- restart one server on its directory: its data is served again
    cluster.restart(other).await;
    let back = cluster.nodes[other].addr;
    let mut served = false;
    for _ in 0..50 {
        match client.list_log(back, log).await {
            Ok(frags) => {
                // It was down while the last segment was written, so it lacks that one.
                assert!(
                    frags.len() >= segs.len() - 1,
                    "restarted server lists its fragments"
                );
                served = true;
                break;
            }
            // The client's transport backs off a peer briefly after a refused connection.
            Err(e) if e.is_unavailable() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("restarted server: {e}"),
        }
    }
    assert!(served, "restarted server answers within 2.5 s");
    // Every segment but the last (written while it was down) has a fragment there.
    for (seg, data) in &segs[..segs.len() - 1] {
        let group = stripe_group(
            &cluster.config,
            seg.log,
            seg.segment,
            seg.k,
            seg.m,
            seg.nodes,
        )
        .expect("group");
        let member = group
            .iter()
            .find(|m| m.addr == back)
            .expect("every stripe uses all 6 nodes");
        let id = FragmentId {
            log,
            segment: seg.segment,
            index: member.index,
        };
        let fs = seg.len.div_ceil(4);
        let bytes = client
            .read_range(back, id, 0, fs)
            .await
            .expect("fragment served after restart");
        if member.index < 4 {
            let start = (member.index as u32 * fs).min(seg.len) as usize;
            let end = ((member.index as u32 + 1) * fs).min(seg.len) as usize;
            assert_eq!(&bytes[..end - start], &data[start..end]);
        }
    }
    // With 5 of 6 up, an append is durable (degraded) and readable.
    let data = pattern(60, 300_000);
    let addr = writer.append(data.clone()).await.expect("degraded append");
    assert_eq!(
        reader
            .read_segment(addr)
            .await
            .expect("read degraded segment"),
        data
    );
    segs.push((addr, data));
    check_random_ranges(&reader, &segs, &mut rng, 2).await;

    // --- delete a segment: it disappears from the listing
    reader.delete_segment(segs[0].0).await.expect("delete");
    let listed = reader.list_segments(log).await.expect("list after delete");
    assert!(!listed.contains(&segs[0].0));
    assert_eq!(listed.len(), segs.len() - 1);
}

/// On real servers: a fragment replaced by a well-formed one holding other bytes passes
/// every storage checksum (a plain read returns wrong bytes), but `read_checked` catches
/// it against the writer's end-to-end checksums and decodes around up to m of them, and
/// fails with `Corrupt` past m. And segment ids are never reused: a failed append's
/// leftover fragment (fewer than k) is not listed, but `list_segments_seen` reports its id
/// so that a writer continuing the log (a restarted manager) starts above it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_fragments_are_outvoted_and_leftover_ids_are_seen() {
    use proto::chunksum::{segment_sums, widen};
    use proto::msg::{FragmentMeta, CODEC_RS_GF8_RSE};
    let cluster = Cluster::start(6).await;
    let log = LogId::client(0x77);
    let mut writer = cluster.writer(log);
    let reader = cluster.reader();
    let client = StorageClient::new(cluster.client.clone());
    let data = pattern(5, (1 << 20) + 333);
    let seg = writer.append(data.clone()).await.expect("append");
    let sums = segment_sums(log, seg.segment, &data);
    let frags = storage::log::encode_fragments(&data, 4, 2).expect("encode");
    // Fragment `victim` gets fragment `source`'s bytes, stored with valid checksums.
    let misplace = |victim: u8, source: usize| {
        let payload = frags[source].clone();
        let meta = FragmentMeta {
            codec: CODEC_RS_GF8_RSE,
            k: 4,
            m: 2,
            segment_len: seg.len,
            crc32c: proto::crc32c(&payload),
            nodes: seg.nodes,
        };
        let id = FragmentId {
            log,
            segment: seg.segment,
            index: victim,
        };
        let addr = cluster.nodes[cluster.node_of(seg, victim)].addr;
        let client = &client;
        async move { client.put_fragment(addr, id, meta, payload).await }
    };
    // A range inside fragment 1 (fragments are 256 KiB + 84 bytes), not chunk aligned.
    let ptr = LogPtr {
        seg,
        offset: 300_001,
        len: 50_000,
    };
    let want = data.slice(300_001..350_001);
    assert_eq!(reader.read_checked(ptr, &sums).await.expect("clean"), want);
    misplace(1, 2).await.expect("put");
    let plain = reader.read(ptr).await.expect("plain read");
    assert_ne!(
        plain, want,
        "a plain read trusts the well-formed wrong fragment"
    );
    assert_eq!(
        reader.read_checked(ptr, &sums).await.expect("one wrong"),
        want
    );
    misplace(3, 0).await.expect("put");
    assert_eq!(
        reader.read_checked(ptr, &sums).await.expect("two wrong"),
        want
    );
    let whole = LogPtr {
        seg,
        offset: 0,
        len: seg.len,
    };
    assert_eq!(widen(whole), whole);
    assert_eq!(
        reader.read_checked(whole, &sums).await.expect("whole"),
        data
    );
    misplace(0, 2).await.expect("put");
    let past_m = reader.read_checked(ptr, &sums).await;
    assert!(
        matches!(past_m, Err(LogError::Corrupt { .. })),
        "three wrong of 4+2: {past_m:?}"
    );

    // --- a leftover fragment of a failed append of segment 1: not listed, but seen
    let left = pattern(6, 100);
    let id = FragmentId {
        log,
        segment: writer.next_segment(),
        index: 0,
    };
    let meta = FragmentMeta {
        codec: CODEC_RS_GF8_RSE,
        k: 4,
        m: 2,
        segment_len: 400,
        crc32c: proto::crc32c(&left),
        nodes: seg.nodes,
    };
    client
        .put_fragment(cluster.nodes[0].addr, id, meta, left)
        .await
        .expect("put leftover");
    let (listed, seen) = reader.list_segments_seen(log).await.expect("list");
    assert_eq!(listed, vec![seg]);
    assert_eq!(seen, Some(SegmentId(1)));
}

/// Several segments of one log in flight at once (`LogWriter::start`, as a client's flush
/// runs them): each gets the next id in the order started, all are durable and read back
/// byte for byte, also the ones in flight while a server is stopped (they are written
/// degraded or around it, never lost), and the parity buffers reused across them never
/// mix two segments' parity (a reconstruct from parity checks that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_in_flight_together_are_each_durable_and_intact() {
    let cluster = Cluster::start(7).await;
    let log = LogId::client(0x99);
    let mut writer = cluster.writer(log);
    let reader = cluster.reader();
    let mut segs: Vec<(SegmentAddr, Bytes)> = Vec::new();
    for round in 0..4u64 {
        if round == 2 {
            cluster.stop(3);
        }
        let datas: Vec<Bytes> = (0..3u64)
            .map(|i| pattern(round * 10 + i, (1 << 20) + (i as usize) * 4099))
            .collect();
        let first = writer.next_segment();
        let tasks: Vec<_> = datas
            .iter()
            .map(|d| tokio::spawn(writer.start(d.clone())))
            .collect();
        for (i, (t, d)) in tasks.into_iter().zip(datas).enumerate() {
            let addr = t.await.expect("task").expect("append");
            assert_eq!(addr.segment, SegmentId(first.0 + i as u64), "round {round}");
            assert_eq!(addr.len as usize, d.len());
            segs.push((addr, d));
        }
    }
    for (addr, data) in &segs {
        let got = reader.read_segment(*addr).await.expect("read back");
        assert!(got == *data, "{} differs", addr.segment);
    }
    // A second server gone (two with the one stopped above): what the stripes held on
    // them is rebuilt from parity.
    cluster.stop(0);
    for (addr, data) in &segs {
        let got = reader.read_segment(*addr).await.expect("read from parity");
        assert!(got == *data, "{} differs when rebuilt", addr.segment);
    }
}

/// Storage nodes added while a reader runs by an older config: segments written over nine
/// servers keep fewer than k fragments on the first six for some stripes. A reader that
/// nobody keeps up to date refuses to list the log rather than list it short (and reads
/// exactly the stripes it can find k fragments of, refusing the others); a followed reader
/// waits for the newer config and lists and reads everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_behind_the_storage_nodes_never_lists_short() {
    use proto::live::LiveConfig;
    let cluster = Cluster::start(9).await;
    let mut nine = cluster.config.file.clone();
    nine.epoch += 1;
    let nine = Arc::new(ClusterConfig::from_file(&cluster.config.dir, nine).expect("nine"));
    let mut six = cluster.config.file.clone();
    six.nodes
        .retain(|n| !["storage-7", "storage-8", "storage-9"].contains(&n.name.as_str()));
    let six = Arc::new(ClusterConfig::from_file(&cluster.config.dir, six).expect("six"));
    assert_eq!(six.storage_nodes().len(), 6);

    let log = LogId::client(0x77);
    let mut writer = LogWriter::new(nine.clone(), cluster.client.clone(), log, SegmentId(0));
    let mut segs = Vec::new();
    for i in 0..12u64 {
        let data = pattern(500 + i, 64 << 10);
        segs.push((writer.append(data.clone()).await.expect("append"), data));
    }
    // Some stripe keeps fewer than k = 4 fragments on the first six servers.
    let short = segs.iter().any(|(a, _)| {
        stripe_group(&nine, log, a.segment, a.k, a.m, a.nodes)
            .expect("group")
            .iter()
            .filter(|m| six.storage_nodes().iter().any(|n| n.id == m.node))
            .count()
            < 4
    });
    assert!(
        short,
        "the test needs a stripe with fewer than k fragments on the old six"
    );

    let stale = LogReader::new(six.clone(), cluster.client.clone());
    match stale.list_segments(log).await {
        Err(LogError::Unreadable { detail, .. }) => {
            assert!(detail.contains("current cluster.toml"), "{detail}")
        }
        other => panic!("a stale reader listed {other:?}"),
    }
    // By what it knows, it reads the stripes with k fragments on the old six exactly and
    // refuses the others: never wrong bytes.
    for (addr, data) in &segs {
        let on_old = stripe_group(&nine, log, addr.segment, addr.k, addr.m, addr.nodes)
            .expect("group")
            .iter()
            .filter(|m| six.storage_nodes().iter().any(|n| n.id == m.node))
            .count();
        match stale.read_segment(*addr).await {
            Ok(got) => assert!(got == *data, "{} differs", addr.segment),
            Err(e) => assert!(
                on_old < 4,
                "{} unreadable with {on_old} on the old six: {e}",
                addr.segment
            ),
        }
    }

    let live = LiveConfig::new(six.clone());
    live.set_followed(true);
    let following = LogReader::following(live.clone(), cluster.client.clone());
    let installer = {
        let (live, nine) = (live.clone(), nine.clone());
        tokio::spawn(async move {
            live.wanted().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            live.install(nine).expect("install");
        })
    };
    let listed = following
        .list_segments(log)
        .await
        .expect("list after following");
    installer.await.expect("installer");
    assert_eq!(
        listed.iter().map(|a| a.segment).collect::<Vec<_>>(),
        segs.iter().map(|(a, _)| a.segment).collect::<Vec<_>>()
    );
    for (addr, data) in &segs {
        let got = following.read_segment(*addr).await.expect("read");
        assert!(got == *data, "{} differs", addr.segment);
    }
}
