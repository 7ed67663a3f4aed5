//! Verification of mastership with the controller on every write
//! (`verify.mode: every-write`), against a test controller whose answers and
//! delay change during the test.

mod support;

use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use support::controller::{node_id, TestController};
use support::{Client, Proxy, RedisServer, Reply, PATIENCE};

const NOT_CONFIRMED: &str = "TRYAGAIN mastership not confirmed by controller";

/// A proxy verifying every write with `ctl`; the lease poller is parked (one
/// poll at start-up) so that every later controller request is a confirmation.
fn verifying_proxy(redis: &RedisServer, ctl: &TestController, lease: &str) -> Proxy {
    proxy_holding("request", 300, redis, ctl, lease)
}

/// As [`verifying_proxy`], with `verify.hold: <hold>` and `verify.timeout_ms`.
/// The other node's address is not a leasegate here: a demoted node's
/// writes are refused (`pause.on_demote: readonly`) rather than handed
/// over, so a controller naming another master refuses them and revokes
/// the lease at once (handed over: `tests/real_verify.rs`).
fn proxy_holding(
    hold: &str,
    timeout_ms: u64,
    redis: &RedisServer,
    ctl: &TestController,
    extra: &str,
) -> Proxy {
    Proxy::start(
        &redis.addr(),
        &format!(
            "node_id: {}\n{}pause:\n  on_demote: readonly\nverify:\n  mode: every-write\n  hold: {hold}\n  timeout_ms: {timeout_ms}\n{extra}",
            node_id(1),
            ctl.yaml(3_600_000, 3_600_000)
        ),
    )
}

/// A redis-server, a test controller naming node 1 master, and a
/// verifying proxy in front of node 1 with `extra` config.
fn verified_setup(extra: &str) -> (RedisServer, TestController, Proxy) {
    let redis = RedisServer::start();
    let ctl = TestController::start();
    master_is(&ctl, 1, 1);
    let proxy = verifying_proxy(&redis, &ctl, extra);
    (redis, ctl, proxy)
}

/// As [`verified_setup`] with `verify.hold: acknowledgement` and a bound
/// of `timeout_ms` on each confirmation.
fn acknowledging_setup(timeout_ms: u64, extra: &str) -> (RedisServer, TestController, Proxy) {
    let redis = RedisServer::start();
    let ctl = TestController::start();
    master_is(&ctl, 1, 1);
    let proxy = proxy_holding("acknowledgement", timeout_ms, &redis, &ctl, extra);
    (redis, ctl, proxy)
}

const UNCONFIRMED: &str = "UNKNOWN write outcome unknown: mastership not confirmed by controller";

fn master_is(ctl: &TestController, version: u64, master: u8) {
    let (m, s) = (node_id(master), node_id(if master == 1 { 2 } else { 1 }));
    ctl.set_topology(
        version,
        vec![vec![
            (&m, "127.0.0.1:1", "master"),
            (&s, "127.0.0.1:2", "slave"),
        ]],
    );
}

#[test]
fn confirmed_writes_pass_and_reads_never_ask() {
    let (_redis, ctl, proxy) = verified_setup("");
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
    assert_eq!(c.cmd(&["INCR", "n"]), Reply::Int(1));
    let before = Instant::now();
    for _ in 0..20 {
        assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("v"));
    }
    assert_eq!(
        ctl.requests_since(before),
        0,
        "reads do not wait for the controller"
    );
    // A pipeline keeps its order around held writes.
    c.send(&["SET", "p", "1"]);
    c.send(&["GET", "p"]);
    c.send(&["INCR", "p"]);
    c.send(&["GET", "p"]);
    assert_eq!(c.read(), Reply::ok());
    assert_eq!(c.read(), Reply::bulk("1"));
    assert_eq!(c.read(), Reply::Int(2));
    assert_eq!(c.read(), Reply::bulk("2"));
}

