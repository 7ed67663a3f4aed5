//! Property tests of the framers and parsers that read untrusted bytes: the
//! request framer (RESP and inline), the inline tokenizer, the reply framer
//! (RESP2 and RESP3) and the `CLUSTERX SETNODES` parser, each against an
//! independent oracle (see `properties/oracle.rs`, which the `cargo fuzz`
//! targets in `fuzz/` share).
//!
//! This is the stable-toolchain form of the fuzz targets: same properties,
//! generated inputs. `PROPTEST_CASES` sets the number of cases of each
//! property (default 256).

#[path = "properties/oracle.rs"]
mod oracle;

use leasegate::resp::reply::ReplyHead;
use leasegate::resp::request::{arguments, Limits, ProtocolError};
use oracle::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use redis_protocol::resp2::types::OwnedFrame as R2;
use redis_protocol::resp3::types::{OwnedFrame as R3, Resp3Frame, VerbatimStringFormat};

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig::with_cases(cases)
}

/// How a stream is fed: at random cut points, or one byte at a time.
fn feeding() -> impl Strategy<Value = (bool, Vec<usize>)> {
    (prop::bool::weighted(0.2), vec(any::<usize>(), 0..10))
}

fn ends_for(len: usize, (bytewise, cuts): &(bool, Vec<usize>)) -> Vec<usize> {
    if *bytewise {
        (1..=len).collect()
    } else {
        pieces(len, cuts)
    }
}

/// A byte stream that shows itself as `b"..."` when a property fails.
#[derive(Clone)]
struct Stream(Vec<u8>);

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

impl std::ops::Deref for Stream {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

fn concat(parts: Vec<Vec<u8>>) -> Vec<u8> {
    parts.concat()
}

fn bytes_of(items: &[&str]) -> Vec<Vec<u8>> {
    items.iter().map(|s| s.as_bytes().to_vec()).collect()
}

/// Flips, inserts or removes bytes at a few places.
fn mutated(base: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (base, vec((any::<usize>(), any::<u8>(), 0u8..3), 1..4)).prop_map(|(mut s, edits)| {
        for (at, byte, how) in edits {
            let at = at % (s.len() + 1);
            match how {
                0 if at < s.len() => s[at] = byte,
                1 if at < s.len() => {
                    s.remove(at);
                }
                _ => s.insert(at, byte),
            }
        }
        s
    })
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// A request argument: command names, binary, RESP-looking bytes, around
/// and past a `Name`'s 32 bytes, or a few KiB.
fn arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => select(bytes_of(&[
            "SET", "get", "CONFIG", "FlushAll", "multi", "EXEC", "clusterx", "SETNODES", "ping", "",
        ])),
        4 => vec(any::<u8>(), 0..24),
        2 => vec(select(b"\r\n*$:+-0123456789 \"'\\".to_vec()), 0..12),
        1 => vec(any::<u8>(), 25..64),
        1 => vec(any::<u8>(), 512..4096),
    ]
}

/// A piece of an inline line: words, every `isspace` byte but `\n`, quotes,
/// escapes (valid, short, invalid), whole quoted arguments, NUL and high
/// bytes.
fn inline_fragment() -> impl Strategy<Value = Vec<u8>> {
    let escape = select(bytes_of(&[
        "\\x41", "\\x6a", "\\xfF", "\\x00", "\\x4", "\\xg1", "\\x", "\\n", "\\r", "\\t", "\\b",
        "\\a", "\\\\", "\\\"", "\\'", "\\z", "\\",
    ]));
    let word = vec(select(b"aZx09Fl-_.:{}".to_vec()), 1..6);
    let blank = select(bytes_of(&[" ", "\t", "\r", "\x0b", "\x0c", "  "]));
    let body = vec(
        prop_oneof![
            word.clone(),
            escape.clone(),
            blank.clone(),
            Just(b"'".to_vec())
        ],
        0..4,
    )
    .prop_map(concat);
    // What follows a closing quote: mostly a blank (else the quotes are
    // unbalanced), or the end of the line, a word, another quote.
    let after_quote = prop_oneof![
        6 => blank.clone(),
        1 => Just(Vec::new()),
        1 => select(bytes_of(&["x", "\"", "'", "\0"])),
    ];
    let double_quoted =
        (body, after_quote.clone()).prop_map(|(b, sep)| [&b"\""[..], &b, b"\"", &sep].concat());
    let single_quoted = (
        vec(
            prop_oneof![
                word.clone(),
                Just(b"\\'".to_vec()),
                Just(b"\"".to_vec()),
                blank.clone()
            ],
            0..4,
        ),
        after_quote,
    )
        .prop_map(|(b, sep)| [&b"'"[..], &b.concat(), b"'", &sep].concat());
    prop_oneof![
        4 => word,
        3 => blank,
        2 => select(bytes_of(&["\"", "'"])),
        2 => escape,
        3 => double_quoted,
        2 => single_quoted,
        1 => select(vec![vec![0u8], vec![0x80], vec![0xff], b"*".to_vec()]),
    ]
}

