//! Request framing: where one client request ends and the next begins.
//!
//! Clients send RESP arrays of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`)
//! or inline commands (`PING\r\n`, as typed in telnet). The framer finds the
//! end of each request and where its command name and first argument lie
//! (all the Gate needs), and never copies, lowercases or re-encodes: the
//! session forwards the client's original bytes, and the command table reads
//! the name from them in any case.
//!
//! This scanner is hand-written rather than built on `redis-protocol`'s
//! decoder because it runs on every request of the measured hot path and must
//! resume where it stopped: a 512 MiB request that arrives in 1 KiB pieces is
//! framed in linear time, as each call continues from the saved position
//! instead of re-parsing from the start. `redis-protocol` remains the oracle in
//! the tests below. Limits and error texts follow Redis so that clients see
//! what the node itself would say.

use std::borrow::Cow;

use crate::resp::inline::{inline_line, inline_plain, split_args};
use crate::resp::name::Name;
use crate::resp::short_length;
use header::header;

/// Limits applied while framing.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bulk_len: u64,
    pub max_multibulk_len: u64,
    pub max_inline_len: usize,
    /// The most bytes one array request may take, its headers and every
    /// argument together: a request is buffered whole before it is
    /// forwarded, so without it one request of many bulks, each within
    /// `max_bulk_len`, grew the proxy by gigabytes (an attack pass: 1.3 GB
    /// for one connection). Redis bounds a client's query buffer the same
    /// way (`client-query-buffer-limit`, 1 GiB).
    pub max_request_len: u64,
}

/// One complete request at the head of the buffer.
///
/// The command name and first argument are kept as where they lie in the
/// request, as the client sent them (any case), not as lowercased copies:
/// the measured hot path reads them once, in the command table
/// ([`RequestHead::words`]), and most first arguments (keys) are never
/// looked at. This also keeps the head small, and it is moved by value.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead {
    /// Bytes the request occupies at the head of the buffer.
    pub len: usize,
    /// Number of arguments, the command name included. Zero for the empty
    /// requests Redis ignores (`*0`, `*-1`, blank inline lines): nothing is
    /// forwarded for them and no reply is due.
    pub argc: u64,
    /// The command name's place in the request (empty when `argc` is 0).
    name: Span,
    /// The first argument's place (subcommand of CONFIG, CLUSTERX, ...;
    /// empty when `argc` < 2).
    sub: Span,
    /// Whether this was an inline command.
    pub inline: bool,
    /// An inline line with a quote: its arguments are decoded, not spans of
    /// the request, and [`RequestHead::words`] splits the line again.
    quoted: bool,
}

/// Where an argument lies in its request: `request[at..at + len]`.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Span {
    pub(super) at: usize,
    pub(super) len: usize,
}

impl Span {
    pub(super) const EMPTY: Span = Span { at: 0, len: 0 };

    #[inline]
    fn of<'a>(&self, request: &'a [u8]) -> &'a [u8] {
        request.get(self.at..self.at + self.len).unwrap_or_default()
    }
}

/// The command name and first argument of a request, as the client sent
/// them (any case; decoded for an inline line with quotes).
#[derive(Debug)]
pub struct Words<'a> {
    pub name: Cow<'a, [u8]>,
    pub sub: Cow<'a, [u8]>,
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
    #[error("too big bulk count string")]
    BulkHeaderTooLong,
    #[error("too big inline request")]
    InlineTooLong,
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// Past [`UNAUTHENTICATED`]'s count before the client authenticated.
    #[error("unauthenticated multibulk length")]
    UnauthenticatedMultibulk,
    /// Past [`UNAUTHENTICATED`]'s bulk length before the client authenticated.
    #[error("unauthenticated bulk length")]
    UnauthenticatedBulk,
    /// Past `limits.max_request_bytes`, its arguments together.
    #[error("request larger than limits.max_request_bytes")]
    RequestTooLong,
}

