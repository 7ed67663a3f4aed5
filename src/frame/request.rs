//! Request framing: where one client request ends and the next begins.
//!
//! Clients send RESP arrays of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`)
//! or inline commands (`PING\r\n`, as typed in telnet). The framer finds the
//! end of each request and the command name and first argument (all the Gate
//! needs), and never copies or re-encodes: the session forwards the client's
//! original bytes.
//!
//! This scanner is hand-written rather than built on `redis-protocol`'s
//! decoder because it runs on every request of the measured hot path and must
//! resume where it stopped: a 512 MiB request that arrives in 1 KiB pieces is
//! framed in linear time, as each call continues from the saved position
//! instead of re-parsing from the start. `redis-protocol` remains the oracle in
//! the tests below. Limits and error texts follow Redis so that clients see
//! what the node itself would say.

use crate::command::Name;

/// Limits applied while framing.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bulk_len: u64,
    pub max_multibulk_len: u64,
    pub max_inline_len: usize,
}

/// One complete request at the head of the buffer.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead {
    /// Bytes the request occupies at the head of the buffer.
    pub len: usize,
    /// Number of arguments, the command name included. Zero for the empty
    /// requests Redis ignores (`*0`, `*-1`, blank inline lines): nothing is
    /// forwarded for them and no reply is due.
    pub argc: u64,
    /// The command name, lowercased.
    pub name: Name,
    /// The first argument, lowercased (subcommand of CONFIG, CLUSTERX, ...).
    pub sub: Name,
    /// Whether this was an inline command.
    pub inline: bool,
}

/// A violation of the protocol or of a limit; the client gets `reply()` and
/// is closed, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid multibulk length")]
    MultibulkLength,
    #[error("invalid bulk length")]
    BulkLength,
    #[error("expected '$', got '{0}'")]
    ExpectedBulk(char),
    #[error("too big mbulk count string")]
    HeaderTooLong,
    #[error("too big inline request")]
    InlineTooLong,
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
}

impl ProtocolError {
    /// The reply line sent to the client before it is closed.
    pub fn reply(&self) -> bytes::Bytes {
        bytes::Bytes::from(format!("-ERR Protocol error: {self}\r\n"))
    }
}

/// Longest header line (`*<n>` or `$<n>`) accepted, as in Redis.
const MAX_HEADER: usize = 64 * 1024;

/// Resumable framer for the request at the head of a client buffer.
#[derive(Debug)]
pub struct RequestFramer {
    limits: Limits,
    state: State,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Nothing of the head request has been scanned.
    Start,
    /// Inside a RESP array: `pos` is the offset of the next unread argument.
    Array {
        argc: u64,
        left: u64,
        pos: usize,
        name: Name,
        sub: Name,
    },
    /// An inline line with no newline among its first `scanned` bytes.
    Inline { scanned: usize },
}

impl RequestFramer {
    pub fn new(limits: Limits) -> RequestFramer {
        RequestFramer {
            limits,
            state: State::Start,
        }
    }

    /// Frames the request at the head of `buf`. Returns `Ok(None)` when more
    /// bytes are needed; the next call continues where this one stopped, so
    /// `buf` must keep its head until a request is returned. After
    /// `Ok(Some(head))` the caller consumes `head.len` bytes.
    pub fn next(&mut self, buf: &[u8]) -> Result<Option<RequestHead>, ProtocolError> {
        match self.state {
            State::Start => match buf.first() {
                None => Ok(None),
                Some(b'*') => self.start_array(buf),
                Some(_) => self.inline(buf, 0),
            },
            State::Array { .. } => self.array(buf),
            State::Inline { scanned } => self.inline(buf, scanned),
        }
    }

