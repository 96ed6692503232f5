//! Unit tests of the pure core: `MetaState` planning + apply, replay and checkpoints.

use crate::checkpoint::{decode_legacy, legacy_checkpoint_bytes};
use crate::error::code::*;
use crate::error::Errno;
use crate::plan::{dir_slot, Ctx, Plan, Reply, XATTR_CREATE, XATTR_REPLACE};
use crate::record::{decode_records, encode_records, Logged};
use crate::state::MetaState;
use proto::ids::{
    InodeId, LogId, LogPtr, Lsn, NodeId, SegmentAddr, SegmentId, SessionId, SLOT_COUNT,
};
use proto::msg::{
    Attr, Caller, Extent, FileKind, InodeWrite, NewNode, RenameFlags, SetAttrs, SetTime, Timestamp,
};
use std::collections::BTreeSet;

pub(crate) const ME: NodeId = NodeId(1);
pub(crate) const OTHER: NodeId = NodeId(2);
pub(crate) const ROOT: InodeId = InodeId::ROOT;
const USER: Caller = Caller {
    uid: 1000,
    gid: 100,
};

/// A manager's pure state with its record log and a fake clock.
pub(crate) struct H {
    pub st: MetaState,
    pub owners: Vec<NodeId>,
    pub me: NodeId,
    pub log: Vec<Logged>,
    pub clock: i64,
}

impl H {
    /// One manager owning every slot, with a root.
    pub fn new() -> H {
        H::with_owners(ME, vec![ME; SLOT_COUNT as usize], true)
    }

    pub fn with_owners(me: NodeId, owners: Vec<NodeId>, root: bool) -> H {
        let mut h = H {
            st: MetaState::new(),
            owners,
            me,
            log: Vec::new(),
            clock: 1000,
        };
        if root {
            let recs = h.st.plan_root(Timestamp { secs: 1, nanos: 0 }, 0, 0);
            h.commit(recs);
        }
        h
    }

    pub fn ctx(&mut self) -> Ctx<'_> {
        self.clock += 1;
        Ctx {
            me: self.me,
            owners: &self.owners,
            now: Timestamp {
                secs: self.clock,
                nanos: 0,
            },
        }
    }

    /// A context over a copy of the owners (so that `self` stays free).
    pub fn ctx_with<'a>(&mut self, owners: &'a [NodeId]) -> Ctx<'a> {
        self.clock += 1;
        Ctx {
            me: self.me,
            owners,
            now: Timestamp {
                secs: self.clock,
                nanos: 0,
            },
        }
    }

    pub fn commit(&mut self, recs: Vec<crate::record::Record>) {
        let logged = self.st.commit(recs);
        self.log.extend(logged);
    }

    pub fn run(&mut self, plan: Result<Plan, Errno>) -> Result<Reply, crate::error::code::Errno> {
        match plan.map_err(|e| e.code)? {
            Plan::Local { records, reply } => {
                self.commit(records);
                Ok(reply)
            }
            Plan::Tx(t) => panic!("unexpected transaction {t:?}"),
        }
    }

    fn make(
        &mut self,
        parent: InodeId,
        name: &str,
        node: NewNode,
        perm: u16,
    ) -> Result<InodeId, crate::error::code::Errno> {
        let c = USER;
        let st = self.st.clone();
        let ctx = self.ctx();
        let p = st.plan_create(&ctx, parent, name, &node, perm, 0o022, c, None);
        match self.run(p)? {
            Reply::Attr(i) | Reply::Created { ino: i, .. } => Ok(i),
            r => panic!("create replied {r:?}"),
        }
    }

    pub fn mkdir(
        &mut self,
        parent: InodeId,
        name: &str,
    ) -> Result<InodeId, crate::error::code::Errno> {
        self.make(parent, name, NewNode::Dir, 0o777)
    }

    pub fn touch(
        &mut self,
        parent: InodeId,
        name: &str,
    ) -> Result<InodeId, crate::error::code::Errno> {
        self.make(parent, name, NewNode::File, 0o666)
    }

    pub fn attr(&self, ino: InodeId) -> Attr {
        self.st.inode(ino).expect("inode exists").attr.clone()
    }

    pub fn exists(&self, ino: InodeId) -> bool {
        self.st.inode(ino).is_some()
    }

    fn with<F: FnOnce(&MetaState, &Ctx) -> Result<Plan, Errno>>(
        &mut self,
        f: F,
    ) -> Result<Reply, crate::error::code::Errno> {
        let st = self.st.clone();
        let ctx = self.ctx();
        let p = f(&st, &ctx);
        self.run(p)
    }

    pub fn unlink(&mut self, p: InodeId, n: &str) -> Result<Reply, crate::error::code::Errno> {
        self.with(|st, c| st.plan_unlink(c, p, n))
    }
    pub fn rmdir(&mut self, p: InodeId, n: &str) -> Result<Reply, crate::error::code::Errno> {
        self.with(|st, c| st.plan_rmdir(c, p, n))
    }
    pub fn link(
        &mut self,
        i: InodeId,
        p: InodeId,
        n: &str,
    ) -> Result<Reply, crate::error::code::Errno> {
        self.with(|st, c| st.plan_link(c, i, p, n))
    }
    pub fn rename(
        &mut self,
        p: InodeId,
        n: &str,
        np: InodeId,
        nn: &str,
        flags: RenameFlags,
    ) -> Result<Reply, crate::error::code::Errno> {
        self.with(|st, c| st.plan_rename(c, p, n, np, nn, flags, None))
    }
    pub fn lookup(&self, p: InodeId, n: &str) -> Option<InodeId> {
        self.st.lookup(p, n).ok().map(|(i, _)| i)
    }

    /// Replays the log into a fresh state and checks it equals the live one.
    pub fn check_replay(&self) {
        let bytes = encode_records(&self.log);
        let recs = decode_records(&bytes).expect("decode");
        let mut fresh = MetaState::new();
        for r in &recs {
            fresh.apply(r);
        }
        assert_eq!(fresh, self.st, "replayed state differs from the live state");
        // Replaying again changes nothing (idempotent by LSN).
        for r in &recs {
            fresh.apply(r);
        }
        assert_eq!(fresh, self.st);
    }
}

fn ptr(seg: u64, offset: u32, len: u32) -> LogPtr {
    LogPtr {
        seg: SegmentAddr {
            log: LogId(77),
            segment: SegmentId(seg),
            len: 1 << 20,
            k: 4,
            m: 2,
            nodes: 0,
        },
        offset,
        len,
    }
}

fn write(ino: InodeId, offset: u64, seg: u64, len: u32, size: u64) -> InodeWrite {
    InodeWrite {
        sums: Vec::new(),
        ino,
        extents: vec![Extent {
            offset,
            ptr: ptr(seg, 0, len),
        }],
        size,
        mtime: Timestamp {
            secs: 5000,
            nanos: 0,
        },
    }
}

const NONE: RenameFlags = RenameFlags {
    noreplace: false,
    exchange: false,
};

