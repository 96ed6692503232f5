//! Network partitions of one client: a UDP forwarding proxy per node ([`Partition`]) that a
//! mount reaches the cluster through (a copy of the cluster directory whose cluster.toml
//! names the proxies; TLS checks the fixed server name, not the address), and that can drop
//! every datagram in both directions (`cut`) until `heal`. QUIC runs over UDP, so a cut
//! looks to both sides like lost packets: the process keeps running, unlike a SIGSTOP.
//! It owns only its sockets and threads (all on 127.0.0.1); it must not touch the nodes or
//! the mount process.

use anyhow::{Context, Result};
use proto::config::{ClusterConfig, CONFIG_FILE};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the proxy threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// Largest datagram forwarded (QUIC sends at most ~1.5 KB; leave room).
const MAX_DATAGRAM: usize = 65_536;

/// Switches shared by every thread of a [`Partition`].
#[derive(Default)]
struct Switch {
    cut: AtomicBool,
    stop: AtomicBool,
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

/// One proxy per node, each forwarding between the client (whatever address it sends
/// from) and that node, through one upstream socket per client address.
pub struct Partition {
    switch: Arc<Switch>,
    /// (node name, its real address, the proxy's address).
    nodes: Vec<(String, SocketAddr, SocketAddr)>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Partition {
    /// Starts a proxy for every node of the cluster in `cluster_dir`.
    pub fn start(cluster_dir: &Path) -> Result<Partition> {
        let cfg = ClusterConfig::load(cluster_dir).context("load cluster.toml")?;
        let switch = Arc::new(Switch::default());
        let threads = Arc::new(Mutex::new(Vec::new()));
        let mut nodes = Vec::new();
        for n in &cfg.nodes {
            let listen = UdpSocket::bind("127.0.0.1:0").context("bind a proxy socket")?;
            listen.set_read_timeout(Some(POLL))?;
            let at = listen.local_addr()?;
            let (sw, th, node) = (switch.clone(), threads.clone(), n.address);
            let h = std::thread::Builder::new()
                .name(format!("proxy {}", n.name))
                .spawn(move || listen_loop(Arc::new(listen), node, sw, th))?;
            threads.lock().unwrap_or_else(|e| e.into_inner()).push(h);
            nodes.push((n.name.clone(), n.address, at));
        }
        Ok(Partition {
            switch,
            nodes,
            threads,
        })
    }

    /// Writes a cluster directory for a client behind the proxies into `out` (created):
    /// cluster.toml with each node's address replaced by its proxy's, and a copy of tls/.
    pub fn client_dir(&self, cluster_dir: &Path, out: &Path) -> Result<PathBuf> {
        let mut cfg = ClusterConfig::load(cluster_dir).context("load cluster.toml")?;
        for n in cfg.file.nodes.iter_mut() {
            let (_, _, proxy) = self
                .nodes
                .iter()
                .find(|(name, _, _)| *name == n.name)
                .with_context(|| format!("no proxy for node {}", n.name))?;
            n.address = *proxy;
        }
        std::fs::create_dir_all(out.join("tls"))?;
        std::fs::write(out.join(CONFIG_FILE), ClusterConfig::render(&cfg.file))?;
        for e in std::fs::read_dir(cluster_dir.join("tls"))? {
            let e = e?;
            std::fs::copy(e.path(), out.join("tls").join(e.file_name()))?;
        }
        ClusterConfig::load(out).context("reload the proxied cluster.toml")?;
        Ok(out.to_path_buf())
    }

    /// Drops every datagram in both directions from now on.
    pub fn cut(&self) {
        self.switch.cut.store(true, Ordering::SeqCst);
        tracing::info!("partition: client cut off (all datagrams dropped)");
    }

    /// Forwards again.
    pub fn heal(&self) {
        self.switch.cut.store(false, Ordering::SeqCst);
        tracing::info!("partition healed");
    }

    /// Datagrams forwarded and dropped so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.switch.forwarded.load(Ordering::SeqCst),
            self.switch.dropped.load(Ordering::SeqCst),
        )
    }

    /// The proxy address of node `name`.
    pub fn proxy_of(&self, name: &str) -> Option<SocketAddr> {
        self.nodes
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, p)| *p)
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.switch.stop.store(true, Ordering::SeqCst);
        // Upstream threads are added by the listeners: stop those first, then join all.
        loop {
            let h = self.threads.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match h {
                Some(h) => {
                    let _ = h.join();
                }
                None => break,
            }
        }
    }
}

