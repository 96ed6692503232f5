//! `TestCluster`: a cluster made by `shoal init` in a temp dir, each node a `shoal node run`
//! process, mounts through `shoal mount`, with knobs to stop, kill -9 and restart nodes.
//! Readiness is judged through `shoal status`, the user's view, never by sleeping.

use crate::env::TestEnv;
use crate::mount::MountGuard;
use crate::process::CmdOutput;
use crate::wait::{wait_for, wait_until};
use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use rand::Rng;
use std::ffi::OsString;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

/// How long a cluster or a node gets to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a node gets to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound of one `shoal status` run.
const STATUS_TIMEOUT: Duration = Duration::from_secs(30);

/// A cluster of real `shoal` processes on 127.0.0.1.
pub struct TestCluster {
    env: TestEnv,
    dir: PathBuf,
    storage: usize,
    managers: usize,
    base_port: u16,
}

impl TestCluster {
    /// `shoal init` of a cluster with `storage` storage nodes, `managers` managers and
    /// erasure `ec` ("4+2") on a free UDP port range. Nothing is started yet.
    pub fn init(storage: usize, managers: usize, ec: &str) -> Result<TestCluster> {
        let env = TestEnv::new()?;
        let dir = env.path().join("cluster");
        let count = u16::try_from(storage + managers).context("too many nodes")?;
        let base_port = free_udp_range(count)?;
        let port = base_port.to_string();
        let (s, m) = (storage.to_string(), managers.to_string());
        let mut args: Vec<OsString> = vec![
            "init".into(),
            "--cluster".into(),
            dir.clone().into_os_string(),
        ];
        for a in [
            "--storage",
            &s,
            "--managers",
            &m,
            "--ec",
            ec,
            "--base-port",
            &port,
        ] {
            args.push(a.into());
        }
        let out = env.run(args, Duration::from_secs(60))?;
        if !out.success() {
            bail!("shoal init failed: {out}");
        }
        tracing::info!(dir = %dir.display(), storage, managers, ec, base_port, "cluster initialised");
        Ok(TestCluster {
            env,
            dir,
            storage,
            managers,
            base_port,
        })
    }

    pub fn env(&self) -> &TestEnv {
        &self.env
    }

