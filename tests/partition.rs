//! Real network partitions, checked by the history checker.
//!
//! Three network namespaces' worth of hosts (`support::netns`): the test's
//! own namespace is the controller's side; host A runs the old master
//! (redis-server + leasegate), host B its replica (redis-server + leasegate,
//! replicating from A's leasegate over a direct A–B link). A's clients run
//! inside A (threads that entered its namespace), B's on the controller's
//! side. The controller emulation heartbeats A
//! (`CLUSTERX HEARTBEAT <A> <ttl> 1 NONCE <n>`, echoing the last nonce) every
//! 100 ms and records every grant it sends. Then the fault: A's link to the
//! controller goes down (or drops one way, or flaps, or is delayed); the
//! controller waits TTL + margin after its last grant reached A, promotes B
//! (`REPLICAOF NO ONE`, heartbeat B at epoch 2) and B's clients write. After
//! the run every written key is read back from the final master, and
//! `History::check` looks for split-brain writes, lost writes and late
//! acknowledgements.

mod support;

use std::time::{Duration, Instant};

use support::history::{read_back, Beat, Clients, Heartbeats, History, Outcome, Verdict};
use support::netns::{wait_accepting, Host, Lab};
use support::Client;

const A_ID: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B_ID: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const NODE_PORT: u16 = 6379;
const PROXY_PORT: u16 = 7000;
const TTL: Duration = Duration::from_millis(500);
const MARGIN_MS: u64 = 100;

/// The two hosts, running.
struct Shard {
    lab: Lab,
    a: Host,
    b: Host,
    _dir: tempfile::TempDir,
}

fn leasegate_yaml(id: &str, mode: &str) -> String {
    format!(
        "listen: 0.0.0.0:{PROXY_PORT}\nbackend:\n  addr: 127.0.0.1:{NODE_PORT}\nnode_id: {id}\nadmin:\n  listen: \"\"\ncontrol:\n  allow_from: [10.0.0.0/8]\nlease:\n  mode: {mode}\n  probe_interval_ms: 0\n  safety_margin_ms: {MARGIN_MS}\nlog:\n  level: warn\n"
    )
}

/// A (master) and B (its replica, through A's leasegate), each with a
/// leasegate in `mode`.
fn shard(mode: &str) -> Option<Shard> {
    let mut lab = Lab::new()?;
    let a = lab.host("a");
    let b = lab.host("b");
    let (a_on_link, _) = lab.link(&a, &b);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = NODE_PORT.to_string();
    let redis = [
        "--port",
        &port,
        "--bind",
        "0.0.0.0",
        "--protected-mode",
        "no",
    ];
    let quiet = ["--save", "", "--appendonly", "no"];
    lab.spawn(&a, "redis-server", &[&redis[..], &quiet[..]].concat());
    let replicaof = format!("{a_on_link} {PROXY_PORT}");
    lab.spawn(
        &b,
        "redis-server",
        &[&redis[..], &quiet[..], &["--replicaof", &replicaof]].concat(),
    );
    for (host, id) in [(&a, A_ID), (&b, B_ID)] {
        let path = dir.path().join(format!("{id}.yaml"));
        std::fs::write(&path, leasegate_yaml(id, mode)).expect("write config");
        let path = path.display().to_string();
        lab.spawn(host, env!("CARGO_BIN_EXE_leasegate"), &["run", "-c", &path]);
    }
    for host in [&a, &b] {
        wait_accepting(&format!("{}:{NODE_PORT}", host.ip));
        wait_accepting(&format!("{}:{PROXY_PORT}", host.ip));
    }
    let stream = std::net::TcpStream::connect(format!("{}:{NODE_PORT}", b.ip)).expect("B");
    let mut direct_b = Client::from_stream(stream);
    let start = Instant::now();
    loop {
        let info = direct_b.cmd(&["INFO", "replication"]).text();
        if info.contains("master_link_status:up") {
            break;
        }
        assert!(
            start.elapsed() < support::PATIENCE,
            "B never linked to A's leasegate: {info}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Shard {
        lab,
        a,
        b,
        _dir: dir,
    })
}

fn proxy_addr(host: &Host) -> String {
    format!("{}:{PROXY_PORT}", host.ip)
}

