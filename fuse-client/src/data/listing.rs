//! Directory listing state (pure): `.` and `..` plus the manager's entries, paged through
//! `ManagerRequest::ReadDir` with its cookies and buffered per open directory.
//!
//! Manager cookies are stable: each entry's `next` is its own insertion sequence in the
//! directory, and a page "after cookie c" holds the entries with larger cookies, so
//! entries created or removed meanwhile do not shift a listing. Kernel offsets: `.` is 1,
//! `..` is 2, an entry with manager cookie `next` is `next + 2`; so a kernel offset
//! `o >= 2` resumes at manager cookie `o - 2`. A buffered page is served only while the
//! directory's generation is unchanged and it holds the kernel's cookie; otherwise the
//! stream refetches from that cookie (never from a position), so an invalidation
//! mid-listing neither skips nor repeats entries.
//! Must not: do I/O (the operations in `ops::dir` fetch pages).

use proto::ids::InodeId;
use proto::msg::{DirEntry, FileKind};

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

    /// The buffered entries after `cookie`, if the page holds them and is of `generation`;
    /// `None` means fetch from `cookie`.
    pub fn buffered(&self, cookie: u64, generation: (u64, u64)) -> Option<&[DirEntry]> {
        if self.generation != generation {
            return None;
        }
        match self.position(cookie) {
            Some(i) if i < self.entries.len() => Some(&self.entries[i..]),
            _ => None,
        }
    }

    /// Buffers a page fetched after `from` at `generation`.
    pub fn replace(&mut self, from: u64, generation: (u64, u64), entries: Vec<DirEntry>) {
        self.from = from;
        self.generation = generation;
        self.entries = entries;
    }
}

/// Kernel items for manager entries (at most `PER_CALL`; `.`/`..` from a manager are
/// skipped, the client adds its own).
pub(crate) fn kernel_items(entries: &[DirEntry]) -> impl Iterator<Item = DirItem> + '_ {
    entries
        .iter()
        .take(PER_CALL)
        .filter(|e| e.name != "." && e.name != "..")
        .map(|e| DirItem {
            offset: e.next + 2,
            ino: e.ino,
            kind: e.kind,
            name: e.name.clone(),
        })
}

/// The manager cookie a kernel offset resumes at.
pub fn cookie_of(kernel_offset: u64) -> u64 {
    kernel_offset.saturating_sub(2)
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
        s.replace(
            0,
            (0, 0),
            vec![entry("a", 5), entry("b", 9), entry("c", 12)],
        );
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

    #[test]
    fn stale_or_missing_pages_are_refetched_from_the_cookie() {
        let mut s = DirStream::default();
        assert!(s.buffered(0, (0, 0)).is_none(), "nothing buffered yet");
        s.replace(0, (0, 1), vec![entry("a", 5), entry("b", 9)]);
        assert_eq!(s.buffered(5, (0, 1)).map(|p| p.len()), Some(1));
        assert!(s.buffered(5, (0, 2)).is_none(), "directory changed");
        assert!(s.buffered(5, (1, 1)).is_none(), "all listings invalidated");
        assert!(s.buffered(9, (0, 1)).is_none(), "page consumed");
        assert!(s.buffered(6, (0, 1)).is_none(), "cookie not in the page");
    }

    /// A manager directory with stable cookies (what `MetaState::readdir` answers).
    struct FakeDir {
        entries: std::collections::BTreeMap<u64, String>,
        next: u64,
        generation: u64,
    }

    impl FakeDir {
        fn create(&mut self, name: String) {
            self.entries.insert(self.next, name);
            self.next += 1;
            self.generation += 1;
        }
        fn remove(&mut self, name: &str) {
            self.entries.retain(|_, n| n != name);
            self.generation += 1;
        }
        fn page(&self, after: u64, max: usize) -> Vec<DirEntry> {
            self.entries
                .range(after + 1..)
                .take(max)
                .map(|(c, n)| entry(n, *c))
                .collect()
        }
    }

    /// One kernel readdir call through the stream, the way `Client::readdir` does it, with
    /// a kernel buffer that takes `room` entries.
    fn kernel_call(s: &mut DirStream, dir: &FakeDir, offset: u64, room: usize) -> Vec<DirItem> {
        let cookie = cookie_of(offset);
        let generation = (0, dir.generation);
        if s.buffered(cookie, generation).is_none() {
            s.replace(cookie, generation, dir.page(cookie, 10));
        }
        let page = s.buffered(cookie, generation).unwrap_or_default();
        kernel_items(page).take(room).collect()
    }

    #[test]
    fn listing_while_unlinking_and_creating_sees_each_survivor_once() {
        let mut dir = FakeDir {
            entries: Default::default(),
            next: 1,
            generation: 0,
        };
        for i in 0..200 {
            dir.create(format!("f{i}"));
        }
        let mut s = DirStream::default();
        let (mut offset, mut seen, mut fresh) = (2, Vec::new(), 0);
        loop {
            let items = kernel_call(&mut s, &dir, offset, 3);
            let Some(last) = items.last() else { break };
            offset = last.offset;
            for it in items {
                // Unlink as read (invalidates the buffered page), create others meanwhile.
                dir.remove(&it.name);
                seen.push(it.name);
            }
            if fresh < 100 {
                dir.create(format!("new{fresh}"));
                fresh += 1;
            }
        }
        let olds: Vec<&String> = seen.iter().filter(|n| n.starts_with('f')).collect();
        let want: Vec<String> = (0..200).map(|i| format!("f{i}")).collect();
        assert_eq!(olds, want.iter().collect::<Vec<_>>());
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "no entry twice");
        assert!(dir.entries.is_empty(), "every new entry was listed too");
    }
}