/// An inline line (no `\n`): fragments, or any bytes.
fn inline_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(inline_fragment(), 0..10).prop_map(concat),
        1 => vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..40),
    ]
}

#[derive(Debug, Clone)]
enum Req {
    /// An array of bulk strings.
    Resp(Vec<Stream>),
    /// `*0` or `*-1`, which Redis skips.
    Empty { null: bool },
    /// An inline line, ended by `\r\n` or `\n`.
    Inline { line: Stream, crlf: bool },
}

impl Req {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Req::Resp(args) => {
                let frame = R2::Array(args.iter().map(|a| R2::BulkString(a.0.clone())).collect());
                let bytes = encode_resp2(&frame);
                let refs: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
                assert_eq!(
                    leasegate::resp::encode::request(&refs).as_ref(),
                    &bytes[..],
                    "leasegate's encoder and redis-protocol's agree"
                );
                bytes
            }
            Req::Empty { null: false } => b"*0\r\n".to_vec(),
            Req::Empty { null: true } => b"*-1\r\n".to_vec(),
            Req::Inline { line, crlf } => inline_request(line, *crlf),
        }
    }

    /// The arguments Redis finds, or `None` for unbalanced quotes.
    fn expected(&self, bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
        match self {
            Req::Resp(args) => Some(args.iter().map(|a| a.0.clone()).collect()),
            Req::Empty { .. } => Some(Vec::new()),
            Req::Inline { .. } => sdssplitargs(redis_inline_line(bytes)),
        }
    }
}

fn request() -> impl Strategy<Value = Req> {
    prop_oneof![
        6 => vec(arg().prop_map(Stream), 1..6).prop_map(Req::Resp),
        1 => any::<bool>().prop_map(|null| Req::Empty { null }),
        4 => (inline_line().prop_map(Stream), any::<bool>())
            .prop_map(|(line, crlf)| Req::Inline { line, crlf }),
    ]
}

fn request_stream() -> impl Strategy<Value = Vec<u8>> {
    vec(request(), 0..6).prop_map(|reqs| concat(reqs.iter().map(Req::bytes).collect()))
}

/// Garbage that looks like requests often enough to go deep.
fn request_garbage() -> impl Strategy<Value = Stream> {
    let fragment = prop_oneof![
        3 => vec(any::<u8>(), 1..4),
        4 => select(bytes_of(&[
            "*", "$", "\r\n", "\n", "\r", "-1", "0", "1", "2", "3", "01", "+1", "-0",
            "99999999999999999999", "*1\r\n", "*2\r\n$3\r\nGET\r\n", "$3\r\n", "$0\r\n\r\n",
            "\"", "'", " ", "\\x", "\\", "\0", "PING", "set",
        ])),
    ];
    prop_oneof![
        vec(fragment, 0..40).prop_map(concat),
        mutated(request_stream()),
    ]
    .prop_map(Stream)
}

