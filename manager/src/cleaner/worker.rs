//! The copying cleaner's worker: picks partly live data segments by the cost-benefit
//! `policy`, reads their live extents, rewrites them into the cleaner's own log (new
//! segments, striped like any other), and asks each owning manager to remap its extents
//! *only where they still point at the old copy* (`Relocate`, planned by
//! `relocate::plan_relocate`, logged durably by that manager). The old segments are then
//! dead and the reclaimer (`reclaim`) deletes them. An extent several files share
//! (copy_file_range) is copied once and every file sharing it is moved to that copy. What
//! it copies is checked against the writers' end-to-end checksums first
//! (`LogReader::read_checked`), and the copies carry checksums of their own with the remap.
//!
//! Crash safety, step by step (`copy_out`, then `swap`): a crash before or during the copy
//! leaves the old segments as they were; a crash after the copy and before (or during) the
//! swap leaves new segments no extent map names, which the reclaimer deletes like any dead
//! segment, and the old ones still referenced; after the swap the old segments are dead.
//! No extent map ever names an address that was not durable first (the append returns only
//! once durable), and a remap whose new segment is below its log's floor is skipped by the
//! manager (the reclaimer may have deleted it).
//!
//! Owns: the cleaner's log (a fresh random log id per `Cleaner`, so no segment id is ever
//! reused), the order of the steps and the pacing (`storage::pace::Nice`, fed with the
//! latency of its own reads and appends). Must not: delete segments (the reclaimer does),
//! or change an extent map except through `Relocate`.

use super::policy::{self, Candidate, Policy};
use super::relocate::Moved;
use crate::reclaim::Reclaimer;
use crate::usage::SegKey;
use proto::chunksum::{self, ChunkSums};
use proto::config::ClusterConfig;
use proto::ids::{InodeId, LogId, LogPtr, NodeId, SegmentAddr, SegmentId};
use proto::live::LiveConfig;
use proto::msg::{Extent, ManagerRequest, ManagerResponse};
use proto::route::ManagerClient;
use proto::transport::Transport;
use proto::worker::Worker;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use storage::log::LogReader;
use storage::pace::{Nice, NiceConfig};
use storage::segment::{EntryKind, SegmentBuilder};
use storage::{LogWriter, StorageClient};

/// Why a cleaning step failed (nothing is lost: the old segments stay referenced).
#[derive(Debug, thiserror::Error)]
pub enum CleanError {
    #[error("manager {node} did not answer {what}: {detail}")]
    Manager {
        node: NodeId,
        what: &'static str,
        detail: String,
    },
    #[error("cannot read segment {seg}: {detail}")]
    Read { seg: String, detail: String },
    #[error("cannot write the cleaner's segment: {0}")]
    Write(String),
}

/// What a cleaning pass did (also the progress shown while it runs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// Segments chosen by the policy, and how many of them were copied out.
    pub chosen: usize,
    pub cleaned: usize,
    /// Bytes of the chosen segments (before striping): what cleaning them gives back once
    /// the reclaimer deletes them.
    pub chosen_bytes: u64,
    /// Live bytes copied into the cleaner's log.
    pub copied: u64,
    /// Segments and bytes (headers included, before striping) the cleaner appended.
    pub written_segments: usize,
    pub written_bytes: u64,
    /// Bytes remapped to the copies, and bytes left alone (a concurrent overwrite,
    /// truncate or delete won, or the copy fell below its log's floor).
    pub moved: u64,
    pub skipped: u64,
    /// Segments whose cleaning failed (they stay as they were).
    pub failed: usize,
    /// Time spent resting for foreground work (Nice pacing).
    pub paused: Duration,
}

/// The extents one manager has in the segments being cleaned.
type Found = Vec<(NodeId, Vec<(InodeId, Extent)>, Vec<ChunkSums>)>;

/// The moves of one copy step, per owning manager.
#[derive(Clone, Debug, Default)]
pub struct Copied {
    pub moves: BTreeMap<NodeId, Vec<Moved>>,
}

/// The copying cleaner.
pub struct Cleaner {
    /// Followed while running: storage nodes added are listed and written to.
    live: Arc<LiveConfig>,
    reader: LogReader,
    storage: StorageClient,
    managers: ManagerClient,
    reclaimer: Reclaimer,
    writer: tokio::sync::Mutex<LogWriter>,
    policy: Policy,
    nice: Mutex<Nice>,
    /// When the cleaner first saw each segment (its age for the policy).
    first_seen: Mutex<HashMap<SegKey, Instant>>,
}

