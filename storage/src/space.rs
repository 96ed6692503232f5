//! Honest space: how many raw fragment bytes stripes can really use, given each storage
//! server's free (or total) space. A stripe of width k+m puts one fragment on each of k+m
//! distinct servers, so a server can never take more than one column of every stripe, and
//! servers that share one file system (e.g. a local `shoal up`, all on one disk) share its
//! free space, while each server may also be bounded by its own configured capacity.
//! Pure arithmetic; it must not do I/O.

/// One server's space: the file system it lives on (0 = unknown, counted alone), the bytes
/// the server itself may still take (its capacity bound), and the bytes of its file system
/// (shared with the other servers on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerSpace {
    pub fs_id: u64,
    pub bytes: u64,
    pub shared: u64,
}

impl ServerSpace {
    /// A server bounded by its file system only.
    pub fn on_fs(fs_id: u64, bytes: u64) -> ServerSpace {
        ServerSpace {
            fs_id,
            bytes,
            shared: bytes,
        }
    }
}

/// Largest raw bytes `width * t` such that stripes of `width` distinct servers with `t`
/// bytes per column fit: `width * t <= sum over file systems of min(shared, sum over its
/// servers of min(bytes, t))`. Multiply by k/(k+m) for data bytes. Zero when fewer than
/// `width` servers are given.
pub fn usable_raw(servers: &[ServerSpace], width: usize) -> u64 {
    if width == 0 || servers.len() < width {
        return 0;
    }
    // File systems: (the bytes of each server on it, the bytes of the fs). Servers on an
    // unknown fs count alone.
    let mut groups: Vec<(Vec<u64>, u64)> = Vec::new();
    let mut by_fs: std::collections::BTreeMap<u64, (Vec<u64>, u64)> = Default::default();
    for s in servers {
        if s.fs_id == 0 {
            groups.push((vec![s.bytes], s.bytes.min(s.shared)));
        } else {
            let e = by_fs.entry(s.fs_id).or_insert((Vec::new(), s.shared));
            e.0.push(s.bytes);
            e.1 = e.1.min(s.shared);
        }
    }
    groups.extend(by_fs.into_values());
    let fits = |t: u64| -> bool {
        let have: u128 = groups
            .iter()
            .map(|(own, fs)| {
                let cols: u128 = own.iter().map(|b| (*b).min(t) as u128).sum();
                cols.min(*fs as u128)
            })
            .sum();
        have >= width as u128 * t as u128
    };
    // fits() is monotone (true up to the answer, false after): binary search on t.
    let (mut lo, mut hi) = (0u64, servers.iter().map(|s| s.bytes).max().unwrap_or(0));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo.saturating_mul(width as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alone(bytes: &[u64]) -> Vec<ServerSpace> {
        bytes.iter().map(|&b| ServerSpace::on_fs(0, b)).collect()
    }

    #[test]
    fn servers_on_one_disk_count_it_once() {
        let shared: Vec<ServerSpace> = (0..6).map(|_| ServerSpace::on_fs(42, 600)).collect();
        assert_eq!(usable_raw(&shared, 6), 600, "not 6 x 600");
    }

    #[test]
    fn capacities_bound_servers_on_a_big_shared_disk() {
        // Six servers of 100 bytes capacity each on one disk with 10 000 free: 600.
        let capped: Vec<ServerSpace> = (0..6)
            .map(|_| ServerSpace {
                fs_id: 42,
                bytes: 100,
                shared: 10_000,
            })
            .collect();
        assert_eq!(usable_raw(&capped, 6), 600);
        // The disk still bounds them when it is the smaller.
        let small: Vec<ServerSpace> = (0..6)
            .map(|_| ServerSpace {
                fs_id: 42,
                bytes: 100,
                shared: 300,
            })
            .collect();
        assert_eq!(usable_raw(&small, 6), 300);
        // One full server bounds stripes that need all six.
        let mut one_full = capped.clone();
        one_full[0].bytes = 0;
        assert_eq!(usable_raw(&one_full, 6), 0);
    }

    #[test]
    fn the_fullest_servers_bound_what_a_stripe_can_use() {
        // Six equal servers, width 6: all of it.
        assert_eq!(usable_raw(&alone(&[100; 6]), 6), 600);
        // One nearly full server bounds every stripe that needs all six.
        assert_eq!(usable_raw(&alone(&[100, 100, 100, 100, 100, 10]), 6), 60);
        // Seven servers, one full: stripes go around it.
        assert_eq!(
            usable_raw(&alone(&[100, 100, 100, 100, 100, 100, 0]), 6),
            600
        );
        // A huge server cannot take more than one column per stripe.
        assert_eq!(
            usable_raw(&alone(&[1000, 100, 100, 100, 100, 100, 100]), 6),
            720
        );
        assert_eq!(usable_raw(&alone(&[100; 5]), 6), 0);
        assert_eq!(usable_raw(&alone(&[u64::MAX; 6]), 6), u64::MAX, "saturates");
    }
}
