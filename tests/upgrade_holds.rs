//! An upgrade (SIGUSR2) while a pause is on: the successor goes on with
//! the pause its predecessor had, and ends it as the predecessor would
//! have. Real Kvrocks nodes in cluster mode and the test controller,
//! polled; the real binary. And while clients wait for their node that is
//! down: the successor waits in their place (a password-protected
//! redis-server).
//!
//! Walkthrough 27: an upgrade that came while the poller held a promoted
//! node's writes (its node not yet at the controller's topology) handed
//! the hold over without its owner; nothing in the successor ended it, so
//! every write stalled for its bound (`node_lost_wait_ms`, 30 s), and
//! sessions still waiting on the old process were closed at the drain
//! timeout.

mod support;

use std::time::{Duration, Instant};

use support::controller::{node_id, TestController};
use support::kvrocks::{a_master_of_b, topology, HeldPromotion, Node, A_ID, B_ID};
use support::upgrade::{upgrade, Successors};
use support::{info_fields, Proxy, RedisServer, Reply, PATIENCE};

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

/// A stepping down: the controller names B master (version 2); A's poll
/// (every 100 ms) sees it and holds A's writes until B's leasegate holds
/// the lease (`switch_timeout_ms` 20 s); B's (every 30 s) does not see it.
/// `app` has a write held at A.
struct SteppingDown {
    _controller: TestController,
    a: Node,
    b: Node,
    app: support::Client,
}

