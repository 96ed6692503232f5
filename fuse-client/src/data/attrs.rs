//! The attribute cache: what the managers last said of each inode (without this client's
//! uncommitted writes laid over it), and the rules that keep an answer older than what the
//! client already knows out of it.
//!
//! Owns the cached attributes, the drop count (bumped whenever cached attributes are
//! dropped, so that an answer in flight across a drop is not kept) and the per-inode
//! floor of this client's own changes (an answer below it left the manager before our
//! change landed there). Its rules, unit-tested below:
//! - the newest version wins: an answer older than the cached one is not cached, and the
//!   cached one is used instead;
//! - an answer older than an own change is not cached (and `predates_own_change` tells the
//!   caller to ask again);
//! - an answer that was in flight while attributes were dropped is not kept.
//!
//! It also owns which cached attributes may answer a getattr without asking (`Fresh`): a
//! directory's attributes as the answer to this client's own create, unlink or rmdir in it
//! left them (the manager made the client a reader of the parent with that answer), while
//! no other own change that could alter a directory has begun since, none is in flight,
//! and nothing was dropped since (any callback clears them). The kernel invalidates a
//! parent's attributes after every create or unlink and asks again at the next path walk;
//! this answers that without a round trip.
//!
//! Must not: call a manager, touch the data state, or block (its locks are held only for
//! a map operation).

use dashmap::DashMap;
use proto::ids::InodeId;
use proto::msg::Attr;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The attribute cache of a client (see the module docs).
#[derive(Default)]
pub(crate) struct AttrCache {
    /// Latest attributes seen from the managers (without local overlay).
    attrs: DashMap<InodeId, Attr>,
    /// Bumped whenever cached attributes are dropped (a callback, a lost lease): an
    /// attribute answer that was in flight meanwhile is not cached (`Ask::dropped`).
    drops: AtomicU64,
    /// The floors of this client's own changes, with the asks they must outlive.
    own: Mutex<OwnChanges>,
    /// Attributes that may answer a getattr locally, and the own changes under way.
    fresh: Mutex<Fresh>,
}

/// Which cached attributes may be answered without asking (see the module docs).
#[derive(Default)]
struct Fresh {
    /// Per inode: the version vouched for and the change sequence number it holds at.
    versions: HashMap<InodeId, (u64, u64)>,
    /// Own changes that may alter a directory's attributes, begun so far.
    seq: u64,
    /// Of them, under way now.
    in_flight: usize,
}

/// An own change that may alter a directory's attributes (a create, unlink, rmdir, rename,
/// link, setattr or xattr change), from before it is sent until its answer is handled.
/// Ends when dropped (vouching for nothing), or by `AttrCache::vouch`.
#[must_use]
pub(crate) struct Change<'a> {
    cache: &'a AttrCache,
    seq: u64,
    /// No other own change was under way when this one began.
    alone: bool,
    ended: bool,
}

impl Drop for Change<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.ended = true;
            let mut f = self.cache.lock_fresh();
            f.in_flight -= 1;
            // It may have changed any directory: nothing is vouched for any more.
            f.versions.clear();
        }
    }
}

/// The attribute version of this client's latest own change per inode (a commit of its
/// writes, a setattr), kept only while it can matter.
///
/// Why an entry can go once every ask that began before it was raised has ended: an
/// answer older than our change was computed by the inode's manager before it applied
/// that change, and the manager applied it before answering us, i.e. before the floor was
/// raised here. So the request carrying such an answer was sent before the floor was
/// raised, and every request is sent inside an ask (`AttrCache::ask`), begun before the
/// send and ended only after its answer was noted and checked against the floor (by
/// `manager_attr` and `attr_call`). An ask begun after the floor was raised can only
/// carry an answer at least as new as our change. Hence, once no ask older than the floor
/// is open, no answer it guards against can still arrive, and the entry is dropped: the
/// map holds at most one entry per inode changed while older asks were open. (This holds
/// whatever happens to the cached attributes meanwhile: a callback that drops them does
/// not make an old answer safe to show, which is why a rule based on the cached version
/// would not do.)
#[derive(Default)]
struct OwnChanges {
    /// Per inode: the floor and the sequence number at which it was last raised.
    floors: HashMap<InodeId, (u64, u64)>,
    /// Floors in the order they were raised: `(sequence, inode)`.
    raised: VecDeque<(u64, InodeId)>,
    /// Open asks by the sequence number at which they began (with a count).
    open: BTreeMap<u64, usize>,
    /// The next sequence number.
    next: u64,
}

