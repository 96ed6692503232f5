//! POSIX permission checks of client file system requests: the manager is the authority
//! (the kernel's `default_permissions` on the client is only a first line).
//!
//! Pure: the caller's credentials (already mapped by the identity's export options with
//! `effective`), the request and the attributes of the inodes it touches (`Facts`, which
//! the service gathers for what `needs` lists) in; the request to run (possibly adjusted:
//! the owner of new inodes is the effective caller, a truncate by a non-root caller clears
//! set-user-ID/set-group-ID, a non-root chmod drops set-group-ID for a group the caller is
//! not in) or an `Errno` out. Owns: the mode-bit rules, sticky directories, who may chmod,
//! chown and set times, xattr namespaces, root squash / all squash / read-only. Must not:
//! do I/O, look at addresses or certificates (the node maps the verified identity to
//! `ExportOptions`), or check requests between managers (they carry no credentials).
//!
//! The check runs twice: once when the request arrives (`decide` on facts gathered from
//! every manager, so a refusal costs no lease work), and again as part of the plan step,
//! under the state lock the operation is decided under (`Guard`, run by
//! `MetaState::recheck` with the facts of this manager's own inodes read from that state),
//! so a chmod, chown or rename that commits between the two cannot let through an
//! operation the new attributes forbid. Known limits: facts about inodes of *other*
//! managers (a victim entry's inode, a remote parent) are those gathered at arrival, not
//! locked with the decision; a write of data already opened is not re-checked at commit
//! (POSIX keeps an open file writable after a chmod).

use crate::error::{eacces, eopnotsupp, eperm, erofs, Errno};
use crate::plan::{S_ISGID, S_ISUID, S_IXGRP};
use proto::identity::ExportOptions;
use proto::ids::{InodeId, SessionId};
use proto::msg::{Attr, Credentials, FileKind, ManagerRequest, NewNode, SetAttrs, SetTime};
use std::collections::{HashMap, HashSet};

/// The anonymous user and group squashed callers become (`nobody`/`nogroup`).
pub const ANON_ID: u32 = 65534;
/// Supplementary groups looked at per request (more are ignored: fewer rights, never more).
pub const MAX_GROUPS: usize = 64;

const S_ISVTX: u16 = 0o1000;
const R: u16 = 4;
const W: u16 = 2;
const X: u16 = 1;

/// Who a request runs as, after the export options: the effective credentials and
/// whether every change is refused (read-only export).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub cred: Credentials,
    pub read_only: bool,
}

/// Maps a client's claimed credentials through its identity's export options. A request
/// without credentials (the client's own bookkeeping, not a local process's) runs as the
/// client's root, so it is squashed like root.
pub fn effective(export: &ExportOptions, claimed: Option<&Credentials>) -> Access {
    let anon = Credentials {
        uid: ANON_ID,
        gid: ANON_ID,
        groups: Vec::new(),
    };
    let root = Credentials::default();
    let cred = match claimed.unwrap_or(&root) {
        _ if export.all_squash => anon,
        c if c.uid == 0 && !export.trusted => anon,
        c => {
            let squash_gid = |g: u32| {
                if g == 0 && !export.trusted {
                    ANON_ID
                } else {
                    g
                }
            };
            let mut groups: Vec<u32> = c.groups.iter().copied().map(squash_gid).collect();
            groups.truncate(MAX_GROUPS);
            Credentials {
                uid: c.uid,
                gid: squash_gid(c.gid),
                groups,
            }
        }
    };
    Access {
        cred,
        read_only: export.read_only,
    }
}

/// Something the check needs to know before it can decide.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Need {
    /// The attributes of an inode.
    Inode(InodeId),
    /// The attributes of what `name` in directory `dir` names (`None` if nothing).
    Entry(InodeId, String),
}

/// The answers to `needs`.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub inodes: HashMap<InodeId, Attr>,
    pub entries: HashMap<(InodeId, String), Option<Attr>>,
    /// Inodes the caller's client session holds open (registered with `Open`).
    pub opened: HashSet<InodeId>,
}

impl Facts {
    fn inode(&self, ino: InodeId) -> Result<&Attr, Errno> {
        self.inodes
            .get(&ino)
            .ok_or_else(|| eacces(format!("no attributes of {ino} to check access with")))
    }

    fn entry(&self, dir: InodeId, name: &str) -> Option<&Attr> {
        self.entries
            .get(&(dir, name.to_string()))
            .and_then(|a| a.as_ref())
    }
}

/// A client request's permission check, kept so that the plan step runs it again against
/// the state it decides under (`MetaState::recheck`): the caller, the request as the client
/// sent it, the facts gathered when it arrived (used for what that state does not hold)
/// and the caller's lease session (whose open files pass the data-path checks).
#[derive(Clone, Debug)]
pub struct Guard {
    pub who: Access,
    pub req: ManagerRequest,
    pub gathered: Facts,
    pub session: Option<SessionId>,
}

