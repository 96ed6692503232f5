//! The fuser `Filesystem` over `Client`: each callback converts its arguments, moves its
//! `Reply` into `rt.spawn(..)` and answers there.
//!
//! Owns only the translation between FUSE and the client core (kernel ino == `InodeId`,
//! errno mapping, kernel configuration at init) and the per-request metrics (count and time
//! to answer per op, bytes read and written: `proto::ops_metrics`, in `spawn`). Must not
//! block a FUSE thread beyond the handoff, and must not hold file system logic (that is
//! `Client`'s).

use crate::client::Client;
use crate::data::seek::Seek;
use crate::error::FsError;
use crate::kernel::attr::{file_type, timestamp, to_file_attr};
use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};
use proto::ids::InodeId;
use proto::msg::{Caller, OpenAccess, RenameFlags, SetAttrs, SetTime};
use std::ffi::OsStr;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Entry and attribute timeout given to the kernel.
pub const TTL: Duration = crate::lease::KERNEL_TTL;
/// Largest write and readahead the kernel is asked to send.
pub const MAX_IO: u32 = 1 << 20;

/// The FUSE face of a `Client`.
pub struct ShoalFs {
    client: Arc<Client>,
    rt: tokio::runtime::Handle,
}

fn ino(i: INodeNo) -> InodeId {
    InodeId(i.0)
}

fn errno(e: FsError) -> Errno {
    Errno::from_i32(e.0)
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

/// What open(2) flags ask of a file (O_TRUNC writes).
fn open_access(flags: i32) -> OpenAccess {
    let mode = flags & libc::O_ACCMODE;
    OpenAccess {
        read: mode == libc::O_RDONLY || mode == libc::O_RDWR,
        write: mode == libc::O_WRONLY || mode == libc::O_RDWR || flags & libc::O_TRUNC != 0,
    }
}

fn name_of(name: &OsStr) -> Result<String, FsError> {
    name.to_str().map(str::to_string).ok_or(FsError::EINVAL)
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(s) => SetTime::At(timestamp(s)),
    })
}

impl ShoalFs {
    pub fn new(client: Arc<Client>, rt: tokio::runtime::Handle) -> ShoalFs {
        ShoalFs { client, rt }
    }

    /// Runs `f` (which answers the kernel) on the runtime; the FUSE thread returns at
    /// once. Every request goes through here, `entry` or `empty`: they count it as `op`
    /// with its time to the answer (`proto::ops_metrics`).
    fn spawn<F, Fut>(&self, op: &'static str, f: F)
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let started = Instant::now();
        let cred = crate::credentials::of_this_thread();
        let label = self.client.metrics_label();
        let fut = f(self.client.clone());
        self.rt.spawn(crate::credentials::scope(cred, async move {
            fut.await;
            proto::ops_metrics::fuse_op(&label, op, started.elapsed());
        }));
    }

