//! Admission of fragment writes against one storage server's space: its configured
//! capacity, the free space of the file system it lives on, and the reserve kept for the
//! managers' metadata logs, the cleaner and rebuild. Client data is refused before the
//! reserve, so that a full cluster can always log the deletes (and the cleaner's copies)
//! that get it out; system writes may use the reserve but never the last byte.
//!
//! Owns the decision and the numbers a server reports (`Stat`). Pure: numbers in, a decision
//! out; must not do I/O, know the wire, or know who the peer is (the node handler maps
//! the peer's role to a `WriteClass`).

/// Who a fragment write is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteClass {
    /// A client's file data: stops at the reserve.
    Client,
    /// Managers' metadata logs, the cleaner, rebuild and scrub repairs: may use the reserve.
    System,
}

/// The least reserve when none is configured.
pub const MIN_RESERVE: u64 = 64 << 20;

/// The most reserve when none is configured: metadata logs and the cleaner's copies need a
/// working margin, not a share of a large disk (5% of 4 TiB would idle 200 GiB per server).
pub const MAX_DEFAULT_RESERVE: u64 = 1 << 30;

/// A server's configured space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Most fragment bytes stored (`capacity` in the config); `None`: the file system's size.
    pub capacity: Option<u64>,
    /// Bytes kept for system writes (`[storage] reserve`); `None`: `default_reserve`.
    pub reserve: Option<u64>,
}

/// What a server holds now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Fragment bytes stored plus bytes of writes admitted and still in flight.
    pub used: u64,
    pub fs_capacity: u64,
    pub fs_free: u64,
}

/// 5% of `capacity`, at least `MIN_RESERVE` and at most `MAX_DEFAULT_RESERVE`, never more
/// than half of it.
pub fn default_reserve(capacity: u64) -> u64 {
    (capacity / 20)
        .clamp(MIN_RESERVE, MAX_DEFAULT_RESERVE)
        .min(capacity / 2)
}

impl Limits {
    /// Bytes this server may store.
    pub fn capacity(&self, u: &Usage) -> u64 {
        self.capacity.unwrap_or(u.fs_capacity)
    }

    pub fn reserve(&self, u: &Usage) -> u64 {
        self.reserve
            .unwrap_or_else(|| default_reserve(self.capacity(u)))
    }

    /// Bytes of client data still admitted.
    pub fn client_free(&self, u: &Usage) -> u64 {
        let reserve = self.reserve(u);
        let own = match self.capacity {
            Some(c) => c.saturating_sub(reserve).saturating_sub(u.used),
            None => u64::MAX,
        };
        own.min(u.fs_free.saturating_sub(reserve))
    }

    /// Whether a write of `len` bytes of `class` fits; `Err` says why not.
    pub fn admit(&self, u: &Usage, len: u64, class: WriteClass) -> Result<(), NoRoom> {
        let reserve = match class {
            WriteClass::Client => self.reserve(u),
            WriteClass::System => 0,
        };
        if let Some(cap) = self.capacity {
            if u.used.saturating_add(len) > cap.saturating_sub(reserve) {
                return Err(NoRoom::Capacity {
                    len,
                    cap,
                    used: u.used,
                    reserve,
                });
            }
        }
        if u.fs_free < len.saturating_add(reserve) {
            return Err(NoRoom::FileSystem {
                len,
                free: u.fs_free,
                reserve,
            });
        }
        Ok(())
    }
}

/// Why a write does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoRoom {
    #[error(
        "{len} more bytes would pass this server's capacity of {cap} bytes \
         ({used} stored or in flight, {reserve} kept in reserve for metadata and the cleaner)"
    )]
    Capacity {
        len: u64,
        cap: u64,
        used: u64,
        reserve: u64,
    },
    #[error(
        "{len} more bytes do not fit the {free} bytes free on the file system \
         ({reserve} kept in reserve for metadata and the cleaner)"
    )]
    FileSystem { len: u64, free: u64, reserve: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn usage(used: u64) -> Usage {
        Usage {
            used,
            fs_capacity: 1 << 40,
            fs_free: 1 << 39,
        }
    }

    #[test]
    fn client_data_stops_at_the_reserve_system_writes_at_the_capacity() {
        let l = Limits {
            capacity: Some(256 * MIB),
            reserve: Some(64 * MIB),
        };
        assert_eq!(l.client_free(&usage(0)), 192 * MIB);
        assert!(l.admit(&usage(0), 192 * MIB, WriteClass::Client).is_ok());
        assert!(l.admit(&usage(MIB), 192 * MIB, WriteClass::Client).is_err());
        assert_eq!(l.client_free(&usage(192 * MIB)), 0);
        // A full server still takes metadata and the cleaner's copies, up to the capacity.
        assert!(l
            .admit(&usage(192 * MIB), 64 * MIB, WriteClass::System)
            .is_ok());
        assert!(l
            .admit(&usage(192 * MIB), 64 * MIB + 1, WriteClass::System)
            .is_err());
        assert_eq!(l.client_free(&usage(300 * MIB)), 0, "over-full saturates");
    }

    #[test]
    fn the_file_system_bounds_every_server_on_it() {
        let l = Limits::default();
        let u = Usage {
            used: 0,
            fs_capacity: 10_000 * MIB,
            fs_free: 600 * MIB,
        };
        // Default reserve: 5% of the file system (500 MiB).
        assert_eq!(l.reserve(&u), 500 * MIB);
        assert_eq!(l.client_free(&u), 100 * MIB);
        assert!(l.admit(&u, 101 * MIB, WriteClass::Client).is_err());
        assert!(l.admit(&u, 101 * MIB, WriteClass::System).is_ok());
        assert!(l.admit(&u, 601 * MIB, WriteClass::System).is_err());
        // A big configured capacity does not make a small disk bigger.
        let big = Limits {
            capacity: Some(1 << 40),
            reserve: Some(0),
        };
        assert_eq!(big.client_free(&u), 600 * MIB);
    }

    #[test]
    fn default_reserve_is_bounded() {
        assert_eq!(default_reserve(10 * 1024 * MIB), 512 * MIB);
        assert_eq!(default_reserve(100 * 1024 * MIB), MAX_DEFAULT_RESERVE);
        assert_eq!(default_reserve(256 * MIB), MIN_RESERVE);
        assert_eq!(default_reserve(64 * MIB), 32 * MIB, "never more than half");
    }
}
