//! The clean block cache: committed file data in fixed-size blocks, bounded, LRU.
//!
//! Owns cached copies of committed bytes only (never dirty data) and a per-inode generation
//! that a reader checks before inserting what it fetched, so that a fetch racing with a
//! commit or truncate never caches stale bytes. Blocks read whole from one extent also
//! keep their log address (`LogCopy`), indexed, so that peers can ask for them by that
//! immutable address (cooperative caching: `crate::coop`), and counted per extent window
//! as they come and go (`held`), so that the managers can be told which windows this
//! client holds blocks of. Must not do I/O.

use crate::data::held::{Changes, HeldWindows};
use bytes::Bytes;
use proto::ids::{InodeId, LogPtr};
use std::collections::{BTreeMap, HashMap};

/// Size of a cached block. Every block is stored full-length; bytes past the end of the
/// file read as zeros, which is what POSIX shows when a file is extended.
pub const BLOCK: u64 = 64 << 10;

/// Where a cached block's bytes sit in the log: the block is log bytes `ptr`, and `bytes`
/// hold log range `range`, which is `ptr` itself or `ptr` widened to whole checksum chunks
/// (`proto::chunksum::widen`), so that whoever gets them can check them against the
/// writer's checksums. The log is append-only and segment ids are never reused: `ptr`
/// names these bytes forever, whatever happens to the file later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogCopy {
    pub ptr: LogPtr,
    pub range: LogPtr,
    pub bytes: Bytes,
}

struct Slot {
    data: Bytes,
    tick: u64,
    /// Only for blocks read whole from one extent and not cut at the file's end; never for
    /// blocks made or patched from our own writes.
    copy: Option<LogCopy>,
    /// No other client was known to cache it when it was read (N-chance forwarding).
    singlet: bool,
}

/// Evicted singlets kept for the caller at most (`take_evicted`); past it they just go.
const MAX_EVICTED: usize = 1024;

/// Bounded LRU of `(inode, block index)` → block bytes.
pub struct BlockCache {
    capacity_blocks: usize,
    blocks: BTreeMap<(InodeId, u64), Slot>,
    lru: BTreeMap<u64, (InodeId, u64)>,
    tick: u64,
    generations: HashMap<InodeId, u64>,
    /// Added to every inode's generation; bumped by `invalidate_where`.
    epoch: u64,
    /// Blocks with a `LogCopy`, by its `ptr`.
    by_ptr: HashMap<LogPtr, (InodeId, u64)>,
    /// Singlets with a log address evicted since the last `take_evicted`, with the
    /// (inode, block) they cached.
    evicted: Vec<(InodeId, u64, LogCopy)>,
    /// Blocks with a `LogCopy` per extent window, and the windows that changed.
    held: HeldWindows,
    pub hits: u64,
    pub misses: u64,
}

