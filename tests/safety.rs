//! The promise under attack: no acknowledged write without a valid lease, and
//! only the controller moves the lease. Each test is a hole found by trying to
//! break it (issue #8), against real redis-server processes and the real
//! binary; each failed on the code before its fix.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{encode, heartbeat, info_fields, Client, Proxy, RedisServer, Reply, PATIENCE};

const ME: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const OTHER: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const FENCED: &str = "master lease expired";

/// A block-write proxy whose controller authenticates with `ctl-pw`.
fn fenced_proxy(backend: &str, extra: &str) -> Proxy {
    Proxy::start(
        backend,
        &format!(
            "control:\n  password: ctl-pw\nlease:\n  mode: block-write\n  safety_margin_ms: 0\n  clock_drift: 0\n{extra}"
        ),
    )
}

fn controller(proxy: &Proxy) -> Client {
    support::controller_client(proxy, "ctl-pw")
}

fn assert_fenced(reply: &Reply) {
    assert!(
        matches!(reply, Reply::Error(e) if e.contains(FENCED)),
        "expected a fenced write, got {reply:?}"
    );
}

/// Hole 1: a MULTI the node refuses must not turn the writes after it into
/// "queued" ones that pass the gate.
#[test]
fn a_refused_multi_does_not_open_a_path_past_the_gate() {
    let redis = RedisServer::start();
    let proxy = fenced_proxy(&redis.addr(), &format!("node_id: {ME}\n"));
    let mut direct = redis.client();
    let mut app = proxy.client();
    assert_fenced(&app.cmd(&["SET", "k", "v"]));
    assert!(app
        .cmd(&["MULTI", "x"])
        .error_text()
        .contains("wrong number"));
    assert_fenced(&app.cmd(&["SET", "k", "v"]));
    // Pipelined: the SET is framed before the node has answered MULTI.
    let mut pipeline = encode(&[b"MULTI", b"x"]);
    pipeline.extend(encode(&[b"SET", b"k", b"v"]));
    app.send_raw(&pipeline);
    assert!(app.read().is_error());
    assert_fenced(&app.read());

    // A MULTI the node refuses for an ACL rule: same.
    assert_eq!(
        direct.cmd(&["ACL", "SETUSER", "app", "on", ">pw", "~*", "+@all", "-multi"]),
        Reply::ok()
    );
    let mut limited = proxy.client();
    assert_eq!(limited.cmd(&["AUTH", "app", "pw"]), Reply::ok());
    assert!(limited.cmd(&["MULTI"]).error_text().starts_with("NOPERM"));
    assert_fenced(&limited.cmd(&["SET", "k", "v"]));
    assert_eq!(direct.cmd(&["GET", "k"]), Reply::Nil, "nothing was applied");

    // A MULTI the node accepts still queues, and EXEC is judged.
    assert_eq!(app.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(app.cmd(&["SET", "k", "v"]), Reply::Status("QUEUED".into()));
    assert!(app.cmd(&["EXEC"]).error_text().starts_with("EXECABORT"));
    assert_eq!(direct.cmd(&["GET", "k"]), Reply::Nil);
}

/// Hole 2: an ordinary client's `CLUSTERX SETNODEID` must not teach the
/// proxy a node id (which a heartbeat naming that node would then renew).
#[test]
fn an_ordinary_client_cannot_set_the_node_id() {
    let redis = RedisServer::start();
    let proxy = fenced_proxy(&redis.addr(), ""); // no node_id configured
    let mut attacker = proxy.client();
    let _ = attacker.cmd(&["CLUSTERX", "SETNODEID", OTHER]);
    let mut ctl = controller(&proxy);
    let reply = heartbeat(&mut ctl, OTHER, 60_000, 1);
    assert!(
        reply.error_text().contains("node's id is unknown"),
        "{reply:?}"
    );
    assert_fenced(&attacker.cmd(&["SET", "k", "v"]));
    assert_eq!(redis.client().cmd(&["GET", "k"]), Reply::Nil);
}

/// Hole 3: the lease is checked on the acknowledgement too. A write admitted
/// under a valid lease but held inside the node (here by an ordinary
/// client's `CLIENT PAUSE`, forwarded to the node) past the deadline is not
/// acknowledged: the client learns that the outcome is unknown.
#[test]
fn an_acknowledgement_after_the_deadline_is_an_unknown_outcome() {
    let redis = RedisServer::start();
    let proxy = fenced_proxy(&redis.addr(), &format!("node_id: {ME}\n"));
    let mut ctl = controller(&proxy);
    let mut other = proxy.client();
    let mut app = proxy.client();
    let granted = Instant::now();
    heartbeat(&mut ctl, ME, 300, 1);
    assert_eq!(app.cmd(&["SET", "k", "before"]), Reply::ok());
    // Not the controller: forwarded to the node, which holds writes 1.5 s.
    assert_eq!(
        other.cmd(&["CLIENT", "PAUSE", "1500", "WRITE"]),
        Reply::ok()
    );
    let reply = app.cmd(&["SET", "k", "late"]);
    assert!(
        granted.elapsed() > Duration::from_millis(300),
        "the node held the write past the lease"
    );
    assert!(
        matches!(&reply, Reply::Error(e) if e.starts_with("UNKNOWN") && e.contains("outcome unknown")),
        "{reply:?}"
    );
    // The node did apply it: that is why the answer is "unknown", not "no".
    assert_eq!(redis.client().cmd(&["GET", "k"]), Reply::bulk("late"));

    // A write whose reply comes in time is acknowledged as usual.
    heartbeat(&mut ctl, ME, 60_000, 1);
    assert_eq!(app.cmd(&["SET", "k", "v"]), Reply::ok());
}

/// Hole 4: a client that pipelines without reading its replies cannot grow
/// the proxy without bound; other clients are unaffected.
#[test]
fn a_client_that_never_reads_is_stalled_not_buffered() {
    let redis = RedisServer::start();
    let proxy = fenced_proxy(
        &redis.addr(),
        &format!("node_id: {ME}\nlimits:\n  max_client_output_bytes: 1048576\n"),
    );
    let rss_before = rss_kib(proxy.pid());
    let mut hostile = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    hostile
        .set_write_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    // Each heartbeat is answered -NOPERM locally; the replies are never read.
    let chunk: Vec<u8> = std::iter::repeat_n(
        encode(&[b"CLUSTERX", b"HEARTBEAT", ME.as_bytes(), b"1000", b"1"]),
        16 * 1024,
    )
    .flatten()
    .collect();
    let mut sent = 0usize;
    let limit = 512 * 1024 * 1024;
    let start = Instant::now();
    while sent < limit && start.elapsed() < PATIENCE {
        match hostile.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break, // the proxy stopped reading: backpressure
        }
    }
    assert!(
        sent < limit,
        "the proxy kept reading {sent} bytes from a client that reads nothing"
    );
    let grown = rss_kib(proxy.pid()).saturating_sub(rss_before);
    assert!(grown < 64 * 1024, "the proxy grew by {grown} KiB");
    let mut bystander = proxy.client();
    assert_eq!(bystander.cmd(&["PING"]), Reply::Status("PONG".into()));
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Hole 6: a role change the node refuses does not revoke the lease, so a
/// client cannot keep the master fenced so (an ordinary client's is not
/// even sent: only the controller reconfigures the node).
#[test]
fn a_refused_replicaof_does_not_revoke() {
    let redis = RedisServer::start_with(&["--requirepass", "node-pw"]);
    let proxy = Proxy::start_with_backend_yaml(
        &format!("backend:\n  addr: {}\n  password: node-pw\n", redis.addr()),
        &format!(
            "node_id: {ME}\ncontrol:\n  password: ctl-pw\nlease:\n  mode: block-write\n  probe_interval_ms: 0\n"
        ),
    );
    let mut ctl = controller(&proxy);
    heartbeat(&mut ctl, ME, 60_000, 1);
    let mut stranger = proxy.client();
    let refused = stranger.cmd(&["REPLICAOF", "127.0.0.1", "1"]);
    assert!(
        refused.error_text().starts_with("NOPERM leasegate"),
        "{refused:?}"
    );
    // The controller's, refused by the node (no such port).
    assert!(ctl.cmd(&["REPLICAOF", "127.0.0.1", "notaport"]).is_error());
    let mut app = proxy.client();
    assert_eq!(app.cmd(&["AUTH", "node-pw"]), Reply::ok());
    assert_eq!(app.cmd(&["SET", "k", "v"]), Reply::ok(), "still master");
    // An accepted one does revoke.
    assert_eq!(ctl.cmd(&["REPLICAOF", "127.0.0.1", "1"]), Reply::ok());
    assert_fenced(&app.cmd(&["SET", "k", "v"]));
    assert_eq!(ctl.cmd(&["REPLICAOF", "NO", "ONE"]), Reply::ok());
}

/// Hole 9: `CLIENT REPLY OFF|SKIP` would make the node leave requests
/// unanswered: replies would no longer match requests, and a write would
/// stop counting as in flight before the node had it. The node is only ever
/// sent `CLIENT REPLY ON` (its MONITOR shows it), and leasegate drops what
/// the client asked not to be sent (`tests/client_reply.rs`).
#[test]
fn client_reply_off_and_skip_never_reach_the_node() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis.addr(), "");
    let mut monitor = redis.client();
    assert_eq!(monitor.cmd(&["MONITOR"]), Reply::ok());
    let mut c = proxy.client();
    let mut pipeline = encode(&[b"CLIENT", b"REPLY", b"SKIP"]);
    pipeline.extend(encode(&[b"SET", b"a", b"1"]));
    pipeline.extend(encode(&[b"CLIENT", b"REPLY", b"OFF"]));
    pipeline.extend(encode(&[b"SET", b"a", b"2"]));
    pipeline.extend(encode(&[b"CLIENT", b"REPLY", b"ON"]));
    pipeline.extend(encode(&[b"GET", b"a"]));
    c.send_raw(&pipeline);
    assert_eq!(c.read(), Reply::ok(), "ON's answer, the first one sent");
    assert_eq!(c.read(), Reply::bulk("2"));
    let mut seen = Vec::new();
    while let Some(line) = monitor.try_read(Duration::from_millis(300)) {
        seen.push(line.text());
    }
    let reply_modes: Vec<&String> = seen.iter().filter(|l| l.contains("\"REPLY\"")).collect();
    assert_eq!(reply_modes.len(), 3, "{seen:?}");
    assert!(
        reply_modes
            .iter()
            .all(|l| l.ends_with("\"CLIENT\" \"REPLY\" \"ON\"")),
        "{reply_modes:?}"
    );
}

