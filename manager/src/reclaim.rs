//! The reclaimer: deletes data segments that no manager references and that can gain no
//! more references (the argument is in `usage`). One pass lists every data log on the
//! storage servers, seals each log at every manager (`SealLog`), and deletes the fragments
//! of the segments `reclaimable` picks.
//!
//! Owns: the pure decision (`reclaimable`) and the background worker that runs passes.
//! Runs on one node only: the manager with the lowest node id (`runs_on`); while that
//! manager is down nothing is reclaimed (space is only held longer, never lost).
//! Must not: touch manager logs (managers delete their own segments after checkpoints), or
//! delete a segment when any manager did not answer.

use crate::usage::Sealed;
use proto::config::ClusterConfig;
use proto::ids::{LogId, NodeId, SegmentAddr, SegmentId};
use proto::live::LiveConfig;
use proto::msg::{ManagerRequest, ManagerResponse};
use proto::route::ManagerClient;
use proto::transport::Transport;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use storage::log::LogReader;
use storage::StorageClient;
use tokio::sync::watch;

/// How often the background reclaimer looks for dead segments.
pub const RECLAIM_EVERY: Duration = Duration::from_secs(2);

/// The segments of one log that may be deleted: listed on the storage servers, below every
/// manager's floor, and live at none of them. `answers` must hold one answer per manager
/// (an empty slice reclaims nothing).
pub fn reclaimable(listed: &[SegmentAddr], answers: &[Sealed]) -> Vec<SegmentAddr> {
    let Some(floor) = answers.iter().map(|a| a.floor).min() else {
        return Vec::new();
    };
    let live: BTreeSet<SegmentId> = answers
        .iter()
        .flat_map(|a| a.live.iter().filter(|(_, b)| *b > 0).map(|(s, _)| *s))
        .collect();
    listed
        .iter()
        .filter(|s| s.segment < floor && !live.contains(&s.segment))
        .copied()
        .collect()
}

/// What one data log holds, as `shoal clean` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogSurvey {
    pub log: Option<LogId>,
    pub segments: usize,
    /// Bytes of its segments (before striping).
    pub bytes: u64,
    /// Live bytes, summed over every manager.
    pub live: u64,
    /// Segments (and their bytes) a reclaim pass would delete now.
    pub reclaimable: (usize, u64),
    /// Bytes of segments live nowhere but still at or above a floor (their writer may
    /// still commit into them): reclaimable once it has committed past them or is gone.
    pub dead_pinned: u64,
}

/// Sums up one log from its listed segments and the managers' answers (pure).
pub fn survey_log(log: LogId, listed: &[SegmentAddr], answers: &[Sealed]) -> LogSurvey {
    let now: BTreeSet<SegmentId> = reclaimable(listed, answers)
        .iter()
        .map(|s| s.segment)
        .collect();
    let mut live_of: std::collections::BTreeMap<SegmentId, u64> = Default::default();
    for a in answers {
        for (s, b) in &a.live {
            *live_of.entry(*s).or_default() += b;
        }
    }
    let mut out = LogSurvey {
        log: Some(log),
        ..LogSurvey::default()
    };
    for s in listed {
        out.segments += 1;
        out.bytes += s.len as u64;
        let live = live_of.get(&s.segment).copied().unwrap_or(0);
        out.live += live;
        if now.contains(&s.segment) {
            out.reclaimable.0 += 1;
            out.reclaimable.1 += s.len as u64;
        } else if live == 0 {
            out.dead_pinned += s.len as u64;
        }
    }
    out
}

/// Whether node `me` runs the reclaimer: the manager with the lowest node id does, of those
/// that serve their own group (a manager whose group another node took over is gone).
pub fn runs_on(config: &ClusterConfig, me: NodeId) -> bool {
    config
        .manager_nodes()
        .iter()
        .filter(|n| !n.is_hosted())
        .map(|n| n.id)
        .min()
        == Some(me)
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub logs: usize,
    pub segments_deleted: usize,
    /// Bytes of the deleted segments (before striping).
    pub bytes_deleted: u64,
    /// Logs skipped because a manager or the storage listing did not answer.
    pub skipped: usize,
}

