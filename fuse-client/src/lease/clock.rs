//! `BootInstant`: a point in time on CLOCK_BOOTTIME, the clock leases are measured on.
//!
//! Owns: reading the clock. `std::time::Instant` is CLOCK_MONOTONIC on Linux, which stops
//! while the machine is suspended: a client resumed after a suspend longer than its lease
//! would still believe it holds a lease the manager gave up on long ago. CLOCK_BOOTTIME
//! keeps counting through suspend. Must not: be used by the pure engine directly (time is
//! passed in), or be compared with `Instant`s.

use std::time::Duration;

/// Time since boot, suspend included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BootInstant(Duration);

impl BootInstant {
    /// Now, on CLOCK_BOOTTIME (CLOCK_MONOTONIC if that is unavailable, which on Linux it
    /// never is since 2.6.39).
    pub fn now() -> BootInstant {
        use nix::time::{clock_gettime, ClockId};
        let ts = clock_gettime(ClockId::CLOCK_BOOTTIME)
            .or_else(|_| clock_gettime(ClockId::CLOCK_MONOTONIC))
            .unwrap_or_else(|_| nix::sys::time::TimeSpec::new(0, 0));
        BootInstant(Duration::new(
            ts.tv_sec().max(0) as u64,
            ts.tv_nsec().clamp(0, 999_999_999) as u32,
        ))
    }

    /// A point `d` after boot (tests and models build their own timelines).
    pub const fn from_boot(d: Duration) -> BootInstant {
        BootInstant(d)
    }

    pub fn since_boot(self) -> Duration {
        self.0
    }

    /// How long after `earlier` this is (zero if it is not after).
    pub fn saturating_duration_since(self, earlier: BootInstant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    pub fn elapsed(self) -> Duration {
        BootInstant::now().saturating_duration_since(self)
    }
}

impl std::ops::Add<Duration> for BootInstant {
    type Output = BootInstant;
    fn add(self, d: Duration) -> BootInstant {
        BootInstant(self.0.saturating_add(d))
    }
}

impl std::ops::Sub<Duration> for BootInstant {
    type Output = BootInstant;
    fn sub(self, d: Duration) -> BootInstant {
        BootInstant(self.0.saturating_sub(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_clock_moves_forward() {
        let a = BootInstant::now();
        let b = BootInstant::now();
        assert!(b >= a);
        assert!(a.since_boot() > Duration::ZERO);
        assert_eq!(
            (a + Duration::from_secs(1)).saturating_duration_since(a),
            Duration::from_secs(1)
        );
        assert_eq!(
            a.saturating_duration_since(a + Duration::from_secs(1)),
            Duration::ZERO
        );
    }
}
