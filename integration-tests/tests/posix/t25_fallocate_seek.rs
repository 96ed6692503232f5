//! lseek(2) SEEK_DATA / SEEK_HOLE answered from the extent map and this client's dirty
//! data, and fallocate(2): mode 0 and KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE; other modes
//! EOPNOTSUPP.

use crate::mounted_cluster;
use anyhow::{bail, Result};
use integration_tests::pattern;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use tracing::info;

/// lseek(fd, off, whence): the new offset, or the errno.
fn seek(f: &File, off: u64, whence: i32) -> std::result::Result<u64, i32> {
    let whence = if whence == libc::SEEK_DATA {
        nix::unistd::Whence::SeekData
    } else {
        nix::unistd::Whence::SeekHole
    };
    nix::unistd::lseek(f.as_raw_fd(), off as libc::off_t, whence)
        .map(|r| r as u64)
        .map_err(|e| e as i32)
}

/// What lseek must answer for a file of `size` bytes whose data is `spans` (byte model).
fn model_seek(
    spans: &[(u64, u64)],
    size: u64,
    off: u64,
    whence: i32,
) -> std::result::Result<u64, i32> {
    if off >= size {
        return Err(libc::ENXIO);
    }
    let covered = |x: u64| spans.iter().any(|(s, e)| *s <= x && x < *e);
    // Jump between span edges instead of walking every byte.
    let mut edges: Vec<u64> = spans.iter().flat_map(|(s, e)| [*s, *e]).collect();
    edges.push(off);
    edges.sort_unstable();
    edges.dedup();
    let want_data = whence == libc::SEEK_DATA;
    for x in edges.into_iter().filter(|x| *x >= off && *x < size) {
        if covered(x) == want_data {
            return Ok(x);
        }
    }
    if want_data {
        Err(libc::ENXIO)
    } else {
        Ok(size)
    }
}

/// Every SEEK_DATA/SEEK_HOLE answer at the span edges (and around them) matches the model.
fn check_seeks(f: &File, spans: &[(u64, u64)], size: u64, when: &str) -> Result<()> {
    let mut offs: Vec<u64> = vec![0, 1, size.saturating_sub(1), size, size + 4096];
    for (s, e) in spans {
        offs.extend([*s, s + 1, e - 1, *e, e + 1, s.saturating_sub(1)]);
    }
    for off in offs {
        for whence in [libc::SEEK_DATA, libc::SEEK_HOLE] {
            let got = seek(f, off, whence);
            let want = model_seek(spans, size, off, whence);
            if got != want {
                bail!(
                    "{when}: lseek({off}, {}) = {got:?}, want {want:?}",
                    if whence == libc::SEEK_DATA {
                        "SEEK_DATA"
                    } else {
                        "SEEK_HOLE"
                    }
                );
            }
        }
    }
    Ok(())
}

#[test]
fn t25_seek_data_and_hole() -> Result<()> {
    let (c, m) = mounted_cluster(&[])?;
    let p = m.join("holes");
    // Data at [0, 4096), [3 MiB, 3 MiB + 100) and [70 MiB, 70 MiB + 10) (another extent
    // window), holes between and a hole at the end.
    let spans: Vec<(u64, u64)> = vec![
        (0, 4096),
        (3 << 20, (3 << 20) + 100),
        (70 << 20, (70 << 20) + 10),
    ];
    let size = (80 << 20) + 7;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)?;
    {
        info!("--- written, not yet synced: answers come from the dirty data");
        for (i, (s, e)) in spans.iter().enumerate() {
            f.write_all_at(&pattern::bytes(i as u64, *s, (e - s) as usize), *s)?;
        }
        check_seeks(&f, &spans, (70 << 20) + 10, "dirty")?;
        info!("--- grown by truncate (which commits the data first)");
        f.set_len(size)?;
        check_seeks(&f, &spans, size, "grown")?;
    }
    {
        info!("--- after fsync: answers come from the extent map");
        f.sync_all()?;
        check_seeks(&f, &spans, size, "synced")?;
    }
    let mut all = spans.clone();
    {
        info!("--- a dirty write over a hole and one past a synced extent, mixed");
        f.write_all_at(b"0123456789", (3 << 20) + 100)?;
        f.write_all_at(b"xyz", 1 << 20)?;
        all.push(((3 << 20) + 100, (3 << 20) + 110));
        all.push((1 << 20, (1 << 20) + 3));
        check_seeks(&f, &all, size, "mixed")?;
        f.sync_all()?;
    }
    drop(f);
    {
        info!("--- a second mount sees the same data and holes");
        let m2 = c.mount()?;
        let f2 = File::open(m2.join("holes"))?;
        check_seeks(&f2, &all, size, "second mount")?;
    }
    let m = c.remount(m)?;
    {
        info!("--- after remount");
        let f = File::open(m.join("holes"))?;
        check_seeks(&f, &all, size, "remount")?;
        info!("--- an empty file: ENXIO for both");
        let e = File::create(m.join("empty"))?;
        assert_eq!(seek(&e, 0, libc::SEEK_DATA), Err(libc::ENXIO));
        assert_eq!(seek(&e, 0, libc::SEEK_HOLE), Err(libc::ENXIO));
    }
    c.done();
    Ok(())
}

/// fallocate(fd, mode, off, len): Ok or the errno.
fn falloc(f: &File, mode: i32, off: u64, len: u64) -> std::result::Result<(), i32> {
    let flags = nix::fcntl::FallocateFlags::from_bits_retain(mode);
    nix::fcntl::fallocate(f.as_raw_fd(), flags, off as libc::off_t, len as libc::off_t)
        .map_err(|e| e as i32)
}

