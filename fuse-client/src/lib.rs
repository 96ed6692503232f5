//! The Shoal client role: a FUSE mount over the cluster, its caches and its own write log.
//!
//! `Client` is the file system core (async, FUSE-independent): metadata goes to the managers
//! (`proto::route::ManagerClient`), written data is buffered (`dirty`), appended to this
//! client's log as segments and committed as extents (`writeback`), and reads overlay dirty
//! data on a bounded block cache (`cache`) filled from the log (`extents`). `fs` adapts it to
//! fuser; `mount` mounts and unmounts it. `lease` keeps the volume leases with every manager,
//! the write lease per inode and answers manager callbacks (single-copy semantics); `stats`
//! counts the messages.
//! Must not block a runtime thread, and must not link the manager crate.

pub mod client;
pub mod data;
pub mod error;
pub mod horizon;
pub mod kernel;
pub mod lease;
pub mod meta;
pub mod ops;
pub mod stats;
pub mod verifier;
pub mod worker;

pub use client::CallbackHandler;
pub use client::Client;
pub use data::listing::DirItem;
pub use error::{ClientError, FsError};
pub use kernel::mount::{mount, Mount, MountOptions};
pub use ops::namespace::{StatFs, DROP_CACHES_XATTR};
pub use stats::ClientStats;
pub use worker::{WorkerState, WorkerStatus};
