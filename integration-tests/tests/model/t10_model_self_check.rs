//! The model itself against the local file system (same kernel VFS rules), so that a
//! failure of the mount test is a product bug and not a model bug.

use anyhow::Result;
use integration_tests::model::run_sequence;
use tracing::info;

#[test]
fn t10_model_agrees_with_the_local_file_system() -> Result<()> {
    integration_tests::init_logging();
    for seed in [11, 12] {
        info!(seed, "--- random sequence on a local temp dir");
        let d = tempfile::tempdir()?;
        run_sequence(d.path(), seed, 2000, 500)?;
    }
    Ok(())
}
