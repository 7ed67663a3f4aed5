//! Tests of [`super`]: the request module's unit tests, kept beside it.

use super::*;

fn limits() -> Limits {
    Limits {
        max_bulk_len: 512 * 1024 * 1024,
        max_multibulk_len: 1024 * 1024,
        max_inline_len: 64 * 1024,
        max_request_len: 1 << 30,
    }
}

/// Before the client authenticated: Redis's own limits, with its
/// error texts; a request framed in part when they tighten (its AUTH
/// was refused) is checked against them at its next bytes.
#[test]
fn an_unauthenticated_client_gets_redis_limits() {
    let mut f = RequestFramer::new(limits());
    f.set_unauthenticated(true);
    let eleven: Vec<&[u8]> = vec![b"x"; 11];
    assert_eq!(
        f.next(&resp(&eleven)).err(),
        Some(ProtocolError::UnauthenticatedMultibulk)
    );
    assert_eq!(
        ProtocolError::UnauthenticatedMultibulk.reply().as_ref(),
        b"-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    assert_eq!(
        f.next(b"*1\r\n$16385\r\n").err(),
        Some(ProtocolError::UnauthenticatedBulk)
    );
    let ten: Vec<&[u8]> = vec![b"x"; 10];
    assert!(f.next(&resp(&ten)).expect("ten pass").is_some());
    let big = vec![b'v'; 16 * 1024];
    assert!(f
        .next(&resp(&[b"AUTH", &big]))
        .expect("16 KiB pass")
        .is_some());
    // Authenticated (or an AUTH on its way): the configured limits.
    f.set_unauthenticated(false);
    let many: Vec<&[u8]> = vec![b"x"; 100];
    assert!(f.next(&resp(&many)).expect("100 pass").is_some());
    // A big request begun while an AUTH was on its way, which the node
    // then refused.
    assert!(matches!(
        f.next(b"*2\r\n$3\r\nSET\r\n$100000\r\nvvv"),
        Ok(None)
    ));
    f.set_unauthenticated(true);
    assert_eq!(
        f.next(b"*2\r\n$3\r\nSET\r\n$100000\r\nvvvv").err(),
        Some(ProtocolError::UnauthenticatedBulk)
    );
    f.set_unauthenticated(false);
    let many_header = b"*100\r\n$1\r\nx\r\n";
    assert!(matches!(f.next(many_header), Ok(None)));
    f.set_unauthenticated(true);
    assert_eq!(
        f.next(many_header).err(),
        Some(ProtocolError::UnauthenticatedMultibulk)
    );
}

fn resp(args: &[&[u8]]) -> Vec<u8> {
    crate::resp::encode::request(args).to_vec()
}

/// A framed request, with its name and first argument read (lowercased)
/// from its bytes.
#[derive(Debug)]
struct Framed {
    len: usize,
    argc: u64,
    inline: bool,
    name: Name,
    sub: Name,
}

fn with_words(head: RequestHead, request: &[u8]) -> Framed {
    Framed {
        len: head.len,
        argc: head.argc,
        inline: head.inline,
        name: head.name(request),
        sub: head.sub(request),
    }
}

/// Frames everything in `buf`, feeding it `step` bytes at a time.
fn frame_all(buf: &[u8], step: usize) -> Result<Vec<Framed>, ProtocolError> {
    let mut f = RequestFramer::new(limits());
    let mut out = Vec::new();
    let mut head = 0;
    let mut avail = 0;
    while avail < buf.len() {
        avail = (avail + step).min(buf.len());
        while let Some(r) = f.next(&buf[head..avail])? {
            out.push(with_words(r, &buf[head..head + r.len]));
            head += r.len;
        }
    }
    assert_eq!(head, buf.len(), "bytes left unframed");
    Ok(out)
}