    /// The cluster directory (cluster.toml, tls/, nodes/).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn base_port(&self) -> u16 {
        self.base_port
    }

    pub fn storage_names(&self) -> Vec<String> {
        (1..=self.storage).map(|i| format!("storage-{i}")).collect()
    }

    pub fn manager_names(&self) -> Vec<String> {
        (1..=self.managers)
            .map(|i| format!("manager-{i}"))
            .collect()
    }

    /// Every node, storage first.
    pub fn node_names(&self) -> Vec<String> {
        let mut v = self.storage_names();
        v.extend(self.manager_names());
        v
    }

    /// Where storage node `name` keeps its fragments.
    pub fn fragment_dir(&self, name: &str) -> PathBuf {
        self.dir.join("nodes").join(name).join("storage")
    }

    /// The manager node owning inode `ino` (the kernel's st_ino is the `InodeId`, whose high
    /// bits name its slot).
    pub fn manager_of(&self, ino: u64) -> Result<String> {
        let config = proto::config::ClusterConfig::load(&self.dir)?;
        let owner = config.slot_owner(proto::ids::InodeId(ino).slot());
        Ok(config
            .node(owner)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| owner.to_string()))
    }

    /// Marks the test as passed (no log dump).
    pub fn done(&self) {
        self.env.done();
    }

    /// Starts every node that is not running and waits until `shoal status` says the
    /// cluster can serve.
    pub fn start_all(&self) -> Result<()> {
        for n in self.node_names() {
            if !self.env.is_running(&n) {
                self.spawn_node(&n)?;
            }
        }
        self.wait_ready()
    }

    /// Starts node `name` and waits until `status` shows it up.
    pub fn start(&self, name: &str) -> Result<()> {
        self.spawn_node(name)?;
        self.wait_node_up(name)
    }

    /// SIGTERM and wait for the exit (bounded).
    pub fn stop(&self, name: &str) -> Result<ExitStatus> {
        let s = self.env.stop(name, Signal::SIGTERM, STOP_TIMEOUT)?;
        tracing::info!(node = name, status = %s, "stopped");
        Ok(s)
    }

    /// SIGKILL.
    pub fn kill9(&self, name: &str) -> Result<()> {
        self.env.kill9(name)?;
        tracing::info!(node = name, "killed with SIGKILL");
        Ok(())
    }

    /// Stop (SIGTERM) then start again.
    pub fn restart(&self, name: &str) -> Result<()> {
        self.stop(name)?;
        self.start(name)
    }

    /// Runs `shoal status`.
    pub fn status(&self) -> Result<CmdOutput> {
        self.env.run(
            [
                Path::new("status").as_os_str(),
                "--cluster".as_ref(),
                self.dir.as_os_str(),
            ],
            STATUS_TIMEOUT,
        )
    }

    /// Waits until `shoal status` exits 0.
    pub fn wait_ready(&self) -> Result<()> {
        self.check_nodes_alive()?;
        wait_for(
            READY_TIMEOUT,
            "shoal status says the cluster can serve",
            || {
                self.check_nodes_alive()
                    .map_err(|e| crate::wait::Fatal(format!("{e:#}")))?;
                let out = self.status()?;
                if out.success() {
                    Ok(())
                } else {
                    bail!("{out}")
                }
            },
        )?;
        tracing::info!("cluster is ready");
        Ok(())
    }

    /// Waits until `shoal status` lists `name` as up.
    pub fn wait_node_up(&self, name: &str) -> Result<()> {
        wait_for(
            READY_TIMEOUT,
            &format!("{name} is up in shoal status"),
            || {
                if !self.env.is_running(name) {
                    return Err(crate::wait::Fatal(format!(
                        "{name} exited; log tail:\n{}",
                        crate::process::tail(&self.env.log_path(name), 30)
                    ))
                    .into());
                }
                let out = self.status()?;
                match node_state(&out.stdout, name) {
                    Some("up") => Ok(()),
                    other => bail!("{name} is {other:?}"),
                }
            },
        )?;
        tracing::info!(node = name, "node is up");
        Ok(())
    }

    /// Mounts the file system at a new directory in the test dir.
    pub fn mount(&self) -> Result<MountGuard> {
        self.mount_with(&[])
    }

    /// Mounts with extra `shoal mount` arguments (e.g. `--allow-other`).
    pub fn mount_with(&self, extra: &[&str]) -> Result<MountGuard> {
        let mnt = self.new_mountpoint()?;
        let mut args: Vec<&std::ffi::OsStr> =
            vec!["mount".as_ref(), "--cluster".as_ref(), self.dir.as_os_str()];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        args.push(mnt.as_os_str());
        self.env.spawn_mount(args, &mnt)
    }

    /// Mounts through the cluster directory `cluster_dir` instead of the cluster's own (a
    /// copy whose cluster.toml points elsewhere, e.g. `partition::Partition::client_dir`).
    pub fn mount_via(&self, cluster_dir: &Path) -> Result<MountGuard> {
        let mnt = self.new_mountpoint()?;
        let args: Vec<&std::ffi::OsStr> = vec![
            "mount".as_ref(),
            "--cluster".as_ref(),
            cluster_dir.as_os_str(),
            mnt.as_os_str(),
        ];
        self.env.spawn_mount(args, &mnt)
    }

    /// Unmounts `m` cleanly and mounts again (drops every client cache).
    pub fn remount(&self, m: MountGuard) -> Result<MountGuard> {
        m.unmount(Duration::from_secs(60))
            .context("unmount before remount")?;
        self.mount()
    }

    fn new_mountpoint(&self) -> Result<PathBuf> {
        for i in 1..1000 {
            let p = self.env.path().join(format!("mnt{i}"));
            if !p.exists() {
                std::fs::create_dir(&p)?;
                return Ok(p);
            }
        }
        bail!("no free mountpoint name")
    }

    fn spawn_node(&self, name: &str) -> Result<()> {
        self.env.spawn(
            name,
            [
                Path::new("node").as_os_str(),
                "run".as_ref(),
                "--cluster".as_ref(),
                self.dir.as_os_str(),
                "--node".as_ref(),
                name.as_ref(),
            ],
        )
    }

    /// Errors if a node that was started has exited on its own.
    fn check_nodes_alive(&self) -> Result<()> {
        for n in self.node_names() {
            let exited = self.env.with_proc(&n, |p| p.try_status()).ok().flatten();
            if let Some(s) = exited {
                bail!(
                    "{n} exited with {s}; log tail:\n{}",
                    crate::process::tail(&self.env.log_path(&n), 30)
                );
            }
        }
        Ok(())
    }

    /// Waits until `what` holds, bounded by `timeout`.
    pub fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        cond: impl FnMut() -> bool,
    ) -> Result<()> {
        wait_until(timeout, what, cond)
    }
}

/// The STATE column of node `name` in `shoal status` output (columns found by the header
/// line's NODE and STATE).
pub fn node_state<'a>(status_stdout: &'a str, name: &str) -> Option<&'a str> {
    let header: Vec<&str> = status_stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<&str>>())
        .find(|cols| cols.contains(&"NODE") && cols.contains(&"STATE"))?;
    let node_col = header.iter().position(|c| *c == "NODE")?;
    let state_col = header.iter().position(|c| *c == "STATE")?;
    status_stdout.lines().find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.get(node_col) == Some(&name))
            .then(|| cols.get(state_col).copied())
            .flatten()
    })
}

/// A base port such that `count` consecutive UDP ports on 127.0.0.1 are free now.
pub fn free_udp_range(count: u16) -> Result<u16> {
    let mut rng = rand::rng();
    for _ in 0..200 {
        let base: u16 = rng.random_range(20000..60000 - count);
        let socks: Vec<_> = (0..count)
            .map_while(|i| UdpSocket::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if socks.len() == count as usize {
            return Ok(base);
        }
    }
    bail!("no range of {count} free UDP ports found in 20000..60000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_rows() {
        let out = "cluster \"x\" (epoch 1, erasure 4+2)\n\
                     ID NODE ROLES ADDRESS STATE CAPACITY USED FRAGMENTS  SLOTS\n\
                      1 storage-1      storage          127.0.0.1:7400         up           1.0 GiB      0 B     0  -\n\
                      7 manager-1      manager          127.0.0.1:7406         down           -            -     -  0-1023\n";
        assert_eq!(node_state(out, "storage-1"), Some("up"));
        assert_eq!(node_state(out, "manager-1"), Some("down"));
        assert_eq!(node_state(out, "storage-2"), None);
    }

    #[test]
    fn finds_a_free_range() {
        let base = free_udp_range(8).expect("free range");
        assert!((20000..60000).contains(&base));
    }
}
