//! Reads a Prometheus endpoint the way a scraper does (plain HTTP/1.1 GET over TCP to a
//! loopback address) and picks samples out of the text format. Owns nothing but the
//! parsing; must not talk to anything but the address it is given.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// The body of `GET path` at `addr` (a 200 answer), within `timeout`.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String> {
    let mut s =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .with_context(|| format!("read the answer of {addr}{path}"))?;
    let text = String::from_utf8(out).context("answer is not UTF-8")?;
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("no HTTP header in the answer of {addr}{path}");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "{addr}{path} answered {}",
            head.lines().next().unwrap_or_default()
        );
    }
    // axum answers with a length, or chunked: undo chunking if it is there.
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_string())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The sum of every sample of `name` whose labels include all of `labels` (0 when none).
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Whether some sample of `name` exists (with or without labels).
pub fn has(text: &str, name: &str) -> bool {
    text.lines()
        .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
}

/// A loopback TCP address that was free a moment ago.
pub fn free_tcp_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_matching_series_only() {
        let t = "# HELP x\nshoal_a_total{op=\"create\",node=\"m\"} 3\n\
                 shoal_a_total{op=\"create\",node=\"n\"} 4\nshoal_a_total{op=\"read\"} 9\n\
                 shoal_b 2.5\n";
        assert_eq!(sum(t, "shoal_a_total", &[("op", "create")]), 7.0);
        assert_eq!(sum(t, "shoal_a_total", &[]), 16.0);
        assert_eq!(sum(t, "shoal_b", &[]), 2.5);
        assert_eq!(sum(t, "shoal_c", &[]), 0.0);
        assert!(has(t, "shoal_b") && has(t, "shoal_a_total") && !has(t, "shoal_a"));
    }

    #[test]
    fn dechunks() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
