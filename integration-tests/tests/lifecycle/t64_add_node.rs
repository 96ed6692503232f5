//! Test (d) of issue [lifecycle], live since issue [failover] step 2: a seventh storage server
//! joins a running 6-server 4+2 cluster with `shoal node add`, which proposes the new config
//! to the cluster's config group. Nothing is restarted or remounted: the mount and the
//! managers follow the committed config (`proto::follow`), so a mount that keeps writing puts
//! new stripes on the new server, and so do the managers' journals. Placement is recorded
//! with each segment, so the files written before read back byte-exact and nothing was moved
//! onto the new server; everything reads back from the same mount and from a fresh one. A
//! manager restarted from another machine's stale copy of cluster.toml (without the new
//! node) serves, because the committed config only adds a storage node to it.

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

    let port = free_udp_range(1)?;
    let args: Vec<OsString> = vec![
        "node".into(),
        "add".into(),
        "--cluster".into(),
        c.dir().as_os_str().to_owned(),
        "--name".into(),
        "storage-7".into(),
        "--address".into(),
        format!("127.0.0.1:{port}").into(),
    ];
    let out = c.env().run(args, Duration::from_secs(60))?;
    ensure!(out.success(), "shoal node add failed: {out}");
    ensure!(
        out.stdout.contains("running cluster committed epoch"),
        "the running cluster did not take the new config: {out}"
    );
    c.start("storage-7")?;
    c.wait_node_up("storage-7")?;
    let new_dir = c.fragment_dir("storage-7");
    ensure!(
        dir_bytes(&new_dir)? == 0,
        "the new server holds data before any writer knows it"
    );

    // The mount follows the committed config by itself (no remount).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let e = mount_epoch(m.path())?;
        if e > epoch_before {
            info!(
                from = epoch_before,
                to = e,
                "the mount follows the new config"
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the mount still follows epoch {e} 30 s after the group committed epoch {}",
            epoch_before + 1
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The same mount: the old files are intact, new stripes use the new server.
    for f in 0..FILES {
        check_pattern(&m.join(format!("old{f}")), f, SIZE)?;
    }
    let before = dir_bytes(&new_dir)?;
    for f in 0..FILES {
        write_pattern(&m.join(format!("new{f}")), 100 + f, SIZE)?;
    }
    let after = dir_bytes(&new_dir)?;
    info!(before, after, "bytes on storage-7");
    // 64 MiB of data as 4+2 stripes over 7 servers: about 6/7 x 1.5 x 64 / 6 = 13.7 MiB
    // land on each server; at least half of that on the new one.
    ensure!(
        after - before >= 6 << 20,
        "new stripes put only {} bytes on the new server",
        after - before
    );
    // The managers follow too: their journals (logs 0x4d00_0000_0000 | node id) reach the
    // new server as they keep appending (each create above is journaled).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = logs_held(&new_dir)?;
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

    info!("--- (e) manager-2 restarted from a copy of the old cluster.toml serves and follows");
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
    let log = c.env().log_path("manager-2");
    let followed = |text: &str| {
        text.matches("following the committed cluster config")
            .count()
    };
    c.wait_until(
        Duration::from_secs(30),
        "the restarted manager-2 follows the committed config",
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            // Once before the restart (epoch 1 -> 2), once after it.
            followed(&text) >= 2
        },
    )?;
    for f in 0..FILES {
        write_pattern(&m.join(format!("late{f}")), 200 + f, 1 << 20)?;
    }
    let m = c.remount(m)?;
    for f in 0..FILES {
        check_pattern(&m.join(format!("late{f}")), 200 + f, 1 << 20)?;
    }
    for f in 0..FILES {
        check_pattern(&m.join(format!("old{f}")), f, SIZE)?;
        check_pattern(&m.join(format!("new{f}")), 100 + f, SIZE)?;
    }
    m.unmount(Duration::from_secs(30))?;
    c.done();
    Ok(())
}
