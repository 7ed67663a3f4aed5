//! Reply framing: boundaries of backend replies, nothing more.
//!
//! The proxy must know where each backend reply ends so that its own replies
//! (a denied or fenced command's error) land at the right place of a pipeline,
//! and so that RESP3 push frames and pub/sub messages, which answer no request,
//! do not take a request's place. It never decodes values: only type bytes,
//! lengths and element counts are read, and bulk payloads are skipped by length.
//!
//! Hand-written for the same reason as the request framer (hot path, resumable
//! so that a reply arriving in many pieces is scanned once, in linear time);
//! `redis-protocol` is the oracle in the tests and decodes the rare frames
//! whose content matters (pub/sub confirmations).

/// A complete reply at the head of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyHead {
    /// Bytes the reply occupies, RESP3 attributes before it included.
    pub len: usize,
    /// Type byte of the reply (`+`, `-`, `*`, `>`, `%`, ...), after any attribute.
    pub kind: u8,
}

/// The backend sent something that is not RESP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("backend sent invalid RESP: {0}")]
pub struct ReplyError(pub &'static str);

/// Resumable framer for the reply at the head of the backend buffer.
#[derive(Debug, Default)]
pub struct ReplyFramer {
    /// Offset of the next unread element of the head reply.
    pos: usize,
    /// The aggregates open around the next element, innermost last.
    open: Vec<Open>,
    /// Type byte of the top-level element being read.
    top: u8,
    /// The line of the element at `pos` has no `\n` before this offset, so
    /// that a long line arriving in pieces is scanned once (0: not known).
    scanned: usize,
    /// Aggregates nested deeper than this are an error (0: no bound; the
    /// framer itself does not recurse, see [`ReplyFramer::with_max_depth`]).
    max_depth: usize,
}

/// An aggregate whose elements are being read.
#[derive(Debug, Clone, Copy)]
struct Open {
    /// Elements still expected.
    left: u64,
    /// A RESP3 attribute (`|`): not itself an element of the aggregate
    /// around it, as the value it describes follows it.
    attribute: bool,
}

const MAX_LINE: usize = 64 * 1024 * 1024;

impl ReplyFramer {
    pub fn new() -> ReplyFramer {
        ReplyFramer::default()
    }

    /// A framer that refuses aggregates nested deeper than `depth`: for
    /// replies then decoded by `redis-protocol`, whose decoder recurses
    /// (a reply of 300,000 nested arrays from a Sentinel or a node
    /// overflowed the stack and aborted the process: an audit).
    pub fn with_max_depth(depth: usize) -> ReplyFramer {
        ReplyFramer {
            max_depth: depth,
            ..ReplyFramer::default()
        }
    }

    /// Frames the reply at the head of `buf`; `Ok(None)` when incomplete (the
    /// next call resumes). After `Ok(Some(head))` the caller consumes `head.len`.
    /// Inlined: its one-pass part is the measured hot path.
    #[inline]
    pub fn next(&mut self, buf: &[u8]) -> Result<Option<ReplyHead>, ReplyError> {
        if self.pos == 0 && self.open.is_empty() {
            if let Some(head) = simple_reply(buf) {
                // A line this call found whole: nothing scanned carries over.
                self.scanned = 0;
                return Ok(Some(head));
            }
        }
        self.next_in_full(buf)
    }

    /// [`ReplyFramer::next`] for every reply [`simple_reply`] does not take.
    fn next_in_full(&mut self, buf: &[u8]) -> Result<Option<ReplyHead>, ReplyError> {
        loop {
            let Some(&kind) = buf.get(self.pos) else {
                return Ok(None);
            };
            if self.open.is_empty() {
                self.top = kind;
            }
            let Some(step) = element(buf, self.pos, &mut self.scanned)? else {
                return Ok(None);
            };
            self.pos = step.end;
            if step.children > 0 {
                if self.max_depth != 0 && self.open.len() >= self.max_depth {
                    return Err(ReplyError("aggregates nested too deep"));
                }
                self.open.push(Open {
                    left: step.children,
                    attribute: step.attribute,
                });
                continue;
            }
            // An empty attribute is no element either.
            if step.attribute {
                continue;
            }
            // One element is complete: close every aggregate it completes.
            while let Some(open) = self.open.last_mut() {
                open.left -= 1;
                if open.left > 0 {
                    break;
                }
                // A closed attribute completes nothing: the element it
                // describes comes next (RESP3 allows attributes anywhere).
                if self.open.pop().is_some_and(|o| o.attribute) {
                    break;
                }
            }
            if !self.open.is_empty() {
                continue;
            }
            // A top-level attribute is followed by the reply it describes.
            if self.top == b'|' {
                continue;
            }
            let head = ReplyHead {
                len: self.pos,
                kind: self.top,
            };
            self.pos = 0;
            return Ok(Some(head));
        }
    }
}

/// How far [`simple_reply`] looks for a line's end.
const SIMPLE_LINE: usize = 128;

/// The most common replies, framed in one pass: a complete top-level `+`,
/// `-` or `:` line of up to [`SIMPLE_LINE`] bytes, or a complete `$` bulk
/// string with a plain decimal length. Anything else, or anything not
/// complete yet, is `None` and goes the general way, which frames these
/// the same (hand-written: it is the measured hot path, where the general
/// element loop cost about 90 instructions for a `+OK`).
#[inline]
fn simple_reply(buf: &[u8]) -> Option<ReplyHead> {
    let (&kind, rest) = buf.split_first()?;
    match kind {
        b'+' | b'-' | b':' => {
            let window = &rest[..rest.len().min(SIMPLE_LINE)];
            let nl = window.iter().position(|&b| b == b'\n')?;
            Some(ReplyHead { len: nl + 2, kind })
        }
        b'$' => {
            let (n, cr) = crate::resp::short_length(buf, 1)?;
            if buf.get(cr + 1) != Some(&b'\n') {
                return None;
            }
            let end = cr + 2 + n + 2;
            (buf.len() >= end).then_some(ReplyHead { len: end, kind })
        }
        _ => None,
    }
}

struct Step {
    end: usize,
    children: u64,
    /// An attribute (`|`), which precedes the element it describes.
    attribute: bool,
}

/// Reads the element header at `at`: its end (for scalars, the end of the
/// whole element) and the number of child elements that follow.
#[inline]
fn element(buf: &[u8], at: usize, scanned: &mut usize) -> Result<Option<Step>, ReplyError> {
    let kind = buf[at];
    let Some(nl) = find_newline(buf, at + 1, scanned)? else {
        return Ok(None);
    };
    let line_end = nl + 1;
    let scalar = |end: usize| {
        Ok(Some(Step {
            end,
            children: 0,
            attribute: false,
        }))
    };
    match kind {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => scalar(line_end),
        b'$' | b'!' | b'=' => {
            let n = length(&buf[at + 1..nl])?;
            if n < 0 {
                return scalar(line_end);
            }
            let end = usize::try_from(n)
                .ok()
                .and_then(|n| line_end.checked_add(n)?.checked_add(2))
                .ok_or(ReplyError("length out of range"))?;
            if buf.len() < end {
                return Ok(None);
            }
            scalar(end)
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = length(&buf[at + 1..nl])?;
            let attribute = kind == b'|';
            if n <= 0 {
                return Ok(Some(Step {
                    end: line_end,
                    children: 0,
                    attribute,
                }));
            }
            let children = if kind == b'%' || kind == b'|' {
                (n as u64)
                    .checked_mul(2)
                    .ok_or(ReplyError("length out of range"))?
            } else {
                n as u64
            };
            Ok(Some(Step {
                end: line_end,
                children,
                attribute,
            }))
        }
        _ => Err(ReplyError("unknown type byte")),
    }
}

#[inline]
/// The first `\n` at or after `from`, searched from `*scanned` when that is
/// further (the bytes before it were searched by an earlier call); records
/// how far the search went when there is none yet.
fn find_newline(buf: &[u8], from: usize, scanned: &mut usize) -> Result<Option<usize>, ReplyError> {
    let start = from.max((*scanned).min(buf.len()));
    match buf[start..].iter().position(|&b| b == b'\n') {
        Some(i) => {
            *scanned = 0;
            Ok(Some(start + i))
        }
        None if buf.len() - from > MAX_LINE => Err(ReplyError("line too long")),
        None => {
            *scanned = buf.len();
            Ok(None)
        }
    }
}

#[inline]
fn length(line: &[u8]) -> Result<i64, ReplyError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line == b"?" {
        return Err(ReplyError("streamed aggregates are not supported"));
    }
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(ReplyError("invalid length"))
}

