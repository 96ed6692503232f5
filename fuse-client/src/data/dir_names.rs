//! Directories whose every name this client knows, so that a lookup of a name that is not
//! there is answered locally instead of by a manager round trip (a create is a negative
//! lookup and then the create: this halves the round trips of creating files in a
//! directory the client made, as an untar or a build does).
//!
//! A directory becomes known only when this client made it (the manager's answer to its
//! mkdir: empty, and the client became a reader of it); it stays known while the client
//! is a reader, i.e. until a callback, a lost lease or `shoal.drop_caches` drops the
//! directory's cached state, which drops it here too. Another client's change of the
//! directory always comes with such a callback before that change is answered.
//!
//! The names kept are those that *may* exist: this client's own create, link or rename
//! into the directory adds its name before the request is sent, and its own unlink, rmdir
//! or rename away removes the name only once the manager answered. So a name missing
//! from a known directory is absent at the manager now, whatever this client's own
//! requests in flight do; a name that is present means "ask the manager", unless it also
//! maps to an inode: that is set only from the manager's answer to this client's own
//! create of the name, when no own request that may add or remove the name began since
//! the create did, and dropped by the next such request. Then the name is that inode at
//! the manager now (a lookup may answer it locally, with the inode's attributes if
//! `data::attrs` vouches for them).
//!
//! Owns: the sets, bounded (`MAX_NAMES` over all directories; a directory that would pass
//! it is forgotten, which only costs round trips). Must not: ask a manager, or learn a
//! directory from anything but an answer that made this client its reader.

use proto::ids::InodeId;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Names kept over all known directories at most.
pub const MAX_NAMES: usize = 1 << 18;
/// Directories known at most (past it, one of them is forgotten to make room).
pub const MAX_DIRS: usize = 4096;

#[derive(Default)]
struct Known {
    dirs: HashMap<InodeId, HashMap<String, Named>>,
    names: usize,
    /// Bumped by every `may_exist`: a removal is applied only if no own request that may
    /// add a name began since the removing request was sent (`removed`).
    adds: u64,
    /// Bumped by every own request that may add or remove a name (`may_exist`, `mark`).
    touches: u64,
}

/// A name that may exist in a known directory.
struct Named {
    /// The inode it is, known from our own create's answer (see the module docs).
    ino: Option<InodeId>,
    /// `Known::touches` at the latest own request that may add or remove it.
    touched: u64,
}

impl Known {
    fn forget(&mut self, dir: InodeId) {
        if let Some(set) = self.dirs.remove(&dir) {
            self.names -= set.len();
        }
    }
}

/// The directories this client knows completely (see the module docs).
#[derive(Default)]
pub(crate) struct DirNames {
    known: Mutex<Known>,
}

