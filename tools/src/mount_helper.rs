//! The mount helper: `mount -t fuse.shoal CLUSTER_DIR MOUNTPOINT [-o OPTIONS]` and fstab
//! lines of type `fuse.shoal`. mount(8) runs `mount.fuse.shoal SPEC DIR -o OPTS` when that
//! exists (`ln -s $(command -v shoal) /sbin/mount.fuse.shoal`), else fuse3's `mount.fuse`,
//! which runs `shoal SPEC DIR -o OPTS` from PATH; both forms land here (argv[0], or a first
//! argument that is a path to a directory holding cluster.toml).
//!
//! Owns the translation of mount options into `shoal mount` arguments (pure, unit-tested)
//! and the daemon start: it starts `shoal mount` detached (own process group, output to a
//! log file), waits until the mount shows in /proc/self/mountinfo or the child fails, and
//! exits, as mount(8) expects. Must not run the file system itself (the child does), and
//! must not start an async runtime (it is plain process handling before any).

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the helper waits for the mount to appear.
const MOUNT_WAIT: Duration = Duration::from_secs(60);

/// Whether this process was started as a mount helper, judged by argv.
pub fn invoked_as_helper(args: &[OsString]) -> bool {
    let name = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if name == "mount.fuse.shoal" || name == "mount.shoal" {
        return true;
    }
    // fuse3's mount.fuse runs `shoal SPEC DIR -o OPTS`: a path, not a subcommand.
    args.get(1).is_some_and(|a| {
        a.to_string_lossy().contains('/') && Path::new(a).join("cluster.toml").is_file()
    })
}

/// A mount helper invocation.
#[derive(Debug, PartialEq, Eq)]
pub struct HelperArgs {
    pub spec: PathBuf,
    pub dir: PathBuf,
    pub options: Vec<String>,
    /// `-f`: do everything but mount.
    pub fake: bool,
    pub verbose: bool,
}

/// Parses `SPEC DIR [-sfnv] [-o OPTS]... [-t TYPE]` (options may come anywhere).
pub fn parse(args: &[OsString]) -> Result<HelperArgs> {
    let mut pos = Vec::new();
    let mut options = Vec::new();
    let (mut fake, mut verbose) = (false, false);
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "-o" {
            let v = it.next().context("-o needs a value")?;
            options.extend(split(&v.to_string_lossy()));
        } else if let Some(v) = s.strip_prefix("-o") {
            options.extend(split(v));
        } else if s == "-t" || s == "-N" {
            it.next().with_context(|| format!("{s} needs a value"))?;
        } else if s.starts_with('-') && s.len() > 1 {
            for c in s[1..].chars() {
                match c {
                    'f' => fake = true,
                    'v' => verbose = true,
                    's' | 'n' => {}
                    other => bail!("unknown mount helper flag -{other}"),
                }
            }
        } else {
            pos.push(PathBuf::from(a));
        }
    }
    let [spec, dir] = <[PathBuf; 2]>::try_from(pos).map_err(|p| {
        anyhow::anyhow!(
            "usage: mount -t fuse.shoal CLUSTER_DIR MOUNTPOINT [-o OPTIONS] (got {} paths)",
            p.len()
        )
    })?;
    Ok(HelperArgs {
        spec,
        dir,
        options,
        fake,
        verbose,
    })
}

fn split(v: &str) -> impl Iterator<Item = String> + '_ {
    v.split(',').filter(|o| !o.is_empty()).map(str::to_string)
}

/// The `shoal mount` arguments for `h`, and the log file (option `log=FILE`).
pub fn mount_argv(h: &HelperArgs) -> Result<(Vec<OsString>, Option<PathBuf>)> {
    let mut argv: Vec<OsString> = vec!["mount".into(), "--cluster".into(), h.spec.clone().into()];
    let mut kernel = Vec::new();
    let mut log = None;
    for o in &h.options {
        let (k, v) = match o.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (o.as_str(), None),
        };
        match (k, v) {
            ("as", Some(name)) => argv.extend(["--as".into(), name.into()]),
            ("http", Some(addr)) => argv.extend(["--http".into(), addr.into()]),
            ("log", Some(path)) => log = Some(PathBuf::from(path)),
            ("allow_other", None) => argv.push("--allow-other".into()),
            // Options for mount(8) and fstab, not for the file system; fuse3's mount.fuse
            // adds dev,suid for root, but helper mounts stay nosuid,nodev (`shoal mount
            // --suid --dev` is the explicit way).
            ("defaults" | "auto" | "noauto" | "nofail" | "_netdev" | "user" | "users"
            | "nouser" | "owner" | "group" | "nosuid" | "nodev" | "suid" | "dev", None) => {}
            (k, _) if k.starts_with("x-") || k == "comment" => {}
            ("ro" | "rw" | "noatime" | "atime" | "relatime" | "exec" | "noexec" | "sync"
            | "async" | "dirsync", None) => kernel.push(o.clone()),
            _ => bail!("unknown mount option {o:?}: shoal takes as=NAME, http=ADDR, log=FILE, allow_other, ro, rw, noatime, exec/noexec, sync/async/dirsync (and fstab's defaults, noauto, nofail, _netdev, x-*)"),
        }
    }
    if !kernel.is_empty() {
        argv.extend(["--options".into(), kernel.join(",").into()]);
    }
    argv.push(h.dir.clone().into());
    Ok((argv, log))
}

