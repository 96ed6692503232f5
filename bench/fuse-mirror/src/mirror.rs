//! The mirror file system: every FUSE request becomes the same operation on a backing
//! directory (pread/pwrite on backing fds, std::fs for metadata). It owns the inode table and
//! the open handles; it must stay minimal (no caching of its own, no permission checks: the
//! kernel does those with `default_permissions`), since it measures the bare FUSE cost.

use crate::inodes::Inodes;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, FileTimes, Metadata, OpenOptions, Permissions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Entry and attribute TTL: 1 s, the measured best (MEASURED.md §5; TTL 0 costs 14x on stat).
const TTL: Duration = Duration::from_secs(1);
/// Largest write request asked of the kernel (it caps at fs.fuse.max_pages_limit pages).
const MAX_WRITE: u32 = 1 << 20;

type Res<T> = Result<T, Errno>;

/// An open file or a directory listing taken at opendir.
enum Handle {
    File(Arc<File>),
    Dir(Arc<Vec<(u64, FileType, OsString)>>),
}

/// A FUSE file system mirroring `root`.
pub struct Mirror {
    root: PathBuf,
    inodes: Mutex<Inodes>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    let nsecs = u32::try_from(nsecs).unwrap_or(0);
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::new(s, nsecs),
        Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()),
    }
}

fn to_attr(ino: u64, m: &Metadata) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: m.size(),
        blocks: m.blocks(),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: FileType::from_std(m.file_type()).unwrap_or(FileType::RegularFile),
        perm: (m.mode() & 0o7777) as u16,
        nlink: u32::try_from(m.nlink()).unwrap_or(u32::MAX),
        uid: m.uid(),
        gid: m.gid(),
        rdev: u32::try_from(m.rdev()).unwrap_or(0),
        blksize: u32::try_from(m.blksize()).unwrap_or(4096),
        flags: 0,
    }
}

fn when(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

thread_local! {
    /// Read buffer reused across requests (reads are up to 1 MiB).
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Mirror {
    /// A mirror of the directory `root` (already checked to exist).
    pub fn new(root: PathBuf) -> Mirror {
        Mirror {
            inodes: Mutex::new(Inodes::new(root.clone())),
            root,
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        }
    }

    fn path(&self, ino: INodeNo) -> Res<PathBuf> {
        lock(&self.inodes).path(ino.0).ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Res<PathBuf> {
        Ok(self.path(parent)?.join(name))
    }

    /// Stats `path` and gives it an inode number.
    fn entry(&self, path: &Path) -> Res<FileAttr> {
        let m = fs::symlink_metadata(path)?;
        Ok(to_attr(lock(&self.inodes).ino_of(path), &m))
    }

    fn add_handle(&self, h: Handle) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, h);
        FileHandle(fh)
    }

    fn file(&self, fh: FileHandle) -> Res<Arc<File>> {
        match lock(&self.handles).get(&fh.0) {
            Some(Handle::File(f)) => Ok(f.clone()),
            _ => Err(Errno::EBADF),
        }
    }

    fn open_file(&self, fh: Option<FileHandle>) -> Option<Arc<File>> {
        fh.and_then(|fh| self.file(fh).ok())
    }

    #[allow(clippy::too_many_arguments)]
    fn do_setattr(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> Res<FileAttr> {
        let path = self.path(ino)?;
        let open = self.open_file(fh);
        if let Some(mode) = mode {
            fs::set_permissions(&path, Permissions::from_mode(mode & 0o7777))?;
        }
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::lchown(&path, uid, gid)?;
        }
        if let Some(size) = size {
            match &open {
                Some(f) => f.set_len(size)?,
                None => OpenOptions::new().write(true).open(&path)?.set_len(size)?,
            }
        }
        if atime.is_some() || mtime.is_some() {
            let mut times = FileTimes::new();
            if let Some(t) = atime {
                times = times.set_accessed(when(t));
            }
            if let Some(t) = mtime {
                times = times.set_modified(when(t));
            }
            match &open {
                Some(f) => f.set_times(times)?,
                None => File::open(&path)?.set_times(times)?,
            }
        }
        let m = match &open {
            Some(f) => f.metadata()?,
            None => fs::symlink_metadata(&path)?,
        };
        Ok(to_attr(ino.0, &m))
    }

    fn do_read(&self, fh: FileHandle, offset: u64, size: u32, reply: ReplyData) {
        let f = match self.file(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        READ_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.resize(size as usize, 0);
            let mut n = 0;
            while n < buf.len() {
                match f.read_at(&mut buf[n..], offset + n as u64) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return reply.error(e.into()),
                }
            }
            reply.data(&buf[..n]);
        });
    }

    fn list_dir(&self, ino: INodeNo) -> Res<Vec<(u64, FileType, OsString)>> {
        let path = self.path(ino)?;
        let parent = match path.parent() {
            Some(p) if path != self.root => lock(&self.inodes).ino_of(p),
            _ => ino.0,
        };
        let mut out = vec![
            (ino.0, FileType::Directory, OsString::from(".")),
            (parent, FileType::Directory, OsString::from("..")),
        ];
        for e in fs::read_dir(&path)? {
            let e = e?;
            let kind = FileType::from_std(e.file_type()?).unwrap_or(FileType::RegularFile);
            let child = lock(&self.inodes).ino_of(&e.path());
            out.push((child, kind, e.file_name()));
        }
        Ok(out)
    }

    fn do_rename(&self, from: &Path, to: &Path, flags: RenameFlags) -> Res<()> {
        if flags.is_empty() {
            fs::rename(from, to)?;
        } else {
            let nix_flags = nix::fcntl::RenameFlags::from_bits_truncate(flags.bits());
            nix::fcntl::renameat2(None, from, None, to, nix_flags)
                .map_err(|e| Errno::from_i32(e as i32))?;
        }
        let mut inodes = lock(&self.inodes);
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            inodes.exchange(from, to);
        } else {
            inodes.rename(from, to);
        }
        Ok(())
    }
}

