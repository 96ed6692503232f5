//! Lease cost benchmark (issue 3 item 7): what volume leases and callbacks cost in messages
//! and in rates, on an in-process cluster (6 storage servers, 2 managers, 4+2, real QUIC on
//! loopback) driven by `fuse_client::Client`s without a kernel mount.
//!
//! 1. Messages per operation: manager RPCs each client sends per op type
//!    (`Client::stats`), callbacks each client receives and callbacks the managers send
//!    (`Service::lease_stats`), with one client alone and with a second client caching the
//!    same files.
//! 2. Background lease traffic per client (Renew/s) with 10 and with 10,000 cached files.
//! 3. getattr and read rates on cached files, one client alone vs. with a second client
//!    holding read leases on the same files.
//!
//! Storage RPCs (fragment puts/reads) are not in the counters: the numbers are manager RPCs.
//! Run: `cargo bench -p fsd --bench lease_cost`. Prints markdown tables; asserts nothing.

use fsd::cluster::{init, InitParams, LocalCluster};
use fuse_client::{Client, ClientStats};
use proto::config::{ClusterConfig, ErasureConfig};
use proto::ids::InodeId;
use proto::msg::Caller;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROOT: Caller = Caller { uid: 0, gid: 0 };
/// Files per measured operation type (numbers are averaged over them).
const N: usize = 20;
/// Bytes per write and per read.
const IO: usize = 4096;
/// How long background traffic is observed at each cache size.
const IDLE_WINDOW: Duration = Duration::from_secs(8);
/// How long each rate is measured.
const RATE_WINDOW: Duration = Duration::from_millis(1000);
/// Alternating measurement rounds of each rate.
const ROUNDS: usize = 3;
/// Cached files for the "many" background-traffic measurement.
const MANY: usize = 10_000;
/// Creates in flight while filling the cache with `MANY` files.
const CREATE_PARALLEL: usize = 32;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run())
}

struct Bench {
    _dir: tempfile::TempDir,
    cluster: LocalCluster,
    managers: Vec<Arc<manager::Service>>,
}

impl Bench {
    async fn start() -> Result<Bench, BoxError> {
        let dir = tempfile::tempdir()?;
        let p = InitParams {
            name: "lease-bench".into(),
            storage: 6,
            managers: 2,
            erasure: ErasureConfig { data: 4, parity: 2 },
            base_port: fsd::cluster::free_port_range(8)?,
        };
        init(dir.path(), &p)?;
        let config = Arc::new(ClusterConfig::load(dir.path())?);
        let cluster = LocalCluster::start(config).await?;
        let managers = cluster.manager_services();
        for m in &managers {
            m.wait_ready().await;
        }
        Ok(Bench {
            _dir: dir,
            cluster,
            managers,
        })
    }

    async fn client(&self) -> Result<Arc<Client>, BoxError> {
        let t = fsd::cluster::client_transport(&self.cluster.config)?;
        Ok(Client::connect(self.cluster.config.clone(), t).await?)
    }

    /// Callbacks sent and renewals received, summed over the managers.
    fn manager_counts(&self) -> MgrCounts {
        let mut c = MgrCounts::default();
        for m in &self.managers {
            let s = m.lease_stats();
            c.invalidates += s.invalidates_sent;
            c.flushes += s.flushes_sent;
            c.renewals += s.renewals;
        }
        c
    }
}

#[derive(Default, Clone, Copy)]
struct MgrCounts {
    invalidates: u64,
    flushes: u64,
    renewals: u64,
}

/// Counters of both clients and the managers at one moment.
struct Snap {
    a: ClientStats,
    b: Option<ClientStats>,
    m: MgrCounts,
}

fn snap(bench: &Bench, a: &Client, b: Option<&Client>) -> Snap {
    Snap {
        a: a.stats(),
        b: b.map(|b| b.stats()),
        m: bench.manager_counts(),
    }
}

/// Per-op deltas between two snapshots.
struct Cost {
    a_rpcs: BTreeMap<&'static str, f64>,
    b_rpcs: BTreeMap<&'static str, f64>,
    a_callbacks: f64,
    b_callbacks: f64,
    mgr_callbacks: f64,
}

