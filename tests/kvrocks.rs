//! leasegate beside the real Kvrocks server.
//!
//! * Cluster mode, registered by leasegate addresses as kvrocks-controller
//!   registers it: the replica reaches its master through the master's
//!   leasegate, so `_db_name` (a bare line, not RESP), `replconf`, `PSYNC`
//!   and the WAL stream, and a full sync's `_fetch_meta`/`_fetch_file`
//!   transfers must all pass through it unchanged — even while the master's
//!   lease is not valid (replication is never fenced).
//! * Standalone: `leasegate failover` there and back under continuous writes
//!   (Kvrocks has `SLAVEOF`, not `REPLICAOF`; offsets are sequence numbers).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::controller::TestController;
use support::kvrocks::{
    controlled_shard, failover, info_field, link_up, pr389_failover_by_hand, standalone_pair,
    standalone_pair_with, topology, wait_for, KvrocksServer, LeaseBy, Node, A_ID, B_ID,
    SAFETY_MARGIN_MS, TOKEN,
};
use support::load::Writers;
use support::{encode, heartbeat, Proxy, Reply, PATIENCE};

#[test]
fn a_replica_syncs_through_its_masters_leasegate_fully_and_incrementally() {
    let (Some(a), Some(b)) = (Node::start(A_ID), Node::start(B_ID)) else {
        return;
    };
    a.set_nodes(&topology((A_ID, &a), None), 1);
    let mut ctl = a.proxy.client();
    heartbeat(&mut ctl, A_ID, 600_000, 1);
    let mut app = a.proxy.client();
    // Written before the replica exists: it gets them by a full sync.
    for i in 0..100 {
        assert_eq!(app.cmd(&["SET", &format!("before-{i}"), "x"]), Reply::ok());
    }
    // The controller adds B as A's replica; B links to A's leasegate.
    let shard = topology((A_ID, &a), Some((B_ID, &b)));
    a.set_nodes(&shard, 2);
    b.set_nodes(&shard, 2);
    let mut replica = b.kvrocks.client();
    assert_eq!(replica.cmd(&["READONLY"]), Reply::ok());
    wait_for(&mut replica, "before-99", "x");
    assert_eq!(info_field(&mut replica, "role").as_deref(), Some("slave"));
    assert_eq!(
        info_field(&mut replica, "master_port"),
        Some(a.proxy.port.to_string()),
        "B replicates from A's leasegate address"
    );
    // Written after: the WAL stream carries them.
    assert_eq!(app.cmd(&["SET", "after", "y"]), Reply::ok());
    wait_for(&mut replica, "after", "y");

    // Fence A (a heartbeat naming B): writes stop, replication does not.
    heartbeat(&mut ctl, B_ID, 600_000, 2);
    let fenced = app.cmd(&["SET", "fenced", "z"]);
    assert!(
        fenced.error_text().contains("master lease expired"),
        "{fenced:?}"
    );
    let mut direct = a.kvrocks.client();
    assert_eq!(direct.cmd(&["SET", "behind-the-proxy", "w"]), Reply::ok());
    wait_for(&mut replica, "behind-the-proxy", "w");
    assert_eq!(replica.cmd(&["GET", "fenced"]), Reply::Nil);
}

/// Kvrocks' `_db_name` answer is a bare line; leasegate passes it as it is
/// and the connection goes on.
#[test]
fn db_name_is_a_bare_line_and_the_connection_goes_on() {
    let Some(a) = Node::start(A_ID) else {
        return;
    };
    let mut c = a.proxy.client();
    c.send_raw(b"*1\r\n$8\r\n_db_name\r\n");
    let mut line = Vec::new();
    let start = Instant::now();
    while !line.ends_with(b"\r\n") {
        assert!(start.elapsed() < PATIENCE, "no answer to _db_name");
        if let Some(b) = c.read_byte() {
            line.push(b);
        }
    }
    assert!(
        !line.starts_with(b"-") && line.len() > 2,
        "{}",
        String::from_utf8_lossy(&line)
    );
    assert_eq!(c.cmd(&["PING"]), Reply::Status("PONG".into()));
}

/// Kvrocks queues `QUIT` inside a transaction and closes after EXEC
/// (Redis runs it at once). Taken as the end of the session when sent,
/// the client's EXEC was never sent and its connection stayed open,
/// unanswered (a differential fuzzer). Now the transaction runs, as on the
/// node, and the connection then closes.
#[test]
fn quit_inside_a_transaction_on_kvrocks_runs_at_exec() {
    let Some(a) = Node::start(A_ID) else {
        return;
    };
    let mut c = a.proxy.client();
    c.send(&["MULTI"]);
    c.send(&["QUIT"]);
    c.send(&["PING"]);
    c.send(&["EXEC"]);
    assert_eq!(c.read(), Reply::ok(), "MULTI");
    assert_eq!(c.read(), Reply::Status("QUEUED".into()), "QUIT");
    assert_eq!(c.read(), Reply::Status("QUEUED".into()), "PING");
    let exec = c.read();
    assert!(matches!(&exec, Reply::Array(r) if r.len() == 2), "{exec:?}");
    assert!(
        c.is_closed(),
        "the connection closes after EXEC, as the node's"
    );
}

