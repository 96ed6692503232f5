//! Linearizability checking of a recorded history of one read/write register (Wing & Gong
//! search with Lowe's memoization, as in porcupine): each operation has an invoke and a
//! complete time; the history is linearizable when some total order of the operations,
//! consistent with real time (an operation that completed before another was invoked comes
//! first), is a legal sequential register history. It owns only the pure check and the
//! report of a violation; it must not do any I/O.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// What one operation did to the register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegOp {
    /// Wrote this value.
    Write(u64),
    /// Read this value.
    Read(u64),
}

/// One completed operation of the history.
#[derive(Clone, Debug)]
pub struct Operation {
    /// Who did it (for reports), e.g. "m2/t1".
    pub client: String,
    pub op: RegOp,
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
    if ops.is_empty() {
        return Verdict::Linearizable;
    }
    // A read of a value nobody wrote can never be linearized: say so plainly.
    let written: HashSet<u64> = ops
        .iter()
        .filter_map(|o| match o.op {
            RegOp::Write(v) => Some(v),
            RegOp::Read(_) => None,
        })
        .collect();
    for (i, o) in ops.iter().enumerate() {
        if let RegOp::Read(v) = o.op {
            if v != init && !written.contains(&v) {
                return Verdict::Violation(format!(
                    "read of a value never written (nor the initial {init:#x}):\n{}",
                    describe(ops, &[i], origin)
                ));
            }
        }
    }
    let mut s = Search::new(ops);
    s.run(init, ops, origin)
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
    fn new(ops: &[Operation]) -> Search {
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

    fn run(&mut self, init: u64, ops: &[Operation], origin: Instant) -> Verdict {
        let words = ops.len().div_ceil(64);
        let mut linearized = vec![0u64; words];
        let mut cache: HashSet<(Vec<u64>, u64)> = HashSet::new();
        let mut stack: Vec<(usize, u64)> = Vec::new();
        let mut state = init;
        let mut cur = self.e[0].next;
        let mut steps = 0u64;
        // Deepest point reached: (linearized ops in order, state there).
        let mut best: (Vec<usize>, u64) = (Vec::new(), init);
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
                let (ok, next_state) = match ops[entry.op].op {
                    RegOp::Write(v) => (true, v),
                    RegOp::Read(v) => (v == state, state),
                };
                if ok {
                    let (w, b) = (entry.op / 64, entry.op % 64);
                    let mut next = linearized.clone();
                    next[w] |= 1 << b;
                    if cache.insert((next.clone(), next_state)) {
                        stack.push((cur, state));
                        state = next_state;
                        linearized = next;
                        self.lift(cur);
                        if stack.len() > best.0.len() {
                            best = (stack.iter().map(|&(c, _)| self.e[c].op).collect(), state);
                        }
                        cur = self.e[0].next;
                        continue;
                    }
                }
                cur = entry.next;
            } else {
                // A return: its operation must have been linearized before this point.
                let Some((c, st)) = stack.pop() else {
                    return Verdict::Violation(self.report(ops, &best, init, origin));
                };
                state = st;
                let op = self.e[c].op;
                linearized[op / 64] &= !(1 << (op % 64));
                self.unlift(c);
                cur = self.e[c].next;
            }
        }
    }

    /// The deepest partial linearization and the operations that could not follow it.
    fn report(
        &self,
        ops: &[Operation],
        best: &(Vec<usize>, u64),
        init: u64,
        origin: Instant,
    ) -> String {
        let (order, state) = best;
        let done: HashSet<usize> = order.iter().copied().collect();
        let mut rest: Vec<usize> = (0..ops.len()).filter(|i| !done.contains(i)).collect();
        rest.sort_by_key(|&i| ops[i].invoke);
        // The pending operation that completes first is the one nothing can be placed before.
        let first_ret = rest.iter().copied().min_by_key(|&i| ops[i].complete);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "no linearization of {} operations (initial value {init:#x}); deepest partial \
             linearization has {} ops, register = {state:#x} there",
            ops.len(),
            order.len()
        );
        let tail: Vec<usize> = order[order.len().saturating_sub(8)..].to_vec();
        let _ = writeln!(s, "last linearized operations (in linearization order):");
        s.push_str(&describe(ops, &tail, origin));
        if let Some(f) = first_ret {
            let _ = writeln!(
                s,
                "first-completing operation that cannot be linearized next: #{f}"
            );
        }
        let _ = writeln!(s, "next operations not linearized (by invoke time):");
        let show: Vec<usize> = rest.iter().copied().take(16).collect();
        s.push_str(&describe(ops, &show, origin));
        s
    }
}

/// One line per operation: index, client, kind, value, invoke..complete (ms since origin).
pub fn describe(ops: &[Operation], idx: &[usize], origin: Instant) -> String {
    let ms = |t: Instant| t.saturating_duration_since(origin).as_secs_f64() * 1000.0;
    let mut s = String::new();
    for &i in idx {
        let o = &ops[i];
        let (kind, v) = match o.op {
            RegOp::Write(v) => ("write", v),
            RegOp::Read(v) => ("read ", v),
        };
        let _ = writeln!(
            s,
            "  #{i:<4} {:<8} {kind} {v:#018x}  [{:>10.3} ms .. {:>10.3} ms]",
            o.client,
            ms(o.invoke),
            ms(o.complete)
        );
    }
    s
}

/// Shortest and longest latency of the operations (for logs).
pub fn latency_range(ops: &[Operation]) -> (Duration, Duration) {
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