fn rpc_delta(before: &ClientStats, after: &ClientStats, ops: f64) -> BTreeMap<&'static str, f64> {
    after
        .rpcs
        .iter()
        .filter(|(k, _)| **k != "Renew")
        .filter_map(|(k, v)| {
            let d = v - before.rpc(k);
            (d > 0).then_some((*k, d as f64 / ops))
        })
        .collect()
}

fn callbacks(s: &ClientStats) -> u64 {
    s.invalidate_callbacks + s.flush_callbacks
}

fn cost(before: &Snap, after: &Snap, ops: usize) -> Cost {
    let n = ops as f64;
    let (b_rpcs, b_callbacks) = match (&before.b, &after.b) {
        (Some(x), Some(y)) => (rpc_delta(x, y, n), (callbacks(y) - callbacks(x)) as f64 / n),
        _ => (BTreeMap::new(), 0.0),
    };
    Cost {
        a_rpcs: rpc_delta(&before.a, &after.a, n),
        b_rpcs,
        a_callbacks: (callbacks(&after.a) - callbacks(&before.a)) as f64 / n,
        b_callbacks,
        mgr_callbacks: ((after.m.invalidates + after.m.flushes)
            - (before.m.invalidates + before.m.flushes)) as f64
            / n,
    }
}

fn fmt_rpcs(m: &BTreeMap<&'static str, f64>) -> String {
    if m.is_empty() {
        return "0".into();
    }
    let total: f64 = m.values().sum();
    let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
    format!("{total:.2} ({})", parts.join(", "))
}

struct Table {
    rows: Vec<String>,
}

impl Table {
    fn new() -> Table {
        Table { rows: Vec::new() }
    }

    fn add(&mut self, op: &str, setup: &str, c: &Cost) {
        self.rows.push(format!(
            "| {op} | {setup} | {} | {:.2} | {} | {:.2} | {:.2} |",
            fmt_rpcs(&c.a_rpcs),
            c.a_callbacks,
            fmt_rpcs(&c.b_rpcs),
            c.b_callbacks,
            c.mgr_callbacks
        ));
    }

    fn print(&self) {
        println!(
            "| operation (by client A unless said) | setup | A: manager RPCs/op (by type) | A: callbacks recv/op | B: manager RPCs/op | B: callbacks recv/op | managers: callbacks sent/op |"
        );
        println!("|---|---|---|---|---|---|---|");
        for r in &self.rows {
            println!("{r}");
        }
    }
}

fn payload(seed: u8) -> Vec<u8> {
    (0..IO)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Creates `n` files named `{prefix}{i}` in `dir` (each create leaves the file open once).
async fn create_files(
    c: &Client,
    dir: InodeId,
    prefix: &str,
    n: usize,
) -> Result<Vec<(String, InodeId)>, BoxError> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("{prefix}{i}");
        let (a, _fh) = c.create(dir, &name, 0o644, 0o022, ROOT).await?;
        v.push((name, a.ino));
    }
    Ok(v)
}

/// Makes `c` cache `files` of `dir`: lookup (registers dir and file), getattr, read.
async fn cache_files(
    c: &Client,
    dir: InodeId,
    files: &[(String, InodeId)],
) -> Result<(), BoxError> {
    for (name, ino) in files {
        c.lookup(dir, name).await?;
        c.getattr(*ino).await?;
        c.read(*ino, 0, IO as u32).await?;
    }
    Ok(())
}

