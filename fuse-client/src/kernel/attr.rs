//! Attributes as the kernel sees them: `Attr` (with local state laid over it by
//! `ops::attr::overlay`) converted to fuser's `FileAttr`. Pure conversions only.

use crate::ops::attr::BLKSIZE;
use fuser::{FileAttr, FileType, INodeNo};
use proto::msg::{Attr, FileKind, Timestamp};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDev => FileType::CharDevice,
        FileKind::BlockDev => FileType::BlockDevice,
    }
}

pub fn system_time(t: Timestamp) -> SystemTime {
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos.min(999_999_999))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(t.secs.unsigned_abs()))
            .and_then(|s| s.checked_add(Duration::from_nanos(t.nanos as u64)))
            .unwrap_or(UNIX_EPOCH)
    }
}

pub fn timestamp(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp {
            secs: d.as_secs() as i64,
            nanos: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            if d.subsec_nanos() == 0 {
                Timestamp {
                    secs: -(d.as_secs() as i64),
                    nanos: 0,
                }
            } else {
                Timestamp {
                    secs: -(d.as_secs() as i64) - 1,
                    nanos: 1_000_000_000 - d.subsec_nanos(),
                }
            }
        }
    }
}

/// fuser's view of `attr`.
pub fn to_file_attr(attr: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino.0),
        size: attr.size,
        blocks: attr.blocks_bytes.div_ceil(512),
        atime: system_time(attr.atime),
        mtime: system_time(attr.mtime),
        ctime: system_time(attr.ctime),
        crtime: system_time(attr.ctime),
        kind: file_type(attr.kind),
        perm: attr.perm & 0o7777,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: attr.rdev,
        blksize: BLKSIZE,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::attr::kind_of_mode;
    use proto::ids::InodeId;
    use proto::msg::FileKind;

    fn attr(size: u64, mtime: i64) -> Attr {
        let t = Timestamp {
            secs: mtime,
            nanos: 0,
        };
        Attr {
            ino: InodeId(77),
            kind: FileKind::File,
            perm: 0o100644,
            nlink: 1,
            uid: 1,
            gid: 2,
            size,
            blocks_bytes: size,
            atime: t,
            mtime: t,
            ctime: t,
            rdev: 0,
            version: 1,
        }
    }

    #[test]
    fn conversion_keeps_ino_perm_and_times() {
        let f = to_file_attr(&attr(4097, 1_700_000_000));
        assert_eq!(f.ino, INodeNo(77));
        assert_eq!(f.perm, 0o644);
        assert_eq!(f.blocks, 9);
        assert_eq!(f.kind, FileType::RegularFile);
        assert_eq!(
            timestamp(f.mtime),
            Timestamp {
                secs: 1_700_000_000,
                nanos: 0
            }
        );
        let before = Timestamp {
            secs: -2,
            nanos: 500,
        };
        assert_eq!(timestamp(system_time(before)), before);
        assert_eq!(kind_of_mode(libc::S_IFIFO | 0o600), Some(FileKind::Fifo));
    }
}
