//! `shoal status`: lists every node; exit 0 when the cluster can serve, 1 with a manager
//! down; a storage server down within the parity budget still serves.

use anyhow::{ensure, Result};
use integration_tests::cluster::node_state;
use integration_tests::TestCluster;
use tracing::info;

#[test]
fn t20_status_reports_nodes_and_exit_code() -> Result<()> {
    let c = TestCluster::init(6, 2, "4+2")?;
    c.start_all()?;
    {
        info!("--- all up: exit 0, every node listed as up");
        let out = c.status()?;
        ensure!(out.success(), "status with all nodes up: {out}");
        for n in c.node_names() {
            ensure!(
                node_state(&out.stdout, &n) == Some("up"),
                "{n} not listed as up:\n{out}"
            );
        }
    }
    {
        info!("--- storage-6 killed: still exit 0 (5 of 6 with 4+2), storage-6 down");
        c.kill9("storage-6")?;
        let out = c.status()?;
        ensure!(out.success(), "status with one storage server down: {out}");
        ensure!(
            node_state(&out.stdout, "storage-6") == Some("down"),
            "storage-6 not down:\n{out}"
        );
    }
    {
        info!("--- manager-2 stopped: exit 1, manager-2 down, every node still listed");
        c.stop("manager-2")?;
        let out = c.status()?;
        ensure!(
            out.code == Some(1),
            "status with a manager down must exit 1: {out}"
        );
        ensure!(
            node_state(&out.stdout, "manager-2") == Some("down"),
            "manager-2 not down:\n{out}"
        );
        for n in c.node_names() {
            ensure!(
                node_state(&out.stdout, &n).is_some(),
                "{n} not listed:\n{out}"
            );
        }
    }
    {
        info!("--- both back: exit 0 again");
        c.start("manager-2")?;
        c.start("storage-6")?;
        c.wait_ready()?;
    }
    {
        info!("--- everything stopped: exit 1, all down");
        for n in c.node_names() {
            c.stop(&n)?;
        }
        let out = c.status()?;
        ensure!(
            out.code == Some(1),
            "status with every node down must exit 1: {out}"
        );
        for n in c.node_names() {
            ensure!(
                node_state(&out.stdout, &n) == Some("down"),
                "{n} not down:\n{out}"
            );
        }
    }
    c.done();
    Ok(())
}
