//! `shoal node drain` of a storage server that is already dead, through real processes: on
//! 7 storage servers with 4+2, storage-3 is killed -9 and then drained. Its fragments
//! cannot be copied, so the drain reconstructs them from parity onto the other servers;
//! afterwards `shoal rebuild` counts no degraded stripe, and with two more servers stopped
//! (three of seven gone) every file still reads back byte-exact from a fresh mount.

use crate::{check_pattern, write_pattern};
use anyhow::{ensure, Result};
use integration_tests::TestCluster;
use std::ffi::OsString;
use std::time::Duration;
use tracing::info;

const FILES: u64 = 4;
const SIZE: usize = 12 << 20;

#[test]
fn t67_drain_of_a_dead_server_reconstructs_its_fragments() -> Result<()> {
    let c = TestCluster::init(7, 2, "4+2")?;
    c.start_all()?;
    c.wait_ready()?;
    let m = c.mount()?;
    for f in 0..FILES {
        write_pattern(&m.join(format!("f{f}")), 40 + f, SIZE)?;
    }
    m.unmount(Duration::from_secs(60))?;
    c.kill9("storage-3")?;

    let args: Vec<OsString> = vec![
        "node".into(),
        "drain".into(),
        "--cluster".into(),
        c.dir().as_os_str().to_owned(),
        "storage-3".into(),
    ];
    let out = c.env().run(args, Duration::from_secs(180))?;
    info!("shoal node drain:\n{}", out.stdout);
    ensure!(
        out.success(),
        "shoal node drain of a dead server failed: {out}"
    );
    ensure!(
        out.stdout.contains("storage-3 is down")
            && out.stdout.contains("every stripe has all its fragments"),
        "no dead-server drain lines:\n{out}"
    );
    let args: Vec<OsString> = vec![
        "rebuild".into(),
        "--cluster".into(),
        c.dir().as_os_str().to_owned(),
    ];
    let st = c.env().run(args, Duration::from_secs(60))?;
    ensure!(
        st.stdout.contains(" 0 degraded"),
        "stripes still degraded after draining the dead server: {st}"
    );

    info!("--- stop two more servers, read everything back");
    c.kill9("storage-1")?;
    c.kill9("storage-6")?;
    let m = c.mount()?;
    for f in 0..FILES {
        check_pattern(&m.join(format!("f{f}")), 40 + f, SIZE)?;
    }
    m.unmount(Duration::from_secs(60))?;
    c.done();
    Ok(())
}
