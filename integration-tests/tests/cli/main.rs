//! The `shoal` command line as a user meets it: init, argument errors, status, certificate
//! mismatch, `shoal up`, ports in use.

mod t10_init_and_args;
mod t20_status;
mod t21_status_json;
mod t22_status_refused;
mod t30_certificate_mismatch;
mod t40_up;
mod t41_up_metrics;
mod t42_mount_http;
mod t43_top;
mod t45_mount_helper;
mod t50_port_in_use;
mod t60_systemd;
mod t70_errors_say_what_to_do;
mod t80_coop_cache;
mod t81_bench_coop;

use anyhow::{ensure, Result};
use integration_tests::CmdOutput;

/// A failing command: non-zero exit, exactly one line starting with "error", no panic, and
/// that line mentions every one of `mentions` (case-insensitive).
pub fn expect_clear_error(out: &CmdOutput, what: &str, mentions: &[&str]) -> Result<()> {
    ensure!(
        !out.success() && out.code.is_some(),
        "{what}: expected a non-zero exit, got {out}"
    );
    let text = out.text();
    ensure!(!text.contains("panicked"), "{what}: panicked\n{out}");
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().to_lowercase().starts_with("error"))
        .collect();
    ensure!(
        errors.len() == 1,
        "{what}: expected one error line, got {}:\n{out}",
        errors.len()
    );
    let line = errors[0].to_lowercase();
    for m in mentions {
        ensure!(
            line.contains(&m.to_lowercase()),
            "{what}: the error line does not mention {m:?}: {}",
            errors[0]
        );
    }
    Ok(())
}
