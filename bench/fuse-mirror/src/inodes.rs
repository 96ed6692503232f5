//! The kernel inode number <-> backing path table of the mirror. Owns number allocation
//! (root = 1, then counting up, never reused, so the generation is always 0) and keeps paths
//! right across rename/unlink. It must not touch the backing file system.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Inode numbers and the backing paths they stand for.
#[derive(Debug)]
pub struct Inodes {
    by_ino: HashMap<u64, PathBuf>,
    by_path: HashMap<PathBuf, u64>,
    next: u64,
}

impl Inodes {
    /// A table holding only the root (inode 1 = `root`).
    pub fn new(root: PathBuf) -> Inodes {
        let mut t = Inodes {
            by_ino: HashMap::new(),
            by_path: HashMap::new(),
            next: 2,
        };
        t.by_ino.insert(1, root.clone());
        t.by_path.insert(root, 1);
        t
    }

    /// The backing path of `ino`, if it is known.
    pub fn path(&self, ino: u64) -> Option<PathBuf> {
        self.by_ino.get(&ino).cloned()
    }

    /// The inode number of `path`, allocating one the first time the path is seen.
    pub fn ino_of(&mut self, path: &Path) -> u64 {
        if let Some(&ino) = self.by_path.get(path) {
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.by_ino.insert(ino, path.to_path_buf());
        self.by_path.insert(path.to_path_buf(), ino);
        ino
    }

    /// Forgets `path` (after unlink/rmdir). Open handles keep working through their fds.
    pub fn remove(&mut self, path: &Path) {
        if let Some(ino) = self.by_path.remove(path) {
            self.by_ino.remove(&ino);
        }
    }

    /// Moves `from` (and, for a directory, everything below it) to `to`; whatever `to` named
    /// before is forgotten, as the rename replaced it.
    pub fn rename(&mut self, from: &Path, to: &Path) {
        self.remove(to);
        let moved: Vec<(PathBuf, u64)> = self
            .by_path
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        for (old, ino) in moved {
            let rest = old.strip_prefix(from).unwrap_or(Path::new(""));
            let new = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
            self.by_path.remove(&old);
            self.by_path.insert(new.clone(), ino);
            self.by_ino.insert(ino, new);
        }
    }

    /// Swaps the names of `a` and `b` (and their subtrees), for RENAME_EXCHANGE.
    pub fn exchange(&mut self, a: &Path, b: &Path) {
        let tmp = a.with_file_name(".fuse-mirror-exchange-tmp");
        self.rename(a, &tmp);
        self.rename(b, a);
        self.rename(&tmp, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_stable_and_renames_move_subtrees() {
        let mut t = Inodes::new(PathBuf::from("/b"));
        assert_eq!(t.ino_of(Path::new("/b")), 1);
        let d = t.ino_of(Path::new("/b/d"));
        let f = t.ino_of(Path::new("/b/d/f"));
        let x = t.ino_of(Path::new("/b/x"));
        assert_eq!(t.ino_of(Path::new("/b/d/f")), f);
        t.rename(Path::new("/b/d"), Path::new("/b/x"));
        assert_eq!(t.path(d), Some(PathBuf::from("/b/x")));
        assert_eq!(t.path(f), Some(PathBuf::from("/b/x/f")));
        assert_eq!(t.path(x), None, "the replaced target is forgotten");
        // a sibling sharing a name prefix is not part of the subtree
        let xy = t.ino_of(Path::new("/b/xy"));
        t.rename(Path::new("/b/x"), Path::new("/b/z"));
        assert_eq!(t.path(xy), Some(PathBuf::from("/b/xy")));
        t.exchange(Path::new("/b/z"), Path::new("/b/xy"));
        assert_eq!(t.path(d), Some(PathBuf::from("/b/xy")));
        assert_eq!(t.path(xy), Some(PathBuf::from("/b/z")));
        t.remove(Path::new("/b/z"));
        assert_eq!(t.path(xy), None);
        assert!(
            t.ino_of(Path::new("/b/new")) > x,
            "numbers are never reused"
        );
    }
}
