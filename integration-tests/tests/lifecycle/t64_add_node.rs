//! Test (d) of issue [lifecycle], live since issue [failover] step 2: three storage servers
//! join a running 6-server 4+2 cluster, one `shoal node add` each, which proposes the new
//! config to the cluster's config group. Nothing is restarted or remounted: the mount and the
//! managers follow the committed config (`proto::follow`), so a mount that keeps writing puts
//! new stripes on the new servers, and so do the managers' journals. Placement is recorded
//! with each segment, so the files written before read back byte-exact; everything reads
//! back from the same mount and from a fresh one. Then manager-2 restarts from another
//! machine's stale copy of cluster.toml (without the new nodes): it installs the committed
//! config before its recovery lists its journal (some of whose segments keep fewer than k
//! fragments on the old six servers), serves, and the files in directories it serves read
//! back.

use crate::{check_pattern, dir_bytes, write_pattern};
use anyhow::{ensure, Context, Result};
use integration_tests::cluster::free_udp_range;
use integration_tests::TestCluster;
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};
use tracing::info;

const FILES: u64 = 4;
const SIZE: usize = 16 << 20;

/// The config epoch a mount follows (`shoal.config_epoch`).
fn mount_epoch(mnt: &Path) -> Result<u64> {
    let v = integration_tests::sys::get_xattr(mnt, "shoal.config_epoch")
        .map_err(|e| anyhow::anyhow!("getxattr shoal.config_epoch: {e:?}"))?;
    String::from_utf8_lossy(&v)
        .trim()
        .parse()
        .context("shoal.config_epoch is not a number")
}

/// The logs storage server `dir` holds fragments of, as their directory names.
fn logs_held(dir: &Path) -> Result<Vec<String>> {
    let frags = dir.join("frags");
    let rd = match std::fs::read_dir(&frags) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", frags.display())),
    };
    let mut v = Vec::new();
    for e in rd {
        v.push(e?.file_name().to_string_lossy().into_owned());
    }
    Ok(v)
}

