//! `shoal rebuild --cluster DIR [--now]`: shows how many stripes are degraded and by how
//! much, or with `--now` reconstructs their missing fragments onto live servers (least
//! redundancy first, `--parallel` stripes at a time, default 4) with progress, bytes and ETA; with
//! `--nice` paced like the background rebuild (storage::pace), else at full speed.

use crate::progress::{Progress, Unit};
use anyhow::Result;
use proto::config::ClusterConfig;
use std::net::SocketAddr;
use std::time::Instant;
use storage::rebuild::{degraded_histogram, execute, plan, scan};
use storage::StorageClient;

/// With `now`, rebuilds `parallel` stripes at a time (each reads k whole fragments at once).
pub async fn run(config: &ClusterConfig, now: bool, nice: bool, parallel: usize) -> Result<i32> {
    let transport = fsd::cluster::admin_transport(config)?;
    let client = StorageClient::new(transport.clone());
    let servers: Vec<SocketAddr> = config.storage_nodes().iter().map(|n| n.address).collect();
    let name_of = |a: SocketAddr| {
        config
            .storage_nodes()
            .iter()
            .find(|n| n.address == a)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| a.to_string())
    };
    eprintln!("scanning {} storage servers...", servers.len());
    let s = scan(&client, &servers).await;
    for (a, e) in &s.down {
        println!("{} ({a}) is down: {e}", name_of(*a));
    }
    let hist = degraded_histogram(&s.stripes);
    let degraded: usize = hist.values().sum();
    println!(
        "{} stripes, {} degraded{}",
        s.stripes.len(),
        degraded,
        hist.iter()
            .map(|(m, n)| format!(", {n} missing {m} fragment(s)"))
            .collect::<String>()
    );
    let p = plan(&s.stripes, &s.live);
    if !p.unrepairable.is_empty() {
        println!(
            "{} stripes have fewer than k fragments on live servers and cannot be rebuilt now (start the servers that are down)",
            p.unrepairable.len()
        );
    }
    let total: u64 = p.jobs.iter().map(|j| j.bytes()).sum();
    if !now {
        println!(
            "{} stripes to rebuild ({}); run `shoal rebuild --cluster {} --now` to do it now",
            p.jobs.len(),
            crate::human(total),
            config.dir.display()
        );
        transport.close();
        return Ok(if degraded == 0 { 0 } else { 1 });
    }
    let started = Instant::now();
    // --nice: paced by the Nice controller like the background rebuild.
    let pace = nice.then(|| storage::pace::NiceConfig {
        min_share: storage::autorebuild::REBUILD_MIN_SHARE,
        ..Default::default()
    });
    let bar = Progress::new("rebuild", 0, Unit::Bytes);
    let done = execute(&client, &p, parallel.max(1), pace, |pr, err| {
        if let Some(e) = err {
            bar.note(&format!("failed: {e}"));
        }
        bar.set_total(pr.bytes_total);
        bar.set(
            pr.bytes_done,
            format!("{}/{} stripes", pr.stripes_done, pr.stripes_total),
        );
    })
    .await;
    bar.finish();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "rebuilt {} fragments of {} stripes ({}) in {:.1} s ({:.1} MB/s); {} stripes failed",
        done.fragments_done,
        done.stripes_done,
        crate::human(done.bytes_done),
        secs,
        done.bytes_done as f64 / secs.max(0.001) / 1e6,
        done.stripes_failed
    );
    transport.close();
    if done.stripes_failed > 0 || !p.unrepairable.is_empty() || p.unplaced > 0 {
        if p.unplaced > 0 {
            println!(
                "{} fragments found no live server to go to (fewer live servers than k+m)",
                p.unplaced
            );
        }
        return Ok(1);
    }
    Ok(0)
}
