//! The master lease over RESP: heartbeats, fencing, control authentication,
//! role transitions, transactions and delayed heartbeats.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use support::kvrocks::KvrocksServer;
use support::{heartbeat, info_fields, Client, Proxy, RedisServer, Reply, PATIENCE};

const ME: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const OTHER: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const FENCED: &str = "READONLY master lease expired, writes are fenced on this node";

/// A block-write proxy whose controller authenticates with `ctl-pw`.
fn fenced_proxy(redis: &RedisServer, extra: &str) -> Proxy {
    fenced_proxy_at(&redis.addr(), extra)
}

/// [`fenced_proxy`] in front of any node address.
fn fenced_proxy_at(addr: &str, extra: &str) -> Proxy {
    Proxy::start(
        addr,
        &format!(
            "node_id: {ME}\ncontrol:\n  password: ctl-pw\nlease:\n  mode: block-write\n  safety_margin_ms: 0\n  clock_drift: 0\n  probe_interval_ms: 100\n{extra}"
        ),
    )
}

fn controller(proxy: &Proxy) -> Client {
    support::controller_client(proxy, "ctl-pw")
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn heartbeats_open_writes_and_silence_fences_them_while_reads_pass() {
    let redis = RedisServer::start();
    let proxy = fenced_proxy(&redis, "");
    let mut app = proxy.client();
    let refused = app.cmd(&["SET", "k", "before"]);
    assert_eq!(
        refused.error_text(),
        format!("{FENCED} (epoch 0)"),
        "fail closed at start"
    );

    let mut ctl = controller(&proxy);
    let reply = heartbeat(&mut ctl, ME, 600, 3);
    let f = info_fields(&reply);
    assert_eq!(f["role"], "master");
    assert!(f["sequence"].parse::<u64>().is_ok(), "{f:?}");
    assert_eq!(f["lease_epoch"], "3");
    let remaining: u64 = f["lease_remaining_ms"].parse().expect("number");
    assert!(remaining > 0 && remaining <= 600, "{remaining}");
    assert!(f["lease_nonce"].parse::<u64>().is_ok());

    assert_eq!(app.cmd(&["SET", "k", "v1"]), Reply::ok());
    // Silence for longer than the TTL: writes are fenced, reads still work.
    wait_until("the lease to lapse", || {
        app.cmd(&["SET", "probe", "x"]).is_error()
    });
    assert_eq!(
        app.cmd(&["SET", "k", "v3"]).error_text(),
        format!("{FENCED} (epoch 3)")
    );
    assert_eq!(app.cmd(&["GET", "k"]), Reply::bulk("v1"));
    assert_eq!(
        redis.client().cmd(&["GET", "k"]),
        Reply::bulk("v1"),
        "nothing fenced reached the node"
    );
}

#[test]
fn the_two_argument_heartbeat_form_renews() {
    let redis = RedisServer::start();
    let proxy = fenced_proxy(&redis, "");
    let mut ctl = controller(&proxy);
    let reply = ctl.cmd(&["CLUSTERX", "HEARTBEAT", "4", "10000"]);
    assert_eq!(info_fields(&reply)["lease_epoch"], "4");
    assert_eq!(proxy.client().cmd(&["INCR", "n"]), Reply::Int(1));
}

#[test]
fn stale_epoch_and_bad_ttl_are_refused_without_touching_the_lease() {
    let redis = RedisServer::start();
    let proxy = fenced_proxy(&redis, "");
    let mut ctl = controller(&proxy);
    heartbeat(&mut ctl, ME, 700, 5);
    let err = heartbeat(&mut ctl, ME, 60_000, 4);
    assert!(
        err.error_text().contains("election version mismatch"),
        "{err:?}"
    );
    assert!(heartbeat(&mut ctl, ME, 0, 5)
        .error_text()
        .contains("invalid lease_ms"));
    // The refused 60 s grant did not extend the 700 ms lease.
    let mut app = proxy.client();
    wait_until("the 700 ms lease to lapse", || {
        app.cmd(&["SET", "k", "v"]).is_error()
    });
}

#[test]
fn only_the_controller_may_heartbeat() {
    let redis = RedisServer::start();
    let proxy = fenced_proxy(&redis, "");
    let mut app = proxy.client();
    let err = heartbeat(&mut app, ME, 60_000, 1);
    assert!(err.error_text().starts_with("NOPERM"), "{err:?}");
    assert!(app.cmd(&["SET", "k", "v"]).is_error(), "lease unchanged");
    // A wrong password is the node's business: it is forwarded (and fails there).
    let wrong = app.cmd(&["AUTH", "not-the-control-password"]);
    assert!(wrong.is_error());
    assert!(heartbeat(&mut app, ME, 60_000, 1)
        .error_text()
        .starts_with("NOPERM"));
    // The control password never reaches the node.
    let Reply::Bulk(stats) = redis.client().cmd(&["INFO", "commandstats"]) else {
        panic!("INFO is a bulk string")
    };
    let stats = String::from_utf8_lossy(&stats).to_string();
    assert!(
        stats.contains("cmdstat_auth:calls=1,"),
        "only the wrong AUTH was forwarded: {stats}"
    );

    // HELLO ... AUTH with the control password also makes a controller, and
    // still switches the protocol.
    let mut hello = proxy.client();
    hello.send(&[
        "HELLO",
        "3",
        "AUTH",
        "default",
        "ctl-pw",
        "SETNAME",
        "controller",
    ]);
    hello.resp3 = true;
    assert!(matches!(hello.read(), Reply::Map(_)));
    assert_eq!(
        heartbeat(&mut hello, ME, 60_000, 1).text().lines().next(),
        Some("# Lease")
    );
    assert_eq!(app.cmd(&["SET", "k", "v"]), Reply::ok());
}

#[test]
fn allow_from_makes_loopback_a_controller() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(
        &redis.addr(),
        &format!(
            "node_id: {ME}\ncontrol:\n  allow_from: [127.0.0.0/8]\nlease:\n  mode: block-write\n"
        ),
    );
    let mut c = proxy.client();
    assert!(!heartbeat(&mut c, ME, 60_000, 1).is_error());
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
}

