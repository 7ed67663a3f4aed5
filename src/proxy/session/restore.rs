//! Restoring a session's connection state (AUTH, HELLO, SELECT, CLIENT
//! SETNAME) on the new connection it goes on over — the new master's
//! leasegate at a hand-over, or its own node once that answers again —
//! before any of its requests goes there.
//!
//! Each replayed request must succeed: a session whose ACL user was
//! deleted, or whose database no longer exists, went on as the default
//! user, in database 0, when the replies were swallowed unread, and a
//! write it sent next was acknowledged there (walkthrough 20). Such a
//! session ends instead, as its connection would directly.

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::proxy::node_conn::NodeConn;
use crate::resp::reply::ReplyFramer;

/// Sends `requests` on `conn` in one write and reads one reply each, all
/// within `timeout`: `Err` with the first error reply (or what failed).
pub async fn restore(
    conn: &mut NodeConn,
    requests: &[Bytes],
    timeout: std::time::Duration,
) -> Result<(), String> {
    if requests.is_empty() {
        return Ok(());
    }
    let work = async {
        conn.write_all(&requests.concat())
            .await
            .map_err(|e| e.to_string())?;
        conn.flush().await.map_err(|e| e.to_string())?;
        let mut buf = Vec::with_capacity(1024);
        let mut answered = 0;
        while answered < requests.len() {
            let mut framer = ReplyFramer::new();
            let head = loop {
                if let Some(head) = framer.next(&buf).map_err(|e| e.to_string())? {
                    break head;
                }
                if conn.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                    return Err("the connection closed".to_string());
                }
            };
            if matches!(head.kind, b'-' | b'!') {
                let text = String::from_utf8_lossy(&buf[..head.len]);
                return Err(text.trim_end().trim_start_matches(['-', '!']).to_string());
            }
            buf.drain(..head.len);
            answered += 1;
        }
        Ok(())
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
}

/// When a session whose state could not be restored was last logged: at
/// most once a second, since clients whose login the new master refuses
/// reconnect to the old one and fail again at their next write, in a loop
/// (walkthrough 39: 4,705 lines in 17 s for 6 clients). Each is counted
/// (`leasegate_handovers_total{outcome="failed"}`).
pub static UNRESTORED_WARNING: crate::guard::clock::EverySecond =
    crate::guard::clock::EverySecond::new();

/// What a session whose state could not be restored (`why`) answers the
/// request that waits, before it closes.
pub fn refused_reply(why: &str) -> Bytes {
    Bytes::from(format!(
        "-ERR leasegate: this connection's state (AUTH, HELLO, SELECT, CLIENT SETNAME) could not be restored on a new node connection ({}); the connection ends: where it went on, that login, database or name is not accepted (nodes must share passwords, users and namespace tokens)\r\n",
        why.replace(['\r', '\n'], " ")
    ))
}
