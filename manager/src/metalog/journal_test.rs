//! Tests of the journal's limits and of recovery that never guesses, over `MemLog`: a state
//! many segments large checkpoints in chunks and comes back; an oversize change is refused;
//! a crash at every write keeps every synced change; unreadable segments, lost checkpoints
//! and LSN gaps stop recovery with an error naming the segment; a log that makes no
//! progress fails `Sync` with EIO within the configured bound. Plus an `#[ignore]`d
//! measurement of checkpoint and recovery times.

use crate::checkpoint::legacy_checkpoint_bytes;
use crate::error::code::*;
use crate::journal::{CheckpointSource, Journal, JournalLimits, LogBackend, MemLog, PIECE_BUDGET};
use crate::record::{encode_records, Logged, Record};
use crate::recovery::recover;
use crate::service::Service;
use crate::service_test::{create_file, errno_of, Cluster};
use crate::state::MetaState;
use bytes::Bytes;
use proto::ids::{InodeId, Lsn, SegmentId};
use proto::msg::{Attr, Caller, ManagerRequest as R, ManagerResponse as A, NewNode, RemoteError};
use proto::transport::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage::segment::EntryKind;

const USER: Caller = Caller { uid: 1, gid: 1 };
const ROOT: InodeId = InodeId::ROOT;

fn value(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ seed) as u8)
        .collect()
}

async fn set_xattr(c: &Cluster, ino: InodeId, name: &str, v: Vec<u8>) -> Result<A, RemoteError> {
    c.call(R::SetXattr {
        ino,
        name: name.into(),
        value: v,
        flags: 0,
        caller: USER,
    })
    .await
}

async fn get_xattr(c: &Cluster, ino: InodeId, name: &str) -> Result<Vec<u8>, RemoteError> {
    match c
        .call(R::GetXattr {
            ino,
            name: name.into(),
        })
        .await?
    {
        A::Xattr(v) => Ok(v),
        other => panic!("getxattr answered {other:?}"),
    }
}

async fn counts(svc: &Service) -> u64 {
    match svc.handle(None, R::Counts).await {
        Ok(A::Counts(c)) => c.inodes,
        other => panic!("counts answered {other:?}"),
    }
}

/// Every entry of a directory, paging through ReadDir.
async fn entry_count(c: &Cluster, dir: InodeId) -> usize {
    let mut n = 0;
    loop {
        match c
            .call(R::ReadDir {
                ino: dir,
                offset: n as u64,
                max: 10_000,
            })
            .await
        {
            Ok(A::Entries(e)) if e.is_empty() => return n,
            Ok(A::Entries(e)) => n += e.len(),
            other => panic!("readdir answered {other:?}"),
        }
    }
}

/// Starts manager `i` of `c` and returns it with the outcome of its recovery.
async fn start_raw(
    c: &Cluster,
    i: usize,
) -> (Arc<Service>, Result<(), Arc<crate::error::ManagerError>>) {
    let svc = Service::start_with(
        c.config.clone(),
        c.node(i),
        Arc::new(c.logs[i].clone()),
        c.peers.clone(),
        c.callbacks.clone(),
    )
    .await
    .expect("start");
    c.peers.register(&svc);
    let r = svc.wait_recovered().await;
    (svc, r)
}

/// Largest entry in any segment of `log`, and the number of checkpoint chunk entries.
fn chunk_stats(log: &MemLog) -> (usize, usize) {
    let (mut largest, mut chunks) = (0, 0);
    for id in log.segment_ids() {
        for (kind, b) in log.entries(id).unwrap_or_default() {
            largest = largest.max(b.len());
            if kind == EntryKind::Checkpoint && crate::checkpoint::is_chunk(&b) {
                chunks += 1;
            }
        }
    }
    (largest, chunks)
}

struct Sample {
    dir: InodeId,
    name: String,
    attr: Attr,
    xattr: Option<Vec<u8>>,
}

