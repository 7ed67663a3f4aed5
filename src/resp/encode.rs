//! The one RESP encoder: requests leasegate sends on its own (a heartbeat's
//! `INFO replication`, a control AUTH rewritten with the node's password,
//! the probe's and failover's commands) and the local replies it makes.
//! Client bytes are never re-encoded: they are forwarded as they came.

use bytes::Bytes;

/// A request: an array of bulk strings.
pub fn request(args: &[&[u8]]) -> Bytes {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    Bytes::from(out)
}

/// An error reply, `-<text>\r\n` (`text` starts with its code, e.g. `ERR`).
pub fn error(text: &str) -> Bytes {
    Bytes::from(format!("-{}\r\n", text.replace(['\r', '\n'], " ")))
}

/// A bulk string reply.
pub fn bulk(body: &[u8]) -> Bytes {
    let mut out = format!("${}\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_what_redis_protocol_decodes() {
        let req = request(&[b"SET", b"k", b"v\r\n"]);
        assert_eq!(&req[..], b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n");
        let (frame, used) = redis_protocol::resp2::decode::decode(&req)
            .expect("valid")
            .expect("complete");
        assert_eq!(used, req.len());
        assert!(
            matches!(frame, redis_protocol::resp2::types::OwnedFrame::Array(a) if a.len() == 3)
        );
        assert_eq!(&error("ERR two\nlines")[..], b"-ERR two lines\r\n");
        assert_eq!(&bulk(b"ab")[..], b"$2\r\nab\r\n");
    }
}
