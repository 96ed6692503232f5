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

/// The longest a callback waits for the kernel to drop its caches before answering anyway
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
/// mount). Runs on a blocking thread, waiting at most `cached_for` (how long anything
/// handed to the kernel may still be cached there, `Meta::kernel_cache_left`) and never
/// more than `KERNEL_INVAL_WAIT`: past that the kernel has nothing left to drop. A mount
/// whose own rename holds a directory's lock while it waits for a manager makes every
/// invalidation in that directory wait; answering each callback only after a full TTL
/// kept its renewals held back until its lease ran out (consistency/t56).
pub(crate) async fn invalidate(
    kernel: Option<Arc<dyn KernelCache>>,
    inodes: Vec<InodeId>,
    entries: Vec<(InodeId, String)>,
    cached_for: Duration,
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
        let wait = cached_for.min(KERNEL_INVAL_WAIT);
        if tokio::time::timeout(wait, job).await.is_err() {
            tracing::warn!(
                "the kernel did not drop its caches within {wait:?}; answering the callback (by then their TTL has expired them; opens of unlinked inodes answer ESTALE)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A kernel whose invalidations block (a directory lock held by a request of our own
    /// that waits for a manager), for at most `for_` each.
    struct Stuck {
        for_: Duration,
    }

    impl KernelCache for Stuck {
        fn inval_entry(&self, _: InodeId, _: &str) -> std::io::Result<()> {
            std::thread::sleep(self.for_);
            Ok(())
        }
        fn inval_inode(&self, _: InodeId) -> std::io::Result<()> {
            std::thread::sleep(self.for_);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_stuck_kernel_is_waited_for_only_while_it_may_cache_something() {
        let stuck: Arc<dyn KernelCache> = Arc::new(Stuck {
            for_: Duration::from_millis(1500),
        });
        let entries = vec![(InodeId(1), "f".to_string())];
        // Nothing handed to the kernel is still cached there: no reason to wait.
        let t = Instant::now();
        invalidate(
            Some(stuck.clone()),
            vec![InodeId(2)],
            entries.clone(),
            Duration::ZERO,
        )
        .await;
        assert!(t.elapsed() < KERNEL_INVAL_WAIT / 2, "{:?}", t.elapsed());
        // Something may be cached for a while: wait that long, and never past a TTL.
        let t = Instant::now();
        invalidate(
            Some(stuck),
            vec![InodeId(2)],
            entries,
            Duration::from_secs(60),
        )
        .await;
        assert!(t.elapsed() >= KERNEL_INVAL_WAIT, "{:?}", t.elapsed());
    }
}
