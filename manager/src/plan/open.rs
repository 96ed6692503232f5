//! Planning of open sessions: `Open` registers a client session on an inode (an unlinked
//! inode lives while one is open), `Release` drops it and the inode with its last one.
//! Must not: mutate the state, do I/O, or read clocks.

use super::draft::Draft;
use super::{Ctx, Plan, Reply};
use crate::error::Errno;
use crate::record::Record;
use crate::state::MetaState;
use proto::ids::{InodeId, SessionId};

impl MetaState {
    pub fn plan_open(&self, ino: InodeId, session: SessionId) -> Result<Plan, Errno> {
        let i = self.get(ino)?;
        let records = if i.sessions.contains(&session) {
            Vec::new()
        } else {
            vec![Record::Open { ino, session }]
        };
        Ok(Plan::Local {
            records,
            reply: Reply::Done,
        })
    }

    /// The last local closes of `inos` by `session` (`Release`, `ReleaseMany`): each inode
    /// that lists the session forgets it; an unlinked one that no session holds any more
    /// goes (its attributes are touched so the draft frees it).
    pub fn plan_release(
        &self,
        ctx: &Ctx,
        inos: &[InodeId],
        session: SessionId,
    ) -> Result<Plan, Errno> {
        let mut d = Draft::new(self, ctx.now);
        for &ino in inos {
            let Some(i) = self.inode(ino) else {
                continue;
            };
            // From the draft: a second copy of an inode in one batch is a no-op.
            let mut left = d.sessions(ino);
            if !left.remove(&session) {
                continue;
            }
            d.recs.push(Record::Release { ino, session });
            d.sessions.insert(ino, left.clone());
            if i.attr.nlink == 0 && left.is_empty() {
                d.attr_mut(ino)?;
            }
        }
        Ok(Plan::Local {
            records: d.finish(),
            reply: Reply::Done,
        })
    }
}
