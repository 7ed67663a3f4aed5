//! Write pauses: held, not failed; released in order; bounded; ending by themselves.

mod support;

use std::time::{Duration, Instant};

use support::{Client, Proxy, RedisServer, Reply};

fn paused_proxy(redis: &RedisServer, extra: &str) -> Proxy {
    Proxy::start(
        &redis.addr(),
        &format!("control:\n  password: ctl\n{extra}"),
    )
}

fn controller(proxy: &Proxy) -> Client {
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["AUTH", "ctl"]), Reply::ok());
    c
}

#[test]
fn pause_holds_writes_answers_reads_and_releases_in_order() {
    let redis = RedisServer::start();
    let proxy = paused_proxy(&redis, "");
    let mut ctl = controller(&proxy);
    let mut writer = proxy.client();
    let mut reader = proxy.client();
    assert_eq!(writer.cmd(&["SET", "k", "0"]), Reply::ok());

    assert_eq!(ctl.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]), Reply::ok());
    // A pipeline: writes and a read behind them, in one go.
    writer.send(&["SET", "k", "1"]);
    writer.send(&["INCR", "k"]);
    writer.send(&["GET", "k"]);
    assert_eq!(
        writer.try_read(Duration::from_millis(300)),
        None,
        "held, not failed"
    );
    // Other connections' reads pass; the node has not seen the writes.
    assert_eq!(reader.cmd(&["GET", "k"]), Reply::bulk("0"));
    assert_eq!(redis.client().cmd(&["GET", "k"]), Reply::bulk("0"));

    let released = Instant::now();
    assert_eq!(ctl.cmd(&["CLIENT", "UNPAUSE"]), Reply::ok());
    assert_eq!(writer.read(), Reply::ok());
    assert_eq!(writer.read(), Reply::Int(2));
    assert_eq!(writer.read(), Reply::bulk("2"), "order kept");
    assert!(released.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_pause_ends_by_itself_at_its_timeout() {
    let redis = RedisServer::start();
    let proxy = paused_proxy(&redis, "");
    let mut ctl = controller(&proxy);
    let mut writer = proxy.client();
    let start = Instant::now();
    assert_eq!(ctl.cmd(&["CLIENT", "PAUSE", "400"]), Reply::ok());
    assert_eq!(writer.cmd(&["SET", "k", "v"]), Reply::ok());
    let held = start.elapsed();
    assert!(
        held >= Duration::from_millis(350),
        "released too early: {held:?}"
    );
    // ALL (the default mode) holds reads too.
    assert_eq!(ctl.cmd(&["CLIENT", "PAUSE", "300", "ALL"]), Reply::ok());
    let start = Instant::now();
    assert_eq!(writer.cmd(&["GET", "k"]), Reply::bulk("v"));
    assert!(start.elapsed() >= Duration::from_millis(250));
}

#[test]
fn a_full_pause_buffer_answers_tryagain() {
    let redis = RedisServer::start();
    let proxy = paused_proxy(&redis, "pause:\n  max_buffered_requests: 2\n");
    let mut ctl = controller(&proxy);
    assert_eq!(ctl.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]), Reply::ok());
    let mut held: Vec<Client> = (0..2).map(|_| proxy.client()).collect();
    for (i, c) in held.iter_mut().enumerate() {
        c.send(&["SET", &format!("h{i}"), "v"]);
    }
    // Give the two held requests time to take their places.
    std::thread::sleep(Duration::from_millis(200));
    let mut third = proxy.client();
    assert_eq!(
        third.cmd(&["SET", "h3", "v"]).error_text(),
        "TRYAGAIN write pause buffer full"
    );
    assert_eq!(
        redis.client().cmd(&["EXISTS", "h3"]),
        Reply::Int(0),
        "nothing forwarded"
    );
    assert_eq!(ctl.cmd(&["CLIENT", "UNPAUSE"]), Reply::ok());
    for c in held.iter_mut() {
        assert_eq!(c.read(), Reply::ok());
    }
}

#[test]
fn an_ordinary_clients_client_pause_reaches_the_node() {
    let redis = RedisServer::start();
    let proxy = paused_proxy(&redis, "");
    let mut app = proxy.client();
    // Not the controller: Redis itself pauses (a direct write then blocks).
    assert_eq!(app.cmd(&["CLIENT", "PAUSE", "500", "WRITE"]), Reply::ok());
    let mut direct = redis.client();
    let start = Instant::now();
    assert_eq!(direct.cmd(&["SET", "d", "1"]), Reply::ok());
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "the node was paused"
    );
    // The controller's pause holds in the proxy; the node keeps taking writes.
    let mut ctl = controller(&proxy);
    assert_eq!(ctl.cmd(&["CLIENT", "PAUSE", "500", "WRITE"]), Reply::ok());
    let start = Instant::now();
    assert_eq!(direct.cmd(&["SET", "d", "2"]), Reply::ok());
    assert!(
        start.elapsed() < Duration::from_millis(300),
        "the node was not paused"
    );
}