impl ProtocolError {
    /// The reply line sent to the client before it is closed.
    pub fn reply(&self) -> bytes::Bytes {
        bytes::Bytes::from(format!("-ERR Protocol error: {self}\r\n"))
    }
}

/// What a client that has not authenticated to a node that requires it may
/// send, as Redis allows (`networking.c`: 10 arguments, 16 KiB a bulk):
/// otherwise anyone who can connect makes the proxy hold up to
/// `limits.max_bulk_len` (512 MiB) a connection, which the node itself
/// would have refused after one header (Redis's CVE-2021-32675).
pub const UNAUTHENTICATED: Limits = Limits {
    max_bulk_len: 16 * 1024,
    max_multibulk_len: 10,
    max_inline_len: usize::MAX,
    max_request_len: u64::MAX,
};

/// Longest header line (`*<n>` or `$<n>`) accepted, as in Redis.
const MAX_HEADER: usize = 64 * 1024;

/// Resumable framer for the request at the head of a client buffer.
#[derive(Debug)]
pub struct RequestFramer {
    /// The limits in force: `configured`, or tighter while unauthenticated.
    limits: Limits,
    configured: Limits,
    unauthenticated: bool,
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
        name: Span,
        sub: Span,
    },
    /// An inline line with no newline among its first `scanned` bytes.
    Inline { scanned: usize },
    /// An inline line with a NUL byte before any newline: it never ends,
    /// as on redis-server, which looks for the newline with `strchr` (it
    /// answers once the line is past the inline limit, and closes). Framed
    /// as complete, a write there was forwarded, counted in flight and
    /// never answered: every failover then waited for it (an audit).
    Unterminated,
}

impl RequestFramer {
    pub fn new(limits: Limits) -> RequestFramer {
        RequestFramer {
            limits,
            configured: limits,
            unauthenticated: false,
            state: State::Start,
        }
    }

    /// Whether the client must authenticate before it may send more than
    /// [`UNAUTHENTICATED`] allows. Applies to a request framed in part too:
    /// its next bytes are checked against the limits now in force.
    pub fn set_unauthenticated(&mut self, on: bool) {
        self.unauthenticated = on;
        self.limits = if on {
            Limits {
                max_bulk_len: UNAUTHENTICATED
                    .max_bulk_len
                    .min(self.configured.max_bulk_len),
                max_multibulk_len: UNAUTHENTICATED
                    .max_multibulk_len
                    .min(self.configured.max_multibulk_len),
                max_inline_len: self.configured.max_inline_len,
                max_request_len: self.configured.max_request_len,
            }
        } else {
            self.configured
        };
    }

    /// The error for a count past the limit in force.
    fn too_many(&self) -> ProtocolError {
        if self.unauthenticated {
            ProtocolError::UnauthenticatedMultibulk
        } else {
            ProtocolError::MultibulkLength
        }
    }

    /// The error for a bulk past the limit in force.
    fn too_long(&self) -> ProtocolError {
        if self.unauthenticated {
            ProtocolError::UnauthenticatedBulk
        } else {
            ProtocolError::BulkLength
        }
    }

    /// Forgets a request framed only in part: the next call frames the
    /// head of its buffer from its first byte (bytes were put in front).
    pub fn restart(&mut self) {
        self.state = State::Start;
    }

    /// Frames the request at the head of `buf`. Returns `Ok(None)` when more
    /// bytes are needed; the next call continues where this one stopped, so
    /// `buf` must keep its head until a request is returned. After
    /// `Ok(Some(head))` the caller consumes `head.len` bytes.
    #[inline]
    pub fn next(&mut self, buf: &[u8]) -> Result<Option<RequestHead>, ProtocolError> {
        match self.state {
            State::Start => match buf.first() {
                None => Ok(None),
                Some(b'*') => match self.whole_array(buf) {
                    Some(head) => Ok(Some(head)),
                    None => self.start_array(buf),
                },
                Some(_) => self.inline(buf, 0),
            },
            State::Array { .. } => self.array(buf),
            State::Inline { scanned } => self.inline(buf, scanned),
            State::Unterminated => self.unterminated(buf),
        }
    }