#[test]
fn frames_agree_with_redis_protocol() {
    let mut stream = Vec::new();
    let cmds: Vec<Vec<&[u8]>> = vec![
        vec![b"SET", b"key", b"value"],
        vec![b"get", b"key"],
        vec![b"CONFIG", b"GET", b"maxmemory"],
        vec![b"set", b"k", b""],
        vec![b"ECHO", b"with\r\ninside"],
    ];
    for c in &cmds {
        stream.extend(resp(c));
    }
    for step in [1, 2, 7, 1000] {
        let heads = frame_all(&stream, step).expect("valid");
        assert_eq!(heads.len(), cmds.len());
        let mut at = 0;
        for (h, c) in heads.iter().zip(&cmds) {
            let (frame, used) = redis_protocol::resp2::decode::decode(&stream[at..])
                .expect("oracle decodes")
                .expect("oracle complete");
            assert_eq!(used, h.len, "length differs from redis-protocol");
            let redis_protocol::resp2::types::OwnedFrame::Array(items) = frame else {
                panic!("not an array")
            };
            assert_eq!(items.len() as u64, h.argc);
            assert_eq!(h.name.as_bytes(), c[0].to_ascii_lowercase().as_slice());
            assert_eq!(h.sub.as_bytes(), c[1].to_ascii_lowercase().as_slice());
            at += used;
        }
    }
}

#[test]
fn inline_commands() {
    let heads = frame_all(b"PING\r\nset a  b\nCONFIG get x\r\n\r\n", 3).expect("valid");
    assert_eq!(heads.len(), 4);
    assert!(heads[0].name.is(b"ping") && heads[0].argc == 1 && heads[0].inline);
    assert!(heads[1].name.is(b"set") && heads[1].sub.is(b"a") && heads[1].argc == 3);
    assert!(heads[2].sub.is(b"get"));
    assert_eq!(heads[3].argc, 0, "a blank line is an empty request");
}

#[test]
fn inline_quotes_are_decoded_for_classification() {
    let heads = frame_all(b"\"flush\\x61ll\" 'x y'\r\n", 100).expect("valid");
    assert!(heads[0].name.is(b"flushall"));
    assert!(heads[0].sub.is(b"x y"));
    let mut f = RequestFramer::new(limits());
    assert_eq!(
        f.next(b"set \"a b\r\n").unwrap_err(),
        ProtocolError::UnbalancedQuotes
    );
}

/// The six bytes C's `isspace` accepts.
const BLANKS: [u8; 6] = [b' ', b'\t', b'\n', 0x0b, 0x0c, b'\r'];

fn owned(args: &[&[u8]]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.to_vec()).collect()
}

/// Frames one inline request that must take all of `request`.
fn frame_one(request: &[u8]) -> Framed {
    let head = RequestFramer::new(limits())
        .next(request)
        .expect("valid")
        .expect("complete");
    assert_eq!(head.len, request.len(), "{request:?}");
    assert!(head.inline);
    with_words(head, request)
}

#[test]
fn every_isspace_byte_is_skipped_before_an_argument() {
    for b in BLANKS {
        // Leading, between arguments (after a word's end) and trailing.
        let line = [
            &[b][..],
            b"SET \t",
            &[b, b],
            b"key ",
            &[b],
            b"v",
            b"\t",
            &[b],
        ]
        .concat();
        let want = owned(&[b"SET", b"key", b"v"]);
        assert_eq!(split_args(&line), Ok(want.clone()), "{b:#x}");
        if b == b'\n' {
            continue; // ends the line; see below
        }
        let request = [&line[..], b"\r\n"].concat();
        let head = frame_one(&request);
        assert!(head.name.is(b"set") && head.sub.is(b"key"), "{b:#x}");
        assert_eq!(head.argc, 3, "{b:#x}");
        assert_eq!(arguments(&request, true), want, "{b:#x}");
        // A blank before the name: the denied-command bypass.
        let head = frame_one(&[&[b][..], b"FLUSHALL\r\n"].concat());
        assert!(head.name.is(b"flushall") && head.argc == 1, "{b:#x}");
    }
    // `\n` ends the request: a blank line, then SET.
    let heads = frame_all(b"\nSET key v\r\n", 1).expect("valid");
    assert_eq!(heads.len(), 2);
    assert_eq!(heads[0].argc, 0);
    assert!(heads[1].name.is(b"set") && heads[1].argc == 3);
}