impl OwnChanges {
    fn tick(&mut self) -> u64 {
        let s = self.next;
        self.next += 1;
        s
    }

    /// Drops the floors that no open ask predates.
    fn prune(&mut self) {
        let oldest_open = self.open.keys().next().copied().unwrap_or(u64::MAX);
        while let Some(&(seq, ino)) = self.raised.front() {
            if seq >= oldest_open {
                break;
            }
            self.raised.pop_front();
            if self.floors.get(&ino).is_some_and(|(_, s)| *s == seq) {
                self.floors.remove(&ino);
            }
        }
    }
}

/// A request for attributes under way (see `OwnChanges`): from before it is sent until
/// its answer has been noted and checked. Ends when dropped.
#[must_use]
pub(crate) struct Ask<'a> {
    cache: &'a AttrCache,
    seq: u64,
    drops: u64,
}

impl Ask<'_> {
    /// Whether cached attributes were dropped since this ask began: its answer may
    /// predate the change the drop announced.
    pub(crate) fn dropped(&self) -> bool {
        self.cache.drops.load(Ordering::SeqCst) != self.drops
    }
}

impl Drop for Ask<'_> {
    fn drop(&mut self) {
        let mut own = self.cache.lock_own();
        if let Some(n) = own.open.get_mut(&self.seq) {
            *n -= 1;
            if *n == 0 {
                own.open.remove(&self.seq);
            }
        }
        own.prune();
    }
}

/// What `AttrCache::note` made of an answer.
pub(crate) struct Noted {
    /// The freshest attributes known (the answer, or a newer cached version).
    pub attr: Attr,
    /// The answer was cached and replaced a different version (clean copies of the data
    /// may be stale).
    pub changed: bool,
}

