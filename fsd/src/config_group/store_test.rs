//! The config group's durable state on its own: the log, vote and committed index survive a
//! reopen; a torn last record (a crash during an append) is dropped and damage before it is
//! an error; purge and snapshot bound the log and survive a reopen; apply is compare-and-set.

use super::*;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::log_id;
use openraft::{Entry, EntryPayload, LogId, Membership, RaftLogReader, RaftSnapshotBuilder, Vote};
use proto::config::ErasureConfig;
use std::collections::BTreeSet;
use std::io::Write;

fn file(epoch: u64) -> ClusterFile {
    let mut f = ClusterConfig::generate("t", 1, 3, ErasureConfig { data: 1, parity: 0 }, 7000)
        .expect("generate");
    f.epoch = epoch;
    f
}

fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(1, 2, index),
        payload,
    }
}

/// Membership at 0, a blank at 1, the seed (epoch 1) at 2, then `Replace` to epochs 2, 3...
fn entries(upto: u64) -> Vec<Entry<TypeConfig>> {
    let members: BTreeSet<RaftId> = [2, 3, 4].into();
    let mut v = vec![
        entry(
            0,
            EntryPayload::Membership(Membership::new(vec![members], None)),
        ),
        entry(1, EntryPayload::Blank),
        entry(2, EntryPayload::Normal(Command::Seed { file: file(1) })),
    ];
    for i in 3..=upto {
        let epoch = i - 1;
        v.push(entry(
            i,
            EntryPayload::Normal(Command::Replace {
                expect_epoch: epoch - 1,
                file: file(epoch),
            }),
        ));
    }
    v.truncate(upto as usize + 1);
    v
}

async fn all(log: &mut LogStore) -> Vec<Entry<TypeConfig>> {
    log.try_get_log_entries(0..).await.expect("read")
}

fn ids(v: &[Entry<TypeConfig>]) -> Vec<LogId<RaftId>> {
    v.iter().map(|e| e.log_id).collect()
}

fn append_raw(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open");
    f.write_all(bytes).expect("write");
}

#[tokio::test]
async fn vote_log_and_committed_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vote = Vote::new_committed(3, 2);
    {
        let mut log = LogStore::open(dir.path()).expect("open");
        assert!(log.is_pristine());
        log.save_vote(&vote).await.expect("vote");
        log.blocking_append(entries(4)).await.expect("append");
        log.save_committed(Some(log_id(1, 2, 3)))
            .await
            .expect("committed");
        log.truncate(log_id(1, 2, 4)).await.expect("truncate");
    }
    let mut log = LogStore::open(dir.path()).expect("reopen");
    assert!(!log.is_pristine());
    assert_eq!(log.read_vote().await.expect("vote"), Some(vote));
    assert_eq!(
        log.read_committed().await.expect("committed"),
        Some(log_id(1, 2, 3))
    );
    let got = all(&mut log).await;
    assert_eq!(ids(&got), ids(&entries(3)), "entry 4 was truncated");
    match &got[3].payload {
        EntryPayload::Normal(Command::Replace { file: f, .. }) => assert_eq!(f, &file(2)),
        other => panic!("entry 3: {other:?}"),
    }
    let st = log.get_log_state().await.expect("state");
    assert_eq!(st.last_log_id, Some(log_id(1, 2, 3)));
    assert_eq!(st.last_purged_log_id, None);
}

#[tokio::test]
async fn a_torn_last_record_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log");
    {
        let mut log = LogStore::open(dir.path()).expect("open");
        log.blocking_append(entries(2)).await.expect("append");
    }
    let whole = std::fs::metadata(&path).expect("meta").len();
    let next = postcard::to_allocvec(&entries(3)[3]).expect("encode");
    // The record of entry 3 as `log_store` writes it (`LogRecord::Entry` is variant 0).
    let mut rec = vec![0u8];
    rec.extend_from_slice(&next);
    let framed = record::frame(&rec);
    for (what, tail) in [
        ("a cut-short record", framed[..framed.len() - 3].to_vec()),
        ("a cut-short length", framed[..3].to_vec()),
        ("a zero-filled tail", vec![0u8; 40]),
        ("a last record failing its checksum", {
            let mut t = framed.clone();
            let n = t.len();
            t[n - 1] ^= 0xff;
            t
        }),
    ] {
        append_raw(&path, &tail);
        let mut log = LogStore::open(dir.path()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(ids(&all(&mut log).await), ids(&entries(2)), "{what}");
        assert_eq!(
            std::fs::metadata(&path).expect("meta").len(),
            whole,
            "{what}: the torn bytes are cut off"
        );
    }
    // Appends after the cut land on a record boundary.
    let mut log = LogStore::open(dir.path()).expect("open");
    log.blocking_append(entries(3).split_off(3))
        .await
        .expect("append");
    drop(log);
    let mut log = LogStore::open(dir.path()).expect("reopen");
    assert_eq!(ids(&all(&mut log).await), ids(&entries(3)));
}