#[test]
fn create_lookup_and_name_errors() {
    let mut h = H::new();
    let f = h.touch(ROOT, "a").expect("create");
    assert_eq!(h.lookup(ROOT, "a"), Some(f));
    assert_eq!(h.attr(f).kind, FileKind::File);
    assert_eq!(h.attr(f).perm, 0o644, "umask applied");
    assert_eq!((h.attr(f).uid, h.attr(f).gid), (1000, 100));
    assert_eq!(
        h.attr(f).ino.slot(),
        ROOT.slot(),
        "files go in the parent's slot"
    );
    assert_eq!(h.touch(ROOT, "a"), Err(EEXIST));
    assert_eq!(h.touch(f, "x"), Err(ENOTDIR));
    assert_eq!(h.touch(InodeId(999), "x"), Err(ENOENT));
    assert_eq!(h.touch(ROOT, &"n".repeat(256)), Err(ENAMETOOLONG));
    assert!(h.touch(ROOT, &"n".repeat(255)).is_ok());
    assert_eq!(h.touch(ROOT, "a/b"), Err(EINVAL));
    assert_eq!(h.touch(ROOT, ""), Err(EINVAL));
    assert_eq!(h.st.lookup(ROOT, "zz").map_err(|e| e.code), Err(ENOENT));
    assert_eq!(h.st.lookup(ROOT, "..").map(|x| x.0), Ok(ROOT));
    assert!(h.attr(ROOT).mtime.secs > 1000, "parent mtime moved");
    h.check_replay();
}

#[test]
fn symlinks_and_special_files() {
    let mut h = H::new();
    let s = h
        .make(
            ROOT,
            "l",
            NewNode::Symlink {
                target: "/etc/passwd".into(),
            },
            0,
        )
        .expect("symlink");
    assert_eq!(h.st.readlink(s).expect("readlink"), "/etc/passwd");
    assert_eq!(h.attr(s).size, 11);
    assert_eq!(h.attr(s).perm, 0o777);
    assert_eq!(h.st.readlink(ROOT).map_err(|e| e.code), Err(EINVAL));
    assert_eq!(
        h.make(
            ROOT,
            "e",
            NewNode::Symlink {
                target: String::new()
            },
            0
        ),
        Err(ENOENT)
    );
    let fifo = h
        .make(
            ROOT,
            "p",
            NewNode::Special {
                kind: FileKind::Fifo,
                rdev: 0,
            },
            0o644,
        )
        .expect("mkfifo");
    assert_eq!(h.attr(fifo).kind, FileKind::Fifo);
    let dev = h
        .make(
            ROOT,
            "d",
            NewNode::Special {
                kind: FileKind::CharDev,
                rdev: 0x0103,
            },
            0o644,
        )
        .expect("mknod");
    assert_eq!(h.attr(dev).rdev, 0x0103);
    assert_eq!(
        h.make(
            ROOT,
            "bad",
            NewNode::Special {
                kind: FileKind::Dir,
                rdev: 0
            },
            0o644
        ),
        Err(EINVAL)
    );
    h.check_replay();
}

#[test]
fn directory_nlink_and_rmdir_unlink_errors() {
    let mut h = H::new();
    assert_eq!(h.attr(ROOT).nlink, 2);
    let d = h.mkdir(ROOT, "d").expect("mkdir");
    let e = h.mkdir(ROOT, "e").expect("mkdir");
    assert_eq!(h.attr(ROOT).nlink, 4);
    assert_eq!(h.attr(d).nlink, 2);
    assert_eq!(h.st.lookup(d, "..").map(|x| x.0), Ok(ROOT));
    let f = h.touch(d, "f").expect("create");
    assert_eq!(h.attr(ROOT).nlink, 4, "files do not count");
    assert_eq!(h.rmdir(ROOT, "d"), Err(ENOTEMPTY));
    assert_eq!(h.rmdir(d, "f"), Err(ENOTDIR));
    assert_eq!(h.unlink(ROOT, "d"), Err(EISDIR));
    assert_eq!(h.unlink(ROOT, "nope"), Err(ENOENT));
    assert_eq!(h.rmdir(ROOT, "nope"), Err(ENOENT));
    assert_eq!(h.rmdir(ROOT, "."), Err(EINVAL));
    h.unlink(d, "f").expect("unlink");
    assert!(!h.exists(f), "file without links nor opens is dropped");
    h.rmdir(ROOT, "d").expect("rmdir");
    assert!(!h.exists(d));
    assert_eq!(h.attr(ROOT).nlink, 3);
    assert_eq!(h.touch(e, "x").map(|_| ()), Ok(()));
    assert_eq!(h.st.counts().inodes, 3);
    h.check_replay();
}

#[test]
fn hard_links_count_and_drop_at_zero() {
    let mut h = H::new();
    let d = h.mkdir(ROOT, "d").expect("mkdir");
    let f = h.touch(ROOT, "f").expect("create");
    assert_eq!(h.link(f, d, "g"), Ok(Reply::Attr(f)));
    assert_eq!(h.attr(f).nlink, 2);
    assert_eq!(h.link(f, d, "g"), Err(EEXIST));
    assert_eq!(h.link(d, ROOT, "dd"), Err(EPERM));
    assert_eq!(h.link(InodeId(12345), ROOT, "x"), Err(ENOENT));
    assert_eq!(h.link(f, f, "x"), Err(ENOTDIR));
    h.unlink(ROOT, "f").expect("unlink");
    assert_eq!(h.attr(f).nlink, 1);
    assert_eq!(h.lookup(d, "g"), Some(f));
    h.unlink(d, "g").expect("unlink");
    assert!(!h.exists(f));
    h.check_replay();
}

#[test]
fn open_unlinked_file_lives_until_last_release() {
    let mut h = H::new();
    let st = h.st.clone();
    let ctx = h.ctx();
    let p = st.plan_create(
        &ctx,
        ROOT,
        "f",
        &NewNode::File,
        0o644,
        0,
        USER,
        Some(SessionId(7)),
    );
    let Ok(Reply::Created { ino: f, .. }) = h.run(p) else {
        panic!("create")
    };
    h.with(|st, _| st.plan_open(f, SessionId(8))).expect("open");
    h.with(|st, c| st.plan_commit_writes(c, &[write(f, 0, 1, 100, 100)]))
        .expect("commit");
    h.unlink(ROOT, "f").expect("unlink");
    assert!(h.exists(f));
    assert_eq!(h.attr(f).nlink, 0);
    assert_eq!(
        h.st.get_extents(f, 0, 100).expect("extents").len(),
        1,
        "data still readable"
    );
    assert_eq!(
        h.link(f, ROOT, "back"),
        Err(ENOENT),
        "no link to a removed inode"
    );
    h.with(|st, c| st.plan_release(c, &[f], SessionId(7)))
        .expect("release");
    assert!(h.exists(f));
    h.with(|st, c| st.plan_release(c, &[f], SessionId(99)))
        .expect("release of unknown session is a no-op");
    h.with(|st, c| st.plan_release(c, &[f], SessionId(8)))
        .expect("release");
    assert!(!h.exists(f), "dropped with its extents at the last release");
    assert_eq!(h.st.counts().bytes, 0);
    h.check_replay();
}

#[test]
fn a_batch_of_releases_releases_each_inode_once() {
    let mut h = H::new();
    let f = h.touch(ROOT, "f").expect("create");
    let g = h.touch(ROOT, "g").expect("create");
    for i in [f, g] {
        h.with(|st, _| st.plan_open(i, SessionId(7))).expect("open");
        h.with(|st, _| st.plan_open(i, SessionId(8))).expect("open");
    }
    h.unlink(ROOT, "f").expect("unlink");
    // Duplicates, an unknown inode and one the session does not hold are skipped.
    h.with(|st, c| st.plan_release(c, &[f, g, f, InodeId(0xdead_beef)], SessionId(7)))
        .expect("release batch");
    assert!(h.exists(f), "still open by session 8");
    h.with(|st, c| st.plan_release(c, &[g, f], SessionId(8)))
        .expect("release batch");
    assert!(!h.exists(f), "the unlinked one goes at its last release");
    assert!(h.exists(g), "a linked one stays");
    h.check_replay();
}

