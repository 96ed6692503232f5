//! Bounded waiting: poll a condition until it holds or a timeout passes, and run a call
//! that may block (a file system call on a stalled mount) with a bound. Never a bare sleep
//! as synchronisation.

use anyhow::{anyhow, bail, Result};
use std::time::{Duration, Instant};

const MAX_PAUSE: Duration = Duration::from_millis(250);

/// Polls `cond` until it returns true; errors after `timeout` naming `what`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    wait_for(timeout, what, || {
        if cond() {
            Ok(())
        } else {
            Err(anyhow!("not yet"))
        }
    })
}

/// An error that ends a `wait_for` at once instead of being retried.
#[derive(Debug)]
pub struct Fatal(pub String);

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Fatal {}

/// Polls `f` until it returns `Ok`; errors after `timeout` with `what` and the last error,
/// or at once when `f` returns a [`Fatal`] error.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        let last = match f() {
            Ok(v) => return Ok(v),
            Err(e) if e.is::<Fatal>() => {
                return Err(e.context(format!("while waiting until {what}")))
            }
            Err(e) => e,
        };
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            bail!("timed out after {timeout:?} waiting until {what} (last: {last:#})");
        }
        std::thread::sleep(pause.min(timeout - elapsed));
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Runs `f` on its own thread and waits at most `timeout` for it. On timeout the thread
/// is left behind (it is blocked in a system call; killing the mount releases it) and an
/// error naming `what` is returned.
pub fn with_timeout<T: Send + 'static>(
    timeout: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    let name = format!("bounded: {what}");
    std::thread::Builder::new().name(name).spawn(move || {
        let _ = tx.send(f());
    })?;
    match rx.recv_timeout(timeout) {
        Ok(v) => Ok(v),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            bail!("{what} did not complete within {timeout:?}")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => bail!("{what} panicked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_returns_when_condition_holds() {
        let mut n = 0;
        let r = wait_until(Duration::from_secs(5), "n reaches 3", || {
            n += 1;
            n >= 3
        });
        assert!(r.is_ok());
        assert_eq!(n, 3);
    }

    #[test]
    fn wait_until_times_out_with_description() {
        let r = wait_until(Duration::from_millis(50), "never", || false);
        let e = format!("{:#}", r.expect_err("must time out"));
        assert!(e.contains("never"), "{e}");
    }

    #[test]
    fn with_timeout_bounds_a_blocked_call() {
        let r = with_timeout(Duration::from_millis(50), "sleeper", || {
            std::thread::sleep(Duration::from_secs(2));
        });
        assert!(r.is_err());
        assert_eq!(
            with_timeout(Duration::from_secs(5), "quick", || 7).ok(),
            Some(7)
        );
    }
}
