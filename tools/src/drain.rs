//! `shoal node drain --cluster DIR NAME`: empties storage node NAME so that it can be
//! removed. Tells NAME to take no new fragments (writers then place stripes around it),
//! rebuilds every fragment NAME holds onto the other servers (`storage::rebuild`, readers
//! find them there through `locate`), deletes from NAME what the others now hold
//! (`storage::drain`), and repeats until NAME holds nothing, with progress. When NAME is
//! down, its fragments cannot be copied: they are reconstructed from the other fragments
//! of each stripe (the same rebuild), and the drain ends when every stripe has all its
//! k+m fragments on the other servers. Refuses when the others could not hold a whole
//! stripe or one of them is down.

use crate::progress::{Progress, Unit};
use anyhow::{bail, Context, Result};
use proto::config::{ClusterConfig, Role};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use storage::rebuild::{degraded_histogram, execute, plan, scan};
use storage::StorageClient;

/// Rounds before giving up (each one catches fragments written while the last ran).
const ROUNDS: usize = 5;
const PARALLEL: usize = 4;

pub async fn run(config: &ClusterConfig, name: &str) -> Result<i32> {
    let node = config
        .node_by_name(name)
        .with_context(|| format!("{name} is not a node of this cluster"))?;
    if !node.has(Role::Storage) {
        bail!("{name} is not a storage node");
    }
    let others: Vec<SocketAddr> = config
        .storage_nodes()
        .iter()
        .filter(|n| n.name != name)
        .map(|n| n.address)
        .collect();
    let width = config.file.erasure.data as usize + config.file.erasure.parity as usize;
    if others.len() < width {
        bail!(
            "draining {name} would leave {} storage nodes; a {}+{} stripe needs {width}: add a node first (`shoal node add`)",
            others.len(),
            config.file.erasure.data,
            config.file.erasure.parity
        );
    }
    let transport = fsd::cluster::admin_transport(config)?;
    let client = StorageClient::new(transport.clone());
    let dead = match client.drain(node.address, true).await {
        Ok(_) => {
            println!("{name} is draining: it takes no new fragments");
            false
        }
        Err(e) if e.is_unavailable() => {
            println!("{name} is down ({e}): its fragments are reconstructed from the other fragments of their stripes");
            true
        }
        Err(e) => return Err(e).with_context(|| format!("telling {name} to drain")),
    };
    let started = Instant::now();
    for round in 1..=ROUNDS {
        let s = scan(&client, &others).await;
        if !s.down.is_empty() {
            let down: Vec<String> = s.down.iter().map(|(a, e)| format!("{a}: {e}")).collect();
            bail!(
                "storage servers are down ({}): drain when every other server is up",
                down.join("; ")
            );
        }
        let p = plan(&s.stripes, &s.live);
        let total: u64 = p.jobs.iter().map(|j| j.bytes()).sum();
        let t = Instant::now();
        let bar = Progress::new(&format!("drain round {round}"), total, Unit::Bytes);
        let done = execute(&client, &p, PARALLEL, None, |pr, err| {
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
        if p.jobs.is_empty() {
            bar.note(&format!("drain round {round}: nothing to rebuild"));
        }
        bar.finish();
        let after = scan(&client, &others).await;
        if dead {
            // Nothing to delete on a dead server: done when no stripe misses a fragment
            // on the others.
            let missing = degraded_histogram(&after.stripes);
            let degraded: usize = missing.values().sum();
            println!(
                "round {round}: reconstructed {} fragments ({}, of {}) of {} stripes from parity in {:.1} s; {degraded} stripes still miss fragments on the other servers",
                done.fragments_done,
                crate::human(done.bytes_done),
                crate::human(total),
                done.stripes_done,
                t.elapsed().as_secs_f64(),
            );
            if degraded == 0 {
                println!(
                    "{name} is down and every stripe has all its fragments on the other servers after {:.1} s: remove it from cluster.toml (started again before that, it would take new fragments: drain it again then)",
                    started.elapsed().as_secs_f64()
                );
                transport.close();
                return Ok(0);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // What NAME holds that the others now hold too goes.
        let mut held = Vec::new();
        for log in client.list_logs(node.address).await? {
            held.extend(client.list_log(node.address, log).await?);
        }
        let (gone, kept) = storage::drain::removable(&held, &after.stripes);
        let mut removed = 0;
        for id in &gone {
            if client.delete(node.address, *id).await? {
                removed += 1;
            }
        }
        println!(
            "round {round}: rebuilt {} fragments ({}, of {}) of {} stripes elsewhere in {:.1} s; removed {removed} fragments from {name}; {kept} left{}",
            done.fragments_done,
            crate::human(done.bytes_done),
            crate::human(total),
            done.stripes_done,
            t.elapsed().as_secs_f64(),
            if p.unrepairable.is_empty() {
                String::new()
            } else {
                format!(
                    " ({} stripes have fewer than k fragments elsewhere now)",
                    p.unrepairable.len()
                )
            }
        );
        if kept == 0 {
            println!(
                "{name} holds nothing after {:.1} s: stop it and remove it from cluster.toml (it stays draining if restarted)",
                started.elapsed().as_secs_f64()
            );
            transport.close();
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if dead {
        println!("stripes still miss fragments on the other servers after {ROUNDS} rounds (stripes being written, or fewer than k fragments left): run `shoal node drain` again");
    } else {
        println!("{name} still holds fragments after {ROUNDS} rounds (stripes being written, or not rebuildable now): run `shoal node drain` again");
    }
    transport.close();
    Ok(1)
}