impl Filesystem for Mirror {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        if let Err(nearest) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(nearest);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent, name).and_then(|p| self.entry(&p)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let m = match self.open_file(fh) {
            Some(f) => f.metadata().map_err(Errno::from),
            None => self.path(ino).and_then(|p| Ok(fs::symlink_metadata(p)?)),
        };
        match m {
            Ok(m) => reply.attr(&TTL, &to_attr(ino.0, &m)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.do_setattr(ino, mode, uid, gid, size, atime, mtime, fh) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.path(ino).and_then(|p| Ok(fs::read_link(p)?)) {
            Ok(t) => reply.data(t.as_os_str().as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self.child(parent, name).and_then(|p| {
            fs::DirBuilder::new()
                .mode(mode & !umask & 0o7777)
                .create(&p)?;
            self.entry(&p)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.child(parent, name).and_then(|p| {
            fs::remove_file(&p)?;
            lock(&self.inodes).remove(&p);
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.child(parent, name).and_then(|p| {
            fs::remove_dir(&p)?;
            lock(&self.inodes).remove(&p);
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self.child(parent, link_name).and_then(|p| {
            std::os::unix::fs::symlink(target, &p)?;
            self.entry(&p)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self
            .child(parent, name)
            .and_then(|from| Ok((from, self.child(newparent, newname)?)))
            .and_then(|(from, to)| self.do_rename(&from, &to, flags));
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let (read, write) = match flags.acc_mode() {
            OpenAccMode::O_RDONLY => (true, false),
            OpenAccMode::O_WRONLY => (false, true),
            OpenAccMode::O_RDWR => (true, true),
        };
        let r = self
            .path(ino)
            .and_then(|p| Ok(OpenOptions::new().read(read).write(write).open(p)?));
        match r {
            Ok(f) => reply.opened(
                self.add_handle(Handle::File(Arc::new(f))),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.do_read(fh, offset, size, reply);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = self
            .file(fh)
            .and_then(|f| Ok(f.write_all_at(data, offset)?));
        match r {
            // data.len() <= max_write (1 MiB), so it fits in u32.
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _: INodeNo, fh: FileHandle, _: LockOwner, reply: ReplyEmpty) {
        // Nothing is buffered here: writes went straight to the backing file.
        match self.file(fh) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.handles).remove(&fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let r = self.file(fh).and_then(|f| {
            if datasync {
                f.sync_data()?;
            } else {
                f.sync_all()?;
            }
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.list_dir(ino) {
            Ok(list) => reply.opened(
                self.add_handle(Handle::Dir(Arc::new(list))),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _: &Request,
        _: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let list = match lock(&self.handles).get(&fh.0) {
            Some(Handle::Dir(list)) => list.clone(),
            _ => return reply.error(Errno::EBADF),
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (ino, kind, name)) in list.iter().enumerate().skip(start) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _: &Request, _: INodeNo, fh: FileHandle, _: OpenFlags, reply: ReplyEmpty) {
        lock(&self.handles).remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match nix::sys::statvfs::statvfs(&self.root) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                u32::try_from(s.block_size()).unwrap_or(4096),
                u32::try_from(s.name_max()).unwrap_or(255),
                u32::try_from(s.fragment_size()).unwrap_or(4096),
            ),
            Err(e) => reply.error(Errno::from_i32(e as i32)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let acc = flags & libc::O_ACCMODE;
        let r = self.child(parent, name).and_then(|p| {
            let f = OpenOptions::new()
                .read(acc != libc::O_WRONLY)
                .write(acc != libc::O_RDONLY)
                // O_CREAT/O_EXCL/O_TRUNC go to the backing open as given.
                .custom_flags(
                    flags & (libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC) | libc::O_CREAT,
                )
                .mode(mode & !umask & 0o7777)
                .open(&p)?;
            let m = f.metadata()?;
            let ino = lock(&self.inodes).ino_of(&p);
            Ok((to_attr(ino, &m), f))
        });
        match r {
            Ok((a, f)) => {
                let fh = self.add_handle(Handle::File(Arc::new(f)));
                reply.created(&TTL, &a, Generation(0), fh, FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }
}