#[tokio::test]
async fn damage_before_the_last_record_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log");
    {
        let mut log = LogStore::open(dir.path()).expect("open");
        log.blocking_append(entries(3)).await.expect("append");
    }
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[12 + 8 + 2] ^= 0x55; // inside the first record's payload
    std::fs::write(&path, &bytes).expect("write");
    let Err(err) = LogStore::open(dir.path()) else {
        panic!("a damaged first record must not open")
    };
    let msg = err.to_string();
    assert!(msg.contains("corrupt at byte 12"), "{msg}");
    assert!(msg.contains("records follow it"), "{msg}");

    // A vote file is replaced atomically: any damage is corruption too.
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut log = LogStore::open(dir.path()).expect("open");
        log.save_vote(&Vote::new(1, 2)).await.expect("vote");
    }
    let vote = dir.path().join("vote");
    let len = std::fs::metadata(&vote).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&vote)
        .and_then(|f| f.set_len(len - 1))
        .expect("cut");
    assert!(LogStore::open(dir.path()).is_err());
}

#[tokio::test]
async fn purge_and_snapshot_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log");
    let snap_id;
    {
        let mut log = LogStore::open(dir.path()).expect("open");
        let mut sm = StateMachine::open(dir.path()).expect("sm");
        log.blocking_append(entries(6)).await.expect("append");
        let results = sm.apply(entries(6)).await.expect("apply");
        assert_eq!(results[2..], [Ok(1), Ok(2), Ok(3), Ok(4), Ok(5)]);
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("snapshot");
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, 2, 6)));
        snap_id = snap.meta.snapshot_id.clone();
        let before = std::fs::metadata(&path).expect("meta").len();
        log.purge(log_id(1, 2, 4)).await.expect("purge");
        let after = std::fs::metadata(&path).expect("meta").len();
        assert!(after < before, "purge rewrote the log: {before} -> {after}");
        assert_eq!(log.file_bytes(), after);
        // Appends continue on the rewritten file.
        log.blocking_append(vec![entry(7, EntryPayload::Blank)])
            .await
            .expect("append");
    }
    let mut log = LogStore::open(dir.path()).expect("reopen");
    let st = log.get_log_state().await.expect("state");
    assert_eq!(st.last_purged_log_id, Some(log_id(1, 2, 4)));
    assert_eq!(st.last_log_id, Some(log_id(1, 2, 7)));
    let got = all(&mut log).await;
    assert_eq!(
        ids(&got),
        vec![log_id(1, 2, 5), log_id(1, 2, 6), log_id(1, 2, 7)]
    );
    let mut sm = StateMachine::open(dir.path()).expect("sm reopen");
    let (applied, membership) = sm.applied_state().await.expect("applied");
    assert_eq!(applied, Some(log_id(1, 2, 6)));
    assert_eq!(
        membership.membership().voter_ids().collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    let cur = sm
        .get_current_snapshot()
        .await
        .expect("snap")
        .expect("some");
    assert_eq!(cur.meta.snapshot_id, snap_id);
    assert_eq!(sm.subscribe().borrow().file, Some(file(5)));

    // A purge past everything leaves an empty log that still knows where it stands.
    log.purge(log_id(1, 2, 7)).await.expect("purge all");
    drop(log);
    let mut log = LogStore::open(dir.path()).expect("reopen");
    let st = log.get_log_state().await.expect("state");
    assert_eq!(st.last_purged_log_id, Some(log_id(1, 2, 7)));
    assert_eq!(st.last_log_id, Some(log_id(1, 2, 7)));
    assert!(all(&mut log).await.is_empty());
}

#[tokio::test]
async fn apply_is_compare_and_set_on_the_epoch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = StateMachine::open(dir.path()).expect("sm");
    let cmds = [
        Command::Replace {
            expect_epoch: 0,
            file: file(1),
        },
        Command::Seed { file: file(7) },
        Command::Seed { file: file(8) },
        Command::Replace {
            expect_epoch: 6,
            file: file(7),
        },
        Command::Replace {
            expect_epoch: 7,
            file: file(9),
        },
        Command::Replace {
            expect_epoch: 7,
            file: file(8),
        },
    ];
    let batch: Vec<_> = cmds
        .into_iter()
        .enumerate()
        .map(|(i, c)| entry(i as u64 + 1, EntryPayload::Normal(c)))
        .collect();
    let r = sm.apply(batch).await.expect("apply");
    assert_eq!(
        r,
        vec![
            Err(Refused::NotSeeded),
            Ok(7),
            Err(Refused::AlreadySeeded { current: 7 }),
            Err(Refused::StaleEpoch {
                current: 7,
                expected: 6
            }),
            Err(Refused::NotNextEpoch {
                current: 7,
                proposed: 9
            }),
            Ok(8),
        ]
    );
    assert_eq!(sm.subscribe().borrow().file, Some(file(8)));
}

/// Fresh stores in a temporary directory for openraft's conformance suite.
struct SuiteBuilder;

impl openraft::testing::StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir>
    for SuiteBuilder
{
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), openraft::StorageError<RaftId>> {
        let err = |e: &dyn std::fmt::Display| -> openraft::StorageError<RaftId> {
            openraft::StorageIOError::<RaftId>::write(openraft::AnyError::error(e.to_string()))
                .into()
        };
        let dir = tempfile::tempdir().map_err(|e| err(&e))?;
        let log = LogStore::open(dir.path()).map_err(|e| err(&e))?;
        let sm = StateMachine::open(dir.path()).map_err(|e| err(&e))?;
        Ok((dir, log, sm))
    }
}

/// openraft's own storage conformance suite (log states, purge, truncate, membership from
/// log and state machine, initial state, re-applying committed entries, snapshots) against
/// the real files.
#[test]
fn openraft_storage_suite() {
    openraft::testing::Suite::test_all(SuiteBuilder).expect("openraft storage suite");
}
