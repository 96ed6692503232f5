//! The config group's state machine: the committed cluster config (`ClusterFile`, whose
//! `epoch` is the config epoch) and the raft membership, applied from committed entries, and
//! its snapshots.
//!
//! The state lives in memory and is rebuilt at start from the last snapshot (the file
//! `snapshot`, written durably before openraft learns of it, so a log purged up to it is
//! never needed again) and the committed log entries openraft re-applies. Applying is pure
//! compare-and-set on the epoch: it never does I/O, and a refused command changes nothing.
//! Must not: decide who may propose (the leader does), or touch the log files.

use super::record::{self, RecordError};
use super::RaftId;
use super::{ApplyResult, Command, Refused, TypeConfig};
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, StorageError,
    StorageIOError, StoredMembership,
};
use proto::config::ClusterFile;
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

const SNAPSHOT_MAGIC: &[u8; 8] = b"SHCGSNAP";
const SNAPSHOT_FILE: &str = "snapshot";

/// What the group has agreed on, as of `last_applied`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    pub last_applied: Option<LogId<RaftId>>,
    pub membership: StoredMembership<RaftId, BasicNode>,
    /// The committed cluster config; `None` until the first leader seeds it from its
    /// `cluster.toml`.
    #[serde(with = "super::toml_file::opt")]
    pub file: Option<ClusterFile>,
}

impl GroupState {
    /// The epoch of the committed config (`None` before the seed).
    pub fn epoch(&self) -> Option<u64> {
        self.file.as_ref().map(|f| f.epoch)
    }

    /// Applies one command: compare-and-set on the epoch.
    fn apply_command(&mut self, cmd: Command) -> ApplyResult {
        match (cmd, &self.file) {
            (Command::Seed { file }, None) => {
                let epoch = file.epoch;
                self.file = Some(file);
                Ok(epoch)
            }
            (Command::Seed { .. }, Some(cur)) => Err(Refused::AlreadySeeded { current: cur.epoch }),
            (Command::Replace { .. }, None) => Err(Refused::NotSeeded),
            (Command::Replace { expect_epoch, file }, Some(cur)) => {
                if cur.epoch != expect_epoch {
                    Err(Refused::StaleEpoch {
                        current: cur.epoch,
                        expected: expect_epoch,
                    })
                } else if Some(file.epoch) != expect_epoch.checked_add(1) {
                    Err(Refused::NotNextEpoch {
                        current: cur.epoch,
                        proposed: file.epoch,
                    })
                } else {
                    let epoch = file.epoch;
                    self.file = Some(file);
                    Ok(epoch)
                }
            }
        }
    }
}

/// A snapshot as kept on disk and handed to openraft.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<RaftId, BasicNode>,
    /// The postcard encoding of the `GroupState` as of `meta.last_log_id`.
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

impl StoredSnapshot {
    fn to_openraft(&self) -> Snapshot<TypeConfig> {
        Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(self.data.clone())),
        }
    }
}

