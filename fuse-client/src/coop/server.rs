//! Answers peers from this client's memory: `FetchBlock` from the block cache or the
//! forwarded set, by exact log address only (`BlockCache::by_log`: a block patched by our
//! own writes, cut at a file's end or assembled from several extents has no address and is
//! never served); `ForwardBlock` through N-chance forwarding (`coop::forward`, which bounds
//! what it keeps). Must not do I/O or wait: an answer is a few short critical sections.

use crate::client::Client;
use crate::coop::forward::Held;
use bytes::Bytes;
use proto::msg::{PeerRequest, PeerResponse, Response};
use std::net::SocketAddr;

impl Client {
    /// The answer to a peer's request (its identity was checked by the caller).
    pub(crate) fn serve_peer(
        &self,
        from: SocketAddr,
        req: PeerRequest,
        bulk: Bytes,
    ) -> (Response, Bytes) {
        match req {
            PeerRequest::FetchBlock { ptr } => {
                let cached = self
                    .lock_state()
                    .cached_log_copy(&ptr)
                    .map(|c| (c.range, c.bytes));
                let found =
                    cached.or_else(|| self.coop.forwarding.held(&ptr).map(|h| (h.range, h.bytes)));
                match found {
                    Some((range, bytes)) => {
                        let n = bytes.len() as u64;
                        self.coop.counters.served(n);
                        proto::ops_metrics::coop_served(&self.metrics_label(), n);
                        (Response::Peer(PeerResponse::Block { range }), bytes)
                    }
                    None => {
                        self.coop.counters.missed();
                        (Response::Peer(PeerResponse::NotCached), Bytes::new())
                    }
                }
            }
            PeerRequest::FetchBlocks { ptrs } => {
                if ptrs.len() > proto::msg::MAX_FETCH_BLOCKS {
                    let e = proto::msg::RemoteError::Invalid(format!(
                        "{} blocks asked, at most {}",
                        ptrs.len(),
                        proto::msg::MAX_FETCH_BLOCKS
                    ));
                    return (Response::Error(e), Bytes::new());
                }
                let found: Vec<Option<(proto::ids::LogPtr, Bytes)>> = {
                    let st = self.lock_state();
                    ptrs.iter()
                        .map(|p| st.cached_log_copy(p).map(|c| (c.range, c.bytes)))
                        .collect()
                };
                let mut ranges = Vec::with_capacity(found.len());
                let mut out = bytes::BytesMut::new();
                for (p, f) in ptrs.iter().zip(found) {
                    let f = f.or_else(|| self.coop.forwarding.held(p).map(|h| (h.range, h.bytes)));
                    match f {
                        Some((range, bytes)) => {
                            self.coop.counters.served(bytes.len() as u64);
                            proto::ops_metrics::coop_served(
                                &self.metrics_label(),
                                bytes.len() as u64,
                            );
                            out.extend_from_slice(&bytes);
                            ranges.push(Some(range));
                        }
                        None => {
                            self.coop.counters.missed();
                            ranges.push(None);
                        }
                    }
                }
                (
                    Response::Peer(PeerResponse::Blocks { ranges }),
                    out.freeze(),
                )
            }
            PeerRequest::ForwardBlock { ptr, range, recirc } => {
                if !self.coop.enabled() {
                    self.coop.counters.forward_dropped();
                    return (Response::Peer(PeerResponse::Refused), Bytes::new());
                }
                let held = Held { range, bytes: bulk };
                let answer =
                    self.coop
                        .forwarding
                        .offered(&self.coop.counters, from, ptr, held, recirc);
                (Response::Peer(answer), Bytes::new())
            }
        }
    }
}
