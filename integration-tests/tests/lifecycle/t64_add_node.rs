//! Test (d) of issue [lifecycle]: a seventh storage server joins a running 6-server 4+2
//! cluster with `shoal node add`. Placement is recorded with each segment, so the files
//! written before read back byte-exact and nothing was moved onto the new server; once the
//! managers were restarted one at a time and the client remounted (processes read
//! cluster.toml when they start), new stripes use the new server.

use crate::{check_pattern, dir_bytes, write_pattern};
use anyhow::{ensure, Result};
use integration_tests::cluster::free_udp_range;
use integration_tests::TestCluster;
use std::ffi::OsString;
use std::time::Duration;
use tracing::info;

const FILES: u64 = 4;
const SIZE: usize = 16 << 20;

#[test]
fn t64_seventh_server_joins_old_data_stays_new_stripes_use_it() -> Result<()> {
    let c = TestCluster::init(6, 2, "4+2")?;
    c.start_all()?;
    c.wait_ready()?;
    let m = c.mount()?;
    for f in 0..FILES {
        write_pattern(&m.join(format!("old{f}")), f, SIZE)?;
    }

    let port = free_udp_range(1)?;
    let args: Vec<OsString> = vec![
        "node".into(),
        "add".into(),
        "--cluster".into(),
        c.dir().as_os_str().to_owned(),
        "--name".into(),
        "storage-7".into(),
        "--address".into(),
        format!("127.0.0.1:{port}").into(),
    ];
    let out = c.env().run(args, Duration::from_secs(30))?;
    ensure!(out.success(), "shoal node add failed: {out}");
    c.start("storage-7")?;
    let new_dir = c.fragment_dir("storage-7");
    ensure!(
        dir_bytes(&new_dir)? == 0,
        "the new server holds data before any writer knows it"
    );

    // Writers learn the new list when they start: managers one at a time, then the mount.
    for mgr in c.manager_names() {
        c.restart(&mgr)?;
        c.wait_ready()?;
    }
    let m = c.remount(m)?;
    for f in 0..FILES {
        check_pattern(&m.join(format!("old{f}")), f, SIZE)?;
    }
    let before = dir_bytes(&new_dir)?;
    for f in 0..FILES {
        write_pattern(&m.join(format!("new{f}")), 100 + f, SIZE)?;
    }
    let after = dir_bytes(&new_dir)?;
    info!(before, after, "bytes on storage-7");
    // 64 MiB of data as 4+2 stripes over 7 servers: about 6/7 x 1.5 x 64 / 6 = 13.7 MiB
    // land on each server; at least half of that on the new one.
    ensure!(
        after - before >= 6 << 20,
        "new stripes put only {} bytes on the new server",
        after - before
    );

    let m = c.remount(m)?;
    for f in 0..FILES {
        check_pattern(&m.join(format!("old{f}")), f, SIZE)?;
        check_pattern(&m.join(format!("new{f}")), 100 + f, SIZE)?;
    }
    m.unmount(Duration::from_secs(30))?;
    c.done();
    Ok(())
}
