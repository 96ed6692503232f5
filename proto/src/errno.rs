//! POSIX error numbers: the one errno type of every role. A manager refuses an operation
//! with one (`RemoteError::Errno`), the client hands one to the kernel. Values come from
//! libc, never typed by hand.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A POSIX error number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(libc::EPERM);
    pub const EACCES: Errno = Errno(libc::EACCES);
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const EIO: Errno = Errno(libc::EIO);
    pub const E2BIG: Errno = Errno(libc::E2BIG);
    pub const EBADF: Errno = Errno(libc::EBADF);
    pub const EAGAIN: Errno = Errno(libc::EAGAIN);
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    pub const EXDEV: Errno = Errno(libc::EXDEV);
    pub const ENOTDIR: Errno = Errno(libc::ENOTDIR);
    pub const EISDIR: Errno = Errno(libc::EISDIR);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const EFBIG: Errno = Errno(libc::EFBIG);
    pub const ENOSPC: Errno = Errno(libc::ENOSPC);
    pub const ERANGE: Errno = Errno(libc::ERANGE);
    pub const ENAMETOOLONG: Errno = Errno(libc::ENAMETOOLONG);
    pub const ENOTEMPTY: Errno = Errno(libc::ENOTEMPTY);
    pub const ENODATA: Errno = Errno(libc::ENODATA);
    pub const ETIMEDOUT: Errno = Errno(libc::ETIMEDOUT);
    pub const ESTALE: Errno = Errno(libc::ESTALE);
    pub const EROFS: Errno = Errno(libc::EROFS);
    pub const EOPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);
    /// A commit of writes buffered before the manager gave up on the session (`Standing`):
    /// the writes are dropped, and the file's next fsync or close reports EIO.
    pub const ENOLCK: Errno = Errno(libc::ENOLCK);

    /// The raw number.
    pub fn errno(self) -> i32 {
        self.0
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

impl std::error::Error for Errno {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_the_platform_ones_and_display_says_what_they_mean() {
        assert_eq!(Errno::ENOENT.errno(), libc::ENOENT);
        assert!(Errno::ENOENT.to_string().contains("No such file"));
    }
}
