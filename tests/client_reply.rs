//! `CLIENT REPLY ON|OFF|SKIP` through leasegate, byte for byte as the node
//! itself answers: redis-server, the real Kvrocks (2025 build, which has
//! the command) and the 2024 build (which has not). The same requests go to
//! the node directly and through a leasegate in front of it, on fresh
//! connections; the bytes each client receives must be the same.
//!
//! The node is sent `CLIENT REPLY ON` whatever the client asked
//! (`src/proxy/session/mute.rs`), so these tests are what shows that the
//! client still sees exactly what the node would have sent it — for every
//! mode and transition, for leasegate's own replies (fenced writes under
//! `block-write` without a lease) and for pub/sub frames.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::kvrocks::KvrocksServer;
use support::{encode, heartbeat, Client, Proxy, RedisServer, Reply, PATIENCE};

const ME: &str = "0123456789012345678901234567890123456789";
/// The end of every exchange: `ECHO` after `CLIENT REPLY ON` (answered in
/// every mode).
const END: &str = "leasegate-test-end";

/// A node to compare against: its address, and what it is called.
struct Target {
    addr: String,
    name: &'static str,
    _keep: Box<dyn std::any::Any>,
}

fn redis() -> Target {
    let r = RedisServer::start();
    Target {
        addr: r.addr(),
        name: "redis-server",
        _keep: Box::new(r),
    }
}

fn kvrocks() -> Option<Target> {
    let k = KvrocksServer::start(false)?;
    Some(Target {
        addr: k.addr(),
        name: "kvrocks 2025",
        _keep: Box::new(k),
    })
}

fn kvrocks_2024() -> Option<Target> {
    let k = KvrocksServer::start_2024(false)?;
    Some(Target {
        addr: k.addr(),
        name: "kvrocks 2024",
        _keep: Box::new(k),
    })
}

/// Every node here: redis-server, and each Kvrocks build that is present.
fn targets() -> Vec<Target> {
    let mut all = vec![redis()];
    all.extend(kvrocks());
    all.extend(kvrocks_2024());
    all
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("port")
}

/// A raw connection: what the client receives, as bytes.
struct Raw {
    stream: TcpStream,
    got: Vec<u8>,
}

impl Raw {
    fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        Raw {
            stream,
            got: Vec::new(),
        }
    }

    fn send(&mut self, requests: &[&[&str]]) {
        let mut bytes = Vec::new();
        for r in requests {
            let args: Vec<&[u8]> = r.iter().map(|a| a.as_bytes()).collect();
            bytes.extend(encode(&args));
        }
        self.stream.write_all(&bytes).expect("send");
    }

    /// Reads whatever arrives within `quiet` of the last byte.
    fn drain(&mut self, quiet: Duration) {
        let mut last = Instant::now();
        let mut buf = [0u8; 16 * 1024];
        while last.elapsed() < quiet {
            match self.stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    self.got.extend_from_slice(&buf[..n]);
                    last = Instant::now();
                }
                Err(_) => {}
            }
        }
    }

    /// Sends the end marker and reads until its answer.
    fn finish(mut self) -> Vec<u8> {
        self.send(&[&["CLIENT", "REPLY", "ON"], &["ECHO", END]]);
        let end = format!("{END}\r\n");
        let start = Instant::now();
        let mut buf = [0u8; 16 * 1024];
        while !self.got.ends_with(end.as_bytes()) {
            assert!(
                start.elapsed() < PATIENCE,
                "no end marker; got {:?}",
                String::from_utf8_lossy(&self.got)
            );
            if let Ok(n) = self.stream.read(&mut buf) {
                assert!(
                    n > 0,
                    "closed; got {:?}",
                    String::from_utf8_lossy(&self.got)
                );
                self.got.extend_from_slice(&buf[..n]);
            }
        }
        self.got
    }
}

/// Runs `script` against `port`: each step's requests are sent in one
/// write, and what arrives is read before the next step.
fn run(port: u16, script: &[&[&[&str]]]) -> Vec<u8> {
    run_quiet(port, script, Duration::from_millis(60))
}

/// [`run`], waiting `quiet` after each step for more to arrive.
fn run_quiet(port: u16, script: &[&[&[&str]]], quiet: Duration) -> Vec<u8> {
    let mut raw = Raw::connect(port);
    for step in script {
        raw.send(step);
        raw.drain(quiet);
    }
    raw.finish()
}