/// Part 1: messages per operation, with client A alone (`b` None) or with B sharing.
async fn messages(
    bench: &Bench,
    table: &mut Table,
    a: &Client,
    b: Option<&Client>,
    tag: &str,
) -> Result<(), BoxError> {
    let setup = match b {
        None => "1 client".to_string(),
        Some(_) => "2 clients: B caches dir+files before each op".to_string(),
    };
    let d = a
        .mkdir(InodeId::ROOT, &format!("msg-{tag}"), 0o755, 0o022, ROOT)
        .await?;
    let dir = d.ino;
    let data = payload(1);

    // create: B caches the directory (lookup of an existing name) before each create.
    let seed = create_files(a, dir, "seed", 1).await?;
    let mut files = Vec::with_capacity(N);
    let mut total: Option<Cost> = None;
    for i in 0..N {
        if let Some(b) = b {
            cache_files(b, dir, &seed).await?;
        }
        let s0 = snap(bench, a, b);
        let name = format!("f{i}");
        let (attr, _fh) = a.create(dir, &name, 0o644, 0o022, ROOT).await?;
        let s1 = snap(bench, a, b);
        files.push((name, attr.ino));
        total = Some(add_cost(total, cost(&s0, &s1, N)));
    }
    if let Some(c) = total {
        table.add("create (new file in a shared dir)", &setup, &c);
    }

    // write 4 KiB into the file A just created (A holds its write lease from Create).
    let s0 = snap(bench, a, b);
    for (_, ino) in &files {
        a.write(*ino, 0, &data).await?;
    }
    let s1 = snap(bench, a, b);
    table.add(
        "write 4 KiB (A created the file: write lease held)",
        &setup,
        &cost(&s0, &s1, N),
    );

    // fsync: segment append (storage, not counted) + CommitWrites.
    let s0 = snap(bench, a, b);
    for (_, ino) in &files {
        a.fsync(*ino).await?;
    }
    let s1 = snap(bench, a, b);
    table.add("fsync after the write", &setup, &cost(&s0, &s1, N));

    // B reads a file A has written: A's write lease is called back (Flush) first.
    if let Some(b) = b {
        for (_, ino) in &files {
            a.write(*ino, IO as u64, &data).await?;
        }
        let s0 = snap(bench, a, Some(b));
        for (name, _) in &files {
            b.lookup(dir, name).await?;
        }
        let s1 = snap(bench, a, Some(b));
        table.add(
            "B: lookup of a file A has dirty data in (A's writer lease recalled)",
            &setup,
            &cost(&s0, &s1, N),
        );
        for (_, ino) in &files {
            b.read(*ino, 0, IO as u32).await?;
        }
    }

    // Warm A's caches: getattr + read every file once.
    for (_, ino) in &files {
        a.getattr(*ino).await?;
        a.read(*ino, 0, IO as u32).await?;
    }
    let s0 = snap(bench, a, b);
    for (_, ino) in &files {
        a.getattr(*ino).await?;
    }
    let s1 = snap(bench, a, b);
    table.add("stat/getattr of a cached file", &setup, &cost(&s0, &s1, N));

    let s0 = snap(bench, a, b);
    for (_, ino) in &files {
        a.read(*ino, 0, IO as u32).await?;
    }
    let s1 = snap(bench, a, b);
    table.add("read 4 KiB of a cached file", &setup, &cost(&s0, &s1, N));

    // write to a file A does not hold the write lease of (B, if any, holds read leases).
    let mut total: Option<Cost> = None;
    for (name, ino) in &files {
        if let Some(b) = b {
            b.lookup(dir, name).await?;
            b.read(*ino, 0, IO as u32).await?;
        }
        let s0 = snap(bench, a, b);
        a.write(*ino, 0, &data).await?;
        let s1 = snap(bench, a, b);
        total = Some(add_cost(total, cost(&s0, &s1, N)));
    }
    if let Some(c) = total {
        table.add(
            "write 4 KiB after fsync (2 clients: B read it since, so A lost the write lease)",
            &setup,
            &c,
        );
    }
    for (_, ino) in &files {
        a.fsync(*ino).await?;
        a.release(*ino).await?;
    }

    // unlink: B caches the directory and the file before each unlink.
    let mut total: Option<Cost> = None;
    for (name, ino) in &files {
        if let Some(b) = b {
            cache_files(b, dir, &[(name.clone(), *ino)]).await?;
        }
        let s0 = snap(bench, a, b);
        a.unlink(dir, name, ROOT).await?;
        let s1 = snap(bench, a, b);
        total = Some(add_cost(total, cost(&s0, &s1, N)));
    }
    if let Some(c) = total {
        table.add("unlink", &setup, &c);
    }
    Ok(())
}

fn add_cost(acc: Option<Cost>, c: Cost) -> Cost {
    let Some(mut acc) = acc else { return c };
    for (k, v) in c.a_rpcs {
        *acc.a_rpcs.entry(k).or_insert(0.0) += v;
    }
    for (k, v) in c.b_rpcs {
        *acc.b_rpcs.entry(k).or_insert(0.0) += v;
    }
    acc.a_callbacks += c.a_callbacks;
    acc.b_callbacks += c.b_callbacks;
    acc.mgr_callbacks += c.mgr_callbacks;
    acc
}

