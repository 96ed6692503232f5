//! The config group's durable raft log, vote and committed index, under the member's
//! `state_dir/config-group/`.
//!
//! - `log`: an append file (`record`) of `LogRecord`s. `append` writes the entries and
//!   fdatasyncs before it tells openraft they are durable; `truncate` appends a `Truncate`
//!   marker (fsynced); `purge` rewrites the file with what stays (a `Purged` marker and the
//!   later entries), so the file is bounded by the snapshot policy. Replay applies the
//!   records in order.
//! - `vote` and `committed`: single-record files replaced atomically and durably.
//!
//! A copy of the log is kept in memory (the config group's log is small: the snapshot
//! policy purges it), so readers never touch the disk. Blocking file I/O runs on tokio's
//! blocking pool. Must not: interpret commands (the state machine does).

use super::record::{self, AppendFile, RecordError};
use super::RaftId;
use super::TypeConfig;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

const LOG_MAGIC: &[u8; 8] = b"SHCGLOG\0";
const VOTE_MAGIC: &[u8; 8] = b"SHCGVOTE";
const COMMITTED_MAGIC: &[u8; 8] = b"SHCGCOMM";
const LOG_FILE: &str = "log";
const VOTE_FILE: &str = "vote";
const COMMITTED_FILE: &str = "committed";

/// One record of the log file.
#[derive(Debug, Serialize, Deserialize)]
enum LogRecord {
    Entry(Box<Entry<TypeConfig>>),
    /// Entries from index `since` on are gone (a new leader overwrote them).
    Truncate {
        since: u64,
    },
    /// Entries up to and including `upto` are gone (they are in the snapshot).
    Purged {
        upto: LogId<RaftId>,
    },
}

#[derive(Debug, Default)]
struct Mem {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<RaftId>>,
    vote: Option<Vote<RaftId>>,
    committed: Option<LogId<RaftId>>,
}

impl Mem {
    fn replay(&mut self, rec: LogRecord) {
        match rec {
            LogRecord::Entry(e) => {
                self.entries.insert(e.log_id.index, *e);
            }
            LogRecord::Truncate { since } => {
                self.entries.split_off(&since);
            }
            LogRecord::Purged { upto } => self.purge(upto),
        }
    }

    fn purge(&mut self, upto: LogId<RaftId>) {
        self.entries = self.entries.split_off(&(upto.index + 1));
        if self.last_purged.is_none_or(|p| p < upto) {
            self.last_purged = Some(upto);
        }
    }
}

/// The file and the memory have their own locks: readers take only the memory's, briefly,
/// and never wait for an fsync.
struct Shared {
    dir: PathBuf,
    file: Mutex<AppendFile>,
    mem: Mutex<Mem>,
}

impl Shared {
    fn mem(&self) -> MutexGuard<'_, Mem> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn file(&self) -> MutexGuard<'_, AppendFile> {
        self.file.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The log storage openraft drives (and its readers, which share the same memory).
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<RaftId> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn encode(rec: &LogRecord) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(rec)
}

/// An encoding failure as a store error (never expected: every record type encodes).
fn encode_err(dir: &Path) -> impl FnOnce(postcard::Error) -> RecordError + '_ {
    move |e| RecordError::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::other(format!("cannot encode a log record: {e}")),
    }
}

