//! Erasure coding of stripes: the `Erasure` trait and `RsCodec`, systematic Reed-Solomon over
//! GF(2^8) from reed-solomon-erasure (codec id `CODEC_RS_GF8_RSE`). Pure CPU work: callers on
//! the runtime run it in `spawn_blocking`. Knows shards only, not segments or servers.

pub use crate::error::ErasureError;
use reed_solomon_erasure::galois_8::ReedSolomon;

/// A k+m erasure code over equal-length shards. Coding is byte-position-wise, so any byte
/// range of the shards can be coded or reconstructed on its own.
pub trait Erasure: Send + Sync {
    fn data_shards(&self) -> usize;
    fn parity_shards(&self) -> usize;
    /// Computes the m parity shards of k equal-length data shards.
    fn encode(&self, data: &[&[u8]]) -> Result<Vec<Vec<u8>>, ErasureError> {
        let len = data.first().map(|d| d.len()).unwrap_or(0);
        let mut parity = vec![vec![0u8; len]; self.parity_shards()];
        let mut refs: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
        self.encode_into(data, &mut refs)?;
        Ok(parity)
    }
    /// Computes the m parity shards of k equal-length data shards into `parity` (m
    /// buffers of the shards' length, whatever they hold: every byte is overwritten).
    fn encode_into(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), ErasureError>;
    /// Fills in every missing shard (data and parity) from any k present ones. All present
    /// shards must have the same length.
    fn reconstruct(&self, shards: &mut [Option<Vec<u8>>]) -> Result<(), ErasureError>;
    /// Like `reconstruct`, but only the data shards are guaranteed to be filled in.
    fn reconstruct_data(&self, shards: &mut [Option<Vec<u8>>]) -> Result<(), ErasureError>;
}

/// Reed-Solomon over GF(2^8) (reed-solomon-erasure, SIMD-accelerated). With m = 0 it is a
/// plain split (nothing to reconstruct from).
pub struct RsCodec {
    k: usize,
    m: usize,
    rs: Option<ReedSolomon>,
}

impl RsCodec {
    pub fn new(k: usize, m: usize) -> Result<RsCodec, ErasureError> {
        let layout = |reason: &str| ErasureError::Layout {
            k,
            m,
            reason: reason.into(),
        };
        if k == 0 {
            return Err(layout("need at least one data shard"));
        }
        if k + m > 256 {
            return Err(layout("GF(2^8) allows at most 256 shards"));
        }
        let rs = if m == 0 {
            None
        } else {
            Some(ReedSolomon::new(k, m).map_err(|e| layout(&format!("{e:?}")))?)
        };
        Ok(RsCodec { k, m, rs })
    }

    fn check(&self, shards: &[Option<Vec<u8>>]) -> Result<(), ErasureError> {
        if shards.len() != self.k + self.m {
            return Err(ErasureError::Shards(format!(
                "{} shards given for a {}+{} code",
                shards.len(),
                self.k,
                self.m
            )));
        }
        let mut lens = shards.iter().flatten().map(Vec::len);
        if let Some(first) = lens.next() {
            if lens.any(|l| l != first) {
                return Err(ErasureError::Shards(
                    "present shards differ in length".into(),
                ));
            }
        }
        let present = shards.iter().filter(|s| s.is_some()).count();
        if present < self.k {
            return Err(ErasureError::TooFewShards {
                present,
                needed: self.k,
            });
        }
        Ok(())
    }

    fn run(&self, shards: &mut [Option<Vec<u8>>], data_only: bool) -> Result<(), ErasureError> {
        self.check(shards)?;
        if shards.iter().all(Option::is_some) {
            return Ok(());
        }
        let len = shards.iter().flatten().map(Vec::len).next().unwrap_or(0);
        let Some(rs) = &self.rs else {
            return Err(ErasureError::TooFewShards {
                present: self.k - 1,
                needed: self.k,
            });
        };
        if len == 0 {
            for s in shards.iter_mut() {
                s.get_or_insert_with(Vec::new);
            }
            return Ok(());
        }
        let r = if data_only {
            rs.reconstruct_data(shards)
        } else {
            rs.reconstruct(shards)
        };
        r.map_err(|e| ErasureError::Shards(format!("{e:?}")))
    }
}

impl Erasure for RsCodec {
    fn data_shards(&self) -> usize {
        self.k
    }

    fn parity_shards(&self) -> usize {
        self.m
    }

    fn encode_into(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), ErasureError> {
        if data.len() != self.k {
            return Err(ErasureError::Shards(format!(
                "{} data shards given for k = {}",
                data.len(),
                self.k
            )));
        }
        let len = data.first().map(|d| d.len()).unwrap_or(0);
        if data.iter().any(|d| d.len() != len) {
            return Err(ErasureError::Shards("data shards differ in length".into()));
        }
        if parity.len() != self.m || parity.iter().any(|p| p.len() != len) {
            return Err(ErasureError::Shards(format!(
                "{} parity buffers given for m = {} shards of {len} bytes",
                parity.len(),
                self.m
            )));
        }
        if let (Some(rs), true) = (&self.rs, len > 0) {
            rs.encode_sep(data, parity)
                .map_err(|e| ErasureError::Shards(format!("{e:?}")))?;
        }
        Ok(())
    }

