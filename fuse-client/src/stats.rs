//! Message accounting of one client: callbacks received by kind, lease renewals sent and
//! manager RPCs sent by request type (every attempt counts, retries included).
//!
//! Owns plain atomic counters and their snapshot (`ClientStats`). Must not do I/O.

use proto::msg::ManagerRequest;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Request types, in the order of `op_index`.
const OPS: [&str; 29] = [
    "Lookup",
    "GetAttr",
    "SetAttr",
    "Create",
    "Unlink",
    "Rmdir",
    "Rename",
    "Link",
    "ReadDir",
    "ReadLink",
    "Open",
    "Release",
    "GetXattr",
    "SetXattr",
    "ListXattr",
    "RemoveXattr",
    "GetExtents",
    "CommitWrites",
    "Sync",
    "Counts",
    "Hello",
    "Renew",
    "AcquireWrite",
    "TxApply",
    "TxOutcome",
    "Goodbye",
    "LogHorizon",
    "SealLog",
    "Other",
];

fn op_index(req: &ManagerRequest) -> usize {
    use ManagerRequest::*;
    match req {
        Lookup { .. } => 0,
        GetAttr { .. } => 1,
        SetAttr { .. } => 2,
        Create { .. } => 3,
        Unlink { .. } => 4,
        Rmdir { .. } => 5,
        Rename { .. } => 6,
        Link { .. } => 7,
        ReadDir { .. } => 8,
        ReadLink { .. } => 9,
        Open { .. } => 10,
        Release { .. } | ReleaseMany { .. } => 11,
        GetXattr { .. } => 12,
        SetXattr { .. } => 13,
        ListXattr { .. } => 14,
        RemoveXattr { .. } => 15,
        GetExtents { .. } => 16,
        CommitWrites { .. } => 17,
        Sync => 18,
        Counts => 19,
        Hello { .. } => 20,
        Renew { .. } => 21,
        AcquireWrite { .. } => 22,
        TxApply { .. } => 23,
        TxOutcome { .. } => 24,
        Goodbye { .. } => 25,
        LogHorizon { .. } => 26,
        SealLog { .. } => 27,
        TxPrepare { .. }
        | TxFinish { .. }
        | DirMoveLock { .. }
        | LiveExtents { .. }
        | Relocate { .. }
        | Fallocate { .. }
        | CopyRange { .. }
        | HolderHints { .. } => 28,
    }
}

/// The name `ClientStats::rpcs` uses for a request's type.
pub fn op_name(req: &ManagerRequest) -> &'static str {
    OPS[op_index(req)]
}

/// Live counters, shared by every task of a client.
#[derive(Default)]
pub struct Counters {
    invalidates: AtomicU64,
    flushes: AtomicU64,
    renewals: AtomicU64,
    dropped_connections: AtomicU64,
    local_negative_lookups: AtomicU64,
    local_getattrs: AtomicU64,
    local_positive_lookups: AtomicU64,
    rpcs: [AtomicU64; OPS.len()],
}

impl Counters {
    pub fn rpc(&self, req: &ManagerRequest) {
        self.rpcs[op_index(req)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn invalidate_received(&self) {
        self.invalidates.fetch_add(1, Ordering::Relaxed);
    }

    pub fn flush_received(&self) {
        self.flushes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn renewal_sent(&self) {
        self.renewals.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_dropped(&self) {
        self.dropped_connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn local_getattr(&self) {
        self.local_getattrs.fetch_add(1, Ordering::Relaxed);
    }

    pub fn local_positive_lookup(&self) {
        self.local_positive_lookups.fetch_add(1, Ordering::Relaxed);
    }

    pub fn local_negative_lookup(&self) {
        self.local_negative_lookups.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ClientStats {
        let rpcs = OPS
            .iter()
            .zip(self.rpcs.iter())
            .filter_map(|(name, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then_some((*name, n))
            })
            .collect();
        ClientStats {
            invalidate_callbacks: self.invalidates.load(Ordering::Relaxed),
            flush_callbacks: self.flushes.load(Ordering::Relaxed),
            renewals: self.renewals.load(Ordering::Relaxed),
            dropped_connections: self.dropped_connections.load(Ordering::Relaxed),
            local_negative_lookups: self.local_negative_lookups.load(Ordering::Relaxed),
            local_getattrs: self.local_getattrs.load(Ordering::Relaxed),
            local_positive_lookups: self.local_positive_lookups.load(Ordering::Relaxed),
            rpcs,
        }
    }
}

/// A snapshot of a client's message counters (`Client::stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// `ClientCallback::Invalidate` received.
    pub invalidate_callbacks: u64,
    /// `ClientCallback::Flush` received.
    pub flush_callbacks: u64,
    /// `Renew` requests sent (background and on demand).
    pub renewals: u64,
    /// Connections to a manager closed because a renewal or Hello went unanswered and the
    /// manager acknowledged nothing meanwhile (it is presumed dead or restarted).
    pub dropped_connections: u64,
    /// Lookups of absent names answered without a manager (`data::dir_names`).
    pub local_negative_lookups: u64,
    /// Getattrs answered from attributes vouched for by an own create (`data::attrs`).
    pub local_getattrs: u64,
    /// Lookups of names this client's own create made, answered without a manager
    /// (`data::dir_names`, `data::attrs`).
    pub local_positive_lookups: u64,
    /// Manager requests sent, by request type (only types sent at least once).
    pub rpcs: BTreeMap<&'static str, u64>,
}

impl ClientStats {
    /// Requests of type `op` sent (0 if none).
    pub fn rpc(&self, op: &str) -> u64 {
        self.rpcs.get(op).copied().unwrap_or(0)
    }

    /// Every manager request sent.
    pub fn total_rpcs(&self) -> u64 {
        self.rpcs.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::ids::{InodeId, SessionId};

    #[test]
    fn counts_by_type() {
        let c = Counters::default();
        c.rpc(&ManagerRequest::GetAttr { ino: InodeId::ROOT });
        c.rpc(&ManagerRequest::GetAttr { ino: InodeId::ROOT });
        c.rpc(&ManagerRequest::Renew {
            session: SessionId(1),
        });
        c.renewal_sent();
        c.flush_received();
        let s = c.snapshot();
        assert_eq!(s.rpc("GetAttr"), 2);
        assert_eq!(s.rpc("Renew"), 1);
        assert_eq!(s.rpc("Lookup"), 0);
        assert_eq!(s.total_rpcs(), 3);
        assert_eq!(
            (s.renewals, s.flush_callbacks, s.invalidate_callbacks),
            (1, 1, 0)
        );
        assert_eq!(op_name(&ManagerRequest::Sync), "Sync");
    }
}
