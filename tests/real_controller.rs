//! The REAL kvrocks-controller 1.2.0 running a cluster-mode Kvrocks shard
//! behind leasegates (`support::kvctl`): registration with and without node
//! passwords (its `AUTH`, `CLUSTERX SETNODEID/SETNODES` through the
//! leasegates, pull renewal of the master's lease), and a controller
//! restart that keeps the cluster. Skipped when the controller or Kvrocks
//! binary is missing.

mod support;

use std::time::{Duration, Instant};

use support::kvctl::{answers, polls, real_shard, RealShard, RealShardOptions};
use support::kvrocks::{wait_for, Node};
use support::{http, Reply, PATIENCE};

/// leasegate's `GET /v1/status` (no token needed).
fn status(node: &Node) -> serde_json::Value {
    let (code, body) = http(node.proxy.admin_port(), "GET", "/v1/status", None, None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn lease_valid(node: &Node) -> bool {
    status(node)["lease"]["valid"] == true
}

/// Waits until `node`'s lease is `valid` (or not).
fn wait_lease(node: &Node, valid: bool, what: &str) {
    let start = Instant::now();
    while lease_valid(node) != valid {
        assert!(
            start.elapsed() < PATIENCE,
            "{what}: lease never became valid={valid}: {}",
            status(node)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_fenced(reply: &Reply, what: &str) {
    assert!(
        matches!(reply, Reply::Error(e) if e.contains("master lease expired")),
        "{what}: {reply:?}"
    );
}

/// What every registration must give: each leasegate learned the id the
/// controller assigned, A holds the lease and B does not, B's leasegate
/// took the topology as its demotion (new master: A's leasegate), a write
/// through A reaches B by replication. A write through B is refused with
/// `pause.on_demote: readonly`, handed over to A with the default (forward).
fn check_registration(shard: &RealShard, on_demote_readonly: bool) {
    let (a, b) = (status(&shard.a), status(&shard.b));
    let a_addr = format!("127.0.0.1:{}", shard.a.proxy.port);
    assert_eq!(a["lease"]["node_id"], shard.a_id.as_str(), "{a}");
    assert_eq!(b["lease"]["node_id"], shard.b_id.as_str(), "{b}");
    assert_eq!(a["lease"]["valid"], true, "A: {a}");
    assert_eq!(b["lease"]["valid"], false, "B: {b}");
    assert_eq!(b["demoted"]["new_master"], a_addr.as_str(), "B: {b}");
    assert_ne!(shard.a_id, shard.b_id);

    let mut app = shard.client(&shard.a);
    assert_eq!(app.cmd(&["SET", "via-a", "1"]), Reply::ok());
    let mut replica = shard.direct(&shard.b);
    assert_eq!(replica.cmd(&["READONLY"]), Reply::ok());
    wait_for(&mut replica, "via-a", "1");

    let through_b = shard.client(&shard.b).cmd(&["SET", "via-b", "1"]);
    let mut direct_a = shard.direct(&shard.a);
    if on_demote_readonly {
        assert!(
            matches!(&through_b, Reply::Error(e)
                if e.starts_with("READONLY this node was demoted") && e.contains(&a_addr)),
            "a write through B: {through_b:?}"
        );
        assert_eq!(direct_a.cmd(&["EXISTS", "via-b"]), Reply::Int(0));
        assert_eq!(replica.cmd(&["EXISTS", "via-b"]), Reply::Int(0));
    } else {
        assert_eq!(through_b, Reply::ok(), "a write through B, handed to A");
        assert_eq!(direct_a.cmd(&["GET", "via-b"]), Reply::bulk("1"));
        wait_for(&mut replica, "via-b", "1");
    }
}

#[test]
fn registration_with_passwords() {
    let opts = RealShardOptions {
        extra_yaml: "pause:\n  on_demote: readonly\n".into(),
        ..RealShardOptions::with_password("nodepw")
    };
    let Some(shard) = real_shard(&opts) else {
        return;
    };
    check_registration(&shard, true);
    let cluster = shard.controller.cluster();
    for node in cluster["shards"][0]["nodes"].as_array().expect("nodes") {
        assert_eq!(node["password"], "nodepw", "{cluster}");
    }
    // Clients must authenticate: the leasegate passes NOAUTH through.
    let reply = shard.a.proxy.client().cmd(&["GET", "via-a"]);
    assert!(
        matches!(&reply, Reply::Error(e) if e.starts_with("NOAUTH")),
        "{reply:?}"
    );
    let wrong = shard.a.proxy.client().cmd(&["AUTH", "wrong"]);
    assert!(wrong.is_error(), "{wrong:?}");
}

#[test]
fn registration_without_password() {
    let Some(shard) = real_shard(&RealShardOptions::default()) else {
        return;
    };
    check_registration(&shard, false);
    let cluster = shard.controller.cluster();
    assert_eq!(cluster["version"], 1, "{cluster}");
    let reply = shard.a.proxy.client().cmd(&["GET", "via-a"]);
    assert_eq!(reply, Reply::bulk("1"));
}

#[test]
fn controller_restart_keeps_the_cluster() {
    let Some(mut shard) = real_shard(&RealShardOptions::with_password("pw2")) else {
        return;
    };
    let before = shard.controller.cluster();

    // Controller down: polls fail, A's lease runs out, its writes are fenced.
    shard.controller.stop();
    wait_lease(&shard.a, false, "A with the controller down");
    assert_fenced(
        &shard.client(&shard.a).cmd(&["SET", "down", "1"]),
        "a write through A while the controller is down",
    );

    let start = Instant::now();
    shard.controller.restart();
    eprintln!(
        "controller restarted, leader again after {:?}",
        start.elapsed()
    );
    let after = shard.controller.cluster();
    assert_eq!(after["version"], before["version"], "{before}\n{after}");
    assert_eq!(after["shards"], before["shards"], "{before}\n{after}");
    assert_eq!(shard.controller.master_of(0).0, shard.a_id);

    // A's lease comes back from the restarted controller, and keeps being
    // renewed past several TTLs.
    wait_lease(&shard.a, true, "A after the restart");
    let mut app = shard.client(&shard.a);
    let renewed = Instant::now();
    while renewed.elapsed() < Duration::from_millis(3 * 1500) {
        assert_eq!(app.cmd(&["SET", "after", "1"]), Reply::ok());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(lease_valid(&shard.a), "{}", status(&shard.a));
    assert!(!lease_valid(&shard.b), "{}", status(&shard.b));
}

/// A leasegate restarted beside its node (a crash and its supervisor, a
/// deploy), with `node_id` left unset as the deployment guide says: the
/// controller sent `CLUSTERX SETNODEID` once, at registration, and does not
/// again, so the new process learns the id from its node (`CLUSTERX MYID`)
/// and its polls renew the lease. Before, every write stayed fenced.
#[test]
fn a_restarted_leasegate_learns_its_node_id_from_the_node() {
    let Some(mut shard) = real_shard(&RealShardOptions::with_password("pw3")) else {
        return;
    };
    for (which, id) in [("A", shard.a_id.clone()), ("B", shard.b_id.clone())] {
        let node = if which == "A" {
            &mut shard.a
        } else {
            &mut shard.b
        };
        node.proxy.restart();
        let start = Instant::now();
        loop {
            let s = status(node);
            if s["lease"]["node_id"] == id.as_str() {
                break;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "{which}'s restarted leasegate never learned its id {id}: {s}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    wait_lease(&shard.a, true, "A after its leasegate's restart");
    let mut app = shard.client(&shard.a);
    assert_eq!(app.cmd(&["SET", "after-restart", "1"]), Reply::ok());
    assert!(!lease_valid(&shard.b), "B: {}", status(&shard.b));
    // B's restarted leasegate, told by its polls that A is master, hands
    // writes to A again (the default, as after the controller's push).
    let a_addr = format!("127.0.0.1:{}", shard.a.proxy.port);
    let start = Instant::now();
    while status(&shard.b)["demoted"]["new_master"] != a_addr.as_str() {
        assert!(
            start.elapsed() < PATIENCE,
            "B's restarted leasegate never took A for the master: {}",
            status(&shard.b)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        shard
            .client(&shard.b)
            .cmd(&["SET", "via-b-after-restart", "1"]),
        Reply::ok()
    );
    assert_eq!(
        shard.direct(&shard.a).cmd(&["GET", "via-b-after-restart"]),
        Reply::bulk("1")
    );
}

/// kvrocks-controller run as operators run it for availability: a raft
/// group of three, the leasegates polling one of them (a follower). Cut
/// off from the other two (frozen), that controller still answers the
/// topology from its own copy, naming A master, for as long as it is
/// asked; the other two could meanwhile elect a leader and promote B. It
/// knows no leader within its election timeout (2 s here, up to twice
/// that), and from then on its answers renew nothing: A's lease lapses
/// and its writes are fenced. Once the group is whole again, A's lease
/// is renewed.
#[test]
fn a_controller_cut_off_from_its_raft_group_renews_no_lease() {
    let opts = RealShardOptions {
        controllers: 3,
        ..RealShardOptions::default()
    };
    let Some(shard) = real_shard(&opts) else {
        return;
    };
    assert!(lease_valid(&shard.a), "A holds its lease");
    for c in &shard.others {
        c.signal("-STOP");
    }
    let cut_off = Instant::now();
    wait_lease(
        &shard.a,
        false,
        "A's lease lapses once its controller is cut off",
    );
    eprintln!("A's lease lapsed {:?} after the cut", cut_off.elapsed());
    // The controller answered all along, naming A master.
    assert_eq!(shard.controller.master_of(0).0, shard.a_id);
    assert_eq!(shard.controller.leader(), 0, "it knows no leader");
    let mut app = shard.client(&shard.a);
    assert_fenced(&app.cmd(&["SET", "k", "v"]), "A fences writes");
    for c in &shard.others {
        c.signal("-CONT");
    }
    wait_lease(
        &shard.a,
        true,
        "A's lease is renewed once the group is whole",
    );
}

/// The case a single controller's answer cannot settle: the group's
/// *leader* cut off from the rest (its followers frozen). kvrocks-controller
/// 1.2.0 keeps it leader (no check-quorum): it goes on naming itself leader
/// and answering its last topology, A master, for as long as it is asked,
/// while the other two could elect a leader and promote B. With every
/// controller listed in `controller.url`, A's leasegate takes a topology
/// only where a majority names one leader: the leader alone is one voice
/// of three, A's lease lapses and its writes are fenced; renewed once the
/// group is whole again.
#[test]
fn a_leader_cut_off_from_its_group_renews_no_lease_where_every_controller_is_listed() {
    let opts = RealShardOptions {
        controllers: 3,
        every_controller: true,
        ..RealShardOptions::default()
    };
    let Some(shard) = real_shard(&opts) else {
        return;
    };
    assert!(lease_valid(&shard.a), "A holds its lease");
    let leader_id = shard.controller.leader();
    let (leader, follower) = match shard.others.as_slice() {
        [x, y] if x.id() == leader_id => (x, y),
        [x, y] if y.id() == leader_id => (y, x),
        _ => panic!("the leader {leader_id} is one of the other two"),
    };
    shard.controller.signal("-STOP");
    follower.signal("-STOP");
    let cut_off = Instant::now();
    wait_lease(
        &shard.a,
        false,
        "A's lease lapses once only the leader answers",
    );
    eprintln!("A's lease lapsed {:?} after the cut", cut_off.elapsed());
    // The leader answered all along, naming itself leader and A master:
    // alone, its word would have renewed A's lease.
    assert_eq!(leader.leader(), leader_id, "it stays leader");
    assert_eq!(leader.master_of(0).0, shard.a_id);
    let mut app = shard.client(&shard.a);
    assert_fenced(&app.cmd(&["SET", "k", "v"]), "A fences writes");
    shard.controller.signal("-CONT");
    follower.signal("-CONT");
    wait_lease(
        &shard.a,
        true,
        "A's lease is renewed once the group is whole",
    );
}

/// A planned failover with every controller listed while one of them is
/// down: the topology reads need a majority (two of three answer), and the
/// shard failover goes to the first controller it reaches (the first
/// listed is the one down). Then back, with all three up.
#[test]
fn a_failover_through_a_listed_group_goes_on_with_one_controller_down() {
    let opts = RealShardOptions {
        controllers: 3,
        every_controller: true,
        ..RealShardOptions::default()
    };
    let Some(mut shard) = real_shard(&opts) else {
        return;
    };
    assert_ne!(
        shard.controller.id(),
        shard.controller.leader(),
        "the first listed is a follower"
    );
    shard.controller.stop();
    // Each poll counts what each controller answered: the one down fails
    // while the others lead.
    let down = shard.controller.url();
    let start = Instant::now();
    // (Counted `late` where the other two decided a poll first.)
    while answers(&shard.a, &down, "error") + answers(&shard.a, &down, "late") == 0 {
        assert!(
            start.elapsed() < PATIENCE,
            "the controller down is never counted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(answers(&shard.a, &shard.others[0].url(), "led") > 0);
    move_and_write(&shard, (&shard.a, &shard.b), &shard.b_id, "after");
    // A member restarted may set off an election (walkthrough 39), during
    // which no majority names a leader and a failover is refused: the group
    // is settled once B's leasegate is renewed again.
    let renewed = polls(&shard.b, "renewed");
    shard.controller.restart();
    let start = Instant::now();
    while polls(&shard.b, "renewed") < renewed + 3 {
        assert!(
            start.elapsed() < PATIENCE,
            "B's lease is never renewed again"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    move_and_write(&shard, (&shard.b, &shard.a), &shard.a_id, "back");
    wait_for(&mut shard.direct(&shard.a), "after", "1");
}

/// `leasegate failover` from one node to the other (`to_id`); then every
/// running controller names it master and a write through it succeeds.
fn move_and_write(shard: &RealShard, (from, to): (&Node, &Node), to_id: &str, key: &str) {
    let printed = shard.failover_by_leasegate(from, to);
    eprintln!("{printed}");
    named_master(shard, to_id);
    let mut app = shard.client(to);
    assert_eq!(
        app.cmd(&["SET", key, "1"]),
        Reply::ok(),
        "the new master takes writes"
    );
}

/// Waits until every running controller of the shard's group names `id`
/// master of shard 0 (a follower's copy follows its leader's).
fn named_master(shard: &RealShard, id: &str) {
    let start = Instant::now();
    for c in &shard.others {
        while c.master_of(0).0 != id {
            assert!(
                start.elapsed() < PATIENCE,
                "controller {} never named {id} master",
                c.id()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