/// Hole 10: HELLO is parsed by its grammar; `auth` as a client name does not
/// shift where the password is looked for, and the control password never
/// reaches the node.
#[test]
fn hello_with_a_client_named_auth_authenticates_the_controller() {
    let redis = RedisServer::start();
    let proxy = fenced_proxy(&redis.addr(), &format!("node_id: {ME}\n"));
    let mut ctl = proxy.client();
    ctl.send(&["HELLO", "3", "SETNAME", "auth", "AUTH", "default", "ctl-pw"]);
    ctl.resp3 = true;
    let hello = ctl.read();
    assert!(matches!(hello, Reply::Map(_)), "{hello:?}");
    let reply = heartbeat(&mut ctl, ME, 60_000, 1);
    assert_eq!(info_fields(&reply)["lease_renewed"], "1", "{reply:?}");
    assert_eq!(
        ctl.cmd(&["CLIENT", "GETNAME"]),
        Reply::bulk("auth"),
        "the rest of HELLO reached the node"
    );
    // Misplaced, the control password is refused locally, not forwarded.
    let mut other = proxy.client();
    let reply = other.cmd(&["HELLO", "2", "SETNAME", "AUTH", "default", "ctl-pw"]);
    assert!(reply.error_text().contains("control password"), "{reply:?}");
}