/// How far a background pass seals a log whose highest listed segment is `last`, given
/// the highest one the previous background pass listed (`None`: not listed then): only up
/// to what that pass saw already, so a segment is sealed (and may be deleted) only once it
/// has been listed for one pass interval. A cleaner in another process (`shoal clean
/// --now`) appends its copies before the managers remap extents to them (`Relocate`);
/// sealed in between, its copies were deleted and the remaps refused (CI, lifecycle t68:
/// 48 MiB "left alone"). Pure.
pub fn settled_upto(previous: Option<SegmentId>, last: SegmentId) -> SegmentId {
    let now = SegmentId(last.0.saturating_add(1));
    match previous {
        Some(p) => SegmentId(p.0.saturating_add(1)).min(now),
        // Seals nothing new (`SegmentId(0)` only reports); floors already raised stay.
        None => SegmentId(0),
    }
}

/// Runs reclaim passes over the cluster.
pub struct Reclaimer {
    /// Followed while running: storage nodes added are listed and written to.
    live: Arc<LiveConfig>,
    storage: StorageClient,
    reader: LogReader,
    managers: ManagerClient,
    /// Per log, the highest segment the previous background pass listed (`pass_settled`).
    seen: std::sync::Mutex<HashMap<LogId, SegmentId>>,
}

impl Reclaimer {
    pub fn new(config: Arc<ClusterConfig>, transport: Arc<Transport>) -> Reclaimer {
        Reclaimer::following(LiveConfig::new(config), transport)
    }

    /// One that lists, reads and writes by the config `live` holds at the time.
    pub fn following(live: Arc<LiveConfig>, transport: Arc<Transport>) -> Reclaimer {
        Reclaimer {
            storage: StorageClient::new(transport.clone()),
            reader: LogReader::following(live.clone(), transport.clone()),
            managers: ManagerClient::following(live.clone(), transport),
            live,
            seen: Default::default(),
        }
    }

    /// Every data log some reachable storage server holds fragments of.
    pub async fn data_logs(&self) -> BTreeSet<LogId> {
        let addrs: Vec<_> = self
            .live
            .current()
            .storage_nodes()
            .iter()
            .map(|n| n.address)
            .collect();
        let lists =
            futures::future::join_all(addrs.iter().map(|a| self.storage.list_logs(*a))).await;
        let mut logs = BTreeSet::new();
        for (addr, r) in addrs.iter().zip(lists) {
            match r {
                Ok(l) => logs.extend(l.into_iter().filter(|l| l.is_client())),
                Err(e) => tracing::debug!(%addr, "reclaim: cannot list logs: {e}"),
            }
        }
        logs
    }

    /// Seals `log` up to `upto` at every manager; `None` if any did not answer.
    pub async fn seal(&self, log: LogId, upto: SegmentId) -> Option<Vec<Sealed>> {
        let nodes = self.live.current().manager_ids();
        let calls = nodes.iter().map(|n| {
            self.managers
                .call_node(*n, ManagerRequest::SealLog { log, upto })
        });
        let mut out = Vec::with_capacity(nodes.len());
        for (n, r) in nodes.iter().zip(futures::future::join_all(calls).await) {
            match r {
                Ok(ManagerResponse::Sealed { floor, live }) => out.push(Sealed { floor, live }),
                Ok(other) => {
                    tracing::warn!(manager = %n, "reclaim: SealLog answered {other:?}");
                    return None;
                }
                Err(e) => {
                    tracing::debug!(manager = %n, %log, "reclaim: SealLog failed: {e}");
                    return None;
                }
            }
        }
        Some(out)
    }

    /// Surveys every data log without sealing anything (for `shoal clean`). The second
    /// value counts logs that could not be surveyed (a manager or the listing failed).
    pub async fn survey(&self) -> (Vec<LogSurvey>, usize) {
        let mut out = Vec::new();
        let mut skipped = 0;
        for log in self.data_logs().await {
            let Ok(listed) = self.reader.list_segments(log).await else {
                skipped += 1;
                continue;
            };
            match self.seal(log, SegmentId(0)).await {
                Some(answers) => out.push(survey_log(log, &listed, &answers)),
                None => skipped += 1,
            }
        }
        (out, skipped)
    }

    /// One pass over every data log, sealing each up to its last listed segment (for
    /// `shoal clean`, after its own cleaning pass, and tests).
    pub async fn pass(&self) -> PassReport {
        self.pass_with(|_, _| {}).await
    }

    /// One pass, calling `progress(logs done, logs)` after each log.
    pub async fn pass_with(&self, progress: impl Fn(usize, usize)) -> PassReport {
        self.pass_inner(false, progress).await
    }

