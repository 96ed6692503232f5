//! `shoal bench`: a fixed, standard workload run on a directory and on baseline directories
//! in the same run, printed as one table with ratios to the first baseline. Owns workload
//! definitions and reporting; it knows nothing of Shoal's internals beyond dropping a
//! mount's client cache through the `shoal.drop_caches` xattr (ignored elsewhere).

use anyhow::{bail, Context, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Sizes of one run.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub seq_bytes: u64,
    pub random_secs: f64,
    pub meta_files: usize,
    pub small_files: usize,
    pub small_dirs: usize,
    pub jobs: usize,
    /// File-server mix: files each job starts with, and operations each job then runs.
    pub mix_files: usize,
    pub mix_ops: usize,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            seq_bytes: 1 << 30,
            random_secs: 10.0,
            meta_files: 10_000,
            small_files: 10_000,
            small_dirs: 100,
            jobs: 4,
            mix_files: 1_000,
            mix_ops: 10_000,
        }
    }
    pub fn quick() -> Plan {
        Plan {
            seq_bytes: 256 << 20,
            random_secs: 3.0,
            meta_files: 2_000,
            small_files: 2_000,
            small_dirs: 20,
            jobs: 4,
            mix_files: 250,
            mix_ops: 2_500,
        }
    }
}

/// One measured figure.
#[derive(Clone, Debug)]
pub struct Figure {
    pub test: &'static str,
    pub unit: &'static str,
    pub value: f64,
}

/// All figures of one target directory.
#[derive(Clone, Debug)]
pub struct TargetResult {
    pub label: String,
    pub dir: PathBuf,
    pub figures: Vec<Figure>,
}

const MIB: f64 = 1024.0 * 1024.0;

fn progress(label: &str, what: &str) {
    eprintln!("[bench] {label}: {what}");
}

/// Drops the kernel page cache (root only) and the Shoal client cache of `dir`'s mount.
pub fn drop_caches(dir: &Path) {
    // The Shoal client drops its block cache when this xattr is set on any of its files;
    // other file systems refuse it, which is fine. `setfattr` comes with the attr package.
    let _ = std::process::Command::new("setfattr")
        .args(["-n", "shoal.drop_caches", "-v", "1"])
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .status();
    // `sync` first so that dirty pages can be dropped too.
    let _ = std::process::Command::new("sync").status();
    if let Ok(mut f) = OpenOptions::new()
        .write(true)
        .open("/proc/sys/vm/drop_caches")
    {
        let _ = f.write_all(b"3");
    }
}

fn pattern(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

fn seq_write(dir: &Path, bytes: u64) -> Result<f64> {
    let path = dir.join("seqfile");
    let mut buf = vec![0u8; 1 << 20];
    pattern(&mut buf, 7);
    let start = Instant::now();
    let mut f = File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let mut done = 0;
    while done < bytes {
        f.write_all(&buf)?;
        done += buf.len() as u64;
    }
    f.sync_all()?;
    drop(f);
    Ok(bytes as f64 / MIB / start.elapsed().as_secs_f64())
}

fn seq_read(dir: &Path, bytes: u64) -> Result<f64> {
    let path = dir.join("seqfile");
    let mut buf = vec![0u8; 1 << 20];
    let start = Instant::now();
    let mut f = File::open(&path)?;
    let mut done = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        done += n as u64;
    }
    if done != bytes {
        bail!("read {done} bytes of {bytes} from {}", path.display());
    }
    Ok(bytes as f64 / MIB / start.elapsed().as_secs_f64())
}

fn rand_io(dir: &Path, file_bytes: u64, secs: f64, write: bool) -> Result<f64> {
    let path = dir.join("seqfile");
    let f = OpenOptions::new().read(true).write(write).open(&path)?;
    let blocks = file_bytes / 4096;
    let mut buf = vec![0u8; 4096];
    pattern(&mut buf, 3);
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let start = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    let mut ops = 0u64;
    while start.elapsed() < limit && ops < 10_000_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = (x % blocks) * 4096;
        if write {
            f.write_all_at(&buf, off)?;
        } else {
            f.read_exact_at(&mut buf, off)?;
        }
        ops += 1;
    }
    if write {
        f.sync_all()?;
    }
    Ok(ops as f64 / start.elapsed().as_secs_f64())
}

