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