/// Renewals client `c` sends per second while idle, and all its manager RPCs per second.
/// Counted between the starts of two renewal rounds (a round renews with every manager at
/// once), so the figure has no quantization error from where the window falls.
async fn idle_traffic(c: &Client) -> (f64, f64) {
    // Bounded: the window plus two renewal intervals, polled every millisecond.
    let deadline = Instant::now() + IDLE_WINDOW + Duration::from_secs(5);
    let mut last = c.stats();
    let mut last_change: Option<Instant> = None;
    let mut first: Option<(Instant, ClientStats)> = None;
    let mut latest_round: Option<(Instant, ClientStats)> = None;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now = Instant::now();
        let s = c.stats();
        if s.renewals != last.renewals {
            // A change after 200 ms of quiet starts a new round.
            let new_round =
                last_change.is_none_or(|t| now.duration_since(t) > Duration::from_millis(200));
            if new_round {
                match &first {
                    None => first = Some((now, last.clone())),
                    Some((t0, _)) => {
                        latest_round = Some((now, last.clone()));
                        if now.duration_since(*t0) >= IDLE_WINDOW {
                            break;
                        }
                    }
                }
            }
            last_change = Some(now);
        }
        last = s;
    }
    match (first, latest_round) {
        (Some((t0, s0)), Some((t1, s1))) => {
            let secs = t1.duration_since(t0).as_secs_f64();
            (
                (s1.renewals - s0.renewals) as f64 / secs,
                (s1.total_rpcs() - s0.total_rpcs()) as f64 / secs,
            )
        }
        _ => (0.0, 0.0),
    }
}

