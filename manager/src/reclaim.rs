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
use proto::msg::{ManagerRequest, ManagerResponse};
use proto::route::ManagerClient;
use proto::transport::Transport;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use storage::client::StorageClient;
use storage::log::LogReader;
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

/// Whether node `me` runs the reclaimer: the manager with the lowest node id does.
pub fn runs_on(config: &ClusterConfig, me: NodeId) -> bool {
    config.manager_nodes().iter().map(|n| n.id).min() == Some(me)
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

/// Runs reclaim passes over the cluster.
pub struct Reclaimer {
    config: Arc<ClusterConfig>,
    storage: StorageClient,
    reader: LogReader,
    managers: ManagerClient,
}

impl Reclaimer {
    pub fn new(config: Arc<ClusterConfig>, transport: Arc<Transport>) -> Reclaimer {
        Reclaimer {
            storage: StorageClient::new(transport.clone()),
            reader: LogReader::new(config.clone(), transport.clone()),
            managers: ManagerClient::new(config.clone(), transport),
            config,
        }
    }

    /// Every data log some reachable storage server holds fragments of.
    async fn data_logs(&self) -> BTreeSet<LogId> {
        let addrs: Vec<_> = self
            .config
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
    async fn seal(&self, log: LogId, upto: SegmentId) -> Option<Vec<Sealed>> {
        let nodes: Vec<NodeId> = self.config.manager_nodes().iter().map(|n| n.id).collect();
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

    /// One pass over every data log.
    pub async fn pass(&self) -> PassReport {
        let mut report = PassReport::default();
        for log in self.data_logs().await {
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
            let upto = SegmentId(last.segment.0.saturating_add(1));
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

    /// Runs a pass every `RECLAIM_EVERY` until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RECLAIM_EVERY) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return;
            }
            self.pass().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(n: u64) -> SegmentAddr {
        SegmentAddr {
            log: LogId::client(1),
            segment: SegmentId(n),
            len: 100,
            k: 4,
            m: 2,
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
    fn without_answers_nothing_goes() {
        let listed: Vec<SegmentAddr> = (0..3).map(seg).collect();
        assert!(reclaimable(&listed, &[]).is_empty());
        assert!(reclaimable(&listed, &[sealed(0, &[])]).is_empty());
    }
}