#[test]
fn a_heartbeat_naming_another_master_revokes() {
    let redis = RedisServer::start();
    let proxy = fenced_proxy(&redis, "");
    let mut ctl = controller(&proxy);
    heartbeat(&mut ctl, ME, 60_000, 1);
    let mut app = proxy.client();
    assert_eq!(app.cmd(&["SET", "k", "v"]), Reply::ok());
    let f = info_fields(&heartbeat(&mut ctl, OTHER, 60_000, 2));
    assert_eq!(f["lease_owner"], OTHER);
    assert_eq!(f["lease_remaining_ms"], "0");
    assert_eq!(
        app.cmd(&["SET", "k", "v"]).error_text(),
        format!("{FENCED} (epoch 2)")
    );
}

#[test]
fn setnodes_revokes_only_when_the_node_accepts_it() {
    let redis = RedisServer::start();
    let proxy = fenced_proxy(&redis, "");
    let mut ctl = controller(&proxy);
    heartbeat(&mut ctl, ME, 60_000, 1);
    let mut app = proxy.client();
    assert_eq!(app.cmd(&["SET", "k", "v"]), Reply::ok());
    let nodes =
        format!("{OTHER} 127.0.0.1 7000 master - 0-16383\n{ME} 127.0.0.1 7001 slave,fail {OTHER}");
    // redis-server has no CLUSTERX: the node refused it, so nothing changed.
    let reply = ctl.cmd(&["CLUSTERX", "SETNODES", &nodes, "2"]);
    assert!(reply.is_error());
    assert_eq!(app.cmd(&["SET", "k", "v"]), Reply::ok());
}