/// Creates `n` files in `dir` with `CREATE_PARALLEL` creates in flight.
async fn create_many(c: &Arc<Client>, dir: InodeId, n: usize) -> Result<(), BoxError> {
    let mut set = tokio::task::JoinSet::new();
    let per = n.div_ceil(CREATE_PARALLEL);
    for t in 0..CREATE_PARALLEL {
        let c = c.clone();
        set.spawn(async move {
            for i in (t * per)..((t + 1) * per).min(n) {
                c.create(dir, &format!("m{i}"), 0o644, 0o022, ROOT).await?;
            }
            Ok::<(), fuse_client::FsError>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

/// Sequential ops/s of `op` over `files` for `RATE_WINDOW`.
async fn rate<F, Fut>(files: &[InodeId], op: F) -> Result<f64, BoxError>
where
    F: Fn(InodeId) -> Fut,
    Fut: std::future::Future<Output = Result<(), BoxError>>,
{
    // Warm-up round.
    for ino in files {
        op(*ino).await?;
    }
    let t0 = Instant::now();
    let mut n = 0u64;
    // Bounded by the window (checked after every round of files).
    while t0.elapsed() < RATE_WINDOW {
        for ino in files {
            op(*ino).await?;
            n += 1;
        }
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// "median (min-max)" of a few rates.
fn summary(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    match (v.first(), v.get(v.len() / 2), v.last()) {
        (Some(lo), Some(mid), Some(hi)) => format!("{mid:.0} ({lo:.0}-{hi:.0})"),
        _ => "-".into(),
    }
}

async fn rates(a: &Client, files: &[InodeId]) -> Result<(f64, f64), BoxError> {
    let stat = rate(files, |ino| async move {
        a.getattr(ino).await?;
        Ok(())
    })
    .await?;
    let read = rate(files, |ino| async move {
        a.read(ino, 0, IO as u32).await?;
        Ok(())
    })
    .await?;
    Ok((stat, read))
}

async fn run() -> Result<(), BoxError> {
    let started = Instant::now();
    let bench = Bench::start().await?;
    let lease_ms = bench.cluster.config.file.manager.lease_ms;
    println!(
        "# Lease cost (in-process cluster: 6 storage, 2 managers, 4+2; lease_ms = {lease_ms}; {N} files per op; I/O {IO} B)\n"
    );
    println!(
        "Counts are manager RPCs (storage RPCs not counted); Renew excluded from per-op counts.\n"
    );

    // 1. Messages per operation.
    println!("## 1. Messages per operation\n");
    let mut table = Table::new();
    {
        let a = bench.client().await?;
        messages(&bench, &mut table, &a, None, "alone").await?;
        let b = bench.client().await?;
        messages(&bench, &mut table, &a, Some(&b), "shared").await?;
        a.shutdown();
        b.shutdown();
    }
    table.print();

    // 2. Background lease traffic.
    println!("\n## 2. Background lease traffic of an idle client\n");
    let a = bench.client().await?;
    let d = a.mkdir(InodeId::ROOT, "idle", 0o755, 0o022, ROOT).await?;
    let few = create_files(&a, d.ino, "few", 10).await?;
    cache_files(&a, d.ino, &few).await?;
    let (m0, w) = (bench.manager_counts(), Instant::now());
    let (renew_few, rpcs_few) = idle_traffic(&a).await;
    let m1 = bench.manager_counts();
    let mgr_few = (m1.renewals - m0.renewals) as f64 / w.elapsed().as_secs_f64();
    let t0 = Instant::now();
    create_many(&a, d.ino, MANY).await?;
    let fill = t0.elapsed();
    // Every one of them exists (and so is cached by A).
    a.lookup(d.ino, &format!("m{}", MANY - 1)).await?;
    let (m0, w) = (bench.manager_counts(), Instant::now());
    let (renew_many, rpcs_many) = idle_traffic(&a).await;
    let m1 = bench.manager_counts();
    let mgr_many = (m1.renewals - m0.renewals) as f64 / w.elapsed().as_secs_f64();
    println!("| cached files | client Renew/s | client manager RPCs/s (all types) | managers: Renew received/s (whole window, coarse) |");
    println!("|---|---|---|---|");
    println!("| 10 | {renew_few:.2} | {rpcs_few:.2} | {mgr_few:.2} |");
    println!(
        "| {} | {renew_many:.2} | {rpcs_many:.2} | {mgr_many:.2} |",
        MANY + 10
    );
    println!(
        "\n(expected: managers × 4 / lease = {:.2}/s, whatever is cached; filling {MANY} files took {:.1} s, {:.0} creates/s)",
        bench.managers.len() as f64 * 4000.0 / lease_ms as f64,
        fill.as_secs_f64(),
        MANY as f64 / fill.as_secs_f64()
    );
    a.shutdown();

    // 3. Rates on cached files: two sets of 10 files cached by A; B also caches the second.
    // The two setups are measured alternately, ROUNDS times each, and the medians shown,
    // so that load from elsewhere on the machine hits both alike.
    println!("\n## 3. getattr and read rates on cached files (client A, one task, sequential)\n");
    let a = bench.client().await?;
    let b = bench.client().await?;
    let d = a.mkdir(InodeId::ROOT, "rates", 0o755, 0o022, ROOT).await?;
    let data = payload(9);
    let mut sets = Vec::new();
    for prefix in ["alone", "shared"] {
        let files = create_files(&a, d.ino, prefix, 10).await?;
        for (_, ino) in &files {
            a.write(*ino, 0, &data).await?;
            a.fsync(*ino).await?;
        }
        cache_files(&a, d.ino, &files).await?;
        sets.push(files);
    }
    cache_files(&b, d.ino, &sets[1]).await?;
    let inos: Vec<Vec<InodeId>> = sets
        .iter()
        .map(|f| f.iter().map(|(_, i)| *i).collect())
        .collect();
    let cb0 = callbacks(&a.stats());
    let mut results: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (i, set) in inos.iter().enumerate() {
            results[i].push(rates(&a, set).await?);
        }
    }
    let cb1 = callbacks(&a.stats());
    println!("| setup | getattr ops/s (median of {ROUNDS}; min-max) | read 4 KiB ops/s (median; min-max) |");
    println!("|---|---|---|");
    for (i, label) in [
        "A alone on its files",
        "B holds read leases on the same files",
    ]
    .iter()
    .enumerate()
    {
        let stat: Vec<f64> = results[i].iter().map(|r| r.0).collect();
        let read: Vec<f64> = results[i].iter().map(|r| r.1).collect();
        println!("| {label} | {} | {} |", summary(stat), summary(read));
    }
    println!(
        "\n(callbacks A received during these measurements: {})",
        cb1 - cb0
    );
    a.shutdown();
    b.shutdown();

    bench.cluster.stop().await;
    println!("\ntotal time {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