/// Kvrocks runs any command from a subscribed client and answers it with
/// an array, as it sends its messages: `LRANGE` of `message x y` was taken
/// for a message, every reply after it was one off, and a `SET` behind it
/// stayed counted in flight for good (an audit). Such commands are
/// refused now, as Redis refuses them in RESP2, in both protocols; the
/// replies stay in place, and once unsubscribed everything goes again.
#[test]
fn a_subscribed_kvrocks_client_is_held_to_the_subscribe_commands() {
    let Some(node) = KvrocksServer::start(false) else {
        return;
    };
    let proxy = Proxy::start(&node.addr(), "lease:\n  mode: disabled\n");
    let mut setup = proxy.client();
    assert_eq!(
        setup.cmd(&["RPUSH", "l", "message", "x", "y"]),
        Reply::Int(3)
    );
    let refused = |r: &Reply| matches!(r, Reply::Error(e) if e.contains("only (P|S)SUBSCRIBE"));
    for resp3 in [false, true] {
        let mut c = proxy.client();
        if resp3 {
            c.send(&["HELLO", "3"]);
            c.resp3 = true;
            assert!(matches!(c.read(), Reply::Map(_)), "HELLO 3");
        }
        c.send(&["SUBSCRIBE", "ch"]);
        c.read();
        c.send(&["LRANGE", "l", "0", "-1"]);
        c.send(&["SET", "k", "v"]);
        let (lrange, set) = (c.read(), c.read());
        assert!(refused(&lrange), "resp3 {resp3}: {lrange:?}");
        assert!(refused(&set), "resp3 {resp3}: {set:?}");
        c.send(&["UNSUBSCRIBE", "ch"]);
        c.read();
        assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok(), "resp3 {resp3}");
        assert!(
            matches!(c.cmd(&["LRANGE", "l", "0", "-1"]), Reply::Array(a) if a.len() == 3),
            "resp3 {resp3}"
        );
    }
    assert_eq!(setup.cmd(&["GET", "k"]), Reply::Bulk(b"v".to_vec()));
    // Pipelined behind the (un)subscribe, before its confirmation: judged
    // once the session's mode is known (a review: the `LRANGE` went out
    // and its reply was taken for a message; the `GET` behind the last
    // `UNSUBSCRIBE` was refused).
    let mut c = proxy.client();
    c.send_raw(
        &[
            encode(&[b"SUBSCRIBE", b"ch"]),
            encode(&[b"LRANGE", b"l", b"0", b"-1"]),
        ]
        .concat(),
    );
    c.read();
    assert!(refused(&c.read()), "LRANGE pipelined behind SUBSCRIBE");
    assert!(!c.cmd(&["PING"]).is_error(), "PING in subscribe mode");
    c.send_raw(&[encode(&[b"UNSUBSCRIBE", b"ch"]), encode(&[b"GET", b"k"])].concat());
    c.read();
    assert_eq!(
        c.read(),
        Reply::Bulk(b"v".to_vec()),
        "GET behind the last UNSUBSCRIBE"
    );
}

