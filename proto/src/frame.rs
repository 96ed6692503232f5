//! The frame: how one request or response travels on a QUIC stream.
//!
//! Layout (little endian): magic `SHL` + version byte, header length (u32), bulk length
//! (u64), the postcard-encoded header, then the bulk bytes raw. Both lengths are bounded
//! before anything is read, and the transport allocates only as bytes arrive. This module owns encoding and decoding only; it does no I/O
//! policy (timeouts, retries) — the transport does.

use serde::{de::DeserializeOwned, Serialize};

/// Magic and version: "SHL" followed by the wire version.
pub const MAGIC: [u8; 4] = *b"SHL\x01";
/// Bytes before the header.
pub const PREFIX_LEN: usize = 16;
/// Largest serialized header accepted.
pub const MAX_HEADER: u32 = 16 << 20;
/// Largest bulk payload accepted: the largest fragment (a whole segment when k = 1,
/// `storage::segment::MAX_SEGMENT`, which asserts it fits) or one read of it.
pub const MAX_BULK: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("bad frame magic {0:02x?}: not a Shoal peer, or an incompatible wire version")]
    BadMagic([u8; 4]),
    #[error("frame header of {0} bytes exceeds the limit of {MAX_HEADER}")]
    HeaderTooLarge(u32),
    #[error("frame bulk of {0} bytes exceeds the limit of {MAX_BULK}")]
    BulkTooLarge(u64),
    #[error("malformed frame header: {0}")]
    Decode(#[from] postcard::Error),
}

/// The fixed prefix, parsed and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    pub header_len: u32,
    pub bulk_len: u64,
}

/// Encodes the prefix and header of a frame whose bulk is `bulk_len` bytes.
pub fn encode_head<T: Serialize>(msg: &T, bulk_len: u64) -> Result<Vec<u8>, FrameError> {
    if bulk_len > MAX_BULK {
        return Err(FrameError::BulkTooLarge(bulk_len));
    }
    let header = postcard::to_stdvec(msg)?;
    if header.len() as u64 > MAX_HEADER as u64 {
        return Err(FrameError::HeaderTooLarge(header.len() as u32));
    }
    let mut out = Vec::with_capacity(PREFIX_LEN + header.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&bulk_len.to_le_bytes());
    out.extend_from_slice(&header);
    Ok(out)
}

/// Parses and bounds-checks the fixed prefix.
pub fn decode_prefix(buf: &[u8; PREFIX_LEN]) -> Result<Prefix, FrameError> {
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&buf[0..4]);
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let mut h = [0u8; 4];
    h.copy_from_slice(&buf[4..8]);
    let header_len = u32::from_le_bytes(h);
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[8..16]);
    let bulk_len = u64::from_le_bytes(b);
    if header_len > MAX_HEADER {
        return Err(FrameError::HeaderTooLarge(header_len));
    }
    if bulk_len > MAX_BULK {
        return Err(FrameError::BulkTooLarge(bulk_len));
    }
    Ok(Prefix {
        header_len,
        bulk_len,
    })
}