#[test]
fn only_space_tab_and_cr_end_an_unquoted_word() {
    for b in [b' ', b'\t', b'\r'] {
        let request = [b"SET", &[b][..], b"k", &[b], b"v", &[b], b"\r\n"].concat();
        let head = frame_one(&request);
        assert!(head.name.is(b"set") && head.sub.is(b"k") && head.argc == 3);
        assert_eq!(arguments(&request, true), owned(&[b"SET", b"k", b"v"]));
    }
    // `\v` and `\f` inside or after a word belong to it, as in Redis,
    // where `FLUSHALL\v` is an unknown command.
    for b in [0x0b, 0x0c] {
        let request = [b"SET", &[b][..], b"k v", &[b], b"\r\n"].concat();
        let head = frame_one(&request);
        assert_eq!(head.name.as_bytes(), [&b"set"[..], &[b], b"k"].concat());
        assert_eq!(head.sub.as_bytes(), [b'v', b]);
        assert_eq!(head.argc, 2);
        let set_k = [&b"SET"[..], &[b], b"k"].concat();
        assert_eq!(arguments(&request, true), vec![set_k, vec![b'v', b]]);
        let head = frame_one(&[&b"FLUSHALL"[..], &[b], b"\r\n"].concat());
        assert_eq!(head.name.as_bytes(), [&b"flushall"[..], &[b]].concat());
    }
}

#[test]
fn the_line_ends_at_its_first_newline_less_one_cr() {
    let head = frame_one(b"PING\r\r\n");
    assert!(head.name.is(b"ping") && head.argc == 1);
    assert_eq!(arguments(b"PING\r\r\n", true), owned(&[b"PING"]));
    let head = frame_one(b"ECHO \"a\r\"\r\n");
    assert_eq!(head.sub.as_bytes(), b"a\r", "a quoted \\r is kept");
    assert_eq!(frame_one(b"\r\r\n").argc, 0);
    assert_eq!(frame_one(b"\r\n").argc, 0);
    let mut f = RequestFramer::new(limits());
    assert!(
        f.next(b"GET k\r").expect("valid").is_none(),
        "no newline yet"
    );
}

/// An inline line with a NUL before its newline never ends, as on
/// redis-server (`strchr`): nothing more completes it, and past the
/// inline limit it is refused. (Framed as complete, a write there was
/// forwarded and counted in flight, and redis-server never answered it:
/// an audit.)
#[test]
fn an_inline_line_with_a_nul_never_ends() {
    for line in [
        &b"FLUSHALL\0 \"x\r\n"[..],
        b"\0FLUSHALL\r\n",
        b"SET k v\0\r\n",
    ] {
        let mut f = RequestFramer::new(limits());
        assert!(matches!(f.next(line), Ok(None)), "{line:?}");
        let mut more = line.to_vec();
        more.extend_from_slice(b"PING\r\n");
        assert!(matches!(f.next(&more), Ok(None)), "{line:?} and more");
        more.resize(limits().max_inline_len + 2, b'x');
        assert!(matches!(f.next(&more), Err(ProtocolError::InlineTooLong)));
        assert!(matches!(f.next(b"PING\r\n"), Ok(Some(h)) if h.argc == 1));
    }
    // The arguments of a line, were one to carry a NUL, end there.
    assert_eq!(split_args(b"GET k\0 x"), Ok(owned(&[b"GET", b"k"])));
    assert_eq!(split_args(b"\"a\0\""), Err(ProtocolError::UnbalancedQuotes));
}