/// Client → node: datagrams arriving at the proxy go out of the upstream socket of their
/// sender (made on its first datagram), unless cut.
fn listen_loop(
    listen: Arc<UdpSocket>,
    node: SocketAddr,
    sw: Arc<Switch>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let mut upstream: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !sw.stop.load(Ordering::SeqCst) {
        let Ok((n, from)) = listen.recv_from(&mut buf) else {
            continue; // timeout (or a transient error): look at the stop flag
        };
        if sw.cut.load(Ordering::SeqCst) {
            sw.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let up = match upstream.get(&from) {
            Some(u) => u.clone(),
            None => match new_upstream(&listen, node, from, &sw) {
                Ok((u, h)) => {
                    threads.lock().unwrap_or_else(|e| e.into_inner()).push(h);
                    upstream.insert(from, u.clone());
                    u
                }
                Err(e) => {
                    tracing::warn!("proxy to {node}: no upstream socket for {from}: {e:#}");
                    continue;
                }
            },
        };
        if up.send(&buf[..n]).is_ok() {
            sw.forwarded.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// An upstream socket for client address `client` and its node → client thread.
fn new_upstream(
    listen: &Arc<UdpSocket>,
    node: SocketAddr,
    client: SocketAddr,
    sw: &Arc<Switch>,
) -> Result<(Arc<UdpSocket>, JoinHandle<()>)> {
    let up = UdpSocket::bind("127.0.0.1:0")?;
    up.connect(node)?;
    up.set_read_timeout(Some(POLL))?;
    let up = Arc::new(up);
    let (u, l, sw) = (up.clone(), listen.clone(), sw.clone());
    let h = std::thread::Builder::new()
        .name(format!("proxy {node} -> {client}"))
        .spawn(move || {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while !sw.stop.load(Ordering::SeqCst) {
                let Ok(n) = u.recv(&mut buf) else { continue };
                if sw.cut.load(Ordering::SeqCst) {
                    sw.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if l.send_to(&buf[..n], client).is_ok() {
                    sw.forwarded.fetch_add(1, Ordering::Relaxed);
                }
            }
        })?;
    Ok((up, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout of `shoal init` (6 storage + 1 manager), its first node at `echo`.
    fn cluster_with_echo(dir: &Path, echo: SocketAddr) {
        let erasure = proto::config::ErasureConfig { data: 4, parity: 2 };
        let mut file = ClusterConfig::generate("t", 6, 1, erasure, 40000).expect("generate");
        file.nodes[0].address = echo;
        std::fs::create_dir_all(dir.join("tls")).expect("tls");
        std::fs::write(dir.join("tls").join("ca.pem"), b"test").expect("ca");
        std::fs::write(dir.join(CONFIG_FILE), ClusterConfig::render(&file)).expect("write");
    }

    #[test]
    fn forwards_both_ways_and_drops_both_ways_when_cut() {
        let d = tempfile::tempdir().expect("tempdir");
        let echo = UdpSocket::bind("127.0.0.1:0").expect("echo");
        echo.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        cluster_with_echo(d.path(), echo.local_addr().expect("addr"));
        let p = Partition::start(d.path()).expect("start");
        let out = p
            .client_dir(d.path(), &d.path().join("client"))
            .expect("client dir");
        let cfg = ClusterConfig::load(&out).expect("load");
        let proxy = p.proxy_of(&cfg.nodes[0].name).expect("proxy");
        assert_eq!(cfg.nodes[0].address, proxy);
        assert!(out.join("tls").join("ca.pem").exists());

        let client = UdpSocket::bind("127.0.0.1:0").expect("client");
        client
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let mut buf = [0u8; 16];
        // Healed: client -> node -> client.
        client.send_to(b"ping", proxy).expect("send");
        let (n, from) = echo.recv_from(&mut buf).expect("node got it");
        assert_eq!(&buf[..n], b"ping");
        echo.send_to(b"pong", from).expect("answer");
        let (n, back) = client.recv_from(&mut buf).expect("client got the answer");
        assert_eq!((&buf[..n], back), (&b"pong"[..], proxy));
        // Cut: nothing either way (the node answers to the same upstream address).
        p.cut();
        client.send_to(b"lost", proxy).expect("send");
        echo.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        assert!(
            echo.recv_from(&mut buf).is_err(),
            "a datagram passed the cut"
        );
        echo.send_to(b"lost", from).expect("send");
        assert!(
            client.recv_from(&mut buf).is_err(),
            "an answer passed the cut"
        );
        // Healed again.
        p.heal();
        client.send_to(b"again", proxy).expect("send");
        echo.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let (n, _) = echo.recv_from(&mut buf).expect("node got it after healing");
        assert_eq!(&buf[..n], b"again");
        let (fwd, dropped) = p.counts();
        assert!(
            fwd >= 3 && dropped == 2,
            "forwarded {fwd}, dropped {dropped}"
        );
    }
}