    /// The measured hot path: a whole array request at the head of `buf`
    /// (which starts with `*`), framed in one pass, with nothing written to
    /// the framer's state. `None` for anything else (not all there yet, an
    /// empty array, a limit or a protocol error, a header with a sign or
    /// more than 18 digits): the careful path ([`RequestFramer::start_array`])
    /// frames those, and gives the same head as this for every request this
    /// takes (the same checks, in the same order).
    #[inline]
    fn whole_array(&self, buf: &[u8]) -> Option<RequestHead> {
        let (argc, cr) = short_length(buf, 1)?;
        if argc == 0 || argc as u64 > self.limits.max_multibulk_len {
            return None;
        }
        let (mut name, mut sub) = (Span::EMPTY, Span::EMPTY);
        let mut pos = cr + 2;
        for i in 0..argc {
            if *buf.get(pos)? != b'$' {
                return None;
            }
            let (len, cr) = short_length(buf, pos + 1)?;
            if len as u64 > self.limits.max_bulk_len {
                return None;
            }
            let body = cr + 2;
            // Like Redis (and the careful path), the two bytes after the
            // body are skipped unchecked.
            let end = body + len + 2;
            if end > buf.len() {
                return None;
            }
            match i {
                0 => name = Span { at: body, len },
                1 => sub = Span { at: body, len },
                _ => {}
            }
            pos = end;
        }
        if pos as u64 > self.limits.max_request_len {
            return None;
        }
        Some(RequestHead {
            len: pos,
            argc: argc as u64,
            name,
            sub,
            inline: false,
            quoted: false,
        })
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
            return Err(self.too_many());
        }
        self.elements(buf, argc, argc, pos, Span::EMPTY, Span::EMPTY)
    }

    fn array(&mut self, buf: &[u8]) -> Result<Option<RequestHead>, ProtocolError> {
        let State::Array {
            argc,
            left,
            pos,
            name,
            sub,
        } = self.state
        else {
            return Ok(None);
        };
        // The limits may have tightened since its header came.
        if argc > self.limits.max_multibulk_len {
            self.state = State::Start;
            return Err(self.too_many());
        }
        self.elements(buf, argc, left, pos, name, sub)
    }

    /// Reads the bulk strings of an array request from `pos` on, `left` of
    /// `argc` to go. The state is written only when the request is not
    /// complete yet (a request that arrived whole never touches it).
    #[inline]
    fn elements(
        &mut self,
        buf: &[u8],
        argc: u64,
        mut left: u64,
        mut pos: usize,
        mut name: Span,
        mut sub: Span,
    ) -> Result<Option<RequestHead>, ProtocolError> {
        while left > 0 {
            let Some(&first) = buf.get(pos) else { break };
            if first != b'$' {
                self.state = State::Start;
                return Err(ProtocolError::ExpectedBulk(char::from(first)));
            }
            let Some((len, body)) = header(buf, pos, ProtocolError::BulkLength)? else {
                break;
            };
            if len < 0 {
                self.state = State::Start;
                return Err(ProtocolError::BulkLength);
            }
            if len as u64 > self.limits.max_bulk_len {
                self.state = State::Start;
                return Err(self.too_long());
            }
            // Like Redis, the two bytes after the body are skipped unchecked.
            let end = body + len as usize + 2;
            if end as u64 > self.limits.max_request_len {
                // Refused at the header of the bulk that would pass it,
                // before its body is buffered.
                self.state = State::Start;
                return Err(ProtocolError::RequestTooLong);
            }
            if buf.len() < end {
                break;
            }
            match argc - left {
                0 => {
                    name = Span {
                        at: body,
                        len: end - 2 - body,
                    }
                }
                1 => {
                    sub = Span {
                        at: body,
                        len: end - 2 - body,
                    }
                }
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
            quoted: false,
        }))
    }

    fn inline(&mut self, buf: &[u8], scanned: usize) -> Result<Option<RequestHead>, ProtocolError> {
        let ends = buf[scanned..].iter().position(|&b| b == b'\n' || b == 0);
        if ends.is_some_and(|at| buf[scanned + at] == 0) {
            return self.unterminated(buf);
        }
        let Some(nl) = ends else {
            // Past the limit even were a `\r` at its end followed by `\n`.
            if buf.len() > self.limits.max_inline_len + 1 {
                self.state = State::Start;
                return Err(ProtocolError::InlineTooLong);
            }
            self.state = State::Inline { scanned: buf.len() };
            return Ok(None);
        };
        self.state = State::Start;
        let end = scanned + nl + 1;
        let line = inline_line(&buf[..end]);
        // The line itself, without its CRLF (a line of exactly the limit
        // was refused: an attack pass).
        if line.len() > self.limits.max_inline_len {
            return Err(ProtocolError::InlineTooLong);
        }
        let (argc, name, sub, quoted) = match inline_plain(line) {
            Some((argc, name, sub)) => (argc, name, sub, false),
            None => (
                split_args(line)?.len() as u64,
                Span::EMPTY,
                Span::EMPTY,
                true,
            ),
        };
        Ok(Some(RequestHead {
            len: end,
            argc,
            name,
            sub,
            inline: true,
            quoted,
        }))
    }
}

