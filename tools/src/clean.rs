//! `shoal clean --cluster DIR [--now]`: shows, per data log, what the reclaimer would give
//! back (segments no manager references and no writer can still commit into), and with
//! `--now` runs a reclaim pass at once with progress. Moving live data out of partly used
//! segments (the copying cleaner) is not built yet; the command says so.

use anyhow::Result;
use manager::reclaim::{LogSurvey, Reclaimer};
use proto::config::ClusterConfig;
use std::io::Write;
use std::sync::Arc;

pub async fn run(config: Arc<ClusterConfig>, now: bool) -> Result<i32> {
    let transport = fsd::cluster::admin_transport(&config)?;
    let r = Reclaimer::new(config, transport);
    let (logs, skipped) = r.survey().await;
    println!(
        "{:<22} {:>9} {:>12} {:>12} {:>16} {:>16}",
        "LOG", "SEGMENTS", "BYTES", "LIVE", "RECLAIMABLE", "DEAD, PINNED"
    );
    let mut total = LogSurvey::default();
    for l in &logs {
        let name = l.log.map(|l| l.to_string()).unwrap_or_default();
        println!(
            "{:<22} {:>9} {:>12} {:>12} {:>16} {:>16}",
            name,
            l.segments,
            crate::human(l.bytes),
            crate::human(l.live),
            format!("{} ({})", crate::human(l.reclaimable.1), l.reclaimable.0),
            crate::human(l.dead_pinned)
        );
        total.segments += l.segments;
        total.bytes += l.bytes;
        total.live += l.live;
        total.reclaimable.0 += l.reclaimable.0;
        total.reclaimable.1 += l.reclaimable.1;
        total.dead_pinned += l.dead_pinned;
    }
    println!(
        "{:<22} {:>9} {:>12} {:>12} {:>16} {:>16}",
        "total",
        total.segments,
        crate::human(total.bytes),
        crate::human(total.live),
        format!(
            "{} ({})",
            crate::human(total.reclaimable.1),
            total.reclaimable.0
        ),
        crate::human(total.dead_pinned)
    );
    if skipped > 0 {
        println!("{skipped} log(s) could not be surveyed: a manager or storage server did not answer (see `shoal status`)");
    }
    println!(
        "(bytes are segment bytes before striping; on disk they take (k+m)/k times as much. \
         Copying live data out of partly used segments is not built yet: only segments \
         with no live data are reclaimed.)"
    );
    if !now {
        println!("run with --now to reclaim at once (the manager with the lowest node id also does it every few seconds)");
        return Ok(0);
    }
    let report = r
        .pass_with(|done, total| {
            print!("\rreclaiming: log {done}/{total}");
            let _ = std::io::stdout().flush();
        })
        .await;
    println!();
    println!(
        "reclaimed {} segment(s), {} over {} log(s)",
        report.segments_deleted,
        crate::human(report.bytes_deleted),
        report.logs
    );
    if report.skipped > 0 {
        println!(
            "{} log(s) skipped: a manager or storage server did not answer",
            report.skipped
        );
        return Ok(1);
    }
    Ok(0)
}
