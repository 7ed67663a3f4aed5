//! The oracles of the framing and topology properties, shared by
//! `tests/properties.rs` (proptest, stable) and the `cargo fuzz` targets in
//! `fuzz/` (libFuzzer, nightly), which include this file with `#[path]`.
//!
//! * Requests: `redis-protocol`'s RESP2 decoder for arrays of bulk strings,
//!   and [`sdssplitargs`], an independent transcription of Redis's
//!   `sdssplitargs` (sds.c) and of the line end rule of `processInlineBuffer`
//!   (networking.c), for inline commands.
//! * Replies: `redis-protocol`'s RESP3 and RESP2 decoders.
//! * Topology: a model of the `CLUSTERX SETNODES` text ([`Topology`]) that
//!   renders itself in the variants Kvrocks accepts, and
//!   `redis_protocol::redis_keyslot` for the hash slot.
//!
//! Every check returns `Err(description)` on a disagreement, so that
//! proptest can shrink it and a fuzz target can panic with it.

#![allow(dead_code)]

use leasegate::kvrocks::topology;
use leasegate::resp::name::Name;
use leasegate::resp::reply::{ReplyError, ReplyFramer, ReplyHead};
use leasegate::resp::request::{arguments, Limits, ProtocolError, RequestFramer};
use redis_protocol::resp2::types::{OwnedFrame as R2, Resp2Frame};
use redis_protocol::resp3::types::{OwnedFrame as R3, Resp3Frame};

// ---------------------------------------------------------------------------
// sdssplitargs
// ---------------------------------------------------------------------------

/// C's `isspace` in the C locale.
pub fn c_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn is_hex_digit(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || (b'A'..=b'F').contains(&b)
}

fn hex_digit_to_int(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// Redis's `sdssplitargs`, statement by statement: `None` where Redis
/// returns NULL (unbalanced quotes, or a closing quote not followed by a
/// space). The line is read as a C string: it ends at its first NUL.
pub fn sdssplitargs(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    // `*p` of the C code: NUL at and after the end of the C string.
    let end = line.iter().position(|&b| b == 0).unwrap_or(line.len());
    let at = |i: usize| if i < end { line[i] } else { 0 };
    let mut p = 0usize;
    let mut vector = Vec::new();
    loop {
        // skip blanks
        while at(p) != 0 && c_isspace(at(p)) {
            p += 1;
        }
        if at(p) == 0 {
            return Some(vector);
        }
        // get a token
        let (mut inq, mut insq, mut done) = (false, false, false);
        let mut current = Vec::new();
        while !done {
            if inq {
                if at(p) == b'\\'
                    && at(p + 1) == b'x'
                    && is_hex_digit(at(p + 2))
                    && is_hex_digit(at(p + 3))
                {
                    current.push(hex_digit_to_int(at(p + 2)) * 16 + hex_digit_to_int(at(p + 3)));
                    p += 3;
                } else if at(p) == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    current.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        c => c,
                    });
                } else if at(p) == b'"' {
                    // closing quote must be followed by a space or nothing at all
                    if at(p + 1) != 0 && !c_isspace(at(p + 1)) {
                        return None;
                    }
                    done = true;
                } else if at(p) == 0 {
                    return None; // unterminated quotes
                } else {
                    current.push(at(p));
                }
            } else if insq {
                if at(p) == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    current.push(b'\'');
                } else if at(p) == b'\'' {
                    if at(p + 1) != 0 && !c_isspace(at(p + 1)) {
                        return None;
                    }
                    done = true;
                } else if at(p) == 0 {
                    return None;
                } else {
                    current.push(at(p));
                }
            } else {
                match at(p) {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    c => current.push(c),
                }
            }
            if at(p) != 0 {
                p += 1;
            }
        }
        vector.push(current);
    }
}

/// Whether `processInlineBuffer` finds the end of the inline line at the
/// head of `request`: it looks for the `\n` with `strchr`, which stops at
/// a NUL, so a NUL before the newline means the line never ends (until it
/// is past the inline limit).
pub fn redis_line_ends(request: &[u8]) -> bool {
    request
        .iter()
        .find(|&&b| b == b'\n' || b == 0)
        .is_some_and(|&b| b == b'\n')
}

