//! Linearizability checking of a recorded history of one object (Wing & Gong search with
//! Lowe's memoization, as in porcupine): each operation has an invoke and a complete time;
//! the history is linearizable when some total order of the operations, consistent with
//! real time (an operation that completed before another was invoked comes first), is a
//! legal sequential history of the object's [`Model`]. Two models: a read/write register
//! ([`RegOp`], [`check_register`]) and a file with an 8-byte head, appended 8-byte records
//! and whole-file replacement by rename ([`FileOp`], [`check_file`]). It owns only the pure
//! check and the report of a violation; it must not do any I/O.

use std::collections::HashSet;
use std::fmt::{Debug, Write as _};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What one operation did to the register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegOp {
    /// Wrote this value.
    Write(u64),
    /// Read this value.
    Read(u64),
}

/// A sequential specification: the object's state and what each operation does to it.
pub trait Model {
    type State: Clone + Eq + Hash + Debug;
    type Op: Clone + Debug;
    /// The state after `op`, or `None` when `op` cannot happen in `state` (a read that
    /// returned something else).
    fn step(state: &Self::State, op: &Self::Op) -> Option<Self::State>;
    /// The values `op` writes (for the "never written" check).
    fn writes(op: &Self::Op) -> Vec<u64>;
    /// The values `op` observed (for the "never written" check).
    fn reads(op: &Self::Op) -> Vec<u64>;
    /// One line of a report: kind and value(s).
    fn show(op: &Self::Op) -> String;
    /// The values a state holds (what a read of the initial state may return).
    fn values(state: &Self::State) -> Vec<u64>;
}

/// The register model: `Write(v)` sets it, `Read(v)` returns it.
pub struct Register;

impl Model for Register {
    type State = u64;
    type Op = RegOp;
    fn step(state: &u64, op: &RegOp) -> Option<u64> {
        match *op {
            RegOp::Write(v) => Some(v),
            RegOp::Read(v) => (v == *state).then_some(*state),
        }
    }
    fn writes(op: &RegOp) -> Vec<u64> {
        match *op {
            RegOp::Write(v) => vec![v],
            RegOp::Read(_) => Vec::new(),
        }
    }
    fn reads(op: &RegOp) -> Vec<u64> {
        match *op {
            RegOp::Read(v) => vec![v],
            RegOp::Write(_) => Vec::new(),
        }
    }
    fn values(state: &u64) -> Vec<u64> {
        vec![*state]
    }
    fn show(op: &RegOp) -> String {
        match *op {
            RegOp::Write(v) => format!("write {v:#018x}"),
            RegOp::Read(v) => format!("read  {v:#018x}"),
        }
    }
}

/// What one operation did to a file made of an 8-byte head and appended 8-byte records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileOp {
    /// pwrite of the head (bytes 0..8); the records stay.
    Write(u64),
    /// O_APPEND write of one record.
    Append(u64),
    /// A new file holding just the head `v` renamed over the path (the records are gone).
    Replace(u64),
    /// Read the whole file: the head and the records in file order.
    Read { head: u64, records: Vec<u64> },
}

/// The state of a [`FileOp`] file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct FileState {
    pub head: u64,
    pub records: Vec<u64>,
}

/// The file model ([`FileOp`]).
pub struct AppendFile;

impl Model for AppendFile {
    type State = FileState;
    type Op = FileOp;
    fn step(s: &FileState, op: &FileOp) -> Option<FileState> {
        match op {
            FileOp::Write(v) => Some(FileState {
                head: *v,
                records: s.records.clone(),
            }),
            FileOp::Append(v) => {
                let mut n = s.clone();
                n.records.push(*v);
                Some(n)
            }
            FileOp::Replace(v) => Some(FileState {
                head: *v,
                records: Vec::new(),
            }),
            FileOp::Read { head, records } => {
                (*head == s.head && *records == s.records).then(|| s.clone())
            }
        }
    }
    fn writes(op: &FileOp) -> Vec<u64> {
        match op {
            FileOp::Write(v) | FileOp::Append(v) | FileOp::Replace(v) => vec![*v],
            FileOp::Read { .. } => Vec::new(),
        }
    }
    fn reads(op: &FileOp) -> Vec<u64> {
        match op {
            FileOp::Read { head, records } => std::iter::once(*head)
                .chain(records.iter().copied())
                .collect(),
            _ => Vec::new(),
        }
    }
    fn values(s: &FileState) -> Vec<u64> {
        std::iter::once(s.head)
            .chain(s.records.iter().copied())
            .collect()
    }
    fn show(op: &FileOp) -> String {
        match op {
            FileOp::Write(v) => format!("write   {v:#018x}"),
            FileOp::Append(v) => format!("append  {v:#018x}"),
            FileOp::Replace(v) => format!("replace {v:#018x}"),
            FileOp::Read { head, records } => {
                let r: Vec<String> = records.iter().map(|v| format!("{v:#x}")).collect();
                format!("read    {head:#018x} + [{}]", r.join(", "))
            }
        }
    }
}

