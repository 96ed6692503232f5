//! `shoal up --clients 2 --http ADDR`: after a small workload through the real mounts the
//! metrics moved by the expected amounts (FUSE creates, bytes written on one mount and read
//! on the other, told apart by their `mount` label, cache tiers,
//! a lease callback, journal commits), the node gauges are there, and every metric the
//! shipped Grafana dashboard asks for exists in /metrics.

use anyhow::{ensure, Result};
use integration_tests::scrape::{free_tcp_addr, get, has, sum};
use integration_tests::{is_mounted, wait_for, TestEnv};
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;
use tracing::info;

const T: Duration = Duration::from_secs(10);

#[test]
fn t41_up_metrics_move_with_a_workload_through_real_mounts() -> Result<()> {
    let env = TestEnv::new()?;
    let mnt = env.path().join("mnt");
    let mnt2 = env.path().join("mnt-2");
    let state = env.path().join("state");
    fs::create_dir(&mnt)?;
    let addr = free_tcp_addr()?;
    let args: Vec<OsString> = vec![
        "up".into(),
        mnt.clone().into(),
        "--state".into(),
        state.into(),
        "--clients".into(),
        "2".into(),
        "--http".into(),
        addr.to_string().into(),
    ];
    let m = env.spawn_mount(args, &mnt)?;
    wait_for(T, "the second mount", || {
        ensure!(is_mounted(&mnt2), "not mounted yet");
        Ok(())
    })?;
    let scrape = || get(addr, "/metrics", T);
    // Waits until `f` of a fresh scrape reaches `at_least` (the mount counts an operation
    // just after answering it), then returns the scrape.
    let settle = |what: &str, f: &dyn Fn(&str) -> f64, at_least: f64| -> Result<String> {
        wait_for(T, what, || {
            let text = scrape()?;
            ensure!(f(&text) >= at_least, "{what}: {} < {at_least}", f(&text));
            Ok(text)
        })
    };
    // `shoal up` serves HTTP before it mounts; bounded all the same.
    let before = wait_for(T, "the metrics endpoint", scrape)?;
    let creates = |t: &str| sum(t, "shoal_fuse_ops_total", &[("op", "create")]);
    // Each mount's FUSE metrics carry its mountpoint as the `mount` label.
    let (m1, m2) = (mnt.display().to_string(), mnt2.display().to_string());
    let written = |t: &str| sum(t, "shoal_fuse_written_bytes_total", &[("mount", &m1)]);
    let read = |t: &str| sum(t, "shoal_fuse_read_bytes_total", &[("mount", &m2)]);
    {
        info!("--- 20 creates: FUSE create count +20, and as many latency samples");
        for i in 0..20 {
            fs::File::create(mnt.join(format!("f{i}")))?;
        }
        let after = settle("20 creates counted", &creates, creates(&before) + 20.0)?;
        ensure!(
            creates(&after) - creates(&before) == 20.0,
            "creates moved by {}",
            creates(&after) - creates(&before)
        );
        let samples = |t: &str| sum(t, "shoal_fuse_op_seconds_count", &[("op", "create")]);
        ensure!(
            samples(&after) - samples(&before) == 20.0,
            "create latency samples"
        );
        // The journal commits in groups, in the background of the answers.
        let commits = |t: &str| sum(t, "shoal_journal_commits_total", &[]);
        settle("a journal commit", &commits, commits(&before) + 1.0)?;
    }
    let one_mib = 1u64 << 20;
    {
        info!("--- 1 MiB written on mount 1 and read on mount 2: bytes moved by 1 MiB each");
        let b = scrape()?;
        let mut f = fs::File::create(mnt.join("data"))?;
        f.write_all(&vec![7u8; one_mib as usize])?;
        f.sync_all()?;
        drop(f);
        let after = settle("1 MiB written", &written, written(&b) + one_mib as f64)?;
        ensure!(
            written(&after) - written(&b) == one_mib as f64,
            "written moved by {}",
            written(&after) - written(&b)
        );
        let b = after;
        let mut got = Vec::new();
        fs::File::open(mnt2.join("data"))?.read_to_end(&mut got)?;
        ensure!(
            got.len() as u64 == one_mib && got.iter().all(|&x| x == 7),
            "read back"
        );
        let after = settle("1 MiB read", &read, read(&b) + one_mib as f64)?;
        ensure!(
            read(&after) - read(&b) == one_mib as f64,
            "read moved by {}",
            read(&after) - read(&b)
        );
        let storage = |t: &str| {
            sum(
                t,
                "shoal_client_cache_blocks_total",
                &[("mount", &m2), ("tier", "storage")],
            )
        };
        ensure!(
            storage(&after) > storage(&b),
            "the first read took no block from storage"
        );
        info!("--- read again on mount 2: blocks from the local cache");
        let b = after;
        let local = |t: &str| sum(t, "shoal_client_cache_blocks_total", &[("tier", "local")]);
        fs::File::open(mnt2.join("data"))?.read_to_end(&mut Vec::new())?;
        settle("local cache hits", &local, local(&b) + 1.0)?;
    }
    {
        info!("--- overwrite on mount 1 while mount 2 caches it: a lease callback");
        let b = scrape()?;
        let cbs = |t: &str| sum(t, "shoal_lease_callbacks_total", &[]);
        let mut f = fs::OpenOptions::new().write(true).open(mnt.join("data"))?;
        f.write_all(b"changed")?;
        f.sync_all()?;
        drop(f);
        let after = settle("a callback", &cbs, cbs(&b) + 1.0)?;
        let waits = |t: &str| sum(t, "shoal_lease_callback_wait_seconds_count", &[]);
        ensure!(waits(&after) > waits(&b), "no callback wait recorded");
    }
    {
        info!("--- node gauges and every dashboard metric exist");
        let t = wait_for(T, "the stripe gauges", || {
            let t = scrape()?;
            ensure!(has(&t, "shoal_degraded_stripes"), "no stripe gauge yet");
            Ok(t)
        })?;
        ensure!(
            sum(&t, "shoal_degraded_stripes", &[]) == 0.0,
            "degraded stripes with all servers up"
        );
        ensure!(sum(&t, "shoal_storage_fragments", &[]) >= 6.0, "fragments");
        ensure!(has(&t, "shoal_worker_busy"), "worker gauges");
        let dash = fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/shoal-dashboard.json"),
        )?;
        let mut asked = 0;
        for (i, _) in dash.match_indices("shoal_") {
            let name: String = dash[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if name == "shoal_" || name.starts_with("shoal_overview") {
                continue;
            }
            asked += 1;
            ensure!(
                has(&t, &name),
                "the dashboard asks for {name}, which /metrics does not have"
            );
        }
        ensure!(asked >= 20, "the dashboard names {asked} metrics");
    }
    let status = env.stop(m.name(), Signal::SIGTERM, Duration::from_secs(15))?;
    ensure!(status.success(), "shoal up exited with {status}");
    env.done();
    Ok(())
}
