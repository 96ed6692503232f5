//! Test (e) of issue [lifecycle]: a cluster of six storage servers with a small configured
//! capacity (96 MiB each, 32 MiB of it kept in reserve) is filled through a real mount
//! until the writer gets ENOSPC. `df` on the mount reports what 4+2 stripes can really
//! take (not the host disk six times over); the data fsynced before the cluster filled up
//! reads back byte-exact; unlinking works on the full cluster (the managers' log writes use
//! the reserve); after `shoal clean --now` a new file is written and fsynced, and everything
//! reads back from a fresh mount.

use crate::{check_pattern, write_pattern};
use anyhow::{bail, ensure, Context, Result};
use integration_tests::{pattern, TestCluster};
use proto::config::{ClusterConfig, CONFIG_FILE};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Write;
use std::time::{Duration, Instant};
use tracing::info;

const MIB: u64 = 1 << 20;
/// Per server: 96 MiB capacity, 32 MiB reserve, so 64 MiB of client fragments each and
/// 6 x 64 x 4/6 = 256 MiB of file data in all.
const CAPACITY: &str = "96MiB";
const RESERVE: &str = "32MiB";
const WRITABLE: u64 = 256 * MIB;
const FIRST: usize = 48 << 20;
const AFTER: usize = 24 << 20;

fn is_enospc(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC)
}

#[test]
fn t63_fill_to_enospc_delete_clean_write_again() -> Result<()> {
    let c = TestCluster::init(6, 2, "4+2")?;
    let mut cfg = ClusterConfig::load(c.dir()).context("load cluster.toml")?;
    for n in cfg.file.nodes.iter_mut() {
        if n.name.starts_with("storage-") {
            n.capacity = Some(CAPACITY.into());
        }
    }
    cfg.file.storage.reserve = Some(RESERVE.into());
    // This test cleans by command; the background cleaner would race the measurements.
    cfg.file.manager.clean_below_free_pct = 0;
    std::fs::write(c.dir().join(CONFIG_FILE), ClusterConfig::render(&cfg.file))?;
    c.start_all()?;
    c.wait_ready()?;
    let m = c.mount()?;

    // Honest df: the configured capacities less the reserve, times k/(k+m).
    let st = nix::sys::statvfs::statvfs(m.path())?;
    let total = st.blocks() * st.fragment_size();
    info!(total, "statfs before writing");
    ensure!(
        (WRITABLE - 16 * MIB..=WRITABLE).contains(&total),
        "statfs reports {total} bytes, expected about {WRITABLE} (6 x (96-32) MiB x 4/6)"
    );

    write_pattern(&m.join("first"), 1, FIRST)?;

    // Fill: 1 MiB writes, fsync every 8 MiB, until ENOSPC (from write, fsync or close).
    let filler = m.join("filler");
    let mut f = File::create(&filler)?;
    let (mut written, mut synced) = (0u64, 0u64);
    let started = Instant::now();
    let err = loop {
        ensure!(
            written < 2 * WRITABLE,
            "wrote {written} bytes into a cluster that takes {WRITABLE} without ENOSPC"
        );
        ensure!(
            started.elapsed() < Duration::from_secs(40),
            "no ENOSPC after {written} bytes"
        );
        if let Err(e) = f.write_all(&pattern::bytes(2, written, MIB as usize)) {
            break e;
        }
        written += MIB;
        if written % (8 * MIB) == 0 {
            if let Err(e) = f.sync_all() {
                break e;
            }
            synced = written;
        }
    };
    ensure!(
        is_enospc(&err),
        "the full cluster failed with {err}, not ENOSPC"
    );
    info!(written, synced, "ENOSPC after");
    ensure!(
        synced + FIRST as u64 >= WRITABLE / 2,
        "only {synced} bytes were fsynced before ENOSPC: the cluster filled far too early"
    );
    // Later fsyncs keep saying so (the unwritten tail is not silently dropped).
    match f.sync_all() {
        Err(e) if is_enospc(&e) => {}
        Err(e) => bail!("fsync on the full cluster failed with {e}, not ENOSPC"),
        Ok(()) => info!("the tail fit after all (a flush landed on freed reserve)"),
    }
    drop(f);
    let st = nix::sys::statvfs::statvfs(m.path())?;
    let free = st.blocks_available() * st.fragment_size();
    ensure!(
        free < 32 * MIB,
        "statfs says {free} bytes free on a full cluster"
    );

    // Nothing acknowledged is lost.
    check_pattern(&m.join("first"), 1, FIRST)?;
    {
        use std::os::unix::fs::FileExt;
        let h = File::open(&filler)?;
        let mut buf = vec![0u8; MIB as usize];
        for off in (0..synced).step_by(MIB as usize) {
            h.read_exact_at(&mut buf, off)?;
            ensure!(
                buf == pattern::bytes(2, off, MIB as usize),
                "fsynced filler bytes at {off} differ"
            );
        }
    }

    // A full cluster deletes its way out.
    fs::remove_file(&filler).context("unlink on the full cluster")?;
    let args: Vec<OsString> = vec![
        "clean".into(),
        "--cluster".into(),
        c.dir().as_os_str().to_owned(),
        "--now".into(),
    ];
    let out = c.env().run(args, Duration::from_secs(60))?;
    ensure!(out.success(), "shoal clean failed: {out}");

    // Write again: the reclaimer may still be deleting, so a few bounded tries.
    let again = m.join("again");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match write_pattern(&again, 3, AFTER) {
            Ok(()) => break,
            Err(e)
                if Instant::now() < deadline
                    && e.downcast_ref::<std::io::Error>().is_some_and(is_enospc) =>
            {
                info!("still full after cleaning: {e}; retrying");
                let _ = fs::remove_file(&again);
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(e.context("writing after delete and clean")),
        }
    }
    // The filler's segments are all given back (the reclaimer runs every 2 s).
    let want = WRITABLE - (FIRST + AFTER) as u64 - 32 * MIB;
    let free = || -> u64 {
        nix::sys::statvfs::statvfs(m.path())
            .map(|st| st.blocks_available() * st.fragment_size())
            .unwrap_or(0)
    };
    c.wait_until(
        Duration::from_secs(30),
        "statfs shows the filler's space free again",
        || free() >= want,
    )?;
    info!(free = free(), "statfs after cleaning and writing again");

    let m = c.remount(m)?;
    check_pattern(&m.join("first"), 1, FIRST)?;
    check_pattern(&m.join("again"), 3, AFTER)?;
    m.unmount(Duration::from_secs(30))?;
    c.done();
    Ok(())
}