#[test]
fn another_master_rejects_the_next_write_even_with_a_valid_lease() {
    let (redis, ctl, proxy) = verified_setup(&format!(
            "control:\n  allow_from: [127.0.0.1]\nlease:\n  mode: block-write\nadmin:\n  listen: 127.0.0.1:{}\n",
            support::free_port()
        ));
    let mut c = proxy.client();
    let me = node_id(1);
    assert!(!c
        .cmd(&["CLUSTERX", "HEARTBEAT", &me, "600000", "1"])
        .is_error());
    assert_eq!(c.cmd(&["SET", "k", "v1"]), Reply::ok());
    master_is(&ctl, 2, 2);
    let err = c.cmd(&["SET", "k", "v2"]);
    assert!(err.error_text().starts_with(NOT_CONFIRMED), "{err:?}");
    assert!(
        err.error_text().contains("slave"),
        "names the cause: {err:?}"
    );
    assert_eq!(
        redis.client().cmd(&["GET", "k"]),
        Reply::bulk("v1"),
        "nothing rejected was forwarded"
    );
    // The negative answer revoked the lease at once.
    let (status, body) = support::http(proxy.admin_port(), "GET", "/v1/status", None, None);
    assert_eq!(status, 200);
    assert!(body.contains("\"valid\":false"), "{body}");
    let fenced = c.cmd(&["SET", "k", "v3"]);
    assert!(
        fenced.error_text().contains("master lease expired"),
        "{fenced:?}"
    );
}

/// A controller that knows no raft leader (cut off from the rest of its
/// group, still answering its own copy of the topology) confirms nothing.
#[test]
fn a_controller_that_knows_no_raft_leader_confirms_no_write() {
    let (redis, ctl, proxy) = verified_setup("");
    ctl.set_raft_leader(Some(3));
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
    ctl.set_raft_leader(Some(0));
    let err = c.cmd(&["SET", "k", "stale"]);
    assert!(err.error_text().starts_with(NOT_CONFIRMED), "{err:?}");
    assert!(err.error_text().contains("no raft leader"), "{err:?}");
    assert_eq!(redis.client().cmd(&["GET", "k"]), Reply::bulk("v"));
}

/// `controller.url` listing every controller of a raft group (three test
/// controllers here): a write is confirmed by a majority naming one raft
/// leader, at the newest topology any of them answered.
#[test]
fn every_controller_listed_a_majority_confirms_each_write() {
    let redis = RedisServer::start();
    let group: Vec<TestController> = (0..3).map(|_| TestController::start()).collect();
    for ctl in &group {
        master_is(ctl, 1, 1);
        ctl.set_raft_leader(Some(1));
    }
    let urls: Vec<String> = group.iter().map(TestController::url).collect();
    let yaml = group[0].yaml(3_600_000, 3_600_000).replace(
        &format!("url: {}", group[0].url()),
        &format!("url: [{}]", urls.join(", ")),
    );
    let proxy = Proxy::start(
        &redis.addr(),
        &format!(
            "node_id: {}\n{yaml}pause:\n  on_demote: readonly\nverify:\n  mode: every-write\n  hold: request\n  timeout_ms: 300\n",
            node_id(1)
        ),
    );
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["SET", "k", "1"]), Reply::ok());
    // One down: two of three still make a majority.
    group[2].set_down(true);
    assert_eq!(c.cmd(&["SET", "k", "2"]), Reply::ok(), "two of three");
    // One alone (the other two down): one voice of three.
    group[1].set_down(true);
    let err = c.cmd(&["SET", "k", "alone"]);
    assert!(err.error_text().starts_with(NOT_CONFIRMED), "{err:?}");
    assert!(err.error_text().contains("no majority"), "{err:?}");
    group[1].set_down(false);
    group[2].set_down(false);
    assert_eq!(c.cmd(&["SET", "k", "3"]), Reply::ok(), "whole again");
    // Two slow past the bound: what each had said by then.
    for ctl in &group[1..] {
        ctl.set_delay(Duration::from_millis(800));
    }
    let err = c.cmd(&["SET", "k", "slow"]);
    assert!(
        err.error_text().contains("within 300 ms") && err.error_text().contains("no answer"),
        "{err:?}"
    );
    for ctl in &group[1..] {
        ctl.set_delay(Duration::ZERO);
    }
    assert_eq!(c.cmd(&["SET", "k", "3"]), Reply::ok(), "answering again");
    // Two name different leaders, the third none: no majority.
    group[1].set_raft_leader(Some(2));
    group[2].set_raft_leader(Some(0));
    let err = c.cmd(&["SET", "k", "split"]);
    assert!(err.error_text().contains("no majority"), "{err:?}");
    // A majority under a new leader, its newest topology naming node 2:
    // the old leader's own answer (node 1 master) does not confirm.
    for ctl in &group[1..] {
        ctl.set_raft_leader(Some(2));
        master_is(ctl, 2, 2);
    }
    let err = c.cmd(&["SET", "k", "demoted"]);
    assert!(err.is_error(), "refused: {err:?}");
    assert_eq!(redis.client().cmd(&["GET", "k"]), Reply::bulk("3"));
}

