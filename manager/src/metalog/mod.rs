//! The manager's metadata log: `record` (the durable record formats and their framing),
//! `checkpoint` (checkpoints in bounded chunks, and the legacy format), `journal` (group
//! commit of records and checkpoints over a `LogBackend`) and `recovery` (the newest
//! complete checkpoint, then roll forward). The crate root re-exports the four under their
//! old paths (`crate::record`, ...), which the rest of the crate uses.
//! Must not: know about leases, requests or the service; the state they persist is
//! `MetaState`, which applies records but does not write them.

pub mod checkpoint;
pub mod journal;
pub mod record;
pub mod recovery;

#[cfg(test)]
mod journal_test;
