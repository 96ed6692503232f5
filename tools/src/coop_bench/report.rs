//! The figures of `shoal bench coop` from what was measured: `shoal.stats` deltas per
//! phase, bytes and seconds, and latency samples classified by where they were served.
//! Owns the JSON document (format version 1) and the human table. Pure: no I/O, no clock.

use serde::{Deserialize, Serialize};

/// Issue 12's targets.
pub const TARGET_PEER_HIT_FRACTION: f64 = 0.5;
pub const TARGET_STORAGE_READ_RATIO: f64 = 0.5;
pub const TARGET_PEER_VS_STORAGE_LATENCY: f64 = 1.0 / 3.0;

/// The counters of one mount's `shoal.stats` this bench uses (absent keys read as 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    pub reads_local: u64,
    pub reads_peer: u64,
    pub reads_storage: u64,
    pub peer_failures: u64,
    pub bytes_served_to_peers: u64,
    pub forwards_accepted: u64,
    pub forwards_dropped: u64,
}

impl Counts {
    /// What happened between `before` and `self` (counters only grow; a restarted
    /// client's would read as 0, not wrap).
    pub fn since(&self, before: &Counts) -> Counts {
        Counts {
            reads_local: self.reads_local.saturating_sub(before.reads_local),
            reads_peer: self.reads_peer.saturating_sub(before.reads_peer),
            reads_storage: self.reads_storage.saturating_sub(before.reads_storage),
            peer_failures: self.peer_failures.saturating_sub(before.peer_failures),
            bytes_served_to_peers: self
                .bytes_served_to_peers
                .saturating_sub(before.bytes_served_to_peers),
            forwards_accepted: self
                .forwards_accepted
                .saturating_sub(before.forwards_accepted),
            forwards_dropped: self
                .forwards_dropped
                .saturating_sub(before.forwards_dropped),
        }
    }

    pub fn plus(&self, o: &Counts) -> Counts {
        Counts {
            reads_local: self.reads_local + o.reads_local,
            reads_peer: self.reads_peer + o.reads_peer,
            reads_storage: self.reads_storage + o.reads_storage,
            peer_failures: self.peer_failures + o.peer_failures,
            bytes_served_to_peers: self.bytes_served_to_peers + o.bytes_served_to_peers,
            forwards_accepted: self.forwards_accepted + o.forwards_accepted,
            forwards_dropped: self.forwards_dropped + o.forwards_dropped,
        }
    }
}

/// One phase (cooperation on or off): every mount's counter delta, and the bytes all
/// mounts read (and checked) in `seconds` of wall time.
#[derive(Clone, Debug, Default)]
pub struct Phase {
    pub per_mount: Vec<Counts>,
    pub bytes: u64,
    pub seconds: f64,
}

/// Where one latency sample was served from, by its mount's counter delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    Peer,
    Storage,
    /// Locally, or partly by each: not a clean sample.
    Other,
}

pub fn classify(d: &Counts) -> Served {
    match (d.reads_peer, d.reads_storage) {
        (p, 0) if p > 0 => Served::Peer,
        (0, s) if s > 0 => Served::Storage,
        _ => Served::Other,
    }
}

/// Latency samples in microseconds: 64 KiB reads another mount held, with peers on
/// (`peer`), the same reads cold with peers off (`storage`), and once more with the
/// machine's page cache dropped as well (`storage_cold`: the storage servers read their
/// disks, when they run on this machine); `other` counts samples served otherwise than
/// intended (left out).
#[derive(Clone, Debug, Default)]
pub struct Latency {
    pub peer_us: Vec<u64>,
    pub storage_us: Vec<u64>,
    pub storage_cold_us: Vec<u64>,
    /// The page cache could be dropped (root), so `storage_cold_us` was measured.
    pub page_cache_dropped: bool,
    pub other: u64,
}

/// What the run was.
#[derive(Clone, Debug, Serialize)]
pub struct Setup {
    pub mounts: Vec<String>,
    pub pattern: &'static str,
    pub passes: u32,
    pub working_set_bytes: u64,
    /// The first mount's block cache size, when it tells (`shoal.stats` `cache_bytes`).
    pub cache_bytes: Option<u64>,
    pub read_bytes: u64,
}

