//! The config follower of a running node or mount: asks the config group's members for the
//! committed cluster config (`Request::ConfigRead`) every `FOLLOW_PERIOD`, or at once when
//! someone saw a sign of a newer one (`LiveConfig::want_newer`), and installs what is newer
//! where `live::accepts` allows it.
//!
//! Owns the asking (a round ends at the first newer answer). Must not decide what a
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

/// Parses a member's answer.
pub fn parse(text: &str) -> Result<ClusterFile, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

/// What the members answered to one round of asks.
#[derive(Debug, Default)]
pub struct Round {
    /// The first answer newer than the epoch asked about (the round ends with it).
    pub newer: Option<ClusterFile>,
    /// How many members answered at all.
    pub answered: usize,
}

/// Asks every config group member of `config` for its committed config, all at once; ends
/// at the first answer newer than `than` (a slow or dead member does not hold it up), or
/// once every member answered or timed out.
/// The committed config the members answer, when it is newer than `config` and a running
/// node would follow it (`live::accepts`); `None` otherwise, or when no member answers (one
/// round of `ask_members`). A mount's and `shoal status`'s start: an automatic takeover
/// writes no `cluster.toml`.
pub async fn newer_to_follow(
    transport: &Arc<Transport>,
    config: &ClusterConfig,
) -> Option<ClusterConfig> {
    let file = ask_members(transport, config, config.file.epoch)
        .await
        .newer?;
    let newer = match ClusterConfig::from_file(&config.dir, file) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("the committed cluster config does not load: {e}");
            return None;
        }
    };
    match crate::live::accepts(config, &newer) {
        Ok(()) => Some(newer),
        Err(e) => {
            tracing::warn!(local = config.file.epoch, committed = newer.file.epoch, "the committed cluster config is newer than cluster.toml here and not followed: {e}");
            None
        }
    }
}

pub async fn ask_members(transport: &Arc<Transport>, config: &ClusterConfig, than: u64) -> Round {
    let mut asks = tokio::task::JoinSet::new();
    for addr in config.config_group_members().iter().map(|n| n.address) {
        let transport = transport.clone();
        asks.spawn(async move {
            match transport
                .call_timeout(addr, &Request::ConfigRead, Bytes::new(), ASK_TIMEOUT)
                .await
            {
                Ok((Response::Config { file: Some(text) }, _)) => match parse(&text) {
                    Ok(f) => Some(Some(f)),
                    Err(e) => {
                        crate::warn_limited!(%addr, error = %e, "config group member sent an unreadable config");
                        Some(None)
                    }
                },
                Ok((Response::Config { file: None }, _)) => Some(None),
                _ => None,
            }
        });
    }
    let mut round = Round::default();
    while let Some(r) = asks.join_next().await {
        let Ok(Some(answer)) = r else { continue };
        round.answered += 1;
        if let Some(f) = answer.filter(|f| f.epoch > than) {
            round.newer = Some(f);
            break;
        }
    }
    round
}

/// Rounds without any member answering after which the follower says so (then again at
/// that interval).
const SILENT_ROUNDS: u32 = 30;

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
    let mut silent = 0u32;
    loop {
        // The first ask at once: a process started from a stale file follows at its start.
        if !std::mem::take(&mut first) {
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_PERIOD) => {}
                _ = live.wanted() => {}
            }
        }
        let current = live.current();
        let round = ask_members(&transport, &current, current.file.epoch).await;
        if round.answered == 0 {
            silent += 1;
            if silent.is_multiple_of(SILENT_ROUNDS) {
                tracing::warn!(rounds = silent, "no config group member answered: not learning newer cluster configs (members down or unreachable)");
            }
        } else {
            silent = 0;
        }
        let Some(file) = round.newer else {
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
                // Calls in flight to a manager group's old host fail now and are sent again
                // to its new one, rather than wait out their timeout on a host that stopped.
                for (group, addr) in crate::live::moved_groups(&old, &offered) {
                    tracing::info!(%group, old = %addr, "a manager group moved: closing the connection to its old host");
                    transport.drop_connection(addr);
                }
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
    fn a_member_answer_parses_and_garbage_does_not() {
        let f = ClusterConfig::generate("t", 6, 2, ErasureConfig { data: 4, parity: 2 }, 7400)
            .expect("file");
        let text = ClusterConfig::render(&f);
        assert_eq!(parse(&text).expect("parses"), f);
        assert!(parse("not = [a toml").is_err());
    }
}
