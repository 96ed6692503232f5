//! The role matrix: may this verified identity make this request? Pure: (identity, request)
//! in, allow or `Denied { identity, right }` out. Every server calls `check` in exactly one
//! place, on every request, before the request reaches a role (fsd's node handler, the
//! storage-only handler, the client's callback handler). It never looks at addresses and
//! does no I/O or logging (the caller logs refusals).
//!
//! | right | who has it |
//! |---|---|
//! | `ping` (Ping; ConfigRead: the committed cluster config, what `cluster.toml` holds) | everyone with an identity |
//! | `fragment-read` (ReadRange, Locate, Stat, ScrubStatus) | everyone |
//! | `fragment-write` (PutFragment, any log) | storage (scrub repair), manager, admin (rebuild) |
//! | `write-own-log` (PutFragment into a log with the caller's tag) | client |
//! | `fragment-delete` (Delete) | manager, admin (`shoal clean`) |
//! | `list-logs` (ListLog, ListLogs) | manager, admin |
//! | `scrub-control` (ScrubNow, Drain) | admin |
//! | `fs-read` (Lookup, GetAttr, ReadDir, ReadLink, GetXattr, ListXattr, GetExtents, Counts; HolderHints, with `own-session`) | client, manager, admin |
//! | `fs-write` (mutations, Sync, Open/Release, sessions: Hello/Renew/Goodbye/AcquireWrite) | client, manager, admin |
//! | `commit-any-log` (CommitWrites/LogHorizon naming any log) | manager, admin |
//! | `commit-own-log` (CommitWrites/LogHorizon naming only logs with the caller's tag) | client |
//! | `own-session` (a session id carrying the caller's tag) | client (managers and admins may name any) |
//! | `manager-txn` (TxApply/TxPrepare/TxFinish/TxOutcome, DirMoveLock, SealLog) | manager; SealLog also admin (`shoal clean`) |
//! | `clean` (LiveExtents, Relocate: the copying cleaner) | manager, admin (`shoal clean --now`) |
//! | `callback` (Invalidate/Flush sent to a client) | manager |
//! | `admin` (deny-list installation, config proposals: ProposeConfig, group moves: MoveGroup) | admin |
//! | `config-group` (raft AppendEntries/Vote/FullSnapshot between config group members) | storage, manager (node identities only) |
//! | `peer-read` (FetchBlock: cached bytes from another client, by log address; ForwardBlock: N-chance forwarding, bounded by the receiver) | client |
//!
//! Client logs and sessions carry the 24-bit tag of their identity's name
//! (`identity::log_tag`, `LogId::client_of`, `session_of`): that is how "its own log" and
//! "its own session" are told apart without any state here.

use crate::identity::{PeerIdentity, Role};
use crate::ids::SessionId;
use crate::msg::{AdminRequest, ManagerRequest, Request, StorageRequest};
use std::fmt;

/// A right the matrix grants to some roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Right {
    Ping,
    FragmentRead,
    FragmentWrite,
    WriteOwnLog,
    FragmentDelete,
    ListLogs,
    ScrubControl,
    FsRead,
    FsWrite,
    CommitAnyLog,
    CommitOwnLog,
    OwnSession,
    ManagerTxn,
    Clean,
    Callback,
    Admin,
    PeerRead,
    ConfigGroup,
}