/// The bytes as text, with what differs between any two connections (the
/// client id in HELLO's reply) made the same.
fn normalized(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    let mut rest = &*text;
    const ID: &str = "$2\r\nid\r\n:";
    while let Some(at) = rest.find(ID) {
        out.push_str(&rest[..at + ID.len()]);
        rest = &rest[at + ID.len()..];
        let digits = rest.find("\r\n").unwrap_or(0);
        out.push('N');
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

fn assert_same(target: &str, what: &str, direct: &[u8], via: &[u8]) {
    assert_eq!(
        normalized(via),
        normalized(direct),
        "{target}, {what}: leasegate's bytes (left) differ from the node's (right)"
    );
}

/// Every mode and transition, errors included, as one pipeline and again
/// one request at a time.
const MODES: &[&[&str]] = &[
    &["CLIENT", "REPLY", "OFF"],
    &["SET", "k", "1"],
    &["GET", "k"],
    &["CLIENT", "REPLY", "SKIP"],
    &["PING", "a"],
    &["CLIENT", "REPLY", "ON"],
    &["PING", "b"],
    &["CLIENT", "REPLY", "SKIP"],
    &["PING", "c"],
    &["PING", "d"],
    &["CLIENT", "REPLY", "SKIP"],
    &["CLIENT", "REPLY", "SKIP"],
    &["PING", "e"],
    &["PING", "f"],
    &["CLIENT", "REPLY", "SKIP"],
    &["NOSUCHCOMMAND", "x"],
    &["PING", "g"],
    &["CLIENT", "REPLY", "SKIP"],
    &["CLIENT", "REPLY", "ON"],
    &["PING", "h"],
    &["CLIENT", "REPLY", "FOO"],
    &["CLIENT", "REPLY"],
    &["CLIENT", "REPLY", "ON", "x"],
    &["client", "reply", "skip"],
    &["SET", "k", "2"],
    &["GET", "k"],
    &["CLIENT", "REPLY", "SKIP"],
    &["HELLO", "3"],
    &["PING", "i"],
    &["HELLO", "2"],
    &["CLIENT", "REPLY", "OFF"],
    &["RESET"],
    &["PING", "j"],
    &["CLIENT", "REPLY", "OFF"],
    &["CLIENT", "REPLY", "SKIP"],
    &["PING", "k"],
    &["PING", "l"],
    &["CLIENT", "REPLY", "ON"],
    &["DEL", "k"],
];

#[test]
fn every_mode_and_transition_matches_the_node_byte_for_byte() {
    for target in targets() {
        let proxy = Proxy::start(&target.addr, "");
        let node = port_of(&target.addr);
        let pipelined = [MODES];
        let direct = run(node, &pipelined);
        assert_same(
            target.name,
            "pipelined",
            &direct,
            &run(proxy.port, &pipelined),
        );
        let one_by_one: Vec<&[&[&str]]> = MODES.iter().map(std::slice::from_ref).collect();
        let direct_steps = run(node, &one_by_one);
        assert_eq!(
            normalized(&direct),
            normalized(&direct_steps),
            "{}: the node itself",
            target.name
        );
        assert_same(
            target.name,
            "one by one",
            &direct,
            &run(proxy.port, &one_by_one),
        );
        if target.name == "kvrocks 2024" {
            // It has no CLIENT REPLY: every form is its error, and nothing
            // is muted (the test shows leasegate does not mute either).
            assert!(String::from_utf8_lossy(&direct).contains("$1\r\na\r\n"));
        } else {
            assert!(!String::from_utf8_lossy(&direct).contains("$1\r\na\r\n"));
        }
    }
}

/// Blocking commands that time out answer the same through leasegate, in
/// every mode, and after the same time (bounds generous: timing belongs in
/// the benchmarks).
#[test]
fn blocking_commands_time_out_as_directly_in_every_mode() {
    let blocking: &[&[&str]] = &[
        &["BLPOP", "nolist", "0.2"],
        &["BRPOP", "nolist", "0.2"],
        &["BLMOVE", "nolist", "other", "LEFT", "RIGHT", "0.2"],
        &["BZPOPMIN", "nozset", "0.2"],
        &["XREAD", "BLOCK", "200", "STREAMS", "nostream", "$"],
    ];
    // Not the 2024 Kvrocks: it takes no fractional timeouts, and has no
    // CLIENT REPLY to test them under.
    for target in [Some(redis()), kvrocks()].into_iter().flatten() {
        let proxy = Proxy::start(&target.addr, "");
        let node = port_of(&target.addr);
        for mode in ["ON", "OFF", "SKIP"] {
            for command in blocking {
                // Nothing is pipelined behind the blocking command: Kvrocks
                // leaves such requests unread once the command times out.
                let script: &[&[&[&str]]] = &[
                    &[&["CLIENT", "REPLY", mode], command],
                    &[&["PING", "after"]],
                ];
                let quiet = Duration::from_millis(400);
                let direct_start = Instant::now();
                let direct = run_quiet(node, script, quiet);
                let direct_took = direct_start.elapsed();
                let via_start = Instant::now();
                let via = run_quiet(proxy.port, script, quiet);
                let via_took = via_start.elapsed();
                assert_same(
                    target.name,
                    &format!("{} under {mode}", command.join(" ")),
                    &direct,
                    &via,
                );
                assert!(
                    via_took < direct_took + Duration::from_secs(2),
                    "{}: {} under {mode} took {via_took:?} through leasegate, {direct_took:?} directly",
                    target.name,
                    command.join(" ")
                );
            }
        }
    }
}

/// Pub/sub under every mode, RESP2 and RESP3: messages reach a muted
/// subscriber as they reach it directly; subscribe confirmations follow
/// the node (Redis pushes them in every mode; Kvrocks drops them as
/// replies).
#[test]
fn pubsub_frames_under_every_mode_match_the_node() {
    for target in targets() {
        let proxy = Proxy::start(&target.addr, "");
        let node = port_of(&target.addr);
        for resp3 in [false, true] {
            let direct = pubsub_exchange(node, node, resp3);
            let via = pubsub_exchange(proxy.port, node, resp3);
            assert_same(
                target.name,
                if resp3 {
                    "pub/sub, RESP3"
                } else {
                    "pub/sub, RESP2"
                },
                &direct,
                &via,
            );
        }
    }
}

/// A subscriber on `port` under OFF and SKIP; messages published directly
/// on the node at `publish_to`, once the subscription is in place.
fn pubsub_exchange(port: u16, publish_to: u16, resp3: bool) -> Vec<u8> {
    let mut sub = Raw::connect(port);
    let mut publisher = Client::connect(publish_to);
    let step = |sub: &mut Raw, requests: &[&[&str]]| {
        sub.send(requests);
        sub.drain(Duration::from_millis(80));
    };
    let publish = |publisher: &mut Client, sub: &mut Raw, channel: &str| {
        let start = Instant::now();
        // Published until someone hears it: the subscription is in place.
        while publisher.cmd(&["PUBLISH", channel, "hello"]) != Reply::Int(1) {
            assert!(start.elapsed() < PATIENCE, "nobody subscribed to {channel}");
            std::thread::sleep(Duration::from_millis(10));
        }
        sub.drain(Duration::from_millis(80));
    };
    if resp3 {
        step(&mut sub, &[&["HELLO", "3"]]);
    }
    step(
        &mut sub,
        &[&["CLIENT", "REPLY", "OFF"], &["SUBSCRIBE", "ch1"]],
    );
    publish(&mut publisher, &mut sub, "ch1");
    step(&mut sub, &[&["UNSUBSCRIBE", "ch1"]]);
    step(&mut sub, &[&["CLIENT", "REPLY", "ON"], &["PING", "on"]]);
    step(
        &mut sub,
        &[&["CLIENT", "REPLY", "SKIP"], &["SUBSCRIBE", "ch2"]],
    );
    publish(&mut publisher, &mut sub, "ch2");
    step(&mut sub, &[&["UNSUBSCRIBE", "ch2"]]);
    sub.finish()
}

/// `CLIENT REPLY` inside MULTI: Redis and Kvrocks answer the EXEC with a
/// malformed reply (an array header with fewer elements, or no reply at
/// all). leasegate refuses it instead, as Valkey 9 does: an error in its
/// place, and EXEC aborts.
#[test]
fn client_reply_inside_a_transaction_is_refused_and_exec_aborts() {
    for target in targets() {
        let proxy = Proxy::start(&target.addr, "");
        let mut c = proxy.client();
        assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
        let refused = c.cmd(&["CLIENT", "REPLY", "OFF"]);
        assert!(
            refused
                .error_text()
                .starts_with("ERR Command not allowed inside a transaction"),
            "{}: {refused:?}",
            target.name
        );
        assert_eq!(c.cmd(&["SET", "t", "1"]), Reply::Status("QUEUED".into()));
        let exec = c.cmd(&["EXEC"]);
        assert!(
            exec.error_text().starts_with("EXECABORT"),
            "{}: {exec:?}",
            target.name
        );
        assert_eq!(c.cmd(&["PING"]), Reply::Status("PONG".into()), "in step");
        assert_eq!(
            target_client(&target).cmd(&["EXISTS", "t"]),
            Reply::Int(0),
            "{}: nothing of the transaction ran",
            target.name
        );
    }
}

fn target_client(target: &Target) -> Client {
    Client::connect(port_of(&target.addr))
}

/// A block-write leasegate whose controller authenticates with `ctl-pw`.
fn block_write_proxy(addr: &str) -> Proxy {
    Proxy::start(
        addr,
        &format!(
            "node_id: {ME}\ncontrol:\n  password: ctl-pw\nlease:\n  mode: block-write\n  safety_margin_ms: 0\n  clock_drift: 0\n"
        ),
    )
}

const WRITES_UNDER_MODES: &[&[&str]] = &[
    &["CLIENT", "REPLY", "OFF"],
    &["SET", "w1", "1"],
    &["INCR", "w2"],
    &["CLIENT", "REPLY", "SKIP"],
    &["SET", "w3", "1"],
    &["PING", "r1"],
    &["CLIENT", "REPLY", "SKIP"],
    &["PING", "r2"],
    &["CLIENT", "REPLY", "ON"],
];

/// Under `block-write`: without a lease the writes are refused by leasegate
/// and never reach the node, yet the client receives the same bytes as
/// from the node (which would have applied them), since the refusals fall
/// where the node would have sent nothing; with a lease they are applied.
#[test]
fn block_write_with_and_without_a_lease_matches_the_node_and_keeps_the_promise() {
    for target in [Some(redis()), kvrocks()].into_iter().flatten() {
        let node = port_of(&target.addr);
        let proxy = block_write_proxy(&target.addr);
        let mut direct_c = target_client(&target);
        let del = ["DEL", "w1", "w2", "w3"];

        // Without a lease.
        let via = run(proxy.port, &[WRITES_UNDER_MODES]);
        let mut check = target_client(&target);
        assert_eq!(
            check.cmd(&["EXISTS", "w1", "w2", "w3"]),
            Reply::Int(0),
            "{}: a write passed without a lease",
            target.name
        );
        let direct = run(node, &[WRITES_UNDER_MODES]);
        assert_same(target.name, "block-write without a lease", &direct, &via);
        assert!(!direct_c.cmd(&del).is_error());

        // With a lease.
        let mut ctl = support::controller_client(&proxy, "ctl-pw");
        assert!(!heartbeat(&mut ctl, ME, 60_000, 1).is_error());
        let via = run(proxy.port, &[WRITES_UNDER_MODES]);
        assert_eq!(
            check.cmd(&["EXISTS", "w1", "w2", "w3"]),
            Reply::Int(3),
            "{}: the writes under a lease were applied",
            target.name
        );
        assert!(!direct_c.cmd(&del).is_error());
        let direct = run(node, &[WRITES_UNDER_MODES]);
        assert_same(target.name, "block-write with a lease", &direct, &via);
    }
}

/// A client that connects while leasegate still starts gets Kvrocks' ways
/// on a Kvrocks node: leasegate admits clients once its probe has said
/// what the node is. Here the node (scripted, answering as Kvrocks does)
/// takes 300 ms to answer the probe's `INFO server`, and a client sends,
/// at once, `SKIP` while `OFF`: Kvrocks answers the request after the
/// skipped one, Redis does not. Served before the probe's answer, the
/// session took the node for Redis and dropped that reply (the client
/// waited for good for it; seen as a flake under load).
#[test]
fn a_client_of_a_starting_leasegate_gets_the_kvrocks_ways_of_its_node() {
    use std::net::TcpListener;
    use support::scripted::{bulk, serve_commands};

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let node = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                serve_commands(conn, |args| {
                    let arg = |i: usize| args.get(i).map(|a| a.to_ascii_lowercase());
                    match (arg(0).as_deref(), arg(1).as_deref()) {
                        (Some("info"), Some("server")) => {
                            std::thread::sleep(Duration::from_millis(300));
                            bulk("# Server\r\nkvrocks_version:2.14.0\r\n")
                        }
                        (Some("info"), _) => {
                            bulk("# Replication\r\nrole:master\r\nmaster_repl_offset:0\r\n")
                        }
                        (Some("config"), _) => {
                            let mut out = b"*2\r\n".to_vec();
                            out.extend(bulk("use-rsid-psync"));
                            out.extend(bulk("yes"));
                            out
                        }
                        (Some("role"), _) => {
                            let mut out = b"*3\r\n".to_vec();
                            out.extend(bulk("master"));
                            out.extend(b":0\r\n*0\r\n");
                            out
                        }
                        (Some("ping" | "echo"), _) => match args.get(1) {
                            Some(text) => bulk(text),
                            None => b"+PONG\r\n".to_vec(),
                        },
                        (Some("command"), _) => b"-ERR unknown command `COMMAND`\r\n".to_vec(),
                        _ => b"+OK\r\n".to_vec(),
                    }
                })
            });
        }
    });
    let proxy = Proxy::start(
        &node,
        &format!("node_id: {ME}\nlease:\n  mode: disabled\n  probe_interval_ms: 1000\n"),
    );
    let got = run(
        proxy.port,
        &[&[
            &["CLIENT", "REPLY", "OFF"],
            &["CLIENT", "REPLY", "SKIP"],
            &["PING", "skipped"],
            &["PING", "answered"],
        ]],
    );
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("$8\r\nanswered\r\n"),
        "SKIP while OFF on Kvrocks: the request after the skipped one is answered; got {text:?}"
    );
    assert!(!text.contains("skipped"), "{text:?}");
}
