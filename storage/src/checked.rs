//! The search behind reads checked against end-to-end checksums (`proto::chunksum`): given
//! the same byte range of every fragment of a stripe that could be read, find k of them
//! whose decode gives bytes the writer's checksums accept. A fragment that is well formed
//! (its storage CRC matches) but holds other bytes (misdirected, stale, misplaced) is
//! outvoted this way as long as at most m fragments are wrong. Pure CPU work (run it off
//! the async runtime); must not do I/O.

use crate::erasure::Erasure;

/// Where the bytes of a range come from: `len` bytes at `at` (relative to the fetched
/// range) of data fragment `index`, to `out_off` of the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub index: usize,
    pub at: usize,
    pub len: usize,
    pub out_off: usize,
}

/// Decodes that the checksums accepted.
#[derive(Debug, PartialEq, Eq)]
pub struct Consistent {
    pub bytes: Vec<u8>,
    /// Data fragments whose fetched bytes differ from the accepted decode (the wrong ones
    /// among those read).
    pub wrong: Vec<usize>,
    /// Decodes tried.
    pub tried: usize,
}

/// At most this many k-subsets are tried (C(6,4) = 15 for 4+2; C(12,8) = 495 for 8+4).
pub const MAX_TRIES: usize = 4096;

/// The next k-subset of `0..n` after `c` in lexicographic order, if any.
fn next_subset(c: &mut [usize], n: usize) -> bool {
    let k = c.len();
    let mut i = k;
    while i > 0 {
        i -= 1;
        if c[i] < n - k + i {
            c[i] += 1;
            for j in i + 1..k {
                c[j] = c[j - 1] + 1;
            }
            return true;
        }
    }
    false
}

/// Tries k-subsets of the present `shards` (all the same length; `None`: not read) until
/// one decodes to bytes (`out_len`, assembled by `places`) that `check` accepts.
pub fn decode_checked(
    codec: &dyn Erasure,
    k: usize,
    shards: &[Option<Vec<u8>>],
    places: &[Place],
    out_len: usize,
    check: impl Fn(&[u8]) -> bool,
) -> Option<Consistent> {
    let present: Vec<usize> = (0..shards.len()).filter(|i| shards[*i].is_some()).collect();
    if present.len() < k || k == 0 {
        return None;
    }
    let mut pick: Vec<usize> = (0..k).collect();
    let mut tried = 0;
    loop {
        tried += 1;
        let mut trial: Vec<Option<Vec<u8>>> = vec![None; shards.len()];
        for p in &pick {
            trial[present[*p]] = shards[present[*p]].clone();
        }
        if codec.reconstruct_data(&mut trial).is_ok() {
            let mut out = vec![0u8; out_len];
            let mut whole = true;
            for pl in places {
                match trial.get(pl.index).and_then(|s| s.as_ref()) {
                    Some(s) if pl.at + pl.len <= s.len() && pl.out_off + pl.len <= out_len => {
                        out[pl.out_off..pl.out_off + pl.len]
                            .copy_from_slice(&s[pl.at..pl.at + pl.len]);
                    }
                    _ => whole = false,
                }
            }
            if whole && check(&out) {
                let wrong = (0..k)
                    .filter(|i| match (&shards[*i], &trial[*i]) {
                        (Some(read), Some(good)) => read != good,
                        _ => false,
                    })
                    .collect();
                return Some(Consistent {
                    bytes: out,
                    wrong,
                    tried,
                });
            }
        }
        if tried >= MAX_TRIES || !next_subset(&mut pick, present.len()) {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::erasure::RsCodec;

    fn stripe(k: usize, m: usize, fs: usize) -> (RsCodec, Vec<Vec<u8>>) {
        let codec = RsCodec::new(k, m).expect("codec");
        let data: Vec<Vec<u8>> = (0..k)
            .map(|i| (0..fs).map(|j| (i * 131 + j * 7) as u8).collect())
            .collect();
        let refs: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
        let parity = codec.encode(&refs).expect("encode");
        (codec, data.into_iter().chain(parity).collect())
    }

    /// Places reading all of data fragments 0..k back to back.
    fn all_data(k: usize, fs: usize) -> Vec<Place> {
        (0..k)
            .map(|i| Place {
                index: i,
                at: 0,
                len: fs,
                out_off: i * fs,
            })
            .collect()
    }

    fn run(frags: &[Vec<u8>], codec: &RsCodec, k: usize, bad: &[usize]) -> Option<Consistent> {
        let fs = frags[0].len();
        let want: Vec<u8> = frags[..k].concat();
        let mut shards: Vec<Option<Vec<u8>>> = frags.iter().cloned().map(Some).collect();
        for (n, b) in bad.iter().enumerate() {
            // Well-formed but other bytes: another fragment's content.
            shards[*b] = Some(frags[(b + 1 + n) % frags.len()].clone());
            assert_ne!(shards[*b].as_ref(), Some(&frags[*b]));
        }
        let crc = proto::crc32c(&want);
        decode_checked(codec, k, &shards, &all_data(k, fs), k * fs, |b| {
            proto::crc32c(b) == crc
        })
    }

    #[test]
    fn up_to_m_wrong_fragments_are_outvoted_and_named() {
        let (codec, frags) = stripe(4, 2, 64);
        let want: Vec<u8> = frags[..4].concat();
        let one = run(&frags, &codec, 4, &[2]).expect("one wrong");
        assert_eq!(one.bytes, want);
        assert_eq!(one.wrong, vec![2]);
        let two = run(&frags, &codec, 4, &[0, 3]).expect("two wrong");
        assert_eq!(two.bytes, want);
        assert_eq!(two.wrong, vec![0, 3]);
        // A wrong parity fragment alone does not matter to the data.
        let par = run(&frags, &codec, 4, &[5]).expect("parity wrong");
        assert!(par.wrong.is_empty());
    }

    #[test]
    fn more_than_m_wrong_fragments_give_nothing() {
        let (codec, frags) = stripe(4, 2, 64);
        assert!(run(&frags, &codec, 4, &[0, 1, 4]).is_none());
        assert!(run(&frags, &codec, 4, &[1, 2, 3]).is_none());
    }

    #[test]
    fn missing_fragments_count_against_the_m() {
        let (codec, frags) = stripe(4, 2, 32);
        let want: Vec<u8> = frags[..4].concat();
        let crc = proto::crc32c(&want);
        let mut shards: Vec<Option<Vec<u8>>> = frags.iter().cloned().map(Some).collect();
        shards[4] = None;
        shards[1] = Some(frags[0].clone());
        let got = decode_checked(&codec, 4, &shards, &all_data(4, 32), 128, |b| {
            proto::crc32c(b) == crc
        })
        .expect("one missing, one wrong");
        assert_eq!(got.bytes, want);
        shards[0] = None;
        assert!(
            decode_checked(&codec, 4, &shards, &all_data(4, 32), 128, |b| {
                proto::crc32c(b) == crc
            })
            .is_none()
        );
    }

    #[test]
    fn subsets_are_enumerated_once_each() {
        let mut c = vec![0, 1, 2];
        let mut n = 1;
        while next_subset(&mut c, 5) {
            n += 1;
        }
        assert_eq!(n, 10);
    }
}
