//! `shoal init` writes a cluster and refuses to overwrite one; bad arguments give one clear
//! error line and a non-zero exit.

use crate::expect_clear_error;
use anyhow::{ensure, Result};
use integration_tests::cluster::free_udp_range;
use integration_tests::TestEnv;
use std::ffi::OsString;
use std::fs;
use std::time::Duration;
use tracing::info;

const T: Duration = Duration::from_secs(30);

fn args(v: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    v.iter().map(|a| a.as_ref().to_os_string()).collect()
}

#[test]
fn t10_init_writes_a_cluster_and_refuses_to_overwrite() -> Result<()> {
    let env = TestEnv::new()?;
    let dir = env.path().join("c1");
    let port = free_udp_range(4)?.to_string();
    {
        info!("--- init 3 storage + 1 manager, 2+1");
        let out = env.run(
            args(&[
                &"init",
                &"--cluster",
                &dir,
                &"--storage",
                &"3",
                &"--managers",
                &"1",
                &"--ec",
                &"2+1",
                &"--base-port",
                &port,
            ]),
            T,
        )?;
        ensure!(out.success(), "init failed: {out}");
        for f in [
            "cluster.toml",
            "tls/ca.pem",
            "tls/client.pem",
            "tls/client.key",
            "tls/storage-1.pem",
            "tls/storage-3.key",
            "tls/manager-1.pem",
        ] {
            ensure!(dir.join(f).is_file(), "{f} missing after init");
        }
        ensure!(
            !dir.join("tls/storage-4.pem").exists(),
            "a fourth storage node was made"
        );
        let toml = fs::read_to_string(dir.join("cluster.toml"))?;
        for n in ["storage-1", "storage-2", "storage-3", "manager-1"] {
            ensure!(toml.contains(n), "cluster.toml does not name {n}");
        }
        ensure!(
            !toml.contains("manager-2"),
            "cluster.toml names a second manager"
        );
        ensure!(
            toml.contains(&format!("127.0.0.1:{port}")),
            "storage-1 is not on the base port"
        );
    }
    {
        info!("--- init again on the same dir: refused, nothing changed");
        let before = (
            fs::read(dir.join("cluster.toml"))?,
            fs::read(dir.join("tls/ca.pem"))?,
        );
        let out = env.run(
            args(&[&"init", &"--cluster", &dir, &"--base-port", &port]),
            T,
        )?;
        expect_clear_error(&out, "second init", &["already exists"])?;
        let after = (
            fs::read(dir.join("cluster.toml"))?,
            fs::read(dir.join("tls/ca.pem"))?,
        );
        ensure!(before == after, "a refused init changed the cluster files");
    }
    {
        info!("--- bad --ec values");
        let other = env.path().join("c2");
        for (ec, mention) in [
            ("4x2", "4x2"),
            ("0+2", "0+2"),
            ("a+1", "a+1"),
            ("200+100", "200+100"),
        ] {
            let out = env.run(args(&[&"init", &"--cluster", &other, &"--ec", &ec]), T)?;
            expect_clear_error(&out, &format!("--ec {ec}"), &[mention])?;
            ensure!(
                !other.join("cluster.toml").exists(),
                "--ec {ec} still wrote a cluster"
            );
        }
        let out = env.run(
            args(&[&"init", &"--cluster", &other, &"--storage", &"many"]),
            T,
        )?;
        expect_clear_error(&out, "--storage many", &["many"])?;
    }
    {
        info!("--- mount: missing mountpoint argument, missing dir, a file as mountpoint");
        let out = env.run(args(&[&"mount", &"--cluster", &dir]), T)?;
        expect_clear_error(&out, "mount without a mountpoint", &[])?;
        let missing = env.path().join("no/such/dir");
        let out = env.run(args(&[&"mount", &"--cluster", &dir, &missing]), T)?;
        expect_clear_error(&out, "mount on a missing dir", &["no/such/dir"])?;
        let file = env.path().join("a-file");
        fs::write(&file, b"")?;
        let out = env.run(args(&[&"mount", &"--cluster", &dir, &file]), T)?;
        expect_clear_error(&out, "mount on a file", &["not a directory"])?;
        let out = env.run(args(&[&"up", &missing]), T)?;
        expect_clear_error(&out, "up on a missing dir", &["no/such/dir"])?;
    }
    {
        info!(
            "--- status / node run with a missing cluster or an unknown node; unknown subcommand"
        );
        let nowhere = env.path().join("nowhere");
        let out = env.run(args(&[&"status", &"--cluster", &nowhere]), T)?;
        expect_clear_error(&out, "status of a missing cluster", &[])?;
        let out = env.run(
            args(&[&"node", &"run", &"--cluster", &dir, &"--node", &"storage-9"]),
            T,
        )?;
        expect_clear_error(&out, "node run of an unknown node", &["storage-9"])?;
        let out = env.run(args(&[&"frobnicate"]), T)?;
        expect_clear_error(&out, "unknown subcommand", &["frobnicate"])?;
    }
    env.done();
    Ok(())
}
