//! The HTTP endpoint (issue 14): Prometheus metrics after real traffic, and the status page
//! in a real headless browser (Debian's Chromium, which `.ci/run` installs): every node of
//! the cluster is listed, and a killed storage server shows as down.

mod common;

use common::TestCluster;
use proto::ids::InodeId;
use proto::msg::Caller;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROOT: Caller = Caller { uid: 0, gid: 0 };

/// GET `path` from `addr` over plain HTTP/1.1; the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("request");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .expect("answered within 30 s")
        .expect("read");
    let text = String::from_utf8(out).expect("utf-8");
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..text.len().min(200)]
    );
    text
}

/// The DOM of `url` after Chromium (headless, no network but loopback) loaded it.
async fn browser_dom(url: &str, profile: &Path) -> String {
    let run = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.display()),
            "--dump-dom",
            url,
        ])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("chromium finished within 90 s")
        .expect("chromium runs (.ci/run installs Debian's chromium package)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The state cell of node `name` in the page.
fn state_of(dom: &str, name: &str) -> String {
    let row = dom
        .split("<tr")
        .find(|r| r.contains(&format!("data-node=\"{name}\"")))
        .unwrap_or_else(|| panic!("no row for {name} in the page:\n{dom}"));
    let cell = row
        .split("<td class=\"state\">")
        .nth(1)
        .unwrap_or_else(|| panic!("no state cell for {name}: {row}"));
    cell.split('<').next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_after_traffic_and_the_status_page_in_a_browser() {
    let mut tc = TestCluster::start(6, 2, 4, 2).await;
    let http = tc
        .cluster
        .serve_http("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve http");
    let c = tc.client().await;
    let (a, _) = c
        .create(InodeId::ROOT, "f", 0o644, 0o022, ROOT)
        .await
        .expect("create");
    c.write(a.ino, 0, &vec![9u8; 3 << 20]).await.expect("write");
    c.fsync(a.ino).await.expect("fsync");

    // Prometheus text: counters by node and operation, latency histograms, live gauges.
    let m = get(http.addr, "/metrics").await;
    for want in [
        "shoal_rpc_served_total{node=\"manager-",
        "op=\"PutFragment\",outcome=\"ok\"}",
        "op=\"CommitWrites\"",
        "shoal_rpc_serve_seconds_bucket{node=\"storage-",
        "shoal_rpc_received_bytes_total{node=\"storage-1\"}",
        "shoal_frame_budget_limit_bytes{node=\"storage-1\"} 1073741824",
    ] {
        assert!(m.contains(want), "/metrics lacks {want}:\n{m}");
    }
    // Bulk bytes received by the storage servers cover the 3 MiB written (plus parity).
    let received: f64 = m
        .lines()
        .filter(|l| l.starts_with("shoal_rpc_received_bytes_total{node=\"storage-"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        received >= (3 << 20) as f64,
        "storage servers received {received} bytes"
    );

    // Node gauges set at the scrape: fragments and bytes per storage server, every
    // background worker; the manager's journal committed the create.
    for want in [
        "shoal_storage_fragments{node=\"storage-1\"}",
        "shoal_storage_capacity_bytes{node=\"storage-6\"}",
        "shoal_worker_busy{node=\"manager-1\",worker=\"journal\"}",
        "shoal_worker_rounds_total{node=\"storage-1\",worker=\"scrub\"}",
        "shoal_journal_commit_seconds_bucket",
    ] {
        assert!(m.contains(want), "/metrics lacks {want}:\n{m}");
    }
    let fragments: f64 = m
        .lines()
        .filter(|l| l.starts_with("shoal_storage_fragments{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        fragments >= 6.0,
        "fragments after a 3 MiB write: {fragments}"
    );
    // The Grafana dashboard's metrics are checked against a real mount's /metrics (FUSE
    // operations exist only there): integration-tests cli t41.

    // The page in a real browser: every node, all up.
    let profile = tempfile::tempdir().expect("profile");
    let url = format!("http://{}/", http.addr);
    let dom = browser_dom(&url, profile.path()).await;
    assert!(dom.contains("healthy"), "{dom}");
    let names: Vec<String> = tc
        .cluster
        .config
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .collect();
    assert_eq!(names.len(), 8);
    for n in &names {
        assert_eq!(state_of(&dom, n), "up", "{n}");
    }

    // A killed storage server shows as down; the others stay up.
    tc.cluster
        .stop_node("storage-3", true)
        .await
        .expect("kill storage-3");
    let dom = browser_dom(&url, profile.path()).await;
    assert_eq!(state_of(&dom, "storage-3"), "down");
    assert!(dom.contains("degraded"), "{dom}");
    for n in names.iter().filter(|n| *n != "storage-3") {
        assert_eq!(state_of(&dom, n), "up", "{n}");
    }
    c.shutdown();
    drop(http);
    tc.cluster.stop().await;
}
