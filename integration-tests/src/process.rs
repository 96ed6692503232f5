//! Processes the tests start: `ProcessGuard` (a long-running `shoal` process whose output
//! goes to a log file, killed by pid on Drop, unmounted first when it serves a mount) and
//! `run_command` (a one-shot command with a bounded run time). Only processes started here
//! are ever signalled, by their own pid, while they are still our unreaped children.

use crate::mount::{is_mounted, lazy_unmount};
use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a mount process gets to unmount after SIGTERM before the fallbacks.
pub const UNMOUNT_GRACE: Duration = Duration::from_secs(10);

/// A started process. Drop kills it (SIGKILL by pid) if it still runs; a mount process is
/// first asked to unmount (SIGTERM), then lazily unmounted, then killed.
pub struct ProcessGuard {
    name: String,
    child: Child,
    log: PathBuf,
    mountpoint: Option<PathBuf>,
    status: Option<ExitStatus>,
}

impl ProcessGuard {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        log: &Path,
        mountpoint: Option<PathBuf>,
    ) -> Result<Self> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open log {}", log.display()))?;
        writeln!(f, "===== [harness] start {name}: {cmd:?}")?;
        let err = f.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(f).stderr(err);
        // A mount unmounts itself on SIGTERM; a node may just die.
        let death = if mountpoint.is_some() {
            Signal::SIGTERM
        } else {
            Signal::SIGKILL
        };
        let shown = format!("{cmd:?}");
        let child = spawn_child(cmd, death).with_context(|| format!("spawn {name}: {shown}"))?;
        tracing::debug!(name, pid = child.id(), "spawned");
        Ok(ProcessGuard {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            mountpoint,
            status: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn mountpoint(&self) -> Option<&Path> {
        self.mountpoint.as_deref()
    }

    /// The exit status if the process has exited (reaps it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.status = Some(s);
            }
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Sends `sig` if the process still runs (it is unreaped, so the pid is still ours).
    pub fn signal(&mut self, sig: Signal) -> Result<()> {
        if self.try_status().is_some() {
            return Ok(());
        }
        let pid = i32::try_from(self.child.id()).context("pid out of range")?;
        kill(Pid::from_raw(pid), sig).with_context(|| format!("send {sig} to {}", self.name))?;
        Ok(())
    }

    /// Waits at most `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Sends `sig` and waits at most `timeout` for the exit; kills with SIGKILL and errors
    /// when the process does not exit in time.
    pub fn stop_with(&mut self, sig: Signal, timeout: Duration) -> Result<ExitStatus> {
        self.signal(sig)?;
        match self.wait_exit(timeout) {
            Some(s) => Ok(s),
            None => {
                let _ = self.kill9();
                bail!(
                    "{} did not exit within {timeout:?} after {sig}; killed it with SIGKILL",
                    self.name
                )
            }
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) -> Result<ExitStatus> {
        self.signal(Signal::SIGKILL)?;
        match self.wait_exit(Duration::from_secs(30)) {
            Some(s) => Ok(s),
            None => bail!(
                "{} (pid {}) did not die within 30 s of SIGKILL",
                self.name,
                self.pid()
            ),
        }
    }

    /// The last `lines` lines of the log file.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Unmount sequence for a mount process: SIGTERM, wait; lazy unmount; SIGKILL.
    fn shutdown_mount(&mut self, mountpoint: &Path) {
        let _ = self.signal(Signal::SIGTERM);
        if self.wait_exit(UNMOUNT_GRACE).is_none() {
            tracing::warn!(name = %self.name, "mount process still running {UNMOUNT_GRACE:?} after SIGTERM; lazy unmount");
            if is_mounted(mountpoint) {
                lazy_unmount(mountpoint);
            }
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                tracing::warn!(name = %self.name, "mount process still running; SIGKILL");
                let _ = self.kill9();
            }
        }
        if is_mounted(mountpoint) {
            lazy_unmount(mountpoint);
        }
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        match self.mountpoint.clone() {
            Some(m) => self.shutdown_mount(&m),
            None => {
                if self.is_running() {
                    let _ = self.kill9();
                }
            }
        }
    }
}

/// Spawns `cmd` from one thread that lives as long as the test process, with
/// `die_with_parent(sig)`: when the test process dies without running its Drop guards
/// (killed by a timeout or Ctrl-C), its mounts get SIGTERM (they unmount themselves) and
/// its nodes SIGKILL, instead of living on and leaving mounts behind.
fn spawn_child(mut cmd: Command, sig: Signal) -> std::io::Result<Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Option<Mutex<mpsc::Sender<Job>>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        // Never ends: its sender lives in a static.
        let started = std::thread::Builder::new()
            .name("process spawner".into())
            .spawn(move || {
                while let Ok((mut cmd, reply)) = rx.recv() {
                    let _ = reply.send(cmd.spawn());
                }
            });
        match started {
            Ok(_) => Some(Mutex::new(tx)),
            Err(e) => {
                tracing::warn!("no spawner thread ({e}): children get no death signal");
                None
            }
        }
    });
    let Some(spawner) = spawner else {
        return cmd.spawn();
    };
    crate::sys::die_with_parent(&mut cmd, sig);
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    reply_rx
        .recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("the spawner thread is gone")))
}

/// The last `lines` lines of a text file ("" when unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => return String::new(),
    };
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `tail`, without the lines of openraft's replication retries to a config group member
/// that is down (a heartbeat's failure every 250 ms, which would fill the tail of a test
/// that stops a member); the count of lines left out is said.
pub fn tail_without_raft_retries(path: &Path, lines: usize) -> String {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => return String::new(),
    };
    let noise = |l: &&str| {
        l.contains("openraft::replication")
            || l.contains("openraft::engine::handler::replication_handler")
    };
    let skipped = text.lines().filter(noise).count();
    let kept: Vec<&str> = text.lines().filter(|l| !noise(l)).collect();
    let mut out = kept[kept.len().saturating_sub(lines)..].join("\n");
    if skipped > 0 {
        out.push_str(&format!(
            "\n({skipped} lines of openraft replication retries left out)"
        ));
    }
    out
}

/// What a one-shot command did.
#[derive(Clone, Debug)]
pub struct CmdOutput {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout and stderr together, for messages and searches.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} after {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion with captured output; kills it and errors after `timeout`.
pub fn run_command(mut cmd: Command, timeout: Duration) -> Result<CmdOutput> {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("spawn {what}"))?;
    let out = child.stdout.take().map(reader_thread);
    let err = child.stderr.take().map(reader_thread);
    let mut pause = Duration::from_millis(5);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err.and_then(|h| h.join().ok()).unwrap_or_default();
            bail!("{what} did not finish within {timeout:?} (killed); stderr:\n{stderr}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    };
    let stdout = out.and_then(|h| h.join().ok()).unwrap_or_default();
    let stderr = err.and_then(|h| h.join().ok()).unwrap_or_default();
    Ok(CmdOutput {
        code: status.code(),
        stdout,
        stderr,
        elapsed: start.elapsed(),
    })
}

fn reader_thread(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}
