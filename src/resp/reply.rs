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
    /// Elements still expected by each open aggregate, innermost last.
    open: Vec<u64>,
    /// Type byte of the top-level element being read.
    top: u8,
}

const MAX_LINE: usize = 64 * 1024 * 1024;

impl ReplyFramer {
    pub fn new() -> ReplyFramer {
        ReplyFramer::default()
    }

    /// Frames the reply at the head of `buf`; `Ok(None)` when incomplete (the
    /// next call resumes). After `Ok(Some(head))` the caller consumes `head.len`.
    pub fn next(&mut self, buf: &[u8]) -> Result<Option<ReplyHead>, ReplyError> {
        loop {
            let Some(&kind) = buf.get(self.pos) else {
                return Ok(None);
            };
            if self.open.is_empty() {
                self.top = kind;
            }
            let Some(step) = element(buf, self.pos)? else {
                return Ok(None);
            };
            self.pos = step.end;
            if step.children > 0 {
                self.open.push(step.children);
                continue;
            }
            // One element is complete: close every aggregate it completes.
            loop {
                match self.open.last_mut() {
                    None => break,
                    Some(left) => {
                        *left -= 1;
                        if *left > 0 {
                            break;
                        }
                        self.open.pop();
                    }
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

struct Step {
    end: usize,
    children: u64,
}

/// Reads the element header at `at`: its end (for scalars, the end of the
/// whole element) and the number of child elements that follow.
#[inline]
fn element(buf: &[u8], at: usize) -> Result<Option<Step>, ReplyError> {
    let kind = buf[at];
    let Some(nl) = find_newline(buf, at + 1)? else {
        return Ok(None);
    };
    let line_end = nl + 1;
    let scalar = |end: usize| Ok(Some(Step { end, children: 0 }));
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
            if n <= 0 {
                return scalar(line_end);
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
            }))
        }
        _ => Err(ReplyError("unknown type byte")),
    }
}

#[inline]
fn find_newline(buf: &[u8], from: usize) -> Result<Option<usize>, ReplyError> {
    match buf[from..].iter().position(|&b| b == b'\n') {
        Some(i) => Ok(Some(from + i)),
        None if buf.len() - from > MAX_LINE => Err(ReplyError("line too long")),
        None => Ok(None),
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
    /// `subscribe`/`psubscribe` confirmation with the session's new subscription count.
    Subscribed { count: i64, shard: bool },
    /// `unsubscribe`/`punsubscribe`/`sunsubscribe` confirmation with the remaining count.
    Unsubscribed { count: i64, shard: bool },
}

/// Recognises a RESP2 pub/sub frame. Only called for `*` replies of a session
/// in subscribe mode, so it may decode with `redis-protocol`.
pub fn pubsub_frame(frame: &[u8]) -> Option<PubSubFrame> {
    use redis_protocol::resp2::types::OwnedFrame as F;
    let (F::Array(items), _) = redis_protocol::resp2::decode::decode(frame).ok()?? else {
        return None;
    };
    let F::BulkString(kind) = items.first()? else {
        return None;
    };
    let count = match items.last() {
        Some(F::Integer(n)) => *n,
        _ => 0,
    };
    let kind = kind.to_ascii_lowercase();
    Some(match kind.as_slice() {
        b"message" | b"pmessage" | b"smessage" => PubSubFrame::Message,
        b"subscribe" | b"psubscribe" => PubSubFrame::Subscribed {
            count,
            shard: false,
        },
        b"ssubscribe" => PubSubFrame::Subscribed { count, shard: true },
        b"unsubscribe" | b"punsubscribe" => PubSubFrame::Unsubscribed {
            count,
            shard: false,
        },
        b"sunsubscribe" => PubSubFrame::Unsubscribed { count, shard: true },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_all(buf: &[u8], step: usize) -> Vec<ReplyHead> {
        let mut f = ReplyFramer::new();
        let mut out = Vec::new();
        let mut head = 0;
        let mut avail = 0;
        while avail < buf.len() {
            avail = (avail + step).min(buf.len());
            while let Some(r) = f.next(&buf[head..avail]).expect("valid") {
                head += r.len;
                out.push(r);
            }
        }
        assert_eq!(head, buf.len());
        out
    }

    const REPLIES: &[&[u8]] = &[
        b"+OK\r\n",
        b"-ERR wrong\r\n",
        b":42\r\n",
        b"$5\r\nhello\r\n",
        b"$-1\r\n",
        b"*-1\r\n",
        b"*0\r\n",
        b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n:2\r\n$0\r\n\r\n",
        b"%2\r\n+a\r\n:1\r\n+b\r\n*1\r\n_\r\n",
        b">3\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n$1\r\nx\r\n",
        b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n",
        b"~2\r\n,1.5\r\n#t\r\n",
        b"=8\r\ntxt:abcd\r\n",
        b"(12345678901234567890\r\n",
    ];

    #[test]
    fn boundaries_agree_with_redis_protocol() {
        let stream: Vec<u8> = REPLIES.concat();
        for step in [1, 3, 64, 4096] {
            let heads = frame_all(&stream, step);
            assert_eq!(heads.len(), REPLIES.len(), "step {step}");
            for (h, r) in heads.iter().zip(REPLIES) {
                assert_eq!(h.len, r.len(), "{:?}", String::from_utf8_lossy(r));
                // RESP2 nulls are not RESP3, so each frame goes to the oracle of its protocol.
                let used = match redis_protocol::resp3::decode::complete::decode(r) {
                    Ok(Some((_, used))) => used,
                    _ => {
                        let (_, used) = redis_protocol::resp2::decode::decode(r)
                            .expect("oracle decodes")
                            .expect("oracle complete");
                        used
                    }
                };
                assert_eq!(used, r.len());
            }
        }
        assert_eq!(frame_all(REPLIES[9], 2)[0].kind, b'>');
        assert_eq!(frame_all(REPLIES[10], 2)[0].kind, b'$', "attribute skipped");
    }

    #[test]
    fn garbage_is_an_error() {
        let mut f = ReplyFramer::new();
        assert!(f.next(b"?x\r\n").is_err());
        let mut f = ReplyFramer::new();
        assert!(f.next(b"$abc\r\n").is_err());
    }

    #[test]
    fn pubsub_frames() {
        assert_eq!(
            pubsub_frame(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"),
            Some(PubSubFrame::Subscribed {
                count: 1,
                shard: false
            })
        );
        assert_eq!(
            pubsub_frame(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"),
            Some(PubSubFrame::Message)
        );
        assert_eq!(
            pubsub_frame(b"*3\r\n$12\r\nsunsubscribe\r\n$2\r\nch\r\n:0\r\n"),
            Some(PubSubFrame::Unsubscribed {
                count: 0,
                shard: true
            })
        );
        assert_eq!(pubsub_frame(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"), None);
    }

    #[test]
    fn big_array_in_pieces_is_linear() {
        let mut reply = b"*200000\r\n".to_vec();
        for _ in 0..200_000 {
            reply.extend_from_slice(b"$3\r\nabc\r\n");
        }
        let heads = frame_all(&reply, 100);
        assert_eq!(heads.len(), 1);
    }
}
