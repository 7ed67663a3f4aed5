//! Framing edge cases, bad input and the deny list, through the real binary.

mod support;

use support::{encode, redis_and_proxy, Reply};

#[test]
fn inline_commands_as_typed_in_telnet() {
    let (_redis, proxy) = redis_and_proxy("commands:\n  deny: [FLUSHALL]\n");
    let mut c = proxy.client();
    c.send_raw(b"PING\r\n");
    assert_eq!(c.read(), Reply::Status("PONG".into()));
    c.send_raw(b"SET greeting \"hello world\"\r\n\r\nGET greeting\n");
    assert_eq!(c.read(), Reply::ok());
    assert_eq!(
        c.read(),
        Reply::bulk("hello world"),
        "blank line answered nothing"
    );
    // Quoting does not get a denied command past the deny list.
    c.send_raw(b"\"flush\\x61ll\"\r\n");
    assert!(c.read().error_text().contains("'flushall' is disabled"));
    assert_eq!(c.cmd(&["GET", "greeting"]), Reply::bulk("hello world"));
}

#[test]
fn malformed_input_closes_only_that_client() {
    let (_redis, proxy) =
        redis_and_proxy("limits:\n  max_bulk_len: 1024\n  max_multibulk_len: 16\n");
    let mut bystander = proxy.client();
    assert_eq!(bystander.cmd(&["SET", "safe", "1"]), Reply::ok());

    let cases: [(&[u8], &str); 5] = [
        (b"*abc\r\n", "Protocol error: invalid multibulk length"),
        (b"*17\r\n", "Protocol error: invalid multibulk length"),
        (b"*1\r\n$2048\r\n", "Protocol error: invalid bulk length"),
        (
            b"*2\r\n$3\r\nGET\r\n:1\r\n",
            "Protocol error: expected '$', got ':'",
        ),
        (
            b"SET a \"unterminated\r\n",
            "Protocol error: unbalanced quotes in request",
        ),
    ];
    for (input, want) in cases {
        let mut c = proxy.client();
        // A valid request before the bad one is still answered, in order.
        c.send(&["PING"]);
        c.send_raw(input);
        assert_eq!(c.read(), Reply::Status("PONG".into()));
        let err = c.read();
        assert_eq!(err.error_text(), format!("ERR {want}"), "{input:?}");
        assert!(c.is_closed(), "client is closed after {input:?}");
    }
    assert_eq!(bystander.cmd(&["GET", "safe"]), Reply::bulk("1"));
}

#[test]
fn deny_list_answers_in_pipeline_position_and_forwards_nothing() {
    let (redis, proxy) = redis_and_proxy("commands:\n  deny: [FLUSHALL, KEYS]\n");
    let mut c = proxy.client();
    let mut pipeline = Vec::new();
    pipeline.extend(encode(&[b"SET", b"a", b"1"]));
    pipeline.extend(encode(&[b"FLUSHALL"]));
    pipeline.extend(encode(&[b"GET", b"a"]));
    pipeline.extend(encode(&[b"keys", b"*"]));
    pipeline.extend(encode(&[b"INCR", b"n"]));
    c.send_raw(&pipeline);
    assert_eq!(c.read(), Reply::ok());
    assert_eq!(
        c.read().error_text(),
        "ERR command 'flushall' is disabled by leasegate"
    );
    assert_eq!(c.read(), Reply::bulk("1"));
    assert_eq!(
        c.read().error_text(),
        "ERR command 'keys' is disabled by leasegate"
    );
    assert_eq!(c.read(), Reply::Int(1));
    // The node never saw FLUSHALL: the key is still there.
    let mut direct = redis.client();
    assert_eq!(direct.cmd(&["GET", "a"]), Reply::bulk("1"));
    let Reply::Bulk(stats) = direct.cmd(&["INFO", "commandstats"]) else {
        panic!("INFO is a bulk string")
    };
    let stats = String::from_utf8_lossy(&stats);
    assert!(!stats.contains("cmdstat_flushall"), "{stats}");
    assert!(!stats.contains("cmdstat_keys"), "{stats}");
}

