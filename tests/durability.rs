//! Replica acknowledgements (`durability.min_replicas`) with real nodes:
//! a write's success reply reaches the client only once a replica has it
//! (the node's `WAIT`), the replies around it keep their order, and a
//! write no replica confirmed is answered as of unknown outcome.
//!
//! The partition where this matters (a master cut off from its replica
//! and the Sentinels) is in `tests/sentinel_partition.rs`.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::kvrocks::KvrocksServer;
use support::{encode, http, signal, Client, Proxy, RedisServer, Reply, PATIENCE};

/// A generous `WAIT` timeout: a loaded CI host may take hundreds of
/// milliseconds to get a replica's acknowledgement.
const DURABLE: &str =
    "lease:\n  mode: disabled\ndurability:\n  min_replicas: 1\n  timeout_ms: 2000\n";

/// Polls until `check` holds, for at most 15 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "{what}: timed out");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A redis-server master with one replica, and leasegate in front of the
/// master with `extra` as its config.
fn redis_pair(extra: &str) -> (RedisServer, RedisServer, Proxy) {
    let master = RedisServer::start();
    let port = master.port.to_string();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    // Online, and acknowledging: the replica confirms a write directly.
    eventually("the replica acknowledges writes", || {
        let mut c = master.client();
        c.cmd(&["SET", "probe", "1"]);
        c.cmd(&["WAIT", "1", "1000"]) == Reply::Int(1)
    });
    let proxy = Proxy::start(&master.addr(), extra);
    (master, replica, proxy)
}

/// Sends `requests` in one write and reads as many replies.
fn pipeline(c: &mut Client, requests: &[&[&str]]) -> Vec<Reply> {
    let mut bytes = Vec::new();
    for r in requests {
        let args: Vec<&[u8]> = r.iter().map(|a| a.as_bytes()).collect();
        bytes.extend(encode(&args));
    }
    c.send_raw(&bytes);
    requests.iter().map(|_| c.read()).collect()
}

fn is_unknown_outcome(reply: &Reply) -> bool {
    matches!(reply, Reply::Error(e) if e.starts_with("UNKNOWN write outcome unknown") && e.contains("replica"))
}

#[test]
fn writes_a_replica_confirmed_are_acknowledged_in_order() {
    let (_master, replica, proxy) = redis_pair(DURABLE);
    let mut c = proxy.client();
    let replies = pipeline(
        &mut c,
        &[
            &["SET", "a", "1"],
            &["GET", "a"],
            &["INCR", "n"],
            &["PING"],
            &["MULTI"],
            &["INCR", "n"],
            &["EXEC"],
            &["GET", "n"],
        ],
    );
    assert_eq!(
        replies,
        vec![
            Reply::ok(),
            Reply::bulk("1"),
            Reply::Int(1),
            Reply::Status("PONG".into()),
            Reply::ok(),
            Reply::Status("QUEUED".into()),
            Reply::Array(vec![Reply::Int(2)]),
            Reply::bulk("2"),
        ]
    );
    // What was acknowledged is on the replica.
    assert_eq!(replica.client().cmd(&["GET", "n"]), Reply::bulk("2"));
    // No stray WAIT reply is left behind.
    assert_eq!(c.cmd(&["PING"]), Reply::Status("PONG".into()));
    assert!(c.try_read(Duration::from_millis(200)).is_none());
}

#[test]
fn writes_no_replica_confirmed_are_of_unknown_outcome_and_reads_still_pass() {
    let admin = support::free_port();
    let (_master, replica, proxy) =
        redis_pair(&format!("{DURABLE}admin:\n  listen: 127.0.0.1:{admin}\n"));
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["SET", "k", "before"]), Reply::ok());
    // The replica stops (a frozen process: connected, silent).
    signal(replica.pid(), "STOP");
    let replies = pipeline(
        &mut c,
        &[
            &["SET", "k", "after"],
            &["GET", "k"],
            &["INCR", "n"],
            &["GET", "missing"],
        ],
    );
    signal(replica.pid(), "CONT");
    assert!(is_unknown_outcome(&replies[0]), "{:?}", replies[0]);
    // The read sees the write: the node applied it; only the
    // acknowledgement was withheld.
    assert_eq!(replies[1], Reply::bulk("after"));
    assert!(is_unknown_outcome(&replies[2]), "{:?}", replies[2]);
    assert_eq!(replies[3], Reply::Nil);
    // Counted, and the replica back: writes are acknowledged again.
    let metrics = http(proxy.admin_port(), "GET", "/metrics", None, None).1;
    assert!(
        metrics.contains("leasegate_writes_unreplicated_total 2"),
        "{metrics}"
    );
    eventually("writes are acknowledged again", || {
        c.cmd(&["SET", "k", "again"]) == Reply::ok()
    });
}

