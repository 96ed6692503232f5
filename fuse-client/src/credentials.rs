//! Whose request the client is serving: the credentials (uid, gid, supplementary groups)
//! of the local process behind a FUSE request, carried to the manager with every request
//! made while serving it (`Request::ManagerAs`), where they are checked.
//!
//! Owns: reading supplementary groups from `/proc/PID/status` (cached briefly), the
//! per-thread "current request" set by the FUSE callback, and the task-local that carries
//! it into the spawned future. Must not: decide permissions (the manager does), or be read
//! on a tokio thread from /proc (only the FUSE thread reads /proc).

use proto::msg::Credentials;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long supplementary groups read for a (pid, uid, gid) are reused.
const GROUPS_TTL: Duration = Duration::from_secs(2);
/// Cached entries at most (the cache is cleared when full).
const GROUPS_CACHE_MAX: usize = 4096;

tokio::task_local! {
    static CALLER: Option<Credentials>;
}

thread_local! {
    static CURRENT: RefCell<Option<Credentials>> = const { RefCell::new(None) };
}

type GroupsCache = HashMap<(u32, u32, u32), (Vec<u32>, Instant)>;
static GROUPS: Mutex<Option<GroupsCache>> = Mutex::new(None);

/// The credentials of the request a task serves (`None` for the client's own background
/// work, which the manager treats as this client's root).
pub fn current() -> Option<Credentials> {
    CALLER.try_with(|c| c.clone()).ok().flatten()
}

/// Runs `fut` as serving `cred` (see `current`).
pub fn scope<F: Future>(cred: Option<Credentials>, fut: F) -> impl Future<Output = F::Output> {
    CALLER.scope(cred, fut)
}

/// The credentials the FUSE callback on this thread serves (set by `enter`).
pub fn of_this_thread() -> Option<Credentials> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Marks this (FUSE) thread as serving a request of `uid`/`gid`/`pid` until the guard is
/// dropped; reads the process's supplementary groups (cached for a moment).
pub fn enter(uid: u32, gid: u32, pid: u32) -> Entered {
    let cred = Credentials {
        uid,
        gid,
        groups: groups_of(pid, uid, gid),
    };
    CURRENT.with(|c| *c.borrow_mut() = Some(cred));
    Entered(())
}

/// Clears this thread's current request when dropped.
pub struct Entered(());

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = None);
    }
}

fn groups_of(pid: u32, uid: u32, gid: u32) -> Vec<u32> {
    if pid == 0 {
        return Vec::new();
    }
    let key = (pid, uid, gid);
    let now = Instant::now();
    {
        let cache = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((g, at)) = cache.as_ref().and_then(|c| c.get(&key)) {
            if now.duration_since(*at) < GROUPS_TTL {
                return g.clone();
            }
        }
    }
    let groups = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| parse_groups(&s))
        .unwrap_or_default();
    let mut cache = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
    let c = cache.get_or_insert_with(HashMap::new);
    if c.len() >= GROUPS_CACHE_MAX {
        c.clear();
    }
    c.insert(key, (groups.clone(), now));
    groups
}

/// The `Groups:` line of a /proc/PID/status text.
fn parse_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .take(proto::msg::Credentials::MAX_GROUPS)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_line_is_parsed() {
        let s = "Name:\tcat\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 1000 \nNgid:\t0\n";
        assert_eq!(parse_groups(s), vec![4, 24, 1000]);
        assert!(parse_groups("Groups:\t\n").is_empty());
        assert!(parse_groups("Name:\tx\n").is_empty());
    }

    #[test]
    fn own_groups_are_read_and_the_thread_marker_clears() {
        let me = std::process::id();
        let _ = groups_of(me, 0, 0);
        {
            let _e = enter(5, 6, 0);
            assert_eq!(of_this_thread().map(|c| (c.uid, c.gid)), Some((5, 6)));
        }
        assert_eq!(of_this_thread(), None);
    }

    #[tokio::test]
    async fn scope_carries_credentials_into_the_task() {
        assert_eq!(current(), None);
        let c = Credentials {
            uid: 7,
            gid: 8,
            groups: vec![9],
        };
        let seen = scope(Some(c.clone()), async { current() }).await;
        assert_eq!(seen, Some(c));
    }
}