#[test]
fn quotes_and_escapes_follow_sdssplitargs() {
    let ok: [(&[u8], &[&[u8]]); 11] = [
        (b"\"a b\" 'c d'", &[b"a b", b"c d"]),
        (b"x\"a b\" y'c'", &[b"xa b", b"yc"]),
        (b"\"\\x41\\x6a\\x4Z\"", &[b"Ajx4Z"]),
        (b"\"\\x+f\" \"\\x4\"", &[b"x+f", b"x4"]),
        (b"\"\\n\\r\\t\\b\\a\\z\\\\\\\"\"", &[b"\n\r\t\x08\x07z\\\""]),
        (b"'it\\'s' 'a\\nb' '\"'", &[b"it's", b"a\\nb", b"\""]),
        (b"\"\" ''", &[b"", b""]),
        (b"\"a\"\x0b'b'\x0c\"c\"\rd", &[b"a", b"b", b"c", b"d"]),
        (b"\x0b\"FLUSH\\x41LL\"\x0c", &[b"FLUSHALL"]),
        (b"\"\\xff\xfe\"", &[b"\xff\xfe"]),
        (b"'\\x41'", &[b"\\x41"]),
    ];
    for (line, want) in ok {
        assert_eq!(split_args(line), Ok(owned(want)), "{line:?}");
    }
    let unbalanced: [&[u8]; 7] = [
        b"\"a\"b", b"'a'b", b"\"a", b"'a", b"\"a\\\"", b"'a\\'", b"a\"b\"c",
    ];
    for line in unbalanced {
        assert_eq!(
            split_args(line),
            Err(ProtocolError::UnbalancedQuotes),
            "{line:?}"
        );
        let request = [line, b"\r\n"].concat();
        assert_eq!(
            RequestFramer::new(limits()).next(&request).unwrap_err(),
            ProtocolError::UnbalancedQuotes
        );
    }
}

/// The allocation-free path for lines without quotes agrees with
/// `split_args` on every short line over the bytes that matter.
#[test]
fn plain_path_agrees_with_split_args() {
    const ALPHABET: [u8; 11] = [
        b' ', b'\t', b'\r', 0x0b, 0x0c, 0, b'a', b'x', b'"', b'\'', b'\\',
    ];
    let mut line = Vec::new();
    for len in 0..=5u32 {
        for mut code in 0..ALPHABET.len().pow(len) {
            line.clear();
            for _ in 0..len {
                line.push(ALPHABET[code % ALPHABET.len()]);
                code /= ALPHABET.len();
            }
            let request = [&line[..], b"\r\n"].concat();
            let framed = RequestFramer::new(limits()).next(&request);
            if line.contains(&0) {
                // Never ends (`an_inline_line_with_a_nul_never_ends`).
                assert!(matches!(framed, Ok(None)), "{line:?}");
                continue;
            }
            match split_args(&line) {
                Err(e) => assert_eq!(framed.unwrap_err(), e, "{line:?}"),
                Ok(args) => {
                    let head = framed.expect("valid").expect("complete");
                    assert_eq!(head.argc, args.len() as u64, "{line:?}");
                    let name = args.first().map_or(Name::EMPTY, |a| Name::new(a));
                    let sub = args.get(1).map_or(Name::EMPTY, |a| Name::new(a));
                    let head = with_words(head, &request);
                    assert_eq!(head.name.as_bytes(), name.as_bytes(), "{line:?}");
                    assert_eq!(head.sub.as_bytes(), sub.as_bytes(), "{line:?}");
                    assert_eq!(arguments(&request, true), args, "{line:?}");
                }
            }
        }
    }
}

