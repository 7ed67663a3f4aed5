//! Pull renewal: the proxy polls a (test) kvrocks-controller and holds the
//! master lease only while the cluster topology names its node master.

mod support;

use std::time::{Duration, Instant};

use support::controller::{node_id, TestController};
use support::{Client, Proxy, RedisServer, Reply, PATIENCE};

const POLL_MS: u64 = 100;
const TTL_MS: u64 = 500;

fn pull_proxy(redis: &RedisServer, controller: &TestController) -> Proxy {
    Proxy::start(
        &redis.addr(),
        &format!(
            // The other node's address is not a leasegate here: writes are
            // refused on a demotion rather than handed over.
            "node_id: {}\nlease:\n  mode: block-write\npause:\n  on_demote: readonly\n{}",
            node_id(1),
            controller.yaml(POLL_MS, TTL_MS)
        ),
    )
}

/// A leasegate polling `controller` for `redis`'s lease (block-write, the
/// default `pause.on_demote`), its admin API on a free port (token `t`).
fn pull_proxy_with_admin(redis: &RedisServer, controller: &TestController) -> Proxy {
    pull_proxy_with_ttl(redis, controller, TTL_MS)
}

/// [`pull_proxy_with_admin`] with the lease's `ttl_ms`.
fn pull_proxy_with_ttl(redis: &RedisServer, controller: &TestController, ttl_ms: u64) -> Proxy {
    Proxy::start(
        &redis.addr(),
        &format!(
            "node_id: {}\nlease:\n  mode: block-write\nadmin:\n  listen: 127.0.0.1:{}\n  token: t\n{}",
            node_id(1),
            support::free_port(),
            controller.yaml(POLL_MS, ttl_ms)
        ),
    )
}

fn me_master(controller: &TestController, version: u64) {
    let (me, other) = (node_id(1), node_id(2));
    controller.set_topology(
        version,
        vec![vec![
            (&me, "127.0.0.1:6666", "master"),
            (&other, "127.0.0.1:6667", "slave"),
        ]],
    );
}

fn other_master(controller: &TestController, version: u64) {
    let (me, other) = (node_id(1), node_id(2));
    controller.set_topology(
        version,
        vec![vec![
            (&other, "127.0.0.1:6667", "master"),
            (&me, "127.0.0.1:6666", "slave"),
        ]],
    );
}

/// Refused for want of a lease, or (another node named master of the
/// shard) because the poll marked this node demoted.
fn fenced(reply: &Reply) -> bool {
    matches!(reply, Reply::Error(e) if e.contains("master lease expired") || e.starts_with("READONLY this node was demoted"))
}

