//! Answers peers' `FetchBlock`s from this client's block cache, by exact log address only
//! (`BlockCache::by_log`): a block patched by our own writes, cut at a file's end or
//! assembled from several extents has no address and is never served. Must not do I/O or
//! wait: an answer is one short critical section.

use crate::client::Client;
use bytes::Bytes;
use proto::msg::{PeerRequest, PeerResponse, Response};

impl Client {
    /// The answer to a peer's request (its identity was checked by the caller).
    pub(crate) fn serve_peer(&self, req: PeerRequest) -> (Response, Bytes) {
        match req {
            PeerRequest::FetchBlock { ptr } => {
                let copy = self.lock_state().cached_log_copy(&ptr);
                match copy {
                    Some(c) => {
                        let n = c.bytes.len() as u64;
                        self.coop.counters.served(n);
                        proto::ops_metrics::coop_served(&self.metrics_label(), n);
                        (
                            Response::Peer(PeerResponse::Block { range: c.range }),
                            c.bytes,
                        )
                    }
                    None => {
                        self.coop.counters.missed();
                        (Response::Peer(PeerResponse::NotCached), Bytes::new())
                    }
                }
            }
        }
    }
}