impl BlockCache {
    /// A cache of at most `capacity_bytes` (at least one block).
    pub fn new(capacity_bytes: u64) -> BlockCache {
        BlockCache {
            capacity_blocks: (capacity_bytes / BLOCK).max(1) as usize,
            blocks: BTreeMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            generations: HashMap::new(),
            epoch: 0,
            by_ptr: HashMap::new(),
            evicted: Vec::new(),
            held: HeldWindows::default(),
            hits: 0,
            misses: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The current generation of `ino`; take it before fetching, pass it to `insert`.
    pub fn generation(&self, ino: InodeId) -> u64 {
        self.generations.get(&ino).copied().unwrap_or(0) + self.epoch
    }

    /// Whether the block is cached (without marking it used).
    pub fn contains(&self, ino: InodeId, block: u64) -> bool {
        self.blocks.contains_key(&(ino, block))
    }

    /// The block, marking it recently used.
    pub fn get(&mut self, ino: InodeId, block: u64) -> Option<Bytes> {
        self.tick += 1;
        let tick = self.tick;
        match self.blocks.get_mut(&(ino, block)) {
            Some(slot) => {
                self.lru.remove(&slot.tick);
                slot.tick = tick;
                self.lru.insert(tick, (ino, block));
                self.hits += 1;
                Some(slot.data.clone())
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// Inserts a fetched block unless `ino` changed since `generation` was taken.
    /// Returns whether it was inserted.
    pub fn insert(&mut self, ino: InodeId, block: u64, data: Bytes, generation: u64) -> bool {
        self.insert_from_log(ino, block, data, generation, None, false)
    }

    /// `insert`, with the block's log address when it was read whole from one extent
    /// (`copy.ptr` must be exactly the log bytes `data` holds), and whether it is a
    /// singlet (no other client was known to cache it: evicted, it is handed to
    /// `take_evicted` for N-chance forwarding).
    pub fn insert_from_log(
        &mut self,
        ino: InodeId,
        block: u64,
        data: Bytes,
        generation: u64,
        copy: Option<LogCopy>,
        singlet: bool,
    ) -> bool {
        if self.generation(ino) != generation || data.len() as u64 != BLOCK {
            return false;
        }
        self.put(ino, block, data, copy);
        if let Some(slot) = self.blocks.get_mut(&(ino, block)) {
            slot.singlet = singlet && slot.copy.is_some();
        }
        true
    }

    /// The addressed singlets evicted since the last call (at most `MAX_EVICTED`), with the
    /// (inode, block) each cached.
    pub fn take_evicted(&mut self) -> Vec<(InodeId, u64, LogCopy)> {
        std::mem::take(&mut self.evicted)
    }

    /// The cached copy of log bytes `ptr` (exactly that address), if a block holds it.
    pub fn by_log(&self, ptr: &LogPtr) -> Option<LogCopy> {
        let key = self.by_ptr.get(ptr)?;
        let copy = self.blocks.get(key)?.copy.as_ref()?;
        (copy.ptr == *ptr).then(|| copy.clone())
    }

    /// Blocks that peers can ask for (with a log address).
    pub fn addressed(&self) -> usize {
        self.by_ptr.len()
    }

    /// The extent windows whose first addressed block came in, or whose last went, since
    /// the last call (for the managers' holder directories).
    pub fn take_window_changes(&mut self) -> Changes {
        self.held.take_changes()
    }

    /// Every extent window the cache holds addressed blocks of.
    pub fn held_windows(&self) -> Vec<(InodeId, u64)> {
        self.held.all()
    }

    /// Addressed blocks cached of the extent window `(ino, offset)`.
    pub fn window_blocks(&self, ino: InodeId, offset: u64) -> u32 {
        self.held.count((ino, offset))
    }

    fn put(&mut self, ino: InodeId, block: u64, data: Bytes, copy: Option<LogCopy>) {
        self.tick += 1;
        let tick = self.tick;
        let _ = self.remove((ino, block));
        if let Some(c) = &copy {
            // An address names one content: another block holding it gives way.
            if let Some(other) = self.by_ptr.insert(c.ptr, (ino, block)) {
                if other != (ino, block) {
                    if let Some(slot) = self.blocks.get_mut(&other) {
                        if slot.copy.take().is_some() {
                            self.held.removed(other.0, other.1 * BLOCK);
                        }
                    }
                }
            }
            self.held.added(ino, block * BLOCK);
        }
        self.blocks.insert(
            (ino, block),
            Slot {
                data,
                tick,
                copy,
                singlet: false,
            },
        );
        self.lru.insert(tick, (ino, block));
        while self.blocks.len() > self.capacity_blocks {
            let Some((_, key)) = self.lru.first_key_value().map(|(t, k)| (*t, *k)) else {
                break;
            };
            if let Some(slot) = self.remove(key) {
                if let (true, Some(c)) = (slot.singlet, slot.copy) {
                    if self.evicted.len() < MAX_EVICTED {
                        self.evicted.push((key.0, key.1, c));
                    }
                }
            }
        }
    }

    /// Drops one block and its index entries; returns it.
    fn remove(&mut self, key: (InodeId, u64)) -> Option<Slot> {
        let slot = self.blocks.remove(&key)?;
        self.lru.remove(&slot.tick);
        if let Some(c) = &slot.copy {
            if self.by_ptr.get(&c.ptr) == Some(&key) {
                self.by_ptr.remove(&c.ptr);
            }
            self.held.removed(key.0, key.1 * BLOCK);
        }
        Some(slot)
    }

    /// Our own committed bytes `data` at file offset `off`: fully covered blocks are
    /// (re)cached, partly covered cached blocks are patched. Bumps the generation.
    pub fn apply_write(&mut self, ino: InodeId, off: u64, data: &[u8]) {
        self.bump(ino);
        if data.is_empty() {
            return;
        }
        let end = off + data.len() as u64;
        for b in off / BLOCK..end.div_ceil(BLOCK) {
            let bs = b * BLOCK;
            let be = bs + BLOCK;
            let from = bs.max(off);
            let to = be.min(end);
            let src = &data[(from - off) as usize..(to - off) as usize];
            if from == bs && to == be {
                self.put(ino, b, Bytes::copy_from_slice(src), None);
            } else if let Some(slot) = self.blocks.get(&(ino, b)) {
                let mut v = slot.data.to_vec();
                v[(from - bs) as usize..(to - bs) as usize].copy_from_slice(src);
                self.put(ino, b, Bytes::from(v), None);
            }
        }
    }

    /// Drops the blocks of `ino` from the one holding byte `from` on; bumps the generation.
    pub fn invalidate_from(&mut self, ino: InodeId, from: u64) {
        self.bump(ino);
        let keys: Vec<(InodeId, u64)> = self
            .blocks
            .range((ino, from / BLOCK)..=(ino, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            let _ = self.remove(k);
        }
    }

    /// Drops every block of the inodes `pred` selects. Bumps every generation (fetches in
    /// flight for any inode do not cache what they read).
    pub fn invalidate_where(&mut self, pred: impl Fn(InodeId) -> bool) {
        self.epoch += 1;
        let keys: Vec<(InodeId, u64)> = self
            .blocks
            .keys()
            .filter(|(i, _)| pred(*i))
            .copied()
            .collect();
        for k in keys {
            let _ = self.remove(k);
        }
    }

    /// Drops every block of `ino`.
    pub fn invalidate(&mut self, ino: InodeId) {
        self.invalidate_from(ino, 0)
    }

    fn bump(&mut self, ino: InodeId) {
        *self.generations.entry(ino).or_insert(0) += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(v: u8) -> Bytes {
        Bytes::from(vec![v; BLOCK as usize])
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut c = BlockCache::new(2 * BLOCK);
        let a = InodeId(10);
        assert!(c.insert(a, 0, block(1), 0));
        assert!(c.insert(a, 1, block(2), 0));
        assert!(c.get(a, 0).is_some()); // 0 is now newer than 1
        assert!(c.insert(a, 2, block(3), 0));
        assert_eq!(c.len(), 2);
        assert!(c.get(a, 1).is_none());
        assert_eq!(c.get(a, 0).expect("kept")[0], 1);
        assert_eq!(c.get(a, 2).expect("kept")[0], 3);
    }

    #[test]
    fn stale_generation_is_not_inserted() {
        let mut c = BlockCache::new(16 * BLOCK);
        let a = InodeId(10);
        let g = c.generation(a);
        c.invalidate(a);
        assert!(!c.insert(a, 0, block(1), g));
        assert!(c.is_empty());
        assert!(c.insert(a, 0, block(1), c.generation(a)));
    }

    fn ptr(segment: u64, offset: u32) -> LogPtr {
        LogPtr {
            seg: proto::ids::SegmentAddr {
                log: proto::ids::LogId(9),
                segment: proto::ids::SegmentId(segment),
                len: 8 << 20,
                k: 4,
                m: 2,
                nodes: 6,
            },
            offset,
            len: BLOCK as u32,
        }
    }

    fn copy(p: LogPtr, data: &Bytes) -> Option<LogCopy> {
        Some(LogCopy {
            ptr: p,
            range: p,
            bytes: data.clone(),
        })
    }

    #[test]
    fn blocks_are_found_by_exact_log_address_only_while_cached_unpatched() {
        let mut c = BlockCache::new(2 * BLOCK);
        let a = InodeId(10);
        let (p0, p1, p2) = (ptr(1, 0), ptr(1, BLOCK as u32), ptr(2, 0));
        assert!(c.insert_from_log(a, 0, block(1), 0, copy(p0, &block(1)), false));
        assert!(c.insert_from_log(a, 1, block(2), 0, copy(p1, &block(2)), true));
        assert_eq!(c.by_log(&p0).expect("cached").bytes[0], 1);
        // Another segment, or the same offset with another length: not this block.
        assert!(c.by_log(&p2).is_none());
        assert!(c.by_log(&LogPtr { len: 10, ..p0 }).is_none());
        // Our own write patches block 0: its bytes are no longer p0's.
        c.apply_write(a, 5, b"xyz");
        assert!(c.by_log(&p0).is_none());
        assert_eq!(c.addressed(), 1);
        // Eviction drops the address too (capacity 2: block 2 evicts the oldest).
        let g = c.generation(a);
        assert!(c.insert_from_log(a, 2, block(3), g, copy(p2, &block(3)), false));
        assert!(c.by_log(&p1).is_none(), "evicted");
        // It was a singlet: handed out for N-chance forwarding, once.
        let ev = c.take_evicted();
        assert_eq!(ev.len(), 1);
        assert_eq!((ev[0].0, ev[0].1, ev[0].2.ptr), (a, 1, p1));
        assert!(c.take_evicted().is_empty());
        assert!(c.by_log(&p2).is_some());
        // Invalidation too.
        c.invalidate(a);
        assert!(c.by_log(&p2).is_none());
        assert_eq!(c.addressed(), 0);
    }

    #[test]
    fn windows_are_reported_when_their_first_block_comes_and_their_last_goes() {
        use crate::data::extents::WINDOW;
        let per_window = WINDOW / BLOCK;
        let mut c = BlockCache::new(3 * BLOCK);
        let (a, b) = (InodeId(10), InodeId(11));
        let g = c.generation(a);
        assert!(c.insert_from_log(a, 0, block(1), g, copy(ptr(1, 0), &block(1)), false));
        assert!(c.insert_from_log(a, 1, block(2), g, copy(ptr(1, 1 << 16), &block(2)), false));
        // Without a log address a block is not counted (peers cannot ask for it).
        assert!(c.insert(a, per_window, block(3), g));
        assert_eq!(c.window_blocks(a, 0), 2);
        assert_eq!(c.window_blocks(a, WINDOW), 0);
        let ch = c.take_window_changes();
        assert_eq!((ch.held, ch.gone), (vec![(a, 0)], vec![]));
        // Evictions: b's block pushes out a's block 0, then block 1 (a's window is gone).
        assert!(c.insert_from_log(b, 0, block(4), 0, copy(ptr(2, 0), &block(4)), false));
        assert_eq!(c.window_blocks(a, 0), 1);
        let ch = c.take_window_changes();
        assert_eq!((ch.held, ch.gone), (vec![(b, 0)], vec![]));
        assert!(c.insert(b, 1, block(5), 0));
        let ch = c.take_window_changes();
        assert_eq!((ch.held, ch.gone), (vec![], vec![(a, 0)]));
        // Our own write patches b's block 0: it loses its address, the window is gone.
        c.apply_write(b, 0, b"xyz");
        assert_eq!(c.take_window_changes().gone, vec![(b, 0)]);
        // Another block taking over an address takes its place in the count.
        let g = c.generation(a);
        let p = ptr(3, 0);
        assert!(c.insert_from_log(a, 0, block(6), g, copy(p, &block(6)), false));
        assert!(c.insert_from_log(a, 2, block(6), g, copy(p, &block(6)), false));
        assert_eq!(c.window_blocks(a, 0), 1);
        // Invalidation and drop_caches (`invalidate_where`).
        c.invalidate_where(|_| true);
        assert_eq!(c.window_blocks(a, 0), 0);
        let ch = c.take_window_changes();
        assert_eq!((ch.held, ch.gone), (vec![], vec![(a, 0)]));
    }

    #[test]
    fn short_blocks_are_refused() {
        let mut c = BlockCache::new(16 * BLOCK);
        assert!(!c.insert(InodeId(1), 0, Bytes::from_static(b"abc"), 0));
    }

    #[test]
    fn own_writes_patch_and_fill_blocks() {
        let mut c = BlockCache::new(16 * BLOCK);
        let a = InodeId(10);
        assert!(c.insert(a, 0, block(0), 0));
        // Patches block 0, fully covers block 1, partly covers uncached block 2.
        let data = vec![7u8; (BLOCK + 20) as usize + 10];
        c.apply_write(a, BLOCK - 10, &data);
        let b0 = c.get(a, 0).expect("patched");
        assert_eq!(b0[(BLOCK - 11) as usize], 0);
        assert_eq!(b0[(BLOCK - 10) as usize], 7);
        assert_eq!(c.get(a, 1).expect("filled")[0], 7);
        assert!(c.get(a, 2).is_none());
    }

    #[test]
    fn invalidate_from_keeps_earlier_blocks_and_other_inodes() {
        let mut c = BlockCache::new(16 * BLOCK);
        let (a, b) = (InodeId(10), InodeId(11));
        for i in 0..4 {
            c.insert(a, i, block(i as u8), c.generation(a));
        }
        c.insert(b, 0, block(9), 0);
        c.invalidate_from(a, 2 * BLOCK + 5);
        assert!(c.get(a, 1).is_some());
        assert!(c.get(a, 2).is_none());
        assert!(c.get(a, 3).is_none());
        assert!(c.get(b, 0).is_some());
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn invalidate_where_drops_selected_inodes_and_stops_fetches_in_flight() {
        let mut c = BlockCache::new(16 * BLOCK);
        let (a, b) = (InodeId(10), InodeId(11));
        c.insert(a, 0, block(1), 0);
        c.insert(b, 0, block(2), 0);
        let g = c.generation(b);
        c.invalidate_where(|i| i == a);
        assert!(c.get(a, 0).is_none());
        assert!(c.get(b, 0).is_some());
        assert!(
            !c.insert(b, 1, block(3), g),
            "a fetch from before is not cached"
        );
    }
}
