//! `shoal`: parses arguments, sets up logging and dispatches to the library crates. No file
//! system logic lives here.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use proto::config::{ClusterConfig, ErasureConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod bench;
mod clean;
mod coop_bench;
mod df;
mod drain;
mod mount_helper;
mod progress;
mod rebuild;
mod scrub;
mod status;
mod top;

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "Shoal: a serverless cluster file system (xFS for today)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run an all-in-one local cluster (6 storage servers 4+2, 2 managers, one client) on
    /// loopback, mounted at MOUNTPOINT. Runs in the foreground; Ctrl-C unmounts and stops.
    Up(UpArgs),
    /// Create a cluster config, a CA and certificates in DIR.
    Init(InitArgs),
    /// Node commands.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Manager commands: hand a down manager's slots to another manager.
    #[command(subcommand)]
    Manager(ManagerCmd),
    /// Mount the cluster's file system at MOUNTPOINT (foreground; Ctrl-C unmounts).
    Mount(MountArgs),
    /// Certificates: issue client and admin identities, revoke any identity.
    #[command(subcommand)]
    Cert(CertCmd),
    /// Show the health line, then every node: role, address, state, capacity and use,
    /// workers; degraded stripes. Exit 0 when the cluster can serve, 1 when it cannot, 3 when
    /// it could not be probed.
    Status(StatusArgs),
    /// Show the space the reclaimer would give back (deleted or overwritten data); with
    /// --now, reclaim it at once.
    Clean(CleanArgs),
    /// Space: per storage server capacity, free and fragment bytes; the file data stripes
    /// can still take; live, reclaimable and pinned dead bytes of the data logs.
    Df(ClusterArg),
    /// Scrub: show every storage server's last scrub results, or with --now verify every
    /// fragment's checksums at once and repair bad ones from their stripe.
    Scrub(NowArgs),
    /// Rebuild: show how many stripes are degraded, or with --now reconstruct their missing
    /// fragments (e.g. those of a dead server) onto the live servers.
    Rebuild(RebuildArgs),
    /// Live rates per operation and per node from the nodes' metrics endpoints (`http` in
    /// cluster.toml, and --endpoint), refreshed every interval; --once for scripts.
    Top(TopArgs),
    /// Run the standard workload on DIR and on every baseline, in one run, and print one
    /// table with ratios to the first baseline; or `shoal bench coop MOUNT...` to measure
    /// cooperative caching between the mounts of one cluster.
    Bench(BenchArgs),
}

