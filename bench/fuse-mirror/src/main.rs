//! `fuse-mirror BACKING_DIR MOUNTPOINT`: the "FUSE ceiling" for `shoal bench`. Mounts a
//! minimal FUSE file system that mirrors a local directory, with the settings measured best
//! in MEASURED.md §5 (1 thread, max_write 1 MiB, entry/attr TTL 1 s), runs in the foreground
//! and unmounts on SIGINT/SIGTERM/SIGHUP (or ends when unmounted from outside). It owns only
//! argument checks, mounting and shutdown; the file system itself is in `mirror`.

mod inodes;
mod mirror;

use anyhow::{anyhow, bail, Context};
use fuser::{Config, MountOption, Session};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str =
    "usage: fuse-mirror BACKING_DIR MOUNTPOINT  (foreground; SIGINT/SIGTERM unmounts)";

fn main() -> ExitCode {
    match run(std::env::args_os().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("fuse-mirror: {msg:#}");
            ExitCode::FAILURE
        }
    }
}

/// An existing directory, made absolute.
fn existing_dir(arg: &OsString, what: &str) -> anyhow::Result<PathBuf> {
    let p = Path::new(arg);
    let abs = fs::canonicalize(p).with_context(|| format!("{what} {}", p.display()))?;
    if !abs.is_dir() {
        bail!("{what} {} is not a directory", p.display());
    }
    Ok(abs)
}

fn run(args: Vec<OsString>) -> anyhow::Result<()> {
    if args.len() == 1 && (args[0] == "-h" || args[0] == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let [backing, mountpoint] = <[OsString; 2]>::try_from(args).map_err(|_| anyhow!("{USAGE}"))?;
    let backing = existing_dir(&backing, "backing directory")?;
    let mountpoint = existing_dir(&mountpoint, "mount point")?;
    if backing.starts_with(&mountpoint) {
        bail!(
            "backing directory {} must not be inside the mount point {}",
            backing.display(),
            mountpoint.display()
        );
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing (load the fuse module or run with --device /dev/fuse)");
    }

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("fuse-mirror".into()),
        MountOption::Subtype("mirror".into()),
        // The kernel checks permissions from our attributes; the mirror does no checks itself.
        MountOption::DefaultPermissions,
    ];
    config.n_threads = Some(1);
    let fs = mirror::Mirror::new(backing.clone());
    let mut session = Session::new(fs, &mountpoint, &config)
        .with_context(|| format!("cannot mount on {}", mountpoint.display()))?;
    let unmounter = session.unmount_callable();
    let mnt = mountpoint.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || wait_for_signal_then_unmount(unmounter, &mnt))
        .context("cannot start the signal thread")?;
    eprintln!(
        "fuse-mirror: {} mirrored at {} (SIGINT/SIGTERM unmounts)",
        backing.display(),
        mountpoint.display()
    );
    session
        .run()
        .with_context(|| format!("FUSE session on {} failed", mountpoint.display()))?;
    eprintln!("fuse-mirror: {} unmounted", mountpoint.display());
    Ok(())
}

/// Waits for SIGINT, SIGTERM or SIGHUP, then unmounts, which ends `Session::run`. Signals are
/// taken through tokio (safe, and it also replaces the SIG_IGN a non-interactive shell gives
/// to background jobs for SIGINT).
fn wait_for_signal_then_unmount(mut unmounter: fuser::SessionUnmounter, mnt: &Path) {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return eprintln!("fuse-mirror: no signal handling ({e}); unmount with fusermount3 -u")
        }
    };
    let got = rt.block_on(async {
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            _ = hup.recv() => "SIGHUP",
        };
        Ok::<_, std::io::Error>(name)
    });
    match got {
        Ok(name) => eprintln!("fuse-mirror: {name}, unmounting {}", mnt.display()),
        Err(e) => return eprintln!("fuse-mirror: cannot install signal handlers: {e}"),
    }
    if let Err(e) = unmounter.unmount() {
        // Busy (a process still uses it): detach now, the kernel finishes when it is idle.
        eprintln!(
            "fuse-mirror: unmount {} failed ({e}); detaching",
            mnt.display()
        );
        if let Err(e) = nix::mount::umount2(mnt, nix::mount::MntFlags::MNT_DETACH) {
            let ok = std::process::Command::new("fusermount3")
                .arg("-uz")
                .arg(mnt)
                .status();
            if !matches!(ok, Ok(s) if s.success()) {
                eprintln!(
                    "fuse-mirror: lazy unmount of {} failed too ({e})",
                    mnt.display()
                );
            }
        }
    }
}
