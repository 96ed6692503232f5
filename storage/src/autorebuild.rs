//! The background rebuild: when a storage server has been unreachable for longer than
//! `[storage] rebuild_delay_secs`, the stripes that lost fragments are rebuilt onto the
//! other servers (`rebuild::plan` and `execute`: least redundancy first, several stripes
//! in parallel), without anyone running `shoal rebuild --now`.
//!
//! Owns: `DownClock`, the pure record of how long each server has been seen down (events
//! in: a round of reachability observations; decision out: whether a rebuild is due), and
//! the thin worker loop that polls, scans and executes. Runs on one node only (the node
//! that also reclaims). Must not: delete anything, or rebuild while no server has been down
//! for the delay (a server restarting for an upgrade must not cause a storm of copies).
//! Not paced by `pace::Nice` yet: `execute` runs a fixed number of stripes in parallel.

use crate::rebuild::{execute, plan, scan};
use crate::rpc::StorageClient;
use proto::live::LiveConfig;
use proto::transport::Transport;
use proto::worker::Worker;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often the worker checks which servers answer.
pub const POLL_EVERY: Duration = Duration::from_secs(2);
/// Stripes rebuilt at the same time.
const PARALLEL: usize = 4;

/// Since when each server has been seen down, continuously.
#[derive(Clone, Debug, Default)]
pub struct DownClock {
    since: BTreeMap<SocketAddr, Instant>,
}

impl DownClock {
    /// One round of observations at `now`: `down` did not answer, every other server did
    /// (a server that answers again starts from zero next time it goes down).
    pub fn observe(&mut self, now: Instant, down: &[SocketAddr]) {
        self.since.retain(|a, _| down.contains(a));
        for a in down {
            self.since.entry(*a).or_insert(now);
        }
    }

    /// The servers down for at least `delay` at `now`.
    pub fn overdue(&self, now: Instant, delay: Duration) -> Vec<SocketAddr> {
        self.since
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= delay)
            .map(|(a, _)| *a)
            .collect()
    }
}

/// What one background round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub stripes_rebuilt: usize,
    pub stripes_failed: usize,
    pub bytes: u64,
}

/// Polls every `POLL_EVERY`; while some server has been down for the configured delay,
/// scans and rebuilds what is degraded (a scan that finds nothing to do costs only the
/// listing). Stops when `stop` turns true. Each rebuild round is reported through
/// `worker` (failed when some stripes could not be rebuilt).
/// The storage servers are those of the config `live` holds at each poll (a server added
/// while running is scanned, so that its fragments do not look missing).
pub async fn run(
    live: Arc<LiveConfig>,
    transport: Arc<Transport>,
    mut stop: watch::Receiver<bool>,
    worker: Arc<Worker>,
) {
    let client = StorageClient::new(transport);
    let delay = Duration::from_secs(live.current().file.storage.rebuild_delay_secs);
    let mut clock = DownClock::default();
    let mut polls: u32 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL_EVERY) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            worker.stopped();
            return;
        }
        let servers: Vec<SocketAddr> = live
            .current()
            .storage_nodes()
            .iter()
            .map(|n| n.address)
            .collect();
        let stats = futures::future::join_all(servers.iter().map(|a| client.stat(*a))).await;
        let down: Vec<SocketAddr> = servers
            .iter()
            .zip(stats)
            .filter(|(_, r)| r.is_err())
            .map(|(a, _)| *a)
            .collect();
        clock.observe(Instant::now(), &down);
        let overdue = clock.overdue(Instant::now(), delay);
        polls = polls.wrapping_add(1);
        if overdue.is_empty() {
            // The degraded-stripe gauges: every poll while a server is down, else now and
            // then (a scan lists every fragment).
            if !down.is_empty() || polls % proto::ops_metrics::DEGRADED_SCAN_POLLS == 1 {
                let first = scan(&client, &servers).await;
                if degraded_count(&first.stripes, None) == 0 {
                    record_stripes(&first.stripes, None);
                } else {
                    // A listing is not a snapshot: a segment being written or deleted while
                    // the servers are listed one after the other looks degraded. Only what
                    // a second listing finds degraded too is counted.
                    tokio::time::sleep(CONFIRM_AFTER).await;
                    let second = scan(&client, &servers).await;
                    record_stripes(&second.stripes, Some(&first.stripes));
                }
            }
            continue;
        }
        worker.busy();
        let r = round(&client, &servers).await;
        if r.stripes_failed > 0 {
            worker.failed(format!(
                "{} stripe(s) could not be rebuilt (servers down: {overdue:?})",
                r.stripes_failed
            ));
        } else {
            worker.idle();
        }
        if r.stripes_rebuilt + r.stripes_failed > 0 {
            tracing::info!(
                down = ?overdue,
                rebuilt = r.stripes_rebuilt,
                failed = r.stripes_failed,
                bytes = r.bytes,
                "background rebuild round"
            );
        }
    }
}