proptest! {
    #![proptest_config(config())]

    /// Well-formed requests, fed in arbitrary pieces, come out as the
    /// commands that were encoded, as `redis-protocol` decodes them (RESP)
    /// and as `sdssplitargs` splits them (inline); an inline line with
    /// unbalanced quotes is the protocol error where Redis has one.
    #[test]
    fn request_framer_finds_the_encoded_commands(
        reqs in vec(request(), 0..8),
        feed in feeding(),
    ) {
        let mut stream = Vec::new();
        let mut want = Vec::new();
        let mut fails = false;
        // Where an inline line that never ends (a NUL before its newline)
        // begins: nothing from there is framed.
        let mut unterminated = None;
        for r in &reqs {
            let bytes = r.bytes();
            if matches!(r, Req::Inline { .. }) && !redis_line_ends(&bytes) && !fails {
                unterminated.get_or_insert(stream.len());
            }
            if !fails && unterminated.is_none() {
                match r.expected(&bytes) {
                    Some(args) => {
                        let inline = matches!(r, Req::Inline { .. });
                        want.push((stream.len(), bytes.len(), args, inline));
                    }
                    None => fails = true,
                }
            }
            stream.extend_from_slice(&bytes);
        }
        let ends = ends_for(stream.len(), &feed);
        let (heads, end) = feed_requests(LIMITS, &stream, &ends);
        prop_assert_eq!(heads.len(), want.len(), "heads {:?}, end {:?}", heads, end);
        for (head, (off, len, args, inline)) in heads.iter().zip(&want) {
            prop_assert_eq!(head.len, *len);
            prop_assert_eq!(head.inline, *inline);
            head_matches_args(head, args).map_err(TestCaseError::fail)?;
            let bytes = &stream[*off..off + len];
            prop_assert_eq!(&arguments(bytes, *inline), args);
            if !inline && !args.is_empty() {
                let (frame, used) = redis_protocol::resp2::decode::decode(&stream[*off..])
                    .expect("redis-protocol decodes")
                    .expect("complete");
                prop_assert_eq!(used, *len);
                let bulks = args.iter().cloned().map(R2::BulkString).collect();
                prop_assert_eq!(frame, R2::Array(bulks));
            }
        }
        if let Some(at) = unterminated {
            prop_assert_eq!(end, End::Incomplete { consumed: at });
        } else if fails {
            prop_assert_eq!(end, End::Error(ProtocolError::UnbalancedQuotes));
        } else {
            prop_assert_eq!(end, End::Incomplete { consumed: stream.len() });
        }
        check_requests(&stream, &ends, LIMITS).map_err(TestCaseError::fail)?;
    }

    /// Any bytes: no panic, the same result in pieces as whole, and
    /// agreement with the oracles wherever they have an opinion.
    #[test]
    fn request_framer_on_garbage(
        stream in request_garbage(),
        feed in feeding(),
        small in any::<bool>(),
    ) {
        let limits = if small { SMALL_LIMITS } else { LIMITS };
        let ends = ends_for(stream.len(), &feed);
        check_requests(&stream, &ends, limits).map_err(TestCaseError::fail)?;
    }

    /// The inline tokenizer (the framer's fast path for plain lines, its
    /// quote decoder, and `arguments`) splits every line as `sdssplitargs`.
    #[test]
    fn inline_tokenizer_follows_sdssplitargs(
        line in inline_line().prop_map(Stream),
        crlf in any::<bool>(),
    ) {
        check_inline(&inline_request(&line, crlf)).map_err(TestCaseError::fail)?;
    }
}

// ---------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------

fn blob() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..16),
        1 => vec(select(b"\r\n*$%|>:".to_vec()), 0..8),
        1 => vec(any::<u8>(), 256..2048),
    ]
}

/// The body of a simple string or error: no CR, no LF.
fn line_bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(
        any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
        0..16,
    )
}

fn line_text() -> impl Strategy<Value = String> {
    "[^\r\n]{0,16}"
}

fn double() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        select(vec![
            0.0,
            -0.0,
            1.5,
            -2.25,
            1e300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN
        ]),
        any::<i32>().prop_map(f64::from),
    ]
}

/// RESP3 scalars usable as map keys and set members (hashable).
fn r3_key() -> impl Strategy<Value = R3> {
    prop_oneof![
        blob().prop_map(|data| R3::BlobString {
            data,
            attributes: None
        }),
        line_bytes().prop_map(|data| R3::SimpleString {
            data,
            attributes: None
        }),
        any::<i64>().prop_map(|data| R3::Number {
            data,
            attributes: None
        }),
        any::<bool>().prop_map(|data| R3::Boolean {
            data,
            attributes: None
        }),
        "-?[1-9][0-9]{0,40}".prop_map(|s| R3::BigNumber {
            data: s.into_bytes(),
            attributes: None
        }),
    ]
}

fn r3_scalar() -> impl Strategy<Value = R3> {
    prop_oneof![
        4 => r3_key(),
        1 => blob().prop_map(|data| R3::BlobError { data, attributes: None }),
        1 => line_text().prop_map(|data| R3::SimpleError { data, attributes: None }),
        1 => Just(R3::Null),
        1 => double().prop_map(|data| R3::Double { data, attributes: None }),
        1 => (any::<bool>(), blob()).prop_map(|(text, data)| R3::VerbatimString {
            data,
            format: if text { VerbatimStringFormat::Text } else { VerbatimStringFormat::Markdown },
            attributes: None,
        }),
    ]
}

