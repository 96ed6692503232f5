//! Live-byte accounting of the data segments this manager's extent maps point into, and
//! the reclaim *floors* that decide when a segment nobody references may be deleted.
//!
//! Owns: per data segment `(log, segment)` the bytes of this manager's extents in it (kept
//! up to date by `MetaState::apply`; a byte that several extents reference — extents shared
//! by `copy_file_range` — is live once: each segment keeps its referenced byte ranges with a
//! reference count, `Refs`, derived again from the extent maps after a checkpoint
//! load, so it survives restarts without a record of its own); per log the floor below
//! which this manager accepts no more commits, and the horizon each writing session
//! reported. Pure: no I/O, no clock. Must not: delete anything (the reclaimer does, after
//! asking every manager), or journal anything.
//!
//! # When a segment may be deleted (the argument)
//!
//! A client appends a segment to its log *before* it commits the segment's extents to the
//! managers that own the files, and one segment may hold extents of files on several
//! managers. "No extent references segment S" is therefore not enough: a commit naming S
//! may still be on its way. The reclaimer deletes S of log L only when, for **every**
//! manager M:
//!
//! 1. S is below M's floor for L, `floor_M(L)`: M refuses (EIO, the client then writes the
//!    data again into a new segment) every commit with an extent in a segment of L below
//!    the floor. The floor check and the commit happen under M's state lock, so no commit
//!    naming S is applied once the floor has passed S. Hence below the floor the live bytes
//!    at M can only go down.
//! 2. M counted zero live bytes in S **in a state that was durable when M answered**: M
//!    takes the live bytes under the state lock and answers only after its journal made
//!    everything up to that point durable. An overwrite that made S dead cannot be lost by
//!    a crash of M afterwards and bring the old reference back.
//!
//! A floor only rises when the reclaimer *seals* a log at M (`seal`), and then to at most
//! the horizon of the session writing L, if M knows one that is alive: a writer promises,
//! by reporting horizon H, never to commit an extent in a segment of L below H (the client
//! computes H as the lowest segment of a flight not yet answered, of an accepted commit not
//! yet known durable — it could be sent again after a manager restart — or else its next
//! segment). A session M does not know (never reported, forgotten after its lease ran out,
//! or a writer that crashed) is no obstacle: if it is alive and commits below the floor,
//! that commit is refused and the client rewrites the data (its flight is restored), so
//! nothing it acknowledged is lost. A failed commit is never retried with the same extents.
//! A client promises its horizon right after its `Hello`, before its first write, so a
//! live client meets that refusal only when a promise failed or it was forgotten; the
//! flush that met it reports EIO (an fsync then fails) while the data stays buffered and
//! goes out again in new segments with the next flush.
//!
//! Floors are not journaled. After a restart M's floors are zero (it refuses nothing), and
//! M seals nothing while in its grace period, when clients send again, under reclaimed
//! leases, the commits the previous incarnation accepted without sync; those name segments
//! the clients still pin in their horizons. A resend after grace is impossible (reclaims
//! are refused after grace). The one gap left: a client that M *forgot* (its lease ran out
//! 20 times) but that keeps accepted, unsynced commits, reclaims them from a restarted M
//! and sends them again; if another writer overwrote them durably meanwhile, the resend
//! would name a deleted segment. That resend overwrites newer data in any case (the
//! reclaim protocol's own hazard), so it is not made worse in kind.
//!
//! Extent sharing (`copy_file_range`, `MetaState::plan_copy_range`) adds references to old
//! segments: it checks the floor like a commit, and a copy whose source extents are below
//! their log's floor is refused (the client copies the data instead).

use crate::extent::ExtentMap;
use proto::ids::{LogId, LogPtr, SegmentId, SessionId};
use std::collections::{BTreeMap, HashMap};

/// One data segment of a log.
pub type SegKey = (LogId, SegmentId);

/// Whether a commit may name this extent: `Err` names the first one below its log's floor.
pub type FloorCheck = Result<(), (LogPtr, SegmentId)>;

/// What a manager answers when the reclaimer seals a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// No commit naming a segment of the log below this is accepted any more.
    pub floor: SegmentId,
    /// Every segment of the log that holds live bytes here, with those bytes (also those
    /// at or above the floor, for reports).
    pub live: Vec<(SegmentId, u64)>,
}

