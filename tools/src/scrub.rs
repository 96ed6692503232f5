//! `shoal scrub --cluster DIR [--now]`: shows every storage server's scrub results, or with
//! `--now` starts a full-speed scrub-and-repair pass on every reachable server, shows
//! progress, and prints what was checked, found bad and repaired.

use crate::progress::{Progress, Unit};
use anyhow::Result;
use proto::config::ClusterConfig;
use proto::msg::{ScrubCounts, ScrubReport};
use std::net::SocketAddr;
use std::time::Duration;
use storage::StorageClient;

const POLL: Duration = Duration::from_millis(500);

pub async fn run(config: &ClusterConfig, now: bool) -> Result<i32> {
    let transport = fsd::cluster::admin_transport(config)?;
    let client = StorageClient::new(transport.clone());
    let servers: Vec<(String, SocketAddr)> = config
        .storage_nodes()
        .iter()
        .map(|n| (n.name.clone(), n.address))
        .collect();
    let mut reports: Vec<Option<ScrubReport>> = Vec::new();
    for (name, addr) in &servers {
        match client.scrub(*addr, false).await {
            Ok(r) => reports.push(Some(r)),
            Err(e) => {
                eprintln!("{name} ({addr}): cannot ask for its scrub state: {e}");
                reports.push(None);
            }
        }
    }
    if !now {
        print_table(&servers, &reports, |r| (r.last, r.last_finished_unix != 0));
        println!(
            "run `shoal scrub --cluster {} --now` to scrub and repair everything now",
            config.dir.display()
        );
        transport.close();
        return Ok(0);
    }
    // For each reachable server: the request number its full-speed pass must cover.
    let mut before: Vec<Option<u64>> = Vec::new();
    for ((name, addr), r) in servers.iter().zip(&reports) {
        if r.is_none() {
            before.push(None);
            continue;
        }
        match client.scrub(*addr, true).await {
            Ok(r) => before.push(Some(r.now_requests)),
            Err(e) => {
                eprintln!("{name} ({addr}): cannot start a scrub: {e}");
                before.push(None);
            }
        }
    }
    let mut unreachable = before.iter().filter(|b| b.is_none()).count();
    let mut done: Vec<Option<ScrubReport>> = vec![None; servers.len()];
    let bar = Progress::new("scrub", 0, Unit::Items("fragments"));
    loop {
        let (mut checked, mut total, mut bad, mut repaired) = (0, 0, 0, 0);
        for (i, (name, addr)) in servers.iter().enumerate() {
            let Some(b) = before[i] else { continue };
            if done[i].is_some() {
                let r = done[i].unwrap_or_default();
                checked += r.last.checked;
                total += r.last.checked;
                bad += r.last.bad;
                repaired += r.last.repaired;
                continue;
            }
            match client.scrub(*addr, false).await {
                Ok(r) if r.now_served >= b => {
                    checked += r.last.checked;
                    total += r.last.checked;
                    bad += r.last.bad;
                    repaired += r.last.repaired;
                    done[i] = Some(r);
                }
                Ok(r) => {
                    checked += r.current.checked;
                    total += r.current_total;
                    bad += r.current.bad;
                    repaired += r.current.repaired;
                }
                Err(e) if e.is_unavailable() => {
                    bar.note(&format!("{name} ({addr}) went away during the scrub: {e}"));
                    unreachable += 1;
                    done[i] = Some(ScrubReport::default());
                }
                Err(e) => {
                    bar.note(&format!("{name} ({addr}): {e}"));
                }
            }
        }
        bar.set_total(total);
        bar.set(checked, format!("{bad} bad, {repaired} repaired"));
        if servers
            .iter()
            .enumerate()
            .all(|(i, _)| before[i].is_none() || done[i].is_some())
        {
            bar.finish();
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    print_table(&servers, &done, |r| (r.last, r.passes > 0));
    let sum = done
        .iter()
        .flatten()
        .fold(ScrubCounts::default(), |a, r| ScrubCounts {
            checked: a.checked + r.last.checked,
            bytes: a.bytes + r.last.bytes,
            bad: a.bad + r.last.bad,
            repaired: a.repaired + r.last.repaired,
            unrepaired: a.unrepaired + r.last.unrepaired,
        });
    println!(
        "total: checked {} fragments ({}), bad {}, repaired {}, unrepaired {}",
        sum.checked,
        crate::human(sum.bytes),
        sum.bad,
        sum.repaired,
        sum.unrepaired
    );
    transport.close();
    if sum.unrepaired > 0 {
        println!("some bad fragments could not be repaired (too few of their stripe readable): start the storage servers that are down and run it again");
        return Ok(1);
    }
    if unreachable > 0 {
        println!("{unreachable} storage server(s) were not scrubbed (unreachable)");
        return Ok(1);
    }
    Ok(0)
}

fn print_table(
    servers: &[(String, SocketAddr)],
    reports: &[Option<ScrubReport>],
    pick: impl Fn(&ScrubReport) -> (ScrubCounts, bool),
) {
    println!(
        "{:<14} {:>10} {:>12} {:>6} {:>9} {:>11}  LAST PASS",
        "SERVER", "CHECKED", "BYTES", "BAD", "REPAIRED", "UNREPAIRED"
    );
    for ((name, _), r) in servers.iter().zip(reports) {
        match r {
            None => println!("{name:<14} unreachable"),
            Some(r) => {
                let (c, any) = pick(r);
                let when = if r.last_finished_unix == 0 {
                    "never".to_string()
                } else {
                    crate::ago(r.last_finished_unix)
                };
                if any {
                    println!(
                        "{:<14} {:>10} {:>12} {:>6} {:>9} {:>11}  {}",
                        name,
                        c.checked,
                        crate::human(c.bytes),
                        c.bad,
                        c.repaired,
                        c.unrepaired,
                        when
                    );
                } else {
                    println!(
                        "{name:<14} {:>10} {:>12} {:>6} {:>9} {:>11}  never",
                        "-", "-", "-", "-", "-"
                    );
                }
            }
        }
    }
}
