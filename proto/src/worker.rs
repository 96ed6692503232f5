//! Named background workers and the status each reports, instead of anonymous
//! `tokio::spawn`s (Garage's worker pattern, written for Shoal): the client's flusher and
//! renewer, the manager's journal committer, the cleaner/reclaimer, the storage scrub and
//! the background rebuild.
//!
//! Owns: `Workers`, the registry a client or node keeps, and `Worker`, the handle a
//! background loop updates (`busy`/`idle`/`failed`/`stopped`). Must not: run or spawn the
//! loops themselves, do I/O, or hold a lock across an await.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::{Arc, Mutex};

/// What a worker is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerState {
    /// Waiting for work (a timer, a kick).
    Idle,
    /// Doing a round of work.
    Busy,
    /// Ended (the client stopped or is gone).
    Stopped,
}

/// A worker's status, as a registry reports it (and a node's `Ping` answer carries).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub name: String,
    pub state: WorkerState,
    /// Rounds of work done.
    pub rounds: u64,
    /// The last round's failure, if it failed.
    pub last_error: Option<String>,
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Stopped => "stopped",
        })
    }
}

/// The handle a background loop reports through.
#[derive(Debug)]
pub struct Worker {
    status: Mutex<WorkerStatus>,
}

impl Worker {
    fn update(&self, f: impl FnOnce(&mut WorkerStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn busy(&self) {
        self.update(|s| s.state = WorkerState::Busy);
    }

    /// A round ended well.
    pub fn idle(&self) {
        self.update(|s| {
            s.state = WorkerState::Idle;
            s.rounds += 1;
            s.last_error = None;
        });
    }

    /// A round failed (the worker goes on).
    pub fn failed(&self, e: impl std::fmt::Display) {
        self.update(|s| {
            s.state = WorkerState::Idle;
            s.rounds += 1;
            s.last_error = Some(e.to_string());
        });
    }

    pub fn stopped(&self) {
        self.update(|s| s.state = WorkerState::Stopped);
    }

    pub fn status(&self) -> WorkerStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The workers of one client or node.
#[derive(Debug, Default)]
pub struct Workers {
    all: Mutex<Vec<Arc<Worker>>>,
}

impl Workers {
    /// Registers a worker named `name` (idle until it reports).
    pub fn register(&self, name: &'static str) -> Arc<Worker> {
        let w = Arc::new(Worker {
            status: Mutex::new(WorkerStatus {
                name: name.to_string(),
                state: WorkerState::Idle,
                rounds: 0,
                last_error: None,
            }),
        });
        self.all
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(w.clone());
        w
    }

    /// What every registered worker is doing, in registration order.
    pub fn statuses(&self) -> Vec<WorkerStatus> {
        self.all
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|w| w.status())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_report_their_rounds_and_failures() {
        let ws = Workers::default();
        let f = ws.register("flusher");
        let r = ws.register("renewer");
        f.busy();
        assert_eq!(ws.statuses()[0].state, WorkerState::Busy);
        f.failed("no space");
        r.idle();
        r.stopped();
        let st = ws.statuses();
        assert_eq!(st[0].name, "flusher");
        assert_eq!((st[0].state, st[0].rounds), (WorkerState::Idle, 1));
        assert_eq!(st[0].last_error.as_deref(), Some("no space"));
        assert_eq!(st[1].name, "renewer");
        assert_eq!((st[1].state, st[1].rounds), (WorkerState::Stopped, 1));
        f.idle();
        assert_eq!(ws.statuses()[0].last_error, None);
    }
}
