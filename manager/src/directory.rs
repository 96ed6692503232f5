//! `DirEntries`: the entries of one directory, by name and by readdir cookie.
//!
//! Each entry gets a cookie when it is added: the directory's next insertion sequence
//! (1, 2, ...; 0 means "from the start" in `ReadDir`), never reused in that directory. A
//! listing resumes after a cookie, so entries added or removed meanwhile do not shift the
//! others: an entry present for a whole listing is returned exactly once. An entry set
//! again to the same inode keeps its cookie; replacing it with another inode (rename over)
//! gives it a new one. The cookies are state: `MetaState::apply` assigns them in record
//! order, so replay and recovery give the same cookies, and checkpoints (version 2) store
//! them. Must not: know about records, planning or I/O.

use crate::error::DirDecodeError;
use proto::ids::InodeId;
use proto::msg::FileKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The first cookie of a directory (0 is the start of a listing).
pub const FIRST_COOKIE: u64 = 1;

/// One entry as stored: its inode, kind and cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    ino: InodeId,
    kind: FileKind,
    cookie: u64,
}

/// One entry of a listing in cookie order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listed<'a> {
    pub cookie: u64,
    pub name: &'a str,
    pub ino: InodeId,
    pub kind: FileKind,
}

/// The entries of a directory. Serialized (checkpoint version 2) as its next cookie and
/// the entries in cookie order; the name index is rebuilt on decode.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Repr")]
pub struct DirEntries {
    by_name: BTreeMap<String, Slot>,
    by_cookie: BTreeMap<u64, String>,
    next_cookie: u64,
}

impl Default for DirEntries {
    fn default() -> DirEntries {
        DirEntries {
            by_name: BTreeMap::new(),
            by_cookie: BTreeMap::new(),
            next_cookie: FIRST_COOKIE,
        }
    }
}

impl DirEntries {
    pub fn new() -> DirEntries {
        DirEntries::default()
    }

    /// Entries of a version 1 checkpoint (no cookies): cookies follow name order.
    pub fn from_names(entries: BTreeMap<String, (InodeId, FileKind)>) -> DirEntries {
        let mut d = DirEntries::new();
        for (name, (ino, kind)) in entries {
            d.set(&name, ino, kind);
        }
        d
    }

    pub fn get(&self, name: &str) -> Option<(InodeId, FileKind)> {
        self.by_name.get(name).map(|s| (s.ino, s.kind))
    }

    /// The cookie of `name`, if it is an entry.
    pub fn cookie(&self, name: &str) -> Option<u64> {
        self.by_name.get(name).map(|s| s.cookie)
    }

    /// The cookie the next new entry gets.
    pub fn next_cookie(&self) -> u64 {
        self.next_cookie
    }

    /// Adds or replaces `name`. The same inode keeps its cookie; a new or different inode
    /// gets the next cookie.
    pub fn set(&mut self, name: &str, ino: InodeId, kind: FileKind) {
        if let Some(s) = self.by_name.get_mut(name) {
            if s.ino == ino {
                s.kind = kind;
                return;
            }
            self.by_cookie.remove(&s.cookie);
            s.ino = ino;
            s.kind = kind;
            s.cookie = self.next_cookie;
        } else {
            self.by_name.insert(
                name.to_string(),
                Slot {
                    ino,
                    kind,
                    cookie: self.next_cookie,
                },
            );
        }
        self.by_cookie.insert(self.next_cookie, name.to_string());
        self.next_cookie += 1;
    }

    /// The cookie `set(name, ino, _)` would give the entry now.
    pub fn cookie_for(&self, name: &str, ino: InodeId) -> u64 {
        match self.by_name.get(name) {
            Some(s) if s.ino == ino => s.cookie,
            _ => self.next_cookie,
        }
    }

    /// Adds or replaces `name` with a cookie assigned before (a replayed `set`): the entry
    /// ends as it was right after that `set`, and later cookies stay above it. Applying it
    /// again, or over a state that already saw later changes, changes nothing else.
    pub fn set_at(&mut self, name: &str, ino: InodeId, kind: FileKind, cookie: u64) {
        if let Some(s) = self.by_name.get_mut(name) {
            if s.cookie != cookie {
                self.by_cookie.remove(&s.cookie);
            }
            s.ino = ino;
            s.kind = kind;
            s.cookie = cookie;
        } else {
            self.by_name
                .insert(name.to_string(), Slot { ino, kind, cookie });
        }
        debug_assert!(self
            .by_cookie
            .get(&cookie)
            .is_none_or(|other| other == name));
        self.by_cookie.insert(cookie, name.to_string());
        self.next_cookie = self.next_cookie.max(cookie + 1);
    }

    /// Removes `name` (its cookie is not reused).
    pub fn remove(&mut self, name: &str) {
        if let Some(s) = self.by_name.remove(name) {
            self.by_cookie.remove(&s.cookie);
        }
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Names in name order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// (name, inode, kind) in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, InodeId, FileKind)> {
        self.by_name
            .iter()
            .map(|(n, s)| (n.as_str(), s.ino, s.kind))
    }

    /// Entries with a cookie greater than `cookie`, in cookie order (`after(0)` lists all).
    pub fn after(&self, cookie: u64) -> impl Iterator<Item = Listed<'_>> {
        let from = cookie.saturating_add(1);
        let tail = if cookie == u64::MAX {
            None
        } else {
            Some(self.by_cookie.range(from..))
        };
        tail.into_iter().flatten().filter_map(move |(c, n)| {
            self.by_name.get(n).map(|s| Listed {
                cookie: *c,
                name: n.as_str(),
                ino: s.ino,
                kind: s.kind,
            })
        })
    }
}