/// Any RESP3 reply: nested arrays, maps, sets, pushes, with attributes on
/// any element (the top one included).
fn r3_frame() -> impl Strategy<Value = R3> {
    r3_scalar().prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(|data| R3::Array {
                data,
                attributes: None
            }),
            vec(inner.clone(), 0..6).prop_map(|data| R3::Push {
                data,
                attributes: None
            }),
            vec((r3_key(), inner.clone()), 0..4).prop_map(|kv| R3::Map {
                data: kv.into_iter().collect(),
                attributes: None,
            }),
            vec(r3_key(), 0..5).prop_map(|v| R3::Set {
                data: v.into_iter().collect(),
                attributes: None
            }),
            (inner.clone(), vec((r3_key(), inner), 1..3)).prop_map(|(mut f, attrs)| {
                // Null takes no attributes.
                let _ = f.add_attributes(attrs.into_iter().collect());
                f
            }),
        ]
    })
}

fn r2_frame() -> impl Strategy<Value = R2> {
    let scalar = prop_oneof![
        line_bytes().prop_map(R2::SimpleString),
        line_text().prop_map(R2::Error),
        any::<i64>().prop_map(R2::Integer),
        blob().prop_map(R2::BulkString),
        Just(R2::Null),
    ];
    scalar.prop_recursive(4, 64, 6, |inner| vec(inner, 0..6).prop_map(R2::Array))
}

#[derive(Debug, Clone)]
enum Reply {
    Resp3(R3),
    Resp2(R2),
    /// `*-1`, RESP2's null array (the encoder writes nulls as `$-1`).
    NullArray,
}

impl Reply {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Reply::Resp3(f) => encode_resp3(f),
            Reply::Resp2(f) => encode_resp2(f),
            Reply::NullArray => b"*-1\r\n".to_vec(),
        }
    }

    /// The type byte of the reply, after any attribute.
    fn kind(&self, bytes: &[u8]) -> u8 {
        match self {
            Reply::Resp3(f) => f.kind().to_byte(),
            _ => bytes[0],
        }
    }

    /// The length `redis-protocol`'s decoder of the reply's protocol finds.
    fn decoded_len(&self, rest: &[u8]) -> usize {
        let decoded = match self {
            Reply::Resp3(_) => {
                redis_protocol::resp3::decode::complete::decode(rest).map(|d| d.map(|(_, n)| n))
            }
            _ => redis_protocol::resp2::decode::decode(rest).map(|d| d.map(|(_, n)| n)),
        };
        decoded
            .unwrap_or_else(|e| panic!("redis-protocol decodes its own encoding: {e:?}"))
            .expect("complete")
    }
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        4 => r3_frame().prop_map(Reply::Resp3),
        2 => r2_frame().prop_map(Reply::Resp2),
        1 => Just(Reply::NullArray),
    ]
}

fn reply_stream() -> impl Strategy<Value = Vec<u8>> {
    vec(reply(), 0..4).prop_map(|rs| concat(rs.iter().map(Reply::bytes).collect()))
}

fn reply_garbage() -> impl Strategy<Value = Stream> {
    let fragment = prop_oneof![
        3 => vec(any::<u8>(), 1..4),
        4 => select(bytes_of(&[
            "+OK\r\n", "*", "%", "|", ">", "~", "$", ":", "_", ",", "#", "(", "!", "=", "0", "1",
            "2", "-1", "?", "\r\n", "\n", "\r", "*1\r\n", "%1\r\n", "|1\r\n", "$3\r\nabc\r\n",
            ":1\r\n", "_\r\n", "99999999999999999999",
        ])),
    ];
    prop_oneof![
        vec(fragment, 0..40).prop_map(concat),
        mutated(reply_stream()),
    ]
    .prop_map(Stream)
}

