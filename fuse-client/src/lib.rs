//! The Shoal client role: a FUSE mount over the cluster, its caches and its own write log.
//!
//! The parts, each calling only the ones below it (no import circles; `tests/layout.rs`
//! checks):
//! - `kernel`: the only fuser importer — callbacks → operations (`fs`), `mount`, `attr`
//!   conversions, `notify` (kernel cache invalidation behind `KernelCache`);
//! - `ops`: the file-system operations (`namespace`, `attr`, `io`, `dir`), methods of
//!   `Client`;
//! - `lease::session`: write leases, reclaim, cache dropping and manager callbacks (its
//!   state in `lease::session_state`);
//! - `data`: dirty data, the attribute cache (`attrs`), block and extent caches, listing
//!   pages, the read path, the write-back part (`writeback`: log writer, horizon, commit
//!   locks, write verifier; commits through `meta`) and the flush procedure (`flush`);
//! - `meta`: the one manager-RPC layer (routing, retry, errno mapping, volume leases fed
//!   to the pure engine in `lease::engine`);
//! - `coop`: cooperative caching — peer reads by log address (asked from `data::read`),
//!   answering peers from the block cache, the `shoal.stats` counters;
//! - `handle`: the handles given to the kernel;
//! - `client`: the composition root (connect, workers, shutdown), holding the parts.
//!
//! Must not block a runtime thread, and must not link the manager crate.

pub mod client;
pub mod coop;
pub mod credentials;
pub mod data;
pub mod error;
pub mod handle;
pub mod horizon;
pub mod kernel;
pub mod lease;
pub mod meta;
pub mod ops;
pub mod stats;
pub mod verifier;

pub use client::CallbackHandler;
pub use client::Client;
pub use coop::stats::CoopStats;
pub use data::listing::DirItem;
pub use error::{ClientError, FsError};
pub use handle::FileHandle;
pub use kernel::mount::{mount, Mount, MountOptions};
pub use ops::namespace::{
    StatFs, CONFIG_EPOCH_XATTR, DROP_CACHES_XATTR, PEER_READS_XATTR, STATS_XATTR, UNFLUSHED_XATTR,
};
pub use proto::worker::{WorkerState, WorkerStatus};
pub use stats::ClientStats;