/// Whether `dir` is a mount point of a FUSE file system now.
fn fuse_mounted_at(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = dir.to_string_lossy().replace(' ', "\\040");
    info.lines().any(|l| {
        let mut f = l.split(' ');
        let point = f.nth(4);
        let fstype = l.split(" - ").nth(1).and_then(|r| r.split(' ').next());
        point == Some(want.as_str()) && fstype.is_some_and(|t| t.starts_with("fuse"))
    })
}

/// Runs the helper: starts `shoal mount` detached and waits for the mount. Exit code.
pub fn run(args: &[OsString]) -> Result<i32> {
    let h = parse(args)?;
    let dir = std::fs::canonicalize(&h.dir).with_context(|| {
        format!(
            "mountpoint {} is not usable: create it with `mkdir -p {}`",
            h.dir.display(),
            h.dir.display()
        )
    })?;
    let h = HelperArgs { dir, ..h };
    let (argv, log) = mount_argv(&h)?;
    let log = match log {
        Some(l) => l,
        None => default_log(&h.dir),
    };
    let exe = std::env::current_exe().context("cannot find the shoal executable")?;
    if h.verbose || h.fake {
        println!("{} {}", exe.display(), shown(&argv));
    }
    if h.fake {
        return Ok(0);
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| {
            format!(
                "cannot open the mount log {} (give -o log=FILE)",
                log.display()
            )
        })?;
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(&exe)
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let deadline = Instant::now() + MOUNT_WAIT;
    loop {
        if let Some(status) = child.try_wait()? {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let last = tail
                .lines()
                .rev()
                .find(|l| l.starts_with("error"))
                .unwrap_or("see the log");
            bail!(
                "shoal mount exited ({status}) before mounting {}: {last} (log: {})",
                h.dir.display(),
                log.display()
            );
        }
        if fuse_mounted_at(&h.dir) {
            println!(
                "shoal: mounted {} at {} (pid {}, log {})",
                h.spec.display(),
                h.dir.display(),
                child.id(),
                log.display()
            );
            return Ok(0);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{} was not mounted within {MOUNT_WAIT:?} (log: {})",
                h.dir.display(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `/run/shoal/mount-<escaped mountpoint>.log` when /run/shoal can be made, else the
/// same name in the temp directory.
fn default_log(dir: &Path) -> PathBuf {
    let name = format!("mount{}.log", dir.to_string_lossy().replace('/', "-"));
    let run = Path::new("/run/shoal");
    if std::fs::create_dir_all(run).is_ok() {
        run.join(name)
    } else {
        std::env::temp_dir().join(name)
    }
}

fn shown(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_mount_and_fuse_helper_forms() {
        let h = parse(&os(&[
            "mount.fuse.shoal",
            "/etc/shoal",
            "/mnt/x",
            "-o",
            "rw,as=alice",
            "-n",
        ]))
        .expect("parse");
        assert_eq!(h.spec, PathBuf::from("/etc/shoal"));
        assert_eq!(h.dir, PathBuf::from("/mnt/x"));
        assert_eq!(h.options, vec!["rw", "as=alice"]);
        let h = parse(&os(&["shoal", "/c", "/m", "-oro", "-o", "noatime", "-fv"])).expect("parse");
        assert_eq!(h.options, vec!["ro", "noatime"]);
        assert!(h.fake && h.verbose);
        assert!(parse(&os(&["mount.shoal", "/only-one"])).is_err());
    }

    #[test]
    fn options_become_shoal_mount_arguments() {
        let h = HelperArgs {
            spec: "/c".into(),
            dir: "/m".into(),
            options: [
                "ro",
                "as=bob",
                "http=127.0.0.1:9500",
                "noatime",
                "defaults",
                "_netdev",
                "x-systemd.automount",
                "log=/tmp/l",
                "allow_other",
            ]
            .map(String::from)
            .to_vec(),
            fake: false,
            verbose: false,
        };
        let (argv, log) = mount_argv(&h).expect("argv");
        assert_eq!(
            shown(&argv),
            "mount --cluster /c --as bob --http 127.0.0.1:9500 --allow-other --options ro,noatime /m"
        );
        assert_eq!(log, Some(PathBuf::from("/tmp/l")));
        let bad = HelperArgs {
            options: vec!["frobnicate".into()],
            ..h
        };
        let e = mount_argv(&bad).expect_err("unknown option");
        assert!(e.to_string().contains("frobnicate"), "{e}");
    }

    #[test]
    fn recognises_helper_invocations() {
        assert!(invoked_as_helper(&os(&[
            "/sbin/mount.fuse.shoal",
            "a",
            "b"
        ])));
        assert!(invoked_as_helper(&os(&["mount.shoal"])));
        assert!(!invoked_as_helper(&os(&[
            "shoal",
            "status",
            "--cluster",
            "/x"
        ])));
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("cluster.toml"), "").expect("write");
        assert!(invoked_as_helper(&[
            OsString::from("shoal"),
            d.path().as_os_str().to_owned(),
            OsString::from("/mnt")
        ]));
    }
}
