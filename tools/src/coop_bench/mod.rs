//! `shoal bench coop MOUNT...`: measures cooperative caching (issue 12) through mounts that
//! are clients of one cluster. It writes a shared working set (by default twice one
//! client's block cache), reads it from every mount at once in a round-robin or Zipf
//! pattern with cooperation switched on and then off (the `shoal.peer_reads` xattr), each
//! phase cold (`shoal.drop_caches`), counts where block reads were served from by
//! `shoal.stats` deltas, times 64 KiB misses served by a peer and by the storage servers,
//! checks every byte read, and removes its files and restores each mount's switch.
//!
//! Owns the runner (blocking file I/O on plain threads, never on the async runtime); the
//! schedule and content are in `plan`, the figures in `report`.

pub mod plan;
pub mod report;

use anyhow::{bail, ensure, Context, Result};
use plan::{Pattern, CHUNK, SAMPLE};
use report::{Counts, Latency, Phase, Report, Served, Setup};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The working set when neither `--working-set-mb` nor the mount's `cache_bytes` says:
/// twice the default client cache (256 MiB).
pub const DEFAULT_WORKING_SET: u64 = 512 << 20;
/// The longest an xattr command (`getfattr`/`setfattr`) may take.
const XATTR_TIMEOUT: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub mounts: Vec<PathBuf>,
    /// Bytes of the shared working set; `None`: twice the first mount's cache.
    pub working_set: Option<u64>,
    pub pattern: Pattern,
    pub passes: u32,
    /// 64 KiB blocks timed each way for the latency ratio.
    pub latency_samples: u64,
}

fn progress(what: &str) {
    eprintln!("[bench coop] {what}");
}

/// Runs `cmd` to completion within `XATTR_TIMEOUT`; its stdout on success.
fn run_bounded(cmd: &mut Command, what: &str) -> Result<Vec<u8>> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!("{what}: cannot run it (getfattr/setfattr: apt-get install attr)")
        })?;
    let started = Instant::now();
    while child.try_wait()?.is_none() {
        if started.elapsed() > XATTR_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what}: no answer within {XATTR_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out.stdout)
}

fn get_xattr(path: &Path, name: &str) -> Result<Vec<u8>> {
    run_bounded(
        Command::new("getfattr")
            .args(["-n", name, "--only-values"])
            .arg(path),
        &format!("getfattr -n {name} {}", path.display()),
    )
}

fn set_xattr(path: &Path, name: &str, value: &str) -> Result<()> {
    run_bounded(
        Command::new("setfattr")
            .args(["-n", name, "-v", value])
            .arg(path),
        &format!("setfattr -n {name} -v {value} {}", path.display()),
    )
    .map(|_| ())
}

/// A mount's `shoal.stats` as JSON.
fn stats_json(mount: &Path) -> Result<serde_json::Value> {
    let raw = get_xattr(mount, fuse_client::STATS_XATTR).with_context(|| {
        format!(
            "{} does not look like a Shoal mount (no {} xattr)",
            mount.display(),
            fuse_client::STATS_XATTR
        )
    })?;
    serde_json::from_slice(&raw).with_context(|| {
        format!(
            "{}: {} is not JSON",
            mount.display(),
            fuse_client::STATS_XATTR
        )
    })
}

fn counts(mount: &Path) -> Result<Counts> {
    Ok(serde_json::from_value(stats_json(mount)?)?)
}

fn all_counts(mounts: &[PathBuf]) -> Result<Vec<Counts>> {
    mounts.iter().map(|m| counts(m)).collect()
}

fn set_peer_reads(mount: &Path, on: bool) -> Result<()> {
    set_xattr(mount, fuse_client::PEER_READS_XATTR, if on { "1" } else { "0" }).with_context(
        || {
            format!(
                "cannot switch cooperative caching {} on {} (a client older than the {} switch, or configured with [client] peer_reads = false)",
                if on { "on" } else { "off" },
                mount.display(),
                fuse_client::PEER_READS_XATTR
            )
        },
    )
}

