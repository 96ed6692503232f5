//! The RPC metrics every node and client records through the `metrics` facade (whatever
//! recorder the process installed; none: they cost a branch). Owns the metric names and
//! labels; must not render or serve them (that is the node's HTTP endpoint's business).
//!
//! - `shoal_rpc_served_total{node, op, outcome}`: requests answered (`ok`/`error`);
//! - `shoal_rpc_serve_seconds{node, op}`: time from a whole request frame to its answer;
//! - `shoal_rpc_received_bytes_total{node}`: whole request frames received;
//!   `shoal_rpc_sent_bytes_total{node}`: the bulk payloads of the answers;
//! - `shoal_rpc_calls_total{node, op, outcome}`: requests this endpoint sent (`ok`, `error`
//!   answers, or `failed`: no answer, e.g. unreachable or timed out);
//! - `shoal_rpc_call_seconds{node, op}`: their round trips.
//!
//! `node` is this endpoint's identity name (several nodes can share one process). It is
//! made once per transport as an `Arc<str>` and handed to the recorder as a shared label
//! value (a reference count, no string copy per RPC).

use crate::msg::Response;
use crate::transport::TransportError;
use metrics::SharedString;
use std::sync::Arc;
use std::time::Duration;

/// The `node` label value of `node`: shares its allocation.
fn label(node: &Arc<str>) -> SharedString {
    SharedString::from(node.clone())
}

/// Records one request served.
pub fn served(
    node: &Arc<str>,
    op: &'static str,
    resp: &Response,
    took: Duration,
    received: usize,
    sent: usize,
) {
    let outcome = if matches!(resp, Response::Error(_)) {
        "error"
    } else {
        "ok"
    };
    metrics::counter!("shoal_rpc_served_total", "node" => label(node), "op" => op, "outcome" => outcome).increment(1);
    metrics::histogram!("shoal_rpc_serve_seconds", "node" => label(node), "op" => op)
        .record(took.as_secs_f64());
    metrics::counter!("shoal_rpc_received_bytes_total", "node" => label(node))
        .increment(received as u64);
    metrics::counter!("shoal_rpc_sent_bytes_total", "node" => label(node)).increment(sent as u64);
}

/// Records one request sent, with its outcome.
pub fn called(
    node: &Arc<str>,
    op: &'static str,
    result: &Result<(Response, bytes::Bytes), TransportError>,
    took: Duration,
) {
    let outcome = match result {
        Ok((Response::Error(_), _)) => "error",
        Ok(_) => "ok",
        Err(_) => "failed",
    };
    metrics::counter!("shoal_rpc_calls_total", "node" => label(node), "op" => op, "outcome" => outcome).increment(1);
    metrics::histogram!("shoal_rpc_call_seconds", "node" => label(node), "op" => op)
        .record(took.as_secs_f64());
}
