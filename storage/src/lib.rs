//! Storage servers and the striped, erasure-coded log.
//!
//! Server side: `store` (fragments on local disk) and `server` (the RPC handler).
//! Writer/reader side, used by clients and managers: `erasure`, `segment` (format),
//! `stripe` (placement), `log` (`LogWriter`, `LogReader`) and `client` (typed RPCs).

pub mod log;
pub mod segment;