impl RequestFramer {
    /// An inline line that never ends ([`State::Unterminated`]): more is
    /// waited for up to the inline limit, then it is refused.
    #[cold]
    fn unterminated(&mut self, buf: &[u8]) -> Result<Option<RequestHead>, ProtocolError> {
        if buf.len() > self.limits.max_inline_len + 1 {
            self.state = State::Start;
            return Err(ProtocolError::InlineTooLong);
        }
        self.state = State::Unterminated;
        Ok(None)
    }
}

impl RequestHead {
    fn empty(len: usize) -> RequestHead {
        RequestHead {
            len,
            argc: 0,
            name: Span::EMPTY,
            sub: Span::EMPTY,
            inline: false,
            quoted: false,
        }
    }

    /// The command name and first argument as the client sent them;
    /// `request` is this request's bytes (the head of the buffer it was
    /// framed from). Borrowed from `request`, save for an inline line with
    /// quotes, which is split again (cold: such lines are typed by hand).
    #[inline]
    pub fn words<'a>(&self, request: &'a [u8]) -> Words<'a> {
        if self.quoted {
            return quoted_words(request);
        }
        Words {
            name: Cow::Borrowed(self.name.of(request)),
            sub: Cow::Borrowed(self.sub.of(request)),
        }
    }

    /// The command name, lowercased (for messages and tests; the command
    /// table reads [`RequestHead::words`]).
    pub fn name(&self, request: &[u8]) -> Name {
        Name::new(&self.words(request).name)
    }

    /// The first argument, lowercased (as [`RequestHead::name`]).
    pub fn sub(&self, request: &[u8]) -> Name {
        Name::new(&self.words(request).sub)
    }
}

/// [`RequestHead::words`] of an inline line with quotes, decoded as the
/// node decodes them: `"flushall"` or `"flush\x61ll"` is classified (and
/// denied) as FLUSHALL.
#[cold]
fn quoted_words(request: &[u8]) -> Words<'static> {
    let mut args = split_args(inline_line(request))
        .unwrap_or_default()
        .into_iter();
    let name = args.next().unwrap_or_default();
    let sub = args.next().unwrap_or_default();
    Words {
        name: Cow::Owned(name),
        sub: Cow::Owned(sub),
    }
}

/// All arguments of one complete request (`bytes` is exactly the request).
/// Cold path: only for the few commands the proxy acts on (heartbeats, AUTH,
/// topology changes), never for ordinary traffic.
pub fn arguments(bytes: &[u8], inline: bool) -> Vec<Vec<u8>> {
    if inline {
        return split_args(inline_line(bytes)).unwrap_or_default();
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

mod header;
#[cfg(test)]
mod tests;
