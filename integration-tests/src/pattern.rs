//! Deterministic file contents: byte `o` of stream `seed` is a pure function of `(seed, o)`,
//! so any range can be generated or checked without keeping the data.

/// Fills `buf` with the bytes of stream `seed` starting at absolute offset `offset`.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut o = offset;
    let mut i = 0;
    while i < buf.len() {
        let word = mix(seed, o / 8).to_le_bytes();
        let start = (o % 8) as usize;
        let n = (8 - start).min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&word[start..start + n]);
        i += n;
        o += n as u64;
    }
}

/// `len` bytes of stream `seed` at `offset`.
pub fn bytes(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    fill(seed, offset, &mut v);
    v
}

/// The first byte of a buffer that differs from its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Stream offset of the byte.
    pub offset: u64,
    /// Its index in the checked buffer, and the buffer's length.
    pub index: usize,
    pub len: usize,
    pub got: u8,
    pub want: u8,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "byte {} (offset {} in this buffer of {}) is {:#04x}, expected {:#04x}",
            self.offset, self.index, self.len, self.got, self.want
        )
    }
}

impl std::error::Error for Mismatch {}

/// Checks `buf` against stream `seed` at `offset`; the first mismatch as the error.
pub fn check(seed: u64, offset: u64, buf: &[u8]) -> Result<(), Mismatch> {
    let mut want = vec![0; buf.len()];
    fill(seed, offset, &mut want);
    match first_difference(&want, buf) {
        None => Ok(()),
        Some(i) => Err(Mismatch {
            offset: offset + i as u64,
            index: i,
            len: buf.len(),
            got: buf[i],
            want: want[i],
        }),
    }
}

/// Index of the first differing byte (a length difference counts at the shorter length).
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    let n = a.len().min(b.len());
    (0..n)
        .find(|&i| a[i] != b[i])
        .or((a.len() != b.len()).then_some(n))
}

/// splitmix64 of `seed` and `word`.
fn mix(seed: u64, word: u64) -> u64 {
    let mut z = seed ^ word.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Reads `p` in 1 MiB pieces and checks size and every byte against stream `seed`.
pub fn check_file(p: &std::path::Path, seed: u64, len: usize) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(p).with_context(|| format!("open {}", p.display()))?;
    let size = f.metadata()?.len();
    anyhow::ensure!(
        size == len as u64,
        "{}: size {size}, expected {len}",
        p.display()
    );
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(buf.len());
        f.read_exact_at(&mut buf[..n], off as u64)
            .with_context(|| format!("read {} at {off}", p.display()))?;
        check(seed, off as u64, &buf[..n]).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        off += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_range_matches_the_whole_stream() {
        let whole = bytes(7, 0, 100);
        for off in 0..20 {
            for len in [0, 1, 7, 8, 9, 33] {
                assert_eq!(bytes(7, off, len), whole[off as usize..off as usize + len]);
            }
        }
        assert!(check(7, 3, &whole[3..50]).is_ok());
        assert_ne!(bytes(7, 0, 64), bytes(8, 0, 64));
    }

    #[test]
    fn check_reports_the_first_bad_byte() {
        let mut b = bytes(1, 10, 32);
        b[5] ^= 1;
        let e = check(1, 10, &b).expect_err("mismatch");
        assert_eq!((e.offset, e.index), (15, 5), "{e}");
        assert!(e.to_string().starts_with("byte 15 "), "{e}");
        assert_eq!(first_difference(b"ab", b"abc"), Some(2));
        assert_eq!(first_difference(b"ab", b"ab"), None);
    }
}
