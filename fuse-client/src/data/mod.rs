//! File data held by the client: `attrs` (the attribute cache and its rules, owned
//! there), `dirty` (buffered writes), `cache` (clean blocks),
//! `extents` (extent maps and their cache), `listing` (buffered directory pages),
//! `dir_parents` (the `..` of directories, owned there), `no_caps` (known absent
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
pub(crate) mod dir_parents;
pub mod dirty;
pub mod extents;
pub(crate) mod flush;
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
use std::collections::HashMap;

/// Data state guarded by one short-held lock.
pub(crate) struct DataState {
    pub files: HashMap<InodeId, FileWrites>,
    /// Bytes held in every dirty layer of every file.
    pub dirty_bytes: u64,
    pub cache: BlockCache,
    pub extents: ExtentCache,
    /// Write leases per inode (checked and used under this lock, see `lease`).
    pub leases: HashMap<InodeId, WriteLease>,
    /// Sequential-read detection and prefetches in flight (see `readahead`).
    pub readahead: readahead::Readahead<read::PrefetchDone>,
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