/// One phase in the JSON.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseFigures {
    #[serde(flatten)]
    pub counts: Counts,
    /// Block reads not served from the reader's own cache (peer + storage).
    pub local_misses: u64,
    pub bytes_read: u64,
    pub seconds: f64,
    pub mib_per_s: Option<f64>,
    pub per_mount: Vec<Counts>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LatencyFigures {
    pub peer_median_us: Option<u64>,
    pub storage_median_us: Option<u64>,
    pub storage_cold_median_us: Option<u64>,
    pub peer_samples: usize,
    pub storage_samples: usize,
    pub storage_cold_samples: usize,
    /// Whether the third set of samples ran (it needs root to drop the page cache).
    pub page_cache_dropped: bool,
    pub other_samples: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetsMet {
    pub peer_hit_fraction: Option<bool>,
    pub storage_read_ratio: Option<bool>,
    pub peer_vs_storage_latency: Option<bool>,
    pub peer_vs_cold_storage_latency: Option<bool>,
}

/// The JSON document. Ratios are `null` when their denominator is 0.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub version: u32,
    #[serde(flatten)]
    pub setup: Setup,
    /// Peer-served share of local misses, cooperation on.
    pub peer_hit_fraction: Option<f64>,
    /// Storage-server block reads, cooperation on / off.
    pub storage_read_ratio: Option<f64>,
    /// Median 64 KiB read latency served by a peer / by the storage servers.
    pub peer_vs_storage_latency: Option<f64>,
    /// The same, the storage servers' page cache dropped (`null` when it could not be).
    pub peer_vs_cold_storage_latency: Option<f64>,
    /// Aggregate read throughput (MiB/s), cooperation on / off.
    pub throughput_ratio: Option<f64>,
    /// Bytes read and found equal to what was written (phases and latency samples).
    pub verified_bytes: u64,
    pub on: PhaseFigures,
    pub off: PhaseFigures,
    pub latency: LatencyFigures,
    pub targets_met: TargetsMet,
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

/// The median of `v` (the lower one of an even count), `None` when empty.
pub fn median(v: &[u64]) -> Option<u64> {
    let mut s = v.to_vec();
    s.sort_unstable();
    s.get(s.len().saturating_sub(1) / 2).copied()
}

fn phase(p: &Phase) -> PhaseFigures {
    let counts = p.per_mount.iter().fold(Counts::default(), |a, c| a.plus(c));
    PhaseFigures {
        counts,
        local_misses: counts.reads_peer + counts.reads_storage,
        bytes_read: p.bytes,
        seconds: p.seconds,
        mib_per_s: ratio(p.bytes as f64 / (1u64 << 20) as f64, p.seconds),
        per_mount: p.per_mount.clone(),
    }
}

pub fn report(setup: Setup, on: &Phase, off: &Phase, lat: &Latency, verified: u64) -> Report {
    let (on, off) = (phase(on), phase(off));
    let peer_hit_fraction = ratio(on.counts.reads_peer as f64, on.local_misses as f64);
    let storage_read_ratio = ratio(
        on.counts.reads_storage as f64,
        off.counts.reads_storage as f64,
    );
    let (pm, sm) = (median(&lat.peer_us), median(&lat.storage_us));
    let cm = median(&lat.storage_cold_us);
    let of = |p: Option<u64>, s: Option<u64>| match (p, s) {
        (Some(p), Some(s)) => ratio(p as f64, s as f64),
        _ => None,
    };
    let peer_vs_storage_latency = of(pm, sm);
    let peer_vs_cold_storage_latency = of(pm, cm);
    let throughput_ratio = match (on.mib_per_s, off.mib_per_s) {
        (Some(a), Some(b)) => ratio(a, b),
        _ => None,
    };
    Report {
        version: 1,
        setup,
        peer_hit_fraction,
        storage_read_ratio,
        peer_vs_storage_latency,
        peer_vs_cold_storage_latency,
        throughput_ratio,
        verified_bytes: verified,
        latency: LatencyFigures {
            peer_median_us: pm,
            storage_median_us: sm,
            storage_cold_median_us: cm,
            peer_samples: lat.peer_us.len(),
            storage_samples: lat.storage_us.len(),
            storage_cold_samples: lat.storage_cold_us.len(),
            page_cache_dropped: lat.page_cache_dropped,
            other_samples: lat.other,
        },
        targets_met: TargetsMet {
            peer_hit_fraction: peer_hit_fraction.map(|f| f >= TARGET_PEER_HIT_FRACTION),
            storage_read_ratio: storage_read_ratio.map(|r| r <= TARGET_STORAGE_READ_RATIO),
            peer_vs_storage_latency: peer_vs_storage_latency
                .map(|r| r <= TARGET_PEER_VS_STORAGE_LATENCY),
            peer_vs_cold_storage_latency: peer_vs_cold_storage_latency
                .map(|r| r <= TARGET_PEER_VS_STORAGE_LATENCY),
        },
        on,
        off,
    }
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".to_string())
}

fn met(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    }
}

