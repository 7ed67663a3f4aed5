//! Connections, backend outages, limits, reload and shutdown.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{redis_and_proxy, Client, Proxy, RedisServer, Reply, PATIENCE};

#[test]
fn backend_down_then_back() {
    let (mut redis, proxy) = redis_and_proxy("");
    let mut before = proxy.client();
    assert_eq!(before.cmd(&["SET", "k", "v"]), Reply::ok());

    redis.stop();
    // The session whose backend went away is closed.
    assert!(before.is_closed());
    // New clients are told why, and closed.
    let mut c = proxy.client();
    let err = c.read();
    let text = err.error_text();
    assert!(
        text.starts_with(&format!("ERR backend {} unavailable: ", redis.addr())),
        "{text}"
    );
    assert!(c.is_closed());

    redis.restart();
    let mut after = proxy.client();
    assert_eq!(after.cmd(&["PING"]), Reply::Status("PONG".into()));
    assert_eq!(after.cmd(&["SET", "k2", "v"]), Reply::ok());
}

/// A client that sends a handshake before its command (redis-py: `CLIENT
/// SETINFO` twice, their replies read and errors ignored) to a leasegate
/// whose node is down reads the error as the reply to its command too: the
/// connection was closed right after the first error line, and the command
/// saw only "connection closed by server".
#[test]
fn a_client_of_an_unreachable_node_reads_the_error_for_each_request() {
    let (mut redis, proxy) = redis_and_proxy("");
    redis.stop();
    let mut c = proxy.client();
    c.send(&["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]);
    c.send(&["CLIENT", "SETINFO", "LIB-VER", "8.2.0"]);
    c.send(&["RPUSH", "probe", "y"]);
    for what in ["the first SETINFO", "the second SETINFO", "RPUSH"] {
        let reply = c.read();
        assert!(
            reply.is_error() && reply.error_text().contains("unavailable"),
            "{what}: {reply:?}"
        );
    }
    assert!(c.is_closed());
}

#[test]
fn ten_thousand_connections_leak_no_descriptors() {
    let (_redis, proxy) = redis_and_proxy("");
    let baseline = {
        let mut c = proxy.client();
        assert_eq!(c.cmd(&["PING"]), Reply::Status("PONG".into()));
        drop(c);
        settle_fds(&proxy, usize::MAX)
    };
    for i in 0..10_000 {
        let mut c = proxy.client();
        // Every tenth connection does a round trip; the rest just open and close.
        if i % 10 == 0 {
            assert_eq!(c.cmd(&["PING"]), Reply::Status("PONG".into()));
        }
    }
    let after = settle_fds(&proxy, baseline);
    assert!(
        after <= baseline,
        "fd count {after} did not return to its baseline {baseline}"
    );
}

/// Waits for the proxy's fd count to drop to `target` (or to stop changing).
fn settle_fds(proxy: &Proxy, target: usize) -> usize {
    let start = Instant::now();
    let mut last = proxy.fd_count();
    while start.elapsed() < PATIENCE && last > target {
        std::thread::sleep(Duration::from_millis(50));
        let now = proxy.fd_count();
        if target == usize::MAX && now == last {
            break;
        }
        last = now;
    }
    last
}

#[test]
fn sigterm_lets_in_flight_replies_finish_then_exits_zero() {
    let (_redis, mut proxy) = redis_and_proxy("drain_timeout_ms: 5000\n");
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["SET", "k", "1"]), Reply::ok());
    // A request that takes 300 ms on the node is in flight at SIGTERM.
    c.send(&["DEBUG", "SLEEP", "0.3"]);
    std::thread::sleep(Duration::from_millis(50));
    proxy.signal("TERM");
    assert_eq!(c.read(), Reply::ok(), "the in-flight reply is delivered");
    assert!(c.is_closed());
    let status = proxy.wait_exit();
    assert!(status.success(), "exit status {status}");
    // The listener is gone.
    assert!(std::net::TcpStream::connect(("127.0.0.1", proxy.port)).is_err());
}

#[test]
fn drain_is_bounded_by_the_timeout() {
    let (_redis, mut proxy) = redis_and_proxy("drain_timeout_ms: 300\n");
    let mut c = proxy.client();
    c.send(&["BLPOP", "never", "0"]);
    std::thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    proxy.signal("INT");
    let status = proxy.wait_exit();
    assert!(status.success(), "exit status {status}");
    assert!(start.elapsed() < PATIENCE);
    // Told why, in place of the reply it waited for; then closed.
    let told = c.read();
    assert!(
        told.error_text()
            .contains("leasegate stopped before this was answered"),
        "{told:?}"
    );
    assert!(c.is_closed());
}

