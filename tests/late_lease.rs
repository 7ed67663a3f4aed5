//! A cluster-mode `leasegate failover` whose new master's lease comes
//! after `pause_timeout_ms`: the controller has switched the shard and the
//! target's node is master, but its leasegate holds no lease yet (the
//! failover's grant refused, its own poll not there). Seen under the
//! heaviest load (walkthrough 24), the failover then reported a failure
//! (exit 1) although the switch happened. Now the held writes go to the
//! target when the pause ends, the lease is waited for up to
//! `controller.switch_timeout_ms` more, and the report says how late it
//! came (`lease_late_ms`).

mod support;

use std::time::{Duration, Instant};

use support::controller::TestController;
use support::kvrocks::{a_master_of_b, Node, A_ID, B_ID};
use support::{free_port, info_fields, post_failover, Reply, PATIENCE};

const TOKEN: &str = "tk";

/// A fails over to B; B's leasegate polls a controller of its own, which
/// names B master only 2 s after the switch.
#[test]
fn a_new_masters_lease_after_the_pause_is_waited_for_and_reported() {
    let (ctl_a, ctl_b) = (TestController::start(), TestController::start());
    let yaml = |c: &TestController| {
        format!(
            "admin:\n  listen: 127.0.0.1:{}\n  token: {TOKEN}\n{}  switch_timeout_ms: 6000\n",
            free_port(),
            c.yaml(100, 10_000)
        )
    };
    let (Some(a), Some(b)) = (
        Node::start_with(A_ID, "block-write", &yaml(&ctl_a)),
        Node::start_with(B_ID, "block-write", &yaml(&ctl_b)),
    ) else {
        return;
    };
    let (a_addr, b_addr) = a_master_of_b(&ctl_a, &a, &b);
    ctl_b.set_topology(
        1,
        vec![vec![(A_ID, &a_addr, "master"), (B_ID, &b_addr, "slave")]],
    );
    // B's leasegate has seen a later election: it refuses the failover's
    // grant at A's fencing epoch, so only its own poll grants its lease.
    let mut ctl = b.proxy.client();
    assert!(!ctl
        .cmd(&["CLUSTERX", "HEARTBEAT", A_ID, "600000", "100"])
        .is_error());
    assert_eq!(
        info_fields(&ctl.cmd(&["INFO", "leasegate"]))
            .get("lease_epoch")
            .map(String::as_str),
        Some("100")
    );
    let mut app = a.proxy.client();
    let keys = 50;
    for i in 0..keys {
        assert_eq!(app.cmd(&["SET", &format!("k{i}"), "v"]), Reply::ok());
    }
    // B's controller names it master 2 s after A's switched.
    let late = std::thread::spawn({
        let (a_addr, b_addr) = (a_addr.clone(), b_addr.clone());
        move || {
            let start = Instant::now();
            while ctl_a.failovers() == 0 {
                assert!(start.elapsed() < PATIENCE, "the failover never switched");
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(2000));
            ctl_b.set_topology(
                2,
                vec![vec![(B_ID, &b_addr, "master"), (A_ID, &a_addr, "slave")]],
            );
            (ctl_a, ctl_b)
        }
    });
    let (status, report) = post_failover(
        &a.proxy,
        &b.proxy,
        TOKEN,
        r#""sync_timeout_ms":500,"pause_timeout_ms":1000"#,
    );
    let _controllers = late.join().expect("B's controller switched");
    eprintln!("the failover's report: {report}");
    assert_eq!(status, 200, "{report}");
    let json: serde_json::Value = serde_json::from_str(&report).expect("a JSON report");
    assert_eq!(json["result"], "success", "{report}");
    assert_eq!(json["both_fenced"], false, "{report}");
    let late_ms = json["lease_late_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("lease_late_ms reported: {report}"));
    assert!(
        late_ms > 0.0 && late_ms < 6000.0,
        "the lease came after the pause, within switch_timeout_ms: {report}"
    );
    // The switch stands: writes through A's leasegate go to B, and every
    // write A acknowledged is there.
    assert_eq!(app.cmd(&["SET", "after", "v"]), Reply::ok());
    let mut direct_b = b.kvrocks.client();
    assert_eq!(direct_b.cmd(&["GET", "after"]), Reply::bulk("v"));
    let missing: Vec<usize> = (0..keys)
        .filter(|i| direct_b.cmd(&["GET", &format!("k{i}")]) != Reply::bulk("v"))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged writes missing at B: {missing:?}"
    );
}
