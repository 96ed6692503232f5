//! Readahead policy for sequential reads: detects sequential access per inode, grows the
//! prefetch window, decides which blocks to prefetch next, and tracks the blocks whose fetch
//! is in flight so that a read catching up with a prefetch waits for it instead of fetching
//! the same bytes again.
//!
//! Owns the per-inode stream state and the in-flight registry (generic over the waiter
//! type, so it is tested without a runtime). Pure: events in, block ranges out. Must not do
//! I/O, and must not decide whether prefetched bytes may be used: prefetched blocks go into
//! the block cache under its generation rule, and the read path uses them only under a held
//! lease, like every cached block.

use crate::data::cache::BLOCK;
use proto::ids::InodeId;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

/// The first prefetch window of a stream that was just found sequential.
pub const INITIAL_WINDOW: u64 = 2 << 20;
/// The largest prefetch window of one stream.
pub const MAX_WINDOW: u64 = 16 << 20;
/// Blocks of all inodes whose prefetch may be in flight at once (bounds memory).
pub const MAX_INFLIGHT_BLOCKS: usize = ((64 << 20) / BLOCK) as usize;
/// Blocks one prefetch task fetches (one set of log reads); a window is split into these so
/// that a reader waits only for the part it needs.
pub const CHUNK_BLOCKS: u64 = (1 << 20) / BLOCK;
/// Streams tracked at once; past this the oldest are forgotten.
const MAX_STREAMS: usize = 256;
/// A read starting this close to where the last one ended still counts as sequential (the
/// kernel may split one large read into requests that arrive out of order).
const NEAR: u64 = 1 << 20;

/// One inode's read stream.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stream {
    /// File offset right after the furthest read so far.
    next: u64,
    /// Where the last read started.
    last_off: u64,
    /// Current prefetch window in bytes (0 while the stream is not sequential).
    window: u64,
    /// First block not yet prefetched (prefetches so far cover blocks below it).
    ahead_to: u64,
    /// When the stream was last used (for forgetting old streams).
    tick: u64,
}

/// Sequential detection and window growth for every inode (pure).
#[derive(Debug, Default)]
pub struct Policy {
    streams: HashMap<InodeId, Stream>,
    tick: u64,
}

impl Policy {
    /// A read of `[off, off + len)` of `ino`, whose committed bytes end at `end`. `missed`
    /// says whether some block of the read was neither cached nor in flight (a prefetch was
    /// dropped, e.g. by a callback). Returns the blocks to prefetch now, if any.
    pub fn on_read(
        &mut self,
        ino: InodeId,
        off: u64,
        len: u64,
        end: u64,
        missed: bool,
    ) -> Option<Range<u64>> {
        self.tick += 1;
        let tick = self.tick;
        if len == 0 {
            return None;
        }
        let read_end = off.saturating_add(len);
        if !self.streams.contains_key(&ino) && self.streams.len() >= MAX_STREAMS {
            if let Some(oldest) = self.streams.iter().min_by_key(|(_, s)| s.tick) {
                let oldest = *oldest.0;
                self.streams.remove(&oldest);
            }
        }
        let s = self.streams.entry(ino).or_insert(Stream {
            next: u64::MAX,
            last_off: u64::MAX,
            window: 0,
            ahead_to: 0,
            tick,
        });
        s.tick = tick;
        // Sequential: the read starts where the furthest one ended, or near there (requests
        // of one large read arriving out of order). A first read is not, nor a read again
        // of the offset just read.
        let moved = s.last_off != u64::MAX && off != s.last_off;
        let sequential =
            s.next != u64::MAX && (off == s.next || (moved && off.abs_diff(s.next) <= NEAR));
        s.last_off = off;
        if !sequential {
            s.next = read_end;
            s.window = 0;
            s.ahead_to = 0;
            return None;
        }
        s.next = s.next.max(read_end);
        let first_after = read_end.div_ceil(BLOCK);
        if s.window == 0 {
            s.window = INITIAL_WINDOW.max(len.saturating_mul(2)).min(MAX_WINDOW);
            s.ahead_to = first_after;
        } else if missed {
            // What was prefetched is gone: start again right after this read.
            s.ahead_to = first_after;
        }
        s.ahead_to = s.ahead_to.max(first_after);
        let last = end.div_ceil(BLOCK);
        let want = first_after.saturating_add(s.window / BLOCK).min(last);
        // Refill once less than half a window is left ahead of the reader (fewer, larger
        // batches); the window doubles with every refill.
        let left = s.ahead_to - first_after;
        if s.ahead_to >= want || left > s.window / BLOCK / 2 {
            return None;
        }
        let range = s.ahead_to..want;
        s.ahead_to = want;
        s.window = (s.window * 2).min(MAX_WINDOW);
        Some(range)
    }

    /// Forgets the stream of `ino` (its file changed or went away).
    pub fn forget(&mut self, ino: InodeId) {
        self.streams.remove(&ino);
    }

    /// The current window of `ino` in bytes (0 when not sequential).
    pub fn window(&self, ino: InodeId) -> u64 {
        self.streams.get(&ino).map_or(0, |s| s.window)
    }
}