/// One completed operation of the history.
#[derive(Clone, Debug)]
pub struct Operation<O = RegOp> {
    /// Who did it (for reports), e.g. "m2/t1".
    pub client: String,
    pub op: O,
    pub invoke: Instant,
    pub complete: Instant,
}

/// The answer of [`check_register`].
#[derive(Debug)]
pub enum Verdict {
    /// A linearization exists.
    Linearizable,
    /// None exists; a readable excerpt of the history around where the search got stuck.
    Violation(String),
    /// The search exceeded its step budget (neither proven nor refuted).
    Unknown(String),
}

/// Search steps after which [`check_register`] gives up with [`Verdict::Unknown`].
pub const STEP_LIMIT: u64 = 20_000_000;

/// Checks a register history (initial value `init`). Operations whose effect is unknown
/// (failed calls) must not be in `ops`.
pub fn check_register(init: u64, ops: &[Operation], origin: Instant) -> Verdict {
    check::<Register>(init, ops, origin)
}

/// Checks a [`FileOp`] history of a file that starts as `init`.
pub fn check_file(init: FileState, ops: &[Operation<FileOp>], origin: Instant) -> Verdict {
    check::<AppendFile>(init, ops, origin)
}

/// Checks a history of model `M` starting in `init`.
pub fn check<M: Model>(init: M::State, ops: &[Operation<M::Op>], origin: Instant) -> Verdict {
    if ops.is_empty() {
        return Verdict::Linearizable;
    }
    // A read of a value nobody wrote can never be linearized: say so plainly.
    let written: HashSet<u64> = ops.iter().flat_map(|o| M::writes(&o.op)).collect();
    let initial: HashSet<u64> = M::values(&init).into_iter().collect();
    for (i, o) in ops.iter().enumerate() {
        if let Some(v) = M::reads(&o.op)
            .into_iter()
            .find(|v| !initial.contains(v) && !written.contains(v))
        {
            return Verdict::Violation(format!(
                "read of a value never written ({v:#x}; initial state {init:?}):\n{}",
                describe_ops::<M>(ops, &[i], origin)
            ));
        }
    }
    let mut s = Search::new(ops);
    s.run::<M>(init, ops, origin)
}

/// An event of the doubly linked list the search lifts operations out of.
#[derive(Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
    /// Index of the matching return (for a call) entry.
    partner: usize,
    prev: usize,
    next: usize,
}

const NIL: usize = usize::MAX;

struct Search {
    /// Index 0 is the head sentinel.
    e: Vec<Entry>,
}

impl Search {
    fn new<O>(ops: &[Operation<O>]) -> Search {
        // (time, is_return, op): calls before returns at equal times (treated as overlapping).
        let mut ev: Vec<(Instant, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, o) in ops.iter().enumerate() {
            ev.push((o.invoke, false, i));
            ev.push((o.complete.max(o.invoke), true, i));
        }
        ev.sort();
        let mut e = vec![Entry {
            op: NIL,
            is_call: false,
            partner: NIL,
            prev: NIL,
            next: NIL,
        }];
        let mut call_of = vec![NIL; ops.len()];
        let mut ret_of = vec![NIL; ops.len()];
        for (k, &(_, is_ret, op)) in ev.iter().enumerate() {
            let idx = k + 1;
            e.push(Entry {
                op,
                is_call: !is_ret,
                partner: NIL,
                prev: idx - 1,
                next: NIL,
            });
            e[idx - 1].next = idx;
            if is_ret {
                ret_of[op] = idx;
            } else {
                call_of[op] = idx;
            }
        }
        for op in 0..ops.len() {
            e[call_of[op]].partner = ret_of[op];
            e[ret_of[op]].partner = call_of[op];
        }
        Search { e }
    }

