//! Recovery of a manager's state from its log, which never guesses: list the segments
//! (waiting while storage is unreachable), scan back from the end to the newest checkpoint
//! that reads back complete (its manifest, every chunk, matching checksums; an incomplete
//! or damaged one falls back to the one before), load it, then replay in order every
//! record batch from the segment where the log stood when the checkpoint started.
//!
//! LSNs must be contiguous from the checkpoint on. A segment that cannot be read or
//! understood is passed over only when the next batch proves it redundant (it continues
//! from the LSN before it: the segment was a failed append whose records were re-sent, or
//! a chunk of an unfinished checkpoint). Any other unreadable segment, any LSN gap, and a
//! log that ends before what the checkpoint includes stop recovery with a `RecoveryError`
//! naming the segment; the manager then does not serve. What a crash can lose is only the
//! unacknowledged tail, which is simply not in the log.
//! The checkpoint formats (chunked, and the legacy whole-state one) are in `checkpoint`.
//! Must not: write to the log.

use crate::checkpoint::{self, CheckpointEntry, Loader, Manifest};
use crate::error::{CheckpointReadError, ManagerError, RecoveryError};
use crate::journal::LogBackend;
use crate::record::{decode_records, Logged, Lsn};
use crate::state::MetaState;
use bytes::Bytes;
use futures::StreamExt;
use proto::ids::{SegmentAddr, SegmentId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use storage::segment::EntryKind;

/// Attempts to read one segment before it counts as unreadable.
const READ_ATTEMPTS: u32 = 3;
/// Segments read at once while recovery scans the log (in order: a scan that stops at a
/// checkpoint reads at most this many segments more than it needs). One at a time, a
/// log of about 10,000 small record segments took 5.8 s to recover in consistency/t56.
const READ_AHEAD: usize = 32;

/// What recovery found.
#[derive(Debug)]
pub struct Recovered {
    pub state: MetaState,
    /// Where the writer continues: one past the highest segment seen.
    pub next_segment: SegmentId,
    /// No segment at all: a brand new log.
    pub empty: bool,
    pub segments_replayed: usize,
    /// Unreadable segments proven redundant by the batches after them.
    pub segments_skipped: usize,
    /// The checkpoint loaded: its LSN and the segment its replay starts from.
    pub checkpoint: Option<(Lsn, u64)>,
}

/// One segment as the replay sees it.
enum Scanned {
    /// Record batches (raw, decoded during the replay).
    Records(Vec<Bytes>),
    /// Nothing to replay (a checkpoint chunk or manifest).
    Nothing,
    /// Could not be read or understood.
    Unreadable(String),
}

async fn read_with_retry(
    backend: &dyn LogBackend,
    seg: SegmentAddr,
) -> Result<Vec<(EntryKind, Bytes)>, ManagerError> {
    let mut attempt = 1;
    loop {
        match backend.read(seg).await {
            Ok(e) => return Ok(e),
            Err(e) => {
                tracing::warn!(segment = %seg.segment, attempt, "cannot read metadata segment: {e}");
                if attempt >= READ_ATTEMPTS {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(50 * attempt as u64)).await;
                attempt += 1;
            }
        }
    }
}

/// A base to replay from.
struct Base {
    state: MetaState,
    first: u64,
    lsn: Lsn,
    covers: Lsn,
    /// Segment of the manifest (or legacy checkpoint).
    at: u64,
    /// Its chunks (already read by `load`).
    chunks: BTreeSet<u64>,
}

/// What one segment holds: records, a checkpoint (manifest or legacy state), or nothing.
enum Found {
    Scanned(Scanned),
    Manifest(Manifest),
    Legacy(Bytes),
}

fn classify(entries: Result<Vec<(EntryKind, Bytes)>, ManagerError>) -> Found {
    let entries = match entries {
        Ok(e) => e,
        Err(e) => return Found::Scanned(Scanned::Unreadable(e.to_string())),
    };
    let mut records = Vec::new();
    for (kind, bytes) in entries {
        match kind {
            EntryKind::MetaRecords => records.push(bytes),
            EntryKind::Checkpoint if checkpoint::is_chunk(&bytes) => {}
            EntryKind::Checkpoint => match checkpoint::decode_checkpoint_entry(&bytes) {
                Ok(CheckpointEntry::Manifest(m)) => return Found::Manifest(m),
                Ok(CheckpointEntry::Legacy) => return Found::Legacy(bytes),
                Err(e) => return Found::Scanned(Scanned::Unreadable(e.to_string())),
            },
            EntryKind::FileData { .. } => {
                return Found::Scanned(Scanned::Unreadable("file data in a manager's log".into()))
            }
        }
    }
    if records.is_empty() {
        Found::Scanned(Scanned::Nothing)
    } else {
        Found::Scanned(Scanned::Records(records))
    }
}

/// Loads the checkpoint of manifest `m` (in segment `at`) from its chunks.
async fn load(
    backend: &dyn LogBackend,
    listed: &BTreeMap<u64, SegmentAddr>,
    m: &Manifest,
) -> Result<MetaState, CheckpointReadError> {
    let mut loader = Loader::new();
    for (index, c) in m.chunks.iter().enumerate() {
        let segment = c.segment;
        let addr = listed
            .get(&segment)
            .ok_or(CheckpointReadError::ChunkMissing(segment))?;
        let entries = read_with_retry(backend, *addr).await.map_err(|e| {
            CheckpointReadError::ChunkUnreadable {
                segment,
                source: Box::new(e),
            }
        })?;
        let Some((EntryKind::Checkpoint, bytes)) = entries.into_iter().next() else {
            return Err(CheckpointReadError::NotAChunk(segment));
        };
        let (lsn, i, data) = checkpoint::decode_chunk(&bytes)
            .map_err(|source| CheckpointReadError::ChunkCodec { segment, source })?;
        if lsn != m.lsn
            || i as usize != index
            || data.len() != c.len as usize
            || proto::crc32c(&data) != c.crc
        {
            return Err(CheckpointReadError::ChunkMismatch(segment));
        }
        let (l, r) = tokio::task::spawn_blocking(move || {
            let r = loader.feed(&data);
            (loader, r)
        })
        .await?;
        loader = l;
        r.map_err(|source| CheckpointReadError::ChunkCodec { segment, source })?;
    }
    Ok(loader.finish(m)?)
}

/// Rebuilds the state from `backend`.
pub async fn recover(backend: &dyn LogBackend) -> Result<Recovered, ManagerError> {
    let mut wait = Duration::from_millis(50);
    let segs = loop {
        match backend.list().await {
            Ok(s) => break s,
            // The storage servers refuse this node's identity (e.g. a manager started with
            // a client's key pair): waiting cannot help, recovery refuses with their reason.
            Err(e @ ManagerError::Log(storage::LogError::Refused { .. })) => return Err(e),
            Err(e) => {
                tracing::warn!("waiting for the storage servers to list the metadata log: {e}; retry in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    };
    let next_segment = SegmentId(segs.last().map(|s| s.segment.0 + 1).unwrap_or(0));
    if segs.is_empty() {
        return Ok(Recovered {
            state: MetaState::new(),
            next_segment,
            empty: true,
            segments_replayed: 0,
            segments_skipped: 0,
            checkpoint: None,
        });
    }
    let log = segs[0].log;
    let listed: BTreeMap<u64, SegmentAddr> = segs.iter().map(|s| (s.segment.0, *s)).collect();

    // Back from the end to the newest checkpoint that loads.
    let mut scanned: BTreeMap<u64, Scanned> = BTreeMap::new();
    // Segments some readable manifest names as its chunks: they hold no records, even
    // when they cannot be read.
    let mut known_chunks: BTreeSet<u64> = BTreeSet::new();
    let mut base: Option<Base> = None;
    let mut reads = futures::stream::iter(segs.iter().rev().copied())
        .map(|seg| async move { (seg, read_with_retry(backend, seg).await) })
        .buffered(READ_AHEAD);
    while let Some((seg, read)) = reads.next().await {
        let seg = &seg;
        let id = seg.segment.0;
        let found = classify(read);
        if let Found::Manifest(m) = &found {
            known_chunks.extend(m.chunks.iter().map(|c| c.segment));
        }
        match found {
            Found::Scanned(s) => {
                scanned.insert(id, s);
            }
            Found::Manifest(m) => match load(backend, &listed, &m).await {
                Ok(state) => {
                    tracing::info!(segment = %seg.segment, lsn = m.lsn.0, chunks = m.chunks.len(), inodes = state.inode_count(), "loaded checkpoint");
                    base = Some(Base {
                        first: m.from_segment,
                        lsn: m.lsn,
                        covers: m.covers,
                        at: id,
                        chunks: m.chunks.iter().map(|c| c.segment).collect(),
                        state,
                    });
                    break;
                }
                Err(e) => {
                    tracing::warn!(segment = %seg.segment, lsn = m.lsn.0, "checkpoint is incomplete, trying the one before: {e}");
                    scanned.insert(id, Scanned::Nothing);
                }
            },
            Found::Legacy(bytes) => {
                let decoded =
                    tokio::task::spawn_blocking(move || checkpoint::decode_legacy(&bytes))
                        .await
                        .map_err(|e| ManagerError::Recovery(format!("decoding task: {e}")))?;
                match decoded {
                    Ok((lsn, state)) => {
                        tracing::info!(segment = %seg.segment, lsn = lsn.0, inodes = state.inode_count(), "loaded version 1 checkpoint");
                        base = Some(Base {
                            first: id,
                            lsn,
                            covers: lsn,
                            at: id,
                            chunks: BTreeSet::new(),
                            state,
                        });
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(segment = %seg.segment, "version 1 checkpoint does not decode, trying the one before: {e}");
                        scanned.insert(id, Scanned::Unreadable(e.to_string()));
                    }
                }
            }
        }
    }

    // Record batches written while the checkpoint's chunks were (between where the log
    // stood when it started and its manifest) were not scanned yet.
    let (mut state, first, checkpoint) = match base {
        Some(b) => {
            let missing: Vec<SegmentAddr> = listed
                .range(b.first..b.at)
                .map(|(_, s)| *s)
                .filter(|seg| {
                    let id = seg.segment.0;
                    !scanned.contains_key(&id)
                        && !b.chunks.contains(&id)
                        && !known_chunks.contains(&id)
                })
                .collect();
            let mut reads = futures::stream::iter(missing)
                .map(|seg| async move { (seg, read_with_retry(backend, seg).await) })
                .buffered(READ_AHEAD);
            while let Some((seg, read)) = reads.next().await {
                let s = match classify(read) {
                    Found::Scanned(s) => s,
                    // Another checkpoint's manifest in between: nothing to replay.
                    Found::Manifest(_) | Found::Legacy(_) => Scanned::Nothing,
                };
                scanned.insert(seg.segment.0, s);
            }
            (
                b.state,
                Some(b.first),
                Some((b.lsn, b.first, b.covers, b.at)),
            )
        }
        None => (MetaState::new(), None, None),
    };

    // Replay in order, LSNs contiguous.
    let mut expected = state.last_lsn().next();
    let mut pending: Option<(SegmentId, String)> = None;
    let (mut replayed, mut skipped) = (0, 0);
    for (id, s) in scanned {
        if first.is_some_and(|f| id < f) || known_chunks.contains(&id) {
            continue;
        }
        let seg = SegmentId(id);
        let batches = match s {
            Scanned::Nothing => continue,
            Scanned::Unreadable(detail) => {
                if pending.is_none() {
                    pending = Some((seg, detail));
                }
                continue;
            }
            Scanned::Records(b) => b,
        };
        let decoded = tokio::task::spawn_blocking(move || {
            batches
                .iter()
                .map(|b| decode_records(b))
                .collect::<Result<Vec<Vec<Logged>>, _>>()
        })
        .await
        .map_err(|e| ManagerError::Recovery(format!("decoding task: {e}")))?;
        let decoded = match decoded {
            Ok(d) => d,
            Err(e) => {
                if pending.is_none() {
                    pending = Some((seg, e.to_string()));
                }
                continue;
            }
        };
        for recs in decoded {
            let Some(head) = recs.first() else { continue };
            if head.lsn > expected {
                return Err(match pending {
                    Some((segment, detail)) => RecoveryError::Unreadable {
                        log,
                        segment,
                        detail,
                    },
                    None => RecoveryError::Gap {
                        log,
                        segment: seg,
                        expected,
                        found: head.lsn,
                    },
                }
                .into());
            }
            if let Some(w) = recs.windows(2).find(|w| w[1].lsn != w[0].lsn.next()) {
                return Err(RecoveryError::Gap {
                    log,
                    segment: seg,
                    expected: w[0].lsn.next(),
                    found: w[1].lsn,
                }
                .into());
            }
            if let Some((s, detail)) = pending.take() {
                tracing::warn!(segment = %s, next = %seg, "passing over an unreadable metadata segment: the next batch continues from the LSN before it, so it held nothing needed ({detail})");
                skipped += 1;
            }
            recs.iter().for_each(|r| state.apply(r));
            expected = expected.max(recs.last().map_or(expected, |r| r.lsn.next()));
        }
        replayed += 1;
    }
    if let Some((segment, detail)) = pending {
        return Err(RecoveryError::Unreadable {
            log,
            segment,
            detail,
        }
        .into());
    }
    if let Some((lsn, _, covers, at)) = checkpoint {
        if state.last_lsn() < covers {
            return Err(RecoveryError::ShortTail {
                log,
                segment: SegmentId(at),
                checkpoint: lsn,
                needed: covers,
                found: state.last_lsn(),
            }
            .into());
        }
    }
    tracing::info!(lsn = state.last_lsn().0, replayed, skipped, next = %next_segment, "metadata log replayed");
    Ok(Recovered {
        state,
        next_segment,
        empty: false,
        segments_replayed: replayed,
        segments_skipped: skipped,
        checkpoint: checkpoint.map(|(lsn, first, _, _)| (lsn, first)),
    })
}
