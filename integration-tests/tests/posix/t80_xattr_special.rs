//! Extended attributes (user.*), FIFOs made with mkfifo, and their persistence.

use crate::mounted_cluster;
use anyhow::Result;
use integration_tests::sys::{expect_errno_nix, get_xattr, list_xattr, remove_xattr, set_xattr};
use nix::errno::Errno;
use nix::sys::stat::Mode;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use tracing::info;

#[test]
fn t80_xattrs_and_fifos() -> Result<()> {
    let (c, m) = mounted_cluster(&[])?;
    let f = m.join("f");
    let d = m.join("d");
    fs::write(&f, b"x")?;
    fs::create_dir(&d)?;
    let binary: Vec<u8> = (0..=255u8).collect();
    {
        info!("--- set, get, list xattrs on a file and a directory");
        set_xattr(&f, "user.a", b"1", 0)?;
        set_xattr(&f, "user.bin", &binary, 0)?;
        set_xattr(&f, "user.empty", b"", 0)?;
        set_xattr(&d, "user.on-dir", b"dir value", 0)?;
        assert_eq!(get_xattr(&f, "user.a")?, b"1");
        assert_eq!(get_xattr(&f, "user.bin")?, binary);
        assert_eq!(get_xattr(&f, "user.empty")?, b"");
        assert_eq!(get_xattr(&d, "user.on-dir")?, b"dir value");
        let mut names = list_xattr(&f)?;
        names.sort();
        assert_eq!(names, ["user.a", "user.bin", "user.empty"]);
    }
    {
        info!("--- replace a value; XATTR_CREATE on an existing name: EEXIST; XATTR_REPLACE on a missing one: ENODATA");
        set_xattr(&f, "user.a", b"22", 0)?;
        assert_eq!(get_xattr(&f, "user.a")?, b"22");
        expect_errno_nix(
            set_xattr(&f, "user.a", b"3", libc::XATTR_CREATE),
            Errno::EEXIST,
            "XATTR_CREATE existing",
        )?;
        expect_errno_nix(
            set_xattr(&f, "user.zz", b"3", libc::XATTR_REPLACE),
            Errno::ENODATA,
            "XATTR_REPLACE missing",
        )?;
        set_xattr(&f, "user.new", b"n", libc::XATTR_CREATE)?;
        set_xattr(&f, "user.new", b"N", libc::XATTR_REPLACE)?;
        assert_eq!(get_xattr(&f, "user.new")?, b"N");
    }
    {
        info!("--- missing names: ENODATA on get and remove; remove works");
        expect_errno_nix(get_xattr(&f, "user.missing"), Errno::ENODATA, "get missing")?;
        remove_xattr(&f, "user.a")?;
        expect_errno_nix(get_xattr(&f, "user.a"), Errno::ENODATA, "get removed")?;
        expect_errno_nix(remove_xattr(&f, "user.a"), Errno::ENODATA, "remove missing")?;
        assert!(!list_xattr(&f)?.contains(&"user.a".to_string()));
        expect_errno_nix(
            get_xattr(&m.join("nofile"), "user.a"),
            Errno::ENOENT,
            "xattr of a missing file",
        )?;
    }
    {
        info!("--- mkfifo: stat shows a FIFO with the mode asked");
        nix::unistd::mkfifo(&m.join("fifo"), Mode::from_bits_truncate(0o640))?;
        let md = fs::symlink_metadata(m.join("fifo"))?;
        assert!(md.file_type().is_fifo(), "not a FIFO: {:?}", md.file_type());
        assert_eq!(md.mode() & 0o777, 0o640);
        expect_errno_nix(
            nix::unistd::mkfifo(&m.join("fifo"), Mode::from_bits_truncate(0o600)),
            Errno::EEXIST,
            "mkfifo twice",
        )?;
        let listed: Vec<_> = fs::read_dir(m.path())?.filter_map(|e| e.ok()).collect();
        let fifo = listed
            .iter()
            .find(|e| e.file_name() == "fifo")
            .ok_or_else(|| anyhow::anyhow!("fifo not listed"))?;
        assert!(fifo.file_type()?.is_fifo(), "readdir type of the FIFO");
    }
    let m = c.remount(m)?;
    {
        info!("--- after remount: xattrs and the FIFO are kept");
        let f = m.join("f");
        assert_eq!(get_xattr(&f, "user.bin")?, binary);
        assert_eq!(get_xattr(&f, "user.new")?, b"N");
        let mut names = list_xattr(&f)?;
        names.sort();
        assert_eq!(names, ["user.bin", "user.empty", "user.new"]);
        assert_eq!(get_xattr(&m.join("d"), "user.on-dir")?, b"dir value");
        assert!(fs::symlink_metadata(m.join("fifo"))?.file_type().is_fifo());
    }
    c.done();
    Ok(())
}
