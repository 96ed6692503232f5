//! Storage servers and the striped, erasure-coded log.
//!
//! Server side: `store` (fragments on local disk) and `server` (the RPC handler).
//! Writer/reader side, used by clients and managers: `erasure`, `segment` (format),
//! `stripe` (placement), `log` (`LogWriter`, `LogReader`) and `rpc` (`StorageClient`, the
//! typed RPC stub; not the client role).
//! `testing` holds the store conformance suite and the crash-simulating store.
//! This crate knows fragments and segments; it must not know inodes or paths.

pub mod erasure;
pub mod error;
pub mod log;
pub mod rpc;
pub mod segment;
pub mod server;
pub mod store;
pub mod stripe;
pub mod testing;

pub use error::{ClientCallError, LogError, SegmentError, StorageError};
pub use log::{LogReader, LogWriter};
pub use rpc::StorageClient;
pub use server::{Server, ServerHandler};
pub use store::{FileStore, FragmentStore, MemStore};
