//! Directory listing: `.` and `..` plus the manager's entries, paged through
//! `ManagerRequest::ReadDir` with its offset cookies and buffered per open directory.
//!
//! Kernel offsets: `.` is 1, `..` is 2, an entry with manager cookie `next` is `next + 2`;
//! so a kernel offset `o >= 2` resumes at manager cookie `o - 2`. Must not hold a stream's
//! lock longer than one readdir call.

use crate::client::Client;
use crate::error::FsError;
use crate::remote::{self, Target};
use proto::ids::InodeId;
use proto::msg::{DirEntry, FileKind, ManagerRequest, ManagerResponse};
use std::sync::Arc;

/// Entries asked of the manager per page.
pub const PAGE: u32 = 1024;
/// Entries handed to one kernel readdir call at most (its buffer holds fewer anyway).
const PER_CALL: usize = 512;

/// One listed entry with the kernel offset that resumes after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirItem {
    pub offset: u64,
    pub ino: InodeId,
    pub kind: FileKind,
    pub name: String,
}

/// The buffered page of an open directory.
#[derive(Debug, Default)]
pub struct DirStream {
    /// Manager cookie the first buffered entry follows.
    from: u64,
    entries: Vec<DirEntry>,
    /// The directory's listing generation when the page was read (`Client::dir_generation`).
    generation: (u64, u64),
}

impl DirStream {
    /// Index of the first buffered entry after manager cookie `cookie`, if buffered.
    pub fn position(&self, cookie: u64) -> Option<usize> {
        if cookie == self.from {
            return Some(0);
        }
        self.entries
            .iter()
            .position(|e| e.next == cookie)
            .map(|i| i + 1)
    }

    pub fn replace(&mut self, from: u64, entries: Vec<DirEntry>) {
        self.from = from;
        self.entries = entries;
    }
}

/// The manager cookie a kernel offset resumes at.
pub fn cookie_of(kernel_offset: u64) -> u64 {
    kernel_offset.saturating_sub(2)
}

impl Client {
    pub async fn opendir(&self, ino: InodeId) -> Result<u64, FsError> {
        let fh = self.next_fh();
        self.dirs
            .insert(fh, Arc::new(tokio::sync::Mutex::new(DirStream::default())));
        let _ = ino;
        Ok(fh)
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.remove(&fh);
    }

    /// Entries after kernel offset `offset` (0 = from the start), including `.` and `..`.
    /// An empty answer means the end of the directory.
    pub async fn readdir(
        &self,
        ino: InodeId,
        fh: u64,
        offset: u64,
    ) -> Result<Vec<DirItem>, FsError> {
        let mut out = Vec::new();
        if offset == 0 {
            out.push(DirItem {
                offset: 1,
                ino,
                kind: FileKind::Dir,
                name: ".".into(),
            });
        }
        if offset <= 1 {
            let parent = self.parent_of(ino).await;
            out.push(DirItem {
                offset: 2,
                ino: parent,
                kind: FileKind::Dir,
                name: "..".into(),
            });
        }
        let stream = match self.dirs.get(&fh).map(|s| s.clone()) {
            Some(s) => s,
            // A handle we do not know (should not happen): list without buffering.
            None => Arc::new(tokio::sync::Mutex::new(DirStream::default())),
        };
        let mut stream = stream.lock().await;
        let cookie = cookie_of(offset);
        self.ensure_lease(ino).await;
        let generation = self.dir_generation(ino);
        let start = match stream.position(cookie) {
            Some(i) if i < stream.entries.len() && stream.generation == generation => i,
            _ => {
                let entries = self.read_page(ino, cookie).await?;
                stream.replace(cookie, entries);
                stream.generation = generation;
                0
            }
        };
        for e in stream.entries[start..].iter().take(PER_CALL) {
            if e.name == "." || e.name == ".." {
                continue;
            }
            out.push(DirItem {
                offset: e.next + 2,
                ino: e.ino,
                kind: e.kind,
                name: e.name.clone(),
            });
        }
        Ok(out)
    }

    async fn read_page(&self, ino: InodeId, cookie: u64) -> Result<Vec<DirEntry>, FsError> {
        let req = ManagerRequest::ReadDir {
            ino,
            offset: cookie,
            max: PAGE,
        };
        match self.call(Target::Route, req).await? {
            ManagerResponse::Entries(e) => Ok(e),
            other => Err(remote::unexpected("ReadDir", &other)),
        }
    }

    /// The parent of directory `ino`: remembered from lookups, else asked (`..`), else
    /// `ino` itself.
    async fn parent_of(&self, ino: InodeId) -> InodeId {
        if ino == InodeId::ROOT {
            return ino;
        }
        self.ensure_lease(ino).await;
        if let Some(p) = self.parents.get(&ino) {
            return *p;
        }
        let req = ManagerRequest::Lookup {
            parent: ino,
            name: "..".into(),
        };
        match self.call(Target::Route, req).await {
            Ok(ManagerResponse::Attr(a)) => {
                self.parents.insert(ino, a.ino);
                a.ino
            }
            _ => ino,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, next: u64) -> DirEntry {
        DirEntry {
            name: name.into(),
            ino: InodeId(next + 100),
            kind: FileKind::File,
            next,
        }
    }

    #[test]
    fn stream_resumes_after_the_cookie() {
        let mut s = DirStream::default();
        s.replace(0, vec![entry("a", 5), entry("b", 9), entry("c", 12)]);
        assert_eq!(s.position(0), Some(0));
        assert_eq!(s.position(5), Some(1));
        assert_eq!(s.position(12), Some(3)); // all consumed: fetch the next page
        assert_eq!(s.position(7), None);
    }

    #[test]
    fn kernel_offsets_map_to_cookies() {
        assert_eq!(cookie_of(0), 0);
        assert_eq!(cookie_of(1), 0);
        assert_eq!(cookie_of(2), 0);
        assert_eq!(cookie_of(5 + 2), 5);
    }
}
