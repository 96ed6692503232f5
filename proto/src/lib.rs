//! Shared wire types and transport of Shoal: typed ids, the cluster config, messages,
//! framing, TLS and the QUIC transport, and the named-worker registry every role uses.
//! Kept thin: no role logic lives here.

pub mod authz;
pub mod budget;
pub mod chunksum;
pub mod config;
pub mod errno;
pub mod follow;
pub mod frame;
pub mod identity;
pub mod ids;
pub mod live;
pub mod log_limit;
pub mod msg;
pub mod ops_metrics;
pub mod revoke;
pub mod route;
pub mod rpc_metrics;
pub mod tls;
pub mod transport;
pub mod wall_clock;
pub mod worker;

pub use bytes::Bytes;

/// The version string every node reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// CRC32C (iSCSI polynomial) of `data`, the checksum of fragments and records.
pub fn crc32c(data: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32
}
