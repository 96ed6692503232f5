//! The pure client half of the lease protocol (notes/leases.md): per manager the volume
//! lease as this client may rely on it, and per inode the write lease.
//!
//! Owns: what a reply, a grant, a failed renewal or a refusal means for the lease, as
//! events in and actions out (`VolumeLease::on_event` → `Action`s for `lease::session` to
//! run). The lease is extended **only** from what the manager granted: a `LeaseGrant`'s
//! `valid_ms` or a reply's `LeaseExtension`, counted from when the request was *sent* and
//! only from the incarnation that granted it. Cached state is usable only through a
//! `HeldLease`, obtained from a check against `now`.
//! Must not: read a clock (time is passed in), do I/O, use tokio, or know fuser.

use super::clock::BootInstant;
use proto::msg::{LeaseExtension, LeaseGrant, Standing};
use std::time::Duration;

/// Time the kernel may keep answering from what we told it (entry and attribute TTL).
pub const KERNEL_TTL: Duration = Duration::from_secs(1);
/// Extra safety between the kernel TTL and the lease expiry.
pub const MARGIN: Duration = Duration::from_millis(250);

/// Bumped whenever every cached copy of a manager's inodes was dropped: write leases
/// taken in an older epoch are no longer held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CacheEpoch(pub u64);

impl std::fmt::Display for CacheEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "epoch {}", self.0)
    }
}

/// What happened to the volume lease with one manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// `Hello` (`hello: true`) or `Renew` sent at `sent` was answered with `grant`.
    Granted {
        sent: BootInstant,
        grant: LeaseGrant,
        hello: bool,
    },
    /// An ordinary request sent at `sent` was answered, confirming `ext`.
    Confirmed {
        sent: BootInstant,
        ext: LeaseExtension,
    },
    /// The manager does not implement leases (`Hello` answered `Invalid`): caches are used
    /// without them.
    Unleased,
    /// A renewal got no usable answer; given up at `now`.
    RenewFailed { now: BootInstant },
}

/// What the session must do about an event, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Drop every cached copy of this manager's inodes (ours and the kernel's) and every
    /// write lease taken from it (the epoch was bumped already). With `discard_writes`,
    /// unflushed writes go too and their next fsync/close reports EIO (the manager gave
    /// up on us, others may have written since); otherwise they are committed once the
    /// write lease is taken again.
    DropCaches { discard_writes: bool },
    /// Introduce the session again (a manager that lost us may not know where to call
    /// back).
    Hello,
    /// Re-assert the write leases of inodes with buffered or unsynced writes (the manager
    /// restarted and is in its grace period).
    Reclaim,
}

/// Proof that the volume lease covering some cached state was valid, for the kernel TTL
/// plus the margin, when it was checked. Only `VolumeLease::check` makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldLease {
    /// `None` for a manager without leases.
    epoch: Option<CacheEpoch>,
    kernel_ttl: Duration,
}

impl HeldLease {
    /// The cache epoch the lease was held in (`None`: the manager has no leases).
    pub fn epoch(&self) -> Option<CacheEpoch> {
        self.epoch
    }

    /// How long the kernel may cache what this lease covers.
    pub fn kernel_ttl(&self) -> Duration {
        self.kernel_ttl
    }
}

/// The volume lease with one manager, as this client may rely on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeLease {
    enabled: bool,
    lease: Duration,
    incarnation: Option<u64>,
    /// Send time of a confirmed request + the lease time the manager said was left.
    expiry: Option<BootInstant>,
    epoch: CacheEpoch,
    /// Bumped by every grant (dedupes concurrent on-demand renewals).
    renewals: u64,
    /// The manager's count of times it gave up on us, as last granted.
    losses: u32,
}

impl Default for VolumeLease {
    fn default() -> Self {
        VolumeLease {
            enabled: false,
            lease: Duration::ZERO,
            incarnation: None,
            expiry: None,
            epoch: CacheEpoch(1),
            renewals: 0,
            losses: 0,
        }
    }
}

impl VolumeLease {
    /// The manager grants leases (answered `Hello`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The manager's configured lease (renewal pace).
    pub fn lease(&self) -> Duration {
        self.lease
    }

    pub fn incarnation(&self) -> Option<u64> {
        self.incarnation
    }

    pub fn expiry(&self) -> Option<BootInstant> {
        self.expiry
    }

    pub fn epoch(&self) -> CacheEpoch {
        self.epoch
    }

    pub fn renewals(&self) -> u64 {
        self.renewals
    }

    /// Where this client stands with the manager now (`None` before its first grant):
    /// recorded with buffered writes and sent with their commit.
    pub fn standing(&self) -> Option<Standing> {
        self.incarnation.map(|incarnation| Standing {
            incarnation,
            losses: self.losses,
        })
    }

    /// The lease, if cached state may be used (and handed to the kernel for
    /// `KERNEL_TTL`) at `now`. A manager without leases always holds.
    pub fn check(&self, now: BootInstant) -> Option<HeldLease> {
        if !self.enabled {
            return Some(HeldLease {
                epoch: None,
                kernel_ttl: KERNEL_TTL,
            });
        }
        let e = self.expiry?;
        (now + KERNEL_TTL + MARGIN < e).then_some(HeldLease {
            epoch: Some(self.epoch),
            kernel_ttl: KERNEL_TTL,
        })
    }