#[test]
fn pause_and_unpause_over_the_admin_api() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(
        &redis.addr(),
        &format!(
            "admin:\n  listen: 127.0.0.1:{}\n  token: tk\n",
            support::free_port()
        ),
    );
    let port = proxy.admin_port();
    let (status, _) = support::http(
        port,
        "POST",
        "/v1/pause",
        None,
        Some(r#"{"timeout_ms":10000,"mode":"write"}"#),
    );
    assert_eq!(status, 401, "a token is required");
    let (status, body) = support::http(
        port,
        "POST",
        "/v1/pause",
        Some("tk"),
        Some(r#"{"timeout_ms":10000,"mode":"write"}"#),
    );
    assert_eq!(status, 200, "{body}");
    let mut writer = proxy.client();
    writer.send(&["SET", "k", "v"]);
    assert_eq!(writer.try_read(Duration::from_millis(200)), None);
    let (_, body) = support::http(port, "GET", "/v1/status", None, None);
    assert!(
        body.contains("\"paused\":true") && body.contains("\"held_requests\":1"),
        "{body}"
    );
    let (status, _) = support::http(port, "POST", "/v1/unpause", Some("tk"), Some("{}"));
    assert_eq!(status, 200);
    assert_eq!(writer.read(), Reply::ok());
    let (_, metrics) = support::http(port, "GET", "/metrics", None, None);
    assert!(
        metrics.contains("leasegate_pause_hold_duration_seconds_count 1"),
        "{metrics}"
    );
}

/// The controller's `CLIENT PAUSE` is answered only once the writes already
/// forwarded are answered: the controller reads the master's offset next,
/// and a write acknowledged after that read could miss the replica. Here
/// the node itself is paused (an ordinary `CLIENT PAUSE` sent to it
/// directly), so a write sits in flight; the controller's `+OK` must come
/// after that write's reply.
#[test]
fn the_controllers_pause_waits_for_writes_in_flight() {
    let redis = RedisServer::start();
    let proxy = paused_proxy(&redis, "");
    let mut ctl = controller(&proxy);
    let mut writer = proxy.client();
    assert_eq!(writer.cmd(&["SET", "k", "0"]), Reply::ok());
    assert_eq!(
        redis.client().cmd(&["CLIENT", "PAUSE", "700", "WRITE"]),
        Reply::ok()
    );
    writer.send(&["SET", "k", "1"]);
    std::thread::sleep(Duration::from_millis(100));
    ctl.send(&["CLIENT", "PAUSE", "10000", "WRITE"]);
    assert_eq!(
        ctl.try_read(Duration::from_millis(200)),
        None,
        "answered while a write was in flight"
    );
    assert_eq!(writer.read(), Reply::ok(), "the write in flight");
    let pause_ok = Instant::now();
    assert_eq!(ctl.read(), Reply::ok(), "then the pause");
    assert!(pause_ok.elapsed() < Duration::from_secs(5));
    // The pause is on: a new write is held.
    writer.send(&["SET", "k", "2"]);
    assert_eq!(writer.try_read(Duration::from_millis(200)), None, "held");
    assert_eq!(ctl.cmd(&["CLIENT", "UNPAUSE"]), Reply::ok());
    assert_eq!(writer.read(), Reply::ok());
}

/// Writes the node would not run yet are not counted in flight, so no
/// client can keep the controller's pause (and so every failover) waiting
/// on them (an audit): a write pipelined behind a `BLPOP` that never
/// returns waits in leasegate, as it would at the node, and goes once the
/// `BLPOP` is answered; a write in an inline line with a NUL, which
/// redis-server never ends, is not a request yet.
#[test]
fn writes_the_node_would_not_run_yet_do_not_hold_the_controllers_pause() {
    use std::io::Write;
    let redis = RedisServer::start();
    let proxy = paused_proxy(&redis, "");
    let mut ctl = controller(&proxy);
    let mut blocked = proxy.client();
    blocked.send_raw(&support::encode(&[b"BLPOP", b"never", b"0"]));
    blocked.send_raw(&support::encode(&[b"SET", b"behind", b"1"]));
    let mut nul = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    nul.write_all(b"SET nul v\0\r\n").expect("send");
    std::thread::sleep(Duration::from_millis(300));
    // Counted, they left it `-ERR writes already forwarded were not
    // answered in time` after a second.
    assert_eq!(ctl.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]), Reply::ok());
    assert_eq!(ctl.cmd(&["CLIENT", "UNPAUSE"]), Reply::ok());
    // Nothing ran behind the block; once it is answered, the write goes.
    assert_eq!(redis.client().cmd(&["EXISTS", "behind"]), Reply::Int(0));
    assert_eq!(redis.client().cmd(&["RPUSH", "never", "x"]), Reply::Int(1));
    assert_eq!(
        blocked.read(),
        Reply::Array(vec![
            Reply::Bulk(b"never".to_vec()),
            Reply::Bulk(b"x".to_vec())
        ])
    );
    assert_eq!(blocked.read(), Reply::ok());
    assert_eq!(
        redis.client().cmd(&["GET", "behind"]),
        Reply::Bulk(b"1".to_vec())
    );
    assert_eq!(redis.client().cmd(&["EXISTS", "nul"]), Reply::Int(0));
}

