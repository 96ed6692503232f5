//! The cleaner (DESIGN.md §6), pure parts: which segments to clean (`policy`, LFS
//! cost-benefit) and the conditional extent update that moves live data to the cleaner's
//! log only where the extent map still points at the old copy (`relocate`). Must not: do
//! I/O. The worker that reads, rewrites and commits is not built yet (see the README of
//! the branch's report); deletion of the emptied segments is the reclaimer's (`reclaim`).

pub mod policy;
pub mod relocate;
