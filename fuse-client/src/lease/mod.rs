//! Leases on the client side (single-copy semantics, notes/leases.md).
//!
//! Owns: `engine`, the pure client half of the protocol (volume lease per manager, write
//! lease per inode, events in, actions out); `clock`, the suspend-proof clock leases are
//! measured on; `session`, the runtime that sends `Hello`/`Renew`/`AcquireWrite`, runs the
//! engine's actions and answers manager callbacks.
//! Must not: import the fuser adapter (kernel invalidation goes through
//! `Client::kernel_invalidate`).

pub mod clock;
pub mod engine;
mod session;

pub use clock::BootInstant;
pub use engine::{
    Action, CacheEpoch, Event, HeldLease, VolumeLease, WriteLease, KERNEL_TTL, MARGIN,
};
pub use session::CallbackHandler;
pub(crate) use session::{renewer, Leases};