#[test]
fn a_slow_controller_times_out_and_a_dead_one_rejects_writes_but_not_reads() {
    let (redis, ctl, proxy) = verified_setup("");
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());

    ctl.set_delay(Duration::from_millis(800));
    let err = c.cmd(&["SET", "k", "slow"]);
    assert!(err.error_text().starts_with(NOT_CONFIRMED), "{err:?}");
    assert!(
        err.error_text().contains("no answer within 300 ms"),
        "{err:?}"
    );
    ctl.set_delay(Duration::ZERO);

    drop(ctl);
    let err = c.cmd(&["SET", "k", "down"]);
    assert!(err.error_text().starts_with(NOT_CONFIRMED), "{err:?}");
    assert_eq!(
        c.cmd(&["GET", "k"]),
        Reply::bulk("v"),
        "reads are still served"
    );
    assert_eq!(redis.client().cmd(&["GET", "k"]), Reply::bulk("v"));
}

#[test]
fn concurrent_writers_share_confirmations_each_sent_after_their_write() {
    concurrent_writers_each_confirmed_after_their_write("request");
}

/// With `hold: acknowledgement` the writes reach the node before their
/// confirmation, but no success is answered before a confirmation that
/// the controller received after the write was sent.
#[test]
fn held_acknowledgements_each_wait_for_a_confirmation_sent_after_their_write() {
    concurrent_writers_each_confirmed_after_their_write("acknowledgement");
}

