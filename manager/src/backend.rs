//! Where the manager's journal goes: `LogBackend` (one segment per append, in the manager's
//! own log), `StorageLog` over the striped log of the storage servers, and `MemLog` in
//! memory with fault knobs for tests (failed appends, unreadable segments, crashes after N
//! writes). Must not: interpret the entries (that is `journal` and `recovery`).

use crate::error::ManagerError;
use bytes::Bytes;
use proto::config::ClusterConfig;
use proto::ids::{LogId, SegmentAddr, SegmentId};
use proto::transport::{BoxFuture, Transport};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use storage::log::{LogReader, LogWriter};
use storage::segment::{EntryKind, SegmentBuilder, SegmentView};

/// The manager's log, one segment per append.
pub trait LogBackend: Send + Sync + 'static {
    /// Appends one segment holding one entry; returns once durable.
    fn append(
        &self,
        kind: EntryKind,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<SegmentAddr, ManagerError>>;
    /// Every segment of the log, sorted by id.
    fn list(&self) -> BoxFuture<'_, Result<Vec<SegmentAddr>, ManagerError>>;
    /// The entries of one segment.
    fn read(
        &self,
        seg: SegmentAddr,
    ) -> BoxFuture<'_, Result<Vec<(EntryKind, Bytes)>, ManagerError>>;
    fn delete(&self, seg: SegmentAddr) -> BoxFuture<'_, Result<(), ManagerError>>;
    /// Where appends continue (set once recovery knows the log's end).
    fn set_next(&self, next: SegmentId);
    /// The id the next append will use.
    fn next_segment(&self) -> SegmentId;
}

/// The manager's log in the striped, erasure-coded log of the storage servers.
pub struct StorageLog {
    config: Arc<ClusterConfig>,
    transport: Arc<Transport>,
    log: LogId,
    writer: tokio::sync::Mutex<Option<LogWriter>>,
    reader: OnceLock<LogReader>,
    next: Mutex<SegmentId>,
}

impl StorageLog {
    pub fn new(config: Arc<ClusterConfig>, transport: Arc<Transport>, log: LogId) -> StorageLog {
        StorageLog {
            config,
            transport,
            log,
            writer: tokio::sync::Mutex::new(None),
            reader: OnceLock::new(),
            next: Mutex::new(SegmentId(0)),
        }
    }

    fn reader(&self) -> &LogReader {
        self.reader
            .get_or_init(|| LogReader::new(self.config.clone(), self.transport.clone()))
    }
}

