//! `shoal top`: live rates per operation and per node, from the nodes' Prometheus
//! endpoints (`http` of each node in cluster.toml, plus any `--endpoint`, e.g. that of
//! `shoal up --http` or `shoal mount --http`). Scrapes every interval and prints, per node,
//! requests served per second by operation, FUSE operations per second of mounts and bytes
//! per second; in place on a terminal, plain blocks of lines otherwise; `--once` measures
//! one interval and exits. Only reads /metrics; the rate arithmetic (`parse`, `rates`) is
//! pure and unit-tested.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);
/// The most bytes read from one endpoint.
const MAX_BODY: u64 = 64 << 20;

/// Counter values of one scrape: (node, what, op) → value.
pub type Counters = BTreeMap<(String, &'static str, String), f64>;

/// The counters `top` shows, and the column name of each.
const SHOWN: [(&str, &str); 5] = [
    ("shoal_rpc_served_total", "served"),
    ("shoal_rpc_calls_total", "called"),
    ("shoal_fuse_ops_total", "fuse"),
    ("shoal_rpc_received_bytes_total", "recv B"),
    ("shoal_rpc_sent_bytes_total", "sent B"),
];

/// The label `key` of a series' label text (`a="x",b="y"`).
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("{key}=\"");
    let at = labels.find(&pat)? + pat.len();
    let rest = &labels[at..];
    Some(&rest[..rest.find('"')?])
}

/// The counters of one /metrics text; a mount's FUSE operations (no `node` label) are
/// shown as node `mount:MOUNTPOINT` (or `mount@ENDPOINT` without a `mount` label).
pub fn parse(text: &str, endpoint: &str) -> Counters {
    let mut out = Counters::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let Some((_, what)) = SHOWN.iter().find(|(n, _)| *n == name) else {
            continue;
        };
        let node = label(labels, "node")
            .map(str::to_string)
            .or_else(|| label(labels, "mount").map(|m| format!("mount:{m}")))
            .unwrap_or_else(|| format!("mount@{endpoint}"));
        let op = label(labels, "op").unwrap_or("-").to_string();
        *out.entry((node, *what, op)).or_insert(0.0) += v;
    }
    out
}

/// Per-second rates between two scrapes `secs` apart, highest first (counters that went
/// down, e.g. a restarted process, count from zero).
pub fn rates(
    prev: &Counters,
    cur: &Counters,
    secs: f64,
) -> Vec<((String, &'static str, String), f64)> {
    let mut out: Vec<_> = cur
        .iter()
        .map(|(k, v)| {
            let before = prev.get(k).copied().unwrap_or(0.0);
            let d = if *v >= before { v - before } else { *v };
            (k.clone(), if secs > 0.0 { d / secs } else { 0.0 })
        })
        .filter(|(_, r)| *r > 0.0)
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

async fn scrape(addr: SocketAddr) -> Result<String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut out = Vec::new();
        s.take(MAX_BODY).read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let out = tokio::time::timeout(SCRAPE_TIMEOUT, fetch)
        .await
        .with_context(|| format!("{addr}: no answer within {SCRAPE_TIMEOUT:?}"))?
        .with_context(|| format!("{addr}"))?;
    let text = String::from_utf8_lossy(&out);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("{addr}: not an HTTP answer");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{addr}: {}", head.lines().next().unwrap_or_default());
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        bail!("{addr}: chunked answers are not supported (is this a Shoal endpoint?)");
    }
    Ok(body.to_string())
}

/// Scrapes every endpoint; failed ones are reported and left out.
async fn scrape_all(endpoints: &[SocketAddr]) -> (Counters, Vec<String>) {
    let got = scrape_each(endpoints).await;
    let mut all = Counters::new();
    let mut errors = Vec::new();
    for (addr, r) in endpoints.iter().zip(got) {
        match r {
            Ok(text) => all.extend(parse(&text, &addr.to_string())),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    (all, errors)
}

async fn scrape_each(endpoints: &[SocketAddr]) -> Vec<Result<String>> {
    let tasks: Vec<_> = endpoints.iter().map(|a| tokio::spawn(scrape(*a))).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(match t.await {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("scrape task: {e}")),
        });
    }
    out
}