#[test]
fn failover_on_standalone_kvrocks_there_and_back_loses_nothing() {
    let Some(((ka, pa), (kb, pb))) = standalone_pair() else {
        return;
    };
    // Writers on A's leasegate; the hand-over carries their sessions to B.
    let writers = Writers::start(pa.port, 4, "w", Duration::ZERO);
    std::thread::sleep(Duration::from_millis(300));
    let report = failover(&pa, &pb);
    assert!(report.contains(r#""result":"success""#), "{report}");
    link_up(&mut ka.client());
    // And back, with the writers still on (now moved to B's leasegate).
    let report = failover(&pb, &pa);
    assert!(report.contains(r#""result":"success""#), "{report}");
    std::thread::sleep(Duration::from_millis(300));
    // A is master again: every acknowledged write is there.
    let mut direct = ka.client();
    writers
        .finish()
        .assert_none_failed_or_lost(&mut direct, 100);
    assert_eq!(info_field(&mut direct, "role").as_deref(), Some("master"));
    assert_eq!(
        info_field(&mut kb.client(), "role").as_deref(),
        Some("slave")
    );
}

/// Kvrocks does not unblock a client blocked in `BLPOP` when the node
/// becomes a replica (Redis answers `-UNBLOCKED`): the client would wait
/// for good for an element that now goes to the new master. Once A's
/// leasegate sees its node a replica, such a client gets an error; its
/// next BLPOP pops on the new master.
#[test]
fn a_client_blocked_on_a_demoted_kvrocks_gets_an_error_and_pops_on_the_new_master() {
    let Some(((ka, pa), (_kb, pb))) = standalone_pair() else {
        return;
    };
    let mut blocked = pa.client();
    blocked.send(&["BLPOP", "jobs", "0"]);
    assert_eq!(
        blocked.try_read(Duration::from_millis(200)),
        None,
        "blocked"
    );
    let report = failover(&pa, &pb);
    assert!(report.contains(r#""result":"success""#), "{report}");
    let unblocked = blocked.try_read(PATIENCE);
    assert!(
        unblocked.as_ref().is_some_and(Reply::is_error),
        "the blocked client is answered with an error: {unblocked:?}"
    );
    assert!(
        unblocked
            .as_ref()
            .is_some_and(|r| r.error_text().starts_with("UNBLOCKED")),
        "{unblocked:?}"
    );
    // Without a controller a session does not outlive its node connection:
    // this one closes, and a new one through A's leasegate pops on B.
    pops_what_b_gets(&mut pa.client(), &pb, Duration::from_millis(200));
    // Nothing is left blocked on the old master.
    let list = ka.client().cmd(&["CLIENT", "LIST"]).text();
    assert!(!list.contains("cmd=blpop"), "{list}");
}

/// `XREAD ... BLOCK` is a read, but Kvrocks leaves it blocked when the
/// node becomes a replica, and wakes no reader of a replica with the
/// entries replication brings: in flight at a failover, it waited for good
/// (an attack pass, `XREAD BLOCK 0`). It now ends as a blocking write does.
#[test]
fn a_blocking_xread_on_a_demoted_kvrocks_gets_an_error() {
    let Some(((ka, pa), (_kb, pb))) = standalone_pair() else {
        return;
    };
    let mut forever = pa.client();
    forever.send(&["XREAD", "BLOCK", "0", "STREAMS", "events", "$"]);
    let mut long = pa.client();
    long.send(&[
        "XREAD", "COUNT", "5", "block", "600000", "STREAMS", "events", "$",
    ]);
    for c in [&mut forever, &mut long] {
        assert_eq!(c.try_read(Duration::from_millis(200)), None, "blocked");
    }
    let report = failover(&pa, &pb);
    assert!(report.contains(r#""result":"success""#), "{report}");
    for c in [&mut forever, &mut long] {
        let unblocked = c.try_read(PATIENCE);
        assert!(
            unblocked
                .as_ref()
                .is_some_and(|r| r.error_text().starts_with("UNBLOCKED")),
            "{unblocked:?}"
        );
    }
    // Their node connections were given up (Kvrocks notices the close
    // within moments): nothing is left blocked on the old master.
    let start = std::time::Instant::now();
    loop {
        let list = ka.client().cmd(&["CLIENT", "LIST"]).text();
        if !list.contains("cmd=xread") {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "{list}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The failover of kvrocks-controller PR #389, driven as the controller
/// drives it, through the leasegates: `CLIENT PAUSE WRITE` on the master,
/// wait for the replica's sequence, push the new topology, heartbeat the new
/// master, `CLIENT UNPAUSE`. Writes held on A follow the topology to B's
/// leasegate: no client error, every acknowledged write on the new master.
#[test]
fn controller_driven_failover_in_cluster_mode_holds_and_hands_over() {
    let (Some(a), Some(b)) = (Node::start(A_ID), Node::start(B_ID)) else {
        return;
    };
    let v1 = topology((A_ID, &a), Some((B_ID, &b)));
    a.set_nodes(&v1, 1);
    b.set_nodes(&v1, 1);
    for node in [&a, &b] {
        assert!(!heartbeat(&mut node.proxy.client(), A_ID, 600_000, 1).is_error());
    }
    let mut direct_b = b.kvrocks.client();
    link_up(&mut direct_b);

    let writers = Writers::start(a.proxy.port, 4, "w", Duration::ZERO);
    std::thread::sleep(Duration::from_millis(300));

    pr389_failover_by_hand((A_ID, &a), (B_ID, &b), 2);
    std::thread::sleep(Duration::from_millis(300));
    writers
        .finish()
        .assert_none_failed_or_lost(&mut direct_b, 50);
    assert_eq!(info_field(&mut direct_b, "role").as_deref(), Some("master"));
}

/// A cluster-mode Kvrocks with `requirepass node-pw` behind a leasegate
/// whose `backend.password` is `backend_password` and `control.password`
/// is `ctl-pw`; `None` when Kvrocks is not here.
fn behind_a_password(backend_password: &str) -> Option<(KvrocksServer, Proxy)> {
    let kvrocks = KvrocksServer::start_with(true, &["--requirepass", "node-pw"])?;
    let proxy = Proxy::start_with_backend_yaml(
        &format!(
            "backend:\n  addr: {}\n  password: {backend_password}\n",
            kvrocks.addr()
        ),
        &format!(
            "node_id: {A_ID}\ncontrol:\n  password: ctl-pw\nlease:\n  mode: block-write\n  probe_interval_ms: 0\n"
        ),
    );
    Some((kvrocks, proxy))
}

/// A controller that authenticates with `control.password` is authenticated
/// at the node too (leasegate sends `AUTH <backend.password>` in its place),
/// so its `CLUSTERX SETNODEID/SETNODES` are not refused with NOAUTH; the
/// control password itself never reaches the node.
#[test]
fn a_control_connection_is_authenticated_at_a_password_protected_node() {
    let Some((_kvrocks, proxy)) = behind_a_password("node-pw") else {
        return;
    };
    // Not the controller's: refused by leasegate.
    let mut stranger = proxy.client();
    assert!(stranger
        .cmd(&["CLUSTERX", "SETNODEID", A_ID])
        .error_text()
        .starts_with("NOPERM leasegate"));
    let mut ctl = support::controller_client(&proxy, "ctl-pw");
    assert_eq!(ctl.cmd(&["CLUSTERX", "SETNODEID", A_ID]), Reply::ok());
    let shard = format!("{A_ID} 127.0.0.1 {} master - 0-16383", proxy.port);
    assert_eq!(ctl.cmd(&["CLUSTERX", "SETNODES", &shard, "1"]), Reply::ok());
    assert!(!heartbeat(&mut ctl, A_ID, 60_000, 1).is_error());
    assert_eq!(ctl.cmd(&["SET", "k", "v"]), Reply::ok());
    let mut app = proxy.client();
    assert_eq!(app.cmd(&["AUTH", "ctl-pw"]), Reply::ok());
    assert_eq!(app.cmd(&["GET", "k"]), Reply::bulk("v"));
}

/// With a wrong `backend.password`, the controller's `AUTH <control.password>`
/// gets the node's refusal, not an `+OK` that its next command's `NOAUTH`
/// contradicts.
#[test]
fn a_control_auth_with_a_wrong_backend_password_gets_the_nodes_refusal() {
    let Some((_kvrocks, proxy)) = behind_a_password("not-the-node-pw") else {
        return;
    };
    let mut ctl = proxy.client();
    let reply = ctl.cmd(&["AUTH", "ctl-pw"]);
    assert!(
        reply.is_error(),
        "AUTH with a wrong backend.password: {reply:?}"
    );
    assert!(
        !reply.error_text().contains("ctl-pw") && !reply.error_text().contains("not-the-node-pw"),
        "no password in the error: {reply:?}"
    );
}

/// A cluster-mode Kvrocks node (A, at 127.0.0.1:7001 in the topology)
/// behind a leasegate that polls a controller (every 30 s) whose topology
/// at `version` names B master and A its replica; A's id set on the node.
/// `None` without Kvrocks.
fn replica_of_b_in_pull_mode(version: u64) -> Option<(KvrocksServer, TestController, Proxy)> {
    let kvrocks = KvrocksServer::start(true)?;
    let controller = TestController::start();
    controller.set_topology(
        version,
        vec![vec![
            (B_ID, "127.0.0.1:7002", "master"),
            (A_ID, "127.0.0.1:7001", "slave"),
        ]],
    );
    let proxy = Proxy::start(
        &kvrocks.addr(),
        &format!(
            "node_id: {A_ID}\ncontrol:\n  allow_from: [127.0.0.1]\nlease:\n  mode: block-write\n  probe_interval_ms: 0\n{}",
            controller.yaml(30_000, 60_000)
        ),
    );
    assert_eq!(
        proxy.client().cmd(&["CLUSTERX", "SETNODEID", A_ID]),
        Reply::ok()
    );
    Some((kvrocks, controller, proxy))
}

/// In pull mode, a topology that promotes this node (accepted by the node)
/// makes leasegate ask the controller at once: the new master's writes open
/// within a controller round trip, not a poll interval (30 s here).
#[test]
fn a_topology_promoting_this_node_triggers_a_poll_at_once() {
    let Some((_kvrocks, controller, proxy)) = replica_of_b_in_pull_mode(1) else {
        return;
    };
    let me_addr = "127.0.0.1:7001";
    let mut ctl = proxy.client();
    // The first poll (at start) says slave: fenced.
    let start = Instant::now();
    while controller.requests().is_empty() {
        assert!(start.elapsed() < PATIENCE, "no first poll");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(ctl.cmd(&["SET", "k", "v"]).is_error());
    // The controller fails the shard over to this node: its topology, then
    // SETNODES pushed to the node through leasegate.
    controller.set_topology(
        2,
        vec![vec![
            (A_ID, me_addr, "master"),
            (B_ID, "127.0.0.1:7002", "slave"),
        ]],
    );
    let shard = format!(
        "{A_ID} 127.0.0.1 {} master - 0-16383\n{B_ID} 127.0.0.1 7002 slave {A_ID}",
        proxy.port
    );
    let pushed = Instant::now();
    assert_eq!(ctl.cmd(&["CLUSTERX", "SETNODES", &shard, "2"]), Reply::ok());
    loop {
        if ctl.cmd(&["SET", "k", "v"]) == Reply::ok() {
            break;
        }
        assert!(
            pushed.elapsed() < PATIENCE,
            "writes did not open after the promoting topology (the poll interval is 30 s)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A topology push older than the controller's word the poll already has
/// does not end this node's demotion: the controller, having switched the
/// shard to B at version 3, may still deliver its earlier push (version 2,
/// naming this node master) to the node. Taken as a promotion, it cleared
/// the demotion the poll had just made, and the writes held for the switch
/// met the lapsed lease: `-READONLY master lease expired` during a planned
/// failover with verification on (walkthrough 11).
#[test]
fn a_stale_push_naming_this_node_master_keeps_its_demotion() {
    let Some((_kvrocks, _controller, proxy)) = replica_of_b_in_pull_mode(3) else {
        return;
    };
    let mut ctl = proxy.client();
    let leasegate_field = |c: &mut support::Client, field: &str| {
        let text = c.cmd(&["INFO", "leasegate"]).text();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .map(|v| v.trim().to_string())
    };
    let start = Instant::now();
    while leasegate_field(&mut ctl, "demoted").as_deref() != Some("1") {
        assert!(start.elapsed() < PATIENCE, "the first poll did not demote");
        std::thread::sleep(Duration::from_millis(10));
    }
    let stale = format!(
        "{A_ID} 127.0.0.1 {} master - 0-16383\n{B_ID} 127.0.0.1 7002 slave {A_ID}",
        proxy.port
    );
    assert_eq!(ctl.cmd(&["CLUSTERX", "SETNODES", &stale, "2"]), Reply::ok());
    assert_eq!(
        leasegate_field(&mut ctl, "demoted").as_deref(),
        Some("1"),
        "a push at version 2 undid the demotion the controller's version 3 made"
    );
    assert_eq!(
        leasegate_field(&mut ctl, "demoted_new_master").as_deref(),
        Some("127.0.0.1:7002")
    );
}

/// With `pause.on_demote: moved`, a write held through the controller's
/// failover is answered `-MOVED <slot> <new master's leasegate>`, as a
/// cluster client expects, and nothing is applied on the old master.
#[test]
fn held_writes_are_moved_to_the_master_the_topology_names() {
    let (Some(a), Some(b)) = (
        Node::start_with(A_ID, "block-write", "pause:\n  on_demote: moved\n"),
        Node::start(B_ID),
    ) else {
        return;
    };
    let v1 = topology((A_ID, &a), Some((B_ID, &b)));
    a.set_nodes(&v1, 1);
    b.set_nodes(&v1, 1);
    assert!(!heartbeat(&mut a.proxy.client(), A_ID, 600_000, 1).is_error());
    let mut ctl = a.proxy.client();
    assert_eq!(ctl.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]), Reply::ok());
    let mut app = a.proxy.client();
    app.send(&["SET", "held", "1"]);
    assert_eq!(app.try_read(Duration::from_millis(100)), None, "held");
    let v2 = topology((B_ID, &b), Some((A_ID, &a)));
    b.set_nodes(&v2, 2);
    a.set_nodes(&v2, 2);
    assert_eq!(ctl.cmd(&["CLIENT", "UNPAUSE"]), Reply::ok());
    let moved = app.read();
    let slot = app.cmd(&["CLUSTER", "KEYSLOT", "held"]);
    let Reply::Int(slot) = slot else {
        panic!("CLUSTER KEYSLOT answers an integer: {slot:?}");
    };
    assert_eq!(
        moved.error_text(),
        format!("MOVED {slot} 127.0.0.1:{}", b.proxy.port)
    );
    let mut direct = a.kvrocks.client();
    assert_eq!(direct.cmd(&["READONLY"]), Reply::ok());
    assert_eq!(direct.cmd(&["EXISTS", "held"]), Reply::Int(0));
}

const TTL_MS: u64 = 500;

struct SplitBrain {
    /// Writes A's leasegate acknowledged before the partition.
    old_before: usize,
    /// Writes A's leasegate acknowledged after the promotion instant.
    old_after_promotion: Vec<String>,
    /// Writes B's leasegate acknowledged after the promotion.
    new_after_promotion: usize,
    /// Of `old_after_promotion`, those missing on the new master: lost.
    lost: usize,
}

/// The stock-controller flow on Kvrocks in cluster mode: the controller
/// heartbeats A (`CLUSTERX HEARTBEAT <master_id> <lease_ms> <version>`)
/// until a partition cuts A off; it waits out the lease plus margin, pushes
/// the topology naming B master to B only (A does not hear it) and
/// heartbeats B.
fn kvrocks_split_brain(mode: &str) -> Option<SplitBrain> {
    let (Some(a), Some(b)) = (
        Node::start_with(A_ID, mode, ""),
        Node::start_with(B_ID, mode, ""),
    ) else {
        return None;
    };
    let v1 = topology((A_ID, &a), Some((B_ID, &b)));
    a.set_nodes(&v1, 1);
    b.set_nodes(&v1, 1);
    let partitioned = Arc::new(AtomicBool::new(false));
    let beats = {
        let partitioned = Arc::clone(&partitioned);
        let mut ctl_a = a.proxy.client();
        std::thread::spawn(move || {
            while !partitioned.load(Ordering::Relaxed) {
                assert!(!heartbeat(&mut ctl_a, A_ID, TTL_MS, 1).is_error());
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(150));
    let old = Writers::start(a.proxy.port, 1, "old", Duration::from_millis(2));
    std::thread::sleep(Duration::from_millis(400));
    partitioned.store(true, Ordering::Relaxed);
    beats.join().expect("heartbeats");
    let partition = Instant::now();
    std::thread::sleep(Duration::from_millis(TTL_MS + SAFETY_MARGIN_MS + 50));
    let promotion = Instant::now();
    let v2 = topology((B_ID, &b), Some((A_ID, &a)));
    b.set_nodes(&v2, 2);
    assert!(!heartbeat(&mut b.proxy.client(), B_ID, 10_000, 2).is_error());
    let new = Writers::start(b.proxy.port, 1, "new", Duration::from_millis(2));
    std::thread::sleep(Duration::from_millis(600));
    let (old, new) = (old.finish(), new.finish());
    let old_after_promotion: Vec<String> = old
        .acked
        .iter()
        .filter(|(t, _)| *t >= promotion)
        .map(|(_, k)| k.clone())
        .collect();
    let mut direct_b = b.kvrocks.client();
    let lost = old_after_promotion
        .iter()
        .filter(|k| direct_b.cmd(&["EXISTS", k.as_str()]) != Reply::Int(1))
        .count();
    Some(SplitBrain {
        old_before: old.acked.iter().filter(|(t, _)| *t < partition).count(),
        old_after_promotion,
        new_after_promotion: new.acked.iter().filter(|(t, _)| *t >= promotion).count(),
        lost,
    })
}

#[test]
fn kvrocks_with_the_lease_the_old_master_acknowledges_nothing_after_promotion() {
    let Some(o) = kvrocks_split_brain("block-write") else {
        return;
    };
    assert!(o.old_before > 0, "writes flowed before the partition");
    assert!(o.new_after_promotion > 0, "the new master took writes");
    assert!(
        o.old_after_promotion.is_empty(),
        "A acknowledged {} writes after the promotion: split brain",
        o.old_after_promotion.len()
    );
}

#[test]
fn kvrocks_without_the_lease_acknowledged_writes_are_lost() {
    let Some(o) = kvrocks_split_brain("disabled") else {
        return;
    };
    assert!(o.new_after_promotion > 0, "the new master took writes");
    assert!(
        !o.old_after_promotion.is_empty(),
        "expected the unfenced old master to acknowledge writes after the promotion"
    );
    assert!(
        o.lost > 0,
        "and those writes are not on the new master: lost"
    );
}

/// What leasegate reads from Kvrocks, asserted against the real server:
/// `INFO replication` fields and their parse, the heartbeat report's
/// `sequence:` (Kvrocks' sequence number), `CLUSTER KEYSLOT` against
/// leasegate's own slot hashing, `CLUSTER INFO`'s epoch, and how this build
/// answers a `slave,fail` role token.
#[test]
fn what_leasegate_reads_from_kvrocks_matches_the_real_server() {
    use leasegate::kvrocks::topology::{key_slot, listed_as_replica, Replication};
    let (Some(a), Some(b)) = (Node::start(A_ID), Node::start(B_ID)) else {
        return;
    };
    let shard = topology((A_ID, &a), Some((B_ID, &b)));
    a.set_nodes(&shard, 1);
    b.set_nodes(&shard, 1);
    let mut ctl = a.proxy.client();
    heartbeat(&mut ctl, A_ID, 600_000, 1);
    for i in 0..10 {
        assert_eq!(ctl.cmd(&["SET", &format!("k{i}"), "v"]), Reply::ok());
    }
    let (mut direct_a, mut direct_b) = (a.kvrocks.client(), b.kvrocks.client());
    assert_eq!(direct_b.cmd(&["READONLY"]), Reply::ok());
    wait_for(&mut direct_b, "k9", "v");

    let master = Replication::parse_info(&direct_a.cmd(&["INFO", "replication"]).text());
    assert_eq!(master.role.as_deref(), Some("master"));
    let sequence = master.offset.expect("master_repl_offset");
    assert!(
        sequence >= 10,
        "one sequence number per write batch: {sequence}"
    );
    let replica = Replication::parse_info(&direct_b.cmd(&["INFO", "replication"]).text());
    assert!(replica.is_replica());
    assert_eq!(replica.link_status.as_deref(), Some("up"));
    assert_eq!(replica.master, Some(format!("127.0.0.1:{}", a.proxy.port)));
    assert_eq!(replica.offset, Some(sequence), "the replica caught up");
    let report = support::info_fields(&heartbeat(&mut ctl, A_ID, 600_000, 1));
    assert_eq!(report["sequence"], sequence.to_string());
    assert_eq!(report["role"], "master");

    for key in ["k0", "{user1000}.following", "foo", ""] {
        let Reply::Int(slot) = direct_a.cmd(&["CLUSTER", "KEYSLOT", key]) else {
            panic!("CLUSTER KEYSLOT answers an integer");
        };
        assert_eq!(i64::from(key_slot(key.as_bytes())), slot, "{key:?}");
    }
    let info = direct_a.cmd(&["CLUSTER", "INFO"]).text();
    assert!(info.contains("cluster_current_epoch:1"), "{info}");

    // Newer controllers mark a failed replica `slave,fail`; leasegate reads
    // that as a slave. This Kvrocks build refuses the token, and a topology
    // the node refuses changes nothing in leasegate either.
    let failed = shard.replace(" slave ", " slave,fail ");
    assert!(listed_as_replica(&failed, B_ID));
    let refused = ctl.cmd(&["CLUSTERX", "SETNODES", &failed, "2"]);
    assert_eq!(refused.error_text(), "ERR Invalid cluster node role");
    assert_eq!(ctl.cmd(&["SET", "after", "v"]), Reply::ok(), "still master");
    let info = direct_a.cmd(&["CLUSTER", "INFO"]).text();
    assert!(info.contains("cluster_current_epoch:1"), "{info}");
}

fn cluster_failover_there_and_back(by: LeaseBy) {
    let Some((controller, a, b)) = controlled_shard(by, TOKEN, &[]) else {
        return;
    };
    let writers = Writers::start(a.proxy.port, 4, "w", Duration::ZERO);
    std::thread::sleep(Duration::from_millis(300));
    let report = failover(&a.proxy, &b.proxy);
    eprintln!("A→B: {report}");
    assert!(report.contains(r#""result":"success""#), "{report}");
    assert_eq!(controller.failovers(), 1, "through the controller");
    assert_eq!(
        info_field(&mut b.kvrocks.client(), "role").as_deref(),
        Some("master")
    );
    // The topology made A B's replica (through B's leasegate).
    link_up(&mut a.kvrocks.client());
    let report = failover(&b.proxy, &a.proxy);
    assert!(report.contains(r#""result":"success""#), "{report}");
    assert_eq!(controller.failovers(), 2);
    assert_eq!(controller.version(), 3);
    std::thread::sleep(Duration::from_millis(300));
    let mut direct = a.kvrocks.client();
    writers
        .finish()
        .assert_none_failed_or_lost(&mut direct, 100);
    assert_eq!(info_field(&mut direct, "role").as_deref(), Some("master"));
    assert_eq!(
        info_field(&mut b.kvrocks.client(), "role").as_deref(),
        Some("slave")
    );
}

/// `leasegate failover` on Kvrocks in cluster mode (which refuses SLAVEOF):
/// writes are held on A, the replica catches up, the controller's shard
/// failover switches the topology and heartbeats B, the held writes go to
/// B — and back. No client error, nothing lost.
#[test]
fn cluster_failover_through_the_controller_with_heartbeats() {
    cluster_failover_there_and_back(LeaseBy::Heartbeat);
}

/// The same with a stock (pull) controller: B's leasegate asks for its
/// lease when its node accepts the promoting topology.
#[test]
fn cluster_failover_through_a_stock_controller_with_pull() {
    cluster_failover_there_and_back(LeaseBy::Pull);
}

/// A controller that refuses the shard failover changed nothing: the
/// fencing is undone — A is master again at its old epoch, so the
/// controller's heartbeats renew it as before — and the held writes go to A.
#[test]
fn a_refused_cluster_failover_leaves_the_master_as_it_was() {
    let Some((controller, a, b)) = controlled_shard(LeaseBy::Heartbeat, TOKEN, &[]) else {
        return;
    };
    controller.set_failover_error(Some((409, "shard is migrating")));
    let writers = Writers::start(a.proxy.port, 2, "w", Duration::ZERO);
    std::thread::sleep(Duration::from_millis(200));
    let (status, report) = support::post_failover(
        &a.proxy,
        &b.proxy,
        TOKEN,
        r#""sync_timeout_ms":3000,"pause_timeout_ms":5000"#,
    );
    assert_ne!(status, 200, "{report}");
    assert!(report.contains("controller refused"), "{report}");
    assert!(report.contains("shard is migrating"), "{report}");
    assert!(report.contains(r#""both_fenced":false"#), "{report}");
    let a_addr = format!("127.0.0.1:{}", a.proxy.port);
    let beat = controller
        .heartbeat(&a_addr, A_ID, 600_000)
        .expect("heartbeat");
    assert!(beat.starts_with('$'), "renewed at the old epoch: {beat}");
    std::thread::sleep(Duration::from_millis(200));
    let mut direct = a.kvrocks.client();
    writers.finish().assert_none_failed_or_lost(&mut direct, 20);
    assert_eq!(controller.version(), 1, "nothing switched");
    assert_eq!(info_field(&mut direct, "role").as_deref(), Some("master"));
}

/// The controller answers the shard failover `200` but never switches (a
/// follower whose leader had just died: kvrocks-controller 1.2.0 answers
/// at once and its raft never commits the change; walkthrough 38). The
/// failover ends with both nodes fenced, A demoted toward B, while B's
/// leasegate, a replica by the controller's word, hands writes to A: every
/// session went back and forth between the two, a new connection per hop,
/// until both ran out of file descriptors. Now A's writes are refused
/// where B would hand them back, and nothing accumulates.
#[test]
fn a_failover_the_controller_never_carries_out_bounces_no_session() {
    let Some((controller, a, b)) = controlled_shard(LeaseBy::Pull, TOKEN, &[]) else {
        return;
    };
    controller.set_failover_lost(true);
    let (status, report) = support::post_failover(
        &a.proxy,
        &b.proxy,
        TOKEN,
        r#""sync_timeout_ms":300,"pause_timeout_ms":500"#,
    );
    assert_ne!(status, 200, "{report}");
    assert!(report.contains(r#""both_fenced":true"#), "{report}");
    let fds_before = a.proxy.fd_count();
    for (name, node) in [("A", &a), ("B", &b)] {
        let mut c = node.proxy.client();
        for i in 0..20 {
            let reply = c.cmd(&["SET", &format!("k{i}"), "v"]);
            assert!(
                matches!(&reply, Reply::Error(_)),
                "a write at {name} with both fenced: {reply:?}"
            );
        }
    }
    let fds_after = a.proxy.fd_count();
    assert!(
        fds_after < fds_before + 20,
        "A's descriptors grew from {fds_before} to {fds_after}"
    );
}

/// A node that handed its lease away in one failover and is made master
/// again later by a topology that did not pass its leasegate (a failover
/// that failed past the controller's switch leaves the nodes to be brought
/// there directly) gets its lease from the controller's next poll. The
/// lease still named for the other node made the poller take it for a
/// hand-over at this version: no writable master until the controller's
/// next version (a walkthrough waited 15–55 s).
#[test]
fn a_node_promoted_again_after_handing_its_lease_away_is_renewed() {
    let Some((controller, a, b)) = controlled_shard(LeaseBy::Pull, TOKEN, &[]) else {
        return;
    };
    let report = failover(&a.proxy, &b.proxy);
    assert!(report.contains(r#""result":"success""#), "{report}");
    link_up(&mut a.kvrocks.client());
    // Version 3 names A master; A's polls see it while its node is B's
    // replica, then both nodes get it directly.
    let (a_addr, b_addr) = (
        format!("127.0.0.1:{}", a.proxy.port),
        format!("127.0.0.1:{}", b.proxy.port),
    );
    controller.set_topology(
        3,
        vec![vec![(A_ID, &a_addr, "master"), (B_ID, &b_addr, "slave")]],
    );
    std::thread::sleep(Duration::from_millis(600));
    let text = topology((A_ID, &a), Some((B_ID, &b)));
    for node in [&b, &a] {
        let reply = node
            .kvrocks
            .client()
            .cmd(&["CLUSTERX", "SETNODES", &text, "3"]);
        assert_eq!(reply, Reply::ok(), "SETNODES v3 directly");
    }
    let mut client = a.proxy.client();
    let start = Instant::now();
    loop {
        let reply = client.cmd(&["SET", "k", "v"]);
        if reply == Reply::ok() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "A, master at version 3, never writable: {reply:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A controller that accepts a connection and then stalls (a frozen
/// process) fails a cluster failover within `controller.timeout_ms`,
/// before any write is paused. Its topology read waited for as long as the
/// controller stalled: the operator's `leasegate failover` gave up after
/// 30 s, and the failover went on once the controller answered.
#[test]
fn a_stalled_controller_fails_the_cluster_failover_before_the_pause() {
    let Some((controller, a, b)) = controlled_shard(LeaseBy::Heartbeat, TOKEN, &[]) else {
        return;
    };
    controller.set_delay(Duration::from_secs(20));
    let started = Instant::now();
    let (status, report) = support::post_failover(
        &a.proxy,
        &b.proxy,
        TOKEN,
        r#""sync_timeout_ms":3000,"pause_timeout_ms":5000"#,
    );
    let took = started.elapsed();
    controller.set_delay(Duration::ZERO);
    assert_ne!(status, 200, "{report}");
    assert!(report.contains("no answer within"), "{report}");
    assert!(
        !report.contains("pause_write"),
        "nothing was paused: {report}"
    );
    assert!(
        took < Duration::from_secs(15),
        "answered after {took:?}, not within the controller's timeout: {report}"
    );
}

/// A topology that promotes this node ends its demotion even before the
/// controller grants the lease: a write there is fenced, not handed back to
/// the old master (which, demoted toward this node, would hand it back
/// again: a loop until file descriptors ran out) nor answered `MOVED` to
/// itself.
#[test]
fn a_promoting_topology_ends_the_demotion_before_the_lease_comes() {
    let (Some(a), Some(b)) = (
        Node::start(A_ID),
        Node::start_with(B_ID, "block-write", "pause:\n  on_demote: moved\n"),
    ) else {
        return;
    };
    let v1 = topology((A_ID, &a), Some((B_ID, &b)));
    a.set_nodes(&v1, 1);
    b.set_nodes(&v1, 1);
    let v2 = topology((B_ID, &b), Some((A_ID, &a)));
    b.set_nodes(&v2, 2);
    a.set_nodes(&v2, 2);
    // No heartbeat for B yet.
    let mut app = b.proxy.client();
    let reply = app.cmd(&["SET", "k", "v"]);
    let text = reply.error_text().to_string();
    assert!(
        !text.starts_with("MOVED") && !text.starts_with("TRYAGAIN"),
        "{reply:?}"
    );
    assert!(reply.is_error(), "no lease yet: {reply:?}");
    assert!(!heartbeat(&mut b.proxy.client(), B_ID, 600_000, 2).is_error());
    assert_eq!(app.cmd(&["SET", "k", "v"]), Reply::ok());
}

/// Pull mode: a revocation by a topology (v2: this node a slave) that the
/// poller has not looked at yet, then a topology promoting it again (v3),
/// accepted by the node: the poll that follows at once renews — the
/// revocation belongs to v2, not to the v3 answer (a quick failover back
/// used to leave the node fenced until the next topology change).
#[test]
fn a_revocation_before_a_promotion_does_not_fence_the_later_version() {
    let Some(kvrocks) = KvrocksServer::start(true) else {
        return;
    };
    let controller = TestController::start();
    let proxy = Proxy::start(
        &kvrocks.addr(),
        &format!(
            "node_id: {A_ID}\ncontrol:\n  allow_from: [127.0.0.1]\nlease:\n  mode: block-write\n  probe_interval_ms: 0\n{}",
            controller.yaml(30_000, 60_000)
        ),
    );
    let me = format!("127.0.0.1:{}", proxy.port);
    // B: a Kvrocks node, master at v2 (a demoting push naming a master
    // nobody can ask is refused: `tests/step_down_fence.rs`).
    let Some(b) = KvrocksServer::start(true) else {
        return;
    };
    let other = b.addr();
    let other = other.as_str();
    let shard = |version: u64, me_master: bool| {
        let (m, s) = if me_master {
            ((A_ID, me.as_str()), (B_ID, other))
        } else {
            ((B_ID, other), (A_ID, me.as_str()))
        };
        controller.set_topology(
            version,
            vec![vec![(m.0, m.1, "master"), (s.0, s.1, "slave")]],
        );
        let (mh, mp) = m.1.rsplit_once(':').expect("addr");
        let (sh, sp) = s.1.rsplit_once(':').expect("addr");
        format!(
            "{} {mh} {mp} master - 0-16383\n{} {sh} {sp} slave {}",
            m.0, s.0, m.0
        )
    };
    let mut ctl = proxy.client();
    assert_eq!(ctl.cmd(&["CLUSTERX", "SETNODEID", A_ID]), Reply::ok());
    let v1 = shard(1, true);
    assert_eq!(ctl.cmd(&["CLUSTERX", "SETNODES", &v1, "1"]), Reply::ok());
    let start = Instant::now();
    while ctl.cmd(&["SET", "k", "1"]) != Reply::ok() {
        assert!(start.elapsed() < PATIENCE, "no lease at v1");
        std::thread::sleep(Duration::from_millis(20));
    }
    let v2 = shard(2, false);
    let mut direct_b = b.client();
    assert_eq!(direct_b.cmd(&["CLUSTERX", "SETNODEID", B_ID]), Reply::ok());
    assert_eq!(
        direct_b.cmd(&["CLUSTERX", "SETNODES", &v2, "2"]),
        Reply::ok()
    );
    assert_eq!(ctl.cmd(&["CLUSTERX", "SETNODES", &v2, "2"]), Reply::ok());
    assert_eq!(
        support::info_fields(&ctl.cmd(&["INFO", "leasegate"]))
            .get("lease_valid")
            .map(String::as_str),
        Some("0"),
        "revoked at v2"
    );
    // A's node has synced from B (a v3 meeting its restore is refused
    // with LOADING).
    link_up(&mut kvrocks.client());
    let v3 = shard(3, true);
    assert_eq!(ctl.cmd(&["CLUSTERX", "SETNODES", &v3, "3"]), Reply::ok());
    let start = Instant::now();
    while ctl.cmd(&["SET", "k", "3"]) != Reply::ok() {
        assert!(
            start.elapsed() < PATIENCE,
            "writes never opened at v3 (the poll interval is 30 s)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// redis-py 8.2's default login on a password-protected node, `HELLO 3
/// AUTH default <password>`, keeps a session authenticated through
/// `leasegate failover` there and back on Kvrocks. Its hand-over replayed
/// it as `AUTH default <password>`, which Kvrocks refuses (its AUTH has one
/// argument): every such session ended at every move, and each new one on
/// the demoted leasegate at its first write (walkthroughs 22 and 23: 669
/// and 1,362 errors).
#[test]
fn a_resp3_login_of_the_default_user_survives_a_failover_there_and_back() {
    const PW: &str = "node-pw";
    let Some(((ka, pa), (_kb, pb))) = standalone_pair_with(Some(PW), 100) else {
        return;
    };
    let mut c = pa.client();
    c.resp3 = true;
    let hello = c.cmd(&["HELLO", "3", "AUTH", "default", PW, "SETNAME", "app"]);
    assert!(matches!(hello, Reply::Map(_)), "{hello:?}");
    assert_eq!(c.cmd(&["SET", "before", "1"]), Reply::ok());
    let report = failover(&pa, &pb);
    assert!(report.contains(r#""result":"success""#), "{report}");
    assert_eq!(c.cmd(&["SET", "moved", "1"]), Reply::ok());
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), Reply::bulk("app"));
    // A new client of the demoted A logs in the same way and writes at B.
    let mut late = pa.client();
    late.resp3 = true;
    let hello = late.cmd(&["HELLO", "3", "AUTH", "default", PW]);
    assert!(matches!(hello, Reply::Map(_)), "{hello:?}");
    assert_eq!(late.cmd(&["SET", "late", "1"]), Reply::ok());
    link_up(&mut ka.client_auth(Some(PW)));
    let report = failover(&pb, &pa);
    assert!(report.contains(r#""result":"success""#), "{report}");
    assert_eq!(c.cmd(&["INCR", "back"]), Reply::Int(1));
    let mut a_direct = ka.client_auth(Some(PW));
    for key in ["before", "moved", "late", "back"] {
        assert_eq!(a_direct.cmd(&["GET", key]), Reply::bulk("1"), "{key}");
    }
}

/// A client of the demoted A whose `BLPOP` was moved to B blocks at B; A's
/// node turning replica, seen by A's probe after the move, does not end
/// it. It was answered `-UNBLOCKED ... nothing was taken` while its `BLPOP`
/// still waited at B, which then took the next element pushed there, and
/// the reply was dropped: acknowledged `LPUSH`es lost (walkthrough 22: 2
/// and 7 in two runs).
#[test]
fn a_blpop_moved_to_the_new_master_is_not_ended_by_the_old_nodes_demotion() {
    // A slow probe: A's node is seen a replica only after the move.
    let Some(((_ka, pa), (_kb, pb))) = standalone_pair_with(None, 1500) else {
        return;
    };
    let mut consumer = pa.client();
    assert_eq!(consumer.cmd(&["PING"]), Reply::Status("PONG".into()));
    let report = failover(&pa, &pb);
    assert!(report.contains(r#""result":"success""#), "{report}");
    // Blocked past A's probe seeing A's node a replica.
    pops_what_b_gets(&mut consumer, &pb, Duration::from_millis(3_000));
}

/// `consumer` sends `BLPOP jobs 0`, which waits `blocked` unanswered; then
/// an element pushed at B's leasegate is what it pops.
fn pops_what_b_gets(consumer: &mut support::Client, pb: &Proxy, blocked: Duration) {
    consumer.send(&["BLPOP", "jobs", "0"]);
    assert_eq!(consumer.try_read(blocked), None, "the BLPOP waits");
    assert_eq!(pb.client().cmd(&["LPUSH", "jobs", "j1"]), Reply::Int(1));
    assert_eq!(
        consumer.try_read(PATIENCE),
        Some(Reply::Array(vec![Reply::bulk("jobs"), Reply::bulk("j1")]))
    );
}

/// A Kvrocks replica (`use-rsid-psync yes`, as the probe recommends)
/// behind a leasegate that probes it every 20 ms survives its full syncs.
/// Kvrocks serves `ROLE` while a replica restores a full sync, and its
/// `ROLE` reads the database the restore has closed: probed with `ROLE`,
/// a replica segfaulted in 3 full syncs of 4 (one persistent connection,
/// as the probe keeps; 4 of 4 with a new connection each time; 0 of 4
/// unprobed). The probe asks Kvrocks `INFO replication` instead, which
/// leaves that section out while loading (0 of 4).
#[test]
fn a_kvrocks_replica_probed_through_its_full_syncs_does_not_crash() {
    let rsid = ["--use-rsid-psync", "yes"];
    let Some(master) = KvrocksServer::start_with(false, &rsid) else {
        return;
    };
    let mut m = master.client();
    for i in 0..200 {
        assert_eq!(m.cmd(&["SET", &format!("k{i}"), "v"]), Reply::ok());
    }
    for round in 0..3 {
        let Some(replica) = KvrocksServer::start_with(false, &rsid) else {
            return;
        };
        let _probing = Proxy::start(
            &replica.addr(),
            "lease:\n  mode: disabled\n  probe_interval_ms: 20\n",
        );
        // The probe has its connection before the sync begins.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            replica
                .client()
                .cmd(&["SLAVEOF", "127.0.0.1", &master.port.to_string()]),
            Reply::ok()
        );
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            assert!(
                std::net::TcpStream::connect(("127.0.0.1", replica.port)).is_ok(),
                "round {round}: the replica died in its full sync"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            info_field(&mut replica.client(), "master_link_status").as_deref(),
            Some("up"),
            "round {round}"
        );
    }
}