fn peer_reads(mount: &Path) -> Result<bool> {
    Ok(get_xattr(mount, fuse_client::PEER_READS_XATTR)?.trim_ascii() == b"1")
}

/// Drops one mount's client cache (not the kernel's: reads here bypass it).
fn drop_client_cache(mount: &Path) -> Result<()> {
    set_xattr(mount, fuse_client::DROP_CACHES_XATTR, "1")
}

/// Switches every mount on or off and drops every cache (client caches, and the kernel's
/// when root), so that a phase starts cold.
fn cold_start(mounts: &[PathBuf], coop: bool) -> Result<()> {
    for m in mounts {
        set_peer_reads(m, coop)?;
    }
    for m in mounts {
        drop_client_cache(m)?;
    }
    crate::bench::drop_caches(&mounts[0]);
    Ok(())
}

/// Opens `path` for reading past the kernel's page cache (O_DIRECT), or plainly where that
/// is refused.
fn open_direct(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .or_else(|_| File::open(path))
        .with_context(|| format!("open {}", path.display()))
}

/// A page-aligned buffer of `len` bytes, as O_DIRECT wants (safe: a sub-slice of a larger
/// vector).
struct Aligned {
    raw: Vec<u8>,
    at: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let raw = vec![0u8; len + 4096];
        let at = raw.as_ptr().align_offset(4096).min(4096);
        Aligned { raw, at, len }
    }
    fn buf(&mut self) -> &mut [u8] {
        &mut self.raw[self.at..self.at + self.len]
    }
}

/// Reads `len` bytes of working-set file `file` at `off` through `f` and checks them.
fn read_checked(
    f: &File,
    buf: &mut Aligned,
    expect: &mut [u8],
    run: u64,
    file: u64,
    off: u64,
    what: &Path,
) -> Result<()> {
    let b = buf.buf();
    let mut done = 0;
    // Bounded: every turn reads at least one byte or fails.
    while done < b.len() {
        let n = f
            .read_at(&mut b[done..], off + done as u64)
            .with_context(|| format!("read {} at {}", what.display(), off + done as u64))?;
        ensure!(
            n > 0,
            "{}: ends before {}",
            what.display(),
            off + b.len() as u64
        );
        done += n;
    }
    plan::fill(expect, run, file, off);
    if b != expect {
        let at = b
            .iter()
            .zip(expect.iter())
            .position(|(x, y)| x != y)
            .unwrap_or(0);
        bail!(
            "{}: bytes at {} differ from what was written (silent corruption)",
            what.display(),
            off + at as u64
        );
    }
    Ok(())
}

fn write_file(path: &Path, run: u64, file: u64, len: u64) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(CHUNK) as usize;
        plan::fill(&mut buf[..n], run, file, off);
        f.write_all(&buf[..n])
            .with_context(|| format!("write {}", path.display()))?;
        off += n as u64;
    }
    f.sync_all()
        .with_context(|| format!("fsync {}", path.display()))?;
    Ok(())
}

/// The run's files, seen from any mount.
struct Layout {
    /// The work directory's name (the same under every mount).
    dir: String,
    run: u64,
    /// Working-set file lengths.
    files: Vec<u64>,
}

impl Layout {
    fn file(&self, mount: &Path, f: u64) -> PathBuf {
        mount.join(&self.dir).join(format!("ws-{f}"))
    }
    fn latency_file(&self, mount: &Path) -> PathBuf {
        mount.join(&self.dir).join("latency")
    }
    /// The latency file is file number `files.len()` of the pattern.
    fn latency_index(&self) -> u64 {
        self.files.len() as u64
    }
}

