//! A real cluster client through the leasegates under the REAL
//! kvrocks-controller (1.2.0): redis-py's `RedisCluster` in front of a
//! Kvrocks shard in cluster mode with a node password, registered by its
//! leasegates' addresses, as operators deploy it (`docs/kvrocks-controller.md`).
//!
//! The client is seeded with A's leasegate and the node password (it sends
//! `AUTH <password>` on every connection it opens: the password is also
//! each leasegate's `control.password`, so the `AUTH` goes to the node and
//! is replayed when a session is handed over). It writes distinct keys
//! without a pause while `leasegate failover` moves the master to B and
//! back. Whatever `pause.on_demote` says, the client sees no error and every
//! write it was told succeeded is on the final master:
//!
//! * `forward` (the default): the held writes, and the sessions, move to
//!   the new master's leasegate; the client goes on over its connections.
//! * `moved`: the held writes are answered `-MOVED <slot> <new master's
//!   leasegate>`, which `RedisCluster` follows on its own.
//!
//! redis-py is a Python package (Debian: `python3-redis`); without it the
//! test says SKIPPED, unless `CI` is set, where it fails. Without the
//! controller or Kvrocks binary it says SKIPPED too (`support::kvctl`).

mod support;

use std::time::Duration;

use support::cluster_py::{
    assert_all_on_master, check_summary, python_with_redis_cluster, strings, ClientOptions,
    ClientProcess,
};
use support::kvctl::{real_shard, wait_master, RealShardOptions};
use support::kvrocks::handovers;
use support::PATIENCE;

const PASSWORD: &str = "node-secret";

/// Writes acknowledged before the first failover starts.
const READY: usize = 200;
/// Writes acknowledged after the failover back, before the client stops.
const AFTER: usize = 500;

/// The whole run with both leasegates configured by `extra_yaml`: the
/// client writes through A's leasegate, `leasegate failover` A→B and back.
/// Returns the client's summary, the leasegate addresses of A and B and
/// the sessions each handed over, after the common assertions.
fn cluster_client_through_real_failovers(
    extra_yaml: &str,
) -> Option<(serde_json::Value, String, String, [u64; 2])> {
    let shard = real_shard(&RealShardOptions {
        extra_yaml: extra_yaml.to_string(),
        ..RealShardOptions::with_password(PASSWORD)
    })?;
    let python = python_with_redis_cluster()?;
    let a_addr = format!("127.0.0.1:{}", shard.a.proxy.port);
    let b_addr = format!("127.0.0.1:{}", shard.b.proxy.port);

    // The client discovers the shard through A's leasegate and writes.
    let mut client = ClientProcess::start(
        &python,
        &ClientOptions {
            port: shard.a.proxy.port,
            password: Some(PASSWORD),
            ready: READY,
            after: AFTER,
            // Two failovers with the settling between them: generous.
            deadline: PATIENCE * 6,
        },
    );
    client.expect_line("ready", PATIENCE * 3);

    let there = shard.failover_by_leasegate(&shard.a, &shard.b);
    eprintln!("A→B: {there}");
    assert_eq!(shard.controller.master_of(0).0, shard.b_id);
    wait_master(&shard.b, "B after the failover");
    // As tests/real_failover.rs: past the controller's own (late) push.
    std::thread::sleep(Duration::from_millis(1500));

    let back = shard.failover_by_leasegate(&shard.b, &shard.a);
    eprintln!("B→A: {back}");
    assert_eq!(shard.controller.master_of(0).0, shard.a_id);
    wait_master(&shard.a, "A after the failover back");
    client.say_failed_over();
    let summary = client.finish(PATIENCE * 8);
    let acked = check_summary(
        &summary,
        &[a_addr.clone(), b_addr.clone()],
        READY,
        AFTER,
        "the failovers",
        &format!(" (A {a_addr}, B {b_addr})"),
    );

    // A is the master again, and has every acknowledged write.
    let mut direct_a = shard.direct(&shard.a);
    assert_all_on_master(&mut direct_a, &acked, "final master");
    let moved = [&shard.a, &shard.b].map(|n| handovers(&n.proxy, "success"));
    let failed = [&shard.a, &shard.b].map(|n| handovers(&n.proxy, "failed"));
    eprintln!("sessions handed over by A's and B's leasegates: {moved:?}, failed {failed:?}");
    assert_eq!(failed, [0, 0], "failed hand-overs");
    Some((summary, a_addr, b_addr, moved))
}

/// `pause.on_demote: forward` (the default): the client's sessions move to
/// the new master's leasegate under it, and back; no error, nothing lost.
#[test]
fn redis_py_cluster_client_rides_real_controller_failovers_with_forward() {
    let Some((summary, a_addr, b_addr, handed_over)) = cluster_client_through_real_failovers("")
    else {
        return;
    };
    assert!(
        handed_over.iter().sum::<u64>() > 0,
        "no session was handed over"
    );
    // Any redirection the client did get names one of the leasegates.
    for m in strings(&summary["moved"]) {
        assert!(
            m.ends_with(&format!(" {a_addr}")) || m.ends_with(&format!(" {b_addr}")),
            "MOVED {m}"
        );
    }
}

/// `pause.on_demote: moved`: the held writes are answered `-MOVED` to the
/// new master's leasegate, and `RedisCluster` follows it there and back.
#[test]
fn redis_py_cluster_client_follows_moved_through_real_controller_failovers() {
    let Some((summary, a_addr, b_addr, _)) =
        cluster_client_through_real_failovers("pause:\n  on_demote: moved\n")
    else {
        return;
    };
    let moved = strings(&summary["moved"]);
    let to = |addr: &str| {
        moved
            .iter()
            .filter(|m| m.ends_with(&format!(" {addr}")))
            .count()
    };
    eprintln!(
        "MOVED to B's leasegate: {}, to A's: {}",
        to(&b_addr),
        to(&a_addr)
    );
    assert!(
        !moved.is_empty(),
        "the client never got a MOVED, yet wrote after the failovers"
    );
    for m in &moved {
        assert!(
            m.ends_with(&format!(" {a_addr}")) || m.ends_with(&format!(" {b_addr}")),
            "MOVED {m}"
        );
    }
    assert_eq!(
        summary["owner_of_last"].as_str(),
        Some(a_addr.as_str()),
        "the client's map sends the keys back to A's leasegate"
    );
}
