//! Calls to managers with the client's retry policy and errno mapping.
//!
//! Owns: retrying a request while its manager recovers (`Unavailable`, `NotOwner`, a
//! connection that could not be made, a connection that broke or a call that timed out —
//! the manager crashed, restarted or hangs) for up to `RETRY_FOR`, like an NFS hard mount,
//! and turning every other failure into an errno. A retried request that had already been
//! applied may answer EEXIST/ENOENT (there is no duplicate-request cache yet).
//! `LeaseExpired` is reported apart (`Failure::LeaseExpired`) for the lease layer to renew.

use crate::error::FsError;
use crate::stats::Counters;
use proto::ids::NodeId;
use proto::msg::{LeaseExtension, ManagerRequest, ManagerResponse, RemoteError};
use proto::route::{CallError, ManagerClient};
use proto::transport::TransportError;
use std::time::Duration;
use tokio::time::Instant;

/// How long a request is retried while its manager is unavailable.
pub const RETRY_FOR: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What to do about a failed call.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Retry,
    /// The manager no longer honours our volume lease: renew, drop caches, retry.
    LeaseExpired,
    Fail(FsError),
}

/// Why `call_with` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The manager answered `LeaseExpired`.
    LeaseExpired,
    Errno(FsError),
}

impl From<Failure> for FsError {
    fn from(f: Failure) -> FsError {
        match f {
            Failure::LeaseExpired => FsError::EIO,
            Failure::Errno(e) => e,
        }
    }
}

/// Maps a remote error to the errno the kernel gets.
pub fn remote_errno(e: &RemoteError) -> FsError {
    match e {
        RemoteError::Errno { code, .. } if *code > 0 => FsError(*code),
        RemoteError::Errno { .. } => FsError::EIO,
        RemoteError::NotFound(_) => FsError::ENOENT,
        RemoteError::NoSpace(_) => FsError::ENOSPC,
        RemoteError::Invalid(_) => FsError::EINVAL,
        RemoteError::Corrupt(_)
        | RemoteError::Io(_)
        | RemoteError::NoRole(_)
        | RemoteError::NotOwner { .. }
        | RemoteError::Unavailable(_)
        | RemoteError::LeaseExpired(_) => FsError::EIO,
    }
}

/// Classifies a failed manager call.
pub fn verdict(e: &CallError) -> Verdict {
    match e {
        CallError::Remote(RemoteError::Unavailable(_) | RemoteError::NotOwner { .. }) => {
            Verdict::Retry
        }
        CallError::Remote(RemoteError::LeaseExpired(_)) => Verdict::LeaseExpired,
        CallError::Remote(r) => Verdict::Fail(remote_errno(r)),
        // Connecting failed: the request never left, so sending it again is safe.
        CallError::Transport(TransportError::Unreachable { .. }) => Verdict::Retry,
        // The connection broke (the manager crashed or restarted): retry until the manager
        // is back, as an NFS hard mount does. A request that had been applied before the
        // crash and is retried may answer EEXIST or ENOENT — the known cost of a retry
        // without a duplicate-request cache. A certificate refusal is final.
        CallError::Transport(
            TransportError::Connection { .. } | TransportError::Timeout { .. },
        ) => Verdict::Retry,
        CallError::Transport(_) | CallError::Unexpected { .. } | CallError::Unroutable(_) => {
            Verdict::Fail(FsError::EIO)
        }
    }
}

/// Where a request goes.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The owner of the request's routing inode.
    Route,
    Node(NodeId),
}

/// Sends `req` with retries; returns the manager's answer or an errno (`LeaseExpired`
/// becomes EIO: callers that hold leases use `call_with`).
pub async fn call(
    mc: &ManagerClient,
    target: Target,
    req: ManagerRequest,
) -> Result<ManagerResponse, FsError> {
    call_with(mc, target, req, None)
        .await
        .map_err(FsError::from)
}

/// `call`, counting every attempt in `counters` and reporting `LeaseExpired` apart.
pub async fn call_with(
    mc: &ManagerClient,
    target: Target,
    req: ManagerRequest,
    counters: Option<&Counters>,
) -> Result<ManagerResponse, Failure> {
    call_leased(mc, target, req, counters).await.map(|(r, _)| r)
}