#[test]
fn denied_command_inside_multi_aborts_the_transaction() {
    let (redis, proxy) = redis_and_proxy("commands:\n  deny: [FLUSHALL]\n");
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "tx", "1"]), Reply::Status("QUEUED".into()));
    assert!(c
        .cmd(&["FLUSHALL"])
        .error_text()
        .contains("disabled by leasegate"));
    assert_eq!(
        c.cmd(&["EXEC"]).error_text(),
        "EXECABORT Transaction discarded because of previous errors."
    );
    // Nothing of the transaction was applied, and the connection is usable.
    assert_eq!(redis.client().cmd(&["EXISTS", "tx"]), Reply::Int(0));
    assert_eq!(c.cmd(&["SET", "after", "1"]), Reply::ok());
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
}

#[test]
fn large_request_in_small_pieces() {
    let (_redis, proxy) = redis_and_proxy("");
    let mut c = proxy.client();
    let value = vec![b'x'; 4 * 1024 * 1024];
    let req = encode(&[b"SET", b"pieces", &value]);
    for chunk in req.chunks(1000) {
        c.send_raw(chunk);
    }
    assert_eq!(c.read(), Reply::ok());
    assert_eq!(c.cmd(&["STRLEN", "pieces"]), Reply::Int(4 * 1024 * 1024));
}

/// Inline spellings of FLUSHALL that Redis runs as FLUSHALL. Redis splits an
/// inline line with `sdssplitargs`: every C `isspace` byte (space, `\t`,
/// `\n`, `\v`, `\f`, `\r`) may stand before an argument, and quotes and
/// escapes are decoded.
const FLUSHALL_SPELLINGS: [&[u8]; 10] = [
    b"\x0bFLUSHALL\r\n",
    b"\x0cFLUSHALL\r\n",
    b"\tFLUSHALL\r\n",
    b"\r\x0b\x0c\t FLUSHALL\r\n",
    b"FLUSHALL\r\r\n",
    b"FLUSHALL\t\x0b\r\n",
    b"\x0bFLUSHALL \x0bASYNC \x0c\r\n",
    b"\x0b\"FLUSH\\x41LL\"\x0c\r\n",
    b"\x0c'flushall'\x0b\n",
    b"\x0b\"\\x66lushall\"\x0b\"sync\"\r\n",
];

#[test]
fn deny_list_holds_for_every_inline_separator_and_quoting() {
    let (redis, proxy) = redis_and_proxy("commands:\n  deny: [FLUSHALL]\n");
    let mut c = proxy.client();
    assert_eq!(c.cmd(&["SET", "survivor", "1"]), Reply::ok());
    for spelling in FLUSHALL_SPELLINGS {
        c.send_raw(spelling);
        let reply = c.read();
        assert!(
            reply.is_error() && reply.error_text().contains("'flushall' is disabled"),
            "{spelling:?} was not refused by leasegate: {reply:?}"
        );
    }
    // `\v` and `\f` end no unquoted word in Redis: there `FLUSHALL\v` is the
    // unknown command "FLUSHALL\v", so leasegate forwards it like any unknown
    // command and the node refuses it.
    c.send_raw(b"FLUSHALL\x0b\r\n");
    let reply = c.read();
    assert!(
        reply.is_error()
            && reply
                .error_text()
                .contains("unknown command 'FLUSHALL\x0b'"),
        "{reply:?}"
    );
    assert_eq!(c.cmd(&["GET", "survivor"]), Reply::bulk("1"));
    let mut direct = redis.client();
    assert_eq!(direct.cmd(&["GET", "survivor"]), Reply::bulk("1"));
    let Reply::Bulk(stats) = direct.cmd(&["INFO", "commandstats"]) else {
        panic!("INFO is a bulk string")
    };
    let stats = String::from_utf8_lossy(&stats);
    assert!(!stats.contains("cmdstat_flushall"), "{stats}");
    // Each spelling is FLUSHALL to the node itself.
    for spelling in FLUSHALL_SPELLINGS {
        assert_eq!(direct.cmd(&["SET", "doomed", "1"]), Reply::ok());
        direct.send_raw(spelling);
        assert_eq!(direct.read(), Reply::ok(), "{spelling:?}");
        assert_eq!(
            direct.cmd(&["EXISTS", "doomed"]),
            Reply::Int(0),
            "{spelling:?}"
        );
    }
}