    fn entry(
        &self,
        op: &'static str,
        reply: ReplyEntry,
        fut: impl Future<Output = Result<proto::msg::Attr, FsError>> + Send + 'static,
    ) {
        self.spawn(op, move |c| async move {
            match fut.await {
                Ok(a) => reply.entry(&c.kernel_ttl(a.ino), &to_file_attr(&a), Generation(0)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn empty(
        &self,
        op: &'static str,
        reply: ReplyEmpty,
        fut: impl Future<Output = Result<(), FsError>> + Send + 'static,
    ) {
        self.spawn(op, move |_| async move {
            match fut.await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    /// Counts a request answered on the FUSE thread itself.
    fn answered_at_once(&self, op: &'static str, started: Instant) {
        proto::ops_metrics::fuse_op(&self.client.metrics_label(), op, started.elapsed());
    }
}

impl Filesystem for ShoalFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(nearest) = config.set_max_write(MAX_IO) {
            let _ = config.set_max_write(nearest);
        }
        if let Err(nearest) = config.set_max_readahead(MAX_IO) {
            let _ = config.set_max_readahead(nearest);
        }
        // Lookups and creates in one directory may run concurrently (the managers order them).
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // Files are opened with direct I/O under leases (see `file_open_flags`); shared
        // mappings of them stay possible.
        let _ = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        let c = self.client.clone();
        let name = name_of(name);
        self.entry("lookup", reply, async move {
            c.lookup(ino(parent), &name?).await
        });
    }

    fn getattr(&self, req: &Request, i: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        self.spawn("getattr", move |c| async move {
            match c.getattr(ino(i)).await {
                Ok(a) => reply.attr(&c.kernel_ttl(a.ino), &to_file_attr(&a)),
                // The inode is gone: the kernel reached it through a stale name, and ESTALE
                // makes it look the path up again.
                Err(e) if e == FsError::ENOENT => reply.error(errno(FsError::ESTALE)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        i: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        let set = SetAttrs {
            perm: mode.map(|m| (m & 0o7777) as u16),
            uid,
            gid,
            size,
            atime: set_time(atime),
            mtime: set_time(mtime),
        };
        let who = caller(req);
        self.spawn("setattr", move |c| async move {
            match c.setattr(ino(i), set, who).await {
                Ok(a) => reply.attr(&c.kernel_ttl(a.ino), &to_file_attr(&a)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn readlink(&self, req: &Request, i: INodeNo, reply: ReplyData) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        self.spawn("readlink", move |c| async move {
            match c.readlink(ino(i)).await {
                Ok(t) => reply.data(t.as_bytes()),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        let (c, name, who) = (self.client.clone(), name_of(name), caller(req));
        self.entry("mknod", reply, async move {
            c.mknod(
                ino(parent),
                &name?,
                mode,
                (umask & 0o7777) as u16,
                rdev,
                who,
            )
            .await
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        let (c, name, who) = (self.client.clone(), name_of(name), caller(req));
        self.entry("mkdir", reply, async move {
            c.mkdir(
                ino(parent),
                &name?,
                (mode & 0o7777) as u16,
                (umask & 0o7777) as u16,
                who,
            )
            .await
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        let (c, name, who) = (self.client.clone(), name_of(name), caller(req));
        self.empty("unlink", reply, async move {
            c.unlink(ino(parent), &name?, who).await
        });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        let (c, name, who) = (self.client.clone(), name_of(name), caller(req));
        self.empty("rmdir", reply, async move {
            c.rmdir(ino(parent), &name?, who).await
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        let (c, name, who) = (self.client.clone(), name_of(link_name), caller(req));
        let target = name_of(target.as_os_str());
        self.entry("symlink", reply, async move {
            c.symlink(ino(parent), &name?, &target?, who).await
        });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        let (c, name, who) = (self.client.clone(), name_of(name), caller(req));
        let newname = name_of(newname);
        let known = fuser::RenameFlags::RENAME_NOREPLACE | fuser::RenameFlags::RENAME_EXCHANGE;
        let unsupported = !(flags & !known).is_empty();
        let flags = RenameFlags {
            noreplace: flags.contains(fuser::RenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(fuser::RenameFlags::RENAME_EXCHANGE),
        };
        self.empty("rename", reply, async move {
            if unsupported {
                return Err(FsError::EINVAL);
            }
            c.rename(ino(parent), &name?, ino(newparent), &newname?, flags, who)
                .await
        });
    }

    fn link(
        &self,
        req: &Request,
        i: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        let (c, name, who) = (self.client.clone(), name_of(newname), caller(req));
        self.entry("link", reply, async move {
            c.link(ino(i), ino(newparent), &name?, who).await
        });
    }

    fn open(&self, req: &Request, i: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        self.spawn("open", move |c| async move {
            match c.open(ino(i), open_access(flags.0)).await {
                Ok(fh) => reply.opened(FileHandle(fh.0), file_open_flags(&c, ino(i))),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn read(
        &self,
        req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        self.spawn("read", move |c| async move {
            match c.read(ino(i), offset, size).await {
                Ok(b) => {
                    proto::ops_metrics::fuse_read_bytes(&c.metrics_label(), b.len() as u64);
                    reply.data(&b)
                }
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        let data = bytes::Bytes::copy_from_slice(data);
        // O_APPEND: the kernel's offset comes from its cached size, which another client
        // may have outdated; the client appends at the size it knows under the write lease.
        let append = flags.0 & libc::O_APPEND != 0;
        let kill_priv = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        self.spawn("write", move |c| async move {
            if kill_priv {
                if let Err(e) = c.kill_priv(ino(i)).await {
                    reply.error(errno(e));
                    return;
                }
            }
            match c.write_at(ino(i), offset, &data, append).await {
                Ok((_, n)) => {
                    proto::ops_metrics::fuse_written_bytes(&c.metrics_label(), n as u64);
                    reply.written(n)
                }
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn flush(&self, req: &Request, i: INodeNo, _fh: FileHandle, _lo: LockOwner, reply: ReplyEmpty) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        let c = self.client.clone();
        self.empty("flush", reply, async move { c.flush(ino(i)).await });
    }

    fn release(
        &self,
        req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        let c = self.client.clone();
        self.empty("release", reply, async move { c.release(ino(i)).await });
    }

    fn fsync(
        &self,
        req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        let c = self.client.clone();
        self.empty("fsync", reply, async move { c.fsync(ino(i)).await });
    }

    fn lseek(
        &self,
        req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        // The kernel answers SEEK_SET/CUR/END itself and sends only these two.
        let what = match whence {
            libc::SEEK_DATA => Seek::Data,
            libc::SEEK_HOLE => Seek::Hole,
            _ => return reply.error(Errno::EINVAL),
        };
        if offset < 0 {
            return reply.error(Errno::ENXIO);
        }
        self.spawn("lseek", move |c| async move {
            match c.seek(ino(i), offset as u64, what).await {
                Ok(at) => reply.offset(at as i64),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn fallocate(
        &self,
        req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        let c = self.client.clone();
        self.empty("fallocate", reply, async move {
            c.fallocate(ino(i), offset, length, mode).await
        });
    }

    fn opendir(&self, req: &Request, i: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        self.spawn("opendir", move |c| async move {
            match c.opendir(ino(i)).await {
                Ok(fh) => reply.opened(FileHandle(fh.0), FopenFlags::empty()),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn readdir(
        &self,
        req: &Request,
        i: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        self.spawn("readdir", move |c| async move {
            match c
                .readdir(ino(i), crate::client::FileHandle(fh.0), offset)
                .await
            {
                Ok(items) => {
                    for it in items {
                        if reply.add(INodeNo(it.ino.0), it.offset, file_type(it.kind), &it.name) {
                            break;
                        }
                    }
                    reply.ok();
                }
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn releasedir(
        &self,
        req: &Request,
        _i: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        let started = Instant::now();
        self.client.releasedir(crate::client::FileHandle(fh.0));
        reply.ok();
        self.answered_at_once("releasedir", started);
    }

    fn fsyncdir(&self, req: &Request, i: INodeNo, _fh: FileHandle, _ds: bool, reply: ReplyEmpty) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        let c = self.client.clone();
        self.empty("fsyncdir", reply, async move { c.fsyncdir(ino(i)).await });
    }

    fn statfs(&self, req: &Request, _i: INodeNo, reply: ReplyStatfs) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        self.spawn("statfs", move |c| async move {
            match c.statfs().await {
                Ok(s) => reply.statfs(
                    s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
                ),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        i: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        let (c, name, who) = (self.client.clone(), name_of(name), caller(req));
        let value = value.to_vec();
        self.empty("setxattr", reply, async move {
            c.setxattr(ino(i), &name?, &value, flags, who).await
        });
    }

    fn getxattr(&self, req: &Request, i: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        let name = name_of(name);
        self.spawn("getxattr", move |c| async move {
            let r = match name {
                Ok(n) => c.getxattr(ino(i), &n).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(v) if size == 0 => reply.size(v.len() as u32),
                Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
                Ok(v) => reply.data(&v),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn listxattr(&self, req: &Request, i: INodeNo, size: u32, reply: ReplyXattr) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        self.spawn("listxattr", move |c| async move {
            match c.listxattr(ino(i)).await {
                Ok(names) => {
                    let mut buf = Vec::new();
                    for n in names {
                        buf.extend_from_slice(n.as_bytes());
                        buf.push(0);
                    }
                    if size == 0 {
                        reply.size(buf.len() as u32);
                    } else if buf.len() > size as usize {
                        reply.error(Errno::ERANGE);
                    } else {
                        reply.data(&buf);
                    }
                }
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn removexattr(&self, req: &Request, i: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        let (c, name, who) = (self.client.clone(), name_of(name), caller(req));
        self.empty("removexattr", reply, async move {
            c.removexattr(ino(i), &name?, who).await
        });
    }

    /// No ioctl is supported: the answer is ENOTTY (what a file system without ioctls
    /// gives, and what programs probing for a terminal expect), quietly, instead of
    /// fuser's default ENOSYS with a warning per call (Python's `open()` probes TCGETS).
    fn ioctl(
        &self,
        _req: &Request,
        _i: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::from_i32(libc::ENOTTY));
        self.answered_at_once("ioctl", Instant::now());
    }

    fn access(&self, req: &Request, _i: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        // default_permissions: the kernel checks mode bits itself.
        reply.ok();
        self.answered_at_once("access", Instant::now());
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _caller = crate::credentials::enter(req.uid(), req.gid(), req.pid());
        let (name, who) = (name_of(name), caller(req));
        let exclusive = flags & libc::O_EXCL != 0;
        let truncate = flags & libc::O_TRUNC != 0;
        let access = open_access(flags);
        self.spawn("create", move |c| async move {
            let r = match name {
                Ok(n) => {
                    let made = c
                        .create(
                            ino(parent),
                            &n,
                            (mode & 0o7777) as u16,
                            (umask & 0o7777) as u16,
                            who,
                        )
                        .await;
                    match made {
                        // Another client created the name between the kernel's lookup and
                        // our create: without O_EXCL, open(2) opens the existing file.
                        Err(e) if e.0 == libc::EEXIST && !exclusive => {
                            open_existing(&c, ino(parent), &n, truncate, access, who).await
                        }
                        other => other,
                    }
                }
                Err(e) => Err(e),
            };
            match r {
                Ok((a, fh)) => reply.created(
                    &c.kernel_ttl(a.ino),
                    &to_file_attr(&a),
                    Generation(0),
                    FileHandle(fh.0),
                    file_open_flags(&c, a.ino),
                ),
                Err(e) => reply.error(errno(e)),
            }
        });
    }
}

/// How a file is opened. Under leases, with direct I/O: the kernel's page cache would let
/// a thread see the bytes of another thread's write on this client before that write holds
/// the write lease (the kernel fills its pages before sending the write), while other
/// clients still read the old bytes — not linearizable; and locked pages of such a write
/// can hold up a callback's invalidation. Reads are served from this client's own cache,
/// which the lease protocol keeps coherent.
fn file_open_flags(c: &Client, i: InodeId) -> FopenFlags {
    if c.keep_cache(i) {
        FopenFlags::FOPEN_DIRECT_IO
    } else {
        FopenFlags::empty()
    }
}

/// Opens an existing `name` for a non-exclusive create that lost a race, truncating it
/// for O_TRUNC (the kernel believes the file new and will not truncate it itself).
async fn open_existing(
    c: &Client,
    parent: InodeId,
    name: &str,
    truncate: bool,
    access: OpenAccess,
    who: proto::msg::Caller,
) -> Result<(proto::msg::Attr, crate::client::FileHandle), FsError> {
    let mut a = c.lookup(parent, name).await?;
    if a.kind == proto::msg::FileKind::Dir {
        return Err(FsError::EISDIR);
    }
    let fh = c.open(a.ino, access).await?;
    if truncate && a.size != 0 {
        let set = proto::msg::SetAttrs {
            size: Some(0),
            ..Default::default()
        };
        match c.setattr(a.ino, set, who).await {
            Ok(t) => a = t,
            Err(e) => {
                let _ = c.release(a.ino).await;
                return Err(e);
            }
        }
    }
    Ok((a, fh))
}
