//! Reads: `read_op`/`read_inode` (the caller is registered as a reader of what it will
//! cache, after its writers are flushed, and waits during grace for unreclaimed write
//! leases), `lookup` (asking a remote child's owner for its attributes), and the facts of
//! the permission check (`authorize`, `lookup_anywhere`, `is_ancestor`, across managers).
//! Must not: change metadata (only the ends of write leases a read flushed are logged, by
//! the lease runtime), or hold the state lock across a network call.

use super::{contention, errno, Service, LEASE_ROUNDS};
use crate::access::{self, Access, Facts, Guard, Need};
use crate::error::{code, enoent, Errno};
use crate::lease::{SessionId, Step};
use crate::plan::MAX_DEPTH;
use crate::state::MetaState;
use proto::ids::InodeId;
use proto::msg::{Attr, ManagerRequest, ManagerResponse, RemoteError};
use std::net::SocketAddr;
use std::time::Instant;

impl Service {
    /// A read-type request: `targets` are the inodes whose state the caller will cache.
    /// Writers of them are flushed first; the caller is registered as a reader in the same
    /// critical section as `answer` runs.
    /// `read_op` for a request that reads (and the caller then caches) the one inode `ino`.
    pub(super) async fn read_inode<T>(
        &self,
        who: Option<SessionId>,
        ino: InodeId,
        answer: impl FnOnce(&mut MetaState) -> Result<T, RemoteError>,
    ) -> Result<T, RemoteError> {
        self.read_op(who, move |_| vec![ino], answer).await
    }

    async fn read_op<T>(
        &self,
        who: Option<SessionId>,
        targets: impl Fn(&MetaState) -> Vec<InodeId>,
        answer: impl FnOnce(&mut MetaState) -> Result<T, RemoteError>,
    ) -> Result<T, RemoteError> {
        let mut answer = Some(answer);
        for _ in 0..LEASE_ROUNDS {
            let mut rx = self.lease_events.subscribe();
            let step = {
                let mut st = self.state.lock().await;
                let inodes = targets(&st);
                let now = Instant::now();
                let mut lt = self.leases();
                // During the grace period a file nobody has reclaimed may still have writes
                // buffered under a lease of the previous incarnation: its readers wait until
                // a writer reclaims it (and is flushed) or the grace period is over.
                // (Also for requests without a session: a client the restarted manager does
                // not know yet looks like one.)
                // Only inodes whose write lease the log recorded can have such writes (a grant
                // is durable before it is answered); every other read goes on at once.
                let unclaimed = inodes.iter().any(|i| lt.awaits_reclaim(*i, now));
                let step = match lt.reclaim_until() {
                    Some(until) if unclaimed => Step::Wait(until),
                    _ => lt.read(who, &inodes, now),
                };
                // A read that flushed a writer logs the end of its recorded lease now (not
                // awaited), so that a restart does not hold this file's readers.
                self.log_lease_ends(&mut lt, &mut st, now);
                drop(lt);
                if matches!(step, Step::Go) {
                    return match answer.take() {
                        Some(f) => f(&mut st),
                        None => Err(RemoteError::Io("read answered twice".into())),
                    };
                }
                step
            };
            self.follow(step, &mut rx).await;
        }
        Err(contention("read"))
    }

    /// Lookup: the caller caches the parent's entry and, for a local child, its
    /// attributes (a remote child's owner registers the caller when it asks there).
    pub(super) async fn lookup(
        &self,
        who: Option<SessionId>,
        parent: InodeId,
        name: &str,
        guard: Option<&Guard>,
    ) -> Result<Attr, RemoteError> {
        let me = self.me;
        let found = self
            .read_op(
                who,
                |st| {
                    let mut v = vec![parent];
                    if let Ok((c, _)) = st.lookup(parent, name) {
                        if self.owner(c) == me {
                            v.push(c);
                        }
                    }
                    v
                },
                |st| {
                    super::recheck(st, guard).map_err(errno)?;
                    let found = st.lookup(parent, name).map_err(errno)?;
                    Ok(match st.inode(found.0) {
                        Some(i) => Ok(i.attr.clone()),
                        None => Err(found),
                    })
                },
            )
            .await?;
        let ino = match found {
            Ok(attr) => return Ok(attr),
            Err((ino, _)) => ino,
        };
        if self.owner(ino) == self.me {
            return Err(errno(enoent(format!(
                "{name:?} names {ino}, which no longer exists"
            ))));
        }
        match self
            .peers
            .call(self.owner(ino), ManagerRequest::GetAttr { ino })
            .await?
        {
            ManagerResponse::Attr(a) => Ok(a),
            other => Err(RemoteError::Io(format!(
                "GetAttr({ino}) answered {other:?}"
            ))),
        }
    }