/// The byte ranges of one segment that extents reference, with how many reference each
/// piece (disjoint pieces, neighbours with the same count merged), and their total length.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Refs {
    /// start → (end, references), never 0 references.
    pieces: BTreeMap<u32, (u32, u32)>,
    bytes: u64,
}

impl Refs {
    /// Cuts the piece that straddles `at` in two.
    fn split_at(&mut self, at: u32) {
        if let Some((&s, &(e, r))) = self.pieces.range(..at).next_back() {
            if e > at {
                self.pieces.insert(s, (at, r));
                self.pieces.insert(at, (e, r));
            }
        }
    }

    /// Adds one reference to `[from, to)` (`up`) or drops one.
    fn change(&mut self, from: u32, to: u32, up: bool) {
        if from >= to {
            return;
        }
        self.split_at(from);
        self.split_at(to);
        let inside: Vec<(u32, (u32, u32))> =
            self.pieces.range(from..to).map(|(k, v)| (*k, *v)).collect();
        let mut cur = from;
        let mut gaps = Vec::new();
        for (s, (e, r)) in inside {
            if s > cur {
                gaps.push((cur, s));
            }
            cur = e;
            if up {
                self.pieces.insert(s, (e, r + 1));
            } else if r <= 1 {
                self.pieces.remove(&s);
                self.bytes -= (e - s) as u64;
            } else {
                self.pieces.insert(s, (e, r - 1));
            }
        }
        if cur < to {
            gaps.push((cur, to));
        }
        if up {
            for (s, e) in gaps {
                self.pieces.insert(s, (e, 1));
                self.bytes += (e - s) as u64;
            }
        } else {
            debug_assert!(gaps.is_empty(), "dropping unreferenced bytes {gaps:?}");
        }
        self.merge(from, to);
    }

    /// Merges neighbouring pieces with equal counts from the piece before `from` to `to`.
    fn merge(&mut self, from: u32, to: u32) {
        let first = self
            .pieces
            .range(..from)
            .next_back()
            .map(|(k, _)| *k)
            .unwrap_or(from);
        let keys: Vec<u32> = self.pieces.range(first..=to).map(|(k, _)| *k).collect();
        let mut prev: Option<u32> = None;
        for k in keys {
            let Some(&(e, r)) = self.pieces.get(&k) else {
                continue;
            };
            if let Some(p) = prev {
                if let Some(&(pe, pr)) = self.pieces.get(&p) {
                    if pe == k && pr == r {
                        self.pieces.remove(&k);
                        self.pieces.insert(p, (e, r));
                        continue;
                    }
                }
            }
            prev = Some(k);
        }
    }
}

/// Live bytes per segment, floors and writer horizons.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    live: BTreeMap<SegKey, Refs>,
    floors: HashMap<LogId, SegmentId>,
    /// Per log: the session that reported writing it and its horizon.
    writers: HashMap<LogId, (SessionId, SegmentId)>,
}

/// Only the live bytes are compared: floors and horizons are volatile (not part of the
/// durable state a recovery reproduces).
impl PartialEq for Usage {
    fn eq(&self, other: &Usage) -> bool {
        self.live == other.live
    }
}

impl Usage {
    /// One more extent references the bytes `p` points at.
    pub fn add(&mut self, p: &LogPtr) {
        self.change(p, true);
    }

    /// One extent fewer references the bytes `p` points at.
    pub fn remove(&mut self, p: &LogPtr) {
        self.change(p, false);
    }

    fn change(&mut self, p: &LogPtr, up: bool) {
        if p.len == 0 {
            return;
        }
        let key = (p.seg.log, p.seg.segment);
        let refs = self.live.entry(key).or_default();
        refs.change(p.offset, p.offset.saturating_add(p.len), up);
        if refs.pieces.is_empty() {
            self.live.remove(&key);
        }
    }
}

impl Usage {
    /// Counts every extent of `map` (`sign` > 0 adds its references, else drops them).
    pub fn count_map(&mut self, map: &ExtentMap, sign: i64) {
        for e in map.iter() {
            self.change(&e.ptr, sign > 0);
        }
    }

    /// Live bytes of one segment (bytes several extents share count once).
    pub fn live(&self, log: LogId, segment: SegmentId) -> u64 {
        self.live.get(&(log, segment)).map_or(0, |r| r.bytes)
    }