/// `WAIT` goes out before anything after which the node would not answer
/// it at once: a client that pipelines a write with MULTI, or with a
/// blocking pop, and waits for the replies gets them.
#[test]
fn a_write_before_multi_or_a_blocking_pop_is_acknowledged_without_waiting_for_them() {
    let (_master, _replica, proxy) = redis_pair(DURABLE);
    let mut c = proxy.client();
    c.send_raw(&[encode(&[b"SET", b"a", b"1"]), encode(&[b"MULTI"])].concat());
    assert_eq!(c.try_read(PATIENCE), Some(Reply::ok()), "SET before MULTI");
    assert_eq!(c.try_read(PATIENCE), Some(Reply::ok()), "MULTI");
    assert_eq!(c.cmd(&["SET", "b", "2"]), Reply::Status("QUEUED".into()));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Array(vec![Reply::ok()]),
        "EXEC's writes confirmed"
    );

    c.send_raw(
        &[
            encode(&[b"SET", b"c", b"3"]),
            encode(&[b"BLPOP", b"q", b"0"]),
        ]
        .concat(),
    );
    assert_eq!(
        c.try_read(PATIENCE),
        Some(Reply::ok()),
        "the SET is acknowledged while BLPOP blocks"
    );
    assert_eq!(proxy.client().cmd(&["LPUSH", "q", "x"]), Reply::Int(1));
    assert_eq!(
        c.try_read(PATIENCE),
        Some(Reply::Array(vec![Reply::bulk("q"), Reply::bulk("x")]))
    );
}

/// Under `CLIENT REPLY OFF` there is no acknowledgement to hold back (the
/// writes' replies are dropped, and the replicas get them in their own
/// time); the `WAIT` leasegate still sends is never a reply the client sees.
#[test]
fn fire_and_forget_writes_leave_no_reply_behind() {
    let (_master, replica, proxy) = redis_pair(DURABLE);
    let mut c = proxy.client();
    let mut bytes = encode(&[b"CLIENT", b"REPLY", b"OFF"]);
    for i in 0..50 {
        bytes.extend(encode(&[b"SET", format!("f{i}").as_bytes(), b"v"]));
    }
    bytes.extend(encode(&[b"CLIENT", b"REPLY", b"ON"]));
    c.send_raw(&bytes);
    assert_eq!(c.try_read(PATIENCE), Some(Reply::ok()), "CLIENT REPLY ON");
    assert_eq!(c.cmd(&["PING"]), Reply::Status("PONG".into()));
    assert!(c.try_read(Duration::from_millis(200)).is_none());
    eventually("the replica has the writes", || {
        replica.client().cmd(&["GET", "f49"]) == Reply::bulk("v")
    });
}

/// Kvrocks (2.11 and later) has `WAIT` too: the same rule on the node this
/// product is for.
#[test]
fn kvrocks_writes_wait_for_its_replica() {
    let Some(master) = KvrocksServer::start(false) else {
        return;
    };
    let slaveof = format!("127.0.0.1 {}", master.port);
    let Some(mut replica) = KvrocksServer::start_with(false, &["--slaveof", &slaveof]) else {
        return;
    };
    eventually("the Kvrocks replica is linked", || {
        replica
            .client()
            .cmd(&["INFO", "replication"])
            .text()
            .contains("master_link_status:up")
    });
    let proxy = Proxy::start(&master.addr(), DURABLE);
    let mut c = proxy.client();
    eventually("a write is acknowledged", || {
        c.cmd(&["SET", "k", "v"]) == Reply::ok()
    });
    replica.kill();
    let reply = c.cmd(&["SET", "k", "w"]);
    assert!(is_unknown_outcome(&reply), "{reply:?}");
    assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("w"));
}

/// A node without `WAIT` (the 2024 Kvrocks build) cannot confirm anything:
/// every write says why instead of being acknowledged unconfirmed.
#[test]
fn a_node_without_wait_acknowledges_nothing_and_says_why() {
    let Some(node) = KvrocksServer::start_2024(false) else {
        return;
    };
    let proxy = Proxy::start(&node.addr(), DURABLE);
    let mut c = proxy.client();
    let reply = c.cmd(&["SET", "k", "v"]);
    assert!(
        matches!(&reply, Reply::Error(e) if e.starts_with("UNKNOWN") && e.contains("WAIT")),
        "{reply:?}"
    );
    assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("v"));
}

