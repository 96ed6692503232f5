//! Scrub: a background worker on each storage server that reads every fragment it holds,
//! verifies the per-block checksums, and repairs a bad fragment by rebuilding it from the
//! rest of its stripe (`repair`), writing it back and reading it back clean.
//!
//! Pacing is a pure `Pacer` (unit-tested without a clock): a background pass spreads its
//! bytes evenly over the configured period; a pass asked for with `ScrubNow` runs at full
//! speed. Either way the worker backs off while foreground requests (puts and reads) are in
//! flight on this server: it waits up to `BACKOFF_MAX` for them to drain before each chunk,
//! and background passes also rest as the Nice controller (`pace`, the cleaner's and the
//! background rebuild's) says from each chunk read's latency. The worker owns only its
//! counters (`ScrubState`); it must not delete fragments or touch other servers' stores.

use crate::error::{RepairError, StorageError};
use crate::locate::locate_segment;
use crate::repair::rebuild_fragments;
use crate::rpc::StorageClient;
use crate::store::{lock, FragmentStore};
use bytes::Bytes;
use proto::msg::{FragmentInfo, ScrubCounts, ScrubReport};
use proto::worker::Worker;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;

/// Bytes read per store call; pacing and back-off act between chunks.
pub const CHUNK: u32 = 1 << 20;
/// Longest the scrub waits for foreground requests to drain before each chunk.
pub const BACKOFF_MAX: Duration = Duration::from_millis(200);
/// Poll interval while backing off.
const BACKOFF_STEP: Duration = Duration::from_millis(10);
/// Gap between two background passes.
const PASS_GAP: Duration = Duration::from_secs(60);

/// When the next chunk of a paced pass may start. Pure: give it the elapsed time and the
/// bytes done, it answers how long to wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacer {
    /// Bytes per second; `None` = as fast as possible.
    pub rate: Option<u64>,
}

impl Pacer {
    /// A pace that reads `total_bytes` in `period` (at least 64 KiB/s so that a nearly
    /// empty server does not crawl), or full speed when `urgent` or the period is zero.
    pub fn new(total_bytes: u64, period: Duration, urgent: bool) -> Pacer {
        if urgent || period.is_zero() {
            return Pacer { rate: None };
        }
        let rate = (total_bytes as u128 * 1000 / period.as_millis().max(1)) as u64;
        Pacer {
            rate: Some(rate.max(64 << 10)),
        }
    }

    /// How long to wait before reading more, `elapsed` after the pass started with `done`
    /// bytes read.
    pub fn delay(&self, elapsed: Duration, done: u64) -> Duration {
        match self.rate {
            None => Duration::ZERO,
            Some(rate) => {
                let due = Duration::from_secs_f64(done as f64 / rate as f64);
                due.saturating_sub(elapsed)
            }
        }
    }
}

/// Scrub counters shared between the worker and the RPC handler.
#[derive(Default)]
pub struct ScrubState {
    report: Mutex<ScrubReport>,
    wake: Notify,
    /// Set by `ScrubNow`: the next (or the running) pass runs at full speed.
    urgent: std::sync::atomic::AtomicBool,
}

impl ScrubState {
    pub fn report(&self) -> ScrubReport {
        *lock(&self.report)
    }

    /// Asks for a full-speed pass now (the running one speeds up). Returns the state.
    pub fn start_now(&self) -> ScrubReport {
        let r = {
            let mut r = lock(&self.report);
            r.now_requests += 1;
            *r
        };
        self.urgent.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        r
    }

    fn update(&self, f: impl FnOnce(&mut ScrubReport)) {
        f(&mut lock(&self.report));
    }
}

/// Everything the worker needs.
pub struct ScrubWorker {
    pub store: Arc<dyn FragmentStore>,
    pub state: Arc<ScrubState>,
    /// Foreground requests in flight on this server (the server counts them).
    pub foreground: Arc<AtomicU64>,
    pub client: StorageClient,
    /// Every storage server of the cluster (repair sources).
    pub servers: Vec<SocketAddr>,
    /// Background pace; zero = only passes asked for with `ScrubNow`.
    pub period: Duration,
    /// Paces the background passes by their own read latency (as the cleaner and the
    /// background rebuild); `ScrubNow` passes run at full speed.
    pub nice: std::sync::Mutex<crate::pace::Nice>,
}

