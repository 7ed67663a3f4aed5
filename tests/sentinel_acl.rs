//! Redis with ACL users, as hardened Redis 6+ deployments run it: the
//! `default` user off on every node and Sentinel, so `AUTH <password>`
//! alone is refused everywhere. Each party logs in as its own user: the
//! application (`app`), the replicas (`masteruser`), the Sentinels at the
//! nodes (`sentinel auth-user`) and at each other (`sentinel-user`), and
//! leasegate at its node (`backend.user`, with only the commands
//! docs/sentinel.md lists) and at the Sentinels (`sentinel.user`).

mod support;

use std::time::Duration;

use support::load::Writers;
use support::sentinel::{eventually, Monitor, Sentinel};
use support::{free_port, metric, Client, Proxy, RedisServer, Reply};

const NAME: &str = "m";
const APP: [&str; 3] = ["AUTH", "app", "app-secret"];

/// A node's ACL: `default` off; leasegate's user with the commands its own
/// connections send (docs/sentinel.md, "ACL users"), and no keys; the
/// application's; the replicas'; the Sentinels' (Redis's documented set).
fn node_args() -> Vec<&'static str> {
    let mut args = vec!["--user", "default", "off"];
    args.extend([
        "--user",
        "lg",
        "on",
        ">lg-secret",
        "+ping",
        "+info",
        "+role",
        "+command",
        "+config|get",
        "+config|set",
        "+client|kill",
        "+replicaof",
        "+slaveof",
    ]);
    args.extend(["--user", "app", "on", ">app-secret", "~*", "&*", "+@all"]);
    args.extend([
        "--user",
        "repl",
        "on",
        ">repl-secret",
        "+psync",
        "+replconf",
        "+ping",
    ]);
    args.extend([
        "--user",
        "sentinel",
        "on",
        ">sentinel-secret",
        "allchannels",
        "+multi",
        "+slaveof",
        "+ping",
        "+exec",
        "+subscribe",
        "+config|rewrite",
        "+role",
        "+publish",
        "+info",
        "+client|setname",
        "+client|kill",
        "+script|kill",
    ]);
    args.extend(["--masteruser", "repl", "--masterauth", "repl-secret"]);
    args
}

/// A client of `port` logged in as the application.
fn app(port: u16) -> Client {
    let mut c = Client::connect(port);
    assert_eq!(c.cmd(&APP), Reply::ok(), "AUTH app");
    c
}

/// The leasegate config beside `node`.
fn leasegate(port: Option<u16>, node: &RedisServer, sentinels: &[String]) -> Proxy {
    let backend = format!(
        "backend:\n  addr: 127.0.0.1:{}\n  user: lg\n  password: lg-secret\n",
        node.port
    );
    let yaml = format!(
        "lease:\n  mode: block-write\n  probe_interval_ms: 100\n  safety_margin_ms: 100\n\
         admin:\n  listen: 127.0.0.1:{}\n\
         control:\n  password: ctl-secret\n\
         sentinel:\n  addrs: [{}]\n  master_name: {NAME}\n  user: watch\n  password: watch-secret\n  \
         poll_interval_ms: 100\n  timeout_ms: 300\n",
        free_port(),
        sentinels.join(", ")
    );
    match port {
        Some(port) => Proxy::start_at_with_backend_yaml(port, &backend, &yaml),
        None => Proxy::start_with_backend_yaml(&backend, &yaml),
    }
}

/// Every Sentinel names `addr` master.
fn all_name(sentinels: &[Sentinel], addr: &str) -> bool {
    sentinels
        .iter()
        .all(|s| s.master_addr(NAME).as_deref() == Some(addr))
}