/// The extents the managers' answers `found` list in segment `seg` of the log asked about,
/// with the manager and inode of each.
fn extents_in(found: &Found, seg: SegmentId) -> Vec<(NodeId, InodeId, Extent)> {
    found
        .iter()
        .flat_map(|(n, v, _)| {
            v.iter()
                .filter(|(_, e)| e.ptr.seg.segment == seg)
                .map(|(i, e)| (*n, *i, *e))
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cleaner {
    pub fn new(config: Arc<ClusterConfig>, transport: Arc<Transport>) -> Cleaner {
        Cleaner::following(LiveConfig::new(config), transport)
    }

    /// One that lists, reads and writes by the config `live` holds at the time.
    pub fn following(live: Arc<LiveConfig>, transport: Arc<Transport>) -> Cleaner {
        let config = live.current();
        let log = LogId::client(rand::random::<u64>());
        let policy = Policy {
            start_below_free: config.file.manager.clean_below_free_pct as f64 / 100.0,
            ..Policy::default()
        };
        Cleaner {
            reader: LogReader::following(live.clone(), transport.clone()),
            storage: StorageClient::new(transport.clone()),
            managers: ManagerClient::following(live.clone(), transport.clone()),
            reclaimer: Reclaimer::following(live.clone(), transport.clone()),
            writer: tokio::sync::Mutex::new(LogWriter::following(
                live.clone(),
                transport,
                log,
                SegmentId(0),
            )),
            live,
            policy,
            nice: Mutex::new(Nice::new(NiceConfig::default())),
            first_seen: Mutex::new(HashMap::new()),
        }
    }

    /// With another policy (tests, `shoal clean --now`).
    pub fn with_policy(mut self, policy: Policy) -> Cleaner {
        self.policy = policy;
        self
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The cleaner's own log.
    pub async fn log(&self) -> LogId {
        self.writer.lock().await.log()
    }

    /// The free fraction of the fullest storage server that answers (the fullest one
    /// bounds every stripe); `None` if none answers.
    pub async fn free_fraction(&self) -> Option<f64> {
        let addrs: Vec<_> = self
            .live
            .current()
            .storage_nodes()
            .iter()
            .map(|n| n.address)
            .collect();
        let stats = futures::future::join_all(addrs.iter().map(|a| self.storage.stat(*a))).await;
        stats
            .into_iter()
            .filter_map(|s| s.ok())
            .filter(|s| s.capacity_bytes > 0)
            .map(|s| s.free_bytes as f64 / s.capacity_bytes as f64)
            .min_by(|a, b| a.total_cmp(b))
    }

    /// Every listed data segment with its live bytes (summed over all managers) and age.
    /// Logs some manager or the listing did not answer for are left out (counted).
    pub async fn candidates(&self) -> (Vec<(Candidate, SegmentAddr)>, usize) {
        let mut out = Vec::new();
        let mut skipped = 0;
        let now = Instant::now();
        for log in self.reclaimer.data_logs().await {
            let Ok(listed) = self.reader.list_segments(log).await else {
                skipped += 1;
                continue;
            };
            let Some(answers) = self.reclaimer.seal(log, SegmentId(0)).await else {
                skipped += 1;
                continue;
            };
            let mut live: BTreeMap<SegmentId, u64> = BTreeMap::new();
            for a in &answers {
                for (s, b) in &a.live {
                    *live.entry(*s).or_default() += b;
                }
            }
            let mut seen = lock(&self.first_seen);
            for s in listed {
                let first = *seen.entry((log, s.segment)).or_insert(now);
                out.push((
                    Candidate {
                        seg: (log, s.segment),
                        size: s.len as u64,
                        live: live.get(&s.segment).copied().unwrap_or(0),
                        age_secs: now.duration_since(first).as_secs(),
                    },
                    s,
                ));
            }
        }
        (out, skipped)
    }

    /// Asks every manager for its extents in `segs` (all of one log).
    async fn find(&self, log: LogId, segs: &[SegmentId]) -> Result<Found, CleanError> {
        let nodes = self.live.current().manager_ids();
        let calls = nodes.iter().map(|n| {
            self.managers.call_node(
                *n,
                ManagerRequest::LiveExtents {
                    log,
                    segments: segs.to_vec(),
                },
            )
        });
        let mut out = Vec::new();
        for (n, r) in nodes.iter().zip(futures::future::join_all(calls).await) {
            match r {
                Ok(ManagerResponse::LiveExtents(v)) => out.push((*n, v, Vec::new())),
                Ok(ManagerResponse::SummedLiveExtents { extents, sums }) => {
                    out.push((*n, extents, sums))
                }
                Ok(other) => {
                    return Err(CleanError::Manager {
                        node: *n,
                        what: "LiveExtents",
                        detail: format!("answered {other:?}"),
                    })
                }
                Err(e) => {
                    return Err(CleanError::Manager {
                        node: *n,
                        what: "LiveExtents",
                        detail: e.to_string(),
                    })
                }
            }
        }
        Ok(out)
    }

    /// Appends one finished builder and turns its pending entries into moves.
    async fn flush(
        &self,
        writer: &mut LogWriter,
        builder: SegmentBuilder,
        pending: Vec<Vec<(NodeId, InodeId, Extent)>>,
        copied: &mut Copied,
        report: &mut CleanReport,
    ) -> Result<(), CleanError> {
        if builder.is_empty() {
            return Ok(());
        }
        let (bytes, entries) = builder
            .finish()
            .map_err(|e| CleanError::Write(e.to_string()))?;
        let len = bytes.len() as u64;
        // The copies' end-to-end checksums, from the bytes appended (`chunksum`).
        let (log, seg) = (writer.log(), writer.next_segment());
        let summed = bytes.clone();
        let sums = tokio::task::spawn_blocking(move || chunksum::segment_sums(log, seg, &summed))
            .await
            .map_err(|e| CleanError::Write(format!("checksum task failed: {e}")))?;
        let t = Instant::now();
        let addr = writer
            .append(bytes)
            .await
            .map_err(|e| CleanError::Write(e.to_string()))?;
        lock(&self.nice).sample(len, t.elapsed());
        report.written_segments += 1;
        report.written_bytes += len;
        // One entry per copied extent, moved in every file that shares it, each with the
        // copy's checksums.
        for (sharing, entry) in pending.into_iter().zip(entries) {
            let (first, end) = chunksum::chunk_span(entry.offset, entry.len);
            let new_sums: Vec<ChunkSums> = sums.slice(first, end).into_iter().collect();
            for (node, ino, old) in sharing {
                copied.moves.entry(node).or_default().push(Moved {
                    ino,
                    offset: old.offset,
                    old: old.ptr,
                    new: LogPtr {
                        seg: addr,
                        offset: entry.offset,
                        len: entry.len,
                    },
                    sums: new_sums.clone(),
                });
            }
        }
        Ok(())
    }

    /// Step one: copies the live extents of `segs` into new segments of the cleaner's log
    /// (durable when this returns). Changes no extent map. A segment that cannot be read is
    /// left out (counted in `failed`).
    pub async fn copy_out(
        &self,
        segs: &[SegmentAddr],
        report: &mut CleanReport,
    ) -> Result<Copied, CleanError> {
        let limit = self
            .live
            .current()
            .file
            .client
            .segment_bytes
            .clamp(1 << 20, 64 << 20);
        let mut writer = self.writer.lock().await;
        let mut copied = Copied::default();
        let mut builder = SegmentBuilder::new(writer.log(), writer.next_segment());
        let mut pending: Vec<Vec<(NodeId, InodeId, Extent)>> = Vec::new();
        let mut by_log: BTreeMap<LogId, Vec<SegmentAddr>> = BTreeMap::new();
        for s in segs {
            by_log.entry(s.log).or_default().push(*s);
        }
        for (log, segs) in by_log {
            let ids: Vec<SegmentId> = segs.iter().map(|s| s.segment).collect();
            let found = self.find(log, &ids).await?;
            for seg in segs {
                let mine = extents_in(&found, seg.segment);
                let sums: Vec<&ChunkSums> = found
                    .iter()
                    .flat_map(|(_, _, s)| s.iter())
                    .filter(|s| s.segment == seg.segment)
                    .collect();
                if mine.is_empty() {
                    // No file references it any more: nothing to copy, and the reclaimer
                    // frees it (it may already have, racing this pass: its fragments are
                    // then gone, which is no failure; lifecycle/t68 in CI, 2026-12-06).
                    report.cleaned += 1;
                    continue;
                }
                let t = Instant::now();
                let data = match self.reader.read_segment(seg).await {
                    Ok(d) => d,
                    Err(e) => {
                        // Another pass (the background cleaner beside `shoal clean --now`)
                        // may have moved its data meanwhile, and the reclaimer freed it.
                        let still_used = self
                            .find(log, &[seg.segment])
                            .await
                            .map(|f| !extents_in(&f, seg.segment).is_empty())
                            .unwrap_or(true);
                        if !still_used {
                            tracing::info!(segment = %seg, "cleaner: freed by another pass meanwhile, nothing to do");
                            continue;
                        }
                        tracing::warn!(segment = %seg, "cleaner: cannot read, left as it is: {e}");
                        report.failed += 1;
                        continue;
                    }
                };
                lock(&self.nice).sample(data.len() as u64, t.elapsed());
                // Files sharing the same bytes (copy_file_range) share the copy too: each
                // distinct extent of the segment is written once and every file that
                // references it is moved to that one copy.
                let mut groups: Vec<Vec<(NodeId, InodeId, Extent)>> = Vec::new();
                let mut by_ptr: BTreeMap<(u32, u32), usize> = BTreeMap::new();
                for m in mine {
                    let key = (m.2.ptr.offset, m.2.ptr.len);
                    match by_ptr.get(&key) {
                        Some(i) => groups[*i].push(m),
                        None => {
                            by_ptr.insert(key, groups.len());
                            groups.push(vec![m]);
                        }
                    }
                }
                // What is copied must match the writers' end-to-end checksums: a wrong
                // but well-formed fragment is decoded around (`read_checked`), and a
                // segment with an extent that cannot be is left as it is.
                let mut checked = Vec::with_capacity(groups.len());
                let mut corrupt = false;
                for sharing in groups {
                    let (_, ino, e) = sharing[0];
                    let (from, len) = (e.ptr.offset as usize, e.ptr.len as usize);
                    if from + len > data.len() {
                        tracing::warn!(segment = %seg, inode = %ino, "cleaner: extent {} lies outside its segment", e.ptr);
                        continue;
                    }
                    let bytes = match sums.iter().find(|s| s.for_ptr(&e.ptr).is_some()) {
                        Some(s) => {
                            let w = chunksum::widen(e.ptr);
                            let whole = &data[w.offset as usize..(w.offset + w.len) as usize];
                            if s.verify(w.offset, whole).is_ok() {
                                data.slice(from..from + len)
                            } else {
                                match self.reader.read_checked(e.ptr, s).await {
                                    Ok(b) => b,
                                    Err(err) => {
                                        tracing::error!(segment = %seg, inode = %ino, "cleaner: {err}; segment left as it is");
                                        corrupt = true;
                                        break;
                                    }
                                }
                            }
                        }
                        None => data.slice(from..from + len),
                    };
                    checked.push((sharing, e, bytes));
                }
                if corrupt {
                    report.failed += 1;
                    continue;
                }
                for (sharing, e, bytes) in checked {
                    let ino = sharing[0].1;
                    let len = bytes.len();
                    if !builder.is_empty() && builder.len() + len as u64 + 64 > limit {
                        let next = SegmentBuilder::new(
                            writer.log(),
                            SegmentId(writer.next_segment().0 + 1),
                        );
                        let full = std::mem::replace(&mut builder, next);
                        let p = std::mem::take(&mut pending);
                        self.flush(&mut writer, full, p, &mut copied, report)
                            .await?;
                    }
                    builder.push(
                        EntryKind::FileData {
                            ino,
                            file_offset: e.offset,
                        },
                        bytes,
                    );
                    pending.push(sharing);
                    report.copied += len as u64;
                }
                report.cleaned += 1;
            }
        }
        self.flush(&mut writer, builder, pending, &mut copied, report)
            .await?;
        Ok(copied)
    }

    /// Step two: asks each owning manager to remap what still points at the old copies.
    /// A manager that fails leaves its files on the old copies (counted as skipped).
    pub async fn swap(&self, copied: Copied, report: &mut CleanReport) -> Result<(), CleanError> {
        let mut first_err = None;
        for (node, moves) in copied.moves {
            let total: u64 = moves.iter().map(|m| m.old.len as u64).sum();
            match self
                .managers
                .call_node(node, ManagerRequest::Relocate { moves })
                .await
            {
                Ok(ManagerResponse::Relocated { moved, skipped }) => {
                    report.moved += moved;
                    report.skipped += skipped;
                }
                Ok(other) => {
                    report.skipped += total;
                    first_err.get_or_insert(CleanError::Manager {
                        node,
                        what: "Relocate",
                        detail: format!("answered {other:?}"),
                    });
                }
                Err(e) => {
                    report.skipped += total;
                    first_err.get_or_insert(CleanError::Manager {
                        node,
                        what: "Relocate",
                        detail: e.to_string(),
                    });
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// One pass: choose by the policy, then copy and swap in batches of at most
    /// `batch_segments`, resting between batches as the Nice controller says (when
    /// `paced`). `progress` sees the report after each batch.
    pub async fn pass(&self, paced: bool, progress: impl Fn(&CleanReport)) -> CleanReport {
        let mut report = CleanReport::default();
        let (cands, skipped) = self.candidates().await;
        if skipped > 0 {
            tracing::debug!(logs = skipped, "cleaner: some logs could not be surveyed");
        }
        let plain: Vec<Candidate> = cands.iter().map(|(c, _)| *c).collect();
        let chosen = policy::choose(&self.policy, &plain);
        let addr_of: HashMap<SegKey, SegmentAddr> =
            cands.iter().map(|(c, a)| (c.seg, *a)).collect();
        let chosen: Vec<SegmentAddr> = chosen
            .iter()
            .filter_map(|c| addr_of.get(&c.seg).copied())
            .collect();
        report.chosen = chosen.len();
        report.chosen_bytes = chosen.iter().map(|s| s.len as u64).sum();
        progress(&report);
        for batch in chosen.chunks(BATCH_SEGMENTS) {
            let t = Instant::now();
            let step = async {
                let copied = self.copy_out(batch, &mut report).await?;
                self.swap(copied, &mut report).await
            };
            if let Err(e) = step.await {
                tracing::warn!("cleaner: a batch failed, its segments stay as they were: {e}");
                report.failed += batch.len();
            }
            progress(&report);
            if paced {
                let pause = lock(&self.nice).pause_after(t.elapsed());
                if !pause.is_zero() {
                    report.paused += pause;
                    tokio::time::sleep(pause.min(MAX_PAUSE)).await;
                }
            }
        }
        if report.cleaned > 0 {
            tracing::info!(
                segments = report.cleaned,
                copied = report.copied,
                moved = report.moved,
                skipped = report.skipped,
                "cleaner pass done"
            );
        }
        report
    }

    /// The background worker: every `RECLAIM_EVERY`, a paced cleaning pass if the fullest
    /// storage server has less than the configured free fraction (0 turns it off), then a
    /// reclaim pass. Cleaning and reclaiming in one task means the reclaimer never seals
    /// the cleaner's log between a copy and its swap.
    /// Each round is reported through `worker` (failed when segments could not be cleaned
    /// or logs could not be reclaimed).
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>, worker: Arc<Worker>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(crate::reclaim::RECLAIM_EVERY) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                worker.stopped();
                return;
            }
            worker.busy();
            let mut not_cleaned = 0;
            if self.policy.start_below_free > 0.0 {
                if let Some(free) = self.free_fraction().await {
                    if policy::should_run(&self.policy, free, false) {
                        not_cleaned = self.pass(true, |_| {}).await.failed;
                    }
                }
            }
            let skipped = self.reclaimer.pass_settled().await.skipped;
            if not_cleaned + skipped > 0 {
                worker.failed(format!(
                    "{not_cleaned} segment(s) not cleaned, {skipped} log(s) not reclaimed \
                     (a manager or a storage listing did not answer)"
                ));
            } else {
                worker.idle();
            }
        }
    }

    /// The reclaimer this cleaner runs with.
    pub fn reclaimer(&self) -> &Reclaimer {
        &self.reclaimer
    }
}

/// Segments copied and swapped per step (the swap of a batch is one `Relocate` per manager).
const BATCH_SEGMENTS: usize = 8;
/// Longest rest between two batches.
const MAX_PAUSE: Duration = Duration::from_secs(5);