/// RESP3 lets a subscribed client send any command, writes too: the
/// `WAIT` after them was skipped in subscribe mode (as if RESP2's, which
/// takes no write there), and a subscribed client's `SET` was acknowledged
/// with no replica confirming it (an attack pass: lost at the next crash
/// failover). Its writes now wait for the replicas as any client's.
#[test]
fn a_subscribed_resp3_clients_writes_wait_for_the_replicas() {
    let (_master, replica, proxy) = redis_pair(DURABLE);
    let mut c = proxy.client();
    c.subscribe_in_resp3("ch");
    assert_eq!(c.cmd(&["SET", "d", "with replica"]), Reply::ok());
    signal(replica.pid(), "STOP");
    let reply = c.cmd(&["SET", "d", "alone"]);
    signal(replica.pid(), "CONT");
    assert!(is_unknown_outcome(&reply), "{reply:?}");
}

/// Writes pipelined before a new login (`AUTH`, `HELLO ... AUTH`) in one
/// batch get their `WAIT` before it: sent after, it ran as the new user,
/// who may not run it, and the writes, applied, were answered `-UNKNOWN`
/// (a differential fuzzer).
#[test]
fn writes_before_a_new_login_wait_as_the_user_that_sent_them() {
    let (master, _replica, proxy) = redis_pair(DURABLE);
    let mut admin = master.client();
    assert_eq!(
        admin.cmd(&["ACL", "SETUSER", "nowait", "on", ">pw", "~*", "+@all", "-wait"]),
        Reply::ok()
    );
    let mut c = proxy.client();
    let replies = pipeline(
        &mut c,
        &[&["SET", "a", "1"], &["AUTH", "nowait", "pw"], &["GET", "a"]],
    );
    assert_eq!(
        replies,
        vec![Reply::ok(), Reply::ok(), Reply::Bulk(b"1".to_vec())]
    );
    let mut c = proxy.client();
    let replies = pipeline(
        &mut c,
        &[
            &["SET", "b", "2"],
            &["HELLO", "2", "AUTH", "nowait", "pw"],
            &["GET", "b"],
        ],
    );
    assert_eq!(replies[0], Reply::ok(), "{replies:?}");
    assert!(matches!(replies[1], Reply::Array(_)), "{replies:?}");
    assert_eq!(replies[2], Reply::Bulk(b"2".to_vec()), "{replies:?}");
}

/// A write queued in a transaction is not applied until `EXEC`: its
/// `+QUEUED` was held for the `WAIT` sent after the `EXEC` and, that
/// `WAIT` failing, replaced with `-UNKNOWN ... the node applied it` (a
/// pass: every transaction so on the 2024 Kvrocks build, which has no
/// `WAIT`). Now `+QUEUED` passes as it came; the `EXEC` is what is of
/// unknown outcome.
#[test]
fn a_queued_write_is_not_answered_as_applied_when_the_wait_fails() {
    let (_master, replica, proxy) = redis_pair(DURABLE);
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["SET", "k", "before"]), Reply::ok());
    signal(replica.pid(), "STOP");
    let replies = pipeline(
        &mut c,
        &[&["MULTI"], &["SET", "q", "1"], &["INCR", "qn"], &["EXEC"]],
    );
    signal(replica.pid(), "CONT");
    let queued = Reply::Status("QUEUED".into());
    assert_eq!(replies[..3], [Reply::ok(), queued.clone(), queued]);
    assert!(is_unknown_outcome(&replies[3]), "{:?}", replies[3]);
}

