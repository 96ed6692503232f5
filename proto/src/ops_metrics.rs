//! The metrics beyond RPCs that nodes and clients record through the `metrics` facade:
//! FUSE operations and bytes of mounts, client cache hits by tier, lease callbacks, the
//! manager's journal commits, storage servers' fragments and bytes, degraded stripes and
//! background workers. Owns the metric names, labels and units (Prometheus conventions:
//! `_total` counters, `_seconds` and `_bytes` in base units); must not render or serve
//! them (the HTTP endpoint does) and must not decide anything from them.
//!
//! - `shoal_fuse_ops_total{mount, op}`, `shoal_fuse_op_seconds{mount, op}`: FUSE requests
//!   a mount answered, and the time from the kernel's request to the answer (`mount`: its
//!   mountpoint, or `client LOG` for a client not mounted);
//! - `shoal_fuse_read_bytes_total{mount}`, `shoal_fuse_written_bytes_total{mount}`: file
//!   bytes returned to reads and accepted from writes;
//! - `shoal_client_cache_blocks_total{mount, tier}`: blocks a read needed, by where they
//!   came from (`local`: the client's block cache; `peer`: another client's cache;
//!   `storage`: read from the storage servers; peer and storage blocks count when fetched,
//!   prefetches included);
//! - `shoal_client_peer_served_bytes_total{mount}`: bytes a client sent from its cache to
//!   peer clients (cooperative caching); `shoal_client_forwards_total{mount, outcome}`:
//!   N-chance forwards accepted, and dropped (refused, not kept, out of chances);
//! - `shoal_lease_callbacks_total{node, kind, outcome}` and
//!   `shoal_lease_callback_wait_seconds{node, kind}`: callbacks a manager sent (`answered`
//!   or `lost`: the holder did not answer by its lease expiry) and how long the change waited
//!   for the holder;
//! - `shoal_journal_commits_total{log}`, `shoal_journal_commit_seconds{log}`,
//!   `shoal_journal_committed_records_total{log}`: metadata record batches made durable by a
//!   manager's journal (`log`: its metadata log) and how long each append took;
//! - `shoal_storage_fragments{node}`, `shoal_storage_used_bytes{node}`,
//!   `shoal_storage_capacity_bytes{node}`: gauges of each storage server, set when scraped;
//! - `shoal_stripes`, `shoal_degraded_stripes`: gauges from the background rebuild's last
//!   scan (every `DEGRADED_SCAN_POLLS` polls, on the node that reclaims);
//! - `shoal_worker_busy{node, worker}` (1 busy, 0 not), `shoal_worker_rounds_total{node, worker}`,
//!   `shoal_worker_failing{node, worker}` (1 when its last round failed): gauges, set when
//!   scraped;
//! - `shoal_checksum_mismatches_total{outcome}`: log reads whose bytes did not match the
//!   writer's end-to-end checksums (`chunksum`): `repaired` (decoded from other fragments
//!   to matching bytes) or `failed` (no k fragments did: the read failed with EIO).
//!
//! In a process running several mounts or managers (`shoal up --clients N`), the `mount`
//! and `log` labels keep them apart.

use crate::worker::{WorkerState, WorkerStatus};
use metrics::SharedString;
use std::sync::Arc;
use std::time::Duration;

/// Records one FUSE request of `mount` answered after `took`.
pub fn fuse_op(mount: &Arc<str>, op: &'static str, took: Duration) {
    let mount = SharedString::from(mount.clone());
    metrics::counter!("shoal_fuse_ops_total", "mount" => mount.clone(), "op" => op).increment(1);
    metrics::histogram!("shoal_fuse_op_seconds", "mount" => mount, "op" => op)
        .record(took.as_secs_f64());
}

/// Records file bytes `mount` returned to a read.
pub fn fuse_read_bytes(mount: &Arc<str>, n: u64) {
    let mount = SharedString::from(mount.clone());
    metrics::counter!("shoal_fuse_read_bytes_total", "mount" => mount).increment(n);
}

/// Records file bytes `mount` accepted from a write.
pub fn fuse_written_bytes(mount: &Arc<str>, n: u64) {
    let mount = SharedString::from(mount.clone());
    metrics::counter!("shoal_fuse_written_bytes_total", "mount" => mount).increment(n);
}

/// Records the blocks one read of `mount` took from the local block cache and from storage.
pub fn cache_blocks(mount: &Arc<str>, local: u64, storage: u64) {
    cache_blocks_from(mount, local, 0, storage)
}