/// A write counted in flight that never goes out as it came is not left
/// counted: with `EXEC` made a write (`commands.classes`), the `EXEC` of a
/// transaction leasegate refused a command of is replaced by `DISCARD`,
/// and it kept the count
/// above zero, failing the controller's pause (an audit).
#[test]
fn an_aborted_exec_counted_as_a_write_does_not_hold_the_controllers_pause() {
    let redis = RedisServer::start();
    let proxy = paused_proxy(
        &redis,
        "commands:\n  deny: [flushall]\n  classes:\n    exec: write\n",
    );
    let mut ctl = controller(&proxy);
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert!(matches!(c.cmd(&["FLUSHALL"]), Reply::Error(_)), "denied");
    let exec = c.cmd(&["EXEC"]);
    assert!(
        matches!(&exec, Reply::Error(e) if e.starts_with("EXECABORT")),
        "{exec:?}"
    );
    assert_eq!(ctl.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]), Reply::ok());
    assert_eq!(ctl.cmd(&["CLIENT", "UNPAUSE"]), Reply::ok());
}

/// With `durability.min_replicas`, the `WAIT` sent behind a blocking
/// command the node may never answer is not counted in flight either: a
/// lone `BLPOP never 0` held every controller pause (a review).
#[test]
fn a_wait_behind_a_blocked_command_does_not_hold_the_controllers_pause() {
    let redis = RedisServer::start();
    let proxy = paused_proxy(&redis, "durability:\n  min_replicas: 1\n");
    let mut ctl = controller(&proxy);
    let mut blocked = proxy.client();
    blocked.send(&["BLPOP", "never", "0"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ctl.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]), Reply::ok());
    assert_eq!(ctl.cmd(&["CLIENT", "UNPAUSE"]), Reply::ok());
}

/// A client that pipelined reads and a write and stopped reading, the
/// write's reply behind more unread replies than
/// `limits.max_client_output_bytes`, held the controller's pause: the
/// write stayed counted in flight, its reply never read, and `CLIENT
/// PAUSE` answered `-ERR writes already forwarded were not answered in
/// time`. Now, while a pause holds requests, the replies are read on up
/// to twice the bound, then such a client is closed.
#[test]
fn a_client_that_stopped_reading_does_not_hold_the_controllers_pause() {
    let redis = RedisServer::start();
    let proxy = paused_proxy(
        &redis,
        &format!(
            "admin:\n  listen: 127.0.0.1:{}\nlimits:\n  max_client_output_bytes: 65536\n",
            support::free_port()
        ),
    );
    let mut ctl = controller(&proxy);
    let big = "x".repeat(1 << 20);
    assert_eq!(redis.client().cmd(&["SET", "big", &big]), Reply::ok());
    let mut hostile = support::unread::stop_reading_behind_a_write(proxy.port, 40);
    std::thread::sleep(Duration::from_millis(500));
    let mut bystander = proxy.client();
    assert_eq!(ctl.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]), Reply::ok());
    bystander.send(&["SET", "held", "1"]);
    assert_eq!(ctl.cmd(&["CLIENT", "UNPAUSE"]), Reply::ok());
    assert_eq!(bystander.read(), Reply::ok());
    let got = support::unread::read_to_the_end(&mut hostile);
    assert!(got < 40 << 20, "read {got} bytes: not closed");
    assert_eq!(
        support::metric(proxy.admin_port(), "leasegate_clients_closed_unread_total "),
        1
    );
}

/// `WAIT` blocks its connection at the node as `BLPOP` does (`WAIT 1 0`
/// with no replica, for good), and the node runs nothing behind it: a
/// write pipelined behind one was counted in flight for good, and every
/// controller pause failed.
#[test]
fn a_write_behind_a_wait_no_replica_answers_does_not_hold_the_controllers_pause() {
    let redis = RedisServer::start();
    let proxy = paused_proxy(&redis, "");
    let mut ctl = controller(&proxy);
    let mut waiting = proxy.client();
    waiting.send_raw(&support::encode(&[b"WAIT", b"1", b"0"]));
    waiting.send_raw(&support::encode(&[b"SET", b"behind", b"1"]));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ctl.cmd(&["CLIENT", "PAUSE", "10000", "WRITE"]), Reply::ok());
    assert_eq!(ctl.cmd(&["CLIENT", "UNPAUSE"]), Reply::ok());
    assert_eq!(redis.client().cmd(&["EXISTS", "behind"]), Reply::Int(0));
}
