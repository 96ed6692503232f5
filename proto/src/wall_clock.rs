//! The wall clock, as far as Shoal depends on it: certificate validity windows and file
//! times. Leases never use it (they run on CLOCK_BOOTTIME), so a jump cannot break the
//! lease protocol; but a clock set back makes fresh certificates "not yet valid" and a
//! clock set ahead makes them "expired", and file times jump with it. This module says so
//! in words instead of a TLS alert number.
//!
//! Owns: `JumpDetector` (pure: boot-clock and wall-clock readings in, a jump out),
//! `check_validity` (pure: a certificate window against a wall time), and `watch`, the
//! thin loop a node or mount runs to log a jump once when it happens. Must not: change any
//! clock, or feed the wall clock into lease decisions.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far the two clocks may drift apart between two readings before it counts as a
/// jump (NTP slews by at most 0.5 ms/s; a step of a second or more is a jump).
pub const JUMP_TOLERANCE: Duration = Duration::from_secs(2);

/// A step of the wall clock relative to the boot clock.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Jump {
    /// Seconds the wall clock moved beyond (positive) or behind (negative) elapsed time.
    pub by_secs: f64,
    /// The wall clock after the jump, in seconds since the epoch.
    pub now_unix: i64,
}

impl fmt::Display for Jump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = if self.by_secs >= 0.0 { "ahead" } else { "back" };
        write!(
            f,
            "the wall clock jumped {dir} by {:.0} s (it now reads {}): file times follow it, and \
             certificates may now look expired or not yet valid to this machine; leases are not \
             affected (they use the boot clock). If the jump was not deliberate, set the time \
             (`timedatectl`, `chronyc makestep`) and keep time synchronised",
            self.by_secs.abs(),
            utc(self.now_unix)
        )
    }
}

/// Compares successive readings of the boot clock and the wall clock.
#[derive(Clone, Debug, Default)]
pub struct JumpDetector {
    last: Option<(Duration, Duration)>,
}

impl JumpDetector {
    /// Records a reading (`boot`: time since boot; `wall`: time since the epoch) and
    /// returns the jump since the previous reading, if the wall clock moved more than
    /// `JUMP_TOLERANCE` away from the elapsed boot time.
    pub fn observe(&mut self, boot: Duration, wall: Duration) -> Option<Jump> {
        let prev = self.last.replace((boot, wall));
        let (b0, w0) = prev?;
        let elapsed = boot.saturating_sub(b0).as_secs_f64();
        let moved = wall.as_secs_f64() - w0.as_secs_f64();
        let by = moved - elapsed;
        (by.abs() > JUMP_TOLERANCE.as_secs_f64()).then_some(Jump {
            by_secs: by,
            now_unix: wall.as_secs() as i64,
        })
    }
}

/// Why a certificate is not valid at a wall time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// Valid only from `from` (seconds since the epoch), `ahead` seconds after now.
    NotYet { from: i64, now: i64 },
    /// Expired at `at`, before now.
    Expired { at: i64, now: i64 },
}

/// Whether the window `[not_before, not_after]` (seconds since the epoch) holds `now`.
pub fn check_validity(now: i64, not_before: i64, not_after: i64) -> Result<(), Validity> {
    if now < not_before {
        return Err(Validity::NotYet {
            from: not_before,
            now,
        });
    }
    if now > not_after {
        return Err(Validity::Expired { at: not_after, now });
    }
    Ok(())
}

impl fmt::Display for Validity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Validity::NotYet { from, now } => write!(
                f,
                "is valid only from {}, {} ahead of this machine's clock ({}): the clock is \
                 behind (set back, or never set); set the time (`timedatectl`, `chronyc \
                 makestep`) and retry",
                utc(from),
                span(from - now),
                utc(now)
            ),
            Validity::Expired { at, now } => write!(
                f,
                "expired at {}, {} ago by this machine's clock ({}): if the clock is right, \
                 issue a new certificate; if the clock jumped ahead, set the time \
                 (`timedatectl`, `chronyc makestep`) and retry",
                utc(at),
                span(now - at),
                utc(now)
            ),
        }
    }
}

/// The wall clock now, in seconds since the epoch.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(secs: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{secs} s since the epoch"),
    }
}

/// A duration in the largest whole unit that fits (`3 d`, `5 h`, `12 min`, `40 s`).
fn span(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        s if s >= 2 * 86400 => format!("{} d", s / 86400),
        s if s >= 2 * 3600 => format!("{} h", s / 3600),
        s if s >= 2 * 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// Time since boot (suspend included) and since the epoch, read together.
fn readings() -> (Duration, Duration) {
    use nix::time::{clock_gettime, ClockId};
    let boot = clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|ts| {
            Duration::new(
                ts.tv_sec().max(0) as u64,
                ts.tv_nsec().clamp(0, 999_999_999) as u32,
            )
        })
        .unwrap_or_default();
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (boot, wall)
}

/// Logs an error each time the wall clock jumps, checking every `every`, until `stop`
/// says so. `who` names the node or mount in the message.
pub async fn watch(who: String, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut d = JumpDetector::default();
    loop {
        let (boot, wall) = readings();
        if let Some(j) = d.observe(boot, wall) {
            tracing::error!(target: "shoal_clock", node = %who, "{j}");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn clocks_moving_together_are_no_jump() {
        let mut d = JumpDetector::default();
        assert_eq!(d.observe(S(100), S(1_000_000)), None);
        assert_eq!(d.observe(S(102), S(1_000_002)), None);
        // Slewing within the tolerance is no jump either.
        assert_eq!(d.observe(S(104), S(1_000_005)), None);
    }

    #[test]
    fn a_step_either_way_is_a_jump_reported_once() {
        let mut d = JumpDetector::default();
        d.observe(S(100), S(1_000_000));
        let j = d.observe(S(102), S(1_003_602)).expect("jump ahead");
        assert!((j.by_secs - 3600.0).abs() < 1e-6, "{j:?}");
        assert_eq!(j.now_unix, 1_003_602);
        assert!(j.to_string().contains("ahead by 3600 s"), "{j}");
        // The next reading compares with the jumped clock: nothing new.
        assert_eq!(d.observe(S(104), S(1_003_604)), None);
        let back = d.observe(S(106), S(1_000_006)).expect("jump back");
        assert!(back.by_secs < -3000.0);
        assert!(back.to_string().contains("back by 3600 s"), "{back}");
    }

    #[test]
    fn a_suspend_is_no_jump() {
        // Both clocks count through a suspend: an hour asleep moves both by an hour.
        let mut d = JumpDetector::default();
        d.observe(S(100), S(1_000_000));
        assert_eq!(d.observe(S(3_700), S(1_003_600)), None);
    }

    #[test]
    fn validity_windows() {
        assert_eq!(check_validity(50, 10, 100), Ok(()));
        assert_eq!(check_validity(10, 10, 100), Ok(()));
        assert_eq!(
            check_validity(5, 10, 100),
            Err(Validity::NotYet { from: 10, now: 5 })
        );
        assert_eq!(
            check_validity(101, 10, 100),
            Err(Validity::Expired { at: 100, now: 101 })
        );
        let late = Validity::NotYet {
            from: 1_796_470_000,
            now: 1_796_470_000 - 3 * 86400,
        }
        .to_string();
        assert!(
            late.contains("3 d ahead") && late.contains("timedatectl"),
            "{late}"
        );
        let gone = Validity::Expired {
            at: 1_796_467_788,
            now: 1_796_467_789,
        }
        .to_string();
        assert!(
            gone.contains("1 s ago") && gone.contains("issue a new"),
            "{gone}"
        );
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
    }
}
