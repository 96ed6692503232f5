//! Who a peer is: the role(s) and stable name its certificate carries, and the client-log
//! tag derived from the name. Owns the encoding of identities in certificates and their
//! parsing from a verified peer certificate; it does not decide what an identity may do
//! (that is `authz`) and does no I/O.
//!
//! Encoding: one Subject Alternative Name URI per role, `shoal://ROLE/NAME`, where ROLE is
//! `storage`, `manager`, `client` or `admin` and NAME is the node or client name
//! (`[A-Za-z0-9._-]`, 1..=64 bytes). A node running several roles carries one URI per role,
//! all with the same name. The certificate's common name is NAME too (for humans); only the
//! URIs count. A certificate with no such URI, or with URIs naming two different names, has
//! no identity and is refused by every server.
//!
//! Export options of a client identity (like an NFS export line) ride in the same
//! certificate, as further SAN URIs `shoal-export://NAME/OPTION` with OPTION `trusted`
//! (no root squash), `all-squash` or `read-only`. They live in the certificate rather than
//! in the cluster config because they are then signed by the CA and verified by the TLS
//! layer with the identity itself, reach every manager without a config push or restart,
//! and cannot drift from the identity; changing them means issuing a new certificate (and
//! revoking the old one). No option URI means the safe default: root squash, read-write.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What a peer is allowed to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    Storage,
    Manager,
    Client,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Storage, Role::Manager, Role::Client, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Storage => "storage",
            Role::Manager => "manager",
            Role::Client => "client",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity name {0:?} is not 1..=64 bytes of [A-Za-z0-9._-]")]
    BadName(String),
    #[error("certificate is not parseable X.509: {0}")]
    BadCertificate(String),
    #[error("certificate carries no shoal://ROLE/NAME identity (issue it with `shoal init` or `shoal cert issue`)")]
    NoIdentity,
    #[error("certificate names two identities ({0} and {1})")]
    TwoNames(String, String),
    #[error("certificate identity URI {0:?} is malformed")]
    BadUri(String),
}

/// A verified peer's identity: its stable name and its roles (never empty).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerIdentity {
    pub name: String,
    pub roles: Vec<Role>,
    /// How a manager maps this identity's file system credentials (client identities).
    pub export: ExportOptions,
}

/// Per-identity export options (NFS-like), enforced by managers from the verified
/// certificate. The default is root squash on, all squash off, read-write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExportOptions {
    /// Root (uid 0) keeps its power; without it uid 0 is mapped to the anonymous user.
    pub trusted: bool,
    /// Every uid and gid is mapped to the anonymous user.
    pub all_squash: bool,
    /// Every change is refused with EROFS.
    pub read_only: bool,
}

impl ExportOptions {
    const OPTIONS: [&'static str; 3] = ["trusted", "all-squash", "read-only"];

    fn flags(&self) -> [bool; 3] {
        [self.trusted, self.all_squash, self.read_only]
    }

    /// The option names set, in a fixed order.
    pub fn names(&self) -> Vec<&'static str> {
        Self::OPTIONS
            .iter()
            .zip(self.flags())
            .filter_map(|(n, on)| on.then_some(*n))
            .collect()
    }

    fn set(&mut self, name: &str) -> bool {
        match name {
            "trusted" => self.trusted = true,
            "all-squash" => self.all_squash = true,
            "read-only" => self.read_only = true,
            _ => return false,
        }
        true
    }
}

impl PeerIdentity {
    /// An identity with `roles` (sorted, deduplicated); the name is checked.
    pub fn new(name: &str, roles: &[Role]) -> Result<PeerIdentity, IdentityError> {
        check_name(name)?;
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        if roles.is_empty() {
            return Err(IdentityError::NoIdentity);
        }
        Ok(PeerIdentity {
            name: name.to_string(),
            roles,
            export: ExportOptions::default(),
        })
    }

