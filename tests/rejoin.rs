//! An old master rejoining after an unplanned failover, on the real
//! Kvrocks.
//!
//! Where the old master applied writes that nobody acknowledged (its node
//! frozen with them in its socket, its leasegate stopped before it
//! answered) and the new master took others meanwhile, Kvrocks' default
//! `PSYNC` by sequence number alone (`use-rsid-psync no`) lets the old
//! master rejoin at its own sequence: it skips as many of the new master's
//! writes and reports the same offset, so a later failover to it loses
//! writes the new master acknowledged (found by an operator walkthrough:
//! 20 lost). With `use-rsid-psync yes` the rejoin sees the other history
//! and syncs in full; the replication link passes through the new
//! master's leasegate, which must carry that form of `PSYNC` too.
//! leasegate warns about nodes that replicate by sequence alone.

mod support;

use std::time::{Duration, Instant};

use support::kvrocks::KvrocksServer;
use support::{Proxy, Reply};

const PATIENCE: Duration = Duration::from_secs(20);

/// Waits until `client`'s node answers `key` with `want`; the last answer
/// otherwise.
fn wait_value(client: &mut support::Client, key: &str, want: &str) -> Result<(), Reply> {
    let start = Instant::now();
    loop {
        let got = client.cmd(&["GET", key]);
        if got == Reply::bulk(want) {
            return Ok(());
        }
        if start.elapsed() > PATIENCE {
            return Err(got);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_old_master_that_diverged_rejoins_in_full_through_the_new_masters_leasegate() {
    let rsid = ["--use-rsid-psync", "yes"];
    let (Some(a), Some(b)) = (
        KvrocksServer::start_with(false, &rsid),
        KvrocksServer::start_with(false, &rsid),
    ) else {
        return;
    };
    let b_gate = Proxy::start(&b.addr(), "lease:\n  mode: disabled\n");
    let (mut a_node, mut b_node) = (a.client(), b.client());
    // B replicates A; both have `before`.
    assert_eq!(a_node.cmd(&["SET", "before", "1"]), Reply::ok());
    let port = a.port.to_string();
    assert_eq!(b_node.cmd(&["SLAVEOF", "127.0.0.1", &port]), Reply::ok());
    wait_value(&mut b_node, "before", "1").expect("B replicates A");

    // The unplanned failover: B promoted; A, not yet told, applies a write
    // nobody acknowledged; B acknowledges one of its own.
    assert_eq!(b_node.cmd(&["SLAVEOF", "NO", "ONE"]), Reply::ok());
    assert_eq!(a_node.cmd(&["SET", "diverged", "1"]), Reply::ok());
    assert_eq!(b_node.cmd(&["SET", "acked", "1"]), Reply::ok());

    // A rejoins through B's leasegate, as a demoted node does.
    let gate_port = b_gate.port.to_string();
    assert_eq!(
        a_node.cmd(&["SLAVEOF", "127.0.0.1", &gate_port]),
        Reply::ok()
    );
    if let Err(last) = wait_value(&mut a_node, "acked", "1") {
        panic!("the old master never got the new master's acknowledged write (its own history kept): GET acked = {last:?}");
    }
    assert_eq!(
        a_node.cmd(&["GET", "diverged"]),
        Reply::Nil,
        "the old master's unacknowledged write is gone with its history"
    );
}

#[test]
fn a_node_that_replicates_by_sequence_alone_is_warned_about() {
    let (Some(plain), Some(rsid)) = (
        KvrocksServer::start(false),
        KvrocksServer::start_with(false, &["--use-rsid-psync", "yes"]),
    ) else {
        return;
    };
    // Fifteen probe intervals each.
    let lease = "  mode: block-write\n  probe_interval_ms: 100\n";
    let run_for = Duration::from_millis(1500);
    let log = support::piped_log(&plain.addr(), lease, run_for);
    assert!(
        log.contains("WARN") && log.contains("use-rsid-psync no"),
        "{log}"
    );
    let log = support::piped_log(&rsid.addr(), lease, run_for);
    assert!(
        log.contains("INFO") && !log.contains("use-rsid-psync no"),
        "{log}"
    );
}
