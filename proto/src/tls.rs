//! The cluster's certificate authority and node/client certificates (rcgen), and the rustls
//! configurations for mutual TLS. Owns PEM files on disk; does not open sockets.

use crate::identity::PeerIdentity;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The server name every certificate carries (DNS plays no part); peers are identified by
/// the `shoal://ROLE/NAME` URIs of their certificates (`identity`).
pub const SERVER_NAME: &str = "shoal-node";
/// ALPN protocol id: a peer speaking another wire version is refused at the handshake.
pub const ALPN: &[u8] = b"shoal/1";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no usable PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("the system random generator failed")]
    Random,
    #[error("signature check failed: {0}")]
    BadSignature(String),
}

/// A generated CA: its certificate (PEM) and the issuer that signs leaves.
pub struct CertAuthority {
    pub cert_pem: String,
    pub key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl CertAuthority {
    /// Creates a new self-signed CA for the cluster `name`.
    pub fn generate(name: &str) -> Result<CertAuthority, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} cluster CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(CertAuthority {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA written by `write`.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<CertAuthority, TlsError> {
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let key = KeyPair::from_pem(&key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        Ok(CertAuthority {
            cert_pem,
            key_pem,
            issuer,
        })
    }

    /// Issues a leaf certificate for `common_name` that carries **no** Shoal identity:
    /// real nodes refuse it (`authz`). Only for tests of the layers below authorization.
    /// Returns (certificate PEM, key PEM).
    pub fn issue(&self, common_name: &str) -> Result<(String, String), TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Issues the certificate of `id` (its roles as `shoal://ROLE/NAME` SAN URIs, see
    /// `identity`), valid from an hour ago (clock skew) for `valid_for` (default: 10 years
    /// for nodes, as `shoal init` makes them). Returns (certificate PEM, key PEM).
    pub fn issue_identity(
        &self,
        id: &PeerIdentity,
        valid_for: Option<std::time::Duration>,
    ) -> Result<(String, String), TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()])?;
        for uri in id.uris() {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into()?));
        }
        params.distinguished_name.push(DnType::CommonName, &id.name);
        let now = time::OffsetDateTime::now_utc();
        let valid_for = valid_for.unwrap_or(std::time::Duration::from_secs(10 * 365 * 86400));
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + valid_for;
        let mut serial = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
            .map_err(|_| TlsError::Random)?;
        serial[0] &= 0x7f;
        params.serial_number = Some(serial.to_vec().into());
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Signs `msg` with the CA key (deny lists, `revoke`).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, TlsError> {
        use rcgen::SigningKey;
        let key = KeyPair::from_pem(&self.key_pem)?;
        Ok(key.sign(msg)?)
    }
}

/// Verifies `signature` over `msg` against the public key of the CA certificate
/// `ca_der` (ECDSA P-256, as `CertAuthority::generate` makes). Nodes use it to accept a
/// deny list without holding the CA key.
pub fn verify_ca_signature(ca_der: &[u8], msg: &[u8], signature: &[u8]) -> Result<(), TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(ca_der)
        .map_err(|e| TlsError::BadSignature(format!("CA certificate unparseable: {e}")))?;
    let spki = cert.public_key().subject_public_key.data.as_ref();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, spki)
        .verify(msg, signature)
        .map_err(|_| TlsError::BadSignature("not signed by the cluster CA".into()))
}

/// A node's or client's identity: the CA it trusts and its own certificate and key.
#[derive(Clone)]
pub struct Identity {
    pub ca: Vec<CertificateDer<'static>>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
}

impl Identity {
    /// The validity window of this peer's own certificate (seconds since the epoch:
    /// not before, not after); `None` if it cannot be parsed.
    pub fn validity(&self) -> Option<(i64, i64)> {
        let der = self.chain.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        let v = cert.validity();
        Some((v.not_before.timestamp(), v.not_after.timestamp()))
    }

    /// Loads PEM files: the cluster CA, this peer's certificate and its key.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        let ca_certs = certs(ca)?;
        let chain = certs(cert)?;
        let key_pem = read(key)?;
        let key_der = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .ok()
            .flatten()
            .ok_or_else(|| TlsError::Pem {
                path: key.to_path_buf(),
                what: "private key",
            })?;
        Ok(Identity {
            ca: ca_certs,
            chain,
            key: Arc::new(key_der),
        })
    }

    fn roots(&self) -> Result<rustls::RootCertStore, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in &self.ca {
            roots.add(c.clone())?;
        }
        Ok(roots)
    }

    /// Server side: TLS 1.3, client certificates required and checked against the CA.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots()?),
            provider.clone(),
        )
        .build()?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        // No session tickets: clients do not resume (see `client_config`, where the
        // resumed handshake never completed); either side's setting alone prevents it.
        cfg.send_tls13_tickets = 0;
        Ok(cfg)
    }

    /// Client side: TLS 1.3, server checked against the CA, our certificate presented.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        // No TLS session resumption: with it, reconnects to a live peer (after
        // `Transport::drop_connection`, an outage, an idle timeout) waited out the 10 s idle
        // timeout (transport test `a_dropped_connection_reconnects_at_once`). Under load
        // they still did now and then until the client stopped presenting quinn's
        // address-validation tokens too (`Transport::bind`). A full handshake costs one
        // signature.
        cfg.resumption = rustls::client::Resumption::disabled();
        Ok(cfg)
    }
}

/// Writes `contents` to `path` with mode 0600 when it is a key.
pub fn write_pem(path: &Path, contents: &str, secret: bool) -> Result<(), TlsError> {
    use std::io::Write;
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(contents.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

/// The DER of the first certificate of a PEM text.
pub fn first_cert_der(pem: &str) -> Option<Vec<u8>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()?
        .ok()
        .map(|c| c.to_vec())
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}