/// The serialized form: next cookie, then (cookie, name, inode, kind) in cookie order.
#[derive(Serialize, Deserialize)]
struct Repr {
    next_cookie: u64,
    entries: Vec<(u64, String, InodeId, FileKind)>,
}

#[derive(Serialize)]
struct ReprRef<'a> {
    next_cookie: u64,
    entries: Vec<(u64, &'a str, InodeId, FileKind)>,
}

impl Serialize for DirEntries {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ReprRef {
            next_cookie: self.next_cookie,
            entries: self
                .after(0)
                .map(|l| (l.cookie, l.name, l.ino, l.kind))
                .collect(),
        }
        .serialize(s)
    }
}

impl TryFrom<Repr> for DirEntries {
    type Error = DirDecodeError;

    fn try_from(r: Repr) -> Result<DirEntries, DirDecodeError> {
        let mut d = DirEntries {
            next_cookie: r.next_cookie,
            ..DirEntries::default()
        };
        for (cookie, name, ino, kind) in r.entries {
            if cookie >= r.next_cookie {
                return Err(DirDecodeError::CookieAhead {
                    name,
                    cookie,
                    next: r.next_cookie,
                });
            }
            if d.by_name.contains_key(&name) || d.by_cookie.contains_key(&cookie) {
                return Err(DirDecodeError::Duplicate { name, cookie });
            }
            d.by_cookie.insert(cookie, name.clone());
            d.by_name.insert(name, Slot { ino, kind, cookie });
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::ids::SlotId;

    fn ino(n: u64) -> InodeId {
        InodeId::new(SlotId(0), n)
    }

    fn names_after(d: &DirEntries, c: u64) -> Vec<(u64, String)> {
        d.after(c).map(|l| (l.cookie, l.name.to_string())).collect()
    }

    #[test]
    fn cookies_follow_insertion_and_are_never_reused() {
        let mut d = DirEntries::new();
        d.set("b", ino(2), FileKind::File);
        d.set("a", ino(3), FileKind::Dir);
        assert_eq!(names_after(&d, 0), vec![(1, "b".into()), (2, "a".into())]);
        d.remove("b");
        d.set("b", ino(4), FileKind::File);
        assert_eq!(names_after(&d, 1), vec![(2, "a".into()), (3, "b".into())]);
        // The same inode keeps its cookie; another inode (rename over) gets a new one.
        d.set("a", ino(3), FileKind::Dir);
        assert_eq!(d.cookie("a"), Some(2));
        d.set("a", ino(9), FileKind::File);
        assert_eq!(d.cookie("a"), Some(4));
        assert_eq!(names_after(&d, 2), vec![(3, "b".into()), (4, "a".into())]);
        assert_eq!(d.len(), 2);
        assert_eq!(d.get("a"), Some((ino(9), FileKind::File)));
        assert!(d.after(u64::MAX).next().is_none());
        assert_eq!(d.names().collect::<Vec<_>>(), vec!["a", "b"]);
    }

    #[test]
    fn replayed_sets_give_the_live_cookies_over_a_later_state() {
        // Live: a -> 2 (cookie 1), a -> 3 (cookie 2), b -> 4 (cookie 3), b removed.
        let mut live = DirEntries::new();
        let mut log = Vec::new();
        for (name, n) in [("a", 2), ("a", 3), ("b", 4)] {
            log.push((name, ino(n), live.cookie_for(name, ino(n))));
            live.set(name, ino(n), FileKind::File);
        }
        live.remove("b");
        // A piece taken at the end, then every set replayed over it (and then again).
        let mut replayed = live.clone();
        for _ in 0..2 {
            for (name, i, cookie) in &log {
                replayed.set_at(name, *i, FileKind::File, *cookie);
            }
            replayed.remove("b");
            assert_eq!(replayed, live);
        }
        // Replayed from empty, it builds the same directory.
        let mut fresh = DirEntries::new();
        for (name, i, cookie) in &log {
            fresh.set_at(name, *i, FileKind::File, *cookie);
        }
        fresh.remove("b");
        assert_eq!(fresh, live);
        assert_eq!(fresh.next_cookie(), 4);
    }

    #[test]
    fn serde_round_trip_and_inconsistent_cookies_are_refused() {
        let mut d = DirEntries::new();
        for i in 0..50 {
            d.set(&format!("n{i}"), ino(i + 10), FileKind::File);
        }
        for i in (0..50).step_by(3) {
            d.remove(&format!("n{i}"));
        }
        let bytes = postcard::to_stdvec(&d).expect("encode");
        let back: DirEntries = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, d);
        assert_eq!(back.next_cookie(), 51);

        let ahead = Repr {
            next_cookie: 2,
            entries: vec![(2, "x".into(), ino(1), FileKind::File)],
        };
        let bytes = postcard::to_stdvec(&ahead).expect("encode");
        assert!(postcard::from_bytes::<DirEntries>(&bytes).is_err());
        let twice = Repr {
            next_cookie: 9,
            entries: vec![
                (1, "x".into(), ino(1), FileKind::File),
                (2, "x".into(), ino(2), FileKind::File),
            ],
        };
        let bytes = postcard::to_stdvec(&twice).expect("encode");
        assert!(postcard::from_bytes::<DirEntries>(&bytes).is_err());
    }

    #[test]
    fn version_1_entries_get_cookies_in_name_order() {
        let v1: BTreeMap<String, (InodeId, FileKind)> = [("b", 2), ("a", 1), ("c", 3)]
            .into_iter()
            .map(|(n, i)| (n.to_string(), (ino(i), FileKind::File)))
            .collect();
        let d = DirEntries::from_names(v1);
        assert_eq!(
            names_after(&d, 0),
            vec![(1, "a".into()), (2, "b".into()), (3, "c".into())]
        );
        assert_eq!(d.next_cookie(), 4);
    }
}
