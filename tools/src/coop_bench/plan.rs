//! What `shoal bench coop` reads, and the bytes it expects: the working set as 1 MiB
//! chunks in files, each mount's read schedule (rotated round-robin or Zipf), and the
//! position-addressable content pattern that lets any read be checked on its own. Pure: no
//! I/O, no clock.

use serde::Serialize;

/// Bytes of one read of the schedule (a chunk of the working set).
pub const CHUNK: u64 = 1 << 20;
/// Chunks per working-set file.
pub const CHUNKS_PER_FILE: u64 = 8;
/// Bytes of one latency sample (one client block).
pub const SAMPLE: u64 = 64 << 10;
/// Distance between latency samples in their file: more than the client's readahead
/// counts as sequential (1 MiB), so that no sample read starts a prefetch.
pub const STRIDE: u64 = 2 << 20;
/// The Zipf exponent (as in YCSB's default).
pub const ZIPF_S: f64 = 0.99;

/// The order in which each mount reads the working set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Pattern {
    /// Every mount reads every chunk once per pass, mount i starting i/N of the way in:
    /// what one mount needs next, its neighbour has just read.
    RoundRobin,
    /// Every mount draws chunks from one Zipf distribution (s = 0.99) over the working set,
    /// hot chunks spread over the files; as many reads per pass as there are chunks.
    Zipf,
}

impl Pattern {
    pub fn name(self) -> &'static str {
        match self {
            Pattern::RoundRobin => "round-robin",
            Pattern::Zipf => "zipf",
        }
    }
}

/// Where chunk `c` of the working set lives: (file index, byte offset in it).
pub fn chunk_place(c: u64) -> (u64, u64) {
    (c / CHUNKS_PER_FILE, (c % CHUNKS_PER_FILE) * CHUNK)
}

/// The number of files and the length of each for a working set of `chunks` chunks.
pub fn files(chunks: u64) -> Vec<u64> {
    let n = chunks.div_ceil(CHUNKS_PER_FILE);
    (0..n)
        .map(|f| (chunks - f * CHUNKS_PER_FILE).min(CHUNKS_PER_FILE) * CHUNK)
        .collect()
}

/// The chunks mount `mount` (of `mounts`) reads, in order, for `passes` passes over a
/// working set of `chunks` chunks. Deterministic for a given `seed`.
pub fn schedule(
    pattern: Pattern,
    mount: usize,
    mounts: usize,
    chunks: u64,
    passes: u32,
    seed: u64,
) -> Vec<u64> {
    let total = chunks as usize * passes as usize;
    if chunks == 0 {
        return Vec::new();
    }
    match pattern {
        Pattern::RoundRobin => {
            let start = mount as u64 * chunks / mounts.max(1) as u64;
            (0..total as u64).map(|j| (start + j) % chunks).collect()
        }
        Pattern::Zipf => {
            let z = Zipf::new(chunks, ZIPF_S);
            let place = Spread::new(chunks, seed);
            let mut rng =
                XorShift::new(seed ^ (mount as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            (0..total)
                .map(|_| place.chunk(z.rank(rng.unit())))
                .collect()
        }
    }
}

/// A Zipf distribution over ranks 0..n (rank 0 the most frequent), by its CDF.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: u64, s: f64) -> Zipf {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n.max(1))
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        for v in &mut cdf {
            *v /= acc;
        }
        Zipf { cdf }
    }

    /// The rank for a uniform draw `u` in [0, 1).
    pub fn rank(&self, u: f64) -> u64 {
        let i = self.cdf.partition_point(|&c| c <= u);
        i.min(self.cdf.len() - 1) as u64
    }
}

/// A fixed permutation of 0..n (Fisher-Yates with a seeded generator): ranks to chunks, so
/// that the hot chunks are not all in the first file.
struct Spread {
    perm: Vec<u64>,
}

impl Spread {
    fn new(n: u64, seed: u64) -> Spread {
        let mut perm: Vec<u64> = (0..n).collect();
        let mut rng = XorShift::new(seed);
        for i in (1..perm.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            perm.swap(i, j);
        }
        Spread { perm }
    }

