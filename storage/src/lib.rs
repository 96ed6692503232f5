//! Storage servers and the striped, erasure-coded log.
//!
//! Server side: `store` (fragments on local disk) and `server` (the RPC handler).
//! Writer/reader side, used by clients and managers: `erasure`, `segment` (format),
//! `checked` (decoding a stripe to bytes its end-to-end checksums accept),
//! `stripe` (placement), `health` (which servers a writer believes down, when to probe
//! them), `log` (`LogWriter`, `LogReader`) and `rpc` (`StorageClient`, the
//! typed RPC stub; not the client role).
//! Space: `admit` (capacity and reserve of one server), `space` (what stripes can use).
//! Lifecycle: `locate` (where a segment's fragments are now), `repair` (rebuild fragments
//! from any k), `rebuild` (manual) and `autorebuild` (after a server was down for
//! `rebuild_delay_secs`), `drain` (what a drained server may delete), `scrub` (the per-server checksum worker), `pace` (the pure Nice
//! controller that paces background work by its own latency).
//! `testing` holds the store conformance suite and the crash-simulating store (only under
//! `cfg(test)` or the `testing` feature).
//! This crate knows fragments and segments; it must not know inodes or paths.

pub mod admit;
pub mod autorebuild;
pub mod checked;
pub mod drain;
pub mod erasure;
pub mod error;
pub mod health;
pub mod locate;
pub mod log;
pub mod pace;
pub mod rebuild;
pub mod repair;
pub mod rpc;
pub mod scrub;
pub mod segment;
pub mod server;
pub mod space;
pub mod store;
pub mod stripe;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{ClientCallError, LogError, RepairError, SegmentError, StorageError};
pub use log::{LogReader, LogWriter};
pub use rpc::StorageClient;
pub use server::{Server, ServerHandler};
pub use store::{FileStore, FragmentStore, MemStore};
