//! The cleaner (DESIGN.md §6): which segments to clean (`policy`, LFS cost-benefit), the
//! conditional extent update that moves live data to the cleaner's log only where the
//! extent map still points at the old copy (`relocate`, pure), and the worker that copies
//! and swaps (`worker`; it also runs the reclaimer's passes on the node that reclaims).
//! Deletion of emptied segments is the reclaimer's (`reclaim`). Must not: delete segments.

pub mod policy;
pub mod relocate;
pub mod worker;