fn par<F>(jobs: usize, f: F) -> Result<f64>
where
    F: Fn(usize) -> Result<u64> + Sync,
{
    let start = Instant::now();
    let total = std::thread::scope(|s| {
        let f = &f;
        let hs: Vec<_> = (0..jobs).map(|j| s.spawn(move || f(j))).collect();
        let mut total = 0u64;
        for h in hs {
            total += h
                .join()
                .map_err(|_| anyhow::anyhow!("bench thread panicked"))??;
        }
        Ok::<u64, anyhow::Error>(total)
    })?;
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Passes over the files of the warm stat test.
const WARM_STAT_PASSES: usize = 5;

fn meta(dir: &Path, plan: &Plan, jobs: usize, out: &mut Vec<Figure>, suffix: bool) -> Result<()> {
    let root = dir.join(if suffix { "meta-par" } else { "meta" });
    fs::create_dir_all(&root)?;
    let per = plan.meta_files / jobs;
    let names = |j: usize| (0..per).map(move |i| format!("f{j}-{i}"));
    let create = par(jobs, |j| {
        for n in names(j) {
            File::create(root.join(n))?;
        }
        Ok(per as u64)
    })?;
    drop_caches(dir);
    let stat = par(jobs, |j| {
        for n in names(j) {
            fs::metadata(root.join(n))?;
        }
        Ok(per as u64)
    })?;
    // Again, now that the client holds the files' leases (and the kernel their attributes
    // for the lease's remaining time): what `ls -l` or a build's stat storm sees.
    let warm = par(jobs, |j| {
        for _ in 0..WARM_STAT_PASSES {
            for n in names(j) {
                fs::metadata(root.join(n))?;
            }
        }
        Ok((per * WARM_STAT_PASSES) as u64)
    })?;
    let unlink = par(jobs, |j| {
        for n in names(j) {
            fs::remove_file(root.join(n))?;
        }
        Ok(per as u64)
    })?;
    let small_root = dir.join(if suffix { "small-par" } else { "small" });
    let dirs = plan.small_dirs;
    for d in 0..dirs {
        fs::create_dir_all(small_root.join(format!("d{d}")))?;
    }
    let mut data = vec![0u8; 4096];
    pattern(&mut data, 11);
    let small_per = plan.small_files / jobs;
    let small = par(jobs, |j| {
        for i in 0..small_per {
            let p = small_root
                .join(format!("d{}", (i + j * small_per) % dirs))
                .join(format!("s{j}-{i}"));
            let mut f = File::create(p)?;
            f.write_all(&data)?;
        }
        Ok(small_per as u64)
    })?;
    let (c, s, sw, u, w) = if suffix {
        (
            "create x4 (files/s)",
            "stat x4, cold (files/s)",
            "stat x4, warm (files/s)",
            "unlink x4 (files/s)",
            "4K files in 100 dirs x4 (files/s)",
        )
    } else {
        (
            "create (files/s)",
            "stat, cold (files/s)",
            "stat, warm (files/s)",
            "unlink (files/s)",
            "4K files in 100 dirs (files/s)",
        )
    };
    out.push(Figure {
        test: c,
        unit: "files/s",
        value: create,
    });
    out.push(Figure {
        test: s,
        unit: "files/s",
        value: stat,
    });
    out.push(Figure {
        test: sw,
        unit: "files/s",
        value: warm,
    });
    out.push(Figure {
        test: u,
        unit: "files/s",
        value: unlink,
    });
    out.push(Figure {
        test: w,
        unit: "files/s",
        value: small,
    });
    let _ = fs::remove_dir_all(&small_root);
    let _ = fs::remove_dir_all(&root);
    Ok(())
}

/// Directories of one job's tree in the file-server mix.
const MIX_DIRS: usize = 10;

/// What one job of the file-server mix did.
#[derive(Default)]
struct MixTally {
    bytes: u64,
    ops: u64,
    /// Latency of every operation, in microseconds.
    lat_us: Vec<u64>,
}

/// One job of the file-server mix: real syscalls on its own tree of `MIX_DIRS` directories
/// (under `root/j<job>`), which it fills with `plan.mix_files` files (4-64 KiB), then runs
/// `plan.mix_ops` operations: 20% create + write + close of a new file, 10% append 4 KiB,
/// 20% read a whole file, 10% rename into another directory, 30% stat, 10% delete.
/// Only the operations are timed and tallied.
fn mix_job(root: &Path, job: usize, plan: &Plan, go: &std::sync::Barrier) -> Result<MixTally> {
    let top = root.join(format!("j{job}"));
    for d in 0..MIX_DIRS {
        fs::create_dir_all(top.join(format!("d{d}")))?;
    }
    let mut data = vec![0u8; 64 << 10];
    pattern(&mut data, 13 + job as u64);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d ^ (job as u64 + 1).wrapping_mul(0x9e37_79b9);
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n.max(1)
    };
    let mut next_name = 0u64;
    let mut files: Vec<PathBuf> = Vec::new();
    let mut new_file = |rnd: &mut dyn FnMut(u64) -> u64| {
        next_name += 1;
        top.join(format!("d{}", rnd(MIX_DIRS as u64)))
            .join(format!("f{next_name}"))
    };
    let create = |p: &Path, len: usize| -> Result<()> {
        let mut f = File::create(p).with_context(|| format!("create {}", p.display()))?;
        f.write_all(&data[..len])?;
        Ok(())
    };
    for _ in 0..plan.mix_files {
        let p = new_file(&mut rnd);
        create(&p, 4096 * (1 + rnd(16) as usize))?;
        files.push(p);
    }
    go.wait();
    let mut t = MixTally::default();
    let mut buf = Vec::with_capacity(64 << 10);
    for _ in 0..plan.mix_ops {
        let op = rnd(10);
        // Operations on an existing file need one; create when the tree ran empty.
        let op = if files.is_empty() { 0 } else { op };
        let started = Instant::now();
        match op {
            0 | 1 => {
                let p = new_file(&mut rnd);
                let len = 4096 * (1 + rnd(16) as usize);
                create(&p, len)?;
                t.bytes += len as u64;
                files.push(p);
            }
            2 => {
                let p = &files[rnd(files.len() as u64) as usize];
                let mut f = OpenOptions::new().append(true).open(p)?;
                f.write_all(&data[..4096])?;
                t.bytes += 4096;
            }
            3 | 4 => {
                let p = &files[rnd(files.len() as u64) as usize];
                buf.clear();
                File::open(p)?.read_to_end(&mut buf)?;
                t.bytes += buf.len() as u64;
            }
            5 => {
                let i = rnd(files.len() as u64) as usize;
                let to = new_file(&mut rnd);
                fs::rename(&files[i], &to)
                    .with_context(|| format!("rename {}", files[i].display()))?;
                files[i] = to;
            }
            6..=8 => {
                let p = &files[rnd(files.len() as u64) as usize];
                fs::metadata(p).with_context(|| format!("stat {}", p.display()))?;
            }
            _ => {
                let p = files.swap_remove(rnd(files.len() as u64) as usize);
                fs::remove_file(&p).with_context(|| format!("unlink {}", p.display()))?;
            }
        }
        t.lat_us.push(started.elapsed().as_micros() as u64);
        t.ops += 1;
    }
    Ok(t)
}

