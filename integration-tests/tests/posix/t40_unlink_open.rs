//! Unlink of a file that is still open: the descriptor keeps working, the name is gone,
//! fstat shows st_nlink 0.

use crate::mounted_cluster;
use anyhow::Result;
use integration_tests::pattern;
use integration_tests::sys::expect_errno;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use tracing::info;

#[test]
fn t40_unlink_while_open() -> Result<()> {
    let (c, m) = mounted_cluster(&[])?;
    let p = m.join("victim");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&p)?;
    {
        info!("--- write, fsync, unlink while open");
        f.write_all(b"before unlink;")?;
        f.sync_all()?;
        fs::remove_file(&p)?;
    }
    {
        info!("--- the name is gone: not listed, stat ENOENT");
        let listed: Vec<_> = fs::read_dir(m.path())?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert!(listed.is_empty(), "unlinked file still listed: {listed:?}");
        expect_errno(fs::metadata(&p), libc::ENOENT, "stat an unlinked name")?;
    }
    {
        info!("--- the descriptor still reads and writes; fstat nlink 0");
        f.write_all(b" after unlink, a larger piece:")?;
        f.write_all(&pattern::bytes(3, 0, 300_000))?;
        f.sync_all()?;
        let md = f.metadata()?;
        assert_eq!(md.nlink(), 0, "fstat of an unlinked open file");
        assert_eq!(md.len(), 14 + 30 + 300_000);
        let mut head = [0u8; 44];
        f.read_exact_at(&mut head, 0)?;
        assert_eq!(&head, b"before unlink; after unlink, a larger piece:");
        f.seek(SeekFrom::Start(44))?;
        let mut rest = Vec::new();
        f.read_to_end(&mut rest)?;
        pattern::check(3, 0, &rest).map_err(anyhow::Error::msg)?;
    }
    {
        info!("--- a new file with the same name is a different, empty file");
        fs::write(&p, b"new")?;
        assert_eq!(fs::read(&p)?, b"new");
        let mut head = [0u8; 6];
        f.read_exact_at(&mut head, 0)?;
        assert_eq!(
            &head, b"before",
            "old descriptor must still see the old file"
        );
        assert_ne!(fs::metadata(&p)?.ino(), f.metadata()?.ino());
    }
    {
        info!("--- close the last descriptor; an unlinked file read by two descriptors");
        drop(f);
        let q = m.join("two");
        fs::write(&q, b"shared")?;
        let a = File::open(&q)?;
        let b = File::open(&q)?;
        fs::remove_file(&q)?;
        drop(a);
        let mut s = String::new();
        (&b).read_to_string(&mut s)?;
        assert_eq!(s, "shared");
        assert_eq!(b.metadata()?.nlink(), 0);
    }
    {
        info!("--- unlink one of two hard links while open: nlink 1");
        fs::write(m.join("l1"), b"x")?;
        fs::hard_link(m.join("l1"), m.join("l2"))?;
        let f = File::open(m.join("l1"))?;
        fs::remove_file(m.join("l1"))?;
        assert_eq!(f.metadata()?.nlink(), 1);
        assert_eq!(fs::read(m.join("l2"))?, b"x");
    }
    let m = c.remount(m)?;
    {
        info!("--- after remount: only the new file and l2 remain");
        let mut listed: Vec<String> = fs::read_dir(m.path())?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        listed.sort();
        assert_eq!(listed, vec!["l2", "victim"]);
        assert_eq!(fs::read(m.join("victim"))?, b"new");
    }
    c.done();
    Ok(())
}
