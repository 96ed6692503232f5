//! A client certificate from another cluster's CA: `status` and `mount` fail within a bound
//! with an error that names the certificate, and never mount.

use anyhow::{ensure, Result};
use integration_tests::cluster::free_udp_range;
use integration_tests::{is_mounted, TestCluster};
use std::ffi::OsString;
use std::time::Duration;
use tracing::info;

const BOUND: Duration = Duration::from_secs(60);

#[test]
fn t30_foreign_client_certificate_is_refused() -> Result<()> {
    let c = TestCluster::init(6, 2, "4+2")?;
    c.start_all()?;
    let env = c.env();
    {
        info!("--- the cluster works with its own certificate");
        let m = c.mount()?;
        std::fs::write(m.join("ok"), b"ok")?;
        m.unmount(Duration::from_secs(30))?;
    }
    {
        info!("--- a second cluster (another CA) in another dir; its client.* copied over ours");
        let other = env.path().join("other");
        let port = free_udp_range(8)?.to_string();
        let args: Vec<OsString> = vec![
            "init".into(),
            "--cluster".into(),
            other.clone().into(),
            "--base-port".into(),
            port.into(),
        ];
        let out = env.run(args, Duration::from_secs(60))?;
        ensure!(out.success(), "init of the second cluster: {out}");
        let mut copied = 0;
        for e in std::fs::read_dir(other.join("tls"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("client.") {
                std::fs::copy(e.path(), c.dir().join("tls").join(&name))?;
                copied += 1;
            }
        }
        ensure!(
            copied >= 2,
            "expected client cert and key in the second cluster, copied {copied}"
        );
    }
    // Both checks run; the test reports every problem at the end.
    let mut problems = Vec::new();
    {
        info!("--- status: non-zero, names the certificate, within {BOUND:?}");
        let args: Vec<OsString> = vec!["status".into(), "--cluster".into(), c.dir().into()];
        let out = env.run(args, BOUND)?;
        if out.success() {
            problems.push(format!(
                "status with a foreign certificate succeeded: {out}"
            ));
        } else if !out.text().to_lowercase().contains("certificate") {
            problems.push(format!(
                "status error does not mention the certificate: {out}"
            ));
        }
    }
    {
        info!("--- mount: non-zero, names the certificate, within {BOUND:?}, nothing mounted");
        let mnt = env.path().join("mnt-foreign");
        std::fs::create_dir(&mnt)?;
        let args: Vec<OsString> = vec![
            "mount".into(),
            "--cluster".into(),
            c.dir().into(),
            mnt.clone().into(),
        ];
        let out = env.run(args, BOUND);
        if is_mounted(&mnt) {
            integration_tests::mount::lazy_unmount(&mnt);
            problems
                .push("a client with a foreign certificate mounted the file system".to_string());
        }
        match out {
            Err(e) => problems.push(format!("mount with a foreign certificate: {e:#}")),
            Ok(out) if out.success() => {
                problems.push(format!("mount with a foreign certificate succeeded: {out}"))
            }
            Ok(out) if !out.text().to_lowercase().contains("certificate") => problems.push(
                format!("mount error does not mention the certificate: {out}"),
            ),
            Ok(_) => {}
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n\n"));
    c.done();
    Ok(())
}