#[test]
fn max_clients_refuses_the_extra_client() {
    let (_redis, proxy) = redis_and_proxy("limits:\n  max_clients: 2\n");
    // The start-up probe's connection may still hold a slot for a moment.
    let connect_admitted = || {
        let start = Instant::now();
        loop {
            let mut c = proxy.client();
            if c.cmd(&["PING"]) == Reply::Status("PONG".into()) {
                return c;
            }
            assert!(start.elapsed() < PATIENCE, "slot never released");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let a = connect_admitted();
    let _b = connect_admitted();
    let mut c = proxy.client();
    assert_eq!(c.read().error_text(), "ERR max number of clients reached");
    assert!(c.is_closed());
    drop(a);
    // The slot is released when a session ends.
    connect_admitted();
}

#[test]
fn sighup_reloads_the_deny_list() {
    let (redis, proxy) = redis_and_proxy("");
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["KEYS", "nothing*"]), Reply::Array(vec![]));
    let text = std::fs::read_to_string(&proxy.config_path).expect("config");
    std::fs::write(
        &proxy.config_path,
        format!("{text}commands:\n  deny: [keys]\n"),
    )
    .expect("write");
    proxy.signal("HUP");
    let start = Instant::now();
    loop {
        let reply = c.cmd(&["KEYS", "nothing*"]);
        if reply.is_error() {
            assert_eq!(
                reply.error_text(),
                "ERR command 'keys' is disabled by leasegate"
            );
            break;
        }
        assert!(start.elapsed() < PATIENCE, "reload not applied");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(redis);
}

#[test]
fn learns_command_flags_from_the_backend_and_agrees_with_the_table() {
    use leasegate::command::{Class, CommandTable};
    let redis = RedisServer::start();
    let learned = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(leasegate::proxy::backend::learn_commands(
            &redis.addr(),
            None,
            None,
            Duration::from_secs(5),
        ))
        .expect("COMMAND answered");
    assert!(
        learned.len() > 200,
        "only {} commands learned",
        learned.len()
    );
    let find = |name: &str| learned.iter().find(|l| l.name == name).map(|l| l.class);
    assert_eq!(find("set"), Some(Class::Write));
    assert_eq!(find("get"), Some(Class::Read));
    // Every command the real node flags `write` is a write in the built-in
    // table, before any learning.
    let builtin = CommandTable::builtin();
    for l in learned.iter().filter(|l| l.class == Class::Write) {
        let c = builtin.classify(l.name.as_bytes(), b"");
        assert_eq!(
            c.class,
            Class::Write,
            "{} is flagged write by redis",
            l.name
        );
    }
}

#[test]
fn check_config_names_the_bad_key_and_line() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "backend:\n  addr: 127.0.0.1:6666\n  adress: x\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_leasegate"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("adress") && err.contains("line 3"), "{err}");

    std::fs::write(&path, "backend:\n  addr: 127.0.0.1:6666\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_leasegate"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run");
    assert!(out.status.success());

    // `run` refuses a bad config the same way, before listening.
    std::fs::write(&path, "listen: 127.0.0.1:1\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_leasegate"))
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("backend"));
}

#[test]
fn client_closing_closes_the_backend_connection() {
    let (redis, proxy) = redis_and_proxy("");
    let mut direct = redis.client();
    let named = |direct: &mut Client| -> usize {
        let Reply::Bulk(list) = direct.cmd(&["CLIENT", "LIST"]) else {
            panic!("CLIENT LIST is a bulk string")
        };
        String::from_utf8_lossy(&list)
            .lines()
            .filter(|l| l.contains("name=via-proxy"))
            .count()
    };
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", "via-proxy"]), Reply::ok());
    assert_eq!(named(&mut direct), 1);
    drop(c);
    let start = Instant::now();
    while named(&mut direct) != 0 {
        assert!(start.elapsed() < PATIENCE, "backend connection left open");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Logs written to a file or a pipe (a journal, `2>log`) carry no terminal
/// colour codes: only a terminal gets them.
#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let redis = RedisServer::start();
    let log = support::piped_log(&redis.addr(), "  mode: disabled\n", Duration::ZERO);
    assert!(log.contains("INFO"), "an info line was logged: {log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a piped log: {log:?}"
    );
}