fn concurrent_writers_each_confirmed_after_their_write(hold: &str) {
    const WRITERS: usize = 1000;
    const EACH: usize = 5;
    let redis = RedisServer::start_with(&["--maxclients", "4000"]);
    let ctl = TestController::start();
    master_is(&ctl, 1, 1);
    ctl.set_delay(Duration::from_millis(2));
    // Three session threads, so three verification drivers share the one
    // round sequence and its one place on the wire (max_in_flight 1),
    // whatever the machine's CPUs.
    // A generous bound: what is tested is the batching and the order, not
    // the timeout (a full test run beside a release build once timed out
    // some of these writes at 300 ms).
    let proxy = proxy_holding(
        hold,
        2_000,
        &redis,
        &ctl,
        "threads: 3\nlimits:\n  max_clients: 4000\n",
    );
    // Warm up: the start-up poll and the first confirmation.
    assert_eq!(proxy.client().cmd(&["SET", "warm", "1"]), Reply::ok());

    let start = Instant::now();
    let writes = Arc::new(Mutex::new(Vec::with_capacity(WRITERS * EACH)));
    let barrier = Arc::new(Barrier::new(WRITERS));
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (writes, barrier, port) = (Arc::clone(&writes), Arc::clone(&barrier), proxy.port);
            std::thread::spawn(move || {
                let mut c = Client::connect(port);
                // Accepted and served before the burst (a burst of connects
                // could overflow the listen backlog on a loaded machine).
                assert_eq!(c.cmd(&["PING"]), Reply::Status("PONG".into()));
                barrier.wait();
                for i in 0..EACH {
                    let sent = Instant::now();
                    let reply = c.cmd(&["SET", &format!("w{w}:{i}"), "v"]);
                    writes
                        .lock()
                        .expect("writes")
                        .push((sent, Instant::now(), reply));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    let writes = writes.lock().expect("writes");
    let failed: Vec<&Reply> = writes
        .iter()
        .map(|(_, _, r)| r)
        .filter(|r| **r != Reply::ok())
        .collect();
    assert!(
        failed.is_empty(),
        "every write was confirmed: {} of {} were not, the first {:?}",
        failed.len(),
        writes.len(),
        failed.first()
    );
    let confirmations: Vec<Instant> = ctl
        .requests()
        .into_iter()
        .map(|(t, _)| t)
        .filter(|t| *t >= start)
        .collect();
    let total = WRITERS * EACH;
    eprintln!(
        "{total} writes from {WRITERS} writers used {} confirmation requests",
        confirmations.len()
    );
    assert!(
        confirmations.len() * 10 <= total,
        "{} confirmation requests for {total} writes: batching failed",
        confirmations.len()
    );
    // Each acknowledged write was preceded by a confirmation request that the
    // controller received after the client sent the write.
    for (sent, acked, _) in writes.iter() {
        assert!(
            confirmations.iter().any(|t| t > sent && t < acked),
            "a write was acknowledged without a confirmation sent after it arrived"
        );
    }
    assert!(start.elapsed() < PATIENCE * 6);
}

/// Sessions on sixteen threads share rounds: one confirmation covers the
/// writes of sessions on every thread, and `max_in_flight` bounds the
/// requests on the wire whatever the number of threads. (With a sequence of
/// rounds per thread, 64 writers on 16 threads got ~4 writes a round.)
#[test]
fn writes_on_sixteen_session_threads_share_rounds_within_max_in_flight() {
    const WRITERS: usize = 64;
    const EACH: usize = 20;
    let redis = RedisServer::start();
    let ctl = TestController::start();
    master_is(&ctl, 1, 1);
    ctl.set_delay(Duration::from_millis(3));
    // `extra` continues the verify section.
    let proxy = proxy_holding(
        "acknowledgement",
        2_000,
        &redis,
        &ctl,
        "  max_in_flight: 2\nthreads: 16\n",
    );
    let mut warm = proxy.client();
    assert_eq!(warm.cmd(&["SET", "warm", "1"]), Reply::ok());

    let barrier = Arc::new(Barrier::new(WRITERS));
    let clients: Vec<Client> = (0..WRITERS).map(|_| proxy.client()).collect();
    let before = Instant::now();
    ctl.take_most_concurrent();
    let threads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(w, mut c)| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                (0..EACH)
                    .map(|i| c.cmd(&["SET", &format!("s{w}:{i}"), "v"]))
                    .filter(|r| *r != Reply::ok())
                    .count()
            })
        })
        .collect();
    let failed: usize = threads.into_iter().map(|t| t.join().expect("writer")).sum();
    assert_eq!(failed, 0, "every write confirmed");
    let most = ctl.take_most_concurrent();
    assert!(
        most <= 2,
        "{most} confirmations on the wire at once, max_in_flight 2"
    );
    let rounds = ctl.requests_since(before);
    let total = WRITERS * EACH;
    eprintln!(
        "{total} writes on 16 session threads: {rounds} confirmations, at most {most} at once"
    );
    assert!(
        rounds * 8 <= total,
        "{rounds} confirmations for {total} writes: rounds are not shared across threads"
    );
}

#[test]
fn a_pipeline_of_writes_shares_one_confirmation() {
    let (_redis, ctl, proxy) = verified_setup("");
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["SET", "warm", "1"]), Reply::ok());
    let before = Instant::now();
    let mut pipeline = Vec::new();
    for i in 0..16 {
        pipeline.extend(support::encode(&[b"SET", format!("p{i}").as_bytes(), b"v"]));
    }
    c.send_raw(&pipeline);
    for _ in 0..16 {
        assert_eq!(c.read(), Reply::ok());
    }
    let rounds = ctl.requests_since(before);
    // All 16 arrived in one read, before the first confirmation was asked:
    // one round covers them (two if the pipeline was split across reads).
    assert!(
        (1..=2).contains(&rounds),
        "{rounds} confirmations for one pipeline"
    );
}

