//! Handles this client gives the kernel for open files and directories.
//!
//! Owns: `FileHandle` and `Handles`, the allocator (unique per mount). Must not: know what
//! a handle names (`data::open_dirs` keeps the directory streams by handle).

use std::sync::atomic::{AtomicU64, Ordering};

/// A handle this client gave the kernel for an open file or directory (unique per mount;
/// directory handles name their buffered listing page).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileHandle(pub u64);

/// Hands out `FileHandle`s 1, 2, 3, ...
#[derive(Debug)]
pub(crate) struct Handles {
    next: AtomicU64,
}

impl Default for Handles {
    fn default() -> Handles {
        Handles {
            next: AtomicU64::new(1),
        }
    }
}

impl Handles {
    pub fn next(&self) -> FileHandle {
        FileHandle(self.next.fetch_add(1, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_unique_and_never_zero() {
        let h = Handles::default();
        let (a, b) = (h.next(), h.next());
        assert_ne!(a, b);
        assert!(a.0 > 0 && b.0 > 0);
    }
}
