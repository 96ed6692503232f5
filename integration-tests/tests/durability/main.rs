//! Durability under a concurrent workload (issue [durability] item 6): worker *processes*
//! (`shoal-workload`, a binary of this crate) run seeded random mixes of writes, mmap
//! writes, truncates, renames, hard links, xattrs, fsync and unlink on their own
//! directories of real mounts of a 6-storage (4+2), 2-manager cluster, each checking its
//! files byte for byte against its in-memory model at checkpoints and at the end; the tree
//! is checked again from a fresh mount, and the logs must not show a client declared lost
//! or unflushed writes discarded. t05 runs the same worker on the local disk (the model
//! must hold there) and checks that the verifier reports a corrupted byte.
//!
//! Knobs: `SHOAL_DURABILITY_SEED` (base seed, default from the clock),
//! `SHOAL_DURABILITY_SECS` (run time of the `#[ignore]`d long test, default 300; see
//! `bench/soak-durability.sh`).

mod t05_self_check;
mod t10_concurrent_workload;
mod t20_two_mounts_workload;

use anyhow::{bail, ensure, Context, Result};
use integration_tests::process::run_command;
use integration_tests::{ProcessGuard, TestCluster, TestEnv};
use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tracing::info;

/// Log lines that mean the cluster gave up on a client or a client dropped accepted writes.
pub const LOST_CLIENT: [&str; 3] = [
    "the client is lost",
    "lease lost",
    "discarding unflushed writes",
];

/// Extra time a worker gets past its run time for its checkpoints and final check.
pub const WORKER_SLACK: Duration = Duration::from_secs(180);

/// One worker process of a test and the manifest it saves.
pub struct WorkerProc {
    pub name: String,
    pub dir: PathBuf,
    pub manifest: PathBuf,
    /// Set when the worker exited with a failure.
    pub failed: bool,
    proc: ProcessGuard,
}

/// What a worker runs on.
pub struct WorkerSpec<'a> {
    pub index: u16,
    /// The mount root (or a local dir) the worker's directory is made in.
    pub root: &'a Path,
    pub seed: u64,
    pub secs: u64,
    pub ops: u64,
    pub checkpoints: u32,
    /// Share dir and peer name for cross-mount snapshot reads.
    pub share: Option<(&'a Path, String)>,
}

/// The `shoal-workload` binary.
pub fn workload_bin() -> &'static str {
    env!("CARGO_BIN_EXE_shoal-workload")
}

/// Starts worker `spec.index` (logs in `logs/worker-N.log`, killed on Drop).
pub fn spawn_worker(env: &TestEnv, spec: &WorkerSpec) -> Result<WorkerProc> {
    let name = format!("worker-{}", spec.index);
    let dname = format!("w{}", spec.index);
    let dir = spec.root.join(&dname);
    let manifest = env.path().join("manifests").join(&name);
    let mut cmd = Command::new(workload_bin());
    cmd.arg("run")
        .arg("--dir")
        .arg(&dir)
        .arg("--manifest")
        .arg(&manifest);
    for (k, v) in [
        ("--worker", spec.index.to_string()),
        ("--seed", spec.seed.to_string()),
        ("--ops", spec.ops.to_string()),
        ("--secs", spec.secs.to_string()),
        ("--checkpoints", spec.checkpoints.to_string()),
    ] {
        cmd.arg(k).arg(v);
    }
    if let Some((share, peer)) = &spec.share {
        cmd.arg("--share").arg(share).arg("--root").arg(spec.root);
        cmd.args(["--name", &dname, "--peer", peer]);
    }
    let proc = ProcessGuard::spawn(&name, cmd, &env.log_path(&name), None)?;
    tracing::info!(worker = %name, seed = spec.seed, dir = %dir.display(), "worker started");
    Ok(WorkerProc {
        name,
        dir,
        manifest,
        failed: false,
        proc,
    })
}

impl WorkerProc {
    /// Waits (bounded) for the worker's exit; an error with its report unless it exited 0.
    pub fn wait(&mut self, timeout: Duration) -> Result<()> {
        let Some(status) = self.proc.wait_exit(timeout) else {
            let _ = self.proc.kill9();
            bail!(
                "{} still ran after {timeout:?} (killed); log tail:\n{}",
                self.name,
                self.proc.log_tail(20)
            )
        };
        let log = std::fs::read_to_string(self.proc.log_path()).unwrap_or_default();
        for l in log.lines().filter(|l| l.contains("final check ok")) {
            tracing::info!("{}: {l}", self.name);
        }
        if status.success() {
            return Ok(());
        }
        let report = log
            .find("WORKER FAILED")
            .map(|i| log[i..].to_string())
            .unwrap_or_else(|| self.proc.log_tail(30));
        let why = if status.signal() == Some(libc::SIGBUS) {
            " (a store through mmap faulted: its page could not be read in, or the file \
             shrank under the mapping)"
        } else {
            ""
        };
        bail!("{} exited with {status}{why}:\n{report}", self.name)
    }

    /// Checks `dir` (the worker's directory, possibly seen through another mount) against
    /// the manifest the worker saved.
    pub fn verify(&self, dir: &Path) -> Result<()> {
        verify_dir(dir, &self.manifest)
    }
}

