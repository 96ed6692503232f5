//! Honest space: how many raw fragment bytes stripes can really use, given each storage
//! server's free (or total) space. A stripe of width k+m puts one fragment on each of k+m
//! distinct servers, so a server can never take more than one column of every stripe, and
//! servers that share one file system (e.g. a local `shoal up`, all on one disk) share its
//! free space. Pure arithmetic; it must not do I/O.

/// One server's space: the file system it lives on (0 = unknown, counted alone) and bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerSpace {
    pub fs_id: u64,
    pub bytes: u64,
}

/// Largest raw bytes `width * t` such that stripes of `width` distinct servers with `t`
/// bytes per column fit: `width * t <= sum over file systems of min(bytes, servers * t)`.
/// Multiply by k/(k+m) for data bytes. Zero when fewer than `width` servers are given.
pub fn usable_raw(servers: &[ServerSpace], width: usize) -> u64 {
    if width == 0 || servers.len() < width {
        return 0;
    }
    // File systems: (servers on it, bytes free on it). Servers on an unknown fs count alone.
    let mut groups: Vec<(u64, u64)> = Vec::new();
    let mut by_fs: std::collections::BTreeMap<u64, (u64, u64)> = Default::default();
    for s in servers {
        if s.fs_id == 0 {
            groups.push((1, s.bytes));
        } else {
            let e = by_fs.entry(s.fs_id).or_insert((0, s.bytes));
            e.0 += 1;
            e.1 = e.1.min(s.bytes);
        }
    }
    groups.extend(by_fs.into_values());
    let fits = |t: u64| -> bool {
        let have: u128 = groups
            .iter()
            .map(|(n, b)| (*b as u128).min(*n as u128 * t as u128))
            .sum();
        have >= width as u128 * t as u128
    };
    // fits() is monotone (true up to the answer, false after): binary search on t.
    let (mut lo, mut hi) = (0u64, groups.iter().map(|g| g.1).max().unwrap_or(0));
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
        bytes
            .iter()
            .map(|&b| ServerSpace { fs_id: 0, bytes: b })
            .collect()
    }

    #[test]
    fn servers_on_one_disk_count_it_once() {
        let shared: Vec<ServerSpace> = (0..6)
            .map(|_| ServerSpace {
                fs_id: 42,
                bytes: 600,
            })
            .collect();
        assert_eq!(usable_raw(&shared, 6), 600, "not 6 x 600");
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
