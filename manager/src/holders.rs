//! The holder directory of cooperative caching (DESIGN.md §5, issue 12): which client
//! sessions cache blocks of which extent window, so that the answer to the next reader's
//! `GetExtents` can name them as peers that may cache its blocks (no extra round trip).
//!
//! A session is named once it fetches the window's extents (`fetched`: it is about to read
//! blocks of it), once it reports that the first block of the window entered its cache, or
//! once another client reports having forwarded a block of it there (`holds`); it is no
//! longer named once it reports that its cache holds none of the window's blocks any more
//! (`forget`), said goodbye (`forget_session`), or was not named anew for `MAX_AGE`.
//! Naming a session as it asks, before it holds anything, measured better than waiting
//! for its report: readers keep the hint list of their `GetExtents` answer as long as the
//! extents stay cached, so a list taken before the others' reports arrived would name
//! nobody for that long.
//!
//! Owns only hints: a session named as it asks may not have the blocks yet, reports come
//! up to a second late and may be lost, a holder may have evicted the very block asked
//! for, the file may have been overwritten (the new extents
//! have new log addresses, which no holder caches yet), the holder may be gone. None of
//! that can give a reader wrong bytes, because peers serve by exact log address; it costs
//! one fallback to the storage servers. Pure: no I/O, no clock of its own (`now` comes in),
//! bounded in memory (`MAX_KEYS` windows, `PER_KEY` holders each). Must not be consulted
//! for anything but hints.

use proto::ids::{InodeId, SessionId};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Holders kept per window (the most recent ones).
pub const PER_KEY: usize = 4;
/// Windows kept; past it the window least recently named a holder is forgotten.
pub const MAX_KEYS: usize = 1 << 16;
/// A holder not named anew for the window for this long is no longer named.
pub const MAX_AGE: Duration = Duration::from_secs(600);

/// One extent window of a file, as a reader asks for it (`GetExtents { ino, offset }`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowKey {
    pub ino: InodeId,
    pub offset: u64,
}

#[derive(Clone, Copy, Debug)]
struct Holder {
    session: SessionId,
    addr: SocketAddr,
    at: Instant,
}

struct Entry {
    holders: Vec<Holder>,
    tick: u64,
}

/// Which sessions cache (or are about to cache) blocks of which windows (see the module
/// doc).
#[derive(Default)]
pub struct HolderDirectory {
    entries: HashMap<WindowKey, Entry>,
    /// Least recently named a holder first, for the bound on windows.
    lru: BTreeMap<u64, WindowKey>,
    tick: u64,
}

impl HolderDirectory {
    /// The holders of `key` to hint at for `session` (whose connection comes from
    /// `addr`) at `now`: the others, most recent first. Does not record the asker.
    pub fn hints(
        &mut self,
        key: WindowKey,
        session: SessionId,
        addr: SocketAddr,
        now: Instant,
    ) -> Vec<(SessionId, SocketAddr)> {
        let Some(entry) = self.entries.get_mut(&key) else {
            return Vec::new();
        };
        entry
            .holders
            .retain(|h| now.saturating_duration_since(h.at) < MAX_AGE);
        let mut hints: Vec<Holder> = entry
            .holders
            .iter()
            .filter(|h| h.session != session && h.addr != addr)
            .copied()
            .collect();
        hints.sort_by_key(|h| std::cmp::Reverse(h.at));
        hints.into_iter().map(|h| (h.session, h.addr)).collect()
    }

    /// `session` (whose connection comes from `addr`) fetched `key`'s extents at `now`:
    /// returns the other holders to hint at, most recent first, then records this one.
    pub fn fetched(
        &mut self,
        key: WindowKey,
        session: SessionId,
        addr: SocketAddr,
        now: Instant,
    ) -> Vec<(SessionId, SocketAddr)> {
        let hints = self.hints(key, session, addr, now);
        self.holds(key, session, addr, now);
        hints
    }

    /// Records that `session` (at `addr`) caches blocks of `key` at `now` (it said so, or
    /// a client forwarded blocks there). The oldest of `PER_KEY` holders gives way.
    pub fn holds(&mut self, key: WindowKey, session: SessionId, addr: SocketAddr, now: Instant) {
        self.tick += 1;
        let tick = self.tick;
        let entry = self.entries.entry(key).or_insert(Entry {
            holders: Vec::new(),
            tick,
        });
        self.lru.remove(&entry.tick);
        entry.tick = tick;
        self.lru.insert(tick, key);
        entry
            .holders
            .retain(|h| h.session != session && h.addr != addr);
        if entry.holders.len() >= PER_KEY {
            if let Some((i, _)) = entry.holders.iter().enumerate().min_by_key(|(_, h)| h.at) {
                entry.holders.remove(i);
            }
        }
        entry.holders.push(Holder {
            session,
            addr,
            at: now,
        });
        while self.entries.len() > MAX_KEYS {
            let Some((_, old)) = self.lru.pop_first() else {
                break;
            };
            self.entries.remove(&old);
        }
    }

    /// `session` no longer caches any block of `key`: it is not named for it any more (a
    /// window left without holders is forgotten).
    pub fn forget(&mut self, key: WindowKey, session: SessionId) {
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        entry.holders.retain(|h| h.session != session);
        if entry.holders.is_empty() {
            self.lru.remove(&entry.tick);
            self.entries.remove(&key);
        }
    }

