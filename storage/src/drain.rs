//! Draining a storage server (`shoal node drain`): which of the fragments it holds may be
//! deleted because the rest of the cluster now holds the same fragment (same log, segment
//! and index) of the stripe. Pure: listings in, fragment ids out; must not do I/O. The
//! tool rebuilds the drained server's fragments onto the others with `rebuild` first.

use crate::rebuild::StripeState;
use proto::ids::{FragmentId, LogId, SegmentId};
use proto::msg::FragmentInfo;
use std::collections::{BTreeMap, BTreeSet};

/// Splits the fragments `held` by the drained server into those other servers also hold
/// (by `elsewhere`, a scan of the other servers), which may be deleted, and the number of
/// those that must stay until a rebuild puts them elsewhere.
pub fn removable(held: &[FragmentInfo], elsewhere: &[StripeState]) -> (Vec<FragmentId>, usize) {
    let others: BTreeMap<(LogId, SegmentId), BTreeSet<u8>> = elsewhere
        .iter()
        .map(|s| ((s.log, s.segment), s.holders.keys().copied().collect()))
        .collect();
    let mut gone = Vec::new();
    let mut kept = 0;
    for f in held {
        let copied = others
            .get(&(f.id.log, f.id.segment))
            .is_some_and(|idx| idx.contains(&f.id.index));
        if copied {
            gone.push(f.id);
        } else {
            kept += 1;
        }
    }
    (gone, kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::msg::{FragmentMeta, CODEC_RS_GF8_RSE};
    use std::net::SocketAddr;

    fn meta() -> FragmentMeta {
        FragmentMeta {
            codec: CODEC_RS_GF8_RSE,
            k: 4,
            m: 2,
            segment_len: 400,
            crc32c: 0,
            nodes: 7,
        }
    }

    fn frag(seg: u64, index: u8) -> FragmentInfo {
        FragmentInfo {
            id: FragmentId {
                log: LogId(1),
                segment: SegmentId(seg),
                index,
            },
            meta: meta(),
            len: 100,
        }
    }

    fn stripe(seg: u64, held: &[u8]) -> StripeState {
        let a = SocketAddr::from(([127, 0, 0, 1], 7000));
        StripeState {
            log: LogId(1),
            segment: SegmentId(seg),
            meta: meta(),
            frag_len: 100,
            holders: held.iter().map(|i| (*i, vec![a])).collect(),
        }
    }

    #[test]
    fn only_fragments_held_elsewhere_may_go() {
        let held = [frag(1, 2), frag(2, 0), frag(3, 5)];
        // Segment 1's fragment 2 was rebuilt elsewhere; segment 2 still misses its
        // fragment 0 elsewhere; segment 3 is unknown to the other servers.
        let elsewhere = [stripe(1, &[0, 1, 2, 3, 4, 5]), stripe(2, &[1, 2, 3, 4, 5])];
        let (gone, kept) = removable(&held, &elsewhere);
        assert_eq!(gone, vec![held[0].id]);
        assert_eq!(kept, 2);
        assert_eq!(removable(&[], &elsewhere), (Vec::new(), 0));
    }
}