    /// Removes the call entry `c` and its return from the list.
    fn lift(&mut self, c: usize) {
        let r = self.e[c].partner;
        for x in [c, r] {
            let (p, n) = (self.e[x].prev, self.e[x].next);
            self.e[p].next = n;
            if n != NIL {
                self.e[n].prev = p;
            }
        }
    }

    /// Puts back what `lift(c)` removed (in reverse order).
    fn unlift(&mut self, c: usize) {
        let r = self.e[c].partner;
        for x in [r, c] {
            let (p, n) = (self.e[x].prev, self.e[x].next);
            self.e[p].next = x;
            if n != NIL {
                self.e[n].prev = x;
            }
        }
    }

    fn run<M: Model>(
        &mut self,
        init: M::State,
        ops: &[Operation<M::Op>],
        origin: Instant,
    ) -> Verdict {
        let words = ops.len().div_ceil(64);
        let mut linearized = vec![0u64; words];
        let mut cache: HashSet<(Vec<u64>, M::State)> = HashSet::new();
        let mut stack: Vec<(usize, M::State)> = Vec::new();
        let mut state = init.clone();
        let mut cur = self.e[0].next;
        let mut steps = 0u64;
        // Deepest point reached: (linearized ops in order, state there).
        let mut best: (Vec<usize>, M::State) = (Vec::new(), init.clone());
        loop {
            if self.e[0].next == NIL {
                return Verdict::Linearizable;
            }
            steps += 1;
            if steps > STEP_LIMIT {
                return Verdict::Unknown(format!(
                    "gave up after {STEP_LIMIT} search steps ({} operations)",
                    ops.len()
                ));
            }
            let entry = self.e[cur];
            if entry.is_call {
                if let Some(next_state) = M::step(&state, &ops[entry.op].op) {
                    let (w, b) = (entry.op / 64, entry.op % 64);
                    let mut next = linearized.clone();
                    next[w] |= 1 << b;
                    if cache.insert((next.clone(), next_state.clone())) {
                        stack.push((cur, std::mem::replace(&mut state, next_state)));
                        linearized = next;
                        self.lift(cur);
                        if stack.len() > best.0.len() {
                            best = (
                                stack.iter().map(|(c, _)| self.e[*c].op).collect(),
                                state.clone(),
                            );
                        }
                        cur = self.e[0].next;
                        continue;
                    }
                }
                cur = entry.next;
            } else {
                // A return: its operation must have been linearized before this point.
                let Some((c, st)) = stack.pop() else {
                    return Verdict::Violation(report::<M>(ops, &best, &init, origin));
                };
                state = st;
                let op = self.e[c].op;
                linearized[op / 64] &= !(1 << (op % 64));
                self.unlift(c);
                cur = self.e[c].next;
            }
        }
    }
}

/// How many linearized operations a violation report shows before the stuck point.
const REPORT_TAIL: usize = 12;
/// How many pending operations a violation report lists at most.
const REPORT_PENDING: usize = 24;

/// The text of a violation: the deepest partial linearization found (`best`: operation
/// indices in order, and the state after them), its last operations (in linearization
/// order), every operation real time allows next (invoked before the first pending
/// completion) with why it cannot go there, then the other pending operations by invoke
/// time. Never empty: each part says so when it has nothing to show.
fn report<M: Model>(
    ops: &[Operation<M::Op>],
    best: &(Vec<usize>, M::State),
    init: &M::State,
    origin: Instant,
) -> String {
    let (order, state) = best;
    let done: HashSet<usize> = order.iter().copied().collect();
    let mut rest: Vec<usize> = (0..ops.len()).filter(|i| !done.contains(i)).collect();
    rest.sort_by_key(|&i| (ops[i].invoke, i));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "no linearization of {} operations (initial state {init:x?}); deepest partial \
         linearization: {} of {} ops, state there: {state:x?}",
        ops.len(),
        order.len(),
        ops.len()
    );
    let tail = &order[order.len().saturating_sub(REPORT_TAIL)..];
    let _ = writeln!(
        s,
        "last {} linearized operations (in linearization order; times in ms since the start):",
        tail.len()
    );
    if tail.is_empty() {
        let _ = writeln!(s, "  (none: no operation can be linearized first)");
    }
    s.push_str(&describe_ops::<M>(ops, tail, origin));
    // Real time allows next exactly the pending operations invoked before the first
    // pending completion; the model refused each of them in `state`.
    let Some(first_done) = rest.iter().map(|&i| ops[i].complete).min() else {
        let _ = writeln!(
            s,
            "  (no pending operation: report of a complete linearization)"
        );
        return s;
    };
    let candidates: Vec<usize> = rest
        .iter()
        .copied()
        .filter(|&i| ops[i].invoke <= first_done)
        .collect();
    let _ = writeln!(
        s,
        "{} candidates for the next place (invoked before the first pending completion at \
         {:.3} ms), none possible in the state reached:",
        candidates.len(),
        ms_since(origin, first_done)
    );
    for &i in &candidates {
        let why = match M::step(state, &ops[i].op) {
            None => "refused by the model in that state".to_string(),
            Some(_) => "allowed by the model, but every continuation after it failed".to_string(),
        };
        s.push_str(&describe_ops::<M>(ops, &[i], origin));
        let _ = writeln!(s, "         -> {why}");
    }
    let others: Vec<usize> = rest
        .iter()
        .copied()
        .filter(|i| !candidates.contains(i))
        .take(REPORT_PENDING)
        .collect();
    let _ = writeln!(
        s,
        "other operations not linearized ({} in all; the first {} by invoke time):",
        rest.len() - candidates.len(),
        others.len()
    );
    s.push_str(&describe_ops::<M>(ops, &others, origin));
    s
}