/// Writes the working set, mount `f % n` writing file `f`, all mounts at once.
fn write_working_set(mounts: &[PathBuf], l: &Layout) -> Result<()> {
    std::thread::scope(|s| {
        let hs: Vec<_> = mounts
            .iter()
            .enumerate()
            .map(|(i, m)| {
                s.spawn(move || -> Result<()> {
                    for (f, len) in l.files.iter().enumerate().skip(i).step_by(mounts.len()) {
                        write_file(&l.file(m, f as u64), l.run, f as u64, *len)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in hs {
            h.join()
                .map_err(|_| anyhow::anyhow!("bench thread panicked"))??;
        }
        Ok(())
    })
}

/// One phase: every mount reads its schedule at once; wall time from a common start.
fn read_phase(mounts: &[PathBuf], l: &Layout, schedules: &[Vec<u64>]) -> Result<(u64, f64)> {
    let go = std::sync::Barrier::new(mounts.len() + 1);
    let (bytes, secs) = std::thread::scope(|s| {
        let hs: Vec<_> = mounts
            .iter()
            .zip(schedules)
            .map(|(m, sched)| {
                let go = &go;
                s.spawn(move || -> Result<u64> {
                    let opened: Result<Vec<File>> = (0..l.files.len() as u64)
                        .map(|f| open_direct(&l.file(m, f)))
                        .collect();
                    go.wait();
                    let files = opened?;
                    let mut buf = Aligned::new(CHUNK as usize);
                    let mut expect = vec![0u8; CHUNK as usize];
                    let mut bytes = 0;
                    for &c in sched {
                        let (f, off) = plan::chunk_place(c);
                        // Files hold whole chunks (`plan::files`).
                        let len = CHUNK as usize;
                        read_checked(
                            &files[f as usize],
                            &mut buf,
                            &mut expect,
                            l.run,
                            f,
                            off,
                            &l.file(m, f),
                        )?;
                        bytes += len as u64;
                    }
                    Ok(bytes)
                })
            })
            .collect();
        go.wait();
        let start = Instant::now();
        let mut bytes = 0;
        let mut failed = None;
        for h in hs {
            match h.join() {
                Ok(Ok(b)) => bytes += b,
                Ok(Err(e)) => failed = failed.or(Some(e)),
                Err(_) => failed = failed.or(Some(anyhow::anyhow!("bench thread panicked"))),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok((bytes, start.elapsed().as_secs_f64())),
        }
    })?;
    Ok((bytes, secs))
}

/// Writes the latency file: one 64 KiB block every `plan::STRIDE` bytes (holes between),
/// for the warm-up block 0 and samples 1..=`samples`.
fn write_latency_file(path: &Path, l: &Layout, samples: u64) -> Result<()> {
    let f = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut buf = vec![0u8; SAMPLE as usize];
    for b in 0..=samples {
        let off = b * plan::STRIDE;
        plan::fill(&mut buf, l.run, l.latency_index(), off);
        f.write_all_at(&buf, off)
            .with_context(|| format!("write {}", path.display()))?;
    }
    f.sync_all()
        .with_context(|| format!("fsync {}", path.display()))?;
    Ok(())
}

/// Reads latency-file blocks `blocks` through `mount`, checked; with `want`, times each
/// read and keeps it when its `shoal.stats` delta says it was served as wanted.
fn read_samples(
    mount: &Path,
    l: &Layout,
    blocks: &[u64],
    want: Option<(Served, &mut Latency)>,
) -> Result<u64> {
    let path = l.latency_file(mount);
    let f = open_direct(&path)?;
    let mut buf = Aligned::new(SAMPLE as usize);
    let mut expect = vec![0u8; SAMPLE as usize];
    let mut verified = 0;
    let mut want = want;
    for &b in blocks {
        let before = match want {
            Some(_) => Some(counts(mount)?),
            None => None,
        };
        let started = Instant::now();
        read_checked(
            &f,
            &mut buf,
            &mut expect,
            l.run,
            l.latency_index(),
            b * plan::STRIDE,
            &path,
        )?;
        let us = started.elapsed().as_micros() as u64;
        verified += SAMPLE;
        if let (Some((kind, lat)), Some(before)) = (want.as_mut(), before) {
            let served = report::classify(&counts(mount)?.since(&before));
            match (served, *kind) {
                (Served::Peer, Served::Peer) => lat.peer_us.push(us),
                (Served::Storage, Served::Storage) => lat.storage_us.push(us),
                _ => lat.other += 1,
            }
        }
    }
    Ok(verified)
}

/// How long mount 1's holding the latency samples takes to reach the managers (clients
/// report what they cache in batches, once a second).
const REPORT_WAIT: Duration = Duration::from_millis(2500);

/// Latency of a 64 KiB local miss: mount 1 reads the sample blocks (it then holds them, and
/// after `REPORT_WAIT` the managers know it); mount 2, cold, reads the warm-up block untimed (extents, lease) and then each sample
/// once with peers on; then, its cache dropped and peers off, the same again (storage
/// servers). Samples are 2 MiB apart, in shuffled order, so no read looks sequential.
fn measure_latency(mounts: &[PathBuf], l: &Layout, samples: u64) -> Result<(Latency, u64)> {
    let (holder, reader) = (&mounts[0], &mounts[1]);
    cold_start(mounts, true)?;
    let order: Vec<u64> = plan::sample_order(samples, l.run)
        .into_iter()
        .map(|b| b + 1)
        .collect();
    let mut verified = read_samples(holder, l, &order, None)?;
    // Clients report the windows they cache blocks of to the managers once a second.
    std::thread::sleep(REPORT_WAIT);
    let mut lat = Latency::default();
    progress(&format!(
        "latency: {samples} 64 KiB misses on mount 2 of blocks mount 1 holds, peers on"
    ));
    verified += read_samples(reader, l, &[0], None)?;
    verified += read_samples(reader, l, &order, Some((Served::Peer, &mut lat)))?;
    progress(&format!(
        "latency: the same {samples} misses with peers off (storage servers)"
    ));
    set_peer_reads(reader, false)?;
    drop_client_cache(reader)?;
    verified += read_samples(reader, l, &[0], None)?;
    verified += read_samples(reader, l, &order, Some((Served::Storage, &mut lat)))?;
    // On loopback the storage servers' fragments are still in this machine's page cache,
    // which a storage server with a disk of its own would have to read.
    match drop_page_cache() {
        Ok(()) => {
            progress(&format!(
                "latency: the same {samples} misses with peers off, the page cache dropped"
            ));
            drop_client_cache(reader)?;
            let mut cold = Latency::default();
            verified += read_samples(reader, l, &[0], None)?;
            verified += read_samples(reader, l, &order, Some((Served::Storage, &mut cold)))?;
            lat.storage_cold_us = cold.storage_us;
            lat.page_cache_dropped = true;
            lat.other += cold.other;
        }
        Err(e) => progress(&format!(
            "latency with the page cache dropped not measured: {e:#}"
        )),
    }
    Ok((lat, verified))
}

/// Writes dirty pages back and drops this machine's page cache (root only).
fn drop_page_cache() -> Result<()> {
    run_bounded(&mut Command::new("sync"), "sync")?;
    std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/sys/vm/drop_caches")
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"1"))
        .context("cannot drop the page cache (/proc/sys/vm/drop_caches; needs root)")
}

fn check_mounts(mounts: &[PathBuf]) -> Result<()> {
    ensure!(
        mounts.len() >= 2,
        "give at least two mounts of one cluster (e.g. those of `shoal up --clients 4`)"
    );
    let mut seen = Vec::new();
    for m in mounts {
        ensure!(
            m.is_dir(),
            "{} is not a directory: pass mounted Shoal clients",
            m.display()
        );
        let c = fs::canonicalize(m).with_context(|| format!("{}", m.display()))?;
        ensure!(
            !seen.contains(&c),
            "{} is given twice: pass each mount once",
            m.display()
        );
        seen.push(c);
    }
    Ok(())
}

/// Runs the whole benchmark; files and switches are put back whatever happens.
pub fn run(o: &Options) -> Result<Report> {
    check_mounts(&o.mounts)?;
    let first = stats_json(&o.mounts[0])?;
    let mut initial = Vec::new();
    for m in &o.mounts {
        stats_json(m)?;
        initial.push(peer_reads(m).with_context(|| {
            format!(
                "{}: no {} switch (a Shoal client older than this bench?)",
                m.display(),
                fuse_client::PEER_READS_XATTR
            )
        })?);
    }
    let cache_bytes = first.get("cache_bytes").and_then(|v| v.as_u64());
    let ws = o.working_set.unwrap_or_else(|| {
        cache_bytes
            .filter(|&c| c > 0)
            .map(|c| 2 * c)
            .unwrap_or(DEFAULT_WORKING_SET)
    });
    let chunks = ws.div_ceil(CHUNK).max(1);
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ std::process::id() as u64;
    let l = Layout {
        dir: format!(".shoal-bench-coop-{}", std::process::id()),
        run,
        files: plan::files(chunks),
    };
    let work = o.mounts[0].join(&l.dir);
    fs::create_dir(&work)
        .with_context(|| format!("cannot create {} (is the mount writable?)", work.display()))?;
    let result = run_in(o, &l, chunks, cache_bytes);
    // Put everything back, whatever happened.
    for (m, on) in o.mounts.iter().zip(&initial) {
        if let Err(e) = set_peer_reads(m, *on) {
            eprintln!("warning: {e:#}");
        }
    }
    if let Err(e) = fs::remove_dir_all(&work) {
        eprintln!("warning: cannot remove {}: {e}", work.display());
    }
    result
}

fn run_in(o: &Options, l: &Layout, chunks: u64, cache_bytes: Option<u64>) -> Result<Report> {
    let mounts = &o.mounts;
    for m in &mounts[1..] {
        ensure!(
            m.join(&l.dir).is_dir(),
            "{} does not see {} created through {}: the mounts must be clients of one cluster",
            m.display(),
            l.dir,
            mounts[0].display()
        );
    }
    let samples = o.latency_samples.max(1);
    progress(&format!(
        "writing a working set of {} MiB in {} files through {} mounts, and {} latency blocks",
        (chunks * CHUNK) >> 20,
        l.files.len(),
        mounts.len(),
        samples + 1
    ));
    write_working_set(mounts, l)?;
    write_latency_file(&l.latency_file(&mounts[0]), l, samples)?;
    let schedules: Vec<Vec<u64>> = (0..mounts.len())
        .map(|i| plan::schedule(o.pattern, i, mounts.len(), chunks, o.passes, l.run))
        .collect();
    let mut phases = Vec::new();
    let mut verified = 0;
    for coop in [true, false] {
        progress(&format!(
            "cooperation {}: {} mounts read {} x {} MiB ({}), cold",
            if coop { "on" } else { "off" },
            mounts.len(),
            o.passes,
            chunks,
            o.pattern.name()
        ));
        cold_start(mounts, coop)?;
        let before = all_counts(mounts)?;
        let (bytes, seconds) = read_phase(mounts, l, &schedules)?;
        let after = all_counts(mounts)?;
        verified += bytes;
        phases.push(Phase {
            per_mount: after.iter().zip(&before).map(|(a, b)| a.since(b)).collect(),
            bytes,
            seconds,
        });
    }
    let (lat, v) = measure_latency(mounts, l, samples)?;
    verified += v;
    let setup = Setup {
        mounts: mounts.iter().map(|m| m.display().to_string()).collect(),
        pattern: o.pattern.name(),
        passes: o.passes,
        working_set_bytes: chunks * CHUNK,
        cache_bytes,
        read_bytes: CHUNK,
    };
    Ok(report::report(
        setup, &phases[0], &phases[1], &lat, verified,
    ))
}
