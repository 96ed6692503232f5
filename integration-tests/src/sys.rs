//! System calls std does not offer: extended attributes with flags, copy_file_range(2)
//! with explicit offsets, writes through a
//! shared mapping (`mmap_write`), running one file system call as another user in a
//! forked child, and a child's death signal (`die_with_parent`). This is the only module
//! with `unsafe`; each block is a plain libc call on pointers that live across the call
//! (or, in `die_with_parent`, async-signal-safe calls between fork and exec).
#![allow(unsafe_code)]

use anyhow::{bail, Result};
use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult};
use std::ffi::CString;
use std::fmt::Debug;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The errno of an `io::Error`, if it carries one.
pub fn errno_of(e: &std::io::Error) -> Option<i32> {
    e.raw_os_error()
}

/// "EACCES: Permission denied".
pub fn errno_name(errno: i32) -> String {
    Errno::from_raw(errno).to_string()
}

/// Checks that `r` failed with `want`.
pub fn expect_errno<T: Debug>(r: std::io::Result<T>, want: i32, what: &str) -> Result<()> {
    match r {
        Ok(v) => bail!(
            "{what}: expected {} but it succeeded ({v:?})",
            errno_name(want)
        ),
        Err(e) if e.raw_os_error() == Some(want) => Ok(()),
        Err(e) => bail!(
            "{what}: expected {}, got {e} ({:?})",
            errno_name(want),
            e.raw_os_error().map(errno_name)
        ),
    }
}

/// Same for results carrying a bare `Errno`.
pub fn expect_errno_nix<T: Debug>(
    r: std::result::Result<T, Errno>,
    want: Errno,
    what: &str,
) -> Result<()> {
    match r {
        Ok(v) => bail!("{what}: expected {want} but it succeeded ({v:?})"),
        Err(e) if e == want => Ok(()),
        Err(e) => bail!("{what}: expected {want}, got {e}"),
    }
}

fn cpath(p: &Path) -> std::result::Result<CString, Errno> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

fn cstr(s: &str) -> std::result::Result<CString, Errno> {
    CString::new(s).map_err(|_| Errno::EINVAL)
}

/// setxattr(2); `flags` is 0, `libc::XATTR_CREATE` or `libc::XATTR_REPLACE`.
pub fn set_xattr(
    path: &Path,
    name: &str,
    value: &[u8],
    flags: i32,
) -> std::result::Result<(), Errno> {
    let (p, n) = (cpath(path)?, cstr(name)?);
    // SAFETY: p and n are NUL-terminated and live across the call; value.len() bytes are readable.
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    Errno::result(r).map(drop)
}

/// copy_file_range(2) from `from` at `*off_in` to `to` at `*off_out`, at most `len`
/// bytes; the offsets advance by the bytes copied, which are returned (0 at end of file).
pub fn copy_file_range(
    from: &std::fs::File,
    off_in: &mut i64,
    to: &std::fs::File,
    off_out: &mut i64,
    len: usize,
) -> std::result::Result<usize, Errno> {
    use std::os::fd::AsRawFd;
    // SAFETY: both descriptors are open for the call (borrowed files); the offsets are
    // valid, exclusively borrowed i64s the kernel updates.
    let r =
        unsafe { libc::copy_file_range(from.as_raw_fd(), off_in, to.as_raw_fd(), off_out, len, 0) };
    Errno::result(r).map(|n| n as usize)
}

/// getxattr(2): the whole value.
pub fn get_xattr(path: &Path, name: &str) -> std::result::Result<Vec<u8>, Errno> {
    let (p, n) = (cpath(path)?, cstr(name)?);
    for _ in 0..4 {
        // SAFETY: a null buffer with size 0 asks for the value's length.
        let len = Errno::result(unsafe {
            libc::getxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0)
        })?;
        let mut buf = vec![0u8; len as usize];
        // SAFETY: buf has buf.len() writable bytes.
        let r =
            unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match Errno::result(r) {
            Ok(got) => {
                buf.truncate(got as usize);
                return Ok(buf);
            }
            Err(Errno::ERANGE) => continue, // grew in between
            Err(e) => return Err(e),
        }
    }
    Err(Errno::ERANGE)
}