impl LogBackend for StorageLog {
    fn append(
        &self,
        kind: EntryKind,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<SegmentAddr, ManagerError>> {
        Box::pin(async move {
            let mut guard = self.writer.lock().await;
            let writer = match guard.as_mut() {
                Some(w) => w,
                None => {
                    let next = *self.next.lock().unwrap_or_else(|e| e.into_inner());
                    guard.insert(LogWriter::new(
                        self.config.clone(),
                        self.transport.clone(),
                        self.log,
                        next,
                    ))
                }
            };
            let seg = writer.next_segment();
            let mut b = SegmentBuilder::new(self.log, seg);
            b.push(kind, payload);
            let (bytes, _) = b.finish().map_err(|e| ManagerError::Log(e.into()))?;
            let addr = writer.append(bytes).await?;
            *self.next.lock().unwrap_or_else(|e| e.into_inner()) = writer.next_segment();
            Ok(addr)
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<SegmentAddr>, ManagerError>> {
        Box::pin(async move {
            let mut v = self.reader().list_segments(self.log).await?;
            v.sort_by_key(|s| s.segment);
            Ok(v)
        })
    }

    fn read(
        &self,
        seg: SegmentAddr,
    ) -> BoxFuture<'_, Result<Vec<(EntryKind, Bytes)>, ManagerError>> {
        Box::pin(async move {
            let bytes = self.reader().read_segment(seg).await?;
            let view = SegmentView::parse(bytes).map_err(|e| ManagerError::Log(e.into()))?;
            Ok((0..view.entries.len())
                .map(|i| (view.entries[i].kind, view.entry_bytes(i)))
                .collect())
        })
    }

    fn delete(&self, seg: SegmentAddr) -> BoxFuture<'_, Result<(), ManagerError>> {
        Box::pin(async move { Ok(self.reader().delete_segment(seg).await?) })
    }

    fn set_next(&self, next: SegmentId) {
        *self.next.lock().unwrap_or_else(|e| e.into_inner()) = next;
        if let Ok(mut w) = self.writer.try_lock() {
            *w = None;
        }
    }

    fn next_segment(&self) -> SegmentId {
        *self.next.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct MemInner {
    segments: BTreeMap<u64, Vec<(EntryKind, Bytes)>>,
    unreadable: BTreeSet<u64>,
    next: u64,
    /// Appends and deletes done (successful or not).
    writes: usize,
    crash: Option<Crash>,
}

/// A simulated crash: `after` more writes succeed, then the process "dies": the next write
/// lands or not (`lands`) and reports failure, and every later one fails without effect.
#[derive(Clone, Copy)]
struct Crash {
    after: usize,
    lands: bool,
}

/// What a write does under a simulated crash.
enum Fate {
    Ok,
    LandAndFail,
    Fail,
}

/// An in-memory log with fault knobs, for tests: clones share the same segments, so a
/// "restarted" manager sees what the previous one wrote.
#[derive(Clone, Default)]
pub struct MemLog {
    inner: Arc<Mutex<MemInner>>,
    fail_appends: Arc<AtomicUsize>,
    unlisted: Arc<AtomicUsize>,
}

impl MemLog {
    pub fn new() -> MemLog {
        MemLog::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn addr(seg: u64) -> SegmentAddr {
        SegmentAddr {
            log: LogId(0),
            segment: SegmentId(seg),
            len: 0,
            k: 1,
            m: 0,
            nodes: 0,
        }
    }

    /// The next `n` appends fail (their segment ids are burnt, as with the real log).
    pub fn fail_next_appends(&self, n: usize) {
        self.fail_appends.store(n, Ordering::SeqCst);
    }

    /// The next `n` listings fail (storage unreachable).
    pub fn fail_next_lists(&self, n: usize) {
        self.unlisted.store(n, Ordering::SeqCst);
    }

    /// Makes a segment unreadable (e.g. a torn write at the tail).
    pub fn make_unreadable(&self, seg: u64) {
        self.lock().unreadable.insert(seg);
    }

    /// Makes a segment readable again (its storage servers are back).
    pub fn make_readable(&self, seg: u64) {
        self.lock().unreadable.remove(&seg);
    }

    /// Ids of the segments present.
    pub fn segment_ids(&self) -> Vec<u64> {
        self.lock().segments.keys().copied().collect()
    }

    /// Kinds of the entries of each segment present.
    pub fn kinds(&self) -> Vec<(u64, Vec<EntryKind>)> {
        self.lock()
            .segments
            .iter()
            .map(|(s, e)| (*s, e.iter().map(|(k, _)| *k).collect()))
            .collect()
    }

    /// Drops every segment from `seg` on (a crash that lost them before they were acked).
    pub fn truncate_from(&self, seg: u64) {
        self.lock().segments.retain(|s, _| *s < seg);
    }

    /// Simulates a crash at a write: `after` more appends/deletes succeed; the next one
    /// lands (when `lands`) or not, and fails; every later write fails without effect
    /// until `heal`.
    pub fn crash_after(&self, after: usize, lands: bool) {
        self.lock().crash = Some(Crash { after, lands });
    }

    /// Ends a simulated crash (the "restarted" process writes normally).
    pub fn heal(&self) {
        self.lock().crash = None;
    }

    /// Appends and deletes attempted so far.
    pub fn writes(&self) -> usize {
        self.lock().writes
    }

    /// The entries of a segment (for tests that inspect what was written).
    pub fn entries(&self, seg: u64) -> Option<Vec<(EntryKind, Bytes)>> {
        self.lock().segments.get(&seg).cloned()
    }
}

impl MemInner {
    fn fate(&mut self) -> Fate {
        self.writes += 1;
        match &mut self.crash {
            None => Fate::Ok,
            Some(c) if c.after > 0 => {
                c.after -= 1;
                Fate::Ok
            }
            Some(c) if c.lands => {
                c.lands = false;
                Fate::LandAndFail
            }
            Some(_) => Fate::Fail,
        }
    }
}

fn take_one(a: &AtomicUsize) -> bool {
    a.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl LogBackend for MemLog {
    fn append(
        &self,
        kind: EntryKind,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<SegmentAddr, ManagerError>> {
        Box::pin(async move {
            let mut g = self.lock();
            let seg = g.next;
            g.next += 1;
            if take_one(&self.fail_appends) {
                return Err(ManagerError::Backend(format!(
                    "injected append failure of seg{seg}"
                )));
            }
            match g.fate() {
                Fate::Ok => {}
                Fate::LandAndFail => {
                    g.segments.insert(seg, vec![(kind, payload)]);
                    return Err(ManagerError::Backend(format!(
                        "injected crash after seg{seg} landed"
                    )));
                }
                Fate::Fail => {
                    return Err(ManagerError::Backend(format!(
                        "injected crash before seg{seg}"
                    )))
                }
            }
            g.segments.insert(seg, vec![(kind, payload)]);
            Ok(MemLog::addr(seg))
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<SegmentAddr>, ManagerError>> {
        Box::pin(async move {
            if take_one(&self.unlisted) {
                return Err(ManagerError::Backend(
                    "injected: storage unreachable".into(),
                ));
            }
            Ok(self
                .lock()
                .segments
                .keys()
                .map(|s| MemLog::addr(*s))
                .collect())
        })
    }

    fn read(
        &self,
        seg: SegmentAddr,
    ) -> BoxFuture<'_, Result<Vec<(EntryKind, Bytes)>, ManagerError>> {
        Box::pin(async move {
            let g = self.lock();
            if g.unreadable.contains(&seg.segment.0) {
                return Err(ManagerError::Backend(format!(
                    "injected: seg{} unreadable",
                    seg.segment.0
                )));
            }
            g.segments
                .get(&seg.segment.0)
                .cloned()
                .ok_or_else(|| ManagerError::Backend(format!("no seg{}", seg.segment.0)))
        })
    }

    fn delete(&self, seg: SegmentAddr) -> BoxFuture<'_, Result<(), ManagerError>> {
        Box::pin(async move {
            let mut g = self.lock();
            match g.fate() {
                Fate::Ok => {}
                Fate::LandAndFail => {
                    g.segments.remove(&seg.segment.0);
                    return Err(ManagerError::Backend(format!(
                        "injected crash after deleting seg{}",
                        seg.segment.0
                    )));
                }
                Fate::Fail => {
                    return Err(ManagerError::Backend(format!(
                        "injected crash before deleting seg{}",
                        seg.segment.0
                    )))
                }
            }
            g.segments.remove(&seg.segment.0);
            Ok(())
        })
    }

    fn set_next(&self, next: SegmentId) {
        self.lock().next = next.0;
    }

    fn next_segment(&self) -> SegmentId {
        SegmentId(self.lock().next)
    }
}
