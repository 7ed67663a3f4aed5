//! Transparency: what works against the node works through leasegate.

mod support;

use std::time::Duration;

use support::{encode, redis_and_proxy, Proxy, RedisServer, Reply, PATIENCE};

#[test]
fn pipeline_of_ten_thousand_commands_keeps_order() {
    let (_redis, proxy) = redis_and_proxy("");
    let mut c = proxy.client();
    let mut batch = Vec::new();
    for i in 0..10_000 {
        if i % 2 == 0 {
            batch.extend(encode(&[
                b"SET",
                format!("k{i}").as_bytes(),
                format!("v{i}").as_bytes(),
            ]));
        } else {
            batch.extend(encode(&[b"GET", format!("k{}", i - 1).as_bytes()]));
        }
    }
    c.send_raw(&batch);
    for i in 0..10_000 {
        let reply = c.read();
        if i % 2 == 0 {
            assert_eq!(reply, Reply::ok(), "reply {i}");
        } else {
            assert_eq!(reply, Reply::bulk(&format!("v{}", i - 1)), "reply {i}");
        }
    }
}

#[test]
fn multi_exec_and_watch_conflict() {
    let (_redis, proxy) = redis_and_proxy("");
    let mut a = proxy.client();
    let mut b = proxy.client();
    assert_eq!(a.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(a.cmd(&["SET", "t", "1"]), Reply::Status("QUEUED".into()));
    assert_eq!(a.cmd(&["INCR", "t"]), Reply::Status("QUEUED".into()));
    assert_eq!(
        a.cmd(&["EXEC"]),
        Reply::Array(vec![Reply::ok(), Reply::Int(2)])
    );

    assert_eq!(a.cmd(&["WATCH", "w"]), Reply::ok());
    assert_eq!(b.cmd(&["SET", "w", "other"]), Reply::ok());
    assert_eq!(a.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(a.cmd(&["SET", "w", "mine"]), Reply::Status("QUEUED".into()));
    assert_eq!(a.cmd(&["EXEC"]), Reply::Nil, "WATCH conflict aborts EXEC");
    assert_eq!(a.cmd(&["GET", "w"]), Reply::bulk("other"));
}

#[test]
fn subscribe_psubscribe_and_publish() {
    let (_redis, proxy) = redis_and_proxy("");
    let mut sub = proxy.client();
    let mut publisher = proxy.client();
    sub.send(&["SUBSCRIBE", "news", "sport"]);
    assert_eq!(
        sub.read(),
        Reply::Array(vec![
            Reply::bulk("subscribe"),
            Reply::bulk("news"),
            Reply::Int(1)
        ])
    );
    assert_eq!(
        sub.read(),
        Reply::Array(vec![
            Reply::bulk("subscribe"),
            Reply::bulk("sport"),
            Reply::Int(2)
        ])
    );
    assert_eq!(
        sub.cmd(&["PSUBSCRIBE", "n*"]),
        Reply::Array(vec![
            Reply::bulk("psubscribe"),
            Reply::bulk("n*"),
            Reply::Int(3)
        ])
    );
    assert_eq!(publisher.cmd(&["PUBLISH", "news", "hello"]), Reply::Int(2));
    assert_eq!(
        sub.read(),
        Reply::Array(vec![
            Reply::bulk("message"),
            Reply::bulk("news"),
            Reply::bulk("hello")
        ])
    );
    assert_eq!(
        sub.read(),
        Reply::Array(vec![
            Reply::bulk("pmessage"),
            Reply::bulk("n*"),
            Reply::bulk("news"),
            Reply::bulk("hello")
        ])
    );
    // PING is answered in subscribe mode, between messages.
    assert_eq!(
        sub.cmd(&["PING"]),
        Reply::Array(vec![Reply::bulk("pong"), Reply::bulk("")])
    );
    sub.send(&["UNSUBSCRIBE"]);
    sub.send(&["PUNSUBSCRIBE"]);
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let Reply::Array(items) = sub.read() else {
            panic!("expected unsubscribe confirmations")
        };
        remaining.push(items[2].clone());
    }
    assert_eq!(remaining.last(), Some(&Reply::Int(0)));
    // Back to normal: an ordinary command works and its reply is its own.
    assert_eq!(sub.cmd(&["SET", "after", "x"]), Reply::ok());
    assert_eq!(sub.cmd(&["GET", "after"]), Reply::bulk("x"));
}

#[test]
fn resp3_hello_and_tracking_invalidation_push() {
    let (_redis, proxy) = redis_and_proxy("");
    let mut c = proxy.client();
    let mut writer = proxy.client();
    c.send(&["HELLO", "3"]);
    c.resp3 = true;
    let Reply::Map(fields) = c.read() else {
        panic!("HELLO 3 answers a map")
    };
    assert!(fields.contains(&(Reply::bulk("proto"), Reply::Int(3))));
    assert_eq!(c.cmd(&["CLIENT", "TRACKING", "on"]), Reply::ok());
    assert_eq!(writer.cmd(&["SET", "tracked", "1"]), Reply::ok());
    assert_eq!(c.cmd(&["GET", "tracked"]), Reply::bulk("1"));
    assert_eq!(writer.cmd(&["SET", "tracked", "2"]), Reply::ok());
    // The invalidation push arrives on its own; it answers no request.
    let push = c.read();
    assert_eq!(
        push,
        Reply::Push(vec![
            Reply::bulk("invalidate"),
            Reply::Array(vec![Reply::bulk("tracked")])
        ])
    );
    assert_eq!(c.cmd(&["GET", "tracked"]), Reply::bulk("2"));
    assert_eq!(c.cmd(&["PING"]), Reply::Status("PONG".into()));
}

#[test]
fn resp3_push_between_pipelined_replies_keeps_local_replies_in_place() {
    let (_redis, proxy) = redis_and_proxy("commands:\n  deny: [KEYS]\n");
    let mut c = proxy.client();
    c.subscribe_in_resp3("ch");
    let mut p = proxy.client();
    assert_eq!(p.cmd(&["PUBLISH", "ch", "m1"]), Reply::Int(1));
    // A pipeline whose replies interleave with a push message.
    c.send(&["PING"]);
    c.send(&["KEYS", "*"]);
    c.send(&["PING"]);
    let mut replies = Vec::new();
    for _ in 0..4 {
        replies.push(c.read());
    }
    let non_push: Vec<_> = replies
        .iter()
        .filter(|r| !matches!(r, Reply::Push(_)))
        .cloned()
        .collect();
    assert_eq!(non_push.len(), 3);
    assert_eq!(non_push[0], Reply::Status("PONG".into()));
    assert!(non_push[1].error_text().contains("disabled by leasegate"));
    assert_eq!(non_push[2], Reply::Status("PONG".into()));
}

#[test]
fn blpop_is_woken_by_another_client() {
    let (_redis, proxy) = redis_and_proxy("");
    let mut waiter = proxy.client();
    let mut pusher = proxy.client();
    waiter.send(&["BLPOP", "queue", "5"]);
    assert_eq!(
        waiter.try_read(Duration::from_millis(200)),
        None,
        "BLPOP blocks"
    );
    assert_eq!(pusher.cmd(&["RPUSH", "queue", "job"]), Reply::Int(1));
    assert_eq!(
        waiter.read(),
        Reply::Array(vec![Reply::bulk("queue"), Reply::bulk("job")])
    );
}

#[test]
fn select_is_isolated_between_clients() {
    let (_redis, proxy) = redis_and_proxy("");
    let mut a = proxy.client();
    let mut b = proxy.client();
    assert_eq!(a.cmd(&["SELECT", "3"]), Reply::ok());
    assert_eq!(a.cmd(&["SET", "db", "three"]), Reply::ok());
    assert_eq!(b.cmd(&["GET", "db"]), Reply::Nil, "b is still in db 0");
    assert_eq!(b.cmd(&["SELECT", "3"]), Reply::ok());
    assert_eq!(b.cmd(&["GET", "db"]), Reply::bulk("three"));
}

#[test]
fn auth_against_a_password_protected_backend() {
    let redis = RedisServer::start_with(&["--requirepass", "s3cret"]);
    // backend.password is for leasegate's own connections; it must not
    // authenticate clients.
    let proxy = Proxy::start_with_backend_yaml(
        &format!("backend:\n  addr: {}\n  password: s3cret\n", redis.addr()),
        "",
    );
    let mut c = proxy.client();
    assert!(c.cmd(&["GET", "x"]).error_text().starts_with("NOAUTH"));
    assert!(c.cmd(&["AUTH", "wrong"]).error_text().contains("WRONGPASS"));
    assert_eq!(c.cmd(&["AUTH", "s3cret"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "x", "1"]), Reply::ok());
    let mut h = proxy.client();
    let (Reply::Map(_) | Reply::Array(_)) = h.cmd(&["HELLO", "2", "AUTH", "default", "s3cret"])
    else {
        panic!("HELLO with AUTH succeeds")
    };
    assert_eq!(h.cmd(&["GET", "x"]), Reply::bulk("1"));
}

#[test]
fn sixty_four_mib_value_round_trip() {
    let (_redis, proxy) = redis_and_proxy("");
    let mut c = proxy.client();
    let value: Vec<u8> = (0..64 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    c.send_raw(&encode(&[b"SET", b"big", &value]));
    assert_eq!(c.read(), Reply::ok());
    assert_eq!(c.cmd(&["STRLEN", "big"]), Reply::Int(64 * 1024 * 1024));
    let Reply::Bulk(back) = c.cmd(&["GET", "big"]) else {
        panic!("GET big returns a bulk string")
    };
    assert!(back == value, "value changed in transit");
}

#[test]
fn monitor_streams_commands_of_other_clients() {
    let (_redis, proxy) = redis_and_proxy("");
    let mut m = proxy.client();
    assert_eq!(m.cmd(&["MONITOR"]), Reply::ok());
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["SET", "watched", "1"]), Reply::ok());
    let line = loop {
        let Reply::Status(line) = m.read() else {
            panic!("MONITOR lines are status replies")
        };
        if line.contains("watched") {
            break line;
        }
    };
    assert!(line.contains("\"SET\" \"watched\" \"1\""), "{line}");
}