#[test]
fn t26_fallocate_modes() -> Result<()> {
    let (c, m) = mounted_cluster(&[])?;
    let p = m.join("f");
    let len: usize = 3 << 20;
    let data = pattern::bytes(9, 0, len);
    let (hole_at, hole_len) = (1_000_000u64, 700_000u64);
    let mut want = data.clone();
    want[hole_at as usize..(hole_at + hole_len) as usize].fill(0);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)?;
    {
        info!("--- punch a hole in the middle of a written, not yet synced file");
        f.write_all_at(&data, 0)?;
        falloc(
            &f,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            hole_at,
            hole_len,
        )
        .map_err(|e| anyhow::anyhow!("punch: errno {e}"))?;
        assert_eq!(f.metadata()?.len(), len as u64, "KEEP_SIZE keeps the size");
        let mut got = vec![0xAAu8; len];
        f.read_exact_at(&mut got, 0)?;
        if let Some(at) = pattern::first_difference(&got, &want) {
            bail!("after the punch, byte {at} differs");
        }
        let spans = [(0, hole_at), (hole_at + hole_len, len as u64)];
        check_seeks(&f, &spans, len as u64, "punched")?;
        f.sync_all()?;
    }
    {
        info!("--- a second mount reads the hole as zeros, the rest intact");
        let m2 = c.mount()?;
        let got = std::fs::read(m2.join("f"))?;
        if let Some(at) = pattern::first_difference(&got, &want) {
            bail!("second mount: byte {at} differs");
        }
        info!("--- punch from the second mount over the first's unsynced write");
        // The write returned before the punch started, so the punch wins where they
        // overlap: the manager has the first mount write its data before punching.
        f.write_all_at(&[7u8; 200], 4000)?;
        want[4000..4200].fill(7);
        let f2 = OpenOptions::new()
            .read(true)
            .write(true)
            .open(m2.join("f"))?;
        falloc(
            &f2,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            4096,
        )
        .map_err(|e| anyhow::anyhow!("punch from mount 2: errno {e}"))?;
        want[..4096].fill(0);
        let mut got = vec![0xAAu8; len];
        f.read_exact_at(&mut got, 0)?;
        if let Some(at) = pattern::first_difference(&got, &want) {
            bail!("first mount after the second punched: byte {at} differs");
        }
    }
    {
        info!("--- ZERO_RANGE with KEEP_SIZE inside, then without it past the end");
        falloc(
            &f,
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            2 << 20,
            10,
        )
        .map_err(|e| anyhow::anyhow!("zero range: errno {e}"))?;
        want[2 << 20..(2 << 20) + 10].fill(0);
        assert_eq!(f.metadata()?.len(), len as u64);
        let tail_at = len as u64 - 100;
        falloc(&f, libc::FALLOC_FL_ZERO_RANGE, tail_at, 4196)
            .map_err(|e| anyhow::anyhow!("zero range growing: errno {e}"))?;
        want[tail_at as usize..].fill(0);
        want.resize(len + 4096, 0);
        assert_eq!(
            f.metadata()?.len(),
            len as u64 + 4096,
            "ZERO_RANGE grows the size"
        );
        let mut got = vec![0xAAu8; want.len()];
        f.read_exact_at(&mut got, 0)?;
        if let Some(at) = pattern::first_difference(&got, &want) {
            bail!("after ZERO_RANGE: byte {at} differs");
        }
    }
    {
        info!("--- mode 0 grows the size (a hole), KEEP_SIZE alone changes nothing");
        let g = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(m.join("g"))?;
        g.write_all_at(b"abc", 0)?;
        falloc(&g, 0, 0, 1 << 20).map_err(|e| anyhow::anyhow!("mode 0: errno {e}"))?;
        assert_eq!(g.metadata()?.len(), 1 << 20);
        falloc(&g, 0, 10, 20).map_err(|e| anyhow::anyhow!("mode 0 inside: errno {e}"))?;
        assert_eq!(g.metadata()?.len(), 1 << 20);
        falloc(&g, libc::FALLOC_FL_KEEP_SIZE, 0, 5 << 20)
            .map_err(|e| anyhow::anyhow!("KEEP_SIZE: errno {e}"))?;
        assert_eq!(g.metadata()?.len(), 1 << 20);
        let d = std::fs::read(m.join("g"))?;
        assert_eq!(&d[..3], b"abc");
        assert!(d[3..].iter().all(|b| *b == 0));
        check_seeks(&g, &[(0, 3)], 1 << 20, "mode 0")?;
        info!("--- other modes: EOPNOTSUPP");
        for mode in [
            libc::FALLOC_FL_COLLAPSE_RANGE,
            libc::FALLOC_FL_INSERT_RANGE,
            libc::FALLOC_FL_UNSHARE_RANGE,
        ] {
            assert_eq!(
                falloc(&g, mode, 0, 4096),
                Err(libc::EOPNOTSUPP),
                "mode {mode:#x}"
            );
        }
        g.sync_all()?;
    }
    f.sync_all()?;
    drop(f);
    let m = c.remount(m)?;
    {
        info!("--- after remount: holes, zeros and sizes stay");
        let got = std::fs::read(m.join("f"))?;
        if let Some(at) = pattern::first_difference(&got, &want) {
            bail!("after remount: byte {at} differs");
        }
        assert_eq!(std::fs::metadata(m.join("g"))?.len(), 1 << 20);
    }
    c.done();
    Ok(())
}
