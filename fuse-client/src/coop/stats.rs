//! Per-mount counters of cooperative caching: where block reads were served from, what
//! this client served to peers, and forwards (N-chance). Shown as JSON by the virtual
//! xattr `shoal.stats` and, with the `mount` label, as metrics (`proto::ops_metrics`).
//! Owns plain atomics; must not do I/O.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Live counters, shared by every task of a client.
#[derive(Default)]
pub struct CoopCounters {
    reads_local: AtomicU64,
    reads_peer: AtomicU64,
    reads_storage: AtomicU64,
    peer_failures: AtomicU64,
    bytes_served_to_peers: AtomicU64,
    blocks_served_to_peers: AtomicU64,
    peer_misses_answered: AtomicU64,
    forwards_accepted: AtomicU64,
    forwards_dropped: AtomicU64,
    /// The client's `mount` metrics label, for the forward metrics (counted in tasks that
    /// do not know the client).
    label: OnceLock<Arc<str>>,
}

/// A snapshot of `CoopCounters`, with two facts of the client that readers of the counters
/// need (`cache_bytes`, `peer_reads`; `CoopCounters::snapshot` leaves them at their defaults,
/// `Client::coop_stats` fills them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoopStats {
    /// Blocks a read found in this client's cache.
    pub reads_local: u64,
    /// Blocks fetched from a peer's cache (by reads and their prefetches).
    pub reads_peer: u64,
    /// Blocks fetched from the storage servers (by reads and their prefetches).
    pub reads_storage: u64,
    /// Peer reads that failed (gone, timeout, not cached, wrong bytes) and fell back.
    pub peer_failures: u64,
    /// Bytes this client sent to peers that asked.
    pub bytes_served_to_peers: u64,
    /// Blocks this client sent to peers that asked.
    pub blocks_served_to_peers: u64,
    /// Peer requests this client answered "not cached".
    pub peer_misses_answered: u64,
    /// Forwarded blocks (N-chance) this client accepted from peers.
    pub forwards_accepted: u64,
    /// Forwards that ended a block's life: refused here, not kept by the peer it was sent
    /// to (or the send failed), run out of chances, or with no peer to go to.
    pub forwards_dropped: u64,
    /// The size of this client's block cache (`[client] cache_bytes`), not a counter.
    pub cache_bytes: u64,
    /// Whether this client cooperates now (`shoal.peer_reads`), not a counter.
    pub peer_reads: bool,
}

impl CoopCounters {
    pub fn local(&self, n: u64) {
        self.reads_local.fetch_add(n, Ordering::Relaxed);
    }

    pub fn peer(&self, n: u64) {
        self.reads_peer.fetch_add(n, Ordering::Relaxed);
    }

    pub fn storage(&self, n: u64) {
        self.reads_storage.fetch_add(n, Ordering::Relaxed);
    }

    pub fn peer_failed(&self) {
        self.peer_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn served(&self, bytes: u64) {
        self.bytes_served_to_peers
            .fetch_add(bytes, Ordering::Relaxed);
        self.blocks_served_to_peers.fetch_add(1, Ordering::Relaxed);
    }

    /// Names the client in the forward metrics (its first name counts).
    pub fn set_label(&self, label: Arc<str>) {
        let _ = self.label.set(label);
    }

    pub fn forward_accepted(&self) {
        self.forwards_accepted.fetch_add(1, Ordering::Relaxed);
        if let Some(l) = self.label.get() {
            proto::ops_metrics::coop_forward(l, true);
        }
    }

    pub fn forward_dropped(&self) {
        self.forwards_dropped.fetch_add(1, Ordering::Relaxed);
        if let Some(l) = self.label.get() {
            proto::ops_metrics::coop_forward(l, false);
        }
    }

    pub fn missed(&self) {
        self.peer_misses_answered.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CoopStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CoopStats {
            reads_local: l(&self.reads_local),
            reads_peer: l(&self.reads_peer),
            reads_storage: l(&self.reads_storage),
            peer_failures: l(&self.peer_failures),
            bytes_served_to_peers: l(&self.bytes_served_to_peers),
            blocks_served_to_peers: l(&self.blocks_served_to_peers),
            peer_misses_answered: l(&self.peer_misses_answered),
            forwards_accepted: l(&self.forwards_accepted),
            forwards_dropped: l(&self.forwards_dropped),
            cache_bytes: 0,
            peer_reads: false,
        }
    }
}

impl CoopStats {
    /// The JSON object `shoal.stats` shows (one line, keys in a fixed order).
    pub fn to_json(&self) -> String {
        format!(
            concat!(
                "{{\"reads_local\":{},\"reads_peer\":{},\"reads_storage\":{},",
                "\"peer_failures\":{},\"bytes_served_to_peers\":{},",
                "\"blocks_served_to_peers\":{},\"peer_misses_answered\":{},",
                "\"forwards_accepted\":{},\"forwards_dropped\":{},",
                "\"cache_bytes\":{},\"peer_reads\":{}}}\n"
            ),
            self.reads_local,
            self.reads_peer,
            self.reads_storage,
            self.peer_failures,
            self.bytes_served_to_peers,
            self.blocks_served_to_peers,
            self.peer_misses_answered,
            self.forwards_accepted,
            self.forwards_dropped,
            self.cache_bytes,
            self.peer_reads,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_issues_keys() {
        let c = CoopCounters::default();
        c.local(3);
        c.peer(2);
        c.storage(1);
        c.served(65536);
        let j = c.snapshot().to_json();
        assert!(
            j.starts_with("{\"reads_local\":3,\"reads_peer\":2,\"reads_storage\":1,"),
            "{j}"
        );
        for k in [
            "bytes_served_to_peers\":65536",
            "forwards_accepted\":0",
            "forwards_dropped\":0",
            "cache_bytes\":0",
            "peer_reads\":false}",
        ] {
            assert!(j.contains(k), "{j} lacks {k}");
        }
    }
}
