//! The cluster-wide duties a manager node may run: the cleaner with the reclaimer of dead
//! data segments, and the background rebuild. One node runs them: the one
//! `manager::reclaim::runs_on` names by the config in force (the lowest-id manager that
//! serves its own group), while its own manager serves. They stop when that manager stops
//! (deposed, or its group handed over) and start again when it serves again (a group given
//! back); another node starts them when the config names it (its turn came because the
//! lowest-id manager's group moved away).
//!
//! Owns those tasks and their worker statuses. The decision is pure (`wanted`); the shell
//! checks it every `CHECK_EVERY`. Must not: run them by a manager that has not recovered
//! (or refused to), or on two nodes by one config.

use crate::hosting::OwnManager;
use proto::config::ClusterConfig;
use proto::ids::NodeId;
use proto::live::LiveConfig;
use proto::transport::Transport;
use proto::worker::{Worker, Workers};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// How often the node checks whether it should run the duties.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// How long a node named by a newer config waits before it starts the duties (not at its
/// own start): the node that ran them stops them within `CHECK_EVERY` of its manager
/// stopping, which a hand-over does before the config commits; a deposed node stops them
/// when it installs the takeover, about a follower round after the others.
const TAKE_OVER_AFTER: Duration = Duration::from_secs(5);

/// Whether node `me` runs the duties under `config`, its own manager serving or not (pure).
pub fn wanted(config: &ClusterConfig, me: NodeId, own_serving: bool) -> bool {
    own_serving && manager::reclaim::runs_on(config, me)
}

/// Runs the duties on node `name` whenever `wanted` says so, until aborted (with the
/// node; the tasks it started go with it).
pub(crate) async fn run(
    me: NodeId,
    name: String,
    live: Arc<LiveConfig>,
    transport: Arc<Transport>,
    own: Arc<OwnManager>,
    registry: Arc<Workers>,
) {
    // Registered at the first start, kept across restarts (status shows one of each).
    let mut statuses: Option<(Arc<Worker>, Arc<Worker>)> = None;
    // The own manager the running duties were started for, and their tasks.
    let mut running: Option<(Arc<manager::Service>, JoinSet<()>)> = None;
    // Since when the duties are wanted here without running (`None` at the node's start:
    // started at once then).
    let mut wanted_since: Option<Option<tokio::time::Instant>> = Some(None);
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let serving = own.get().filter(|m| !m.is_stopped());
        let config = live.current();
        let want = wanted(&config, me, serving.is_some());
        let now = tokio::time::Instant::now();
        let waited = match (want, wanted_since) {
            (false, _) => {
                wanted_since = None;
                false
            }
            (true, Some(None)) => true,
            (true, Some(Some(t))) => now.duration_since(t) >= TAKE_OVER_AFTER,
            (true, None) => {
                wanted_since = Some(Some(now));
                false
            }
        };
        if let Some((m, _)) = &running {
            let same = serving.as_ref().is_some_and(|s| Arc::ptr_eq(s, m));
            if !want || !same {
                if let Some((_, mut tasks)) = running.take() {
                    tasks.abort_all();
                }
                if let Some((c, r)) = &statuses {
                    c.stopped();
                    r.stopped();
                }
                tracing::warn!(node = %name, epoch = config.file.epoch, "this node's manager stopped or no longer runs the cluster's duties: stopped the cleaner, reclaimer and rebuild");
            }
        }
        let Some(m) = serving.filter(|_| want && waited && running.is_none()) else {
            continue;
        };
        let (cleaner, rebuild) = statuses
            .get_or_insert_with(|| (registry.register("cleaner"), registry.register("rebuild")))
            .clone();
        tracing::info!(
            node = %name,
            epoch = config.file.epoch,
            clean_below_free_pct = config.file.manager.clean_below_free_pct,
            rebuild_delay_secs = config.file.storage.rebuild_delay_secs,
            "starting the cleaner, the reclaimer of dead data segments and the background rebuild"
        );
        let mut tasks = JoinSet::new();
        let r = manager::cleaner::worker::Cleaner::following(live.clone(), transport.clone());
        let (mm, l) = (m.clone(), live.clone());
        tasks.spawn(async move {
            // Never stopped through the watch: the task is aborted.
            let (_keep, rx) = tokio::sync::watch::channel(false);
            if after_recovery(&mm, &cleaner, &l, me).await {
                r.run(rx, cleaner).await
            }
        });
        let (c, t, mm) = (live.clone(), transport.clone(), m.clone());
        tasks.spawn(async move {
            let (_keep, rx) = tokio::sync::watch::channel(false);
            if after_recovery(&mm, &rebuild, &c, me).await {
                storage::autorebuild::run(c, t, rx, rebuild).await
            }
        });
        running = Some((m, tasks));
    }
}

/// Waits until the node's manager has recovered, for a duty that acts by the config it
/// serves by: whether it may run (still wanted by the config in force then). Not if the manager refused to serve (its file
/// contradicts the committed config): the duty then reports why and stops, and does
/// nothing by a file the cluster does not agree with.
async fn after_recovery(m: &manager::Service, w: &Worker, live: &LiveConfig, me: NodeId) -> bool {
    match m.wait_recovered().await {
        // The node's start decided by its own file; the committed config installed before
        // recovery may name another node (which the next check stops these for).
        Ok(()) => wanted(&live.current(), me, !m.is_stopped()),
        Err(e) => {
            w.failed(format!(
                "not run: the manager of this node refused to serve: {e}"
            ));
            w.stopped();
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::wanted;
    use crate::hosting::tests::cluster;
    use proto::config::ClusterConfig;
    use proto::ids::NodeId;

    fn load(f: proto::config::ClusterFile) -> ClusterConfig {
        ClusterConfig::from_file(std::path::Path::new("."), f).expect("valid")
    }

    #[test]
    fn the_lowest_manager_serving_its_own_group_runs_the_duties() {
        let c = cluster();
        let (m1, m2, m3) = (NodeId(7), NodeId(8), NodeId(9));
        assert!(wanted(&c, m1, true));
        assert!(!wanted(&c, m1, false), "not while its manager is stopped");
        assert!(!wanted(&c, m2, true));
        assert!(!wanted(&c, NodeId(1), true), "a storage node never");
        // manager-1's group served by manager-3: manager-2's turn.
        let moved = load(
            c.file
                .takeover(
                    "manager-1",
                    "manager-3",
                    "127.0.0.1:7100".parse().expect("addr"),
                )
                .expect("valid"),
        );
        assert!(!wanted(&moved, m1, true));
        assert!(wanted(&moved, m2, true));
        assert!(!wanted(&moved, m3, true));
    }
}
