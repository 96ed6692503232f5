//! Real-binary test harness of Shoal: clusters of `shoal` processes on loopback and real
//! FUSE mounts, with fault knobs (kill -9, SIGTERM, restart, corrupt fragments on disk).
//! It owns test processes, temp dirs and mounts; it must not link or drive the role crates
//! in-process (those have their own unit tests) and must never kill a process it did not
//! start.
//!
//! # Running
//!
//! The tests run the `shoal` binary, which `cargo test` does not build for another crate,
//! so build it first in the same profile:
//!
//! ```text
//! cargo build --release -p tools && cargo test --release --workspace
//! cargo build --release -p tools && cargo test --release -p integration-tests --test posix
//! ```
//!
//! The binary is `$SHOAL_BIN` if set, else the most recently built of
//! `target/<profile of the test>/shoal`, `target/release/shoal` and `target/debug/shoal`
//! (under `$CARGO_TARGET_DIR` when set); see [`shoal_binary`]. The tests need root (FUSE
//! mounts, `setuid` in permission tests) and `/dev/fuse` + `fusermount3`.
//!
//! Knobs: `SHOAL_LOG` (log filter of the spawned processes, default `info`),
//! `SHOAL_IT_KEEP=1` (keep each test's temp dir), `SHOAL_IT_TIMEOUT_SECS` (per-test
//! watchdog, default 300), `SHOAL_MODEL_SEED` / `SHOAL_MODEL_OPS` (model test),
//! `SHOAL_DURABILITY_SEED` / `SHOAL_DURABILITY_SECS` (durability tests; the soak is
//! `bench/soak-durability.sh`).
//!
//! Areas (one test binary each): `posix`, `faults`, `cli`, `model`, `consistency`,
//! `durability` (worker processes: the `shoal-workload` binary of this crate). Tests
//! that expose a reported product bug are `#[ignore = "product bug: ..."]`; run them with
//! `cargo test --release -p integration-tests -- --include-ignored`.
//!
//! Tests in one test binary run one at a time (a process-wide lock taken by [`TestEnv`]),
//! so that two clusters never compete for the 2 cores; areas are separate binaries.

pub mod binary;
pub mod cluster;
pub mod env;
pub mod faults;
pub mod linearizability;
pub mod model;
pub mod mount;
pub mod partition;
pub mod pattern;
pub mod process;
pub mod scrape;
pub mod sys;
pub mod wait;
pub mod workload;

pub use binary::shoal_binary;
pub use cluster::TestCluster;
pub use env::TestEnv;
pub use mount::{is_mounted, MountGuard};
pub use process::{CmdOutput, ProcessGuard};
pub use wait::{wait_for, wait_until, with_timeout};

/// Sets up `tracing` output for a test (captured by the test harness). Idempotent.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .with_ansi(false)
        .with_target(false)
        .try_init();
}
