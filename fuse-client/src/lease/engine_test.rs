//! Unit tests of the client lease engine: events in, actions out, no runtime, no clock.

use super::*;

fn t(ms: u64) -> BootInstant {
    BootInstant::from_boot(Duration::from_secs(1000) + Duration::from_millis(ms))
}

fn grant(lease_ms: u32, valid_ms: u32, incarnation: u64, lost: bool) -> LeaseGrant {
    LeaseGrant {
        lease_ms,
        valid_ms,
        incarnation,
        lost,
        losses: 0,
    }
}

fn granted(v: &mut VolumeLease, sent: u64, g: LeaseGrant) -> Vec<Action> {
    v.on_event(Event::Granted {
        sent: t(sent),
        grant: g,
        hello: false,
    })
}

fn confirmed(v: &mut VolumeLease, sent: u64, valid_ms: u32, incarnation: u64) {
    let acts = v.on_event(Event::Confirmed {
        sent: t(sent),
        ext: LeaseExtension {
            valid_ms,
            incarnation,
            losses: 0,
        },
    });
    assert_eq!(acts, vec![]);
}

#[test]
fn a_manager_without_leases_always_holds() {
    let mut v = VolumeLease::default();
    let h = v.check(t(0)).expect("held");
    assert_eq!(h.epoch(), None);
    assert_eq!(h.kernel_ttl(), KERNEL_TTL);
    assert_eq!(v.on_event(Event::Unleased), vec![]);
    assert!(v.check(t(1_000_000)).is_some());
    assert_eq!(v.kernel_ttl(t(0)), KERNEL_TTL);
}

#[test]
fn validity_keeps_the_kernel_ttl_and_margin() {
    let mut v = VolumeLease::default();
    assert_eq!(granted(&mut v, 0, grant(5000, 5000, 7, false)), vec![]);
    assert_eq!(v.check(t(0)).and_then(|h| h.epoch()), Some(CacheEpoch(1)));
    assert!(v.check(t(3700)).is_some());
    // 5 s - 1 s TTL - 250 ms margin.
    assert!(v.check(t(3800)).is_none());
    assert_eq!(granted(&mut v, 2000, grant(5000, 5000, 7, false)), vec![]);
    assert!(v.check(t(5700)).is_some());
    // An older send time never shortens the lease.
    granted(&mut v, 0, grant(5000, 5000, 7, false));
    assert!(v.check(t(5700)).is_some());
    assert_eq!(v.renewals(), 3);
}

#[test]
fn the_lease_is_extended_only_by_what_the_manager_granted() {
    let mut v = VolumeLease::default();
    granted(&mut v, 0, grant(5000, 5000, 7, false));
    // A grant that did not extend (callbacks to us outstanding at the manager) says
    // what was left: 3 s from a send at 1 s ends at 4 s, not 6 s.
    granted(&mut v, 1000, grant(5000, 3000, 7, false));
    assert_eq!(v.expiry(), Some(t(5000)));
    // Replies to ordinary requests confirm only what they carry.
    confirmed(&mut v, 2000, 2000, 7);
    assert_eq!(v.expiry(), Some(t(5000)));
    confirmed(&mut v, 2000, 5000, 7);
    assert_eq!(v.expiry(), Some(t(7000)));
    // ...and only from the incarnation the lease is with.
    confirmed(&mut v, 4000, 5000, 8);
    assert_eq!(v.expiry(), Some(t(7000)));
}

/// The slow-callback race of issue 8: the manager calls us back at 0 (our lease then
/// runs to 1000 at the manager) and does not extend while the callback is out; we are
/// slow to answer it but keep sending requests, each answered. Before, every answer
/// extended our lease from its send time, so at 1100 we still believed we held a lease
/// the manager gave up on at 1000 + margin. Now the answers carry what was left.
#[test]
fn a_client_slow_to_answer_a_callback_does_not_outlive_the_managers_lease() {
    let lease = 1000;
    let mut v = VolumeLease::default();
    granted(&mut v, 0, grant(lease, lease, 1, false));
    // The callback is sent at 0; the manager's expiry for us stays at 1000.
    for sent in (0..1000).step_by(100) {
        let left = (lease as u64 - sent) as u32;
        confirmed(&mut v, sent, left, 1);
        assert!(
            v.expiry() <= Some(t(1000)),
            "extended past the manager at {sent}"
        );
        // Never handed to the kernel beyond the manager's expiry.
        assert!(t(sent) + v.kernel_ttl(t(sent)) <= t(1000));
    }
    // The lease is too short for the kernel TTL: every use renews first.
    assert!(v.check(t(0)).is_none());
    // Renew is held by the manager until the callback is settled: given up on, it
    // answers `lost` and we drop the caches and the writes.
    let acts = granted(&mut v, 1100, grant(lease, lease, 1, true));
    assert_eq!(
        acts,
        vec![
            Action::DropCaches {
                discard_writes: true
            },
            Action::Hello
        ]
    );
    assert_eq!(v.epoch(), CacheEpoch(2));
}

#[test]
fn the_kernel_ttl_never_outlives_the_lease() {
    let mut v = VolumeLease::default();
    granted(&mut v, 0, grant(5000, 5000, 1, false));
    assert_eq!(v.kernel_ttl(t(0)), KERNEL_TTL);
    // 600 ms of lease left: 350 ms for the kernel.
    assert_eq!(v.kernel_ttl(t(4400)), Duration::from_millis(350));
    assert_eq!(v.kernel_ttl(t(4800)), Duration::ZERO);
    assert_eq!(v.kernel_ttl(t(9000)), Duration::ZERO);
}

