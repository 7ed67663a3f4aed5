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
    let proxy = Proxy::start(
        &redis.addr(),
        &format!(
            "node_id: {}\nlease:\n  mode: block-write\nadmin:\n  listen: 127.0.0.1:{}\n  token: t\n{}",
            node_id(1),
            support::free_port(),
            controller.yaml(POLL_MS, TTL_MS)
        ),
    );
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