/// Kvrocks in cluster mode accepts the topology: from its `+OK` on, this
/// node is a slave and its lease is revoked.
#[test]
fn setnodes_accepted_by_kvrocks_revokes() {
    let Some(kvrocks) = KvrocksServer::start(true) else {
        return;
    };
    let proxy = Proxy::start(
        &kvrocks.addr(),
        &format!(
            "node_id: {ME}\ncontrol:\n  password: ctl-pw\nlease:\n  mode: block-write\n  probe_interval_ms: 0\n"
        ),
    );
    let mut ctl = controller(&proxy);
    assert_eq!(ctl.cmd(&["CLUSTERX", "SETNODEID", ME]), Reply::ok());
    let as_master = format!("{ME} 127.0.0.1 {} master - 0-16383", kvrocks.port);
    assert_eq!(
        ctl.cmd(&["CLUSTERX", "SETNODES", &as_master, "1"]),
        Reply::ok()
    );
    heartbeat(&mut ctl, ME, 60_000, 1);
    let mut app = proxy.client();
    assert_eq!(app.cmd(&["SET", "k", "v"]), Reply::ok());
    // A topology Kvrocks refuses changes nothing.
    assert!(ctl
        .cmd(&["CLUSTERX", "SETNODES", "garbage", "2"])
        .is_error());
    assert_eq!(app.cmd(&["SET", "k", "v"]), Reply::ok());
    let as_slave = format!(
        "{OTHER} 127.0.0.1 1 master - 0-16383\n{ME} 127.0.0.1 {} slave {OTHER}",
        kvrocks.port
    );
    assert_eq!(
        ctl.cmd(&["CLUSTERX", "SETNODES", &as_slave, "2"]),
        Reply::ok()
    );
    // Revoked, and demoted toward the master the topology names (here
    // unreachable): the write is refused, never applied here.
    let refused = app.cmd(&["SET", "k", "after"]);
    assert!(
        refused
            .error_text()
            .contains("cannot reach the new master at 127.0.0.1:1"),
        "{refused:?}"
    );
    let mut direct = kvrocks.client();
    assert_eq!(direct.cmd(&["READONLY"]), Reply::ok());
    assert_eq!(direct.cmd(&["GET", "k"]), Reply::bulk("v"));
}

/// Only a `CLUSTERX SETNODEID` the node accepted, on a control connection,
/// teaches leasegate its node id: an ordinary client's is refused (and,
/// where no control identity is set, passes and teaches nothing: unit
/// tests).
#[test]
fn setnodeid_from_the_controller_teaches_the_node_id() {
    let Some(kvrocks) = KvrocksServer::start(true) else {
        return;
    };
    let proxy = Proxy::start(
        &kvrocks.addr(),
        "control:\n  password: ctl-pw\nlease:\n  mode: block-write\n  probe_interval_ms: 0\n",
    );
    let mut ctl = controller(&proxy);
    let err = heartbeat(&mut ctl, ME, 60_000, 1);
    assert!(err.error_text().contains("node's id is unknown"), "{err:?}");
    let mut stranger = proxy.client();
    assert!(stranger
        .cmd(&["CLUSTERX", "SETNODEID", OTHER])
        .error_text()
        .starts_with("NOPERM leasegate"));
    let err = heartbeat(&mut ctl, OTHER, 60_000, 1);
    assert!(err.error_text().contains("node's id is unknown"), "{err:?}");
    // Refused by the node (not 40 characters): not learned either.
    assert!(ctl.cmd(&["CLUSTERX", "SETNODEID", "short"]).is_error());
    assert!(heartbeat(&mut ctl, ME, 60_000, 1).is_error());
    assert_eq!(ctl.cmd(&["CLUSTERX", "SETNODEID", ME]), Reply::ok());
    assert!(!heartbeat(&mut ctl, ME, 60_000, 1).is_error());
    let as_master = format!("{ME} 127.0.0.1 {} master - 0-16383", kvrocks.port);
    assert_eq!(
        ctl.cmd(&["CLUSTERX", "SETNODES", &as_master, "1"]),
        Reply::ok()
    );
    assert_eq!(proxy.client().cmd(&["SET", "k", "v"]), Reply::ok());
}

