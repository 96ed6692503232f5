//! One test's world: a temp dir (0755, so a setuid child can reach mounts inside it), log
//! files of every process it started, the process table, a watchdog, and the lock that runs
//! the tests of one binary one at a time. On failure (panic, or a test that did not call
//! `done()`), Drop prints the tail of every log. Teardown stops mounts before nodes.

use crate::mount::MountGuard;
use crate::process::{run_command, tail, CmdOutput, ProcessGuard};
use crate::wait::{wait_for, Fatal};
use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Processes of one test, by name.
pub type ProcTable = Arc<Mutex<BTreeMap<String, ProcessGuard>>>;

static SERIAL: Mutex<()> = Mutex::new(());

/// Default per-test watchdog.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(300);
/// How long a mount may take to appear.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of each log printed on failure.
const TAIL_LINES: usize = 40;

/// A test's temp dir, processes and watchdog.
pub struct TestEnv {
    procs: ProcTable,
    bin: PathBuf,
    root: PathBuf,
    done: AtomicBool,
    mounts: AtomicUsize,
    watchdog: Watchdog,
    tempdir: Option<TempDir>,
    _serial: MutexGuard<'static, ()>,
}

impl TestEnv {
    /// A fresh environment. Blocks while another test of this binary runs.
    pub fn new() -> Result<TestEnv> {
        crate::init_logging();
        let bin = crate::shoal_binary()?;
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let tempdir = tempfile::Builder::new()
            .prefix("shoal-it-")
            .tempdir()
            .context("create temp dir")?;
        let root = tempdir.path().to_path_buf();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))?;
        std::fs::create_dir(root.join("logs"))?;
        let procs: ProcTable = Arc::new(Mutex::new(BTreeMap::new()));
        let deadline = std::env::var("SHOAL_IT_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_DEADLINE);
        let watchdog = Watchdog::start(Arc::downgrade(&procs), deadline);
        tracing::info!(dir = %root.display(), "test environment");
        Ok(TestEnv {
            procs,
            bin,
            root,
            done: AtomicBool::new(false),
            mounts: AtomicUsize::new(0),
            watchdog,
            tempdir: Some(tempdir),
            _serial: serial,
        })
    }

    /// The temp dir of this test.
    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.root.join("logs").join(format!("{name}.log"))
    }

    /// Moves the watchdog deadline to `from_now` from now.
    pub fn set_deadline(&self, from_now: Duration) {
        self.watchdog.set(Instant::now() + from_now);
    }

    /// Marks the test as passed: no log dump on Drop.
    pub fn done(&self) {
        self.done.store(true, Ordering::SeqCst);
    }

    /// A `shoal` command (logs at `$SHOAL_LOG`, default info).
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args);
        if std::env::var_os("SHOAL_LOG").is_none() {
            cmd.env("SHOAL_LOG", "info");
        }
        cmd.env("RUST_BACKTRACE", "1").env("NO_COLOR", "1");
        cmd
    }

    /// Runs `shoal ARGS` to completion (bounded by `timeout`), output captured.
    pub fn run<I, S>(&self, args: I, timeout: Duration) -> Result<CmdOutput>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let cmd = self.command(args);
        let shown = format!("{cmd:?}");
        let out = run_command(cmd, timeout)?;
        let log = self.log_path("commands");
        let entry = format!("===== [harness] {shown}\n{out}\n");
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| std::io::Write::write_all(&mut f, entry.as_bytes()));
        Ok(out)
    }

    /// Starts a long-running `shoal ARGS` as process `name` (logs in logs/NAME.log).
    pub fn spawn<I, S>(&self, name: &str, args: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.spawn_inner(name, self.command(args), None)
    }

    fn spawn_inner(&self, name: &str, cmd: Command, mountpoint: Option<PathBuf>) -> Result<()> {
        let mut t = self.table();
        if let Some(p) = t.get_mut(name) {
            if p.is_running() {
                bail!("{name} is already running (pid {})", p.pid());
            }
        }
        let p = ProcessGuard::spawn(name, cmd, &self.log_path(name), mountpoint)?;
        t.insert(name.to_string(), p);
        Ok(())
    }

    /// Runs `f` on process `name`.
    pub fn with_proc<R>(&self, name: &str, f: impl FnOnce(&mut ProcessGuard) -> R) -> Result<R> {
        let mut t = self.table();
        match t.get_mut(name) {
            Some(p) => Ok(f(p)),
            None => bail!("no process named {name}"),
        }
    }

    /// Whether process `name` exists and still runs.
    pub fn is_running(&self, name: &str) -> bool {
        self.table()
            .get_mut(name)
            .map(|p| p.is_running())
            .unwrap_or(false)
    }

    /// Sends `sig` to `name` and waits at most `timeout` for it to exit.
    pub fn stop(
        &self,
        name: &str,
        sig: Signal,
        timeout: Duration,
    ) -> Result<std::process::ExitStatus> {
        // Take the guard out so that the table is not locked while waiting.
        let taken = self.table().remove(name);
        let Some(mut p) = taken else {
            bail!("no process named {name}")
        };
        let r = p.stop_with(sig, timeout);
        self.table().insert(name.to_string(), p);
        r
    }

    /// SIGKILL `name` and reap it.
    pub fn kill9(&self, name: &str) -> Result<()> {
        self.with_proc(name, |p| p.kill9())??;
        Ok(())
    }

    /// Starts `shoal ARGS` that mounts at `mountpoint` and waits until the mount appears
    /// (bounded); the returned guard unmounts on Drop.
    pub fn spawn_mount<I, S>(&self, args: I, mountpoint: &Path) -> Result<MountGuard>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let n = self.mounts.fetch_add(1, Ordering::SeqCst) + 1;
        let name = format!("mount-{n}");
        let mountpoint = std::fs::canonicalize(mountpoint)
            .with_context(|| format!("mountpoint {}", mountpoint.display()))?;
        self.spawn_inner(&name, self.command(args), Some(mountpoint.clone()))?;
        let guard = MountGuard::new(self.procs.clone(), name.clone(), mountpoint.clone());
        let what = format!("{} is mounted by {name}", mountpoint.display());
        wait_for(MOUNT_TIMEOUT, &what, || {
            if crate::is_mounted(&mountpoint) {
                return Ok(());
            }
            let exited = self.with_proc(&name, |p| p.try_status())?;
            if let Some(s) = exited {
                let msg = format!(
                    "{name} exited with {s}; log tail:\n{}",
                    tail(&self.log_path(&name), 30)
                );
                return Err(Fatal(msg).into());
            }
            bail!("not mounted yet")
        })
        .map_err(|e| e.context(format!("mount at {}", mountpoint.display())))?;
        tracing::info!(mount = %name, at = %mountpoint.display(), "mounted");
        Ok(guard)
    }

    /// Prints the tail of every log file (called on failure).
    pub fn dump_logs(&self) {
        let dir = self.root.join("logs");
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => return,
        };
        files.sort();
        eprintln!(
            "===== logs of the failed test ({}) =====",
            self.root.display()
        );
        for f in files {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            eprintln!(
                "----- {name} (last {TAIL_LINES} lines) -----\n{}",
                crate::process::tail_without_raft_retries(&f, TAIL_LINES)
            );
        }
        eprintln!("===== end of logs =====");
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<String, ProcessGuard>> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let failed = std::thread::panicking() || !self.done.load(Ordering::SeqCst);
        // Mounts first, while the nodes still run, then everything else.
        let all: Vec<(String, ProcessGuard)> =
            std::mem::take(&mut *self.table()).into_iter().collect();
        let (mounts, others): (Vec<_>, Vec<_>) =
            all.into_iter().partition(|(_, p)| p.mountpoint().is_some());
        drop(mounts);
        // A mount no guard took down (a leaked guard, an unmount that failed) would stay
        // behind, and removing the temp dir would recurse into it.
        for m in crate::mount::unmount_all_below(&self.root) {
            eprintln!(
                "teardown: {} was still mounted after the mount guards; lazily unmounted",
                m.display()
            );
        }
        drop(others);
        self.watchdog.stop();
        if failed {
            self.dump_logs();
        }
        let keep = std::env::var_os("SHOAL_IT_KEEP").is_some_and(|v| v == "1");
        if let Some(mut t) = self.tempdir.take() {
            if keep {
                t.disable_cleanup(true);
                eprintln!("kept test dir {}", self.root.display());
            }
        }
    }
}