/// The line `processInlineBuffer` hands to `sdssplitargs`: `request` up to
/// its first `\n`, less one `\r` before it.
pub fn redis_inline_line(request: &[u8]) -> &[u8] {
    let nl = request
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(request.len());
    let line = &request[..nl];
    match line.last() {
        Some(b'\r') => &line[..nl - 1],
        _ => line,
    }
}

// ---------------------------------------------------------------------------
// Feeding a framer piecewise
// ---------------------------------------------------------------------------

/// A framed request, comparable (`RequestHead` is not `PartialEq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub len: usize,
    pub argc: u64,
    pub name: Vec<u8>,
    pub sub: Vec<u8>,
    pub inline: bool,
}

/// How feeding ended: an error, or more bytes needed with `consumed`
/// bytes framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End<E> {
    Error(E),
    Incomplete { consumed: usize },
}

/// The byte offsets at which `stream` is cut into pieces: sorted, inside
/// the stream, ending with its length.
pub fn pieces(len: usize, cuts: &[usize]) -> Vec<usize> {
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (len + 1)).collect();
    ends.push(len);
    ends.sort_unstable();
    ends.dedup();
    ends
}

/// Feeds `stream` to a framer's `next`, one piece more at a time, as a
/// session does: each call sees the unconsumed head of everything received.
/// `len` is a framed element's length; every one must lie in what was fed.
fn feed<H, E>(
    stream: &[u8],
    ends: &[usize],
    mut next: impl FnMut(&[u8]) -> Result<Option<H>, E>,
    len: impl Fn(&H) -> usize,
) -> (Vec<H>, End<E>) {
    let mut heads = Vec::new();
    let mut head = 0;
    for &avail in ends {
        loop {
            match next(&stream[head..avail]) {
                Ok(Some(h)) => {
                    let n = len(&h);
                    assert!(
                        n > 0 && head + n <= avail,
                        "element of {n} bytes framed in {} bytes",
                        avail - head
                    );
                    heads.push(h);
                    head += n;
                }
                Ok(None) => break,
                Err(e) => return (heads, End::Error(e)),
            }
        }
    }
    (heads, End::Incomplete { consumed: head })
}

/// Feeds `stream` to a fresh request framer, one piece more at a time.
pub fn feed_requests(
    limits: Limits,
    stream: &[u8],
    ends: &[usize],
) -> (Vec<Head>, End<ProtocolError>) {
    let mut framer = RequestFramer::new(limits);
    // The name and first argument are read from the request's bytes as
    // soon as it is framed, as the session does.
    let next = |b: &[u8]| {
        let framed = framer.next(b)?;
        Ok(framed.map(|h| Head {
            len: h.len,
            argc: h.argc,
            name: h.name(&b[..h.len]).as_bytes().to_vec(),
            sub: h.sub(&b[..h.len]).as_bytes().to_vec(),
            inline: h.inline,
        }))
    };
    feed(stream, ends, next, |h| h.len)
}