#[test]
fn rename_matrix() {
    let mut h = H::new();
    let a = h.mkdir(ROOT, "a").expect("mkdir");
    let b = h.mkdir(ROOT, "b").expect("mkdir");
    let f = h.touch(a, "f").expect("create");
    let g = h.touch(b, "g").expect("create");
    // file over file: the old target loses a link and is dropped
    h.rename(a, "f", b, "g", NONE).expect("rename");
    assert_eq!(h.lookup(b, "g"), Some(f));
    assert_eq!(h.lookup(a, "f"), None);
    assert!(!h.exists(g));
    // noreplace
    let f2 = h.touch(a, "f2").expect("create");
    let noreplace = RenameFlags {
        noreplace: true,
        exchange: false,
    };
    assert_eq!(h.rename(a, "f2", b, "g", noreplace), Err(EEXIST));
    h.rename(a, "f2", b, "new", noreplace)
        .expect("noreplace to a free name");
    assert_eq!(h.lookup(b, "new"), Some(f2));
    // dir over empty dir, across parents: nlink arithmetic and parent pointer
    let c = h.mkdir(a, "c").expect("mkdir");
    let e = h.mkdir(b, "e").expect("mkdir");
    assert_eq!((h.attr(a).nlink, h.attr(b).nlink), (3, 3));
    h.rename(a, "c", b, "e", NONE).expect("dir over empty dir");
    assert!(!h.exists(e));
    assert_eq!(h.lookup(b, "e"), Some(c));
    assert_eq!(h.st.lookup(c, "..").map(|x| x.0), Ok(b));
    assert_eq!((h.attr(a).nlink, h.attr(b).nlink), (2, 3));
    // dir over non-empty dir
    let x = h.mkdir(a, "x").expect("mkdir");
    h.touch(c, "inside").expect("create");
    assert_eq!(h.rename(a, "x", b, "e", NONE), Err(ENOTEMPTY));
    // file over dir / dir over file
    assert_eq!(h.rename(b, "g", b, "e", NONE), Err(EISDIR));
    assert_eq!(h.rename(a, "x", b, "g", NONE), Err(ENOTDIR));
    // into own subtree
    assert_eq!(h.rename(ROOT, "b", c, "loop", NONE), Err(EINVAL));
    assert_eq!(h.rename(ROOT, "b", b, "self", NONE), Err(EINVAL));
    // missing source, bad flags
    assert_eq!(h.rename(a, "missing", b, "z", NONE), Err(ENOENT));
    assert_eq!(
        h.rename(
            a,
            "x",
            b,
            "z",
            RenameFlags {
                noreplace: true,
                exchange: true
            }
        ),
        Err(EINVAL)
    );
    // rename onto a hard link of itself: nothing happens
    h.link(f, a, "f-link").expect("link");
    h.rename(a, "f-link", b, "g", NONE).expect("same inode");
    assert_eq!(h.lookup(a, "f-link"), Some(f));
    assert_eq!(h.attr(f).nlink, 2);
    // rename within a directory
    h.rename(a, "x", a, "y", NONE).expect("rename in place");
    assert_eq!(h.lookup(a, "y"), Some(x));
    assert_eq!(h.attr(a).nlink, 3);
    h.check_replay();
}

#[test]
fn rename_exchange_swaps_entries_and_parents() {
    let mut h = H::new();
    let a = h.mkdir(ROOT, "a").expect("mkdir");
    let b = h.mkdir(ROOT, "b").expect("mkdir");
    let d = h.mkdir(a, "d").expect("mkdir");
    let f = h.touch(b, "f").expect("create");
    let ex = RenameFlags {
        noreplace: false,
        exchange: true,
    };
    assert_eq!(h.rename(a, "d", b, "missing", ex), Err(ENOENT));
    h.rename(a, "d", b, "f", ex).expect("exchange");
    assert_eq!(h.lookup(a, "d"), Some(f));
    assert_eq!(h.lookup(b, "f"), Some(d));
    assert_eq!(h.st.lookup(d, "..").map(|x| x.0), Ok(b));
    assert_eq!((h.attr(a).nlink, h.attr(b).nlink), (2, 3));
    h.check_replay();
}

#[test]
fn setattr_truncate_chmod_chown_times() {
    let mut h = H::new();
    let f = h.touch(ROOT, "f").expect("create");
    h.with(|st, c| {
        st.plan_commit_writes(
            c,
            &[write(f, 0, 1, 1000, 1000), write(f, 4096, 2, 100, 4196)],
        )
    })
    .expect("commit");
    assert_eq!((h.attr(f).size, h.attr(f).blocks_bytes), (4196, 1100));
    assert_eq!(h.st.counts().bytes, 1100);
    let setsize = |s: u64| SetAttrs {
        size: Some(s),
        ..SetAttrs::default()
    };
    h.with(|st, c| st.plan_setattr(c, f, &setsize(500), USER))
        .expect("truncate");
    assert_eq!((h.attr(f).size, h.attr(f).blocks_bytes), (500, 500));
    let ext = h.st.get_extents(f, 0, u64::MAX).expect("extents");
    assert_eq!(
        ext,
        vec![Extent {
            offset: 0,
            ptr: ptr(1, 0, 500)
        }]
    );
    h.with(|st, c| st.plan_setattr(c, f, &setsize(1 << 30), USER))
        .expect("extend");
    assert_eq!(
        (h.attr(f).size, h.attr(f).blocks_bytes),
        (1 << 30, 500),
        "extension is sparse"
    );
    assert_eq!(
        h.with(|st, c| st.plan_setattr(c, ROOT, &setsize(0), USER)),
        Err(EISDIR)
    );
    assert_eq!(
        h.with(|st, c| st.plan_setattr(c, InodeId(4242), &setsize(0), USER)),
        Err(ENOENT)
    );
    // chmod, then chown clears setuid and (group-exec) setgid
    let chmod = SetAttrs {
        perm: Some(0o106755),
        ..SetAttrs::default()
    };
    h.with(|st, c| st.plan_setattr(c, f, &chmod, USER))
        .expect("chmod");
    assert_eq!(h.attr(f).perm, 0o6755);
    let chown = SetAttrs {
        uid: Some(0),
        gid: Some(0),
        ..SetAttrs::default()
    };
    h.with(|st, c| st.plan_setattr(c, f, &chown, Caller { uid: 0, gid: 0 }))
        .expect("chown");
    assert_eq!(
        (h.attr(f).perm, h.attr(f).uid, h.attr(f).gid),
        (0o755, 0, 0)
    );
    let t = Timestamp { secs: 42, nanos: 7 };
    let times = SetAttrs {
        atime: Some(SetTime::At(t)),
        mtime: Some(SetTime::Now),
        ..SetAttrs::default()
    };
    let v = h.attr(f).version;
    h.with(|st, c| st.plan_setattr(c, f, &times, USER))
        .expect("utimes");
    assert_eq!(h.attr(f).atime, t);
    assert_eq!(h.attr(f).mtime.secs, h.clock);
    assert_eq!(h.attr(f).ctime.secs, h.clock);
    assert_eq!(h.attr(f).version, v + 1);
    h.check_replay();
}