/// A command from the controller's side to a host's leasegate.
fn control(host: &Host, args: &[&str]) -> support::Reply {
    let stream = std::net::TcpStream::connect(proxy_addr(host)).expect("connect to leasegate");
    Client::from_stream(stream).cmd(args)
}

/// The controller gives up on A: waits until TTL + margin after the last
/// grant that reached A, then promotes B (its instant recorded) and
/// heartbeats it at epoch 2.
fn promote_b(s: &Shard, history: &History, beats_a: Heartbeats) -> Heartbeats {
    let last = beats_a
        .last_answered()
        .expect("A answered heartbeats before the fault");
    beats_a.stop();
    let wait_until = last + TTL + Duration::from_millis(MARGIN_MS);
    std::thread::sleep(wait_until.saturating_duration_since(Instant::now()));
    history.promoted("B", Instant::now());
    assert_eq!(
        control(&s.b, &["REPLICAOF", "NO", "ONE"]),
        support::Reply::ok()
    );
    let beats_b = Heartbeats::start(history, "B", proxy_addr(&s.b), B_ID, 2, Beat::nonce());
    let start = Instant::now();
    while beats_b.last_answered().is_none() {
        assert!(start.elapsed() < support::PATIENCE, "B never answered");
        std::thread::sleep(Duration::from_millis(10));
    }
    beats_b
}

/// What a partition run saw.
struct Run {
    verdict: Verdict,
}

/// The fault to inject on A's link to the controller.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// Link down both ways; the controller promotes B.
    Cut,
    /// Controller → A dropped, A → controller delivered; B promoted.
    OneWay,
    /// Down, B promoted, then the link heals while A's clients write; the
    /// controller then tells A to follow B.
    HealDuringFailover,
}

fn partition(mode: &str, fault: Fault) -> Option<Run> {
    let s = shard(mode)?;
    let history = History::new();
    let beats_a = Heartbeats::start(&history, "A", proxy_addr(&s.a), A_ID, 1, Beat::nonce());
    let start = Instant::now();
    while beats_a.last_answered().is_none() {
        assert!(start.elapsed() < support::PATIENCE, "A never answered");
        std::thread::sleep(Duration::from_millis(10));
    }
    let a_clients = Clients::start(
        &history,
        "A",
        format!("127.0.0.1:{PROXY_PORT}"),
        Some(&s.a),
        2,
    );
    std::thread::sleep(Duration::from_millis(500));
    match fault {
        Fault::Cut | Fault::HealDuringFailover => s.a.cut(),
        Fault::OneWay => s.a.drop_inbound(true),
    }
    let beats_b = promote_b(&s, &history, beats_a);
    let b_clients = Clients::start(&history, "B", proxy_addr(&s.b), None, 1);
    std::thread::sleep(Duration::from_millis(300));
    if fault == Fault::HealDuringFailover {
        s.a.heal();
        std::thread::sleep(Duration::from_millis(200));
        let replicaof = format!("{} {PROXY_PORT}", s.b.ip);
        let args: Vec<&str> = ["REPLICAOF"]
            .into_iter()
            .chain(replicaof.split(' '))
            .collect();
        assert_eq!(control(&s.a, &args), support::Reply::ok());
    }
    std::thread::sleep(Duration::from_millis(400));
    let mut keys = a_clients.finish();
    keys.extend(b_clients.finish());
    beats_b.stop();
    s.a.drop_inbound(false);
    let final_data = read_back(&format!("{}:{NODE_PORT}", s.b.ip), keys);
    let verdict = history.check(&final_data);
    eprintln!("{}", verdict.report);
    assert!(verdict.ok > 0, "writes were acknowledged");
    let by_b = history
        .ops()
        .iter()
        .filter(|o| o.node == "B" && o.outcome == Outcome::Ok)
        .count();
    assert!(by_b > 0, "the new master took writes");
    drop(s.lab);
    Some(Run { verdict })
}

#[test]
fn partitioned_from_the_controller_the_old_master_acknowledges_nothing_after_the_promotion() {
    let Some(run) = partition("block-write", Fault::Cut) else {
        return;
    };
    run.verdict.assert_clean();
}

#[test]
fn without_the_lease_the_same_partition_loses_acknowledged_writes() {
    let Some(run) = partition("disabled", Fault::Cut) else {
        return;
    };
    assert!(
        !run.verdict.split_brain.is_empty(),
        "expected split-brain writes with the lease disabled\n{}",
        run.verdict.report
    );
    assert!(!run.verdict.lost.is_empty(), "{}", run.verdict.report);
}

