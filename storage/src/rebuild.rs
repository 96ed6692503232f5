//! Rebuild: restores the redundancy of stripes that lost fragments (a dead storage server,
//! a write that landed short) by reconstructing the missing fragments from any k others and
//! storing them on live servers that hold no fragment of that stripe. Readers find them
//! there through `locate`, so placement of existing data never depends on the current
//! server list.
//!
//! `plan` is the pure policy (which stripes first, which servers receive fragments):
//! stripes with the least redundancy left first, targets the least used live servers.
//! `scan` and `execute` are the thin async shell (RPCs, several stripes in parallel).
//! This module must not delete anything.

use crate::error::RepairError;
use crate::locate::SegmentLocation;
use crate::pace::{Nice, NiceConfig};
use crate::repair::rebuild_fragments;
use crate::rpc::StorageClient;
use bytes::Bytes;
use futures::stream::StreamExt;
use proto::ids::{FragmentId, LogId, SegmentId};
use proto::msg::FragmentMeta;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// What the servers hold of one stripe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StripeState {
    pub log: LogId,
    pub segment: SegmentId,
    pub meta: FragmentMeta,
    pub frag_len: u32,
    /// Fragment index -> live servers holding it.
    pub holders: BTreeMap<u8, Vec<SocketAddr>>,
}

impl StripeState {
    /// Fragment indices no live server holds.
    pub fn missing(&self) -> Vec<u8> {
        (0..self.meta.k + self.meta.m)
            .filter(|i| !self.holders.contains_key(i))
            .collect()
    }

    /// Fragments that may still be lost without losing data (negative: unreadable).
    pub fn redundancy(&self) -> i64 {
        self.holders.len() as i64 - self.meta.k as i64
    }
}

/// One stripe to repair: rebuild `missing[i]` onto `targets[i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub stripe: StripeState,
    pub missing: Vec<u8>,
    pub targets: Vec<SocketAddr>,
}

impl Job {
    pub fn bytes(&self) -> u64 {
        self.stripe.frag_len as u64 * self.missing.len() as u64
    }
}

/// The rebuild plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// In order: least redundancy first.
    pub jobs: Vec<Job>,
    /// Stripes with fewer than k fragments left: nothing can rebuild them.
    pub unrepairable: Vec<StripeState>,
    /// Fragments that found no live server to go to (too few servers).
    pub unplaced: u64,
}

/// Degraded stripes by how many fragments they miss (missing count -> stripes).
pub fn degraded_histogram(stripes: &[StripeState]) -> BTreeMap<usize, usize> {
    let mut h = BTreeMap::new();
    for s in stripes {
        let m = s.missing().len();
        if m > 0 {
            *h.entry(m).or_insert(0) += 1;
        }
    }
    h
}

/// Pure policy: orders the degraded stripes (least redundancy first, then by log and
/// segment) and picks a target for each missing fragment: a live server holding no
/// fragment of the stripe, the least loaded first (bytes used plus bytes already planned).
pub fn plan(stripes: &[StripeState], live: &[(SocketAddr, u64)]) -> Plan {
    let mut degraded: Vec<&StripeState> =
        stripes.iter().filter(|s| !s.missing().is_empty()).collect();
    degraded.sort_by_key(|s| (s.redundancy(), s.log, s.segment));
    let mut load: HashMap<SocketAddr, u64> = live.iter().copied().collect();
    let mut out = Plan::default();
    for s in degraded {
        if s.redundancy() < 0 {
            out.unrepairable.push(s.clone());
            continue;
        }
        let mut used: BTreeSet<SocketAddr> = s.holders.values().flatten().copied().collect();
        let mut missing = Vec::new();
        let mut targets = Vec::new();
        for i in s.missing() {
            let best = live
                .iter()
                .map(|(a, _)| *a)
                .filter(|a| !used.contains(a))
                .min_by_key(|a| (load.get(a).copied().unwrap_or(0), *a));
            match best {
                Some(a) => {
                    used.insert(a);
                    *load.entry(a).or_insert(0) += s.frag_len as u64;
                    missing.push(i);
                    targets.push(a);
                }
                None => out.unplaced += 1,
            }
        }
        if !missing.is_empty() {
            out.jobs.push(Job {
                stripe: s.clone(),
                missing,
                targets,
            });
        }
    }
    out
}