#[test]
fn fallocate_punch_frees_live_bytes_and_mode_0_extends() {
    let mut h = H::new();
    let f = h.touch(ROOT, "f").expect("create");
    h.with(|st, c| {
        st.plan_commit_writes(
            c,
            &[write(f, 0, 1, 1000, 1000), write(f, 2000, 2, 500, 2500)],
        )
    })
    .expect("commit");
    let live = |h: &H, seg: u64| h.st.usage().live(LogId(77), SegmentId(seg));
    assert_eq!((live(&h, 1), live(&h, 2)), (1000, 500));
    // PUNCH_HOLE|KEEP_SIZE across the end of the first extent and the gap.
    h.with(|st, c| st.plan_fallocate(c, f, 100, 1000, true, true))
        .expect("punch");
    assert_eq!(
        (live(&h, 1), live(&h, 2)),
        (100, 500),
        "the punched bytes are free"
    );
    assert_eq!((h.attr(f).size, h.attr(f).blocks_bytes), (2500, 600));
    assert_eq!(h.st.counts().bytes, 600);
    // Inside the second extent: it is split, the tail keeps its own pointer.
    h.with(|st, c| st.plan_fallocate(c, f, 2100, 100, true, true))
        .expect("punch inside");
    assert_eq!(live(&h, 2), 400);
    let ext = h.st.get_extents(f, 0, u64::MAX).expect("extents");
    assert_eq!(
        ext,
        vec![
            Extent {
                offset: 0,
                ptr: ptr(1, 0, 100)
            },
            Extent {
                offset: 2000,
                ptr: ptr(2, 0, 100)
            },
            Extent {
                offset: 2200,
                ptr: ptr(2, 200, 300)
            },
        ]
    );
    // A punch of a hole changes nothing; mode 0 inside the size neither.
    let before = h.attr(f);
    h.with(|st, c| st.plan_fallocate(c, f, 500, 100, true, true))
        .expect("punch a hole");
    h.with(|st, c| st.plan_fallocate(c, f, 0, 10, false, false))
        .expect("mode 0 inside");
    assert_eq!(h.attr(f), before);
    // Mode 0 past the end grows the size, stores nothing.
    h.with(|st, c| st.plan_fallocate(c, f, 2000, 8000, false, false))
        .expect("mode 0 grows");
    assert_eq!((h.attr(f).size, h.attr(f).blocks_bytes), (10_000, 500));
    // ZERO_RANGE without KEEP_SIZE: punches and grows.
    h.with(|st, c| st.plan_fallocate(c, f, 0, 20_000, true, false))
        .expect("zero range");
    assert_eq!((h.attr(f).size, h.attr(f).blocks_bytes), (20_000, 0));
    assert_eq!((live(&h, 1), live(&h, 2)), (0, 0));
    assert_eq!(
        h.with(|st, c| st.plan_fallocate(c, ROOT, 0, 1, false, false)),
        Err(EISDIR)
    );
    assert_eq!(
        h.with(|st, c| st.plan_fallocate(c, f, 0, 0, true, true)),
        Err(EINVAL)
    );
    h.check_replay();
}

#[test]
fn commit_writes_overlays_and_checks_kind() {
    let mut h = H::new();
    let f = h.touch(ROOT, "f").expect("create");
    let w = |o: u64, seg: u64, len: u32| InodeWrite {
        sums: Vec::new(),
        ino: f,
        extents: vec![Extent {
            offset: o,
            ptr: ptr(seg, 10, len),
        }],
        size: o + len as u64,
        mtime: Timestamp { secs: 9, nanos: 0 },
    };
    h.with(|st, c| st.plan_commit_writes(c, &[w(0, 1, 100)]))
        .expect("commit");
    let r = h
        .with(|st, c| st.plan_commit_writes(c, &[w(40, 2, 20)]))
        .expect("commit");
    assert_eq!(r, Reply::Attrs(vec![f]));
    let ext = h.st.get_extents(f, 0, 1000).expect("extents");
    assert_eq!(
        ext,
        vec![
            Extent {
                offset: 0,
                ptr: ptr(1, 10, 40)
            },
            Extent {
                offset: 40,
                ptr: ptr(2, 10, 20)
            },
            Extent {
                offset: 60,
                ptr: ptr(1, 70, 40)
            },
        ]
    );
    assert_eq!(h.attr(f).blocks_bytes, 100);
    assert_eq!(h.attr(f).mtime.secs, 9);
    let bad = InodeWrite {
        sums: Vec::new(),
        ino: ROOT,
        extents: vec![],
        size: 0,
        mtime: Timestamp::default(),
    };
    assert_eq!(
        h.with(|st, c| st.plan_commit_writes(c, &[bad])),
        Err(EISDIR)
    );
    let gone = InodeWrite {
        sums: Vec::new(),
        ino: InodeId(5555),
        extents: vec![],
        size: 0,
        mtime: Timestamp::default(),
    };
    assert_eq!(
        h.with(|st, c| st.plan_commit_writes(c, &[gone])),
        Err(ENOENT)
    );
    assert_eq!(
        h.st.get_extents(ROOT, 0, 1).map_err(|e| e.code),
        Err(EISDIR)
    );
    h.check_replay();
}

#[test]
fn umask_and_setgid_directories() {
    let mut h = H::new();
    let d = h.mkdir(ROOT, "d").expect("mkdir");
    assert_eq!(h.attr(d).perm, 0o755);
    let set = SetAttrs {
        perm: Some(0o2775),
        gid: Some(500),
        ..SetAttrs::default()
    };
    h.with(|st, c| st.plan_setattr(c, d, &set, USER))
        .expect("chmod g+s");
    assert_eq!(h.attr(d).perm, 0o2775);
    let f = h.touch(d, "f").expect("create");
    assert_eq!(h.attr(f).gid, 500, "inherits the directory's group");
    assert_eq!(h.attr(f).perm & 0o2000, 0);
    let sub = h.mkdir(d, "sub").expect("mkdir");
    assert_eq!(h.attr(sub).gid, 500);
    assert_eq!(h.attr(sub).perm, 0o2755, "new directories inherit setgid");
    h.check_replay();
}

#[test]
fn xattr_flags_and_limits() {
    let mut h = H::new();
    let f = h.touch(ROOT, "f").expect("create");
    let set =
        |h: &mut H, n: &str, v: &[u8], fl: i32| h.with(|st, c| st.plan_setxattr(c, f, n, v, fl));
    assert_eq!(h.st.getxattr(f, "user.a").map_err(|e| e.code), Err(ENODATA));
    assert_eq!(set(&mut h, "user.a", b"1", XATTR_REPLACE), Err(ENODATA));
    set(&mut h, "user.a", b"1", XATTR_CREATE).expect("create");
    assert_eq!(set(&mut h, "user.a", b"2", XATTR_CREATE), Err(EEXIST));
    set(&mut h, "user.a", b"2", XATTR_REPLACE).expect("replace");
    set(&mut h, "user.b", b"", 0).expect("set");
    assert_eq!(h.st.getxattr(f, "user.a").expect("get"), b"2");
    assert_eq!(
        h.st.listxattr(f).expect("list"),
        vec!["user.a".to_string(), "user.b".to_string()]
    );
    assert_eq!(set(&mut h, &"n".repeat(256), b"", 0), Err(ERANGE));
    assert_eq!(set(&mut h, "user.big", &vec![0; 65_537], 0), Err(E2BIG));
    assert_eq!(set(&mut h, "", b"", 0), Err(EINVAL));
    assert_eq!(set(&mut h, "user.c", b"", 3), Err(EINVAL));
    h.with(|st, c| st.plan_removexattr(c, f, "user.a"))
        .expect("remove");
    assert_eq!(
        h.with(|st, c| st.plan_removexattr(c, f, "user.a")),
        Err(ENODATA)
    );
    assert_eq!(h.st.listxattr(f).expect("list"), vec!["user.b".to_string()]);
    h.check_replay();
}

