//! The old master's side of a controller's switch, against the real
//! Kvrocks: kvrocks-controller 1.2.0 pushes a new topology to the nodes
//! one after another, in its shard's order, so the push demoting the old
//! master A may reach A before the push promoting B reaches B, and after
//! A's own poll already revoked its lease. Taken at once, A's node would
//! follow B — itself still a replica, without A's last acknowledged
//! writes — and discard them at its next sync; B's fence would then find A
//! "not master" and promote B without them (walkthroughs 24 and 25: 309
//! and 15,205 acknowledged writes lost). A's leasegate holds that push
//! until B has A's writes, and refuses it (`-TRYAGAIN`, the controller
//! sends it again) when B does not get them in time.
//!
//! And the new master's fence when the old master's node crashed: A's
//! leasegate, demoted and its lease revoked, says so while its node is
//! down, and B's promotion goes on at once.

mod support;

use std::time::{Duration, Instant};

use support::kvrocks::{controlled_shard, info_field, topology, LeaseBy, A_ID, B_ID};
use support::{free_port, info_fields, Reply, PATIENCE};

/// A third node id, the master B is made to follow instead of A.
const ELSEWHERE_ID: &str = "cccccccccccccccccccccccccccccccccccccccc";

#[test]
fn a_push_demoting_the_old_master_first_waits_until_the_new_master_has_its_writes() {
    let Some((controller, a, b)) = controlled_shard(LeaseBy::Pull, "step-down", &[]) else {
        return;
    };
    let a_addr = format!("127.0.0.1:{}", a.proxy.port);
    let b_addr = format!("127.0.0.1:{}", b.proxy.port);
    let v1 = topology((A_ID, &a), Some((B_ID, &b)));
    let v2 = topology((B_ID, &b), Some((A_ID, &a)));
    let mut direct_b = b.kvrocks.client();
    // B lags: its node follows a master that does not answer (a node
    // still resyncing after an earlier failover, as in the walkthroughs),
    // so A's next writes do not reach it.
    let elsewhere = format!(
        "{ELSEWHERE_ID} 127.0.0.1 {} master - 0-16383\n{B_ID} 127.0.0.1 {} slave {ELSEWHERE_ID}",
        free_port(),
        b.proxy.port
    );
    let follow = |c: &mut support::Client, nodes: &str| {
        assert_eq!(
            c.cmd(&["CLUSTERX", "SETNODES", nodes, "1", "force"]),
            Reply::ok(),
            "B's node made to follow {nodes}"
        );
    };
    follow(&mut direct_b, &elsewhere);
    let mut app = a.proxy.client();
    let keys = 200;
    for i in 0..keys {
        assert_eq!(
            app.cmd(&["SET", &format!("acked-{i}"), "v"]),
            Reply::ok(),
            "A takes write {i} under its lease"
        );
    }
    // The controller switches the shard to B; A's poll sees it first.
    controller.set_topology(
        2,
        vec![vec![
            (B_ID, b_addr.as_str(), "master"),
            (A_ID, &a_addr, "slave"),
        ]],
    );
    let mut ctl_a = a.proxy.client();
    let start = Instant::now();
    while info_fields(&ctl_a.cmd(&["INFO", "leasegate"]))
        .get("lease_valid")
        .map(String::as_str)
        != Some("0")
    {
        assert!(
            start.elapsed() < PATIENCE,
            "A's poll never revoked its lease"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The controller's push reaches A first, while B lacks A's writes:
    // held, then refused, and A's node stays master with all of them.
    let sent = Instant::now();
    let refused = ctl_a.cmd(&["CLUSTERX", "SETNODES", &v2, "2"]);
    assert!(
        refused.is_error() && refused.error_text().contains("step-down refused"),
        "the push demoting A is refused while B lacks A's writes: {refused:?}"
    );
    assert!(
        sent.elapsed() >= Duration::from_secs(1),
        "it was held for B first ({:?})",
        sent.elapsed()
    );
    let mut direct_a = a.kvrocks.client();
    assert_eq!(info_field(&mut direct_a, "role").as_deref(), Some("master"));
    assert_eq!(
        direct_a.cmd(&["GET", &format!("acked-{}", keys - 1)]),
        Reply::bulk("v")
    );

    // The controller sends it again; B follows A again meanwhile and
    // catches up: the push is held until then, and goes on.
    let repair = std::thread::spawn({
        let v1 = v1.clone();
        let mut direct_b = b.kvrocks.client();
        move || {
            std::thread::sleep(Duration::from_millis(300));
            follow(&mut direct_b, &v1);
        }
    });
    let sent = Instant::now();
    let taken = ctl_a.cmd(&["CLUSTERX", "SETNODES", &v2, "2"]);
    repair.join().expect("B follows A again");
    assert_eq!(
        taken,
        Reply::ok(),
        "the push demoting A goes on once B has A's writes"
    );
    assert!(
        sent.elapsed() >= Duration::from_millis(300),
        "held until B followed A again ({:?})",
        sent.elapsed()
    );
    // Then the push promoting B reaches B.
    let start = Instant::now();
    loop {
        let reply = b.proxy.client().cmd(&["CLUSTERX", "SETNODES", &v2, "2"]);
        if reply == Reply::ok() {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "B was never promoted: {reply:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every write A acknowledged is at the new master.
    let missing: Vec<usize> = (0..keys)
        .filter(|i| direct_b.cmd(&["GET", &format!("acked-{i}")]) != Reply::bulk("v"))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {keys} acknowledged writes missing at the new master: {missing:?}",
        missing.len()
    );
}

/// kvrocks-controller 1.2.0's push of a switch reaches the old master A
/// before A's poll sees the switch (walkthrough 29). A's leasegate holds
/// its writes until B's leasegate holds the lease, its poller busy with
/// that meanwhile; B's poll, named master, waited for A to report itself
/// fenced at the new version, which A's blocked poll never read: both
/// waited `switch_timeout_ms` (2 s there, 10 s here), B even after the
/// controller's push had made its node master. Now A reports the version
/// its node accepted from the controller, and the controller's push to B
/// ends B's wait: the write held at A is taken within seconds.
#[test]
fn a_push_reaching_the_old_master_before_its_poll_does_not_stall_the_switch() {
    let controller = support::controller::TestController::start();
    let yaml = format!(
        "{}  switch_timeout_ms: 10000\n",
        controller.yaml(200, 10_000)
    );
    let (Some(a), Some(b)) = (
        support::kvrocks::Node::start_with(A_ID, "block-write", &yaml),
        support::kvrocks::Node::start_with(B_ID, "block-write", &yaml),
    ) else {
        return;
    };
    let (a_addr, b_addr) = support::kvrocks::a_master_of_b(&controller, &a, &b);
    let mut app = a.proxy.client();
    let keys = 100;
    for i in 0..keys {
        assert_eq!(
            app.cmd(&["SET", &format!("acked-{i}"), "v"]),
            Reply::ok(),
            "A takes write {i} under its lease"
        );
    }
    let mut replica_b = b.kvrocks.client();
    assert_eq!(replica_b.cmd(&["READONLY"]), Reply::ok());
    support::kvrocks::wait_for(&mut replica_b, &format!("acked-{}", keys - 1), "v");
    // The push demoting A, while the controller still answers A's polls
    // with version 1.
    let v2 = topology((B_ID, &b), Some((A_ID, &a)));
    a.set_nodes(&v2, 2);
    app.send(&["SET", "held", "at A"]);
    assert_eq!(
        app.try_read(Duration::from_millis(300)),
        None,
        "A's write waits for B's lease"
    );
    // Then the controller answers with the switch: B's poll sees itself
    // named master while its node is still at version 1.
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
    std::thread::sleep(Duration::from_millis(300));
    // The controller's push reaches B.
    let pushed = Instant::now();
    b.set_nodes(&v2, 2);
    let answer = app.try_read(Duration::from_secs(5));
    assert_eq!(
        answer,
        Some(Reply::ok()),
        "the write held at A is taken once B holds its lease, within 5 s of the push to B (not at switch_timeout_ms, 10 s)"
    );
    let took = pushed.elapsed();
    let mut direct_b = b.kvrocks.client();
    assert_eq!(
        direct_b.cmd(&["GET", "held"]),
        Reply::bulk("at A"),
        "at B's node ({took:?} after the push to B)"
    );
    let missing: Vec<usize> = (0..keys)
        .filter(|i| direct_b.cmd(&["GET", &format!("acked-{i}")]) != Reply::bulk("v"))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged writes missing at B: {missing:?}"
    );
}

/// Password-protected A and B (the test controller's shard, polled every
/// 200 ms); A's node crashes, the controller names B master (version 2)
/// and A's poll demotes A (its lease revoked at version 2).
fn a_crashed_and_demoted(
    pw: &str,
) -> Option<(
    support::controller::TestController,
    support::kvrocks::Node,
    support::kvrocks::Node,
)> {
    let (controller, mut a, b) =
        support::kvrocks::controlled_shard_with_password(LeaseBy::Pull, "crash", pw)?;
    let a_addr = format!("127.0.0.1:{}", a.proxy.port);
    let b_addr = format!("127.0.0.1:{}", b.proxy.port);
    a.kvrocks.kill();
    controller.set_topology(
        2,
        vec![vec![(B_ID, &b_addr, "master"), (A_ID, &a_addr, "slave")]],
    );
    // A's poll demotes it (its admin API answers without its node).
    let admin = a.proxy.admin_port();
    let start = Instant::now();
    loop {
        let (_, status) = support::http(admin, "GET", "/v1/status", None, None);
        if status.contains(&format!(r#""demoted":{{"new_master":"{b_addr}"}}"#)) {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "A never stepped down: {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((controller, a, b))
}

/// A crashed and was demoted ([`a_crashed_and_demoted`]). The controller's
/// push promoting B is held by B's fence, which asks A's leasegate for its
/// state: with A's node down, the fence's login (`AUTH`, the node
/// password) waits there for the node and is refused, but A's leasegate
/// answers its own `INFO leasegate`: fenced at version 2, so the push goes
/// to B's node at once. Before, the fence waited for A's lease to run out
/// (`ttl_ms`, 10 s here; 1.6 s of every crash failover in walkthrough 33).
#[test]
fn the_new_masters_fence_learns_that_a_crashed_old_master_is_fenced() {
    const PW: &str = "fence-pw";
    let Some((_controller, a, b)) = a_crashed_and_demoted(PW) else {
        return;
    };
    let v2 = topology((B_ID, &b), Some((A_ID, &a)));
    let mut ctl_b = support::controller_client(&b.proxy, PW);
    let pushed = Instant::now();
    ctl_b.send(&["CLUSTERX", "SETNODES", &v2, "2"]);
    let reply = ctl_b.try_read(Duration::from_secs(5));
    assert_eq!(
        reply,
        Some(Reply::ok()),
        "the push promoting B, after {:?}",
        pushed.elapsed()
    );
    let mut node_b = b.kvrocks.client_auth(Some(PW));
    assert_eq!(info_field(&mut node_b, "role").as_deref(), Some("master"));
}

/// A crashed and was demoted ([`a_crashed_and_demoted`]); the controller
/// does not push (kvrocks-controller 1.2.0 pushes at its next check of B,
/// up to a second later). B's poll, named master, takes over itself: A's
/// leasegate reports itself fenced at version 2 from a connection waiting
/// for its node (`node_down:1`), so there is nothing to catch up with, and
/// B's node gets the topology. Before, B's poll logged in to A's leasegate,
/// was refused (its node down), and waited for the controller's push
/// (walkthrough 35: about a second of each crash failover; never, here).
#[test]
fn a_new_master_takes_over_from_a_crashed_old_master_without_the_controllers_push() {
    const PW: &str = "takeover-pw";
    let Some((_controller, a, b)) = a_crashed_and_demoted(PW) else {
        return;
    };
    let mut app = support::authenticated(b.proxy.client(), Some(PW));
    app.send(&["SET", "after-crash", "at B"]);
    assert_eq!(
        app.try_read(Duration::from_secs(5)),
        Some(Reply::ok()),
        "a write at B, the new master"
    );
    let mut node_b = b.kvrocks.client_auth(Some(PW));
    assert_eq!(info_field(&mut node_b, "role").as_deref(), Some("master"));
    assert_eq!(node_b.cmd(&["GET", "after-crash"]), Reply::bulk("at B"));
    // A new client of A's leasegate is served at B now; A's leasegate
    // still answers its own `INFO leasegate` (before: "this connection was
    // moved to another node's leasegate ...; reconnect", walkthrough 35).
    let info = a.proxy.client().cmd(&["INFO", "leasegate"]).text();
    let b_addr = format!("127.0.0.1:{}", b.proxy.port);
    assert!(
        info.contains("demoted:1") && info.contains(&format!("demoted_new_master:{b_addr}")),
        "{info}"
    );
}

/// The new master's fence pauses the old master at its leasegate, then asks
/// its node for the offset to catch up with. Here A's node does not answer
/// (frozen), while A's polls still read the controller's old topology (a
/// controller that has not caught up): A's lease holds. The fence used to
/// end A's pause and let the promotion go on; once A's node answered again,
/// A acknowledged writes beside the promoted B (an attack pass's reading of
/// the code). Now A stays paused, and the promotion waits until A's lease
/// has run out.
#[test]
fn an_old_master_whose_node_does_not_answer_the_fence_stays_paused() {
    let Some((_controller, a, b)) = controlled_shard(LeaseBy::Pull, "mute-node", &[]) else {
        return;
    };
    let v2 = topology((B_ID, &b), Some((A_ID, &a)));
    let a_node = a.kvrocks.pid().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &a_node])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {a_node}");
    };
    signal("-STOP");
    // The controller's push promoting B (loopback is the controller here).
    let mut ctl_b = b.proxy.client();
    ctl_b.send(&["CLUSTERX", "SETNODES", &v2, "2"]);
    // The fence's question to A's node times out (backend.connect_timeout_ms, 1 s).
    std::thread::sleep(Duration::from_millis(2500));
    signal("-CONT");
    let mut app = a.proxy.client();
    app.send(&["SET", "beside-b", "at A"]);
    let reply = app.try_read(Duration::from_secs(2));
    assert!(
        reply.as_ref().is_none_or(|r| r.is_error()),
        "A acknowledges nothing while B is promoted: {reply:?}"
    );
    let mut direct_a = a.kvrocks.client();
    assert_eq!(direct_a.cmd(&["EXISTS", "beside-b"]), Reply::Int(0));
}