/// Feeds `stream` to a fresh reply framer, one piece more at a time.
pub fn feed_replies(stream: &[u8], ends: &[usize]) -> (Vec<ReplyHead>, End<ReplyError>) {
    let mut framer = ReplyFramer::new();
    feed(stream, ends, |b| framer.next(b), |h| h.len)
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// The defaults of `limits:` (Redis's).
pub const LIMITS: Limits = Limits {
    max_bulk_len: 512 * 1024 * 1024,
    max_multibulk_len: 1024 * 1024,
    max_inline_len: 64 * 1024,
    max_request_len: 1 << 30,
};

/// Small limits, so that garbage reaches them.
pub const SMALL_LIMITS: Limits = Limits {
    max_bulk_len: 16,
    max_multibulk_len: 4,
    max_inline_len: 48,
    max_request_len: 64,
};

/// An inline request made of `line` (whose `\n`s are dropped), ended by
/// `\r\n` or `\n`; a space goes before a line that starts with `*` (it
/// would be RESP, for Redis as for leasegate).
pub fn inline_request(line: &[u8], crlf: bool) -> Vec<u8> {
    let line: Vec<u8> = line.iter().copied().filter(|&b| b != b'\n').collect();
    let mut request = Vec::with_capacity(line.len() + 3);
    if line.first() == Some(&b'*') {
        request.push(b' ');
    }
    request.extend_from_slice(&line);
    request.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
    request
}

/// The inline tokenizer (the framer's path for plain lines, its quote
/// decoder, and `arguments`) splits the request as `sdssplitargs` splits
/// the line Redis reads, or fails where it fails.
pub fn check_inline(request: &[u8]) -> Result<(), String> {
    let got = RequestFramer::new(LIMITS).next(request);
    if !redis_line_ends(request) {
        return match got {
            Ok(None) => Ok(()),
            got => Err(format!(
                "{:?}: framer {got:?}, a line that never ends",
                request.escape_ascii().to_string()
            )),
        };
    }
    match (sdssplitargs(redis_inline_line(request)), got) {
        (None, Err(ProtocolError::UnbalancedQuotes)) => Ok(()),
        (Some(args), Ok(Some(h))) if h.len == request.len() && h.inline => {
            let head = Head {
                len: h.len,
                argc: h.argc,
                name: h.name(request).as_bytes().to_vec(),
                sub: h.sub(request).as_bytes().to_vec(),
                inline: true,
            };
            head_matches_args(&head, &args)?;
            let got = arguments(request, true);
            if got != args {
                return Err(format!("arguments() {got:?}, sdssplitargs {args:?}"));
            }
            Ok(())
        }
        (want, got) => Err(format!(
            "{:?}: framer {got:?}, sdssplitargs {want:?}",
            request.escape_ascii().to_string()
        )),
    }
}

/// What the framer must say about a request's arguments: count, and the
/// command name and first argument as the Gate reads them.
pub fn head_matches_args(head: &Head, args: &[Vec<u8>]) -> Result<(), String> {
    let name = args.first().map_or(Name::EMPTY, |a| Name::new(a));
    let sub = args.get(1).map_or(Name::EMPTY, |a| Name::new(a));
    if head.argc != args.len() as u64 || head.name != name.as_bytes() || head.sub != sub.as_bytes()
    {
        return Err(format!(
            "head {head:?} does not describe arguments {args:?}"
        ));
    }
    Ok(())
}

/// A request's length and arguments, as an oracle reads them.
pub type Framed = (usize, Vec<Vec<u8>>);

/// What the inline oracle expects at the head of `rest` (which does not
/// start with `*`): a request of `len` bytes with `args`, an error, or a
/// wait for more bytes.
pub fn expected_inline(rest: &[u8], limits: Limits) -> Result<Option<Framed>, ProtocolError> {
    let nl = rest.iter().position(|&b| b == b'\n');
    let Some(nl) = nl.filter(|_| redis_line_ends(rest)) else {
        // A line of the limit may still end with `\r\n`.
        if rest.len() > limits.max_inline_len + 1 {
            return Err(ProtocolError::InlineTooLong);
        }
        return Ok(None);
    };
    let len = nl + 1;
    // The limit bounds the line, not its line end.
    if redis_inline_line(&rest[..len]).len() > limits.max_inline_len {
        return Err(ProtocolError::InlineTooLong);
    }
    match sdssplitargs(redis_inline_line(&rest[..len])) {
        Some(args) => Ok(Some((len, args))),
        None => Err(ProtocolError::UnbalancedQuotes),
    }
}

/// `redis-protocol`'s reading of the RESP request at the head of `rest`,
/// when it is an array of bulk strings in canonical form (the form every
/// client library sends): its length and arguments. `None` otherwise (an
/// incomplete, invalid, or non-canonical array such as `*01`, `*+1`, a bulk
/// not followed by CRLF, a null element), where the oracle has no opinion
/// beyond the ones Redis itself would differ on.
pub fn canonical_resp_request(rest: &[u8]) -> Option<Framed> {
    let Ok(Some((R2::Array(items), used))) = redis_protocol::resp2::decode::decode(rest) else {
        return None;
    };
    let mut args = Vec::with_capacity(items.len());
    for item in items {
        match item {
            R2::BulkString(b) => args.push(b),
            _ => return None,
        }
    }
    let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    (leasegate::resp::encode::request(&refs).as_ref() == &rest[..used]).then_some((used, args))
}

/// The differential check of the request framer on any byte stream:
///
/// 1. fed in the pieces `ends`, the framer says exactly what it says when
///    fed everything at once (resumability);
/// 2. every inline request it frames is what `sdssplitargs` makes of the
///    same line, and where it stops on an inline line, the oracle says the
///    same error or also waits;
/// 3. where `redis-protocol` finds a canonical array of bulk strings, the
///    framer frames the same length and arguments (or refuses it for a
///    limit); every RESP request it frames that `redis-protocol` reads as
///    an array of bulk strings of the same length has those arguments.
pub fn check_requests(stream: &[u8], ends: &[usize], limits: Limits) -> Result<(), String> {
    let (heads, end) = feed_requests(limits, stream, ends);
    let whole = feed_requests(limits, stream, &[stream.len()]);
    if (heads.clone(), end.clone()) != whole {
        return Err(format!(
            "fed in pieces {ends:?}: {heads:?} {end:?}; fed whole: {whole:?}"
        ));
    }
    let mut off = 0;
    for head in &heads {
        let rest = &stream[off..];
        let bytes = &rest[..head.len];
        if head.inline {
            if rest[0] == b'*' {
                return Err(format!("`*` at {off} framed as inline"));
            }
            match expected_inline(rest, limits) {
                Ok(Some((len, args))) if len == head.len => {
                    head_matches_args(head, &args)?;
                    if arguments(bytes, true) != args {
                        return Err(format!(
                            "arguments() of {bytes:?}: {:?}, sdssplitargs: {args:?}",
                            arguments(bytes, true)
                        ));
                    }
                }
                other => {
                    return Err(format!(
                        "inline request {head:?} at {off}; sdssplitargs oracle: {other:?}"
                    ))
                }
            }
        } else {
            if rest[0] != b'*' {
                return Err(format!("request at {off} framed as RESP: {head:?}"));
            }
            if head.len as u64 > limits.max_request_len {
                return Err(format!(
                    "request at {off} of {} bytes framed past max_request_len {}",
                    head.len, limits.max_request_len
                ));
            }
            if let Some((used, args)) = canonical_resp_request(rest) {
                if used != head.len {
                    return Err(format!(
                        "RESP request at {off}: framer {} bytes, redis-protocol {used}",
                        head.len
                    ));
                }
                head_matches_args(head, &args)?;
            } else if head.argc > 0 {
                if let Ok(Some((R2::Array(items), used))) =
                    redis_protocol::resp2::decode::decode(bytes)
                {
                    if used == head.len && items.iter().all(|i| matches!(i, R2::BulkString(_))) {
                        let args: Vec<Vec<u8>> = items
                            .into_iter()
                            .map(|i| match i {
                                R2::BulkString(b) => b,
                                _ => unreachable!(),
                            })
                            .collect();
                        head_matches_args(head, &args)?;
                    }
                }
            }
        }
        off += head.len;
    }
    // Where the framer stopped.
    let rest = &stream[off..];
    if rest.is_empty() {
        return match end {
            End::Incomplete { .. } => Ok(()),
            End::Error(e) => Err(format!("error {e:?} on no input")),
        };
    }
    if rest[0] == b'*' {
        if let Some((used, args)) = canonical_resp_request(rest) {
            let over_limit = args.len() as u64 > limits.max_multibulk_len
                || args.iter().any(|a| a.len() as u64 > limits.max_bulk_len)
                || used as u64 > limits.max_request_len;
            let limit_error = matches!(
                end,
                End::Error(
                    ProtocolError::MultibulkLength
                        | ProtocolError::BulkLength
                        | ProtocolError::RequestTooLong
                )
            );
            if !(over_limit && limit_error) {
                return Err(format!(
                    "at {off} redis-protocol reads a request of {used} bytes ({} arguments); \
                     framer: {end:?}",
                    args.len()
                ));
            }
        }
        return Ok(());
    }
    match (expected_inline(rest, limits), &end) {
        (Ok(None), End::Incomplete { .. }) => Ok(()),
        (Err(want), End::Error(got)) if want == *got => Ok(()),
        (want, got) => Err(format!(
            "inline at {off}: sdssplitargs oracle {want:?}, framer {got:?}"
        )),
    }
}

// ---------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------

/// `redis-protocol`'s reading of the reply at the head of `rest` when it is
/// canonical (re-encoding the decoded frame gives the same bytes): its
/// length and type byte (after any attribute). RESP3 first, then RESP2.
pub fn canonical_reply(rest: &[u8]) -> Option<(usize, u8)> {
    if let Ok(Some((frame, used))) = redis_protocol::resp3::decode::complete::decode(rest) {
        if resp3_valid_reply(&frame) && encode_resp3(&frame) == rest[..used] {
            return Some((used, frame.kind().to_byte()));
        }
    }
    if let Ok(Some((frame, used))) = redis_protocol::resp2::decode::decode(rest) {
        if resp2_lines_valid(&frame) && encode_resp2(&frame) == rest[..used] {
            return Some((used, rest[0]));
        }
    }
    None
}

/// A line (`+...`, `:...`) holds no CR or LF in valid RESP. On one that
/// does, the oracle has no opinion: `redis-protocol` reads up to CRLF and
/// takes a lone LF for content, the framer ends the line at the first LF.
fn line_valid(line: &[u8]) -> bool {
    !line.iter().any(|&b| b == b'\r' || b == b'\n')
}

/// A reply the framer is meant to read: valid lines, and only the types of
/// replies (not `HELLO`, a request, nor the `;` chunks of streamed strings,
/// which leasegate does not support, at any depth).
fn resp3_valid_reply(frame: &R3) -> bool {
    if !b"+-:_,#($!=*~>%|".contains(&frame.kind().to_byte()) {
        return false;
    }
    let own = match frame {
        R3::SimpleString { data, .. } | R3::BigNumber { data, .. } => line_valid(data),
        R3::SimpleError { data, .. } => line_valid(data.as_bytes()),
        R3::Array { data, .. } | R3::Push { data, .. } => data.iter().all(resp3_valid_reply),
        R3::Set { data, .. } => data.iter().all(resp3_valid_reply),
        R3::Map { data, .. } => data
            .iter()
            .all(|(k, v)| resp3_valid_reply(k) && resp3_valid_reply(v)),
        _ => true,
    };
    own && frame
        .attributes()
        .into_iter()
        .flatten()
        .all(|(k, v)| resp3_valid_reply(k) && resp3_valid_reply(v))
}

fn resp2_lines_valid(frame: &R2) -> bool {
    match frame {
        R2::SimpleString(data) => line_valid(data),
        R2::Error(data) => line_valid(data.as_bytes()),
        R2::Array(items) => items.iter().all(resp2_lines_valid),
        _ => true,
    }
}

pub fn encode_resp3(frame: &R3) -> Vec<u8> {
    let mut buf = vec![0; frame.encode_len(false)];
    let n = redis_protocol::resp3::encode::complete::encode(&mut buf, frame, false)
        .expect("redis-protocol encodes its own frame");
    buf.truncate(n);
    buf
}

pub fn encode_resp2(frame: &R2) -> Vec<u8> {
    let mut buf = vec![0; frame.encode_len(false)];
    let n = redis_protocol::resp2::encode::encode(&mut buf, frame, false)
        .expect("redis-protocol encodes its own frame");
    buf.truncate(n);
    buf
}

/// The differential check of the reply framer on any byte stream:
/// resumability (pieces agree with the whole), and wherever
/// `redis-protocol` decodes a canonical reply at a boundary the framer
/// reached, the framer frames the same length and type.
pub fn check_replies(stream: &[u8], ends: &[usize]) -> Result<(), String> {
    let (heads, end) = feed_replies(stream, ends);
    let whole = feed_replies(stream, &[stream.len()]);
    if (heads.clone(), end.clone()) != whole {
        return Err(format!(
            "fed in pieces {ends:?}: {heads:?} {end:?}; fed whole: {whole:?}"
        ));
    }
    let mut off = 0;
    for head in &heads {
        if let Some((used, kind)) = canonical_reply(&stream[off..]) {
            if (used, kind) != (head.len, head.kind) {
                return Err(format!(
                    "reply at {off}: framer {head:?}, redis-protocol {used} bytes of type {:?}",
                    kind as char
                ));
            }
        }
        off += head.len;
    }
    if let Some((used, _)) = canonical_reply(&stream[off..]) {
        return Err(format!(
            "at {off} redis-protocol reads a reply of {used} bytes; framer: {end:?}"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// CLUSTERX SETNODES
// ---------------------------------------------------------------------------

/// One node of a generated topology.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    pub host: String,
    pub port: u16,
    pub role: Role,
    /// How the line is written: the spelling of the role, spaces before and
    /// between fields, spaces after.
    pub spelling: usize,
    pub lead: usize,
    pub gaps: [usize; 5],
    pub trail: usize,
}

#[derive(Debug, Clone)]
pub enum Role {
    /// `master -` and its slot ranges (`a-b`, or `a` when a == b).
    Master(Vec<(u16, u16)>),
    /// `slave <master id>`.
    Replica(String),
}

/// A `CLUSTERX SETNODES` topology: the nodes, the blank lines after each,
/// and whether the text ends with a newline.
#[derive(Debug, Clone)]
pub struct Topology {
    pub nodes: Vec<Node>,
    pub blank_lines: Vec<usize>,
    pub final_newline: bool,
}

/// Role spellings Kvrocks and kvrocks-controller use (the role is
/// case-insensitive; newer controllers write `slave,fail`).
pub const MASTER_SPELLINGS: [&str; 3] = ["master", "MASTER", "Master"];
pub const REPLICA_SPELLINGS: [&str; 5] = ["slave", "SLAVE", "replica", "Replica", "slave,fail"];

impl Topology {
    /// The text as Kvrocks accepts it: fields separated by one or more
    /// spaces, lines by `\n`, blank lines skipped.
    pub fn render(&self) -> String {
        let sp = |k: usize| " ".repeat(k);
        let mut lines = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let mut line = format!(
                "{}{}{}{}{}{}{}",
                sp(n.lead),
                n.id,
                sp(n.gaps[0].max(1)),
                n.host,
                sp(n.gaps[1].max(1)),
                n.port,
                sp(n.gaps[2].max(1)),
            );
            match &n.role {
                Role::Master(slots) => {
                    line += MASTER_SPELLINGS[n.spelling % MASTER_SPELLINGS.len()];
                    line += &sp(n.gaps[3].max(1));
                    line += "-";
                    for (a, b) in slots {
                        line += &sp(n.gaps[4].max(1));
                        line += &if a == b {
                            a.to_string()
                        } else {
                            format!("{a}-{b}")
                        };
                    }
                }
                Role::Replica(of) => {
                    line += REPLICA_SPELLINGS[n.spelling % REPLICA_SPELLINGS.len()];
                    line += &sp(n.gaps[3].max(1));
                    line += of;
                }
            }
            line += &sp(n.trail);
            lines.push(line);
            for _ in 0..self.blank_lines.get(i).copied().unwrap_or(0) {
                lines.push(String::new());
            }
        }
        let mut out = lines.join("\n");
        if self.final_newline {
            out.push('\n');
        }
        out
    }

    fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The ids to ask about: every node's, every master named by a replica
    /// (listed or not), `extra`, and near misses (a prefix, a case change).
    pub fn queries(&self, extra: &str) -> Vec<String> {
        let mut q = vec![extra.to_string()];
        for n in &self.nodes {
            q.push(n.id.clone());
            q.push(n.id[..n.id.len() - 1].to_string());
            q.push(n.id.to_ascii_uppercase());
            if let Role::Replica(of) = &n.role {
                q.push(of.clone());
            }
        }
        q
    }

    /// leasegate's `listed_as_master`, `listed_as_replica` and `master_of`
    /// agree with the model for every query.
    pub fn check(&self, extra: &str) -> Result<(), String> {
        let text = self.render();
        for me in self.queries(extra) {
            let node = self.node(&me);
            let want_master = matches!(
                node,
                Some(Node {
                    role: Role::Master(_),
                    ..
                })
            );
            let want_replica = matches!(
                node,
                Some(Node {
                    role: Role::Replica(_),
                    ..
                })
            );
            let want_master_of = match node {
                Some(Node {
                    role: Role::Replica(of),
                    ..
                }) => self.node(of).map(|m| format!("{}:{}", m.host, m.port)),
                _ => None,
            };
            let got = (
                topology::listed_as_master(&text, &me),
                topology::listed_as_replica(&text, &me),
                topology::master_of(&text, &me),
            );
            if got != (want_master, want_replica, want_master_of.clone()) {
                return Err(format!(
                    "{me}: (master, replica, master_of) = {got:?}, model: {:?}\n{text}",
                    (want_master, want_replica, want_master_of)
                ));
            }
        }
        Ok(())
    }
}

/// Checks on any text: nothing panics, `master_of` names a master only for
/// a node listed as a replica, and `key_slot` agrees with
/// `redis_protocol::redis_keyslot` on the text's bytes and on each field.
pub fn check_setnodes_text(text: &str) -> Result<(), String> {
    let mut ids: Vec<&str> = text.split_ascii_whitespace().take(64).collect();
    ids.push("");
    for me in ids {
        topology::listed_as_master(text, me);
        let replica = topology::listed_as_replica(text, me);
        let of = topology::master_of(text, me);
        if of.is_some() && !replica {
            return Err(format!(
                "{me:?}: master_of {of:?} but not listed as a replica"
            ));
        }
        let slot = topology::key_slot(me.as_bytes());
        let want = redis_protocol::redis_keyslot(me.as_bytes());
        if slot != want {
            return Err(format!("key_slot({me:?}) = {slot}, redis_keyslot {want}"));
        }
    }
    check_key_slot(text.as_bytes())
}

/// `key_slot` agrees with `redis_protocol::redis_keyslot`.
pub fn check_key_slot(key: &[u8]) -> Result<(), String> {
    let (got, want) = (topology::key_slot(key), redis_protocol::redis_keyslot(key));
    if got != want || got >= 16384 {
        return Err(format!("key_slot({key:?}) = {got}, redis_keyslot {want}"));
    }
    Ok(())
}

/// A topology built from fuzz bytes (the proptest form generates one with
/// strategies instead): up to 8 nodes, each byte choosing one thing.
pub fn topology_from_bytes(data: &[u8]) -> Topology {
    let mut it = data.iter().copied().chain(std::iter::repeat(0));
    let mut next = move || it.next().unwrap_or(0) as usize;
    let count = next() % 9;
    let ids: Vec<String> = (0..count + 1)
        .map(|i| {
            let seed = next();
            (0..40)
                .map(|k| char::from_digit(((seed * 7 + i * 13 + k * 3) % 16) as u32, 16).unwrap())
                .collect()
        })
        .collect();
    let mut nodes = Vec::new();
    for (i, id) in ids.iter().take(count).enumerate() {
        if nodes.iter().any(|n: &Node| &n.id == id) {
            continue;
        }
        let role = if next() % 2 == 0 {
            let ranges = (0..next() % 4)
                .map(|_| {
                    let a = (next() * 64 + next()) as u16 % 16384;
                    let b = a.saturating_add((next() * 8) as u16).min(16383);
                    (a, b)
                })
                .collect();
            Role::Master(ranges)
        } else {
            // Any id, the last one being never listed.
            Role::Replica(ids[next() % ids.len()].clone())
        };
        nodes.push(Node {
            id: id.clone(),
            host: format!("10.0.{}.{}", i, next()),
            port: 6000 + next() as u16,
            role,
            spelling: next(),
            lead: next() % 3,
            gaps: [next() % 3, next() % 3, next() % 3, next() % 3, next() % 3],
            trail: next() % 3,
        });
    }
    let blank_lines = (0..nodes.len()).map(|_| next() % 2).collect();
    Topology {
        nodes,
        blank_lines,
        final_newline: next() % 2 == 0,
    }
}
