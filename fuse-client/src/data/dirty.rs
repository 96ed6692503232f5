//! Dirty (not yet committed) file data of one inode, in memory.
//!
//! Owns the byte ranges written locally and not yet committed to a manager, in layers:
//! `dirty` (newest, still changing) over `flights` (taken by a flush, in the log or being
//! committed, oldest first). Must not do I/O: the write-back module moves layers around and
//! the read path overlays them on clean data.

use bytes::Bytes;
use proto::msg::{Standing, Timestamp};
use std::collections::BTreeMap;

/// Disjoint, non-adjacent byte ranges of a file; later writes overwrite earlier bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ranges {
    map: BTreeMap<u64, Vec<u8>>,
    bytes: u64,
}

impl Ranges {
    pub fn new() -> Ranges {
        Ranges::default()
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The end of the last range (0 when empty).
    pub fn end(&self) -> u64 {
        self.map
            .iter()
            .next_back()
            .map(|(s, v)| s + v.len() as u64)
            .unwrap_or(0)
    }

    /// The ranges in file order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.map.iter().map(|(s, v)| (*s, v.as_slice()))
    }

    /// Writes `data` at `off`, merging with overlapping and adjacent ranges. Returns how
    /// many bytes the structure grew by.
    pub fn write(&mut self, off: u64, data: &[u8]) -> u64 {
        if data.is_empty() {
            return 0;
        }
        let end = off + data.len() as u64;
        // Ranges that overlap or touch [off, end]: disjoint and sorted, so walk back from
        // the last one starting at or before `end` until one ends before `off`.
        let mut touched: Vec<u64> = Vec::new();
        for (s, v) in self.map.range(..=end).rev() {
            if s + v.len() as u64 >= off {
                touched.push(*s);
            } else {
                break;
            }
        }
        if touched.is_empty() {
            self.map.insert(off, data.to_vec());
            self.bytes += data.len() as u64;
            return data.len() as u64;
        }
        touched.reverse();
        let first = touched[0];
        let mut old_len = 0u64;
        let new_start = first.min(off);
        let mut new_end = end;
        let mut pieces = Vec::with_capacity(touched.len());
        for s in &touched {
            if let Some(v) = self.map.remove(s) {
                old_len += v.len() as u64;
                new_end = new_end.max(s + v.len() as u64);
                pieces.push((*s, v));
            }
        }
        // Reuse the allocation of the range that starts where the merged one starts.
        let mut buf = if first == new_start {
            pieces.remove(0).1
        } else {
            Vec::new()
        };
        buf.resize((new_end - new_start) as usize, 0);
        for (s, v) in pieces {
            let at = (s - new_start) as usize;
            buf[at..at + v.len()].copy_from_slice(&v);
        }
        let at = (off - new_start) as usize;
        buf[at..at + data.len()].copy_from_slice(data);
        let new_len = buf.len() as u64;
        self.map.insert(new_start, buf);
        self.bytes = self.bytes + new_len - old_len;
        new_len - old_len
    }

    /// Drops every byte at or past `size`. Returns how many bytes were dropped.
    pub fn truncate(&mut self, size: u64) -> u64 {
        let mut dropped = 0;
        let tail: Vec<u64> = self.map.range(size..).map(|(s, _)| *s).collect();
        for s in tail {
            if let Some(v) = self.map.remove(&s) {
                dropped += v.len() as u64;
            }
        }
        if let Some((s, v)) = self.map.range_mut(..size).next_back() {
            let keep = (size - s) as usize;
            if v.len() > keep {
                dropped += (v.len() - keep) as u64;
                v.truncate(keep);
            }
        }
        self.bytes -= dropped;
        dropped
    }

    /// Copies the bytes of these ranges that fall in `[off, off + buf.len())` into `buf`.
    pub fn overlay(&self, off: u64, buf: &mut [u8]) {
        overlay_ranges(self.iter(), off, buf)
    }