/// `SENTINEL FAILOVER` until every Sentinel names `addr` (a Sentinel
/// answers `NOGOODSLAVE` until it finds the replica suitable; a refused
/// promotion is asked again after the Sentinels gave up).
fn fail_over_to(sentinels: &[Sentinel], addr: &str) {
    let asked = std::time::Instant::now();
    while !all_name(sentinels, addr) {
        assert!(
            asked.elapsed() < Duration::from_secs(60),
            "the Sentinels name {addr}: not within 60 s"
        );
        let reply = sentinels[0].client().cmd(&["SENTINEL", "FAILOVER", NAME]);
        eprintln!("SENTINEL FAILOVER toward {addr}: {reply:?}");
        let until = std::time::Instant::now() + Duration::from_secs(8);
        while std::time::Instant::now() < until && !all_name(sentinels, addr) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The deployment: A (master) and B, each behind its leasegate, and three
/// Sentinels monitoring A's leasegate, every party logged in as its user.
struct Deployment {
    a_node: RedisServer,
    b_node: RedisServer,
    a: Proxy,
    b: Proxy,
    sentinels: Vec<Sentinel>,
    a_addr: String,
    b_addr: String,
}

/// Starts it in the order an operator would and waits until A takes
/// writes under the Sentinels' lease and they list B by its leasegate.
fn deploy() -> Deployment {
    let a_port = free_port();
    let a_addr = format!("127.0.0.1:{a_port}");
    let mut monitor = Monitor::new(NAME, &a_addr, 2);
    monitor.auth_user = Some("sentinel".into());
    monitor.auth_pass = Some("sentinel-secret".into());
    monitor.login = Some(("peer".into(), "peer-secret".into()));
    // leasegate's user at the Sentinels: what docs/sentinel.md lists.
    monitor.extra = "user watch on >watch-secret +sentinel|master\n".into();
    let sentinels: Vec<Sentinel> = (0..3).map(|_| Sentinel::start(&monitor)).collect();
    let sentinel_addrs: Vec<String> = sentinels.iter().map(Sentinel::addr).collect();
    let a_node = RedisServer::start_with(&node_args());
    let a = leasegate(Some(a_port), &a_node, &sentinel_addrs);
    let b_node = RedisServer::start_with(&node_args());
    let b = leasegate(None, &b_node, &sentinel_addrs);
    let b_addr = format!("127.0.0.1:{}", b.port);

    // B's leasegate reaches its node as `lg`: the node announces it.
    eventually(
        "B's node announces B's leasegate",
        Duration::from_secs(5),
        || {
            app(b_node.port).cmd(&["CONFIG", "GET", "replica-announce-port"])
                == Reply::Array(vec![
                    Reply::bulk("replica-announce-port"),
                    Reply::bulk(&b.port.to_string()),
                ])
        },
    );
    assert_eq!(
        app(b_node.port).cmd(&["REPLICAOF", "127.0.0.1", &a_port.to_string()]),
        Reply::ok()
    );
    eventually("B is in sync", Duration::from_secs(10), || {
        app(b_node.port)
            .cmd(&["INFO", "replication"])
            .text()
            .contains("master_link_status:up")
    });
    eventually(
        "the Sentinels know each other and list B by its leasegate",
        Duration::from_secs(20),
        || {
            sentinels.iter().all(|s| {
                s.other_sentinels(NAME) == 2 && s.replicas(NAME).iter().any(|(n, _)| *n == b_addr)
            })
        },
    );
    // The lease comes from the Sentinels, asked as `watch`.
    eventually("A takes writes", Duration::from_secs(10), || {
        app(a.port).cmd(&["SET", "k", "1"]) == Reply::ok()
    });
    Deployment {
        a_node,
        b_node,
        a,
        b,
        sentinels,
        a_addr,
        b_addr,
    }
}

/// A planned `SENTINEL FAILOVER` to B and back under writers logged in as
/// the application on A's leasegate: their sessions move to B's leasegate
/// and back, logged in there as the same user, with no client error and no
/// acknowledged write lost. leasegate's own connections reach both nodes
/// as `lg` (its probe never fails) and the Sentinels as `watch` (the lease
/// comes from them).
#[test]
fn planned_sentinel_failovers_with_acl_users_lose_nothing() {
    let d = deploy();
    for (name, proxy) in [("A", &d.a), ("B", &d.b)] {
        assert_eq!(
            metric(proxy.admin_port(), "leasegate_node_probe_failures"),
            0,
            "{name}'s leasegate probes its node as lg"
        );
    }

    let writers = Writers::start_logged_in(d.a.port, 2, "w", Duration::from_millis(2), &APP);
    std::thread::sleep(Duration::from_millis(300));
    fail_over_to(&d.sentinels, &d.b_addr);
    eventually("B takes writes", Duration::from_secs(5), || {
        app(d.b.port).cmd(&["SET", "probe", "1"]) == Reply::ok()
    });
    eventually("A's node follows B", Duration::from_secs(15), || {
        app(d.a_node.port)
            .cmd(&["INFO", "replication"])
            .text()
            .contains("master_link_status:up")
    });
    std::thread::sleep(Duration::from_millis(500));
    fail_over_to(&d.sentinels, &d.a_addr);
    eventually("A takes writes again", Duration::from_secs(10), || {
        app(d.a.port).cmd(&["SET", "probe", "2"]) == Reply::ok()
    });
    std::thread::sleep(Duration::from_millis(500));
    let outcome = writers.finish();
    outcome.log_summary();
    outcome.assert_none_failed_or_lost(&mut app(d.a_node.port), 100);
}

/// The node refuses leasegate's own `INFO` (its user lost `+info`, as a
/// mistaken ACL change does; a rotated password the same): the node is
/// up, so there is no crash to wait through. Writes are fenced once the
/// lease lapses, with the lease's error (the log names the refusal);
/// they do not wait without end (before: held for as long as the refusal
/// lasted, the log saying the node did not answer). Restored, A takes
/// writes again.
#[test]
fn a_node_refusing_leasegates_own_info_fences_writes_rather_than_holding_them() {
    let d = deploy();
    let mut admin = app(d.a_node.port);
    assert_eq!(admin.cmd(&["ACL", "SETUSER", "lg", "-info"]), Reply::ok());
    // Each write is answered within the client's patience (10 s).
    let mut c = app(d.a.port);
    eventually("A fences writes", Duration::from_secs(10), || {
        match c.cmd(&["SET", "k", "2"]) {
            Reply::Error(e) => e.contains("master lease"),
            _ => false,
        }
    });
    assert_eq!(admin.cmd(&["ACL", "SETUSER", "lg", "+info"]), Reply::ok());
    eventually("A takes writes again", Duration::from_secs(10), || {
        c.cmd(&["SET", "k", "3"]) == Reply::ok()
    });
    drop(d.b_node);
}