impl ScrubWorker {
    /// Runs passes forever: paced ones back to back (with a short gap) when a period is
    /// configured, and a full-speed one whenever `ScrubNow` asks.
    /// Reports each pass through `worker` (busy while it runs; a pass that left fragments
    /// unrepaired counts as failed).
    pub async fn run(self, worker: Arc<Worker>) {
        self.state.update(|r| r.period_secs = self.period.as_secs());
        loop {
            if !self.state.urgent.load(Ordering::SeqCst) {
                if self.period.is_zero() {
                    self.state.wake.notified().await;
                } else {
                    let _ = tokio::time::timeout(PASS_GAP, self.state.wake.notified()).await;
                }
            }
            worker.busy();
            let Some((counts, covers)) = self.pass().await else {
                // `ScrubNow` interrupted a paced pass: start over with a fresh inventory.
                worker.failed("interrupted by a full-speed pass (ScrubNow)");
                continue;
            };
            if counts.unrepaired > 0 {
                worker.failed(format!(
                    "{} bad fragment(s) could not be repaired",
                    counts.unrepaired
                ));
            } else {
                worker.idle();
            }
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            tracing::info!(
                checked = counts.checked,
                bad = counts.bad,
                repaired = counts.repaired,
                unrepaired = counts.unrepaired,
                bytes = counts.bytes,
                "scrub pass finished"
            );
            self.state.update(|r| {
                r.running = false;
                r.passes += 1;
                r.last = counts;
                r.last_finished_unix = now;
                if let Some(c) = covers {
                    r.now_served = r.now_served.max(c);
                }
            });
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn FragmentStore) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| StorageError::Internal(format!("scrub task failed: {e}")))?
    }

    /// Every fragment held here.
    async fn inventory(&self) -> Vec<FragmentInfo> {
        let listed = self
            .blocking(|s| {
                let mut all = Vec::new();
                for log in s.list_logs()? {
                    all.extend(s.list_log(log)?);
                }
                Ok(all)
            })
            .await;
        listed.unwrap_or_else(|e| {
            tracing::warn!("scrub cannot list fragments: {e}");
            Vec::new()
        })
    }

    /// One pass over every fragment; None when a `ScrubNow` interrupted a paced pass (the
    /// caller starts a full-speed one, over fragments written since too).
    async fn pass(&self) -> Option<(ScrubCounts, Option<u64>)> {
        let frags = self.inventory().await;
        let total_bytes: u64 = frags.iter().map(|f| f.len as u64).sum();
        let urgent = self.state.urgent.swap(false, Ordering::SeqCst);
        // Requests received before this point are covered by this pass if it is urgent.
        let covers = self.state.report().now_requests;
        let pacer = Pacer::new(total_bytes, self.period, urgent);
        self.state.update(|r| {
            r.running = true;
            r.current_total = frags.len() as u64;
            r.current = ScrubCounts::default();
        });
        let started = tokio::time::Instant::now();
        let mut c = ScrubCounts::default();
        for f in frags {
            if pacer.rate.is_some() && self.state.urgent.load(Ordering::SeqCst) {
                return None;
            }
            match self.check(&f, &pacer, started, &mut c.bytes).await {
                Ok(true) => c.checked += 1,
                Ok(false) => {} // deleted meanwhile
                Err(e) => {
                    c.checked += 1;
                    c.bad += 1;
                    tracing::error!(fragment = %f.id, "scrub: bad fragment: {e}");
                    match self.repair(&f).await {
                        Ok(()) => {
                            c.repaired += 1;
                            tracing::info!(fragment = %f.id, "scrub: fragment repaired");
                        }
                        Err(e) => {
                            c.unrepaired += 1;
                            tracing::error!(fragment = %f.id, "scrub: repair failed: {e}");
                        }
                    }
                }
            }
            self.state.update(|r| r.current = c);
        }
        Some((c, urgent.then_some(covers)))
    }

    /// Waits while foreground requests are in flight, at most `BACKOFF_MAX`.
    async fn back_off(&self) {
        let deadline = tokio::time::Instant::now() + BACKOFF_MAX;
        while self.foreground.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(BACKOFF_STEP).await;
        }
    }

    /// Reads a fragment completely. Ok(false) when it is gone (deleted since the listing).
    async fn check(
        &self,
        f: &FragmentInfo,
        pacer: &Pacer,
        started: tokio::time::Instant,
        bytes: &mut u64,
    ) -> Result<bool, StorageError> {
        let mut off = 0u32;
        loop {
            let wait = pacer.delay(started.elapsed(), *bytes);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            self.back_off().await;
            let len = (f.len - off).min(CHUNK);
            let id = f.id;
            let t = tokio::time::Instant::now();
            match self.blocking(move |s| s.read_range(id, off, len)).await {
                Ok(_) => {}
                Err(StorageError::NotFound(_)) => return Ok(false),
                Err(e) => return Err(e),
            }
            // Paced passes also rest as the Nice controller says (by the read's latency).
            if pacer.rate.is_some() {
                let busy = t.elapsed();
                let rest = {
                    let mut n = crate::store::lock(&self.nice);
                    n.sample(len as u64, busy);
                    n.pause_after(busy)
                };
                if !rest.is_zero() {
                    tokio::time::sleep(rest).await;
                }
            }
            *bytes += len as u64;
            off += len;
            if off >= f.len {
                return Ok(true);
            }
        }
    }

    /// Rebuilds `f` from the rest of its stripe, stores it in place and reads it back.
    pub async fn repair(&self, f: &FragmentInfo) -> Result<(), RepairError> {
        let mut loc = locate_segment(&self.client, &self.servers, f.id.log, f.id.segment).await;
        // Our own copy is the bad one; the listing may still show it.
        loc.holders.remove(&f.id.index);
        if loc.meta.is_none() {
            loc.meta = Some(f.meta);
            loc.frag_len = f.len;
        }
        let want = BTreeSet::from([f.id.index]);
        let rebuilt = rebuild_fragments(&self.client, &loc, f.id.log, f.id.segment, &want).await?;
        let failed = |detail: String| RepairError::Failed {
            what: f.id.to_string(),
            detail,
        };
        let Some((_, bytes)) = rebuilt.into_iter().next() else {
            return Err(failed("nothing was rebuilt".into()));
        };
        if bytes.len() != f.len as usize || proto::crc32c(&bytes) != f.meta.crc32c {
            return Err(failed(format!(
                "the rebuilt fragment does not match the checksum recorded when it was written ({} bytes, crc {:08x}, expected {:08x})",
                bytes.len(),
                proto::crc32c(&bytes),
                f.meta.crc32c
            )));
        }
        let (id, meta, len) = (f.id, f.meta, f.len);
        let payload: Bytes = bytes;
        self.blocking(move |s| s.put(id, meta, payload))
            .await
            .map_err(|e| failed(format!("writing the rebuilt fragment back: {e}")))?;
        self.blocking(move |s| s.read_range(id, 0, len))
            .await
            .map_err(|e| {
                failed(format!(
                    "the rebuilt fragment does not read back clean: {e}"
                ))
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paced_pass_spreads_bytes_over_the_period() {
        let week = Duration::from_secs(7 * 24 * 3600);
        let p = Pacer::new(604_800 << 20, week, false);
        assert_eq!(
            p.rate,
            Some(1 << 20),
            "1 MiB/s reads a week's worth in a week"
        );
        assert_eq!(p.delay(Duration::ZERO, 0), Duration::ZERO);
        assert_eq!(p.delay(Duration::ZERO, 2 << 20), Duration::from_secs(2));
        assert_eq!(
            p.delay(Duration::from_millis(1500), 2 << 20),
            Duration::from_millis(500)
        );
        // Behind schedule: no wait.
        assert_eq!(p.delay(Duration::from_secs(10), 2 << 20), Duration::ZERO);
    }

    #[test]
    fn urgent_or_unpaced_passes_run_at_full_speed_and_small_stores_have_a_floor() {
        let week = Duration::from_secs(7 * 24 * 3600);
        assert_eq!(Pacer::new(1 << 40, week, true).rate, None);
        assert_eq!(Pacer::new(1 << 40, Duration::ZERO, false).rate, None);
        assert_eq!(Pacer::new(10, week, false).rate, Some(64 << 10));
        assert_eq!(
            Pacer { rate: None }.delay(Duration::ZERO, u64::MAX),
            Duration::ZERO
        );
    }
}