impl DirNames {
    fn lock(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `dir` was just made by this client, and nothing was dropped since it asked: empty.
    pub fn learn_empty(&self, dir: InodeId) {
        let mut k = self.lock();
        k.forget(dir);
        if k.dirs.len() >= MAX_DIRS {
            // Any one gives way (a removed directory's set is never asked for again).
            if let Some(old) = k.dirs.keys().next().copied() {
                k.forget(old);
            }
        }
        k.dirs.insert(dir, HashMap::new());
    }

    /// Whether `name` is known to be absent from `dir`.
    #[cfg(test)]
    pub fn known_absent(&self, dir: InodeId, name: &str) -> bool {
        self.entry(dir, name) == Some(None)
    }

    /// The inode `name` is in `dir`, if known (see the module docs).
    pub fn child(&self, dir: InodeId, name: &str) -> Option<InodeId> {
        self.lock().dirs.get(&dir)?.get(name)?.ino
    }

    /// What a change of the entry `name` of `dir` touches: `Some(Some(ino))` if the name
    /// is that inode, `Some(None)` if it is known to be absent, `None` if unknown.
    pub fn entry(&self, dir: InodeId, name: &str) -> Option<Option<InodeId>> {
        let k = self.lock();
        let set = k.dirs.get(&dir)?;
        match set.get(name) {
            None => Some(None),
            Some(n) => n.ino.map(Some),
        }
    }

    /// Whether `dir` is known completely.
    pub fn knows(&self, dir: InodeId) -> bool {
        self.lock().dirs.contains_key(&dir)
    }

    /// `name` may exist in `dir` from now on (before this client's own create, link or
    /// rename into it is sent). Returns the token for `created`.
    pub fn may_exist(&self, dir: InodeId, name: &str) -> u64 {
        let mut k = self.lock();
        k.adds += 1;
        k.touches += 1;
        let touched = k.touches;
        let full = k.names >= MAX_NAMES;
        let Some(set) = k.dirs.get_mut(&dir) else {
            return touched;
        };
        if let Some(n) = set.get_mut(name) {
            n.ino = None;
            n.touched = touched;
            return touched;
        }
        if full {
            k.forget(dir);
            return touched;
        }
        set.insert(name.to_string(), Named { ino: None, touched });
        k.names += 1;
        touched
    }

    /// Our own create of `name` in `dir`, begun with `token` (from `may_exist`), made
    /// `ino`: the name is that inode if no own request that may add or remove it began
    /// since.
    pub fn created(&self, dir: InodeId, name: &str, ino: InodeId, token: u64) {
        let mut k = self.lock();
        if let Some(n) = k.dirs.get_mut(&dir).and_then(|s| s.get_mut(name)) {
            if n.touched == token {
                n.ino = Some(ino);
            }
        }
    }

    /// A mark to take before sending a request that removes `name` from `dir` (for
    /// `removed`); from now on the name is not known to be any inode.
    pub fn mark(&self, dir: InodeId, name: &str) -> u64 {
        let mut k = self.lock();
        k.touches += 1;
        let touched = k.touches;
        if let Some(n) = k.dirs.get_mut(&dir).and_then(|s| s.get_mut(name)) {
            n.ino = None;
            n.touched = touched;
        }
        k.adds
    }

    /// `name` is gone from `dir`: the manager answered this client's own unlink, rmdir or
    /// rename away, sent after `mark` was taken. Kept (as "may exist") if an own request
    /// that may add a name began since: it may have re-created the name after the removal.
    pub fn removed(&self, dir: InodeId, name: &str, mark: u64) {
        let mut k = self.lock();
        if k.adds != mark {
            return;
        }
        if k.dirs
            .get_mut(&dir)
            .is_some_and(|s| s.remove(name).is_some())
        {
            k.names -= 1;
        }
    }

    /// Forgets `dir` (its cached state was dropped, or it is gone).
    pub fn forget(&self, dir: InodeId) {
        self.lock().forget(dir);
    }

    /// Forgets the directories `drop` selects (e.g. those of one manager).
    pub fn forget_where(&self, drop: impl Fn(&InodeId) -> bool) {
        let mut k = self.lock();
        let gone: Vec<InodeId> = k.dirs.keys().copied().filter(|d| drop(d)).collect();
        for d in gone {
            k.forget(d);
        }
    }

    pub fn clear(&self) {
        let mut k = self.lock();
        k.dirs.clear();
        k.names = 0;
    }

    /// Names kept over all directories (for tests of the bound).
    #[cfg(test)]
    fn names(&self) -> usize {
        self.lock().names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: InodeId = InodeId(7);
    const E: InodeId = InodeId(8);

    #[test]
    fn only_a_learnt_directory_answers_absent() {
        let n = DirNames::default();
        assert!(
            !n.known_absent(D, "a"),
            "unknown directory: ask the manager"
        );
        n.learn_empty(D);
        assert!(n.known_absent(D, "a"));
        n.may_exist(D, "a");
        assert!(!n.known_absent(D, "a"), "an own create in flight: ask");
        assert!(n.known_absent(D, "b"));
        let m = n.mark(D, "a");
        n.removed(D, "a", m);
        assert!(n.known_absent(D, "a"));
        // Names added to an unknown directory are not kept.
        n.may_exist(E, "x");
        assert!(!n.knows(E));
        assert_eq!(n.names(), 0);
    }

    #[test]
    fn drops_forget_directories() {
        let n = DirNames::default();
        n.learn_empty(D);
        n.learn_empty(E);
        n.may_exist(D, "a");
        n.may_exist(E, "b");
        n.forget(D);
        assert!(!n.known_absent(D, "z"));
        assert!(n.known_absent(E, "z"));
        assert_eq!(n.names(), 1);
        n.forget_where(|d| *d == E);
        assert!(!n.knows(E));
        assert_eq!(n.names(), 0);
        n.learn_empty(D);
        n.may_exist(D, "a");
        n.clear();
        assert!(!n.knows(D));
        assert_eq!(n.names(), 0);
    }

    #[test]
    fn a_directory_past_the_bound_is_forgotten_not_wrong() {
        let n = DirNames::default();
        n.learn_empty(D);
        n.learn_empty(E);
        for i in 0..MAX_NAMES {
            n.may_exist(D, &format!("f{i}"));
        }
        assert_eq!(n.names(), MAX_NAMES);
        // A name that may exist cannot be left out: the directory is forgotten instead.
        n.may_exist(E, "one-more");
        assert!(!n.knows(E));
        assert!(!n.known_absent(E, "one-more"));
        // Known names may still be added again (no growth).
        n.may_exist(D, "f0");
        assert!(n.knows(D));
        let m = n.mark(D, "f0");
        n.removed(D, "f0", m);
        assert_eq!(n.names(), MAX_NAMES - 1);
    }

    #[test]
    fn directories_past_the_bound_make_room() {
        let n = DirNames::default();
        for i in 0..MAX_DIRS as u64 + 10 {
            n.learn_empty(InodeId(100 + i));
        }
        assert_eq!(n.lock().dirs.len(), MAX_DIRS);
        assert!(
            n.knows(InodeId(100 + MAX_DIRS as u64 + 9)),
            "the newest is kept"
        );
    }

    #[test]
    fn a_removal_racing_an_own_create_of_the_name_keeps_it() {
        let n = DirNames::default();
        n.learn_empty(D);
        n.may_exist(D, "x");
        // An unlink of x is sent; a create of x begins before its answer comes back (the
        // manager may have applied the unlink first, then the create).
        let m = n.mark(D, "x");
        n.may_exist(D, "x");
        n.removed(D, "x", m);
        assert!(!n.known_absent(D, "x"), "x may exist: ask the manager");
        // With nothing in between the removal applies.
        let m = n.mark(D, "x");
        n.removed(D, "x", m);
        assert!(n.known_absent(D, "x"));
    }

    #[test]
    fn relearning_a_directory_resets_its_count() {
        let n = DirNames::default();
        n.learn_empty(D);
        n.may_exist(D, "a");
        n.learn_empty(D);
        assert_eq!(n.names(), 0);
        assert!(n.known_absent(D, "a"));
    }

    #[test]
    fn a_name_is_an_inode_only_from_an_own_create_that_nothing_overlapped() {
        let n = DirNames::default();
        n.learn_empty(D);
        assert_eq!(n.entry(D, "a"), Some(None), "absent");
        assert_eq!(n.entry(E, "a"), None, "unknown directory");
        let t = n.may_exist(D, "a");
        assert_eq!(n.entry(D, "a"), None, "a create under way: unknown");
        n.created(D, "a", InodeId(40), t);
        assert_eq!(n.child(D, "a"), Some(InodeId(40)));
        assert_eq!(n.entry(D, "a"), Some(Some(InodeId(40))));
        // A removal begun: no longer known to be that inode, until the answer removes it.
        let m = n.mark(D, "a");
        assert_eq!(n.child(D, "a"), None);
        n.removed(D, "a", m);
        assert_eq!(n.entry(D, "a"), Some(None));
        // A create whose name was touched again while it was out learns nothing.
        let t = n.may_exist(D, "b");
        let t2 = n.may_exist(D, "b");
        n.created(D, "b", InodeId(41), t);
        assert_eq!(n.child(D, "b"), None);
        n.created(D, "b", InodeId(42), t2);
        assert_eq!(n.child(D, "b"), Some(InodeId(42)));
        let t = n.may_exist(D, "c");
        let _ = n.mark(D, "c");
        n.created(D, "c", InodeId(43), t);
        assert_eq!(n.child(D, "c"), None);
        // Creates of other names in between do not matter.
        let t = n.may_exist(D, "d");
        let _ = n.may_exist(D, "e");
        n.created(D, "d", InodeId(44), t);
        assert_eq!(n.child(D, "d"), Some(InodeId(44)));
        // A link or rename onto a known name makes it unknown again.
        let _ = n.may_exist(D, "d");
        assert_eq!(n.child(D, "d"), None);
    }
}
