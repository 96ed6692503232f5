//! POSIX behaviour through a real FUSE mount of a real cluster (6 storage servers, 4+2,
//! 2 managers), one test binary. Each test starts its own cluster and narrates its phases.

mod t10_file_io;
mod t20_truncate_sparse;
mod t25_fallocate_seek;
mod t30_directories;
mod t40_unlink_open;
mod t50_rename;
mod t60_links;
mod t70_attributes;
mod t75_permissions;
mod t76_export_options;
mod t80_xattr_special;
mod t85_cross_manager;
mod t90_big_directory;
mod t95_readdir_stable;

use anyhow::Result;
use integration_tests::{MountGuard, TestCluster};

/// A started 6+2 cluster and a mount (with extra `shoal mount` arguments).
pub fn mounted_cluster(extra: &[&str]) -> Result<(TestCluster, MountGuard)> {
    let c = TestCluster::init(6, 2, "4+2")?;
    c.start_all()?;
    let m = c.mount_with(extra)?;
    Ok((c, m))
}
