//! Issuing and revoking identities of a cluster directory: `shoal cert issue` and `shoal
//! cert revoke`. Needs the CA key (`tls/ca.key`), so it runs where the operator keeps it,
//! never on nodes. Owns the certificate files under `tls/` and `tls/revoked.list`; pushes a
//! new deny list to every node with the admin identity, but never touches node state.

use crate::cluster::{admin_transport, certificate_identity, write_identity};
use crate::error::NodeError;
use crate::node::revoked_list_path;
use proto::config::ClusterConfig;
use proto::identity::{ExportOptions, PeerIdentity, Role};
use proto::msg::{AdminRequest, Request, Response};
use proto::revoke::{DenyList, SignedDenyList};
use proto::tls::CertAuthority;
use std::time::Duration;

fn load_ca(config: &ClusterConfig) -> Result<CertAuthority, NodeError> {
    if !config.ca_key_path().exists() {
        return Err(NodeError::Other(format!(
            "{} is missing: issuing and revoking need the cluster CA key (keep it off the nodes, run this where it is)",
            config.ca_key_path().display()
        )));
    }
    CertAuthority::load(&config.ca_cert_path(), &config.ca_key_path()).map_err(|source| {
        NodeError::Tls {
            name: "ca".into(),
            source,
        }
    })
}

/// Every identity name with a certificate under `tls/` (other than the CA).
fn issued(config: &ClusterConfig) -> Vec<PeerIdentity> {
    let dir = config.ca_cert_path().with_file_name("");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".pem")?;
            (stem != "ca").then(|| certificate_identity(config, stem))?
        })
        .collect()
}

/// Issues `tls/NAME.pem` and `tls/NAME.key` for a client or admin identity, valid for
/// `valid_for`. Refuses a name a node or another certificate already has, and a client
/// name whose log tag another client already has (it could write that client's logs).
/// `export` (client identities only) are the options managers map its credentials with.
pub fn issue(
    config: &ClusterConfig,
    role: Role,
    name: &str,
    valid_for: Duration,
    export: ExportOptions,
) -> Result<PeerIdentity, NodeError> {
    if !matches!(role, Role::Client | Role::Admin) {
        return Err(NodeError::Other(format!(
            "`shoal cert issue` makes client and admin certificates; node certificates come from `shoal init` ({role} asked)"
        )));
    }
    if role != Role::Client && export != ExportOptions::default() {
        return Err(NodeError::Other(format!(
            "export options ({}) are for client identities, not {role}",
            export.names().join(",")
        )));
    }
    let id = PeerIdentity::new(name, &[role])
        .map_err(|e| NodeError::Other(e.to_string()))?
        .with_export(export);
    if config.node_by_name(name).is_some() {
        return Err(NodeError::Other(format!(
            "{name} is a node of this cluster: pick another name"
        )));
    }
    let (cp, _) = config.cert_paths(name);
    if cp.exists() {
        return Err(NodeError::Other(format!(
            "{} exists: {name} already has a certificate (revoke it and pick a new name)",
            cp.display()
        )));
    }
    if role == Role::Client {
        if let Some(other) = issued(config)
            .into_iter()
            .find(|o| o.has(Role::Client) && o.log_tag() == id.log_tag())
        {
            return Err(NodeError::Other(format!(
                "client {name} would share its log tag with client {} (it could write that client's logs): pick another name",
                other.name
            )));
        }
    }
    let ca = load_ca(config)?;
    write_identity(config, &ca, &id, Some(valid_for))?;
    Ok(id)
}

/// Why a node could not be told the new deny list.
#[derive(Debug, thiserror::Error)]
pub enum PushFailed {
    #[error("{0}")]
    Refused(proto::msg::RemoteError),
    #[error("unexpected answer {0}")]
    UnexpectedAnswer(String),
    #[error(transparent)]
    Transport(#[from] proto::transport::TransportError),
}

/// What `revoke` did at one node.
#[derive(Debug)]
pub struct PushResult {
    pub node: String,
    /// The deny-list sequence number the node holds now, or why it could not be told.
    pub result: Result<u64, PushFailed>,
}

/// Adds `name` to the cluster's deny list (signed by the CA, written to
/// `tls/revoked.list`) and pushes the list to every node; nodes refuse the name and close
/// its connections at once. Nodes that cannot be reached load the list from the cluster
/// directory's copy when they start (copy `tls/revoked.list` to them).
pub async fn revoke(
    config: &ClusterConfig,
    name: &str,
) -> Result<(DenyList, Vec<PushResult>), NodeError> {
    proto::identity::check_name(name).map_err(|e| NodeError::Other(e.to_string()))?;
    let ca = load_ca(config)?;
    let ca_der = rustls_der(&ca.cert_pem)?;
    let path = revoked_list_path(config);
    let old = match SignedDenyList::load(&path).map_err(|e| NodeError::Other(e.to_string()))? {
        Some(s) => s
            .verify(&ca_der)
            .map_err(|e| NodeError::Other(format!("{}: {e}", path.display())))?,
        None => DenyList::default(),
    };
    let list = old.with(name);
    let signed = list
        .sign(&ca)
        .map_err(|e| NodeError::Other(e.to_string()))?;
    signed
        .store(&path)
        .map_err(|e| NodeError::Other(e.to_string()))?;
    let pushed = push(config, &signed).await?;
    Ok((list, pushed))
}

/// Sends `signed` to every node of the cluster.
pub async fn push(
    config: &ClusterConfig,
    signed: &SignedDenyList,
) -> Result<Vec<PushResult>, NodeError> {
    let transport = admin_transport(config)?;
    let req = Request::Admin(AdminRequest::InstallDenyList {
        list: signed.list.clone(),
        signature: signed.signature.clone(),
    });
    let calls = config.nodes.iter().map(|n| {
        let t = transport.clone();
        let req = req.clone();
        async move {
            let r = t
                .call_timeout(n.address, &req, bytes::Bytes::new(), Duration::from_secs(3))
                .await;
            let result = match r {
                Ok((Response::DenyList { seq }, _)) => Ok(seq),
                Ok((Response::Error(e), _)) => Err(PushFailed::Refused(e)),
                Ok((other, _)) => Err(PushFailed::UnexpectedAnswer(other.to_string())),
                Err(e) => Err(PushFailed::Transport(e)),
            };
            PushResult {
                node: n.name.clone(),
                result,
            }
        }
    });
    let out = futures::future::join_all(calls).await;
    transport.close();
    Ok(out)
}

fn rustls_der(pem: &str) -> Result<Vec<u8>, NodeError> {
    let der = proto::tls::first_cert_der(pem)
        .ok_or_else(|| NodeError::Other("the CA certificate holds no PEM certificate".into()))?;
    Ok(der)
}

/// A validity period that `parse_duration` does not accept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?}: expected a number and d, h, m or s (e.g. 365d)")]
    Malformed(String),
    #[error("{0:?}: a certificate must be valid for some time")]
    Zero(String),
}

/// Parses "365d", "12h", "30m" or "90s".
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| DurationError::Malformed(s.to_string()))?;
    let secs = match unit {
        "d" => n.checked_mul(86400),
        "h" => n.checked_mul(3600),
        "m" => n.checked_mul(60),
        "s" | "" => Some(n),
        _ => None,
    }
    .ok_or_else(|| DurationError::Malformed(s.to_string()))?;
    if secs == 0 {
        return Err(DurationError::Zero(s.to_string()));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("365d"), Ok(Duration::from_secs(365 * 86400)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert!(parse_duration("0d").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("d").is_err());
    }
}