    /// Checks a client's request with `access::decide`, after gathering the attributes it
    /// needs (from this manager's state or the inode's owner). Returns the request to run
    /// and, for a request that looks at attributes, the `Guard` its plan step runs again
    /// under the state lock (`MetaState::recheck`).
    pub(super) async fn authorize(
        &self,
        from: Option<SocketAddr>,
        who: &Access,
        req: ManagerRequest,
    ) -> Result<(ManagerRequest, Option<Guard>), RemoteError> {
        let mut facts = Facts::default();
        let session = self.leases().session_at(from);
        let needs = access::needs(&req);
        for need in needs.iter().cloned() {
            match need {
                Need::Inode(ino) => {
                    if facts.inodes.contains_key(&ino) {
                        continue;
                    }
                    let local = self.state.lock().await.inode(ino).map(|i| {
                        if session.is_some_and(|s| i.sessions.contains(&s)) {
                            facts.opened.insert(ino);
                        }
                        i.attr.clone()
                    });
                    let attr = match local {
                        Some(a) => a,
                        None if self.owner(ino) == self.me => {
                            return Err(errno(enoent(format!("{ino} does not exist"))))
                        }
                        None => match self
                            .peers
                            .call(self.owner(ino), ManagerRequest::GetAttr { ino })
                            .await?
                        {
                            ManagerResponse::Attr(a) => a,
                            other => {
                                return Err(RemoteError::Io(format!(
                                    "GetAttr({ino}) answered {other:?}"
                                )))
                            }
                        },
                    };
                    facts.inodes.insert(ino, attr);
                }
                Need::Entry(dir, name) => {
                    let found = match self.lookup_anywhere(dir, &name).await {
                        Ok(a) => Some(a),
                        Err(RemoteError::Errno { code, .. }) if code == code::ENOENT => None,
                        Err(e) => return Err(e),
                    };
                    facts.entries.insert((dir, name), found);
                }
            }
        }
        let guard = (!needs.is_empty()).then(|| Guard {
            who: who.clone(),
            req: req.clone(),
            gathered: facts.clone(),
            session,
        });
        let req = access::decide(who, req, &facts).map_err(|e| {
            tracing::debug!("permission check refused: {e}");
            RemoteError::from(e)
        })?;
        Ok((req, guard))
    }

    /// Looks up `name` in a directory of any manager.
    pub(super) async fn lookup_anywhere(
        &self,
        dir: InodeId,
        name: &str,
    ) -> Result<Attr, RemoteError> {
        if self.owner(dir) == self.me {
            return self.lookup(None, dir, name, None).await;
        }
        match self
            .peers
            .call(
                self.owner(dir),
                ManagerRequest::Lookup {
                    parent: dir,
                    name: name.to_string(),
                },
            )
            .await?
        {
            ManagerResponse::Attr(a) => Ok(a),
            other => Err(RemoteError::Io(format!("Lookup answered {other:?}"))),
        }
    }

    /// Whether `anc` is `d` or an ancestor of it, walking `..` through every manager.
    pub(super) async fn is_ancestor(
        &self,
        anc: InodeId,
        mut d: InodeId,
    ) -> Result<bool, RemoteError> {
        for _ in 0..MAX_DEPTH {
            if d == anc {
                return Ok(true);
            }
            if d == InodeId::ROOT {
                return Ok(false);
            }
            let local = self.state.lock().await.inode(d).map(|i| i.parent);
            d = match local {
                Some(Some(p)) => p,
                Some(None) => return Ok(false),
                None => self.lookup_anywhere(d, "..").await?.ino,
            };
        }
        Err(errno(Errno::new(
            code::EINVAL,
            "directory tree deeper than the walk bound",
        )))
    }
}