/// The readahead state of a client: the policy and the prefetches in flight, whose waiter
/// is `W`.
#[derive(Debug)]
pub struct Readahead<W> {
    pub policy: Policy,
    pub inflight: InFlight<W>,
}

impl<W> Default for Readahead<W> {
    fn default() -> Self {
        Readahead {
            policy: Policy::default(),
            inflight: InFlight::default(),
        }
    }
}

/// Blocks whose fetch is in flight, each with a waiter `W` that completes when the fetch
/// ended (cached or not).
#[derive(Debug)]
pub struct InFlight<W> {
    blocks: BTreeMap<(InodeId, u64), (u64, W)>,
    next_id: u64,
}

impl<W> Default for InFlight<W> {
    fn default() -> Self {
        InFlight {
            blocks: BTreeMap::new(),
            next_id: 0,
        }
    }
}

/// One registered fetch: the chunk of blocks it covers and its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    pub ino: InodeId,
    pub blocks: Range<u64>,
    pub id: u64,
}

impl<W: Clone> InFlight<W> {
    /// The waiter of `block` of `ino`, if its fetch is in flight.
    pub fn waiter(&self, ino: InodeId, block: u64) -> Option<W> {
        self.blocks.get(&(ino, block)).map(|(_, w)| w.clone())
    }

    pub fn contains(&self, ino: InodeId, block: u64) -> bool {
        self.blocks.contains_key(&(ino, block))
    }

    /// Blocks in flight in all.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Registers the blocks of `want` for which `skip` is false and that are not in flight
    /// already, as runs of at most `CHUNK_BLOCKS` with one waiter each (from `make`),
    /// within the global bound. Returns the chunks to fetch.
    pub fn register(
        &mut self,
        ino: InodeId,
        want: Range<u64>,
        skip: impl Fn(u64) -> bool,
        mut make: impl FnMut() -> W,
    ) -> Vec<(Registered, W)> {
        let mut out = Vec::new();
        let mut b = want.start;
        while b < want.end {
            if skip(b) || self.contains(ino, b) {
                b += 1;
                continue;
            }
            let mut e = b + 1;
            while e < want.end && e - b < CHUNK_BLOCKS && !skip(e) && !self.contains(ino, e) {
                e += 1;
            }
            let room = MAX_INFLIGHT_BLOCKS.saturating_sub(self.blocks.len()) as u64;
            let e = e.min(b + room);
            if e <= b {
                break;
            }
            self.next_id += 1;
            let id = self.next_id;
            let w = make();
            for x in b..e {
                self.blocks.insert((ino, x), (id, w.clone()));
            }
            out.push((
                Registered {
                    ino,
                    blocks: b..e,
                    id,
                },
                w,
            ));
            b = e;
        }
        out
    }