#[test]
fn readdir_pages_in_cookie_order() {
    let mut h = H::new();
    let d = h.mkdir(ROOT, "d").expect("mkdir");
    let n = 1000;
    for i in (0..n).rev() {
        h.touch(d, &format!("f{i:05}")).expect("create");
    }
    let mut all = Vec::new();
    let mut off = 0;
    for _ in 0..n {
        let page = h.st.readdir(d, off, 7).expect("readdir");
        if page.is_empty() {
            break;
        }
        off = page.last().expect("non-empty").next;
        all.extend(page);
    }
    assert_eq!(all.len(), n);
    // Insertion order (created in reverse name order), cookies 1, 2, ...
    assert!(all.windows(2).all(|w| w[0].name > w[1].name));
    assert!(all.iter().enumerate().all(|(i, e)| e.next == i as u64 + 1));
    assert!(h
        .st
        .readdir(d, n as u64 + 5, 10)
        .expect("past the end")
        .is_empty());
    assert!(h.st.readdir(d, u64::MAX, 10).expect("past").is_empty());
    assert_eq!(
        h.st.readdir(h.lookup(d, "f00001").expect("f"), 0, 1)
            .map_err(|e| e.code),
        Err(ENOTDIR)
    );
    // A removed entry leaves the others' cookies alone.
    h.unlink(d, &all[0].name).expect("unlink");
    let first = &h.st.readdir(d, 0, 1).expect("readdir")[0];
    assert_eq!((first.name.as_str(), first.next), (all[1].name.as_str(), 2));
    h.check_replay();
}

/// Lists `d` in pages of `page`, calling `between` after each page with what it returned.
fn list_with(
    h: &mut H,
    d: InodeId,
    page: u32,
    mut between: impl FnMut(&mut H, &[proto::msg::DirEntry]),
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut off = 0;
    loop {
        let p = h.st.readdir(d, off, page).expect("readdir");
        let Some(last) = p.last() else {
            return seen;
        };
        assert!(last.next > off, "cookies increase");
        off = last.next;
        seen.extend(p.iter().map(|e| e.name.clone()));
        between(h, &p);
    }
}

/// Every name in `survivors` appears exactly once in `seen`, and no name twice.
fn assert_each_once(seen: &[String], survivors: &BTreeSet<String>) {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for n in seen {
        *counts.entry(n).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "returned more than once: {twice:?}");
    let missed: Vec<_> = survivors
        .iter()
        .filter(|n| !counts.contains_key(n.as_str()))
        .collect();
    assert!(
        missed.is_empty(),
        "{} never returned: {missed:?}",
        missed.len()
    );
}

#[test]
fn readdir_while_unlinking_each_returned_entry_sees_every_entry() {
    for page in [1, 7, 64, 1000] {
        let mut h = H::new();
        let d = h.mkdir(ROOT, "d").expect("mkdir");
        let names: BTreeSet<String> = (0..600)
            .map(|i| format!("n{:04}", (i * 37) % 600))
            .collect();
        for n in &names {
            h.touch(d, n).expect("create");
        }
        let seen = list_with(&mut h, d, page, |h, p| {
            for e in p {
                h.unlink(d, &e.name).expect("unlink as read");
            }
        });
        assert_each_once(&seen, &names);
        assert!(h.st.readdir(d, 0, 10).expect("readdir").is_empty());
        assert_eq!(h.rmdir(ROOT, "d"), Ok(Reply::Removed { parent: ROOT }));
        h.check_replay();
    }
}

#[test]
fn readdir_while_creating_and_removing_returns_survivors_once() {
    let mut h = H::new();
    let d = h.mkdir(ROOT, "d").expect("mkdir");
    let initial: Vec<String> = (0..500).map(|i| format!("old{i:04}")).collect();
    for n in &initial {
        h.touch(d, n).expect("create");
    }
    // Every third not-yet-returned entry is removed along the way; the others survive.
    let doomed: BTreeSet<String> = initial.iter().step_by(3).skip(5).cloned().collect();
    let survivors: BTreeSet<String> = initial
        .iter()
        .filter(|n| !doomed.contains(*n))
        .cloned()
        .collect();
    let mut doomed_left: Vec<String> = doomed.iter().cloned().collect();
    let mut fresh = 0;
    let seen = list_with(&mut h, d, 9, |h, p| {
        // New entries before and after the cursor (by name), a rename of a new entry, and
        // removal of entries the listing has not reached.
        if fresh < 80 {
            for _ in 0..4 {
                h.touch(d, &format!("new{fresh:05}")).expect("create");
                h.touch(d, &format!("a-new{fresh:05}")).expect("create");
                fresh += 1;
            }
            h.rename(
                d,
                &format!("new{:05}", fresh - 1),
                d,
                &format!("zz{fresh}"),
                RenameFlags::default(),
            )
            .expect("rename");
        }
        for _ in 0..2 {
            if let Some(n) = doomed_left.pop() {
                if !p.iter().any(|e| e.name == n) {
                    h.unlink(d, &n).expect("unlink ahead");
                }
            }
        }
    });
    let old_seen: Vec<String> = seen
        .iter()
        .filter(|n| n.starts_with("old"))
        .cloned()
        .collect();
    assert_each_once(&old_seen, &survivors);
    assert_each_once(&seen, &BTreeSet::new());
    assert_eq!(fresh, 80, "the listing went on while creating");
    assert!(
        seen.iter().any(|n| n.starts_with("zz")),
        "new entries are listed too"
    );
    h.check_replay();
}

/// `st` through the chunked checkpoint stream (head and inode pieces) and back.
fn chunked_round_trip(st: &MetaState) -> MetaState {
    use crate::checkpoint::{head_piece, inode_piece, Loader, Manifest};
    let mut stream = head_piece(st);
    let p = inode_piece(st, None, usize::MAX);
    assert!(p.done);
    stream.extend_from_slice(&p.bytes);
    let m = Manifest {
        lsn: st.last_lsn(),
        covers: st.last_lsn(),
        from_segment: 0,
        chunks: Vec::new(),
        pieces: 2,
        inodes: p.count,
    };
    let mut l = Loader::new();
    l.feed(&stream).expect("feed");
    l.finish(&m).expect("loads")
}

