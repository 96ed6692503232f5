//! Rebuilding fragments of a segment from any k others (scrub repair and rebuild share it).
//! Reads whole fragments (checksum-verified by their servers) from the holders that
//! `locate` found, reconstructs with Reed-Solomon in `spawn_blocking`, and returns the
//! missing fragments' bytes. It must not choose where they go: the caller stores them.

use crate::erasure::Erasure;
use crate::error::{ErasureError, RepairError};
use crate::locate::SegmentLocation;
use crate::rpc::StorageClient;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use proto::ids::{FragmentId, LogId, SegmentId};
use std::collections::BTreeSet;
use std::net::SocketAddr;

/// Rebuilds fragments `want` of `log`/`segment` from the other fragments in `loc`.
/// Returns (index, bytes) for every wanted index, in order.
pub async fn rebuild_fragments(
    client: &StorageClient,
    loc: &SegmentLocation,
    log: LogId,
    segment: SegmentId,
    want: &BTreeSet<u8>,
) -> Result<Vec<(u8, Bytes)>, RepairError> {
    let what = format!("fragments {want:?} of {log}/{segment}");
    let Some(meta) = loc.meta else {
        return Err(RepairError::NotEnough {
            what,
            available: 0,
            needed: 1,
            detail: "no fragment of the segment was found".into(),
        });
    };
    let (k, m) = (meta.k as usize, meta.m as usize);
    let len = loc.frag_len;
    // Sources: every present fragment we do not want, data fragments first.
    let mut sources: Vec<(u8, Vec<SocketAddr>)> = loc
        .holders
        .iter()
        .filter(|(i, _)| !want.contains(i) && (**i as usize) < k + m)
        .map(|(i, a)| (*i, a.clone()))
        .collect();
    sources.sort_by_key(|(i, _)| *i);
    let fetch = |index: u8, addrs: Vec<SocketAddr>| {
        let client = client.clone();
        async move {
            let id = FragmentId {
                log,
                segment,
                index,
            };
            let mut errors = Vec::new();
            for addr in addrs {
                match client.read_range(addr, id, 0, len).await {
                    Ok(b) => return (index, Ok(b)),
                    Err(e) => errors.push(format!("f{index} on {addr}: {e}")),
                }
            }
            (index, Err(errors.join("; ")))
        }
    };
    let mut candidates = sources.into_iter();
    let mut running = FuturesUnordered::new();
    for (i, a) in candidates.by_ref().take(k) {
        running.push(fetch(i, a));
    }
    let mut shards: Vec<Option<Vec<u8>>> = vec![None; k + m];
    let mut got = 0;
    let mut problems = Vec::new();
    while let Some((index, r)) = running.next().await {
        match r {
            Ok(b) => {
                // Reuses the answer's buffer when it is ours alone.
                shards[index as usize] = Some(Vec::from(b));
                got += 1;
                if got == k {
                    break;
                }
            }
            Err(e) => {
                problems.push(e);
                if let Some((i, a)) = candidates.next() {
                    running.push(fetch(i, a));
                }
            }
        }
    }
    if got < k {
        return Err(RepairError::NotEnough {
            what,
            available: got,
            needed: k,
            detail: problems.join("; "),
        });
    }
    let want: Vec<u8> = want.iter().copied().collect();
    let (mk, mm) = (meta.k, meta.m);
    // Only data wanted: decode the data alone (the parity fragments not fetched are not
    // computed for nothing).
    let data_only = want.iter().all(|i| *i < mk);
    tokio::task::spawn_blocking(move || {
        let codec = crate::log::codec(mk, mm)?;
        if data_only {
            codec.reconstruct_data(&mut shards)?;
        } else {
            codec.reconstruct(&mut shards)?;
        }
        want.iter()
            .map(|i| {
                shards
                    .get_mut(*i as usize)
                    .and_then(|s| s.take())
                    .map(|b| (*i, Bytes::from(b)))
                    .ok_or_else(|| {
                        ErasureError::Shards(format!(
                            "fragment {i} is outside the {mk}+{mm} stripe"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, ErasureError>>()
    })
    .await
    .map_err(|e| RepairError::Failed {
        what: what.clone(),
        detail: format!("reconstruction task failed: {e}"),
    })?
    .map_err(|e| RepairError::Failed {
        what,
        detail: e.to_string(),
    })
}