    /// The fetch `r` ended: its blocks are no longer in flight.
    pub fn finish(&mut self, r: &Registered) {
        for b in r.blocks.clone() {
            if self
                .blocks
                .get(&(r.ino, b))
                .is_some_and(|(id, _)| *id == r.id)
            {
                self.blocks.remove(&(r.ino, b));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;
    const BPM: u64 = MB / BLOCK;

    #[test]
    fn the_second_sequential_read_prefetches_the_first_window() {
        let mut p = Policy::default();
        let a = InodeId(7);
        assert!(
            p.on_read(a, 0, MB, 100 * MB, true).is_none(),
            "one read is no stream"
        );
        assert!(
            p.on_read(a, 0, MB, 100 * MB, true).is_none(),
            "nor is a re-read"
        );
        let r = p.on_read(a, MB, MB, 100 * MB, true).expect("prefetch");
        assert_eq!(r, 2 * BPM..2 * BPM + INITIAL_WINDOW / BLOCK);
    }

    #[test]
    fn sequential_reads_grow_the_window_up_to_the_bound() {
        let mut p = Policy::default();
        let a = InodeId(7);
        let mut off = 0;
        let mut last_end = 0;
        let mut windows = Vec::new();
        for _ in 0..200 {
            if let Some(r) = p.on_read(a, off, MB, 1 << 40, false) {
                // Ranges follow each other without gaps or overlaps.
                if last_end != 0 {
                    assert_eq!(r.start, last_end);
                }
                assert!(r.start >= (off + MB) / BLOCK);
                assert!(r.end - (off + MB) / BLOCK <= MAX_WINDOW / BLOCK);
                last_end = r.end;
            }
            windows.push(p.window(a));
            off += MB;
        }
        assert!(windows.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*windows.last().expect("some"), MAX_WINDOW);
        // The reader never outruns the prefetch.
        assert!(last_end * BLOCK >= off);
    }

    #[test]
    fn out_of_order_parts_of_a_large_read_stay_sequential() {
        let mut p = Policy::default();
        let a = InodeId(7);
        const K128: u64 = 128 << 10;
        p.on_read(a, 0, K128, 100 * MB, false);
        assert!(p.on_read(a, 2 * K128, K128, 100 * MB, false).is_some());
        // The skipped part arrives late: still the same stream.
        p.on_read(a, K128, K128, 100 * MB, false);
        assert!(p.window(a) > 0);
    }

    #[test]
    fn random_reads_prefetch_nothing_and_reset_the_stream() {
        let mut p = Policy::default();
        let a = InodeId(7);
        p.on_read(a, 0, MB, 100 * MB, false);
        assert!(p.on_read(a, MB, MB, 100 * MB, false).is_some());
        assert!(p.on_read(a, 50 * MB, 4096, 100 * MB, false).is_none());
        assert_eq!(p.window(a), 0);
        assert!(p.on_read(a, 7 * MB, 4096, 100 * MB, false).is_none());
        // Sequential again from where the last read ended.
        let r = p.on_read(a, 7 * MB + 4096, 4096, 100 * MB, false);
        assert!(r.is_some());
    }

    #[test]
    fn nothing_is_prefetched_past_the_end() {
        let mut p = Policy::default();
        let a = InodeId(7);
        p.on_read(a, 0, MB, 2 * MB + 100, false);
        let r = p
            .on_read(a, MB, MB, 2 * MB + 100, false)
            .expect("one block");
        assert_eq!(r, 2 * BPM..2 * BPM + 1);
        assert!(p.on_read(a, 2 * MB, MB, 2 * MB + 100, false).is_none());
        let b = InodeId(8);
        p.on_read(b, 0, MB, 2 * MB, false);
        assert!(p.on_read(b, MB, MB, 2 * MB, false).is_none());
    }

    #[test]
    fn a_miss_prefetches_again_after_the_read() {
        let mut p = Policy::default();
        let a = InodeId(7);
        p.on_read(a, 0, MB, 1 << 40, false);
        let first = p.on_read(a, MB, MB, 1 << 40, false).expect("first");
        // The prefetched blocks were dropped (callback): the next read misses.
        let again = p.on_read(a, 2 * MB, MB, 1 << 40, true).expect("again");
        assert_eq!(again.start, 3 * BPM);
        assert!(again.start < first.end);
    }

    #[test]
    fn streams_are_per_inode_and_bounded() {
        let mut p = Policy::default();
        for i in 0..(MAX_STREAMS as u64 + 50) {
            p.on_read(InodeId(i), 0, MB, 100 * MB, false);
            p.on_read(InodeId(i), MB, MB, 100 * MB, false);
        }
        assert!(p.streams.len() <= MAX_STREAMS);
        // The most recent one is still there, the oldest was forgotten.
        assert!(p.window(InodeId(MAX_STREAMS as u64 + 49)) > 0);
        assert_eq!(p.window(InodeId(0)), 0);
    }

    #[test]
    fn in_flight_blocks_are_registered_once_in_chunks() {
        let mut f: InFlight<u32> = InFlight::default();
        let a = InodeId(3);
        let mut n = 0;
        let chunks = f.register(
            a,
            0..3 * CHUNK_BLOCKS,
            |b| b == 1,
            || {
                n += 1;
                n
            },
        );
        // Block 0, then block 1 skipped (cached), then runs of at most CHUNK_BLOCKS.
        assert_eq!(chunks[0].0.blocks, 0..1);
        assert_eq!(chunks[1].0.blocks, 2..2 + CHUNK_BLOCKS);
        assert!(chunks
            .iter()
            .all(|(r, _)| r.blocks.end - r.blocks.start <= CHUNK_BLOCKS));
        assert_eq!(f.len() as u64, 3 * CHUNK_BLOCKS - 1);
        assert_eq!(f.waiter(a, 2), Some(2));
        assert_eq!(f.waiter(a, 1), None);
        // Registering again adds nothing; a block cached meanwhile is skipped.
        assert!(f
            .register(a, 0..3 * CHUNK_BLOCKS, |b| b == 1, || 99)
            .is_empty());
        for (r, _) in &chunks {
            f.finish(r);
        }
        assert!(f.is_empty());
    }

    #[test]
    fn in_flight_blocks_are_bounded() {
        let mut f: InFlight<()> = InFlight::default();
        let a = InodeId(3);
        let n = MAX_INFLIGHT_BLOCKS as u64 + 100;
        let chunks = f.register(a, 0..n, |_| false, || ());
        assert_eq!(f.len(), MAX_INFLIGHT_BLOCKS);
        let covered: u64 = chunks
            .iter()
            .map(|(r, _)| r.blocks.end - r.blocks.start)
            .sum();
        assert_eq!(covered, MAX_INFLIGHT_BLOCKS as u64);
    }

    #[test]
    fn finish_of_a_stale_fetch_keeps_a_newer_registration() {
        let mut f: InFlight<u32> = InFlight::default();
        let a = InodeId(3);
        let old = f.register(a, 0..2, |_| false, || 1).remove(0).0;
        f.finish(&old);
        let new = f.register(a, 0..2, |_| false, || 2).remove(0).0;
        f.finish(&old);
        assert_eq!(f.waiter(a, 0), Some(2));
        f.finish(&new);
        assert!(f.is_empty());
    }
}
