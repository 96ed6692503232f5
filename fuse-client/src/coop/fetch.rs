//! One peer read: ask a peer client for log bytes by address, bounded in time, and accept
//! the answer only if it is the range asked for and, where the manager gave end-to-end
//! checksums for it, only if they match (`check_answer`, pure). Must not retry, fall back
//! or remember failures: the read path does that (`data::read`, `coop::peers`).

use bytes::Bytes;
use proto::chunksum::{self, ChunkSums};
use proto::ids::LogPtr;
use proto::msg::{PeerRequest, PeerResponse, Request, Response};
use proto::transport::{Transport, TransportError};
use std::net::SocketAddr;
use std::time::Duration;

/// Why a peer's answer is not the bytes asked for.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("sent log range {got} for {asked}")]
    WrongRange { asked: LogPtr, got: LogPtr },
    #[error("sent {got} bytes for a range of {want}")]
    WrongLength { got: usize, want: u32 },
    #[error("bytes fail the end-to-end checksum at segment offset {at}")]
    Checksum { at: u32 },
}

/// Why a peer read gave nothing (the reader falls back to the storage servers).
#[derive(Debug, thiserror::Error)]
pub enum PeerReadError {
    #[error("peer {peer}: {source}")]
    Transport {
        peer: SocketAddr,
        #[source]
        source: Box<TransportError>,
    },
    #[error("peer {peer} does not cache {ptr}")]
    NotCached { peer: SocketAddr, ptr: LogPtr },
    #[error("peer {peer} answered {answer}")]
    Unexpected { peer: SocketAddr, answer: String },
    #[error("peer {peer}, {ptr}: {mismatch}")]
    Mismatch {
        peer: SocketAddr,
        ptr: LogPtr,
        mismatch: Box<Mismatch>,
    },
}

impl PeerReadError {
    /// Whether the peer should be left alone for a while (all but "not cached": a peer
    /// that answers correctly that it no longer holds a block is healthy).
    pub fn marks_peer_bad(&self) -> bool {
        !matches!(self, PeerReadError::NotCached { .. })
    }
}

/// The bytes of `ptr` from a peer's answer holding log range `range`: `range` must be
/// `ptr` widened to whole chunks and pass `sums` when the manager gave checksums for `ptr`,
/// else exactly `ptr`.
pub fn check_answer(
    ptr: LogPtr,
    sums: Option<&ChunkSums>,
    range: LogPtr,
    bytes: Bytes,
) -> Result<Bytes, Mismatch> {
    let want = match sums {
        Some(_) => chunksum::widen(ptr),
        None => ptr,
    };
    if range != want {
        return Err(Mismatch::WrongRange {
            asked: want,
            got: range,
        });
    }
    if bytes.len() != range.len as usize {
        return Err(Mismatch::WrongLength {
            got: bytes.len(),
            want: range.len,
        });
    }
    if let Some(s) = sums {
        s.verify(range.offset, &bytes)
            .map_err(|at| Mismatch::Checksum { at })?;
    }
    let from = (ptr.offset - range.offset) as usize;
    Ok(bytes.slice(from..from + ptr.len as usize))
}

/// A peer's checked answer: the bytes of `ptr` (`exact`), and the log range it sent
/// (`range`, with its `bytes`), which the asker can cache and serve on in turn.
pub struct Fetched {
    pub exact: Bytes,
    pub range: LogPtr,
    pub bytes: Bytes,
}

/// Asks `peer` for log bytes `ptr` (at most `timeout`), checked by `check_answer`: a
/// `fetch_many` of one block.
pub async fn fetch(
    transport: &Transport,
    peer: SocketAddr,
    ptr: LogPtr,
    sums: Option<&ChunkSums>,
    timeout: Duration,
) -> Result<Fetched, PeerReadError> {
    let mut answers = fetch_many(transport, peer, &[(ptr, sums.cloned())], timeout).await?;
    answers
        .pop()
        .unwrap_or(Err(PeerReadError::NotCached { peer, ptr }))
}

/// Splits a `Blocks` answer's bulk by its ranges: per block asked, the sent range and its
/// bytes, or `None`. The lengths must add up exactly.
pub fn split_blocks(
    asked: usize,
    ranges: &[Option<LogPtr>],
    bulk: &Bytes,
) -> Result<Vec<Option<(LogPtr, Bytes)>>, Mismatch> {
    let total: u64 = ranges.iter().flatten().map(|r| r.len as u64).sum();
    if ranges.len() != asked || total != bulk.len() as u64 {
        return Err(Mismatch::WrongLength {
            got: bulk.len(),
            want: total.min(u32::MAX as u64) as u32,
        });
    }
    let mut at = 0usize;
    Ok(ranges
        .iter()
        .map(|r| {
            r.map(|r| {
                let b = bulk.slice(at..at + r.len as usize);
                at += r.len as usize;
                (r, b)
            })
        })
        .collect())
}