    /// The holders recorded for `key` (for status and tests).
    pub fn holders_of(&self, key: WindowKey) -> Vec<SocketAddr> {
        self.entries
            .get(&key)
            .map(|e| e.holders.iter().map(|h| h.addr).collect())
            .unwrap_or_default()
    }

    /// Forgets every hint naming `session` (it said goodbye or was lost).
    pub fn forget_session(&mut self, session: SessionId) {
        for e in self.entries.values_mut() {
            e.holders.retain(|h| h.session != session);
        }
    }

    /// Windows with at least one holder.
    pub fn len(&self) -> usize {
        self.entries
            .values()
            .filter(|e| !e.holders.is_empty())
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn key(ino: u64, offset: u64) -> WindowKey {
        WindowKey {
            ino: InodeId(ino),
            offset,
        }
    }

    #[test]
    fn asking_names_the_other_holders_and_does_not_record_the_asker() {
        let mut d = HolderDirectory::default();
        let t = Instant::now();
        assert!(d.hints(key(5, 0), SessionId(1), addr(1), t).is_empty());
        assert!(d.holders_of(key(5, 0)).is_empty(), "asking is not holding");
        d.holds(key(5, 0), SessionId(1), addr(1), t);
        assert_eq!(
            d.hints(key(5, 0), SessionId(2), addr(2), t),
            vec![(SessionId(1), addr(1))]
        );
        // A holder is not told of itself; the others most recent first.
        let later = t + Duration::from_secs(1);
        d.holds(key(5, 0), SessionId(2), addr(2), later);
        assert_eq!(
            d.hints(key(5, 0), SessionId(1), addr(1), later),
            vec![(SessionId(2), addr(2))]
        );
        assert_eq!(
            d.hints(key(5, 0), SessionId(3), addr(3), later),
            vec![(SessionId(2), addr(2)), (SessionId(1), addr(1))]
        );
        // Another window of the same file knows nobody.
        assert!(d
            .hints(key(5, 1 << 22), SessionId(3), addr(3), t)
            .is_empty());
    }

    #[test]
    fn fetching_names_the_asker_for_the_next_reader() {
        let mut d = HolderDirectory::default();
        let t = Instant::now();
        assert!(d.fetched(key(5, 0), SessionId(1), addr(1), t).is_empty());
        assert_eq!(
            d.fetched(key(5, 0), SessionId(2), addr(2), t),
            vec![(SessionId(1), addr(1))]
        );
        // Its window gone: the asker is no longer named, the other one still is.
        d.forget(key(5, 0), SessionId(1));
        assert_eq!(
            d.fetched(key(5, 0), SessionId(3), addr(3), t),
            vec![(SessionId(2), addr(2))]
        );
    }

    #[test]
    fn a_holder_that_reports_its_window_gone_is_no_longer_named() {
        let mut d = HolderDirectory::default();
        let t = Instant::now();
        d.holds(key(5, 0), SessionId(1), addr(1), t);
        d.holds(key(5, 0), SessionId(2), addr(2), t);
        d.holds(key(5, 1 << 26), SessionId(1), addr(1), t);
        d.forget(key(5, 0), SessionId(1));
        assert_eq!(
            d.hints(key(5, 0), SessionId(3), addr(3), t),
            vec![(SessionId(2), addr(2))]
        );
        // Only that window, and forgetting twice or an unknown window is harmless.
        assert_eq!(d.holders_of(key(5, 1 << 26)), vec![addr(1)]);
        d.forget(key(5, 0), SessionId(1));
        d.forget(key(7, 0), SessionId(1));
        // The last holder gone: the window is forgotten, and can be held again.
        d.forget(key(5, 0), SessionId(2));
        assert!(d.holders_of(key(5, 0)).is_empty());
        assert_eq!(d.len(), 1);
        d.holds(key(5, 0), SessionId(2), addr(2), t);
        assert_eq!(d.holders_of(key(5, 0)), vec![addr(2)]);
    }

    #[test]
    fn bounded_per_window_and_by_age_and_forgets_sessions() {
        let mut d = HolderDirectory::default();
        let t = Instant::now();
        for s in 1..=10u64 {
            d.holds(
                key(1, 0),
                SessionId(s),
                addr(s as u16),
                t + Duration::from_millis(s),
            );
        }
        let hints = d.hints(
            key(1, 0),
            SessionId(99),
            addr(99),
            t + Duration::from_secs(1),
        );
        assert_eq!(hints.len(), PER_KEY);
        assert_eq!(hints[0], (SessionId(10), addr(10)), "most recent first");
        d.forget_session(SessionId(10));
        let hints = d.hints(
            key(1, 0),
            SessionId(98),
            addr(98),
            t + Duration::from_secs(2),
        );
        assert!(!hints.iter().any(|(s, _)| *s == SessionId(10)));
        let much_later = t + MAX_AGE + Duration::from_secs(5);
        assert!(d
            .hints(key(1, 0), SessionId(97), addr(97), much_later)
            .is_empty());
    }

    #[test]
    fn windows_are_bounded() {
        let mut d = HolderDirectory::default();
        let t = Instant::now();
        for i in 0..(MAX_KEYS as u64 + 10) {
            d.holds(key(i, 0), SessionId(1), addr(1), t);
        }
        assert_eq!(d.len(), MAX_KEYS);
        // The oldest windows went first.
        assert!(d.hints(key(0, 0), SessionId(2), addr(2), t).is_empty());
        assert_eq!(d.hints(key(20, 0), SessionId(2), addr(2), t).len(), 1);
    }
}