    /// The same identity with these export options.
    pub fn with_export(mut self, export: ExportOptions) -> PeerIdentity {
        self.export = export;
        self
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The SAN URIs that encode this identity.
    pub fn uris(&self) -> Vec<String> {
        let roles = self
            .roles
            .iter()
            .map(|r| format!("shoal://{}/{}", r, self.name));
        let opts = self
            .export
            .names()
            .into_iter()
            .map(|o| format!("shoal-export://{}/{o}", self.name));
        roles.chain(opts).collect()
    }

    /// Builds the identity from SAN URIs (others are ignored).
    pub fn from_uris<'a>(
        uris: impl IntoIterator<Item = &'a str>,
    ) -> Result<PeerIdentity, IdentityError> {
        let mut name: Option<String> = None;
        let mut roles = Vec::new();
        let mut export = ExportOptions::default();
        let mut export_names = Vec::new();
        for uri in uris {
            if let Some(rest) = uri.strip_prefix("shoal-export://") {
                let (n, opt) = rest
                    .split_once('/')
                    .ok_or_else(|| IdentityError::BadUri(uri.to_string()))?;
                if !export.set(opt) {
                    return Err(IdentityError::BadUri(uri.to_string()));
                }
                export_names.push(n.to_string());
                continue;
            }
            let Some(rest) = uri.strip_prefix("shoal://") else {
                continue;
            };
            let (role, n) = rest
                .split_once('/')
                .ok_or_else(|| IdentityError::BadUri(uri.to_string()))?;
            let role = Role::parse(role).ok_or_else(|| IdentityError::BadUri(uri.to_string()))?;
            check_name(n)?;
            match &name {
                Some(prev) if prev != n => {
                    return Err(IdentityError::TwoNames(prev.clone(), n.to_string()))
                }
                _ => name = Some(n.to_string()),
            }
            roles.push(role);
        }
        let name = name.ok_or(IdentityError::NoIdentity)?;
        if let Some(other) = export_names.into_iter().find(|n| *n != name) {
            return Err(IdentityError::TwoNames(name, other));
        }
        Ok(PeerIdentity::new(&name, &roles)?.with_export(export))
    }

    /// Parses the identity of a DER certificate (already verified against the cluster CA
    /// by the TLS layer).
    pub fn from_cert_der(der: &[u8]) -> Result<PeerIdentity, IdentityError> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?
            .ok_or(IdentityError::NoIdentity)?;
        let uris = san.value.general_names.iter().filter_map(|g| match g {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        });
        PeerIdentity::from_uris(uris)
    }

    /// Parses the identity of the first certificate of a PEM text.
    pub fn from_cert_pem(pem: &str) -> Result<PeerIdentity, IdentityError> {
        let der = rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .ok_or_else(|| IdentityError::BadCertificate("no PEM certificate".into()))?
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        PeerIdentity::from_cert_der(der.as_ref())
    }

    /// The tag of this identity's client logs (see `LogId::client_of`).
    pub fn log_tag(&self) -> u32 {
        log_tag(&self.name)
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let roles: Vec<&str> = self.roles.iter().map(|r| r.as_str()).collect();
        write!(f, "{} ({})", self.name, roles.join("+"))?;
        let opts = self.export.names();
        if !opts.is_empty() {
            write!(f, " [{}]", opts.join(","))?;
        }
        Ok(())
    }
}

/// Who the node at an address must be, as the cluster config names it: a node dialled
/// there is refused unless its certificate carries this name and every one of these roles
/// (so a machine that took over a node's address with another certificate of the same CA
/// — a client's, say — cannot pose as a manager or a storage server).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedPeer {
    pub name: String,
    pub roles: Vec<Role>,
}

/// The identity of node `n` of a cluster config: its name, one role per role it runs.
pub fn of_node(n: &crate::config::Node) -> Result<PeerIdentity, IdentityError> {
    let roles: Vec<Role> = n
        .roles
        .iter()
        .map(|r| match r {
            crate::config::Role::Storage => Role::Storage,
            crate::config::Role::Manager => Role::Manager,
        })
        .collect();
    PeerIdentity::new(&n.name, &roles)
}

