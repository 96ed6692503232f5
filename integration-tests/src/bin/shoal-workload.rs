//! A worker process of the `durability` tests: runs one seeded random workload on its own
//! directory (`integration_tests::workload`) and saves its model as a manifest, or checks
//! a directory against a saved manifest. Exit 0 when every check passed, 1 with the
//! differences on stderr otherwise.
//!
//! ```text
//! shoal-workload run --dir D --worker W --seed S --ops N --secs T --checkpoints K
//!                    [--manifest M] [--share DIR --root MOUNT --name NAME [--peer NAME]]
//! shoal-workload verify --dir D --manifest M
//! ```

use anyhow::{bail, Context, Result};
use integration_tests::workload::{check_tree, Config, Model, Share, Worker};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn main() {
    match real_main() {
        Ok(()) => println!("WORKER OK"),
        Err(e) => {
            eprintln!("WORKER FAILED: {e:#}");
            std::process::exit(1);
        }
    }
}

fn real_main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().context("missing mode (run | verify)")?;
    let mut opts = BTreeMap::new();
    while let Some(k) = args.next() {
        let Some(k) = k.strip_prefix("--") else {
            bail!("unexpected argument {k:?}")
        };
        let v = args
            .next()
            .with_context(|| format!("--{k} needs a value"))?;
        opts.insert(k.to_string(), v);
    }
    let get = |k: &str| opts.get(k).with_context(|| format!("missing --{k}"));
    let num = |k: &str| -> Result<u64> {
        get(k)?
            .parse()
            .with_context(|| format!("--{k} must be a number"))
    };
    let dir = PathBuf::from(get("dir")?);
    match mode.as_str() {
        "run" => {
            let cfg = Config {
                dir: dir.clone(),
                worker: u16::try_from(num("worker")?)?,
                seed: num("seed")?,
                max_ops: num("ops")?,
                duration: Duration::from_secs(num("secs")?),
                checkpoints: u32::try_from(num("checkpoints")?)?,
            };
            let share = match opts.get("share") {
                Some(s) => Some(Share {
                    dir: PathBuf::from(s),
                    root: PathBuf::from(get("root")?),
                    name: get("name")?.clone(),
                    peer: opts.get("peer").cloned(),
                }),
                None => None,
            };
            println!("worker {cfg:?}");
            let start = Instant::now();
            let mut w = Worker::new(cfg, share)?;
            let r = w.run(|line| println!("[{:>8.3?}] {line}", start.elapsed()));
            if let Some(m) = opts.get("manifest") {
                w.model()
                    .save(&PathBuf::from(m))
                    .context("save the manifest")?;
            }
            r.map(drop)
        }
        "verify" => {
            let model = Model::load(&PathBuf::from(get("manifest")?))?;
            check_tree(&dir, &model, &HashMap::new())?;
            println!(
                "{}: {} files match the manifest",
                dir.display(),
                model.files.len()
            );
            Ok(())
        }
        other => bail!("unknown mode {other:?} (run | verify)"),
    }
}