    /// Takes everything out as immutable chunks (no copy).
    pub fn take(&mut self) -> Vec<(u64, Bytes)> {
        self.bytes = 0;
        std::mem::take(&mut self.map)
            .into_iter()
            .map(|(s, v)| (s, Bytes::from(v)))
            .collect()
    }
}

/// Copies the parts of `ranges` overlapping `[off, off + buf.len())` into `buf`, in order.
pub fn overlay_ranges<'a, B: AsRef<[u8]> + 'a>(
    ranges: impl IntoIterator<Item = (u64, B)>,
    off: u64,
    buf: &mut [u8],
) {
    let end = off + buf.len() as u64;
    for (s, data) in ranges {
        let data = data.as_ref();
        let e = s + data.len() as u64;
        if e <= off || s >= end {
            continue;
        }
        let from = s.max(off);
        let to = e.min(end);
        let src = &data[(from - s) as usize..(to - s) as usize];
        buf[(from - off) as usize..(to - off) as usize].copy_from_slice(src);
    }
}

/// The `len` bytes at `off` of a read: the clean slices `clean` (in file order from `off`;
/// zeros past their end) with the local chunks `local` laid over them. A single clean slice
/// that is the whole answer, with nothing local over it, is returned as it is (no copy);
/// otherwise one buffer is filled (not zeroed first, except past the clean bytes).
pub fn assemble(clean: Vec<Bytes>, local: &[(u64, Bytes)], off: u64, len: u64) -> Bytes {
    let end = off + len;
    let local_over = local
        .iter()
        .any(|(s, b)| *s < end && *s + b.len() as u64 > off);
    if !local_over {
        if let [one] = &clean[..] {
            if one.len() as u64 == len {
                return one.clone();
            }
        }
    }
    let mut buf = Vec::with_capacity(len as usize);
    for c in &clean {
        buf.extend_from_slice(c);
    }
    buf.resize(len as usize, 0);
    overlay_ranges(local.iter().map(|(s, b)| (*s, b)), off, &mut buf);
    Bytes::from(buf)
}

/// Whether `chunks` together cover every byte of `[off, off + len)`.
pub fn covers_all(chunks: &[(u64, Bytes)], off: u64, len: u64) -> bool {
    let mut spans: Vec<(u64, u64)> = chunks
        .iter()
        .map(|(s, b)| (*s, *s + b.len() as u64))
        .collect();
    spans.sort_unstable();
    let mut at = off;
    let end = off + len;
    for (s, e) in spans {
        if s > at {
            break;
        }
        at = at.max(e);
        if at >= end {
            return true;
        }
    }
    at >= end
}

/// A flush's share of one inode: the chunks it took, kept readable until committed.
#[derive(Debug, Clone)]
pub struct Flight {
    pub id: u64,
    pub chunks: Vec<(u64, Bytes)>,
}

impl Flight {
    pub fn bytes(&self) -> u64 {
        self.chunks.iter().map(|(_, b)| b.len() as u64).sum()
    }
}

/// Local write state of one inode while it has uncommitted data.
#[derive(Debug, Clone)]
pub struct FileWrites {
    /// Newest data, not yet taken by a flush.
    pub dirty: Ranges,
    /// Taken by flushes, oldest first; dropped once committed.
    pub flights: Vec<Flight>,
    /// The file size as this client sees it (authoritative while this entry exists).
    pub size: u64,
    /// Time of the last local write.
    pub mtime: Timestamp,
    /// Where the client stood with the inode's manager when the first of these writes was
    /// buffered; sent with their commits, so that a manager that gave up on the client
    /// since refuses them (the entry is dropped when the client learns of a loss, so all
    /// its writes share one standing).
    pub standing: Option<Standing>,
}

impl FileWrites {
    /// State for a file whose committed size is `size`.
    pub fn new(size: u64) -> FileWrites {
        FileWrites {
            dirty: Ranges::new(),
            flights: Vec::new(),
            size,
            mtime: Timestamp::now(),
            standing: None,
        }
    }

