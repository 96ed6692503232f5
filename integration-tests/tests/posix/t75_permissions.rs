//! Permission checks for a non-root user (uid/gid 65534, set in a forked child): EACCES on
//! writes to root's files and dirs, EPERM on chmod/chown of others' files, the sticky bit,
//! and the matching successes (so that a mount refusing everything cannot pass).

use crate::mounted_cluster;
use anyhow::Result;
use integration_tests::sys::{run_as, ChildOp};
use nix::errno::Errno;
use std::fs::{self, Permissions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use tracing::info;

const NOBODY: u32 = 65534;

fn as_nobody(op: ChildOp) -> Result<std::result::Result<(), Errno>> {
    run_as(NOBODY, NOBODY, &op)
}

#[test]
fn t75_permission_checks_for_other_users() -> Result<()> {
    let (c, m) = mounted_cluster(&["--allow-other"])?;
    let p = |s: &str| ChildOp::path(&m.join(s));
    {
        info!("--- root makes: dir755/file644, dir777, file600, sticky dir with a root file");
        fs::set_permissions(m.path(), Permissions::from_mode(0o755))?;
        fs::create_dir(m.join("dir755"))?;
        fs::set_permissions(m.join("dir755"), Permissions::from_mode(0o755))?;
        fs::write(m.join("dir755/file644"), b"root data")?;
        fs::set_permissions(m.join("dir755/file644"), Permissions::from_mode(0o644))?;
        fs::create_dir(m.join("dir777"))?;
        fs::set_permissions(m.join("dir777"), Permissions::from_mode(0o777))?;
        fs::write(m.join("file600"), b"secret")?;
        fs::set_permissions(m.join("file600"), Permissions::from_mode(0o600))?;
        fs::create_dir(m.join("sticky"))?;
        fs::set_permissions(m.join("sticky"), Permissions::from_mode(0o1777))?;
        fs::write(m.join("sticky/roots"), b"r")?;
    }
    {
        info!("--- allowed for nobody: read a 0644 file, create in a 0777 dir, chmod its own file");
        assert_eq!(
            as_nobody(ChildOp::OpenRead(p("dir755/file644")))?,
            Ok(()),
            "read a 0644 file"
        );
        assert_eq!(
            as_nobody(ChildOp::Create(p("dir777/mine")))?,
            Ok(()),
            "create in a 0777 dir"
        );
        let md = fs::metadata(m.join("dir777/mine"))?;
        assert_eq!(
            (md.uid(), md.gid()),
            (NOBODY, NOBODY),
            "new file belongs to its creator"
        );
        assert_eq!(
            as_nobody(ChildOp::Chmod(p("dir777/mine"), 0o600))?,
            Ok(()),
            "chmod own file"
        );
        assert_eq!(fs::metadata(m.join("dir777/mine"))?.mode() & 0o777, 0o600);
        assert_eq!(
            as_nobody(ChildOp::Mkdir(p("dir777/mydir")))?,
            Ok(()),
            "mkdir in a 0777 dir"
        );
        assert_eq!(
            as_nobody(ChildOp::Create(p("sticky/nobodys")))?,
            Ok(()),
            "create in a sticky dir"
        );
        assert_eq!(
            as_nobody(ChildOp::Unlink(p("sticky/nobodys")))?,
            Ok(()),
            "unlink own file in a sticky dir"
        );
    }
    {
        info!("--- refused for nobody: EACCES on writes, EPERM on chmod/chown of others' files");
        assert_eq!(
            as_nobody(ChildOp::OpenWrite(p("dir755/file644")))?,
            Err(Errno::EACCES),
            "write a root 0644 file"
        );
        assert_eq!(
            as_nobody(ChildOp::Create(p("dir755/new")))?,
            Err(Errno::EACCES),
            "create in a root 0755 dir"
        );
        assert_eq!(
            as_nobody(ChildOp::Mkdir(p("dir755/sub")))?,
            Err(Errno::EACCES),
            "mkdir in a root 0755 dir"
        );
        assert_eq!(
            as_nobody(ChildOp::Unlink(p("dir755/file644")))?,
            Err(Errno::EACCES),
            "unlink in a root 0755 dir"
        );
        assert_eq!(
            as_nobody(ChildOp::OpenRead(p("file600")))?,
            Err(Errno::EACCES),
            "read a root 0600 file"
        );
        assert_eq!(
            as_nobody(ChildOp::Chmod(p("dir755/file644"), 0o666))?,
            Err(Errno::EPERM),
            "chmod root's file"
        );
        assert_eq!(
            as_nobody(ChildOp::Chown(p("dir777/mine"), 0, 0))?,
            Err(Errno::EPERM),
            "give a file away"
        );
        assert_eq!(
            as_nobody(ChildOp::Unlink(p("sticky/roots")))?,
            Err(Errno::EPERM),
            "unlink root's file in a sticky dir"
        );
    }
    {
        info!("--- nothing changed by the refused calls");
        assert_eq!(fs::read(m.join("dir755/file644"))?, b"root data");
        assert_eq!(
            fs::metadata(m.join("dir755/file644"))?.mode() & 0o777,
            0o644
        );
        assert!(fs::metadata(m.join("sticky/roots")).is_ok());
        assert!(fs::metadata(m.join("dir755/new")).is_err());
    }
    {
        info!("--- root may do all of it (chmod/chown others' files)");
        fs::set_permissions(m.join("dir777/mine"), Permissions::from_mode(0o640))?;
        std::os::unix::fs::chown(m.join("dir777/mine"), Some(0), Some(0))?;
        let md = fs::metadata(m.join("dir777/mine"))?;
        assert_eq!((md.uid(), md.gid(), md.mode() & 0o777), (0, 0, 0o640));
    }
    c.done();
    Ok(())
}
