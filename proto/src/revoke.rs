//! The deny list: identity names the cluster CA has revoked, signed by the CA so that a
//! node can check it with nothing but the CA certificate it already trusts. Owns the list's
//! encoding, signing, verification and the rule which of two lists wins (the higher
//! sequence number); it does no I/O beyond reading and writing the one file it is given,
//! and does not enforce anything (the transport closes connections, `authz` is not asked).
//!
//! File format (`tls/revoked.list` in the cluster directory, and a copy in every node's
//! state directory): `SHOALDENY1\n`, hex of the postcard-encoded `DenyList`, `\n`, hex of
//! the CA's ECDSA signature over those encoded bytes, `\n`.

use crate::tls::{verify_ca_signature, CertAuthority, TlsError};
use serde::{Deserialize, Serialize};
use std::path::Path;

const MAGIC: &str = "SHOALDENY1";

/// Revoked identity names, with a sequence number that grows with every revocation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenyList {
    pub seq: u64,
    pub names: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DenyError {
    #[error("deny list {path}: {reason}")]
    File { path: String, reason: String },
    #[error("deny list is malformed: {0}")]
    Malformed(String),
    #[error("deny list refused: {0}")]
    Signature(#[from] TlsError),
}

/// A deny list as it travels: its encoding and the CA's signature over it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedDenyList {
    pub list: Vec<u8>,
    pub signature: Vec<u8>,
}

impl DenyList {
    /// This list plus `name` (kept sorted, no duplicates), with the next sequence number.
    pub fn with(&self, name: &str) -> DenyList {
        let mut names = self.names.clone();
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
            names.sort();
        }
        DenyList {
            seq: self.seq + 1,
            names,
        }
    }

    pub fn sign(&self, ca: &CertAuthority) -> Result<SignedDenyList, DenyError> {
        let list = postcard::to_stdvec(self).map_err(|e| DenyError::Malformed(e.to_string()))?;
        let signature = ca.sign(&list)?;
        Ok(SignedDenyList { list, signature })
    }
}

impl SignedDenyList {
    /// Checks the signature against the CA certificate (DER) and decodes the list.
    pub fn verify(&self, ca_der: &[u8]) -> Result<DenyList, DenyError> {
        verify_ca_signature(ca_der, &self.list, &self.signature)?;
        let (list, rest) = postcard::take_from_bytes::<DenyList>(&self.list)
            .map_err(|e| DenyError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(DenyError::Malformed("trailing bytes".into()));
        }
        Ok(list)
    }

    pub fn to_text(&self) -> String {
        format!("{MAGIC}\n{}\n{}\n", hex(&self.list), hex(&self.signature))
    }

    pub fn from_text(text: &str) -> Result<SignedDenyList, DenyError> {
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(DenyError::Malformed(format!("does not start with {MAGIC}")));
        }
        let list = unhex(lines.next().unwrap_or(""))?;
        let signature = unhex(lines.next().unwrap_or(""))?;
        Ok(SignedDenyList { list, signature })
    }

    /// Reads a list file; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<SignedDenyList>, DenyError> {
        match std::fs::read_to_string(path) {
            Ok(t) => SignedDenyList::from_text(&t).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DenyError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// Writes the list file atomically (temporary file, fsync, rename).
    pub fn store(&self, path: &Path) -> Result<(), DenyError> {
        use std::io::Write;
        let err = |e: std::io::Error| DenyError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(self.to_text().as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, DenyError> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return Err(DenyError::Malformed("odd hex length".into()));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(s.get(i..i + 2).unwrap_or("zz"), 16)
                .map_err(|_| DenyError::Malformed("bad hex".into()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(pem: &str) -> Vec<u8> {
        rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .expect("one cert")
            .expect("pem")
            .to_vec()
    }

    #[test]
    fn signed_lists_verify_and_forged_ones_do_not() {
        let ca = CertAuthority::generate("t").expect("ca");
        let other = CertAuthority::generate("other").expect("ca");
        let list = DenyList::default().with("alice").with("bob").with("alice");
        assert_eq!(list.seq, 3);
        assert_eq!(list.names, vec!["alice", "bob"]);
        let signed = list.sign(&ca).expect("sign");
        let text = signed.to_text();
        let back = SignedDenyList::from_text(&text).expect("parse");
        assert_eq!(back.verify(&der(&ca.cert_pem)).expect("verify"), list);
        // Signed by another CA, or altered: refused.
        assert!(list
            .sign(&other)
            .expect("sign")
            .verify(&der(&ca.cert_pem))
            .is_err());
        let mut forged = signed.clone();
        forged.list = postcard::to_stdvec(&DenyList::default()).expect("enc");
        assert!(forged.verify(&der(&ca.cert_pem)).is_err());
        assert!(SignedDenyList::from_text("nope").is_err());
    }
}