impl AttrCache {
    fn lock_fresh(&self) -> std::sync::MutexGuard<'_, Fresh> {
        self.fresh.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Begins an own change that may alter a directory's attributes (before it is sent).
    pub(crate) fn begin_change(&self) -> Change<'_> {
        let mut f = self.lock_fresh();
        f.seq += 1;
        let alone = f.in_flight == 0;
        f.in_flight += 1;
        Change {
            cache: self,
            seq: f.seq,
            alone,
            ended: false,
        }
    }

    /// Ends `change`, whose answer (under `ask`) gave `parent` as the directory's
    /// attributes after it: they may answer getattrs locally if no other own change was
    /// under way when it began or has begun since, and nothing was dropped meanwhile.
    pub(crate) fn vouch(&self, mut change: Change<'_>, parent: &Attr, ask: &Ask<'_>) {
        change.ended = true;
        {
            let mut f = self.lock_fresh();
            f.in_flight -= 1;
            if change.alone && f.seq == change.seq {
                let seq = f.seq;
                f.versions.insert(parent.ino, (parent.version, seq));
            } else {
                f.versions.clear();
            }
        }
        // Checked after the insert: droppers bump the count before clearing.
        if ask.dropped() {
            self.lock_fresh().versions.clear();
        }
    }

    /// The cached attributes of `ino` if they may answer a getattr without asking: vouched
    /// for, still the cached version, no own change begun since or under way.
    pub(crate) fn fresh(&self, ino: InodeId) -> Option<Attr> {
        let f = self.lock_fresh();
        let (version, seq) = *f.versions.get(&ino)?;
        if f.seq != seq || f.in_flight != 0 {
            return None;
        }
        self.attrs
            .get(&ino)
            .filter(|a| a.version == version)
            .map(|a| a.clone())
    }

    fn clear_fresh(&self) {
        self.lock_fresh().versions.clear();
    }

    fn lock_own(&self) -> std::sync::MutexGuard<'_, OwnChanges> {
        self.own.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Begins an ask: call before sending a request whose answer carries attributes, and
    /// keep it until the answer has been noted and checked.
    pub(crate) fn ask(&self) -> Ask<'_> {
        // The drop count first: a drop between the two is then seen as "during the ask".
        let drops = self.drops.load(Ordering::SeqCst);
        let mut own = self.lock_own();
        let seq = own.tick();
        *own.open.entry(seq).or_insert(0) += 1;
        Ask {
            cache: self,
            seq,
            drops,
        }
    }

    /// The cached attributes of `ino`.
    pub(crate) fn get(&self, ino: InodeId) -> Option<Attr> {
        self.attrs.get(&ino).map(|a| a.clone())
    }

    /// Whether attributes of `ino` are cached.
    pub(crate) fn contains(&self, ino: InodeId) -> bool {
        self.attrs.contains_key(&ino)
    }

    /// Caches `attr` as it is (the root's attributes at connect).
    pub(crate) fn insert(&self, attr: Attr) {
        self.attrs.insert(attr.ino, attr);
    }

    /// Forgets `ino`'s attributes (the inode is gone) without counting a drop.
    pub(crate) fn forget(&self, ino: InodeId) {
        self.attrs.remove(&ino);
    }

    /// Notes an answer from a manager: cached unless a newer version is cached or it
    /// predates an own change. Looks the cached version up once.
    pub(crate) fn note(&self, attr: &Attr) -> Noted {
        let cached = self.get(attr.ino);
        if let Some(newer) = cached.as_ref().filter(|c| c.version > attr.version) {
            return Noted {
                attr: newer.clone(),
                changed: false,
            };
        }
        if self.predates_own_change(attr) {
            // Computed before a change of ours landed: never cached (see `OwnChanges`).
            return Noted {
                attr: attr.clone(),
                changed: false,
            };
        }
        let changed = cached.is_some_and(|old| old.version != attr.version);
        tracing::debug!(target: "shoal_attrs", inode = %attr.ino, version = attr.version, size = attr.size, "answer cached");
        self.attrs.insert(attr.ino, attr.clone());
        Noted {
            attr: attr.clone(),
            changed,
        }
    }

    /// After `note` under `ask`: drops the answer again if attributes were dropped while it
    /// was in flight (checked after the insert; droppers bump the count before removing).
    pub(crate) fn settle(&self, ask: &Ask<'_>, ino: InodeId) {
        if ask.dropped() {
            self.attrs.remove(&ino);
        }
    }

    /// Whether `attr` is older than this client's latest own change of the inode (while
    /// that can matter, see `OwnChanges`).
    pub(crate) fn predates_own_change(&self, attr: &Attr) -> bool {
        self.lock_own()
            .floors
            .get(&attr.ino)
            .is_some_and(|(v, _)| attr.version < *v)
    }

    /// Records attributes from the answer to our own change unless a newer version is
    /// already cached; returns the freshest. Also raises the inode's own-change floor, which
    /// older answers still in flight are checked against.
    pub(crate) fn keep_newest(&self, attr: Attr) -> Attr {
        tracing::debug!(target: "shoal_attrs", inode = %attr.ino, version = attr.version, size = attr.size, "own change answered");
        {
            let mut own = self.lock_own();
            let seq = own.tick();
            let floor = own
                .floors
                .get(&attr.ino)
                .map_or(attr.version, |(v, _)| (*v).max(attr.version));
            own.floors.insert(attr.ino, (floor, seq));
            own.raised.push_back((seq, attr.ino));
            own.prune();
        }
        match self.attrs.entry(attr.ino) {
            dashmap::mapref::entry::Entry::Occupied(e) if e.get().version > attr.version => {
                e.get().clone()
            }
            dashmap::mapref::entry::Entry::Occupied(mut e) => {
                e.insert(attr.clone());
                attr
            }
            dashmap::mapref::entry::Entry::Vacant(e) => {
                e.insert(attr.clone());
                attr
            }
        }
    }

    /// `attr`, or the cached version of its inode if that is newer.
    pub(crate) fn newest(&self, attr: Attr) -> Attr {
        match self.attrs.get(&attr.ino) {
            Some(cached) if cached.version > attr.version => cached.clone(),
            _ => attr,
        }
    }

    /// Drops `ino`'s attributes (a callback).
    pub(crate) fn drop_one(&self, ino: InodeId) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        self.clear_fresh();
        self.attrs.remove(&ino);
    }

    /// Drops the attributes of every inode `owned` says yes to; returns those inodes.
    pub(crate) fn drop_where(&self, owned: impl Fn(&InodeId) -> bool) -> Vec<InodeId> {
        let known: Vec<InodeId> = self
            .attrs
            .iter()
            .map(|e| *e.key())
            .filter(|i| owned(i))
            .collect();
        self.drops.fetch_add(1, Ordering::SeqCst);
        self.clear_fresh();
        self.attrs.retain(|i, _| !owned(i));
        known
    }

    /// Drops every cached attribute.
    pub(crate) fn drop_all(&self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        self.clear_fresh();
        self.attrs.clear();
    }

    /// Own-change floors kept (for tests of the bound).
    #[cfg(test)]
    fn floors(&self) -> usize {
        self.lock_own().floors.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::msg::{FileKind, Timestamp};

    fn attr(ino: u64, version: u64, size: u64) -> Attr {
        let t = Timestamp { secs: 1, nanos: 0 };
        Attr {
            ino: InodeId(ino),
            kind: FileKind::File,
            perm: 0o100644,
            nlink: 1,
            uid: 1,
            gid: 2,
            size,
            blocks_bytes: size,
            atime: t,
            mtime: t,
            ctime: t,
            rdev: 0,
            version,
        }
    }

    #[test]
    fn the_newest_version_wins() {
        let c = AttrCache::default();
        let n = c.note(&attr(5, 3, 100));
        assert_eq!((n.attr.version, n.changed), (3, false));
        let n = c.note(&attr(5, 2, 50));
        assert_eq!(
            n.attr.size, 100,
            "an older answer is overtaken by the cached one"
        );
        assert_eq!(c.get(InodeId(5)).map(|a| a.version), Some(3));
        let n = c.note(&attr(5, 4, 200));
        assert_eq!((n.attr.size, n.changed), (200, true));
        assert_eq!(c.keep_newest(attr(5, 1, 7)).version, 4);
        assert_eq!(c.newest(attr(5, 2, 9)).version, 4);
        assert_eq!(c.newest(attr(5, 6, 9)).version, 6);
    }

    #[test]
    fn an_answer_older_than_an_own_change_is_not_cached() {
        let c = AttrCache::default();
        // A getattr leaves; our commit is answered (version 7); a callback drops the cache;
        // the getattr's answer (version 6, the old size) arrives.
        let ask = c.ask();
        c.keep_newest(attr(9, 7, 4096));
        c.drop_one(InodeId(9));
        let old = attr(9, 6, 10);
        assert!(c.predates_own_change(&old));
        let n = c.note(&old);
        assert_eq!(n.attr.size, 10, "no newer version is known");
        assert!(c.get(InodeId(9)).is_none(), "but it is not cached");
        assert!(!c.predates_own_change(&attr(9, 7, 4096)));
        drop(ask);
    }

    #[test]
    fn an_answer_in_flight_across_a_drop_is_not_kept() {
        let c = AttrCache::default();
        let ask = c.ask();
        c.drop_where(|_| true);
        let n = c.note(&attr(3, 2, 10));
        assert_eq!(n.attr.version, 2);
        c.settle(&ask, InodeId(3));
        assert!(c.get(InodeId(3)).is_none());
        drop(ask);
        // An ask begun after the drop keeps its answer.
        let ask = c.ask();
        c.note(&attr(3, 2, 10));
        c.settle(&ask, InodeId(3));
        assert_eq!(c.get(InodeId(3)).map(|a| a.size), Some(10));
    }

    #[test]
    fn own_change_floors_last_only_while_older_asks_are_open() {
        let c = AttrCache::default();
        // No ask open: nothing can predate the change, nothing is kept.
        c.keep_newest(attr(1, 5, 1));
        assert_eq!(c.floors(), 0);
        let early = c.ask();
        c.keep_newest(attr(2, 5, 1));
        let late = c.ask();
        c.keep_newest(attr(3, 5, 1));
        assert_eq!(c.floors(), 2);
        assert!(c.predates_own_change(&attr(2, 4, 0)));
        assert!(c.predates_own_change(&attr(3, 4, 0)));
        // The early ask ends: inode 2's floor no open ask predates goes; inode 3's stays
        // while the late ask (begun before it was raised) is open.
        drop(early);
        assert!(!c.predates_own_change(&attr(2, 4, 0)));
        assert!(c.predates_own_change(&attr(3, 4, 0)));
        drop(late);
        assert_eq!(c.floors(), 0);
        assert!(!c.predates_own_change(&attr(3, 4, 0)));
    }

    #[test]
    fn a_raised_floor_outlives_its_earlier_raise() {
        let c = AttrCache::default();
        let a = c.ask();
        c.keep_newest(attr(4, 5, 1));
        let b = c.ask();
        c.keep_newest(attr(4, 8, 1));
        drop(a);
        // The first raise is pruned, but the inode's floor was raised again after `b` began.
        assert!(c.predates_own_change(&attr(4, 7, 0)));
        drop(b);
        assert_eq!(c.floors(), 0);
    }

    /// A create's answer vouching for parent `d` at `version`, cached as the answer is.
    fn created(c: &AttrCache, change: Change<'_>, d: u64, version: u64) {
        let ask = c.ask();
        let p = attr(d, version, 0);
        c.note(&p);
        c.vouch(change, &p, &ask);
    }

    #[test]
    fn a_lone_create_vouches_for_its_parent_until_the_next_change() {
        let c = AttrCache::default();
        let ch = c.begin_change();
        assert!(c.fresh(InodeId(9)).is_none());
        created(&c, ch, 9, 4);
        assert_eq!(c.fresh(InodeId(9)).map(|a| a.version), Some(4));
        // Another own change under way: asked (it may be applied already).
        let ch = c.begin_change();
        assert!(c.fresh(InodeId(9)).is_none());
        drop(ch);
        assert!(
            c.fresh(InodeId(9)).is_none(),
            "ended without vouching: cleared"
        );
        // Vouched again by the next lone create.
        let ch = c.begin_change();
        created(&c, ch, 9, 6);
        assert_eq!(c.fresh(InodeId(9)).map(|a| a.version), Some(6));
    }

    #[test]
    fn a_create_that_overlapped_another_own_change_vouches_for_nothing() {
        let c = AttrCache::default();
        // An unlink under way when the create began: the manager may apply it after the
        // create, so the create's parent attributes may already be old.
        let unlink = c.begin_change();
        let create = c.begin_change();
        created(&c, create, 9, 5);
        drop(unlink);
        assert!(c.fresh(InodeId(9)).is_none());
        // A change begun while the create was out: likewise.
        let create = c.begin_change();
        let other = c.begin_change();
        created(&c, create, 9, 7);
        drop(other);
        assert!(c.fresh(InodeId(9)).is_none());
    }

    #[test]
    fn drops_and_newer_versions_end_what_was_vouched() {
        let c = AttrCache::default();
        let ch = c.begin_change();
        created(&c, ch, 9, 4);
        c.drop_one(InodeId(3));
        assert!(c.fresh(InodeId(9)).is_none(), "any callback clears");
        let ch = c.begin_change();
        created(&c, ch, 9, 5);
        // A newer version cached since (an answer to a read): not the one vouched for.
        c.note(&attr(9, 8, 0));
        assert!(c.fresh(InodeId(9)).is_none());
        // A drop while the create's answer was in flight: not vouched.
        let ch = c.begin_change();
        let ask = c.ask();
        c.drop_all();
        let p = attr(9, 10, 0);
        c.note(&p);
        c.vouch(ch, &p, &ask);
        assert!(c.fresh(InodeId(9)).is_none());
        let ch = c.begin_change();
        created(&c, ch, 9, 11);
        c.drop_where(|_| true);
        assert!(c.fresh(InodeId(9)).is_none());
    }
}
