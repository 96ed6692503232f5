//! The permission check as part of planning: `recheck` runs `access::decide` again with the
//! facts of this manager's own inodes and entries read from the state the plan is made on,
//! so the decision and the operation happen under one state lock (a chmod, chown or rename
//! committed after the request's first check is seen). Facts about other managers' inodes
//! are the ones gathered when the request arrived (`Guard::gathered`).
//! Must not: mutate the state, do I/O, or decide anything itself (the rules are `access`).

use crate::access::{self, Facts, Guard, Need};
use crate::error::{code, Errno};
use crate::state::MetaState;
use proto::ids::SessionId;
use proto::msg::ManagerRequest;

impl MetaState {
    /// The facts `needs` lists: read from this state for what it holds, else taken from
    /// `gathered`. An entry of a local directory that now names an inode of another manager
    /// other than the one gathered cannot be judged here: EAGAIN (the client retries).
    pub fn access_facts(
        &self,
        needs: &[Need],
        session: Option<SessionId>,
        gathered: &Facts,
    ) -> Result<Facts, Errno> {
        let mut f = Facts::default();
        for need in needs {
            match need {
                Need::Inode(ino) => {
                    let attr = match self.inode(*ino) {
                        Some(i) => {
                            if session.is_some_and(|s| i.sessions.contains(&s)) {
                                f.opened.insert(*ino);
                            }
                            Some(i.attr.clone())
                        }
                        None => {
                            if gathered.opened.contains(ino) {
                                f.opened.insert(*ino);
                            }
                            gathered.inodes.get(ino).cloned()
                        }
                    };
                    if let Some(a) = attr {
                        f.inodes.insert(*ino, a);
                    }
                }
                Need::Entry(dir, name) => {
                    let key = (*dir, name.clone());
                    let old = gathered.entries.get(&key).cloned().flatten();
                    let found = if self.inode(*dir).is_none() {
                        old
                    } else {
                        match self.lookup(*dir, name) {
                            Ok((ino, _)) => match self.inode(ino) {
                                Some(i) => Some(i.attr.clone()),
                                None if old.as_ref().is_some_and(|a| a.ino == ino) => old,
                                None => {
                                    return Err(Errno::new(
                                        code::EAGAIN,
                                        format!(
                                            "{name:?} in {dir} changed during the permission check, retry"
                                        ),
                                    ))
                                }
                            },
                            Err(_) => None,
                        }
                    };
                    f.entries.insert(key, found);
                }
            }
        }
        Ok(f)
    }

    /// Decides a client's request again against this state: the request to run (its
    /// caller fields and, for setattr, its mode change as `access::decide` adjusts them
    /// for the attributes now), or the refusal.
    pub fn recheck(&self, g: &Guard) -> Result<ManagerRequest, Errno> {
        let needs = access::needs(&g.req);
        let facts = self.access_facts(&needs, g.session, &g.gathered)?;
        access::decide(&g.who, g.req.clone(), &facts)
    }
}
