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

use std::time::{Duration, Instant};

use support::controller::TestController;
use support::kvrocks::{a_master_of_b, Node, A_ID, B_ID};
use support::upgrade::{upgrade, Successors};
use support::{info_fields, Reply, PATIENCE};

const POLL_MS: u64 = 100;

/// B is named master (version 2) but its node is not there yet: B's poll
/// holds its writes. B is upgraded; then the controller names A again
/// (version 3). The successor's poll ends the hold it took over, and the
/// held write goes to A at once, not after the hold's 30 s bound.
#[test]
fn a_poll_hold_taken_over_at_an_upgrade_is_ended_by_the_successor() {
    let controller = TestController::start();
    // A polls seldom: it does not report itself fenced at version 2, so
    // B's poll does not bring B's node there itself (B's hold lasts).
    let (Some(a), Some(mut b)) = (
        Node::start_with(A_ID, "block-write", &controller.yaml(30_000, 60_000)),
        Node::start_with(B_ID, "block-write", &controller.yaml(POLL_MS, 10_000)),
    ) else {
        return;
    };
    let (a_addr, b_addr) = a_master_of_b(&controller, &a, &b);
    controller.set_topology(
        2,
        vec![vec![(B_ID, &b_addr, "master"), (A_ID, &a_addr, "slave")]],
    );
    let mut ctl_b = b.proxy.client();
    let start = Instant::now();
    while info_fields(&ctl_b.cmd(&["INFO", "leasegate"]))
        .get("controller_version")
        .map(String::as_str)
        != Some("2")
    {
        assert!(start.elapsed() < PATIENCE, "B's poll never saw version 2");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(ctl_b);
    let mut app = b.proxy.client();
    app.send(&["SET", "k", "held at B"]);
    assert_eq!(
        app.try_read(Duration::from_millis(600)),
        None,
        "held for B's promotion"
    );
    let mut successors = Successors::default();
    upgrade(None, &mut b.proxy, &mut successors);
    assert_eq!(
        app.try_read(Duration::from_millis(300)),
        None,
        "still held at the successor"
    );
    controller.set_topology(
        3,
        vec![vec![(A_ID, &a_addr, "master"), (B_ID, &b_addr, "slave")]],
    );
    assert_eq!(
        app.try_read(Duration::from_secs(5)),
        Some(Reply::ok()),
        "taken by A once the controller names it again"
    );
    assert_eq!(
        a.kvrocks.client().cmd(&["GET", "k"]),
        Reply::bulk("held at B")
    );
}