#[test]
fn readdir_cookies_survive_checkpoint_and_replay() {
    let mut h = H::new();
    let d = h.mkdir(ROOT, "d").expect("mkdir");
    for i in 0..100 {
        h.touch(d, &format!("f{i:03}")).expect("create");
    }
    for i in (0..100).step_by(4) {
        h.unlink(d, &format!("f{i:03}")).expect("unlink");
    }
    let first = h.st.readdir(d, 0, 30).expect("readdir");
    let cookie = first.last().expect("page").next;
    let rest = h.st.readdir(d, cookie, 1000).expect("readdir");
    // A checkpoint (current, chunked format) keeps cookies and the next cookie.
    let mut back = chunked_round_trip(&h.st);
    assert_eq!(back, h.st);
    assert_eq!(back.readdir(d, cookie, 1000).expect("readdir"), rest);
    // Entries created after the checkpoint get the same, later cookies on both.
    let g = h.touch(d, "g").expect("create");
    for r in &h.log {
        back.apply(r);
    }
    let live = h.st.readdir(d, cookie, 1000).expect("readdir");
    assert_eq!(back.readdir(d, cookie, 1000).expect("readdir"), live);
    let last = live.last().expect("g listed");
    assert_eq!((last.name.as_str(), last.ino), ("g", g));
    assert_eq!(
        last.next, 101,
        "after the 100 files; removals do not free cookies"
    );
    // Replaying the whole log from nothing gives the same cookies.
    h.check_replay();
}

#[test]
fn version_1_checkpoints_load_with_cookies_in_name_order() {
    let mut h = H::new();
    let d = h.mkdir(ROOT, "d").expect("mkdir");
    for n in ["c", "a", "b"] {
        h.touch(d, n).expect("create");
    }
    let bytes = crate::checkpoint::v1::encode(&h.st, 4);
    let (lsn, mut st) = decode_legacy(&bytes).expect("decode v1");
    assert_eq!(lsn, h.st.last_lsn());
    let listed: Vec<(String, u64)> = st
        .readdir(d, 0, 10)
        .expect("readdir")
        .into_iter()
        .map(|e| (e.name, e.next))
        .collect();
    assert_eq!(
        listed,
        vec![("a".into(), 1), ("b".into(), 2), ("c".into(), 3)]
    );
    assert_eq!(st.inode(d).expect("d").entries.next_cookie(), 4);
    let commit = st.commit(vec![crate::record::Record::Entry {
        dir: d,
        name: "new".into(),
        target: Some((InodeId::new(proto::ids::SlotId(0), 900), FileKind::File)),
    }]);
    assert_eq!(commit.len(), 1);
    assert_eq!(st.readdir(d, 3, 10).expect("readdir")[0].next, 4);
    // Other inodes are carried over unchanged.
    assert_eq!(st.inode(ROOT), h.st.inode(ROOT));
}

#[test]
fn readdir_of_100k_entries_is_linear() {
    let mut st = MetaState::new();
    st.commit(st.plan_root(Timestamp::default(), 0, 0));
    let recs: Vec<_> = (0..100_000u64)
        .map(|i| crate::record::Record::Entry {
            dir: ROOT,
            name: format!("e{i:06}"),
            target: Some((InodeId::new(proto::ids::SlotId(0), i + 10), FileKind::File)),
        })
        .collect();
    st.commit(recs);
    let mut off = 0;
    let mut seen = 0;
    for _ in 0..100_000 {
        let page = st.readdir(ROOT, off, 512).expect("readdir");
        if page.is_empty() {
            break;
        }
        seen += page.len();
        off = page.last().expect("page").next;
    }
    assert_eq!(seen, 100_000);
}

#[test]
fn legacy_checkpoint_round_trips_the_state() {
    let mut h = H::new();
    let d = h.mkdir(ROOT, "d").expect("mkdir");
    let f = h.touch(d, "f").expect("create");
    h.with(|st, c| st.plan_commit_writes(c, &[write(f, 0, 1, 10, 10)]))
        .expect("commit");
    h.with(|st, c| st.plan_setxattr(c, f, "user.x", b"v", 0))
        .expect("xattr");
    let bytes = legacy_checkpoint_bytes(&h.st, SegmentId(9));
    let (lsn, state) = decode_legacy(&bytes).expect("decode");
    assert_eq!(state, h.st);
    assert_eq!(lsn, h.st.last_lsn());
    // Records after the checkpoint replay on top of it.
    let before = h.log.len();
    let g = h.touch(d, "g").expect("create");
    let mut st = state;
    for r in &h.log[..] {
        st.apply(r);
    }
    assert!(st.inode(g).is_some());
    assert_eq!(st, h.st);
    assert!(h.log.len() > before);
}

mod replay {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Mkdir(u8, u8),
        Touch(u8, u8),
        Unlink(u8, u8),
        Rmdir(u8, u8),
        Rename(u8, u8, u8, u8, bool),
        Link(u8, u8, u8),
        Write(u8, u16, u16),
        Truncate(u8, u16),
        Open(u8, u8),
        Release(u8, u8),
        Xattr(u8, u8, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        let s = || 0u8..6;
        prop_oneof![
            (s(), s()).prop_map(|(a, b)| Op::Mkdir(a, b)),
            (s(), s()).prop_map(|(a, b)| Op::Touch(a, b)),
            (s(), s()).prop_map(|(a, b)| Op::Unlink(a, b)),
            (s(), s()).prop_map(|(a, b)| Op::Rmdir(a, b)),
            (s(), s(), s(), s(), any::<bool>())
                .prop_map(|(a, b, c, d, e)| Op::Rename(a, b, c, d, e)),
            (s(), s(), s()).prop_map(|(a, b, c)| Op::Link(a, b, c)),
            (s(), any::<u16>(), 1u16..2000).prop_map(|(a, b, c)| Op::Write(a, b, c)),
            (s(), any::<u16>()).prop_map(|(a, b)| Op::Truncate(a, b)),
            (s(), 0u8..3).prop_map(|(a, b)| Op::Open(a, b)),
            (s(), 0u8..3).prop_map(|(a, b)| Op::Release(a, b)),
            (s(), 0u8..3, any::<bool>()).prop_map(|(a, b, c)| Op::Xattr(a, b, c)),
        ]
    }

    /// Picks one of the inodes (sorted) by index.
    fn pick(st: &MetaState, i: u8, dir: bool) -> InodeId {
        let v: Vec<InodeId> = st
            .inodes
            .iter()
            .filter(|(_, n)| n.is_dir() == dir || !dir && n.attr.kind == FileKind::File)
            .map(|(k, _)| *k)
            .collect();
        if v.is_empty() {
            return ROOT;
        }
        v[i as usize % v.len()]
    }

    fn name(i: u8) -> String {
        format!("n{i}")
    }

    /// A checkpoint in progress: the head, then inode pieces taken one at a time.
    struct Fuzzy {
        stream: Vec<u8>,
        lsn: u64,
        cursor: Option<InodeId>,
        done: bool,
        pieces: u64,
        inodes: u64,
        covers: u64,
    }

    impl Fuzzy {
        fn start(st: &MetaState) -> Fuzzy {
            Fuzzy {
                stream: crate::checkpoint::head_piece(st),
                lsn: st.last_lsn().0,
                cursor: None,
                done: false,
                pieces: 1,
                inodes: 0,
                covers: st.last_lsn().0,
            }
        }

        fn step(&mut self, st: &MetaState, budget: usize) {
            if self.done {
                return;
            }
            let p = crate::checkpoint::inode_piece(st, self.cursor, budget);
            self.stream.extend_from_slice(&p.bytes);
            self.cursor = p.last;
            self.done = p.done;
            self.pieces += 1;
            self.inodes += p.count;
            self.covers = p.lsn.0;
        }
    }

