//! What members propose (`Command`) and what applying it answers (`ApplyResult`): the
//! compare-and-set on the config epoch. Pure data; the state machine applies it.

use super::toml_file;
use proto::config::ClusterFile;
use serde::{Deserialize, Serialize};

/// What members propose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// The first config of the group (a member's `cluster.toml`); refused once one is
    /// committed.
    Seed {
        #[serde(with = "toml_file::one")]
        file: ClusterFile,
    },
    /// Replaces the config: applied only if the committed epoch is `expect_epoch` and
    /// `file.epoch` is `expect_epoch + 1`.
    Replace {
        expect_epoch: u64,
        #[serde(with = "toml_file::one")]
        file: ClusterFile,
    },
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Seed { file } => write!(f, "Seed(epoch {})", file.epoch),
            Command::Replace { expect_epoch, file } => {
                write!(f, "Replace(epoch {expect_epoch} -> {})", file.epoch)
            }
        }
    }
}

/// Why the state machine refused a command (the entry is committed, the state unchanged).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refused {
    #[error(
        "the config is at epoch {current}, not {expected}: read it again and propose on top of it"
    )]
    StaleEpoch { current: u64, expected: u64 },
    #[error("a config replacing epoch {current} must carry epoch {}, not {proposed}", current + 1)]
    NotNextEpoch { current: u64, proposed: u64 },
    #[error("the group holds no config yet (its first leader seeds it from cluster.toml)")]
    NotSeeded,
    #[error("the group already holds a config (epoch {current})")]
    AlreadySeeded { current: u64 },
}

/// The outcome of applying one entry: the epoch committed after it, or why it was refused.
pub type ApplyResult = Result<u64, Refused>;