proptest! {
    #![proptest_config(config())]

    /// Replies encoded by `redis-protocol`, fed in arbitrary pieces: the
    /// framer finds the boundaries (and type bytes) its decoder finds.
    #[test]
    fn reply_framer_finds_redis_protocol_boundaries(
        replies in vec(reply(), 0..6),
        feed in feeding(),
    ) {
        let encoded: Vec<Vec<u8>> = replies.iter().map(Reply::bytes).collect();
        let stream = encoded.concat();
        let mut want = Vec::new();
        let mut off = 0;
        for (r, bytes) in replies.iter().zip(&encoded) {
            // The oracle: redis-protocol's decoder, in the stream.
            prop_assert_eq!(r.decoded_len(&stream[off..]), bytes.len(), "{:?}", r);
            want.push(ReplyHead { len: bytes.len(), kind: r.kind(bytes) });
            off += bytes.len();
        }
        let ends = ends_for(stream.len(), &feed);
        let (heads, end) = feed_replies(&stream, &ends);
        prop_assert_eq!(&heads, &want, "replies {:?}", replies);
        prop_assert_eq!(end, End::Incomplete { consumed: stream.len() });
        check_replies(&stream, &ends).map_err(TestCaseError::fail)?;
    }

    /// Any bytes: no panic, the same result in pieces as whole, and the
    /// same boundaries as `redis-protocol` wherever it reads a reply.
    #[test]
    fn reply_framer_on_garbage(stream in reply_garbage(), feed in feeding()) {
        let ends = ends_for(stream.len(), &feed);
        check_replies(&stream, &ends).map_err(TestCaseError::fail)?;
    }
}

// ---------------------------------------------------------------------------
// CLUSTERX SETNODES
// ---------------------------------------------------------------------------

fn node_id() -> impl Strategy<Value = String> {
    "[0-9a-f]{40}"
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(a, b, c)| format!("10.{a}.{b}.{c}")),
        "[a-z][a-z0-9-]{0,10}(\\.[a-z]{1,5}){0,2}",
        Just("::1".to_string()),
    ]
}

fn slots() -> impl Strategy<Value = Vec<(u16, u16)>> {
    vec((0u16..16384, 0u16..512), 0..4).prop_map(|v| {
        v.into_iter()
            .map(|(a, len)| (a, (a + len).min(16383)))
            .collect()
    })
}

fn topology() -> impl Strategy<Value = Topology> {
    (vec(node_id(), 1..8), node_id())
        .prop_flat_map(|(mut ids, unlisted)| {
            ids.sort();
            ids.dedup();
            let n = ids.len();
            let mut masters_of = ids.clone();
            masters_of.push(unlisted);
            let node = (
                prop_oneof![
                    slots().prop_map(Role::Master),
                    select(masters_of).prop_map(Role::Replica),
                ],
                host(),
                1u16..,
                any::<usize>(),
                (
                    0usize..3,
                    [0usize..4, 0usize..4, 0usize..4, 0usize..4, 0usize..4],
                    0usize..3,
                ),
            );
            (Just(ids), vec(node, n), vec(0usize..3, n), any::<bool>())
        })
        .prop_map(|(ids, nodes, blank_lines, final_newline)| Topology {
            nodes: ids
                .into_iter()
                .zip(nodes)
                .map(
                    |(id, (role, host, port, spelling, (lead, gaps, trail)))| Node {
                        id,
                        host,
                        port,
                        role,
                        spelling,
                        lead,
                        gaps,
                        trail,
                    },
                )
                .collect(),
            blank_lines,
            final_newline,
        })
}