impl Right {
    pub fn as_str(self) -> &'static str {
        match self {
            Right::Ping => "ping",
            Right::FragmentRead => "fragment-read",
            Right::FragmentWrite => "fragment-write",
            Right::WriteOwnLog => "write-own-log",
            Right::FragmentDelete => "fragment-delete",
            Right::ListLogs => "list-logs",
            Right::ScrubControl => "scrub-control",
            Right::FsRead => "fs-read",
            Right::FsWrite => "fs-write",
            Right::CommitAnyLog => "commit-any-log",
            Right::CommitOwnLog => "commit-own-log",
            Right::OwnSession => "own-session",
            Right::ManagerTxn => "manager-txn",
            Right::Clean => "clean",
            Right::Callback => "callback",
            Right::Admin => "admin",
            Right::PeerRead => "peer-read",
            Right::ConfigGroup => "config-group",
        }
    }

    /// The roles that hold this right outright.
    fn roles(self) -> &'static [Role] {
        use Role::*;
        match self {
            Right::Ping | Right::FragmentRead => &[Storage, Manager, Client, Admin],
            Right::FragmentWrite => &[Storage, Manager, Admin],
            Right::WriteOwnLog | Right::CommitOwnLog | Right::OwnSession | Right::PeerRead => {
                &[Client]
            }
            Right::FragmentDelete | Right::ListLogs => &[Manager, Admin],
            Right::ScrubControl | Right::Admin => &[Admin],
            Right::FsRead | Right::FsWrite => &[Client, Manager, Admin],
            Right::CommitAnyLog | Right::Clean => &[Manager, Admin],
            Right::ManagerTxn | Right::Callback => &[Manager],
            // Raft traffic comes only from nodes: a client or an admin certificate must not
            // be able to vote or append to the cluster config.
            Right::ConfigGroup => &[Storage, Manager],
        }
    }
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: who asked, the right they lack, and what they asked for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("permission denied: {identity} lacks the right `{right}` ({detail})")]
pub struct Denied {
    /// The identity as shown to humans ("alice (client)", or "<no identity>").
    pub identity: String,
    pub right: Right,
    pub detail: String,
}

/// Session ids of clients carry their identity's tag in the top 24 bits.
pub fn session_of(tag: u32, random: u64) -> SessionId {
    SessionId(((tag as u64 & 0xff_ffff) << 40) | (random & ((1u64 << 40) - 1)))
}

/// The identity tag of a session id.
pub fn session_tag(session: SessionId) -> u32 {
    (session.0 >> 40) as u32
}

