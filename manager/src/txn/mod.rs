//! Cross-manager transactions: operations whose names and inodes live on more than one
//! manager (mkdir/create placed on another manager, rename, link, unlink/rmdir between
//! managers) run as a two-phase commit with intent locks.
//!
//! Protocol (presumed abort):
//! 1. The coordinator (the manager of the request's directory) plans the operation, checks
//!    its own part and, under the state lock, logs `TxBegin`: from then its own names and
//!    inodes are intent-locked (`locks`). Nothing is applied.
//! 2. It sends `TxPrepare` to every participant at once. A participant checks all its ops,
//!    refuses on a failed check (`Errno`) or a lock held by another transaction
//!    (`Unavailable`, no waiting: two coordinators can never wait for each other), else
//!    logs `TxPrepared` (which locks and reserves created inode numbers) and answers.
//! 3. All prepared → the coordinator logs `TxDecided{commit}` with its own changes in the
//!    same batch; any refusal or silence → `TxDecided{abort}`. Only then does anything
//!    change anywhere, so every check happened before any apply.
//! 4. It sends `TxFinish` to every participant; each applies (or drops) its part with
//!    `TxResolved`, forgets the transaction and answers the attributes as applied
//!    (`TxFinished`): the request's answer (a created or linked inode) comes from there,
//!    not from the prepare, whose attributes miss a change that landed in between (a
//!    commit of the linked file, which intent locks do not hold off, gets the version
//!    number the prepare's attributes show). When all have answered, the coordinator
//!    logs `TxForget`. Results are thus remembered exactly until acknowledged: the
//!    participant's until the decision reaches it, the coordinator's until every
//!    participant confirmed.
//!
//! Crashes: a coordinator that restarts with an undecided `TxBegin` decides abort; with a
//! decision not yet acknowledged it sends it again. A participant holding a prepared
//! transaction asks the coordinator (`TxOutcome`) and applies the answer; a coordinator
//! that no longer knows the transaction has aborted it (it forgets commits only after every
//! participant acknowledged them). Commit re-runs the prepared ops against the current state
//! (attributes may have changed meanwhile; the locks guarantee the checks still hold).
//!
//! Layout: `book` (the durable two-phase state inside `MetaState`), `locks` (what an op
//! or a record locks, conflicts), `coord` (the pure coordinator driver), `movelock` (the
//! cluster-wide directory-move lock), `legacy` (the old one-phase driver, for old logs).
//! The participant's and coordinator's record planning is in `plan::twopc`; the runtime
//! in `service::two_phase` (and `service::tx` for the legacy driver). Must not: do I/O,
//! read clocks, or use tokio.

pub mod book;
pub mod coord;
pub mod legacy;
pub mod locks;
pub mod movelock;

pub use legacy::{Command, TxDriver};
