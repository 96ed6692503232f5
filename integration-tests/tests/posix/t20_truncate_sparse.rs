//! truncate(2) and ftruncate(2): growing makes a hole of zeros, shrinking drops data for
//! good; a sparse file past 4 GiB.

use crate::mounted_cluster;
use anyhow::Result;
use integration_tests::pattern;
use integration_tests::sys::expect_errno;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use tracing::info;

fn truncate(p: &std::path::Path, len: u64) -> std::io::Result<()> {
    nix::unistd::truncate(p, len as i64).map_err(|e| std::io::Error::from_raw_os_error(e as i32))
}

#[test]
fn t20_truncate_and_ftruncate() -> Result<()> {
    let (c, m) = mounted_cluster(&[])?;
    let p = m.join("t");
    {
        info!("--- truncate(2) grows a file with zeros");
        fs::write(&p, b"abc")?;
        truncate(&p, 100_000)?;
        let d = fs::read(&p)?;
        assert_eq!(d.len(), 100_000);
        assert_eq!(&d[..3], b"abc");
        assert!(d[3..].iter().all(|b| *b == 0), "grown part must be zeros");
    }
    {
        info!("--- shrink, then grow again: the cut bytes do not come back");
        truncate(&p, 2)?;
        assert_eq!(fs::read(&p)?, b"ab");
        truncate(&p, 10)?;
        assert_eq!(fs::read(&p)?, b"ab\0\0\0\0\0\0\0\0");
    }
    {
        info!("--- ftruncate through an open descriptor, shrink and grow of a 2 MiB file");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(m.join("big"))?;
        f.write_all_at(&pattern::bytes(5, 0, 2 << 20), 0)?;
        f.sync_all()?;
        f.set_len(1_048_581)?;
        assert_eq!(f.metadata()?.len(), 1_048_581);
        f.write_all_at(b"tail", 3 << 20)?;
        let d = fs::read(m.join("big"))?;
        assert_eq!(d.len(), (3 << 20) + 4);
        pattern::check(5, 0, &d[..1_048_581]).map_err(anyhow::Error::msg)?;
        assert!(
            d[1_048_581..3 << 20].iter().all(|b| *b == 0),
            "hole after shrink+extend must be zeros"
        );
        assert_eq!(&d[3 << 20..], b"tail");
        f.set_len(0)?;
        assert_eq!(fs::metadata(m.join("big"))?.len(), 0);
        let mut buf = [1u8; 8];
        assert_eq!(f.read_at(&mut buf, 0)?, 0);
    }
    {
        info!("--- truncate errors: ENOENT, EISDIR");
        expect_errno(
            truncate(&m.join("missing"), 1),
            libc::ENOENT,
            "truncate a missing file",
        )?;
        fs::create_dir(m.join("dir"))?;
        expect_errno(truncate(&m.join("dir"), 1), libc::EISDIR, "truncate a dir")?;
    }
    {
        info!("--- truncated sizes survive a remount");
        File::open(&p)?.sync_all()?;
    }
    let m = c.remount(m)?;
    {
        assert_eq!(fs::read(m.join("t"))?, b"ab\0\0\0\0\0\0\0\0");
        assert_eq!(fs::metadata(m.join("big"))?.len(), 0);
    }
    c.done();
    Ok(())
}

#[test]
fn t21_sparse_file_beyond_4gib() -> Result<()> {
    let (c, m) = mounted_cluster(&[])?;
    let p = m.join("sparse");
    let at: u64 = 5 << 30;
    {
        info!("--- one byte written at 5 GiB");
        let f = File::create(&p)?;
        f.write_all_at(b"Z", at)?;
        f.sync_all()?;
        let md = fs::metadata(&p)?;
        assert_eq!(md.len(), at + 1);
        assert!(
            md.blocks() * 512 < 64 << 20,
            "a sparse file must not store its holes ({} blocks)",
            md.blocks()
        );
    }
    {
        info!("--- holes read as zeros, the byte reads back, past the end reads nothing");
        let f = File::open(&p)?;
        for off in [0u64, 1 << 20, (4 << 30) - 3, 4 << 30, at - 4096] {
            let mut buf = vec![0xAAu8; 4096];
            f.read_exact_at(&mut buf, off)?;
            assert!(buf.iter().all(|b| *b == 0), "hole at {off} is not zeros");
        }
        let mut buf = [0u8; 2];
        assert_eq!(f.read_at(&mut buf, at - 1)?, 2);
        assert_eq!(buf, [0, b'Z']);
        assert_eq!(f.read_at(&mut buf, at + 1)?, 0);
    }
    {
        info!("--- a write just below 4 GiB and one across it");
        let f = OpenOptions::new().write(true).open(&p)?;
        f.write_all_at(b"low", (4 << 30) - 3)?;
        f.write_all_at(b"across", (4 << 30) - 2)?;
        f.sync_all()?;
    }
    let m = c.remount(m)?;
    {
        info!("--- after remount: size and bytes");
        let f = File::open(m.join("sparse"))?;
        assert_eq!(f.metadata()?.len(), at + 1);
        let mut buf = [0u8; 8];
        f.read_exact_at(&mut buf, (4 << 30) - 4)?;
        assert_eq!(&buf, b"\0lacross");
        let mut one = [0u8; 1];
        f.read_exact_at(&mut one, at)?;
        assert_eq!(&one, b"Z");
    }
    c.done();
    Ok(())
}
