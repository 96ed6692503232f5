//! The reclaim horizon of this client's log: the lowest segment whose extents this client
//! may still commit. Segments below it that no manager references can be deleted (see
//! `manager::usage` for the whole argument); the client promises it to every manager with
//! `LogHorizon`.
//!
//! Owns: the pins (segments of flights whose commits are not answered yet, and of commits
//! being sent again) and the log's next segment, under one lock so that a horizon is a
//! consistent snapshot. Accepted commits not yet known durable are pinned by the write
//! verifier (`Unsynced::min_segment`), since they may be sent again after a manager
//! restart. Pure apart from the lock: no I/O. Must not: decide about deletion.

use proto::ids::SegmentId;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
struct Inner {
    /// Pinned segment → how many pins.
    pins: BTreeMap<u64, usize>,
    /// The id the log writer gives its next segment (0 before the first append).
    next: u64,
}

/// Pins and the next segment of one log.
#[derive(Debug, Default)]
pub struct Horizon {
    inner: Mutex<Inner>,
}

/// Keeps a segment (and everything above it) out of the horizon while alive.
#[must_use]
pub struct Pin<'a> {
    horizon: &'a Horizon,
    seg: u64,
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        let mut g = self.horizon.lock();
        if let Some(n) = g.pins.get_mut(&self.seg) {
            *n -= 1;
            if *n == 0 {
                g.pins.remove(&self.seg);
            }
        }
    }
}

impl Horizon {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pins `seg` until the guard is dropped.
    pub fn pin(&self, seg: SegmentId) -> Pin<'_> {
        *self.lock().pins.entry(seg.0).or_insert(0) += 1;
        Pin {
            horizon: self,
            seg: seg.0,
        }
    }

    /// The log writer will next append `next` (call under the log lock after appends).
    pub fn set_next(&self, next: SegmentId) {
        let mut g = self.lock();
        g.next = g.next.max(next.0);
    }

    /// The horizon: the lowest pinned segment, `unsynced` (the lowest segment of an accepted
    /// commit not yet durable), or the next segment, whichever is lowest.
    pub fn get(&self, unsynced: Option<SegmentId>) -> SegmentId {
        let g = self.lock();
        let mut h = g.next;
        if let Some((s, _)) = g.pins.first_key_value() {
            h = h.min(*s);
        }
        if let Some(u) = unsynced {
            h = h.min(u.0);
        }
        SegmentId(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_hold_the_horizon_until_dropped() {
        let h = Horizon::default();
        assert_eq!(h.get(None), SegmentId(0));
        let a = h.pin(SegmentId(3));
        h.set_next(SegmentId(7));
        let b = h.pin(SegmentId(3));
        let c = h.pin(SegmentId(5));
        assert_eq!(h.get(None), SegmentId(3));
        drop(a);
        assert_eq!(h.get(None), SegmentId(3));
        drop(b);
        assert_eq!(h.get(None), SegmentId(5));
        assert_eq!(h.get(Some(SegmentId(4))), SegmentId(4));
        drop(c);
        assert_eq!(h.get(None), SegmentId(7));
        h.set_next(SegmentId(2));
        assert_eq!(h.get(None), SegmentId(7));
    }
}
