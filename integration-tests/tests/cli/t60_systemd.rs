//! `shoal node run` under a service manager: it reports readiness and stopping over
//! `NOTIFY_SOCKET` (systemd's Type=notify, as deploy/systemd/shoal-node@.service uses),
//! exits 0 on SIGTERM, and logs one JSON object per line with `SHOAL_LOG_FORMAT=json`.

use anyhow::{ensure, Context, Result};
use integration_tests::binary::shoal_binary;
use integration_tests::TestCluster;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tracing::info;

/// Kills the node process if the test ends early.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next notification (bounded: 30 s), or why none came (the node exited).
fn recv_text(sock: &UnixDatagram, node: &mut Node) -> Result<String> {
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => return Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e).context("notify socket"),
        }
        if let Some(status) = node.0.try_wait()? {
            anyhow::bail!("the node exited ({status}) before notifying");
        }
        ensure!(Instant::now() < deadline, "no notification within 30 s");
    }
}

#[test]
fn t60_node_run_notifies_readiness_stops_on_sigterm_and_logs_json() -> Result<()> {
    let c = TestCluster::init(6, 2, "4+2")?;
    let sock_path = c.env().path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path)?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let log_path = c.env().path().join("storage-1-json.log");
    let log = std::fs::File::create(&log_path)?;
    let child = Command::new(shoal_binary()?)
        .args(["node", "run", "--cluster"])
        .arg(c.dir())
        .args(["--node", "storage-1"])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("SHOAL_LOG_FORMAT", "json")
        .env("SHOAL_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let mut node = Node(child);
    info!("--- READY=1 once the node serves");
    let ready = recv_text(&sock, &mut node)?;
    ensure!(ready.contains("READY=1"), "first notification: {ready:?}");
    info!("--- SIGTERM: STOPPING=1, then exit 0");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(node.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let stopping = recv_text(&sock, &mut node)?;
    ensure!(
        stopping.contains("STOPPING=1"),
        "second notification: {stopping:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = node.0.try_wait()? {
            break s;
        }
        ensure!(
            Instant::now() < deadline,
            "the node did not exit within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    ensure!(status.success(), "exit after SIGTERM: {status}");
    info!("--- every log line is a JSON object");
    let text = std::fs::read_to_string(&log_path)?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    ensure!(!lines.is_empty(), "no log lines");
    for l in &lines {
        ensure!(
            l.starts_with('{') && l.ends_with('}') && l.contains("\"level\":"),
            "not a JSON log line: {l}"
        );
    }
    ensure!(
        lines.iter().any(|l| l.contains("node is serving")),
        "no 'node is serving' line:\n{text}"
    );
    c.done();
    Ok(())
}
