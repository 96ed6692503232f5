//! A live move of a manager group this node serves to another manager while both run
//! (`shoal manager move`, `AdminRequest::MoveGroup`): the hand-over's steps and their
//! order. The group's manager here makes everything it answered durable and refuses later
//! changes (clients retry them), then the chosen manager adopts the group through the
//! config group, as in a takeover (it recovers the log and waits out the volume-lease
//! grace; mounts follow the committed config). If the adoption does not commit, this node
//! commits a plain epoch bump (compare-and-set on the epoch the move was decided at), so a
//! late adoption can never commit after it, and serves the group again.
//!
//! Owns the order of the steps. Must not: start or stop a group itself (`hosting` does,
//! by the config in force), or decide where groups go (the administrator does).

use crate::config_group::{ConfigGroup, RequestError};
use crate::hosting::{Hosting, Quiesce};
use proto::config::{ClusterConfig, ClusterFile, Role};
use proto::live::LiveConfig;
use proto::msg::RemoteError;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a failed hand-over keeps trying to commit its epoch bump before it gives up
/// (the config group has no majority meanwhile; nothing can move the group either). With
/// the adoption's bound and `hosting`'s wait for the last changes, the administrator's
/// request is answered within the transport's 20 s idle bound.
const FENCE_TRYING: Duration = Duration::from_secs(5);

/// How long the chosen manager has to adopt the group (normally milliseconds: a read and a
/// proposal at the config group's leader). A late adoption cannot commit after the fence.
const ADOPT_WAIT: Duration = Duration::from_secs(5);

/// Hands manager `name`'s group, served by this node, over to manager `to`. The committed
/// config (as `cluster.toml` text) once `to` serves it; an error after which this node
/// serves the group again, or, when the config group decides nothing within
/// `FENCE_TRYING`, after which it keeps asking in the background and serves the group
/// again only once the group has decided (never by a config that may be stale).
pub(crate) async fn hand_over(
    hosting: Arc<Hosting>,
    group: Arc<ConfigGroup>,
    live: Arc<LiveConfig>,
    name: &str,
    to: &str,
) -> Result<String, RemoteError> {
    let Some(_one) = hosting.try_one_move() else {
        return Err(RemoteError::Unavailable(
            "another move of a group this node serves, or a failed one's fence, is under way: try again later".into(),
        ));
    };
    let unavailable = |e: RequestError| RemoteError::Unavailable(e.to_string());
    let committed = group
        .read_at_leader()
        .await
        .map_err(unavailable)?
        .ok_or_else(|| RemoteError::Unavailable("the config group holds no config yet".into()))?;
    let dir = live.current().dir.clone();
    let config = ClusterConfig::from_file(&dir, committed.clone())
        .map_err(|e| RemoteError::Invalid(format!("the committed config: {e}")))?;
    let (g, t) = check(&config, hosting.me(), name, to).map_err(RemoteError::Invalid)?;
    let running = live.epoch();
    if running != committed.epoch {
        return Err(RemoteError::Unavailable(format!(
            "this node runs by config epoch {running}, the committed one is {}: try again in a second",
            committed.epoch
        )));
    }
    let started = Instant::now();
    tracing::warn!(group = %name, to = %to, epoch = committed.epoch, "handing the manager group over: making its changes durable, then stopping it here");
    let why = match hosting.quiesce(g).await {
        Ok(()) => match group.ask_adopt(t, g, committed.epoch, ADOPT_WAIT).await {
            Ok(epoch) => {
                tracing::warn!(group = %name, to = %to, epoch, took = ?started.elapsed(), "manager group handed over");
                // Installed here at once: nothing on this node may act by the old epoch.
                let now = group.read_at_leader().await.map_err(unavailable)?;
                let now = now.ok_or_else(|| {
                    RemoteError::Unavailable("the config group holds no config".into())
                })?;
                install(&live, &dir, now.clone()).map_err(RemoteError::Io)?;
                return Ok(ClusterConfig::render(&now));
            }
            Err(e) => format!("{to} did not adopt it: {e}"),
        },
        // Nothing was stopped: nothing to fence.
        Err(Quiesce::NotServed(e)) => return Err(RemoteError::Invalid(e)),
        Err(Quiesce::Unclean(e)) => format!("it did not stop cleanly here: {e}"),
    };
    tracing::warn!(group = %name, to = %to, "the hand-over failed ({why}): fencing the move and serving the group here again");
    match fence(&group, &dir, &live, &committed, FENCE_TRYING).await {
        Ok(now) => {
            hosting.resume().await;
            let host = now
                .node_by_name(name)
                .and_then(|n| now.node(n.host))
                .map_or("?".to_string(), |h| h.name.clone());
            if host == to {
                // The adoption committed after all.
                return Ok(ClusterConfig::render(&now.file));
            }
            Err(RemoteError::Io(format!(
                "the move of {name}'s group to {to} failed ({why}); {host} serves it (config epoch {})",
                now.file.epoch
            )))
        }
        Err(e) => {
            // After this request's guard: the task waits for it.
            let (h, who) = (hosting.clone(), name.to_string());
            let task = tokio::spawn(async move {
                let _one = h.one_move_at_a_time().await;
                match fence(&group, &dir, &live, &committed, Duration::MAX).await {
                    Ok(now) => {
                        tracing::warn!(group = %who, epoch = now.file.epoch, "the config group decided after a failed hand-over: following it");
                        h.resume().await;
                    }
                    Err(e) => {
                        tracing::error!(group = %who, "a failed hand-over is still undecided: {e}")
                    }
                }
            });
            hosting.keep_fencing(task);
            Err(RemoteError::Unavailable(format!(
                "the move of {name}'s group to {to} failed ({why}), and the config group took no decision since ({e}): the group is not served until it does (this node keeps asking, and serves it again if it is still its host)"
            )))
        }
    }
}