fn io_err(e: impl std::error::Error + 'static) -> StorageError<RaftId> {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

fn snapshot_err(e: impl std::error::Error + 'static) -> StorageError<RaftId> {
    StorageIOError::write_snapshot(None, AnyError::new(&e)).into()
}

/// Writes the snapshot durably (blocking I/O off the runtime threads).
async fn persist(dir: PathBuf, snap: &StoredSnapshot) -> Result<(), StorageError<RaftId>> {
    let bytes = postcard::to_allocvec(snap).map_err(snapshot_err)?;
    tokio::task::spawn_blocking(move || {
        record::write_single(&dir, SNAPSHOT_FILE, SNAPSHOT_MAGIC, &bytes)
    })
    .await
    .map_err(io_err)?
    .map_err(snapshot_err)
}

/// The state machine openraft drives.
pub struct StateMachine {
    dir: PathBuf,
    state: GroupState,
    /// The latest snapshot, shared with the builders.
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    /// The applied state, for readers of the group (`ConfigGroup::current`).
    published: watch::Sender<Arc<GroupState>>,
}

impl StateMachine {
    /// Opens the state machine of the group directory `dir`: the last snapshot, if any.
    pub fn open(dir: &Path) -> Result<StateMachine, RecordError> {
        let path = dir.join(SNAPSHOT_FILE);
        let (state, current) = match record::read_single(&path, SNAPSHOT_MAGIC)? {
            None => (GroupState::default(), None),
            Some(bytes) => {
                let corrupt = |what: String| RecordError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    what,
                };
                let snap: StoredSnapshot = postcard::from_bytes(&bytes)
                    .map_err(|e| corrupt(format!("snapshot record does not decode: {e}")))?;
                let state: GroupState = postcard::from_bytes(&snap.data)
                    .map_err(|e| corrupt(format!("snapshot state does not decode: {e}")))?;
                (state, Some(snap))
            }
        };
        let (published, _) = watch::channel(Arc::new(state.clone()));
        Ok(StateMachine {
            dir: dir.to_path_buf(),
            state,
            current: Arc::new(Mutex::new(current)),
            published,
        })
    }

    /// Whether nothing was ever applied or installed here.
    pub fn is_pristine(&self) -> bool {
        self.state.last_applied.is_none()
    }

    /// Follows the applied state.
    pub fn subscribe(&self) -> watch::Receiver<Arc<GroupState>> {
        self.published.subscribe()
    }

    fn publish(&self) {
        self.published.send_replace(Arc::new(self.state.clone()));
    }
}

/// Builds a snapshot of the state as of the builder's creation.
pub struct SnapshotBuilder {
    dir: PathBuf,
    state: GroupState,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<RaftId>> {
        let data = postcard::to_allocvec(&self.state).map_err(snapshot_err)?;
        let id = match &self.state.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, proto::crc32c(&data)),
            None => format!("none-{}", proto::crc32c(&data)),
        };
        let snap = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: self.state.last_applied,
                last_membership: self.state.membership.clone(),
                snapshot_id: id,
            },
            data,
        };
        // Durable before openraft may purge the log up to it.
        persist(self.dir.clone(), &snap).await?;
        tracing::info!(snapshot = %snap.meta.snapshot_id, epoch = ?self.state.epoch(), "config group snapshot written");
        let out = snap.to_openraft();
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(snap);
        Ok(out)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<RaftId>>, StoredMembership<RaftId, BasicNode>), StorageError<RaftId>>
    {
        Ok((self.state.last_applied, self.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResult>, StorageError<RaftId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for e in entries {
            self.state.last_applied = Some(e.log_id);
            let current = self.state.epoch().unwrap_or(0);
            out.push(match e.payload {
                EntryPayload::Blank => Ok(current),
                EntryPayload::Membership(m) => {
                    self.state.membership = StoredMembership::new(Some(e.log_id), m);
                    Ok(current)
                }
                EntryPayload::Normal(cmd) => {
                    let r = self.state.apply_command(cmd);
                    match &r {
                        Ok(epoch) => tracing::info!(epoch, log = %e.log_id, "config group applied a new cluster config"),
                        Err(why) => tracing::info!(log = %e.log_id, "config group refused a proposal: {why}"),
                    }
                    r
                }
            });
        }
        self.publish();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            dir: self.dir.clone(),
            state: self.state.clone(),
            current: self.current.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<RaftId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<RaftId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<RaftId>> {
        let data = snapshot.into_inner();
        let state: GroupState = postcard::from_bytes(&data).map_err(snapshot_err)?;
        if state.last_applied != meta.last_log_id {
            return Err(snapshot_err(std::io::Error::other(format!(
                "snapshot {} claims {:?} but holds the state of {:?}",
                meta.snapshot_id, meta.last_log_id, state.last_applied
            ))));
        }
        let snap = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        persist(self.dir.clone(), &snap).await?;
        tracing::info!(snapshot = %meta.snapshot_id, epoch = ?state.epoch(), "config group installed a snapshot from the leader");
        self.state = state;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(snap);
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<RaftId>> {
        let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        Ok(cur.as_ref().map(StoredSnapshot::to_openraft))
    }
}
