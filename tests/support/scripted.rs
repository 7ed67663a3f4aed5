//! Scripted RESP peers: a node that answers what a test tells it to, for
//! behaviour the real servers cannot be made to show on demand.

use std::io::{Read, Write};
use std::net::TcpStream;

use redis_protocol::resp2::types::OwnedFrame;

/// Serves one connection: every request (an array of bulk strings) is
/// answered with what `answer` makes of its arguments, in order, until the
/// peer closes or sends something that is not an array.
pub fn serve_commands(mut conn: TcpStream, mut answer: impl FnMut(&[String]) -> Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(request) = next_command(&mut buf) {
            let Some(args) = request else {
                return;
            };
            if conn.write_all(&answer(&args)).is_err() {
                return;
            }
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The next request complete in `buf`, taken off it: its arguments, or
/// `Some(None)` for something that is not an array of bulk strings;
/// `None` until one is complete.
pub fn next_command(buf: &mut Vec<u8>) -> Option<Option<Vec<String>>> {
    let (frame, used) = redis_protocol::resp2::decode::decode(buf).ok().flatten()?;
    buf.drain(..used);
    let OwnedFrame::Array(items) = frame else {
        return Some(None);
    };
    Some(Some(
        items
            .iter()
            .map(|f| match f {
                OwnedFrame::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            })
            .collect(),
    ))
}

/// A bulk string reply.
pub fn bulk(s: &str) -> Vec<u8> {
    format!("${}\r\n{s}\r\n", s.len()).into_bytes()
}
