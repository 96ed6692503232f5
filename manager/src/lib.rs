//! The manager role: metadata of the inodes in this node's manager slots (attributes,
//! directories, extent maps, symlinks, xattrs, open sessions), persisted as records and
//! checkpoints in the manager's own striped log, plus the two-phase commit for operations
//! that span managers.
//!
//! Layout: `state` (pure state + apply), `directory` (entries with stable readdir
//! cookies), `plan` (pure validation → records), `extent` (extent maps), `usage` (live
//! bytes per data segment, reclaim floors), `sums` (end-to-end checksums of data segments), `reclaim` (deletes dead data segments),
//! `cleaner` (policy and conditional relocation), `txn` (pure 2PC driver), `backend` (the
//! log a manager writes to), `metalog` (the metadata log: `record` durable record
//! formats, `checkpoint` checkpoints in bounded chunks and the legacy format, `journal`
//! group commit over the log, `recovery` checkpoint + roll forward; re-exported at the
//! root under those names), `lease` (pure volume leases and callbacks, `lease::engine`)
//! `serving_lease` (the node's membership lease: no request is served without it when
//! automatic takeover is on), `holders` (pure: which client sessions fetched which extent windows, the hints of
//! cooperative caching), and `service` (the async request handler, one file per part: see its doc); `testing`
//! (test doubles: `MemLog`, `LoopbackPeers`, `NoCallbacks`) only under `cfg(test)` or the
//! `testing` feature. Must not: store file bytes, or talk to clients other than by
//! replies and lease callbacks.

pub mod access;
pub mod backend;
pub mod calls;
pub mod cleaner;
pub mod directory;
pub mod error;
pub mod extent;
pub mod holders;
pub mod lease;
pub mod metalog;
pub mod plan;
pub mod reclaim;
pub mod service;
pub mod serving_lease;
pub mod state;
pub mod sums;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod txn;
pub mod usage;

#[cfg(test)]
mod check_test;
#[cfg(test)]
mod cluster_test;
#[cfg(test)]
mod once_test;
#[cfg(test)]
mod service_test;
#[cfg(test)]
mod state_test;
#[cfg(test)]
mod two_phase_test;
#[cfg(test)]
mod txn_test;

pub use error::{Errno, ManagerError};
// The log's modules under their paths from before `metalog` grouped them.
pub use metalog::{checkpoint, journal, record, recovery};

pub use service::Service;
pub use state::MetaState;