/// Kinds of RESP2 pub/sub frames, which answer no request slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSubFrame {
    /// `message`, `pmessage`, `smessage`.
    Message,
    /// `subscribe`/`psubscribe`/`ssubscribe` confirmation with the
    /// session's new subscription count (of channels and patterns
    /// together, or of shard channels).
    Subscribed { count: i64, kind: PubSubKind },
    /// `unsubscribe`/`punsubscribe`/`sunsubscribe` confirmation with the remaining count.
    Unsubscribed { count: i64, kind: PubSubKind },
}

/// What a subscription, or a subscribe-family command, is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSubKind {
    /// `SUBSCRIBE`/`UNSUBSCRIBE`.
    Channel,
    /// `PSUBSCRIBE`/`PUNSUBSCRIBE`.
    Pattern,
    /// `SSUBSCRIBE`/`SUNSUBSCRIBE`.
    Shard,
}

impl PubSubKind {
    /// The kind of a subscribe-family command, by its name.
    pub fn of_command(name: &[u8]) -> PubSubKind {
        let is = |a: &[u8]| name.eq_ignore_ascii_case(a);
        if is(b"psubscribe") || is(b"punsubscribe") {
            PubSubKind::Pattern
        } else if is(b"ssubscribe") || is(b"sunsubscribe") {
            PubSubKind::Shard
        } else {
            PubSubKind::Channel
        }
    }
}

