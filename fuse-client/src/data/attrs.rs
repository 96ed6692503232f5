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
//! It also owns which cached attributes may answer a getattr or a lookup without asking
//! (`Fresh`): a directory's attributes as the answer to this client's own create, unlink or
//! rmdir in it left them, and a new inode's as the answer to its own create left them (the
//! manager made the client a reader of both with that answer). Vouching is per inode: an
//! own change names the inodes whose attributes it may alter (`Touches`: its own inode,
//! the parent or parents, the child a removed or replaced name maps to), or, when it cannot
//! tell (a name whose inode it does not know), every inode. An answer vouches for an inode
//! only if no other own change touching it was under way when its change began or has
//! begun since; the vouch holds until the next own change touching the inode begins, and
//! any drop (a callback, a lost lease) clears every vouch. The kernel invalidates a
//! parent's attributes after every create or unlink and asks again at the next path walk,
//! and it looks a name up again once its dentry timed out (before an unlink or a stat):
//! these are answered without a round trip.
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
    /// Per inode: the version vouched for.
    versions: HashMap<InodeId, u64>,
    /// Per inode: the own changes touching it under way (removed when none is).
    busy: HashMap<InodeId, Busy>,
    /// Own changes that may touch any inode, under way now.
    any_in_flight: usize,
    /// Own changes that may touch any inode, begun so far.
    any_began: u64,
}

/// The own changes under way that touch one inode.
#[derive(Default)]
struct Busy {
    in_flight: usize,
    /// Begun while any of them was under way (counted from the first).
    began: u64,
}

/// Which inodes' attributes an own change may alter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Touches {
    /// The inodes it names (a create's parent; an unlink's parent and the child its name
    /// is known to be; ...).
    inodes: Vec<InodeId>,
    /// It may alter others too: it names an entry whose inode this client does not know.
    unknown: bool,
}

impl Touches {
    /// A change of these inodes only.
    pub(crate) fn these(inodes: Vec<InodeId>) -> Self {
        Touches {
            inodes,
            unknown: false,
        }
    }

    /// A change of these inodes and maybe of any other.
    pub(crate) fn these_and_unknown(inodes: Vec<InodeId>) -> Self {
        Touches {
            inodes,
            unknown: true,
        }
    }
}

/// An own change that may alter attributes (a create, unlink, rmdir, rename, link, setattr
/// or xattr change), from before it is sent until its answer is handled.
/// Ends when dropped (vouching for nothing), or by `AttrCache::vouch`.
#[must_use]
pub(crate) struct Change<'a> {
    cache: &'a AttrCache,
    /// The inodes it names.
    marks: Vec<Mark>,
    /// It may touch any other inode too.
    unknown: bool,
    /// No change that may touch any inode was under way when this one began.
    any_quiet: bool,
    /// `Fresh::any_began` when this one began.
    any_began: u64,
    ended: bool,
}

/// A change's hold on one inode it touches.
struct Mark {
    ino: InodeId,
    /// No other own change touching the inode was under way when this one began.
    alone: bool,
    /// `Busy::began` just after this one began.
    began: u64,
}

impl Change<'_> {
    /// Whether this change's answer may vouch for `ino` (before `release`): no other own
    /// change touching it overlapped this one. An inode it does not name is one its answer
    /// made (a create's child): no change that names it can have begun before, and none of
    /// those it names may have been overlapped either (an own removal of the same name in
    /// the parent, under way meanwhile, may be applied after the create).
    fn may_vouch(&self, f: &Fresh, ino: InodeId) -> bool {
        if !self.any_quiet || f.any_began != self.any_began {
            return false;
        }
        let lone = |m: &Mark| m.alone && f.busy.get(&m.ino).is_some_and(|b| b.began == m.began);
        match self.marks.iter().find(|m| m.ino == ino) {
            Some(m) => lone(m),
            None => !self.unknown && !f.busy.contains_key(&ino) && self.marks.iter().all(lone),
        }
    }

    /// Takes this change off the books, and what it touched off the vouched.
    fn release(&mut self, f: &mut Fresh) {
        self.ended = true;
        if self.unknown {
            f.any_in_flight -= 1;
            f.versions.clear();
        }
        for m in &self.marks {
            f.versions.remove(&m.ino);
            if let Some(b) = f.busy.get_mut(&m.ino) {
                b.in_flight -= 1;
                if b.in_flight == 0 {
                    f.busy.remove(&m.ino);
                }
            }
        }
    }
}

