//! Tests of [`super`]: the lease module's unit tests, kept beside it.

use super::*;

const ME: &str = "0123456789012345678901234567890123456789";
const OTHER: &str = "9999999999999999999999999999999999999999";

fn lease(drift: f64, margin: u64) -> (Arc<ManualClock>, Lease) {
    let clock = Arc::new(ManualClock::new(1_000 * MS));
    let lease = Lease::new(
        clock.clone(),
        LeaseMode::BlockWrite,
        Initial::Expired,
        LeaseTuning {
            clock_drift: drift,
            safety_margin_ms: margin,
        },
        Some(ME.into()),
    );
    (clock, lease)
}

/// A poll sent before a freeze and answered after it makes the lease
/// usable for nothing: the pulse runs from the send.
#[test]
fn the_pulse_runs_from_the_polls_send() {
    let (clock, lease) = lease(0.0, 0);
    lease
        .grant(&grant(1, 10_000), clock.now())
        .expect("granted");
    let within = std::time::Duration::from_millis(500);
    lease.beat(clock.now(), within);
    assert!(lease.usable());
    let sent = clock.now();
    clock.advance_ms(2_000); // frozen with the poll in flight
    lease.beat(sent, within);
    assert!(!lease.usable(), "answers from before the freeze");
    assert!(lease.stalled().is_some(), "writes wait for the next poll");
    lease.beat(clock.now(), within);
    assert!(lease.usable());
}

fn grant(epoch: u64, ttl_ms: u64) -> Grant {
    Grant {
        master_node_id: Some(ME.into()),
        ttl_ms,
        epoch,
        nonce: None,
        anchor: None,
    }
}

#[test]
fn starts_expired_and_a_grant_opens_writes() {
    let (clock, lease) = lease(0.0, 0);
    assert!(!lease.write_allowed(), "fail closed");
    assert_eq!(
        lease.grant(&grant(1, 100), clock.now()),
        Ok(GrantOutcome::Renewed)
    );
    assert!(lease.write_allowed());
}

#[test]
fn expiry_is_exact_at_the_boundary() {
    let (clock, lease) = lease(0.0, 0);
    lease.grant(&grant(1, 100), clock.now()).expect("granted");
    clock.advance_ms(99);
    assert!(lease.write_allowed());
    clock.set(clock.now() + MS - 1);
    assert!(lease.write_allowed(), "1 ns before the deadline");
    clock.set(clock.now() + 1);
    assert!(!lease.write_allowed(), "at the deadline");
}

#[test]
fn margin_and_drift_shorten_the_lease() {
    // 1000 ms · (1 − 0.05) − 100 ms = 850 ms
    let (clock, lease) = lease(0.05, 100);
    lease.grant(&grant(1, 1000), clock.now()).expect("granted");
    clock.advance_ms(849);
    assert!(lease.write_allowed());
    clock.advance_ms(1);
    assert!(!lease.write_allowed());
    assert_eq!(
        lease.deadline_for(0, 50),
        0,
        "margin above ttl: expired at once"
    );
}

#[test]
fn new_tuning_applies_from_the_next_grant() {
    let (clock, lease) = lease(0.0, 0);
    lease.grant(&grant(1, 1000), clock.now()).expect("granted");
    lease.set_tuning(LeaseTuning {
        clock_drift: 0.1,
        safety_margin_ms: 200,
    });
    assert_eq!(lease.snapshot().remaining_ms, 1000, "the deadline stands");
    clock.advance_ms(1000);
    // 1000 ms · (1 − 0.1) − 200 ms = 700 ms
    lease.grant(&grant(1, 1000), clock.now()).expect("granted");
    assert_eq!(lease.snapshot().remaining_ms, 700);
}