/// The human summary: a table of both phases and the three ratios with their targets.
pub fn table(r: &Report) -> String {
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let mut s = format!(
        "cooperative caching: {} mounts, working set {:.0} MiB{}, {}, {} pass(es)\n",
        r.setup.mounts.len(),
        mib(r.setup.working_set_bytes),
        match r.setup.cache_bytes {
            Some(c) if c > 0 => format!(
                " ({:.1} x the {:.0} MiB client cache)",
                r.setup.working_set_bytes as f64 / c as f64,
                mib(c)
            ),
            _ => String::new(),
        },
        r.setup.pattern,
        r.setup.passes
    );
    s.push_str("| figure                          |    coop on |   coop off |\n");
    s.push_str("|---------------------------------|-----------:|-----------:|\n");
    let row = |s: &mut String, name: &str, a: String, b: String| {
        s.push_str(&format!("| {name:<31} | {a:>10} | {b:>10} |\n"));
    };
    let c = |f: &PhaseFigures| f.counts;
    row(
        &mut s,
        "block reads: local cache",
        c(&r.on).reads_local.to_string(),
        c(&r.off).reads_local.to_string(),
    );
    row(
        &mut s,
        "block reads: peer",
        c(&r.on).reads_peer.to_string(),
        c(&r.off).reads_peer.to_string(),
    );
    row(
        &mut s,
        "block reads: storage servers",
        c(&r.on).reads_storage.to_string(),
        c(&r.off).reads_storage.to_string(),
    );
    row(
        &mut s,
        "peer reads that fell back",
        c(&r.on).peer_failures.to_string(),
        c(&r.off).peer_failures.to_string(),
    );
    row(
        &mut s,
        "read throughput (MiB/s)",
        num(r.on.mib_per_s, 1),
        num(r.off.mib_per_s, 1),
    );
    let ms = |us: Option<u64>| num(us.map(|u| u as f64 / 1000.0), 2);
    row(
        &mut s,
        "64 KiB miss latency, median ms",
        format!("{} peer", ms(r.latency.peer_median_us)),
        format!("{} stor.", ms(r.latency.storage_median_us)),
    );
    s.push_str(&format!(
        "peer_hit_fraction        {:>6}  (target >= {:.2}: {})\n",
        num(r.peer_hit_fraction, 3),
        TARGET_PEER_HIT_FRACTION,
        met(r.targets_met.peer_hit_fraction)
    ));
    s.push_str(&format!(
        "storage_read_ratio       {:>6}  (target <= {:.2}: {})\n",
        num(r.storage_read_ratio, 3),
        TARGET_STORAGE_READ_RATIO,
        met(r.targets_met.storage_read_ratio)
    ));
    s.push_str(&format!(
        "peer_vs_storage_latency  {:>6}  (target <= {:.2}: {}; {} peer and {} storage samples)\n",
        num(r.peer_vs_storage_latency, 3),
        TARGET_PEER_VS_STORAGE_LATENCY,
        met(r.targets_met.peer_vs_storage_latency),
        r.latency.peer_samples,
        r.latency.storage_samples
    ));
    s.push_str(&format!(
        "  storage page cache dropped {:>6}  (target <= {:.2}: {}; {} samples)\n",
        num(r.peer_vs_cold_storage_latency, 3),
        TARGET_PEER_VS_STORAGE_LATENCY,
        met(r.targets_met.peer_vs_cold_storage_latency),
        r.latency.storage_cold_samples
    ));
    s.push_str(&format!(
        "throughput on / off      {:>6}\nverified {:.0} MiB read against what was written\n",
        num(r.throughput_ratio, 2),
        mib(r.verified_bytes)
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(local: u64, peer: u64, storage: u64) -> Counts {
        Counts {
            reads_local: local,
            reads_peer: peer,
            reads_storage: storage,
            ..Counts::default()
        }
    }

    fn setup() -> Setup {
        Setup {
            mounts: vec!["/a".into(), "/b".into()],
            pattern: "round-robin",
            passes: 2,
            working_set_bytes: 512 << 20,
            cache_bytes: Some(256 << 20),
            read_bytes: 1 << 20,
        }
    }

    #[test]
    fn deltas_never_wrap_and_add_up() {
        let before = counts(10, 5, 7);
        let after = Counts {
            bytes_served_to_peers: 65536,
            ..counts(12, 9, 7)
        };
        let d = after.since(&before);
        assert_eq!(
            d,
            Counts {
                bytes_served_to_peers: 65536,
                ..counts(2, 4, 0)
            }
        );
        assert_eq!(
            before.since(&after),
            Counts::default(),
            "a restart reads as 0"
        );
        assert_eq!(d.plus(&d).reads_peer, 8);
    }

    #[test]
    fn ratios_come_from_the_summed_deltas() {
        let on = Phase {
            per_mount: vec![counts(100, 60, 20), counts(100, 30, 10)],
            bytes: 200 << 20,
            seconds: 2.0,
        };
        let off = Phase {
            per_mount: vec![counts(0, 0, 120), counts(0, 0, 120)],
            bytes: 200 << 20,
            seconds: 4.0,
        };
        let lat = Latency {
            peer_us: vec![300, 100, 200],
            storage_us: vec![900, 1200, 600, 1000],
            storage_cold_us: vec![2000, 3000, 1000],
            page_cache_dropped: true,
            other: 1,
        };
        let r = report(setup(), &on, &off, &lat, 400 << 20);
        assert_eq!(r.peer_hit_fraction, Some(0.75)); // 90 / 120
        assert_eq!(r.storage_read_ratio, Some(0.125)); // 30 / 240
        assert_eq!(r.latency.peer_median_us, Some(200));
        assert_eq!(r.latency.storage_median_us, Some(900));
        let l = r.peer_vs_storage_latency.expect("both medians");
        assert!((l - 200.0 / 900.0).abs() < 1e-12, "{l}");
        let c = r.peer_vs_cold_storage_latency.expect("both medians");
        assert!((c - 200.0 / 2000.0).abs() < 1e-12, "{c}");
        assert_eq!(r.latency.storage_cold_samples, 3);
        assert_eq!(r.on.mib_per_s, Some(100.0));
        assert_eq!(r.throughput_ratio, Some(2.0));
        assert_eq!(r.targets_met.peer_hit_fraction, Some(true));
        assert_eq!(r.targets_met.storage_read_ratio, Some(true));
        assert_eq!(r.targets_met.peer_vs_storage_latency, Some(true));
        let j: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&r).expect("json")).expect("parses");
        for k in [
            "peer_hit_fraction",
            "storage_read_ratio",
            "peer_vs_storage_latency",
            "throughput_ratio",
            "working_set_bytes",
        ] {
            assert!(j.get(k).is_some_and(|v| v.is_number()), "{k} in {j}");
        }
        assert_eq!(j["on"]["reads_peer"], 90);
        assert_eq!(j["off"]["reads_storage"], 240);
        assert_eq!(j["on"]["per_mount"][1]["reads_storage"], 10);
        let t = table(&r);
        assert!(t.contains("0.750") && t.contains("met"), "{t}");
    }

    #[test]
    fn empty_denominators_give_null_not_nan() {
        let idle = Phase {
            per_mount: vec![Counts::default(); 2],
            bytes: 0,
            seconds: 0.0,
        };
        let r = report(setup(), &idle, &idle, &Latency::default(), 0);
        assert_eq!(r.peer_hit_fraction, None);
        assert_eq!(r.storage_read_ratio, None);
        assert_eq!(r.peer_vs_storage_latency, None);
        assert_eq!(r.peer_vs_cold_storage_latency, None);
        assert_eq!(r.targets_met.peer_hit_fraction, None);
        let j = serde_json::to_string(&r).expect("json");
        assert!(j.contains("\"peer_hit_fraction\":null"), "{j}");
        assert!(table(&r).contains("not measured"));
    }

    #[test]
    fn samples_are_classified_by_where_they_were_served() {
        assert_eq!(classify(&counts(0, 1, 0)), Served::Peer);
        assert_eq!(classify(&counts(0, 0, 2)), Served::Storage);
        assert_eq!(classify(&counts(1, 0, 0)), Served::Other);
        assert_eq!(classify(&counts(0, 1, 1)), Served::Other);
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[5]), Some(5));
        assert_eq!(median(&[4, 1, 3, 2]), Some(2));
    }
}
