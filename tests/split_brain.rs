//! Split brain: a master cut off from its controller while the controller
//! promotes its replica. With the lease, the old master's proxy acknowledges
//! no write after the promotion; without it (`lease.mode: disabled`) it does,
//! which is the data loss leasegate exists to prevent (and proof that this
//! test can fail).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::load::Writers;
use support::{Proxy, RedisServer, Reply};

const OLD: &str = "1111111111111111111111111111111111111111";
const NEW: &str = "2222222222222222222222222222222222222222";
const TTL_MS: u64 = 500;
const MARGIN_MS: u64 = 100;

struct Outcome {
    /// Writes the old master's proxy acknowledged after the promotion instant.
    old_acked_after_promotion: usize,
    old_acked_before_partition: usize,
    new_acked_after_promotion: usize,
}

fn proxy(node: &RedisServer, id: &str, mode: &str) -> Proxy {
    Proxy::start(
        &node.addr(),
        &format!(
            "node_id: {id}\ncontrol:\n  allow_from: [127.0.0.1]\nlease:\n  mode: {mode}\n  safety_margin_ms: {MARGIN_MS}\n  probe_interval_ms: 50\n"
        ),
    )
}

fn scenario(mode: &str) -> Outcome {
    let old_node = RedisServer::start();
    let new_node =
        RedisServer::start_with(&["--replicaof", "127.0.0.1", &old_node.port.to_string()]);
    let old_proxy = proxy(&old_node, OLD, mode);
    let new_proxy = proxy(&new_node, NEW, mode);

    // The controller heartbeats the old master until the partition.
    let partitioned = Arc::new(AtomicBool::new(false));
    let beats = {
        let partitioned = Arc::clone(&partitioned);
        let mut ctl_old = old_proxy.client();
        let mut ctl_new = new_proxy.client();
        std::thread::spawn(move || {
            while !partitioned.load(Ordering::Relaxed) {
                let ttl = TTL_MS.to_string();
                assert!(!ctl_old
                    .cmd(&["CLUSTERX", "HEARTBEAT", OLD, &ttl, "1"])
                    .is_error());
                assert!(!ctl_new
                    .cmd(&["CLUSTERX", "HEARTBEAT", OLD, &ttl, "1"])
                    .is_error());
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let old_writer = Writers::start(old_proxy.port, 1, "old", Duration::from_millis(2));
    let new_writer = Writers::start(new_proxy.port, 1, "new", Duration::from_millis(2));
    std::thread::sleep(Duration::from_millis(400));
    // Partition: the controller no longer reaches the old master.
    partitioned.store(true, Ordering::Relaxed);
    beats.join().expect("heartbeats");
    let partition = Instant::now();
    // Failure detection: the controller waits out the lease, then promotes.
    std::thread::sleep(Duration::from_millis(TTL_MS + MARGIN_MS + 50));
    let promotion = Instant::now();
    let mut direct_new = new_node.client();
    assert_eq!(direct_new.cmd(&["REPLICAOF", "NO", "ONE"]), Reply::ok());
    let mut ctl_new = new_proxy.client();
    assert!(!ctl_new
        .cmd(&["CLUSTERX", "HEARTBEAT", NEW, "10000", "2"])
        .is_error());
    std::thread::sleep(Duration::from_millis(600));
    let old_acks = old_writer.finish().acked;
    let new_acks = new_writer.finish().acked;
    Outcome {
        old_acked_after_promotion: old_acks.iter().filter(|(t, _)| *t >= promotion).count(),
        old_acked_before_partition: old_acks.iter().filter(|(t, _)| *t < partition).count(),
        new_acked_after_promotion: new_acks.iter().filter(|(t, _)| *t >= promotion).count(),
    }
}

#[test]
fn with_the_lease_the_old_master_acknowledges_nothing_after_promotion() {
    let o = scenario("block-write");
    assert!(
        o.old_acked_before_partition > 0,
        "writes flowed before the partition"
    );
    assert!(
        o.new_acked_after_promotion > 0,
        "the new master took writes"
    );
    assert_eq!(
        o.old_acked_after_promotion, 0,
        "the old master acknowledged writes after the promotion: split brain"
    );
}

#[test]
fn without_the_lease_the_old_master_keeps_acknowledging() {
    let o = scenario("disabled");
    assert!(
        o.new_acked_after_promotion > 0,
        "the new master took writes"
    );
    assert!(
        o.old_acked_after_promotion > 0,
        "expected the unfenced old master to acknowledge writes after the promotion"
    );
}