/// What the servers hold, as reachable servers answered.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    pub stripes: Vec<StripeState>,
    /// Reachable servers and their used bytes.
    pub live: Vec<(SocketAddr, u64)>,
    /// Servers that did not answer, with why.
    pub down: Vec<(SocketAddr, String)>,
}

/// Lists every fragment on every reachable server and groups them by stripe.
pub async fn scan(client: &StorageClient, servers: &[SocketAddr]) -> Scan {
    let stats = futures::future::join_all(servers.iter().map(|a| client.stat(*a))).await;
    let mut out = Scan::default();
    for (a, r) in servers.iter().zip(stats) {
        match r {
            Ok(st) => out.live.push((*a, st.used_bytes)),
            Err(e) => out.down.push((*a, e.to_string())),
        }
    }
    let mut logs = BTreeSet::new();
    for (a, _) in &out.live {
        match client.list_logs(*a).await {
            Ok(l) => logs.extend(l),
            Err(e) => tracing::warn!(server = %a, "rebuild scan: ListLogs failed: {e}"),
        }
    }
    let mut stripes: BTreeMap<(LogId, SegmentId), StripeState> = BTreeMap::new();
    for log in logs {
        let lists =
            futures::future::join_all(out.live.iter().map(|(a, _)| client.list_log(*a, log))).await;
        for ((a, _), r) in out.live.iter().zip(lists) {
            let Ok(frags) = r else { continue };
            for f in frags {
                stripes
                    .entry((log, f.id.segment))
                    .or_insert_with(|| StripeState {
                        log,
                        segment: f.id.segment,
                        meta: f.meta,
                        frag_len: f.len,
                        holders: BTreeMap::new(),
                    })
                    .holders
                    .entry(f.id.index)
                    .or_default()
                    .push(*a);
            }
        }
    }
    out.stripes = stripes.into_values().collect();
    out
}

/// Progress of `execute`, reported after every stripe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub stripes_done: usize,
    pub stripes_failed: usize,
    pub stripes_total: usize,
    /// Bytes of fragments rebuilt and stored.
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub fragments_done: u64,
}

/// Runs the plan's jobs, `parallel` stripes at a time, calling `progress` after each.
/// With `pace`, every stripe's time per byte feeds a Nice controller (`pace`, the same as
/// the cleaner's) and each worker rests after a stripe so that rebuilding takes only the
/// controller's share of the time: it backs off when foreground load slows its requests
/// and runs back to back when the servers are idle. Without, it runs at full speed.
pub async fn execute(
    client: &StorageClient,
    plan: &Plan,
    parallel: usize,
    pace: Option<NiceConfig>,
    mut progress: impl FnMut(&Progress, Option<String>),
) -> Progress {
    let mut p = Progress {
        stripes_total: plan.jobs.len(),
        bytes_total: plan.jobs.iter().map(Job::bytes).sum(),
        ..Default::default()
    };
    let nice = pace.map(|c| Arc::new(std::sync::Mutex::new(Nice::new(c))));
    let mut results = futures::stream::iter(plan.jobs.iter().cloned())
        .map(|job| {
            let client = client.clone();
            let nice = nice.clone();
            async move {
                let started = Instant::now();
                let r = run_job(&client, &job).await;
                if let Some(n) = nice {
                    let busy = started.elapsed();
                    let rest = {
                        let mut n = crate::store::lock(&n);
                        if r.is_ok() {
                            n.sample(job.bytes(), busy);
                        }
                        n.pause_after(busy)
                    };
                    tokio::time::sleep(rest).await;
                }
                (job, r)
            }
        })
        .buffer_unordered(parallel.max(1));
    while let Some((job, r)) = results.next().await {
        match r {
            Ok(()) => {
                p.stripes_done += 1;
                p.bytes_done += job.bytes();
                p.fragments_done += job.missing.len() as u64;
                progress(&p, None);
            }
            Err(e) => {
                p.stripes_failed += 1;
                let msg = format!("{}/{}: {e}", job.stripe.log, job.stripe.segment);
                tracing::warn!("rebuild: {msg}");
                progress(&p, Some(msg));
            }
        }
    }
    p
}

