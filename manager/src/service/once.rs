//! The service's side of numbered calls (`Request::ManagerAs { call: Some(..) }`, sent for
//! requests that must not take effect twice): a retry of a call that was applied answers
//! with the first result; a retry that arrives while the first try still runs waits for it.
//! The tables are `crate::calls` (pure); this keys them by the caller's lease session,
//! logs `Record::Replied` beside the change (`CURRENT_CALL`, read by `commit_leased`) and
//! answers from the log's record after a restart.
//! Must not: run a numbered call twice in this incarnation, or keep a result that did not
//! take effect (a retry of such a try runs again).

use super::Service;
use crate::calls::{Begin, CallKey};
use proto::ids::{CallId, InodeId, SessionId};
use proto::msg::{ManagerRequest, ManagerResponse, RemoteError};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Longest wait for a running try before looking at the table again (the wait ends
/// earlier when any numbered call finishes).
const RECHECK: Duration = Duration::from_millis(200);

tokio::task_local! {
    /// The numbered call being run by this task: `commit_leased` logs it as applied in the
    /// same batch as the change (`Record::Replied`).
    pub(super) static CURRENT_CALL: CallId;
}

/// The call being run now, if the task runs a numbered call.
pub(super) fn current_call() -> Option<CallId> {
    CURRENT_CALL.try_with(|c| *c).ok()
}

/// Marks a call running until it is finished; a try that is dropped (its connection went
/// away while it waited) leaves the call unknown, so that its retry runs it.
struct Running<'a> {
    svc: &'a Service,
    key: CallKey,
    result: Option<Result<ManagerResponse, RemoteError>>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let kept = self.result.take().filter(took_effect_or_final);
        self.svc.lock_calls().finish(self.key, kept);
        self.svc.calls_done.notify_waiters();
    }
}

/// Whether a result is what every retry must get: an answer, or a refusal of the request
/// itself. Not kept: a manager that was unavailable, not the owner, or did not know the
/// caller's lease (the request was not applied; its retry must run).
fn took_effect_or_final(r: &Result<ManagerResponse, RemoteError>) -> bool {
    match r {
        Ok(_) => true,
        Err(RemoteError::Errno { .. })
        | Err(RemoteError::NotFound(_))
        | Err(RemoteError::Invalid(_))
        | Err(RemoteError::Denied { .. })
        | Err(RemoteError::NoSpace(_)) => true,
        Err(_) => false,
    }
}

impl Service {
    pub(super) fn lock_calls(
        &self,
    ) -> std::sync::MutexGuard<'_, crate::calls::CallTable<Result<ManagerResponse, RemoteError>>>
    {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers `req` from a caller known by `from`; a numbered call (`call`) of a request
    /// that must not take effect twice runs at most once per lease session.
    pub(super) async fn handle_numbered(
        &self,
        from: Option<SocketAddr>,
        access: Option<&crate::access::Access>,
        call: Option<CallId>,
        req: ManagerRequest,
    ) -> Result<ManagerResponse, RemoteError> {
        // Only numbered mutations pay for the lease-table lock that finds the session.
        let call = match call {
            Some(c) if req.once() && self.ready.load(Ordering::SeqCst) => c,
            _ => return self.handle_as(from, access, req).await,
        };
        let Some(session) = self.leases().session_at(from) else {
            return self.handle_as(from, access, req).await;
        };
        let key = (session, call);
        loop {
            let notified = self.calls_done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.lock_calls().begin(key) {
                Begin::Run => break,
                Begin::Done(r) => {
                    tracing::debug!(call = %key.1, session = %key.0, %req, "a retried call answered with its first result");
                    // Without the parent's attributes of then: they may be old by now, and
                    // only a create's own answer vouches for them.
                    return match r {
                        Ok(ManagerResponse::Created { attr, .. }) => {
                            Ok(ManagerResponse::Attr(attr))
                        }
                        Ok(ManagerResponse::Removed { .. }) => Ok(ManagerResponse::Done),
                        r => r,
                    };
                }
                Begin::Wait => {}
            }
            let _ = tokio::time::timeout(RECHECK, notified).await;
        }
        let mut running = Running {
            svc: self,
            key,
            result: None,
        };
        let r = match self.recorded_answer(key).await {
            Some(r) => {
                tracing::info!(call = %key.1, session = %key.0, %req, "a call applied before the restart answered from the log");
                match r {
                    Ok(ManagerResponse::Attr(a)) => {
                        if let ManagerRequest::Create {
                            session: Some(s), ..
                        } = &req
                        {
                            self.reclaim_for_creator(*s, a.ino).await;
                        }
                        // The caller caches these attributes: registered as their reader
                        // (after their writer, if any, is flushed), as the first try made
                        // it; else later changes by others would never call it back.
                        let who = Some(key.0).filter(|s| self.leases().is_live(*s));
                        let ino = a.ino;
                        self.read_inode(who, ino, move |st| {
                            st.get(ino)
                                .map(|i| ManagerResponse::Attr(i.attr.clone()))
                                .map_err(super::errno)
                        })
                        .await
                    }
                    other => other,
                }
            }
            None => {
                CURRENT_CALL
                    .scope(key.1, self.handle_as(from, access, req))
                    .await
            }
        };
        running.result = Some(r.clone());
        drop(running);
        r
    }

    /// A Create with `session` applied before the restart made that session the writer of
    /// the new file, and the log recorded the lease: its creator, answered from the log,
    /// gets it back as by a reclaim (if nobody took it since), so that the file's readers
    /// and its first write do not wait for the reclaim window to end. The client does not
    /// count on it (it asks before its first write: a lease it holds only when granted by
    /// the incarnation it asked).
    async fn reclaim_for_creator(&self, session: SessionId, ino: InodeId) {
        let granted = {
            let mut lt = self.leases();
            lt.in_reclaim(std::time::Instant::now()) && lt.reclaim_write(session, ino).is_ok()
        };
        if granted {
            self.lease_events.send_modify(|n| *n = n.wrapping_add(1));
            if let Err(e) = self.record_write_lease(session, ino).await {
                tracing::warn!(inode = %ino, "write lease of a replayed create not logged: {e}");
            }
        }
    }

    /// The answer of a call the metadata log recorded as applied (`Record::Replied`).
    async fn recorded_answer(&self, key: CallKey) -> Option<Result<ManagerResponse, RemoteError>> {
        let st = self.state.lock().await;
        let answer = st.replied.get(key)?;
        Some(match answer {
            None => Ok(ManagerResponse::Done),
            Some(ino) => st
                .get(ino)
                .map(|i| ManagerResponse::Attr(i.attr.clone()))
                .map_err(super::errno),
        })
    }
}