/// What `decide` needs to know about `req` (nothing for requests it does not check).
pub fn needs(req: &ManagerRequest) -> Vec<Need> {
    use ManagerRequest as Q;
    match req {
        Q::Lookup { parent, .. } | Q::Create { parent, .. } => vec![Need::Inode(*parent)],
        Q::Unlink { parent, name, .. } | Q::Rmdir { parent, name, .. } => {
            vec![Need::Inode(*parent), Need::Entry(*parent, name.clone())]
        }
        Q::Rename {
            parent,
            name,
            new_parent,
            new_name,
            ..
        } => vec![
            Need::Inode(*parent),
            Need::Entry(*parent, name.clone()),
            Need::Inode(*new_parent),
            Need::Entry(*new_parent, new_name.clone()),
        ],
        Q::Link { new_parent, .. } => vec![Need::Inode(*new_parent)],
        Q::SetAttr { ino, .. }
        | Q::ReadDir { ino, .. }
        | Q::Open { ino, .. }
        | Q::GetXattr { ino, .. }
        | Q::SetXattr { ino, .. }
        | Q::ListXattr { ino }
        | Q::RemoveXattr { ino, .. }
        | Q::GetExtents { ino, .. }
        | Q::Fallocate { ino, .. } => vec![Need::Inode(*ino)],
        Q::CopyRange { src, dst, .. } => vec![Need::Inode(*src), Need::Inode(*dst)],
        _ => Vec::new(),
    }
}

/// Whether the credentials hold every bit of `mask` (R/W/X) on an inode.
fn permits(c: &Credentials, a: &Attr, mask: u16) -> bool {
    if c.uid == 0 {
        // Root reads and writes anything; it executes (searches) only what some class may.
        return mask & X == 0 || a.kind == FileKind::Dir || a.perm & 0o111 != 0;
    }
    let bits = if c.uid == a.uid {
        a.perm >> 6
    } else if in_group(c, a.gid) {
        a.perm >> 3
    } else {
        a.perm
    } & 7;
    bits & mask == mask
}

fn in_group(c: &Credentials, gid: u32) -> bool {
    c.gid == gid || c.groups.contains(&gid)
}

fn need(c: &Credentials, a: &Attr, mask: u16, what: &str) -> Result<(), Errno> {
    if permits(c, a, mask) {
        return Ok(());
    }
    Err(eacces(format!(
        "uid {} may not {what} {} (mode {:o}, owner {}:{})",
        c.uid, a.ino, a.perm, a.uid, a.gid
    )))
}

fn is_owner(c: &Credentials, a: &Attr) -> bool {
    c.uid == 0 || c.uid == a.uid
}

/// Removing `victim` from `dir`: write and search on the directory, and in a sticky
/// directory only the owner of the entry or of the directory (or root).
fn may_delete(c: &Credentials, dir: &Attr, victim: Option<&Attr>) -> Result<(), Errno> {
    need(c, dir, W | X, "remove entries of")?;
    if let Some(v) = victim {
        if dir.perm & S_ISVTX != 0 && c.uid != 0 && c.uid != dir.uid && c.uid != v.uid {
            return Err(eperm(format!(
                "{} is in sticky directory {} and uid {} owns neither",
                v.ino, dir.ino, c.uid
            )));
        }
    }
    Ok(())
}

/// Whether an xattr change or read is allowed, by namespace (as Linux does).
fn may_xattr(c: &Credentials, a: &Attr, name: &str, write: bool) -> Result<(), Errno> {
    let (ns, _) = name.split_once('.').unwrap_or((name, ""));
    match ns {
        "user" => {
            if !matches!(a.kind, FileKind::File | FileKind::Dir) {
                return Err(eperm(format!(
                    "user xattrs only on files and directories: {name}"
                )));
            }
            if write {
                need(c, a, W, "set user xattrs of")
            } else {
                need(c, a, R, "read user xattrs of")
            }
        }
        "trusted" if c.uid != 0 => Err(eperm(format!("trusted xattrs need root: {name}"))),
        "security" if write && c.uid != 0 => {
            Err(eperm(format!("setting security xattrs needs root: {name}")))
        }
        "system" if write && !is_owner(c, a) => {
            Err(eperm(format!("only the owner sets {name} of {}", a.ino)))
        }
        "trusted" | "security" | "system" => Ok(()),
        _ => Err(eopnotsupp(format!("unknown xattr namespace: {name}"))),
    }
}

