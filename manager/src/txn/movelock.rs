//! The cluster-wide directory-move lock, served by the manager of the root's slot.
//!
//! Why it is needed: a rename that moves directory X under a new parent P must check that
//! X is not P or an ancestor of P, by walking `..` from P to the root, possibly across
//! managers. Two such moves can each pass their check and together build a cycle
//! (`mv a/b c/` and `mv c a/b/`). Why this lock suffices (the argument of Linux's
//! `s_vfs_rename_mutex`): the ancestry of an existing directory changes only when some
//! directory moves to a different parent (mkdir and rmdir add or remove leaves; a rename
//! within one parent changes no `..`). Every such move holds this lock from its ancestry
//! walk until its change is applied on every manager, so each walk sees a tree no other
//! move is changing, and the check still holds when the move lands: no cycle, no subtree
//! cut off from the root.
//!
//! The lock is a lease: a holder that dies (or a coordinator that cannot finish) loses it
//! after `ttl`, so a crashed manager cannot block directory moves for good.
//! Must not: read clocks (the caller passes `now`) or do I/O.

use std::time::{Duration, Instant};

/// How long a grant lasts unless released or renewed.
pub const MOVE_LOCK_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct MoveLock {
    holder: Option<(u64, Instant)>,
}

impl MoveLock {
    /// Grants (or renews) the lock to `token` unless another live holder has it.
    pub fn acquire(&mut self, token: u64, now: Instant, ttl: Duration) -> bool {
        match self.holder {
            Some((t, until)) if t != token && until > now => false,
            _ => {
                self.holder = Some((token, now + ttl));
                true
            }
        }
    }

    /// Gives the lock back if `token` holds it.
    pub fn release(&mut self, token: u64) {
        if matches!(self.holder, Some((t, _)) if t == token) {
            self.holder = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_until_release_or_expiry() {
        let mut l = MoveLock::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        assert!(l.acquire(1, t0, ttl));
        assert!(!l.acquire(2, t0, ttl), "held by 1");
        assert!(l.acquire(1, t0, ttl), "renewal by the holder");
        l.release(2);
        assert!(
            !l.acquire(2, t0 + Duration::from_secs(1), ttl),
            "2 cannot release 1's lock"
        );
        l.release(1);
        assert!(l.acquire(2, t0, ttl));
        assert!(
            l.acquire(3, t0 + ttl + Duration::from_secs(1), ttl),
            "2's lease ran out"
        );
    }
}
