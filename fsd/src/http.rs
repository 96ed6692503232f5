//! The HTTP endpoint of a node process: Prometheus metrics at `/metrics` and a read-only
//! status page at `/` (server-rendered HTML, no scripts, nothing fetched by the browser).
//! Owns the process-wide metrics recorder and the rendering. Must not change anything in
//! the cluster: every handler only reads (the page probes the nodes as `shoal status`
//! does). It is unauthenticated, so it binds where the config says (loopback in examples).

use crate::cluster::{status, ClusterStatus, Health, NodeStatus};
use crate::node::NodeParts;
use crate::NodeError;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use proto::config::ClusterConfig;
use proto::transport::Transport;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Latency buckets (seconds) of every `_seconds` histogram: 50 µs to 10 s.
const SECONDS_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's Prometheus recorder (once; later calls return the same handle).
/// `None` when another recorder was installed first (then nothing is exported).
pub fn recorder() -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            let upkeep = handle.clone();
            // Drains histogram samples into their buckets; a plain thread, off the runtime.
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                })
                .ok()?;
            Some(handle)
        })
        .clone()
}

/// One node or client of the process the endpoint reports on: its transport (frame budget
/// gauges) and its parts (worker and storage gauges), read at each scrape.
#[derive(Clone)]
pub struct Source {
    transport: Arc<Transport>,
    local: Local,
}

#[derive(Clone)]
enum Local {
    Node(NodeParts),
    Client(Arc<fuse_client::Client>),
}

impl Source {
    pub fn node(transport: Arc<Transport>, parts: NodeParts) -> Source {
        Source {
            transport,
            local: Local::Node(parts),
        }
    }

    pub fn client(transport: Arc<Transport>, client: Arc<fuse_client::Client>) -> Source {
        Source {
            transport,
            local: Local::Client(client),
        }
    }
}

/// What the endpoint reads from the process: the cluster config and the nodes (and
/// clients) it runs, for their live gauges.
struct View {
    config: Arc<ClusterConfig>,
    sources: Vec<Source>,
    metrics: Option<PrometheusHandle>,
}

/// A running HTTP endpoint; dropping it stops it.
pub struct HttpEndpoint {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `/metrics` and `/` on `addr` for the nodes and clients given.
pub async fn serve(
    addr: SocketAddr,
    config: Arc<ClusterConfig>,
    sources: Vec<Source>,
) -> Result<HttpEndpoint, NodeError> {
    let view = Arc::new(View {
        config,
        sources,
        metrics: recorder(),
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| NodeError::Other(format!("cannot bind the HTTP endpoint {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| NodeError::Other(format!("HTTP endpoint {addr}: {e}")))?;
    let (v1, v2) = (view.clone(), view);
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let v = v1.clone();
                async move { metrics_text(&v).await }
            }),
        )
        .route(
            "/",
            get(move || {
                let v = v2.clone();
                async move { status_page(&v).await }
            }),
        );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(%bound, "HTTP endpoint stopped: {e}");
        }
    });
    tracing::info!(addr = %bound, "HTTP endpoint serving /metrics and /");
    Ok(HttpEndpoint { addr: bound, task })
}

async fn metrics_text(v: &View) -> impl IntoResponse {
    for src in &v.sources {
        let t = &src.transport;
        let node: Arc<str> = t
            .local_identity()
            .map(|i| i.name.clone())
            .unwrap_or_else(|| "<no identity>".into())
            .into();
        let (held, limit) = t.frame_bytes_held();
        metrics::gauge!("shoal_frame_budget_held_bytes", "node" => node.to_string())
            .set(held as f64);
        metrics::gauge!("shoal_frame_budget_limit_bytes", "node" => node.to_string())
            .set(limit as f64);
        match &src.local {
            Local::Node(parts) => parts.record_gauges().await,
            Local::Client(c) => proto::ops_metrics::worker_gauges(&node, &c.workers()),
        }
    }
    let body = match &v.metrics {
        Some(h) => h.render(),
        None => "# another metrics recorder is installed in this process\n".to_string(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

async fn status_page(v: &View) -> Html<String> {
    match status(&v.config).await {
        Ok(s) => Html(render_status(&v.config, &s)),
        Err(e) => Html(page(
            &v.config.file.name,
            &format!(
                "<p class=bad>cannot probe the cluster: {}</p>",
                escape(&e.to_string())
            ),
        )),
    }
}

/// The status page of `s` (pure: rendering only).
pub fn render_status(config: &ClusterConfig, s: &ClusterStatus) -> String {
    let down = s.not_up();
    let mut body = String::new();
    let (class, health) = match s.health() {
        Health::Healthy => ("ok", "healthy: every node is up".to_string()),
        Health::Degraded => (
            "warn",
            format!("degraded: {down} node(s) down or recovering, the cluster still serves"),
        ),
        Health::Unavailable => (
            "bad",
            format!("cannot serve: {down} node(s) down or managers not ready"),
        ),
    };
    let _ = write!(
        body,
        "<p class={class} id=health>{}</p><p>epoch {}, erasure {}+{}, {} nodes</p>",
        escape(&health),
        config.file.epoch,
        config.file.erasure.data,
        config.file.erasure.parity,
        s.nodes.len()
    );
    body.push_str(
        "<table><tr><th>node</th><th>roles</th><th>address</th><th>state</th>\
         <th>capacity</th><th>used</th><th>fragments</th><th>workers</th></tr>",
    );
    for n in &s.nodes {
        body.push_str(&node_row(n));
    }
    body.push_str("</table>");
    page(&config.file.name, &body)
}

fn node_row(n: &NodeStatus) -> String {
    let roles: Vec<String> = n.roles.iter().map(|r| r.to_string()).collect();
    let state = n.state().as_str();
    let (cap, used, frags) = match &n.storage {
        Some(st) => (
            st.capacity_bytes.to_string(),
            st.used_bytes.to_string(),
            st.fragments.to_string(),
        ),
        None => ("-".into(), "-".into(), "-".into()),
    };
    let workers = match &n.reachable {
        Ok(info) => info
            .workers
            .iter()
            .map(|w| {
                let failed = w
                    .last_error
                    .as_ref()
                    .map(|e| format!(" (last failure: {e})"))
                    .unwrap_or_default();
                format!("{} {} ({} rounds){failed}", w.name, w.state, w.rounds)
            })
            .collect::<Vec<_>>()
            .join(", "),
        Err(e) => e.to_string(),
    };
    format!(
        "<tr class={state} data-node=\"{name}\"><td>{name}</td><td>{roles}</td><td>{addr}</td>\
         <td class=state>{state}</td><td>{cap}</td><td>{used}</td><td>{frags}</td>\
         <td>{workers}</td></tr>",
        name = escape(&n.name),
        roles = escape(&roles.join(",")),
        addr = n.address,
        workers = escape(&workers),
    )
}

fn page(cluster: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=utf-8><title>shoal: {c}</title>\
         <style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}.ok{{color:#070}}\
         .warn{{color:#a60}}.bad,tr.down{{color:#b00}}</style></head>\
         <body><h1>shoal cluster {c}</h1>{body}</body></html>",
        c = escape(cluster)
    )
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            escape("<b>\"x\" & 'y'</b>"),
            "&lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/b&gt;"
        );
    }
}
