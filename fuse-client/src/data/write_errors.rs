//! Write errors that background work found (a refused commit, writes discarded with a
//! lost lease, commits a manager restart may have lost), kept per inode until the next
//! close or fsync of the inode reports them (write-back semantics, like a local file
//! system's deferred I/O errors).
//!
//! Owns: the pending errors. Must not: decide what is an error (the callers do).

use crate::error::FsError;
use dashmap::DashMap;
use proto::ids::InodeId;

#[derive(Default)]
pub(crate) struct WriteErrors {
    pending: DashMap<InodeId, FsError>,
}

impl WriteErrors {
    /// Remembers `e` for `ino` (a later error replaces an earlier one).
    pub fn record(&self, ino: InodeId, e: FsError) {
        self.pending.insert(ino, e);
    }

    /// The error pending for `ino`, reported once.
    pub fn take(&self, ino: InodeId) -> Result<(), FsError> {
        match self.pending.remove(&ino) {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_reported_once_for_its_inode_only() {
        let w = WriteErrors::default();
        w.record(InodeId(1), FsError::EIO);
        assert_eq!(w.take(InodeId(2)), Ok(()));
        assert_eq!(w.take(InodeId(1)), Err(FsError::EIO));
        assert_eq!(w.take(InodeId(1)), Ok(()));
    }
}
