//! Duplicate calls: the first result of each numbered client call (`proto::ids::CallId`,
//! sent for requests that must not take effect twice, `ManagerRequest::once`), so that a
//! retry of a call applied before its answer was lost (a broken connection, a healed
//! partition, a manager restart) gets that result instead of being applied again (a
//! retried rename would fail ENOENT, a retried create EEXIST).
//!
//! Two tables, both bounded (the oldest entries are forgotten first):
//! - [`CallTable`]: what this incarnation saw — calls running now (a retry waits for the
//!   first try instead of running beside it) and their results, failures included.
//! - [`RecordedCalls`]: what the metadata log says (`Record::Replied`, logged in the same
//!   batch as the change), which is what survives a restart: checkpoints carry it (piece
//!   kind 4, see `metalog::checkpoint`) and the records after the checkpoint a restart
//!   starts from add to it. A checkpoint written before calls were carried has none: the
//!   calls logged before it are not remembered (their retries run again).
//!
//! Pure: no runtime, no I/O. The service (`service/once.rs`) waits, runs and logs.
//! Must not: decide whether or how a request is applied; it only remembers answers.

use proto::ids::{CallId, InodeId, SessionId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{HashMap, VecDeque};

/// A call as the tables know it: the client's session and its number for the call.
pub type CallKey = (SessionId, CallId);

/// How many finished calls this incarnation keeps results of.
pub const KEPT_RESULTS: usize = 16_384;
/// How many logged calls a manager remembers across a restart.
pub const KEPT_RECORDED: usize = 16_384;

/// What to do with a numbered call that arrives.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin<R> {
    /// Unknown: run it (it is now marked running; report with [`CallTable::finish`]).
    Run,
    /// A try of the same call is running: wait for it to finish, then ask again.
    Wait,
    /// It ran: answer this.
    Done(R),
}

enum Entry<R> {
    Running,
    Done(R),
}

/// Running and finished calls of this incarnation.
pub struct CallTable<R> {
    entries: HashMap<CallKey, Entry<R>>,
    /// Finished calls, oldest first (some may have been started again, see `finish`).
    done: VecDeque<CallKey>,
    cap: usize,
}

