//! `shoal df --cluster DIR`: per storage server its capacity, free space and fragment
//! bytes; the data bytes stripes of k+m distinct servers can still take (`storage::space`,
//! the same number statfs reports); and per the reclaimer's survey the live bytes, the
//! bytes reclaimable now and the dead bytes still pinned by a writer. Only looks.

use anyhow::Result;
use manager::reclaim::Reclaimer;
use proto::config::ClusterConfig;
use std::sync::Arc;
use storage::space::{usable_raw, ServerSpace};
use storage::StorageClient;

pub async fn run(config: Arc<ClusterConfig>) -> Result<i32> {
    let transport = fsd::cluster::admin_transport(&config)?;
    let client = StorageClient::new(transport.clone());
    let nodes = config.storage_nodes();
    let mut stats = Vec::with_capacity(nodes.len());
    for n in &nodes {
        stats.push(client.stat(n.address).await);
    }
    println!(
        "{:<14} {:>12} {:>12} {:>12} {:>12} {:>6}",
        "SERVER", "CAPACITY", "FREE", "FRAGMENTS", "RESERVE", "USE%"
    );
    let mut spaces = Vec::new();
    let mut down = 0;
    for (n, st) in nodes.iter().zip(&stats) {
        match st {
            Ok(s) => {
                spaces.push(ServerSpace {
                    fs_id: s.fs_id,
                    bytes: s.free_bytes,
                    shared: s.fs_free_bytes.saturating_sub(s.reserve_bytes),
                });
                // Use of what client data may take (the capacity less the reserve).
                let data_cap = s.capacity_bytes.saturating_sub(s.reserve_bytes);
                let pct = if data_cap > 0 {
                    100.0 * (data_cap - s.free_bytes.min(data_cap)) as f64 / data_cap as f64
                } else {
                    100.0
                };
                println!(
                    "{:<14} {:>12} {:>12} {:>12} {:>12} {:>5.0}%",
                    n.name,
                    crate::human(s.capacity_bytes),
                    crate::human(s.free_bytes),
                    crate::human(s.used_bytes),
                    crate::human(s.reserve_bytes),
                    pct
                );
            }
            Err(e) => {
                down += 1;
                println!("{:<14} down: {e}", n.name);
            }
        }
    }
    let (k, m) = (
        config.file.erasure.data as u64,
        config.file.erasure.parity as u64,
    );
    let raw = usable_raw(&spaces, (k + m) as usize);
    println!(
        "writable: {} of file data with {k}+{m} ({} of raw fragment space on the servers that answer)",
        crate::human(raw / (k + m) * k),
        crate::human(raw)
    );
    let (logs, skipped) = Reclaimer::new(config.clone(), transport.clone())
        .survey()
        .await;
    let (mut bytes, mut live, mut now, mut pinned) = (0u64, 0u64, 0u64, 0u64);
    for l in &logs {
        bytes += l.bytes;
        live += l.live;
        now += l.reclaimable.1;
        pinned += l.dead_pinned;
    }
    println!(
        "data logs: {} in segments, {} live, {} reclaimable now, {} dead but pinned by a writer; the rest of the dead bytes sit in partly live segments (`shoal clean --now` copies them out)",
        crate::human(bytes),
        crate::human(live),
        crate::human(now),
        crate::human(pinned)
    );
    transport.close();
    if skipped > 0 || down > 0 {
        println!("{down} server(s) down, {skipped} log(s) not surveyed");
        return Ok(1);
    }
    Ok(0)
}