fn ms_since(origin: Instant, t: Instant) -> f64 {
    t.saturating_duration_since(origin).as_secs_f64() * 1000.0
}

/// A completion this long after the invoke is shown as "never" (an operation whose effect
/// is unknown may take effect at any time).
const NEVER_AFTER: Duration = Duration::from_secs(86_400);

/// One line per register operation: index, client, kind, value, invoke..complete (ms since
/// origin).
pub fn describe(ops: &[Operation], idx: &[usize], origin: Instant) -> String {
    describe_ops::<Register>(ops, idx, origin)
}

/// One line per operation of model `M` (as [`describe`]).
pub fn describe_ops<M: Model>(ops: &[Operation<M::Op>], idx: &[usize], origin: Instant) -> String {
    let mut s = String::new();
    for &i in idx {
        let o = &ops[i];
        // A call whose effect is unknown completes "never" (far in the future).
        let done = if o.complete.saturating_duration_since(o.invoke) > NEVER_AFTER {
            "     (never)".to_string()
        } else {
            format!("{:>10.3} ms", ms_since(origin, o.complete))
        };
        let _ = writeln!(
            s,
            "  #{i:<5} {:<10} {}  [{:>10.3} ms .. {done}]",
            o.client,
            M::show(&o.op),
            ms_since(origin, o.invoke),
        );
    }
    s
}