/// What a move of `name`'s group to `to` needs, checked against the committed `config` on
/// node `me` (pure): the group's id and the address `to` answers the config group at.
fn check(
    config: &ClusterConfig,
    me: proto::ids::NodeId,
    name: &str,
    to: &str,
) -> Result<(proto::ids::NodeId, std::net::SocketAddr), String> {
    let g = config
        .node_by_name(name)
        .filter(|n| n.has(Role::Manager))
        .ok_or_else(|| format!("{name} is not a manager of this cluster"))?;
    let t = config
        .node_by_name(to)
        .filter(|n| n.has(Role::Manager))
        .ok_or_else(|| format!("{to} is not a manager of this cluster"))?;
    let host = config.node(g.host).map_or("?", |h| h.name.as_str());
    if g.host != me {
        return Err(format!(
            "{name}'s group is served by {host}, not by this node: send the move there"
        ));
    }
    if t.id == g.host {
        return Err(format!("{to} already serves {name}'s group"));
    }
    if t.is_hosted() && t.id != g.id {
        return Err(format!(
            "{to} does not serve its own group (a takeover moved it): it cannot serve another"
        ));
    }
    // Every rule of the config itself (e.g. a node hosting other groups cannot move):
    // checked before anything stops, not by the adoption after.
    let somewhere = std::net::SocketAddr::new(t.address.ip(), 1);
    config
        .file
        .takeover(name, to, somewhere)
        .map_err(|e| format!("the config would not take the move: {e}"))?;
    Ok((g.id, t.address))
}

/// After a failed adoption: commits `committed` again at the next epoch (compare-and-set),
/// so that the adoption, still in flight perhaps, can never commit, and installs what the
/// group decided: that bump, or (the epoch had moved on, the adoption may have committed
/// after all) the config committed now. Gives up after `trying` without a decision.
async fn fence(
    group: &ConfigGroup,
    dir: &std::path::Path,
    live: &LiveConfig,
    committed: &ClusterFile,
    trying: Duration,
) -> Result<Arc<ClusterConfig>, String> {
    let deadline = Instant::now().checked_add(trying);
    let mut bump = committed.clone();
    bump.epoch += 1;
    loop {
        let last = match group.propose_at_leader(committed.epoch, bump.clone()).await {
            Ok(_) => return install(live, dir, bump),
            Err(RequestError::Refused(r)) => {
                tracing::info!("the epoch moved on during the hand-over ({r}): following it");
                match group.read_at_leader().await {
                    Ok(Some(now)) => return install(live, dir, now),
                    Ok(None) => "the config group holds no config".to_string(),
                    Err(e) => e.to_string(),
                }
            }
            Err(e) => e.to_string(),
        };
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn install(
    live: &LiveConfig,
    dir: &std::path::Path,
    file: ClusterFile,
) -> Result<Arc<ClusterConfig>, String> {
    let c = Arc::new(ClusterConfig::from_file(dir, file).map_err(|e| e.to_string())?);
    live.catch_up(c.clone()).map_err(|e| e.to_string())?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::check;
    use crate::hosting::tests::cluster;
    use proto::config::ClusterConfig;
    use proto::ids::NodeId;

    #[test]
    fn a_move_is_checked_against_who_serves_what() {
        let c = cluster();
        let (m1, m2) = (NodeId(7), NodeId(8));
        let to = c.node(m1).expect("m1").address;
        assert_eq!(check(&c, m2, "manager-2", "manager-1"), Ok((m2, to)));
        let e = check(&c, m1, "manager-2", "manager-1").expect_err("not served here");
        assert!(e.contains("served by manager-2"), "{e}");
        let e = check(&c, m2, "manager-2", "manager-2").expect_err("already there");
        assert!(e.contains("already serves"), "{e}");
        let e = check(&c, m2, "manager-2", "storage-1").expect_err("not a manager");
        assert!(e.contains("not a manager"), "{e}");
        let e = check(&c, m2, "nobody", "manager-1").expect_err("no such node");
        assert!(e.contains("not a manager"), "{e}");

        // manager-2's group on manager-1: it goes back to manager-2 or on to manager-3,
        // from manager-1 only; manager-2 (deposed) hosts nothing else.
        let moved = c
            .file
            .takeover(
                "manager-2",
                "manager-1",
                "127.0.0.1:7100".parse().expect("addr"),
            )
            .expect("valid");
        let c2 = ClusterConfig::from_file(std::path::Path::new("."), moved).expect("valid");
        assert_eq!(
            check(&c2, m1, "manager-2", "manager-2"),
            Ok((m2, c2.node(m2).expect("m2").address)),
            "given back"
        );
        assert!(check(&c2, m1, "manager-2", "manager-3").is_ok());
        let e = check(&c2, m1, "manager-1", "manager-2").expect_err("deposed host");
        assert!(e.contains("does not serve its own group"), "{e}");
        // manager-1 hosts manager-2's group: its own group cannot move away meanwhile.
        let e = check(&c2, m1, "manager-1", "manager-3").expect_err("a host cannot move");
        assert!(e.contains("the config would not take the move"), "{e}");
    }
}
