//! Which storage servers a writer believes down, and when to probe them again. Pure policy
//! (events in, answers out; the caller passes the time): `LogWriter` reports what its puts
//! and probes saw, places new stripes around the servers `is_down` names and sends the
//! probes `probes_due` asks for in the background.
//!
//! A server is believed down from the first put that could not reach it (an error saying
//! it is unreachable, or a put still unanswered when the stripe gave up on stragglers)
//! until a probe or a put reaches it again. Probes come `FIRST_PROBE` after it went down,
//! then at intervals doubling up to `MAX_PROBE_INTERVAL`, one at a time per server.
//! This module owns only that belief; it must not do I/O, and it knows nothing of full
//! servers (a full server answers; `LogWriter` avoids it by its own rule).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The first probe of a server believed down comes this long after it went down.
pub const FIRST_PROBE: Duration = Duration::from_secs(1);
/// Probe intervals double up to this.
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(8);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Down {
    since: Instant,
    next_probe: Instant,
    interval: Duration,
    probing: bool,
}

/// The servers believed down.
#[derive(Clone, Debug, Default)]
pub struct DownList {
    down: HashMap<SocketAddr, Down>,
}

impl DownList {
    pub fn new() -> DownList {
        DownList::default()
    }

    /// A put could not reach `addr` (or never answered): believed down from now on. A
    /// server already believed down keeps its probe schedule.
    pub fn unreachable(&mut self, addr: SocketAddr, now: Instant) {
        self.down.entry(addr).or_insert(Down {
            since: now,
            next_probe: now + FIRST_PROBE,
            interval: FIRST_PROBE,
            probing: false,
        });
    }

    /// A put or a probe reached `addr`: it is up.
    pub fn reached(&mut self, addr: SocketAddr) {
        self.down.remove(&addr);
    }

    /// Whether new stripes should avoid `addr`.
    pub fn is_down(&self, addr: SocketAddr) -> bool {
        self.down.contains_key(&addr)
    }

    /// Whether any server is believed down.
    pub fn is_empty(&self) -> bool {
        self.down.is_empty()
    }

    /// Since when `addr` has been believed down.
    pub fn down_since(&self, addr: SocketAddr) -> Option<Instant> {
        self.down.get(&addr).map(|d| d.since)
    }

    /// The servers to probe now (each is marked as being probed until `probe_failed` or
    /// `reached` reports the answer), in address order.
    pub fn probes_due(&mut self, now: Instant) -> Vec<SocketAddr> {
        let mut due: Vec<SocketAddr> = self
            .down
            .iter_mut()
            .filter(|(_, d)| !d.probing && d.next_probe <= now)
            .map(|(a, d)| {
                d.probing = true;
                *a
            })
            .collect();
        due.sort();
        due
    }

    /// A probe of `addr` failed: probe again after twice the last interval (at most
    /// `MAX_PROBE_INTERVAL`).
    pub fn probe_failed(&mut self, addr: SocketAddr, now: Instant) {
        if let Some(d) = self.down.get_mut(&addr) {
            d.interval = (d.interval * 2).min(MAX_PROBE_INTERVAL);
            d.next_probe = now + d.interval;
            d.probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7000 + n))
    }

    #[test]
    fn an_unreachable_server_is_down_until_reached() {
        let t0 = Instant::now();
        let mut d = DownList::new();
        assert!(d.is_empty() && !d.is_down(a(1)));
        d.unreachable(a(1), t0);
        assert!(d.is_down(a(1)) && !d.is_down(a(2)));
        // Still down however long it is not reached: no expiry by time alone.
        assert!(d.is_down(a(1)));
        assert_eq!(d.down_since(a(1)), Some(t0));
        // A second report keeps the first time and schedule.
        d.unreachable(a(1), t0 + Duration::from_secs(5));
        assert_eq!(d.down_since(a(1)), Some(t0));
        d.reached(a(1));
        assert!(!d.is_down(a(1)) && d.is_empty());
        // Reaching a server never believed down changes nothing.
        d.reached(a(3));
        assert!(d.is_empty());
    }

    #[test]
    fn probes_come_after_the_first_delay_one_at_a_time_then_back_off() {
        let t0 = Instant::now();
        let mut d = DownList::new();
        d.unreachable(a(1), t0);
        d.unreachable(a(2), t0 + Duration::from_millis(500));
        assert!(d.probes_due(t0).is_empty(), "not before FIRST_PROBE");
        let t1 = t0 + FIRST_PROBE;
        assert_eq!(d.probes_due(t1), vec![a(1)]);
        // a(2) is due 1.5 s after t0; a(1) is in flight and not asked for again.
        let t2 = t0 + Duration::from_secs(2);
        assert_eq!(d.probes_due(t2), vec![a(2)]);
        assert!(
            d.probes_due(t2).is_empty(),
            "probes in flight are not repeated"
        );
        // a(1)'s probe fails: next one 2 s later, then 4, then 8, capped.
        d.probe_failed(a(1), t2);
        assert!(!d
            .probes_due(t2 + Duration::from_millis(1999))
            .contains(&a(1)));
        let t3 = t2 + Duration::from_secs(2);
        assert_eq!(d.probes_due(t3), vec![a(1)]);
        d.probe_failed(a(1), t3);
        let t4 = t3 + Duration::from_secs(4);
        assert!(!d.probes_due(t4 - Duration::from_millis(1)).contains(&a(1)));
        assert_eq!(d.probes_due(t4), vec![a(1)]);
        let mut t = t4;
        for _ in 0..5 {
            d.probe_failed(a(1), t);
            t += MAX_PROBE_INTERVAL;
            assert!(!d.probes_due(t - Duration::from_millis(1)).contains(&a(1)));
            assert_eq!(d.probes_due(t), vec![a(1)], "interval capped");
        }
        assert!(d.is_down(a(1)), "failed probes keep it down");
        // A successful probe (reported as reached) ends it.
        d.reached(a(1));
        assert!(!d.is_down(a(1)));
        assert!(d
            .probes_due(t + Duration::from_secs(60))
            .iter()
            .all(|x| *x != a(1)));
    }

    #[test]
    fn a_server_down_again_starts_a_fresh_schedule() {
        let t0 = Instant::now();
        let mut d = DownList::new();
        d.unreachable(a(1), t0);
        let due = d.probes_due(t0 + FIRST_PROBE);
        assert_eq!(due, vec![a(1)]);
        d.probe_failed(a(1), t0 + FIRST_PROBE);
        d.reached(a(1));
        let t1 = t0 + Duration::from_secs(30);
        d.unreachable(a(1), t1);
        assert_eq!(d.down_since(a(1)), Some(t1));
        assert!(d.probes_due(t1).is_empty());
        assert_eq!(d.probes_due(t1 + FIRST_PROBE), vec![a(1)]);
    }
}
