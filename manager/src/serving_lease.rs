//! A node's membership lease as the node itself counts it (issue 13): with automatic
//! takeover on, a node serves its manager groups only while it holds a lease that the
//! config group's leader granted, so that a host cut off from the group stops serving
//! before the leader hands its groups to another node (the leader waits a lease and a
//! margin past the last renewal it saw).
//!
//! Owns the instant until which this node may serve, counted from when the renewal was
//! sent (never from when the grant arrived, so the node's end is never later than the one
//! the leader assumes). Must not: renew (the node's renewer does, `fsd::renewal`), or
//! decide takeovers (the leader does, `fsd::config_group::host_leases`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Until when this node may serve its manager groups; closed until the first grant.
#[derive(Debug)]
pub struct ServingLease {
    base: Instant,
    /// Microseconds after `base` at which the lease ends (0: never granted).
    until_us: AtomicU64,
}

impl Default for ServingLease {
    fn default() -> Self {
        ServingLease::new()
    }
}

impl ServingLease {
    /// A lease not granted yet: the node serves nothing until `extend_to`.
    pub fn new() -> ServingLease {
        ServingLease {
            base: Instant::now(),
            until_us: AtomicU64::new(0),
        }
    }

    fn micros(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_micros() as u64
    }

    /// Extends the lease to `until` (a later grant never shortens it).
    pub fn extend_to(&self, until: Instant) {
        self.until_us
            .fetch_max(self.micros(until), Ordering::SeqCst);
    }

    /// Whether the lease is held at `now`.
    pub fn held(&self, now: Instant) -> bool {
        self.micros(now) < self.until_us.load(Ordering::SeqCst)
    }

    /// How long ago the lease ran out at `now` (`None` while it is held, or if it was never
    /// granted).
    pub fn expired_for(&self, now: Instant) -> Option<Duration> {
        let until = self.until_us.load(Ordering::SeqCst);
        let at = self.micros(now);
        (until > 0 && at >= until).then(|| Duration::from_micros(at - until))
    }

    /// `Ok` while held; otherwise why this node does not serve.
    pub fn check(&self, now: Instant) -> Result<(), String> {
        if self.held(now) {
            return Ok(());
        }
        Err(match self.expired_for(now) {
            Some(ago) => format!(
                "this node's membership lease ran out {} ms ago (the config group's leader has not confirmed it for a lease): it serves no manager group until it renews",
                ago.as_millis()
            ),
            None => "this node holds no membership lease yet (the config group's leader has not confirmed it): it serves no manager group until it does".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_until_granted_then_held_until_its_end_and_never_shortened() {
        let l = ServingLease::new();
        let t0 = Instant::now();
        assert!(!l.held(t0));
        assert!(l
            .check(t0)
            .expect_err("not granted")
            .contains("no membership lease yet"));
        l.extend_to(t0 + Duration::from_secs(2));
        assert!(l.held(t0 + Duration::from_millis(1999)));
        assert!(!l.held(t0 + Duration::from_secs(2)));
        // An older grant arriving late does not shorten it.
        l.extend_to(t0 + Duration::from_secs(1));
        assert!(l.held(t0 + Duration::from_millis(1500)));
        let after = t0 + Duration::from_secs(3);
        assert_eq!(l.expired_for(after), Some(Duration::from_secs(1)));
        assert!(l
            .check(after)
            .expect_err("ran out")
            .contains("ran out 1000 ms ago"));
    }
}
