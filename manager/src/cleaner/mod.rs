//! The cleaner (DESIGN.md §6), pure parts: which segments to clean (`policy`, LFS
//! cost-benefit) and the conditional extent update that moves live data to the cleaner's
//! log only where the extent map still points at the old copy (`relocate`). Must not: do
//! I/O. Not built yet: the worker that reads the chosen segments' live extents, rewrites
//! them into the cleaner's log and commits `plan_relocate` through an RPC; nothing calls
//! these yet. Deletion of emptied segments is the reclaimer's (`reclaim`).

pub mod policy;
pub mod relocate;
