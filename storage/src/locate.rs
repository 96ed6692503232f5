//! Finding the fragments of a segment wherever they are. Placement (`stripe`) says where a
//! fragment was put first; rebuild and writers that avoid down servers may put it
//! elsewhere, and the servers' own fragment files are the record of where it is now. This
//! module asks every storage server (`Locate`) and merges the answers. It owns no state and
//! must not decide what to do with a missing fragment (the reader, scrub and rebuild do).

use crate::rpc::StorageClient;
use proto::ids::{LogId, SegmentId};
use proto::msg::FragmentMeta;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Where the fragments of one segment are, as the reachable servers answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentLocation {
    /// The segment's layout and length, from any holder (None when no fragment was found).
    pub meta: Option<FragmentMeta>,
    /// Payload length of each fragment (all fragments of a segment have the same length).
    pub frag_len: u32,
    /// Fragment index -> servers holding it (normally one).
    pub holders: BTreeMap<u8, Vec<SocketAddr>>,
    /// Servers that could not be asked, with why.
    pub unreachable: Vec<(SocketAddr, String)>,
}

impl SegmentLocation {
    /// Fragments present on at least one reachable server.
    pub fn present(&self) -> usize {
        self.holders.len()
    }

    /// Every server holding any fragment of the segment.
    pub fn holder_servers(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.holders.values().flatten().copied().collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Asks every server in `servers` which fragments of `log`/`segment` it holds.
pub async fn locate_segment(
    client: &StorageClient,
    servers: &[SocketAddr],
    log: LogId,
    segment: SegmentId,
) -> SegmentLocation {
    let answers =
        futures::future::join_all(servers.iter().map(|a| client.locate(*a, log, segment))).await;
    let mut loc = SegmentLocation::default();
    for (addr, r) in servers.iter().zip(answers) {
        match r {
            Ok(frags) => {
                for f in frags {
                    if loc.meta.is_none() {
                        loc.meta = Some(f.meta);
                        loc.frag_len = f.len;
                    }
                    loc.holders.entry(f.id.index).or_default().push(*addr);
                }
            }
            Err(e) => loc.unreachable.push((*addr, e.to_string())),
        }
    }
    loc
}
