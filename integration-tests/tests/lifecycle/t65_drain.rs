//! `shoal node drain` through real processes: on 7 storage servers with 4+2, storage-3 is
//! drained while the cluster runs. Afterwards it holds no fragment, new files put nothing
//! on it, and with it and two more servers stopped (three of seven gone) every file still
//! reads back byte-exact from a fresh mount: its fragments really are on the others.

use crate::{check_pattern, dir_bytes, write_pattern};
use anyhow::{ensure, Result};
use integration_tests::TestCluster;
use std::ffi::OsString;
use std::time::Duration;
use tracing::info;

const FILES: u64 = 4;
const SIZE: usize = 12 << 20;

#[test]
fn t65_drained_server_holds_nothing_and_data_survives_without_it() -> Result<()> {
    let c = TestCluster::init(7, 2, "4+2")?;
    c.start_all()?;
    c.wait_ready()?;
    let m = c.mount()?;
    for f in 0..FILES {
        write_pattern(&m.join(format!("f{f}")), f, SIZE)?;
    }
    let drained = c.fragment_dir("storage-3");
    ensure!(dir_bytes(&drained)? > 0, "storage-3 holds nothing to drain");

    let args: Vec<OsString> = vec![
        "node".into(),
        "drain".into(),
        "--cluster".into(),
        c.dir().as_os_str().to_owned(),
        "storage-3".into(),
    ];
    let out = c.env().run(args, Duration::from_secs(120))?;
    info!("shoal node drain:\n{}", out.stdout);
    ensure!(out.success(), "shoal node drain failed: {out}");
    ensure!(
        out.stdout.contains("storage-3 holds nothing"),
        "no completion line:\n{out}"
    );
    ensure!(
        dir_bytes(&drained)? == 0,
        "storage-3 still holds {} bytes",
        dir_bytes(&drained)?
    );

    let st = c.status()?;
    ensure!(
        st.stdout.contains("draining: takes no new fragments"),
        "shoal status does not show the drain: {st}"
    );

    // New stripes go around the draining server.
    write_pattern(&m.join("after"), 99, SIZE)?;
    ensure!(
        dir_bytes(&drained)? == 0,
        "a new file put {} bytes on the drained server",
        dir_bytes(&drained)?
    );
    m.unmount(Duration::from_secs(30))?;

    // Three of seven servers gone: only a complete drain leaves every stripe readable.
    for s in ["storage-3", "storage-1", "storage-2"] {
        c.stop(s)?;
    }
    let m = c.mount()?;
    for f in 0..FILES {
        check_pattern(&m.join(format!("f{f}")), f, SIZE)?;
    }
    check_pattern(&m.join("after"), 99, SIZE)?;
    m.unmount(Duration::from_secs(30))?;
    c.done();
    Ok(())
}