#[derive(Args)]
struct CleanArgs {
    /// The cluster directory (cluster.toml, tls/).
    #[arg(long)]
    cluster: PathBuf,
    /// Reclaim now instead of only showing what would be reclaimed.
    #[arg(long)]
    now: bool,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct BenchArgs {
    #[command(subcommand)]
    kind: Option<BenchKind>,
    /// Directory to measure (e.g. a Shoal mount; write ./coop for a directory named coop).
    #[arg(required = true)]
    dir: Option<PathBuf>,
    /// Baseline directories measured in the same run (e.g. a tmpfs, a FUSE mirror, a peer).
    #[arg(long)]
    baseline: Vec<PathBuf>,
    /// A short run (about a minute per target) instead of the full one.
    #[arg(long)]
    quick: bool,
    /// Write every figure to FILE as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Labels for DIR and the baselines, in order (default: the directory names).
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
}

#[derive(Subcommand)]
enum BenchKind {
    /// Cooperative caching (issue 12): a shared working set read from every MOUNT at once
    /// with cooperation on and then off (the shoal.peer_reads switch), each phase cold;
    /// where reads were served (shoal.stats), peer vs storage latency of 64 KiB misses,
    /// throughput. Every byte read is checked; the files are removed afterwards.
    Coop(CoopBenchArgs),
}

#[derive(Args)]
struct CoopBenchArgs {
    /// Mounts that are clients of one cluster (e.g. MNT MNT-2 MNT-3 MNT-4 of
    /// `shoal up --clients 4`); at least two.
    #[arg(required = true, num_args = 2.., value_name = "MOUNT")]
    mounts: Vec<PathBuf>,
    /// The shared working set in MiB [default: twice the first mount's block cache, as
    /// its shoal.stats tells; 512 when it does not].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    working_set_mb: Option<u64>,
    /// How each mount walks the working set.
    #[arg(long, value_enum, default_value_t = coop_bench::plan::Pattern::RoundRobin)]
    pattern: coop_bench::plan::Pattern,
    /// Passes over the working set per mount and phase (Zipf: reads of as many chunks).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    passes: u32,
    /// 64 KiB reads timed each way (peer, storage) for the latency ratio.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    latency_samples: u64,
    /// Write every figure to FILE as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct UpArgs {
    /// Where to mount the file system (an existing empty directory).
    mountpoint: PathBuf,
    /// State directory of the local cluster [default: $XDG_STATE_HOME/shoal or ~/.local/state/shoal].
    #[arg(long)]
    state: Option<PathBuf>,
    /// Number of client mounts: the first at MOUNTPOINT, the others at MOUNTPOINT-2,
    /// MOUNTPOINT-3, ... (created when missing). Each is a separate client of the cluster.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    clients: u16,
    /// Serve Prometheus metrics (/metrics) and the status page (/) of every node of this
    /// process on ADDR, e.g. 127.0.0.1:9400 (unauthenticated: keep it on loopback).
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
}

#[derive(Args)]
struct InitArgs {
    /// Directory to write cluster.toml, tls/ and nodes/ into.
    #[arg(long)]
    cluster: PathBuf,
    /// Number of storage nodes.
    #[arg(long, default_value_t = 6)]
    storage: usize,
    /// Number of managers.
    #[arg(long, default_value_t = 2)]
    managers: usize,
    /// Erasure coding as K+P: K data and P parity fragments per stripe.
    #[arg(long, default_value = "4+2", value_parser = parse_ec)]
    ec: ErasureConfig,
    /// First UDP port; nodes listen on 127.0.0.1 from here upward.
    #[arg(long, default_value_t = 7400)]
    base_port: u16,
    /// Cluster name.
    #[arg(long, default_value = "shoal")]
    name: String,
}

#[derive(Subcommand)]
enum NodeCmd {
    /// Run one node's roles in the foreground.
    Run {
        /// Cluster directory (holds cluster.toml).
        #[arg(long)]
        cluster: PathBuf,
        /// Node name as in cluster.toml (e.g. storage-1, manager-1).
        #[arg(long)]
        node: String,
    },
    /// Add a storage node: appends it to cluster.toml (existing data stays where it is)
    /// and issues its certificate (needs tls/ca.key). Start it with `shoal node run`; new
    /// stripes use it once managers and mounts have been restarted with the new file.
    Add {
        /// Cluster directory (holds cluster.toml and tls/ca.key).
        #[arg(long)]
        cluster: PathBuf,
        /// The new node's name.
        #[arg(long)]
        name: String,
        /// Its UDP address (QUIC).
        #[arg(long)]
        address: std::net::SocketAddr,
        /// The most fragment bytes it stores (e.g. "2GiB"); default its file system's size.
        #[arg(long)]
        capacity: Option<String>,
    },
    /// Drain storage node NAME: it takes no new fragments, its fragments are rebuilt onto
    /// the other servers and deleted from it, with progress; then it holds nothing and can
    /// be removed.
    Drain {
        /// Cluster directory (holds cluster.toml and tls/).
        #[arg(long)]
        cluster: PathBuf,
        /// The storage node to empty.
        name: String,
    },
}

#[derive(Subcommand)]
enum ManagerCmd {
    /// Move manager NAME's group (its slots and metadata log) to manager TO while both run:
    /// the manager serving it now makes everything it answered durable and stops it, TO
    /// loads it from the storage servers and serves it after the volume-lease grace.
    /// Mounts follow without remounting; operations on the group wait, none fails. NAME
    /// itself as TO gives the group back to its own node. If TO does not take it, it is
    /// served where it was, and the command fails with the reason.
    Move {
        /// Cluster directory (holds cluster.toml and tls/).
        #[arg(long)]
        cluster: PathBuf,
        /// The manager whose group moves.
        name: String,
        /// The manager that serves it from now on.
        #[arg(long)]
        to: String,
    },
    /// Serve down manager NAME's slots from manager HOST's process (a takeover): proposed
    /// to the running config group, which refuses it while NAME still answers. HOST loads
    /// NAME's metadata log from the storage servers and serves it at a new address; mounts
    /// follow without remounting, and the storage servers refuse NAME's writes from then on.
    Takeover {
        /// Cluster directory (holds cluster.toml).
        #[arg(long)]
        cluster: PathBuf,
        /// The manager whose slots move.
        name: String,
        /// The manager whose process serves them from now on. NAME itself gives them back
        /// (at NAME's address), which the cluster takes only while the current host's copy is
        /// down; then restart NAME's node with the new cluster.toml.
        #[arg(long)]
        by: String,
        /// Where HOST serves them (UDP, QUIC); default a free port on HOST's IP, found on
        /// this machine (give it when HOST is another machine).
        #[arg(long)]
        address: Option<std::net::SocketAddr>,
    },
}

#[derive(Subcommand)]
enum CertCmd {
    /// Issue tls/NAME.pem and tls/NAME.key for a client or admin identity (needs the CA key).
    Issue {
        /// Cluster directory (holds cluster.toml and tls/ca.key).
        #[arg(long)]
        cluster: PathBuf,
        /// client or admin.
        role: String,
        /// The identity's name: 1 to 64 of A-Z a-z 0-9 . _ -
        name: String,
        /// How long the certificate is valid: a number and d, h, m or s.
        #[arg(long, default_value = "365d")]
        expires: String,
        /// Client only: root on this client keeps its power (no root squash).
        #[arg(long)]
        trusted: bool,
        /// Client only: every user of this client acts as the anonymous user 65534.
        #[arg(long)]
        all_squash: bool,
        /// Client only: every change is refused with EROFS.
        #[arg(long)]
        read_only: bool,
    },
    /// Revoke identity NAME: sign a new deny list with the CA, write tls/revoked.list and
    /// push it to every node (they refuse NAME and close its connections at once).
    Revoke {
        /// Cluster directory (holds cluster.toml and tls/ca.key).
        #[arg(long)]
        cluster: PathBuf,
        name: String,
    },
}

#[derive(Args)]
struct MountArgs {
    /// Cluster directory (holds cluster.toml and tls/).
    #[arg(long)]
    cluster: PathBuf,
    /// The client identity to mount as (its tls/NAME.pem and tls/NAME.key).
    #[arg(long = "as", default_value = fsd::cluster::DEFAULT_CLIENT)]
    as_name: String,
    /// Where to mount.
    mountpoint: PathBuf,
    /// Let other users access the mount (needs root or user_allow_other in /etc/fuse.conf).
    #[arg(long)]
    allow_other: bool,
    /// Honour set-user-ID and set-group-ID bits (mounts are nosuid without it).
    #[arg(long)]
    suid: bool,
    /// Honour device nodes (mounts are nodev without it).
    #[arg(long)]
    dev: bool,
    /// Serve this client's Prometheus metrics (/metrics) and the cluster's status page (/)
    /// on ADDR, e.g. 127.0.0.1:9500. Unauthenticated: a loopback address unless
    /// --http-remote.
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
    /// Allow --http on a non-loopback address (anyone who reaches it reads the metrics).
    #[arg(long, requires = "http")]
    http_remote: bool,
    /// Kernel mount options, comma-separated (ro, rw, noatime, exec, noexec, sync, ...).
    #[arg(long, short = 'o', value_delimiter = ',')]
    options: Vec<String>,
}

#[derive(Args)]
struct NowArgs {
    /// Cluster directory (holds cluster.toml and tls/).
    #[arg(long)]
    cluster: PathBuf,
    /// Do it now, at full speed, and wait until it is done.
    #[arg(long)]
    now: bool,
}

#[derive(Args)]
struct RebuildArgs {
    /// Cluster directory (holds cluster.toml and tls/).
    #[arg(long)]
    cluster: PathBuf,
    /// Do it now and wait until it is done (at full speed unless --nice).
    #[arg(long)]
    now: bool,
    /// With --now: pace like the background rebuild (backs off while clients are busy).
    #[arg(long)]
    nice: bool,
    /// With --now: stripes rebuilt at the same time.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
}

#[derive(Args)]
struct TopArgs {
    /// Cluster directory: every node's `http` address in cluster.toml is scraped.
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// More endpoints to scrape (e.g. `shoal up --http` or `shoal mount --http`).
    #[arg(long, value_name = "ADDR")]
    endpoint: Vec<std::net::SocketAddr>,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Measure one interval, print it and exit (exit 1 when no endpoint answered).
    #[arg(long)]
    once: bool,
}

#[derive(Args)]
struct StatusArgs {
    /// Cluster directory (holds cluster.toml and tls/).
    #[arg(long)]
    cluster: PathBuf,
    /// Print one JSON document (fields documented in tools/src/status.rs, format version 1).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ClusterArg {
    /// Cluster directory (holds cluster.toml and tls/).
    #[arg(long)]
    cluster: PathBuf,
}

fn parse_ec(s: &str) -> anyhow::Result<ErasureConfig> {
    let (k, p) = s
        .split_once('+')
        .ok_or_else(|| anyhow::anyhow!("expected K+P such as 4+2, got {s:?}"))?;
    let data: u8 = k
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("K in {s:?} is not a number from 1 to 254"))?;
    let parity: u8 = p
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("P in {s:?} is not a number from 0 to 254"))?;
    if data == 0 || data as usize + parity as usize > 255 {
        anyhow::bail!("{s}: need K >= 1 and K+P <= 255");
    }
    Ok(ErasureConfig { data, parity })
}

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if mount_helper::invoked_as_helper(&args) {
        // mount(8) / fstab: no runtime here, the detached child runs the mount.
        let code = match mount_helper::run(&args) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e:#}");
                32 // mount(8)'s "mount failure"
            }
        };
        std::process::exit(code);
    }
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // SHOAL_LOG_FORMAT=json: one JSON object per line (for log collectors).
    if std::env::var("SHOAL_LOG_FORMAT").is_ok_and(|f| f == "json") {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    std::process::exit(code);
}

