//! The failover of kvrocks-controller PR #389 as the controller runs it, on
//! the real Kvrocks in cluster mode behind leasegates: the test controller's
//! `POST …/shards/{i}/failover` with `"wait_for_sync": true` sends
//! `CLIENT PAUSE <ms> WRITE` to the master's leasegate (which holds the
//! writes), polls `INFO replication` of both nodes through their leasegates
//! until the replica has caught up, swaps the roles, pushes the topology,
//! heartbeats the new master and sends `CLIENT UNPAUSE`: the held writes
//! follow the topology to the new master's leasegate.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use support::controller::{TestController, CLUSTER, NAMESPACE};
use support::kvrocks::{
    controlled_shard, controlled_shard_with_password, handovers, info_field, link_up, topology,
    LeaseBy, A_ID, B_ID,
};
use support::load::Writers;
use support::{http, Reply};

const TOKEN: &str = "tk";

/// `POST …/shards/0/failover` to `to` with `options` (more JSON fields);
/// the status and the answer.
fn shard_failover(controller: &TestController, to: &str, options: &str) -> (u16, String) {
    let path = format!("/api/v1/namespaces/{NAMESPACE}/clusters/{CLUSTER}/shards/0/failover");
    let body = format!(r#"{{"preferred_node_id":"{to}",{options}}}"#);
    http(controller.port, "POST", &path, None, Some(&body))
}

/// PR #389's options, with bounds no slow machine reaches.
const WAIT_FOR_SYNC: &str =
    r#""wait_for_sync":true,"sync_timeout_ms":3000,"pause_timeout_ms":10000"#;

/// The answer's timing, checked: the pause came first, the unpause last.
fn timing(answer: &str, new_master: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(answer).expect("JSON answer");
    let data = &v["data"];
    assert_eq!(data["new_master_id"], new_master, "{answer}");
    let t = &data["timing"];
    let at = |k: &str| {
        t[k].as_f64()
            .unwrap_or_else(|| panic!("no {k} in {answer}"))
    };
    assert!(at("pause_at_ms") <= at("synced_at_ms"), "{answer}");
    assert!(at("synced_at_ms") <= at("pushed_at_ms"), "{answer}");
    assert!(at("pushed_at_ms") <= at("unpause_at_ms"), "{answer}");
    assert!(data["promote_ms"].as_f64().is_some(), "{answer}");
    assert!(
        t["replica_offset"].as_u64() >= t["master_offset"].as_u64(),
        "{answer}"
    );
    t.clone()
}

#[test]
fn the_controllers_pr389_failover_there_and_back_loses_nothing() {
    let Some((controller, a, b)) = controlled_shard(LeaseBy::Heartbeat, TOKEN, &[]) else {
        return;
    };
    let writers = Writers::start(a.proxy.port, 4, "w", Duration::ZERO);
    std::thread::sleep(Duration::from_millis(300));

    let (status, answer) = shard_failover(&controller, B_ID, WAIT_FOR_SYNC);
    eprintln!("A→B: {answer}");
    assert_eq!(status, 200, "{answer}");
    timing(&answer, B_ID);
    assert_eq!(controller.failovers(), 1);
    assert_eq!(
        info_field(&mut b.kvrocks.client(), "role").as_deref(),
        Some("master")
    );
    // A's leasegate timed the controller's pause for B's replication tick
    // (`pause.promotion_timing`, on by default) and saw B's promotion
    // close B's link: held or missed, never left unjudged.
    let outcomes = |admin| {
        ["held", "missed"]
            .map(|o| {
                support::metric(
                    admin,
                    &format!("leasegate_controller_pause_timing_total{{outcome=\"{o}\"}} "),
                )
            })
            .iter()
            .sum::<u64>()
    };
    let start = std::time::Instant::now();
    while outcomes(a.proxy.admin_port()) < 1 {
        assert!(
            start.elapsed() < support::PATIENCE,
            "A did not time the pause"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The topology made A B's replica (through B's leasegate); the writers'
    // sessions went to B's leasegate on the unpause.
    link_up(&mut a.kvrocks.client());
    std::thread::sleep(Duration::from_millis(200));

    let (status, answer) = shard_failover(&controller, A_ID, WAIT_FOR_SYNC);
    eprintln!("B→A: {answer}");
    assert_eq!(status, 200, "{answer}");
    let last = timing(&answer, A_ID);
    assert_eq!(controller.failovers(), 2);
    assert_eq!(controller.version(), 3);
    let kept = controller.last_failover().expect("GET /last-failover");
    assert_eq!(
        (&kept["failover"], &kept["new_master_id"]),
        (&last["failover"], &last["new_master_id"])
    );
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

/// The same failover there and back on password-protected nodes, as
/// operators run them with one password: Kvrocks with `requirepass` and
/// `masterauth`, each leasegate with `backend.password` and
/// `control.password` both that password, the controller authenticating
/// with it (so its `CLIENT PAUSE` and heartbeats are the controller's), and
/// writers that `AUTH` with it too. Their `AUTH` is the controller's
/// password, yet it is also the node's: it goes to the node and is replayed
/// when their sessions are handed over (`pause.on_demote: forward`, the
/// default). Formerly every write after the hand-over failed with `NOAUTH`.
#[test]
fn the_controllers_pr389_failover_on_password_protected_nodes_fails_and_loses_nothing() {
    const PASSWORD: &str = "node-secret";
    let Some((controller, a, b)) =
        controlled_shard_with_password(LeaseBy::Heartbeat, TOKEN, PASSWORD)
    else {
        return;
    };
    let writers =
        Writers::start_authenticated(a.proxy.port, 4, "p", Duration::ZERO, Some(PASSWORD));
    std::thread::sleep(Duration::from_millis(300));

    let (status, answer) = shard_failover(&controller, B_ID, WAIT_FOR_SYNC);
    eprintln!("A→B: {answer}");
    assert_eq!(status, 200, "{answer}");
    timing(&answer, B_ID);
    assert_eq!(controller.failovers(), 1);
    assert_eq!(
        info_field(&mut b.kvrocks.client_auth(Some(PASSWORD)), "role").as_deref(),
        Some("master")
    );
    link_up(&mut a.kvrocks.client_auth(Some(PASSWORD)));
    std::thread::sleep(Duration::from_millis(300));

    let (status, answer) = shard_failover(&controller, A_ID, WAIT_FOR_SYNC);
    eprintln!("B→A: {answer}");
    assert_eq!(status, 200, "{answer}");
    timing(&answer, A_ID);
    assert_eq!(controller.failovers(), 2);
    assert_eq!(controller.version(), 3);
    std::thread::sleep(Duration::from_millis(300));

    let mut direct = a.kvrocks.client_auth(Some(PASSWORD));
    let outcome = writers.finish();
    let moved = [&a, &b].map(|n| handovers(&n.proxy, "success"));
    let failed = [&a, &b].map(|n| handovers(&n.proxy, "failed"));
    eprintln!(
        "{} writes acknowledged, {} errors; sessions handed over by A's and B's leasegates: {moved:?}, failed {failed:?}",
        outcome.acked.len(),
        outcome.errors.len()
    );
    outcome.assert_none_failed_or_lost(&mut direct, 100);
    // The writers' sessions were handed over (with their AUTH), not lost.
    assert!(moved.iter().sum::<u64>() > 0, "no session was handed over");
    assert_eq!(failed, [0, 0], "failed hand-overs");
    assert_eq!(info_field(&mut direct, "role").as_deref(), Some("master"));
    assert_eq!(
        info_field(&mut b.kvrocks.client_auth(Some(PASSWORD)), "role").as_deref(),
        Some("slave")
    );
}

/// A stand-in replica that never catches up: it answers `INFO replication`
/// with `slave_repl_offset:0` and `+OK` to anything else.
fn lagging_replica() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || answer_forever(conn));
        }
    });
    addr
}