/// The one-pass path takes only what the careful path frames the same
/// way: on every prefix of every request below, followed by the next
/// one (split buffers, names in any case, names over `NAME_CAP`, empty
/// and long arguments, leading zeros, signs, bad bytes), with both
/// limits, `whole_array` either declines or gives the careful head.
#[test]
fn one_pass_agrees_with_the_careful_path() {
    let long_value = vec![b'y'; 12_345];
    let requests: Vec<Vec<u8>> = vec![
        resp(&[b"SET", b"key:__rand_int__", b"xxx"]),
        resp(&[b"get", b"k"]),
        resp(&[b"HgEtAlL", b"h"]),
        resp(&[b"ZRANGEBYSCORE", b"z", b"-inf", b"+inf"]),
        resp(&[&[b'A'; 40][..], b"Sub"]),
        resp(&[b"SET", b"", &[b'v'; 300][..]]),
        resp(&[&[b'x'; 12][..], &long_value]),
        resp(&[b"\0\0\0", b"\0"]),
        b"*1\r\n$03\r\nGET\r\n".to_vec(),
        b"*01\r\n$4\r\nPING\r\n".to_vec(),
        b"*2\r\n$-1\r\n".to_vec(),
        b"*0\r\n".to_vec(),
        b"*-1\r\n".to_vec(),
        b"*1\r\n+GET\r\n".to_vec(),
        b"*+1\r\n$1\r\nx\r\n".to_vec(),
        b"*1\r$1\r\nx\r\n".to_vec(),
        b"*1\r\n$1\rxyz".to_vec(),
        b"*1\r\n$1\r\nxAB".to_vec(),
        b"*1\r\n$1x\r\nx\r\n".to_vec(),
        b"*12\r\n$1\r\nx\r\n".to_vec(),
        b"*1\r\n$1234567890123456789\r\nx\r\n".to_vec(),
    ];
    let small = Limits {
        max_bulk_len: 10,
        max_multibulk_len: 3,
        max_inline_len: 32,
        max_request_len: 64,
    };
    let mut taken = 0;
    for limits in [limits(), small] {
        for (i, r) in requests.iter().enumerate() {
            let next = &requests[(i + 1) % requests.len()];
            let stream = [&r[..], next].concat();
            for end in 1..=stream.len() {
                let buf = &stream[..end];
                let Some(fast) = RequestFramer::new(limits).whole_array(buf) else {
                    continue;
                };
                taken += 1;
                let careful = RequestFramer::new(limits)
                    .start_array(buf)
                    .expect("taken by the one-pass path: valid")
                    .expect("taken by the one-pass path: complete");
                let request = &buf[..careful.len];
                assert_eq!(fast.len, careful.len, "{buf:?}");
                assert_eq!(fast.argc, careful.argc, "{buf:?}");
                assert!(!fast.inline && !fast.quoted);
                let (f, c) = (fast.words(request), careful.words(request));
                assert_eq!((f.name, f.sub), (c.name, c.sub), "{buf:?}");
            }
        }
    }
    assert!(taken > 20, "the one-pass path took {taken} prefixes");
}

/// `short_length` agrees with `plain_length` on every short header.
#[test]
fn short_length_agrees_with_plain_length() {
    const ALPHABET: [u8; 7] = [b'0', b'3', b'9', b'\r', b'\n', b'-', b'a'];
    let mut buf = Vec::new();
    for len in 0..=5u32 {
        for mut code in 0..ALPHABET.len().pow(len) {
            buf.clear();
            buf.push(b'$');
            for _ in 0..len {
                buf.push(ALPHABET[code % ALPHABET.len()]);
                code /= ALPHABET.len();
            }
            assert_eq!(
                crate::resp::short_length(&buf, 1),
                crate::resp::plain_length(&buf, 1),
                "{buf:?}"
            );
        }
    }
}

#[test]
fn empty_arrays_are_skipped() {
    let heads = frame_all(b"*0\r\n*-1\r\n", 1).expect("valid");
    assert!(heads.iter().all(|h| h.argc == 0));
    assert_eq!(heads.len(), 2);
}