async fn big_state_round_trip(files: usize) {
    let mut c = Cluster::start_config(|m| {
        m.segment_bytes = 1 << 20;
        m.checkpoint_records = 200_000;
    })
    .await;
    let mut dirs = Vec::new();
    for i in 0..4 {
        dirs.push(c.mkdir(ROOT, &format!("d{i}")).await);
    }
    tracing::info!("--- {files} files and some 64 KiB xattrs");
    let started = Instant::now();
    let mut samples = Vec::new();
    for i in 0..files {
        let dir = dirs[i % dirs.len()].ino;
        let name = format!("file-{i}");
        let attr = c.touch(dir, &name).await;
        if i % 4999 == 0 {
            let xattr = if samples.len() % 2 == 0 {
                let v = value(i, 65_536);
                set_xattr(&c, attr.ino, "user.big", v.clone())
                    .await
                    .expect("setxattr");
                Some(v)
            } else {
                None
            };
            samples.push(Sample {
                dir,
                name,
                attr,
                xattr,
            });
        }
    }
    c.sync_all().await;
    eprintln!("created {files} files in {:?}", started.elapsed());
    let before = [counts(&c.managers[0]).await, counts(&c.managers[1]).await];
    assert_eq!(before[0] + before[1], files as u64 + 5);
    let entries: Vec<usize> = {
        let mut v = Vec::new();
        for d in &dirs {
            v.push(entry_count(&c, d.ino).await);
        }
        v
    };
    assert_eq!(entries.iter().sum::<usize>(), files);

    tracing::info!("--- clean restart: checkpoint in chunks, then load it");
    for (i, inodes) in before.iter().enumerate() {
        let t = Instant::now();
        c.managers[i].shutdown().await.expect("shutdown");
        let shut = t.elapsed();
        let t = Instant::now();
        c.managers[i] = c.start_manager(i).await;
        eprintln!(
            "manager {i}: {inodes} inodes, shutdown checkpoint {shut:?}, recovery {:?}",
            t.elapsed()
        );
    }
    verify(&c, &samples, &dirs, &entries, before).await;
    for log in &c.logs {
        let (largest, _) = chunk_stats(log);
        assert!(largest <= 1 << 20, "an entry of {largest} bytes");
    }
    let (_, chunks) = chunk_stats(&c.logs[0]);
    let (_, chunks1) = chunk_stats(&c.logs[1]);
    assert!(
        chunks.max(chunks1) >= 4,
        "the checkpoint of a state several segments large takes several chunks ({chunks}, {chunks1})"
    );

    tracing::info!("--- changes after the checkpoint, then a crash: checkpoint + roll forward");
    let extra = c.touch(dirs[0].ino, "after-checkpoint").await;
    c.sync_all().await;
    let mut after = before;
    after[c
        .managers
        .iter()
        .position(|m| m.node() == c.config.slot_owner(extra.ino.slot()))
        .expect("owner")] += 1;
    c.restart(0, false).await;
    c.restart(1, false).await;
    assert_eq!(
        c.lookup(dirs[0].ino, "after-checkpoint")
            .await
            .expect("kept")
            .ino,
        extra.ino
    );
    let mut entries = entries;
    entries[0] += 1;
    verify(&c, &samples, &dirs, &entries, after).await;
}

