//! The parents of directories this client looked up or created, for `..` in readdir
//! without asking the manager each time. A hint cache: dropped with the inode's other
//! cached state (callbacks, a lost lease) and when a rename may have moved a directory.
//!
//! Owns: the directory → parent map. Must not: ask the manager (`ops::dir` does on a miss).

use dashmap::DashMap;
use proto::ids::InodeId;

#[derive(Default)]
pub(crate) struct DirParents {
    parents: DashMap<InodeId, InodeId>,
}

impl DirParents {
    pub fn get(&self, dir: InodeId) -> Option<InodeId> {
        self.parents.get(&dir).map(|p| *p)
    }

    pub fn learn(&self, dir: InodeId, parent: InodeId) {
        self.parents.insert(dir, parent);
    }

    pub fn forget(&self, dir: InodeId) {
        self.parents.remove(&dir);
    }

    /// Forgets every directory known to sit in `parent` (one of them moved elsewhere).
    pub fn forget_children_of(&self, parent: InodeId) {
        self.parents.retain(|_, p| *p != parent);
    }

    /// Forgets the directories `drop` selects (e.g. those of one manager).
    pub fn forget_where(&self, drop: impl Fn(&InodeId) -> bool) {
        self.parents.retain(|d, _| !drop(d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_learnt_and_forgotten_by_dir_by_parent_and_by_owner() {
        let p = DirParents::default();
        let (root, a, b, c) = (InodeId(1), InodeId(10), InodeId(11), InodeId(12));
        p.learn(a, root);
        p.learn(b, root);
        p.learn(c, a);
        assert_eq!(p.get(c), Some(a));
        p.forget_children_of(root);
        assert_eq!((p.get(a), p.get(b), p.get(c)), (None, None, Some(a)));
        p.learn(a, root);
        p.forget(c);
        assert_eq!(p.get(c), None);
        p.forget_where(|d| *d == a);
        assert_eq!(p.get(a), None);
    }
}