/// The matrix. `None` is a peer whose certificate carries no Shoal identity: refused.
pub fn check(id: Option<&PeerIdentity>, req: &Request) -> Result<(), Denied> {
    let Some(id) = id else {
        return Err(Denied {
            identity: "<no identity>".into(),
            right: right_of(req),
            detail: format!("{req}: the certificate carries no shoal://ROLE/NAME identity"),
        });
    };
    let deny = |right: Right, detail: String| Denied {
        identity: id.to_string(),
        right,
        detail,
    };
    let need = |right: Right| -> Result<(), Denied> {
        if right.roles().iter().any(|r| id.has(*r)) {
            Ok(())
        } else {
            Err(deny(right, format!("{req}")))
        }
    };
    // A right held outright, or else the narrower "own" right checked against the tag.
    let own_or = |any: Right, own: Right, tags: &mut dyn Iterator<Item = Option<u32>>| {
        if any.roles().iter().any(|r| id.has(*r)) {
            return Ok(());
        }
        need(own)?;
        let mine = id.log_tag();
        for t in tags {
            if t != Some(mine) {
                return Err(deny(
                    own,
                    format!("{req} names a log or session that is not {}'s", id.name),
                ));
            }
        }
        Ok(())
    };
    let session_tags =
        |s: &[SessionId]| -> Vec<Option<u32>> { s.iter().map(|s| Some(session_tag(*s))).collect() };
    match req {
        Request::Ping | Request::ConfigRead => need(Right::Ping),
        Request::Client(_) => need(Right::Callback),
        Request::Admin(
            AdminRequest::InstallDenyList { .. }
            | AdminRequest::ProposeConfig { .. }
            | AdminRequest::MoveGroup { .. },
        ) => need(Right::Admin),
        // The bytes asked for are no more than `fragment-read` gives (the same log range
        // from the storage servers); only clients cache, so only clients ask each other.
        Request::Peer(_) => need(Right::PeerRead),
        Request::ConfigGroup(_) => need(Right::ConfigGroup),
        Request::Storage(s) => match s {
            StorageRequest::PutFragment { id: f, .. } => own_or(
                Right::FragmentWrite,
                Right::WriteOwnLog,
                &mut std::iter::once(f.log.client_tag()),
            ),
            StorageRequest::ReadRange { .. }
            | StorageRequest::Locate { .. }
            | StorageRequest::Stat
            | StorageRequest::ScrubStatus => need(Right::FragmentRead),
            StorageRequest::Delete { .. } => need(Right::FragmentDelete),
            StorageRequest::ListLog { .. } | StorageRequest::ListLogs => need(Right::ListLogs),
            StorageRequest::ScrubNow | StorageRequest::Drain { .. } => need(Right::ScrubControl),
        },
        Request::Manager(m) | Request::ManagerAs { req: m, .. } => {
            use ManagerRequest as R;
            match m {
                R::Lookup { .. }
                | R::GetAttr { .. }
                | R::ReadDir { .. }
                | R::ReadLink { .. }
                | R::GetXattr { .. }
                | R::ListXattr { .. }
                | R::GetExtents { .. }
                | R::Counts => need(Right::FsRead),
                R::SetAttr { .. }
                | R::Unlink { .. }
                | R::Rmdir { .. }
                | R::Rename { .. }
                | R::Link { .. }
                | R::SetXattr { .. }
                | R::RemoveXattr { .. }
                | R::Fallocate { .. }
                | R::CopyRange { .. }
                | R::Sync => need(Right::FsWrite),
                R::Create { session, .. } => {
                    need(Right::FsWrite)?;
                    let s: Vec<SessionId> = session.iter().copied().collect();
                    own_or(
                        Right::CommitAnyLog,
                        Right::OwnSession,
                        &mut session_tags(&s).into_iter(),
                    )
                }
                R::Open { session, .. }
                | R::Release { session, .. }
                | R::ReleaseMany { session, .. }
                | R::Hello { session }
                | R::Goodbye { session }
                | R::Renew { session }
                | R::AcquireWrite { session, .. } => {
                    need(Right::FsWrite)?;
                    own_or(
                        Right::CommitAnyLog,
                        Right::OwnSession,
                        &mut session_tags(&[*session]).into_iter(),
                    )
                }
                R::CommitWrites { writes, .. } => {
                    need(Right::FsWrite)?;
                    let mut tags = writes
                        .iter()
                        .flat_map(|w| w.extents.iter().map(|e| e.ptr.seg.log.client_tag()));
                    own_or(Right::CommitAnyLog, Right::CommitOwnLog, &mut tags)
                }
                // Hints about other clients' caches: a client names only its own session
                // (the manager checks each holder is a live session).
                R::HolderHints { session, .. } => {
                    need(Right::FsRead)?;
                    own_or(
                        Right::CommitAnyLog,
                        Right::OwnSession,
                        &mut session_tags(&[*session]).into_iter(),
                    )
                }
                R::LogHorizon { session, log, .. } => {
                    need(Right::FsWrite)?;
                    let mut tags = [log.client_tag(), Some(session_tag(*session))].into_iter();
                    own_or(Right::CommitAnyLog, Right::CommitOwnLog, &mut tags)
                }
                R::SealLog { .. } => {
                    if id.has(Role::Admin) {
                        Ok(())
                    } else {
                        need(Right::ManagerTxn)
                    }
                }
                R::TxApply { .. }
                | R::TxOutcome { .. }
                | R::TxPrepare { .. }
                | R::TxFinish { .. }
                | R::DirMoveLock { .. } => need(Right::ManagerTxn),
                R::LiveExtents { .. } | R::Relocate { .. } => need(Right::Clean),
            }
        }
    }
}

/// The right a request needs at least (for refusals of peers without identity).
fn right_of(req: &Request) -> Right {
    match req {
        Request::Ping | Request::ConfigRead => Right::Ping,
        Request::Client(_) => Right::Callback,
        Request::Admin(_) => Right::Admin,
        Request::Peer(_) => Right::PeerRead,
        Request::ConfigGroup(_) => Right::ConfigGroup,
        Request::Storage(StorageRequest::PutFragment { .. }) => Right::FragmentWrite,
        Request::Storage(StorageRequest::Delete { .. }) => Right::FragmentDelete,
        Request::Storage(StorageRequest::ListLog { .. } | StorageRequest::ListLogs) => {
            Right::ListLogs
        }
        Request::Storage(StorageRequest::ScrubNow | StorageRequest::Drain { .. }) => {
            Right::ScrubControl
        }
        Request::Storage(_) => Right::FragmentRead,
        Request::Manager(_) | Request::ManagerAs { .. } => Right::FsWrite,
    }
}

#[cfg(test)]
#[path = "authz_test.rs"]
mod tests;