/// listxattr(2): the names.
pub fn list_xattr(path: &Path) -> std::result::Result<Vec<String>, Errno> {
    let p = cpath(path)?;
    for _ in 0..4 {
        // SAFETY: a null buffer with size 0 asks for the list's length.
        let len = Errno::result(unsafe { libc::listxattr(p.as_ptr(), std::ptr::null_mut(), 0) })?;
        let mut buf = vec![0u8; len as usize];
        // SAFETY: buf has buf.len() writable bytes.
        let r = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match Errno::result(r) {
            Ok(got) => {
                buf.truncate(got as usize);
                return Ok(buf
                    .split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect());
            }
            Err(Errno::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::ERANGE)
}

/// removexattr(2).
pub fn remove_xattr(path: &Path, name: &str) -> std::result::Result<(), Errno> {
    let (p, n) = (cpath(path)?, cstr(name)?);
    // SAFETY: both strings are NUL-terminated and live across the call.
    Errno::result(unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) }).map(drop)
}

/// Writes `data` at `offset` of `file` through a `MAP_SHARED` mapping of the pages that
/// cover it, then `msync(MS_SYNC)` when `sync`, then unmaps. The range must lie within the
/// file's size (a store past EOF is SIGBUS).
pub fn mmap_write(
    file: &std::fs::File,
    offset: u64,
    data: &[u8],
    sync: bool,
) -> std::result::Result<(), Errno> {
    use std::os::fd::AsRawFd;
    if data.is_empty() {
        return Ok(());
    }
    // SAFETY: sysconf has no memory arguments.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let start = offset / page * page;
    let skip = usize::try_from(offset - start).map_err(|_| Errno::EINVAL)?;
    let len = skip + data.len();
    let map_off = libc::off_t::try_from(start).map_err(|_| Errno::EINVAL)?;
    // SAFETY: a fresh mapping chosen by the kernel (null hint), of a descriptor that is open
    // for the whole call; nothing else refers to it.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            map_off,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    // SAFETY: the mapping is `len` writable bytes; bytes skip..len are within it and do not
    // overlap `data` (a separate heap buffer).
    unsafe {
        std::ptr::copy_nonoverlapping(data.as_ptr(), addr.cast::<u8>().add(skip), data.len())
    };
    // SAFETY: addr/len is exactly the mapping made above.
    let synced = if sync {
        Errno::result(unsafe { libc::msync(addr, len, libc::MS_SYNC) }).map(drop)
    } else {
        Ok(())
    };
    // SAFETY: addr/len is exactly the mapping made above; it is not used afterwards.
    let unmapped = Errno::result(unsafe { libc::munmap(addr, len) }).map(drop);
    synced.and(unmapped)
}

/// One file system call for `run_as`. Paths are prepared before the fork so that the child
/// does not allocate.
#[derive(Debug)]
pub enum ChildOp {
    /// open(O_RDONLY) then close.
    OpenRead(CString),
    /// open(O_WRONLY) then close.
    OpenWrite(CString),
    /// open(O_CREAT|O_EXCL|O_WRONLY, 0644) then close.
    Create(CString),
    Mkdir(CString),
    Unlink(CString),
    Chmod(CString, u32),
    Chown(CString, u32, u32),
    /// open(O_WRONLY|O_APPEND), write one byte, close.
    Append(CString),
}

impl ChildOp {
    pub fn path(p: &Path) -> CString {
        CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
    }
}

