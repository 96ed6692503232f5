//! SEEK_DATA / SEEK_HOLE over a file's covered byte spans (committed extents and local
//! dirty ranges, collected by the caller).
//!
//! Owns the pure search only: a byte is data when some span covers it, else a hole (a
//! log-structured store allocates nothing it was not given, so unwritten bytes are holes).
//! Must not do I/O or know where the spans came from.

/// What `lseek` looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seek {
    Data,
    Hole,
}

/// The first offset in `[from, to)` that is data (`Seek::Data`) or a hole (`Seek::Hole`)
/// given the covered spans `[start, end)` (any order, may overlap); `None` when there is
/// none in that range.
pub fn find(spans: &[(u64, u64)], what: Seek, from: u64, to: u64) -> Option<u64> {
    if from >= to {
        return None;
    }
    match what {
        Seek::Data => spans
            .iter()
            .filter(|(s, e)| s < e && *e > from && *s < to)
            .map(|(s, _)| (*s).max(from))
            .min(),
        Seek::Hole => {
            let mut sorted: Vec<(u64, u64)> = spans
                .iter()
                .copied()
                .filter(|(s, e)| s < e && *e > from)
                .collect();
            sorted.sort_unstable();
            let mut at = from;
            for (s, e) in sorted {
                if s > at {
                    break;
                }
                at = at.max(e);
            }
            (at < to).then_some(at)
        }
    }
}

/// `spans` clipped to `[from, to)`, empty ones dropped.
pub fn clip(spans: impl IntoIterator<Item = (u64, u64)>, from: u64, to: u64) -> Vec<(u64, u64)> {
    spans
        .into_iter()
        .map(|(s, e)| (s.max(from), e.min(to)))
        .filter(|(s, e)| s < e)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model: a byte map of the file, searched byte by byte.
    fn model(spans: &[(u64, u64)], what: Seek, from: u64, to: u64) -> Option<u64> {
        (from..to).find(|x| {
            let covered = spans.iter().any(|(s, e)| s <= x && x < e);
            covered == (what == Seek::Data)
        })
    }

    #[test]
    fn data_and_holes_between_spans() {
        let spans = [(10, 20), (30, 40)];
        assert_eq!(find(&spans, Seek::Data, 0, 50), Some(10));
        assert_eq!(find(&spans, Seek::Data, 15, 50), Some(15));
        assert_eq!(find(&spans, Seek::Data, 20, 50), Some(30));
        assert_eq!(find(&spans, Seek::Data, 40, 50), None);
        assert_eq!(find(&spans, Seek::Hole, 0, 50), Some(0));
        assert_eq!(find(&spans, Seek::Hole, 10, 50), Some(20));
        assert_eq!(find(&spans, Seek::Hole, 35, 50), Some(40));
        // A file that ends in data has its hole at the end: not inside [from, to).
        assert_eq!(find(&spans, Seek::Hole, 35, 40), None);
        assert_eq!(find(&spans, Seek::Data, 5, 5), None);
    }

    #[test]
    fn overlapping_and_adjacent_spans_merge_for_holes() {
        // A dirty range over an extent, and an extent that touches the next.
        let spans = [(30, 50), (0, 10), (5, 30), (60, 70)];
        assert_eq!(find(&spans, Seek::Hole, 0, 100), Some(50));
        assert_eq!(find(&spans, Seek::Hole, 55, 100), Some(55));
        assert_eq!(find(&spans, Seek::Data, 50, 100), Some(60));
    }

    #[test]
    fn matches_a_byte_model() {
        let sets: [&[(u64, u64)]; 4] = [
            &[],
            &[(0, 64)],
            &[(3, 9), (9, 12), (20, 21), (7, 25), (40, 41)],
            &[(50, 60), (0, 1), (58, 70), (10, 10)],
        ];
        for spans in sets {
            for from in 0..72 {
                for to in [from, from + 1, 30, 64, 72] {
                    for what in [Seek::Data, Seek::Hole] {
                        assert_eq!(
                            find(spans, what, from, to),
                            model(spans, what, from, to),
                            "{spans:?} {what:?} {from}..{to}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn clip_keeps_only_the_window() {
        assert_eq!(
            clip([(0, 10), (15, 30), (40, 50)], 5, 20),
            vec![(5, 10), (15, 20)]
        );
    }
}
