//! Clients that have not authenticated to a node that requires a
//! password: what they may send is held to Redis's own limits (10
//! arguments, 16 KiB a bulk), with Redis's errors, before leasegate
//! buffers it. Found by running Redis's TCL suite against leasegate
//! (`unit/auth`: "For unauthenticated clients multibulk and bulk length
//! are limited" hung: leasegate waited for the whole request, up to 512 MiB
//! a connection). Real redis-server with `requirepass`, the real binary.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{Proxy, RedisServer};

const PASSWORD: &str = "s3cret";

fn node_and_proxy() -> (RedisServer, Proxy) {
    let node = RedisServer::start_with(&["--requirepass", PASSWORD]);
    let proxy = Proxy::start_with_backend_yaml(
        &format!(
            "backend:\n  addr: {}\n  password: {PASSWORD}\n",
            node.addr()
        ),
        "lease:\n  mode: disabled\n",
    );
    (node, proxy)
}

/// Sends `bytes` on a fresh connection to `port` and reads until the
/// connection closes or `wait` passes: what came back, and whether it
/// closed.
fn exchange(port: u16, bytes: &[u8], wait: Duration) -> (String, bool) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.write_all(bytes).expect("send");
    read_for(&mut c, wait)
}

fn read_for(c: &mut TcpStream, wait: Duration) -> (String, bool) {
    c.set_read_timeout(Some(wait)).expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

fn request(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The node's own answers and leasegate's are the same, and both close:
/// before one byte of a body past the limit is buffered.
#[test]
fn an_unauthenticated_client_gets_the_nodes_limits_and_is_closed() {
    let (node, proxy) = node_and_proxy();
    let wait = Duration::from_secs(3);
    for (bytes, error) in [
        (
            &b"*100\r\n"[..],
            "-ERR Protocol error: unauthenticated multibulk length\r\n",
        ),
        (
            &b"*1\r\n$100000000\r\n"[..],
            "-ERR Protocol error: unauthenticated bulk length\r\n",
        ),
    ] {
        assert_eq!(
            exchange(node.port, bytes, wait),
            (error.to_string(), true),
            "the node itself"
        );
        assert_eq!(
            exchange(proxy.port, bytes, wait),
            (error.to_string(), true),
            "through leasegate"
        );
    }
}

/// Once authenticated (an `AUTH` sent ahead of the requests in the same
/// write counts: the node runs it first), the configured limits apply.
#[test]
fn an_authenticated_client_sends_what_it_likes() {
    let (_node, proxy) = node_and_proxy();
    let big = vec![b'v'; 100_000];
    let mut pipeline = request(&[b"AUTH", PASSWORD.as_bytes()]);
    pipeline.extend(request(&[b"SET", b"big", &big]));
    let many: Vec<&[u8]> = [&b"MSET"[..]]
        .into_iter()
        .chain(std::iter::repeat_n(&b"k"[..], 40))
        .collect();
    pipeline.extend(request(&many));
    let (got, closed) = exchange(proxy.port, &pipeline, Duration::from_secs(2));
    assert_eq!((got.as_str(), closed), ("+OK\r\n+OK\r\n+OK\r\n", false));
    // And HELLO's AUTH too.
    let mut pipeline = request(&[b"HELLO", b"2", b"AUTH", b"default", PASSWORD.as_bytes()]);
    pipeline.extend(request(&[b"SET", b"big", &big]));
    let (got, closed) = exchange(proxy.port, &pipeline, Duration::from_secs(2));
    assert!(got.ends_with("+OK\r\n") && !closed, "{got:?}");
}

/// A big request begun behind an `AUTH` the node refuses is held to the
/// unauthenticated limits from then on, as the node would.
#[test]
fn a_big_request_behind_a_refused_auth_is_cut_off() {
    let (_node, proxy) = node_and_proxy();
    let mut c = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    let mut first = request(&[b"AUTH", b"wrong"]);
    first.extend_from_slice(b"*2\r\n$3\r\nSET\r\n$100000\r\nvvvv");
    c.write_all(&first).expect("send");
    let (got, closed) = read_for(&mut c, Duration::from_millis(500));
    assert!(got.starts_with("-WRONGPASS") && !closed, "{got:?}");
    c.write_all(&[b'v'; 1000]).expect("send more");
    let (got, closed) = read_for(&mut c, Duration::from_secs(3));
    assert_eq!(
        (got.as_str(), closed),
        ("-ERR Protocol error: unauthenticated bulk length\r\n", true)
    );
}

/// A node without a password: nothing changes for anyone.
#[test]
fn without_a_node_password_there_are_no_such_limits() {
    let node = RedisServer::start();
    let proxy = Proxy::start(&node.addr(), "lease:\n  mode: disabled\n");
    let many: Vec<&[u8]> = [&b"MSET"[..]]
        .into_iter()
        .chain(std::iter::repeat_n(&b"k"[..], 40))
        .collect();
    let (got, closed) = exchange(proxy.port, &request(&many), Duration::from_secs(2));
    assert_eq!((got.as_str(), closed), ("+OK\r\n", false));
}

/// A node whose `default` user needs no password, leasegate logging in as
/// an ACL user of its own (`backend.user`): the node serves clients that
/// send no login without Redis's unauthenticated limits, and so does
/// leasegate once its probe has seen that. (Taken to require a login,
/// every such client's request past 10 arguments or with a bulk past 16
/// KiB was cut off: an audit.)
#[test]
fn a_node_that_serves_clients_without_a_login_gets_no_such_limits() {
    let node = RedisServer::start();
    let mut admin = node.client();
    admin.cmd(&["ACL", "SETUSER", "lg", "on", ">lg-secret", "+@all", "~*"]);
    let proxy = Proxy::start_with_backend_yaml(
        &format!(
            "backend:\n  addr: {}\n  user: lg\n  password: lg-secret\n",
            node.addr()
        ),
        "lease:\n  mode: disabled\n",
    );
    let big = vec![b'v'; 100_000];
    let many: Vec<&[u8]> = [&b"MSET"[..]]
        .into_iter()
        .chain(std::iter::repeat_n(&b"k"[..], 40))
        .collect();
    let mut pipeline = request(&[b"SET", b"big", &big]);
    pipeline.extend(request(&many));
    // The probe looks at the node within a second of start-up.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (got, closed) = exchange(proxy.port, &pipeline, Duration::from_secs(1));
        if (got.as_str(), closed) == ("+OK\r\n+OK\r\n", false) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still held to the unauthenticated limits: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The node turned to requiring a login: unauthenticated clients are
    // held to its limits again from the probe's next look at a new
    // connection of its own (the node restarted with a password: here,
    // the probe's connection killed so that it reconnects).
    assert_eq!(
        admin.cmd(&["CONFIG", "SET", "requirepass", "now-required"]),
        support::Reply::ok()
    );
    admin.cmd(&["CLIENT", "KILL", "USER", "lg"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (got, closed) = exchange(proxy.port, &request(&many), Duration::from_secs(1));
        if (got.as_str(), closed)
            == (
                "-ERR Protocol error: unauthenticated multibulk length\r\n",
                true,
            )
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not held to the limits again: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