/// Checks a setattr and returns the change to apply (mode bits adjusted as POSIX says).
fn setattr(c: &Credentials, a: &Attr, set: &SetAttrs) -> Result<SetAttrs, Errno> {
    let mut set = set.clone();
    let owner = is_owner(c, a);
    if let Some(uid) = set.uid {
        if uid != a.uid && c.uid != 0 {
            return Err(eperm(format!("only root changes the owner of {}", a.ino)));
        }
    }
    if let Some(gid) = set.gid {
        if gid != a.gid && c.uid != 0 && !(c.uid == a.uid && in_group(c, gid)) {
            return Err(eperm(format!(
                "uid {} may not give {} to group {gid}",
                c.uid, a.ino
            )));
        }
    }
    if let Some(perm) = set.perm {
        let perm = perm & 0o7777;
        // Only set-ID bits removed, nothing else changed (set-group-ID without group
        // execute is kept by the kernel's kill-priv, so either may stay).
        let setid = S_ISUID | S_ISGID;
        let kill_priv = perm != a.perm && perm & !setid == a.perm & !setid && perm & !a.perm == 0;
        if !owner {
            // The kernel clears set-ID bits after a write by a non-owner with a setattr
            // on the writer's behalf: allowed to whoever may write the file.
            if !(kill_priv && permits(c, a, W)) {
                return Err(eperm(format!(
                    "only the owner changes the mode of {}",
                    a.ino
                )));
            }
        }
        let gid = set.gid.unwrap_or(a.gid);
        let mut perm = perm;
        if c.uid != 0 && perm & S_ISGID != 0 && !in_group(c, gid) {
            perm &= !S_ISGID;
        }
        set.perm = Some(perm);
    }
    if set.size.is_some() {
        need(c, a, W, "truncate")?;
        if c.uid != 0 {
            let mut perm = set.perm.unwrap_or(a.perm);
            perm &= !S_ISUID;
            if perm & S_IXGRP != 0 {
                perm &= !S_ISGID;
            }
            if perm != set.perm.unwrap_or(a.perm) {
                set.perm = Some(perm);
            }
        }
    }
    let times = [set.atime, set.mtime];
    if times.iter().any(|t| matches!(t, Some(SetTime::At(_)))) {
        if !owner {
            return Err(eperm(format!("only the owner sets times of {}", a.ino)));
        }
    } else if times.iter().any(Option::is_some) && !owner {
        need(c, a, W, "touch")?;
    }
    Ok(set)
}