#[test]
fn replicaof_through_the_proxy_and_the_probe_revoke() {
    let master = RedisServer::start();
    let redis = RedisServer::start();
    let proxy = fenced_proxy(&redis, "");
    let mut ctl = controller(&proxy);
    heartbeat(&mut ctl, ME, 60_000, 1);
    let mut app = proxy.client();
    assert_eq!(app.cmd(&["SET", "k", "v"]), Reply::ok());
    assert_eq!(
        ctl.cmd(&["REPLICAOF", "127.0.0.1", &master.port.to_string()]),
        Reply::ok()
    );
    assert!(app
        .cmd(&["SET", "k", "v"])
        .error_text()
        .contains("master lease expired"));

    // The node turned replica behind the proxy's back: the probe notices.
    assert_eq!(ctl.cmd(&["REPLICAOF", "NO", "ONE"]), Reply::ok());
    heartbeat(&mut ctl, ME, 60_000, 1);
    assert_eq!(app.cmd(&["SET", "k2", "v"]), Reply::ok());
    let mut direct = redis.client();
    assert_eq!(
        direct.cmd(&["REPLICAOF", "127.0.0.1", &master.port.to_string()]),
        Reply::ok()
    );
    wait_until("the probe to revoke", || {
        app.cmd(&["SET", "k3", "v"])
            .error_text()
            .contains("master lease expired")
    });
}

#[test]
fn exec_after_expiry_is_aborted_and_nothing_applies() {
    let redis = RedisServer::start();
    let proxy = fenced_proxy(&redis, "");
    let mut ctl = controller(&proxy);
    heartbeat(&mut ctl, ME, 500, 1);
    let mut app = proxy.client();
    assert_eq!(app.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        app.cmd(&["SET", "tx1", "a"]),
        Reply::Status("QUEUED".into())
    );
    assert_eq!(app.cmd(&["INCR", "tx2"]), Reply::Status("QUEUED".into()));
    // Queued writes were accepted while the lease held; EXEC comes too late.
    let mut probe = proxy.client();
    wait_until("the lease to lapse", || {
        probe.cmd(&["SET", "p", "1"]).is_error()
    });
    assert_eq!(
        app.cmd(&["EXEC"]).error_text(),
        "EXECABORT Transaction discarded because the master lease expired"
    );
    let mut direct = redis.client();
    assert_eq!(direct.cmd(&["EXISTS", "tx1", "tx2"]), Reply::Int(0));
    // The backend's transaction was closed: the connection works normally.
    assert_eq!(app.cmd(&["GET", "tx1"]), Reply::Nil);
    // A read-only transaction still executes while fenced.
    assert_eq!(app.cmd(&["MULTI"]), Reply::ok());
    app.cmd(&["GET", "tx1"]);
    assert_eq!(app.cmd(&["EXEC"]), Reply::Array(vec![Reply::Nil]));
}

/// A blocking pop that timed out applied nothing, whatever null its node
/// answers it with: Redis `*-1` (RESP2) or `_` (RESP3), Kvrocks `$-1`.
/// Admitted under a lease that ended while it blocked, it still gets its
/// null, not the unknown-outcome error (which said it may have popped).
#[test]
fn a_blocking_pop_that_timed_out_after_the_lease_ended_answers_its_null() {
    let redis = RedisServer::start();
    let proxy = fenced_proxy(&redis, "");
    let kvrocks = KvrocksServer::start(false);
    let kv_proxy = kvrocks.as_ref().map(|k| fenced_proxy_at(&k.addr(), ""));
    let mut cases: Vec<(&str, &Proxy, bool)> = vec![
        ("redis RESP2", &proxy, false),
        ("redis RESP3", &proxy, true),
    ];
    if let Some(p) = &kv_proxy {
        cases.push(("kvrocks RESP2", p, false));
    }
    for (what, proxy, resp3) in cases {
        let mut ctl = controller(proxy);
        heartbeat(&mut ctl, ME, 300, 1);
        let mut app = proxy.client();
        if resp3 {
            app.resp3 = true;
            assert!(matches!(app.cmd(&["HELLO", "3"]), Reply::Map(_)), "{what}");
        }
        // Blocks for a second; the lease ends after 300 ms.
        let popped = app.cmd(&["BLPOP", "nothing-here", "1"]);
        assert_eq!(popped, Reply::Nil, "{what}");
        assert!(
            !app.cmd(&["SET", "k", "v"]).error_text().is_empty(),
            "{what}: fenced after the lease"
        );
    }
}

