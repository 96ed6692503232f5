//! File data held by the client: `attrs` (the attribute cache and its rules, owned
//! there), `dirty` (buffered writes), `cache` (clean blocks),
//! `extents` (extent maps and their cache), `held` (which extent windows the cache holds
//! peer-servable blocks of, and the changes to report; pure), `listing` (buffered directory pages),
//! `dir_parents` (the `..` of directories, owned there), `dir_names` (directories whose
//! every name is known, for negative lookups without a round trip, owned there), `no_caps` (known absent
//! `security.capability`, owned there), `open_dirs` (the open directory streams and listing generations, owned there),
//! `open_files` (local open counts per inode, owned there), `write_errors` (errors of
//! background write-back pending until the next close or fsync, owned there),
//! `read` (the read path: dirty data over cached blocks over the log), `readahead`
//! (sequential detection and prefetches in flight, pure), `seek` (SEEK_DATA / SEEK_HOLE
//! over covered spans, pure), `writeback` (the write-back part: log writer, horizon,
//! commit locks, write verifier, write errors, ENOSPC hold, owned there; commits through
//! `meta`) and `flush` (the flush procedure over the whole client).
//!
//! This file owns `DataState`, the state behind the client's one short-held data lock.
//! Must not: hold that lock across an await.

pub(crate) mod attrs;
pub mod cache;
pub(crate) mod dir_names;
pub(crate) mod dir_parents;
pub mod dirty;
pub mod extents;
pub(crate) mod flush;
pub mod held;
pub mod listing;
pub(crate) mod no_caps;
pub(crate) mod open_dirs;
pub(crate) mod open_files;
pub(crate) mod read;
pub mod readahead;
pub mod seek;
pub(crate) mod write_errors;
pub mod writeback;

use crate::lease::WriteLease;
use cache::BlockCache;
use dirty::FileWrites;
use extents::ExtentCache;
use proto::ids::InodeId;
use proto::msg::Standing;
use proto::msg::Timestamp;
use std::collections::HashMap;

/// Data state guarded by one short-held lock: buffered writes, clean blocks, extent maps
/// and write leases. They share the lock because one invariant spans them: a clean copy is
/// used only if no write of ours and no callback came between its fetch and its use (the
/// block cache's generation, bumped by both under this lock), and a write is buffered only
/// under a write lease checked in the same critical section. Outside `data`, the state is
/// reached only through the methods below, each one step of that invariant; the fields are
/// for the read path and the flush procedure of this module.
pub(crate) struct DataState {
    pub(in crate::data) files: HashMap<InodeId, FileWrites>,
    /// Bytes held in every dirty layer of every file.
    pub(in crate::data) dirty_bytes: u64,
    pub(in crate::data) cache: BlockCache,
    pub(in crate::data) extents: ExtentCache,
    /// Write leases per inode (checked and used under this lock, see `lease`).
    pub(in crate::data) leases: HashMap<InodeId, WriteLease>,
    /// Sequential-read detection and prefetches in flight (see `readahead`).
    pub(in crate::data) readahead: readahead::Readahead<read::PrefetchDone>,
}

impl DataState {
    pub(crate) fn new(cache: BlockCache) -> DataState {
        DataState {
            files: HashMap::new(),
            dirty_bytes: 0,
            cache,
            extents: ExtentCache::default(),
            leases: HashMap::new(),
            readahead: Default::default(),
        }
    }

    /// Bytes held in every dirty layer of every file.
    pub(crate) fn dirty_bytes(&self) -> u64 {
        self.dirty_bytes
    }

    /// Whether some file has writes not yet taken by a flush.
    pub(crate) fn has_dirty_data(&self) -> bool {
        self.files.values().any(|w| !w.dirty.is_empty())
    }

    /// The buffered (not yet committed) writes of `ino`, if any.
    pub(crate) fn buffered(&self, ino: InodeId) -> Option<&FileWrites> {
        self.files.get(&ino)
    }

    /// Inodes with buffered writes that `pred` selects.
    pub(crate) fn buffered_where(&self, pred: impl Fn(InodeId) -> bool) -> Vec<InodeId> {
        self.files.keys().copied().filter(|i| pred(*i)).collect()
    }

    /// Buffers `data` at `at` in `ino` (a new entry starts from size `base` and records
    /// `standing`). The caller checked the write lease under this same lock. Returns the
    /// dirty bytes of the whole client afterwards.
    pub(crate) fn buffer_write(
        &mut self,
        ino: InodeId,
        base: u64,
        standing: Option<Standing>,
        at: u64,
        data: &[u8],
        now: Timestamp,
    ) -> u64 {
        let w = self
            .files
            .entry(ino)
            .or_insert_with(|| FileWrites::standing_at(base, standing));
        let grew = w.write(at, data, now);
        self.dirty_bytes += grew;
        self.dirty_bytes
    }