/// A node that says it is Kvrocks, with one replica; its `WAIT` answers
/// `:1` after 200 ms, and, as the 2025 Kvrocks build was caught doing,
/// whatever arrives meanwhile is answered before it (`wait_reply`: what
/// it answers `WAIT` with). Its address, and whether leasegate's probe
/// asked it `INFO replication` (it knows it for Kvrocks then).
fn scripted_kvrocks(wait_reply: &'static [u8]) -> (String, Arc<AtomicBool>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let probed = Arc::new(AtomicBool::new(false));
    let seen = probed.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || serve_scripted_kvrocks(conn, wait_reply, &seen));
        }
    });
    fn answer(args: &[String], in_multi: &mut bool, probed: &AtomicBool) -> Vec<u8> {
        let name = args
            .first()
            .map(|a| a.to_ascii_uppercase())
            .unwrap_or_default();
        let bulk = |s: &str| format!("${}\r\n{s}\r\n", s.len()).into_bytes();
        match name.as_str() {
            "MULTI" => {
                *in_multi = true;
                b"+OK\r\n".to_vec()
            }
            "EXEC" => {
                *in_multi = false;
                b"*1\r\n+OK\r\n".to_vec()
            }
            _ if *in_multi => b"+QUEUED\r\n".to_vec(),
            "INFO"
                if args
                    .get(1)
                    .is_some_and(|s| s.eq_ignore_ascii_case("replication")) =>
            {
                probed.store(true, Ordering::SeqCst);
                bulk("# Replication\r\nrole:master\r\nconnected_slaves:1\r\n")
            }
            "INFO" => bulk("# Server\r\nkvrocks_version:2.12.0\r\nredis_version:4.0.0\r\n"),
            "CONFIG" => {
                let key = args.get(2).cloned().unwrap_or_default();
                let mut out = b"*2\r\n".to_vec();
                out.extend(bulk(&key));
                out.extend(bulk("no"));
                out
            }
            "PING" => b"+PONG\r\n".to_vec(),
            "COMMAND" => b"*0\r\n".to_vec(),
            _ => b"+OK\r\n".to_vec(),
        }
    }
    fn serve_scripted_kvrocks(
        mut conn: std::net::TcpStream,
        wait_reply: &[u8],
        probed: &AtomicBool,
    ) {
        let _ = conn.set_read_timeout(Some(std::time::Duration::from_millis(5)));
        let (mut buf, mut chunk) = (Vec::new(), [0u8; 4096]);
        let mut in_multi = false;
        let mut wait_due: Option<std::time::Instant> = None;
        loop {
            while let Some(request) = support::scripted::next_command(&mut buf) {
                let Some(args) = request else {
                    return;
                };
                if args.first().is_some_and(|a| a.eq_ignore_ascii_case("WAIT")) {
                    wait_due =
                        Some(std::time::Instant::now() + std::time::Duration::from_millis(200));
                    continue;
                }
                if conn
                    .write_all(&answer(&args, &mut in_multi, probed))
                    .is_err()
                {
                    return;
                }
            }
            if wait_due.is_some_and(|due| std::time::Instant::now() >= due) {
                wait_due = None;
                if conn.write_all(wait_reply).is_err() {
                    return;
                }
            }
            match conn.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
    }
    (addr, probed)
}

/// leasegate with `durability.min_replicas: 1` beside [`scripted_kvrocks`]
/// (answering `WAIT` with `wait_reply`), once it knows it for Kvrocks, and
/// a client whose `SET a 1` went out 50 ms ago, its `WAIT` behind it.
fn a_write_then_wait(wait_reply: &'static [u8]) -> (Proxy, Client) {
    let (node, probed) = scripted_kvrocks(wait_reply);
    let proxy = Proxy::start(&node, DURABLE);
    let mut c = proxy.client();
    eventually("the node is known for Kvrocks", || {
        probed.load(Ordering::SeqCst)
    });
    c.send_raw(&encode(&[b"SET", b"a", b"1"]));
    std::thread::sleep(Duration::from_millis(50));
    (proxy, c)
}

/// On Kvrocks nothing goes behind leasegate's own `WAIT` until it is
/// answered: the 2025 build answered a `MULTI` sent behind one before it,
/// the `MULTI`'s `+OK` was taken for the `WAIT`'s count, the write it
/// covered answered `-UNKNOWN`, and every later reply of the connection
/// went one request off (an attack pass, by the bytes between leasegate
/// and the node). The node here answers so whatever it is sent during a
/// `WAIT`.
#[test]
fn on_kvrocks_nothing_goes_behind_leasegates_wait() {
    let (_proxy, mut c) = a_write_then_wait(b":1\r\n");
    let mut transaction = Vec::new();
    for request in [&[&b"MULTI"[..]][..], &[b"SET", b"b", b"2"], &[b"EXEC"]] {
        transaction.extend(encode(request));
    }
    c.send_raw(&transaction);
    assert_eq!(c.read(), Reply::ok(), "the SET, once the WAIT said :1");
    assert_eq!(c.read(), Reply::ok(), "MULTI");
    assert_eq!(c.read(), Reply::Status("QUEUED".into()));
    assert_eq!(c.read(), Reply::Array(vec![Reply::ok()]), "EXEC");
}

/// A node whose answer to leasegate's own `WAIT` is neither a count nor an
/// error has its replies out of order (as above): every later reply would
/// reach the wrong request. The client is told so and closed; nothing held
/// for the `WAIT` is sent. (Before, the writes were answered `-UNKNOWN`
/// and the connection went on, one reply off.)
#[test]
fn a_node_answering_wait_out_of_order_closes_the_client() {
    // As the 2025 build was caught: another request's answer, then the
    // `WAIT`'s.
    let (_proxy, mut c) = a_write_then_wait(b"+OK\r\n:1\r\n");
    c.send_raw(&encode(&[b"GET", b"a"]));
    let told = c.read();
    assert!(
        told.error_text().contains("replies came out of order"),
        "{told:?}"
    );
    // Nothing after it: the node's `:1` is no answer to the `GET`.
    let after = c.read_within(PATIENCE);
    assert!(after.is_err(), "{after:?}");
}