/// Shortest and longest latency of the operations (for logs).
pub fn latency_range<O>(ops: &[Operation<O>]) -> (Duration, Duration) {
    let mut lo = Duration::MAX;
    let mut hi = Duration::ZERO;
    for o in ops {
        let d = o.complete.saturating_duration_since(o.invoke);
        lo = lo.min(d);
        hi = hi.max(d);
    }
    if ops.is_empty() {
        lo = Duration::ZERO;
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds operations from (client, op, invoke ms, complete ms).
    fn hist(spec: &[(&str, RegOp, u64, u64)]) -> (Vec<Operation>, Instant) {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let ops = spec
            .iter()
            .map(|&(c, op, i, r)| Operation {
                client: c.to_string(),
                op,
                invoke: at(i),
                complete: at(r),
            })
            .collect();
        (ops, t0)
    }

    fn ok(v: &Verdict) -> bool {
        matches!(v, Verdict::Linearizable)
    }

    #[test]
    fn sequential_history_is_linearizable() {
        use RegOp::*;
        let (ops, t0) = hist(&[
            ("a", Read(0), 0, 1),
            ("a", Write(1), 2, 3),
            ("b", Read(1), 4, 5),
            ("b", Write(2), 6, 7),
            ("a", Read(2), 8, 9),
        ]);
        assert!(ok(&check_register(0, &ops, t0)));
    }

    #[test]
    fn concurrent_reads_may_see_either_value() {
        use RegOp::*;
        // w(1) overlaps both reads; r=1 then r=0 is fine only if the reads overlap too.
        let (ops, t0) = hist(&[
            ("a", Write(1), 0, 10),
            ("b", Read(1), 1, 3),
            ("c", Read(0), 2, 4),
        ]);
        assert!(ok(&check_register(0, &ops, t0)));
    }

    #[test]
    fn stale_read_after_write_completed_is_a_violation() {
        use RegOp::*;
        let (ops, t0) = hist(&[
            ("a", Write(1), 0, 1),
            ("b", Read(0), 2, 3), // w(1) completed before: must read 1
        ]);
        match check_register(0, &ops, t0) {
            Verdict::Violation(s) => assert!(s.contains("read"), "{s}"),
            v => panic!("expected a violation, got {v:?}"),
        }
    }

    #[test]
    fn new_then_old_is_a_violation() {
        use RegOp::*;
        // r=1 completes before r=0 starts while w(1) is still pending: not linearizable.
        let (ops, t0) = hist(&[
            ("a", Write(1), 0, 100),
            ("b", Read(1), 10, 20),
            ("c", Read(0), 30, 40),
        ]);
        assert!(matches!(check_register(0, &ops, t0), Verdict::Violation(_)));
    }

    #[test]
    fn unwritten_value_is_a_violation() {
        use RegOp::*;
        let (ops, t0) = hist(&[("a", Write(1), 0, 1), ("b", Read(7), 2, 3)]);
        match check_register(0, &ops, t0) {
            Verdict::Violation(s) => assert!(s.contains("never written"), "{s}"),
            v => panic!("expected a violation, got {v:?}"),
        }
    }

    fn fhist(spec: &[(&str, FileOp, u64, u64)]) -> (Vec<Operation<FileOp>>, Instant) {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let ops = spec
            .iter()
            .map(|(c, op, i, r)| Operation {
                client: c.to_string(),
                op: op.clone(),
                invoke: at(*i),
                complete: at(*r),
            })
            .collect();
        (ops, t0)
    }

    fn read(head: u64, records: &[u64]) -> FileOp {
        FileOp::Read {
            head,
            records: records.to_vec(),
        }
    }

    #[test]
    fn file_appends_writes_and_replaces_in_order_are_linearizable() {
        use FileOp::*;
        let (ops, t0) = fhist(&[
            ("a", Append(1), 0, 1),
            ("b", Append(2), 2, 3),
            ("a", Write(9), 4, 5),
            ("c", read(9, &[1, 2]), 6, 7),
            ("b", Replace(5), 8, 9),
            ("c", read(5, &[]), 10, 11),
            ("a", Append(3), 12, 13),
            ("c", read(5, &[3]), 14, 15),
        ]);
        assert!(ok(&check_file(FileState::default(), &ops, t0)));
    }

    #[test]
    fn concurrent_appends_may_land_in_either_order() {
        use FileOp::*;
        let (ops, t0) = fhist(&[
            ("a", Append(1), 0, 10),
            ("b", Append(2), 1, 10),
            ("c", read(0, &[2, 1]), 11, 12),
        ]);
        assert!(ok(&check_file(FileState::default(), &ops, t0)));
    }

    #[test]
    fn a_missing_or_reordered_append_is_a_violation() {
        use FileOp::*;
        // Both appends completed before the read: it must see both, in their order.
        let (ops, t0) = fhist(&[
            ("a", Append(1), 0, 1),
            ("b", Append(2), 2, 3),
            ("c", read(0, &[2]), 4, 5),
        ]);
        assert!(matches!(
            check_file(FileState::default(), &ops, t0),
            Verdict::Violation(_)
        ));
        let (ops, t0) = fhist(&[
            ("a", Append(1), 0, 1),
            ("b", Append(2), 2, 3),
            ("c", read(0, &[2, 1]), 4, 5),
        ]);
        assert!(matches!(
            check_file(FileState::default(), &ops, t0),
            Verdict::Violation(_)
        ));
    }

    #[test]
    fn records_survive_a_head_write_but_not_a_replace() {
        use FileOp::*;
        let (ops, t0) = fhist(&[
            ("a", Append(1), 0, 1),
            ("b", Replace(7), 2, 3),
            ("c", read(7, &[1]), 4, 5),
        ]);
        assert!(matches!(
            check_file(FileState::default(), &ops, t0),
            Verdict::Violation(_)
        ));
        let (ops, t0) = fhist(&[
            ("a", Append(1), 0, 1),
            ("b", Write(7), 2, 3),
            ("c", read(7, &[1]), 4, 5),
        ]);
        assert!(ok(&check_file(FileState::default(), &ops, t0)));
    }

    #[test]
    fn a_maybe_applied_append_may_show_up_late_or_never() {
        use FileOp::*;
        // A failed append stays pending to the end of the history.
        let never = 1_000_000;
        let (ops, t0) = fhist(&[
            ("a", Append(1), 0, never),
            ("c", read(0, &[]), 4, 5),
            ("c", read(0, &[1]), 6, 7),
        ]);
        assert!(ok(&check_file(FileState::default(), &ops, t0)));
        let (ops, t0) = fhist(&[("a", Append(1), 0, never), ("c", read(0, &[]), 4, 5)]);
        assert!(ok(&check_file(FileState::default(), &ops, t0)));
    }

    #[test]
    fn a_violation_report_shows_the_ops_around_the_stuck_point() {
        use FileOp::*;
        // 30 sequential ops, then a read that misses a completed append (planted).
        let mut spec: Vec<(String, FileOp, u64, u64)> = Vec::new();
        let mut records = Vec::new();
        for i in 0..30u64 {
            let c = format!("m{}/t{}", i % 3, i % 2);
            if i % 2 == 0 {
                records.push(0x100 + i);
                spec.push((c, Append(0x100 + i), i * 10, i * 10 + 5));
            } else {
                spec.push((c, read(0, &records), i * 10, i * 10 + 5));
            }
        }
        let mut stale = records.clone();
        stale.pop();
        spec.push(("m2/t1".into(), read(0, &stale), 400, 405));
        spec.push(("m1/t0".into(), Append(0x999), 500, 505));
        let spec: Vec<(&str, FileOp, u64, u64)> = spec
            .iter()
            .map(|(c, o, i, r)| (c.as_str(), o.clone(), *i, *r))
            .collect();
        let (ops, t0) = fhist(&spec);
        let Verdict::Violation(r) = check_file(FileState::default(), &ops, t0) else {
            panic!("expected a violation");
        };
        assert!(r.contains("30 of 32 ops"), "{r}");
        // The last linearized op (#29, a read by m2/t1 at 290 ms) and the stuck read (#30).
        assert!(r.contains("last 12 linearized"), "{r}");
        let line_of = |n: &str| {
            r.lines()
                .find(|l| l.trim_start().starts_with(n))
                .map(str::to_string)
        };
        let last = line_of("#29 ").expect("op #29 listed");
        assert!(
            last.contains("m2/t1") && last.contains("290.000 ms"),
            "{last}"
        );
        let stuck = line_of("#30 ").expect("op #30 listed");
        assert!(
            stuck.contains("read") && stuck.contains("400.000 ms"),
            "{stuck}"
        );
        assert!(r.contains("refused by the model"), "{r}");
        let later = line_of("#31 ").expect("op #31 listed");
        assert!(
            later.contains("append") && later.contains("0x0000000000000999"),
            "{later}"
        );
    }

    #[test]
    fn a_violation_at_the_first_op_says_so() {
        use RegOp::*;
        let (ops, t0) = hist(&[("a", Write(1), 0, 1), ("b", Read(0), 2, 3)]);
        // Read(0) of the initial 0 after Write(1) completed: the write is linearized, the
        // read is stuck.
        let Verdict::Violation(r) = check_register(0, &ops, t0) else {
            panic!("expected a violation");
        };
        assert!(r.contains("1 of 2 ops") && r.contains("#1 "), "{r}");
        let (ops, t0) = hist(&[("b", Read(5), 0, 1), ("a", Write(5), 2, 3)]);
        let Verdict::Violation(r) = check_register(0, &ops, t0) else {
            panic!("expected a violation");
        };
        assert!(
            r.contains("(none: no operation can be linearized first)"),
            "{r}"
        );
        assert!(r.contains("#0 ") && r.contains("refused"), "{r}");
    }

    #[test]
    fn larger_random_sequential_histories_pass_quickly() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let t0 = Instant::now();
        let mut ops = Vec::new();
        let mut val = 0u64;
        for i in 0..400u64 {
            let t = i;
            // Overlapping windows: each op spans 3 ticks, next starts 1 tick later, but the
            // value logic is that of the sequential order (so it is linearizable).
            let op = if rng.random_bool(0.5) {
                val = i + 1;
                RegOp::Write(val)
            } else {
                RegOp::Read(val)
            };
            ops.push(Operation {
                client: format!("c{}", i % 4),
                op,
                invoke: t0 + Duration::from_micros(t * 10),
                complete: t0 + Duration::from_micros(t * 10 + 5),
            });
        }
        assert!(ok(&check_register(0, &ops, t0)));
    }
}
