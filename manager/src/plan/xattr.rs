//! Extended attributes: planning of setxattr/removexattr (Linux's limits and flags) and
//! their reads.
//! Must not: mutate the state, do I/O, or read clocks.

use super::draft::Draft;
use super::{Ctx, Plan, Reply, XATTR_CREATE, XATTR_NAME_MAX, XATTR_REPLACE, XATTR_SIZE_MAX};
use crate::error::{e2big, eexist, einval, enodata, erange, Errno};
use crate::record::Record;
use crate::state::MetaState;
use proto::ids::InodeId;

impl MetaState {
    pub fn plan_setxattr(
        &self,
        ctx: &Ctx,
        ino: InodeId,
        name: &str,
        value: &[u8],
        flags: i32,
    ) -> Result<Plan, Errno> {
        let i = self.get(ino)?;
        if name.is_empty() {
            return Err(einval("empty xattr name"));
        }
        if name.len() > XATTR_NAME_MAX {
            return Err(erange(format!("xattr name of {} bytes", name.len())));
        }
        if value.len() > XATTR_SIZE_MAX {
            return Err(e2big(format!("xattr value of {} bytes", value.len())));
        }
        if flags & !(XATTR_CREATE | XATTR_REPLACE) != 0 || flags == XATTR_CREATE | XATTR_REPLACE {
            return Err(einval(format!("xattr flags {flags}")));
        }
        let exists = i.xattrs.contains_key(name);
        if flags & XATTR_CREATE != 0 && exists {
            return Err(eexist(format!("xattr {name:?} exists")));
        }
        if flags & XATTR_REPLACE != 0 && !exists {
            return Err(enodata(format!("no xattr {name:?}")));
        }
        let mut d = Draft::new(self, ctx.now);
        d.recs.push(Record::Xattr {
            ino,
            name: name.to_string(),
            value: Some(value.to_vec()),
        });
        d.touch_times(ino, false)?;
        Ok(Plan::Local {
            records: d.finish(),
            reply: Reply::Done,
        })
    }

    pub fn plan_removexattr(&self, ctx: &Ctx, ino: InodeId, name: &str) -> Result<Plan, Errno> {
        if !self.get(ino)?.xattrs.contains_key(name) {
            return Err(enodata(format!("no xattr {name:?}")));
        }
        let mut d = Draft::new(self, ctx.now);
        d.recs.push(Record::Xattr {
            ino,
            name: name.to_string(),
            value: None,
        });
        d.touch_times(ino, false)?;
        Ok(Plan::Local {
            records: d.finish(),
            reply: Reply::Done,
        })
    }

    pub fn getxattr(&self, ino: InodeId, name: &str) -> Result<Vec<u8>, Errno> {
        self.get(ino)?
            .xattrs
            .get(name)
            .cloned()
            .ok_or_else(|| enodata(format!("no xattr {name:?}")))
    }

    pub fn listxattr(&self, ino: InodeId) -> Result<Vec<String>, Errno> {
        Ok(self.get(ino)?.xattrs.keys().cloned().collect())
    }
}
