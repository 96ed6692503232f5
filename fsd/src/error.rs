//! Errors of starting and running nodes, clusters and mounts.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] proto::config::ConfigError),
    #[error("node {0} is not in the cluster config; `shoal status --cluster DIR` lists the nodes")]
    UnknownNode(String),
    #[error("cannot load TLS material for {name}: {source}")]
    Tls {
        name: String,
        source: proto::tls::TlsError,
    },
    #[error(transparent)]
    Transport(#[from] proto::transport::TransportError),
    #[error("storage role: {0}")]
    Storage(String),
    #[error("manager role: {0}")]
    Manager(String),
    #[error(transparent)]
    ConfigGroup(#[from] crate::config_group::GroupError),
    #[error("client: {0}")]
    Client(String),
    #[error("cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}