    fn start_array(&mut self, buf: &[u8]) -> Result<Option<RequestHead>, ProtocolError> {
        let Some((count, pos)) = header(buf, 0, ProtocolError::MultibulkLength)? else {
            return Ok(None);
        };
        if count <= 0 {
            return Ok(Some(RequestHead::empty(pos)));
        }
        let argc = count as u64;
        if argc > self.limits.max_multibulk_len {
            return Err(ProtocolError::MultibulkLength);
        }
        self.state = State::Array {
            argc,
            left: argc,
            pos,
            name: Name::EMPTY,
            sub: Name::EMPTY,
        };
        self.array(buf)
    }

    fn array(&mut self, buf: &[u8]) -> Result<Option<RequestHead>, ProtocolError> {
        let State::Array {
            argc,
            mut left,
            mut pos,
            mut name,
            mut sub,
        } = self.state
        else {
            return Ok(None);
        };
        while left > 0 {
            let Some(&first) = buf.get(pos) else { break };
            if first != b'$' {
                self.state = State::Start;
                return Err(ProtocolError::ExpectedBulk(char::from(first)));
            }
            let Some((len, body)) = header(buf, pos, ProtocolError::BulkLength)? else {
                break;
            };
            if len < 0 || len as u64 > self.limits.max_bulk_len {
                self.state = State::Start;
                return Err(ProtocolError::BulkLength);
            }
            // Like Redis, the two bytes after the body are skipped unchecked.
            let end = body + len as usize + 2;
            if buf.len() < end {
                break;
            }
            match argc - left {
                0 => name = Name::new(&buf[body..end - 2]),
                1 => sub = Name::new(&buf[body..end - 2]),
                _ => {}
            }
            pos = end;
            left -= 1;
        }
        if left > 0 {
            self.state = State::Array {
                argc,
                left,
                pos,
                name,
                sub,
            };
            return Ok(None);
        }
        self.state = State::Start;
        Ok(Some(RequestHead {
            len: pos,
            argc,
            name,
            sub,
            inline: false,
        }))
    }

    fn inline(&mut self, buf: &[u8], scanned: usize) -> Result<Option<RequestHead>, ProtocolError> {
        let Some(nl) = buf[scanned..].iter().position(|&b| b == b'\n') else {
            if buf.len() > self.limits.max_inline_len {
                self.state = State::Start;
                return Err(ProtocolError::InlineTooLong);
            }
            self.state = State::Inline { scanned: buf.len() };
            return Ok(None);
        };
        self.state = State::Start;
        let end = scanned + nl + 1;
        if end > self.limits.max_inline_len {
            return Err(ProtocolError::InlineTooLong);
        }
        let line = &buf[..end - 1];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (argc, name, sub) = if line.iter().any(|&b| b == b'"' || b == b'\'') {
            inline_quoted(line)?
        } else {
            inline_plain(line)
        };
        Ok(Some(RequestHead {
            len: end,
            argc,
            name,
            sub,
            inline: true,
        }))
    }
}

impl RequestHead {
    fn empty(len: usize) -> RequestHead {
        RequestHead {
            len,
            argc: 0,
            name: Name::EMPTY,
            sub: Name::EMPTY,
            inline: false,
        }
    }
}

/// Parses a `*<n>\r\n` / `$<n>\r\n` header starting at `at`; returns the
/// number and the offset just after the line, or `None` if incomplete.
#[inline]
fn header(
    buf: &[u8],
    at: usize,
    invalid: ProtocolError,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let rest = &buf[at + 1..];
    let window = &rest[..rest.len().min(MAX_HEADER + 2)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if rest.len() > MAX_HEADER {
            return Err(ProtocolError::HeaderTooLong);
        }
        return Ok(None);
    };
    // The '\n' must be there too before the header counts as complete.
    if rest.len() < cr + 2 {
        return Ok(None);
    }
    let n = parse_int(&rest[..cr]).ok_or(invalid)?;
    Ok(Some((n, at + 1 + cr + 2)))
}