#[test]
fn log_only_lets_writes_pass_and_counts_them() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(
        &redis.addr(),
        &format!(
            "node_id: {ME}\nlease:\n  mode: log-only\nadmin:\n  listen: 127.0.0.1:{}\n",
            support::free_port()
        ),
    );
    let mut app = proxy.client();
    assert_eq!(app.cmd(&["SET", "k", "v"]), Reply::ok());
    assert_eq!(app.cmd(&["INCR", "n"]), Reply::Int(1));
    assert_eq!(redis.client().cmd(&["GET", "k"]), Reply::bulk("v"));
    let (_, metrics) = support::http(proxy.admin_port(), "GET", "/metrics", None, None);
    assert!(
        metrics.contains("leasegate_writes_unfenced_log_only_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("leasegate_writes_fenced_total{reason=\"lease\"} 0"),
        "{metrics}"
    );
}

#[test]
fn writes_queue_inside_multi_while_fenced_and_exec_is_aborted() {
    let redis = RedisServer::start();
    let proxy = fenced_proxy(&redis, "");
    let mut app = proxy.client();
    assert_eq!(app.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        app.cmd(&["SET", "q", "1"]),
        Reply::Status("QUEUED".into()),
        "queued, not fenced"
    );
    assert_eq!(
        app.cmd(&["EXEC"]).error_text(),
        "EXECABORT Transaction discarded because the master lease expired"
    );
    assert_eq!(redis.client().cmd(&["EXISTS", "q"]), Reply::Int(0));
}

/// A TCP relay that holds everything the client sends until released.
struct HoldingRelay {
    port: u16,
    release: std::sync::mpsc::Sender<()>,
}

impl HoldingRelay {
    fn start(target: u16) -> HoldingRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().expect("addr").port();
        let (release, released) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let Ok((mut inbound, _)) = listener.accept() else {
                return;
            };
            let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)) else {
                return;
            };
            // Hold the client's first request until released.
            let mut held = vec![0u8; 64 * 1024];
            let Ok(n) = inbound.read(&mut held) else {
                return;
            };
            let _ = released.recv_timeout(PATIENCE);
            let _ = outbound.write_all(&held[..n]);
            let Ok(mut back) = outbound.try_clone() else {
                return;
            };
            let Ok(mut inbound2) = inbound.try_clone() else {
                return;
            };
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut back, &mut inbound2);
            });
            let _ = std::io::copy(&mut inbound, &mut outbound);
        });
        HoldingRelay { port, release }
    }
}

#[test]
fn a_delayed_heartbeat_echoing_its_nonce_cannot_stretch_the_lease() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(
        &redis.addr(),
        &format!("node_id: {ME}\ncontrol:\n  allow_from: [127.0.0.1]\nlease:\n  mode: block-write\n  safety_margin_ms: 0\n  clock_drift: 0\n"),
    );
    let mut ctl = proxy.client();
    let nonce = info_fields(&heartbeat(&mut ctl, ME, 400, 1))["lease_nonce"].clone();
    // The next heartbeat, echoing that nonce, is held in the network for
    // longer than the TTL before it reaches the proxy.
    let relay = HoldingRelay::start(proxy.port);
    let mut delayed = Client::connect(relay.port);
    delayed.send(&["CLUSTERX", "HEARTBEAT", ME, "1500", "1", "NONCE", &nonce]);
    std::thread::sleep(Duration::from_millis(2000));
    let held_until = Instant::now();
    relay.release.send(()).expect("release");
    let f = info_fields(&delayed.read());
    assert_eq!(f["lease_renewed"], "1");
    assert_eq!(
        f["lease_remaining_ms"], "0",
        "anchored at the nonce's issue, it had already run out"
    );
    // No write is accepted after the bound (anchor + TTL), although a
    // heartbeat anchored at its arrival would have granted 1500 ms more.
    let mut app = proxy.client();
    let reply = app.cmd(&["SET", "k", "v"]);
    assert!(
        reply.error_text().contains("master lease expired"),
        "{reply:?}"
    );
    assert!(
        held_until.elapsed() < Duration::from_millis(1500),
        "checked inside the window a naive proxy would have granted"
    );
    // Without the nonce a heartbeat renews from its arrival (the weaker form).
    assert!(!ctl
        .cmd(&["CLUSTERX", "HEARTBEAT", ME, "1500", "1"])
        .is_error());
    assert_eq!(app.cmd(&["SET", "k", "v"]), Reply::ok());
}

