//! A failover's promotion timing (`docs/failover-timing.md`) against the
//! real servers: a Kvrocks replica's tick is learned from its replication
//! link (re-attached to the master's leasegate where it bypassed it), the
//! pause is timed for it and the report says what the promotion took; a
//! node that promotes at once (Redis) is not waited for; the request can
//! turn it off. Every failover keeps the guarantee (no client error, no lost
//! write). How short the stall gets is measured by `bench/failover.sh`;
//! the bounds here are generous.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::kvrocks::{info_field, link_up, KvrocksServer, A_ID, B_ID};
use support::load::Writers;
use support::{heartbeat, http, post_failover, Client, Proxy, RedisServer, Reply};

const TOKEN: &str = "tk";

/// Fails over with bounds no loaded machine reaches; the parsed report.
fn failover(from: &Proxy, to: &Proxy, extra: &str) -> Value {
    let options = format!(r#""sync_timeout_ms":3000,"pause_timeout_ms":5000{extra}"#);
    let (status, report) = post_failover(from, to, TOKEN, &options);
    assert_eq!(status, 200, "{report}");
    serde_json::from_str(&report).expect("a JSON report")
}

/// A master and its replica (started with `SLAVEOF` the master's node,
/// bypassing its leasegate, as an operator starts it), a leasegate beside
/// each, the master holding the lease.
fn pair(master: (&str, u16), replica: &str, mut replica_client: Client) -> (Proxy, Proxy) {
    let (pa, pb) = (
        Proxy::for_failover(master.0, A_ID, TOKEN),
        Proxy::for_failover(replica, B_ID, TOKEN),
    );
    let port = master.1.to_string();
    assert_eq!(
        replica_client.cmd(&["SLAVEOF", "127.0.0.1", &port]),
        Reply::ok()
    );
    link_up(&mut replica_client);
    for p in [&pa, &pb] {
        assert!(!heartbeat(&mut p.client(), A_ID, 600_000, 1).is_error());
    }
    (pa, pb)
}

/// [`pair`] on two standalone Kvrocks.
fn kvrocks_pair() -> Option<((KvrocksServer, Proxy), (KvrocksServer, Proxy))> {
    let (ka, kb) = (KvrocksServer::start(false)?, KvrocksServer::start(false)?);
    let (pa, pb) = pair((&ka.addr(), ka.port), &kb.addr(), kb.client());
    Some(((ka, pa), (kb, pb)))
}

fn outcome(report: &Value) -> &str {
    report["timing"]["outcome"].as_str().unwrap_or("none")
}

/// Standalone Kvrocks, B started with `SLAVEOF` A's node (bypassing A's
/// leasegate, as an operator starts it): the first failover re-attaches B
/// to A's leasegate for a known phase; the way back uses the link the
/// rejoin made through B's leasegate. Four failovers under writers: all
/// timed (never `unused`), every one reports its promotion's time, most
/// promotions meet their tick, and nothing is lost or refused.
#[test]
fn kvrocks_failovers_are_timed_by_the_replicas_link() {
    let Some(((ka, pa), (kb, pb))) = kvrocks_pair() else {
        return;
    };
    let writers = Writers::start(pa.port, 4, "w", Duration::ZERO);
    std::thread::sleep(Duration::from_millis(300));

    let mut reports = Vec::new();
    let (mut from, mut to, mut replica) = (&pa, &pb, &ka);
    for _ in 0..4 {
        let report = failover(from, to, "");
        assert_eq!(report["result"], "success", "{report}");
        reports.push(report);
        link_up(&mut replica.client());
        std::mem::swap(&mut from, &mut to);
        replica = if std::ptr::eq(replica, &ka) { &kb } else { &ka };
        std::thread::sleep(Duration::from_millis(200));
    }
    let first_note = reports[0]["timing"]["note"].as_str().unwrap_or("");
    assert!(
        first_note.contains("re-attached"),
        "B followed A's node: re-attached first ({first_note})"
    );
    for report in &reports[1..] {
        let note = report["timing"]["note"].as_str().unwrap_or("");
        assert!(
            note.contains("psync link") && !note.contains("re-attached"),
            "the rejoin went through the new master's leasegate: {report}"
        );
    }
    for report in &reports {
        assert_ne!(outcome(report), "unused", "{report}");
        assert!(report["promotion_ms"].as_f64().is_some(), "{report}");
    }
    let held = reports.iter().filter(|r| outcome(r) == "held").count();
    assert!(held >= 2, "most promotions meet their tick: {reports:#?}");
    // The metrics count them.
    let (_, metrics) = http(pa.admin_port(), "GET", "/metrics", None, None);
    assert!(
        metrics.contains("leasegate_failover_promotion_timing_total{outcome=\"held\"}"),
        "{metrics}"
    );
    // A is master again (four failovers): every acknowledged write is there.
    let mut direct = ka.client();
    writers
        .finish()
        .assert_none_failed_or_lost(&mut direct, 100);
    assert_eq!(info_field(&mut direct, "role").as_deref(), Some("master"));
}

/// Redis promotes at once: the failover does not wait for any tick, and
/// says why; `promotion_timing: false` turns the timing off on Kvrocks.
#[test]
fn the_timing_is_used_only_where_it_applies() {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    let (pa, pb) = pair((&a.addr(), a.port), &b.addr(), b.client());
    let report = failover(&pa, &pb, "");
    assert_eq!(report["result"], "success", "{report}");
    assert_eq!(outcome(&report), "unused", "{report}");
    let note = report["timing"]["note"].as_str().unwrap_or("");
    assert!(note.contains("not Kvrocks"), "{note}");
    assert!(
        report["timing"]["wait_ms"]
            .as_f64()
            .is_some_and(|w| w < 1000.0),
        "no wait for a tick: {report}"
    );

    let Some(((_ka, qa), (_kb, qb))) = kvrocks_pair() else {
        return;
    };
    let report = failover(&qa, &qb, r#","promotion_timing":false"#);
    assert_eq!(report["result"], "success", "{report}");
    assert_eq!(outcome(&report), "unused", "{report}");
    let note = report["timing"]["note"].as_str().unwrap_or("");
    assert!(note.contains("turned off"), "{note}");
}