/// Decodes a header; trailing bytes are an error.
pub fn decode_header<T: DeserializeOwned>(buf: &[u8]) -> Result<T, FrameError> {
    let (msg, rest) = postcard::take_from_bytes(buf)?;
    if !rest.is_empty() {
        return Err(FrameError::Decode(postcard::Error::DeserializeBadEncoding));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::*;
    use crate::msg::*;
    use proptest::prelude::*;

    fn roundtrip(req: &Request, bulk: u64) -> Request {
        let head = encode_head(req, bulk).expect("encode");
        let mut p = [0u8; PREFIX_LEN];
        p.copy_from_slice(&head[..PREFIX_LEN]);
        let prefix = decode_prefix(&p).expect("prefix");
        assert_eq!(prefix.bulk_len, bulk);
        assert_eq!(prefix.header_len as usize, head.len() - PREFIX_LEN);
        decode_header(&head[PREFIX_LEN..]).expect("decode")
    }

    proptest! {
        #[test]
        fn read_range_roundtrips(log in any::<u64>(), seg in any::<u64>(), index in any::<u8>(), offset in any::<u32>(), len in any::<u32>(), bulk in 0..MAX_BULK) {
            let id = FragmentId { log: LogId(log), segment: SegmentId(seg), index };
            let req = Request::Storage(StorageRequest::ReadRange { id, offset, len });
            match roundtrip(&req, bulk) {
                Request::Storage(StorageRequest::ReadRange { id: i2, offset: o2, len: l2 }) => {
                    prop_assert_eq!(i2, id); prop_assert_eq!(o2, offset); prop_assert_eq!(l2, len);
                }
                other => prop_assert!(false, "wrong variant {other:?}"),
            }
        }

        #[test]
        fn lookup_roundtrips(parent in any::<u64>(), name in ".{0,300}") {
            let req = Request::Manager(ManagerRequest::Lookup { parent: InodeId(parent), name: name.clone() });
            match roundtrip(&req, 0) {
                Request::Manager(ManagerRequest::Lookup { parent: p, name: n }) => {
                    prop_assert_eq!(p, InodeId(parent)); prop_assert_eq!(n, name);
                }
                other => prop_assert!(false, "wrong variant {other:?}"),
            }
        }

        /// Every decoder a server runs on untrusted bytes, and the role matrix on whatever
        /// decodes: no panic (a bounded fuzz run; the cases are random bytes, and random
        /// bytes behind a valid enum tag so that the decoders get past the first byte).
        #[test]
        fn every_request_decoder_survives_random_bytes(tag in 0u8..8, sub in 0u8..40, bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut tagged = vec![tag, sub];
            tagged.extend_from_slice(&bytes);
            for b in [&bytes[..], &tagged[..]] {
                if let Ok(req) = decode_header::<Request>(b) {
                    let id = crate::identity::PeerIdentity::new("fuzz", &[crate::identity::Role::Client]).expect("id");
                    let _ = crate::authz::check(Some(&id), &req);
                    let _ = crate::authz::check(None, &req);
                    let _ = req.to_string();
                }
                let _ = decode_header::<StorageRequest>(b);
                let _ = decode_header::<ManagerRequest>(b);
                let _ = decode_header::<ClientCallback>(b);
                let _ = decode_header::<AdminRequest>(b);
                let _ = decode_header::<Response>(b);
                let _ = crate::identity::PeerIdentity::from_cert_der(b);
                let _ = crate::revoke::SignedDenyList { list: b.to_vec(), signature: vec![] }.verify(b);
            }
        }

        /// Valid frames of whatever request (of any server) random bytes behind a valid
        /// tag decode to, re-encoded with their prefix, then mutated (bytes flipped,
        /// truncated, bytes inserted): every decoder, the prefix check and the role matrix
        /// answer an error or a request, never a panic.
        #[test]
        fn mutated_valid_frames_never_panic(
            tag in 0u8..8,
            sub in 0u8..40,
            seed in proptest::collection::vec(any::<u8>(), 0..256),
            muts in proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 1..8),
        ) {
            let mut tagged = vec![tag, sub];
            tagged.extend_from_slice(&seed);
            let Some(valid) = (0..tagged.len()).rev().find_map(|end| {
                postcard::take_from_bytes::<Request>(&tagged[..=end]).ok().map(|(r, _)| r)
            }) else {
                return Ok(());
            };
            let mut frame = encode_head(&valid, 0).expect("a decoded request encodes");
            for (at, byte, how) in muts {
                let i = at as usize % (frame.len() + 1);
                match how {
                    0 if i < frame.len() => frame[i] ^= byte | 1,
                    1 => frame.truncate(i),
                    _ => frame.insert(i, byte),
                }
            }
            if frame.len() >= PREFIX_LEN {
                let mut p = [0u8; PREFIX_LEN];
                p.copy_from_slice(&frame[..PREFIX_LEN]);
                let _ = decode_prefix(&p);
            }
            let body = frame.get(PREFIX_LEN..).unwrap_or(&[]);
            if let Ok(req) = decode_header::<Request>(body) {
                let id = crate::identity::PeerIdentity::new("fuzz", &[crate::identity::Role::Client]).expect("id");
                let _ = crate::authz::check(Some(&id), &req);
                let _ = req.to_string();
                if let Some(m) = req.manager_request() {
                    let _ = crate::route::routing_inode(m);
                }
            }
            let _ = decode_header::<Response>(body);
            let _ = decode_header::<ManagerRequest>(body);
            let _ = decode_header::<StorageRequest>(body);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_header::<Request>(&bytes);
            let _ = decode_header::<Response>(&bytes);
            if bytes.len() >= PREFIX_LEN {
                let mut p = [0u8; PREFIX_LEN];
                p.copy_from_slice(&bytes[..PREFIX_LEN]);
                let _ = decode_prefix(&p);
            }
        }
    }

    #[test]
    fn bad_magic_and_oversize_are_refused() {
        let mut p = [0u8; PREFIX_LEN];
        p[..4].copy_from_slice(b"HTTP");
        assert!(matches!(decode_prefix(&p), Err(FrameError::BadMagic(_))));
        p[..4].copy_from_slice(&MAGIC);
        p[4..8].copy_from_slice(&(MAX_HEADER + 1).to_le_bytes());
        assert!(matches!(
            decode_prefix(&p),
            Err(FrameError::HeaderTooLarge(_))
        ));
        p[4..8].copy_from_slice(&1u32.to_le_bytes());
        p[8..16].copy_from_slice(&(MAX_BULK + 1).to_le_bytes());
        assert!(matches!(
            decode_prefix(&p),
            Err(FrameError::BulkTooLarge(_))
        ));
        assert!(encode_head(&Request::Ping, MAX_BULK + 1).is_err());
    }
}