impl SteppingDown {
    /// `None` when Kvrocks is not here.
    fn start() -> Option<SteppingDown> {
        let controller = TestController::start();
        let a_yaml = format!(
            "{}  switch_timeout_ms: 20000\n",
            controller.yaml(100, 10_000)
        );
        let a = Node::start_with(A_ID, "block-write", &a_yaml)?;
        let b = Node::start_with(B_ID, "block-write", &controller.yaml(30_000, 60_000))?;
        let (a_addr, b_addr) = a_master_of_b(&controller, &a, &b);
        controller.set_topology(
            2,
            vec![vec![(B_ID, &b_addr, "master"), (A_ID, &a_addr, "slave")]],
        );
        let mut info = a.proxy.client();
        let start = Instant::now();
        loop {
            let fields = info_fields(&info.cmd(&["INFO", "leasegate"]));
            let field = |name: &str| fields.get(name).map(String::as_str);
            if field("lease_valid") == Some("0") && field("paused") == Some("1") {
                break;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "A never stepped down with its writes held: {fields:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut app = a.proxy.client();
        app.send(&["SET", "k", "held at A"]);
        assert_eq!(
            app.try_read(Duration::from_millis(300)),
            None,
            "held until B holds the lease"
        );
        Some(SteppingDown {
            _controller: controller,
            a,
            b,
            app,
        })
    }

    /// The held write reaches B within 5 s, not at A's 20 s bound.
    fn taken_by_b(&mut self, what: &str) {
        assert_eq!(
            self.app.try_read(Duration::from_secs(5)),
            Some(Reply::ok()),
            "{what}"
        );
        assert_eq!(
            self.b.kvrocks.client().cmd(&["GET", "k"]),
            Reply::bulk("held at A")
        );
    }
}

/// A steps down ([`SteppingDown`]) and is upgraded meanwhile. The
/// successor ends the step-down's hold it took over once B holds the
/// lease, as A would have; before, nothing in it did, and writes waited
/// out the hold's bound (`controller.switch_timeout_ms`, 20 s here).
#[test]
fn a_step_down_hold_taken_over_at_an_upgrade_ends_when_the_new_master_holds_the_lease() {
    let Some(mut held) = SteppingDown::start() else {
        return;
    };
    let mut successors = Successors::default();
    upgrade(None, &mut held.a.proxy, &mut successors);
    assert_eq!(
        held.app.try_read(Duration::from_millis(300)),
        None,
        "still held at the successor"
    );
    // The controller's push reaches B: its node is master, its poll grants.
    held.b
        .set_nodes(&topology((B_ID, &held.b), Some((A_ID, &held.a))), 2);
    held.taken_by_b("the held write goes to B once it holds the lease");
}

/// A steps down ([`SteppingDown`]); B's leasegate is upgraded before its
/// poll saw the switch: the successor's first poll does not know the old
/// master from an earlier answer, so it takes the master B's node
/// follows, and brings B's node to the topology once that one (A) is
/// fenced and caught up with. Before, it waited for the controller's own
/// push (kvrocks-controller 1.2.0: up to a second, at its next check;
/// never, here), with A's writes held meanwhile (walkthrough 30).
#[test]
fn a_successor_named_master_at_its_first_poll_takes_over_from_the_master_its_node_follows() {
    let Some(mut held) = SteppingDown::start() else {
        return;
    };
    let mut successors = Successors::default();
    upgrade(None, &mut held.b.proxy, &mut successors);
    held.taken_by_b("B's successor took over from A, and A's held write went to B");
}

/// Clients wait for their node that is down (it crashed; the controller
/// still names it master: `controller.node_lost_wait_ms`) when leasegate is
/// upgraded. They move to the successor, which waits in their place, and
/// are served once the node is back: a connected client with its
/// connection state (its login, its database), a new one as one just
/// arrived; and so at a second upgrade, from the first successor. Before,
/// they were closed at the upgrade (a walkthrough saw 150 clients reset).
#[test]
fn clients_waiting_for_a_node_that_is_down_move_at_an_upgrade() {
    const PW: &str = "nodepw";
    let mut redis = RedisServer::start_with(&["--requirepass", PW]);
    let controller = TestController::start();
    let (me, other) = (node_id(1), node_id(2));
    controller.set_topology(
        1,
        vec![vec![
            (&me, "127.0.0.1:6666", "master"),
            (&other, "127.0.0.1:6667", "slave"),
        ]],
    );
    let mut proxy = Proxy::start_with_backend_yaml(
        &format!("backend:\n  addr: {}\n  password: {PW}\n", redis.addr()),
        &format!(
            "node_id: {me}\nlease:\n  mode: block-write\nadmin:\n  listen: 127.0.0.1:{}\n  token: t\n{}",
            support::free_port(),
            controller.yaml(100, 10_000)
        ),
    );
    let admin = proxy.admin_port();
    let mut connected = support::authenticated(proxy.client(), Some(PW));
    assert_eq!(connected.cmd(&["SELECT", "3"]), Reply::ok());
    support::set_once_leased(&mut connected, "before");
    redis.stop();
    let waiting = |n: u64| support::await_metric(admin, "leasegate_clients_waiting_for_node ", n);
    // The connected client's session waits once it saw its node
    // connection close; then it writes, and a new client arrives.
    waiting(1);
    connected.send(&["SET", "moved", "connected"]);
    let mut new = proxy.client();
    new.send(&["AUTH", PW]);
    new.send(&["SET", "new", "arrived"]);
    waiting(2);
    // Upgraded twice: the first successor hands the waits on.
    let mut successors = Successors::default();
    let mut pid = None;
    for upgrade_no in 1..=2 {
        pid = Some(upgrade(pid, &mut proxy, &mut successors));
        for (what, c) in [("connected", &mut connected), ("new", &mut new)] {
            assert_eq!(
                c.read_within(Duration::from_millis(300)),
                Ok(None),
                "the {what} client, at upgrade {upgrade_no}"
            );
        }
        waiting(2);
    }
    redis.restart();
    support::upgrade::waited_and_served(&mut connected, &mut new);
    let mut node = support::authenticated(redis.client(), Some(PW));
    assert_eq!(node.cmd(&["GET", "new"]), Reply::bulk("arrived"));
    assert_eq!(node.cmd(&["SELECT", "3"]), Reply::ok());
    assert_eq!(node.cmd(&["GET", "moved"]), Reply::bulk("connected"));
    assert_eq!(connected.cmd(&["GET", "moved"]), Reply::bulk("connected"));
}
