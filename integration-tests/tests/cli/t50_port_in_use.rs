//! A node whose UDP port is taken fails fast with a clear error instead of hanging.

use anyhow::{ensure, Result};
use integration_tests::cluster::free_udp_range;
use integration_tests::TestEnv;
use std::ffi::OsString;
use std::net::UdpSocket;
use std::time::Duration;
use tracing::info;

#[test]
fn t50_port_in_use_is_a_clear_error() -> Result<()> {
    let env = TestEnv::new()?;
    let dir = env.path().join("c");
    let base = free_udp_range(8)?;
    let _taken = UdpSocket::bind(("127.0.0.1", base))?;
    {
        info!("--- init a cluster whose storage-1 port ({base}) is held by another socket");
        let args: Vec<OsString> = vec![
            "init".into(),
            "--cluster".into(),
            dir.clone().into(),
            "--base-port".into(),
            base.to_string().into(),
        ];
        let out = env.run(args, Duration::from_secs(30))?;
        ensure!(out.success(), "init: {out}");
    }
    {
        info!("--- node run storage-1: exits non-zero within 30 s naming the address or 'in use'");
        let args: Vec<OsString> = vec![
            "node".into(),
            "run".into(),
            "--cluster".into(),
            dir.clone().into(),
            "--node".into(),
            "storage-1".into(),
        ];
        let out = env.run(args, Duration::from_secs(30))?;
        ensure!(!out.success(), "node run on a taken port succeeded: {out}");
        let text = out.text().to_lowercase();
        ensure!(
            text.contains("in use") || text.contains(&base.to_string()),
            "the error names neither the port nor 'in use': {out}"
        );
        ensure!(!text.contains("panicked"), "panicked: {out}");
    }
    env.done();
    Ok(())
}