/// Who must answer at each node address of `config` (for `Transport::expect_peers`).
pub fn expected_peers(
    config: &crate::config::ClusterConfig,
) -> Result<std::collections::HashMap<std::net::SocketAddr, ExpectedPeer>, IdentityError> {
    let mut peers = std::collections::HashMap::new();
    for n in &config.nodes {
        let id = of_node(n)?;
        let expect = |id: PeerIdentity| ExpectedPeer {
            name: id.name,
            roles: id.roles,
        };
        peers.insert(n.address, expect(id));
        // A manager group served by another node's process (a takeover) answers at its
        // own address with that node's certificate.
        if let Some(host) = config.node(n.host).filter(|_| n.is_hosted()) {
            peers.insert(n.group_address, expect(of_node(host)?));
        }
    }
    Ok(peers)
}

impl fmt::Display for ExpectedPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let roles: Vec<&str> = self.roles.iter().map(|r| r.as_str()).collect();
        write!(f, "node `{}` ({})", self.name, roles.join("+"))
    }
}

/// Why a dialled peer is not the node the cluster config names at its address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerMismatch {
    #[error("expected {expected} per the cluster config, but its certificate carries no identity")]
    NoIdentity { expected: ExpectedPeer },
    #[error("expected {expected} per the cluster config, but it presented `{got}`")]
    OtherName {
        expected: ExpectedPeer,
        got: Box<PeerIdentity>,
    },
    #[error(
        "expected {expected} per the cluster config, but it presented `{got}`, which lacks the role(s) {}",
        missing.iter().map(|r| r.as_str()).collect::<Vec<_>>().join("+")
    )]
    MissingRoles {
        expected: ExpectedPeer,
        got: Box<PeerIdentity>,
        missing: Vec<Role>,
    },
}

impl ExpectedPeer {
    /// Whether `got` (the dialled peer's verified identity) is the expected node: its name
    /// and every one of its roles.
    pub fn check(&self, got: Option<&PeerIdentity>) -> Result<(), PeerMismatch> {
        let Some(got) = got else {
            return Err(PeerMismatch::NoIdentity {
                expected: self.clone(),
            });
        };
        if got.name != self.name {
            return Err(PeerMismatch::OtherName {
                expected: self.clone(),
                got: Box::new(got.clone()),
            });
        }
        let missing: Vec<Role> = self
            .roles
            .iter()
            .filter(|r| !got.roles.contains(r))
            .copied()
            .collect();
        if !missing.is_empty() {
            return Err(PeerMismatch::MissingRoles {
                expected: self.clone(),
                got: Box::new(got.clone()),
                missing,
            });
        }
        Ok(())
    }
}

/// Checks an identity name: 1..=64 bytes of `[A-Za-z0-9._-]`.
pub fn check_name(name: &str) -> Result<(), IdentityError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadName(name.to_string()))
    }
}