    /// Every segment with live bytes, in (log, segment) order.
    pub fn segments(&self) -> impl Iterator<Item = (SegKey, u64)> + '_ {
        self.live.iter().map(|(k, v)| (*k, v.bytes))
    }

    /// Total live bytes.
    pub fn total(&self) -> u64 {
        self.live.values().map(|r| r.bytes).sum()
    }

    /// Forgets every live count (before deriving them again).
    pub fn clear_live(&mut self) {
        self.live.clear();
    }

    pub fn floor(&self, log: LogId) -> SegmentId {
        self.floors.get(&log).copied().unwrap_or(SegmentId(0))
    }

    /// Whether a commit may name these extents (none below its log's floor).
    pub fn check<'a>(&self, ptrs: impl IntoIterator<Item = &'a LogPtr>) -> FloorCheck {
        for p in ptrs {
            let floor = self.floor(p.seg.log);
            if p.seg.segment < floor {
                return Err((*p, floor));
            }
        }
        Ok(())
    }

    /// Session `session` writes `log` and will never commit below `horizon`. A horizon
    /// lower than one the same session reported before is kept at the higher one (a
    /// promise is not taken back); another session replaces the old writer.
    pub fn report(&mut self, session: SessionId, log: LogId, horizon: SegmentId) {
        let e = self.writers.entry(log).or_insert((session, horizon));
        if e.0 == session {
            e.1 = e.1.max(horizon);
        } else {
            *e = (session, horizon);
        }
    }

    /// The writer of `log` this manager knows of, with its horizon.
    pub fn writer(&self, log: LogId) -> Option<(SessionId, SegmentId)> {
        self.writers.get(&log).copied()
    }

    /// Seals `log` up to `upto` (the reclaimer saw no segment at or above it... or wants no
    /// more): the floor rises to `upto`, capped by the horizon of its writer if `alive`
    /// says that session is still known; it never falls. In `grace` (after a restart,
    /// clients may send again what the previous incarnation accepted) nothing rises.
    /// Returns the floor and the live bytes of every segment of the log. `upto` 0 seals
    /// nothing (a report).
    pub fn seal(
        &mut self,
        log: LogId,
        upto: SegmentId,
        alive: impl Fn(SessionId) -> bool,
        grace: bool,
    ) -> Sealed {
        if !grace {
            let mut target = upto;
            match self.writers.get(&log) {
                Some((s, h)) if alive(*s) => target = target.min(*h),
                Some(_) => {
                    self.writers.remove(&log);
                }
                None => {}
            }
            let floor = self.floors.entry(log).or_insert(SegmentId(0));
            *floor = (*floor).max(target);
        }
        let floor = self.floor(log);
        let live = self
            .live
            .range((log, SegmentId(0))..=(log, SegmentId(u64::MAX)))
            .map(|((_, s), r)| (*s, r.bytes))
            .collect();
        Sealed { floor, live }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::ids::SegmentAddr;

    fn ptr(log: u64, seg: u64, len: u32) -> LogPtr {
        at(log, seg, 0, len)
    }

    fn at(log: u64, seg: u64, offset: u32, len: u32) -> LogPtr {
        LogPtr {
            seg: SegmentAddr {
                log: LogId(log),
                segment: SegmentId(seg),
                len: 1 << 20,
                k: 4,
                m: 2,
                nodes: 0,
            },
            offset,
            len,
        }
    }

    #[test]
    fn counts_go_up_and_down_and_vanish_at_zero() {
        let mut u = Usage::default();
        u.add(&at(1, 3, 0, 100));
        u.add(&at(1, 3, 100, 50));
        assert_eq!(u.live(LogId(1), SegmentId(3)), 150);
        u.remove(&at(1, 3, 0, 100));
        u.remove(&at(1, 3, 100, 50));
        assert_eq!(u.live(LogId(1), SegmentId(3)), 0);
        assert_eq!(u.segments().count(), 0);
    }

    #[test]
    fn shared_bytes_are_live_once_until_their_last_reference_goes() {
        let mut u = Usage::default();
        let seg = |u: &Usage| u.live(LogId(1), SegmentId(3));
        u.add(&at(1, 3, 0, 100));
        // A copy shares bytes 20..70 (two pieces of it, as a trimmed extent would).
        u.add(&at(1, 3, 20, 30));
        u.add(&at(1, 3, 50, 20));
        assert_eq!(seg(&u), 100, "shared bytes count once");
        // The original is overwritten: the shared middle stays live.
        u.remove(&at(1, 3, 0, 100));
        assert_eq!(seg(&u), 50);
        u.remove(&at(1, 3, 20, 30));
        assert_eq!(seg(&u), 20);
        u.remove(&at(1, 3, 50, 20));
        assert_eq!(seg(&u), 0);
        assert_eq!(u.segments().count(), 0);
        // Merged pieces keep the structure small: adjacent single references are one.
        for i in 0..100 {
            u.add(&at(1, 4, i * 10, 10));
        }
        assert_eq!(
            u.live
                .get(&(LogId(1), SegmentId(4)))
                .map(|r| r.pieces.len()),
            Some(1)
        );
    }

    proptest::proptest! {
        /// The live bytes of a segment equal the bytes referenced at least once, under any
        /// order of references added and dropped.
        #[test]
        fn live_bytes_are_the_union_of_references(refs in proptest::collection::vec((0u32..200, 1u32..60), 1..30), drop_mask in proptest::collection::vec(proptest::bool::ANY, 30)) {
            let mut u = Usage::default();
            let mut model = vec![0u32; 260];
            for (o, l) in &refs {
                u.add(&at(1, 1, *o, *l));
                for b in *o..*o + *l { model[b as usize] += 1; }
            }
            for ((o, l), d) in refs.iter().zip(&drop_mask) {
                if *d {
                    u.remove(&at(1, 1, *o, *l));
                    for b in *o..*o + *l { model[b as usize] -= 1; }
                }
                let want = model.iter().filter(|c| **c > 0).count() as u64;
                proptest::prop_assert_eq!(u.live(LogId(1), SegmentId(1)), want);
            }
        }
    }

    #[test]
    fn seal_rises_to_upto_without_a_writer_and_never_falls() {
        let mut u = Usage::default();
        u.add(&ptr(1, 2, 10));
        u.add(&ptr(1, 7, 10));
        let s = u.seal(LogId(1), SegmentId(5), |_| true, false);
        assert_eq!(s.floor, SegmentId(5));
        assert_eq!(s.live, vec![(SegmentId(2), 10), (SegmentId(7), 10)]);
        let s = u.seal(LogId(1), SegmentId(3), |_| true, false);
        assert_eq!(s.floor, SegmentId(5));
        assert!(u.check([&ptr(1, 4, 1)]).is_err());
        assert!(u.check([&ptr(1, 5, 1)]).is_ok());
        assert!(u.check([&ptr(2, 0, 1)]).is_ok());
    }

    #[test]
    fn a_live_writer_caps_the_floor_at_its_horizon() {
        let mut u = Usage::default();
        u.report(SessionId(9), LogId(1), SegmentId(4));
        let s = u.seal(LogId(1), SegmentId(10), |s| s == SessionId(9), false);
        assert_eq!(s.floor, SegmentId(4));
        // A lower horizon from the same session does not take the promise back.
        u.report(SessionId(9), LogId(1), SegmentId(2));
        assert_eq!(u.writer(LogId(1)), Some((SessionId(9), SegmentId(4))));
        u.report(SessionId(9), LogId(1), SegmentId(8));
        let s = u.seal(LogId(1), SegmentId(10), |s| s == SessionId(9), false);
        assert_eq!(s.floor, SegmentId(8));
    }

    #[test]
    fn a_forgotten_writer_does_not_hold_the_floor() {
        let mut u = Usage::default();
        u.report(SessionId(9), LogId(1), SegmentId(4));
        let s = u.seal(LogId(1), SegmentId(10), |_| false, false);
        assert_eq!(s.floor, SegmentId(10));
        assert_eq!(u.writer(LogId(1)), None);
    }

    #[test]
    fn nothing_is_sealed_in_grace() {
        let mut u = Usage::default();
        let s = u.seal(LogId(1), SegmentId(10), |_| false, true);
        assert_eq!(s.floor, SegmentId(0));
        assert!(u.check([&ptr(1, 0, 1)]).is_ok());
    }
}