async fn run(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Init(a) => {
            let p = fsd::cluster::InitParams {
                name: a.name,
                storage: a.storage,
                managers: a.managers,
                erasure: a.ec,
                base_port: a.base_port,
            };
            let c = fsd::cluster::init(&a.cluster, &p)?;
            println!(
                "created cluster {:?} in {}: {} storage nodes, {} managers, erasure {}+{}",
                c.file.name,
                a.cluster.display(),
                c.storage_nodes().len(),
                c.manager_nodes().len(),
                c.file.erasure.data,
                c.file.erasure.parity
            );
            println!(
                "start each node with: shoal node run --cluster {} --node NAME",
                a.cluster.display()
            );
            Ok(0)
        }
        Cmd::Cert(CertCmd::Issue {
            cluster,
            role,
            name,
            expires,
            trusted,
            all_squash,
            read_only,
        }) => {
            let config = load(&cluster)?;
            let role = match proto::identity::Role::parse(&role) {
                Some(r) => r,
                None => bail!("role {role:?}: expected client or admin"),
            };
            let valid_for = fsd::certs::parse_duration(&expires)?;
            let export = proto::identity::ExportOptions {
                trusted,
                all_squash,
                read_only,
            };
            let id = fsd::certs::issue(&config, role, &name, valid_for, export)?;
            let (cp, kp) = config.cert_paths(&name);
            println!(
                "issued {id}, valid for {expires}: {} and {}",
                cp.display(),
                kp.display()
            );
            Ok(0)
        }
        Cmd::Cert(CertCmd::Revoke { cluster, name }) => {
            let config = load(&cluster)?;
            let (list, pushed) = fsd::certs::revoke(&config, &name).await?;
            println!(
                "deny list {} now revokes: {}",
                list.seq,
                list.names.join(", ")
            );
            let mut missed = 0;
            for p in &pushed {
                match &p.result {
                    Ok(seq) => println!("  {}: holds deny list {seq}", p.node),
                    Err(e) => {
                        missed += 1;
                        println!(
                            "  {}: NOT told ({e}); it loads tls/revoked.list when it starts",
                            p.node
                        )
                    }
                }
            }
            Ok(if missed == 0 { 0 } else { 2 })
        }
        Cmd::Node(NodeCmd::Run { cluster, node }) => {
            let config = Arc::new(load(&cluster)?);
            let signals = StopSignals::catch()?;
            let n = fsd::node::RunningNode::start(config, &node).await?;
            // Under systemd (Type=notify): ready once the node serves.
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            signals.wait().await;
            tracing::info!("signal received, stopping");
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
            n.stop().await;
            Ok(0)
        }
        Cmd::Node(NodeCmd::Add {
            cluster,
            name,
            address,
            capacity,
        }) => {
            let (before, config) =
                fsd::cluster::plan_storage_node(&cluster, &name, address, capacity)?;
            let shown = format!(
                "storage node {name} at {address} (cluster epoch {}, {} storage nodes)",
                config.file.epoch,
                config.storage_nodes().len()
            );
            let give = format!("give {name} cluster.toml, tls/ca.pem, tls/{name}.pem and tls/{name}.key and run `shoal node run --cluster DIR --node {name}`");
            match fsd::cluster::propose_to_group(&before, &config).await {
                Ok(member) => {
                    fsd::cluster::write_added_node(&config, &name)?;
                    println!("added {shown}");
                    println!("the running cluster committed epoch {} (through {member}): running managers and mounts follow it within seconds, no restart", config.file.epoch);
                    println!("next: {give}; new stripes use it once it answers, existing data stays where it is; copy the new cluster.toml to the other machines for their next start");
                    Ok(0)
                }
                Err(fsd::cluster::ProposeError::Unreachable(why)) => {
                    fsd::cluster::write_added_node(&config, &name)?;
                    println!("added {shown}");
                    eprintln!("warning: no running config group member answered ({why}); processes use the new cluster.toml when they start");
                    println!("next: {give}, and start (or restart) the other nodes and mounts with the new cluster.toml");
                    Ok(0)
                }
                Err(fsd::cluster::ProposeError::Refused(why)) => {
                    bail!("the running cluster refused the new config, cluster.toml is unchanged: {why}")
                }
            }
        }
        Cmd::Manager(ManagerCmd::Takeover {
            cluster,
            name,
            by,
            address,
        }) => {
            let (before, config) = fsd::cluster::plan_takeover(&cluster, &name, &by, address)?;
            let at = config
                .node_by_name(&name)
                .map(|n| n.group_address.to_string())
                .unwrap_or_default();
            match fsd::cluster::propose_to_group(&before, &config).await {
                Ok(member) => {
                    fsd::cluster::write_config(&config)?;
                    println!(
                        "{by} serves {name}'s slots at {at} from epoch {} (committed through {member}); mounts follow without remounting",
                        config.file.epoch
                    );
                    println!("copy the new cluster.toml to the other machines for their next start; {name}'s machine must not be started with it as a manager");
                    Ok(0)
                }
                Err(fsd::cluster::ProposeError::Unreachable(why)) => bail!(
                    "no config group member answered ({why}); a takeover needs the running cluster, cluster.toml is unchanged"
                ),
                Err(fsd::cluster::ProposeError::Refused(why)) => {
                    bail!("the running cluster refused the takeover, cluster.toml is unchanged: {why}")
                }
            }
        }
        Cmd::Manager(ManagerCmd::Move { cluster, name, to }) => {
            let config = load(&cluster)?;
            let started = std::time::Instant::now();
            match fsd::cluster::move_group(&config, &name, &to).await {
                Ok(committed) => {
                    fsd::cluster::write_config(&committed)?;
                    let at = committed
                        .node_by_name(&name)
                        .map(|n| n.group_address.to_string())
                        .unwrap_or_default();
                    println!(
                        "{to} serves {name}'s slots at {at} from epoch {} (handed over in {:.1} s); mounts follow without remounting",
                        committed.file.epoch,
                        started.elapsed().as_secs_f64()
                    );
                    Ok(0)
                }
                Err(fsd::cluster::ProposeError::Unreachable(why)) => bail!(
                    "the node serving {name}'s group did not answer ({why}); `shoal status` shows where it is served now (if that node is down, use `shoal manager takeover`)"
                ),
                Err(fsd::cluster::ProposeError::Refused(why)) => {
                    bail!("{name}'s group was not moved: {why}")
                }
            }
        }
        Cmd::Node(NodeCmd::Drain { cluster, name }) => {
            let config = load(&cluster)?;
            drain::run(&config, &name).await
        }
        Cmd::Mount(a) => {
            let config = Arc::new(load(&a.cluster)?);
            check_mountpoint(&a.mountpoint)?;
            let mut extra = a.options.clone();
            if a.suid {
                extra.push("suid".to_string());
            }
            if a.dev {
                extra.push("dev".to_string());
            }
            let opts = fuse_client::MountOptions {
                allow_other: a.allow_other,
                extra,
            };
            if let Some(addr) = a.http {
                if !addr.ip().is_loopback() && !a.http_remote {
                    bail!("--http {addr} is not a loopback address: the endpoint is unauthenticated; use 127.0.0.1:PORT, or add --http-remote to serve it there anyway");
                }
            }
            let signals = StopSignals::catch()?;
            let (m, http) =
                fsd::cluster::mount_serving(config, &a.as_name, &a.mountpoint, &opts, a.http)
                    .await?;
            eprintln!("mounted at {}; Ctrl-C to unmount", a.mountpoint.display());
            if let Some(h) = &http {
                eprintln!(
                    "metrics at http://{0}/metrics, status page at http://{0}/",
                    h.addr
                );
            }
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            // A signal, or the file system unmounted from outside (`umount MOUNTPOINT`).
            let ended = async {
                while !m.session_ended() {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            };
            tokio::select! {
                _ = signals.wait() => {}
                _ = ended => tracing::info!("unmounted from outside; writing what is left and exiting"),
            }
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
            drop(http);
            m.unmount().await.context("unmount")?;
            Ok(0)
        }
        Cmd::Up(a) => {
            check_mountpoint(&a.mountpoint)?;
            let signals = StopSignals::catch()?;
            let state = match a.state {
                Some(s) => s,
                None => default_state_dir()?,
            };
            let mut points = vec![a.mountpoint.clone()];
            let mut created = Vec::new();
            for i in 2..=a.clients {
                let mut name = a.mountpoint.clone().into_os_string();
                name.push(format!("-{i}"));
                let p = PathBuf::from(name);
                if !p.exists() {
                    std::fs::create_dir_all(&p)
                        .with_context(|| format!("cannot create mountpoint {}", p.display()))?;
                    created.push(p.clone());
                }
                check_mountpoint(&p)?;
                points.push(p);
            }
            let cluster = fsd::cluster::LocalCluster::start_or_create(&state).await?;
            let opts = fuse_client::MountOptions {
                allow_other: is_root(),
                ..Default::default()
            };
            // The HTTP endpoint, then the mounts (so that it serves by the time the last
            // mount appears); on any failure one path undoes what was done.
            let mut mounts = Vec::new();
            let started: Result<_> = async {
                let http = match a.http {
                    Some(addr) => Some(cluster.serve_http(addr).await?),
                    None => None,
                };
                for p in &points {
                    mounts.push(fsd::cluster::mount(cluster.config.clone(), p, &opts).await?);
                }
                Ok(http)
            }
            .await;
            let http = match started {
                Ok(h) => h,
                Err(e) => {
                    for m in mounts {
                        let _ = m.unmount().await;
                    }
                    cluster.stop().await;
                    remove_created(&created);
                    return Err(e);
                }
            };
            let shown: Vec<String> = points.iter().map(|p| p.display().to_string()).collect();
            eprintln!(
                "shoal is up: mounted at {}, state in {}; Ctrl-C to stop",
                shown.join(", "),
                state.display()
            );
            if let Some(h) = &http {
                eprintln!(
                    "metrics at http://{0}/metrics, status page at http://{0}/",
                    h.addr
                );
            }
            signals.wait().await;
            tracing::info!("stopping");
            let mut unmounted = Ok(());
            for m in mounts {
                if let Err(e) = m.unmount().await {
                    unmounted = Err(e);
                }
            }
            drop(http);
            cluster.stop().await;
            remove_created(&created);
            unmounted.context("unmount")?;
            Ok(0)
        }
        Cmd::Bench(BenchArgs {
            kind: Some(BenchKind::Coop(c)),
            ..
        }) => {
            let opts = coop_bench::Options {
                mounts: c.mounts,
                working_set: c.working_set_mb.map(|m| m << 20),
                pattern: c.pattern,
                passes: c.passes,
                latency_samples: c.latency_samples,
            };
            let report = tokio::task::spawn_blocking(move || coop_bench::run(&opts)).await??;
            println!("{}", coop_bench::report::table(&report));
            if let Some(j) = c.json {
                let text = serde_json::to_string_pretty(&report)?;
                std::fs::write(&j, text + "\n")
                    .with_context(|| format!("cannot write {}", j.display()))?;
            }
            Ok(0)
        }
        Cmd::Bench(a) => {
            let Some(dir) = a.dir else {
                bail!("give the directory to measure: shoal bench DIR");
            };
            let plan = if a.quick {
                bench::Plan::quick()
            } else {
                bench::Plan::full()
            };
            let mut targets = vec![dir];
            targets.extend(a.baseline.iter().cloned());
            let labels: Vec<String> = targets
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    a.labels.get(i).cloned().unwrap_or_else(|| {
                        t.file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_else(|| t.display().to_string())
                    })
                })
                .collect();
            let results = tokio::task::spawn_blocking(move || {
                targets
                    .iter()
                    .zip(labels.iter())
                    .map(|(t, l)| bench::run_target(l, t, &plan))
                    .collect::<Result<Vec<_>>>()
            })
            .await??;
            println!("{}", bench::table(&results));
            if let Some(j) = a.json {
                std::fs::write(&j, bench::json(&results))
                    .with_context(|| format!("cannot write {}", j.display()))?;
            }
            Ok(0)
        }
        Cmd::Clean(a) => clean::run(Arc::new(load(&a.cluster)?), a.now).await,
        Cmd::Df(a) => df::run(Arc::new(load(&a.cluster)?)).await,
        Cmd::Rebuild(a) => {
            let config = load(&a.cluster)?;
            rebuild::run(&config, a.now, a.nice, a.parallel).await
        }
        Cmd::Scrub(a) => {
            let config = load(&a.cluster)?;
            scrub::run(&config, a.now).await
        }
        Cmd::Status(a) => status::run(&a.cluster, a.json).await,
        Cmd::Top(a) => {
            let mut endpoints = Vec::new();
            if let Some(dir) = &a.cluster {
                endpoints.extend(load(dir)?.nodes.iter().filter_map(|n| n.http));
            }
            endpoints.extend(a.endpoint.iter().copied());
            endpoints.sort();
            endpoints.dedup();
            if !(0.1..=3600.0).contains(&a.interval) {
                bail!("--interval {}: give 0.1 to 3600 seconds", a.interval);
            }
            top::run(
                endpoints,
                std::time::Duration::from_secs_f64(a.interval),
                a.once,
            )
            .await
        }
    }
}

