//! RESP on the wire: commands encoded as arrays of bulk strings, replies
//! decoded by the `redis-protocol` crate.
//!
//! The benchmark talks RESP2 to leasegate (the SET load) and to the nodes
//! directly (INFO, the lost-write check). It does not parse replies itself:
//! `redis_protocol::resp2::decode::decode` finds frame boundaries and builds
//! the frame, as the integration tests' client does, so the measuring tool
//! shares no framing code with the proxy it measures.

use std::time::Duration;

use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A reply as the load generator judges it: `+OK` is an acknowledged write,
/// anything else an error (its text goes into the report).
#[derive(Debug)]
#[allow(dead_code)] // the texts are only printed (Debug)
pub enum Reply {
    Ok(String),
    Err(String),
    Int(i64),
    Other,
}

impl From<OwnedFrame> for Reply {
    fn from(frame: OwnedFrame) -> Reply {
        match frame {
            OwnedFrame::SimpleString(s) => Reply::Ok(String::from_utf8_lossy(&s).into_owned()),
            OwnedFrame::Error(e) => Reply::Err(e),
            OwnedFrame::Integer(i) => Reply::Int(i),
            OwnedFrame::BulkString(_) | OwnedFrame::Array(_) | OwnedFrame::Null => Reply::Other,
        }
    }
}

/// Appends one command (an array of bulk strings) to `out`, with leasegate's
/// own encoder.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(&leasegate::resp::encode::request(args));
}

/// Decodes the first complete frame of `buf`: the frame and the bytes it
/// used, `None` while it is incomplete.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(OwnedFrame, usize)>, String> {
    decode(buf).map_err(|e| e.to_string())
}

/// Like [`decode_frame`], as a [`Reply`].
pub fn decode_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    Ok(decode_frame(buf)?.map(|(frame, used)| (Reply::from(frame), used)))
}

/// Sends `cmds` pipelined on `s` and reads one reply frame per command
/// (each read waits at most 30 s).
pub async fn pipeline(s: &mut TcpStream, cmds: &[Vec<&[u8]>]) -> Result<Vec<OwnedFrame>, String> {
    let mut out = Vec::new();
    for c in cmds {
        encode(&mut out, c);
    }
    s.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut replies = Vec::with_capacity(cmds.len());
    let mut pos = 0;
    let mut chunk = vec![0u8; 256 * 1024];
    while replies.len() < cmds.len() {
        if let Some((frame, used)) = decode_frame(&buf[pos..])? {
            pos += used;
            replies.push(frame);
            continue;
        }
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk))
            .await
            .map_err(|_| "timeout".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(replies)
}

/// `AUTH <password>` on a fresh connection; an error reply is an `Err`.
pub async fn auth(s: &mut TcpStream, password: &str) -> Result<(), String> {
    let cmd: Vec<&[u8]> = vec![b"AUTH", password.as_bytes()];
    match pipeline(s, &[cmd]).await?.first() {
        Some(OwnedFrame::SimpleString(ok)) if ok.as_slice() == b"OK" => Ok(()),
        other => Err(format!("AUTH answered {other:?}")),
    }
}

/// A connection to `addr`, authenticated with `password` unless it is empty.
pub async fn connect(addr: &str, password: &str) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if !password.is_empty() {
        auth(&mut s, password).await?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::{decode_reply, encode, Reply};

    #[test]
    fn replies_decode_one_frame_at_a_time_and_wait_for_the_rest() {
        let stream = b"+OK\r\n-ERR no\r\n:5\r\n$3\r\nabc\r\n*1\r\n$1\r\na\r\n$-1\r\n+O";
        let mut pos = 0;
        let mut got = Vec::new();
        while let Some((reply, used)) = decode_reply(&stream[pos..]).unwrap() {
            pos += used;
            got.push(format!("{reply:?}"));
        }
        let want = [
            r#"Ok("OK")"#,
            r#"Err("ERR no")"#,
            "Int(5)",
            "Other",
            "Other",
            "Other",
        ];
        assert_eq!(got, want);
        assert_eq!(&stream[pos..], b"+O", "an incomplete frame waits");
        assert!(decode_reply(b"?what\r\n").is_err());
        assert!(matches!(
            decode_reply(b"+OK\r\n").unwrap(),
            Some((Reply::Ok(_), 5))
        ));
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&mut out, &[b"SET", b"k", b"vv"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n");
    }
}