    fn chunk(&self, rank: u64) -> u64 {
        self.perm[rank as usize]
    }
}

/// A small deterministic generator (xorshift64).
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(splitmix(seed) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A uniform draw in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The bytes of file `file` (of run `run`) at `offset` (a multiple of 8): each 8-byte word
/// depends on the run, the file and its position only, so a read anywhere can be checked
/// without the rest, and bytes of another file or place never match.
pub fn fill(buf: &mut [u8], run: u64, file: u64, offset: u64) {
    debug_assert_eq!(offset % 8, 0);
    let base = splitmix(run ^ file.wrapping_mul(0xa076_1d64_78bd_642f));
    for (i, w) in buf.chunks_mut(8).enumerate() {
        let v = splitmix(base ^ (offset / 8 + i as u64)).to_le_bytes();
        w.copy_from_slice(&v[..w.len()]);
    }
}

/// The latency samples' block order over `blocks` blocks: every block once, shuffled (so
/// that no read looks sequential to the client's readahead).
pub fn sample_order(blocks: u64, seed: u64) -> Vec<u64> {
    Spread::new(blocks, seed ^ 0x5a5a).perm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_rotates_and_covers_every_chunk_each_pass() {
        let s: Vec<Vec<u64>> = (0..4)
            .map(|m| schedule(Pattern::RoundRobin, m, 4, 8, 2, 1))
            .collect();
        assert_eq!(s[0][..8], [0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(s[1][..3], [2, 3, 4]);
        assert_eq!(s[3][..3], [6, 7, 0]);
        for m in &s {
            assert_eq!(m.len(), 16);
            for pass in m.chunks(8) {
                let mut p = pass.to_vec();
                p.sort_unstable();
                assert_eq!(p, (0..8).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn zipf_is_skewed_in_range_and_deterministic() {
        let a = schedule(Pattern::Zipf, 0, 4, 64, 10, 7);
        assert_eq!(a, schedule(Pattern::Zipf, 0, 4, 64, 10, 7));
        assert_ne!(
            a,
            schedule(Pattern::Zipf, 1, 4, 64, 10, 7),
            "mounts draw apart"
        );
        assert_eq!(a.len(), 640);
        assert!(a.iter().all(|&c| c < 64));
        let z = Zipf::new(64, ZIPF_S);
        let mut rng = XorShift::new(3);
        let mut hits = [0u32; 64];
        for _ in 0..10_000 {
            hits[z.rank(rng.unit()) as usize] += 1;
        }
        assert!(hits[0] > 4 * hits[63].max(1), "{hits:?}");
        assert!(hits[0] > hits[1] && hits[1] > hits[10], "{hits:?}");
        assert_eq!(z.rank(0.0), 0);
        assert_eq!(z.rank(0.999_999_999), 63);
    }

    #[test]
    fn files_hold_exactly_the_chunks() {
        assert_eq!(files(8), vec![8 * CHUNK]);
        assert_eq!(files(11), vec![8 * CHUNK, 3 * CHUNK]);
        assert_eq!(chunk_place(9), (1, CHUNK));
        assert!(schedule(Pattern::Zipf, 0, 2, 0, 2, 1).is_empty());
    }

    #[test]
    fn content_is_position_addressable() {
        let mut whole = vec![0u8; 4096];
        fill(&mut whole, 1, 2, 0);
        let mut part = vec![0u8; 1024];
        fill(&mut part, 1, 2, 2048);
        assert_eq!(part, whole[2048..3072]);
        let mut other = vec![0u8; 1024];
        fill(&mut other, 1, 3, 2048);
        assert_ne!(other, part, "another file");
        fill(&mut other, 2, 2, 2048);
        assert_ne!(other, part, "another run");
    }

    #[test]
    fn samples_visit_every_block_once() {
        let mut o = sample_order(32, 9);
        assert_ne!(o, (0..32).collect::<Vec<_>>());
        o.sort_unstable();
        assert_eq!(o, (0..32).collect::<Vec<_>>());
    }
}
