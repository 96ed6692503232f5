//! Kernel cache invalidation behind a small trait (`KernelCache`), so that the lease
//! runtime can make the kernel drop entries and attributes without knowing fuser.
//!
//! Owns: `invalidate` (on a blocking thread, bounded wait) and the fuser
//! implementation of the trait. Must not: hold client state or decide *when* to
//! invalidate (the lease engine and the callbacks do).

use crate::lease::KERNEL_TTL;
use proto::ids::InodeId;
use std::sync::Arc;
use std::time::Duration;

/// How long a callback waits for the kernel to drop its caches before answering anyway
/// (the kernel's entries and attributes expire after `KERNEL_TTL` regardless).
const KERNEL_INVAL_WAIT: Duration = KERNEL_TTL;

/// The kernel's caches of a mount, as far as the client may invalidate them. Calls may
/// block (they write to the FUSE device).
pub trait KernelCache: Send + Sync + 'static {
    fn inval_entry(&self, parent: InodeId, name: &str) -> std::io::Result<()>;
    fn inval_inode(&self, ino: InodeId) -> std::io::Result<()>;
}

impl KernelCache for fuser::Notifier {
    fn inval_entry(&self, parent: InodeId, name: &str) -> std::io::Result<()> {
        fuser::Notifier::inval_entry(self, fuser::INodeNo(parent.0), std::ffi::OsStr::new(name))
    }

    fn inval_inode(&self, ino: InodeId) -> std::io::Result<()> {
        fuser::Notifier::inval_inode(self, fuser::INodeNo(ino.0), 0, 0)
    }
}

/// Tells the kernel to drop what it caches of `inodes` and `entries` (no-op without a
/// mount). Runs on a blocking thread, waiting at most `KERNEL_INVAL_WAIT`.
pub(crate) async fn invalidate(
    kernel: Option<Arc<dyn KernelCache>>,
    inodes: Vec<InodeId>,
    entries: Vec<(InodeId, String)>,
) {
    {
        let Some(n) = kernel else { return };
        if inodes.is_empty() && entries.is_empty() {
            return;
        }
        // Inodes first: an entry invalidation waits for the directory's lock, which a
        // local rename or create holds while it waits for a manager. A name the kernel
        // keeps meanwhile is handled at open (an unlinked inode answers ESTALE).
        let job = tokio::task::spawn_blocking(move || {
            for ino in &inodes {
                if let Err(e) = n.inval_inode(*ino) {
                    tracing::debug!(inode = %ino, "kernel inode invalidation failed: {e}");
                }
            }
            for (parent, name) in &entries {
                if let Err(e) = n.inval_entry(*parent, name) {
                    tracing::debug!(%parent, name, "kernel entry invalidation failed: {e}");
                }
            }
        });
        if tokio::time::timeout(KERNEL_INVAL_WAIT, job).await.is_err() {
            tracing::warn!(
                "the kernel did not drop its caches within {KERNEL_INVAL_WAIT:?}; answering the callback (its TTL expires them; opens of unlinked inodes answer ESTALE meanwhile)"
            );
        }
    }
}
