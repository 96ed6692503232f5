//! The mount helper with real `mount` calls: `mount -t fuse.shoal CLUSTER_DIR DIR -o ...`
//! (mount(8) → fuse3's mount.fuse → `shoal` from the default PATH) and an fstab line with
//! `ro` from an alternative fstab (`mount -T FILE`; the real /etc/fstab is not touched).
//! mount(8) clears the environment of helpers, so the test runs in a private mount
//! namespace (`unshare -m`) where a temp dir holding a link to the binary under test is
//! bind-mounted over /usr/local/bin: nothing is installed on the machine. `umount` ends
//! each detached `shoal mount`, which writes what it buffered first.

use anyhow::{ensure, Context, Result};
use integration_tests::process::run_command;
use integration_tests::{shoal_binary, wait_for, TestCluster};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tracing::info;

/// Daemons the helper started (pids it printed): killed if still there when dropped (the
/// private namespace and its mounts go with them).
struct Daemons(Vec<u32>);

impl Daemons {
    fn alive(&self) -> Vec<u32> {
        self.0
            .iter()
            .copied()
            .filter(|p| Path::new(&format!("/proc/{p}")).exists())
            .collect()
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for p in self.alive() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

const SCRIPT: &str = r#"
set -e
mount --bind "$BIN" /usr/local/bin
mount -t fuse.shoal -o as=client,noatime,log="$BASE/m1.log" "$CLUSTER" "$BASE/m1"
grep -q " $BASE/m1 .* - fuse.shoal " /proc/self/mountinfo && echo m1=mounted
printf 'through the mount helper' > "$BASE/m1/hello"
umount "$BASE/m1"
mount -T "$BASE/fstab" "$BASE/m2"
echo "content=$(cat "$BASE/m2/hello")"
if err=$( { printf x > "$BASE/m2/new"; } 2>&1 ); then echo write=ok; else echo "write=refused: $err"; fi
umount "$BASE/m2"
if out=$(mount -t fuse.shoal -o frobnicate "$CLUSTER" "$BASE/m3" 2>&1); then echo bad=mounted; else echo "bad=refused: $out"; fi
"#;

#[test]
fn t45_mount_t_fuse_shoal_and_an_fstab_line() -> Result<()> {
    let c = TestCluster::init(3, 1, "2+1")?;
    c.start_all()?;
    c.wait_ready()?;
    let base = c.env().path().to_path_buf();
    let bin = base.join("bin");
    std::fs::create_dir(&bin)?;
    std::os::unix::fs::symlink(shoal_binary()?, bin.join("shoal"))?;
    for d in ["m1", "m2", "m3"] {
        std::fs::create_dir(base.join(d))?;
    }
    std::fs::write(
        base.join("fstab"),
        format!(
            "# test fstab\n{} {} fuse.shoal ro,noatime,_netdev,log={} 0 0\n",
            c.dir().display(),
            base.join("m2").display(),
            base.join("m2.log").display()
        ),
    )?;
    info!("--- mount -t fuse.shoal, write, umount; fstab line with ro, read, write refused; bad option");
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", SCRIPT])
        .env("BIN", &bin)
        .env("BASE", &base)
        .env("CLUSTER", c.dir());
    let out = run_command(cmd, Duration::from_secs(120))?;
    let daemons = Daemons(
        out.stdout
            .split("(pid ")
            .skip(1)
            .filter_map(|r| r.split(',').next()?.trim().parse().ok())
            .collect(),
    );
    ensure!(out.success(), "the mount script failed: {out}");
    ensure!(daemons.0.len() == 2, "expected two helper mounts: {out}");
    let line = |k: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    ensure!(line("m1").as_deref() == Some("mounted"), "{out}");
    ensure!(
        line("content").as_deref() == Some("through the mount helper"),
        "the file through the fstab mount: {out}"
    );
    let w = line("write").context("no write line")?;
    ensure!(
        w.starts_with("refused") && w.contains("Read-only file system"),
        "write on the ro fstab mount: {w}"
    );
    let bad = line("bad").context("no bad-option line")?;
    ensure!(
        bad.starts_with("refused") && bad.contains("frobnicate"),
        "mount -o frobnicate: {bad}"
    );
    wait_for(
        Duration::from_secs(20),
        "the mount daemons exit after umount",
        || {
            let alive = daemons.alive();
            ensure!(alive.is_empty(), "still running: {alive:?}");
            Ok(())
        },
    )?;
    drop(daemons);
    c.done();
    Ok(())
}