/// The file-server mix with `plan.jobs` threads: MB/s (data written and read), ops/s, and
/// the p99 and worst latency of one operation in ms.
fn file_server(dir: &Path, plan: &Plan, out: &mut Vec<Figure>) -> Result<()> {
    let root = dir.join("fileserver");
    fs::create_dir_all(&root)?;
    let jobs = plan.jobs.max(1);
    let go = std::sync::Barrier::new(jobs + 1);
    let (tallies, secs) = std::thread::scope(|s| {
        let hs: Vec<_> = (0..jobs)
            .map(|j| {
                let (root, go) = (&root, &go);
                s.spawn(move || {
                    let r = mix_job(root, j, plan, go);
                    if r.is_err() {
                        // Do not leave the others waiting at the barrier.
                        go.wait();
                    }
                    r
                })
            })
            .collect();
        go.wait();
        let start = Instant::now();
        let mut tallies = Vec::new();
        for h in hs {
            tallies.push(
                h.join()
                    .map_err(|_| anyhow::anyhow!("bench thread panicked"))?,
            );
        }
        Ok::<_, anyhow::Error>((tallies, start.elapsed().as_secs_f64()))
    })?;
    let tallies = tallies.into_iter().collect::<Result<Vec<_>>>()?;
    let bytes: u64 = tallies.iter().map(|t| t.bytes).sum();
    let ops: u64 = tallies.iter().map(|t| t.ops).sum();
    let mut lat: Vec<u64> = tallies.into_iter().flat_map(|t| t.lat_us).collect();
    lat.sort_unstable();
    let p99 = lat
        .get((lat.len() * 99 / 100).min(lat.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0);
    let worst = lat.last().copied().unwrap_or(0);
    let _ = fs::remove_dir_all(&root);
    out.push(Figure {
        test: "file-server mix x4 (MB/s)",
        unit: "MB/s",
        value: bytes as f64 / 1e6 / secs,
    });
    out.push(Figure {
        test: "file-server mix x4 (ops/s)",
        unit: "ops/s",
        value: ops as f64 / secs,
    });
    out.push(Figure {
        test: "file-server p99 latency (ms)",
        unit: "ms",
        value: p99 as f64 / 1000.0,
    });
    out.push(Figure {
        test: "file-server worst latency (ms)",
        unit: "ms",
        value: worst as f64 / 1000.0,
    });
    Ok(())
}

/// Runs the whole workload on one directory.
pub fn run_target(label: &str, dir: &Path, plan: &Plan) -> Result<TargetResult> {
    if !dir.is_dir() {
        bail!(
            "{} is not a directory: pass a mounted file system or an existing directory",
            dir.display()
        );
    }
    let work = dir.join(format!(".shoal-bench-{}", std::process::id()));
    fs::create_dir_all(&work)
        .with_context(|| format!("cannot create {} (is it writable?)", work.display()))?;
    let result = (|| {
        let mut figures = Vec::new();
        progress(
            label,
            &format!("sequential write {} MiB", plan.seq_bytes >> 20),
        );
        figures.push(Figure {
            test: "seq write 1M + fsync (MiB/s)",
            unit: "MiB/s",
            value: seq_write(&work, plan.seq_bytes)?,
        });
        drop_caches(dir);
        progress(label, "cold sequential read");
        figures.push(Figure {
            test: "seq read 1M, cold (MiB/s)",
            unit: "MiB/s",
            value: seq_read(&work, plan.seq_bytes)?,
        });
        drop_caches(dir);
        progress(label, "4K random read QD1");
        figures.push(Figure {
            test: "4K rand read QD1 (IOPS)",
            unit: "IOPS",
            value: rand_io(&work, plan.seq_bytes, plan.random_secs, false)?,
        });
        progress(label, "4K random write QD1");
        figures.push(Figure {
            test: "4K rand write QD1 (IOPS)",
            unit: "IOPS",
            value: rand_io(&work, plan.seq_bytes, plan.random_secs, true)?,
        });
        let _ = fs::remove_file(work.join("seqfile"));
        progress(
            label,
            &format!("metadata: {} files, 1 job", plan.meta_files),
        );
        meta(&work, plan, 1, &mut figures, false)?;
        progress(
            label,
            &format!("metadata: {} files, {} jobs", plan.meta_files, plan.jobs),
        );
        meta(&work, plan, plan.jobs, &mut figures, true)?;
        progress(
            label,
            &format!(
                "file-server mix: {} jobs, {} files and {} operations each",
                plan.jobs, plan.mix_files, plan.mix_ops
            ),
        );
        file_server(&work, plan, &mut figures)?;
        Ok(TargetResult {
            label: label.to_string(),
            dir: dir.to_path_buf(),
            figures,
        })
    })();
    let _ = fs::remove_dir_all(&work);
    result
}

/// The table: one row per test, one column per target (absolute figures), then one column
/// per target with its ratio to the first baseline (the second target).
pub fn table(results: &[TargetResult]) -> String {
    let mut s = String::new();
    let Some(first) = results.first() else {
        return s;
    };
    let base = results.get(1);
    let ratio_cols: Vec<&TargetResult> = match base {
        Some(b) => results.iter().filter(|r| !std::ptr::eq(*r, b)).collect(),
        None => Vec::new(),
    };
    s.push_str(&format!("| {:<34} |", "test"));
    for r in results {
        s.push_str(&format!(" {:>14} |", r.label));
    }
    if let Some(b) = base {
        for r in &ratio_cols {
            s.push_str(&format!(" {:>18} |", format!("{} / {}", r.label, b.label)));
        }
    }
    s.push('\n');
    s.push_str(&format!("|{}|", "-".repeat(36)));
    for _ in results {
        s.push_str(&format!("{}:|", "-".repeat(15)));
    }
    for _ in &ratio_cols {
        s.push_str(&format!("{}:|", "-".repeat(19)));
    }
    s.push('\n');
    for (i, f) in first.figures.iter().enumerate() {
        s.push_str(&format!("| {:<34} |", f.test));
        for r in results {
            let v = r.figures.get(i).map(|f| f.value).unwrap_or(f64::NAN);
            s.push_str(&format!(" {:>14.0} |", v));
        }
        if let Some(b) = base {
            let bv = b.figures.get(i).map(|f| f.value).unwrap_or(f64::NAN);
            for r in &ratio_cols {
                let v = r.figures.get(i).map(|f| f.value).unwrap_or(f64::NAN);
                s.push_str(&format!(" {:>18.2} |", v / bv));
            }
        }
        s.push('\n');
    }
    s
}

/// Every figure as JSON (no serde_json dependency: the shape is flat).
pub fn json(results: &[TargetResult]) -> String {
    let mut s = String::from("{\"targets\":[");
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"label\":{:?},\"dir\":{:?},\"figures\":[",
            r.label,
            r.dir.display().to_string()
        ));
        for (j, f) in r.figures.iter().enumerate() {
            if j > 0 {
                s.push(',');
            }
            s.push_str(&format!(
                "{{\"test\":{:?},\"unit\":{:?},\"value\":{:.3}}}",
                f.test, f.unit, f.value
            ));
        }
        s.push_str("]}");
    }
    s.push_str("]}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_run_on_a_temp_dir_produces_every_figure() {
        let d = tempfile::tempdir().expect("tempdir");
        let plan = Plan {
            seq_bytes: 4 << 20,
            random_secs: 0.05,
            meta_files: 40,
            small_files: 40,
            small_dirs: 4,
            jobs: 2,
            mix_files: 20,
            mix_ops: 200,
        };
        let r = run_target("tmp", d.path(), &plan).expect("run");
        assert_eq!(r.figures.len(), 18);
        let mix: Vec<&Figure> = r
            .figures
            .iter()
            .filter(|f| f.test.starts_with("file-server"))
            .collect();
        assert_eq!(mix.len(), 4, "{:?}", r.figures);
        // p99 <= worst latency.
        assert!(mix[2].value <= mix[3].value, "{mix:?}");
        assert!(
            r.figures
                .iter()
                .all(|f| f.value.is_finite() && f.value > 0.0),
            "{:?}",
            r.figures
        );
        let t = table(&[r.clone(), r.clone()]);
        assert!(t.contains("seq write"), "{t}");
        let j = json(&[r]);
        assert!(j.starts_with("{\"targets\":[{\"label\":\"tmp\""), "{j}");
        assert_eq!(
            fs::read_dir(d.path()).expect("ls").count(),
            0,
            "bench must clean up"
        );
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let err = run_target("x", Path::new("/nonexistent/shoal"), &Plan::quick())
            .expect_err("must fail");
        assert!(err.to_string().contains("is not a directory"), "{err}");
    }
}