/// Text near a topology: a rendered one with characters changed, or any.
fn setnodes_garbage() -> impl Strategy<Value = String> {
    let edits = vec(
        (
            any::<usize>(),
            select(vec![
                ' ', '\n', '\r', '\t', ',', '-', 'x', '\u{0b}', '\u{a0}',
            ]),
            any::<bool>(),
        ),
        1..5,
    );
    prop_oneof![
        (topology(), edits).prop_map(|(t, edits)| {
            let mut s: Vec<char> = t.render().chars().collect();
            for (at, c, insert) in edits {
                let at = at % (s.len() + 1);
                if insert || at == s.len() {
                    s.insert(at, c);
                } else {
                    s[at] = c;
                }
            }
            s.into_iter().collect()
        }),
        any::<String>(),
        "[0-9a-f \n,-]{0,120}",
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Generated topologies, written as Kvrocks accepts them: who is a
    /// master, who a replica, and where a replica's master is, as in the
    /// model.
    #[test]
    fn setnodes_roles_agree_with_the_model(t in topology(), extra in node_id()) {
        t.check(&extra).map_err(TestCaseError::fail)?;
    }

    /// Any text: no panic, and `master_of` only for replicas.
    #[test]
    fn setnodes_on_garbage(text in setnodes_garbage()) {
        check_setnodes_text(&text).map_err(TestCaseError::fail)?;
    }

    /// `key_slot` is Redis Cluster's slot (`redis-protocol`'s
    /// `redis_keyslot`), hash tags included.
    #[test]
    fn key_slot_agrees_with_redis_protocol(
        key in vec(prop_oneof![any::<u8>(), Just(b'{'), Just(b'}')], 0..24),
    ) {
        check_key_slot(&key).map_err(TestCaseError::fail)?;
    }
}

// ---------------------------------------------------------------------------
// Large inputs: the framers finish (each call resumes where the last one
// stopped, so feeding N bytes costs O(N)).
// ---------------------------------------------------------------------------

fn feed_in_steps(len: usize, step: usize) -> Vec<usize> {
    (step..len).step_by(step).chain([len]).collect()
}

#[test]
fn large_requests_in_small_pieces_terminate() {
    // A 2 MiB inline line, 1 KiB at a time.
    let limits = Limits {
        max_inline_len: 4 * 1024 * 1024,
        ..LIMITS
    };
    let mut line = vec![b'a'; 2 * 1024 * 1024];
    line.extend_from_slice(b" b\r\n");
    let (heads, end) = feed_requests(limits, &line, &feed_in_steps(line.len(), 1024));
    assert_eq!(heads.len(), 1);
    assert_eq!(heads[0].argc, 2);
    assert_eq!(
        end,
        End::Incomplete {
            consumed: line.len()
        }
    );

    // 100k arguments, 100 bytes at a time.
    let args: Vec<&[u8]> = std::iter::once(&b"MSET"[..])
        .chain(std::iter::repeat_n(&b"kv"[..], 100_000))
        .collect();
    let req = leasegate::resp::encode::request(&args);
    let (heads, _) = feed_requests(LIMITS, &req, &feed_in_steps(req.len(), 100));
    assert_eq!(heads.len(), 1);
    assert_eq!(heads[0].argc, 100_001);

    // Endless headers: refused once past Redis's 64 KiB.
    for (prefix, error) in [
        (&b"*"[..], ProtocolError::HeaderTooLong),
        (b"*1\r\n$", ProtocolError::BulkHeaderTooLong),
    ] {
        let mut garbage = prefix.to_vec();
        garbage.resize(256 * 1024, b'1');
        let (heads, end) = feed_requests(LIMITS, &garbage, &feed_in_steps(garbage.len(), 1024));
        assert!(heads.is_empty());
        assert_eq!(end, End::Error(error));
    }

    // An endless inline line: refused past the limit.
    let garbage = vec![b'x'; 256 * 1024];
    let (_, end) = feed_requests(LIMITS, &garbage, &feed_in_steps(garbage.len(), 1024));
    assert_eq!(end, End::Error(ProtocolError::InlineTooLong));
}

#[test]
fn large_replies_in_small_pieces_terminate() {
    // A 4 MiB bulk string, 1 KiB at a time.
    let body = vec![b'v'; 4 * 1024 * 1024];
    let bulk = leasegate::resp::encode::bulk(&body);
    let (heads, _) = feed_replies(&bulk, &feed_in_steps(bulk.len(), 1024));
    assert_eq!(
        heads,
        [ReplyHead {
            len: bulk.len(),
            kind: b'$'
        }]
    );

    // 100k nested arrays, 100 bytes at a time.
    let mut nested = b"*1\r\n".repeat(100_000);
    nested.extend_from_slice(b":1\r\n");
    let (heads, _) = feed_replies(&nested, &feed_in_steps(nested.len(), 100));
    assert_eq!(
        heads,
        [ReplyHead {
            len: nested.len(),
            kind: b'*'
        }]
    );

    // A 4 MiB error line (a script's error_reply can be that long), 1 KiB
    // at a time: scanned once, not once per piece.
    let mut line = b"-ERR ".to_vec();
    line.resize(4 * 1024 * 1024, b'e');
    line.extend_from_slice(b"\r\n");
    let (heads, _) = feed_replies(&line, &feed_in_steps(line.len(), 1024));
    assert_eq!(
        heads,
        [ReplyHead {
            len: line.len(),
            kind: b'-'
        }]
    );
}