/// The 24-bit tag a client identity's logs carry (first bytes of SHA-256 of its name).
/// Storage servers and managers accept a client's fragments and commits only in logs with
/// its tag. Two names with the same tag could write each other's logs: `shoal cert issue`
/// refuses a client name whose tag an existing client certificate already has.
pub fn log_tag(name: &str) -> u32 {
    let d = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let b = d.as_ref();
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

#[cfg(test)]
mod tests {

    #[test]
    fn expected_peer_needs_its_name_and_every_role() {
        let want = ExpectedPeer {
            name: "m1".into(),
            roles: vec![Role::Manager, Role::Storage],
        };
        let same = PeerIdentity::new("m1", &[Role::Storage, Role::Manager]).expect("id");
        assert_eq!(want.check(Some(&same)), Ok(()));
        let more =
            PeerIdentity::new("m1", &[Role::Storage, Role::Manager, Role::Admin]).expect("id");
        assert_eq!(want.check(Some(&more)), Ok(()));
        let fewer = PeerIdentity::new("m1", &[Role::Storage]).expect("id");
        let e = want.check(Some(&fewer)).expect_err("a role missing");
        assert!(
            matches!(&e, PeerMismatch::MissingRoles { missing, .. } if missing == &[Role::Manager]),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            text.contains("node `m1` (manager+storage)")
                && text.contains("lacks the role(s) manager"),
            "{text}"
        );
        let other = PeerIdentity::new("client", &[Role::Client]).expect("id");
        let e = want.check(Some(&other)).expect_err("another identity");
        assert!(matches!(e, PeerMismatch::OtherName { .. }), "{e:?}");
        assert!(e.to_string().contains("presented `client (client)"), "{e}");
        // A node of the right name but another role (a client certificate named like the
        // manager) is refused too.
        let client_named_m1 = PeerIdentity::new("m1", &[Role::Client]).expect("id");
        let e = want.check(Some(&client_named_m1)).expect_err("client role");
        assert!(
            matches!(&e, PeerMismatch::MissingRoles { missing, .. } if missing.len() == 2),
            "{e:?}"
        );
        assert!(matches!(
            want.check(None),
            Err(PeerMismatch::NoIdentity { .. })
        ));
    }
    use super::*;

    #[test]
    fn uris_roundtrip_and_bad_ones_are_refused() {
        let id = PeerIdentity::new("node-1", &[Role::Manager, Role::Storage]).expect("id");
        let uris = id.uris();
        assert_eq!(
            uris,
            vec!["shoal://storage/node-1", "shoal://manager/node-1"]
        );
        let back = PeerIdentity::from_uris(uris.iter().map(|s| s.as_str())).expect("parse");
        assert_eq!(back, id);
        assert_eq!(
            PeerIdentity::from_uris(["https://x"]),
            Err(IdentityError::NoIdentity)
        );
        assert!(matches!(
            PeerIdentity::from_uris(["shoal://client/a", "shoal://admin/b"]),
            Err(IdentityError::TwoNames(..))
        ));
        assert!(matches!(
            PeerIdentity::from_uris(["shoal://root/a"]),
            Err(IdentityError::BadUri(_))
        ));
        assert!(matches!(
            PeerIdentity::from_uris(["shoal://client/a b"]),
            Err(IdentityError::BadName(_))
        ));
        let opts = ExportOptions {
            trusted: true,
            all_squash: false,
            read_only: true,
        };
        let id = PeerIdentity::new("carol", &[Role::Client])
            .expect("id")
            .with_export(opts);
        let back = PeerIdentity::from_uris(id.uris().iter().map(|s| s.as_str())).expect("parse");
        assert_eq!(back.export, opts);
        assert!(matches!(
            PeerIdentity::from_uris(["shoal://client/a", "shoal-export://a/root"]),
            Err(IdentityError::BadUri(_))
        ));
        assert!(matches!(
            PeerIdentity::from_uris(["shoal://client/a", "shoal-export://b/trusted"]),
            Err(IdentityError::TwoNames(..))
        ));
        assert!(PeerIdentity::new("", &[Role::Client]).is_err());
        assert!(PeerIdentity::new("x", &[]).is_err());
    }

    #[test]
    fn issued_certificates_carry_their_identity() {
        let ca = crate::tls::CertAuthority::generate("t").expect("ca");
        let id = PeerIdentity::new("alice", &[Role::Client]).expect("id");
        let (pem, _) = ca.issue_identity(&id, None).expect("issue");
        let der = rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .expect("cert")
            .expect("pem");
        assert_eq!(PeerIdentity::from_cert_der(der.as_ref()), Ok(id));
        let (legacy, _) = ca.issue("old").expect("issue");
        let der = rustls_pemfile::certs(&mut legacy.as_bytes())
            .next()
            .expect("cert")
            .expect("pem");
        assert_eq!(
            PeerIdentity::from_cert_der(der.as_ref()),
            Err(IdentityError::NoIdentity)
        );
    }

    #[test]
    fn log_tags_fit_24_bits_and_differ() {
        assert!(log_tag("alice") < 1 << 24);
        assert_ne!(log_tag("alice"), log_tag("bob"));
        assert_eq!(log_tag("alice"), log_tag("alice"));
    }
}
