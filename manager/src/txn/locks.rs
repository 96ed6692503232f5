//! Intent locks of two-phase transactions: which names and inodes an op locks, which a
//! record of an ordinary mutation touches, and whether they conflict. Locks are not stored:
//! they are derived from the `TxBook` (undecided coordinated transactions' local ops and
//! prepared parts), so they survive restarts with the records that made them.
//!
//! What a lock protects is the check its op passed at prepare time, until the op is applied:
//! - `Name(dir, name)` (exclusive): the entry an `AddEntry`/`RemoveEntry` checked or names.
//! - `Inode(ino)` shared: the inode must stay alive (the directory an `AddEntry` adds to,
//!   the inode an `AdjustNlink(+1)` links, the directory a `SetParent` moves).
//! - `Inode(ino)` exclusive: nothing may be added to it or take its last link
//!   (`RemoveDir` checked it empty, `AdjustNlink(-1)` may drop it).
//!
//! Ordinary records touch: an entry → `Name` exclusive + its directory shared; a drop, a
//! link count of 0 or a `..` change → the inode exclusive. Attribute, extent, xattr and open
//! changes lock nothing, so writes to a locked file go on.
//! Must not: wait or decide what happens on conflict (callers do: ordinary mutations wait,
//! participants refuse at once).

use crate::record::Record;
use crate::state::MetaState;
use proto::ids::{InodeId, TxId};
use proto::msg::TxOp;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Name(InodeId, String),
    Inode(InodeId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Shared,
    Exclusive,
}

/// The locks `op` holds while its transaction is undecided/prepared.
pub fn op_keys(op: &TxOp) -> Vec<(Key, Mode)> {
    use Mode::*;
    match op {
        TxOp::CreateInode { .. } => Vec::new(),
        TxOp::AddEntry { dir, name, .. } => vec![
            (Key::Name(*dir, name.clone()), Exclusive),
            (Key::Inode(*dir), Shared),
        ],
        TxOp::RemoveEntry { dir, name, .. } => vec![(Key::Name(*dir, name.clone()), Exclusive)],
        TxOp::AdjustNlink { ino, delta } => {
            vec![(
                Key::Inode(*ino),
                if *delta < 0 { Exclusive } else { Shared },
            )]
        }
        TxOp::SetParent { dir, .. } => vec![(Key::Inode(*dir), Shared)],
        TxOp::RemoveDir { dir } => vec![(Key::Inode(*dir), Exclusive)],
    }
}

/// What an ordinary mutation's record touches, in lock terms.
pub fn record_keys(rec: &Record) -> Vec<(Key, Mode)> {
    use Mode::*;
    match rec {
        Record::Entry { dir, name, .. } | Record::EntryAt { dir, name, .. } => vec![
            (Key::Name(*dir, name.clone()), Exclusive),
            (Key::Inode(*dir), Shared),
        ],
        Record::Drop { ino } => vec![(Key::Inode(*ino), Exclusive)],
        Record::Attr { attr } if attr.nlink == 0 => vec![(Key::Inode(attr.ino), Exclusive)],
        Record::Parent { dir, .. } => vec![(Key::Inode(*dir), Exclusive)],
        _ => Vec::new(),
    }
}

fn clash(a: &(Key, Mode), b: &(Key, Mode)) -> bool {
    a.0 == b.0 && !(a.1 == Mode::Shared && b.1 == Mode::Shared)
}

/// The first transaction (other than `except`) whose locks clash with `keys`.
pub fn conflict(st: &MetaState, keys: &[(Key, Mode)], except: Option<TxId>) -> Option<TxId> {
    if keys.is_empty() {
        return None;
    }
    for (tx, op) in st.book().locked_ops() {
        if Some(tx) == except {
            continue;
        }
        let held = op_keys(op);
        if held.iter().any(|h| keys.iter().any(|k| clash(h, k))) {
            return Some(tx);
        }
    }
    None
}

/// The transaction whose locks the records of an ordinary mutation would break, if any.
pub fn records_conflict(st: &MetaState, recs: &[Record]) -> Option<TxId> {
    let keys: Vec<(Key, Mode)> = recs.iter().flat_map(record_keys).collect();
    conflict(st, &keys, None)
}

/// The transaction whose locks `ops` (about to be locked by `tx`) clash with, if any.
pub fn ops_conflict(st: &MetaState, ops: &[TxOp], tx: TxId) -> Option<TxId> {
    let keys: Vec<(Key, Mode)> = ops.iter().flat_map(op_keys).collect();
    conflict(st, &keys, Some(tx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::ids::SlotId;
    use proto::msg::FileKind;

    fn ino(n: u64) -> InodeId {
        InodeId::new(SlotId(1), n)
    }

    #[test]
    fn shared_locks_coexist_exclusive_ones_do_not() {
        let add = |name: &str| TxOp::AddEntry {
            dir: ino(1),
            name: name.into(),
            ino: ino(9),
            kind: FileKind::File,
            replace: false,
        };
        let a = op_keys(&add("a"));
        let b = op_keys(&add("b"));
        assert!(
            !a.iter().any(|x| b.iter().any(|y| clash(x, y))),
            "two names in one dir"
        );
        let same = op_keys(&add("a"));
        assert!(
            a.iter().any(|x| same.iter().any(|y| clash(x, y))),
            "one name twice"
        );
        let rmdir = op_keys(&TxOp::RemoveDir { dir: ino(1) });
        assert!(
            a.iter().any(|x| rmdir.iter().any(|y| clash(x, y))),
            "add into a dir being removed"
        );
    }

    #[test]
    fn record_keys_lock_names_and_last_links_only() {
        let entry = Record::Entry {
            dir: ino(1),
            name: "x".into(),
            target: None,
        };
        assert_eq!(record_keys(&entry).len(), 2);
        assert!(record_keys(&Record::Truncate {
            ino: ino(2),
            size: 0
        })
        .is_empty());
        assert_eq!(
            record_keys(&Record::Drop { ino: ino(2) }),
            vec![(Key::Inode(ino(2)), Mode::Exclusive)]
        );
    }
}
