//! The clean block cache: committed file data in fixed-size blocks, bounded, LRU.
//!
//! Owns cached copies of committed bytes only (never dirty data) and a per-inode generation
//! that a reader checks before inserting what it fetched, so that a fetch racing with a
//! commit or truncate never caches stale bytes. Must not do I/O.

use bytes::Bytes;
use proto::ids::InodeId;
use std::collections::{BTreeMap, HashMap};

/// Size of a cached block. Every block is stored full-length; bytes past the end of the
/// file read as zeros, which is what POSIX shows when a file is extended.
pub const BLOCK: u64 = 64 << 10;

struct Slot {
    data: Bytes,
    tick: u64,
}

/// Bounded LRU of `(inode, block index)` → block bytes.
pub struct BlockCache {
    capacity_blocks: usize,
    blocks: BTreeMap<(InodeId, u64), Slot>,
    lru: BTreeMap<u64, (InodeId, u64)>,
    tick: u64,
    generations: HashMap<InodeId, u64>,
    /// Added to every inode's generation; bumped by `invalidate_where`.
    epoch: u64,
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
        if self.generation(ino) != generation || data.len() as u64 != BLOCK {
            return false;
        }
        self.put(ino, block, data);
        true
    }

    fn put(&mut self, ino: InodeId, block: u64, data: Bytes) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(old) = self.blocks.insert((ino, block), Slot { data, tick }) {
            self.lru.remove(&old.tick);
        }
        self.lru.insert(tick, (ino, block));
        while self.blocks.len() > self.capacity_blocks {
            let Some((_, key)) = self.lru.pop_first() else {
                break;
            };
            self.blocks.remove(&key);
        }
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
                self.put(ino, b, Bytes::copy_from_slice(src));
            } else if let Some(slot) = self.blocks.get(&(ino, b)) {
                let mut v = slot.data.to_vec();
                v[(from - bs) as usize..(to - bs) as usize].copy_from_slice(src);
                self.put(ino, b, Bytes::from(v));
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
            if let Some(slot) = self.blocks.remove(&k) {
                self.lru.remove(&slot.tick);
            }
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
            if let Some(slot) = self.blocks.remove(&k) {
                self.lru.remove(&slot.tick);
            }
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
