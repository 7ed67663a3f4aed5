//! Redis's `FAILOVER` command answered by leasegate, on redis-server and on
//! the real Kvrocks (which has no `FAILOVER`): master A and replica B, each
//! behind a leasegate sharing a control password. A writer keeps writing
//! through A's leasegate while an admin sends `FAILOVER TO <B's leasegate>`
//! there: no client sees an error, and every acknowledged write is on B.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::node::{Kind, Node};
use support::sentinel::eventually;
use support::{Client, Proxy, Reply};

const CONTROL: &str = "ctl-secret";

struct Pair {
    _a_node: Node,
    b_node: Node,
    a: Proxy,
    b: Proxy,
}

fn pair(kind: Kind) -> Option<Pair> {
    let yaml = format!("control:\n  password: {CONTROL}\nlease:\n  probe_interval_ms: 100\n");
    let a_node = Node::start(kind)?;
    let a = Proxy::start(&a_node.addr(), &yaml);
    let b_node = Node::start(kind)?;
    let b = Proxy::start(&b_node.addr(), &yaml);
    // B announces its leasegate and replicates through A's.
    let b_port = b.port.to_string();
    b_node
        .client()
        .cmd(&["CONFIG", "SET", "replica-announce-port", &b_port]);
    assert_eq!(
        b_node
            .client()
            .cmd(&["REPLICAOF", "127.0.0.1", &a.port.to_string()]),
        Reply::ok()
    );
    eventually("B links to A's leasegate", Duration::from_secs(10), || {
        b_node
            .client()
            .cmd(&["INFO", "replication"])
            .text()
            .contains("master_link_status:up")
    });
    Some(Pair {
        _a_node: a_node,
        b_node,
        a,
        b,
    })
}

fn admin(p: &Proxy) -> Client {
    let mut c = p.client();
    assert_eq!(c.cmd(&["AUTH", CONTROL]), Reply::ok());
    c
}

fn failover_state(p: &Proxy) -> String {
    let info = p.client().cmd(&["INFO", "leasegate"]).text();
    info.lines()
        .find_map(|l| l.strip_prefix("master_failover_state:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn failover_under_writes(kind: Kind) {
    let Some(p) = pair(kind) else {
        return;
    };
    // Only a control connection may ask; with nothing under way, ABORT errs.
    let refused = p.a.client().cmd(&["FAILOVER"]);
    assert!(refused.error_text().starts_with("NOPERM"), "{refused:?}");
    let mut ctl = admin(&p.a);
    assert_eq!(
        ctl.cmd(&["FAILOVER", "ABORT"]),
        Reply::Error("ERR No failover in progress.".into())
    );
    assert_eq!(failover_state(&p.a), "no-failover");

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, port) = (Arc::clone(&stop), p.a.port);
        std::thread::spawn(move || {
            let mut c = Client::connect(port);
            let (mut acked, mut errors) = (Vec::new(), Vec::new());
            let mut longest = Duration::ZERO;
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("w:{i}");
                let sent = std::time::Instant::now();
                let reply = c.cmd(&["SET", &key, "v"]);
                longest = longest.max(sent.elapsed());
                match reply {
                    r if r == Reply::ok() => acked.push(key),
                    r => errors.push(format!("{key}: {r:?}")),
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            (acked, errors, longest)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let to = p.b.port.to_string();
    assert_eq!(
        ctl.cmd(&["FAILOVER", "TO", "127.0.0.1", &to, "TIMEOUT", "3000"]),
        Reply::ok()
    );
    assert_eq!(
        ctl.cmd(&["FAILOVER"]),
        Reply::Error("ERR FAILOVER already in progress.".into()),
        "one at a time"
    );
    eventually("B is master", Duration::from_secs(10), || {
        p.b_node
            .client()
            .cmd(&["INFO", "replication"])
            .text()
            .contains("role:master")
    });
    eventually("the failover is over", Duration::from_secs(10), || {
        failover_state(&p.a) == "no-failover"
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let (acked, errors, longest) = writer.join().expect("writer");
    let mut b = p.b_node.client();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|k| b.cmd(&["EXISTS", k]) != Reply::Int(1))
        .collect();
    eprintln!(
        "{} writes acknowledged, {} errors, {} lost, longest write {longest:?}",
        acked.len(),
        errors.len(),
        lost.len()
    );
    assert!(acked.len() > 100, "the writer made progress");
    assert!(errors.is_empty(), "clients saw errors: {errors:?}");
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    // Writes through either leasegate now land on B.
    assert_eq!(p.b.client().cmd(&["SET", "after", "b"]), Reply::ok());
    assert_eq!(p.a.client().cmd(&["SET", "after-a", "a"]), Reply::ok());
    assert_eq!(b.cmd(&["GET", "after-a"]), Reply::bulk("a"));
}

#[test]
fn failover_to_a_redis_replica_under_writes_loses_nothing() {
    failover_under_writes(Kind::Redis);
}

#[test]
fn failover_to_a_kvrocks_replica_under_writes_loses_nothing() {
    failover_under_writes(Kind::Kvrocks);
}