/// Strict decimal parse (optional '-', digits only, fits i64), like Redis's string2ll.
#[inline]
fn parse_int(digits: &[u8]) -> Option<i64> {
    let (neg, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Some(if neg { -n } else { n })
}

/// All arguments of one complete request (`bytes` is exactly the request).
/// Cold path: only for the few commands the proxy acts on (heartbeats, AUTH,
/// topology changes), never for ordinary traffic.
pub fn arguments(bytes: &[u8], inline: bool) -> Vec<Vec<u8>> {
    if inline {
        let line = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        return split_args(line).unwrap_or_default();
    }
    use redis_protocol::resp2::types::OwnedFrame as F;
    match redis_protocol::resp2::decode::decode(bytes) {
        Ok(Some((F::Array(items), _))) => items
            .into_iter()
            .map(|f| match f {
                F::BulkString(b) | F::SimpleString(b) => b,
                _ => Vec::new(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn inline_plain(line: &[u8]) -> (u64, Name, Name) {
    let mut words = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    let name = words.next().map(Name::new).unwrap_or(Name::EMPTY);
    let sub = words.next().map(Name::new).unwrap_or(Name::EMPTY);
    let argc = u64::from(!name.is_empty()) + u64::from(!sub.is_empty()) + words.count() as u64;
    (argc, name, sub)
}

/// Inline lines with quotes are split the way Redis's `sdssplitargs` does, so
/// that `"flushall"` or `"flush\x61ll"` is classified (and denied) as FLUSHALL.
/// Cold path: only lines containing a quote come here.
fn inline_quoted(line: &[u8]) -> Result<(u64, Name, Name), ProtocolError> {
    let args = split_args(line)?;
    let name = args.first().map(|a| Name::new(a)).unwrap_or(Name::EMPTY);
    let sub = args.get(1).map(|a| Name::new(a)).unwrap_or(Name::EMPTY);
    Ok((args.len() as u64, name, sub))
}

pub(crate) fn split_args(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            return Ok(args);
        }
        let mut arg = Vec::new();
        let mut quote: Option<u8> = None;
        loop {
            let Some(&c) = line.get(i) else {
                if quote.is_some() {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                break;
            };
            match quote {
                Some(b'"') => {
                    if c == b'\\' && line.get(i + 1) == Some(&b'x') {
                        if let Some(v) = line.get(i + 2..i + 4).and_then(hex_byte) {
                            arg.push(v);
                            i += 4;
                            continue;
                        }
                    }
                    if c == b'\\' && i + 1 < line.len() {
                        arg.push(match line[i + 1] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 8,
                            b'a' => 7,
                            other => other,
                        });
                        i += 2;
                        continue;
                    }
                    if c == b'"' {
                        // A closing quote must be followed by a space or the end.
                        if line.get(i + 1).is_some_and(|n| !n.is_ascii_whitespace()) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    arg.push(c);
                }
                Some(_) => {
                    if c == b'\\' && line.get(i + 1) == Some(&b'\'') {
                        arg.push(b'\'');
                        i += 2;
                        continue;
                    }
                    if c == b'\'' {
                        if line.get(i + 1).is_some_and(|n| !n.is_ascii_whitespace()) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    arg.push(c);
                }
                None => {
                    if c.is_ascii_whitespace() {
                        break;
                    }
                    if c == b'"' || c == b'\'' {
                        quote = Some(c);
                    } else {
                        arg.push(c);
                    }
                }
            }
            i += 1;
        }
        args.push(arg);
    }
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    let s = std::str::from_utf8(two).ok()?;
    u8::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: 1024 * 1024,
            max_inline_len: 64 * 1024,
        }
    }

    fn resp(args: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// Frames everything in `buf`, feeding it `step` bytes at a time.
    fn frame_all(buf: &[u8], step: usize) -> Result<Vec<RequestHead>, ProtocolError> {
        let mut f = RequestFramer::new(limits());
        let mut out = Vec::new();
        let mut head = 0;
        let mut avail = 0;
        while avail < buf.len() {
            avail = (avail + step).min(buf.len());
            while let Some(r) = f.next(&buf[head..avail])? {
                head += r.len;
                out.push(r);
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
        };
        let cases: [(&[u8], ProtocolError); 6] = [
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
}
