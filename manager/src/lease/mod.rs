//! Volume leases and callbacks. `engine` is the pure core (`LeaseTable`: sessions, readers,
//! writers, callbacks to send), re-exported here so that `crate::lease::LeaseTable` and
//! the other names keep their paths; its runtime (renewals, write-lease records, sending
//! callbacks and waiting for them) is `service::leases`, which needs the service's state.
//! Must not: do I/O, read clocks, use tokio, or touch the metadata state.

mod engine;

pub use engine::*;

#[cfg(test)]
pub(crate) mod lease_test;
