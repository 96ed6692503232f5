//! Cooperative caching, the client's half (DESIGN.md §5, issue 12): a local miss is served
//! from another client's block cache when the manager's hint names one, else (or when
//! that fails in any way) from the storage servers.
//!
//! Parts: `stats` (the per-mount counters behind `shoal.stats`), `peers` (which peers to
//! ask and which failed lately; pure), `fetch` (one bounded, checked peer read),
//! `server` (answering peers from this client's block cache and taking their forwards),
//! `nchance` (the pure core of N-chance forwarding) and `forward` (its runtime shell). The read path
//! (`data::read`) decides when to ask; this module owns how. Peers are asked and answer
//! only by immutable log address (`data::cache::LogCopy`), so a peer answer is never
//! stale. Must not: block a runtime thread, hold the data lock across an await, or trust
//! a peer's bytes without the end-to-end checksums when the manager gave them.

pub mod fetch;
pub mod forward;
pub mod nchance;
pub mod peers;
pub(crate) mod server;
pub mod stats;

use forward::Forwarding;
use peers::BadPeers;
use proto::transport::Transport;
use stats::CoopCounters;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a peer read may take before the block is read from storage instead.
pub const PEER_TIMEOUT: Duration = Duration::from_millis(500);

/// Cooperation cannot be switched on: the client was configured without it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("cooperative caching is off in this client's config ([client] peer_reads = false): remount with it on to switch it at runtime")]
pub struct NotConfigured;

/// The cooperative-caching state of one client.
pub struct Coop {
    /// Whether this client was configured to cooperate (`[client] peer_reads`): only then
    /// does it serve peers and send holder hints, for as long as it runs.
    configured: bool,
    /// Whether it cooperates now: asks peers, forwards evicted singlets and takes
    /// forwards. Starts as configured; switched at runtime by the `shoal.peer_reads`
    /// xattr (benchmarks measure with and without cooperation in one run).
    active: AtomicBool,
    pub counters: Arc<CoopCounters>,
    bad: Mutex<BadPeers>,
    /// N-chance forwarding: evicted singlets sent on, forwards kept for peers.
    pub forwarding: Arc<Forwarding>,
}

impl Coop {
    /// `max_forwarded`: forwarded blocks kept for peers at most (apart from the cache).
    pub fn new(enabled: bool, transport: &Arc<Transport>, max_forwarded: usize) -> Coop {
        Coop {
            configured: enabled,
            active: AtomicBool::new(enabled),
            counters: Arc::new(CoopCounters::default()),
            bad: Mutex::new(BadPeers::default()),
            forwarding: Arc::new(Forwarding::new(transport, max_forwarded)),
        }
    }

    /// Whether this client cooperates now (configured, and not switched off).
    pub fn enabled(&self) -> bool {
        self.configured && self.active.load(Ordering::Relaxed)
    }

    /// Whether this client was configured to cooperate (it serves peers and sends holder
    /// hints even while switched off, so that switching on finds the managers' view
    /// current).
    pub fn configured(&self) -> bool {
        self.configured
    }

    /// Switches asking peers, forwarding and taking forwards on or off at runtime.
    /// Switching off always works; switching on needs the client configured for it.
    pub fn set_enabled(&self, on: bool) -> Result<(), NotConfigured> {
        if on && !self.configured {
            return Err(NotConfigured);
        }
        self.active.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// The peers of `hint` to ask now, best first (those that failed lately left out).
    pub fn candidates(&self, hint: &[std::net::SocketAddr]) -> Vec<std::net::SocketAddr> {
        if !self.enabled() {
            return Vec::new();
        }
        self.bad_peers().usable(hint, std::time::Instant::now())
    }

    /// `peer` failed a read (gone, timed out, wrong bytes): not asked for a while.
    pub fn mark_bad(&self, peer: std::net::SocketAddr) {
        self.bad_peers().mark(peer, std::time::Instant::now());
    }

    fn bad_peers(&self) -> std::sync::MutexGuard<'_, BadPeers> {
        self.bad.lock().unwrap_or_else(|e| e.into_inner())
    }
}