#[test]
fn t64_seventh_server_joins_a_running_cluster_without_restarts() -> Result<()> {
    let c = TestCluster::init(6, 2, "4+2")?;
    c.start_all()?;
    c.wait_ready()?;
    let m = c.mount()?;
    for f in 0..FILES {
        write_pattern(&m.join(format!("old{f}")), f, SIZE)?;
    }
    let epoch_before = mount_epoch(m.path())?;
    // A copy of the cluster directory as it was before the node was added: another
    // machine's stale copy, for step (e).
    let old_config = proto::config::ClusterConfig::load(c.dir())?;

    // Three servers join, one `shoal node add` each (each commits the next epoch).
    const ADDED: [&str; 3] = ["storage-7", "storage-8", "storage-9"];
    for name in ADDED {
        let port = free_udp_range(1)?;
        let args: Vec<OsString> = vec![
            "node".into(),
            "add".into(),
            "--cluster".into(),
            c.dir().as_os_str().to_owned(),
            "--name".into(),
            name.into(),
            "--address".into(),
            format!("127.0.0.1:{port}").into(),
        ];
        let out = c.env().run(args, Duration::from_secs(60))?;
        ensure!(out.success(), "shoal node add {name} failed: {out}");
        ensure!(
            out.stdout.contains("running cluster committed epoch"),
            "the running cluster did not take the new config: {out}"
        );
        c.start(name)?;
        c.wait_node_up(name)?;
    }
    let epoch_now = epoch_before + ADDED.len() as u64;

    // The mount follows the committed config by itself (no remount).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let e = mount_epoch(m.path())?;
        if e == epoch_now {
            info!(
                from = epoch_before,
                to = e,
                "the mount follows the new config"
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the mount still follows epoch {e} 30 s after the group committed epoch {epoch_now}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The same mount: the old files are intact, new stripes use the new server.
    for f in 0..FILES {
        check_pattern(&m.join(format!("old{f}")), f, SIZE)?;
    }
    let dirs: Vec<_> = ADDED.iter().map(|n| c.fragment_dir(n)).collect();
    let before: Vec<u64> = dirs.iter().map(|d| dir_bytes(d)).collect::<Result<_>>()?;
    for f in 0..FILES {
        write_pattern(&m.join(format!("new{f}")), 100 + f, SIZE)?;
    }
    for ((name, d), b) in ADDED.iter().zip(&dirs).zip(&before) {
        let after = dir_bytes(d)?;
        info!(before = b, after, "bytes on {name}");
        // 64 MiB of data as 4+2 stripes over 9 servers: about 64 x 1.5 / 9 = 10.7 MiB land
        // on each server; at least 4 MiB on each new one.
        ensure!(
            after - b >= 4 << 20,
            "new stripes put only {} bytes on {name}",
            after - b
        );
    }
    // The managers follow too: their journals (logs 0x4d00_0000_0000 | node id) reach the
    // new server as they keep appending (each create above is journaled).
    let new_dir = &dirs[0];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = logs_held(new_dir)?;
        if logs.iter().any(|l| l.starts_with("00004d00")) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no manager journal fragment on the new server 30 s after the mount followed (logs there: {logs:?})"
        );
        std::fs::write(m.join("journal-nudge"), b"x")?;
        std::thread::sleep(Duration::from_millis(300));
    }

    for f in 0..FILES {
        check_pattern(&m.join(format!("new{f}")), 100 + f, SIZE)?;
    }

    // Metadata journaled by manager-2 since the servers joined: directories it serves, with
    // files in them (new directories are spread over the managers).
    let mut on_m2 = Vec::new();
    for d in 0..32u64 {
        let dir = m.join(format!("d{d}"));
        std::fs::create_dir(&dir)?;
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&dir)?);
        if c.manager_of(ino)? == "manager-2" {
            on_m2.push(d);
            for f in 0..4u64 {
                write_pattern(&dir.join(format!("f{f}")), 300 + d * 10 + f, 64 << 10)?;
            }
            if on_m2.len() == 4 {
                break;
            }
        }
    }
    ensure!(!on_m2.is_empty(), "no new directory landed on manager-2");

    info!("--- (e) manager-2 restarted from a copy of the old cluster.toml serves and follows");
    let log = c.env().log_path("manager-2");
    let log_before = std::fs::metadata(&log).map(|md| md.len()).unwrap_or(0) as usize;
    c.stop("manager-2")?;
    let stale = c.env().path().join("stale-cluster");
    std::fs::create_dir_all(stale.join("tls"))?;
    for e in std::fs::read_dir(c.dir().join("tls"))? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), stale.join("tls").join(e.file_name()))?;
        }
    }
    let mut file = old_config.file.clone();
    for (entry, node) in file.nodes.iter_mut().zip(&old_config.nodes) {
        entry.state_dir = Some(node.state_dir.clone());
    }
    std::fs::write(
        stale.join("cluster.toml"),
        proto::config::ClusterConfig::render(&file),
    )?;
    c.env().spawn(
        "manager-2",
        [
            "node".as_ref(),
            "run".as_ref(),
            "--cluster".as_ref(),
            stale.as_os_str(),
            "--node".as_ref(),
            "manager-2".as_ref(),
        ],
    )?;
    c.wait_ready()?;
    c.wait_until(
        Duration::from_secs(30),
        "the restarted manager-2 runs by the committed config",
        || {
            let text = std::fs::read(&log).unwrap_or_default();
            let after = String::from_utf8_lossy(text.get(log_before..).unwrap_or_default());
            after.contains("serving by the committed config")
        },
    )?;
    for f in 0..FILES {
        write_pattern(&m.join(format!("late{f}")), 200 + f, 1 << 20)?;
    }
    let m = c.remount(m)?;
    for f in 0..FILES {
        check_pattern(&m.join(format!("late{f}")), 200 + f, 1 << 20)?;
    }
    for d in &on_m2 {
        for f in 0..4u64 {
            check_pattern(&m.join(format!("d{d}/f{f}")), 300 + d * 10 + f, 64 << 10)?;
        }
    }
    for f in 0..FILES {
        check_pattern(&m.join(format!("old{f}")), f, SIZE)?;
        check_pattern(&m.join(format!("new{f}")), 100 + f, SIZE)?;
    }
    m.unmount(Duration::from_secs(30))?;
    c.done();
    Ok(())
}