#[test]
fn lower_epoch_is_refused_and_leaves_the_lease_alone() {
    let (clock, lease) = lease(0.0, 0);
    lease.grant(&grant(5, 100), clock.now()).expect("granted");
    let before = lease.snapshot();
    assert_eq!(
        lease.grant(&grant(4, 10_000), clock.now()),
        Err(GrantError::EpochMismatch { got: 4, current: 5 })
    );
    assert_eq!(lease.snapshot(), before);
    assert_eq!(
        lease.grant(&grant(5, 100), clock.now()),
        Ok(GrantOutcome::Renewed),
        "equal is fine"
    );
    assert_eq!(
        lease.grant(&grant(5, 0), clock.now()),
        Err(GrantError::InvalidTtl)
    );
}

#[test]
fn naming_another_master_revokes() {
    let (clock, lease) = lease(0.0, 0);
    lease
        .grant(&grant(1, 10_000), clock.now())
        .expect("granted");
    let other = Grant {
        master_node_id: Some(OTHER.into()),
        ..grant(2, 10_000)
    };
    assert_eq!(lease.grant(&other, clock.now()), Ok(GrantOutcome::Revoked));
    assert!(!lease.write_allowed());
    let s = lease.snapshot();
    assert_eq!(s.owner.as_deref(), Some(OTHER));
    assert_eq!(s.epoch, 2);
}

#[test]
fn unknown_node_id_refuses_named_grants() {
    let clock = Arc::new(ManualClock::new(0));
    let lease = Lease::new(
        clock.clone(),
        LeaseMode::BlockWrite,
        Initial::Expired,
        LeaseTuning {
            clock_drift: 0.0,
            safety_margin_ms: 0,
        },
        None,
    );
    assert_eq!(
        lease.grant(&grant(1, 100), 0),
        Err(GrantError::UnknownNodeId)
    );
    let anonymous = Grant {
        master_node_id: None,
        ..grant(1, 100)
    };
    assert_eq!(lease.grant(&anonymous, 0), Ok(GrantOutcome::Renewed));
    lease.learn_node_id(ME);
    assert_eq!(lease.grant(&grant(1, 100), 0), Ok(GrantOutcome::Renewed));
}

#[test]
fn nonce_anchors_a_delayed_grant_at_issue_time() {
    let (clock, lease) = lease(0.0, 0);
    let nonce = lease.issue_nonce();
    // The heartbeat carrying the nonce is held up for 800 ms.
    clock.advance_ms(800);
    let g = Grant {
        nonce: Some(nonce),
        ..grant(1, 1000)
    };
    lease.grant(&g, clock.now()).expect("granted");
    assert_eq!(
        lease.snapshot().remaining_ms,
        200,
        "only 200 ms left, not 1000"
    );
    clock.advance_ms(200);
    assert!(!lease.write_allowed());
    // Held up for longer than the TTL: it grants nothing usable.
    let nonce = lease.issue_nonce();
    clock.advance_ms(1500);
    lease
        .grant(
            &Grant {
                nonce: Some(nonce),
                ..grant(1, 1000)
            },
            clock.now(),
        )
        .expect("accepted");
    assert!(!lease.write_allowed());
    // A nonce it never issued renews nothing.
    let forged = Grant {
        nonce: Some(12345),
        ..grant(1, 1000)
    };
    assert_eq!(
        lease.grant(&forged, clock.now()),
        Ok(GrantOutcome::UnknownNonce)
    );
    assert!(!lease.write_allowed());
}

#[test]
fn poll_anchor_is_the_send_time() {
    let (clock, lease) = lease(0.0, 0);
    let sent = clock.now();
    clock.advance_ms(300);
    let g = Grant {
        anchor: Some(sent),
        ..grant(1, 1000)
    };
    lease.grant(&g, clock.now()).expect("granted");
    assert_eq!(lease.snapshot().remaining_ms, 700);
}