#[test]
fn lost_or_restarted_managers_drop_caches() {
    let mut v = VolumeLease::default();
    assert_eq!(granted(&mut v, 0, grant(5000, 5000, 1, false)), vec![]);
    assert_eq!(
        granted(&mut v, 0, grant(5000, 5000, 1, true)),
        vec![
            Action::DropCaches {
                discard_writes: true
            },
            Action::Hello
        ],
        "lost: the writes go too"
    );
    assert_eq!(
        granted(&mut v, 0, grant(5000, 5000, 2, false)),
        vec![
            Action::DropCaches {
                discard_writes: false
            },
            Action::Hello,
            Action::Reclaim
        ],
        "restarted: the writes are kept and reclaimed"
    );
    assert_eq!(v.incarnation(), Some(2));
    assert_eq!(v.epoch(), CacheEpoch(3));
    // A Hello that learns it was lost does not say Hello again.
    let acts = v.on_event(Event::Granted {
        sent: t(0),
        grant: grant(5000, 5000, 2, true),
        hello: true,
    });
    assert_eq!(
        acts,
        vec![Action::DropCaches {
            discard_writes: true
        }]
    );
    // A lease too short for the kernel TTL is never valid: every use renews first.
    let mut short = VolumeLease::default();
    granted(&mut short, 0, grant(1000, 1000, 1, false));
    assert!(short.check(t(0)).is_none());
}

#[test]
fn a_failed_renewal_drops_caches_only_once_the_lease_is_not_held() {
    let mut v = VolumeLease::default();
    granted(&mut v, 0, grant(5000, 5000, 1, false));
    assert_eq!(v.on_event(Event::RenewFailed { now: t(1000) }), vec![]);
    assert_eq!(v.epoch(), CacheEpoch(1));
    assert_eq!(
        v.on_event(Event::RenewFailed { now: t(4000) }),
        vec![
            Action::DropCaches {
                discard_writes: false
            },
            Action::Hello
        ]
    );
    assert_eq!(v.epoch(), CacheEpoch(2));
}

/// [consistency-faults] Found by consistency/t55: the renewal to a killed manager timed
/// out after the lease ran out, so the client said Hello, and the Hello's answer was the
/// first to show the new incarnation. It must reclaim then too (it did not: commits the old
/// incarnation accepted without sync were never sent again and were lost).
#[test]
fn a_restart_learned_from_a_hello_reclaims() {
    let mut v = VolumeLease::default();
    granted(&mut v, 0, grant(2000, 2000, 1, false));
    assert_eq!(
        v.on_event(Event::RenewFailed { now: t(2500) }),
        vec![
            Action::DropCaches {
                discard_writes: false
            },
            Action::Hello
        ]
    );
    let acts = v.on_event(Event::Granted {
        sent: t(3000),
        grant: grant(2000, 2000, 2, false),
        hello: true,
    });
    assert_eq!(
        acts,
        vec![
            Action::DropCaches {
                discard_writes: false
            },
            Action::Reclaim
        ]
    );
    assert_eq!(v.incarnation(), Some(2));
}

#[test]
fn write_leases_follow_epochs_and_revocations() {
    let mut w = WriteLease::default();
    assert!(w.held_under(None), "no leases: always held");
    assert!(!w.held_under(Some(CacheEpoch(1))));
    let seen = w.revocations();
    assert!(w.record(CacheEpoch(1), seen));
    assert!(w.held_under(Some(CacheEpoch(1))));
    assert!(
        !w.held_under(Some(CacheEpoch(2))),
        "the caches were dropped since"
    );
    // A Flush racing with a grant: the grant is not recorded.
    let seen = w.revocations();
    w.revoke();
    assert!(!w.record(CacheEpoch(1), seen));
    assert!(!w.held_under(Some(CacheEpoch(1))));
    assert!(w.record(CacheEpoch(1), w.revocations()));
    w.forget();
    assert!(!w.held_under(Some(CacheEpoch(1))));
}

/// Found by the model test (tests/lease_model.rs): the manager gave up on us and, after
/// our Renew, forgave us; an answer to a later request overtook the Renew answer saying
/// `lost`. Its extension must not extend the caches we have not dropped yet.
#[test]
fn an_answer_overtaking_the_lost_grant_extends_nothing() {
    let mut v = VolumeLease::default();
    granted(&mut v, 0, grant(5000, 5000, 1, false));
    let acts = v.on_event(Event::Confirmed {
        sent: t(9000),
        ext: LeaseExtension {
            valid_ms: 5000,
            incarnation: 1,
            losses: 1,
        },
    });
    assert_eq!(acts, vec![]);
    assert_eq!(v.expiry(), Some(t(5000)));
    // A later grant that overtook the `lost` one shows the loss by its count.
    let g = LeaseGrant {
        losses: 1,
        ..grant(5000, 5000, 1, false)
    };
    assert_eq!(
        granted(&mut v, 9000, g),
        vec![
            Action::DropCaches {
                discard_writes: true
            },
            Action::Hello
        ]
    );
    // Now extensions of the new standing apply; older grants say nothing.
    let old = granted(&mut v, 9500, grant(5000, 5000, 1, false));
    assert_eq!(old, vec![]);
    assert_eq!(v.expiry(), Some(t(14000)));
}
