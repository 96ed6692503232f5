//! Placement with a storage server dead (issue 9, "placement follows reality"), through real
//! processes: on 7 storage servers with 4+2, one is killed -9 while the mount is up and its
//! connection to it still looks open; files written and fsynced afterwards must land with
//! all k+m = 6 fragments on the six live servers (no new degraded stripe: the writer
//! believes the dead server down and puts its fragments on the spare), `shoal rebuild`
//! counts no more degraded stripes than right after the kill, and every file reads back
//! byte-exact from a fresh mount.

use crate::{check_pattern, write_pattern};
use anyhow::{ensure, Context, Result};
use integration_tests::faults::fragment_files;
use integration_tests::TestCluster;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;
use tracing::info;

const WIDTH: usize = 6;
const FILES: u64 = 6;
const SIZE: usize = 8 << 20;

/// (log, segment) -> fragment indices found under the fragment directories of `servers`.
pub fn stripes_on(
    c: &TestCluster,
    servers: &[String],
) -> Result<BTreeMap<(String, String), BTreeSet<String>>> {
    let mut out: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for s in servers {
        for f in fragment_files(&c.fragment_dir(s))? {
            if let Some(key) = fragment_key(&f) {
                out.entry((key.0, key.1)).or_default().insert(key.2);
            }
        }
    }
    Ok(out)
}

/// (log dir, segment, index) of a fragment file `<log>/<segment>.<index>.frag`.
fn fragment_key(p: &Path) -> Option<(String, String, String)> {
    let name = p.file_name()?.to_str()?.strip_suffix(".frag")?;
    let (seg, index) = name.split_once('.')?;
    let log = p.parent()?.file_name()?.to_str()?;
    Some((log.to_string(), seg.to_string(), index.to_string()))
}

/// (stripes, degraded) of `shoal rebuild`'s "N stripes, D degraded" line.
fn degraded_count(stdout: &str) -> Option<(u64, u64)> {
    let line = stdout.lines().find(|l| l.contains(" stripes, "))?;
    let (n, rest) = line.split_once(" stripes, ")?;
    let d = rest.split(' ').next()?;
    Some((n.trim().parse().ok()?, d.parse().ok()?))
}

#[test]
fn t22_writes_with_a_dead_server_land_on_all_fragments() -> Result<()> {
    let c = TestCluster::init(7, 2, "4+2")?;
    c.start_all()?;
    c.wait_ready()?;
    let m = c.mount()?;
    // Connections to every server are open before the kill.
    write_pattern(&m.join("before"), 1, SIZE)?;
    let all = c.storage_names();
    let dead = all[3].clone();
    let live: Vec<String> = all.iter().filter(|n| **n != dead).cloned().collect();
    let old: BTreeSet<(String, String)> = stripes_on(&c, &all)?.into_keys().collect();
    info!(
        dead,
        "--- kill -9 one storage server, write and fsync files at once"
    );
    c.kill9(&dead)?;
    let rebuild = || {
        let args: Vec<&std::ffi::OsStr> = vec![
            "rebuild".as_ref(),
            "--cluster".as_ref(),
            c.dir().as_os_str(),
        ];
        c.env().run(args, Duration::from_secs(60))
    };
    let first = rebuild()?;
    let (stripes0, degraded0) = degraded_count(&first.stdout).context("no count")?;
    info!(stripes0, degraded0, "shoal rebuild right after the kill");
    for f in 0..FILES {
        write_pattern(&m.join(format!("f{f}")), 10 + f, SIZE)?;
    }
    m.unmount(Duration::from_secs(60))?;

    // Every stripe written after the kill has all six fragments on the live servers. A
    // stripe seen short may be in the middle of an append or a delete (a manager's own
    // log): it must be whole, or gone, a moment later.
    let new_stripes = |s: BTreeMap<(String, String), BTreeSet<String>>| {
        s.into_iter()
            .filter(|(k, _)| !old.contains(k))
            .collect::<BTreeMap<_, _>>()
    };
    let seen = new_stripes(stripes_on(&c, &live)?);
    ensure!(
        seen.len() as u64 >= FILES * (SIZE as u64 / (8 << 20)),
        "only {} new stripes after writing {FILES} files",
        seen.len()
    );
    let short: Vec<_> = seen
        .iter()
        .filter(|(_, i)| i.len() < WIDTH)
        .map(|(k, _)| k.clone())
        .collect();
    if !short.is_empty() {
        std::thread::sleep(Duration::from_secs(3));
        let again = new_stripes(stripes_on(&c, &live)?);
        for k in &short {
            if let Some(idx) = again.get(k) {
                ensure!(
                    idx.len() == WIDTH,
                    "stripe {k:?} written after the kill holds only fragments {idx:?} on the live servers"
                );
            }
        }
    }
    info!(new = seen.len(), "every new stripe holds {WIDTH} fragments");
    let after = rebuild()?;
    let (stripes1, degraded1) = degraded_count(&after.stdout).context("no count")?;
    info!(stripes1, degraded1, "shoal rebuild after the writes");
    ensure!(
        degraded1 <= degraded0,
        "writes after the kill left degraded stripes: {degraded0} before, {degraded1} after:\n{}",
        after.stdout
    );

    let m = c.mount()?;
    check_pattern(&m.join("before"), 1, SIZE)?;
    for f in 0..FILES {
        check_pattern(&m.join(format!("f{f}")), 10 + f, SIZE)?;
    }
    m.unmount(Duration::from_secs(60))?;
    c.done();
    Ok(())
}

#[test]
fn t22_parses_keys_and_counts() {
    assert_eq!(
        fragment_key(Path::new(
            "/x/frags/00000000000000ab/0000000000000003.5.frag"
        )),
        Some((
            "00000000000000ab".into(),
            "0000000000000003".into(),
            "5".into()
        ))
    );
    assert_eq!(fragment_key(Path::new("/x/y.tmp")), None);
    assert_eq!(
        degraded_count("scanning\n12 stripes, 3 degraded, 3 missing 1 fragment(s)\n"),
        Some((12, 3))
    );
}