async fn verify(
    c: &Cluster,
    samples: &[Sample],
    dirs: &[Attr],
    entries: &[usize],
    counts_: [u64; 2],
) {
    assert_eq!(
        [counts(&c.managers[0]).await, counts(&c.managers[1]).await],
        counts_
    );
    for (d, n) in dirs.iter().zip(entries) {
        assert_eq!(entry_count(c, d.ino).await, *n);
    }
    for s in samples {
        let a = c.lookup(s.dir, &s.name).await.expect("sample survives");
        assert_eq!(a.ino, s.attr.ino);
        match &s.xattr {
            Some(v) => {
                assert_eq!(&get_xattr(c, a.ino, "user.big").await.expect("xattr"), v)
            }
            None => assert_eq!(
                errno_of(
                    c.call(R::GetXattr {
                        ino: a.ino,
                        name: "user.big".into()
                    })
                    .await
                ),
                ENODATA
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_several_times_the_segment_size_checkpoints_and_recovers() {
    big_state_round_trip(200_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a million inodes: about 10 s with --release, minutes in a debug build"]
async fn a_million_inodes_checkpoint_and_recover() {
    big_state_round_trip(1_000_000).await;
}

#[tokio::test]
async fn oversize_change_is_refused_and_the_journal_keeps_working() {
    let mut c = Cluster::start_config(|m| m.segment_bytes = 32 << 10).await;
    let f = c.touch(ROOT, "f").await;
    let refused = set_xattr(&c, f.ino, "user.big", value(1, 60_000)).await;
    match &refused {
        Err(RemoteError::Errno { code, message }) => {
            assert_eq!(*code, E2BIG);
            assert!(message.contains("segment"), "{message}");
        }
        other => panic!("expected E2BIG, got {other:?}"),
    }
    assert_eq!(
        errno_of(
            c.call(R::GetXattr {
                ino: f.ino,
                name: "user.big".into()
            })
            .await
        ),
        ENODATA,
        "a refused change is not applied"
    );
    let small = value(2, 8_000);
    set_xattr(&c, f.ino, "user.small", small.clone())
        .await
        .expect("a change that fits is accepted");
    let g = c.touch(ROOT, "g").await;
    c.sync_all().await;
    c.restart(0, false).await;
    assert_eq!(
        get_xattr(&c, f.ino, "user.small").await.expect("kept"),
        small
    );
    assert_eq!(c.lookup(ROOT, "g").await.expect("kept").ino, g.ino);
    // Batches are cut by bytes: many changes that fit one by one but not together.
    for i in 0..12 {
        set_xattr(&c, g.ino, &format!("user.x{i}"), value(i, 8_000))
            .await
            .expect("fits");
    }
    c.sync_all().await;
    c.restart(0, true).await;
    for i in 0..12 {
        assert_eq!(
            get_xattr(&c, g.ino, &format!("user.x{i}"))
                .await
                .expect("kept"),
            value(i, 8_000)
        );
    }
    let (largest, _) = chunk_stats(&c.logs[0]);
    assert!(largest <= 32 << 10, "an entry of {largest} bytes");
}

/// Sets up a manager whose checkpoints take several chunks, arms a crash after `crash`
/// writes (if any), then creates files with a `Sync` after each until one fails. Returns
/// the writes the run made after setup and the names whose `Sync` succeeded.
async fn crash_run(crash: Option<(usize, bool)>) -> usize {
    let mut c = Cluster::start_config(|m| {
        m.segment_bytes = 16 << 10;
        m.checkpoint_records = 10;
        m.journal_stall_ms = 100;
    })
    .await;
    let x = c.touch(ROOT, "x").await;
    for i in 0..2 {
        set_xattr(&c, x.ino, &format!("user.x{i}"), value(i, 7_000))
            .await
            .expect("xattr");
    }
    c.sync_all().await;
    let base = c.logs[0].writes();
    if let Some((after, lands)) = crash {
        c.logs[0].crash_after(after, lands);
    }
    let mut synced = Vec::new();
    for i in 0..14 {
        let name = format!("n{i}");
        let created = c
            .call(R::Create {
                parent: ROOT,
                name: name.clone(),
                node: NewNode::File,
                perm: 0o644,
                umask: 0,
                caller: USER,
                session: None,
            })
            .await;
        let Ok(A::Attr(a)) = created else { break };
        if c.managers[0].handle(None, R::Sync).await.is_err() {
            break;
        }
        synced.push((name, a.ino));
    }
    let writes = c.logs[0].writes() - base;
    c.managers[0].kill();
    c.logs[0].heal();
    let (svc, recovered) = start_raw(&c, 0).await;
    if let Err(e) = recovered {
        panic!("crash {crash:?}: recovery refused: {e}");
    }
    c.managers[0] = svc;
    for (name, ino) in &synced {
        assert_eq!(
            c.lookup(ROOT, name).await.map(|a| a.ino).ok(),
            Some(*ino),
            "crash {crash:?}: synced {name} is gone"
        );
    }
    for i in 0..2 {
        assert_eq!(
            get_xattr(&c, x.ino, &format!("user.x{i}")).await.ok(),
            Some(value(i, 7_000)),
            "crash {crash:?}: xattr lost"
        );
    }
    if crash.is_none() {
        assert_eq!(synced.len(), 14);
    }
    writes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_write_keeps_every_synced_change() {
    let writes = crash_run(None).await;
    assert!(
        writes > 20,
        "the run appends batches, chunks, manifests and deletes ({writes})"
    );
    for after in 0..=writes {
        for lands in [false, true] {
            crash_run(Some((after, lands))).await;
        }
    }
}

#[tokio::test]
async fn unreadable_middle_segment_stops_recovery_naming_it() {
    let mut c = Cluster::start(100_000).await;
    for i in 0..6 {
        c.touch(ROOT, &format!("f{i}")).await;
        c.managers[0].handle(None, R::Sync).await.expect("sync");
    }
    let ids = c.logs[0].segment_ids();
    assert!(ids.len() >= 5, "{ids:?}");
    let mid = ids[ids.len() / 2];
    c.logs[0].make_unreadable(mid);
    c.managers[0].kill();
    let (svc, r) = start_raw(&c, 0).await;
    let err = r.expect_err("recovery must refuse").to_string();
    assert!(err.contains(&format!("seg{mid} ")), "{err}");
    assert!(err.contains("cannot be read"), "{err}");
    match svc.handle(None, R::GetAttr { ino: ROOT }).await {
        Err(RemoteError::Unavailable(m)) => assert!(m.contains("recovery refused"), "{m}"),
        other => panic!("a manager that refused recovery answered {other:?}"),
    }
    svc.kill();
    // Once the segment reads again, everything is back.
    c.logs[0].make_readable(mid);
    c.managers[0] = c.start_manager(0).await;
    assert_eq!(c.names(ROOT).await.len(), 6);
}

#[tokio::test]
async fn lost_checkpoints_never_come_back_as_an_empty_namespace() {
    let mut c = Cluster::start(10).await;
    for i in 0..30 {
        c.touch(ROOT, &format!("f{i}")).await;
        c.managers[0].handle(None, R::Sync).await.expect("sync");
    }
    c.managers[0].shutdown().await.expect("shutdown");
    let checkpoints: Vec<u64> = c.logs[0]
        .kinds()
        .into_iter()
        .filter(|(_, k)| k.contains(&EntryKind::Checkpoint))
        .map(|(s, _)| s)
        .collect();
    assert!(
        c.logs[0].segment_ids().first() > Some(&0),
        "older segments were deleted"
    );
    tracing::info!("--- a chunk of the newest checkpoint unreadable: the one before is used");
    let newest_chunk = c.logs[0]
        .segment_ids()
        .into_iter()
        .rfind(|s| {
            c.logs[0]
                .entries(*s)
                .unwrap_or_default()
                .iter()
                .any(|(k, b)| *k == EntryKind::Checkpoint && crate::checkpoint::is_chunk(b))
        })
        .expect("chunks");
    c.logs[0].make_unreadable(newest_chunk);
    c.managers[0] = c.start_manager(0).await;
    assert_eq!(c.names(ROOT).await.len(), 30);
    c.managers[0].kill();
    tracing::info!("--- every checkpoint unreadable: refused, never empty");
    for s in &checkpoints {
        c.logs[0].make_unreadable(*s);
    }
    let (svc, r) = start_raw(&c, 0).await;
    let err = r.expect_err("recovery must refuse").to_string();
    assert!(err.contains("seg"), "{err}");
    svc.kill();
}

#[tokio::test]
async fn storage_unavailable_fails_sync_with_eio_within_the_bound() {
    let mut c = Cluster::start_config(|m| m.journal_stall_ms = 300).await;
    c.logs[0].fail_next_appends(usize::MAX);
    let pending = c.touch(ROOT, "pending").await;
    let t = Instant::now();
    let r = c.managers[0].handle(None, R::Sync).await;
    let took = t.elapsed();
    assert_eq!(errno_of(r), EIO);
    assert!(took < Duration::from_secs(3), "Sync took {took:?}");
    tracing::info!("--- while stalled, new mutations fail with EIO");
    let deadline = Instant::now() + Duration::from_secs(5);
    for i in 0.. {
        let r = c
            .call(R::Create {
                parent: ROOT,
                name: format!("maybe-refused-{i}"),
                node: NewNode::File,
                perm: 0o644,
                umask: 0,
                caller: USER,
                session: None,
            })
            .await;
        if let Err(RemoteError::Errno { code, .. }) = &r {
            assert_eq!(*code, EIO);
            break;
        }
        assert!(Instant::now() < deadline, "mutations still accepted: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!("--- storage back: the queued change becomes durable");
    c.logs[0].fail_next_appends(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.managers[0].handle(None, R::Sync).await.is_err() {
        assert!(Instant::now() < deadline, "the journal never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.touch(ROOT, "after").await;
    c.sync_all().await;
    c.restart(0, false).await;
    assert_eq!(
        c.lookup(ROOT, "pending").await.expect("kept").ino,
        pending.ino
    );
    assert!(c.lookup(ROOT, "after").await.is_ok());
}

fn batch(lsns: std::ops::RangeInclusive<u64>) -> Bytes {
    let recs: Vec<Logged> = lsns
        .map(|lsn| Logged {
            lsn: Lsn(lsn),
            rec: Record::TxDone {
                tx: proto::ids::TxId {
                    coordinator: proto::ids::NodeId(1),
                    seq: lsn,
                },
            },
        })
        .collect();
    Bytes::from(encode_records(&recs))
}

#[tokio::test]
async fn lsn_gaps_stop_recovery_and_failed_appends_do_not() {
    let log = MemLog::new();
    log.append(EntryKind::MetaRecords, batch(1..=3))
        .await
        .expect("append");
    // A failed append whose records were re-sent: redundant, passed over.
    log.append(EntryKind::MetaRecords, batch(4..=5))
        .await
        .expect("append");
    log.make_unreadable(1);
    log.append(EntryKind::MetaRecords, batch(4..=6))
        .await
        .expect("append");
    let r = recover(&log).await.expect("recovers");
    assert_eq!((r.state.last_lsn(), r.segments_skipped), (Lsn(6), 1));
    // A batch that skips LSNs: refused, naming the segment.
    log.append(EntryKind::MetaRecords, batch(9..=9))
        .await
        .expect("append");
    let err = recover(&log).await.expect_err("gap").to_string();
    assert!(err.contains("seg3") && err.contains("LSN 7"), "{err}");
}

#[tokio::test]
async fn version_1_checkpoints_still_recover() {
    let log = MemLog::new();
    let mut st = MetaState::new();
    st.commit(st.plan_root(proto::msg::Timestamp::default(), 0, 0));
    log.append(EntryKind::MetaRecords, batch(1..=1))
        .await
        .expect("append");
    log.append(
        EntryKind::Checkpoint,
        legacy_checkpoint_bytes(&st, SegmentId(2)),
    )
    .await
    .expect("append");
    log.append(EntryKind::MetaRecords, batch(2..=4))
        .await
        .expect("append");
    let r = recover(&log).await.expect("recovers");
    assert_eq!(r.checkpoint, Some((Lsn(1), 1)));
    assert_eq!(r.state.last_lsn(), Lsn(4));
    assert!(r.state.inode(ROOT).is_some());
}

/// A checkpoint source over a plain state (for the measurement below).
struct Fixed(tokio::sync::Mutex<MetaState>);

impl CheckpointSource for Fixed {
    fn inode_piece(
        &self,
        after: Option<InodeId>,
        budget: usize,
    ) -> BoxFuture<'_, Option<crate::checkpoint::InodePiece>> {
        Box::pin(async move {
            let st = self.0.lock().await;
            Some(crate::checkpoint::inode_piece(&st, after, budget))
        })
    }
}

/// A state of `n` files in directories of 1000, built through the planner.
fn state_with(n: usize) -> MetaState {
    use crate::plan::{Ctx, Plan};
    let me = proto::ids::NodeId(1);
    let owners = vec![me; proto::ids::SLOT_COUNT as usize];
    let mut st = MetaState::new();
    st.commit(st.plan_root(proto::msg::Timestamp::default(), 0, 0));
    let ctx = Ctx {
        me,
        owners: &owners,
        now: proto::msg::Timestamp { secs: 1, nanos: 0 },
    };
    let mut dir = ROOT;
    for i in 0..n {
        let (node, name) = if i % 1000 == 0 {
            (NewNode::Dir, format!("d{i}"))
        } else {
            (NewNode::File, format!("f{i}"))
        };
        let parent = if i % 1000 == 0 { ROOT } else { dir };
        let Ok(Plan::Local { records, reply }) =
            st.plan_create(&ctx, parent, &name, &node, 0o644, 0, USER, None)
        else {
            panic!("create {name}");
        };
        st.commit(records);
        if let crate::plan::Reply::Attr(ino) = reply {
            if i % 1000 == 0 {
                dir = ino;
            }
        }
    }
    st
}

async fn measure(n: usize) {
    let st = state_with(n);
    let (inodes, lsn) = (st.inode_count(), st.last_lsn());
    let head = crate::checkpoint::head_piece(&st);
    let log = MemLog::new();
    let limits = JournalLimits::default();
    let j = Journal::new(Duration::from_millis(1), lsn, limits);
    let committer = tokio::spawn(j.clone().run(
        Arc::new(log.clone()),
        Arc::new(Fixed(tokio::sync::Mutex::new(st))),
        proto::worker::Workers::default().register("journal"),
    ));
    let t = Instant::now();
    j.push_checkpoint(head, lsn);
    j.wait_checkpoint(lsn).await.expect("checkpoint");
    let write = t.elapsed();
    j.close();
    committer.await.expect("committer");
    let (largest, chunks) = chunk_stats(&log);
    let t = Instant::now();
    let r = recover(&log).await.expect("recovers");
    let read = t.elapsed();
    assert_eq!(r.state.inode_count(), inodes);
    eprintln!(
        "{inodes} inodes: checkpoint {chunks} chunks (largest entry {largest} B, pieces of {PIECE_BUDGET} B) written and read back in {write:?}; recovery {read:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: cargo test --release -p manager -- --ignored --nocapture checkpoint_and_recovery_times"]
async fn checkpoint_and_recovery_times() {
    measure(100_000).await;
    measure(1_000_000).await;
}

/// A hand-over stops a manager while it serves (`Service::shutdown`): every create it
/// answered is in the log the next incarnation recovers, and every create it did not make
/// is refused `Unavailable` (clients retry it there), never answered and then lost.
/// Sixteen creators race each of twenty shutdowns; a request that passed the entry check
/// just before the stop waits behind it (for the gate or the state lock) and must be
/// refused when it gets there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_answers_no_change_it_does_not_make_durable() {
    let mut c = Cluster::start(100_000).await;
    let mut made = Vec::new();
    for round in 0..20 {
        let svc = c.managers[0].clone();
        let mut creators = Vec::new();
        for w in 0..16 {
            let svc = svc.clone();
            creators.push(tokio::spawn(async move {
                let mut made = Vec::new();
                for i in 0.. {
                    let name = format!("r{round}-w{w}-{i}");
                    match svc.handle(None, create_file(ROOT, &name)).await {
                        Ok(_) => made.push(name),
                        Err(RemoteError::Unavailable(_)) => return made,
                        Err(e) => panic!("a create answered {e:?} during the shutdown"),
                    }
                }
                made
            }));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        svc.shutdown().await.expect("shutdown");
        for t in creators {
            made.extend(t.await.expect("creator"));
        }
        c.managers[0] = c.start_manager(0).await;
    }
    assert!(made.len() > 20, "the creators made {} files", made.len());
    let names: std::collections::BTreeSet<String> = c.names(ROOT).await.into_iter().collect();
    let lost: Vec<&String> = made.iter().filter(|n| !names.contains(*n)).collect();
    assert!(
        lost.is_empty(),
        "answered creates the next incarnation does not know: {lost:?}"
    );
}
