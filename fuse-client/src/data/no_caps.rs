//! Inodes known to have no `security.capability` xattr: the kernel asks for it before
//! every write, so a known absence is answered locally. Valid under the volume lease like
//! any cached attribute: dropped with the inode's other cached state (callbacks, a lost
//! lease) and by this client's own xattr and attribute changes.
//!
//! Owns: the set. Must not: ask the manager (`ops::namespace` does on a miss).

use dashmap::DashSet;
use proto::ids::InodeId;

#[derive(Default)]
pub(crate) struct NoCaps {
    inodes: DashSet<InodeId>,
}

impl NoCaps {
    pub fn known_absent(&self, ino: InodeId) -> bool {
        self.inodes.contains(&ino)
    }

    pub fn learn_absent(&self, ino: InodeId) {
        self.inodes.insert(ino);
    }

    pub fn forget(&self, ino: InodeId) {
        self.inodes.remove(&ino);
    }

    /// Forgets the inodes `drop` selects (e.g. those of one manager).
    pub fn forget_where(&self, drop: impl Fn(&InodeId) -> bool) {
        self.inodes.retain(|i| !drop(i));
    }

    pub fn clear(&self) {
        self.inodes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absences_are_learnt_and_forgotten() {
        let n = NoCaps::default();
        let (a, b) = (InodeId(1), InodeId(2));
        n.learn_absent(a);
        n.learn_absent(b);
        assert!(n.known_absent(a) && n.known_absent(b));
        n.forget(a);
        assert!(!n.known_absent(a));
        n.forget_where(|i| *i == b);
        assert!(!n.known_absent(b));
        n.learn_absent(a);
        n.clear();
        assert!(!n.known_absent(a));
    }
}
