//! Rate limits for warnings that can repeat once per request, segment or connection (a
//! dead storage server, a client refused on every call, a peer that keeps dialling with a
//! revoked key), so that they cannot bury the other log lines.
//!
//! Owns: `Window`, the pure per-call-site rule (at most `BURST` lines per `PERIOD`; the
//! first line after a quiet spell says how many were left out), and `warn_limited!`, the
//! macro that applies it around `tracing::warn!`. Must not: drop the first occurrence of
//! anything, or limit errors that happen once (use plain `warn!`/`error!` for those).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Lines of one call site shown per period.
pub const BURST: u32 = 5;
/// The period the burst is counted over.
pub const PERIOD: Duration = Duration::from_secs(60);

/// What one call site has logged in its current period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    start: Duration,
    shown: u32,
    suppressed: u64,
}

impl Window {
    pub fn new(now: Duration) -> Window {
        Window {
            start: now,
            shown: 0,
            suppressed: 0,
        }
    }

    /// One more line at `now` (time on any monotonic clock): `Some(n)` to show it,
    /// reporting `n` lines left out since the last one shown; `None` to leave it out.
    pub fn admit(&mut self, now: Duration) -> Option<u64> {
        if now.saturating_sub(self.start) >= PERIOD {
            let left_out = self.suppressed;
            *self = Window::new(now);
            self.shown = 1;
            return Some(left_out);
        }
        if self.shown < BURST {
            self.shown += 1;
            return Some(0);
        }
        self.suppressed += 1;
        None
    }
}

fn windows() -> &'static Mutex<HashMap<&'static str, Window>> {
    static W: OnceLock<Mutex<HashMap<&'static str, Window>>> = OnceLock::new();
    W.get_or_init(|| Mutex::new(HashMap::new()))
}

fn since_start() -> Duration {
    static T0: OnceLock<Instant> = OnceLock::new();
    T0.get_or_init(Instant::now).elapsed()
}

/// Whether call site `site` may log now: `Some(lines left out before this one)`.
pub fn admit(site: &'static str) -> Option<u64> {
    let now = since_start();
    let mut w = windows().lock().unwrap_or_else(|e| e.into_inner());
    w.entry(site).or_insert_with(|| Window::new(now)).admit(now)
}

/// `tracing::warn!` limited per call site (see the module doc). The line shown after a
/// quiet spell carries `repeats_left_out = N`.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => {
        if let Some(left_out) = $crate::log_limit::admit(concat!(file!(), ":", line!())) {
            if left_out > 0 {
                tracing::warn!(repeats_left_out = left_out, $($arg)+);
            } else {
                tracing::warn!($($arg)+);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_shown_then_lines_are_counted_until_the_period_ends() {
        let t = Duration::from_secs;
        let mut w = Window::new(t(0));
        for _ in 0..BURST {
            assert_eq!(w.admit(t(1)), Some(0));
        }
        for _ in 0..7 {
            assert_eq!(w.admit(t(30)), None);
        }
        // The first line of the next period says how many were left out.
        assert_eq!(w.admit(t(61)), Some(7));
        for _ in 1..BURST {
            assert_eq!(w.admit(t(62)), Some(0));
        }
        assert_eq!(w.admit(t(63)), None);
    }

    #[test]
    fn call_sites_are_limited_separately() {
        for _ in 0..BURST {
            assert!(admit("test:a").is_some());
        }
        assert_eq!(admit("test:a"), None);
        assert_eq!(admit("test:b"), Some(0));
    }
}
