//! Recovery of a manager's state from its log: list the segments (waiting while storage is
//! unreachable), read from the end back to the newest checkpoint, load it, then replay the
//! later record batches in order. Segments that cannot be read are skipped with a warning
//! (a torn append was never acknowledged, and its records were re-sent in a later segment).
//! The checkpoint format is in `checkpoint`. Must not: write to the log.

use crate::checkpoint::decode_checkpoint;
use crate::error::ManagerError;
use crate::journal::LogBackend;
use crate::record::decode_records;
use crate::state::MetaState;
use bytes::Bytes;
use proto::ids::SegmentId;
use std::time::Duration;
use storage::segment::EntryKind;

/// Attempts to read one segment before it counts as unreadable.
const READ_ATTEMPTS: u32 = 3;

/// The entries of one segment, `None` when it could not be read.
type SegEntries = Option<Vec<(EntryKind, Bytes)>>;

/// What recovery found.
#[derive(Debug)]
pub struct Recovered {
    pub state: MetaState,
    /// Where the writer continues: one past the highest segment seen.
    pub next_segment: SegmentId,
    /// No segment at all: a brand new log.
    pub empty: bool,
    pub segments_replayed: usize,
    pub segments_skipped: usize,
}

async fn read_with_retry(
    backend: &dyn LogBackend,
    seg: proto::ids::SegmentAddr,
) -> Option<Vec<(EntryKind, Bytes)>> {
    for attempt in 1..=READ_ATTEMPTS {
        match backend.read(seg).await {
            Ok(e) => return Some(e),
            Err(e) => {
                tracing::warn!(segment = %seg.segment, attempt, "cannot read metadata segment: {e}");
                if attempt < READ_ATTEMPTS {
                    tokio::time::sleep(Duration::from_millis(50 * attempt as u64)).await;
                }
            }
        }
    }
    None
}

/// Rebuilds the state from `backend`.
pub async fn recover(backend: &dyn LogBackend) -> Result<Recovered, ManagerError> {
    let mut wait = Duration::from_millis(50);
    let segs = loop {
        match backend.list().await {
            Ok(s) => break s,
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
        });
    }
    // Read from the end back to the newest checkpoint.
    let mut tail: Vec<(proto::ids::SegmentAddr, SegEntries)> = Vec::new();
    let mut state = MetaState::new();
    for seg in segs.iter().rev() {
        let entries = read_with_retry(backend, *seg).await;
        let ckpt = entries.as_ref().and_then(|es| {
            es.iter().rev().find(|(k, _)| *k == EntryKind::Checkpoint).and_then(|(_, b)| {
                decode_checkpoint(b)
                    .map_err(|e| tracing::warn!(segment = %seg.segment, "checkpoint does not decode, looking further back: {e}"))
                    .ok()
            })
        });
        if let Some(c) = ckpt {
            tracing::info!(segment = %seg.segment, lsn = c.lsn, inodes = c.state.inode_count(), "loaded checkpoint");
            state = c.state;
            break;
        }
        tail.push((*seg, entries));
    }
    tail.reverse();
    let (mut replayed, mut skipped) = (0, 0);
    for (seg, entries) in tail {
        let Some(entries) = entries else {
            tracing::warn!(segment = %seg.segment, "skipping unreadable metadata segment (an append that was never acknowledged)");
            skipped += 1;
            continue;
        };
        for (kind, bytes) in entries {
            if kind != EntryKind::MetaRecords {
                continue;
            }
            match decode_records(&bytes) {
                Ok(recs) => recs.iter().for_each(|r| state.apply(r)),
                Err(e) => {
                    tracing::warn!(segment = %seg.segment, "skipping a record batch that does not decode: {e}");
                    skipped += 1;
                }
            }
        }
        replayed += 1;
    }
    tracing::info!(lsn = state.last_lsn(), replayed, skipped, next = %next_segment, "metadata log replayed");
    Ok(Recovered {
        state,
        next_segment,
        empty: false,
        segments_replayed: replayed,
        segments_skipped: skipped,
    })
}