impl<R: Clone> CallTable<R> {
    pub fn new(cap: usize) -> CallTable<R> {
        CallTable {
            entries: HashMap::new(),
            done: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// A call arrives.
    pub fn begin(&mut self, key: CallKey) -> Begin<R> {
        match self.entries.get(&key) {
            Some(Entry::Running) => Begin::Wait,
            Some(Entry::Done(r)) => Begin::Done(r.clone()),
            None => {
                self.entries.insert(key, Entry::Running);
                Begin::Run
            }
        }
    }

    /// The call marked running by `begin` ended: with the result to answer its retries, or
    /// `None` when it did not take effect and a retry must run it again (the manager was
    /// unavailable, the try was cancelled).
    pub fn finish(&mut self, key: CallKey, result: Option<R>) {
        match result {
            None => {
                if matches!(self.entries.get(&key), Some(Entry::Running)) {
                    self.entries.remove(&key);
                }
            }
            Some(r) => {
                self.entries.insert(key, Entry::Done(r));
                self.done.push_back(key);
                while self.done.len() > self.cap {
                    let Some(old) = self.done.pop_front() else {
                        break;
                    };
                    if matches!(self.entries.get(&old), Some(Entry::Done(_))) {
                        self.entries.remove(&old);
                    }
                }
            }
        }
    }

    /// Calls running or remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The calls the metadata log recorded as applied, with what their answer named: `None`
/// for "done", `Some(ino)` for the attributes of `ino` (a create or a link).
#[derive(Clone, Debug, Default)]
pub struct RecordedCalls {
    map: HashMap<CallKey, Option<InodeId>>,
    order: VecDeque<CallKey>,
}

impl RecordedCalls {
    /// A `Record::Replied` was applied.
    pub fn record(&mut self, key: CallKey, answer: Option<InodeId>) {
        if self.map.insert(key, answer).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > KEPT_RECORDED {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    /// What the log says `key` answered, if it recorded the call.
    pub fn get(&self, key: CallKey) -> Option<Option<InodeId>> {
        self.map.get(&key).copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// In a checkpoint: the calls oldest first, as `(session, call, answer)` (at most
/// `KEPT_RECORDED` of them).
impl Serialize for RecordedCalls {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // `order` and `map` hold the same keys; an exact length (postcard needs it).
        s.collect_seq(
            self.order
                .iter()
                .map(|k| (k.0, k.1, self.map.get(k).copied().flatten())),
        )
    }
}

impl<'de> Deserialize<'de> for RecordedCalls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RecordedCalls, D::Error> {
        let list: Vec<(SessionId, CallId, Option<InodeId>)> = Vec::deserialize(d)?;
        let mut r = RecordedCalls::default();
        for (session, call, answer) in list {
            r.record((session, call), answer);
        }
        Ok(r)
    }
}

/// Not compared as part of a state: legacy checkpoints and those written before calls
/// were carried restore none, and such a state must still equal the live one.
impl PartialEq for RecordedCalls {
    fn eq(&self, _other: &RecordedCalls) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: u64, c: u64) -> CallKey {
        (SessionId(s), CallId(c))
    }

    #[test]
    fn a_retry_gets_the_first_result() {
        let mut t: CallTable<&str> = CallTable::new(8);
        assert_eq!(t.begin(key(1, 1)), Begin::Run);
        t.finish(key(1, 1), Some("renamed"));
        assert_eq!(t.begin(key(1, 1)), Begin::Done("renamed"));
        // Another session's call with the same number is another call.
        assert_eq!(t.begin(key(2, 1)), Begin::Run);
    }

    #[test]
    fn a_retry_waits_while_the_first_try_runs() {
        let mut t: CallTable<&str> = CallTable::new(8);
        assert_eq!(t.begin(key(1, 7)), Begin::Run);
        assert_eq!(t.begin(key(1, 7)), Begin::Wait);
        t.finish(key(1, 7), Some("created"));
        assert_eq!(t.begin(key(1, 7)), Begin::Done("created"));
    }

    #[test]
    fn a_try_that_did_not_take_effect_runs_again() {
        let mut t: CallTable<&str> = CallTable::new(8);
        assert_eq!(t.begin(key(1, 3)), Begin::Run);
        t.finish(key(1, 3), None);
        assert_eq!(t.begin(key(1, 3)), Begin::Run);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn results_are_bounded_oldest_first() {
        let mut t: CallTable<u64> = CallTable::new(3);
        for c in 0..5 {
            assert_eq!(t.begin(key(1, c)), Begin::Run);
            t.finish(key(1, c), Some(c));
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.begin(key(1, 4)), Begin::Done(4));
        assert_eq!(t.begin(key(1, 2)), Begin::Done(2));
        assert_eq!(t.begin(key(1, 0)), Begin::Run, "the oldest is forgotten");
        // A running call is never evicted by finished ones.
        for c in 10..20 {
            t.begin(key(1, c));
            t.finish(key(1, c), Some(c));
        }
        assert_eq!(t.begin(key(1, 0)), Begin::Wait);
    }

    #[test]
    fn recorded_calls_are_bounded_and_do_not_count_for_state_equality() {
        let mut r = RecordedCalls::default();
        r.record(key(1, 1), None);
        r.record(key(1, 2), Some(InodeId(9)));
        assert_eq!(r.get(key(1, 1)), Some(None));
        assert_eq!(r.get(key(1, 2)), Some(Some(InodeId(9))));
        assert_eq!(r.get(key(1, 3)), None);
        for c in 0..KEPT_RECORDED as u64 {
            r.record(key(2, c), None);
        }
        assert_eq!(r.len(), KEPT_RECORDED);
        assert_eq!(r.get(key(1, 1)), None, "the oldest is forgotten");
        assert_eq!(r, RecordedCalls::default());
    }

    #[test]
    fn recorded_calls_round_trip_oldest_first() {
        let mut r = RecordedCalls::default();
        r.record(key(1, 1), None);
        r.record(key(2, 5), Some(InodeId(9)));
        r.record(key(1, 1), None);
        let bytes = postcard::to_stdvec(&r).expect("encode");
        let back: RecordedCalls = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back.len(), 2);
        assert_eq!(back.get(key(1, 1)), Some(None));
        assert_eq!(back.get(key(2, 5)), Some(Some(InodeId(9))));
        assert_eq!(back.order, r.order, "eviction order kept");
    }
}