    fn reconstruct(&self, shards: &mut [Option<Vec<u8>>]) -> Result<(), ErasureError> {
        self.run(shards, false)
    }

    fn reconstruct_data(&self, shards: &mut [Option<Vec<u8>>]) -> Result<(), ErasureError> {
        self.run(shards, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every way of losing up to m of k+m shards must reconstruct the original shards.
    fn all_patterns(k: usize, m: usize, data: &[u8]) {
        let codec = RsCodec::new(k, m).expect("codec");
        let len = data.len().div_ceil(k).max(1);
        let mut padded = data.to_vec();
        padded.resize(len * k, 0);
        let shards: Vec<&[u8]> = padded.chunks(len).collect();
        let parity = codec.encode(&shards).expect("encode");
        let full: Vec<Vec<u8>> = shards.iter().map(|s| s.to_vec()).chain(parity).collect();
        for mask in 0u32..(1 << (k + m)) {
            let lost = mask.count_ones() as usize;
            let mut s: Vec<Option<Vec<u8>>> = full
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    if mask & (1 << i) != 0 {
                        None
                    } else {
                        Some(v.clone())
                    }
                })
                .collect();
            let r = codec.reconstruct(&mut s);
            if lost <= m {
                r.expect("reconstruct");
                let got: Vec<Vec<u8>> = s.into_iter().map(|x| x.expect("filled")).collect();
                assert_eq!(got, full, "k={k} m={m} mask={mask:b}");
            } else {
                assert!(
                    matches!(r, Err(ErasureError::TooFewShards { .. })),
                    "k={k} m={m} mask={mask:b}"
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn any_k_of_k_plus_m_reconstructs(data in proptest::collection::vec(any::<u8>(), 1..2000)) {
            all_patterns(4, 2, &data);
            all_patterns(2, 1, &data);
            all_patterns(3, 3, &data);
            all_patterns(1, 2, &data);
        }

        #[test]
        fn ranges_reconstruct_independently(data in proptest::collection::vec(any::<u8>(), 64..2000), a in 0usize..64, lost in 0usize..6) {
            // Reconstructing bytes [a, b) of every shard from [a, b) of the survivors.
            let codec = RsCodec::new(4, 2).expect("codec");
            let len = data.len().div_ceil(4);
            let mut padded = data.clone();
            padded.resize(len * 4, 0);
            let shards: Vec<&[u8]> = padded.chunks(len).collect();
            let parity = codec.encode(&shards).expect("encode");
            let full: Vec<Vec<u8>> = shards.iter().map(|s| s.to_vec()).chain(parity).collect();
            let a = a.min(len - 1);
            let b = len;
            let mut s: Vec<Option<Vec<u8>>> = full.iter().map(|v| Some(v[a..b].to_vec())).collect();
            s[lost] = None;
            codec.reconstruct_data(&mut s).expect("reconstruct");
            if lost < 4 {
                prop_assert_eq!(s[lost].as_deref(), Some(&full[lost][a..b]));
            }
        }
    }

    #[test]
    fn encode_into_overwrites_whatever_the_buffers_held() {
        let codec = RsCodec::new(4, 2).expect("codec");
        let data: Vec<Vec<u8>> = (0..4u8)
            .map(|i| {
                (0..1000u32)
                    .map(|x| (x as u8).wrapping_mul(i + 3))
                    .collect()
            })
            .collect();
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let want = codec.encode(&refs).expect("encode");
        let mut bufs = vec![vec![0xa5u8; 1000], vec![0x5au8; 1000]];
        let mut out: Vec<&mut [u8]> = bufs.iter_mut().map(Vec::as_mut_slice).collect();
        codec.encode_into(&refs, &mut out).expect("encode_into");
        assert_eq!(bufs, want);
        let mut short = [vec![0u8; 999], vec![0u8; 1000]];
        let mut out: Vec<&mut [u8]> = short.iter_mut().map(Vec::as_mut_slice).collect();
        assert!(codec.encode_into(&refs, &mut out).is_err());
    }

    #[test]
    fn bad_layouts_and_inputs_are_errors() {
        assert!(RsCodec::new(0, 2).is_err());
        assert!(RsCodec::new(200, 100).is_err());
        let c = RsCodec::new(2, 1).expect("codec");
        assert!(c.encode(&[b"ab".as_slice()]).is_err());
        assert!(c.encode(&[b"ab".as_slice(), b"a".as_slice()]).is_err());
        let mut s = vec![Some(vec![1u8, 2]), Some(vec![1u8]), None];
        assert!(c.reconstruct(&mut s).is_err());
        let plain = RsCodec::new(3, 0).expect("m = 0");
        assert!(plain
            .encode(&[b"a".as_slice(), b"b".as_slice(), b"c".as_slice()])
            .expect("enc")
            .is_empty());
        let mut s = vec![Some(vec![1u8]), None, Some(vec![3u8])];
        assert!(plain.reconstruct(&mut s).is_err());
    }
}