/// `cache_blocks`, with blocks fetched from peer clients (`tier="peer"`).
pub fn cache_blocks_from(mount: &Arc<str>, local: u64, peer: u64, storage: u64) {
    let mount = SharedString::from(mount.clone());
    for (tier, n) in [("local", local), ("peer", peer), ("storage", storage)] {
        if n > 0 {
            metrics::counter!("shoal_client_cache_blocks_total", "mount" => mount.clone(), "tier" => tier)
                .increment(n);
        }
    }
}

/// One N-chance forward a client accepted, or one that ended a block's life
/// (`shoal_client_forwards_total{mount, outcome="accepted"|"dropped"}`).
pub fn coop_forward(mount: &Arc<str>, accepted: bool) {
    let mount = SharedString::from(mount.clone());
    let outcome = if accepted { "accepted" } else { "dropped" };
    metrics::counter!("shoal_client_forwards_total", "mount" => mount, "outcome" => outcome)
        .increment(1);
}

/// Bytes a client sent to peer clients from its cache (`shoal_client_peer_served_bytes_total`).
pub fn coop_served(mount: &Arc<str>, bytes: u64) {
    let mount = SharedString::from(mount.clone());
    metrics::counter!("shoal_client_peer_served_bytes_total", "mount" => mount).increment(bytes);
}

/// Records one lease callback of manager `node`: answered or not, after `waited`.
/// (Callbacks are rare next to RPCs: the label is made per call.)
pub fn lease_callback(node: &str, kind: &'static str, answered: bool, waited: Duration) {
    let node = SharedString::from(node.to_owned());
    let outcome = if answered { "answered" } else { "lost" };
    metrics::counter!("shoal_lease_callbacks_total", "node" => node.clone(), "kind" => kind, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("shoal_lease_callback_wait_seconds", "node" => node, "kind" => kind)
        .record(waited.as_secs_f64());
}

/// Records one log read whose bytes did not match their end-to-end checksums, and whether
/// matching bytes were decoded from other fragments.
pub fn checksum_mismatch(repaired: bool) {
    let outcome = if repaired { "repaired" } else { "failed" };
    metrics::counter!("shoal_checksum_mismatches_total", "outcome" => outcome).increment(1);
}

/// Records one batch of `records` metadata records made durable in metadata log `log`
/// after `took`.
pub fn journal_commit(log: &str, records: usize, took: Duration) {
    let log = SharedString::from(log.to_owned());
    metrics::counter!("shoal_journal_commits_total", "log" => log.clone()).increment(1);
    metrics::counter!("shoal_journal_committed_records_total", "log" => log.clone())
        .increment(records as u64);
    metrics::histogram!("shoal_journal_commit_seconds", "log" => log).record(took.as_secs_f64());
}

/// Sets the gauges of storage server `node`.
pub fn storage_gauges(node: &Arc<str>, fragments: u64, used_bytes: u64, capacity_bytes: u64) {
    let node = SharedString::from(node.clone());
    metrics::gauge!("shoal_storage_fragments", "node" => node.clone()).set(fragments as f64);
    metrics::gauge!("shoal_storage_used_bytes", "node" => node.clone()).set(used_bytes as f64);
    metrics::gauge!("shoal_storage_capacity_bytes", "node" => node).set(capacity_bytes as f64);
}

/// Sets the stripe gauges from a scan.
pub fn stripe_gauges(stripes: u64, degraded: u64) {
    metrics::gauge!("shoal_stripes").set(stripes as f64);
    metrics::gauge!("shoal_degraded_stripes").set(degraded as f64);
}

/// Sets the gauges of the background workers of `node`.
pub fn worker_gauges(node: &Arc<str>, workers: &[WorkerStatus]) {
    let node = SharedString::from(node.clone());
    for w in workers {
        let worker = SharedString::from(w.name.clone());
        let busy = if w.state == WorkerState::Busy {
            1.0
        } else {
            0.0
        };
        metrics::gauge!("shoal_worker_busy", "node" => node.clone(), "worker" => worker.clone())
            .set(busy);
        metrics::counter!("shoal_worker_rounds_total", "node" => node.clone(), "worker" => worker.clone())
            .absolute(w.rounds);
        let failing = if w.last_error.is_some() { 1.0 } else { 0.0 };
        metrics::gauge!("shoal_worker_failing", "node" => node.clone(), "worker" => worker)
            .set(failing);
    }
}

/// How many polls of the background rebuild pass between scans for degraded stripes
/// while no server is down (each scan lists every fragment of every server).
pub const DEGRADED_SCAN_POLLS: u32 = 15;