/// `call_with`, also returning the volume lease the answer confirms (if any), for the
/// lease engine to extend from.
pub async fn call_leased(
    mc: &ManagerClient,
    target: Target,
    req: ManagerRequest,
    counters: Option<&Counters>,
) -> Result<(ManagerResponse, Option<LeaseExtension>), Failure> {
    let node = match target {
        Target::Node(n) => n,
        Target::Route => match proto::route::routing_inode(&req) {
            Some(ino) => mc.owner_of(ino),
            None => {
                tracing::warn!(%req, "request names no inode to route it by");
                return Err(Failure::Errno(FsError::EIO));
            }
        },
    };
    let deadline = Instant::now() + RETRY_FOR;
    let mut backoff = FIRST_BACKOFF;
    // Bounded by the deadline: every round sleeps at least FIRST_BACKOFF.
    loop {
        if let Some(c) = counters {
            c.rpc(&req);
        }
        // Routed again every round: a NotOwner answer may come with a new owner.
        let to = match target {
            Target::Route => proto::route::routing_inode(&req).map_or(node, |i| mc.owner_of(i)),
            Target::Node(n) => n,
        };
        let res = mc.call_node_leased(to, req.clone()).await;
        let err = match res {
            Ok(r) => return Ok(r),
            Err(e) => e,
        };
        match verdict(&err) {
            Verdict::LeaseExpired => {
                tracing::debug!(%req, "manager answered {err}");
                return Err(Failure::LeaseExpired);
            }
            Verdict::Fail(errno) => {
                if matches!(err, CallError::Remote(RemoteError::Errno { .. })) {
                    tracing::debug!(%req, "manager answered {err}");
                } else {
                    tracing::warn!(%req, "manager call failed: {err}");
                }
                return Err(Failure::Errno(errno));
            }
            Verdict::Retry => {
                let now = Instant::now();
                if now >= deadline {
                    tracing::warn!(%req, "manager still unavailable after {RETRY_FOR:?}: {err}");
                    return Err(Failure::Errno(FsError::EIO));
                }
                tracing::debug!(%req, "manager unavailable, retrying in {backoff:?}: {err}");
                tokio::time::sleep(backoff.min(deadline - now)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// An answer of an unexpected kind.
pub fn unexpected(req: &str, resp: &ManagerResponse) -> FsError {
    tracing::warn!("unexpected answer to {req}: {resp:?}");
    FsError::EIO
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors_are_kept_apart() {
        assert_eq!(
            verdict(&CallError::Remote(RemoteError::Unavailable("x".into()))),
            Verdict::Retry
        );
        let not_owner = RemoteError::NotOwner {
            slot: 3,
            hint: "m2".into(),
        };
        assert_eq!(verdict(&CallError::Remote(not_owner)), Verdict::Retry);
        let addr = "127.0.0.1:1".parse().expect("addr");
        let unreachable = TransportError::Unreachable {
            addr,
            reason: "down".into(),
        };
        assert_eq!(verdict(&CallError::Transport(unreachable)), Verdict::Retry);
        let timeout = TransportError::Timeout {
            addr,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(verdict(&CallError::Transport(timeout)), Verdict::Retry);
        let broken = TransportError::Connection {
            addr,
            reason: "connection lost".into(),
        };
        assert_eq!(verdict(&CallError::Transport(broken)), Verdict::Retry);
        let refused = TransportError::Certificate {
            addr,
            reason: "unknown issuer".into(),
        };
        assert_eq!(
            verdict(&CallError::Transport(refused)),
            Verdict::Fail(FsError::EIO)
        );
        let expired = CallError::Remote(RemoteError::LeaseExpired("x".into()));
        assert_eq!(verdict(&expired), Verdict::LeaseExpired);
    }

    #[test]
    fn errnos_pass_through() {
        let e = CallError::Remote(RemoteError::errno(libc::ENOTEMPTY, "dir not empty"));
        assert_eq!(verdict(&e), Verdict::Fail(FsError(libc::ENOTEMPTY)));
        let e = CallError::Remote(RemoteError::NotFound("x".into()));
        assert_eq!(verdict(&e), Verdict::Fail(FsError::ENOENT));
        assert_eq!(remote_errno(&RemoteError::errno(0, "bogus")), FsError::EIO);
    }
}
