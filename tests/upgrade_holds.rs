//! An upgrade (SIGUSR2) while a pause is on: the successor goes on with
//! the pause its predecessor had, and ends it as the predecessor would
//! have. Real Kvrocks nodes in cluster mode and the test controller,
//! polled; the real binary.
//!
//! Walkthrough 27: an upgrade that came while the poller held a promoted
//! node's writes (its node not yet at the controller's topology) handed
//! the hold over without its owner; nothing in the successor ended it, so
//! every write stalled for its bound (`node_lost_wait_ms`, 30 s), and
//! sessions still waiting on the old process were closed at the drain
//! timeout.

mod support;

use std::time::Duration;

use support::kvrocks::HeldPromotion;
use support::upgrade::{upgrade, Successors};

/// B is named master (version 2) but its node is not there yet: B's poll
/// holds its writes ([`HeldPromotion`]). B is upgraded; then the
/// controller names A again (version 3). The successor's poll ends the hold it took over, and the
/// held write goes to A at once, not after the hold's 30 s bound.
#[test]
fn a_poll_hold_taken_over_at_an_upgrade_is_ended_by_the_successor() {
    let Some(mut held) = HeldPromotion::start() else {
        return;
    };
    let mut successors = Successors::default();
    upgrade(None, &mut held.b.proxy, &mut successors);
    assert_eq!(
        held.app.try_read(Duration::from_millis(300)),
        None,
        "still held at the successor"
    );
    held.taken_back_by_a();
}