    /// `new`, recording the client's standing with the inode's manager.
    pub fn standing_at(size: u64, standing: Option<Standing>) -> FileWrites {
        FileWrites {
            standing,
            ..FileWrites::new(size)
        }
    }

    /// Buffers a write; returns the growth in held bytes.
    pub fn write(&mut self, off: u64, data: &[u8], now: Timestamp) -> u64 {
        self.size = self.size.max(off + data.len() as u64);
        self.mtime = now;
        self.dirty.write(off, data)
    }

    /// Bytes held in every layer.
    pub fn bytes(&self) -> u64 {
        self.dirty.bytes() + self.flights.iter().map(Flight::bytes).sum::<u64>()
    }

    /// Nothing left to commit.
    pub fn is_clean(&self) -> bool {
        self.dirty.is_empty() && self.flights.is_empty()
    }

    /// Moves the dirty layer into a new flight; `None` when there is nothing dirty.
    pub fn take_flight(&mut self, id: u64) -> Option<Flight> {
        if self.dirty.is_empty() {
            return None;
        }
        let flight = Flight {
            id,
            chunks: self.dirty.take(),
        };
        self.flights.push(flight.clone());
        Some(flight)
    }

    /// The flight `id` was committed: forget it. Returns the bytes released.
    pub fn complete_flight(&mut self, id: u64) -> u64 {
        let mut released = 0;
        self.flights.retain(|f| {
            if f.id == id {
                released += f.bytes();
                false
            } else {
                true
            }
        });
        released
    }

    /// The flight `id` failed: put its data back under newer dirty data. Returns the change
    /// in held bytes (merging may shrink overlapping data).
    pub fn restore_flight(&mut self, id: u64) -> i64 {
        let before = self.bytes() as i64;
        let Some(pos) = self.flights.iter().position(|f| f.id == id) else {
            return 0;
        };
        let flight = self.flights.remove(pos);
        let mut merged = Ranges::new();
        for (s, b) in &flight.chunks {
            merged.write(*s, b);
        }
        for (s, d) in self.dirty.iter() {
            merged.write(s, d);
        }
        self.dirty = merged;
        self.bytes() as i64 - before
    }

    /// Truncates local data to `size` (after the manager accepted the new size).
    /// Returns bytes released.
    pub fn truncate(&mut self, size: u64) -> u64 {
        let mut dropped = self.dirty.truncate(size);
        for f in &mut self.flights {
            let before = f.bytes();
            let mut kept = Vec::new();
            for (s, b) in f.chunks.drain(..) {
                if s >= size {
                    continue;
                }
                let keep = ((size - s) as usize).min(b.len());
                kept.push((s, b.slice(..keep)));
            }
            f.chunks = kept;
            dropped += before - f.bytes();
        }
        self.size = size;
        dropped
    }

    /// Overlays every layer (oldest first, so the newest bytes win) onto `buf`, which holds
    /// file bytes `[off, off + buf.len())`.
    pub fn overlay(&self, off: u64, buf: &mut [u8]) {
        for f in &self.flights {
            overlay_ranges(f.chunks.iter().map(|(s, b)| (*s, b)), off, buf);
        }
        self.dirty.overlay(off, buf);
    }

    /// The bytes of every layer inside `[off, off + len)`, oldest first (apply in order).
    /// Flight bytes are shared, dirty bytes copied; nothing outside the window is kept.
    pub fn snapshot(&self, off: u64, len: u64) -> Vec<(u64, Bytes)> {
        let end = off + len;
        let mut out = Vec::new();
        let clip = |s: u64, l: u64| -> Option<(u64, usize, usize)> {
            let e = s + l;
            if e <= off || s >= end {
                return None;
            }
            let from = s.max(off);
            Some((from, (from - s) as usize, (e.min(end) - s) as usize))
        };
        for f in &self.flights {
            for (s, b) in &f.chunks {
                if let Some((at, a, z)) = clip(*s, b.len() as u64) {
                    out.push((at, b.slice(a..z)));
                }
            }
        }
        for (s, d) in self.dirty.iter() {
            if let Some((at, a, z)) = clip(s, d.len() as u64) {
                out.push((at, Bytes::copy_from_slice(&d[a..z])));
            }
        }
        out
    }