    fn run_op(h: &mut H, op: Op) {
        let st = h.st.clone();
        let ctx = h.ctx();
        let d = |i| pick(&st, i, true);
        let f = |i| pick(&st, i, false);
        let plan = match op {
            Op::Mkdir(p, n) => {
                st.plan_create(&ctx, d(p), &name(n), &NewNode::Dir, 0o755, 0, USER, None)
            }
            Op::Touch(p, n) => {
                st.plan_create(&ctx, d(p), &name(n), &NewNode::File, 0o644, 0, USER, None)
            }
            Op::Unlink(p, n) => st.plan_unlink(&ctx, d(p), &name(n)),
            Op::Rmdir(p, n) => st.plan_rmdir(&ctx, d(p), &name(n)),
            Op::Rename(p, n, q, m, x) => {
                let flags = RenameFlags {
                    noreplace: false,
                    exchange: x,
                };
                st.plan_rename(&ctx, d(p), &name(n), d(q), &name(m), flags, None)
            }
            Op::Link(i, p, n) => st.plan_link(&ctx, f(i), d(p), &name(n)),
            Op::Write(i, o, l) => st.plan_commit_writes(
                &ctx,
                &[write(
                    f(i),
                    o as u64,
                    o as u64,
                    l as u32,
                    o as u64 + l as u64,
                )],
            ),
            Op::Truncate(i, s) => st.plan_setattr(
                &ctx,
                f(i),
                &SetAttrs {
                    size: Some(s as u64),
                    ..SetAttrs::default()
                },
                USER,
            ),
            Op::Open(i, s) => st.plan_open(f(i), SessionId(s as u64)),
            Op::Release(i, s) => st.plan_release(&ctx, &[f(i)], SessionId(s as u64)),
            Op::Xattr(i, n, rm) => {
                if rm {
                    st.plan_removexattr(&ctx, f(i), &name(n))
                } else {
                    st.plan_setxattr(&ctx, f(i), &name(n), b"v", 0)
                }
            }
        };
        let _ = h.run(plan);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn replay_equals_live(ops in proptest::collection::vec(op(), 1..60)) {
            let mut h = H::new();
            for op in ops {
                run_op(&mut h, op);
                // Invariant: directory nlink = 2 + subdirectories.
                for n in h.st.inodes.values().filter(|n| n.is_dir() && n.attr.nlink > 0) {
                    let subdirs = n.entries.iter().filter(|(_, _, k)| *k == FileKind::Dir).count() as u32;
                    prop_assert_eq!(n.attr.nlink, 2 + subdirs);
                }
            }
            h.check_replay();
        }

        /// A checkpoint whose inode pieces are taken while mutations go on (as the journal
        /// takes them), loaded and rolled forward from its head's LSN, equals the live state.
        #[test]
        fn fuzzy_checkpoint_plus_replay_equals_live(
            ops in proptest::collection::vec(op(), 1..60),
            start in 0usize..60,
            budget in 1usize..600,
        ) {
            use crate::checkpoint::{Loader, Manifest};
            let mut h = H::new();
            let mut ckpt: Option<Fuzzy> = None;
            for (i, op) in ops.into_iter().enumerate() {
                if i == start {
                    ckpt = Some(Fuzzy::start(&h.st));
                }
                if let Some(c) = ckpt.as_mut() {
                    c.step(&h.st, budget);
                }
                run_op(&mut h, op);
            }
            let mut c = ckpt.unwrap_or_else(|| Fuzzy::start(&h.st));
            while !c.done {
                c.step(&h.st, budget);
            }
            prop_assert!(c.covers >= c.lsn);
            let m = Manifest { lsn: Lsn(c.lsn), covers: Lsn(c.covers), from_segment: 0, chunks: Vec::new(), pieces: c.pieces, inodes: c.inodes };
            let mut l = Loader::new();
            l.feed(&c.stream).expect("feed");
            let mut st = l.finish(&m).expect("loads");
            prop_assert_eq!(st.last_lsn(), Lsn(c.lsn));
            for r in h.log.iter().filter(|r| r.lsn > Lsn(c.lsn)) {
                st.apply(r);
            }
            prop_assert_eq!(st, h.st);
        }
    }
}

/// Finds a name whose directory lands on `owner`.
pub(crate) fn name_on(h: &H, parent: InodeId, owner: NodeId, prefix: &str) -> String {
    (0..10_000)
        .map(|i| format!("{prefix}{i}"))
        .find(|n| h.owners[dir_slot(parent, n).0 as usize] == owner)
        .expect("some name hashes to the other manager")
}

/// Runs a `plan_copy_range` and returns the bytes it copied.
fn copy_range(
    h: &mut H,
    src: InodeId,
    so: u64,
    dst: InodeId,
    d_o: u64,
    len: u64,
) -> Result<u64, crate::error::code::Errno> {
    let st = h.st.clone();
    let ctx = h.ctx();
    let (plan, n) = st
        .plan_copy_range(&ctx, src, so, dst, d_o, len)
        .map_err(|e| e.code)?;
    h.run(Ok(plan))?;
    Ok(n)
}

#[test]
fn copy_range_shares_extents_and_counts_them_once() {
    let mut h = H::new();
    let a = h.touch(ROOT, "a").expect("create");
    let b = h.touch(ROOT, "b").expect("create");
    h.with(|st, c| {
        st.plan_commit_writes(
            c,
            &[write(a, 0, 1, 1000, 1000), write(a, 1000, 2, 500, 1500)],
        )
    })
    .expect("commit");
    let live = |h: &H, seg: u64| h.st.usage().live(LogId(77), SegmentId(seg));
    // The whole file (asking for more stops at its end of file).
    assert_eq!(copy_range(&mut h, a, 0, b, 0, 1 << 30), Ok(1500));
    assert_eq!(
        h.st.get_extents(b, 0, u64::MAX).expect("extents"),
        h.st.get_extents(a, 0, u64::MAX).expect("extents"),
        "the copy references the source's log extents"
    );
    assert_eq!((h.attr(b).size, h.attr(b).blocks_bytes), (1500, 1500));
    assert_eq!(
        (live(&h, 1), live(&h, 2)),
        (1000, 500),
        "shared bytes count once"
    );
    // Overwriting the source leaves the copy's references (and their bytes) alone.
    h.with(|st, c| st.plan_commit_writes(c, &[write(a, 0, 3, 1500, 1500)]))
        .expect("overwrite");
    assert_eq!(
        h.st.get_extents(b, 0, u64::MAX).expect("extents")[0].ptr,
        ptr(1, 0, 1000)
    );
    assert_eq!((live(&h, 1), live(&h, 2), live(&h, 3)), (1000, 500, 1500));
    // Deleting the copy frees them.
    h.unlink(ROOT, "b").expect("unlink");
    assert_eq!((live(&h, 1), live(&h, 2)), (0, 0));
    h.check_replay();
}

