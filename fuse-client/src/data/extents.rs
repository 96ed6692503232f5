//! From a file range to log reads: which parts of an extent map cover which bytes.
//!
//! Owns the pure mapping (extents → sub-ranged `LogPtr`s, holes implicit) and the bounded
//! per-inode cache of extent lists fetched from the manager, by window, with their
//! end-to-end checksums and when their holder hint is due to be asked again
//! (`hint_due`). Must not do I/O (the time comes in).

use proto::chunksum::ChunkSums;
use proto::ids::{InodeId, LogPtr};
use proto::msg::Extent;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Extent lists are fetched and cached per window of this many file bytes.
pub const WINDOW: u64 = 64 << 20;
/// How many windows the cache keeps before it starts over.
const MAX_WINDOWS: usize = 4096;
/// How long a cached window's holder hint is used before a miss asks the manager again:
/// its view changes as other clients read the window and report what they cache and
/// evict (in batches, once a second), while the extents may stay cached for long.
pub const HINT_TTL: Duration = Duration::from_secs(1);

/// Read `ptr` and place its bytes at `buf_off` of the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub buf_off: u64,
    pub ptr: LogPtr,
}

/// The log reads that fill file bytes `[off, off + len)`. Bytes no piece covers are holes
/// (zeros). Pieces come in extent order; where extents overlap, a later piece must be
/// applied after an earlier one (the manager lists newer extents later, or none overlap).
pub fn map_range(extents: &[Extent], off: u64, len: u64) -> Vec<Piece> {
    let end = off.saturating_add(len);
    let mut out = Vec::new();
    for e in extents {
        let es = e.offset;
        let ee = es.saturating_add(e.ptr.len as u64);
        if ee <= off || es >= end {
            continue;
        }
        let from = es.max(off);
        let to = ee.min(end);
        let skip = (from - es) as u32;
        out.push(Piece {
            buf_off: from - off,
            ptr: LogPtr {
                seg: e.ptr.seg,
                offset: e.ptr.offset + skip,
                len: (to - from) as u32,
            },
        });
    }
    out
}

/// The byte ranges of `[0, len)` that no piece covers (for tests and diagnostics).
pub fn holes(pieces: &[Piece], len: u64) -> Vec<(u64, u64)> {
    let mut covered: Vec<(u64, u64)> = pieces
        .iter()
        .map(|p| (p.buf_off, p.buf_off + p.ptr.len as u64))
        .collect();
    covered.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0;
    for (s, e) in covered {
        if s > at {
            out.push((at, s));
        }
        at = at.max(e);
    }
    if at < len {
        out.push((at, len));
    }
    out
}

/// The windows that hold `[off, off + len)`.
pub fn windows(off: u64, len: u64) -> std::ops::Range<u64> {
    if len == 0 {
        return off / WINDOW..off / WINDOW;
    }
    off / WINDOW..(off + len).div_ceil(WINDOW)
}

/// Extent lists per `(inode, window)`, dropped on our own writes and truncates.
#[derive(Default)]
pub struct ExtentCache {
    /// Each list with when its hint was fetched (or last found due).
    windows: HashMap<(InodeId, u64), (Arc<ExtentList>, Instant)>,
}

/// A window's extents as the manager listed them, with the end-to-end checksums
/// (`proto::chunksum`) it holds for the chunks they touch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtentList {
    pub extents: Vec<Extent>,
    pub sums: Vec<ChunkSums>,
    /// Other clients that fetched this window lately (the manager's cooperative-caching
    /// hint): they may cache its blocks.
    pub holders: Vec<std::net::SocketAddr>,
}

impl ExtentList {
    /// A list whose checksums are sorted by segment (for `sums_for`).
    pub fn new(extents: Vec<Extent>, mut sums: Vec<ChunkSums>) -> ExtentList {
        sums.sort_by_key(|s| (s.log, s.segment, s.first));
        ExtentList {
            extents,
            sums,
            holders: Vec::new(),
        }
    }

    /// This list with the manager's hint of peers that may cache its blocks.
    pub fn with_holders(mut self, holders: Vec<std::net::SocketAddr>) -> ExtentList {
        self.holders = holders;
        self
    }

    /// The one log range that holds all of file bytes `[off, off + len)`, if one extent
    /// covers them whole (no hole, no overlapping older extent): the immutable address
    /// under which those bytes may be cached and served to peers.
    pub fn single_ptr(&self, off: u64, len: u64) -> Option<LogPtr> {
        match map_range(&self.extents, off, len)[..] {
            [p] if p.buf_off == 0 && p.ptr.len as u64 == len => Some(p.ptr),
            _ => None,
        }
    }

    /// Just the checksums a read of `ptr` needs, if the list has them (else it is read
    /// unchecked: extents written before checksums were kept).
    pub fn sums_for(&self, ptr: &LogPtr) -> Option<ChunkSums> {
        let key = (ptr.seg.log, ptr.seg.segment);
        let from = self.sums.partition_point(|s| (s.log, s.segment) < key);
        self.sums[from..]
            .iter()
            .take_while(|s| (s.log, s.segment) == key)
            .find_map(|s| s.for_ptr(ptr))
    }
}

impl ExtentCache {
    pub fn get(&self, ino: InodeId, window: u64) -> Option<Arc<ExtentList>> {
        self.windows.get(&(ino, window)).map(|(l, _)| l.clone())
    }

