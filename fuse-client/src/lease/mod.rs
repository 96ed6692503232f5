//! Leases on the client side (single-copy semantics, notes/leases.md).
//!
//! Owns: `engine`, the pure client half of the protocol (volume lease per manager, write
//! lease per inode, events in, actions out); `clock`, the suspend-proof clock leases are
//! measured on; `session`, the runtime that carries out the engine's cache actions, keeps
//! the write leases (`AcquireWrite`, reclaim) and answers manager callbacks, over `session_state` (its own state: the
//! `AcquireWrite` gates, the inodes to re-acquire, the kernel's invalidation channel),
//! which the composition root holds. The volume
//! leases themselves (`Hello`, `Renew`, extension from every answer) are run by `meta`,
//! the manager-RPC layer, which feeds every answer to the engine.
//! Must not: import fuser (kernel invalidation goes through `kernel::notify::KernelCache`).

pub mod clock;
pub mod engine;
mod session;
pub(crate) mod session_state;

pub use clock::BootInstant;
pub use engine::{
    Action, CacheEpoch, Event, HeldLease, VolumeLease, WriteLease, KERNEL_TTL, MARGIN,
};
