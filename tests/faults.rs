//! Process faults, checked by the history checker: leasegate frozen
//! (SIGSTOP) for longer than its lease while writes pile up on both sides
//! of it, the node frozen mid-pipeline, the node killed and restarted, the
//! controller hanging. Real redis-server, real leasegate, loopback.

mod support;

use std::time::{Duration, Instant};

use support::controller::TestController;
use support::history::{read_back, Beat, Clients, Heartbeats, History, Outcome};
use support::{signal, Client, Proxy, RedisServer, Reply, PATIENCE};

const A_ID: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// A block-write leasegate whose lease the test's controller heartbeats
/// (with nonces, every 100 ms, TTL 500 ms).
fn leased(redis: &RedisServer) -> Proxy {
    Proxy::start(
        &redis.addr(),
        &format!(
            "node_id: {A_ID}\ncontrol:\n  allow_from: [127.0.0.1]\nlease:\n  mode: block-write\n  probe_interval_ms: 0\n  safety_margin_ms: 100\n"
        ),
    )
}

fn wait_answered(beats: &Heartbeats) {
    let start = Instant::now();
    while beats.last_answered().is_none() {
        assert!(start.elapsed() < PATIENCE, "no heartbeat answered");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// leasegate frozen for 1.2 s (> TTL) while clients keep sending and the
/// controller keeps heartbeating (its heartbeats queue in the kernel, echoing
/// a nonce issued before the freeze): on resume nothing is acknowledged
/// outside a lease the controller granted, and nothing refused is applied.
#[test]
fn a_frozen_leasegate_acknowledges_nothing_on_an_expired_lease() {
    let redis = RedisServer::start();
    let proxy = leased(&redis);
    let history = History::new();
    let addr = format!("127.0.0.1:{}", proxy.port);
    let beats = Heartbeats::start(&history, "A", addr.clone(), A_ID, 1, Beat::nonce());
    wait_answered(&beats);
    let clients = Clients::start(&history, "A", addr, None, 3);
    std::thread::sleep(Duration::from_millis(300));
    signal(proxy.pid(), "STOP");
    std::thread::sleep(Duration::from_millis(1200));
    signal(proxy.pid(), "CONT");
    std::thread::sleep(Duration::from_millis(800));
    let keys = clients.finish();
    beats.stop();
    let verdict = history.check(&read_back(&redis.addr(), keys));
    eprintln!("{}", verdict.report);
    assert!(verdict.ok > 0);
    verdict.assert_clean();
}

/// The node frozen with a 1,000-write pipeline in flight: every reply
/// arrives, in order, after it resumes; nothing hangs; the history is clean.
#[test]
fn a_node_frozen_mid_pipeline_answers_everything_when_it_resumes() {
    let redis = RedisServer::start();
    let proxy = leased(&redis);
    let history = History::new();
    let addr = format!("127.0.0.1:{}", proxy.port);
    let beats = Heartbeats::start(&history, "A", addr, A_ID, 1, Beat::nonce());
    wait_answered(&beats);
    let mut c = proxy.client();
    signal(redis.pid(), "STOP");
    for i in 0..1000 {
        c.send(&["SET", &format!("p{i}"), &i.to_string()]);
    }
    std::thread::sleep(Duration::from_millis(300));
    signal(redis.pid(), "CONT");
    let mut ok = 0;
    for i in 0..1000 {
        match c.read() {
            r if r == Reply::ok() => ok += 1,
            Reply::Error(e) => assert!(
                e.starts_with("UNKNOWN") || e.contains("lease"),
                "reply {i}: {e}"
            ),
            other => panic!("reply {i}: {other:?}"),
        }
    }
    beats.stop();
    assert!(ok > 0, "the writes went through once the node resumed");
    let mut direct = redis.client();
    assert_eq!(direct.cmd(&["GET", "p999"]), Reply::bulk("999"));
}

/// The node killed (SIGKILL) under load and started again on the same port
/// (append-only file, fsync always): clients get errors while it is down,
/// none hangs (every write ends within its 2 s timeout), and writes succeed
/// again without restarting leasegate; every acknowledged write survived.
#[test]
fn a_node_killed_and_restarted_recovers_without_restarting_leasegate() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let proxy = leased(&redis);
    let history = History::new();
    let addr = format!("127.0.0.1:{}", proxy.port);
    let beats = Heartbeats::start(&history, "A", addr.clone(), A_ID, 1, Beat::nonce());
    wait_answered(&beats);
    let clients = Clients::start(&history, "A", addr, None, 2);
    std::thread::sleep(Duration::from_millis(300));
    redis.stop();
    std::thread::sleep(Duration::from_millis(500));
    let restarted = Instant::now();
    redis.restart();
    std::thread::sleep(Duration::from_millis(1500));
    let keys = clients.finish();
    beats.stop();
    let ops = history.ops();
    let failed_while_down = ops.iter().filter(|o| o.outcome != Outcome::Ok).count();
    assert!(
        failed_while_down > 0,
        "writes failed while the node was down"
    );
    assert!(
        ops.iter()
            .any(|o| o.outcome == Outcome::Ok && o.invoked > restarted),
        "writes succeed again after the restart"
    );
    let slowest = ops
        .iter()
        .map(|o| o.completed - o.invoked)
        .max()
        .unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(3),
        "a write hung for {slowest:?}"
    );
    let verdict = history.check(&read_back(&redis.addr(), keys));
    eprintln!("{}", verdict.report);
    verdict.assert_clean();
}