/// Kills every process of a test that runs past its deadline, so that file system calls
/// blocked on a hung mount fail instead of hanging the test run.
struct Watchdog {
    state: Arc<(Mutex<Option<Instant>>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start(
        procs: std::sync::Weak<Mutex<BTreeMap<String, ProcessGuard>>>,
        deadline: Duration,
    ) -> Watchdog {
        let state = Arc::new((Mutex::new(Some(Instant::now() + deadline)), Condvar::new()));
        let s = state.clone();
        let thread = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                let (lock, cv) = &*s;
                let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    let Some(at) = *g else { return };
                    let now = Instant::now();
                    if now >= at {
                        break;
                    }
                    g = cv
                        .wait_timeout(g, at - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                drop(g);
                eprintln!(
                    "WATCHDOG: the test ran past its deadline; killing every process it started"
                );
                if let Some(procs) = procs.upgrade() {
                    let mut t = procs.lock().unwrap_or_else(|e| e.into_inner());
                    for p in t.values_mut() {
                        let _ = p.signal(Signal::SIGKILL);
                        if let Some(m) = p.mountpoint() {
                            crate::mount::lazy_unmount(m);
                        }
                    }
                }
            })
            .ok();
        Watchdog { state, thread }
    }

    fn set(&self, at: Instant) {
        let (lock, cv) = &*self.state;
        let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_some() {
            *g = Some(at);
        }
        cv.notify_all();
    }

    fn stop(&mut self) {
        let (lock, cv) = &*self.state;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = None;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
