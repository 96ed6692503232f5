//! LFS cost-benefit cleaning policy (Rosenblum and Ousterhout, "The Design and
//! Implementation of a Log-Structured File System"): cleaning a segment of utilisation `u`
//! costs reading it and writing `u` of it again, and frees `1 - u`; cold (old) free space
//! is worth more than hot free space, which would soon free itself. A segment's score is
//! `(1 - u) * age / (1 + u)`; the best scores are cleaned first.
//!
//! Owns the choice only: utilisation, age and free space in, segments out. Pure: no clock
//! (ages come in), no I/O. Must not: decide reclaimability (a segment at `u = 0` is the
//! reclaimer's, not the cleaner's) or pace the work.

use crate::usage::SegKey;

/// One segment the cleaner may clean.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub seg: SegKey,
    /// Bytes of the segment (before striping).
    pub size: u64,
    /// Live bytes in it, summed over every manager.
    pub live: u64,
    /// How long ago its data was written (or first seen by the cleaner), in seconds.
    pub age_secs: u64,
}

impl Candidate {
    /// Utilisation in [0, 1].
    pub fn utilisation(&self) -> f64 {
        if self.size == 0 {
            return 1.0;
        }
        (self.live as f64 / self.size as f64).clamp(0.0, 1.0)
    }

    /// The cost-benefit score (higher is cleaned first).
    pub fn score(&self) -> f64 {
        let u = self.utilisation();
        (1.0 - u) * (self.age_secs as f64 + 1.0) / (1.0 + u)
    }
}

/// The knobs of the policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// Clean in the background only when the free fraction of the cluster is below this.
    pub start_below_free: f64,
    /// Never clean a segment fuller than this: rewriting it would cost more than it frees
    /// (at 0.8, moving 4 bytes frees 1).
    pub max_utilisation: f64,
    /// Stop choosing once this many live bytes are to be moved in one pass.
    pub batch_live_bytes: u64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            start_below_free: 0.2,
            max_utilisation: 0.8,
            batch_live_bytes: 64 << 20,
        }
    }
}

/// Whether a background pass should run now (`forced` is `shoal clean --now`).
pub fn should_run(p: &Policy, free_fraction: f64, forced: bool) -> bool {
    forced || free_fraction < p.start_below_free
}

/// The segments to clean in one pass, best score first: only partly live ones (fully dead
/// ones are reclaimed without copying), at most `max_utilisation` full, until
/// `batch_live_bytes` of live data would be moved (at least one segment if any qualifies).
pub fn choose(p: &Policy, candidates: &[Candidate]) -> Vec<Candidate> {
    let mut c: Vec<Candidate> = candidates
        .iter()
        .filter(|c| c.live > 0 && c.utilisation() <= p.max_utilisation)
        .copied()
        .collect();
    c.sort_by(|a, b| {
        b.score()
            .total_cmp(&a.score())
            .then_with(|| a.seg.cmp(&b.seg))
    });
    let mut out = Vec::new();
    let mut moved = 0u64;
    for cand in c {
        if !out.is_empty() && moved + cand.live > p.batch_live_bytes {
            break;
        }
        moved += cand.live;
        out.push(cand);
    }
    out
}

/// Write amplification of a workload: bytes written to the log (by clients and the
/// cleaner) per byte clients wrote. 1.0 means the cleaner copied nothing.
pub fn write_amplification(client_bytes: u64, cleaner_bytes: u64) -> f64 {
    if client_bytes == 0 {
        return 1.0;
    }
    (client_bytes + cleaner_bytes) as f64 / client_bytes as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::ids::{LogId, SegmentId};

    fn cand(seg: u64, live: u64, age: u64) -> Candidate {
        Candidate {
            seg: (LogId::client(1), SegmentId(seg)),
            size: 100,
            live,
            age_secs: age,
        }
    }

    #[test]
    fn emptier_and_older_segments_score_higher() {
        assert!(cand(0, 10, 100).score() > cand(1, 50, 100).score());
        assert!(cand(0, 50, 1000).score() > cand(1, 50, 10).score());
        // Cold and half full beats hot and nearly empty.
        assert!(cand(0, 50, 10_000).score() > cand(1, 10, 10).score());
    }

    #[test]
    fn choose_skips_dead_and_full_segments_and_respects_the_batch() {
        let p = Policy {
            start_below_free: 0.2,
            max_utilisation: 0.8,
            batch_live_bytes: 60,
        };
        let got = choose(
            &p,
            &[
                cand(0, 0, 100),
                cand(1, 90, 100),
                cand(2, 30, 100),
                cand(3, 20, 100),
                cand(4, 40, 100),
            ],
        );
        let segs: Vec<u64> = got.iter().map(|c| c.seg.1 .0).collect();
        assert_eq!(segs, vec![3, 2]);
    }

    #[test]
    fn one_segment_is_chosen_even_past_the_batch() {
        let p = Policy {
            batch_live_bytes: 1,
            ..Policy::default()
        };
        assert_eq!(choose(&p, &[cand(0, 50, 1)]).len(), 1);
    }

    #[test]
    fn runs_below_the_free_threshold_or_when_forced() {
        let p = Policy::default();
        assert!(!should_run(&p, 0.5, false));
        assert!(should_run(&p, 0.1, false));
        assert!(should_run(&p, 0.5, true));
    }

    #[test]
    fn write_amplification_counts_the_cleaners_copies() {
        assert_eq!(write_amplification(100, 0), 1.0);
        assert_eq!(write_amplification(100, 50), 1.5);
    }
}
