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