#[test]
fn a_write_held_by_a_pause_is_still_verified_when_released() {
    let (redis, ctl, proxy) = verified_setup("control:\n  allow_from: [127.0.0.1]\n");
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["SET", "k", "before"]), Reply::ok());
    let mut admin = proxy.client();
    assert_eq!(
        admin.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]),
        Reply::ok()
    );
    c.send(&["SET", "k", "held"]);
    assert_eq!(
        c.try_read(Duration::from_millis(100)),
        None,
        "held by the pause"
    );
    // Meanwhile the controller made another node master.
    master_is(&ctl, 2, 2);
    assert_eq!(admin.cmd(&["CLIENT", "UNPAUSE"]), Reply::ok());
    let reply = c.read();
    assert!(reply.error_text().starts_with(NOT_CONFIRMED), "{reply:?}");
    assert_eq!(redis.client().cmd(&["GET", "k"]), Reply::bulk("before"));
}

#[test]
fn blank_lines_do_not_extend_a_confirmation() {
    let (redis, ctl, proxy) = verified_setup("");
    let mut c = proxy.client();
    let mut input = b"SET k v\r\n".to_vec();
    input.extend_from_slice(&b"\r\n".repeat(20));
    c.send_raw(&input);
    assert_eq!(c.read(), Reply::ok());
    master_is(&ctl, 2, 2);
    let reply = c.cmd(&["SET", "k2", "v2"]);
    assert!(reply.error_text().starts_with(NOT_CONFIRMED), "{reply:?}");
    assert_eq!(redis.client().cmd(&["EXISTS", "k2"]), Reply::Int(0));
}

/// `hold: acknowledgement`: the write reaches the node while its
/// confirmation is still on the way; the client's `+OK` waits for it, and
/// replies behind it (a pipelined read) keep their order.
#[test]
fn a_held_acknowledgement_lets_the_write_reach_the_node_first() {
    let (redis, ctl, proxy) = acknowledging_setup(10_000, "");
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["SET", "warm", "1"]), Reply::ok());
    ctl.set_delay(Duration::from_millis(2_000));
    let sent = Instant::now();
    c.send(&["SET", "k", "early"]);
    c.send(&["GET", "k"]);
    let mut node = redis.client();
    while node.cmd(&["GET", "k"]) != Reply::bulk("early") {
        assert!(
            sent.elapsed() < PATIENCE,
            "the write never reached the node"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    while ctl.requests_since(sent) == 0 {
        assert!(sent.elapsed() < PATIENCE, "no confirmation was asked");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        c.try_read(Duration::ZERO),
        None,
        "no reply while the confirmation is on its way"
    );
    assert_eq!(c.read(), Reply::ok());
    assert_eq!(c.read(), Reply::bulk("early"));
    ctl.set_delay(Duration::ZERO);
    // Reads alone never wait.
    let before = Instant::now();
    assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("early"));
    assert_eq!(ctl.requests_since(before), 0);
}

/// A refused confirmation turns a forwarded write's success into the
/// unknown-outcome error (the node did apply it), while an error the node
/// answered passes as it is: nothing was acknowledged either way.
#[test]
fn a_refused_confirmation_makes_a_success_an_unknown_outcome() {
    let (redis, ctl, proxy) = acknowledging_setup(300, "");
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["SET", "s", "text"]), Reply::ok());
    master_is(&ctl, 2, 2);
    let reply = c.cmd(&["SET", "k", "applied"]);
    assert!(reply.error_text().starts_with(UNCONFIRMED), "{reply:?}");
    assert!(
        reply.error_text().contains("slave"),
        "names the cause: {reply:?}"
    );
    assert!(
        reply
            .error_text()
            .ends_with("the write may or may not have been applied"),
        "{reply:?}"
    );
    assert_eq!(
        redis.client().cmd(&["GET", "k"]),
        Reply::bulk("applied"),
        "forwarded before its confirmation: the node has it"
    );
    let err = c.cmd(&["INCR", "s"]);
    assert!(
        err.error_text().contains("not an integer"),
        "the node's own error passes: {err:?}"
    );
}

