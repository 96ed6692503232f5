//! `shoal mount --http ADDR`: a client's own metrics endpoint (FUSE operations counted
//! there); a non-loopback address is refused unless `--http-remote`.

use crate::expect_clear_error;
use anyhow::{ensure, Result};
use integration_tests::scrape::{free_tcp_addr, get, sum};
use integration_tests::{wait_for, TestCluster};
use std::time::Duration;
use tracing::info;

#[test]
fn t42_mount_serves_its_metrics_on_loopback_only_unless_asked() -> Result<()> {
    let c = TestCluster::init(3, 1, "2+1")?;
    c.start_all()?;
    c.wait_ready()?;
    {
        info!("--- --http on 0.0.0.0 without --http-remote: refused before mounting");
        let mnt = c.env().path().join("refused");
        std::fs::create_dir(&mnt)?;
        let out = c.env().run(
            [
                "mount".as_ref(),
                "--cluster".as_ref(),
                c.dir().as_os_str(),
                "--http".as_ref(),
                "0.0.0.0:1".as_ref(),
                mnt.as_os_str(),
            ],
            Duration::from_secs(30),
        )?;
        expect_clear_error(&out, "mount --http 0.0.0.0", &["loopback", "--http-remote"])?;
    }
    {
        info!("--- --http 127.0.0.1:PORT: 5 mkdirs counted by the mount's endpoint");
        let addr = free_tcp_addr()?;
        let m = c.mount_with(&["--http", &addr.to_string()])?;
        for i in 0..5 {
            std::fs::create_dir(m.join(format!("d{i}")))?;
        }
        let mkdirs = wait_for(Duration::from_secs(10), "5 mkdirs counted", || {
            let t = get(addr, "/metrics", Duration::from_secs(10))?;
            let n = sum(&t, "shoal_fuse_ops_total", &[("op", "mkdir")]);
            ensure!(n >= 5.0, "{n} mkdirs");
            Ok(n)
        })?;
        ensure!(mkdirs == 5.0, "{mkdirs} mkdirs counted for 5");
        let t = get(addr, "/metrics", Duration::from_secs(10))?;
        ensure!(
            t.contains("shoal_worker_busy{node=\"client\",worker=\"flusher\"}"),
            "no client worker gauge:\n{t}"
        );
        m.unmount(Duration::from_secs(30))?;
    }
    c.done();
    Ok(())
}