/// A Redis replica can replicate through leasegate: `PSYNC`, the RDB payload
/// (not CRLF-terminated), the command stream and the replica's `REPLCONF ACK`
/// pass through unchanged.
#[test]
fn a_redis_replica_syncs_through_leasegate() {
    let redis = RedisServer::start_with(&["--repl-diskless-sync-delay", "0"]);
    let proxy = Proxy::start(&redis.addr(), "");
    let mut app = proxy.client();
    assert_eq!(app.cmd(&["SET", "before", "1"]), Reply::ok());
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &proxy.port.to_string()]);
    let mut direct = replica.client();
    let start = std::time::Instant::now();
    while direct.cmd(&["GET", "before"]) != Reply::bulk("1") {
        assert!(
            start.elapsed() < PATIENCE,
            "the replica never synced through leasegate"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(app.cmd(&["SET", "after", "2"]), Reply::ok());
    while direct.cmd(&["GET", "after"]) != Reply::bulk("2") {
        assert!(
            start.elapsed() < PATIENCE,
            "the command stream did not reach the replica"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(redis);
}

/// RESP2 `(P)UNSUBSCRIBE` is answered by one confirmation for each channel
/// or pattern it names (or, bare, for each subscription of its kind, at
/// least one), each with the count left. Taken as the end of subscribe
/// mode at the first count of zero, the rest were taken for the replies of
/// the requests behind it, and every reply after was one off: with the
/// lease lapsed, `UNSUBSCRIBE news sports; SELECT 0; SET ...` got the
/// fenced error for SELECT and `+OK` for the SET, which the node never
/// got (an attack pass). Every reply now lands where the node puts it.
#[test]
fn unsubscribe_confirmations_keep_every_reply_in_its_place() {
    let redis = RedisServer::start();
    let open = Proxy::start(&redis.addr(), "");
    let pipelines: [&[&[&str]]; 6] = [
        &[
            &["UNSUBSCRIBE", "news", "sports"],
            &["SELECT", "0"],
            &["SET", "k", "v"],
            &["GET", "k"],
        ],
        &[&["UNSUBSCRIBE"], &["UNSUBSCRIBE"], &["PING"]],
        &[
            &["PUNSUBSCRIBE", "p*"],
            &["PUNSUBSCRIBE", "q*", "r*"],
            &["PING"],
        ],
        &[&["SUBSCRIBE", "a"], &["UNSUBSCRIBE", "a", "b"], &["PING"]],
        &[
            &["SUBSCRIBE", "a", "b"],
            &["PSUBSCRIBE", "p*"],
            &["UNSUBSCRIBE"],
            &["PUNSUBSCRIBE"],
            &["GET", "k"],
        ],
        &[
            &["SUBSCRIBE", "a"],
            &["PSUBSCRIBE", "p*", "q*"],
            &["PUNSUBSCRIBE"],
            &["UNSUBSCRIBE"],
            &["PING"],
        ],
    ];
    // Replies: one per request, plus one per further confirmation.
    let counts = [5, 3, 4, 4, 7, 7];
    for (pipeline, n) in pipelines.iter().zip(counts) {
        let run = |c: &mut support::Client| -> Vec<Reply> {
            for request in pipeline.iter() {
                c.send(request);
            }
            let replies = (0..n).map(|_| c.read()).collect();
            assert_eq!(
                c.try_read(Duration::from_millis(100)),
                None,
                "{pipeline:?}: no more"
            );
            replies
        };
        let direct = run(&mut redis.client());
        assert_eq!(run(&mut open.client()), direct, "{pipeline:?}");
    }
    // With the lease lapsed, the refusal lands on the write itself.
    let fenced = Proxy::start(&redis.addr(), "lease:\n  mode: block-write\n");
    let mut c = fenced.client();
    for request in pipelines[0] {
        c.send(request);
    }
    let replies: Vec<Reply> = (0..5).map(|_| c.read()).collect();
    assert_eq!(replies[2], Reply::ok(), "SELECT: {replies:?}");
    assert!(
        replies[3].error_text().contains("master lease expired"),
        "the SET is refused: {replies:?}"
    );
    assert_eq!(replies[4], Reply::bulk("v"), "GET: {replies:?}");
}

/// The other ways a subscribe-family request is answered: one error for
/// all its channels (`-NOAUTH`), RESP3's bare `UNSUBSCRIBE` with nothing
/// subscribed (a push whose channel is `_`), and a transaction (refused
/// there: its confirmations would come inside EXEC's reply). Each left the
/// queue waiting for confirmations that never came, and the fenced write
/// behind it was answered with the next request's `+OK` (a review and a
/// differential fuzzer).
#[test]
fn every_answer_to_a_subscribe_keeps_the_replies_behind_it_in_place() {
    let redis = RedisServer::start_with(&["--requirepass", "pw"]);
    let fenced = Proxy::start_with_backend_yaml(
        &format!("backend:\n  addr: {}\n  password: pw\n", redis.addr()),
        "lease:\n  mode: block-write\n",
    );
    let tail: [&[&str]; 3] = [&["SET", "k", "v"], &["SELECT", "0"], &["ECHO", "z"]];
    let check = |c: &mut support::Client, what: &str| {
        let fenced_set = c.read();
        assert!(
            fenced_set.error_text().contains("master lease expired"),
            "{what}: the SET is refused: {fenced_set:?}"
        );
        assert_eq!(c.read(), Reply::ok(), "{what}: SELECT");
        assert_eq!(c.read(), Reply::bulk("z"), "{what}: ECHO");
    };
    // One error for two patterns.
    let mut c = fenced.client();
    c.send(&["PSUBSCRIBE", "c*", "x*"]);
    c.send(&["AUTH", "pw"]);
    tail.iter().for_each(|r| c.send(r));
    assert!(c.read().error_text().starts_with("NOAUTH"));
    assert_eq!(c.read(), Reply::ok(), "AUTH");
    check(&mut c, "after -NOAUTH");
    // RESP3, nothing subscribed.
    let mut c = fenced.client();
    assert_eq!(c.cmd(&["AUTH", "pw"]), Reply::ok());
    c.send(&["HELLO", "3"]);
    c.resp3 = true;
    assert!(matches!(c.read(), Reply::Map(_)));
    c.send(&["UNSUBSCRIBE"]);
    tail.iter().for_each(|r| c.send(r));
    assert!(matches!(c.read(), Reply::Push(_)), "the confirmation");
    check(&mut c, "after RESP3's bare UNSUBSCRIBE");
    // In a transaction.
    let mut c = fenced.client();
    assert_eq!(c.cmd(&["AUTH", "pw"]), Reply::ok());
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    let refused = c.cmd(&["SUBSCRIBE", "a", "b"]);
    assert!(
        refused
            .error_text()
            .contains("not taken inside a transaction"),
        "{refused:?}"
    );
    assert!(c.cmd(&["EXEC"]).error_text().starts_with("EXECABORT"));
    tail.iter().for_each(|r| c.send(r));
    check(&mut c, "after the transaction");
}