/// Lines whose splitting is easy to get wrong; each is checked against the
/// node itself.
const TRICKY_LINES: [&[u8]; 24] = [
    b"a b",
    b"\x0ba\x0b b",
    b"a\x0cb \x0cc\x0c",
    b"\ta\t\tb\t",
    b"a\rb",
    b"  a  \r  b  ",
    b"a\x0b\x0c\t\r b",
    b"\"a b\" 'c d'",
    b"\"a\\x41\\x4a\\x4Zb\"",
    b"\"\\x+f\" \"\\x4\"",
    b"\"\\n\\r\\t\\b\\a\\z\\\\\\\"\"",
    b"'it\\'s' 'a\\nb'",
    b"\"\" ''",
    b"x\"a b\"",
    b"x'a b'",
    b"\"a\"\x0b'b'\x0c\"c\"\tz",
    b"\"a\"b",
    b"'a'b",
    b"\"a",
    b"'a",
    b"\"a\\\"",
    b"'a\\'",
    b"a\"b\"c",
    b"\"\xff\xfe\" \xff",
];

#[test]
fn inline_arguments_are_split_as_redis_splits_them() {
    use leasegate::resp::request::{arguments, Limits, ProtocolError, RequestFramer};
    let redis = support::RedisServer::start();
    let limits = Limits {
        max_bulk_len: 1024,
        max_multibulk_len: 1024,
        max_inline_len: 1024,
        max_request_len: 1 << 20,
    };
    for (i, line) in TRICKY_LINES.iter().enumerate() {
        // After "RPUSH key " the line is split exactly as at the start of a line.
        let mut request = format!("RPUSH l{i} ").into_bytes();
        request.extend_from_slice(line);
        request.extend_from_slice(b"\r\n");
        let framed = RequestFramer::new(limits).next(&request);
        let mut c = redis.client();
        c.send_raw(&request);
        let reply = c.read();
        if reply.is_error() {
            assert_eq!(
                reply.error_text(),
                "ERR Protocol error: unbalanced quotes in request",
                "{line:?}"
            );
            assert_eq!(
                framed.map(|_| ()),
                Err(ProtocolError::UnbalancedQuotes),
                "{line:?}"
            );
            continue;
        }
        let head = framed
            .unwrap_or_else(|e| panic!("{line:?}: {e}"))
            .expect("a complete request");
        assert_eq!(head.len, request.len(), "{line:?}");
        assert!(head.name(&request).is(b"rpush"), "{line:?}");
        let Reply::Int(pushed) = reply else {
            panic!("{line:?}: {reply:?}")
        };
        assert_eq!(head.argc, pushed as u64 + 2, "{line:?}");
        let Reply::Array(items) = c.cmd(&["LRANGE", &format!("l{i}"), "0", "-1"]) else {
            panic!("LRANGE is an array")
        };
        let theirs: Vec<Vec<u8>> = items
            .into_iter()
            .map(|item| match item {
                Reply::Bulk(b) => b,
                other => panic!("{other:?}"),
            })
            .collect();
        let ours = arguments(&request, true);
        assert_eq!(ours[2..], theirs[..], "{line:?}");
        assert_eq!(
            head.sub(&request).as_bytes(),
            format!("l{i}").as_bytes(),
            "{line:?}"
        );
    }
}
