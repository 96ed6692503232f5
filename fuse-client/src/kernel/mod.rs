//! The FUSE side: the only part of the client that knows fuser.
//!
//! Owns: `fs` (fuser callbacks → operations, replies), `mount` (mount/unmount), `attr`
//! (conversions to fuser types) and `notify` (kernel cache invalidation behind the
//! `KernelCache` trait).

pub mod attr;
pub mod fs;
pub mod mount;
pub(crate) mod notify;