/// Runs `op` in a forked child that first drops to `uid`/`gid` (no supplementary groups).
/// Returns the call's outcome (`Err(errno)`), or an error if the child could not be set up
/// or did not finish within 30 s.
pub fn run_as(uid: u32, gid: u32, op: &ChildOp) -> Result<std::result::Result<(), Errno>> {
    // SAFETY: the child only makes async-signal-safe system calls on memory prepared before
    // the fork and leaves with _exit, so the state of other threads' locks does not matter.
    let pid = match unsafe { fork() }? {
        ForkResult::Child => {
            let code = unsafe { child_body(uid, gid, op) };
            // SAFETY: _exit is async-signal-safe and never returns.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    };
    let start = Instant::now();
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG))? {
            WaitStatus::Exited(_, 0) => return Ok(Ok(())),
            WaitStatus::Exited(_, c) if c >= 200 => {
                bail!("child could not switch to uid {uid} gid {gid} (code {c})")
            }
            WaitStatus::Exited(_, c) => return Ok(Err(Errno::from_raw(c))),
            WaitStatus::StillAlive => {}
            other => bail!("child ended unexpectedly: {other:?}"),
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(pid, None);
            bail!("child running {op:?} as uid {uid} did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The child side of `run_as`: raw libc calls only. Returns the exit code: 0, an errno, or
/// 200+ for a failed credential switch.
unsafe fn child_body(uid: u32, gid: u32, op: &ChildOp) -> i32 {
    if libc::setgroups(0, std::ptr::null()) != 0 {
        return 200;
    }
    if libc::setgid(gid) != 0 {
        return 201;
    }
    if libc::setuid(uid) != 0 {
        return 202;
    }
    let r = match op {
        ChildOp::OpenRead(p) => open_close(p, libc::O_RDONLY),
        ChildOp::OpenWrite(p) => open_close(p, libc::O_WRONLY),
        ChildOp::Create(p) => open_close(p, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY),
        ChildOp::Mkdir(p) => libc::mkdir(p.as_ptr(), 0o755),
        ChildOp::Unlink(p) => libc::unlink(p.as_ptr()),
        ChildOp::Chmod(p, mode) => libc::chmod(p.as_ptr(), *mode),
        ChildOp::Chown(p, u, g) => libc::chown(p.as_ptr(), *u, *g),
        ChildOp::Append(p) => append_byte(p),
    };
    if r < 0 {
        let e = *libc::__errno_location();
        if e > 0 && e < 200 {
            e
        } else {
            199
        }
    } else {
        0
    }
}

unsafe fn append_byte(p: &CString) -> i32 {
    let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_APPEND);
    if fd < 0 {
        return fd;
    }
    let byte = [b'!'];
    let n = libc::write(fd, byte.as_ptr().cast(), 1);
    if n < 0 {
        let e = *libc::__errno_location();
        libc::close(fd);
        *libc::__errno_location() = e;
        return -1;
    }
    libc::close(fd)
}

unsafe fn open_close(p: &CString, flags: i32) -> i32 {
    let fd = libc::open(p.as_ptr(), flags, 0o644 as libc::c_uint);
    if fd < 0 {
        return fd;
    }
    libc::close(fd);
    0
}

/// Makes the child of `cmd` receive `sig` when the thread that forks it ends (Linux
/// `PR_SET_PDEATHSIG`); it exits at once if that thread is already gone. Use it only from
/// a thread that lives as long as the test process (`process::spawn_child` does), so that
/// the signal means "the test process died" (killed by a timeout or Ctrl-C: no Drop ran).
pub fn die_with_parent(cmd: &mut std::process::Command, sig: nix::sys::signal::Signal) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    let signo = sig as libc::c_int;
    // Only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signo as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expect_errno_matches_only_the_right_errno() {
        let e = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert!(expect_errno::<()>(Err(e), libc::ENOENT, "x").is_ok());
        let e = std::io::Error::from_raw_os_error(libc::EACCES);
        assert!(expect_errno::<()>(Err(e), libc::ENOENT, "x").is_err());
        assert!(expect_errno(Ok(1), libc::ENOENT, "x").is_err());
    }

    #[test]
    fn run_as_reports_errno_of_the_child() {
        if !nix::unistd::geteuid().is_root() {
            return; // needs root to switch users
        }
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let f = d.path().join("f");
        std::fs::write(&f, b"x").expect("write");
        // The temp dir is 0700 root: another user cannot even reach the file.
        let r = run_as(65534, 65534, &ChildOp::OpenRead(ChildOp::path(&f))).expect("child ran");
        assert_eq!(r, Err(Errno::EACCES));
        let r = run_as(0, 0, &ChildOp::OpenRead(ChildOp::path(&f))).expect("child ran");
        assert_eq!(r, Ok(()));
    }
}