#[test]
fn limits_and_malformed_input() {
    let small = Limits {
        max_bulk_len: 10,
        max_multibulk_len: 3,
        max_inline_len: 32,
        max_request_len: 40,
    };
    let cases: [(&[u8], ProtocolError); 8] = [
        // 3 bulks of 10: the third's header would take it past 40 bytes.
        (
            b"*3\r\n$10\r\n0123456789\r\n$10\r\n0123456789\r\n$10\r\n",
            ProtocolError::RequestTooLong,
        ),
        // The same, all there at once (the one-pass path refuses it too).
        (
            b"*3\r\n$10\r\n0123456789\r\n$10\r\n0123456789\r\n$10\r\n0123456789\r\n",
            ProtocolError::RequestTooLong,
        ),
        (b"*4\r\n", ProtocolError::MultibulkLength),
        (b"*x\r\n", ProtocolError::MultibulkLength),
        (b"*1\r\n$11\r\n", ProtocolError::BulkLength),
        (b"*1\r\n$-3\r\n", ProtocolError::BulkLength),
        (b"*1\r\n+GET\r\n", ProtocolError::ExpectedBulk('+')),
        (&[b'a'; 40], ProtocolError::InlineTooLong),
    ];
    for (input, want) in cases {
        let mut f = RequestFramer::new(small);
        assert_eq!(f.next(input).unwrap_err(), want, "{input:?}");
    }
    assert_eq!(
        ProtocolError::MultibulkLength.reply().as_ref(),
        b"-ERR Protocol error: invalid multibulk length\r\n"
    );
    // A header line with no end: Redis's texts differ for the array's
    // and a bulk string's.
    let endless = |head: &[u8]| {
        let mut v = head.to_vec();
        v.resize(head.len() + MAX_HEADER + 1, b'9');
        RequestFramer::new(small).next(&v).unwrap_err()
    };
    assert_eq!(endless(b"*"), ProtocolError::HeaderTooLong);
    assert_eq!(endless(b"*1\r\n$"), ProtocolError::BulkHeaderTooLong);
    assert_eq!(
        ProtocolError::BulkHeaderTooLong.reply().as_ref(),
        b"-ERR Protocol error: too big bulk count string\r\n"
    );
}

#[test]
fn large_request_in_small_pieces_is_linear() {
    // 8 MiB value fed 512 bytes at a time: 16k calls. A framer that
    // re-parsed from the start would scan ~64 GiB here.
    let value = vec![b'v'; 8 * 1024 * 1024];
    let req = resp(&[b"SET", b"big", &value]);
    let mut f = RequestFramer::new(limits());
    let mut calls = 0u32;
    let mut got = None;
    for end in (512..=req.len()).step_by(512).chain([req.len()]) {
        calls += 1;
        if let Some(h) = f.next(&req[..end]).expect("valid") {
            got = Some(h);
            break;
        }
    }
    let h = got.expect("framed");
    assert_eq!(h.len, req.len());
    assert!(calls > 16_000);
}

/// `limits.max_inline_len` bounds the line, not its CRLF: a line of
/// exactly the limit is taken (it was refused: an attack pass).
#[test]
fn an_inline_line_of_the_limit_is_taken() {
    let max = limits().max_inline_len;
    for (len, end) in [(max, &b"\r\n"[..]), (max, b"\n")] {
        let mut line = b"PING ".to_vec();
        line.resize(len, b'x');
        line.extend_from_slice(end);
        let head = RequestFramer::new(limits()).next(&line);
        assert!(matches!(head, Ok(Some(h)) if h.len == line.len()), "{len}");
    }
    let mut line = b"PING ".to_vec();
    line.resize(max + 1, b'x');
    line.extend_from_slice(b"\r\n");
    assert!(matches!(
        RequestFramer::new(limits()).next(&line),
        Err(ProtocolError::InlineTooLong)
    ));
}