#[test]
fn revoke_and_initial_valid() {
    let clock = Arc::new(ManualClock::new(0));
    let lease = Lease::new(
        clock.clone(),
        LeaseMode::BlockWrite,
        Initial::Valid,
        LeaseTuning {
            clock_drift: 0.0,
            safety_margin_ms: 0,
        },
        Some(ME.into()),
    );
    clock.advance_ms(1_000_000);
    assert!(lease.write_allowed(), "valid until told otherwise");
    lease.revoke("became a replica");
    assert!(!lease.write_allowed());
    assert_eq!(
        lease.snapshot().revoked_reason.as_deref(),
        Some("became a replica")
    );
}

/// A failover fences with a grant naming the target at epoch+1; when it
/// fails before switching, the lease comes back as it was, so the
/// controller's heartbeats at the old epoch renew it again.
#[test]
fn a_fencing_that_changed_nothing_is_restored() {
    let (clock, lease) = lease(0.0, 0);
    lease.grant(&grant(7, 1000), clock.now()).expect("granted");
    let before = lease.save();
    let term = lease.term();
    let fence = Grant {
        master_node_id: Some(OTHER.into()),
        ..grant(8, 1000)
    };
    assert_eq!(lease.grant(&fence, clock.now()), Ok(GrantOutcome::Revoked));
    let fenced = lease.save();
    assert!(lease.grant(&grant(7, 1000), clock.now()).is_err(), "stale");
    assert!(lease.restore(&before, &fenced));
    let s = lease.snapshot();
    assert!(s.valid);
    assert_eq!((s.epoch, s.owner.as_deref()), (7, Some(ME)));
    assert!(!lease.acknowledgeable(term), "a new term");
    assert_eq!(
        lease.grant(&grant(7, 1000), clock.now()),
        Ok(GrantOutcome::Renewed),
        "the controller's epoch renews again"
    );
}

#[test]
fn a_lease_changed_since_the_fencing_is_not_restored() {
    let (clock, lease) = lease(0.0, 0);
    lease.grant(&grant(7, 1000), clock.now()).expect("granted");
    let before = lease.save();
    let fence = Grant {
        master_node_id: Some(OTHER.into()),
        ..grant(8, 1000)
    };
    lease.grant(&fence, clock.now()).expect("fenced");
    let fenced = lease.save();
    lease.revoke("SETNODES lists this node as a slave");
    assert!(!lease.restore(&before, &fenced));
    assert!(!lease.write_allowed());
    assert_eq!(lease.epoch(), 8);
    // Nor after a later grant from the controller.
    let (clock, lease) = self::lease(0.0, 0);
    lease.grant(&grant(7, 1000), clock.now()).expect("granted");
    let before = lease.save();
    lease.grant(&fence, clock.now()).expect("fenced");
    let fenced = lease.save();
    lease
        .grant(
            &Grant {
                master_node_id: Some(OTHER.into()),
                ..grant(9, 1000)
            },
            clock.now(),
        )
        .expect("the controller moved on");
    assert!(!lease.restore(&before, &fenced));
    assert_eq!(lease.epoch(), 9);
}

#[test]
fn a_restored_deadline_that_has_passed_stays_passed() {
    let (clock, lease) = lease(0.0, 0);
    lease.grant(&grant(7, 100), clock.now()).expect("granted");
    let before = lease.save();
    lease
        .grant(
            &Grant {
                master_node_id: Some(OTHER.into()),
                ..grant(8, 100)
            },
            clock.now(),
        )
        .expect("fenced");
    let fenced = lease.save();
    clock.advance_ms(200);
    assert!(lease.restore(&before, &fenced));
    assert!(!lease.write_allowed(), "the old deadline has passed");
}

/// A margin past 2^64 ns leaves nothing of the lease (it wrapped to almost
/// nothing, and the lease kept its whole term: an audit; the config now
/// refuses such a margin too).
#[test]
fn a_huge_margin_leaves_nothing() {
    let (clock, lease) = lease(0.0, 18_446_744_073_710);
    let anchor = clock.now();
    assert_eq!(lease.deadline_for(anchor, 5_000), anchor);
}