fn answer_forever(conn: TcpStream) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while let Some(args) = read_command(&mut reader) {
        let info = args.first().is_some_and(|c| c.eq_ignore_ascii_case("info"));
        let reply = if info {
            let text =
                "# Replication\r\nrole:slave\r\nmaster_link_status:up\r\nslave_repl_offset:0\r\n";
            format!("${}\r\n{text}\r\n", text.len())
        } else {
            "+OK\r\n".to_string()
        };
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// One RESP command (an array of bulk strings).
fn read_command(reader: &mut BufReader<TcpStream>) -> Option<Vec<String>> {
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|n| *n > 0)?;
    let n: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut arg = vec![0u8; len + 2];
        reader.read_exact(&mut arg).ok()?;
        arg.truncate(len);
        args.push(String::from_utf8_lossy(&arg).into_owned());
    }
    Some(args)
}

/// A replica that does not catch up within `sync_timeout_ms`: the
/// controller ends the pause at once (not at `pause_timeout_ms`, a minute
/// here), answers an error and switches nothing; the writes held on A go
/// to A.
#[test]
fn a_replica_that_does_not_catch_up_fails_the_failover_and_unpauses() {
    const C_ID: &str = "cccccccccccccccccccccccccccccccccccccccc";
    let c_addr = lagging_replica();
    let Some((controller, a, _b)) = controlled_shard(LeaseBy::Heartbeat, TOKEN, &[(C_ID, &c_addr)])
    else {
        return;
    };
    let writers = Writers::start(a.proxy.port, 2, "w", Duration::ZERO);
    std::thread::sleep(Duration::from_millis(200));
    let (status, answer) = shard_failover(
        &controller,
        C_ID,
        r#""wait_for_sync":true,"sync_timeout_ms":50,"pause_timeout_ms":60000"#,
    );
    assert_eq!(status, 500, "{answer}");
    assert!(answer.contains("did not reach"), "{answer}");
    assert_eq!(controller.failovers(), 0, "nothing switched");
    assert_eq!(controller.version(), 1);
    // Not held for the pause's minute: the client's read would give up first.
    let mut app = a.proxy.client();
    assert_eq!(app.cmd(&["SET", "after", "1"]), Reply::ok());
    std::thread::sleep(Duration::from_millis(200));
    let mut direct = a.kvrocks.client();
    writers.finish().assert_none_failed_or_lost(&mut direct, 20);
    assert_eq!(info_field(&mut direct, "role").as_deref(), Some("master"));

    // PR #389: the pause must outlast the sync timeout.
    let (status, answer) = shard_failover(
        &controller,
        C_ID,
        r#""wait_for_sync":true,"sync_timeout_ms":500,"pause_timeout_ms":500"#,
    );
    assert_eq!(status, 400, "{answer}");
    assert_eq!(controller.failovers(), 0);
}