    /// Drops the buffered writes of `ino`; returns how many bytes they held, if any.
    pub(crate) fn discard(&mut self, ino: InodeId) -> Option<u64> {
        let w = self.files.remove(&ino)?;
        let bytes = w.bytes();
        self.dirty_bytes = self.dirty_bytes.saturating_sub(bytes);
        Some(bytes)
    }

    /// The manager set `ino`'s size to `size` (truncate): buffered writes past it go, an
    /// entry left with nothing buffered goes, and clean copies from `size` on are dropped.
    pub(crate) fn truncated(&mut self, ino: InodeId, size: u64) {
        if let Some(w) = self.files.get_mut(&ino) {
            let released = w.truncate(size);
            self.dirty_bytes = self.dirty_bytes.saturating_sub(released);
        }
        self.retire_if_clean(ino);
        self.forget_clean_from(ino, size);
    }

    /// Drops the entry of `ino` if nothing of it is buffered any more.
    pub(crate) fn retire_if_clean(&mut self, ino: InodeId) {
        if self.files.get(&ino).is_some_and(|w| w.is_clean()) {
            self.files.remove(&ino);
        }
    }

    /// The file grew to at least `size` at the manager (fallocate): buffered writes keep
    /// their own size if larger.
    pub(crate) fn grown_to(&mut self, ino: InodeId, size: u64) {
        if let Some(w) = self.files.get_mut(&ino) {
            w.size = w.size.max(size);
        }
    }

    /// Drops the clean blocks and extent map of `ino`.
    pub(crate) fn forget_clean(&mut self, ino: InodeId) {
        self.cache.invalidate(ino);
        self.extents.invalidate(ino);
    }

    /// Drops the clean blocks of `ino` from `offset` on, and its extent map.
    pub(crate) fn forget_clean_from(&mut self, ino: InodeId, offset: u64) {
        self.cache.invalidate_from(ino, offset);
        self.extents.invalidate(ino);
    }

    /// Drops the clean blocks and extent maps of the inodes `pred` selects.
    pub(crate) fn forget_clean_where(&mut self, pred: impl Fn(InodeId) -> bool) {
        self.cache.invalidate_where(&pred);
        self.extents.invalidate_where(&pred);
    }

    /// The extent windows the block cache started or stopped holding peer-servable blocks
    /// of since the last call, and with `all` every window it holds such blocks of as
    /// `held` (for the managers' holder directories).
    pub(crate) fn take_window_changes(&mut self, all: bool) -> held::Changes {
        let mut changes = self.cache.take_window_changes();
        if all {
            // A superset of the windows that came in since the last call.
            changes.held = self.cache.held_windows();
        }
        changes
    }

    /// The cached copy of log bytes `ptr`, for a peer that asks (cooperative caching).
    pub(crate) fn cached_log_copy(&self, ptr: &proto::ids::LogPtr) -> Option<cache::LogCopy> {
        self.cache.by_log(ptr)
    }

    /// The block cache generation of `ino` (taken before a fetch, checked at insert).
    pub(crate) fn cache_generation(&self, ino: InodeId) -> u64 {
        self.cache.generation(ino)
    }

    /// The write lease record of `ino`, if any.
    pub(crate) fn write_lease(&self, ino: InodeId) -> Option<&WriteLease> {
        self.leases.get(&ino)
    }

    /// The write lease record of `ino`, made if missing.
    pub(crate) fn write_lease_mut(&mut self, ino: InodeId) -> &mut WriteLease {
        self.leases.entry(ino).or_default()
    }

    /// Forgets the write leases of the inodes `pred` selects (their manager gave up on us,
    /// or restarted); returns those that were held.
    pub(crate) fn forget_write_leases_where(
        &mut self,
        pred: impl Fn(InodeId) -> bool,
    ) -> Vec<InodeId> {
        let mut held = Vec::new();
        for (ino, l) in self.leases.iter_mut() {
            if pred(*ino) {
                if l.is_held() {
                    held.push(*ino);
                }
                l.forget();
            }
        }
        held
    }
}

/// Which inodes a flush takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// Every inode with buffered data, waiting for flushes of them already under way
    /// (sync, unmount).
    All,
    /// Inodes with buffered data that no other flush holds at the moment (the background
    /// flusher: it never waits behind another flush).
    Ready,
    /// One inode, waiting for a flush of it already under way.
    One(InodeId),
}
