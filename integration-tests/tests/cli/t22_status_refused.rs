//! A manager restarted with a cluster.toml that contradicts the config the cluster
//! committed (here: a copy that gives it every slot, as an operator's stale or hand-edited
//! file would) does not serve: `shoal status` lists it as refused with the reason and exits
//! 1; given the cluster's own file again it serves, and what was written before is intact.

use anyhow::{ensure, Context, Result};
use integration_tests::cluster::node_state;
use integration_tests::TestCluster;
use proto::config::{ClusterConfig, SlotRange};
use std::fs;
use std::time::Duration;
use tracing::info;

#[test]
fn t22_a_manager_whose_cluster_toml_contradicts_the_committed_config_is_refused() -> Result<()> {
    let c = TestCluster::init(3, 2, "2+1")?;
    c.start_all()?;
    let m = c.mount()?;
    fs::write(m.join("before"), b"written before")?;
    c.stop("manager-2")?;
    {
        info!(
            "--- manager-2 restarts from a copy of the cluster directory that gives it every slot"
        );
        let config = ClusterConfig::load(c.dir())?;
        let other = c.env().path().join("edited-cluster");
        fs::create_dir_all(other.join("tls"))?;
        for e in fs::read_dir(c.dir().join("tls"))? {
            let e = e?;
            if e.file_type()?.is_file() {
                fs::copy(e.path(), other.join("tls").join(e.file_name()))?;
            }
        }
        let mut file = config.file.clone();
        file.slot_ranges = vec![SlotRange {
            first: 0,
            last: proto::ids::SLOT_COUNT - 1,
            manager: "manager-2".into(),
        }];
        // The same nodes, state directories included: only the manager map differs.
        for (entry, node) in file.nodes.iter_mut().zip(&config.nodes) {
            entry.state_dir = Some(node.state_dir.clone());
        }
        fs::write(other.join("cluster.toml"), ClusterConfig::render(&file))?;
        c.env().spawn(
            "manager-2",
            [
                "node".as_ref(),
                "run".as_ref(),
                "--cluster".as_ref(),
                other.as_os_str(),
                "--node".as_ref(),
                "manager-2".as_ref(),
            ],
        )?;
        let mut last = None;
        c.wait_until(Duration::from_secs(60), "manager-2 is refused", || {
            let out = c.status();
            let refused = out.as_ref().is_ok_and(|o| {
                node_state(&o.stdout, "manager-2") == Some("refused")
                    && o.stdout.contains("contradicts")
            });
            last = out.ok();
            refused
        })
        .with_context(|| format!("last status: {last:?}"))?;
        let out = last.expect("a status");
        info!("status:\n{}", out.stdout);
        ensure!(
            out.code == Some(1),
            "a refused manager: the cluster cannot serve: {out}"
        );
        ensure!(
            out.stdout.contains("slots [0-1023 manager-2] here"),
            "the reason names what differs: {out}"
        );
    }
    {
        info!("--- with the cluster's own cluster.toml it serves again");
        c.stop("manager-2")?;
        c.start("manager-2")?;
        c.wait_ready()?;
        ensure!(fs::read(m.join("before"))? == b"written before");
        fs::write(m.join("after"), b"written after")?;
        ensure!(fs::read(m.join("after"))? == b"written after");
    }
    m.unmount(Duration::from_secs(30))?;
    c.done();
    Ok(())
}