/// An ordinary client (from 127.0.0.2, outside `control.allow_from`)
/// sends the replica's leasegate a topology naming the replica master at a
/// version above the controller's. Passed on, it made the node master
/// while the old master kept its lease; kvrocks-controller then adopted
/// the node's newer version and demoted the old master, which resynced
/// and lost what it had acknowledged (an attack pass against the real
/// controller: 19,141 acknowledged writes lost). Now it is refused, as are
/// the other commands that change a node's role, id or slots; the node
/// keeps its topology.
#[test]
fn an_ordinary_clients_topology_does_not_reach_the_node() {
    let Some((_controller, a, b)) = controlled_shard(LeaseBy::Pull, "ordinary", &[]) else {
        return;
    };
    let promoting = topology((B_ID, &b), Some((A_ID, &a)));
    let mut ordinary = support::Client::connect_from("127.0.0.2", b.proxy.port);
    for args in [
        &["CLUSTERX", "SETNODES", promoting.as_str(), "50"][..],
        &["CLUSTERX", "SETSLOT", "0", "NODE", B_ID, "51"],
        &["CLUSTERX", "SETNODEID", A_ID],
        &["SLAVEOF", "NO", "ONE"],
    ] {
        let reply = ordinary.cmd(args);
        assert!(
            reply.is_error() && reply.error_text().starts_with("NOPERM leasegate:"),
            "{args:?}: {reply:?}"
        );
    }
    let mut direct_b = b.kvrocks.client();
    assert_eq!(info_field(&mut direct_b, "role").as_deref(), Some("slave"));
    assert_eq!(
        direct_b.cmd(&["CLUSTERX", "VERSION"]),
        Reply::bulk("1"),
        "B's node keeps the controller's topology"
    );
    // The controller's connections (loopback) still reconfigure the node.
    let mut controller_conn = b.proxy.client();
    let reply = controller_conn.cmd(&["CLUSTERX", "SETSLOT", "0", "NODE", A_ID, "2"]);
    assert_eq!(reply, Reply::ok(), "the controller's SETSLOT");
}
