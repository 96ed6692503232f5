//! `shoal clean --cluster DIR [--now]`: shows, per data log, what the reclaimer would give
//! back (segments no manager references and no writer can still commit into), and with
//! `--now` runs the copying cleaner (live data out of partly used segments, unpaced) and
//! then a reclaim pass, with progress.

use crate::progress::{Progress, Unit};
use anyhow::Result;
use manager::cleaner::policy::Policy;
use manager::cleaner::worker::{CleanReport, Cleaner};
use manager::reclaim::{LogSurvey, Reclaimer};
use proto::config::ClusterConfig;
use std::sync::Arc;

pub async fn run(config: Arc<ClusterConfig>, now: bool) -> Result<i32> {
    let transport = fsd::cluster::admin_transport(&config)?;
    let r = Reclaimer::new(config.clone(), transport.clone());
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
         Segments with no live data are reclaimed as they are; the cleaner copies the live \
         data out of segments at most {:.0}% live, and the manager with the lowest node id \
         does so in the background while the fullest storage server has less than {}% free.)",
        Policy::default().max_utilisation * 100.0,
        config.file.manager.clean_below_free_pct
    );
    if !now {
        println!("run with --now to reclaim at once (the manager with the lowest node id also does it every few seconds)");
        return Ok(0);
    }
    let cleaner = Cleaner::new(config, transport).with_policy(Policy {
        // One pass cleans every segment that qualifies, however much is live in them.
        batch_live_bytes: u64::MAX,
        ..Policy::default()
    });
    let started = std::time::Instant::now();
    let bar = Progress::new("cleaning", 0, Unit::Items("segments"));
    let show = |c: &CleanReport| {
        bar.set_total(c.chosen as u64);
        bar.set(
            c.cleaned as u64,
            format!(
                "{} copied, {} remapped, {} skipped",
                crate::human(c.copied),
                crate::human(c.moved),
                crate::human(c.skipped)
            ),
        );
    };
    let c = cleaner.pass(false, show).await;
    bar.finish();
    println!(
        "cleaned {} of {} segment(s) ({} before striping): copied {} live into {} new segment(s) of {} in {:.1} s; {} remapped, {} left alone (changed meanwhile){}",
        c.cleaned,
        c.chosen,
        crate::human(c.chosen_bytes),
        crate::human(c.copied),
        c.written_segments,
        crate::human(c.written_bytes),
        started.elapsed().as_secs_f64(),
        crate::human(c.moved),
        crate::human(c.skipped),
        if c.failed > 0 {
            format!("; {} segment(s) failed and stay as they were (see the log)", c.failed)
        } else {
            String::new()
        }
    );
    println!(
        "clean-stats: chosen={} chosen_bytes={} cleaned={} copied={} written_segments={} written_bytes={} moved={} skipped={} failed={} secs={:.3}",
        c.chosen,
        c.chosen_bytes,
        c.cleaned,
        c.copied,
        c.written_segments,
        c.written_bytes,
        c.moved,
        c.skipped,
        c.failed,
        started.elapsed().as_secs_f64()
    );
    let bar = Progress::new("reclaiming", 0, Unit::Items("logs"));
    let report = r
        .pass_with(|done, total| {
            bar.set_total(total as u64);
            bar.set(done as u64, "");
        })
        .await;
    bar.finish();
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
    if c.failed > 0 {
        return Ok(1);
    }
    Ok(0)
}