    /// Caches `extents` of a window, fetched from the manager at `now`.
    pub fn insert(&mut self, ino: InodeId, window: u64, extents: Arc<ExtentList>, now: Instant) {
        if self.windows.len() >= MAX_WINDOWS {
            self.windows.clear();
        }
        self.windows.insert((ino, window), (extents, now));
    }

    /// Whether the cached hint of a window is older than `HINT_TTL` at `now`, so that the
    /// caller should ask the manager again; if so it counts as fetched now (one caller
    /// asks, the next in `HINT_TTL`). A window not cached is fetched anyway: false.
    pub fn hint_due(&mut self, ino: InodeId, window: u64, now: Instant) -> bool {
        match self.windows.get_mut(&(ino, window)) {
            Some((_, at)) if now.saturating_duration_since(*at) >= HINT_TTL => {
                *at = now;
                true
            }
            _ => false,
        }
    }

    pub fn invalidate_where(&mut self, pred: impl Fn(InodeId) -> bool) {
        self.windows.retain(|(i, _), _| !pred(*i));
    }

    pub fn invalidate(&mut self, ino: InodeId) {
        self.windows.retain(|(i, _), _| *i != ino);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::ids::{LogId, SegmentAddr, SegmentId};

    fn ext(offset: u64, seg: u64, at: u32, len: u32) -> Extent {
        let seg = SegmentAddr {
            log: LogId(1),
            segment: SegmentId(seg),
            len: 1 << 20,
            k: 4,
            m: 2,
            nodes: 0,
        };
        Extent {
            offset,
            ptr: LogPtr {
                seg,
                offset: at,
                len,
            },
        }
    }

    #[test]
    fn a_piece_gets_just_the_checksums_of_its_chunks() {
        use proto::chunksum::{segment_sums, CHUNK};
        let bytes: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        let s1 = segment_sums(LogId(1), SegmentId(1), &bytes);
        let s2 = segment_sums(LogId(1), SegmentId(2), &bytes);
        // Unsorted, as several windows give them.
        let list = ExtentList::new(
            vec![ext(0, 1, 0, 100)],
            vec![s2.clone(), s1.slice(4, 10).expect("run")],
        );
        let p = ext(0, 1, 5 * CHUNK + 7, 2 * CHUNK).ptr;
        assert_eq!(list.sums_for(&p), s1.slice(5, 8));
        assert_eq!(list.sums_for(&ext(0, 2, 0, 1).ptr), s2.slice(0, 1));
        // Chunks the list does not hold, or a segment it has nothing of: unchecked.
        assert_eq!(list.sums_for(&ext(0, 1, 0, 10).ptr), None);
        assert_eq!(list.sums_for(&ext(0, 3, 0, 10).ptr), None);
    }

    #[test]
    fn partial_extents_are_sub_ranged() {
        let ex = [ext(100, 1, 1000, 50), ext(150, 2, 0, 100)];
        let p = map_range(&ex, 120, 100);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].buf_off, 0);
        assert_eq!((p[0].ptr.offset, p[0].ptr.len), (1020, 30));
        assert_eq!(p[1].buf_off, 30);
        assert_eq!((p[1].ptr.offset, p[1].ptr.len), (0, 70));
        assert_eq!(p[1].ptr.seg.segment, SegmentId(2));
        assert!(holes(&p, 100).is_empty());
    }

    #[test]
    fn holes_are_reported_between_and_around_extents() {
        let ex = [ext(10, 1, 0, 10), ext(40, 1, 10, 10)];
        let p = map_range(&ex, 0, 60);
        assert_eq!(holes(&p, 60), vec![(0, 10), (20, 40), (50, 60)]);
        // A range entirely inside a hole maps to nothing.
        assert!(map_range(&ex, 21, 10).is_empty());
    }

    #[test]
    fn extents_outside_are_ignored_and_edges_are_exclusive() {
        let ex = [ext(0, 1, 0, 10), ext(20, 1, 10, 10)];
        assert!(map_range(&ex, 10, 10).is_empty());
        let p = map_range(&ex, 9, 12);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].buf_off, p[0].ptr.offset, p[0].ptr.len), (0, 9, 1));
        assert_eq!((p[1].buf_off, p[1].ptr.offset, p[1].ptr.len), (11, 10, 1));
    }

    #[test]
    fn a_hint_is_due_once_per_ttl() {
        let mut c = ExtentCache::default();
        let t = Instant::now();
        let ino = InodeId(7);
        assert!(
            !c.hint_due(ino, 0, t + HINT_TTL),
            "not cached: fetched anyway"
        );
        c.insert(ino, 0, Arc::new(ExtentList::default()), t);
        assert!(!c.hint_due(ino, 0, t + HINT_TTL / 2));
        assert!(c.hint_due(ino, 0, t + HINT_TTL));
        assert!(!c.hint_due(ino, 0, t + HINT_TTL), "one caller asks");
        assert!(c.hint_due(ino, 0, t + 2 * HINT_TTL));
        // A fresh list from the manager starts over.
        c.insert(ino, 0, Arc::new(ExtentList::default()), t + 3 * HINT_TTL);
        assert!(!c.hint_due(ino, 0, t + 3 * HINT_TTL + HINT_TTL / 2));
        assert!(!c.hint_due(ino, 1, t + 9 * HINT_TTL), "other window");
    }

    #[test]
    fn windows_cover_the_range() {
        assert_eq!(windows(0, 1), 0..1);
        assert_eq!(windows(WINDOW - 1, 2), 0..2);
        assert_eq!(windows(WINDOW, WINDOW), 1..2);
        assert!(windows(5, 0).is_empty());
    }
}