fn render(rows: &[((String, &'static str, String), f64)], secs: f64, errors: &[String]) -> String {
    let mut s = format!(
        "shoal top: rates over {secs:.1} s ({} series moving)\n{:<22} {:<8} {:<20} {:>12}\n",
        rows.len(),
        "NODE",
        "KIND",
        "OP",
        "PER SECOND"
    );
    for ((node, what, op), r) in rows {
        s.push_str(&format!("{node:<22} {what:<8} {op:<20} {r:>12.1}\n"));
    }
    for e in errors {
        s.push_str(&format!("unreachable: {e}\n"));
    }
    s
}

/// Runs `shoal top`; returns the exit code (1 when no endpoint answered).
pub async fn run(endpoints: Vec<SocketAddr>, interval: Duration, once: bool) -> Result<i32> {
    if endpoints.is_empty() {
        bail!("no metrics endpoint: give nodes `http = \"127.0.0.1:PORT\"` in cluster.toml, or pass --endpoint ADDR (e.g. that of `shoal up --http ADDR`)");
    }
    let tty = std::io::stdout().is_terminal() && !once;
    let (mut prev, _) = scrape_all(&endpoints).await;
    let mut at = Instant::now();
    let mut stop = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = &mut stop => return Ok(0),
        }
        let (cur, errors) = scrape_all(&endpoints).await;
        let now = Instant::now();
        let secs = now.duration_since(at).as_secs_f64();
        let text = render(&rates(&prev, &cur, secs), secs, &errors);
        if tty {
            // Home and clear: refreshed in place.
            print!("\x1b[H\x1b[2J{text}");
        } else {
            println!("{text}");
        }
        if once {
            return Ok(if errors.len() == endpoints.len() {
                1
            } else {
                0
            });
        }
        prev = cur;
        at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "# TYPE shoal_rpc_served_total counter\n\
        shoal_rpc_served_total{node=\"manager-1\",op=\"Create\",outcome=\"ok\"} 10\n\
        shoal_rpc_served_total{node=\"manager-1\",op=\"Create\",outcome=\"error\"} 2\n\
        shoal_fuse_ops_total{op=\"create\"} 5\n\
        shoal_rpc_serve_seconds_count{node=\"manager-1\",op=\"Create\"} 12\n";
    const B: &str = "shoal_rpc_served_total{node=\"manager-1\",op=\"Create\",outcome=\"ok\"} 30\n\
        shoal_rpc_served_total{node=\"manager-1\",op=\"Create\",outcome=\"error\"} 2\n\
        shoal_fuse_ops_total{op=\"create\"} 25\n\
        shoal_fuse_ops_total{op=\"mkdir\"} 1\n";

    #[test]
    fn parses_shown_counters_summing_outcomes() {
        let c = parse(A, "e:1");
        assert_eq!(
            c.get(&("manager-1".into(), "served", "Create".into())),
            Some(&12.0)
        );
        assert_eq!(
            c.get(&("mount@e:1".into(), "fuse", "create".into())),
            Some(&5.0)
        );
        assert_eq!(c.len(), 2, "histograms are not shown: {c:?}");
    }

    #[test]
    fn mounts_are_told_apart_by_their_mount_label() {
        let t = "shoal_fuse_ops_total{mount=\"/mnt/a\",op=\"read\"} 3\n\
                 shoal_fuse_ops_total{mount=\"/mnt/b\",op=\"read\"} 4\n";
        let c = parse(t, "e:1");
        assert_eq!(
            c.get(&("mount:/mnt/a".into(), "fuse", "read".into())),
            Some(&3.0)
        );
        assert_eq!(
            c.get(&("mount:/mnt/b".into(), "fuse", "read".into())),
            Some(&4.0)
        );
    }

    #[test]
    fn rates_per_second_highest_first_and_restarts_count_from_zero() {
        let r = rates(&parse(A, "e"), &parse(B, "e"), 2.0);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].1, 10.0);
        assert_eq!(r[2], (("mount@e".into(), "fuse", "mkdir".into()), 0.5));
        // A counter that went down (restart) counts from zero.
        let back = rates(&parse(B, "e"), &parse(A, "e"), 1.0);
        assert!(back.iter().any(|(k, v)| k.2 == "create" && *v == 5.0));
    }

    #[test]
    fn renders_one_line_per_moving_series() {
        let r = rates(&parse(A, "e"), &parse(B, "e"), 1.0);
        let text = render(&r, 1.0, &["x: down".into()]);
        assert_eq!(text.lines().count(), 2 + 3 + 1, "{text}");
        assert!(text.contains("manager-1") && text.contains("unreachable: x: down"));
    }
}