/// Hole 11: a lease TTL so large that the deadline would saturate is refused.
#[test]
fn an_absurd_ttl_is_refused() {
    let redis = RedisServer::start();
    let proxy = fenced_proxy(&redis.addr(), &format!("node_id: {ME}\n"));
    let mut ctl = controller(&proxy);
    let reply = heartbeat(&mut ctl, ME, u64::MAX / 2, 1);
    assert!(reply.error_text().contains("invalid lease_ms"), "{reply:?}");
    assert_fenced(&proxy.client().cmd(&["SET", "k", "v"]));
    let reply = heartbeat(&mut ctl, ME, 3_600_000, 1);
    assert_eq!(
        info_fields(&reply)["lease_renewed"],
        "1",
        "one hour is fine"
    );
}

/// A MONITOR connection: from MONITOR's reply on the node's bytes are a
/// stream of monitor lines, and a request sent there had its reply taken
/// for one: a write's acknowledgement was never checked against the
/// lease, nor counted in flight for a failover's wait (a review). Only
/// RESET and QUIT are taken there, pipelined behind MONITOR too; after
/// RESET the connection is an ordinary one again. MONITOR in a
/// transaction is refused, as Redis refuses it.
#[test]
fn a_monitor_connection_takes_nothing_but_reset_and_quit() {
    let redis = RedisServer::start();
    let proxy = fenced_proxy(&redis.addr(), &format!("node_id: {ME}\n"));
    assert!(!heartbeat(&mut controller(&proxy), ME, 600_000, 1).is_error());
    let mut direct = redis.client();
    let mut m = proxy.client();
    // The next reply that is not a monitor line (those are timestamped).
    let answer = |m: &mut Client| loop {
        match m.read() {
            Reply::Status(line) if line.starts_with(|c: char| c.is_ascii_digit()) => {}
            other => break other,
        }
    };
    let mut pipeline = encode(&[b"MONITOR"]);
    pipeline.extend(encode(&[b"SET", b"m", b"1"]));
    m.send_raw(&pipeline);
    assert_eq!(m.read(), Reply::ok());
    let refused = answer(&mut m);
    assert!(refused.error_text().contains("MONITOR mode"), "{refused:?}");
    m.send(&["SET", "m", "2"]);
    assert!(answer(&mut m).error_text().contains("MONITOR mode"));
    assert_eq!(
        direct.cmd(&["EXISTS", "m"]),
        Reply::Int(0),
        "no write reached the node"
    );
    m.send(&["RESET"]);
    assert_eq!(answer(&mut m), Reply::Status("RESET".into()));
    assert_eq!(m.cmd(&["SET", "m", "3"]), Reply::ok());
    assert_eq!(direct.cmd(&["GET", "m"]), Reply::bulk("3"));

    assert_eq!(m.cmd(&["MULTI"]), Reply::ok());
    assert!(m
        .cmd(&["MONITOR"])
        .error_text()
        .contains("not allowed inside a transaction"));
    assert!(m.cmd(&["EXEC"]).error_text().starts_with("EXECABORT"));
    assert_eq!(m.cmd(&["SET", "m", "4"]), Reply::ok(), "not a monitor");
}

/// A read-only script is a read on Redis, which refuses every command
/// that writes or replicates inside one: it passes on a fenced node, and
/// what it would write is refused by Redis itself. (On Kvrocks, whose
/// read-only scripts may call commands that write, it is a write:
/// `tests/kvrocks_ro_writes.rs`.)
#[test]
fn a_read_only_script_is_a_read_on_redis() {
    let redis = RedisServer::start();
    let proxy = fenced_proxy(&redis.addr(), &format!("node_id: {ME}\n"));
    let mut direct = redis.client();
    assert_eq!(direct.cmd(&["SET", "k", "v"]), Reply::ok());
    let mut app = proxy.client();
    assert_fenced(&app.cmd(&["SET", "k", "w"]));
    assert_eq!(
        app.cmd(&["EVAL_RO", "return redis.call('get', KEYS[1])", "1", "k"]),
        Reply::bulk("v")
    );
    let refused = app.cmd(&["EVAL_RO", "return redis.call('publish', 'ch', 'm')", "0"]);
    assert!(refused.is_error(), "{refused:?}");
    assert_eq!(direct.cmd(&["GET", "k"]), Reply::bulk("v"));
}
