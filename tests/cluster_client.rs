//! A real cluster client through the leasegates: redis-py's `RedisCluster`
//! in front of a Kvrocks shard (cluster mode, nodes registered by their
//! leasegates' addresses, as kvrocks-controller registers them).
//!
//! The client discovers the shard through A's leasegate (`INFO`, then
//! `CLUSTER SLOTS`, which the node answers with the leasegate addresses of
//! its topology) and writes distinct keys without a pause while the test
//! fails the shard over to B as kvrocks-controller (PR #389) does. Whatever
//! `pause.on_demote` says, the client sees no error and every write it was
//! told succeeded is on the new master:
//!
//! * `forward` (the default): the held writes, and the session, move to B's
//!   leasegate; the client goes on over the connection it has.
//! * `moved`: the held writes are answered `-MOVED <slot> <B's leasegate>`,
//!   which `RedisCluster` follows on its own.
//!
//! redis-py is a Python package (Debian: `python3-redis`); without it the
//! test says SKIPPED, unless `CI` is set, where it fails.

mod support;

use support::cluster_py::{
    assert_all_on_master, check_summary, python_with_redis_cluster, strings, ClientOptions,
    ClientProcess,
};
use support::kvrocks::{link_up, pr389_failover_by_hand, topology, Node, A_ID, B_ID};
use support::{heartbeat, PATIENCE};

/// Writes acknowledged before the failover starts.
const READY: usize = 200;
/// Writes acknowledged after it, before the client stops.
const AFTER: usize = 500;

/// The whole run with A's leasegate configured by `a_extra`; returns the
/// client's summary and B's leasegate port, after the common assertions.
fn cluster_client_through_failover(a_extra: &str) -> Option<(serde_json::Value, u16)> {
    let (Some(a), Some(b)) = (
        Node::start_with(A_ID, "block-write", a_extra),
        Node::start(B_ID),
    ) else {
        return None;
    };
    let python = python_with_redis_cluster()?;
    let v1 = topology((A_ID, &a), Some((B_ID, &b)));
    a.set_nodes(&v1, 1);
    b.set_nodes(&v1, 1);
    for node in [&a, &b] {
        assert!(!heartbeat(&mut node.proxy.client(), A_ID, 600_000, 1).is_error());
    }
    let mut direct_b = b.kvrocks.client();
    link_up(&mut direct_b);

    // The client discovers the shard through A's leasegate and writes.
    let mut client = ClientProcess::start(
        &python,
        &ClientOptions {
            port: a.proxy.port,
            password: None,
            ready: READY,
            after: AFTER,
            deadline: PATIENCE * 3,
        },
    );
    client.expect_line("ready", PATIENCE * 3);
    pr389_failover_by_hand((A_ID, &a), (B_ID, &b), 2);
    client.say_failed_over();
    let summary = client.finish(PATIENCE * 4);
    let leasegates = [
        format!("127.0.0.1:{}", a.proxy.port),
        format!("127.0.0.1:{}", b.proxy.port),
    ];
    let acked = check_summary(&summary, &leasegates, READY, AFTER, "the failover", "");

    // B is the master now, and has every acknowledged write.
    assert_all_on_master(&mut direct_b, &acked, "new master");
    Some((summary, b.proxy.port))
}

/// `pause.on_demote: forward` (the default): the client's session moves to
/// B's leasegate under it; no error, nothing lost, writes go on after.
#[test]
fn redis_py_cluster_client_rides_a_controller_failover_with_forward() {
    let Some((summary, b_port)) = cluster_client_through_failover("") else {
        return;
    };
    // Any redirection the client did get names B's leasegate.
    let b_addr = format!("127.0.0.1:{b_port}");
    for m in strings(&summary["moved"]) {
        assert!(m.ends_with(&format!(" {b_addr}")), "MOVED {m}");
    }
}

/// `pause.on_demote: moved`: the held writes are answered `-MOVED` to B's
/// leasegate, and `RedisCluster` follows it there.
#[test]
fn redis_py_cluster_client_follows_moved_after_a_controller_failover() {
    let Some((summary, b_port)) = cluster_client_through_failover("pause:\n  on_demote: moved\n")
    else {
        return;
    };
    let b_addr = format!("127.0.0.1:{b_port}");
    let moved = strings(&summary["moved"]);
    assert!(
        !moved.is_empty(),
        "the client never got a MOVED, yet wrote after the failover"
    );
    for m in &moved {
        assert!(m.ends_with(&format!(" {b_addr}")), "MOVED {m}");
    }
    assert_eq!(
        summary["owner_of_last"].as_str(),
        Some(b_addr.as_str()),
        "the client's map sends the keys to B's leasegate"
    );
}