    /// The byte spans `[start, end)` every layer holds (unsorted, may overlap).
    pub fn spans(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = self
            .dirty
            .iter()
            .map(|(s, d)| (s, s + d.len() as u64))
            .collect();
        for f in &self.flights {
            out.extend(f.chunks.iter().map(|(s, b)| (*s, *s + b.len() as u64)));
        }
        out
    }

    /// Whether any layer holds bytes in `[off, off + len)`.
    pub fn covers_any(&self, off: u64, len: u64) -> bool {
        let end = off + len;
        let hit = |s: u64, l: u64| s < end && s + l > off;
        self.dirty.iter().any(|(s, d)| hit(s, d.len() as u64))
            || self
                .flights
                .iter()
                .any(|f| f.chunks.iter().any(|(s, b)| hit(*s, b.len() as u64)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assemble_joins_clean_slices_zero_fills_and_overlays_local_data() {
        let block = Bytes::from(vec![1u8; 16]);
        // One slice that is the whole answer: that slice, not a copy.
        let one = assemble(vec![block.slice(4..12)], &[], 4, 8);
        assert_eq!(one.as_ptr(), block[4..].as_ptr());
        // Local data beside (not over) the range changes nothing.
        let beside = [(12u64, Bytes::from_static(b"zz"))];
        let same = assemble(vec![block.slice(4..12)], &beside, 4, 8);
        assert_eq!(same.as_ptr(), block[4..].as_ptr());
        // Slices joined in order, zeros past the clean bytes, local bytes laid over.
        let clean = vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cd")];
        let local = [
            (11u64, Bytes::from_static(b"XY")),
            (15, Bytes::from_static(b"Q")),
        ];
        assert_eq!(&assemble(clean, &local, 10, 7)[..], b"aXYd\0Q\0");
        // Nothing clean: zeros with the local bytes.
        assert_eq!(&assemble(Vec::new(), &local, 10, 3)[..], b"\0XY");
        // A single slice shorter than the answer is copied and zero-filled.
        assert_eq!(
            &assemble(vec![Bytes::from_static(b"ab")], &[], 0, 3)[..],
            b"ab\0"
        );
    }

    fn flat(r: &Ranges) -> Vec<(u64, Vec<u8>)> {
        r.iter().map(|(s, d)| (s, d.to_vec())).collect()
    }

    #[test]
    fn disjoint_writes_stay_apart_and_adjacent_ones_merge() {
        let mut r = Ranges::new();
        assert_eq!(r.write(10, b"abc"), 3);
        assert_eq!(r.write(20, b"xy"), 2);
        assert_eq!(flat(&r), vec![(10, b"abc".to_vec()), (20, b"xy".to_vec())]);
        assert_eq!(r.write(13, b"def"), 3); // adjacent after the first
        assert_eq!(r.write(7, b"123"), 3); // adjacent before
        assert_eq!(
            flat(&r),
            vec![(7, b"123abcdef".to_vec()), (20, b"xy".to_vec())]
        );
        assert_eq!(r.bytes(), 11);
        assert_eq!(r.end(), 22);
    }

    #[test]
    fn overlapping_writes_keep_the_newest_bytes() {
        let mut r = Ranges::new();
        r.write(0, b"aaaaaaaa");
        r.write(20, b"cccc");
        // Spans the tail of the first, the gap and the head of the second.
        let grew = r.write(6, b"BBBBBBBBBBBBBBBB");
        assert_eq!(flat(&r), vec![(0, b"aaaaaaBBBBBBBBBBBBBBBBcc".to_vec())]);
        assert_eq!(grew, 24 - 12);
        assert_eq!(r.bytes(), 24);
        // Entirely inside.
        assert_eq!(r.write(2, b"zz"), 0);
        assert_eq!(flat(&r), vec![(0, b"aazzaaBBBBBBBBBBBBBBBBcc".to_vec())]);
        // Covering everything.
        r.write(0, &[9u8; 30]);
        assert_eq!(flat(&r), vec![(0, vec![9u8; 30])]);
        assert_eq!(r.bytes(), 30);
    }

    #[test]
    fn truncate_drops_and_trims() {
        let mut r = Ranges::new();
        r.write(0, b"0123456789");
        r.write(20, b"abcdef");
        r.write(40, b"zz");
        assert_eq!(r.truncate(23), 3 + 2);
        assert_eq!(
            flat(&r),
            vec![(0, b"0123456789".to_vec()), (20, b"abc".to_vec())]
        );
        assert_eq!(r.truncate(5), 5 + 3);
        assert_eq!(flat(&r), vec![(0, b"01234".to_vec())]);
        assert_eq!(r.bytes(), 5);
        assert_eq!(r.truncate(0), 5);
        assert!(r.is_empty());
    }

    #[test]
    fn overlay_copies_only_the_window() {
        let mut r = Ranges::new();
        r.write(2, b"ab");
        r.write(8, b"cdef");
        let mut buf = [b'.'; 8];
        r.overlay(3, &mut buf);
        assert_eq!(&buf, b"b....cde");
    }

    #[test]
    fn flights_overlay_under_dirty_and_restore_on_failure() {
        let mut f = FileWrites::new(0);
        let t = Timestamp::now();
        f.write(0, b"aaaa", t);
        let flight = f.take_flight(1).expect("dirty");
        assert_eq!(flight.chunks.len(), 1);
        assert!(f.take_flight(2).is_none());
        f.write(2, b"bb", t);
        f.write(6, b"cc", t);
        let mut buf = [0u8; 8];
        f.overlay(0, &mut buf);
        assert_eq!(&buf, b"aabb\0\0cc");
        assert_eq!(f.size, 8);
        assert_eq!(f.bytes(), 8);
        // The flush failed: its bytes come back under the newer ones.
        f.restore_flight(1);
        assert!(f.flights.is_empty());
        assert_eq!(
            flat(&f.dirty),
            vec![(0, b"aabb".to_vec()), (6, b"cc".to_vec())]
        );
        // A flush that commits releases its bytes.
        f.take_flight(3);
        assert_eq!(f.complete_flight(3), 6);
        assert!(f.is_clean());
    }

    #[test]
    fn snapshot_clips_to_the_window_and_keeps_layer_order() {
        let mut f = FileWrites::new(0);
        let t = Timestamp::now();
        f.write(0, b"aaaaaaaa", t);
        f.take_flight(1);
        f.write(4, b"bb", t);
        let snap = f.snapshot(2, 4);
        assert_eq!(
            snap,
            vec![
                (2, Bytes::from_static(b"aaaa")),
                (4, Bytes::from_static(b"bb"))
            ]
        );
        let mut buf = [0u8; 4];
        overlay_ranges(snap.iter().map(|(s, b)| (*s, b)), 2, &mut buf);
        assert_eq!(&buf, b"aabb");
        assert!(covers_all(&snap, 2, 4));
        assert!(!covers_all(&snap, 2, 5));
        assert!(!covers_all(&[(3, Bytes::from_static(b"x"))], 2, 2));
        assert!(covers_all(&[], 5, 0));
    }

    #[test]
    fn truncate_cuts_every_layer() {
        let mut f = FileWrites::new(100);
        let t = Timestamp::now();
        f.write(0, b"0123456789", t);
        f.take_flight(1);
        f.write(50, b"xyz", t);
        assert_eq!(f.truncate(4), 6 + 3);
        assert_eq!(f.size, 4);
        let mut buf = [b'.'; 6];
        f.overlay(0, &mut buf);
        assert_eq!(&buf, b"0123..");
        assert!(f.covers_any(3, 1));
        assert!(!f.covers_any(4, 10));
        f.write(8, b"ab", t);
        let mut spans = f.spans();
        spans.sort_unstable();
        assert_eq!(spans, vec![(0, 4), (8, 10)]);
    }
}
