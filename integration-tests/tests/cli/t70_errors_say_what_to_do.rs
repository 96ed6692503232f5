//! Mistakes a new user makes get one error line with the cause and the fix (issue 14 item
//! 5): a non-empty mountpoint, a cluster directory without certificates, a key the user
//! cannot read, a state directory the user cannot write, no /dev/fuse, a certificate the
//! wall clock has passed (what a clock that jumped ahead looks like). (Elsewhere: a
//! missing mountpoint and an unknown node name in t10, a port in use in t50.)

use crate::expect_clear_error;
use anyhow::{ensure, Result};
use integration_tests::cluster::free_udp_range;
use integration_tests::process::run_command;
use integration_tests::{shoal_binary, TestEnv};
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;
use tracing::info;

const T: Duration = Duration::from_secs(30);

/// `shoal ARGS` as uid/gid 65534 (nobody).
fn as_nobody(args: &[&OsStr]) -> Result<integration_tests::CmdOutput> {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(shoal_binary()?)
        .args(args)
        .env("NO_COLOR", "1");
    run_command(c, T)
}

#[test]
fn t70_common_mistakes_get_a_cause_and_a_fix() -> Result<()> {
    let env = TestEnv::new()?;
    // Let uid 65534 reach the test's files (the temp dir is 0700).
    std::fs::set_permissions(env.path(), std::fs::Permissions::from_mode(0o755))?;
    let dir = env.path().join("c");
    let port = free_udp_range(4)?.to_string();
    let out = env.run(
        [
            "init".as_ref(),
            "--cluster".as_ref(),
            dir.as_os_str(),
            "--storage".as_ref(),
            "3".as_ref(),
            "--managers".as_ref(),
            "1".as_ref(),
            "--ec".as_ref(),
            "2+1".as_ref(),
            "--base-port".as_ref(),
            port.as_ref(),
        ],
        T,
    )?;
    ensure!(out.success(), "init: {out}");
    {
        info!("--- mount and up on a non-empty directory");
        let full = env.path().join("full");
        std::fs::create_dir(&full)?;
        std::fs::write(full.join("x"), b"x")?;
        let out = env.run(
            [
                "mount".as_ref(),
                "--cluster".as_ref(),
                dir.as_os_str(),
                full.as_os_str(),
            ],
            T,
        )?;
        expect_clear_error(
            &out,
            "mount on a non-empty dir",
            &["not empty", "empty directory"],
        )?;
        let out = env.run(["up".as_ref(), full.as_os_str()], T)?;
        expect_clear_error(
            &out,
            "up on a non-empty dir",
            &["not empty", "empty directory"],
        )?;
    }
    {
        info!("--- a cluster directory without certificates (cluster.toml only)");
        let bare = env.path().join("bare");
        std::fs::create_dir(&bare)?;
        std::fs::copy(dir.join("cluster.toml"), bare.join("cluster.toml"))?;
        let out = env.run(
            ["status".as_ref(), "--cluster".as_ref(), bare.as_os_str()],
            T,
        )?;
        expect_clear_error(
            &out,
            "status without certificates",
            &["ca.pem", "shoal init"],
        )?;
        let out = env.run(
            [
                "node".as_ref(),
                "run".as_ref(),
                "--cluster".as_ref(),
                bare.as_os_str(),
                "--node".as_ref(),
                "storage-1".as_ref(),
            ],
            T,
        )?;
        expect_clear_error(
            &out,
            "node run without certificates",
            &["storage-1.key", "shoal init"],
        )?;
    }
    let run_storage_1: [&OsStr; 6] = [
        "node".as_ref(),
        "run".as_ref(),
        "--cluster".as_ref(),
        dir.as_os_str(),
        "--node".as_ref(),
        "storage-1".as_ref(),
    ];
    {
        info!("--- a node run by a user who cannot read its key");
        let out = as_nobody(&run_storage_1)?;
        expect_clear_error(
            &out,
            "node run as nobody, key unreadable",
            &["storage-1.key", "permission denied", "chown"],
        )?;
    }
    {
        info!("--- a node run by a user who can read its key but not write its state dir");
        for f in ["storage-1.key", "storage-1.pem"] {
            std::os::unix::fs::chown(dir.join("tls").join(f), Some(65534), Some(65534))?;
        }
        let out = as_nobody(&run_storage_1)?;
        expect_clear_error(
            &out,
            "node run as nobody, state dir unwritable",
            &["state directory", "not writable", "chown -R 65534"],
        )?;
    }
    {
        info!("--- a non-root mount without fusermount3 on PATH");
        let mnt = env.path().join("mnt-nobody");
        std::fs::create_dir(&mnt)?;
        // PATH for shoal only (setpriv itself is found on the test's PATH).
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/env",
        ])
        .arg(format!("PATH={}", env.path().display()))
        .arg(shoal_binary()?)
        .args([
            "mount".as_ref(),
            "--cluster".as_ref(),
            dir.as_os_str(),
            mnt.as_os_str(),
        ])
        .env("NO_COLOR", "1");
        let out = run_command(c, T)?;
        expect_clear_error(
            &out,
            "mount without fusermount3",
            &["fusermount3", "apt-get install fuse3"],
        )?;
    }
    {
        info!("--- no /dev/fuse (a private mount namespace with an empty /dev)");
        let mnt = env.path().join("mnt");
        std::fs::create_dir(&mnt)?;
        let mut c = Command::new("unshare");
        c.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t tmpfs none /dev && exec \"$SHOAL\" mount --cluster \"$CLUSTER\" \"$MNT\"",
        ])
        .env("SHOAL", shoal_binary()?)
        .env("CLUSTER", &dir)
        .env("MNT", &mnt)
        .env("NO_COLOR", "1");
        let out = run_command(c, T)?;
        expect_clear_error(
            &out,
            "mount without /dev/fuse",
            &["/dev/fuse", "apt-get install fuse3", "modprobe fuse"],
        )?;
    }
    {
        info!("--- a certificate the clock has passed (a clock that jumped, or a key too old)");
        let out = env.run(
            [
                "cert".as_ref(),
                "issue".as_ref(),
                "--cluster".as_ref(),
                dir.as_os_str(),
                "client".as_ref(),
                "brief".as_ref(),
                "--expires".as_ref(),
                "1s".as_ref(),
            ],
            T,
        )?;
        ensure!(out.success(), "cert issue: {out}");
        std::thread::sleep(Duration::from_millis(2500));
        let mnt = env.path().join("mnt-brief");
        std::fs::create_dir(&mnt)?;
        let out = env.run(
            [
                "mount".as_ref(),
                "--cluster".as_ref(),
                dir.as_os_str(),
                "--as".as_ref(),
                "brief".as_ref(),
                mnt.as_os_str(),
            ],
            T,
        )?;
        expect_clear_error(
            &out,
            "mount with an expired certificate",
            &[
                "brief",
                "expired at",
                "clock",
                "timedatectl",
                "shoal cert issue",
            ],
        )?;
    }
    env.done();
    Ok(())
}
