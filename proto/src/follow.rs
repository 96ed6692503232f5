//! The config follower of a running node or mount: asks the config group's members for the
//! committed cluster config (`Request::ConfigRead`) every `FOLLOW_PERIOD`, or at once when
//! someone saw a sign of a newer one (`LiveConfig::want_newer`), and installs what is newer
//! where `live::accepts` allows it.
//!
//! Owns the asking and the choice among answers (`newest`, pure). Must not decide what a
//! running process may follow (`live` does) nor propose anything to the group.

use crate::config::{ClusterConfig, ClusterFile};
use crate::live::{LiveConfig, Refused};
use crate::msg::{Request, Response};
use crate::transport::Transport;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// How often a follower asks when nobody wants a newer config sooner.
pub const FOLLOW_PERIOD: Duration = Duration::from_secs(1);
/// How long one member may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The newest of the members' answers (pure): the highest epoch; `None` if none parsed.
pub fn newest(answers: Vec<Option<ClusterFile>>) -> Option<ClusterFile> {
    answers.into_iter().flatten().max_by_key(|f| f.epoch)
}

/// Parses a member's answer.
pub fn parse(text: &str) -> Result<ClusterFile, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

/// Asks every config group member of `config` for its committed config; the newest answer.
pub async fn ask_members(
    transport: &Arc<Transport>,
    config: &ClusterConfig,
) -> Option<ClusterFile> {
    let mut asks = tokio::task::JoinSet::new();
    for addr in config.config_group_members().iter().map(|n| n.address) {
        let transport = transport.clone();
        asks.spawn(async move {
            match transport
                .call_timeout(addr, &Request::ConfigRead, Bytes::new(), ASK_TIMEOUT)
                .await
            {
                Ok((Response::Config { file: Some(text) }, _)) => match parse(&text) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "config group member sent an unreadable config");
                        None
                    }
                },
                _ => None,
            }
        });
    }
    newest(asks.join_all().await)
}

/// Runs the follower until the task is dropped or aborted. `installed` is told of every
/// config installed (after `live` holds it), e.g. to update the peers the transport expects.
pub async fn run(
    live: Arc<LiveConfig>,
    transport: Arc<Transport>,
    installed: impl Fn(&ClusterConfig) + Send + Sync + 'static,
) {
    let mut refused_epoch = 0u64;
    let _followed = Followed::set(live.clone());
    let mut first = true;
    loop {
        // The first ask at once: a process started from a stale file follows at its start.
        if !std::mem::take(&mut first) {
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_PERIOD) => {}
                _ = live.wanted() => {}
            }
        }
        let current = live.current();
        let Some(file) = ask_members(&transport, &current).await else {
            continue;
        };
        if file.epoch <= current.file.epoch || file.epoch == refused_epoch {
            continue;
        }
        let epoch = file.epoch;
        let offered = match ClusterConfig::from_file(&current.dir, file) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::warn!(epoch, error = %e, "the committed cluster config is not valid here; keeping the running one");
                refused_epoch = epoch;
                continue;
            }
        };
        match live.install(offered.clone()) {
            Ok(old) => {
                tracing::info!(
                    from = old.file.epoch,
                    to = epoch,
                    storage_nodes = offered.storage_nodes().len(),
                    "following the committed cluster config"
                );
                installed(&offered);
            }
            Err(Refused::NotNewer { .. }) => {}
            Err(e @ (Refused::MovesSlots { .. } | Refused::MovesStorage { .. })) => {
                tracing::warn!(error = %e, "not following the committed cluster config");
                refused_epoch = epoch;
            }
        }
    }
}

/// Marks a config followed while the follower runs (also when its task is aborted).
struct Followed(Arc<LiveConfig>);

impl Followed {
    fn set(live: Arc<LiveConfig>) -> Followed {
        live.set_followed(true);
        Followed(live)
    }
}

impl Drop for Followed {
    fn drop(&mut self) {
        self.0.set_followed(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ErasureConfig;

    #[test]
    fn the_newest_answer_wins_and_silence_is_none() {
        let f = ClusterConfig::generate("t", 6, 2, ErasureConfig { data: 4, parity: 2 }, 7400)
            .expect("file");
        let mut g = f.clone();
        g.epoch += 2;
        let mut h = f.clone();
        h.epoch += 1;
        let best = newest(vec![Some(f.clone()), None, Some(g.clone()), Some(h)]).expect("some");
        assert_eq!(best.epoch, g.epoch);
        assert!(newest(vec![None, None]).is_none());
        let text = ClusterConfig::render(&g);
        assert_eq!(parse(&text).expect("parses").epoch, g.epoch);
        assert!(parse("not = [a toml").is_err());
    }
}