/// Decides `req` for `who` with the gathered `facts`: the request to run (its caller
/// fields replaced by the effective credentials), or the refusal.
pub fn decide(who: &Access, req: ManagerRequest, facts: &Facts) -> Result<ManagerRequest, Errno> {
    use ManagerRequest as Q;
    let c = &who.cred;
    if who.read_only && req.kind().writes {
        return Err(erofs(format!("{req}: this client's export is read-only")));
    }
    let me = c.caller();
    Ok(match req {
        Q::Lookup { parent, name } => {
            need(c, facts.inode(parent)?, X, "search")?;
            Q::Lookup { parent, name }
        }
        Q::ReadDir { ino, offset, max } => {
            need(c, facts.inode(ino)?, R, "list")?;
            Q::ReadDir { ino, offset, max }
        }
        Q::Open {
            ino,
            session,
            access,
        } => {
            let a = facts.inode(ino)?;
            if access.read {
                need(c, a, R, "read")?;
            }
            if access.write {
                need(c, a, W, "write")?;
            }
            Q::Open {
                ino,
                session,
                access,
            }
        }
        Q::GetExtents { ino, offset, len } => {
            // The data path: extents are the way to a file's bytes. Reading and writing
            // (read-modify-write of a partial block) both need them; so does a client
            // session that holds the file open (its open was checked), whatever the mode
            // is now.
            let a = facts.inode(ino)?;
            if !facts.opened.contains(&ino) && !permits(c, a, R) && !permits(c, a, W) {
                need(c, a, R, "read")?;
            }
            Q::GetExtents { ino, offset, len }
        }
        // Not re-checked against the mode: an open file stays writable after a chmod, and
        // a file created 0444 is written through its creating descriptor; the role matrix
        // confines commits to the client's own log.
        Q::CommitWrites {
            writes,
            sync,
            standing,
        } => Q::CommitWrites {
            writes,
            sync,
            standing,
        },
        Q::Fallocate {
            ino,
            offset,
            len,
            punch,
            keep_size,
        } => {
            // Like a write of data: a session holding the file open passes (its open was
            // checked, and the kernel lets fallocate through only a descriptor open for
            // writing); anyone else needs write permission now.
            if !facts.opened.contains(&ino) {
                need(c, facts.inode(ino)?, W, "write")?;
            }
            Q::Fallocate {
                ino,
                offset,
                len,
                punch,
                keep_size,
            }
        }
        Q::CopyRange {
            src,
            src_offset,
            dst,
            dst_offset,
            len,
        } => {
            // A read of the source and a write of the destination: a session holding a
            // file open passes for it (its open was checked); anyone else needs the
            // permission now.
            if !facts.opened.contains(&src) {
                need(c, facts.inode(src)?, R, "read")?;
            }
            if !facts.opened.contains(&dst) {
                need(c, facts.inode(dst)?, W, "write")?;
            }
            Q::CopyRange {
                src,
                src_offset,
                dst,
                dst_offset,
                len,
            }
        }
        Q::SetAttr { ino, set, .. } => {
            let set = setattr(c, facts.inode(ino)?, &set)?;
            Q::SetAttr {
                ino,
                set,
                caller: me,
            }
        }
        Q::Create {
            parent,
            name,
            node,
            perm,
            umask,
            session,
            ..
        } => {
            need(c, facts.inode(parent)?, W | X, "create in")?;
            if let NewNode::Special {
                kind: FileKind::CharDev | FileKind::BlockDev,
                ..
            } = node
            {
                if c.uid != 0 {
                    return Err(eperm("only root creates device nodes"));
                }
            }
            Q::Create {
                parent,
                name,
                node,
                perm,
                umask,
                caller: me,
                session,
            }
        }
        Q::Unlink { parent, name, .. } => {
            may_delete(c, facts.inode(parent)?, facts.entry(parent, &name))?;
            Q::Unlink {
                parent,
                name,
                caller: me,
            }
        }
        Q::Rmdir { parent, name, .. } => {
            may_delete(c, facts.inode(parent)?, facts.entry(parent, &name))?;
            Q::Rmdir {
                parent,
                name,
                caller: me,
            }
        }
        Q::Rename {
            parent,
            name,
            new_parent,
            new_name,
            flags,
            ..
        } => {
            let moved = facts.entry(parent, &name);
            may_delete(c, facts.inode(parent)?, moved)?;
            may_delete(
                c,
                facts.inode(new_parent)?,
                facts.entry(new_parent, &new_name),
            )?;
            if let Some(m) = moved {
                if m.kind == FileKind::Dir && parent != new_parent {
                    need(c, m, W, "move (its `..` changes)")?;
                }
            }
            Q::Rename {
                parent,
                name,
                new_parent,
                new_name,
                flags,
                caller: me,
            }
        }
        Q::Link {
            ino,
            new_parent,
            new_name,
            ..
        } => {
            need(c, facts.inode(new_parent)?, W | X, "create in")?;
            Q::Link {
                ino,
                new_parent,
                new_name,
                caller: me,
            }
        }
        Q::GetXattr { ino, name } => {
            may_xattr(c, facts.inode(ino)?, &name, false)?;
            Q::GetXattr { ino, name }
        }
        Q::ListXattr { ino } => Q::ListXattr { ino },
        Q::SetXattr {
            ino,
            name,
            value,
            flags,
            ..
        } => {
            may_xattr(c, facts.inode(ino)?, &name, true)?;
            Q::SetXattr {
                ino,
                name,
                value,
                flags,
                caller: me,
            }
        }
        Q::RemoveXattr { ino, name, .. } => {
            may_xattr(c, facts.inode(ino)?, &name, true)?;
            Q::RemoveXattr {
                ino,
                name,
                caller: me,
            }
        }
        // Attributes, link targets and totals need no permission on the inode itself
        // (search permission on the way to it was checked at lookup); sessions, leases,
        // releases, syncs and horizons are the client's own bookkeeping, which the role
        // matrix already confines to its own sessions and logs.
        Q::GetAttr { .. }
        | Q::ReadLink { .. }
        | Q::Counts
        | Q::Sync
        | Q::Hello { .. }
        | Q::Renew { .. }
        | Q::Goodbye { .. }
        | Q::Release { .. }
        | Q::ReleaseMany { .. }
        | Q::AcquireWrite { .. }
        | Q::HolderHints { .. }
        | Q::LogHorizon { .. } => req,
        // Requests between managers or from the cleaner: never from a client identity (the
        // role matrix refuses them), and never with credentials.
        Q::TxApply { .. }
        | Q::TxOutcome { .. }
        | Q::TxPrepare { .. }
        | Q::TxFinish { .. }
        | Q::DirMoveLock { .. }
        | Q::SealLog { .. }
        | Q::LiveExtents { .. }
        | Q::Relocate { .. } => {
            return Err(eperm(format!("{req} is not a client file system request")))
        }
    })
}

#[cfg(test)]
#[path = "access_test.rs"]
mod tests;
