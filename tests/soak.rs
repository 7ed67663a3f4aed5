//! Soak: continuous writes through a pair of leasegates (redis-server
//! master and replica) with a graceful failover every interval, the
//! history checker over the whole run, and leasegate's memory and file
//! descriptors watched.
//!
//! Short form in `cargo test` (30 s, a failover every 10 s). The long form:
//! `LEASEGATE_SOAK_SECS=600 LEASEGATE_SOAK_FAILOVER_SECS=30 cargo test
//! --release --test soak -- --nocapture` (ten minutes, a failover every 30 s).

mod support;

use std::time::{Duration, Instant};

use support::history::{read_back, Clients, History};
use support::{post_failover, Proxy, RedisServer, Reply, PATIENCE};

const A_ID: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B_ID: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const TOKEN: &str = "soak";

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

fn leasegate(node: &str, id: &str) -> Proxy {
    Proxy::for_failover(node, id, TOKEN)
}

/// Resident set size of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .expect("VmRSS")
}

fn link_up(replica: &RedisServer) {
    let mut c = replica.client();
    let start = Instant::now();
    while !c
        .cmd(&["INFO", "replication"])
        .text()
        .contains("master_link_status:up")
    {
        assert!(start.elapsed() < PATIENCE, "replication link never came up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn soak_with_failovers_keeps_the_promise_and_its_footprint() {
    let length = env_secs("LEASEGATE_SOAK_SECS", 30);
    let every = env_secs("LEASEGATE_SOAK_FAILOVER_SECS", 10);
    let nodes = [
        RedisServer::start(),
        RedisServer::start_with(&["--repl-diskless-sync-delay", "0"]),
    ];
    let proxies = [
        leasegate(&nodes[0].addr(), A_ID),
        leasegate(&nodes[1].addr(), B_ID),
    ];
    let port = nodes[0].port.to_string();
    assert_eq!(
        nodes[1].client().cmd(&["REPLICAOF", "127.0.0.1", &port]),
        Reply::ok()
    );
    link_up(&nodes[1]);
    for p in &proxies {
        let reply = p
            .client()
            .cmd(&["CLUSTERX", "HEARTBEAT", A_ID, "600000", "1"]);
        assert!(!reply.is_error(), "{reply:?}");
    }
    let history = History::new();
    // The clients stay on A's leasegate; failovers hand their sessions over.
    let clients = Clients::start(
        &history,
        "A",
        format!("127.0.0.1:{}", proxies[0].port),
        None,
        4,
    );
    std::thread::sleep(Duration::from_secs(2));
    // The footprint is compared from the end of the first failover on:
    // by then both proxies have run every path once (sessions moved, the
    // other side's connections opened), so growth after it is growth.
    let footprint = || -> Vec<(u64, usize)> {
        proxies
            .iter()
            .map(|p| (rss_kib(p.pid()), p.fd_count()))
            .collect()
    };
    let mut baseline = footprint();
    let start = Instant::now();
    let mut master = 0;
    let mut failovers = 0;
    let mut stalls = Vec::new();
    while start.elapsed() < length {
        std::thread::sleep(every.min(length.saturating_sub(start.elapsed())));
        if start.elapsed() >= length {
            break;
        }
        let (from, to) = (&proxies[master], &proxies[1 - master]);
        // No controller renews leases here: the failover grants the new
        // master a lease longer than the run.
        let (status, report) = post_failover(
            from,
            to,
            TOKEN,
            r#""sync_timeout_ms":2000,"pause_timeout_ms":4000,"lease_ttl_ms":600000"#,
        );
        assert_eq!(status, 200, "failover {failovers}: {report}");
        let json: serde_json::Value = serde_json::from_str(&report).expect("report");
        stalls.push(json["stall_ms"].as_f64().unwrap_or(f64::NAN));
        master = 1 - master;
        failovers += 1;
        link_up(&nodes[1 - master]);
        if failovers == 1 {
            std::thread::sleep(Duration::from_secs(1));
            baseline = footprint();
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let keys = clients.finish();
    let end = footprint();
    let verdict = history.check(&read_back(&nodes[master].addr(), keys));
    eprintln!(
        "soak: {:?}, {failovers} failovers (stall ms {stalls:.1?}); RSS KiB and fds at start {baseline:?}, at end {end:?}\n{}",
        start.elapsed(),
        verdict.report
    );
    assert!(failovers >= 2, "{failovers} failovers");
    assert!(verdict.ok > 1000, "{}", verdict.report);
    let failed: Vec<String> = history
        .ops()
        .iter()
        .filter(|o| o.outcome != support::history::Outcome::Ok)
        .take(5)
        .map(|o| format!("{} {:?}", o.key, o.outcome))
        .collect();
    assert_eq!(
        verdict.errors + verdict.unknown,
        0,
        "client errors, e.g. {failed:?}\n{}",
        verdict.report
    );
    verdict.assert_clean();
    for ((rss0, fd0), (rss1, fd1)) in baseline.iter().zip(&end) {
        // 5 % of the baseline, and at least 2 MiB for allocator noise on a
        // short run.
        let allowed = (rss0 / 20).max(2048);
        assert!(
            rss1 <= &(rss0 + allowed),
            "RSS grew from {rss0} to {rss1} KiB"
        );
        assert!(fd1 <= &(fd0 + 2), "fds grew from {fd0} to {fd1}");
    }
}
