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
    let (c, s, u, w) = if suffix {
        (
            "create x4 (files/s)",
            "stat x4, cold (files/s)",
            "unlink x4 (files/s)",
            "4K files in 100 dirs x4 (files/s)",
        )
    } else {
        (
            "create (files/s)",
            "stat, cold (files/s)",
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
        };
        let r = run_target("tmp", d.path(), &plan).expect("run");
        assert_eq!(r.figures.len(), 12);
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