/// Asks `peer` for several blocks at once (`FetchBlocks`, at most `MAX_FETCH_BLOCKS`):
/// per block, the checked answer or why not. `Err`: the whole request failed.
pub async fn fetch_many(
    transport: &Transport,
    peer: SocketAddr,
    asks: &[(LogPtr, Option<ChunkSums>)],
    timeout: Duration,
) -> Result<Vec<Result<Fetched, PeerReadError>>, PeerReadError> {
    let Some(&(first, _)) = asks.first() else {
        return Ok(Vec::new());
    };
    let ptrs: Vec<LogPtr> = asks.iter().map(|(p, _)| *p).collect();
    let req = Request::Peer(PeerRequest::FetchBlocks { ptrs });
    let (resp, bulk) = transport
        .call_timeout(peer, &req, Bytes::new(), timeout)
        .await
        .map_err(|source| PeerReadError::Transport {
            peer,
            source: Box::new(source),
        })?;
    let ranges = match resp {
        Response::Peer(PeerResponse::Blocks { ranges }) => ranges,
        other => {
            return Err(PeerReadError::Unexpected {
                peer,
                answer: other.to_string(),
            })
        }
    };
    let parts =
        split_blocks(asks.len(), &ranges, &bulk).map_err(|mismatch| PeerReadError::Mismatch {
            peer,
            ptr: first,
            mismatch: Box::new(mismatch),
        })?;
    Ok(asks
        .iter()
        .zip(parts)
        .map(|((ptr, sums), part)| {
            let ptr = *ptr;
            let Some((range, bytes)) = part else {
                return Err(PeerReadError::NotCached { peer, ptr });
            };
            check_answer(ptr, sums.as_ref(), range, bytes.clone())
                .map(|exact| Fetched {
                    exact,
                    range,
                    bytes,
                })
                .map_err(|mismatch| PeerReadError::Mismatch {
                    peer,
                    ptr,
                    mismatch: Box::new(mismatch),
                })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::ids::{LogId, SegmentAddr, SegmentId};

    const SEG_LEN: u32 = 1 << 20;

    fn segment() -> Vec<u8> {
        (0..SEG_LEN).map(|i| (i % 251) as u8).collect()
    }

    fn ptr(offset: u32, len: u32) -> LogPtr {
        LogPtr {
            seg: SegmentAddr {
                log: LogId(5),
                segment: SegmentId(9),
                len: SEG_LEN,
                k: 4,
                m: 2,
                nodes: 6,
            },
            offset,
            len,
        }
    }

    fn bytes_of(seg: &[u8], p: LogPtr) -> Bytes {
        Bytes::copy_from_slice(&seg[p.offset as usize..(p.offset + p.len) as usize])
    }

    #[test]
    fn checked_answers_are_the_widened_range_and_must_match_the_sums() {
        let seg = segment();
        let sums = chunksum::segment_sums(LogId(5), SegmentId(9), &seg);
        let p = ptr(1000, 65536);
        let w = chunksum::widen(p);
        let got = check_answer(p, Some(&sums), w, bytes_of(&seg, w)).expect("good answer");
        assert_eq!(got, bytes_of(&seg, p));
        // The unwidened range cannot be checked: refused.
        assert!(matches!(
            check_answer(p, Some(&sums), p, bytes_of(&seg, p)),
            Err(Mismatch::WrongRange { .. })
        ));
        // One flipped byte: refused with where.
        let mut bad = bytes_of(&seg, w).to_vec();
        bad[5000] ^= 1;
        assert_eq!(
            check_answer(p, Some(&sums), w, Bytes::from(bad)),
            Err(Mismatch::Checksum { at: 4096 })
        );
        // Bytes of another address (a stale copy elsewhere in the log): refused.
        let other = ptr(w.offset + 8192, w.len);
        assert!(check_answer(p, Some(&sums), w, bytes_of(&seg, other)).is_err());
        // Short.
        assert!(matches!(
            check_answer(p, Some(&sums), w, bytes_of(&seg, w).slice(..100)),
            Err(Mismatch::WrongLength { .. })
        ));
    }

    #[test]
    fn batched_answers_split_by_their_ranges_and_must_add_up() {
        let seg = segment();
        let (p, q) = (ptr(0, 100), ptr(4096, 50));
        let mut bulk = bytes_of(&seg, p).to_vec();
        bulk.extend_from_slice(&bytes_of(&seg, q));
        let bulk = Bytes::from(bulk);
        let parts = split_blocks(3, &[Some(p), None, Some(q)], &bulk).expect("adds up");
        assert_eq!(parts[0], Some((p, bytes_of(&seg, p))));
        assert_eq!(parts[1], None);
        assert_eq!(parts[2], Some((q, bytes_of(&seg, q))));
        assert!(
            split_blocks(3, &[Some(p), None, None], &bulk).is_err(),
            "extra bytes"
        );
        assert!(
            split_blocks(2, &[Some(p), None, Some(q)], &bulk).is_err(),
            "count"
        );
        assert!(
            split_blocks(1, &[Some(ptr(0, 10_000))], &bulk).is_err(),
            "short"
        );
    }

    #[test]
    fn unchecked_answers_must_be_exactly_the_range() {
        let seg = segment();
        let p = ptr(4096, 65536);
        assert_eq!(
            check_answer(p, None, p, bytes_of(&seg, p)).expect("exact"),
            bytes_of(&seg, p)
        );
        assert!(check_answer(p, None, ptr(0, 65536), bytes_of(&seg, p)).is_err());
        assert!(check_answer(p, None, p, Bytes::from_static(b"short")).is_err());
    }
}