    /// How long the kernel may cache what the manager just told us at `now`: the kernel
    /// TTL, cut to the lease time left less the margin, so that no kernel cache outlives
    /// the lease that covers it.
    pub fn kernel_ttl(&self, now: BootInstant) -> Duration {
        if !self.enabled {
            return KERNEL_TTL;
        }
        let left = self
            .expiry
            .map(|e| e.saturating_duration_since(now))
            .unwrap_or_default();
        left.saturating_sub(MARGIN).min(KERNEL_TTL)
    }

    /// Applies an event; returns what the session must do, in order.
    pub fn on_event(&mut self, ev: Event) -> Vec<Action> {
        match ev {
            Event::Granted { sent, grant, hello } => self.granted(sent, &grant, hello),
            Event::Confirmed { sent, ext } => {
                // Only from the standing we know: an answer from another incarnation, or
                // one that overtook the grant telling us we were lost, extends nothing.
                if self.enabled
                    && self.incarnation == Some(ext.incarnation)
                    && self.losses == ext.losses
                {
                    self.extend_to(sent + Duration::from_millis(ext.valid_ms.into()));
                }
                Vec::new()
            }
            Event::Unleased => {
                self.enabled = false;
                Vec::new()
            }
            Event::RenewFailed { now } => {
                if self.check(now).is_some() {
                    return Vec::new();
                }
                // Without a valid lease nothing cached of this manager can be trusted.
                self.new_epoch();
                vec![
                    Action::DropCaches {
                        discard_writes: false,
                    },
                    Action::Hello,
                ]
            }
        }
    }

    /// A grant: a manager that gave up on us (same incarnation, `lost`) may have let
    /// others change our files, so our unflushed writes go too; a manager that restarted
    /// lost only its lease table (it refused changes for a grace period), so they are kept
    /// and committed under a reclaimed or fresh write lease.
    fn granted(&mut self, sent: BootInstant, g: &LeaseGrant, hello: bool) -> Vec<Action> {
        let restarted = self.incarnation.is_some_and(|i| i != g.incarnation);
        let known = self.incarnation.is_some() && !restarted;
        if known && g.losses < self.losses {
            // Sent before a loss we already learned of: it says nothing about now.
            return Vec::new();
        }
        // A grant that overtook the one saying `lost` still shows the loss by its count.
        let lost = g.lost || (known && g.losses > self.losses);
        self.losses = g.losses;
        self.enabled = true;
        self.lease = Duration::from_millis(g.lease_ms.into());
        self.incarnation = Some(g.incarnation);
        self.renewals += 1;
        let exp = sent + Duration::from_millis(g.valid_ms.into());
        if !(lost || restarted) {
            self.extend_to(exp);
            return Vec::new();
        }
        self.expiry = Some(exp);
        self.new_epoch();
        let mut out = vec![Action::DropCaches {
            discard_writes: lost && !restarted,
        }];
        if !hello {
            out.push(Action::Hello);
        }
        // Also when the restart is learned from a Hello's answer (the Hello a failed
        // renewal sends once the lease ran out while the manager was down): buffered
        // writes and commits the old incarnation may have lost are reclaimed either way.
        if restarted {
            out.push(Action::Reclaim);
        }
        out
    }

    fn extend_to(&mut self, exp: BootInstant) {
        self.expiry = Some(self.expiry.map_or(exp, |e| e.max(exp)));
    }

    fn new_epoch(&mut self) {
        self.epoch = CacheEpoch(self.epoch.0 + 1);
    }
}

/// The write lease of one inode, kept next to its dirty data so that checking it and
/// buffering a write are one atomic step with respect to a Flush callback giving it up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteLease {
    /// The epoch in which the lease was granted; `None` when not held.
    held: Option<CacheEpoch>,
    /// Bumped by every Flush callback: a grant that raced with one is not recorded.
    revocations: u64,
}

impl WriteLease {
    /// Held under `volume` (always, for a manager without leases).
    pub fn held_under(&self, volume: Option<CacheEpoch>) -> bool {
        match volume {
            None => true,
            Some(e) => self.held == Some(e),
        }
    }

    pub fn revocations(&self) -> u64 {
        self.revocations
    }

    /// A Flush callback: given up at once (a write from now on asks again).
    pub fn revoke(&mut self) {
        self.held = None;
        self.revocations += 1;
    }

    /// Whether it is held under some epoch (not necessarily the current one).
    pub fn is_held(&self) -> bool {
        self.held.is_some()
    }

    /// The volume lease's caches were dropped.
    pub fn forget(&mut self) {
        self.held = None;
    }

    /// Records a grant asked for when `revocations` were seen, in `epoch`; refused (false)
    /// when a Flush came meanwhile (the caller checks again and re-acquires).
    pub fn record(&mut self, epoch: CacheEpoch, revocations: u64) -> bool {
        if self.revocations != revocations {
            return false;
        }
        self.held = Some(epoch);
        true
    }
}

#[cfg(test)]
#[path = "engine_test.rs"]
mod tests;