#[test]
fn a_one_way_partition_fences_as_well() {
    let Some(run) = partition("block-write", Fault::OneWay) else {
        return;
    };
    run.verdict.assert_clean();
}

#[test]
fn a_partition_that_heals_during_the_failover_does_not_revive_the_old_master() {
    let Some(run) = partition("block-write", Fault::HealDuringFailover) else {
        return;
    };
    run.verdict.assert_clean();
}

/// A link that flaps (down and up every 150 ms for 2 s) while heartbeats
/// go on: no promotion, so A stays master; no write is acknowledged
/// outside a lease the controller granted, and none is lost.
#[test]
fn a_flapping_link_never_stretches_the_lease() {
    let Some(s) = shard("block-write") else {
        return;
    };
    let history = History::new();
    let beats = Heartbeats::start(&history, "A", proxy_addr(&s.a), A_ID, 1, Beat::nonce());
    let clients = Clients::start(
        &history,
        "A",
        format!("127.0.0.1:{PROXY_PORT}"),
        Some(&s.a),
        2,
    );
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..7 {
        s.a.cut();
        std::thread::sleep(Duration::from_millis(150));
        s.a.heal();
        std::thread::sleep(Duration::from_millis(150));
    }
    std::thread::sleep(Duration::from_millis(300));
    let keys = clients.finish();
    beats.stop();
    let verdict = history.check(&read_back(&format!("{}:{NODE_PORT}", s.a.ip), keys));
    eprintln!("{}", verdict.report);
    assert!(verdict.ok > 0);
    verdict.assert_clean();
}

/// Heartbeats delayed by more than the TTL (a relay holds what the
/// controller sends to A for 700 ms; A's answers come back at once; one
/// heartbeat every 1.5 s). With the nonce echoed, each grant is anchored
/// at the instant A issued the nonce, before the controller's send: no
/// write is acknowledged outside [send, send + TTL] of some grant. Without
/// the nonce (anchored at the delayed arrival) the checker finds late
/// acknowledgements: the check can fail.
fn delayed_heartbeats(nonce: bool) -> Option<Verdict> {
    let s = shard("block-write")?;
    let history = History::new();
    // One prompt exchange first (A's first nonce), then every heartbeat
    // goes through the relay.
    let first = Heartbeats::start(&history, "A", proxy_addr(&s.a), A_ID, 1, Beat::nonce());
    let start = Instant::now();
    while first.last_answered().is_none() {
        assert!(start.elapsed() < support::PATIENCE, "A never answered");
        std::thread::sleep(Duration::from_millis(10));
    }
    let first_nonce = first.nonce();
    first.stop();
    let relay = support::netns::DelayRelay::start(&proxy_addr(&s.a), Duration::from_millis(700));
    let beat = Beat {
        nonce,
        first_nonce: first_nonce.filter(|_| nonce),
        patience: Duration::from_secs(1),
        // Spaced out, so each grant's window stands alone.
        interval: Duration::from_millis(1500),
        ttl: TTL,
    };
    let beats = Heartbeats::start(&history, "A", relay.addr.clone(), A_ID, 1, beat);
    let clients = Clients::start(
        &history,
        "A",
        format!("127.0.0.1:{PROXY_PORT}"),
        Some(&s.a),
        2,
    );
    std::thread::sleep(Duration::from_millis(3500));
    let keys = clients.finish();
    beats.stop();
    let verdict = history.check(&read_back(&format!("{}:{NODE_PORT}", s.a.ip), keys));
    eprintln!("{}", verdict.report);
    Some(verdict)
}

#[test]
fn heartbeats_delayed_beyond_the_ttl_do_not_stretch_the_lease() {
    let Some(verdict) = delayed_heartbeats(true) else {
        return;
    };
    verdict.assert_clean();
}

#[test]
fn without_the_nonce_delayed_heartbeats_stretch_the_lease() {
    let Some(verdict) = delayed_heartbeats(false) else {
        return;
    };
    assert!(
        !verdict.late.is_empty(),
        "expected acknowledgements outside the controller's grants\n{}",
        verdict.report
    );
}