/// Recognises a RESP2 pub/sub frame. Only called for `*` replies of a session
/// in subscribe mode. Pub/sub frames are flat (bulk strings and an integer):
/// the elements are read in place and the frame is given up at the first
/// other element, so a deep or wide reply costs neither recursion (a deep one
/// overflowed the stack of `redis-protocol`'s decoder) nor a copy.
pub fn pubsub_frame(frame: &[u8]) -> Option<PubSubFrame> {
    pubsub_frame_as(frame, b'*')
}

/// [`pubsub_frame`] for a RESP3 push (`>`): what a pub/sub push is.
pub fn pubsub_push(frame: &[u8]) -> Option<PubSubFrame> {
    pubsub_frame_as(frame, b'>')
}

fn pubsub_frame_as(frame: &[u8], prefix: u8) -> Option<PubSubFrame> {
    let (n, mut at) = flat_header(frame, 0, prefix)?;
    let mut kind: Option<&[u8]> = None;
    // The last element's integer (the subscription count), else 0.
    let mut count = 0;
    for i in 0..n {
        match frame.get(at)? {
            b'$' => {
                let (len, body) = flat_header(frame, at, b'$')?;
                count = 0;
                let Ok(len) = usize::try_from(len) else {
                    if i == 0 {
                        return None;
                    }
                    at = body;
                    continue;
                };
                let end = body.checked_add(len)?;
                if i == 0 {
                    kind = Some(frame.get(body..end)?);
                }
                at = end.checked_add(2)?;
            }
            b':' if i > 0 => (count, at) = flat_header(frame, at, b':')?,
            // RESP3's null: the channel of a bare `UNSUBSCRIBE` that had
            // none to end (RESP2 says `$-1`).
            b'_' if i > 0 => {
                if frame.get(at..at + 3)? != b"_\r\n" {
                    return None;
                }
                count = 0;
                at += 3;
            }
            _ => return None,
        }
    }
    let kind = kind?.to_ascii_lowercase();
    Some(match kind.as_slice() {
        b"message" | b"pmessage" | b"smessage" => PubSubFrame::Message,
        b"subscribe" | b"psubscribe" | b"ssubscribe" => PubSubFrame::Subscribed {
            count,
            kind: PubSubKind::of_command(&kind),
        },
        b"unsubscribe" | b"punsubscribe" | b"sunsubscribe" => PubSubFrame::Unsubscribed {
            count,
            kind: PubSubKind::of_command(&kind),
        },
        _ => return None,
    })
}

/// The `<prefix><integer>\r\n` line at `at`: the integer and the offset
/// just after the line.
fn flat_header(frame: &[u8], at: usize, prefix: u8) -> Option<(i64, usize)> {
    if *frame.get(at)? != prefix {
        return None;
    }
    let line = frame.get(at + 1..)?;
    let nl = line.iter().position(|&b| b == b'\n')?;
    let n = length(&line[..nl]).ok()?;
    Some((n, at + 1 + nl + 1))
}

#[cfg(test)]
mod tests;
