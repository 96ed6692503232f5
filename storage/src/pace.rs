//! Nice pacing for background work (the cleaner, background rebuild, `shoal rebuild --nice`
//! and the background scrub), in the
//! spirit of TCP-Nice (Venkataramani, Kokku, Dahlin, OSDI 2002): background work measures
//! the latency of its own requests, treats a rise above its least-loaded latency as a sign
//! of foreground load, and then backs off multiplicatively; with no sign of load it grows
//! additively back to using all idle capacity.
//!
//! Owns the decision only: latency samples in, a *share* out (the fraction of wall time the
//! worker may spend working; 1.0 means back to back, no pause). Pure: no clock (elapsed
//! times come in), no I/O, no sleeping (the worker sleeps `pause_after`). Must not: know
//! what the work is.
//!
//! The rule, per round of samples (Nice's per-RTT window): a sample is *congested* when its
//! per-byte latency exceeds `min + threshold * (max - min)` of the latencies seen so far;
//! when more than `fraction` of a round's samples are congested the share halves (never
//! below `min_share`), otherwise it grows by `increase` (never above 1).

use std::time::Duration;

/// The knobs (Nice's defaults: threshold 0.2, fraction 0.5).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NiceConfig {
    pub threshold: f64,
    pub fraction: f64,
    /// The least share: background work never stops completely.
    pub min_share: f64,
    /// Additive increase per uncongested round.
    pub increase: f64,
    /// Samples per round.
    pub round: u32,
}

impl Default for NiceConfig {
    fn default() -> NiceConfig {
        NiceConfig {
            threshold: 0.2,
            fraction: 0.5,
            min_share: 1.0 / 64.0,
            increase: 0.125,
            round: 4,
        }
    }
}

/// The controller of one background worker.
#[derive(Clone, Debug)]
pub struct Nice {
    cfg: NiceConfig,
    /// Least and largest per-byte latency seen (seconds per byte).
    min: Option<f64>,
    max: Option<f64>,
    share: f64,
    in_round: u32,
    congested: u32,
}

impl Nice {
    /// Starts at full share: idle capacity is used until a rise in latency says otherwise.
    pub fn new(cfg: NiceConfig) -> Nice {
        Nice {
            cfg,
            min: None,
            max: None,
            share: 1.0,
            in_round: 0,
            congested: 0,
        }
    }

    /// The fraction of wall time the worker may spend working now.
    pub fn share(&self) -> f64 {
        self.share
    }

    /// One request of the worker moved `bytes` in `elapsed`.
    pub fn sample(&mut self, bytes: u64, elapsed: Duration) {
        let per_byte = elapsed.as_secs_f64() / bytes.max(1) as f64;
        let min = self.min.map_or(per_byte, |m| m.min(per_byte));
        let max = self.max.map_or(per_byte, |m| m.max(per_byte));
        self.min = Some(min);
        self.max = Some(max);
        if per_byte > min + self.cfg.threshold * (max - min) && max > min {
            self.congested += 1;
        }
        self.in_round += 1;
        if self.in_round >= self.cfg.round.max(1) {
            if self.congested as f64 > self.cfg.fraction * self.in_round as f64 {
                self.share = (self.share / 2.0).max(self.cfg.min_share);
            } else {
                self.share = (self.share + self.cfg.increase).min(1.0);
            }
            self.in_round = 0;
            self.congested = 0;
        }
    }

    /// How long to rest after working for `busy`, so that work takes `share` of the time.
    pub fn pause_after(&self, busy: Duration) -> Duration {
        if self.share >= 1.0 {
            return Duration::ZERO;
        }
        busy.mul_f64((1.0 - self.share) / self.share)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn an_idle_system_is_used_fully() {
        let mut n = Nice::new(NiceConfig::default());
        for _ in 0..100 {
            n.sample(1 << 20, ms(10));
        }
        assert_eq!(n.share(), 1.0);
        assert_eq!(n.pause_after(ms(100)), Duration::ZERO);
    }

    #[test]
    fn rising_latency_backs_off_multiplicatively_and_recovers_additively() {
        let cfg = NiceConfig::default();
        let mut n = Nice::new(cfg);
        for _ in 0..8 {
            n.sample(1 << 20, ms(10));
        }
        // Foreground load: our requests take five times as long.
        for _ in 0..cfg.round {
            n.sample(1 << 20, ms(50));
        }
        assert_eq!(n.share(), 0.5);
        for _ in 0..cfg.round {
            n.sample(1 << 20, ms(50));
        }
        assert_eq!(n.share(), 0.25);
        // Working 100 ms at a quarter share means resting 300 ms.
        assert_eq!(n.pause_after(ms(100)), ms(300));
        // The load goes away: back up one step per round.
        for _ in 0..cfg.round {
            n.sample(1 << 20, ms(10));
        }
        assert_eq!(n.share(), 0.375);
        for _ in 0..20 * cfg.round {
            n.sample(1 << 20, ms(10));
        }
        assert_eq!(n.share(), 1.0);
    }

    #[test]
    fn the_share_never_reaches_zero() {
        let cfg = NiceConfig::default();
        let mut n = Nice::new(cfg);
        n.sample(1 << 20, ms(1));
        for i in 0..400 {
            n.sample(1 << 20, ms(100 + i));
        }
        assert_eq!(n.share(), cfg.min_share);
        assert!(n.pause_after(ms(10)) < Duration::from_secs(1));
    }

    #[test]
    fn latency_is_compared_per_byte() {
        let mut n = Nice::new(NiceConfig::default());
        // Big requests take longer without any load.
        for i in 0..40 {
            let (bytes, t) = if i % 2 == 0 {
                (1 << 20, ms(10))
            } else {
                (8 << 20, ms(80))
            };
            n.sample(bytes, t);
        }
        assert_eq!(n.share(), 1.0);
    }

    #[test]
    fn a_few_slow_samples_in_a_round_are_not_congestion() {
        let cfg = NiceConfig::default();
        let mut n = Nice::new(cfg);
        for _ in 0..8 {
            n.sample(1 << 20, ms(10));
        }
        // One slow request in four (below `fraction`) does not halve the share.
        for _ in 0..10 {
            n.sample(1 << 20, ms(60));
            for _ in 1..cfg.round {
                n.sample(1 << 20, ms(10));
            }
        }
        assert_eq!(n.share(), 1.0);
    }
}