impl Drop for Change<'_> {
    fn drop(&mut self) {
        if !self.ended {
            let cache = self.cache;
            self.release(&mut cache.lock_fresh());
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

    /// Begins an own change that may alter the attributes of what it `touches` (before it
    /// is sent): those are not answered locally until it ends and after.
    pub(crate) fn begin_change(&self, touches: Touches) -> Change<'_> {
        let mut f = self.lock_fresh();
        let any_quiet = f.any_in_flight == 0;
        let Touches {
            inodes: mut inos,
            unknown,
        } = touches;
        if unknown {
            f.any_in_flight += 1;
            f.any_began += 1;
            f.versions.clear();
        }
        inos.sort_unstable();
        inos.dedup();
        let marks = inos
            .into_iter()
            .map(|ino| {
                f.versions.remove(&ino);
                let b = f.busy.entry(ino).or_default();
                let alone = b.in_flight == 0;
                b.in_flight += 1;
                b.began += 1;
                Mark {
                    ino,
                    alone,
                    began: b.began,
                }
            })
            .collect();
        Change {
            cache: self,
            marks,
            unknown,
            any_quiet,
            any_began: f.any_began,
            ended: false,
        }
    }

    /// Ends `change`, whose answer (under `ask`) gave `attrs` as the attributes after it
    /// (the parent's, a new child's): each may answer locally if no other own change
    /// touching it overlapped this one, and nothing was dropped meanwhile.
    pub(crate) fn vouch(&self, mut change: Change<'_>, attrs: &[&Attr], ask: &Ask<'_>) {
        {
            let mut f = self.lock_fresh();
            let ok: Vec<(InodeId, u64)> = attrs
                .iter()
                .filter(|a| change.may_vouch(&f, a.ino))
                .map(|a| (a.ino, a.version))
                .collect();
            change.release(&mut f);
            f.versions.extend(ok);
        }
        // Checked after the insert: droppers bump the count before clearing.
        if ask.dropped() {
            self.clear_fresh();
        }
    }

    /// The cached attributes of `ino` if they may answer without asking: vouched for, still
    /// the cached version, no own change touching it under way.
    pub(crate) fn fresh(&self, ino: InodeId) -> Option<Attr> {
        let f = self.lock_fresh();
        let version = *f.versions.get(&ino)?;
        if f.any_in_flight != 0 || f.busy.contains_key(&ino) {
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

    fn on(inos: &[u64]) -> Touches {
        Touches::these(inos.iter().map(|i| InodeId(*i)).collect())
    }

    /// A change of an entry whose inode is not known, in directory `d`.
    fn unknown_in(d: u64) -> Touches {
        Touches::these_and_unknown(vec![InodeId(d)])
    }

    /// A create's answer vouching for parent `d` at `version`, cached as the answer is.
    fn created(c: &AttrCache, change: Change<'_>, d: u64, version: u64) {
        let ask = c.ask();
        let p = attr(d, version, 0);
        c.note(&p);
        c.vouch(change, &[&p], &ask);
    }

    #[test]
    fn a_lone_create_vouches_for_its_parent_until_the_next_change_of_it() {
        let c = AttrCache::default();
        let ch = c.begin_change(on(&[9]));
        assert!(c.fresh(InodeId(9)).is_none());
        created(&c, ch, 9, 4);
        assert_eq!(c.fresh(InodeId(9)).map(|a| a.version), Some(4));
        // Another own change of it under way: asked (it may be applied already).
        let ch = c.begin_change(on(&[9, 3]));
        assert!(c.fresh(InodeId(9)).is_none());
        drop(ch);
        assert!(
            c.fresh(InodeId(9)).is_none(),
            "ended without vouching: cleared"
        );
        // Vouched again by the next lone create.
        let ch = c.begin_change(on(&[9]));
        created(&c, ch, 9, 6);
        assert_eq!(c.fresh(InodeId(9)).map(|a| a.version), Some(6));
        // A change that may touch anything clears it, and blocks every answer meanwhile.
        let ch = c.begin_change(unknown_in(50));
        assert!(c.fresh(InodeId(9)).is_none());
        drop(ch);
        assert!(c.fresh(InodeId(9)).is_none());
    }

    #[test]
    fn a_change_of_other_inodes_keeps_the_vouch() {
        let c = AttrCache::default();
        let ch = c.begin_change(on(&[9]));
        created(&c, ch, 9, 4);
        let other = c.begin_change(on(&[10, 11]));
        assert_eq!(c.fresh(InodeId(9)).map(|a| a.version), Some(4));
        created(&c, other, 10, 2);
        assert_eq!(c.fresh(InodeId(9)).map(|a| a.version), Some(4));
        assert_eq!(c.fresh(InodeId(10)).map(|a| a.version), Some(2));
        assert!(c.fresh(InodeId(11)).is_none(), "not in the answer");
    }

    #[test]
    fn a_create_vouches_for_the_child_it_made() {
        let c = AttrCache::default();
        let ch = c.begin_change(on(&[9]));
        let ask = c.ask();
        let (p, child) = (attr(9, 4, 0), attr(20, 1, 0));
        c.note(&p);
        c.note(&child);
        c.vouch(ch, &[&child, &p], &ask);
        drop(ask);
        assert_eq!(c.fresh(InodeId(20)).map(|a| a.version), Some(1));
        // The unlink of its name touches the child and the parent.
        let unlink = c.begin_change(on(&[9, 20]));
        assert!(c.fresh(InodeId(20)).is_none());
        drop(unlink);
        assert!(c.fresh(InodeId(20)).is_none());
        // A child some own change names while the create is out is not vouched for.
        let ch = c.begin_change(on(&[9]));
        let link = c.begin_change(on(&[21, 30]));
        let ask = c.ask();
        let child = attr(21, 1, 0);
        c.note(&child);
        c.vouch(ch, &[&child], &ask);
        assert!(c.fresh(InodeId(21)).is_none());
        drop((ask, link));
        // Nor one made while another own change of the parent was under way (an unlink of
        // the same name, which the manager may apply after the create).
        let unlink = c.begin_change(on(&[9]));
        let ch = c.begin_change(on(&[9]));
        let ask = c.ask();
        let child = attr(22, 1, 0);
        c.note(&child);
        c.vouch(ch, &[&child], &ask);
        assert!(c.fresh(InodeId(22)).is_none());
        drop((ask, unlink));
    }

    #[test]
    fn a_create_that_overlapped_another_own_change_of_it_vouches_for_nothing() {
        let c = AttrCache::default();
        // An unlink under way when the create began: the manager may apply it after the
        // create, so the create's parent attributes may already be old.
        let unlink = c.begin_change(on(&[9, 12]));
        let create = c.begin_change(on(&[9]));
        created(&c, create, 9, 5);
        drop(unlink);
        assert!(c.fresh(InodeId(9)).is_none());
        // A change of it begun while the create was out: likewise.
        let create = c.begin_change(on(&[9]));
        let other = c.begin_change(on(&[9]));
        created(&c, create, 9, 7);
        drop(other);
        assert!(c.fresh(InodeId(9)).is_none());
        // One that began and ended while the create was out: likewise.
        let create = c.begin_change(on(&[9]));
        drop(c.begin_change(on(&[9])));
        created(&c, create, 9, 8);
        assert!(c.fresh(InodeId(9)).is_none());
        // A change that may touch anything, under way or begun meanwhile: likewise.
        let any = c.begin_change(unknown_in(50));
        let create = c.begin_change(on(&[9]));
        drop(any);
        created(&c, create, 9, 9);
        assert!(c.fresh(InodeId(9)).is_none());
        let create = c.begin_change(on(&[9]));
        drop(c.begin_change(unknown_in(50)));
        created(&c, create, 9, 10);
        assert!(c.fresh(InodeId(9)).is_none());
        // A change of an unknown entry in it, alone, vouches for the directory only.
        let ch = c.begin_change(on(&[20]));
        created(&c, ch, 20, 1);
        let unlink = c.begin_change(unknown_in(9));
        assert!(c.fresh(InodeId(20)).is_none(), "it may be the unlinked one");
        created(&c, unlink, 9, 11);
        assert_eq!(c.fresh(InodeId(9)).map(|a| a.version), Some(11));
        assert!(c.fresh(InodeId(20)).is_none());
        // And alone again: vouched.
        let create = c.begin_change(on(&[9, 9]));
        created(&c, create, 9, 12);
        assert_eq!(c.fresh(InodeId(9)).map(|a| a.version), Some(12));
    }

    #[test]
    fn drops_and_newer_versions_end_what_was_vouched() {
        let c = AttrCache::default();
        let ch = c.begin_change(on(&[9]));
        created(&c, ch, 9, 4);
        c.drop_one(InodeId(3));
        assert!(c.fresh(InodeId(9)).is_none(), "any callback clears");
        let ch = c.begin_change(on(&[9]));
        created(&c, ch, 9, 5);
        // A newer version cached since (an answer to a read): not the one vouched for.
        c.note(&attr(9, 8, 0));
        assert!(c.fresh(InodeId(9)).is_none());
        // A drop while the create's answer was in flight: not vouched.
        let ch = c.begin_change(on(&[9]));
        let ask = c.ask();
        c.drop_all();
        let p = attr(9, 10, 0);
        c.note(&p);
        c.vouch(ch, &[&p], &ask);
        assert!(c.fresh(InodeId(9)).is_none());
        let ch = c.begin_change(on(&[9]));
        created(&c, ch, 9, 11);
        c.drop_where(|_| true);
        assert!(c.fresh(InodeId(9)).is_none());
        // Nothing is left on the books once every change ended.
        let f = c.lock_fresh();
        assert!(f.busy.is_empty());
        assert_eq!(f.any_in_flight, 0);
    }
}
