//! Single-copy semantics across clients (volume leases + callbacks, notes/leases.md),
//! through several `shoal mount` processes of one cluster (6 storage 4+2, 2 managers):
//! every mutating operation on one mount is seen by the next syscall on another (t10), a
//! SIGSTOPped lease holder delays a conflicting operation by about one lease and reads no
//! stale data after SIGCONT (t20), and a random concurrent workload of three mounts on
//! shared 8-byte registers is linearizable (t30), also across a manager crash (t40) and
//! under a fault loop of manager kills and stopped mounts (t55; its long version is
//! ignored). t50: cross-manager transactions (directory moves raced from two mounts keep a
//! tree; a SIGSTOPped participant holds up only its rename). t60 (ignored) measures the
//! stall after a manager restart.

mod t10_every_op;
mod t20_sigstop_holder;
mod t30_linearizability;
mod t40_manager_crash_reads;
mod t50_cross_manager_txn;
mod t55_faults_linearizable;
mod t60_grace_stall;

use anyhow::{bail, Context, Result};
use integration_tests::{MountGuard, TestCluster, TestEnv};
use nix::sys::signal::Signal;
use proto::config::{ClusterConfig, CONFIG_FILE};
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// A started 6+2 cluster (with `lease_ms` written to `[manager]` of cluster.toml before any
/// node starts, when given) and `mounts` separate mount processes.
pub fn cluster_with_mounts(
    lease_ms: Option<u64>,
    mounts: usize,
) -> Result<(TestCluster, Vec<MountGuard>)> {
    let c = TestCluster::init(6, 2, "4+2")?;
    if let Some(ms) = lease_ms {
        set_lease_ms(c.dir(), ms)?;
    }
    c.start_all()?;
    let mut ms = Vec::with_capacity(mounts);
    for _ in 0..mounts {
        ms.push(c.mount()?);
    }
    Ok((c, ms))
}

/// Rewrites `DIR/cluster.toml` with `[manager] lease_ms = ms` and checks it reads back.
pub fn set_lease_ms(dir: &Path, ms: u64) -> Result<()> {
    let mut cfg = ClusterConfig::load(dir).context("load cluster.toml")?;
    cfg.file.manager.lease_ms = ms;
    fs::write(dir.join(CONFIG_FILE), ClusterConfig::render(&cfg.file))?;
    let back = ClusterConfig::load(dir).context("reload cluster.toml")?;
    if back.file.manager.lease_ms != ms {
        bail!("lease_ms reads back as {}", back.file.manager.lease_ms);
    }
    tracing::info!(lease_ms = ms, "manager lease set in cluster.toml");
    Ok(())
}

/// A mount process stopped with SIGSTOP; SIGCONT on `resume` or on Drop (also on panic, so
/// that teardown can unmount it). Declare it after every file handle on its mount, so that
/// it is dropped (the process continued) before those handles are closed.
pub struct Stopped<'a> {
    env: &'a TestEnv,
    name: String,
    active: bool,
}

impl<'a> Stopped<'a> {
    pub fn stop(env: &'a TestEnv, m: &MountGuard) -> Result<Stopped<'a>> {
        env.with_proc(m.name(), |p| p.signal(Signal::SIGSTOP))??;
        tracing::info!(mount = m.name(), "mount process stopped (SIGSTOP)");
        Ok(Stopped {
            env,
            name: m.name().to_string(),
            active: true,
        })
    }

    pub fn resume(mut self) -> Result<()> {
        self.active = false;
        self.env
            .with_proc(&self.name, |p| p.signal(Signal::SIGCONT))??;
        tracing::info!(mount = %self.name, "mount process continued (SIGCONT)");
        Ok(())
    }
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        if self.active {
            let _ = self
                .env
                .with_proc(&self.name, |p| p.signal(Signal::SIGCONT));
        }
    }
}

/// The names in directory `dir`.
pub fn names(dir: &Path) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for e in fs::read_dir(dir).with_context(|| format!("readdir {}", dir.display()))? {
        out.insert(e?.file_name().to_string_lossy().into_owned());
    }
    Ok(out)
}

/// Failures collected over the phases of a test, reported together at the end.
#[derive(Default)]
pub struct Problems(pub Vec<String>);

impl Problems {
    /// Records the failure of phase `what` (and logs it at once).
    pub fn check(&mut self, what: &str, r: Result<()>) {
        match r {
            Ok(()) => tracing::info!("ok: {what}"),
            Err(e) => {
                tracing::error!("FAILED: {what}: {e:#}");
                self.0.push(format!("{what}: {e:#}"));
            }
        }
    }

    /// Fails with every recorded problem.
    pub fn finish(self) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        bail!("{} problem(s):\n- {}", self.0.len(), self.0.join("\n- "))
    }
}
