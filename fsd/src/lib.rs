//! The node runtime: composes the roles a node's config names (storage server, manager)
//! behind one QUIC endpoint, and starts local clusters and client mounts. It owns process
//! wiring only; the roles' logic lives in their crates.

pub mod certs;
pub mod cluster;
pub mod config_group;
mod duties;
pub mod error;
mod handover;
pub mod hosting;
pub mod http;
pub mod node;
mod renewal;

pub use error::NodeError;
