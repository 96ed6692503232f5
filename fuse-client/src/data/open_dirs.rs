//! The open directories of this client: each open handle's buffered listing page
//! (`listing::DirStream`), and the listing generations that tell a buffered page it is
//! stale (bumped by lease callbacks and by this client's own changes).
//!
//! Owns: the streams by handle and the generations. Must not: fetch pages (that is
//! `ops::dir`) or hold a stream's lock itself.

use super::listing::DirStream;
use crate::handle::FileHandle;
use dashmap::DashMap;
use proto::ids::InodeId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A stream shared by the readdir calls of one handle.
pub(crate) type SharedStream = Arc<tokio::sync::Mutex<DirStream>>;

#[derive(Default)]
pub(crate) struct OpenDirs {
    streams: DashMap<FileHandle, SharedStream>,
    /// Bumped per directory when its cached listing is invalidated.
    generations: DashMap<InodeId, u64>,
    /// Bumped when every cached listing is invalidated.
    epoch: AtomicU64,
}

impl OpenDirs {
    /// A new, empty stream for handle `fh`.
    pub fn open(&self, fh: FileHandle) {
        self.streams
            .insert(fh, Arc::new(tokio::sync::Mutex::new(DirStream::default())));
    }

    pub fn release(&self, fh: FileHandle) {
        self.streams.remove(&fh);
    }

    /// The stream of `fh`; an unknown handle (should not happen) gets an unbuffered one.
    pub fn stream(&self, fh: FileHandle) -> SharedStream {
        match self.streams.get(&fh) {
            Some(s) => s.clone(),
            None => Arc::new(tokio::sync::Mutex::new(DirStream::default())),
        }
    }

    /// The generation of `dir`'s listing; a buffered page of another generation is stale.
    pub fn generation(&self, dir: InodeId) -> (u64, u64) {
        (
            self.epoch.load(Ordering::Acquire),
            self.generations.get(&dir).map(|g| *g).unwrap_or(0),
        )
    }

    /// `dir`'s buffered pages are stale.
    pub fn bump(&self, dir: InodeId) {
        *self.generations.entry(dir).or_insert(0) += 1;
    }

    /// Every buffered page is stale.
    pub fn bump_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_move_per_directory_and_all_at_once() {
        let d = OpenDirs::default();
        let (a, b) = (InodeId(10), InodeId(11));
        let (ga, gb) = (d.generation(a), d.generation(b));
        d.bump(a);
        assert_ne!(d.generation(a), ga);
        assert_eq!(d.generation(b), gb);
        let (ga, gb) = (d.generation(a), d.generation(b));
        d.bump_all();
        assert_ne!(d.generation(a), ga);
        assert_ne!(d.generation(b), gb);
    }

    #[test]
    fn streams_live_from_open_to_release() {
        let d = OpenDirs::default();
        d.open(FileHandle(1));
        let s = d.stream(FileHandle(1));
        assert!(Arc::ptr_eq(&s, &d.stream(FileHandle(1))));
        assert_eq!(d.streams.len(), 1);
        d.release(FileHandle(1));
        assert_eq!(d.streams.len(), 0);
        assert!(!Arc::ptr_eq(&s, &d.stream(FileHandle(1))));
    }
}
