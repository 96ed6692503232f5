//! The host side of automatic takeover: renews this node's membership lease with the
//! config group (issue 13) while the node runs, so that its manager groups (its own and
//! those it hosts) serve only while the leader knows it alive.
//!
//! Owns the renewal loop and the node's `ServingLease`, which every manager service of the
//! node checks per request. Must not: decide takeovers (the leader does), or stop a manager
//! (a host whose lease ran out answers `Unavailable` and serves again once it renews, unless
//! the committed config deposed it meanwhile, which `hosting` acts on).

use crate::config_group::ConfigGroup;
use manager::serving_lease::ServingLease;
use proto::ids::NodeId;
use proto::live::LiveConfig;
use std::sync::Arc;
use std::time::Instant;

/// Renews until aborted (with the node): four times per lease, each renewal counted from
/// when it was sent.
pub(crate) async fn run(
    group: Arc<ConfigGroup>,
    me: NodeId,
    name: String,
    live: Arc<LiveConfig>,
    lease: Arc<ServingLease>,
) {
    let mut held = false;
    loop {
        let period = live.current().file.manager.membership_lease();
        let sent = Instant::now();
        if group.renew(me, period / 2).await {
            lease.extend_to(sent + period);
            if !held {
                tracing::info!(node = %name, lease_ms = period.as_millis() as u64, "membership lease granted by the config group's leader: this node's manager groups serve");
            }
            held = true;
        }
        if held && !lease.held(Instant::now()) {
            held = false;
            tracing::warn!(node = %name, "membership lease ran out (the config group's leader did not confirm it): this node's manager groups answer Unavailable until it renews; the leader hands them to another manager if it stays silent");
        }
        let next = sent + period / 4;
        tokio::time::sleep(next.saturating_duration_since(Instant::now())).await;
    }
}
