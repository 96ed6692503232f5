//! `shoal status --json`: one JSON document a script can parse (serde_json here), with the
//! documented fields and exit codes: 0 while the cluster serves (healthy or degraded), 1
//! when it cannot, 3 when the cluster directory cannot be probed.

use anyhow::{ensure, Context, Result};
use integration_tests::TestCluster;
use serde_json::Value;
use std::time::Duration;
use tracing::info;

fn status_json(c: &TestCluster) -> Result<(Option<i32>, Value)> {
    let out = c.env().run(
        [
            "status".as_ref(),
            "--json".as_ref(),
            "--cluster".as_ref(),
            c.dir().as_os_str(),
        ],
        Duration::from_secs(60),
    )?;
    let v: Value = serde_json::from_str(&out.stdout)
        .with_context(|| format!("status --json is not JSON:\n{out}"))?;
    Ok((out.code, v))
}

fn node<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"].as_str() == Some(name))
}

#[test]
fn t21_status_json_is_parseable_with_documented_fields_and_exit_codes() -> Result<()> {
    let c = TestCluster::init(6, 2, "4+2")?;
    c.start_all()?;
    c.wait_ready()?;
    {
        info!("--- all up: healthy, exit 0, 8 nodes up, storage with capacity");
        let (code, v) = status_json(&c)?;
        ensure!(code == Some(0), "exit {code:?}: {v}");
        ensure!(v["version"] == 1 && v["health"] == "healthy", "{v}");
        ensure!(v["can_serve"] == true, "{v}");
        ensure!(
            v["erasure"]["data"] == 4 && v["erasure"]["parity"] == 2,
            "{v}"
        );
        ensure!(v["nodes"].as_array().map(|a| a.len()) == Some(8), "{v}");
        for n in c.node_names() {
            let e = node(&v, &n).with_context(|| format!("{n} missing: {v}"))?;
            ensure!(e["state"] == "up", "{n}: {e}");
            ensure!(e["workers"].is_array(), "{n}: {e}");
            if n.starts_with("storage") {
                ensure!(e["roles"] == serde_json::json!(["storage"]), "{e}");
                ensure!(e["capacity_bytes"].as_u64().unwrap_or(0) > 0, "{e}");
                ensure!(e["used_bytes"].is_u64() && e["fragments"].is_u64(), "{e}");
            } else {
                ensure!(e["capacity_bytes"].is_null(), "{e}");
            }
        }
        ensure!(v["stripes"]["degraded"] == 0, "{v}");
        ensure!(v["stripes"]["total"].is_u64(), "{v}");
        for n in c.node_names() {
            let e = node(&v, &n).with_context(|| format!("{n} missing: {v}"))?;
            ensure!(e["id"].as_u64().unwrap_or(0) > 0, "{n} has no id: {e}");
            let slots = e["slots"].as_array().map(|a| a.len()).unwrap_or(0);
            ensure!(
                n.starts_with("manager") == (slots > 0),
                "{n}: slots {slots}: {e}"
            );
        }
    }
    {
        info!(
            "--- the config group: its three members answer, one leads, epoch 1 from cluster.toml"
        );
        let mut last = Value::Null;
        c.wait_until(Duration::from_secs(60), "a config group leader", || {
            last = status_json(&c).map(|(_, v)| v).unwrap_or(Value::Null);
            let g = &last["config_group"];
            // Two managers and the lowest-id storage node are the members.
            g["epoch"] == 1
                && g["leader"].is_string()
                && g["members"] == 3
                && g["members_answering"] == 3
        })
        .with_context(|| format!("last status: {last}"))?;
        let leader = last["config_group"]["leader"].as_str().unwrap_or("");
        ensure!(
            leader.starts_with("manager-") || leader == "storage-1",
            "{last}"
        );
    }
    {
        info!("--- storage-6 killed: degraded, still exit 0, storage-6 down with a reason");
        c.kill9("storage-6")?;
        let (code, v) = status_json(&c)?;
        ensure!(code == Some(0), "exit {code:?}: {v}");
        ensure!(v["health"] == "degraded", "{v}");
        let e = node(&v, "storage-6").context("storage-6 missing")?;
        ensure!(e["state"] == "down" && e["error"].is_string(), "{e}");
        ensure!(e["capacity_bytes"].is_null(), "{e}");
    }
    {
        info!("--- manager-2 stopped too: unavailable, exit 1");
        c.stop("manager-2")?;
        let (code, v) = status_json(&c)?;
        ensure!(code == Some(1), "exit {code:?}: {v}");
        ensure!(
            v["health"] == "unavailable" && v["can_serve"] == false,
            "{v}"
        );
        ensure!(node(&v, "manager-2").map(|e| e["state"].clone()) == Some("down".into()));
    }
    {
        info!("--- a directory without a cluster: exit 3, one error line");
        let nowhere = c.env().path().join("nowhere");
        let out = c.env().run(
            [
                "status".as_ref(),
                "--json".as_ref(),
                "--cluster".as_ref(),
                nowhere.as_os_str(),
            ],
            Duration::from_secs(30),
        )?;
        ensure!(out.code == Some(3), "expected exit 3: {out}");
        crate::expect_clear_error(&out, "status of no cluster", &["nowhere"])?;
    }
    c.done();
    Ok(())
}