/// A confirmation that does not come in time fails the same way, and a
/// controller that is gone too; reads go on.
#[test]
fn an_unanswered_confirmation_makes_a_success_an_unknown_outcome() {
    let (_redis, ctl, proxy) = acknowledging_setup(300, "");
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
    ctl.set_delay(Duration::from_millis(1_500));
    let reply = c.cmd(&["SET", "k", "slow"]);
    assert!(reply.error_text().starts_with(UNCONFIRMED), "{reply:?}");
    assert!(
        reply.error_text().contains("no answer within 300 ms"),
        "{reply:?}"
    );
    ctl.set_delay(Duration::ZERO);
    drop(ctl);
    let reply = c.cmd(&["SET", "k", "down"]);
    assert!(reply.error_text().starts_with(UNCONFIRMED), "{reply:?}");
    assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("down"));
}

/// The node closing the connection (QUIT) while a reply waits for its
/// confirmation: the client still gets every reply, then the close.
#[test]
fn replies_held_for_a_confirmation_outlive_the_nodes_close() {
    let (_redis, ctl, proxy) = acknowledging_setup(10_000, "");
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["SET", "warm", "1"]), Reply::ok());
    ctl.set_delay(Duration::from_millis(300));
    c.send(&["SET", "k", "v"]);
    c.send(&["QUIT"]);
    assert_eq!(c.read(), Reply::ok());
    assert_eq!(c.read(), Reply::ok());
    assert!(c.is_closed(), "closed after the replies");
}

/// SIGTERM while a write's confirmation is on its way: the drain lets the
/// confirmation come and the client gets its real answer, in both modes.
#[test]
fn a_drain_waits_for_the_confirmations_of_writes_in_flight() {
    for hold in ["request", "acknowledgement"] {
        let redis = RedisServer::start();
        let ctl = TestController::start();
        master_is(&ctl, 1, 1);
        let mut proxy = proxy_holding(hold, 5_000, &redis, &ctl, "drain_timeout_ms: 5000\n");
        let mut c = proxy.client();
        assert_eq!(c.cmd(&["SET", "warm", "1"]), Reply::ok());
        ctl.set_delay(Duration::from_millis(400));
        let sent = Instant::now();
        c.send(&["SET", "k", "v"]);
        while ctl.requests_since(sent) == 0 {
            assert!(sent.elapsed() < PATIENCE, "no confirmation was asked");
            std::thread::sleep(Duration::from_millis(5));
        }
        proxy.signal("TERM");
        assert_eq!(c.read(), Reply::ok(), "hold: {hold}");
        assert!(proxy.wait_exit().success());
        assert_eq!(redis.client().cmd(&["GET", "k"]), Reply::bulk("v"));
    }
}

/// `hold: acknowledgement` with writes handed to the new master
/// (`pause.on_demote: forward`): a write forwarded just before the
/// controller switched the shard has its confirmation refused, and is
/// answered the unknown outcome at once. Its reply used to wait for the
/// poller to follow the switch, while the poller's step-down waited for
/// that write, still in flight, before it revoked: every writer stalled
/// for the step-down's 500 ms bound (walkthrough 32: 0.5–0.6 s at 7 of 10
/// controller switches).
#[test]
fn a_write_forwarded_before_a_switch_is_answered_without_holding_the_step_down() {
    let redis = RedisServer::start();
    let ctl = TestController::start();
    master_is(&ctl, 1, 1);
    let proxy = Proxy::start(
        &redis.addr(),
        &format!(
            "node_id: {}\nlease:\n  mode: block-write\nverify:\n  mode: every-write\n  hold: acknowledgement\n  timeout_ms: 1000\n{}",
            node_id(1),
            // The poller is parked: the switch is seen by the write's round,
            // which wakes it.
            ctl.yaml(3_600_000, 3_600_000)
        ),
    );
    let mut c = proxy.client();
    support::set_once_leased(&mut c, "before");
    master_is(&ctl, 2, 2);
    let sent = Instant::now();
    let reply = c.cmd(&["SET", "k", "applied"]);
    let took = sent.elapsed();
    assert!(reply.error_text().starts_with(UNCONFIRMED), "{reply:?}");
    assert_eq!(redis.client().cmd(&["GET", "k"]), Reply::bulk("applied"));
    // Before: at least the step-down's 500 ms bound.
    assert!(
        took < Duration::from_millis(400),
        "the unknown outcome took {took:?}"
    );
}
