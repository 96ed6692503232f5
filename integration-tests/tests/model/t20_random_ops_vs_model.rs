//! 2000 (or $SHOAL_MODEL_OPS) seeded random operations through the mount, each checked
//! against the model; then a remount and a whole-tree check.

use anyhow::{Context, Result};
use integration_tests::model::{check_tree, run_sequence};
use integration_tests::TestCluster;
use tracing::info;

#[test]
fn t20_random_operations_match_the_model() -> Result<()> {
    let seed: u64 = match std::env::var("SHOAL_MODEL_SEED") {
        Ok(s) => s.parse().context("SHOAL_MODEL_SEED")?,
        Err(_) => rand::random::<u32>() as u64,
    };
    let ops: usize = match std::env::var("SHOAL_MODEL_OPS") {
        Ok(s) => s.parse().context("SHOAL_MODEL_OPS")?,
        Err(_) => 2000,
    };
    let rerun = format!("seed {seed}; rerun with SHOAL_MODEL_SEED={seed} SHOAL_MODEL_OPS={ops}");
    let c = TestCluster::init(6, 2, "4+2")?;
    info!(seed, ops, "{rerun}");
    c.start_all()?;
    let m = c.mount()?;
    let model = {
        info!("--- {ops} random operations, each checked against the model");
        let base = m.join("model");
        std::fs::create_dir(&base)?;
        run_sequence(&base, seed, ops, 250).context(rerun.clone())?
    };
    let m = c.remount(m)?;
    {
        info!("--- after remount: the whole tree still matches");
        check_tree(&model, &m.join("model")).context(rerun.clone())?;
    }
    c.done();
    Ok(())
}