/// The controller hangs (pull mode: its answers never come): the lease
/// lapses as configured and writes are fenced, reads go on; when it answers
/// again, writes open again.
#[test]
fn a_hanging_controller_lapses_the_lease_and_reads_continue() {
    let redis = RedisServer::start();
    let controller = TestController::start();
    controller.set_topology(1, vec![vec![(A_ID, "127.0.0.1:1", "master")]]);
    let proxy = Proxy::start(
        &redis.addr(),
        &format!(
            "node_id: {A_ID}\nlease:\n  mode: block-write\n  probe_interval_ms: 0\n  safety_margin_ms: 100\n{}",
            controller.yaml(100, 600)
        ),
    );
    let mut c = proxy.client();
    let start = Instant::now();
    while c.cmd(&["SET", "k", "1"]) != Reply::ok() {
        assert!(start.elapsed() < PATIENCE, "no lease from the controller");
        std::thread::sleep(Duration::from_millis(20));
    }
    controller.set_delay(Duration::from_secs(30));
    let hung = Instant::now();
    loop {
        if c.cmd(&["SET", "k", "2"]).is_error() {
            break;
        }
        assert!(
            hung.elapsed() < PATIENCE,
            "the lease never lapsed with the controller hanging"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        hung.elapsed() >= Duration::from_millis(300),
        "the lease lapsed only after it ran out ({:?})",
        hung.elapsed()
    );
    assert!(
        matches!(c.cmd(&["GET", "k"]), Reply::Bulk(_)),
        "reads go on"
    );
    controller.set_delay(Duration::ZERO);
    let start = Instant::now();
    while c.cmd(&["SET", "k", "3"]) != Reply::ok() {
        assert!(start.elapsed() < PATIENCE * 4, "writes never opened again");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Client::connect(proxy.port);
}

/// leasegate SIGKILLed in the middle of a graceful failover (its pause on,
/// writes held, the replica's offset being awaited), at three different
/// moments. A supervisor starts it again; the controller's next round reads
/// the nodes' roles and grants the lease to the one master at a new epoch.
/// Then exactly one leasegate accepts writes, and the history holds no
/// split-brain or lost write.
#[test]
fn a_leasegate_killed_during_a_failover_leaves_exactly_one_master() {
    for delay_ms in [0u64, 30, 120] {
        killed_during_failover(Duration::from_millis(delay_ms));
    }
}

fn killed_during_failover(delay: Duration) {
    const TOKEN: &str = "tk";
    const B_ID: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let master = RedisServer::start();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    let leasegate = |node: &RedisServer, id: &str| {
        Proxy::start(
            &node.addr(),
            &format!(
                "node_id: {id}\nadmin:\n  listen: 127.0.0.1:{}\n  token: {TOKEN}\ncontrol:\n  allow_from: [127.0.0.1]\nlease:\n  mode: block-write\n  probe_interval_ms: 100\n",
                support::free_port()
            ),
        )
    };
    let mut a = leasegate(&master, A_ID);
    let b = leasegate(&replica, B_ID);
    let start = Instant::now();
    while !replica
        .client()
        .cmd(&["INFO", "replication"])
        .text()
        .contains("master_link_status:up")
    {
        assert!(start.elapsed() < PATIENCE, "replication never came up");
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in [&a, &b] {
        let r = support::heartbeat(&mut p.client(), A_ID, 600_000, 1);
        assert!(!r.is_error(), "{r:?}");
    }
    let history = History::new();
    let clients = Clients::start(&history, "A", format!("127.0.0.1:{}", a.port), None, 2);
    std::thread::sleep(Duration::from_millis(200));
    // The replica stalls, so the failover waits in wait_sync.
    signal(replica.pid(), "STOP");
    let (from, to) = (a.admin_port(), b.admin_port());
    let post = std::thread::spawn(move || {
        let body =
            format!(r#"{{"to":"127.0.0.1:{to}","sync_timeout_ms":3000,"pause_timeout_ms":5000}}"#);
        support::http(from, "POST", "/v1/failover", Some(TOKEN), Some(&body))
    });
    std::thread::sleep(delay);
    signal(a.pid(), "KILL");
    signal(replica.pid(), "CONT");
    let _ = post.join();
    // A supervisor restarts it (its lease starts expired).
    a.restart();
    // The controller's next round: the node that reports itself master
    // gets the lease at a new epoch, on both leasegates.
    let role = |node: &RedisServer| node.client().cmd(&["ROLE"]);
    let a_master =
        matches!(role(&master), Reply::Array(ref r) if r.first() == Some(&Reply::bulk("master")));
    let b_master =
        matches!(role(&replica), Reply::Array(ref r) if r.first() == Some(&Reply::bulk("master")));
    assert!(
        a_master ^ b_master,
        "one node reports itself master (A {a_master}, B {b_master})"
    );
    let chosen = if a_master { A_ID } else { B_ID };
    for p in [&a, &b] {
        let r = support::heartbeat(&mut p.client(), chosen, 600_000, 5);
        assert!(!r.is_error(), "{r:?}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let keys = clients.finish();
    let accepts = |p: &Proxy| p.client().cmd(&["SET", "probe", "1"]) == Reply::ok();
    let (a_ok, b_ok) = (accepts(&a), accepts(&b));
    assert!(
        a_ok ^ b_ok,
        "exactly one leasegate accepts writes (A {a_ok}, B {b_ok}; killed after {delay:?})"
    );
    assert_eq!(a_ok, a_master, "the one that accepts is the master's");
    let final_master = if a_master { &master } else { &replica };
    let verdict = history.check(&read_back(&final_master.addr(), keys));
    eprintln!("killed after {delay:?}: {}", verdict.report);
    verdict.assert_clean();
}
