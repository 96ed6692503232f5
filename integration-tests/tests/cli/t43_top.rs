//! `shoal top --once`: rates per node and operation scraped from a running `shoal up
//! --http` while files are created; an endpoint that does not answer makes it exit 1, and
//! a cluster without any endpoint is a clear error.

use crate::expect_clear_error;
use anyhow::{ensure, Result};
use integration_tests::scrape::free_tcp_addr;
use integration_tests::TestEnv;
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

#[test]
fn t43_top_once_shows_rates_per_node_and_op() -> Result<()> {
    let env = TestEnv::new()?;
    let mnt = env.path().join("mnt");
    let state = env.path().join("state");
    std::fs::create_dir(&mnt)?;
    let addr = free_tcp_addr()?;
    let args: Vec<OsString> = vec![
        "up".into(),
        mnt.clone().into(),
        "--state".into(),
        state.clone().into(),
        "--http".into(),
        addr.to_string().into(),
    ];
    let m = env.spawn_mount(args, &mnt)?;
    {
        info!("--- files created in the background while top measures one second");
        let stop = Arc::new(AtomicBool::new(false));
        let (s, dir) = (stop.clone(), mnt.clone());
        let writer = std::thread::spawn(move || -> std::io::Result<u32> {
            let mut n = 0;
            // Bounded: at most 20 s, stopped as soon as top has measured.
            let until = std::time::Instant::now() + Duration::from_secs(20);
            while !s.load(Ordering::SeqCst) && std::time::Instant::now() < until {
                std::fs::File::create(dir.join(format!("f{n}")))?;
                n += 1;
            }
            Ok(n)
        });
        let out = env.run(
            [
                "top",
                "--endpoint",
                &addr.to_string(),
                "--once",
                "--interval",
                "1",
            ],
            Duration::from_secs(30),
        );
        stop.store(true, Ordering::SeqCst);
        let made = writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))??;
        let out = out?;
        ensure!(out.success(), "top --once: {out}");
        ensure!(made > 0, "no file created");
        let rate_of = |node: &str, kind: &str, op: &str| -> Option<f64> {
            out.stdout.lines().find_map(|l| {
                let c: Vec<&str> = l.split_whitespace().collect();
                (c.len() == 4 && c[0].starts_with(node) && c[1] == kind && c[2] == op)
                    .then(|| c[3].parse().ok())
                    .flatten()
            })
        };
        let fuse = rate_of("mount:", "fuse", "create");
        ensure!(fuse.is_some_and(|r| r > 0.0), "no FUSE create rate:\n{out}");
        let served = rate_of("manager-", "served", "Create");
        ensure!(
            served.is_some_and(|r| r > 0.0),
            "no manager Create rate:\n{out}"
        );
    }
    {
        info!("--- an endpoint that does not answer: exit 1, said so");
        let dead = free_tcp_addr()?.to_string();
        let out = env.run(
            ["top", "--endpoint", &dead, "--once"],
            Duration::from_secs(30),
        )?;
        ensure!(out.code == Some(1), "top of a dead endpoint: {out}");
        ensure!(out.stdout.contains("unreachable"), "{out}");
    }
    {
        info!("--- a cluster whose nodes have no http address and no --endpoint: clear error");
        let out = env.run(
            [
                "top".as_ref(),
                "--cluster".as_ref(),
                state.as_os_str(),
                "--once".as_ref(),
            ],
            Duration::from_secs(30),
        )?;
        expect_clear_error(&out, "top without endpoints", &["http", "--endpoint"])?;
    }
    let status = env.stop(m.name(), Signal::SIGTERM, Duration::from_secs(15))?;
    ensure!(status.success(), "shoal up exited with {status}");
    env.done();
    Ok(())
}