/// How long the gauge scan waits before listing again to confirm degraded stripes (longer
/// than a segment write or delete takes).
const CONFIRM_AFTER: Duration = Duration::from_millis(500);

/// Degraded stripes of `stripes`; with `earlier`, only those degraded in it too (pure).
fn degraded_count(
    stripes: &[crate::rebuild::StripeState],
    earlier: Option<&[crate::rebuild::StripeState]>,
) -> usize {
    let before: Option<std::collections::HashSet<_>> = earlier.map(|e| {
        e.iter()
            .filter(|s| !s.missing().is_empty())
            .map(|s| (s.log, s.segment))
            .collect()
    });
    stripes
        .iter()
        .filter(|s| !s.missing().is_empty())
        .filter(|s| {
            before
                .as_ref()
                .is_none_or(|b| b.contains(&(s.log, s.segment)))
        })
        .count()
}

/// Sets the stripe gauges (`proto::ops_metrics`) from a scan (and, with `earlier`, counts
/// only stripes degraded in both).
fn record_stripes(
    stripes: &[crate::rebuild::StripeState],
    earlier: Option<&[crate::rebuild::StripeState]>,
) {
    let degraded = degraded_count(stripes, earlier);
    proto::ops_metrics::stripe_gauges(stripes.len() as u64, degraded as u64);
}

/// The least share of time the background rebuild works under foreground load.
pub const REBUILD_MIN_SHARE: f64 = 0.25;

/// One scan and rebuild of everything degraded.
pub async fn round(client: &StorageClient, servers: &[SocketAddr]) -> Round {
    let s = scan(client, servers).await;
    record_stripes(&s.stripes, None);
    let p = plan(&s.stripes, &s.live);
    if p.jobs.is_empty() {
        return Round::default();
    }
    // Paced like the cleaner, so clients keep most of their throughput while it runs, but
    // never below a quarter share: lost redundancy must come back under sustained load.
    let pace = Some(crate::pace::NiceConfig {
        min_share: REBUILD_MIN_SHARE,
        ..Default::default()
    });
    let done = execute(client, &p, PARALLEL, pace, |_, err| {
        if let Some(e) = err {
            tracing::warn!("background rebuild: {e}");
        }
    })
    .await;
    Round {
        stripes_rebuilt: done.stripes_done,
        stripes_failed: done.stripes_failed,
        bytes: done.bytes_done,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7000 + n as u16))
    }

    fn stripe(seg: u64, present: &[u8]) -> crate::rebuild::StripeState {
        let holders = present.iter().map(|i| (*i, vec![a(*i)])).collect();
        crate::rebuild::StripeState {
            log: proto::ids::LogId(1),
            segment: proto::ids::SegmentId(seg),
            meta: proto::msg::FragmentMeta {
                codec: proto::msg::CODEC_RS_GF8_RSE,
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
    fn only_stripes_degraded_in_both_listings_count() {
        let whole = [0, 1, 2, 3, 4, 5];
        // Segment 1 was being written during the first listing, segment 2 lost a fragment
        // for good, segment 3 is being written during the second.
        let first = vec![stripe(1, &[0, 1]), stripe(2, &[0, 1, 2, 3, 4])];
        let second = vec![
            stripe(1, &whole),
            stripe(2, &[0, 1, 2, 3, 4]),
            stripe(3, &[0]),
        ];
        assert_eq!(degraded_count(&first, None), 2);
        assert_eq!(degraded_count(&second, None), 2);
        assert_eq!(degraded_count(&second, Some(&first)), 1);
        assert_eq!(degraded_count(&[stripe(4, &whole)], None), 0);
    }

    #[test]
    fn a_server_is_overdue_only_after_the_delay_down_continuously() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let d = Duration::from_secs(10);
        let mut c = DownClock::default();
        c.observe(t0, &[a(1)]);
        assert!(c.overdue(t0 + 5 * s, d).is_empty());
        c.observe(t0 + 5 * s, &[a(1), a(2)]);
        assert_eq!(c.overdue(t0 + 10 * s, d), vec![a(1)]);
        // a(1) answers again: its clock starts over when it goes down again.
        c.observe(t0 + 11 * s, &[a(2)]);
        c.observe(t0 + 12 * s, &[a(1), a(2)]);
        assert_eq!(c.overdue(t0 + 15 * s, d), vec![a(2)]);
        assert!(c.overdue(t0 + 14 * s, d).is_empty());
        assert_eq!(c.overdue(t0 + 22 * s, d), vec![a(1), a(2)]);
    }

    #[test]
    fn no_delay_means_at_once() {
        let t0 = Instant::now();
        let mut c = DownClock::default();
        c.observe(t0, &[a(3)]);
        assert_eq!(c.overdue(t0, Duration::ZERO), vec![a(3)]);
        c.observe(t0, &[]);
        assert!(c.overdue(t0, Duration::ZERO).is_empty());
    }
}