/// Removes the extra mountpoints `up` created (empty directories only).
fn remove_created(dirs: &[PathBuf]) {
    for d in dirs {
        let _ = std::fs::remove_dir(d);
    }
}

fn load(dir: &Path) -> Result<ClusterConfig> {
    Ok(ClusterConfig::load(dir)?)
}

fn is_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || std::fs::metadata("/proc/self")
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.uid() == 0
            })
            .unwrap_or(false)
}

fn default_state_dir() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME") {
        return Ok(PathBuf::from(x).join("shoal"));
    }
    let home = std::env::var_os("HOME")
        .context("neither XDG_STATE_HOME nor HOME is set: pass --state DIR")?;
    Ok(PathBuf::from(home).join(".local/state/shoal"))
}

fn check_mountpoint(p: &Path) -> Result<()> {
    match std::fs::metadata(p) {
        Err(e) => bail!(
            "mountpoint {} is not usable ({e}): create it with `mkdir -p {}`",
            p.display(),
            p.display()
        ),
        Ok(m) if !m.is_dir() => bail!("mountpoint {} is not a directory", p.display()),
        Ok(_) => {}
    }
    // (A stale mount answers ENOTCONN here: that is the mount code's to report.)
    if let Ok(mut entries) = std::fs::read_dir(p) {
        if entries.next().is_some() {
            bail!(
                "mountpoint {} is not empty: mounting there would hide its files; use an empty directory (or move them away first)",
                p.display()
            );
        }
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: install fuse3 (apt-get install fuse3) and load the fuse module (modprobe fuse)");
    }
    if !is_root() && !fusermount_on_path() {
        bail!("fusermount3 is not on PATH: mounting as a non-root user needs it; install fuse3 (apt-get install fuse3) or mount as root");
    }
    Ok(())
}

/// Whether `fusermount3` (or `fusermount`) is on PATH (or FUSERMOUNT_PATH is set), as a
/// non-root mount needs.
fn fusermount_on_path() -> bool {
    if std::env::var_os("FUSERMOUNT_PATH").is_some() {
        return true;
    }
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|d| d.join("fusermount3").is_file() || d.join("fusermount").is_file())
    })
}

/// SIGTERM and SIGINT, caught from the moment this is made: make it before announcing
/// readiness, so that a stop request right after it is a clean stop, not a kill.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn catch() -> Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// "N s/min/h/d ago" for a Unix time.
pub(crate) fn ago(unix: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let d = now.saturating_sub(unix);
    match d {
        0..120 => format!("{d} s ago"),
        120..7200 => format!("{} min ago", d / 60),
        7200..172800 => format!("{} h ago", d / 3600),
        _ => format!("{} d ago", d / 86400),
    }
}

pub(crate) fn human(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", U[i])
}