/// Repeats a SET until `want(reply)`, at most [`PATIENCE`].
fn set_until(c: &mut Client, what: &str, want: impl Fn(&Reply) -> bool) {
    let start = Instant::now();
    loop {
        let reply = c.cmd(&["SET", "k", "v"]);
        if want(&reply) {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{what}: still {reply:?} after {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the controller has answered `n` more polls.
fn wait_polls(controller: &TestController, n: usize) {
    let since = Instant::now();
    let start = Instant::now();
    while controller.requests_since(since) < n {
        assert!(start.elapsed() < PATIENCE, "the proxy stopped polling");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn topology_grants_and_revokes() {
    let redis = RedisServer::start();
    let controller = TestController::start();
    me_master(&controller, 1);
    let proxy = pull_proxy(&redis, &controller);
    let mut c = proxy.client();

    set_until(&mut c, "master at version 1", |r| *r == Reply::ok());

    // Another node promoted: fenced soon after.
    other_master(&controller, 2);
    set_until(&mut c, "other master at version 2", fenced);

    // A stale answer (version 1 again) naming this node master renews nothing.
    me_master(&controller, 1);
    wait_polls(&controller, 3);
    assert!(
        fenced(&c.cmd(&["SET", "k", "v"])),
        "a stale version renewed"
    );

    // A newer version naming this node master again does.
    me_master(&controller, 3);
    set_until(&mut c, "master at version 3", |r| *r == Reply::ok());

    // Not listed at all: revoked.
    controller.set_topology(3, vec![vec![(&node_id(2), "127.0.0.1:6667", "master")]]);
    set_until(&mut c, "not in the topology", fenced);

    let requests = controller.requests();
    assert!(requests
        .iter()
        .all(|(_, p)| p == "/api/v1/namespaces/test-ns/clusters/test-cluster"));
}

#[test]
fn controller_down_lets_the_lease_lapse() {
    let redis = RedisServer::start();
    let controller = TestController::start();
    me_master(&controller, 1);
    let proxy = pull_proxy(&redis, &controller);
    let mut c = proxy.client();
    set_until(&mut c, "master at version 1", |r| *r == Reply::ok());

    controller.set_down(true);
    set_until(&mut c, "controller down", fenced);
    assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("v"), "reads still pass");

    // Back up: renewed again.
    controller.set_down(false);
    set_until(&mut c, "controller back", |r| *r == Reply::ok());
}

/// A controller cut off from the other controllers of its raft group
/// still answers the topology from its own copy (kvrocks-controller 1.2.0
/// does, for as long as it is asked), but knows no leader: its answers
/// renew nothing, and the lease lapses as with a controller down. A
/// controller without a raft store of its own (etcd) is taken at its word.
#[test]
fn a_controller_that_knows_no_raft_leader_renews_nothing() {
    let redis = RedisServer::start();
    let controller = TestController::start();
    me_master(&controller, 1);
    controller.set_raft_leader(Some(2));
    let proxy = pull_proxy(&redis, &controller);
    let mut c = proxy.client();
    set_until(&mut c, "master at version 1, a leader known", |r| {
        *r == Reply::ok()
    });

    controller.set_raft_leader(Some(0));
    set_until(&mut c, "the controller knows no leader", fenced);
    controller.set_raft_leader(None);
    set_until(&mut c, "a controller without raft", |r| *r == Reply::ok());
}

#[test]
fn slow_answers_past_the_timeout_do_not_renew() {
    let redis = RedisServer::start();
    let controller = TestController::start();
    me_master(&controller, 1);
    let proxy = pull_proxy(&redis, &controller);
    let mut c = proxy.client();
    set_until(&mut c, "master at version 1", |r| *r == Reply::ok());

    // Answers slower than the TTL (and the 500 ms poll timeout) renew nothing.
    controller.set_delay(Duration::from_millis(800));
    set_until(&mut c, "controller too slow", fenced);
    controller.set_delay(Duration::ZERO);
    set_until(&mut c, "controller fast again", |r| *r == Reply::ok());
}

#[test]
fn redirect_to_the_leader_is_followed() {
    let redis = RedisServer::start();
    let follower = TestController::start();
    let leader = TestController::start();
    follower.set_redirect(Some(leader.url()));
    me_master(&leader, 1);
    // The follower's own (outdated) view would revoke, if it were asked.
    other_master(&follower, 7);
    let proxy = pull_proxy(&redis, &follower);
    let mut c = proxy.client();
    set_until(&mut c, "master according to the leader", |r| {
        *r == Reply::ok()
    });
    assert!(!follower.requests().is_empty());
    assert!(!leader.requests().is_empty());

    // The leader changes its mind: the redirect is followed for revocation too.
    other_master(&leader, 2);
    set_until(&mut c, "leader names another master", fenced);
}

/// A revocation (here: a grant naming another master, as a failover's
/// switch sends) is not undone by a poll that still shows the old topology:
/// only a later topology version may renew.
#[test]
fn a_poll_does_not_undo_a_revocation_at_the_same_version() {
    let redis = RedisServer::start();
    let controller = TestController::start();
    me_master(&controller, 3);
    let proxy = pull_proxy_with_admin(&redis, &controller);
    let admin = proxy.admin_port();
    let mut c = proxy.client();
    set_until(&mut c, "renewed by the poll", |r| *r == Reply::ok());

    let revoke = format!(
        r#"{{"master_node_id":"{}","epoch":0,"ttl_ms":10000}}"#,
        node_id(2)
    );
    let (code, body) = support::http(admin, "POST", "/v1/lease", Some("t"), Some(&revoke));
    assert_eq!(code, 200, "{body}");
    assert!(fenced(&c.cmd(&["SET", "k", "v"])));
    // Several polls at version 3 (this node master) come and go: still fenced.
    wait_polls(&controller, 3);
    assert!(
        fenced(&c.cmd(&["SET", "k", "v"])),
        "a poll at the revoked version re-granted the lease"
    );
    // The controller moves on to a later topology naming this node master.
    me_master(&controller, 4);
    set_until(&mut c, "renewed at a later version", |r| *r == Reply::ok());
}

/// The controller behind TLS (`https://`, `controller.ca_file`): its
/// answers grant the lease as over plain HTTP. One whose certificate does
/// not chain to the CA file is never asked (the handshake fails first), so
/// no lease comes from it; and an `https://` URL without a CA file is a
/// config error that names the key.
#[test]
fn an_https_controller_grants_the_lease_and_an_untrusted_one_does_not() {
    use support::tls::{Pki, TlsRelay};
    let redis = RedisServer::start();
    let controller = TestController::start();
    me_master(&controller, 1);
    let pki = Pki::new("controller");
    let upstream = controller.url().trim_start_matches("http://").to_string();
    let relay = TlsRelay::start(&pki, upstream);
    let https = |ca: &std::path::Path| {
        controller.yaml(POLL_MS, TTL_MS).replace(
            &controller.url(),
            &format!("https://localhost:{}", relay.port),
        ) + &format!("  ca_file: {}\n", ca.display())
    };
    let proxy_with = |controller_yaml: String| {
        Proxy::start(
            &redis.addr(),
            &format!(
                "node_id: {}\nlease:\n  mode: block-write\npause:\n  on_demote: readonly\n{controller_yaml}",
                node_id(1)
            ),
        )
    };
    let trusted = proxy_with(https(&pki.path("ca.crt")));
    set_until(&mut trusted.client(), "master over https", |r| {
        *r == Reply::ok()
    });
    drop(trusted);
    // A poll it sent before it was stopped may still be being answered.
    std::thread::sleep(Duration::from_millis(POLL_MS * 2));
    let served = controller.served();
    let other = Pki::new("other");
    let untrusted = proxy_with(https(&other.path("ca.crt")));
    std::thread::sleep(Duration::from_millis(POLL_MS * 5));
    assert!(
        fenced(&untrusted.client().cmd(&["SET", "k", "v"])),
        "no lease from an untrusted controller"
    );
    assert_eq!(
        controller.served(),
        served,
        "never asked: the handshake failed first"
    );

    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("c.yaml");
    let yaml = format!(
        "backend:\n  addr: {}\nnode_id: {}\n{}",
        redis.addr(),
        node_id(1),
        controller
            .yaml(POLL_MS, TTL_MS)
            .replace("http://", "https://")
    );
    std::fs::write(&file, yaml).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leasegate"))
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("check-config runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("controller.ca_file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The controller names this node master while the old master's leasegate
/// runs a failover (as a timed cluster failover does: the controller
/// switched before its pause, and the old master still acknowledges writes
/// under its lease). That failover promotes this node and grants its lease
/// itself: the poll does not hold this leasegate's writes meanwhile (they
/// go on to the old master, this node's demotion). Held, they waited from
/// the controller's switch to the failover's end (0.2–0.4 s, a
/// walkthrough). Once no failover runs there, the poll holds them as before.
#[test]
fn the_poll_holds_no_writes_while_the_old_masters_failover_promotes_this_node() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use support::kvrocks::Node;
    use support::scripted::{bulk, serve_commands};

    let controller = TestController::start();
    let (old_id, me) = (node_id(1), node_id(2));
    let Some(node) = Node::start_with(&me, "block-write", &controller.yaml(POLL_MS, 10_000)) else {
        return;
    };
    // The old master's leasegate, scripted: its failover runs (holding its
    // lease) while `running` is set; anything else it is sent is taken.
    let running = Arc::new(AtomicBool::new(true));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let old = listener.local_addr().expect("addr").to_string();
    let state = running.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let state = state.clone();
            std::thread::spawn(move || {
                serve_commands(conn, |args| match args.first().map(String::as_str) {
                    Some(c) if c.eq_ignore_ascii_case("INFO") => {
                        bulk(&if state.load(Ordering::SeqCst) {
                            "# Leasegate\r\nlease_valid:1\r\ncluster_failover_state:wait_sync\r\ncontroller_version:1\r\n".to_string()
                        } else {
                            "# Leasegate\r\nlease_valid:1\r\ncluster_failover_state:none\r\ncontroller_version:1\r\n".to_string()
                        })
                    }
                    _ => b"+OK\r\n".to_vec(),
                })
            });
        }
    });
    let here = format!("127.0.0.1:{}", node.proxy.port);
    controller.set_topology(
        1,
        vec![vec![(&old_id, &old, "master"), (&me, &here, "slave")]],
    );
    let text = format!(
        "{old_id} {} master - 0-16383\n{me} 127.0.0.1 {} slave {old_id}",
        old.replace(':', " "),
        node.proxy.port
    );
    node.set_nodes(&text, 1);
    wait_polls(&controller, 2);
    // The controller switches the shard; its push has not come.
    controller.set_topology(
        2,
        vec![vec![(&me, &here, "master"), (&old_id, &old, "slave")]],
    );
    let mut info = node.proxy.client();
    let field = |info: &mut Client, name: &str| {
        support::info_fields(&info.cmd(&["INFO", "leasegate"]))
            .get(name)
            .cloned()
            .unwrap_or_default()
    };
    // The poll saw the switch (it holds the writes right after, if at all).
    let start = Instant::now();
    while field(&mut info, "controller_version") != "2" {
        assert!(start.elapsed() < PATIENCE, "the poll never saw version 2");
        std::thread::sleep(Duration::from_millis(10));
    }
    let since = Instant::now();
    while since.elapsed() < Duration::from_millis(10 * POLL_MS) {
        assert_eq!(
            field(&mut info, "paused"),
            "0",
            "writes held here while the old master's failover runs"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // No failover there: the controller's switch is followed by the poll,
    // which holds the writes until the node is at its topology.
    running.store(false, Ordering::SeqCst);
    let start = Instant::now();
    while field(&mut info, "paused") != "1" {
        assert!(
            start.elapsed() < PATIENCE,
            "the poll never held the writes once no failover ran at the old master"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The controller switches the shard and is then frozen: the old master's
/// poll saw the switch, the new master's did not (it still takes itself
/// for the old master's replica, demoted toward it). The old master's
/// step-down waits `switch_timeout_ms` for the new master's lease, then
/// refuses its writes (`-READONLY ... the new master is unknown`) rather
/// than hand them to a leasegate that hands them back: every session
/// bounced between the two, a new connection per hop, thousands of
/// sockets within seconds (walkthrough 8).
#[test]
fn writes_are_not_handed_to_a_leasegate_that_would_hand_them_back() {
    use support::kvrocks::{a_master_of_b, Node, A_ID, B_ID};

    let controller = TestController::start();
    let a = Node::start_with(
        A_ID,
        "block-write",
        &format!(
            "{}  switch_timeout_ms: 300\n",
            controller.yaml(POLL_MS, 10_000)
        ),
    );
    // B's poll comes once at its start, then not for a minute.
    let b = Node::start_with(B_ID, "block-write", &controller.yaml(60_000, 10_000));
    let (Some(a), Some(b)) = (a, b) else {
        return;
    };
    let (a_addr, b_addr) = a_master_of_b(&controller, &a, &b);
    let mut app = a.proxy.client();
    let demoted = |node: &Node| {
        support::info_fields(&node.proxy.client().cmd(&["INFO", "leasegate"]))
            .get("demoted")
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(demoted(&b), "1", "B, a replica, hands writes to A");
    // The switch, seen by A's poll only.
    controller.set_topology(
        2,
        vec![vec![(B_ID, &b_addr, "master"), (A_ID, &a_addr, "slave")]],
    );
    std::thread::sleep(Duration::from_millis(1000));
    let reply = app.cmd(&["SET", "k", "after the switch"]);
    let text = reply.error_text().to_string();
    assert!(
        text.starts_with("READONLY") && text.contains("unknown"),
        "refused at A, not bounced: {reply:?}"
    );
    for (name, node) in [("A", &a), ("B", &b)] {
        let fds = node.proxy.fd_count();
        assert!(fds < 100, "{name}'s leasegate holds {fds} file descriptors");
    }
}

/// The controller fails the shard over while the old master's leasegate is
/// restarting: the restarted leasegate finds B named master, but B's
/// leasegate does not hold the lease yet (its node not yet at the
/// topology naming it master). A's writes are held until B's leasegate
/// takes them (`controller.switch_timeout_ms` at most), as a step-down
/// holds them. They were refused at once instead (`-READONLY this node was
/// demoted; the new master is unknown`: 3,032 errors in 0.93 s,
/// walkthrough 23).
#[test]
fn a_restarted_old_masters_writes_wait_for_the_new_master_to_take_them() {
    use support::kvrocks::{a_master_of_b, topology, Node, A_ID, B_ID};

    let controller = TestController::start();
    let yaml = format!(
        "{}  switch_timeout_ms: 5000
",
        controller.yaml(POLL_MS, 10_000)
    );
    let (Some(mut a), Some(b)) = (
        Node::start_with(A_ID, "block-write", &yaml),
        Node::start_with(B_ID, "block-write", &yaml),
    ) else {
        return;
    };
    let (a_addr, b_addr) = a_master_of_b(&controller, &a, &b);
    // The switch, made while A's leasegate restarts; B's node does not
    // have the topology naming it master yet.
    controller.set_topology(
        2,
        vec![vec![(B_ID, &b_addr, "master"), (A_ID, &a_addr, "slave")]],
    );
    a.proxy.restart();
    let mut app = a.proxy.client();
    app.send(&["SET", "k", "after the switch"]);
    // A's write waits for B's leasegate to take it, rather than being
    // refused: B's own poll may bring B's node to the topology first (once
    // A's restarted leasegate reports itself fenced), else the push does.
    let early = app.try_read(Duration::from_millis(800));
    b.set_nodes(&topology((B_ID, &b), Some((A_ID, &a))), 2);
    assert_eq!(
        early.or_else(|| app.try_read(PATIENCE)),
        Some(Reply::ok()),
        "A's write is taken by B, not refused"
    );
    assert_eq!(
        b.kvrocks.client().cmd(&["GET", "k"]),
        Reply::bulk("after the switch")
    );
}

/// The controller names B master, then, before B's node has that
/// topology, A again: B's writes, held for its promotion, go on at once
/// where the controller now says the master is. The poll dropped its hold
/// without ending it, so every write on B stalled until the hold's bound
/// (`node_lost_wait_ms`, 30 s): walkthrough 26, all 34 clients for 30.0 s.
#[test]
fn writes_held_for_a_promotion_taken_back_go_on_at_once() {
    let Some(mut held) = support::kvrocks::HeldPromotion::start() else {
        return;
    };
    held.taken_back_by_a();
}

/// With a controller to poll, a lease granted over the admin API (a
/// failover's grant asks for 10 s) lasts at most `controller.ttl_ms`: the
/// other leasegates wait out only that, since the controller's switch,
/// before promoting where they cannot reach this one. A walkthrough froze
/// a leasegate holding a failover's 10 s lease right after a later switch;
/// on waking it acknowledged writes beside the promoted node (127 lost).
#[test]
fn an_admin_grant_lasts_no_longer_than_the_controllers_ttl() {
    let redis = RedisServer::start();
    let controller = TestController::start();
    controller.set_down(true);
    let token = "grant-token";
    let proxy = Proxy::start(
        &redis.addr(),
        &format!(
            "node_id: {}\nlease:\n  mode: block-write\nadmin:\n  listen: 127.0.0.1:{}\n  token: {token}\n{}",
            node_id(1),
            support::free_port(),
            controller.yaml(POLL_MS, TTL_MS)
        ),
    );
    let grant = format!(
        r#"{{"master_node_id":"{}","epoch":1,"ttl_ms":10000}}"#,
        node_id(1)
    );
    let (code, body) = support::http(
        proxy.admin_port(),
        "POST",
        "/v1/lease",
        Some(token),
        Some(&grant),
    );
    assert_eq!(code, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
    let remaining = answer["lease"]["remaining_ms"]
        .as_u64()
        .expect("remaining_ms");
    assert!(
        remaining <= TTL_MS,
        "a 10 s grant holds {remaining} ms, more than controller.ttl_ms {TTL_MS}: {body}"
    );
    // The controller is down: nothing renews it.
    writes_until_it_runs_out(&proxy, "the grant");
}

/// A controller's `CLUSTERX HEARTBEAT` is bounded as the admin API's grant
/// is: where leasegate polls the controller, the other leasegates wait out
/// only `controller.ttl_ms` since a switch, so a heartbeat asking for 10 s
/// gets that much, no more.
#[test]
fn a_heartbeats_lease_lasts_no_longer_than_the_controllers_ttl() {
    let redis = RedisServer::start();
    let controller = TestController::start();
    controller.set_down(true);
    let proxy = Proxy::start(
        &redis.addr(),
        &format!(
            "node_id: {}\nlease:\n  mode: block-write\ncontrol:\n  password: ctl-secret\n{}",
            node_id(1),
            controller.yaml(POLL_MS, TTL_MS)
        ),
    );
    let mut ctl = support::controller_client(&proxy, "ctl-secret");
    let reply = support::heartbeat(&mut ctl, &node_id(1), 10_000, 1).text();
    let remaining: u64 = reply
        .lines()
        .find_map(|l| l.trim().strip_prefix("lease_remaining_ms:"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("lease_remaining_ms in {reply:?}"));
    assert!(
        reply.contains("lease_renewed:1") && remaining > 0 && remaining <= TTL_MS,
        "a 10 s heartbeat holds {remaining} ms, more than controller.ttl_ms {TTL_MS}: {reply:?}"
    );
    writes_until_it_runs_out(&proxy, "the heartbeat's lease");
}

/// `proxy`'s lease (from `what`) lets a write through, and, with nothing
/// renewing it, its writes are fenced once it runs out.
fn writes_until_it_runs_out(proxy: &Proxy, what: &str) {
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok(), "granted");
    set_until(&mut c, &format!("{what} ran out"), fenced);
}

/// A leasegate (re)started beside a replica serves its first write with
/// the controller's word: it admits clients once its first poll has been
/// answered (bounded by `controller.timeout_ms`). Served sooner, the write
/// met the cold start's lease, `-READONLY master lease expired`, although
/// the controller names another master (walkthrough 9: for ~120 ms after
/// a restart). Here the controller takes 200 ms to answer.
#[test]
fn a_starting_leasegate_serves_its_first_write_with_the_controllers_word() {
    let redis = RedisServer::start();
    let controller = TestController::start();
    other_master(&controller, 1);
    controller.set_delay(Duration::from_millis(200));
    let proxy = pull_proxy(&redis, &controller);
    let reply = proxy.client().cmd(&["SET", "k", "v"]);
    assert!(
        reply
            .error_text()
            .starts_with("READONLY this node was demoted"),
        "the controller names another master: {reply:?}"
    );
}

/// A write handed to the new master's leasegate while that one is being
/// restarted (refusing connections for a moment) waits for it rather than
/// failing: each such write was answered `-TRYAGAIN cannot reach the new
/// master` at once (walkthrough 11: 790 of them in under a second).
#[test]
fn a_write_handed_to_a_restarting_leasegate_waits_for_it() {
    let redis = RedisServer::start();
    let b_redis = RedisServer::start();
    let b_port = support::free_port();
    let b_addr = format!("127.0.0.1:{b_port}");
    let controller = TestController::start();
    let (me, other) = (node_id(1), node_id(2));
    controller.set_topology(
        2,
        vec![vec![
            (&other, b_addr.as_str(), "master"),
            (&me, "127.0.0.1:6666", "slave"),
        ]],
    );
    let proxy = Proxy::start(
        &redis.addr(),
        &format!(
            "node_id: {me}\nlease:\n  mode: block-write\n{}",
            controller.yaml(POLL_MS, TTL_MS)
        ),
    );
    let mut c = proxy.client();
    // B's leasegate comes up 400 ms after the write was sent.
    let started = Instant::now();
    let b_node = b_redis.addr();
    let b = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        Proxy::start_at(b_port, &b_node, "lease:\n  mode: disabled\n")
    });
    let reply = c.cmd(&["SET", "handed", "1"]);
    let took = started.elapsed();
    let _b = b.join().expect("B's leasegate");
    assert_eq!(reply, Reply::ok(), "after {took:?}");
    assert_eq!(b_redis.client().cmd(&["GET", "handed"]), Reply::bulk("1"));
}

/// A node that is down while the controller still names it master (its
/// failover not yet made): a new client is not refused but waits for it,
/// as a connected one does, and is served once it answers again. A client
/// that hangs up meanwhile leaves the wait (its place freed), and a check
/// addressed to the node itself (`CLUSTER INFO`, the controller's) fails at
/// once, on a new connection and on a waiting one, which go on waiting: a
/// controller whose checks waited replaced a killed master after 12 s, not 3.
#[test]
fn a_new_client_of_a_node_that_is_down_waits_for_it() {
    let mut redis = RedisServer::start();
    let controller = TestController::start();
    me_master(&controller, 1);
    // The lease's lapse is not what is tested: a fresh-clone CI run beside
    // a release build once had the waiting write fenced after the node's
    // return, the 500 ms lease run out between two polls.
    let proxy = pull_proxy_with_ttl(&redis, &controller, 2_000);
    let admin = proxy.admin_port();
    let mut connected = proxy.client();
    set_until(&mut connected, "the lease", |r| *r == Reply::ok());
    redis.stop();
    let mut checking = proxy.client();
    // Clients that give up are gone from the wait well before its 30 s.
    for i in 0..20 {
        let mut gone = proxy.client();
        if i % 2 == 0 {
            gone.send(&["GET", "k"]);
        }
    }
    let connections = "leasegate_client_connections ";
    let start = Instant::now();
    while support::metric(admin, connections) > 2 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "clients that hung up still wait for the node: {} connections",
            support::metric(admin, connections)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The controller's checks, on a new connection and on a waiting one
    // (its pooled connections): answered that the node is down, at once
    // and each time, and the connections go on waiting.
    let started = Instant::now();
    for (what, c) in [("a new", &mut checking), ("a waiting", &mut connected)] {
        for _ in 0..3 {
            let reply = c.cmd(&["CLUSTER", "INFO"]);
            assert!(
                reply.is_error() && reply.error_text().contains("unavailable"),
                "CLUSTER INFO of a node that is down, on {what} connection: {reply:?}"
            );
        }
    }
    // A set-up sent ahead of a check in one go (leasegate's own fence
    // does so): refused at once, each request, as before the wait.
    let mut peer = proxy.client();
    peer.send(&["SELECT", "0"]);
    peer.send(&["INFO", "leasegate"]);
    for what in ["SELECT", "INFO"] {
        let reply = peer.read();
        assert!(
            reply.is_error() && reply.error_text().contains("unavailable"),
            "{what} ahead of a check, on a new connection: {reply:?}"
        );
    }
    // One line per request, none more, then closed.
    assert!(peer.is_closed());
    assert_eq!(
        peer.read_within(Duration::ZERO),
        Ok(None),
        "a line too many"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the checks waited {:?}",
        started.elapsed()
    );
    // A write on a new connection waits, and is served once the node is back.
    let mut waiting = proxy.client();
    waiting.send(&["SET", "during", "1"]);
    assert_eq!(
        waiting.try_read(Duration::from_millis(1500)),
        None,
        "a new client of a node that is down"
    );
    let waiting_for_node = "leasegate_clients_waiting_for_node ";
    assert_eq!(
        support::metric(admin, waiting_for_node),
        3,
        "waiting, by the metric"
    );
    redis.restart();
    assert_eq!(waiting.read(), Reply::ok());
    assert_eq!(redis.client().cmd(&["GET", "during"]), Reply::bulk("1"));
    for c in [&mut checking, &mut connected] {
        assert_eq!(c.cmd(&["GET", "during"]), Reply::bulk("1"));
    }
    assert_eq!(support::metric(admin, waiting_for_node), 0);
}

/// A session that goes on over a new node connection has its connection
/// state restored there first, each part checked: one whose ACL user was
/// deleted (the node closed its connection) ends, as it would directly,
/// rather than going on as the default user (walkthrough 20: its next
/// write was acknowledged as `default`).
#[test]
fn a_session_whose_state_cannot_be_restored_ends() {
    let redis = RedisServer::start();
    let controller = TestController::start();
    me_master(&controller, 1);
    let proxy = pull_proxy_with_admin(&redis, &controller);
    let mut node = redis.client();
    assert_eq!(
        node.cmd(&["ACL", "SETUSER", "bob", "on", ">pw", "~*", "+@all"]),
        Reply::ok()
    );
    let mut bob = proxy.client();
    assert_eq!(bob.cmd(&["AUTH", "bob", "pw"]), Reply::ok());
    set_until(&mut bob, "the lease", |r| *r == Reply::ok());
    assert_eq!(bob.cmd(&["ACL", "WHOAMI"]), Reply::bulk("bob"));
    // Redis closes bob's connections; the session finds the node again.
    assert_eq!(node.cmd(&["ACL", "DELUSER", "bob"]), Reply::Int(1));
    std::thread::sleep(Duration::from_millis(500));
    bob.send(&["ACL", "WHOAMI"]);
    let after = bob.read_within(Duration::from_secs(5));
    assert!(
        matches!(&after, Ok(Some(Reply::Error(e))) if e.contains("could not be restored")),
        "a session whose user was deleted goes on: {after:?}"
    );
    assert!(bob.is_closed());
}

/// A session with client-side caching on (`CLIENT TRACKING ON`) does not
/// go on over a new node connection: the invalidations come from the
/// connection that served its reads, and a session that went on unseen
/// kept a stale cache for good (walkthrough 20). It closes when its node
/// connection does, as it would directly; an untracked one goes on.
#[test]
fn a_tracking_session_ends_with_its_node_connection() {
    let mut redis = RedisServer::start();
    let controller = TestController::start();
    me_master(&controller, 1);
    let proxy = pull_proxy_with_admin(&redis, &controller);
    let mut tracked = proxy.client();
    tracked.resp3 = true;
    assert!(matches!(tracked.cmd(&["HELLO", "3"]), Reply::Map(_)));
    assert_eq!(tracked.cmd(&["CLIENT", "TRACKING", "ON"]), Reply::ok());
    assert_eq!(tracked.cmd(&["GET", "tk"]), Reply::Nil);
    let mut plain = proxy.client();
    assert_eq!(plain.cmd(&["GET", "tk"]), Reply::Nil);
    redis.stop();
    redis.restart();
    assert!(
        tracked.read_within(Duration::from_secs(5)).is_err(),
        "a tracking session outlived its node connection"
    );
    assert_eq!(plain.cmd(&["GET", "tk"]), Reply::Nil);
}