    /// A background pass: seals a log only up to what the previous background pass listed
    /// (`settled_upto`), so a segment gets one pass interval between its append and any
    /// seal: time for a cleaner running elsewhere to remap extents to it.
    pub async fn pass_settled(&self) -> PassReport {
        self.pass_inner(true, |_, _| {}).await
    }

    async fn pass_inner(&self, settle: bool, progress: impl Fn(usize, usize)) -> PassReport {
        let mut listed_now: HashMap<LogId, SegmentId> = HashMap::new();
        let mut report = PassReport::default();
        let logs = self.data_logs().await;
        let total = logs.len();
        for log in logs {
            progress(report.logs, total);
            report.logs += 1;
            let listed = match self.reader.list_segments(log).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(%log, "reclaim: cannot list segments: {e}");
                    report.skipped += 1;
                    continue;
                }
            };
            let Some(last) = listed.last() else { continue };
            let upto = if settle {
                listed_now.insert(log, last.segment);
                let previous = self.seen_before(log);
                settled_upto(previous, last.segment)
            } else {
                SegmentId(last.segment.0.saturating_add(1))
            };
            let Some(answers) = self.seal(log, upto).await else {
                report.skipped += 1;
                continue;
            };
            for seg in reclaimable(&listed, &answers) {
                match self.reader.delete_segment(seg).await {
                    Ok(()) => {
                        report.segments_deleted += 1;
                        report.bytes_deleted += seg.len as u64;
                    }
                    Err(e) => tracing::warn!(segment = %seg, "reclaim: delete failed: {e}"),
                }
            }
        }
        progress(report.logs, total);
        if settle {
            // Bounded by the logs listed now.
            *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = listed_now;
        }
        if report.segments_deleted > 0 {
            tracing::info!(
                segments = report.segments_deleted,
                bytes = report.bytes_deleted,
                logs = report.logs,
                "reclaimed dead segments"
            );
        }
        report
    }

    fn seen_before(&self, log: LogId) -> Option<SegmentId> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&log)
            .copied()
    }

    /// Runs a background pass every `RECLAIM_EVERY` until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RECLAIM_EVERY) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return;
            }
            self.pass_settled().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_background_pass_seals_only_what_an_earlier_pass_listed() {
        // First seen now: nothing new is sealed.
        assert_eq!(settled_upto(None, SegmentId(7)), SegmentId(0));
        // Segments 5..=7 appeared since the last pass: sealed up to 4 only.
        assert_eq!(settled_upto(Some(SegmentId(4)), SegmentId(7)), SegmentId(5));
        // Nothing new: everything listed is sealed, as by a one-off pass.
        assert_eq!(settled_upto(Some(SegmentId(7)), SegmentId(7)), SegmentId(8));
        // Fewer segments than last time (some deleted): never beyond what is listed.
        assert_eq!(settled_upto(Some(SegmentId(9)), SegmentId(7)), SegmentId(8));
    }

    fn seg(n: u64) -> SegmentAddr {
        SegmentAddr {
            log: LogId::client(1),
            segment: SegmentId(n),
            len: 100,
            k: 4,
            m: 2,
            nodes: 0,
        }
    }

    fn sealed(floor: u64, live: &[u64]) -> Sealed {
        Sealed {
            floor: SegmentId(floor),
            live: live.iter().map(|s| (SegmentId(*s), 10)).collect(),
        }
    }

    #[test]
    fn only_segments_below_every_floor_and_dead_everywhere_go() {
        let listed: Vec<SegmentAddr> = (0..6).map(seg).collect();
        let got = reclaimable(&listed, &[sealed(5, &[1]), sealed(4, &[2])]);
        let got: Vec<u64> = got.iter().map(|s| s.segment.0).collect();
        assert_eq!(got, vec![0, 3]);
    }

    #[test]
    fn survey_splits_dead_segments_by_floor() {
        let listed: Vec<SegmentAddr> = (0..6).map(seg).collect();
        let s = survey_log(LogId::client(1), &listed, &[sealed(3, &[1, 4])]);
        assert_eq!(s.segments, 6);
        assert_eq!(s.bytes, 600);
        assert_eq!(s.live, 20);
        assert_eq!(s.reclaimable, (2, 200));
        assert_eq!(s.dead_pinned, 200);
    }

    #[test]
    fn without_answers_nothing_goes() {
        let listed: Vec<SegmentAddr> = (0..3).map(seg).collect();
        assert!(reclaimable(&listed, &[]).is_empty());
        assert!(reclaimable(&listed, &[sealed(0, &[])]).is_empty());
    }
}
