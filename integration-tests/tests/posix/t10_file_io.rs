//! Create, open, read, write, append, O_TRUNC, fsync, and the errno of failing opens.

use crate::mounted_cluster;
use anyhow::Result;
use integration_tests::pattern;
use integration_tests::sys::expect_errno;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use tracing::info;

#[test]
fn t10_create_read_write_append() -> Result<()> {
    let (c, m) = mounted_cluster(&[])?;
    let p = m.join("hello.txt");
    {
        info!("--- create, write, read back");
        fs::write(&p, b"hello world")?;
        assert_eq!(fs::read(&p)?, b"hello world");
        let md = fs::metadata(&p)?;
        assert!(md.is_file());
        assert_eq!(md.len(), 11);
    }
    {
        info!("--- pwrite in the middle, pread ranges");
        let f = OpenOptions::new().read(true).write(true).open(&p)?;
        f.write_all_at(b"WORLD", 6)?;
        let mut buf = [0u8; 5];
        f.read_exact_at(&mut buf, 6)?;
        assert_eq!(&buf, b"WORLD");
        let mut short = Vec::new();
        let n = File::open(&p)?.take(4).read_to_end(&mut short)?;
        assert_eq!((n, short.as_slice()), (4, &b"hell"[..]));
        assert_eq!(fs::read(&p)?, b"hello WORLD");
    }
    {
        info!("--- O_APPEND writes go to the end, from two handles");
        let mut a = OpenOptions::new().append(true).open(&p)?;
        let mut b = OpenOptions::new().append(true).open(&p)?;
        a.write_all(b"!!")?;
        b.write_all(b"??")?;
        a.write_all(b"..")?;
        drop((a, b));
        assert_eq!(fs::read(&p)?, b"hello WORLD!!??..");
    }
    {
        info!("--- a 3 MiB + 17 byte file written in pieces, fsynced, read back whole and at odd offsets");
        let big = m.join("big.bin");
        let len = 3 * 1024 * 1024 + 17;
        let mut f = File::create(&big)?;
        let mut off = 0usize;
        while off < len {
            let n = (len - off).min(700_001);
            f.write_all(&pattern::bytes(11, off as u64, n))?;
            off += n;
        }
        f.sync_all()?;
        drop(f);
        let data = fs::read(&big)?;
        assert_eq!(data.len(), len);
        pattern::check(11, 0, &data).map_err(anyhow::Error::msg)?;
        let f = File::open(&big)?;
        for at in [0u64, 4095, 4096, 1_048_570, 2_097_151, len as u64 - 10] {
            let mut buf = vec![0u8; 10];
            f.read_exact_at(&mut buf, at)?;
            pattern::check(11, at, &buf).map_err(anyhow::Error::msg)?;
        }
        let mut buf = vec![0u8; 100];
        assert_eq!(
            f.read_at(&mut buf, len as u64 - 10)?,
            10,
            "short read at the end"
        );
        assert_eq!(f.read_at(&mut buf, len as u64 + 5)?, 0, "read past the end");
    }
    {
        info!("--- errno of failing opens: EEXIST, ENOENT, ENOTDIR, EISDIR");
        expect_errno(
            OpenOptions::new().write(true).create_new(true).open(&p),
            libc::EEXIST,
            "O_CREAT|O_EXCL on a file",
        )?;
        expect_errno(
            File::open(m.join("missing")),
            libc::ENOENT,
            "open a missing file",
        )?;
        expect_errno(
            File::create(m.join("nodir/x")),
            libc::ENOENT,
            "create in a missing dir",
        )?;
        expect_errno(
            File::open(m.join("hello.txt/x")),
            libc::ENOTDIR,
            "open through a file",
        )?;
        fs::create_dir(m.join("d"))?;
        expect_errno(
            OpenOptions::new().write(true).open(m.join("d")),
            libc::EISDIR,
            "open a dir for writing",
        )?;
        expect_errno(fs::read(m.join("d")), libc::EISDIR, "read a dir")?;
        expect_errno(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(m.join("d")),
            libc::EEXIST,
            "O_EXCL on a dir",
        )?;
    }
    {
        info!("--- O_TRUNC empties a file");
        let f = OpenOptions::new().write(true).truncate(true).open(&p)?;
        assert_eq!(f.metadata()?.len(), 0);
        drop(f);
        assert_eq!(fs::read(&p)?, b"");
    }
    {
        info!("--- fsync/fdatasync, then the data is there after a remount");
        let mut f = File::create(m.join("durable"))?;
        f.write_all(b"first")?;
        f.sync_data()?;
        f.write_all(b" second")?;
        f.sync_all()?;
        File::open(m.path())?.sync_all()?;
    }
    let m = c.remount(m)?;
    {
        info!("--- after remount: contents as written");
        assert_eq!(fs::read(m.join("durable"))?, b"first second");
        assert_eq!(fs::read(m.join("hello.txt"))?, b"");
        let data = fs::read(m.join("big.bin"))?;
        pattern::check(11, 0, &data).map_err(anyhow::Error::msg)?;
    }
    {
        info!("--- ioctls (a terminal probe, as Python's open() does): ENOTTY, no log noise");
        let f = File::open(m.join("durable"))?;
        for _ in 0..20 {
            let r = nix::sys::termios::tcgetattr(&f);
            assert_eq!(r.err(), Some(nix::errno::Errno::ENOTTY));
        }
        let log = std::fs::read_to_string(c.env().log_path(m.name()))?;
        assert!(
            !log.contains("ioctl"),
            "the mount logged ioctls:\n{}",
            log.lines()
                .filter(|l| l.contains("ioctl"))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    c.done();
    Ok(())
}