#[test]
fn copy_range_of_a_part_makes_holes_and_keeps_the_rest() {
    let mut h = H::new();
    let a = h.touch(ROOT, "a").expect("create");
    let b = h.touch(ROOT, "b").expect("create");
    // a: data at 0..100 and 300..400 (a hole between), size 400.
    h.with(|st, c| {
        st.plan_commit_writes(c, &[write(a, 0, 1, 100, 400), write(a, 300, 2, 100, 400)])
    })
    .expect("commit a");
    // b: 1000 bytes of its own.
    h.with(|st, c| st.plan_commit_writes(c, &[write(b, 0, 5, 1000, 1000)]))
        .expect("commit b");
    // Unaligned: a[50..350) to b[500..800).
    assert_eq!(copy_range(&mut h, a, 50, b, 500, 300), Ok(300));
    let got = h.st.get_extents(b, 0, u64::MAX).expect("extents");
    let want = vec![
        Extent {
            offset: 0,
            ptr: ptr(5, 0, 500),
        },
        Extent {
            offset: 500,
            ptr: ptr(1, 50, 50),
        },
        // 550..750 is the source's hole.
        Extent {
            offset: 750,
            ptr: ptr(2, 0, 50),
        },
        Extent {
            offset: 800,
            ptr: ptr(5, 800, 200),
        },
    ];
    assert_eq!(got, want);
    assert_eq!((h.attr(b).size, h.attr(b).blocks_bytes), (1000, 800));
    let live = |h: &H, seg: u64| h.st.usage().live(LogId(77), SegmentId(seg));
    assert_eq!((live(&h, 1), live(&h, 2), live(&h, 5)), (100, 100, 700));
    // A copy past the destination's end grows it; past the source's end copies nothing.
    assert_eq!(copy_range(&mut h, a, 0, b, 2000, 100), Ok(100));
    assert_eq!(h.attr(b).size, 2100);
    assert_eq!(copy_range(&mut h, a, 400, b, 0, 100), Ok(0));
    // Overlapping itself: refused.
    assert_eq!(copy_range(&mut h, a, 0, a, 50, 100), Err(EINVAL));
    h.check_replay();
}

#[test]
fn copy_range_falls_back_below_the_floor_and_across_managers() {
    let mut h = H::new();
    let a = h.touch(ROOT, "a").expect("create");
    let b = h.touch(ROOT, "b").expect("create");
    h.with(|st, c| st.plan_commit_writes(c, &[write(a, 0, 1, 100, 100)]))
        .expect("commit");
    // The reclaimer sealed the log above segment 1: no new reference may appear there.
    h.st.usage_mut()
        .seal(LogId(77), SegmentId(2), |_| false, false);
    assert_eq!(copy_range(&mut h, a, 0, b, 0, 100), Err(EXDEV));
    assert!(h
        .st
        .get_extents(b, 0, u64::MAX)
        .expect("extents")
        .is_empty());
    // A source another manager owns: EXDEV too (the client copies the data).
    let mut owners = h.owners.clone();
    owners[a.slot().0 as usize] = OTHER;
    let st = h.st.clone();
    let ctx = h.ctx_with(&owners);
    let e = st
        .plan_copy_range(&ctx, a, 0, b, 0, 100)
        .expect_err("cross-manager");
    assert_eq!(e.code, EXDEV);
}

#[test]
fn relocating_a_shared_extent_moves_every_file_to_the_one_copy() {
    use crate::cleaner::relocate::Moved;
    let mut h = H::new();
    let a = h.touch(ROOT, "a").expect("create");
    let b = h.touch(ROOT, "b").expect("create");
    h.with(|st, c| st.plan_commit_writes(c, &[write(a, 0, 1, 1000, 1000)]))
        .expect("commit");
    assert_eq!(copy_range(&mut h, a, 0, b, 500, 1000), Ok(1000));
    // What the cleaner finds in segment 1: the one extent, once per file.
    let found = h.st.extents_in(LogId(77), &BTreeSet::from([SegmentId(1)]));
    assert_eq!(found.len(), 2);
    // It copied the bytes once (segment 9) and moves both files there.
    let new = ptr(9, 0, 1000);
    let moves: Vec<Moved> = found
        .iter()
        .map(|(ino, e)| Moved {
            ino: *ino,
            offset: e.offset,
            old: e.ptr,
            new,
            sums: Vec::new(),
        })
        .collect();
    let r = h.st.plan_relocate(&moves);
    assert_eq!((r.moved, r.skipped), (2000, 0));
    h.commit(r.records);
    let live = |h: &H, seg: u64| h.st.usage().live(LogId(77), SegmentId(seg));
    assert_eq!(
        (live(&h, 1), live(&h, 9)),
        (0, 1000),
        "the old segment is dead"
    );
    for (ino, at) in [(a, 0), (b, 500)] {
        assert_eq!(
            h.st.get_extents(ino, 0, u64::MAX).expect("extents"),
            vec![Extent {
                offset: at,
                ptr: new
            }]
        );
    }
    h.check_replay();
}

/// End-to-end checksums ride with commits: recorded, handed out with the extents that
/// touch their chunks (also after a split), replayed, checkpointed, and forgotten once no
/// extent references their segment; checksums that do not fit their segment are refused.
#[test]
fn commit_checksums_are_kept_with_the_extents_that_need_them() {
    use proto::chunksum::{segment_sums, ChunkSums, CHUNK};
    let mut h = H::new();
    let f = h.touch(ROOT, "f").expect("create");
    // ptr() segments are 1 MiB.
    let seg1: Vec<u8> = (0..1u64 << 20).map(|i| (i * 7 % 253) as u8).collect();
    let all = segment_sums(LogId(77), SegmentId(1), &seg1);
    let summed = |o: u64, seg: u64, poff: u32, len: u32, sums: Vec<ChunkSums>| InodeWrite {
        sums,
        ino: f,
        extents: vec![Extent {
            offset: o,
            ptr: ptr(seg, poff, len),
        }],
        size: o + len as u64,
        mtime: Timestamp { secs: 9, nanos: 0 },
    };
    // 40 KiB at segment offset 1000: chunks 0..11; the client sends just those.
    let sent = all.slice(0, 11).expect("slice");
    h.with(|st, c| st.plan_commit_writes(c, &[summed(0, 1, 1000, 40 << 10, vec![sent.clone()])]))
        .expect("commit");
    // Splitting it: the middle overwritten by an unsummed write elsewhere.
    h.with(|st, c| st.plan_commit_writes(c, &[summed(10_000, 2, 0, 100, Vec::new())]))
        .expect("commit");
    let ext = h.st.get_extents(f, 0, 1 << 20).expect("extents");
    assert_eq!(ext.len(), 3);
    let sums = h.st.sums().for_extents(&ext);
    for e in &ext {
        let want = (e.ptr.seg.segment == SegmentId(1)).then(|| {
            let (a, b) = proto::chunksum::chunk_span(e.ptr.offset, e.ptr.len);
            all.slice(a, b).expect("slice")
        });
        let got = sums
            .iter()
            .find(|s| s.segment == e.ptr.seg.segment)
            .and_then(|s| s.for_ptr(&e.ptr));
        assert_eq!(got, want, "{e:?}");
    }
    h.check_replay();
    let back = chunked_round_trip(&h.st);
    assert_eq!(back, h.st);
    assert_eq!(back.sums().len(), 1);
    // Checksums that do not fit their segment are refused.
    let mut bad = all.slice(0, 2).expect("slice");
    bad.first = (1 << 20) / CHUNK;
    assert_eq!(
        h.with(|st, c| st.plan_commit_writes(c, &[summed(0, 1, 0, 10, vec![bad])])),
        Err(EINVAL)
    );
    // Overwritten whole: segment 1 is dead here, its checksums go.
    h.with(|st, c| st.plan_commit_writes(c, &[summed(0, 3, 0, 50_000, Vec::new())]))
        .expect("commit");
    assert!(h.st.sums().is_empty());
    h.check_replay();
}
