//! The worker against a directory on the local disk, where its model must hold exactly (a
//! failure here is a test bug, not a Shoal bug), and the verifier against a tree corrupted
//! on purpose: one flipped byte, one removed name and one changed xattr must each be
//! reported.

use crate::{spawn_worker, verify_dir, WorkerSpec};
use anyhow::{ensure, Context, Result};
use integration_tests::sys::set_xattr;
use integration_tests::workload::Model;
use integration_tests::TestEnv;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::time::Duration;
use tracing::info;

#[test]
fn t05_worker_model_holds_on_the_local_disk() -> Result<()> {
    let env = TestEnv::new()?;
    let local = env.path().join("local");
    fs::create_dir(&local)?;
    let seed = crate::base_seed();
    {
        info!(
            "--- two workers on the local disk ({}), 8 s each",
            local.display()
        );
        let mut ws = Vec::new();
        for index in 0..2u16 {
            let spec = WorkerSpec {
                index,
                root: &local,
                seed: seed + u64::from(index),
                secs: 8,
                ops: 20_000,
                checkpoints: 3,
                share: None,
            };
            ws.push(spawn_worker(&env, &spec)?);
        }
        for w in &mut ws {
            w.wait(Duration::from_secs(120))?;
            w.verify(&w.dir)?;
        }
    }
    let dir = local.join("w0");
    let manifest = env.path().join("manifests/worker-0");
    let model = Model::load(&manifest)?;
    let (id, f) = model
        .files
        .iter()
        .find(|(_, f)| f.data.len() > 100)
        .context("worker 0 left no file over 100 bytes")?;
    let name = model.names_of(*id)[0].to_string();
    {
        info!("--- a flipped byte in {name} is reported with its offset");
        let at = f.data.len() as u64 / 2;
        let file = OpenOptions::new().write(true).open(dir.join(&name))?;
        file.write_all_at(&[f.data[at as usize] ^ 0x40], at)?;
        let e = format!(
            "{:#}",
            verify_dir(&dir, &manifest).expect_err("a corrupt byte")
        );
        ensure!(
            e.contains(&format!("first difference at offset {at}")),
            "{e}"
        );
        file.write_all_at(&[f.data[at as usize]], at)?;
        verify_dir(&dir, &manifest)?;
    }
    {
        info!("--- a changed xattr of {name} is reported");
        set_xattr(&dir.join(&name), "user.k9", b"junk", 0)?;
        let e = format!(
            "{:#}",
            verify_dir(&dir, &manifest).expect_err("an extra xattr")
        );
        ensure!(e.contains("user.k9"), "{e}");
        integration_tests::sys::remove_xattr(&dir.join(&name), "user.k9")?;
    }
    {
        info!("--- a removed name {name} is reported");
        fs::rename(dir.join(&name), env.path().join("moved"))?;
        let e = format!(
            "{:#}",
            verify_dir(&dir, &manifest).expect_err("a missing name")
        );
        ensure!(e.contains("missing names"), "{e}");
    }
    env.done();
    Ok(())
}