impl LogStore {
    /// Opens (creating) the log of the group directory `dir`, replaying it; a torn last
    /// record is dropped, any other damage is an error.
    pub fn open(dir: &Path) -> Result<LogStore, RecordError> {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|source| RecordError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            // The new directory's own entry must survive a crash too.
            if let Some(parent) = dir.parent() {
                record::sync_dir(parent)?;
            }
        }
        let path = dir.join(LOG_FILE);
        let (file, payloads) = AppendFile::open(&path, LOG_MAGIC)?;
        let mut mem = Mem::default();
        for (i, p) in payloads.iter().enumerate() {
            let rec: LogRecord = postcard::from_bytes(p).map_err(|e| RecordError::Corrupt {
                path: path.clone(),
                offset: 0,
                what: format!("record {i} passes its checksum but does not decode: {e}"),
            })?;
            mem.replay(rec);
        }
        let decode = |name: &str, magic| -> Result<Option<Vec<u8>>, RecordError> {
            record::read_single(&dir.join(name), magic)
        };
        let corrupt = |name: &str, e: postcard::Error| RecordError::Corrupt {
            path: dir.join(name),
            offset: 0,
            what: format!("does not decode: {e}"),
        };
        if let Some(b) = decode(VOTE_FILE, VOTE_MAGIC)? {
            mem.vote = Some(postcard::from_bytes(&b).map_err(|e| corrupt(VOTE_FILE, e))?);
        }
        if let Some(b) = decode(COMMITTED_FILE, COMMITTED_MAGIC)? {
            mem.committed = postcard::from_bytes(&b).map_err(|e| corrupt(COMMITTED_FILE, e))?;
        }
        Ok(LogStore {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                file: Mutex::new(file),
                mem: Mutex::new(mem),
            }),
        })
    }

    /// Whether this member never voted nor held a log entry (a fresh member, which the
    /// group may initialize).
    pub fn is_pristine(&self) -> bool {
        let m = self.shared.mem();
        m.vote.is_none() && m.entries.is_empty() && m.last_purged.is_none()
    }

    /// Bytes of the log file (tests: the file shrinks on purge).
    pub fn file_bytes(&self) -> u64 {
        self.shared.file().bytes()
    }

    /// Runs `f` on the store with blocking I/O allowed (tokio's blocking pool).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> Result<T, RecordError> + Send + 'static,
    ) -> Result<T, RecordError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(|e| RecordError::Io {
                path: PathBuf::from("config-group"),
                source: std::io::Error::other(format!("blocking task failed: {e}")),
            })?
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<RaftId>> {
        Ok(self
            .shared
            .mem()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<RaftId>> {
        let m = self.shared.mem();
        let last_purged_log_id = m.last_purged;
        let last_log_id = m
            .entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftId>) -> Result<(), StorageError<RaftId>> {
        let vote = *vote;
        let bytes = postcard::to_allocvec(&vote)
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        self.blocking(move |s| {
            record::write_single(&s.dir, VOTE_FILE, VOTE_MAGIC, &bytes)?;
            s.mem().vote = Some(vote);
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<RaftId>>, StorageError<RaftId>> {
        Ok(self.shared.mem().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<RaftId>>,
    ) -> Result<(), StorageError<RaftId>> {
        let bytes = postcard::to_allocvec(&committed).map_err(write_err)?;
        self.blocking(move |s| {
            record::write_single(&s.dir, COMMITTED_FILE, COMMITTED_MAGIC, &bytes)?;
            s.mem().committed = committed;
            Ok(())
        })
        .await
        .map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<RaftId>>, StorageError<RaftId>> {
        Ok(self.shared.mem().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<RaftId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let mut framed = Vec::new();
        let mut recs = Vec::with_capacity(entries.len());
        for e in entries {
            let rec = LogRecord::Entry(Box::new(e));
            framed.extend_from_slice(&record::frame(&encode(&rec).map_err(write_err)?));
            recs.push(rec);
        }
        // The callback only after the bytes are on disk: openraft counts them durable then.
        let r = self
            .blocking(move |s| {
                s.file().append(&framed)?;
                let mut m = s.mem();
                for rec in recs {
                    m.replay(rec);
                }
                Ok(())
            })
            .await
            .map_err(write_err);
        match &r {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        r
    }

    async fn truncate(&mut self, log_id: LogId<RaftId>) -> Result<(), StorageError<RaftId>> {
        let rec = LogRecord::Truncate {
            since: log_id.index,
        };
        let framed = record::frame(&encode(&rec).map_err(write_err)?);
        tracing::info!(since = %log_id, "config group log truncated (entries overwritten by a new leader)");
        self.blocking(move |s| {
            s.file().append(&framed)?;
            s.mem().replay(rec);
            Ok(())
        })
        .await
        .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<RaftId>) -> Result<(), StorageError<RaftId>> {
        self.blocking(move |s| {
            // What stays: the purge point (never moving back) and the later entries.
            let payloads = {
                let m = s.mem();
                let upto = m.last_purged.filter(|p| *p > log_id).unwrap_or(log_id);
                let bad = encode_err(&s.dir);
                let mut out = vec![encode(&LogRecord::Purged { upto }).map_err(bad)?];
                for e in m.entries.range(upto.index + 1..).map(|(_, e)| e) {
                    let rec = LogRecord::Entry(Box::new(e.clone()));
                    out.push(encode(&rec).map_err(encode_err(&s.dir))?);
                }
                out
            };
            s.file().rewrite(LOG_MAGIC, &payloads)?;
            s.mem().purge(log_id);
            Ok(())
        })
        .await
        .map_err(write_err)?;
        tracing::debug!(upto = %log_id, "config group log purged");
        Ok(())
    }
}