async fn run_job(client: &StorageClient, job: &Job) -> Result<(), RepairError> {
    let s = &job.stripe;
    let loc = SegmentLocation {
        meta: Some(s.meta),
        frag_len: s.frag_len,
        holders: s.holders.clone(),
        unreachable: Vec::new(),
    };
    let want: BTreeSet<u8> = job.missing.iter().copied().collect();
    let rebuilt = rebuild_fragments(client, &loc, s.log, s.segment, &want).await?;
    let targets: HashMap<u8, SocketAddr> = job
        .missing
        .iter()
        .copied()
        .zip(job.targets.iter().copied())
        .collect();
    let puts = rebuilt.into_iter().map(|(index, bytes): (u8, Bytes)| {
        let addr = targets[&index];
        let meta = FragmentMeta {
            crc32c: proto::crc32c(&bytes),
            ..s.meta
        };
        let id = FragmentId {
            log: s.log,
            segment: s.segment,
            index,
        };
        async move {
            client
                .put_fragment(addr, id, meta, bytes)
                .await
                .map_err(|e| RepairError::Failed {
                    what: id.to_string(),
                    detail: format!("storing it on {addr}: {e}"),
                })
        }
    });
    for r in futures::future::join_all(puts).await {
        r?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::msg::CODEC_RS_GF8_RSE;

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7000 + i))
    }

    fn stripe(seg: u64, present: &[(u8, u16)]) -> StripeState {
        let mut holders = BTreeMap::new();
        for (i, a) in present {
            holders.insert(*i, vec![addr(*a)]);
        }
        StripeState {
            log: LogId(1),
            segment: SegmentId(seg),
            meta: FragmentMeta {
                codec: CODEC_RS_GF8_RSE,
                k: 4,
                m: 2,
                segment_len: 4000,
                crc32c: 0,
                nodes: 0,
            },
            frag_len: 1000,
            holders,
        }
    }

    #[test]
    fn least_redundancy_first_and_targets_avoid_the_stripe() {
        let live: Vec<(SocketAddr, u64)> = (1..=7).map(|i| (addr(i), 0)).collect();
        let whole = stripe(1, &[(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6)]);
        let one_lost = stripe(2, &[(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]);
        let two_lost = stripe(3, &[(0, 1), (1, 2), (3, 4), (4, 5)]);
        let dead = stripe(4, &[(0, 1), (1, 2), (3, 4)]);
        let p = plan(&[whole, one_lost, two_lost.clone(), dead.clone()], &live);
        assert_eq!(p.unrepairable, vec![dead]);
        assert_eq!(p.jobs.len(), 2);
        assert_eq!(p.jobs[0].stripe, two_lost, "least redundancy first");
        assert_eq!(p.jobs[0].missing, vec![2, 5]);
        for j in &p.jobs {
            let holders: BTreeSet<SocketAddr> =
                j.stripe.holders.values().flatten().copied().collect();
            let targets: BTreeSet<SocketAddr> = j.targets.iter().copied().collect();
            assert_eq!(targets.len(), j.targets.len(), "distinct targets");
            assert!(holders.is_disjoint(&targets), "{j:?}");
        }
        assert_eq!(p.unplaced, 0);
        assert_eq!(p.jobs.iter().map(Job::bytes).sum::<u64>(), 3000);
    }

    #[test]
    fn targets_spread_by_load_and_too_few_servers_leave_fragments_unplaced() {
        // Servers 6 and 7 are free, 6 is heavily used: the first pick is 7.
        let live = vec![
            (addr(1), 0),
            (addr(2), 0),
            (addr(3), 0),
            (addr(4), 0),
            (addr(6), 1 << 30),
            (addr(7), 0),
        ];
        let s = stripe(1, &[(0, 1), (1, 2), (2, 3), (3, 4)]);
        let p = plan(std::slice::from_ref(&s), &live);
        assert_eq!(p.jobs[0].targets, vec![addr(7), addr(6)]);
        let p = plan(&[s], &live[..5]);
        assert_eq!(p.jobs[0].targets, vec![addr(6)]);
        assert_eq!(p.unplaced, 1);
        assert_eq!(
            degraded_histogram(&[stripe(9, &[(0, 1)])]),
            BTreeMap::from([(5, 1)])
        );
    }
}