/// `shoal-workload verify`: `dir` against `manifest`, bounded.
pub fn verify_dir(dir: &Path, manifest: &Path) -> Result<()> {
    let mut cmd = Command::new(workload_bin());
    cmd.arg("verify")
        .arg("--dir")
        .arg(dir)
        .arg("--manifest")
        .arg(manifest);
    let out = run_command(cmd, Duration::from_secs(120))?;
    ensure!(out.success(), "verify {}: {}", dir.display(), out.text());
    Ok(())
}

/// Fails with every log line of the test's processes that says a client was lost or
/// unflushed writes were discarded, except those in `seen` (already reported); adds the
/// lines found to `seen`.
pub fn no_lost_client(env: &TestEnv, seen: &mut BTreeSet<String>) -> Result<()> {
    let mut hits = Vec::new();
    let dir = env.path().join("logs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    ensure!(
        files
            .iter()
            .any(|f| f.to_string_lossy().contains("manager-")),
        "no manager log found in {}",
        dir.display()
    );
    for f in files {
        let text = String::from_utf8_lossy(&std::fs::read(&f)?).into_owned();
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
        for l in text
            .lines()
            .filter(|l| LOST_CLIENT.iter().any(|p| l.contains(p)))
        {
            let hit = format!("{}: {l}", name.as_deref().unwrap_or("?"));
            if seen.insert(hit.clone()) {
                hits.push(hit);
            }
        }
    }
    if hits.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = hits.iter().take(20).map(String::as_str).collect();
    bail!(
        "{} log line(s) of a lost client or discarded writes:\n  {}",
        hits.len(),
        shown.join("\n  ")
    )
}

/// The base seed: `$SHOAL_DURABILITY_SEED`, else from the clock (logged, so a failure can
/// be replayed).
pub fn base_seed() -> u64 {
    let seed = std::env::var("SHOAL_DURABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() % 1_000_000)
                .unwrap_or(1)
        });
    tracing::info!("base seed {seed} (replay with SHOAL_DURABILITY_SEED={seed})");
    seed
}

/// `$SHOAL_DURABILITY_SECS` or `default`.
pub fn long_secs(default: u64) -> u64 {
    std::env::var("SHOAL_DURABILITY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A workload on a fresh cluster: `mounts` mounts with `per_mount` workers each, running
/// `secs` (at most `ops` ops each); with `cross`, worker i of mount 0 and worker i of mount
/// 1 read each other's fsynced snapshots at their checkpoints. Then: every worker exited 0,
/// no lost client in the logs, and every tree matches its manifest through a fresh mount.
pub fn run_workload(
    mounts: usize,
    per_mount: usize,
    secs: u64,
    ops: u64,
    cross: bool,
) -> Result<()> {
    let c = TestCluster::init(6, 2, "4+2")?;
    c.start_all()?;
    let mut ms = Vec::with_capacity(mounts);
    for _ in 0..mounts {
        ms.push(c.mount()?);
    }
    c.env()
        .set_deadline(Duration::from_secs(secs) + WORKER_SLACK * 2);
    let seed = base_seed();
    let share = c.env().path().join("share");
    std::fs::create_dir(&share)?;
    let mut problems = Problems::default();
    let mut seen = BTreeSet::new();
    let mut workers = Vec::new();
    {
        info!("--- {mounts} mount(s) x {per_mount} worker processes, {secs} s, at most {ops} ops each");
        for (mi, m) in ms.iter().enumerate() {
            for wi in 0..per_mount {
                let index = u16::try_from(mi * per_mount + wi)?;
                let peer_index = (mi + 1) % mounts * per_mount + wi;
                let spec = WorkerSpec {
                    index,
                    root: m.path(),
                    seed: seed + u64::from(index),
                    secs,
                    ops,
                    checkpoints: u32::try_from(secs / 15)?.clamp(3, 200),
                    share: (cross && mounts > 1)
                        .then(|| (share.as_path(), format!("w{peer_index}"))),
                };
                workers.push(spawn_worker(c.env(), &spec)?);
            }
        }
        for w in &mut workers {
            let r = w.wait(Duration::from_secs(secs) + WORKER_SLACK);
            w.failed = r.is_err();
            problems.check(
                &format!("{} matched its model at every checkpoint", w.name),
                r,
            );
        }
    }
    {
        info!("--- the logs: no client declared lost, no unflushed writes discarded");
        problems.check(
            "no lost client in the manager and mount logs",
            no_lost_client(c.env(), &mut seen),
        );
        for m in &ms {
            let up = m.is_running();
            problems.check(
                &format!("{} still runs", m.name()),
                if up {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("{} exited", m.name()))
                },
            );
        }
    }
    {
        info!("--- unmount every mount, mount afresh, check every tree against its manifest");
        for m in ms.drain(..) {
            let name = m.name().to_string();
            problems.check(
                &format!("clean unmount of {name}"),
                m.unmount(Duration::from_secs(60)),
            );
        }
        let fresh = c.mount()?;
        for w in &workers {
            let rel = w.dir.file_name().context("worker dir name")?;
            // A failed worker's manifest lacks its failing op, whose file may differ.
            let note = if w.failed {
                " (worker failed earlier)"
            } else {
                ""
            };
            problems.check(
                &format!("{} tree through a fresh mount{note}", w.name),
                w.verify(&fresh.join(rel)),
            );
        }
        problems.check(
            "no lost client after the clean unmount and the fresh mount's reads (new lines only)",
            no_lost_client(c.env(), &mut seen),
        );
    }
    problems.finish()?;
    c.done();
    Ok(())
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