/// `lease.fence_reads`: the master refuses reads while it holds no lease,
/// serves them under one, and as a replica serves them again.
#[test]
fn fenced_reads_are_lease_reads_on_a_master_and_free_on_a_replica() {
    let master = RedisServer::start();
    let redis = RedisServer::start();
    let proxy = fenced_proxy(&redis, "  fence_reads: true\n");
    let mut app = proxy.client();
    let refused = app.cmd(&["GET", "k"]);
    assert!(
        refused
            .error_text()
            .contains("master lease expired, reads are fenced"),
        "{refused:?}"
    );
    let mut ctl = controller(&proxy);
    heartbeat(&mut ctl, ME, 60_000, 1);
    assert_eq!(app.cmd(&["SET", "k", "v"]), Reply::ok());
    assert_eq!(app.cmd(&["GET", "k"]), Reply::bulk("v"));
    // Made a replica behind the proxy's back: the probe revokes the lease
    // and sees the replica, whose reads pass.
    let mut direct = redis.client();
    assert_eq!(
        direct.cmd(&["REPLICAOF", "127.0.0.1", &master.port.to_string()]),
        Reply::ok()
    );
    wait_until("the probe to see the replica", || {
        app.cmd(&["SET", "k3", "v"]).is_error() && !app.cmd(&["GET", "k"]).is_error()
    });
}

/// A probe's `ROLE` asked while the node was a replica and answered after
/// a grant made this node master again says nothing of the node now: a
/// failover promotes the node directly, then grants its lease, and such a
/// stale `slave` revoked that lease at once (an attack pass: 2 in 80
/// failovers under load, the new master refusing writes until the next
/// heartbeat). The node here is scripted: its answer to one `ROLE` waits
/// until the grant is in.
#[test]
fn a_probe_answer_asked_before_a_grant_does_not_revoke_it() {
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::Arc;
    use support::scripted::{bulk, serve_commands};
    // 0: answer ROLE master; 1: hold the next ROLE; 2: held; 3: answer it slave.
    let stale = Arc::new(AtomicU8::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let state = stale.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let state = state.clone();
            std::thread::spawn(move || {
                serve_commands(conn, |args| {
                    let name = args.first().map(|a| a.to_ascii_uppercase());
                    match name.as_deref() {
                        Some("ROLE") => {
                            if state
                                .compare_exchange(1, 2, Ordering::SeqCst, Ordering::SeqCst)
                                .is_ok()
                            {
                                let start = Instant::now();
                                while state.load(Ordering::SeqCst) != 3
                                    && start.elapsed() < PATIENCE
                                {
                                    std::thread::sleep(Duration::from_millis(1));
                                }
                                return b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n$9\r\nconnected\r\n:0\r\n".to_vec();
                            }
                            b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n".to_vec()
                        }
                        Some("INFO") => bulk("# Server\r\nredis_version:7.0.15\r\n"),
                        Some("PING") => b"+PONG\r\n".to_vec(),
                        Some("COMMAND") => b"*0\r\n".to_vec(),
                        _ => b"+OK\r\n".to_vec(),
                    }
                })
            });
        }
    });
    let proxy = fenced_proxy_at(&addr, "");
    let mut ctl = controller(&proxy);
    let valid =
        |ctl: &mut Client| info_fields(&ctl.cmd(&["INFO", "leasegate"]))["lease_valid"] == "1";
    assert!(!valid(&mut ctl), "no lease before the grant");
    stale.store(1, Ordering::SeqCst);
    wait_until("a ROLE held by the node", || {
        stale.load(Ordering::SeqCst) == 2
    });
    heartbeat(&mut ctl, ME, 60_000, 1);
    assert!(valid(&mut ctl), "granted");
    stale.store(3, Ordering::SeqCst);
    // The stale answer, then a few fresh probes (every 100 ms).
    std::thread::sleep(Duration::from_millis(400));
    assert!(valid(&mut ctl), "revoked by the stale ROLE answer");
}
